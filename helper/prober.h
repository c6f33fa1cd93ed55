/*
 * prober.h - the life of a probe, without the event loop: request bytes go
 * in, answers decoded from packets go in, deadlines are checked on demand,
 * and replies come out of a reply writer.  The event loop (loop.c) feeds it
 * from stdin and the sockets; the fuzz harnesses feed it directly.
 */
#ifndef BROKERPKG_PROBER_H
#define BROKERPKG_PROBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "decode.h"
#include "net.h"
#include "policy.h"
#include "reply.h"

/*
 * A long run of requests: from this many bytes of requests waiting to be
 * served on, the helper serves them in bulk, saturated.  Its probes then go
 * without a transmit timestamp (prober.c fill_send_options), and the answer
 * sockets leave the epoll set while the run is fed (loop.c offer_input).
 */
#define BULK_INPUT_BYTES 4096

struct prober;

/*
 * A prober for NET (open, privileges dropped) serving CALLER (both must
 * outlive it); SANDBOXED: the seccomp filter is in force (check-support
 * reports it).  NULL when out of memory.
 */
struct prober *prober_create(struct net_state *net,
                             const struct caller_policy *caller,
                             bool sandboxed);

/* Forget every probe in flight (no replies) and free everything. */
void prober_destroy(struct prober *prober);

/*
 * Request bytes, in any pieces; each complete line is served at once.
 * Returns how many bytes were taken: fewer than SIZE when a probe waits for
 * the rate limit, in which case the rest must be fed again after
 * prober_resume() says the probe has left.
 */
size_t prober_feed(struct prober *prober, const char *data, size_t size);

/*
 * WAITING: more requests wait beyond the bytes being fed (the last read
 * filled its buffer), so the helper is saturated even at the end of them.
 */
void prober_more_input(struct prober *prober, bool waiting);

/* True while a probe waits for the rate limit. */
bool prober_blocked(const struct prober *prober);

/* Send the probe waiting for the rate limit if it may leave now;
   true when nothing is waiting any more. */
bool prober_resume(struct prober *prober);

/* End of requests: serve a last line that had no newline. */
void prober_end_input(struct prober *prober);

/* An answer decoded from a packet that arrived at RECEIVED (CLOCK_REALTIME). */
void prober_deliver(struct prober *prober, const struct decoded_reply *reply,
                    const struct timespec *received);

/*
 * The kernel's transmit timestamp SENT (CLOCK_REALTIME) of the probe that
 * PROBE describes (decoded from the packet as sent): from now on its
 * round-trip time is measured from there.  True when a probe took it.
 */
bool prober_departed(struct prober *prober, const struct decoded_reply *probe,
                     const struct timespec *sent);

/* Read the departures of the probes sent since the last call, if any. */
void prober_receive_departures(struct prober *prober);

/* Read and deliver every answer waiting on NET's socket of FAMILY and ROLE. */
void prober_receive(struct prober *prober, int family, enum socket_role role);

/* Reply no-reply to every probe whose deadline is at or before NOW_NS. */
void prober_expire(struct prober *prober, uint64_t now_ns);

/* CLOCK_MONOTONIC ns of the earliest deadline, or of the moment a probe
   waiting for the rate limit may leave; 0 when there is nothing to wait for. */
uint64_t prober_next_wakeup(const struct prober *prober);

/* Probes in flight, and one waiting for the rate limit. */
unsigned prober_in_flight(const struct prober *prober);
struct reply_writer *prober_replies(struct prober *prober);

#endif
