/*
 * net_stub.c - net.h without a network, for the fuzz harnesses: sends
 * succeed without leaving the process, routes lead to loopback, nothing is
 * received (the harness delivers answers itself).  Identities are fixed so
 * a seed corpus can answer the probes.
 */
#include <errno.h>
#include <string.h>

#include "../net.h"

int family_index(int family)
{
    return family == AF_INET6 ? 1 : 0;
}

void net_open(struct net_state *net)
{
    memset(net, 0, sizeof(*net));
    net->icmp_senders[0] = net->icmp_senders[1] = -1;
    net->raw = true;
    net->family_ok[0] = net->family_ok[1] = true;
    for (int f = 0; f < 2; f++) {
        for (int r = 0; r < ROLE_COUNT; r++) {
            net->sockets[f][r] = 100 + f * ROLE_COUNT + r;     /* never used */
        }
    }
    net->icmp_ids[0] = 0x4242;
    net->icmp_ids[1] = 0x4243;
    net->icmp_id_count = 2;
    net->udp_source_port = 0x4242;
    net->may_mark = true;
    net->identity_seed = 0;
}

bool net_usable(const struct net_state *net)
{
    return net->family_ok[0] || net->family_ok[1];
}

uint16_t net_icmp_id(const struct net_state *net, int family, uint32_t n)
{
    (void)family;
    return net->icmp_ids[(n >> 16) % net->icmp_id_count];
}

unsigned net_icmp_id_space(const struct net_state *net)
{
    return net->icmp_id_count * 65536u;
}

int net_send(const struct net_state *net, enum socket_role role,
             const struct ip_address *destination, const uint8_t *packet,
             size_t length, const struct send_options *options)
{
    (void)net;
    (void)role;
    (void)destination;
    (void)packet;
    (void)length;
    (void)options;
    return 0;
}

int net_route_source(const struct ip_address *destination, unsigned ifindex,
                     bool has_mark, uint32_t mark, struct ip_address *source)
{
    (void)ifindex;
    (void)has_mark;
    (void)mark;
    return ip_address_parse(destination->family,
                            destination->family == AF_INET6 ? "2001:db8::2"
                                                            : "198.18.0.2",
                            source) ? 0 : EINVAL;
}

/* Only loopback exists here. */
int net_interface_index(const struct net_state *net, const char *name,
                        unsigned *index)
{
    (void)net;
    if (strcmp(name, "lo") != 0) {
        return ENODEV;
    }
    *index = 1;
    return 0;
}

int net_check_local_address(const struct ip_address *address)
{
    return ip_address_is_loopback(address) ? 0 : EADDRNOTAVAIL;
}

int net_tcp_connect(const struct probe_request *request, unsigned ifindex,
                    int *fd, struct ip_address *source, uint16_t *source_port)
{
    (void)request;
    (void)ifindex;
    (void)fd;
    (void)source;
    (void)source_port;
    return EHOSTUNREACH;
}

int net_tcp_result(int fd)
{
    (void)fd;
    return ECONNREFUSED;
}

bool net_tcp_icmp_error(int fd, struct tcp_icmp_error *error)
{
    (void)fd;
    (void)error;
    return false;
}

void net_tcp_abort(int fd)
{
    (void)fd;
}

void net_receive_departures(const struct net_state *net, reply_sink sink,
                            sent_sink sent, void *context)
{
    (void)net;
    (void)sink;
    (void)sent;
    (void)context;
}

void net_receive(const struct net_state *net, enum socket_role role,
                 int family, reply_sink sink, sent_sink sent, void *context)
{
    (void)net;
    (void)role;
    (void)family;
    (void)sink;
    (void)sent;
    (void)context;
}
