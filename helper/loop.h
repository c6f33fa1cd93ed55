/*
 * loop.h - the event loop: stdin, stdout, the deadline timer and the
 * sockets, driving a prober.
 */
#ifndef BROKERPKG_LOOP_H
#define BROKERPKG_LOOP_H

#include <stdbool.h>

#include "net.h"
#include "policy.h"

/*
 * Serve CALLER's requests on stdin until it ends and every probe in flight
 * has been answered, or until stdout's reader goes away.  NET is open and
 * privileges are already dropped; SANDBOXED: the seccomp filter is in force.
 * Returns the process exit status.
 */
int loop_run(struct net_state *net, const struct caller_policy *caller,
             bool sandboxed);

#endif
