/*
 * net_receive.c - reading the sockets (see net.h): batches of packets, their
 * control messages, the pure decoders of decode.h, the error queues with
 * their ICMP errors and transmit timestamps (departures).
 */
#include "net.h"

#include <linux/errqueue.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "construct.h"
#include "net_internal.h"

#define RECEIVE_BATCH 32
#define RECEIVE_PACKET_BYTES (PACKET_BUFFER_BYTES + 256)

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
