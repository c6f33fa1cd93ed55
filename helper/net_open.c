/*
 * net_open.c - everything done while privileged (see net.h): the sockets,
 * their filters and options, the ports held for the helper's life, the
 * identity seeds and the address-list socket.  Nothing here reads input.
 */
#include "net.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/icmp.h>
#include <linux/net_tstamp.h>
#include <linux/netlink.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_internal.h"
#include "wire.h"

#define RECEIVE_BUFFER_BYTES (8 * 1024 * 1024)

int family_index(int family)
{
    return family == AF_INET6 ? 1 : 0;
}

static int family_of(int index)
{
    return index == 1 ? AF_INET6 : AF_INET;
}

int net_socket(int family, int type, int protocol)
{
    return socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
}

void net_set_int_option(int fd, int level, int name, int value)
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
    net_set_int_option(fd, SOL_SOCKET, SO_TIMESTAMPING,
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
        net_set_int_option(fd, SOL_SOCKET, SO_RCVBUF, size);
    }
}

/* Receive options shared by every socket we read answers from. */
static void prepare_receiver(int fd, int family)
{
    enlarge_receive_buffer(fd);
    enable_timestamps(fd);
    if (family == AF_INET6) {
        net_set_int_option(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1);
        net_set_int_option(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
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
        net_set_int_option(net->icmp_senders[index], IPPROTO_IPV6,
                       IPV6_FLOWINFO_SEND, 1);
    }
    for (int r = 0; r < ROLE_COUNT; r++) {
        if (net->sockets[index][r] >= 0) {
            net_set_int_option(net->sockets[index][r], IPPROTO_IPV6,
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

    sockets[ROLE_ICMP] = net_socket(family, SOCK_RAW, icmp_protocol);
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
    net->icmp_senders[index] = net_socket(family, SOCK_RAW, icmp_protocol);
    if (net->icmp_senders[index] >= 0) {
        filter_all_icmp(net->icmp_senders[index], family);
        enlarge_receive_buffer(net->icmp_senders[index]);
        enable_timestamps(net->icmp_senders[index]);
    }
    sockets[ROLE_UDP] = net_socket(family, SOCK_RAW, IPPROTO_UDP);
    if (sockets[ROLE_UDP] >= 0) {
        refuse_all_input(sockets[ROLE_UDP]);
        enlarge_receive_buffer(sockets[ROLE_UDP]);
        enable_timestamps(sockets[ROLE_UDP]);
    }
    sockets[ROLE_SCTP] = net_socket(family, SOCK_RAW, IPPROTO_SCTP);
    if (sockets[ROLE_SCTP] >= 0) {
        prepare_receiver(sockets[ROLE_SCTP], family);
    }
    sockets[ROLE_TCP] = net_socket(family, SOCK_RAW, IPPROTO_TCP);
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
    int fd = net_socket(family, SOCK_DGRAM, protocol);
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
        net_set_int_option(fd, IPPROTO_IP, IP_RECVERR, 1);
        net_set_int_option(fd, IPPROTO_IP, IP_RECVTTL, 1);
    } else {
        net_set_int_option(fd, IPPROTO_IPV6, IPV6_RECVERR, 1);
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
    int fd = net_socket(AF_INET6, type, protocol);

    if (fd >= 0) {
        net_set_int_option(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0);
    } else {
        any.family = AF_INET;
        length = ip_address_to_sockaddr(&any, 0, &bound);
        fd = net_socket(AF_INET, type, protocol);
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
    net->netlink_fd = net_socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
}

bool net_usable(const struct net_state *net)
{
    return (net->family_ok[0] || net->family_ok[1])
           && (!net->raw || net->icmp_id_count > 0);
}
