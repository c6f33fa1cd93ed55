/*
 * prober.c - the life of a probe (see prober.h): a request line becomes a
 * validated request, an identity no probe in flight uses, a packet handed to
 * the kernel; an answer, or the deadline, becomes its one reply.
 */
#include "prober.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmdparse.h"
#include "command.h"
#include "construct.h"
#include "identity.h"
#include "monotonic.h"
#include "policy.h"
#include "port_holds.h"
#include "probe_table.h"
#include "wire.h"

#define DATAGRAM_CAPACITY 65536     /* one kernel-chosen echo id per family */
/*
 * ICMP probes sent to a family between reads of its answers while requests
 * are served in bulk: a short receive queue stays in the cache (the kernel
 * queues an answer to a loopback or nearby target within the send itself).
 */
#define RECEIVE_INTERLEAVE 64

struct prober {
    struct net_state *net;
    const struct caller_policy *caller;
    struct probe_table *table;
    struct port_holds *holds;       /* the local-ports of probes in flight */
    struct reply_writer out;
    struct helper_abilities abilities;
    struct line_reader reader;
    struct policy policy;
    bool blocked;                   /* PENDING waits for the rate limit */
    bool departures_waiting;        /* probes sent since their stamps were read */
    bool bulk;                      /* BULK_INPUT_BYTES wait behind this one */
    bool more_input;                /* more requests wait beyond those fed */
    unsigned unread_sends[2];       /* ICMP probes per family since a read */
    struct probe_request pending;
    uint32_t icmp_counter;
    uint16_t udp_counter;
    uint16_t sctp_counter;
    uint32_t tag_secret;
    uint32_t tcp_counter;
    uint32_t sctp_flow_counter;     /* initiate tags of flows' probes */
    unsigned tcp_port_turn;         /* the next of the default TCP ports */
};

/* Microseconds from SENT to RECEIVED (both CLOCK_REALTIME), never negative. */
static uint64_t elapsed_us(const struct timespec *sent,
                           const struct timespec *received)
{
    int64_t ns = ((int64_t)received->tv_sec - sent->tv_sec) * 1000000000
                 + (received->tv_nsec - sent->tv_nsec);

    return ns > 0 ? (uint64_t)ns / 1000u : 0;
}

/* Forget PROBE, letting go of its port. */
static void release_probe(struct prober *p, struct probe *probe)
{
    port_holds_release(p->holds, probe->port_hold);
    probe_free(p->table, probe);
}

static void complete_probe(struct prober *p, struct probe *probe,
                           const struct decoded_reply *reply,
                           const struct timespec *received)
{
    reply_answer(&p->out, probe->token, reply,
                 elapsed_us(&probe->sent, received), probe->details);
    release_probe(p, probe);
}

void prober_deliver(struct prober *p, const struct decoded_reply *reply,
                    const struct timespec *received)
{
    for (struct probe *probe = probe_wire_first(p->table, reply->protocol,
                                                reply_wire_key(reply));
         probe != NULL; probe = probe_wire_next(p->table, probe)) {
        if (reply_matches_probe(reply, probe)) {
            complete_probe(p, probe, reply, received);
            return;
        }
    }
}

static bool earlier(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec
           || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

bool prober_departed(struct prober *p, const struct decoded_reply *sent_probe,
                     const struct timespec *sent)
{
    for (struct probe *probe = probe_wire_first(p->table, sent_probe->protocol,
                                                reply_wire_key(sent_probe));
         probe != NULL; probe = probe_wire_next(p->table, probe)) {
        /*
         * The first stamp only, and never one from before the probe was
         * handed to the kernel: that one belongs to an earlier probe that
         * had the same identity.
         */
        if (reply_matches_probe(sent_probe, probe)) {
            if (probe->sent_stamped || earlier(sent, &probe->sent)) {
                return false;
            }
            probe->sent = *sent;
            probe->sent_stamped = true;
            return true;
        }
    }
    return false;
}

void prober_expire(struct prober *p, uint64_t now)
{
    struct probe *probe;

    while ((probe = probe_earliest(p->table)) != NULL
           && probe->deadline_ns <= now) {
        reply_bare(&p->out, probe->token, R_NO_REPLY);
        release_probe(p, probe);
    }
}

/* An ICMP id and sequence no probe in flight uses; false if none is left. */
static bool assign_icmp_identity(struct prober *p, struct probe *probe)
{
    unsigned space = net_icmp_id_space(p->net);

    for (unsigned attempt = 0; attempt < space; attempt++) {
        uint32_t n = p->icmp_counter++;
        uint16_t id = net_icmp_id(p->net, probe->destination.family, n);
        uint16_t sequence = (uint16_t)n;

        if (probe_wire_first(p->table, PROBE_ICMP,
                             icmp_wire_key(id, sequence)) == NULL) {
            probe->icmp_id = id;
            probe->icmp_sequence = sequence;
            return true;
        }
    }
    return false;
}

/* A UDP checksum value (never 0) no UDP probe in flight uses. */
static bool assign_udp_identity(struct prober *p, struct probe *probe)
{
    for (unsigned attempt = 0; attempt < 65536; attempt++) {
        uint16_t checksum = p->udp_counter++;

        if (checksum != 0
            && probe_wire_first(p->table, PROBE_UDP, checksum) == NULL) {
            probe->udp_checksum = checksum;
            return true;
        }
    }
    return false;
}

/* An SCTP source port (UDP_BASE_PORT..65535) no SCTP probe in flight uses. */
static bool assign_sctp_identity(struct prober *p, struct probe *probe)
{
    unsigned span = 65536u - UDP_BASE_PORT;

    for (unsigned attempt = 0; attempt < span; attempt++) {
        uint16_t port = (uint16_t)(UDP_BASE_PORT + p->sctp_counter++ % span);

        if (probe_wire_first(p->table, PROBE_SCTP, port) == NULL) {
            probe->source_port = port;
            /* initiate tag: never 0, different for each port and process */
            probe->sctp_tag = (p->tag_secret ^ ((uint32_t)port * 0x9e3779b1u))
                              | 1u;
            return true;
        }
    }
    return false;
}

/* A TCP sequence number no TCP probe in flight uses. */
static bool assign_tcp_identity(struct prober *p, struct probe *probe)
{
    /* more tries than probes can be in flight: one of them is free */
    for (unsigned attempt = 0; attempt <= PROBE_CAPACITY; attempt++) {
        uint32_t sequence = p->tcp_counter++;

        if (probe_wire_first(p->table, PROBE_TCP, sequence) == NULL) {
            probe->tcp_sequence = sequence;
            return true;
        }
    }
    return false;
}

/*
 * What a flow (the flow extension) fixes: every field per-flow balancers
 * hash.  Its source port (udp, tcp, sctp) is FLOW_PORT_ZERO for flow 0 and
 * counts up, wrapping to FLOW_PORT_FIRST (flows N and N + 64512 share a
 * port); its IPv6 flow label is never 0 (0 leaves it to the kernel) and
 * below the labels net.ipv6.flowlabel_state_ranges may reserve; its ICMP
 * echo checksum is the flow number.
 */
static uint16_t flow_port(unsigned flow)
{
    unsigned span = 65536u - FLOW_PORT_FIRST;

    return (uint16_t)(FLOW_PORT_FIRST
                      + (FLOW_PORT_ZERO - FLOW_PORT_FIRST + flow) % span);
}

static uint32_t flow_label(unsigned flow)
{
    return 0x10000u + flow;
}

/* The source port a udp or tcp probe names: its flow's, its local-port, or 0. */
static unsigned named_port(const struct probe_request *request)
{
    return request->has_flow ? flow_port(request->flow) : request->local_port;
}

static void fill_send_options(const struct prober *p,
                              const struct probe_request *request,
                              unsigned ifindex, struct send_options *options)
{
    /*
     * In bulk, no transmit timestamp: looping every packet back costs the
     * kernel about a sixth of our throughput, and a busy helper reads the
     * clock within about two microseconds of the packet leaving; an idle
     * one can be tens of microseconds away (a cold path).
     */
    options->stamp = !p->bulk;
    options->ttl = request->ttl;
    options->tos = request->tos;
    options->has_mark = request->has_mark;
    options->mark = request->mark;
    options->ifindex = ifindex;
    options->source = request->local.family != 0 ? &request->local : NULL;
    options->flow_label = request->has_flow ? flow_label(request->flow) : 0;
}

/* Hand PACKET to the kernel, stamping the probe's departure time. */
static int transmit(struct prober *p, struct probe *probe,
                    enum socket_role role, const uint8_t *packet,
                    size_t length, const struct send_options *options)
{
    clock_gettime(CLOCK_REALTIME, &probe->sent);
    p->departures_waiting |= options->stamp;
    return net_send(p->net, p->caller, role, &probe->destination, packet,
                    length, options);
}

static int route_source(const struct probe_request *request, unsigned ifindex,
                        struct ip_address *source);

static int send_icmp(struct prober *p, struct probe *probe,
                     const struct probe_request *request, unsigned ifindex,
                     const struct send_options *options)
{
    static uint8_t packet[PACKET_BUFFER_BYTES];
    size_t length = transport_bytes(request->destination.family, PROBE_ICMP,
                                    request->size);

    if (!assign_icmp_identity(p, probe)) {
        return ENOSPC;
    }
    if (request->has_flow) {
        /* ICMPv6's checksum covers the source: the route's, if not given */
        int error = route_source(request, ifindex, &probe->source);

        if (error != 0) {
            return error;
        }
        probe->source_known = true;
        length = length < ICMP_FLOW_BYTES ? ICMP_FLOW_BYTES : length;
        build_icmp_echo_flow(packet, length, &probe->source,
                             &probe->destination, probe->icmp_id,
                             probe->icmp_sequence, (uint16_t)request->flow,
                             (uint8_t)request->bit_pattern);
    } else {
        build_icmp_echo(packet, length, request->destination.family,
                        probe->icmp_id, probe->icmp_sequence,
                        (uint8_t)request->bit_pattern);
    }
    probe_link_wire_key(p->table, probe, probe_wire_key(probe));
    p->unread_sends[family_index(request->destination.family)]++;
    return transmit(p, probe, ROLE_ICMP, packet, length, options);
}

/* The source a UDP or TCP checksum must cover: the given one or the route's. */
static int route_source(const struct probe_request *request, unsigned ifindex,
                        struct ip_address *source)
{
    if (request->local.family != 0) {
        *source = request->local;
        return 0;
    }
    return net_route_source(&request->destination, ifindex, request->has_mark,
                            request->mark, source);
}

/*
 * Hold PROBE's local-port PORT at SOURCE for the probe's life (see
 * port_holds.h); 0 or an errno (EADDRINUSE: another socket has it).  The
 * ports this helper holds for its own life are held already.
 */
static int hold_local_port(struct prober *p, struct probe *probe,
                           const struct ip_address *source, unsigned port)
{
    if (net_port_held_for_life(p->net, probe->protocol, (uint16_t)port)) {
        return 0;
    }
    return port_holds_take(p->holds, probe->protocol, source, (uint16_t)port,
                           &probe->port_hold);
}

static int send_udp(struct prober *p, struct probe *probe,
                    const struct probe_request *request, unsigned ifindex,
                    const struct send_options *options)
{
    static uint8_t packet[PACKET_BUFFER_BYTES];
    size_t length = transport_bytes(request->destination.family, PROBE_UDP,
                                    request->size);
    unsigned port = named_port(request);
    int error = route_source(request, ifindex, &probe->source);

    if (error == 0 && port != 0) {
        error = hold_local_port(p, probe, &probe->source, port);
    }
    if (error != 0) {
        return error;
    }
    if (!assign_udp_identity(p, probe)) {
        return ENOSPC;
    }
    probe->source_known = true;
    probe->source_port = port != 0 ? (uint16_t)port : p->net->udp_source_port;
    /* a flow keeps one destination port; classic probes vary theirs */
    probe->destination_port =
        request->port != 0 ? (uint16_t)request->port
        : request->has_flow
            ? UDP_BASE_PORT
            : (uint16_t)(UDP_BASE_PORT + probe->udp_checksum
                                             % (65536u - UDP_BASE_PORT));
    build_udp(packet, length, &probe->source, &probe->destination,
              probe->source_port, probe->destination_port,
              probe->udp_checksum, (uint8_t)request->bit_pattern);
    probe_link_wire_key(p->table, probe, probe_wire_key(probe));
    return transmit(p, probe, ROLE_UDP, packet, length, options);
}

/* True when an SCTP probe in flight from PORT uses initiate tag TAG. */
static bool sctp_tag_in_use(const struct prober *p, uint16_t port,
                            uint32_t tag)
{
    for (struct probe *other = probe_wire_first(p->table, PROBE_SCTP, port);
         other != NULL; other = probe_wire_next(p->table, other)) {
        if (other->source_port == port && other->sctp_tag == tag) {
            return true;
        }
    }
    return false;
}

/*
 * An sctp probe of a flow: the flow's source port, held like a local-port,
 * which the flow's probes share; the identity is the initiate tag, unique
 * among them (answers that carry no tag go to one of the flow's probes).
 */
static int hold_sctp_flow_port(struct prober *p, struct probe *probe,
                               const struct probe_request *request)
{
    struct ip_address any = {.family = request->destination.family};
    uint16_t port = flow_port(request->flow);
    int error = hold_local_port(p, probe,
                                request->local.family != 0 ? &request->local
                                                           : &any,
                                port);

    if (error != 0) {
        return error;
    }
    probe->source_port = port;
    do {
        probe->sctp_tag = (p->tag_secret ^ (p->sctp_flow_counter++
                                            * 0x9e3779b1u)) | 1u;
    } while (sctp_tag_in_use(p, port, probe->sctp_tag));
    return 0;
}

static int send_sctp(struct prober *p, struct probe *probe,
                     const struct probe_request *request,
                     const struct send_options *options)
{
    static uint8_t packet[PACKET_BUFFER_BYTES];
    size_t length = transport_bytes(request->destination.family, PROBE_SCTP,
                                    request->size);

    if (request->has_flow) {
        int error = hold_sctp_flow_port(p, probe, request);

        if (error != 0) {
            return error;
        }
    } else if (request->local_port != 0) {
        struct ip_address any = {.family = request->destination.family};
        int error;

        if (probe_wire_first(p->table, PROBE_SCTP, request->local_port)
            != NULL) {
            return EADDRINUSE;
        }
        error = hold_local_port(p, probe,
                                request->local.family != 0 ? &request->local
                                                           : &any,
                                request->local_port);
        if (error != 0) {
            return error;
        }
        probe->source_port = (uint16_t)request->local_port;
        probe->sctp_tag = (p->tag_secret ^ request->local_port) | 1u;
    } else if (!assign_sctp_identity(p, probe)) {
        return ENOSPC;
    }
    probe->destination_port = request->port != 0 ? (uint16_t)request->port
                                                 : DEFAULT_STREAM_PORT;
    build_sctp_init(packet, length, probe->source_port,
                    probe->destination_port, probe->sctp_tag,
                    (uint8_t)request->bit_pattern);
    probe_link_wire_key(p->table, probe, probe_wire_key(probe));
    return transmit(p, probe, ROLE_SCTP, packet, length, options);
}

/* The next of the default TCP source ports, in turn. */
static uint16_t next_tcp_port(struct prober *p)
{
    return p->net->tcp_ports[p->tcp_port_turn++ % p->net->tcp_port_count];
}

static int send_tcp(struct prober *p, struct probe *probe,
                    const struct probe_request *request, unsigned ifindex,
                    const struct send_options *options)
{
    static uint8_t packet[TCP_SYN_BYTES];
    size_t length;
    unsigned port = named_port(request);
    int error = route_source(request, ifindex, &probe->source);

    if (error == 0 && port != 0) {
        error = hold_local_port(p, probe, &probe->source, port);
    }
    if (error != 0) {
        return error;
    }
    if (!assign_tcp_identity(p, probe)) {
        return ENOSPC;
    }
    probe->source_known = true;
    probe->source_port = port != 0 ? (uint16_t)port : next_tcp_port(p);
    probe->destination_port = request->port != 0 ? (uint16_t)request->port
                                                 : DEFAULT_STREAM_PORT;
    length = build_tcp_syn(packet, &probe->source, &probe->destination,
                           probe->source_port, probe->destination_port,
                           probe->tcp_sequence);
    probe_link_wire_key(p->table, probe, probe_wire_key(probe));
    return transmit(p, probe, ROLE_TCP, packet, length, options);
}

static int send_probe(struct prober *p, struct probe *probe,
                      const struct probe_request *request, unsigned ifindex)
{
    struct send_options options;

    fill_send_options(p, request, ifindex, &options);
    switch (request->protocol) {
    case PROBE_ICMP:
        return send_icmp(p, probe, request, ifindex, &options);
    case PROBE_UDP:
        return send_udp(p, probe, request, ifindex, &options);
    case PROBE_SCTP:
        return send_sctp(p, probe, request, &options);
    case PROBE_TCP:
    case PROBE_PROTOCOL_COUNT:
        break;
    }
    return send_tcp(p, probe, request, ifindex, &options);
}

/* Checks that need the system; false when a reply has been written. */
static bool admit_request(struct prober *p, const struct probe_request *request,
                          unsigned *ifindex)
{
    const char *refusal;
    struct ip_address unmapped;
    int error;

    if (probe_by_token(p->table, request->token) != NULL) {
        reply_invalid_argument(&p->out, request->token, REASON_TOKEN_IN_USE);
        return false;
    }
    *ifindex = 0;
    if (request->device[0] != '\0') {
        if (net_interface_index(p->net, request->device, ifindex) != 0) {
            reply_invalid_argument(&p->out, request->token,
                                   REASON_LOCAL_DEVICE_NOT_FOUND);
            return false;
        }
    }
    if (request->has_mark && !p->caller->may_mark) {
        reply_refused(&p->out, request->token, REASON_MARK_NOT_PERMITTED,
                      request->details);
        return false;
    }
    refusal = policy_refuse_destination(&p->policy, &request->destination);
    if (refusal != NULL) {
        reply_refused(&p->out, request->token, refusal, request->details);
        return false;
    }
    /*
     * After the policy, which judges ::ffff:a.b.c.d as a.b.c.d: only a TCP
     * socket would reach it (as IPv4, without the probe's hop limit), raw
     * IPv6 sockets cannot.
     */
    if (ip_address_unmap_v4(&request->destination, &unmapped)) {
        reply_invalid_argument(&p->out, request->token,
                               REASON_V4_MAPPED_DESTINATION);
        return false;
    }
    if (request->local.family != 0) {
        error = net_check_local_address(p->net, p->caller, &request->local);
        if (error != 0) {
            reply_send_error(&p->out, request->token, error);
            return false;
        }
    }
    return true;
}

static void start_probe(struct prober *p, const struct probe_request *request)
{
    struct probe *probe;
    unsigned ifindex;
    int error;

    if (!admit_request(p, request, &ifindex)) {
        return;
    }
    probe = probe_alloc(p->table, request->token);
    if (probe == NULL) {
        reply_bare(&p->out, request->token, R_PROBES_EXHAUSTED);
        return;
    }
    probe->protocol = request->protocol;
    probe->destination = request->destination;
    probe->details = request->details;
    if (request->local.family != 0) {
        probe->source = request->local;
        probe->source_known = true;
    }
    error = send_probe(p, probe, request, ifindex);
    if (error != 0) {
        /* ENOSPC: no identity left; EMFILE/ENFILE: no descriptor left
           for a port hold */
        if (error == ENOSPC || error == EMFILE || error == ENFILE) {
            reply_bare(&p->out, request->token, R_PROBES_EXHAUSTED);
        } else {
            reply_send_error(&p->out, request->token, error);
        }
        release_probe(p, probe);
        return;
    }
    probe_set_deadline(p->table, probe, monotonic_ns() + request->timeout_us * 1000u);
}

static void handle_line(struct prober *p, char *line, size_t length)
{
    struct command command;
    struct command_outcome outcome;

    if (!parse_command(line, length, &command)) {
        reply_parse_error(&p->out);
        return;
    }
    interpret_command(&command, &p->abilities, &outcome);
    switch (outcome.kind) {
    case COMMAND_SEND_PROBE:
        /* the clock is read only for callers the rate limit applies to */
        if (p->policy.restricted && !policy_take_token(&p->policy)) {
            p->pending = outcome.request;
            p->blocked = true;
            break;
        }
        start_probe(p, &outcome.request);
        break;
    case COMMAND_CHECK_SUPPORT:
        reply_feature_support(&p->out, outcome.token, outcome.support);
        break;
    case COMMAND_UNKNOWN:
        reply_unknown_command(&p->out, outcome.token);
        break;
    case COMMAND_INVALID:
        reply_invalid_argument(&p->out, outcome.token, outcome.reason);
        break;
    }
}

static void fill_abilities(struct prober *p, bool sandboxed)
{
    struct helper_abilities *a = &p->abilities;
    const struct net_state *net = p->net;

    memset(a, 0, sizeof(*a));
    for (int f = 0; f < 2; f++) {
        a->family_ok[f] = net->family_ok[f];
        a->protocol_ok[PROBE_ICMP] |= net->sockets[f][ROLE_ICMP] >= 0;
        a->protocol_ok[PROBE_UDP] |= net->raw && net->sockets[f][ROLE_UDP] >= 0;
        a->protocol_ok[PROBE_SCTP] |= net->sockets[f][ROLE_SCTP] >= 0;
        a->protocol_ok[PROBE_TCP] |= net->sockets[f][ROLE_TCP] >= 0
                                     && net->tcp_port_count > 0;
    }
    a->may_mark = p->caller->may_mark;
    a->raw_sockets = net->raw;
    a->rate_limit = p->caller->restricted ? RESTRICTED_PROBES_PER_SECOND : 0;
    a->sandboxed = sandboxed;
    a->max_probes = net->raw ? PROBE_CAPACITY : DATAGRAM_CAPACITY;
}

/* The callbacks net_receive() calls. */
static void deliver_answer(void *context, const struct decoded_reply *reply,
                           const struct timespec *received)
{
    prober_deliver(context, reply, received);
}

static void record_departure(void *context, const struct decoded_reply *probe,
                             const struct timespec *sent)
{
    (void)prober_departed(context, probe, sent);
}

void prober_receive_departures(struct prober *p)
{
    if (p->departures_waiting) {
        p->departures_waiting = false;
        net_receive_departures(p->net, deliver_answer, record_departure, p);
    }
}

void prober_receive(struct prober *p, int family, enum socket_role role)
{
    net_receive(p->net, role, family, deliver_answer, record_departure, p);
}

/* Read the answers to the last RECEIVE_INTERLEAVE ICMP probes of a family. */
static void receive_interleaved(struct prober *p)
{
    for (int f = 0; f < 2; f++) {
        if (p->unread_sends[f] >= RECEIVE_INTERLEAVE) {
            p->unread_sends[f] = 0;
            prober_receive(p, f == 1 ? AF_INET6 : AF_INET, ROLE_ICMP);
        }
    }
}

size_t prober_feed(struct prober *p, const char *data, size_t size)
{
    size_t consumed = 0;

    while (consumed < size && !p->blocked) {
        enum line_event event;

        consumed += line_reader_feed(&p->reader, data + consumed,
                                     size - consumed, &event);
        p->bulk = p->more_input || size - consumed >= BULK_INPUT_BYTES;
        if (event == LINE_COMPLETE) {
            handle_line(p, p->reader.line, p->reader.length);
            receive_interleaved(p);
        } else if (event == LINE_OVERFLOW) {
            reply_buffer_overflow(&p->out);
        }
    }
    return consumed;
}

void prober_more_input(struct prober *p, bool waiting)
{
    p->more_input = waiting;
}

bool prober_blocked(const struct prober *p)
{
    return p->blocked;
}

bool prober_resume(struct prober *p)
{
    if (p->blocked && policy_take_token(&p->policy)) {
        p->blocked = false;
        p->bulk = false;    /* the rate limit paces it: not in bulk */
        start_probe(p, &p->pending);
    }
    return !p->blocked;
}

void prober_end_input(struct prober *p)
{
    if (line_reader_finish(&p->reader)) {
        handle_line(p, p->reader.line, p->reader.length);
    }
}

uint64_t prober_next_wakeup(const struct prober *p)
{
    struct probe *earliest = probe_earliest(p->table);
    uint64_t wakeup = earliest != NULL ? earliest->deadline_ns : 0;

    if (p->blocked) {
        uint64_t token = policy_next_token_ns(&p->policy);

        if (wakeup == 0 || token < wakeup) {
            wakeup = token;
        }
    }
    return wakeup;
}

unsigned prober_in_flight(const struct prober *p)
{
    return probe_table_count(p->table) + (p->blocked ? 1 : 0);
}

struct reply_writer *prober_replies(struct prober *p)
{
    return &p->out;
}

struct prober *prober_create(struct net_state *net,
                             const struct caller_policy *caller,
                             bool sandboxed)
{
    struct prober *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        return NULL;
    }
    p->net = net;
    p->caller = caller;
    fill_abilities(p, sandboxed);
    p->table = probe_table_create(p->abilities.max_probes);
    p->holds = port_holds_create();
    if (p->table == NULL || p->holds == NULL) {
        if (p->table != NULL) {
            probe_table_destroy(p->table);
        }
        if (p->holds != NULL) {
            port_holds_destroy(p->holds);
        }
        free(p);
        return NULL;
    }
    reply_writer_init(&p->out);
    line_reader_init(&p->reader);
    policy_init(&p->policy, caller);
    p->icmp_counter = net->seeds.icmp;
    p->udp_counter = net->seeds.udp;
    p->sctp_counter = net->seeds.sctp;
    p->tag_secret = net->seeds.sctp_tag_secret;
    p->tcp_counter = net->seeds.tcp;
    return p;
}

void prober_destroy(struct prober *p)
{
    struct probe *probe;

    while ((probe = probe_earliest(p->table)) != NULL) {
        release_probe(p, probe);
    }
    probe_table_destroy(p->table);
    port_holds_destroy(p->holds);
    reply_writer_free(&p->out);
    free(p);
}
