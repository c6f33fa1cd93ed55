/*
 * sandbox.h - a seccomp allow-list of the system calls the event loop makes,
 * with the arguments it makes them with, installed after the privilege drop
 * (no_new_privs is already set).
 */
#ifndef BROKERPKG_SANDBOX_H
#define BROKERPKG_SANDBOX_H

#include <stdbool.h>

/*
 * Install the filter: any other system call, or one of the listed calls
 * with other arguments (a socket family, type or protocol, a socket option,
 * an ioctl, an executable mapping the loop never uses), kills the process
 * with SIGSYS.  capset, and the SO_MARK option, are allowed only when
 * MAY_MARK (the caller is entitled to marks and privilege_drop() kept
 * CAP_NET_ADMIN permitted).  Returns false, changing nothing, where it is
 * not available (an architecture this file does not know, a kernel without
 * seccomp, a sanitizer build whose runtime needs more system calls).
 */
bool sandbox_enter(bool may_mark);

#endif
