/*
 * policy.c - limits for callers who are not root (see policy.h).
 */
#include "policy.h"

#include <stddef.h>

#include "wire.h"

#define NS_PER_TOKEN (1000000000.0 / RESTRICTED_PROBES_PER_SECOND)

void policy_init(struct policy *policy, bool restricted, uint64_t now_ns)
{
    policy->restricted = restricted;
    policy->tokens = RESTRICTED_BURST;
    policy->refilled_ns = now_ns;
}

static bool is_unspecified(const struct ip_address *address)
{
    if (address->family == AF_INET) {
        return address->u.bytes[0] == 0;            /* 0.0.0.0/8 */
    }
    return IN6_IS_ADDR_UNSPECIFIED(&address->u.v6);
}

static bool is_multicast(const struct ip_address *address)
{
    if (address->family == AF_INET) {
        return (address->u.bytes[0] & 0xf0) == 0xe0;  /* 224.0.0.0/4 */
    }
    return IN6_IS_ADDR_MULTICAST(&address->u.v6);
}

static bool is_limited_broadcast(const struct ip_address *address)
{
    return address->family == AF_INET && address->u.v4.s_addr == 0xffffffffu;
}

const char *policy_refuse_destination(const struct policy *policy,
                                      const struct ip_address *destination)
{
    if (!policy->restricted) {
        return NULL;
    }
    if (is_unspecified(destination)) {
        return REASON_UNSPECIFIED_DESTINATION;
    }
    if (is_multicast(destination)) {
        return REASON_MULTICAST_DESTINATION;
    }
    /* directed broadcasts need SO_BROADCAST, which the helper never sets:
       the kernel refuses them with EACCES (permission-denied) for everyone */
    if (is_limited_broadcast(destination)) {
        return REASON_BROADCAST_DESTINATION;
    }
    return NULL;
}

static void refill(struct policy *policy, uint64_t now_ns)
{
    if (now_ns > policy->refilled_ns) {
        policy->tokens += (double)(now_ns - policy->refilled_ns) / NS_PER_TOKEN;
        if (policy->tokens > RESTRICTED_BURST) {
            policy->tokens = RESTRICTED_BURST;
        }
    }
    policy->refilled_ns = now_ns;
}

bool policy_take_token(struct policy *policy, uint64_t now_ns)
{
    if (!policy->restricted) {
        return true;
    }
    refill(policy, now_ns);
    if (policy->tokens < 1.0) {
        return false;
    }
    policy->tokens -= 1.0;
    return true;
}

uint64_t policy_next_token_ns(const struct policy *policy)
{
    double missing = 1.0 - policy->tokens;

    return missing <= 0 ? policy->refilled_ns
                        : policy->refilled_ns + (uint64_t)(missing * NS_PER_TOKEN)
                              + 1;
}
