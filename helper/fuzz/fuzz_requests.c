/*
 * fuzz_requests.c - libFuzzer harness for the whole request path: bytes on
 * stdin -> line framing -> tokenizer -> validation -> probe table -> packet
 * building -> replies, and the deadline path that empties the table again.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../net.h"
#include "../policy.h"
#include "../prober.h"
#include "../reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct net_state net;
    /* root's: marks allowed, no rate limit (the fuzzer would only wait) */
    static const struct caller_policy caller = {.may_mark = true};
    struct prober *prober;
    struct reply_writer *out;

    net_open(&net);
    prober = prober_create(&net, &caller, false);
    if (prober == NULL) {
        abort();
    }
    /* in two pieces, so a line split across reads is exercised too */
    prober_feed(prober, (const char *)data, size / 2);
    prober_feed(prober, (const char *)data + size / 2, size - size / 2);
    prober_end_input(prober);
    prober_expire(prober, UINT64_MAX);
    if (prober_in_flight(prober) != 0) {
        abort();    /* every probe must have had its reply */
    }
    out = prober_replies(prober);
    if (out->out_of_memory) {
        abort();
    }
    prober_destroy(prober);
    return 0;
}
