/*
 * sandbox.h - a seccomp allow-list of the system calls the event loop makes,
 * installed after the privilege drop (no_new_privs is already set).
 */
#ifndef BROKERPKG_SANDBOX_H
#define BROKERPKG_SANDBOX_H

#include <stdbool.h>

/*
 * Install the filter: any other system call kills the process.  Returns
 * false, changing nothing, where it is not available (an architecture this
 * file does not know, a kernel without seccomp, a sanitizer build whose
 * runtime needs more system calls).
 */
bool sandbox_enter(void);

#endif
