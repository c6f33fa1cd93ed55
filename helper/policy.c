/*
 * policy.c - limits for callers who are not root (see policy.h).
 */
#include "policy.h"

#include <stddef.h>

#include "monotonic.h"
#include "wire.h"

#define NS_PER_PROBE (UINT64_C(1000000000) / RESTRICTED_PROBES_PER_SECOND)
#define BURST_NS (RESTRICTED_BURST * NS_PER_PROBE)
/*
 * No helper writes a TAT more than BURST_NS ahead of its clock.  One much
 * further ahead was written before the machine last booted (the clock
 * started again from zero): it counts as a full bucket.
 */
#define STALE_AHEAD_NS (BURST_NS + UINT64_C(1000000000))

void policy_init(struct policy *policy, const struct caller_policy *caller)
{
    policy->restricted = caller->restricted;
    policy->own_tat = 0;
    policy->tat = caller->rate_tat != NULL ? caller->rate_tat
                                           : &policy->own_tat;
}

static bool is_unspecified(const struct ip_address *address)
{
    if (address->family == AF_INET) {
        return address->u.bytes[0] == 0;            /* 0.0.0.0/8 */
    }
    return IN6_IS_ADDR_UNSPECIFIED(&address->u.v6);
}

const char *policy_refuse_destination(const struct policy *policy,
                                      const struct ip_address *given)
{
    struct ip_address unmapped;
    /* ::ffff:a.b.c.d is a.b.c.d to a dual-stack socket: judged as that */
    const struct ip_address *destination =
        ip_address_unmap_v4(given, &unmapped) ? &unmapped : given;

    if (!policy->restricted) {
        return NULL;
    }
    if (is_unspecified(destination)) {
        return REASON_UNSPECIFIED_DESTINATION;
    }
    if (ip_address_is_multicast(destination)) {
        return REASON_MULTICAST_DESTINATION;
    }
    /* directed broadcasts need SO_BROADCAST, which the helper never sets:
       the kernel refuses them with EACCES (permission-denied) for everyone */
    if (ip_address_is_limited_broadcast(destination)) {
        return REASON_BROADCAST_DESTINATION;
    }
    return NULL;
}

static bool is_stale(uint64_t tat, uint64_t now)
{
    return tat > now + STALE_AHEAD_NS;
}

bool policy_take_token(struct policy *policy)
{
    uint64_t tat;

    if (!policy->restricted) {
        return true;
    }
    tat = __atomic_load_n(policy->tat, __ATOMIC_ACQUIRE);
    for (;;) {
        uint64_t now = monotonic_ns();
        uint64_t next = (tat > now && !is_stale(tat, now) ? tat : now)
                        + NS_PER_PROBE;

        if (next - now > BURST_NS) {
            return false;
        }
        /* on failure TAT is what another helper wrote meanwhile: again */
        if (__atomic_compare_exchange_n(policy->tat, &tat, next, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            return true;
        }
    }
}

uint64_t policy_next_token_ns(const struct policy *policy)
{
    uint64_t tat = __atomic_load_n(policy->tat, __ATOMIC_ACQUIRE);
    uint64_t now = monotonic_ns();

    if (is_stale(tat, now) || tat + NS_PER_PROBE <= now + BURST_NS) {
        return now;
    }
    return tat + NS_PER_PROBE - BURST_NS;
}
