/*
 * monotonic.h - the clock of deadlines (prober.c, loop.c) and of the rate
 * limit (policy.c).
 */
#ifndef BROKERPKG_MONOTONIC_H
#define BROKERPKG_MONOTONIC_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC now, in nanoseconds. */
static inline uint64_t monotonic_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

#endif
