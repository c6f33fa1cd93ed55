/*
 * command.c - validation of requests (see command.h).
 *
 * Every value is parsed strictly (decimal digits only, bounded) and checked
 * against the ranges in wire.h; the first problem found is the reply.
 */
#include "command.h"

#include <stdio.h>
#include <string.h>

#include "wire.h"

/* Every number of at most 10 digits: syntax check before the range check */
#define ANY_DECIMAL 9999999999UL

static const char *const protocol_names[PROBE_PROTOCOL_COUNT] = {
    [PROBE_ICMP] = PROTO_ICMP,
    [PROBE_UDP] = PROTO_UDP,
    [PROBE_TCP] = PROTO_TCP,
    [PROBE_SCTP] = PROTO_SCTP,
};

const char *probe_protocol_name(enum probe_protocol protocol)
{
    return protocol_names[protocol];
}

bool parse_bounded_decimal(const char *text, unsigned long max,
                           unsigned long *value)
{
    unsigned long long result = 0;
    size_t digits = 0;

    for (const char *p = text; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || ++digits > 10) {
            return false;
        }
        result = result * 10 + (unsigned)(*p - '0');
    }
    if (digits == 0 || result > max) {
        return false;
    }
    *value = (unsigned long)result;
    return true;
}

bool parse_timeout_us(const char *text, uint64_t max_us, uint64_t *value)
{
    char whole[11];
    const char *dot = strchr(text, '.');
    size_t whole_length = dot != NULL ? (size_t)(dot - text) : strlen(text);
    unsigned long seconds;
    uint64_t fraction_us = 0;

    if (whole_length == 0 || whole_length >= sizeof(whole)) {
        return false;
    }
    memcpy(whole, text, whole_length);
    whole[whole_length] = '\0';
    if (!parse_bounded_decimal(whole, ANY_DECIMAL, &seconds)) {
        return false;
    }
    if (dot != NULL) {
        const char *fraction = dot + 1;
        size_t digits = strlen(fraction);
        uint64_t scale = 100000;

        if (digits == 0 || digits > TIMEOUT_FRACTION_DIGITS) {
            return false;
        }
        for (const char *p = fraction; *p != '\0'; p++, scale /= 10) {
            if (*p < '0' || *p > '9') {
                return false;
            }
            fraction_us += (uint64_t)(*p - '0') * scale;
        }
    }
    *value = (uint64_t)seconds * 1000000u + fraction_us;
    return *value <= max_us;
}

/* Outcome of one argument parser: NULL when fine, else the reason word. */
typedef const char *(*argument_parser)(const char *value,
                                       struct probe_request *request);

/* A bounded number stored into an unsigned field of the request. */
static const char *parse_ranged(const char *value, unsigned long min,
                                unsigned long max, unsigned *field,
                                const char *invalid, const char *out_of_range)
{
    unsigned long number;

    if (!parse_bounded_decimal(value, ANY_DECIMAL, &number)) {
        return invalid;
    }
    if (number < min || number > max) {
        return out_of_range;
    }
    *field = (unsigned)number;
    return NULL;
}

static const char *parse_ip4(const char *value, struct probe_request *request)
{
    if (request->destination.family != 0) {
        return REASON_CONFLICTING_ADDRESS;
    }
    return ip_address_parse(AF_INET, value, &request->destination)
               ? NULL : REASON_IP4_INVALID;
}

static const char *parse_ip6(const char *value, struct probe_request *request)
{
    if (request->destination.family != 0) {
        return REASON_CONFLICTING_ADDRESS;
    }
    return ip_address_parse(AF_INET6, value, &request->destination)
               ? NULL : REASON_IP6_INVALID;
}

static const char *parse_local_ip4(const char *value,
                                   struct probe_request *request)
{
    if (request->local.family != 0) {
        return REASON_CONFLICTING_ADDRESS;
    }
    return ip_address_parse(AF_INET, value, &request->local)
               ? NULL : REASON_LOCAL_IP4_INVALID;
}

static const char *parse_local_ip6(const char *value,
                                   struct probe_request *request)
{
    if (request->local.family != 0) {
        return REASON_CONFLICTING_ADDRESS;
    }
    return ip_address_parse(AF_INET6, value, &request->local)
               ? NULL : REASON_LOCAL_IP6_INVALID;
}

static const char *parse_protocol(const char *value,
                                  struct probe_request *request)
{
    for (int p = 0; p < PROBE_PROTOCOL_COUNT; p++) {
        if (strcmp(value, protocol_names[p]) == 0) {
            request->protocol = (enum probe_protocol)p;
            return NULL;
        }
    }
    return REASON_PROTOCOL_INVALID;
}

static const char *parse_port(const char *value, struct probe_request *request)
{
    return parse_ranged(value, PORT_MIN, PORT_MAX, &request->port,
                        REASON_PORT_INVALID, REASON_PORT_OUT_OF_RANGE);
}

static const char *parse_local_port(const char *value,
                                    struct probe_request *request)
{
    return parse_ranged(value, LOCAL_PORT_MIN, PORT_MAX, &request->local_port,
                        REASON_LOCAL_PORT_INVALID,
                        REASON_LOCAL_PORT_OUT_OF_RANGE);
}

/* Interface names: what the kernel accepts, short of IFNAMSIZ. */
static const char *parse_local_device(const char *value,
                                      struct probe_request *request)
{
    size_t length = strlen(value);

    if (length >= sizeof(request->device) || strchr(value, '/') != NULL
        || strcmp(value, ".") == 0 || strcmp(value, "..") == 0) {
        return REASON_LOCAL_DEVICE_INVALID;
    }
    memcpy(request->device, value, length + 1);
    return NULL;
}

static const char *parse_timeout(const char *value,
                                 struct probe_request *request)
{
    if (!parse_timeout_us(value, (uint64_t)TIMEOUT_MAX_SECONDS * 1000000u,
                          &request->timeout_us)) {
        uint64_t any;

        return parse_timeout_us(value, UINT64_MAX, &any)
                   ? REASON_TIMEOUT_OUT_OF_RANGE : REASON_TIMEOUT_INVALID;
    }
    return NULL;
}

static const char *parse_ttl(const char *value, struct probe_request *request)
{
    return parse_ranged(value, TTL_MIN, TTL_MAX, &request->ttl,
                        REASON_TTL_INVALID, REASON_TTL_OUT_OF_RANGE);
}

static const char *parse_size(const char *value, struct probe_request *request)
{
    return parse_ranged(value, 0, SIZE_MAX_BYTES, &request->size,
                        REASON_SIZE_INVALID, REASON_SIZE_OUT_OF_RANGE);
}

static const char *parse_bit_pattern(const char *value,
                                     struct probe_request *request)
{
    return parse_ranged(value, 0, BIT_PATTERN_MAX, &request->bit_pattern,
                        REASON_BIT_PATTERN_INVALID,
                        REASON_BIT_PATTERN_OUT_OF_RANGE);
}

static const char *parse_tos(const char *value, struct probe_request *request)
{
    return parse_ranged(value, 0, TOS_MAX, &request->tos,
                        REASON_TOS_INVALID, REASON_TOS_OUT_OF_RANGE);
}

static const char *parse_mark(const char *value, struct probe_request *request)
{
    unsigned long number;

    if (!parse_bounded_decimal(value, ANY_DECIMAL, &number)) {
        return REASON_MARK_INVALID;
    }
    if (number > MARK_MAX) {
        return REASON_MARK_OUT_OF_RANGE;
    }
    request->has_mark = true;
    request->mark = (uint32_t)number;
    return NULL;
}

static const char *parse_details(const char *value,
                                 struct probe_request *request)
{
    if (strcmp(value, VALUE_YES) == 0) {
        request->details = true;
    } else if (strcmp(value, VALUE_NO) == 0) {
        request->details = false;
    } else {
        return REASON_DETAILS_INVALID;
    }
    return NULL;
}

static const char *parse_flow(const char *value, struct probe_request *request)
{
    request->has_flow = true;
    return parse_ranged(value, 0, FLOW_MAX, &request->flow, REASON_FLOW_INVALID,
                        REASON_FLOW_OUT_OF_RANGE);
}

struct argument_rule {
    const char *name;
    argument_parser parse;
};

static const struct argument_rule send_probe_rules[] = {
    {ARG_IP4, parse_ip4},
    {ARG_IP6, parse_ip6},
    {ARG_PROTOCOL, parse_protocol},
    {ARG_PORT, parse_port},
    {ARG_LOCAL_IP4, parse_local_ip4},
    {ARG_LOCAL_IP6, parse_local_ip6},
    {ARG_LOCAL_PORT, parse_local_port},
    {ARG_LOCAL_DEVICE, parse_local_device},
    {ARG_TIMEOUT, parse_timeout},
    {ARG_TTL, parse_ttl},
    {ARG_SIZE, parse_size},
    {ARG_BIT_PATTERN, parse_bit_pattern},
    {ARG_TOS, parse_tos},
    {ARG_MARK, parse_mark},
    {ARG_DETAILS, parse_details},
    {ARG_FLOW, parse_flow},
};

enum { RULE_COUNT = sizeof(send_probe_rules) / sizeof(send_probe_rules[0]) };

static int find_rule(const char *name)
{
    for (int r = 0; r < RULE_COUNT; r++) {
        if (strcmp(name, send_probe_rules[r].name) == 0) {
            return r;
        }
    }
    return -1;
}

static void set_request_defaults(struct probe_request *request, int32_t token)
{
    memset(request, 0, sizeof(*request));
    request->token = token;
    request->protocol = PROBE_ICMP;
    request->timeout_us = (uint64_t)DEFAULT_TIMEOUT_SECONDS * 1000000u;
    request->ttl = DEFAULT_TTL;
    request->size = DEFAULT_SIZE;
}

static const char *decode_arguments(const struct command *command,
                                    struct probe_request *request)
{
    bool seen[RULE_COUNT] = {false};

    for (int i = 0; i < command->argument_count; i++) {
        int rule = find_rule(command->argument_name[i]);
        const char *reason;

        if (rule < 0) {
            return REASON_UNKNOWN_ARGUMENT;
        }
        if (seen[rule]) {
            return REASON_DUPLICATE_ARGUMENT;
        }
        seen[rule] = true;
        reason = send_probe_rules[rule].parse(command->argument_value[i],
                                              request);
        if (reason != NULL) {
            return reason;
        }
    }
    return NULL;
}

static int family_index(int family)
{
    return family == AF_INET6 ? 1 : 0;
}

static const char *check_request(const struct probe_request *request,
                                 const struct helper_abilities *abilities)
{
    if (request->destination.family == 0) {
        return REASON_MISSING_ADDRESS;
    }
    if (request->local.family != 0
        && request->local.family != request->destination.family) {
        return REASON_LOCAL_ADDRESS_FAMILY_MISMATCH;
    }
    /* a bind to "any" would pass every check and choose nothing */
    if (request->local.family != 0
        && ip_address_is_unspecified(&request->local)) {
        return REASON_UNSPECIFIED_SOURCE;
    }
    if (!abilities->family_ok[family_index(request->destination.family)]) {
        return REASON_IP_VERSION_NOT_SUPPORTED;
    }
    if (!abilities->protocol_ok[request->protocol]) {
        return REASON_PROTOCOL_NOT_SUPPORTED;
    }
    if (request->has_flow && !abilities->raw_sockets) {
        return REASON_FLOW_NOT_SUPPORTED;
    }
    /* a flow is its source port: udp, tcp and sctp take theirs from it */
    if (request->has_flow && request->local_port != 0
        && request->protocol != PROBE_ICMP) {
        return REASON_FLOW_WITH_LOCAL_PORT;
    }
    return NULL;
}

static void interpret_send_probe(const struct command *command,
                                 const struct helper_abilities *abilities,
                                 struct command_outcome *outcome)
{
    struct probe_request *request = &outcome->request;
    const char *reason;

    set_request_defaults(request, command->token);
    reason = decode_arguments(command, request);
    if (reason == NULL) {
        reason = check_request(request, abilities);
    }
    if (reason != NULL) {
        outcome->kind = COMMAND_INVALID;
        outcome->reason = reason;
        return;
    }
    outcome->kind = COMMAND_SEND_PROBE;
}

static const char *support_of(bool ok)
{
    return ok ? SUPPORT_OK : SUPPORT_NO;
}

/* The value of check-support for FEATURE. */
static const char *feature_support(const char *feature,
                                   const struct helper_abilities *abilities,
                                   struct command_outcome *outcome)
{
    if (strcmp(feature, FEATURE_VERSION) == 0) {
        return HELPER_VERSION;
    }
    if (strcmp(feature, FEATURE_SEND_PROBE) == 0
        || strcmp(feature, FEATURE_FRACTIONAL_TIMEOUT) == 0
        || strcmp(feature, FEATURE_DETAILS) == 0
        || strcmp(feature, FEATURE_LOCAL_DEVICE) == 0) {
        return SUPPORT_OK;
    }
    /* flows need packets the helper builds: raw sockets */
    if (strcmp(feature, FEATURE_FLOW) == 0) {
        return support_of(abilities->raw_sockets);
    }
    if (strcmp(feature, FEATURE_IP4) == 0) {
        return support_of(abilities->family_ok[0]);
    }
    if (strcmp(feature, FEATURE_IP6) == 0) {
        return support_of(abilities->family_ok[1]);
    }
    for (int p = 0; p < PROBE_PROTOCOL_COUNT; p++) {
        if (strcmp(feature, protocol_names[p]) == 0) {
            return support_of(abilities->protocol_ok[p]);
        }
    }
    if (strcmp(feature, FEATURE_MARK) == 0) {
        return support_of(abilities->may_mark);
    }
    if (strcmp(feature, FEATURE_SOCKETS) == 0) {
        return abilities->raw_sockets ? SUPPORT_RAW : SUPPORT_DATAGRAM;
    }
    if (strcmp(feature, FEATURE_MAX_PROBES) == 0) {
        snprintf(outcome->support_buffer, sizeof(outcome->support_buffer),
                 "%u", abilities->max_probes);
        return outcome->support_buffer;
    }
    if (strcmp(feature, FEATURE_RATE_LIMIT) == 0) {
        if (abilities->rate_limit == 0) {
            return SUPPORT_NONE;
        }
        snprintf(outcome->support_buffer, sizeof(outcome->support_buffer),
                 "%u", abilities->rate_limit);
        return outcome->support_buffer;
    }
    if (strcmp(feature, FEATURE_SANDBOX) == 0) {
        return abilities->sandboxed ? SUPPORT_SECCOMP : SUPPORT_NONE;
    }
    return SUPPORT_NO;
}

static void interpret_check_support(const struct command *command,
                                    const struct helper_abilities *abilities,
                                    struct command_outcome *outcome)
{
    const char *feature = NULL;

    for (int i = 0; i < command->argument_count; i++) {
        if (strcmp(command->argument_name[i], ARG_FEATURE) != 0) {
            outcome->kind = COMMAND_INVALID;
            outcome->reason = REASON_UNKNOWN_ARGUMENT;
            return;
        }
        if (feature != NULL) {
            outcome->kind = COMMAND_INVALID;
            outcome->reason = REASON_DUPLICATE_ARGUMENT;
            return;
        }
        feature = command->argument_value[i];
    }
    if (feature == NULL) {
        outcome->kind = COMMAND_INVALID;
        outcome->reason = REASON_MISSING_FEATURE;
        return;
    }
    outcome->kind = COMMAND_CHECK_SUPPORT;
    outcome->support = feature_support(feature, abilities, outcome);
}

void interpret_command(const struct command *command,
                       const struct helper_abilities *abilities,
                       struct command_outcome *outcome)
{
    outcome->token = command->token;
    outcome->reason = NULL;
    outcome->support = NULL;
    if (strcmp(command->name, CMD_SEND_PROBE) != 0
        && strcmp(command->name, CMD_CHECK_SUPPORT) != 0) {
        outcome->kind = COMMAND_UNKNOWN;
        return;
    }
    if (command->too_many_arguments) {
        outcome->kind = COMMAND_INVALID;
        outcome->reason = REASON_TOO_MANY_ARGUMENTS;
        return;
    }
    if (strcmp(command->name, CMD_SEND_PROBE) == 0) {
        interpret_send_probe(command, abilities, outcome);
    } else {
        interpret_check_support(command, abilities, outcome);
    }
}
