/*
 * engine.c - the event loop (see engine.h).
 *
 * One epoll set watches stdin, stdout (for room and for its reader going
 * away), a timerfd armed for the earliest probe deadline, the shared receive
 * sockets and each TCP probe's socket.  Within one wake-up, answers are read
 * before deadlines are checked, and deadlines before new requests: a reply
 * that has arrived always wins over a timeout that has just passed.
 */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "cmdparse.h"
#include "command.h"
#include "construct.h"
#include "identity.h"
#include "probe_table.h"
#include "reply.h"
#include "wire.h"

#define INPUT_CHUNK_BYTES 65536
#define OUTPUT_HIGH_WATER (4u * 1024 * 1024)  /* stop reading requests */
#define OUTPUT_LOW_WATER (1u * 1024 * 1024)   /* read them again */
#define EVENT_BATCH 256
#define DATAGRAM_CAPACITY 65536               /* one kernel-chosen echo id */

enum event_kind {
    EVENT_STDIN = 1,
    EVENT_STDOUT,
    EVENT_TIMER,
    EVENT_SOCKET,   /* low bits: family index * ROLE_COUNT + role */
    EVENT_TCP,      /* low bits: generation << 24 | slot */
};

#define EVENT_KIND_SHIFT 56
#define TCP_SLOT_BITS 24

struct engine {
    struct net_state *net;
    struct probe_table *table;
    struct reply_writer out;
    struct helper_abilities abilities;
    struct line_reader reader;
    int epoll_fd;
    int timer_fd;
    uint64_t armed_deadline;
    bool input_open;
    bool input_pollable;
    bool input_paused;
    bool output_pollable;
    bool output_waiting;        /* EPOLLOUT is requested on stdout */
    bool output_gone;
    uint32_t icmp_counter;
    uint16_t udp_counter;
    uint16_t sctp_counter;
    uint32_t tag_secret;
};

static uint64_t event_data(enum event_kind kind, uint64_t low)
{
    return (uint64_t)kind << EVENT_KIND_SHIFT | low;
}

static uint64_t monotonic_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* Microseconds from SENT to RECEIVED (both CLOCK_REALTIME), never negative. */
static uint64_t elapsed_us(const struct timespec *sent,
                           const struct timespec *received)
{
    int64_t ns = ((int64_t)received->tv_sec - sent->tv_sec) * 1000000000
                 + (received->tv_nsec - sent->tv_nsec);

    return ns > 0 ? (uint64_t)ns / 1000u : 0;
}

static void watch(struct engine *e, int fd, uint32_t events, uint64_t data,
                  int operation)
{
    struct epoll_event event = {.events = events, .data.u64 = data};

    if (epoll_ctl(e->epoll_fd, operation, fd, &event) != 0) {
        perror("brokerpkg-helper: epoll_ctl");
        exit(EXIT_FAILURE);
    }
}

/* Forget PROBE, closing its TCP socket if it has one. */
static void release_probe(struct engine *e, struct probe *probe)
{
    if (probe->tcp_fd >= 0) {
        net_tcp_abort(probe->tcp_fd);   /* also leaves the epoll set */
    }
    probe_free(e->table, probe);
}

/* Answers */

static void complete_probe(struct engine *e, struct probe *probe,
                           const struct decoded_reply *reply,
                           const struct timespec *received)
{
    reply_answer(&e->out, probe->token, reply,
                 elapsed_us(&probe->sent, received), probe->details);
    release_probe(e, probe);
}

static void on_answer(void *context, const struct decoded_reply *reply,
                      const struct timespec *received)
{
    struct engine *e = context;

    for (struct probe *probe = probe_wire_first(e->table, reply->protocol,
                                                reply_wire_key(reply));
         probe != NULL; probe = probe_wire_next(e->table, probe)) {
        if (reply_matches_probe(reply, probe)) {
            complete_probe(e, probe, reply, received);
            return;
        }
    }
}

static void receive_answers(struct engine *e, int family, enum socket_role role)
{
    net_receive(e->net, role, family, on_answer, e);
}

static void on_tcp_event(struct engine *e, uint64_t low, uint32_t events)
{
    uint32_t slot = (uint32_t)(low & ((1u << TCP_SLOT_BITS) - 1));
    uint32_t generation = (uint32_t)(low >> TCP_SLOT_BITS);
    struct probe *probe = probe_by_slot(e->table, slot, generation);
    struct timespec now;
    int error;

    if (probe == NULL) {
        return;     /* answered by an ICMP error earlier in this wake-up */
    }
    error = net_tcp_result(probe->tcp_fd);
    if (error == 0 && (events & EPOLLOUT) == 0) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    if (error == 0 || error == ECONNREFUSED) {
        reply_tcp_answer(&e->out, probe->token, &probe->destination,
                         elapsed_us(&probe->sent, &now),
                         error == ECONNREFUSED, probe->details);
        release_probe(e, probe);
        return;
    }
    /* an ICMP error ended the connect: prefer its answer, which names the
       router, if the raw socket has it */
    receive_answers(e, probe->destination.family, ROLE_ICMP);
    probe = probe_by_slot(e->table, slot, generation);
    if (probe != NULL) {
        reply_send_error(&e->out, probe->token, error);
        release_probe(e, probe);
    }
}

static void expire_probes(struct engine *e)
{
    uint64_t now = monotonic_ns();
    struct probe *probe;

    while ((probe = probe_earliest(e->table)) != NULL
           && probe->deadline_ns <= now) {
        reply_bare(&e->out, probe->token, R_NO_REPLY);
        release_probe(e, probe);
    }
}

/* Sending */

/* An ICMP id and sequence no probe in flight uses; false if none is left. */
static bool assign_icmp_identity(struct engine *e, struct probe *probe)
{
    unsigned space = net_icmp_id_space(e->net);

    for (unsigned attempt = 0; attempt < space; attempt++) {
        uint32_t n = e->icmp_counter++;
        uint16_t id = net_icmp_id(e->net, probe->destination.family, n);
        uint16_t sequence = (uint16_t)n;

        if (probe_wire_first(e->table, PROBE_ICMP,
                             icmp_wire_key(id, sequence)) == NULL) {
            probe->icmp_id = id;
            probe->icmp_sequence = sequence;
            return true;
        }
    }
    return false;
}

/* A UDP checksum value (never 0) no UDP probe in flight uses. */
static bool assign_udp_identity(struct engine *e, struct probe *probe)
{
    for (unsigned attempt = 0; attempt < 65536; attempt++) {
        uint16_t checksum = e->udp_counter++;

        if (checksum != 0
            && probe_wire_first(e->table, PROBE_UDP, checksum) == NULL) {
            probe->udp_checksum = checksum;
            return true;
        }
    }
    return false;
}

/* An SCTP source port (UDP_BASE_PORT..65535) no SCTP probe in flight uses. */
static bool assign_sctp_identity(struct engine *e, struct probe *probe)
{
    unsigned span = 65536u - UDP_BASE_PORT;

    for (unsigned attempt = 0; attempt < span; attempt++) {
        uint16_t port = (uint16_t)(UDP_BASE_PORT + e->sctp_counter++ % span);

        if (probe_wire_first(e->table, PROBE_SCTP, port) == NULL) {
            probe->source_port = port;
            /* initiate tag: never 0, different for each port and process */
            probe->sctp_tag = (e->tag_secret ^ ((uint32_t)port * 0x9e3779b1u))
                              | 1u;
            return true;
        }
    }
    return false;
}

static void fill_send_options(const struct probe_request *request,
                              unsigned ifindex, struct send_options *options)
{
    options->ttl = request->ttl;
    options->tos = request->tos;
    options->has_mark = request->has_mark;
    options->mark = request->mark;
    options->ifindex = ifindex;
    options->source = request->local.family != 0 ? &request->local : NULL;
}

/* Hand PACKET to the kernel, stamping the probe's departure time. */
static int transmit(struct engine *e, struct probe *probe,
                    enum socket_role role, const uint8_t *packet,
                    size_t length, const struct send_options *options)
{
    clock_gettime(CLOCK_REALTIME, &probe->sent);
    return net_send(e->net, role, &probe->destination, packet, length,
                    options);
}

static int send_icmp(struct engine *e, struct probe *probe,
                     const struct probe_request *request,
                     const struct send_options *options)
{
    static uint8_t packet[PACKET_BUFFER_BYTES];
    size_t length = transport_bytes(request->destination.family, PROBE_ICMP,
                                    request->size);

    if (!assign_icmp_identity(e, probe)) {
        return ENOSPC;
    }
    build_icmp_echo(packet, length, request->destination.family,
                    probe->icmp_id, probe->icmp_sequence,
                    (uint8_t)request->bit_pattern);
    probe_link_wire_key(e->table, probe, probe_wire_key(probe));
    return transmit(e, probe, ROLE_ICMP, packet, length, options);
}

/* The source a UDP checksum must cover: the given one or the route's. */
static int udp_source(const struct probe_request *request, unsigned ifindex,
                      struct ip_address *source)
{
    if (request->local.family != 0) {
        *source = request->local;
        return 0;
    }
    return net_route_source(&request->destination, ifindex, request->has_mark,
                            request->mark, source);
}

static int send_udp(struct engine *e, struct probe *probe,
                    const struct probe_request *request, unsigned ifindex,
                    const struct send_options *options)
{
    static uint8_t packet[PACKET_BUFFER_BYTES];
    size_t length = transport_bytes(request->destination.family, PROBE_UDP,
                                    request->size);
    int error = udp_source(request, ifindex, &probe->source);

    if (error != 0) {
        return error;
    }
    if (!assign_udp_identity(e, probe)) {
        return ENOSPC;
    }
    probe->source_known = true;
    probe->source_port = request->local_port != 0 ? (uint16_t)request->local_port
                                                  : e->net->udp_source_port;
    probe->destination_port =
        request->port != 0
            ? (uint16_t)request->port
            : (uint16_t)(UDP_BASE_PORT + probe->udp_checksum
                                             % (65536u - UDP_BASE_PORT));
    build_udp(packet, length, &probe->source, &probe->destination,
              probe->source_port, probe->destination_port,
              probe->udp_checksum, (uint8_t)request->bit_pattern);
    probe_link_wire_key(e->table, probe, probe_wire_key(probe));
    return transmit(e, probe, ROLE_UDP, packet, length, options);
}

static int send_sctp(struct engine *e, struct probe *probe,
                     const struct probe_request *request,
                     const struct send_options *options)
{
    static uint8_t packet[PACKET_BUFFER_BYTES];
    size_t length = transport_bytes(request->destination.family, PROBE_SCTP,
                                    request->size);

    if (request->local_port != 0) {
        if (probe_wire_first(e->table, PROBE_SCTP, request->local_port)
            != NULL) {
            return EADDRINUSE;
        }
        probe->source_port = (uint16_t)request->local_port;
        probe->sctp_tag = (e->tag_secret ^ request->local_port) | 1u;
    } else if (!assign_sctp_identity(e, probe)) {
        return ENOSPC;
    }
    probe->destination_port = request->port != 0 ? (uint16_t)request->port
                                                 : DEFAULT_STREAM_PORT;
    build_sctp_init(packet, length, probe->source_port,
                    probe->destination_port, probe->sctp_tag,
                    (uint8_t)request->bit_pattern);
    probe_link_wire_key(e->table, probe, probe_wire_key(probe));
    return transmit(e, probe, ROLE_SCTP, packet, length, options);
}

static int send_tcp(struct engine *e, struct probe *probe,
                    const struct probe_request *request, unsigned ifindex)
{
    int error;

    clock_gettime(CLOCK_REALTIME, &probe->sent);
    error = net_tcp_connect(request, ifindex, &probe->tcp_fd, &probe->source,
                            &probe->source_port);
    if (error != 0) {
        return error;
    }
    probe->source_known = true;
    probe->destination_port = request->port != 0 ? (uint16_t)request->port
                                                 : DEFAULT_STREAM_PORT;
    probe_link_wire_key(e->table, probe, probe_wire_key(probe));
    watch(e, probe->tcp_fd, EPOLLOUT,
          event_data(EVENT_TCP, (uint64_t)probe->generation << TCP_SLOT_BITS
                                    | probe->slot),
          EPOLL_CTL_ADD);
    return 0;
}

static int send_probe(struct engine *e, struct probe *probe,
                      const struct probe_request *request, unsigned ifindex)
{
    struct send_options options;

    fill_send_options(request, ifindex, &options);
    switch (request->protocol) {
    case PROBE_ICMP:
        return send_icmp(e, probe, request, &options);
    case PROBE_UDP:
        return send_udp(e, probe, request, ifindex, &options);
    case PROBE_SCTP:
        return send_sctp(e, probe, request, &options);
    case PROBE_TCP:
    case PROBE_PROTOCOL_COUNT:
        break;
    }
    return send_tcp(e, probe, request, ifindex);
}

/* Checks that need the system; false when a reply has been written. */
static bool admit_request(struct engine *e, const struct probe_request *request,
                          unsigned *ifindex)
{
    int error;

    if (probe_by_token(e->table, request->token) != NULL) {
        reply_invalid_argument(&e->out, request->token, "token-in-use");
        return false;
    }
    *ifindex = 0;
    if (request->device[0] != '\0') {
        *ifindex = if_nametoindex(request->device);
        if (*ifindex == 0) {
            reply_invalid_argument(&e->out, request->token,
                                   "local-device-not-found");
            return false;
        }
    }
    if (request->has_mark && !e->net->may_mark) {
        reply_bare(&e->out, request->token, R_PERMISSION_DENIED);
        return false;
    }
    if (request->local.family != 0) {
        error = net_check_local_address(&request->local);
        if (error != 0) {
            reply_send_error(&e->out, request->token, error);
            return false;
        }
    }
    return true;
}

static void start_probe(struct engine *e, const struct probe_request *request)
{
    struct probe *probe;
    unsigned ifindex;
    int error;

    if (!admit_request(e, request, &ifindex)) {
        return;
    }
    probe = probe_alloc(e->table, request->token);
    if (probe == NULL) {
        reply_bare(&e->out, request->token, R_PROBES_EXHAUSTED);
        return;
    }
    probe->protocol = request->protocol;
    probe->destination = request->destination;
    probe->details = request->details;
    if (request->local.family != 0) {
        probe->source = request->local;
        probe->source_known = true;
    }
    error = send_probe(e, probe, request, ifindex);
    if (error != 0) {
        /* ENOSPC: no identity left; EMFILE/ENFILE: no descriptor left */
        if (error == ENOSPC || error == EMFILE || error == ENFILE) {
            reply_bare(&e->out, request->token, R_PROBES_EXHAUSTED);
        } else {
            reply_send_error(&e->out, request->token, error);
        }
        release_probe(e, probe);
        return;
    }
    probe_set_deadline(e->table, probe, monotonic_ns() + request->timeout_us * 1000u);
}

/* Requests */

static void handle_line(struct engine *e, char *line, size_t length)
{
    struct command command;
    struct command_outcome outcome;

    if (!parse_command(line, length, &command)) {
        reply_parse_error(&e->out);
        return;
    }
    interpret_command(&command, &e->abilities, &outcome);
    switch (outcome.kind) {
    case COMMAND_SEND_PROBE:
        start_probe(e, &outcome.request);
        break;
    case COMMAND_CHECK_SUPPORT:
        reply_feature_support(&e->out, outcome.token, outcome.support);
        break;
    case COMMAND_UNKNOWN:
        reply_unknown_command(&e->out, outcome.token);
        break;
    case COMMAND_INVALID:
        reply_invalid_argument(&e->out, outcome.token, outcome.reason);
        break;
    }
}

static void feed_input(struct engine *e, const char *data, size_t size)
{
    while (size > 0) {
        enum line_event event;
        size_t used = line_reader_feed(&e->reader, data, size, &event);

        data += used;
        size -= used;
        if (event == LINE_COMPLETE) {
            handle_line(e, e->reader.line, e->reader.length);
        } else if (event == LINE_OVERFLOW) {
            reply_buffer_overflow(&e->out);
        }
    }
}

static void close_input(struct engine *e)
{
    if (line_reader_finish(&e->reader)) {
        handle_line(e, e->reader.line, e->reader.length);
    }
    if (e->input_pollable && !e->input_paused) {
        epoll_ctl(e->epoll_fd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
    }
    e->input_open = false;
}

static void read_input(struct engine *e)
{
    static char chunk[INPUT_CHUNK_BYTES];
    ssize_t count = read(STDIN_FILENO, chunk, sizeof(chunk));

    if (count > 0) {
        feed_input(e, chunk, (size_t)count);
    } else if (count == 0 || (errno != EAGAIN && errno != EINTR)) {
        close_input(e);     /* end of input, or it failed: same for us */
    }
}

/* Output */

static void pause_input(struct engine *e, bool paused)
{
    if (!e->input_open || !e->input_pollable || e->input_paused == paused) {
        e->input_paused = paused;
        return;
    }
    e->input_paused = paused;
    if (paused) {
        epoll_ctl(e->epoll_fd, EPOLL_CTL_DEL, STDIN_FILENO, NULL);
    } else {
        watch(e, STDIN_FILENO, EPOLLIN, event_data(EVENT_STDIN, 0),
              EPOLL_CTL_ADD);
    }
}

static void flush_output(struct engine *e)
{
    bool waiting;

    if (e->out.out_of_memory) {
        fprintf(stderr, "brokerpkg-helper: out of memory for replies\n");
        exit(EXIT_FAILURE);
    }
    if (reply_pending(&e->out) > 0 && reply_flush(&e->out, STDOUT_FILENO) != 0) {
        e->output_gone = true;  /* EPIPE and the like: nobody reads us */
        return;
    }
    if (reply_pending(&e->out) > OUTPUT_HIGH_WATER) {
        pause_input(e, true);
    } else if (reply_pending(&e->out) < OUTPUT_LOW_WATER) {
        pause_input(e, false);
    }
    waiting = reply_pending(&e->out) > 0;
    if (e->output_pollable && waiting != e->output_waiting) {
        watch(e, STDOUT_FILENO, waiting ? EPOLLOUT : 0,
              event_data(EVENT_STDOUT, 0), EPOLL_CTL_MOD);
        e->output_waiting = waiting;
    }
}

/* Timer */

static void arm_timer(struct engine *e)
{
    struct probe *earliest = probe_earliest(e->table);
    uint64_t deadline = earliest != NULL ? earliest->deadline_ns : 0;
    struct itimerspec spec = {0};

    if (deadline == e->armed_deadline) {
        return;
    }
    /* an absolute time of 0 would disarm the timer: 1 ns is just as past */
    if (earliest != NULL) {
        uint64_t at = deadline > 0 ? deadline : 1;

        spec.it_value.tv_sec = (time_t)(at / 1000000000u);
        spec.it_value.tv_nsec = (long)(at % 1000000000u);
    }
    if (timerfd_settime(e->timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) != 0) {
        perror("brokerpkg-helper: timerfd_settime");
        exit(EXIT_FAILURE);
    }
    e->armed_deadline = deadline;
}

/* Setup */

static bool can_poll(int fd)
{
    struct stat info;

    /* epoll refuses regular files and /dev/null-like character devices */
    return fstat(fd, &info) == 0 && !S_ISREG(info.st_mode)
           && !S_ISDIR(info.st_mode) && !S_ISBLK(info.st_mode);
}

static bool is_pipe_or_socket(int fd)
{
    struct stat info;

    return fstat(fd, &info) == 0
           && (S_ISFIFO(info.st_mode) || S_ISSOCK(info.st_mode));
}

/* Register FD, telling whether epoll accepts it (EPERM: a plain file). */
static bool try_watch(struct engine *e, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event event = {.events = events, .data.u64 = data};

    return epoll_ctl(e->epoll_fd, EPOLL_CTL_ADD, fd, &event) == 0;
}

static void fill_abilities(struct engine *e)
{
    struct helper_abilities *a = &e->abilities;
    const struct net_state *net = e->net;

    memset(a, 0, sizeof(*a));
    for (int f = 0; f < 2; f++) {
        a->family_ok[f] = net->family_ok[f];
        a->protocol_ok[PROBE_ICMP] |= net->sockets[f][ROLE_ICMP] >= 0;
        a->protocol_ok[PROBE_UDP] |= net->raw && net->sockets[f][ROLE_UDP] >= 0;
        a->protocol_ok[PROBE_SCTP] |= net->sockets[f][ROLE_SCTP] >= 0;
    }
    /* TCP probes need a raw ICMP socket to see routers' answers */
    a->protocol_ok[PROBE_TCP] = net->raw;
    a->may_mark = net->may_mark;
    a->raw_sockets = net->raw;
    a->max_probes = net->raw ? PROBE_CAPACITY : DATAGRAM_CAPACITY;
}

static void watch_sockets(struct engine *e)
{
    for (int f = 0; f < 2; f++) {
        for (int r = 0; r < ROLE_COUNT; r++) {
            int fd = e->net->sockets[f][r];

            if (fd >= 0 && r != ROLE_UDP) {
                watch(e, fd, EPOLLIN,
                      event_data(EVENT_SOCKET, (uint64_t)(f * ROLE_COUNT + r)),
                      EPOLL_CTL_ADD);
            }
        }
    }
}

static void setup(struct engine *e, struct net_state *net)
{
    memset(e, 0, sizeof(*e));
    e->net = net;
    fill_abilities(e);
    e->table = probe_table_create(e->abilities.max_probes);
    e->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    e->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (e->table == NULL || e->epoll_fd < 0 || e->timer_fd < 0) {
        perror("brokerpkg-helper: setup");
        exit(EXIT_FAILURE);
    }
    reply_writer_init(&e->out);
    line_reader_init(&e->reader);
    e->input_open = true;
    e->input_pollable = can_poll(STDIN_FILENO)
                        && try_watch(e, STDIN_FILENO, EPOLLIN,
                                     event_data(EVENT_STDIN, 0));
    /* non-blocking only on our own pipe: a shared tty must stay as it was */
    if (is_pipe_or_socket(STDOUT_FILENO)) {
        fcntl(STDOUT_FILENO, F_SETFL,
              fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
        /* watched with no events: EPOLLERR/EPOLLHUP say the reader left */
        e->output_pollable = try_watch(e, STDOUT_FILENO, 0,
                                       event_data(EVENT_STDOUT, 0));
    }
    watch(e, e->timer_fd, EPOLLIN, event_data(EVENT_TIMER, 0), EPOLL_CTL_ADD);
    watch_sockets(e);
    e->icmp_counter = (uint32_t)getpid() * 7919u;
    e->tag_secret = (uint32_t)monotonic_ns() ^ ((uint32_t)getpid() << 16);
}

/* One wake-up: answers first, then deadlines, then new requests. */
static void dispatch(struct engine *e, const struct epoll_event *events,
                     int count)
{
    bool input_ready = e->input_open && !e->input_pollable;

    for (int i = 0; i < count; i++) {
        uint64_t data = events[i].data.u64;
        enum event_kind kind = (enum event_kind)(data >> EVENT_KIND_SHIFT);
        uint64_t low = data & ((1ull << EVENT_KIND_SHIFT) - 1);

        if (kind == EVENT_SOCKET) {
            int f = (int)(low / ROLE_COUNT);

            receive_answers(e, f == 1 ? AF_INET6 : AF_INET,
                            (enum socket_role)(low % ROLE_COUNT));
        } else if (kind == EVENT_STDOUT
                   && (events[i].events & (EPOLLERR | EPOLLHUP)) != 0) {
            e->output_gone = true;
        } else if (kind == EVENT_STDIN) {
            input_ready = true;
        }
    }
    for (int i = 0; i < count; i++) {
        uint64_t data = events[i].data.u64;

        if ((enum event_kind)(data >> EVENT_KIND_SHIFT) == EVENT_TCP) {
            on_tcp_event(e, data & ((1ull << EVENT_KIND_SHIFT) - 1),
                         events[i].events);
        }
    }
    expire_probes(e);
    if (input_ready && e->input_open && !e->input_paused) {
        read_input(e);
    }
}

static bool finished(const struct engine *e)
{
    return e->output_gone
           || (!e->input_open && probe_table_count(e->table) == 0
               && reply_pending(&e->out) == 0);
}

int engine_run(struct net_state *net)
{
    static struct engine engine;
    struct engine *e = &engine;
    struct epoll_event events[EVENT_BATCH];

    setup(e, net);
    while (!finished(e)) {
        int timeout = e->input_open && !e->input_pollable && !e->input_paused
                          ? 0 : -1;
        int count;

        arm_timer(e);
        count = epoll_wait(e->epoll_fd, events, EVENT_BATCH, timeout);
        if (count < 0 && errno != EINTR) {
            perror("brokerpkg-helper: epoll_wait");
            return EXIT_FAILURE;
        }
        if (count > 0 || timeout == 0) {
            uint64_t expirations;

            (void)!read(e->timer_fd, &expirations, sizeof(expirations));
            dispatch(e, events, count > 0 ? count : 0);
        }
        flush_output(e);
    }
    return EXIT_SUCCESS;
}
