/*
 * reply.c - formatting of every reply (see reply.h).
 */
#include "reply.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wire.h"

/* A reply line never exceeds this (mpls lists included). */
#define REPLY_LINE_MAX 1024

void reply_writer_init(struct reply_writer *writer)
{
    memset(writer, 0, sizeof(*writer));
}

void reply_writer_free(struct reply_writer *writer)
{
    free(writer->buffer);
    reply_writer_init(writer);
}

size_t reply_pending(const struct reply_writer *writer)
{
    return writer->length - writer->start;
}

/* Make room for NEEDED more bytes; false when memory is exhausted. */
static bool reserve(struct reply_writer *writer, size_t needed)
{
    size_t capacity;
    char *grown;

    if (writer->start > 0 && writer->start == writer->length) {
        writer->start = writer->length = 0;
    }
    if (writer->length + needed <= writer->capacity) {
        return true;
    }
    if (writer->start > 0) {
        memmove(writer->buffer, writer->buffer + writer->start,
                writer->length - writer->start);
        writer->length -= writer->start;
        writer->start = 0;
        if (writer->length + needed <= writer->capacity) {
            return true;
        }
    }
    capacity = writer->capacity ? writer->capacity * 2 : 65536;
    while (capacity < writer->length + needed) {
        capacity *= 2;
    }
    grown = realloc(writer->buffer, capacity);
    if (grown == NULL) {
        return false;
    }
    writer->buffer = grown;
    writer->capacity = capacity;
    return true;
}

static void emit(struct reply_writer *writer, const char *line, size_t length)
{
    if (!reserve(writer, length + 1)) {
        writer->out_of_memory = true;
        return;
    }
    memcpy(writer->buffer + writer->length, line, length);
    writer->buffer[writer->length + length] = '\n';
    writer->length += length + 1;
}

/* Append formatted text to LINE at *USED, never past REPLY_LINE_MAX. */
__attribute__((format(printf, 3, 4)))
static void append(char *line, size_t *used, const char *format, ...)
{
    va_list args;
    int written;

    if (*used >= REPLY_LINE_MAX) {
        return;
    }
    va_start(args, format);
    written = vsnprintf(line + *used, REPLY_LINE_MAX - *used, format, args);
    va_end(args);
    if (written > 0) {
        *used += (size_t)written < REPLY_LINE_MAX - *used
                     ? (size_t)written : REPLY_LINE_MAX - *used - 1;
    }
}

/*
 * The frequent replies are put together by hand rather than by vsnprintf,
 * which costs several times as much per reply.  Each piece is bounded like
 * append(): LINE never runs past REPLY_LINE_MAX - 1 bytes.
 */
static void append_text(char *line, size_t *used, const char *text)
{
    size_t length = strlen(text);

    if (length > REPLY_LINE_MAX - 1 - *used) {
        length = REPLY_LINE_MAX - 1 - *used;
    }
    memcpy(line + *used, text, length);
    *used += length;
}

static void append_unsigned(char *line, size_t *used, uint64_t value)
{
    char digits[21];
    size_t count = sizeof(digits);

    digits[--count] = '\0';
    do {
        digits[--count] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    append_text(line, used, digits + count);
}

static void append_token(char *line, size_t *used, int32_t token)
{
    if (token < 0) {
        append_text(line, used, "-");
        append_unsigned(line, used, (uint64_t)-(int64_t)token);
    } else {
        append_unsigned(line, used, (uint64_t)token);
    }
}

int reply_flush(struct reply_writer *writer, int fd)
{
    while (writer->start < writer->length) {
        ssize_t written = write(fd, writer->buffer + writer->start,
                                writer->length - writer->start);

        if (written < 0) {
            if (errno == EINTR) {
                continue;
            }
            /* EAGAIN: a non-blocking pipe is full; the loop waits for it */
            return errno == EAGAIN ? 0 : -1;
        }
        writer->start += (size_t)written;
    }
    writer->start = writer->length = 0;
    return 0;
}

void reply_parse_error(struct reply_writer *writer)
{
    static const char line[] = "0 " R_COMMAND_PARSE_ERROR;

    emit(writer, line, sizeof(line) - 1);
}

void reply_buffer_overflow(struct reply_writer *writer)
{
    static const char line[] = "0 " R_COMMAND_BUFFER_OVERFLOW;

    emit(writer, line, sizeof(line) - 1);
}

void reply_bare(struct reply_writer *writer, int32_t token, const char *word)
{
    char line[REPLY_LINE_MAX];
    size_t used = 0;

    append_token(line, &used, token);
    append_text(line, &used, " ");
    append_text(line, &used, word);
    emit(writer, line, used);
}

void reply_unknown_command(struct reply_writer *writer, int32_t token)
{
    reply_bare(writer, token, R_UNKNOWN_COMMAND);
}

void reply_invalid_argument(struct reply_writer *writer, int32_t token,
                            const char *reason)
{
    char line[REPLY_LINE_MAX];
    size_t used = 0;

    append(line, &used, "%d " R_INVALID_ARGUMENT " " RA_REASON " %s",
           (int)token, reason);
    emit(writer, line, used);
}

void reply_feature_support(struct reply_writer *writer, int32_t token,
                           const char *value)
{
    char line[REPLY_LINE_MAX];
    size_t used = 0;

    append(line, &used, "%d " R_FEATURE_SUPPORT " " RA_SUPPORT " %s",
           (int)token, value);
    emit(writer, line, used);
}

void reply_send_error(struct reply_writer *writer, int32_t token,
                      int errno_value)
{
    char line[REPLY_LINE_MAX];
    size_t used = 0;

    switch (errno_value) {
    case EINVAL:
        reply_bare(writer, token, R_INVALID_ARGUMENT);
        return;
    case ENETDOWN:
        reply_bare(writer, token, R_NETWORK_DOWN);
        return;
    case ENETUNREACH:
    case EHOSTUNREACH:
        reply_bare(writer, token, R_NO_ROUTE);
        return;
    case EPERM:
    case EACCES:
        reply_bare(writer, token, R_PERMISSION_DENIED);
        return;
    case EADDRINUSE:
        reply_bare(writer, token, R_ADDRESS_IN_USE);
        return;
    case EADDRNOTAVAIL:
        reply_bare(writer, token, R_ADDRESS_NOT_AVAILABLE);
        return;
    default:
        append(line, &used, "%d " R_UNEXPECTED_ERROR " " RA_ERRNO " %d",
               (int)token, errno_value);
        emit(writer, line, used);
    }
}

void reply_refused(struct reply_writer *writer, int32_t token,
                   const char *reason, bool details)
{
    char line[REPLY_LINE_MAX];
    size_t used = 0;

    append(line, &used, "%d " R_PERMISSION_DENIED, (int)token);
    if (details) {
        append(line, &used, " " RA_REASON " %s", reason);
    }
    emit(writer, line, used);
}

static const char *outcome_word(enum reply_outcome outcome)
{
    switch (outcome) {
    case OUTCOME_TTL_EXPIRED:
        return R_TTL_EXPIRED;
    case OUTCOME_NO_ROUTE:
        return R_NO_ROUTE;
    case OUTCOME_REPLY:
        break;
    }
    return R_REPLY;
}

static void append_address(char *line, size_t *used,
                           const struct ip_address *address, uint64_t rtt_us)
{
    char text[IP_TEXT_MAX];

    ip_address_format(address, text);
    append_text(line, used, address->family == AF_INET6 ? " " RA_IP6 " "
                                                        : " " RA_IP4 " ");
    append_text(line, used, text);
    append_text(line, used, " " RA_RTT " ");
    append_unsigned(line, used, rtt_us);
}

static void append_mpls(char *line, size_t *used,
                        const struct decoded_reply *reply)
{
    for (int i = 0; i < reply->mpls_count; i++) {
        const struct mpls_label *label = &reply->mpls[i];

        append(line, used, "%s%u,%u,%u,%u", i == 0 ? " " RA_MPLS " " : ",",
               (unsigned)label->label, (unsigned)label->traffic_class,
               (unsigned)label->bottom_of_stack, (unsigned)label->ttl);
    }
}

static void append_details(char *line, size_t *used,
                           const struct decoded_reply *reply)
{
    if (reply->reply_ttl >= 0) {
        append(line, used, " " RA_REPLY_TTL " %d", reply->reply_ttl);
    }
    if (reply->from_icmp) {
        append(line, used, " " RA_ICMP_TYPE " %u " RA_ICMP_CODE " %u",
               (unsigned)reply->icmp_type, (unsigned)reply->icmp_code);
    }
    if (reply->reply_size > 0) {
        append(line, used, " " RA_REPLY_SIZE " %u", reply->reply_size);
    }
    if (reply->from_tcp) {
        append(line, used, " " RA_TCP_FLAGS " %s",
               reply->tcp_reset ? TCP_FLAGS_RST : TCP_FLAGS_SYN_ACK);
    }
}

void reply_answer(struct reply_writer *writer, int32_t token,
                  const struct decoded_reply *reply, uint64_t rtt_us,
                  bool details)
{
    char line[REPLY_LINE_MAX];
    size_t used = 0;

    append_token(line, &used, token);
    append_text(line, &used, " ");
    append_text(line, &used, outcome_word(reply->outcome));
    append_address(line, &used, &reply->responder, rtt_us);
    append_mpls(line, &used, reply);
    if (details) {
        append_details(line, &used, reply);
    }
    emit(writer, line, used);
}

