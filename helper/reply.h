/*
 * reply.h - the only writer of replies.  Replies are formatted into an
 * output buffer that the event loop drains to stdout when it can.
 */
#ifndef BROKERPKG_REPLY_H
#define BROKERPKG_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decode.h"

struct reply_writer {
    char *buffer;
    size_t length;      /* bytes waiting */
    size_t start;       /* bytes already written from the front */
    size_t capacity;
    bool out_of_memory; /* a reply could not be stored */
};

void reply_writer_init(struct reply_writer *writer);
void reply_writer_free(struct reply_writer *writer);

/* Bytes formatted but not yet written. */
size_t reply_pending(const struct reply_writer *writer);

/*
 * Write what is pending to FD without blocking longer than the fd does.
 * Returns 0 when everything was written or the fd would block, -1 with errno
 * on a write error (EPIPE: the reader has gone).
 */
int reply_flush(struct reply_writer *writer, int fd);

void reply_parse_error(struct reply_writer *writer);
void reply_buffer_overflow(struct reply_writer *writer);
void reply_unknown_command(struct reply_writer *writer, int32_t token);
void reply_invalid_argument(struct reply_writer *writer, int32_t token,
                            const char *reason);
void reply_feature_support(struct reply_writer *writer, int32_t token,
                           const char *value);

/* A reply without arguments: no-reply, probes-exhausted, ... */
void reply_bare(struct reply_writer *writer, int32_t token, const char *word);

/* permission-denied for a policy refusal; the reason only with DETAILS,
   so clients that do not ask see mtr-packet's bare word. */
void reply_refused(struct reply_writer *writer, int32_t token,
                   const char *reason, bool details);

/* The reply for a send failure with ERRNO_VALUE (mtr-packet's mapping). */
void reply_send_error(struct reply_writer *writer, int32_t token,
                      int errno_value);

/*
 * The answer to a probe: reply / ttl-expired / no-route with the responder,
 * the round-trip time and MPLS labels; with DETAILS the extension fields
 * known from REPLY.
 */
void reply_answer(struct reply_writer *writer, int32_t token,
                  const struct decoded_reply *reply, uint64_t rtt_us,
                  bool details);

#endif
