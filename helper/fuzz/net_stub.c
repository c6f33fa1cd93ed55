/*
 * net_stub.c - net.h without a network, for the fuzz harnesses: sends
 * succeed without leaving the process, routes lead to loopback, nothing is
 * received (the harness delivers answers itself).  Identities are fixed so
 * a seed corpus can answer the probes.  Local addresses are checked against
 * a dump built in the kernel's format (see net_check_local_address).
 */
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
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
    net->tcp_ports[0] = 0x5151;
    net->tcp_ports[1] = 0x5152;
    net->tcp_port_count = 2;
    memset(&net->seeds, 0, sizeof(net->seeds));
    net->netlink_fd = -1;
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

int net_send(const struct net_state *net, const struct caller_policy *caller,
             enum socket_role role, const struct ip_address *destination,
             const uint8_t *packet, size_t length,
             const struct send_options *options)
{
    (void)net;
    (void)caller;
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

/* Append one netlink message of TYPE with PAYLOAD to a dump being built. */
static size_t put_message(uint8_t *dump, size_t used, uint16_t type,
                          uint32_t sequence, const void *payload, size_t size)
{
    struct nlmsghdr header = {
        .nlmsg_len = (uint32_t)NLMSG_LENGTH(size),
        .nlmsg_type = type,
        .nlmsg_flags = NLM_F_MULTI,
        .nlmsg_seq = sequence,
    };

    memcpy(dump + used, &header, sizeof(header));
    memcpy(dump + used + NLMSG_HDRLEN, payload, size);
    return used + NLMSG_ALIGN(header.nlmsg_len);
}

/* An RTM_NEWADDR payload: ifaddrmsg, then IFA_ADDRESS and IFA_LOCAL. */
static size_t new_address(uint8_t *payload, int family, const char *text)
{
    struct ip_address address;
    struct ifaddrmsg header = {.ifa_family = (unsigned char)family,
                               .ifa_index = 1};
    size_t used = NLMSG_ALIGN(sizeof(header));

    ip_address_parse(family, text, &address);
    memcpy(payload, &header, sizeof(header));
    for (unsigned short type = IFA_ADDRESS; type <= IFA_LOCAL; type++) {
        struct rtattr attribute = {
            .rta_len = (unsigned short)RTA_LENGTH(ip_address_length(&address)),
            .rta_type = type,
        };

        memcpy(payload + used, &attribute, sizeof(attribute));
        memcpy(payload + used + RTA_LENGTH(0), address.u.bytes,
               ip_address_length(&address));
        used += RTA_ALIGN(attribute.rta_len);
    }
    return used;
}

/*
 * The host's addresses: loopback and the lab-like source the routes lead
 * from, written as the kernel's RTM_GETADDR dump and read back through the
 * same decoder the real check uses.  The bind check has no stand-in.
 */
int net_check_local_address(struct net_state *net,
                            const struct caller_policy *caller,
                            const struct ip_address *address)
{
    static const char *const hosts[2][2] = {{"127.0.0.1", "198.18.0.2"},
                                            {"::1", "2001:db8::2"}};
    static uint8_t dump[512];
    uint8_t payload[64];
    size_t used = 0;
    bool listed = false;
    int error = 0;
    int done = 0;

    (void)caller;
    net->netlink_sequence++;
    for (int i = 0; i < 2; i++) {
        size_t size = new_address(payload, address->family,
                                  hosts[family_index(address->family)][i]);

        used = put_message(dump, used, RTM_NEWADDR, net->netlink_sequence,
                           payload, size);
    }
    used = put_message(dump, used, NLMSG_DONE, net->netlink_sequence, &done,
                       sizeof(done));
    if (decode_address_dump(dump, used, net->netlink_sequence, address,
                            &listed, &error) != ADDRESS_DUMP_DONE) {
        return error;
    }
    return listed ? 0 : EADDRNOTAVAIL;
}

/* Ports from 50000 to 50099 are another user's: EADDRINUSE. */
int net_hold_port(enum probe_protocol protocol,
                  const struct ip_address *address, uint16_t port, int *fd)
{
    (void)protocol;
    (void)address;
    *fd = -1;
    if (port >= 50000 && port < 50100) {
        return EADDRINUSE;
    }
    *fd = 300 + port;       /* never used */
    return 0;
}

void net_release_port(int fd)
{
    (void)fd;
}

bool net_port_held_for_life(const struct net_state *net,
                            enum probe_protocol protocol, uint16_t port)
{
    if (protocol == PROBE_TCP) {
        return port == net->tcp_ports[0] || port == net->tcp_ports[1];
    }
    return protocol == PROBE_UDP
           && (port == net->icmp_ids[0] || port == net->icmp_ids[1]);
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
