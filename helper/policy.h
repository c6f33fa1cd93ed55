/*
 * policy.h - what a caller who is not root may not do with the helper's
 * privilege: probe multicast, broadcast or unspecified destinations, or send
 * faster than a fixed rate (with a burst allowance).  Marks are refused in
 * prober.c and net_send.c (caller_policy.may_mark); source addresses and
 * ports in command.c and net_send.c.
 */
#ifndef BROKERPKG_POLICY_H
#define BROKERPKG_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"

#define RESTRICTED_PROBES_PER_SECOND 1000
#define RESTRICTED_BURST 1000

/*
 * Who the caller is, as far as the helper's rules go: found by main() while
 * privileged, read-only afterwards, and passed to what applies it.  Kept out
 * of struct net_state, which holds what was opened (the same sockets serve
 * root and anyone else): this says what the caller may do with them.
 * Whether the seccomp filter is in force is neither (it confines this
 * process, whoever the caller): loop_run() and prober_create() take it.
 */
struct caller_policy {
    bool may_mark;              /* entitled to SO_MARK: caller_may_mark() */
    bool restricted;            /* not root, and the helper has raw sockets:
                                   the rules of this header apply */
    uint64_t *rate_tat;         /* restricted and lent: the user's shared
                                   rate word (ratestate.h), else NULL */
};

/*
 * The rate limit is GCRA (the generic cell rate algorithm) on one 64-bit
 * word, the theoretical arrival time TAT in CLOCK_MONOTONIC nanoseconds: a
 * probe may leave at NOW when max(TAT, NOW) + T - NOW <= BURST * T (T, the
 * interval of the rate), and then TAT becomes max(TAT, NOW) + T.  A zero
 * word is a full burst.  All helpers that lend their privilege to one user
 * share that user's word (ratestate.h) and change it by compare-and-swap,
 * so the limit holds for the user, across its helpers at once and in turn.
 */
struct policy {
    bool restricted;            /* the rules apply (caller is not root) */
    uint64_t *tat;              /* the user's shared word, or &own_tat */
    uint64_t own_tat;           /* for a caller whose privilege is its own */
};

/*
 * The rules for CALLER: they apply when it is restricted; its rate_tat is
 * the user's word (mapped by rate_state_open), or NULL for a word of this
 * process alone: for a caller whose raw-socket privilege is its own, whom
 * the helper lends nothing.  POLICY must stay where it is while in use (it
 * may point into itself).
 */
void policy_init(struct policy *policy, const struct caller_policy *caller);

/*
 * NULL when DESTINATION may be probed, else the reason it may not.  An
 * IPv4-mapped IPv6 address is judged as the IPv4 address it maps.
 */
const char *policy_refuse_destination(const struct policy *policy,
                                      const struct ip_address *destination);

/*
 * Take the right to send one probe now; false when none is left.  Reads
 * CLOCK_MONOTONIC itself, after the word: a word another helper wrote is
 * then never judged by an older clock than the one it was written with.
 */
bool policy_take_token(struct policy *policy);

/* When (CLOCK_MONOTONIC ns) the next probe may leave: now, or later. */
uint64_t policy_next_token_ns(const struct policy *policy);

#endif
