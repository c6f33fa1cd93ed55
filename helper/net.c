/*
 * net.c - sockets and their I/O (see net.h).
 *
 * All probes leave through sockets whose IP header the kernel writes (no
 * IP_HDRINCL, IP_FREEBIND or IP_TRANSPARENT): the source address is always
 * one the host owns.  Per-probe TTL, TOS, source, interface and mark travel
 * as control messages, so a few shared sockets serve every probe; the
 * sockets' own TTL and TOS are the defaults, which need none.
 */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <linux/filter.h>
#include <linux/icmp.h>
#include <linux/net_tstamp.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "construct.h"
#include "privilege.h"
#include "wire.h"

#define RECEIVE_BUFFER_BYTES (8 * 1024 * 1024)
#define RECEIVE_BATCH 32
#define RECEIVE_PACKET_BYTES (PACKET_BUFFER_BYTES + 256)
#define CONTROL_BYTES 256
/* the kernel's parts of a netlink dump are at most 32 KiB */
#define NETLINK_BUFFER_BYTES 32768
/* sends that may each find an earlier probe's error pending (see net_send) */
#define DATAGRAM_SEND_RETRIES 2

int family_index(int family)
{
    return family == AF_INET6 ? 1 : 0;
}

static int family_of(int index)
{
    return index == 1 ? AF_INET6 : AF_INET;
}

static int open_socket(int family, int type, int protocol)
{
    return socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
}

static void set_int_option(int fd, int level, int name, int value)
{
    /* best effort: a missing option only costs precision or buffer room */
    (void)setsockopt(fd, level, name, &value, sizeof(value));
}

/* A socket we only send from: attach a filter that accepts nothing. */
static void refuse_all_input(int fd)
{
    struct sock_filter drop = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog program = {.len = 1, .filter = &drop};

    (void)setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program,
                     sizeof(program));
}

/*
 * Kernel timestamps, CLOCK_REALTIME: every packet received carries its
 * arrival time, and a packet sent with a TRANSMIT_STAMP control message
 * (see net_send) is looped back on the socket's error queue with the time
 * it was queued to the device, just before a capture sees it.
 */
static void enable_timestamps(int fd)
{
    set_int_option(fd, SOL_SOCKET, SO_TIMESTAMPING,
                   SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE);
}

/*
 * A buffer for what waits on the socket (answers, and transmit timestamps
 * on the error queue, which share its room).  SO_RCVBUFFORCE (past
 * net.core.rmem_max; it needs CAP_NET_ADMIN) only for a root caller: for
 * anyone else rmem_max caps SO_RCVBUF, as it caps their own sockets, so
 * that a caller cannot pin more kernel memory in our queues than in its own.
 */
static void enlarge_receive_buffer(int fd)
{
    int size = RECEIVE_BUFFER_BYTES;

    if (getuid() != 0
        || setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size))
               != 0) {
        set_int_option(fd, SOL_SOCKET, SO_RCVBUF, size);
    }
}

/* Receive options shared by every socket we read answers from. */
static void prepare_receiver(int fd, int family)
{
    enlarge_receive_buffer(fd);
    enable_timestamps(fd);
    if (family == AF_INET6) {
        set_int_option(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1);
        set_int_option(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
    }
}

/* A send-only ICMP socket: no ICMP type reaches it (not even a copy). */
static void filter_all_icmp(int fd, int family)
{
    if (family == AF_INET) {
        struct icmp_filter filter = {.data = ~0u};

        (void)setsockopt(fd, SOL_RAW, ICMP_FILTER, &filter, sizeof(filter));
    } else {
        struct icmp6_filter filter;

        ICMP6_FILTER_SETBLOCKALL(&filter);
        (void)setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter,
                         sizeof(filter));
    }
}

/*
 * A sending socket's own TTL (hop limit) is the probes' default, so that a
 * probe with the default TTL and TOS 0 needs no control messages.  False
 * when the option could not be set: then every probe carries its TTL.
 */
static bool preset_defaults(int fd, int family)
{
    int ttl = DEFAULT_TTL;

    if (fd < 0) {
        return true;
    }
    return setsockopt(fd, family == AF_INET6 ? IPPROTO_IPV6 : IPPROTO_IP,
                      family == AF_INET6 ? IPV6_UNICAST_HOPS : IP_TTL, &ttl,
                      sizeof(ttl)) == 0;
}

static void preset_family_defaults(struct net_state *net, int family)
{
    int index = family_index(family);
    bool preset = preset_defaults(net->icmp_senders[index], family);

    for (int r = 0; r < ROLE_COUNT; r++) {
        preset = preset_defaults(net->sockets[index][r], family) && preset;
    }
    net->defaults_preset[index] = preset;
}

/*
 * Only segments that may answer a SYN reach the raw TCP socket: an ACK with
 * SYN or RST (a raw socket sees every TCP segment the host receives).  An
 * IPv4 raw socket's filter reads from the IP header, an IPv6 one's from the
 * TCP header.
 */
static void filter_tcp_answers(int fd, int family)
{
    struct sock_filter ipv4[] = {
        BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),         /* X = IP header */
        BPF_STMT(BPF_LD | BPF_B | BPF_IND, 13),         /* A = TCP flags */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x10, 0, 2),   /* ACK */
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x06, 0, 1),   /* SYN or RST */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_filter ipv6[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x10, 0, 2),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x06, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog program = {
        .len = family == AF_INET6 ? sizeof(ipv6) / sizeof(ipv6[0])
                                  : sizeof(ipv4) / sizeof(ipv4[0]),
        .filter = family == AF_INET6 ? ipv6 : ipv4,
    };

    (void)setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program,
                     sizeof(program));
}

/* Only echo replies and the errors that quote a probe reach us. */
static void filter_icmp_types(int fd, int family)
{
    if (family == AF_INET) {
        struct icmp_filter filter = {
            .data = ~((1u << ICMP_ECHOREPLY) | (1u << ICMP_DEST_UNREACH)
                      | (1u << ICMP_TIME_EXCEEDED)),
        };

        (void)setsockopt(fd, SOL_RAW, ICMP_FILTER, &filter, sizeof(filter));
    } else {
        struct icmp6_filter filter;

        ICMP6_FILTER_SETBLOCKALL(&filter);
        ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &filter);
        ICMP6_FILTER_SETPASS(ICMP6_DST_UNREACH, &filter);
        ICMP6_FILTER_SETPASS(ICMP6_TIME_EXCEEDED, &filter);
        ICMP6_FILTER_SETPASS(ICMP6_PARAM_PROB, &filter);
        (void)setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter,
                         sizeof(filter));
    }
}

/* IPv6 sending sockets take a flow label from the destination's sin6_flowinfo. */
static void allow_flow_labels(struct net_state *net, int index)
{
    if (net->icmp_senders[index] >= 0) {
        set_int_option(net->icmp_senders[index], IPPROTO_IPV6,
                       IPV6_FLOWINFO_SEND, 1);
    }
    for (int r = 0; r < ROLE_COUNT; r++) {
        if (net->sockets[index][r] >= 0) {
            set_int_option(net->sockets[index][r], IPPROTO_IPV6,
                           IPV6_FLOWINFO_SEND, 1);
        }
    }
}

/* Raw sockets for one family; false (errno kept) if raw sockets are denied. */
static bool open_raw_family(struct net_state *net, int family)
{
    int index = family_index(family);
    int icmp_protocol = family == AF_INET6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
    int *sockets = net->sockets[index];

    sockets[ROLE_ICMP] = open_socket(family, SOCK_RAW, icmp_protocol);
    if (sockets[ROLE_ICMP] < 0) {
        return false;
    }
    prepare_receiver(sockets[ROLE_ICMP], family);
    filter_icmp_types(sockets[ROLE_ICMP], family);
    /*
     * Probes leave through a second socket that epoll does not watch: the
     * kernel then has nobody to wake when a sent packet is freed, which the
     * watched receiving socket would cost on every probe.
     */
    net->icmp_senders[index] = open_socket(family, SOCK_RAW, icmp_protocol);
    if (net->icmp_senders[index] >= 0) {
        filter_all_icmp(net->icmp_senders[index], family);
        enlarge_receive_buffer(net->icmp_senders[index]);
        enable_timestamps(net->icmp_senders[index]);
    }
    sockets[ROLE_UDP] = open_socket(family, SOCK_RAW, IPPROTO_UDP);
    if (sockets[ROLE_UDP] >= 0) {
        refuse_all_input(sockets[ROLE_UDP]);
        enlarge_receive_buffer(sockets[ROLE_UDP]);
        enable_timestamps(sockets[ROLE_UDP]);
    }
    sockets[ROLE_SCTP] = open_socket(family, SOCK_RAW, IPPROTO_SCTP);
    if (sockets[ROLE_SCTP] >= 0) {
        prepare_receiver(sockets[ROLE_SCTP], family);
    }
    sockets[ROLE_TCP] = open_socket(family, SOCK_RAW, IPPROTO_TCP);
    if (sockets[ROLE_TCP] >= 0) {
        filter_tcp_answers(sockets[ROLE_TCP], family);
        prepare_receiver(sockets[ROLE_TCP], family);
    }
    net->family_ok[index] = true;
    preset_family_defaults(net, family);
    if (family == AF_INET6) {
        allow_flow_labels(net, index);
    }
    return true;
}

/*
 * Unprivileged fallback: an ICMP datagram socket, allowed when our group is
 * in net.ipv4.ping_group_range (EACCES otherwise).  The kernel picks and
 * rewrites the echo id; errors arrive on the error queue (IP_RECVERR).
 */
static void open_datagram_family(struct net_state *net, int family)
{
    int index = family_index(family);
    int protocol = family == AF_INET6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
    int fd = open_socket(family, SOCK_DGRAM, protocol);
    struct sockaddr_storage bound;
    socklen_t length;
    struct ip_address any = {.family = family};
    unsigned port;

    if (fd < 0) {
        return;
    }
    length = ip_address_to_sockaddr(&any, 0, &bound);
    if (bind(fd, (struct sockaddr *)&bound, length) != 0
        || getsockname(fd, (struct sockaddr *)&bound, &length) != 0
        || !ip_address_from_sockaddr((struct sockaddr *)&bound, length, &any,
                                     &port)) {
        close(fd);
        return;
    }
    prepare_receiver(fd, family);
    if (family == AF_INET) {
        set_int_option(fd, IPPROTO_IP, IP_RECVERR, 1);
        set_int_option(fd, IPPROTO_IP, IP_RECVTTL, 1);
    } else {
        set_int_option(fd, IPPROTO_IPV6, IPV6_RECVERR, 1);
    }
    net->sockets[index][ROLE_ICMP] = fd;
    net->family_ok[index] = true;
    preset_family_defaults(net, family);
    net->datagram_ids[index] = (uint16_t)port;
}

/*
 * A socket of TYPE and PROTOCOL bound to a port of the kernel's choice on
 * every address of both families (IPv4 alone where IPv6 is missing);
 * returns it and its port, or -1.
 */
static int bind_any_port(int type, int protocol, uint16_t *port_out)
{
    struct sockaddr_storage bound;
    struct ip_address any = {.family = AF_INET6};
    socklen_t length = ip_address_to_sockaddr(&any, 0, &bound);
    unsigned port;
    int fd = open_socket(AF_INET6, type, protocol);

    if (fd >= 0) {
        set_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    } else {
        any.family = AF_INET;
        length = ip_address_to_sockaddr(&any, 0, &bound);
        fd = open_socket(AF_INET, type, protocol);
    }
    if (fd < 0 || bind(fd, (struct sockaddr *)&bound, length) != 0
        || getsockname(fd, (struct sockaddr *)&bound, &length) != 0
        || !ip_address_from_sockaddr((struct sockaddr *)&bound, length, &any,
                                     &port)) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    *port_out = (uint16_t)port;
    return fd;
}

/*
 * Hold UDP ports for the life of the process: their numbers are our ICMP
 * echo ids and our default UDP source port, so no other program (and no
 * other copy of the helper) binds them while we use them.
 */
static void hold_identities(struct net_state *net)
{
    net->icmp_id_count = 0;
    for (int i = 0; i < ID_HOLDER_COUNT; i++) {
        uint16_t port;
        int fd = bind_any_port(SOCK_DGRAM, IPPROTO_UDP, &port);

        if (fd >= 0) {
            refuse_all_input(fd);
            net->id_holders[i] = fd;
            net->icmp_ids[net->icmp_id_count++] = port;
        }
    }
    net->udp_source_port = net->icmp_ids[0];
}

/*
 * The default TCP source ports, held (bound, never listening) for the
 * helper's life so that no other socket uses them while SYNs leave from
 * them; the kernel answers their SYN-ACKs with a RST.
 */
static void hold_tcp_ports(struct net_state *net)
{
    net->tcp_port_count = 0;
    for (int i = 0; i < TCP_PORT_COUNT; i++) {
        uint16_t port;
        int fd = bind_any_port(SOCK_STREAM, IPPROTO_TCP, &port);

        if (fd >= 0) {
            net->tcp_holders[net->tcp_port_count] = fd;
            net->tcp_ports[net->tcp_port_count++] = port;
        }
    }
}

/*
 * getrandom() exists on every kernel the helper runs on (SO_BINDTOIFINDEX
 * needs Linux 5.0; getrandom came in 3.17) and, with these few bytes and no
 * flags, only waits for the pool to be initialised.  Should it fail anyway,
 * the helper stops before sending anything rather than use guessable ids.
 */
static void draw_identity_seeds(struct identity_seeds *seeds)
{
    if (getrandom(seeds, sizeof(*seeds), 0) != (ssize_t)sizeof(*seeds)) {
        abort();
    }
}

void net_open(struct net_state *net)
{
    memset(net, 0, sizeof(*net));
    for (int f = 0; f < 2; f++) {
        for (int r = 0; r < ROLE_COUNT; r++) {
            net->sockets[f][r] = -1;
        }
    }
    for (int i = 0; i < ID_HOLDER_COUNT; i++) {
        net->id_holders[i] = -1;
    }
    for (int i = 0; i < TCP_PORT_COUNT; i++) {
        net->tcp_holders[i] = -1;
    }
    net->icmp_senders[0] = net->icmp_senders[1] = -1;
    draw_identity_seeds(&net->seeds);
    net->netlink_fd = -1;
    net->raw = true;
    for (int f = 0; f < 2; f++) {
        if (!open_raw_family(net, family_of(f)) && net->raw_errno == 0) {
            net->raw_errno = errno;
        }
    }
    if (net->family_ok[0] || net->family_ok[1]) {
        hold_identities(net);
        hold_tcp_ports(net);
        return;
    }
    net->raw = false;
    for (int f = 0; f < 2; f++) {
        open_datagram_family(net, family_of(f));
    }
}

void net_open_address_list(struct net_state *net)
{
    net->netlink_fd = open_socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
}

bool net_usable(const struct net_state *net)
{
    return (net->family_ok[0] || net->family_ok[1])
           && (!net->raw || net->icmp_id_count > 0);
}

uint16_t net_icmp_id(const struct net_state *net, int family, uint32_t n)
{
    if (!net->raw) {
        return net->datagram_ids[family_index(family)];
    }
    return net->icmp_ids[(n >> 16) % net->icmp_id_count];
}

unsigned net_icmp_id_space(const struct net_state *net)
{
    return (net->raw ? net->icmp_id_count : 1) * 65536u;
}

/* Control messages for one packet, and where they are written (the buffer
   last: struct cmsghdr ends in a flexible array). */
struct control_builder {
    size_t used;
    union {
        char buffer[CONTROL_BYTES];
        struct cmsghdr align;
    } u;
};

static void add_control(struct control_builder *control, int level, int type,
                        const void *data, size_t length)
{
    struct cmsghdr *header = (struct cmsghdr *)(control->u.buffer
                                                + control->used);

    memset(header, 0, CMSG_SPACE(length));
    header->cmsg_level = level;
    header->cmsg_type = type;
    header->cmsg_len = CMSG_LEN(length);
    memcpy(CMSG_DATA(header), data, length);
    control->used += CMSG_SPACE(length);
}

static void build_controls(struct control_builder *control, int family,
                           const struct send_options *options,
                           bool defaults_preset)
{
    int ttl = (int)options->ttl;
    int tos = (int)options->tos;
    bool defaults = defaults_preset && options->ttl == DEFAULT_TTL
                    && options->tos == 0;

    control->used = 0;
    if (family == AF_INET) {
        if (!defaults) {
            add_control(control, IPPROTO_IP, IP_TTL, &ttl, sizeof(ttl));
            add_control(control, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
        }
        if (options->source != NULL || options->ifindex != 0) {
            struct in_pktinfo info = {.ipi_ifindex = (int)options->ifindex};

            if (options->source != NULL) {
                info.ipi_spec_dst = options->source->u.v4;
            }
            add_control(control, IPPROTO_IP, IP_PKTINFO, &info, sizeof(info));
        }
    } else {
        if (!defaults) {
            add_control(control, IPPROTO_IPV6, IPV6_HOPLIMIT, &ttl,
                        sizeof(ttl));
            add_control(control, IPPROTO_IPV6, IPV6_TCLASS, &tos,
                        sizeof(tos));
        }
        if (options->source != NULL || options->ifindex != 0) {
            struct in6_pktinfo info = {.ipi6_ifindex = options->ifindex};

            if (options->source != NULL) {
                info.ipi6_addr = options->source->u.v6;
            }
            add_control(control, IPPROTO_IPV6, IPV6_PKTINFO, &info,
                        sizeof(info));
        }
    }
    if (options->has_mark) {
        add_control(control, SOL_SOCKET, SO_MARK, &options->mark,
                    sizeof(options->mark));
    }
    if (options->stamp) {
        uint32_t flags = SOF_TIMESTAMPING_TX_SCHED;

        add_control(control, SOL_SOCKET, SO_TIMESTAMPING, &flags,
                    sizeof(flags));
    }
}

/* sendmsg(), with CAP_NET_ADMIN raised around it when a mark is set. */
static int send_message(int fd, const struct msghdr *message, bool has_mark)
{
    ssize_t sent;
    int error;

    if (has_mark && !privilege_raise_net_admin()) {
        return EPERM;
    }
    /* without control messages sendto() spares the kernel a msghdr copy */
    sent = message->msg_controllen == 0
               ? sendto(fd, message->msg_iov[0].iov_base,
                        message->msg_iov[0].iov_len, 0, message->msg_name,
                        message->msg_namelen)
               : sendmsg(fd, message, 0);
    error = sent < 0 ? errno : 0;
    if (has_mark) {
        privilege_lower_net_admin();
    }
    return error;
}

int net_send(const struct net_state *net, enum socket_role role,
             const struct ip_address *destination, const uint8_t *packet,
             size_t length, const struct send_options *options)
{
    int index = family_index(destination->family);
    int fd = role == ROLE_ICMP && net->icmp_senders[index] >= 0
                 ? net->icmp_senders[index] : net->sockets[index][role];
    struct sockaddr_storage address;
    struct control_builder control;
    struct iovec vector = {.iov_base = (void *)packet, .iov_len = length};
    struct msghdr message = {0};
    int error;

    if (fd < 0) {
        return EPROTONOSUPPORT;
    }
    if (options->has_mark && !net->may_mark) {
        return EPERM;
    }
    /* port 0: IPv6 raw sockets take a non-zero port as a protocol number */
    message.msg_namelen = ip_address_to_sockaddr(destination, 0, &address);
    if (destination->family == AF_INET6 && options->flow_label != 0) {
        /* taken from here (IPV6_FLOWINFO_SEND): no lease needed while no
           socket of the namespace holds an exclusive label */
        ((struct sockaddr_in6 *)&address)->sin6_flowinfo =
            htonl(options->flow_label & 0xfffff);
    }
    message.msg_name = &address;
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    build_controls(&control, destination->family, options,
                   net->defaults_preset[index]);
    /* no control messages: no control buffer for the kernel to copy */
    message.msg_control = control.used > 0 ? control.u.buffer : NULL;
    message.msg_controllen = control.used;
    error = send_message(fd, &message, options->has_mark);
    /*
     * A datagram ("ping") socket also keeps the last ICMP error it was sent
     * (time exceeded, unreachable) in its pending socket error, and the next
     * send fails with that error without sending anything, which consumes
     * it.  The error belongs to an earlier probe and is reported from the
     * error queue: send again.  A failure of this probe's own comes back.
     */
    for (int retry = 0; !net->raw && error != 0 && retry < DATAGRAM_SEND_RETRIES;
         retry++) {
        error = send_message(fd, &message, options->has_mark);
    }
    return error;
}

static int set_mark_option(int fd, uint32_t mark)
{
    int result;

    if (!privilege_raise_net_admin()) {
        return EPERM;
    }
    result = setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) == 0
                 ? 0 : errno;
    privilege_lower_net_admin();
    return result;
}

/* SO_BINDTODEVICE by index; allowed without privilege on a fresh socket. */
static int bind_to_interface(int fd, unsigned ifindex)
{
    int index = (int)ifindex;

    return setsockopt(fd, SOL_SOCKET, SO_BINDTOIFINDEX, &index,
                      sizeof(index)) == 0 ? 0 : errno;
}

int net_route_source(const struct ip_address *destination, unsigned ifindex,
                     bool has_mark, uint32_t mark, struct ip_address *source)
{
    struct sockaddr_storage address;
    socklen_t length = ip_address_to_sockaddr(destination, 9, &address);
    int fd = open_socket(destination->family, SOCK_DGRAM, IPPROTO_UDP);
    int error = 0;

    if (fd < 0) {
        return errno;
    }
    if (ifindex != 0) {
        error = bind_to_interface(fd, ifindex);
    }
    if (error == 0 && has_mark) {
        error = set_mark_option(fd, mark);
    }
    /* connecting a UDP socket sends nothing: it only asks the routing table */
    if (error == 0 && connect(fd, (struct sockaddr *)&address, length) != 0) {
        error = errno;
    }
    length = sizeof(address);
    if (error == 0
        && (getsockname(fd, (struct sockaddr *)&address, &length) != 0
            || !ip_address_from_sockaddr((struct sockaddr *)&address, length,
                                         source, NULL))) {
        error = errno != 0 ? errno : EINVAL;
    }
    close(fd);
    return error;
}

/* An inet socket we hold for as long as we run (net_usable(): one exists). */
static int held_socket(const struct net_state *net)
{
    for (int f = 0; f < 2; f++) {
        if (net->sockets[f][ROLE_ICMP] >= 0) {
            return net->sockets[f][ROLE_ICMP];
        }
    }
    return -1;
}

int net_interface_index(const struct net_state *net, const char *name,
                        unsigned *index)
{
    struct ifreq request;
    size_t length = strnlen(name, IFNAMSIZ);

    if (length == 0 || length >= IFNAMSIZ) {
        return ENODEV;
    }
    memset(&request, 0, sizeof(request));
    memcpy(request.ifr_name, name, length);
    /* glibc's if_nametoindex() would open an AF_UNIX socket for this */
    if (ioctl(held_socket(net), SIOCGIFINDEX, &request) != 0) {
        return errno;
    }
    *index = (unsigned)request.ifr_ifindex;
    return 0;
}

/* The request for a dump of the host's addresses of one family. */
static int request_address_dump(int fd, int family, uint32_t sequence)
{
    struct {
        struct nlmsghdr header;
        struct ifaddrmsg body;
    } request;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};

    memset(&request, 0, sizeof(request));
    request.header.nlmsg_len = sizeof(request);
    request.header.nlmsg_type = RTM_GETADDR;
    request.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.header.nlmsg_seq = sequence;
    request.body.ifa_family = (unsigned char)family;
    return sendto(fd, &request, sizeof(request), 0,
                  (struct sockaddr *)&kernel, sizeof(kernel)) < 0
               ? errno : 0;
}

/*
 * Read the dump numbered SEQUENCE to its end (a dump left unread would make
 * the next request fail with EBUSY), noting whether ADDRESS is in it.  The
 * kernel writes each part before the call that asked for it returns (the
 * request, then each read), so the non-blocking socket never has to wait;
 * EAGAIN would mean the kernel stopped answering: refused, as every error.
 */
static int read_address_dump(int fd, uint32_t sequence,
                             const struct ip_address *address, bool *listed)
{
    static uint8_t buffer[NETLINK_BUFFER_BYTES];

    for (;;) {
        struct sockaddr_nl sender;
        struct iovec vector = {.iov_base = buffer, .iov_len = sizeof(buffer)};
        struct msghdr message = {
            .msg_name = &sender,
            .msg_namelen = sizeof(sender),
            .msg_iov = &vector,
            .msg_iovlen = 1,
        };
        ssize_t length = recvmsg(fd, &message, 0);
        int error = 0;

        if (length < 0) {
            return errno;
        }
        if ((message.msg_flags & MSG_TRUNC) != 0) {
            return EMSGSIZE;
        }
        if (message.msg_namelen < sizeof(sender) || sender.nl_pid != 0) {
            continue;       /* only the kernel speaks for the host */
        }
        switch (decode_address_dump(buffer, (size_t)length, sequence, address,
                                    listed, &error)) {
        case ADDRESS_DUMP_CONTINUES:
            break;
        case ADDRESS_DUMP_DONE:
            return 0;
        case ADDRESS_DUMP_FAILED:
            return error;
        }
    }
}

/* 0 when ADDRESS is one of the host's own, EADDRNOTAVAIL, or an errno. */
static int check_address_listed(struct net_state *net,
                                const struct ip_address *address)
{
    bool listed = false;
    int error;

    if (net->netlink_fd < 0) {
        /* a caller entitled to marks has no list (net_open_address_list);
           for anyone else it could not be read: nothing passes */
        return net->may_mark ? 0 : EADDRNOTAVAIL;
    }
    net->netlink_sequence++;
    error = request_address_dump(net->netlink_fd, address->family,
                                 net->netlink_sequence);
    if (error == 0) {
        error = read_address_dump(net->netlink_fd, net->netlink_sequence,
                                  address, &listed);
    }
    if (error != 0) {
        return error;
    }
    return listed ? 0 : EADDRNOTAVAIL;
}

/* Addresses no host sends from, whatever a bind (or ip_nonlocal_bind) allows. */
static bool never_a_source(const struct ip_address *address)
{
    struct ip_address unmapped;

    return ip_address_is_multicast(address)
           || ip_address_is_limited_broadcast(address)
           || ip_address_unmap_v4(address, &unmapped);
}

int net_check_local_address(struct net_state *net,
                            const struct ip_address *address)
{
    struct sockaddr_storage bound;
    socklen_t length = ip_address_to_sockaddr(address, 0, &bound);
    int error = never_a_source(address) ? EADDRNOTAVAIL
                                        : check_address_listed(net, address);
    int fd;

    if (error != 0) {
        return error;
    }
    fd = open_socket(address->family, SOCK_DGRAM, IPPROTO_UDP);
    if (fd < 0) {
        return errno;
    }
    /* a listed address may still be refused: EADDRNOTAVAIL for an IPv6
       address that is tentative (duplicate address detection) */
    if (bind(fd, (struct sockaddr *)&bound, length) != 0) {
        error = errno;
    }
    close(fd);
    return error;
}

int net_hold_port(enum probe_protocol protocol,
                  const struct ip_address *address, uint16_t port, int *fd_out)
{
    struct sockaddr_storage bound;
    socklen_t length = ip_address_to_sockaddr(address, port, &bound);
    bool sctp = protocol == PROBE_SCTP;
    int fd = sctp ? open_socket(address->family, SOCK_SEQPACKET, IPPROTO_SCTP)
             : protocol == PROBE_TCP
                 ? open_socket(address->family, SOCK_STREAM, IPPROTO_TCP)
                 : open_socket(address->family, SOCK_DGRAM, IPPROTO_UDP);
    int error;

    *fd_out = -1;
    if (fd < 0) {
        return sctp && (errno == EPROTONOSUPPORT || errno == ESOCKTNOSUPPORT)
                   ? 0 : errno;
    }
    if (bind(fd, (struct sockaddr *)&bound, length) != 0) {
        error = errno;
        close(fd);
        return error;
    }
    if (protocol == PROBE_UDP) {
        /* answers to the probe end here, unread: the smallest buffer the
           kernel allows keeps a couple of them and drops the rest */
        set_int_option(fd, SOL_SOCKET, SO_RCVBUF, 1);
    }
    *fd_out = fd;
    return 0;
}

void net_release_port(int fd)
{
    close(fd);
}

bool net_port_held_for_life(const struct net_state *net,
                            enum probe_protocol protocol, uint16_t port)
{
    const uint16_t *ports = protocol == PROBE_TCP ? net->tcp_ports
                                                  : net->icmp_ids;
    unsigned count = protocol == PROBE_TCP ? net->tcp_port_count
                                           : net->icmp_id_count;

    if (protocol != PROBE_TCP && protocol != PROBE_UDP) {
        return false;
    }
    for (unsigned i = 0; i < count; i++) {
        if (ports[i] == port) {
            return true;
        }
    }
    return false;
}

/* Receiving */

struct receive_batch {
    struct mmsghdr headers[RECEIVE_BATCH];
    struct iovec vectors[RECEIVE_BATCH];
    struct sockaddr_storage names[RECEIVE_BATCH];
    union {
        char buffer[CONTROL_BYTES];
        struct cmsghdr align;
    } controls[RECEIVE_BATCH];
    uint8_t packets[RECEIVE_BATCH][RECEIVE_PACKET_BYTES];
};

static struct receive_batch batch;

/* WITH_NAMES: the senders' addresses are wanted. */
static void prepare_batch(bool with_names)
{
    for (int i = 0; i < RECEIVE_BATCH; i++) {
        struct msghdr *message = &batch.headers[i].msg_hdr;

        batch.vectors[i].iov_base = batch.packets[i];
        batch.vectors[i].iov_len = sizeof(batch.packets[i]);
        memset(message, 0, sizeof(*message));
        if (with_names) {
            message->msg_name = &batch.names[i];
            message->msg_namelen = sizeof(batch.names[i]);
        }
        message->msg_iov = &batch.vectors[i];
        message->msg_iovlen = 1;
        message->msg_control = batch.controls[i].buffer;
        message->msg_controllen = sizeof(batch.controls[i].buffer);
    }
}

/* What the control messages of one received packet tell. */
struct receive_info {
    struct timespec received;
    int hop_limit;                      /* IPv6 hop limit / IPv4 TTL, -1 */
    struct ip_address local;            /* our address it was sent to */
    const struct sock_extended_err *error;
    struct ip_address offender;
};

static void read_controls(struct msghdr *message, struct receive_info *info)
{
    memset(info, 0, sizeof(*info));
    info->hop_limit = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(message); c != NULL;
         c = CMSG_NXTHDR(message, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPING) {
            /* ts[0]: the software timestamp; [1] and [2] are hardware's */
            memcpy(&info->received, CMSG_DATA(c), sizeof(info->received));
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_HOPLIMIT) {
            memcpy(&info->hop_limit, CMSG_DATA(c), sizeof(int));
        } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TTL) {
            memcpy(&info->hop_limit, CMSG_DATA(c), sizeof(int));
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo pktinfo;

            memcpy(&pktinfo, CMSG_DATA(c), sizeof(pktinfo));
            info->local.family = AF_INET6;
            info->local.u.v6 = pktinfo.ipi6_addr;
        } else if (((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR)
                    || (c->cmsg_level == IPPROTO_IPV6
                        && c->cmsg_type == IPV6_RECVERR))
                   && c->cmsg_len >= CMSG_LEN(sizeof(*info->error))) {
            info->error = (const struct sock_extended_err *)CMSG_DATA(c);
            /* the offender's sockaddr follows, as long as its family needs */
            ip_address_from_sockaddr(
                SO_EE_OFFENDER(info->error),
                (socklen_t)(c->cmsg_len - CMSG_LEN(sizeof(*info->error))),
                &info->offender, NULL);
        }
    }
}

/* Decode one packet read from a raw socket of ROLE. */
static bool decode_raw(enum socket_role role, int family, const uint8_t *data,
                       size_t length, const struct ip_address *source,
                       const struct receive_info *info,
                       struct decoded_reply *reply)
{
    if (family == AF_INET) {
        return decode_ipv4_packet(data, length, reply);
    }
    if (role == ROLE_SCTP) {
        return decode_sctp6_packet(data, length, source, &info->local,
                                   info->hop_limit, reply);
    }
    if (role == ROLE_TCP) {
        return decode_tcp6_packet(data, length, source, &info->local,
                                  info->hop_limit, reply);
    }
    return decode_icmp6_message(data, length, source, &info->local,
                                info->hop_limit, reply);
}

/* A transmit timestamp on an error queue: our own packet looped back. */
static bool is_transmit_timestamp(const struct receive_info *info)
{
    return info->error != NULL
           && info->error->ee_origin == SO_EE_ORIGIN_TIMESTAMPING
           && info->received.tv_sec != 0;
}

static bool decode_datagram(int family, const uint8_t *data, size_t length,
                            const struct ip_address *peer,
                            const struct receive_info *info,
                            struct decoded_reply *reply)
{
    const struct sock_extended_err *error = info->error;

    if (error == NULL) {
        return decode_datagram_echo(data, length, peer, info->hop_limit,
                                    reply);
    }
    if (error->ee_origin != SO_EE_ORIGIN_ICMP
        && error->ee_origin != SO_EE_ORIGIN_ICMP6) {
        return false;
    }
    return decode_datagram_error(data, length, family, error->ee_type,
                                 error->ee_code, &info->offender, peer,
                                 reply);
}

/* Drain FD (its error queue when FLAGS has MSG_ERRQUEUE). */
static void receive_from(const struct net_state *net, int fd,
                         enum socket_role role, int family, int flags,
                         reply_sink sink, sent_sink sent, void *context)
{
    /* an IPv4 raw packet names its sender in its own header */
    bool with_names = !net->raw || family == AF_INET6;

    for (;;) {
        int count;

        prepare_batch(with_names);
        count = recvmmsg(fd, batch.headers, RECEIVE_BATCH, flags, NULL);
        if (count <= 0) {
            /* EAGAIN: drained.  Others (ENOBUFS, ...) lose packets, not us. */
            return;
        }
        for (int i = 0; i < count; i++) {
            struct msghdr *message = &batch.headers[i].msg_hdr;
            struct receive_info info;
            struct ip_address peer;
            struct decoded_reply reply;
            bool decoded;

            if ((message->msg_flags & MSG_TRUNC) != 0) {
                continue;
            }
            read_controls(message, &info);
            if (is_transmit_timestamp(&info)) {
                if (decode_sent_packet(batch.packets[i],
                                       batch.headers[i].msg_len, family,
                                       &reply)) {
                    sent(context, &reply, &info.received);
                }
                continue;
            }
            /* a raw socket's error queue holds nothing else we asked for */
            if (net->raw && (flags & MSG_ERRQUEUE) != 0) {
                continue;
            }
            memset(&peer, 0, sizeof(peer));
            if (with_names
                && !ip_address_from_sockaddr(message->msg_name,
                                             message->msg_namelen, &peer,
                                             NULL)) {
                continue;
            }
            if (info.received.tv_sec == 0) {
                clock_gettime(CLOCK_REALTIME, &info.received);
            }
            decoded = net->raw
                          ? decode_raw(role, family, batch.packets[i],
                                       batch.headers[i].msg_len, &peer, &info,
                                       &reply)
                          : decode_datagram(family, batch.packets[i],
                                            batch.headers[i].msg_len, &peer,
                                            &info, &reply);
            if (decoded) {
                sink(context, &reply, &info.received);
            }
        }
        if (count < RECEIVE_BATCH) {
            return;
        }
    }
}

/* The error queues of FAMILY's sockets: departures, and a datagram
   socket's ICMP errors. */
static void receive_error_queues(const struct net_state *net, int family,
                                 reply_sink sink, sent_sink sent,
                                 void *context)
{
    int index = family_index(family);

    if (net->icmp_senders[index] >= 0) {
        receive_from(net, net->icmp_senders[index], ROLE_ICMP, family,
                     MSG_ERRQUEUE, sink, sent, context);
    }
    for (int r = 0; r < ROLE_COUNT; r++) {
        if (net->sockets[index][r] >= 0) {
            receive_from(net, net->sockets[index][r], (enum socket_role)r,
                         family, MSG_ERRQUEUE, sink, sent, context);
        }
    }
}

void net_receive(const struct net_state *net, enum socket_role role,
                 int family, reply_sink sink, sent_sink sent, void *context)
{
    int fd = net->sockets[family_index(family)][role];

    if (fd < 0) {
        return;
    }
    /* departures first: an answer may be waiting for a probe of any role */
    receive_error_queues(net, family, sink, sent, context);
    receive_from(net, fd, role, family, 0, sink, sent, context);
}

void net_receive_departures(const struct net_state *net, reply_sink sink,
                            sent_sink sent, void *context)
{
    receive_error_queues(net, AF_INET, sink, sent, context);
    receive_error_queues(net, AF_INET6, sink, sent, context);
}
