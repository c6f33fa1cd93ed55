/*
 * net.h - the helper's sockets, in the order of the data flow: opening them
 * while privileged (net_open.c), sending probe packets with per-packet
 * options (net_send.c), receiving and decoding answers (net_receive.c).
 * fuzz/net_stub.c stands in for all three in the fuzz harnesses.
 */
#ifndef BROKERPKG_NET_H
#define BROKERPKG_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "addr.h"
#include "command.h"
#include "decode.h"
#include "policy.h"

#define ID_HOLDER_COUNT 2           /* PROBE_CAPACITY / 65536 ICMP ids */
/*
 * TCP source ports held for the helper's life, taken in turn by TCP probes
 * without local-port or flow: classic probes still vary their flow, as
 * connect()'s ports did, and 20,000 of them need no descriptor each.
 */
#define TCP_PORT_COUNT 8

enum socket_role {
    ROLE_ICMP,      /* raw ICMP/ICMPv6, or an ICMP datagram ("ping") socket */
    ROLE_UDP,       /* raw UDP, send only */
    ROLE_SCTP,      /* raw SCTP */
    ROLE_TCP,       /* raw TCP: SYNs out, SYN-ACKs and RSTs in */
    ROLE_COUNT,
};

/*
 * Where this process starts each of its identity sequences, and the secret
 * its SCTP initiate tags are made from: drawn from getrandom(), so that no
 * other user can compute them from what /proc shows (pid, start time).
 */
struct identity_seeds {
    uint32_t icmp;                  /* echo id choice and sequence */
    uint16_t udp;                   /* UDP checksum */
    uint16_t sctp;                  /* SCTP source port */
    uint32_t sctp_tag_secret;
    uint32_t tcp;                   /* TCP sequence number */
};

struct net_state {
    bool raw;                       /* false: only ICMP datagram sockets */
    bool family_ok[2];              /* [0] IPv4, [1] IPv6 */
    int sockets[2][ROLE_COUNT];     /* -1 when not open */
    int icmp_senders[2];            /* raw: send-only ICMP sockets, or -1 */
    bool defaults_preset[2];        /* every sending socket of the family has
                                       DEFAULT_TTL and TOS 0 as its own */
    int id_holders[ID_HOLDER_COUNT];
    uint16_t icmp_ids[ID_HOLDER_COUNT]; /* raw: the held ports' numbers */
    unsigned icmp_id_count;
    uint16_t datagram_ids[2];           /* datagram: the kernel's, per family */
    uint16_t udp_source_port;       /* held by id_holders[0] */
    int tcp_holders[TCP_PORT_COUNT];    /* bound TCP sockets, or -1 */
    uint16_t tcp_ports[TCP_PORT_COUNT]; /* their ports, both families */
    unsigned tcp_port_count;
    int raw_errno;                  /* why raw sockets failed, 0 if they did not */
    struct identity_seeds seeds;
    int netlink_fd;                 /* NETLINK_ROUTE: the host's addresses */
    uint32_t netlink_sequence;      /* of the last request sent on it */
};

/* 0 for AF_INET, 1 for AF_INET6: the index of per-family arrays. */
int family_index(int family);

/* Opening (net_open.c) */

/*
 * Open every socket the helper will use.  Runs while privileged and does
 * nothing else: no input is read.  Never exits; what failed is recorded.
 */
void net_open(struct net_state *net);

/*
 * Open the NETLINK_ROUTE socket that lists the host's addresses for
 * net_check_local_address(), while still privileged.  Only for callers not
 * entitled to marks: the others keep CAP_NET_ADMIN permitted (privilege.h),
 * and with it raised a held route socket could change the host's routes and
 * addresses; they may send from any address themselves, so their sources are
 * checked by binding alone.  A failure leaves the socket closed: then no
 * source passes for those callers.
 */
void net_open_address_list(struct net_state *net);

/* True when at least one family can send ICMP probes. */
bool net_usable(const struct net_state *net);

/* Sending (net_send.c) */

/* The echo id for the N-th identity of FAMILY, and how many there are. */
uint16_t net_icmp_id(const struct net_state *net, int family, uint32_t n);
unsigned net_icmp_id_space(const struct net_state *net);

/* Per-packet options of one probe. */
struct send_options {
    unsigned ttl;
    unsigned tos;
    bool has_mark;
    uint32_t mark;
    unsigned ifindex;                   /* 0: any interface */
    const struct ip_address *source;    /* NULL: the kernel's choice */
    bool stamp;                         /* ask for a transmit timestamp */
    uint32_t flow_label;                /* IPv6: 0 leaves it to the kernel */
};

/*
 * Send PACKET (transport header onward) to DESTINATION through the socket of
 * ROLE for its family.  Returns 0, or the errno of the failure: EPERM for a
 * mark when CALLER is not entitled to marks.
 */
int net_send(const struct net_state *net, const struct caller_policy *caller,
             enum socket_role role, const struct ip_address *destination,
             const uint8_t *packet, size_t length,
             const struct send_options *options);

/*
 * The source address the kernel would use to reach DESTINATION (through
 * IFINDEX / with MARK when given).  Returns 0 or an errno.
 */
int net_route_source(const struct ip_address *destination, unsigned ifindex,
                     bool has_mark, uint32_t mark, struct ip_address *source);

/*
 * The index of the interface called NAME (ioctl SIOCGIFINDEX on a socket
 * opened by net_open()), stored in INDEX.  Returns 0, ENODEV when there is
 * no such interface or NAME is empty or IFNAMSIZ bytes or longer, or the
 * ioctl's errno.
 */
int net_interface_index(const struct net_state *net, const char *name,
                        unsigned *index);

/*
 * 0 when ADDRESS is assigned to an interface of this host (it is listed in a
 * dump of the host's addresses, RTM_GETADDR on NET's netlink socket, when
 * CALLER is not entitled to marks: see net_open_address_list) and a
 * socket can be bound to it; else an errno (EADDRNOTAVAIL: not an address
 * of this host).  The dump is what net.ipv4/ipv6.ip_nonlocal_bind cannot
 * fool: with it set, the bind alone succeeds for any address.
 */
int net_check_local_address(struct net_state *net,
                            const struct caller_policy *caller,
                            const struct ip_address *address);

/*
 * Bind a socket of PROTOCOL (PROBE_UDP, PROBE_TCP or PROBE_SCTP) to ADDRESS
 * and PORT and keep it, so that no other socket can be bound there while it
 * is open (a UDP hold drops what arrives; a TCP hold does not listen, so the
 * kernel answers a SYN-ACK to its port with a RST).  Returns 0 and the socket in *FD, or an
 * errno: EADDRINUSE when another socket holds that address and port.
 * Without a kernel SCTP stack (the socket cannot be made: EPROTONOSUPPORT,
 * ESOCKTNOSUPPORT) no socket of anyone can be bound to an SCTP port, and
 * SCTP packets reach only raw sockets, which see all of them whatever their
 * port: then nothing needs holding, and 0 comes back with *FD -1.
 */
int net_hold_port(enum probe_protocol protocol,
                  const struct ip_address *address, uint16_t port, int *fd);

/* Close a socket net_hold_port() made. */
void net_release_port(int fd);

/*
 * True when PORT is one of the ports of PROTOCOL this helper holds for its
 * whole life, bound to every address of both families: UDP, its ICMP ids
 * (the first also its default UDP source port); TCP, its TCP_PORT_COUNT
 * default TCP source ports.
 */
bool net_port_held_for_life(const struct net_state *net,
                            enum probe_protocol protocol, uint16_t port);

/* Receiving (net_receive.c) */

/* Called for every decoded answer; RECEIVED is the kernel's arrival time. */
typedef void (*reply_sink)(void *context, const struct decoded_reply *reply,
                           const struct timespec *received);

/*
 * Called for every probe the kernel reports as handed to a device: PROBE
 * holds its fields as decoded from the packet, SENT the kernel's transmit
 * timestamp (CLOCK_REALTIME, like the arrival times of answers).
 */
typedef void (*sent_sink)(void *context, const struct decoded_reply *probe,
                          const struct timespec *sent);

/*
 * Read everything waiting on the socket of ROLE and FAMILY.  The transmit
 * timestamps waiting on FAMILY's sending sockets are read first, so that a
 * probe's departure is known before any answer to it.
 */
void net_receive(const struct net_state *net, enum socket_role role,
                 int family, reply_sink sink, sent_sink sent, void *context);

/*
 * Read the transmit timestamps waiting on every sending socket.  Nothing
 * wakes the loop for them (a socket watched by epoll pays for a wake-up call
 * on every packet it sends); they are read before answers, and after
 * sending, so that the error queues stay short.
 */
void net_receive_departures(const struct net_state *net, reply_sink sink,
                            sent_sink sent, void *context);

#endif
