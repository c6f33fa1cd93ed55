/*
 * engine.h - the event loop: reads requests from stdin, starts probes,
 * matches answers, expires probes at their deadline, writes replies.
 */
#ifndef BROKERPKG_ENGINE_H
#define BROKERPKG_ENGINE_H

#include "net.h"

/*
 * Serve requests on stdin until it ends and every probe in flight has been
 * answered, or until stdout's reader goes away.  NET is open and privileges
 * are already dropped.  Returns the process exit status.
 */
int engine_run(struct net_state *net);

#endif
