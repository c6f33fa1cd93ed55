/*
 * policy.h - what a caller who is not root may not do with the helper's
 * privilege: probe multicast, broadcast or unspecified destinations, or send
 * faster than a fixed rate (with a burst allowance).  Marks are refused in
 * prober.c (net->may_mark); source addresses and ports in command.c and net.c.
 */
#ifndef BROKERPKG_POLICY_H
#define BROKERPKG_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "addr.h"

#define RESTRICTED_PROBES_PER_SECOND 1000
#define RESTRICTED_BURST 1000

struct policy {
    bool restricted;            /* the rules apply (caller is not root) */
    double tokens;              /* probes that may leave now */
    uint64_t refilled_ns;       /* CLOCK_MONOTONIC of the last refill */
};

void policy_init(struct policy *policy, bool restricted, uint64_t now_ns);

/*
 * NULL when DESTINATION may be probed, else the reason it may not.  An
 * IPv4-mapped IPv6 address is judged as the IPv4 address it maps.
 */
const char *policy_refuse_destination(const struct policy *policy,
                                      const struct ip_address *destination);

/* Take the right to send one probe at NOW_NS; false when none is left. */
bool policy_take_token(struct policy *policy, uint64_t now_ns);

/* When (CLOCK_MONOTONIC ns) the next probe may leave. */
uint64_t policy_next_token_ns(const struct policy *policy);

#endif
