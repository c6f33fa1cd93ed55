/*
 * port_holds.h - the source ports that probes name (local-port), held for
 * as long as a probe of this helper uses them.
 *
 * A raw socket sends from any port, so without a hold a caller could send
 * from a port another user's socket is bound to, and the answer would reach
 * that socket.  A hold is a socket bound to the probe's source address and
 * port: while it is open no other socket can be bound there (a port another
 * socket holds is refused with EADDRINUSE, as the caller's own bind would
 * be), and what arrives there comes to it.  The probes of one helper share
 * a hold, counted: mtr sends many UDP probes from one -L port at once.
 */
#ifndef BROKERPKG_PORT_HOLDS_H
#define BROKERPKG_PORT_HOLDS_H

#include <stdint.h>

#include "addr.h"
#include "command.h"

struct port_holds;
struct port_hold;

/* An empty set of holds; NULL when out of memory. */
struct port_holds *port_holds_create(void);

/* Close every hold and free the set. */
void port_holds_destroy(struct port_holds *holds);

/*
 * One more probe of PROTOCOL (UDP or SCTP) from ADDRESS (the unspecified
 * address of its family: any address) and PORT.  Returns 0 and
 * stores the hold in *HOLD (NULL when nothing can hold it: SCTP on a kernel
 * without SCTP, see net_hold_port), or an errno: EADDRINUSE (another socket
 * holds that port), EMFILE/ENFILE, ENOMEM, or what else bind() said.
 */
int port_holds_take(struct port_holds *holds, enum probe_protocol protocol,
                    const struct ip_address *address, uint16_t port,
                    struct port_hold **hold);

/* A probe that took HOLD (may be NULL) has ended: the last one closes it. */
void port_holds_release(struct port_holds *holds, struct port_hold *hold);

#endif
