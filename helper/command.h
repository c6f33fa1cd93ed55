/*
 * command.h - turn a parsed request into a validated probe request or a
 * check-support answer.  Pure: what the helper can do is passed in.
 */
#ifndef BROKERPKG_COMMAND_H
#define BROKERPKG_COMMAND_H

#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>

#include "addr.h"
#include "cmdparse.h"

enum probe_protocol {
    PROBE_ICMP,
    PROBE_UDP,
    PROBE_TCP,
    PROBE_SCTP,
    PROBE_PROTOCOL_COUNT,
};

/* A send-probe request whose every value has been range-checked. */
struct probe_request {
    int32_t token;
    enum probe_protocol protocol;
    struct ip_address destination;
    struct ip_address local;        /* family 0 when not given */
    unsigned port;                  /* 0 when not given */
    unsigned local_port;            /* 0 when not given */
    char device[IF_NAMESIZE];       /* "" when not given */
    uint64_t timeout_us;
    unsigned ttl;
    unsigned size;
    unsigned bit_pattern;
    unsigned tos;
    bool has_mark;
    uint32_t mark;
    bool details;
    bool has_flow;                  /* the flow extension */
    unsigned flow;
};

/* What this helper process can do, as found when its sockets were opened. */
struct helper_abilities {
    bool family_ok[2];                      /* [0] IPv4, [1] IPv6 */
    bool protocol_ok[PROBE_PROTOCOL_COUNT];
    bool may_mark;                          /* caller entitled to SO_MARK */
    bool raw_sockets;                       /* false: ICMP datagram sockets */
    unsigned max_probes;
    unsigned rate_limit;                    /* probes per second, 0: none */
    bool sandboxed;
};

enum command_kind {
    COMMAND_SEND_PROBE,
    COMMAND_CHECK_SUPPORT,
    COMMAND_UNKNOWN,
    COMMAND_INVALID,        /* reply: TOKEN invalid-argument reason REASON */
};

struct command_outcome {
    enum command_kind kind;
    int32_t token;
    const char *reason;             /* COMMAND_INVALID */
    const char *support;            /* COMMAND_CHECK_SUPPORT: the value */
    char support_buffer[24];        /* storage for numeric support values */
    struct probe_request request;   /* COMMAND_SEND_PROBE */
};

/* Interpret COMMAND.  Never fails: errors become COMMAND_INVALID/UNKNOWN. */
void interpret_command(const struct command *command,
                       const struct helper_abilities *abilities,
                       struct command_outcome *outcome);

const char *probe_protocol_name(enum probe_protocol protocol);

/*
 * Parse a strictly decimal unsigned number no greater than MAX (no sign, no
 * spaces, at most 10 digits).  Exposed for the fuzz harness and tests.
 */
bool parse_bounded_decimal(const char *text, unsigned long max,
                           unsigned long *value);

/* Parse seconds "S" or "S.F" (F: 1-6 digits) into microseconds, at most MAX. */
bool parse_timeout_us(const char *text, uint64_t max_us, uint64_t *value);

#endif
