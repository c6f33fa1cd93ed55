/*
 * net_send.c - what the helper does with its sockets for each probe it
 * sends (see net.h): control messages, the send, marks, routes, interface
 * indexes, source checks (the host's addresses and a bind) and port holds.
 *
 * All probes leave through sockets whose IP header the kernel writes (no
 * IP_HDRINCL, IP_FREEBIND or IP_TRANSPARENT): the source address is always
 * one the host owns.  Per-probe TTL, TOS, source, interface and mark travel
 * as control messages, so a few shared sockets serve every probe; the
 * sockets' own TTL and TOS are the defaults, which need none.
 */
#include "net.h"

#include <errno.h>
#include <linux/net_tstamp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "net_internal.h"
#include "privilege.h"
#include "wire.h"

/* the kernel's parts of a netlink dump are at most 32 KiB */
#define NETLINK_BUFFER_BYTES 32768
/* sends that may each find an earlier probe's error pending (see net_send) */
#define DATAGRAM_SEND_RETRIES 2

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

int net_send(const struct net_state *net, const struct caller_policy *caller,
             enum socket_role role, const struct ip_address *destination,
             const uint8_t *packet, size_t length,
             const struct send_options *options)
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
    if (options->has_mark && !caller->may_mark) {
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
    int fd = net_socket(destination->family, SOCK_DGRAM, IPPROTO_UDP);
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
                                const struct caller_policy *caller,
                                const struct ip_address *address)
{
    bool listed = false;
    int error;

    if (net->netlink_fd < 0) {
        /* a caller entitled to marks has no list (net_open_address_list);
           for anyone else it could not be read: nothing passes */
        return caller->may_mark ? 0 : EADDRNOTAVAIL;
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
                            const struct caller_policy *caller,
                            const struct ip_address *address)
{
    struct sockaddr_storage bound;
    socklen_t length = ip_address_to_sockaddr(address, 0, &bound);
    int error = never_a_source(address)
                    ? EADDRNOTAVAIL
                    : check_address_listed(net, caller, address);
    int fd;

    if (error != 0) {
        return error;
    }
    fd = net_socket(address->family, SOCK_DGRAM, IPPROTO_UDP);
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
    int fd = sctp ? net_socket(address->family, SOCK_SEQPACKET, IPPROTO_SCTP)
             : protocol == PROBE_TCP
                 ? net_socket(address->family, SOCK_STREAM, IPPROTO_TCP)
                 : net_socket(address->family, SOCK_DGRAM, IPPROTO_UDP);
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
        net_set_int_option(fd, SOL_SOCKET, SO_RCVBUF, 1);
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
