/*
 * decode.h - reading received packets: echo replies, ICMP errors with the
 * probe they quote (RFC 792/4443) and their MPLS extensions (RFC 4884/4950),
 * SCTP and TCP answers; and the kernel's list of the host's addresses (a
 * netlink RTM_GETADDR dump).  Pure: no lookups, no I/O.  Every header read
 * is preceded by a length check; a packet that does not parse yields false.
 */
#ifndef BROKERPKG_DECODE_H
#define BROKERPKG_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "command.h"

#define MAX_MPLS_LABELS 16

struct mpls_label {
    uint32_t label;
    uint8_t traffic_class;
    uint8_t bottom_of_stack;
    uint8_t ttl;
};

enum reply_outcome {
    OUTCOME_REPLY,          /* the destination answered */
    OUTCOME_TTL_EXPIRED,    /* a router on the way answered */
    OUTCOME_NO_ROUTE,       /* destination unreachable (not port) */
};

/* What a received packet says, and which probe it answers. */
struct decoded_reply {
    enum reply_outcome outcome;
    struct ip_address responder;
    int reply_ttl;                  /* -1 when unknown */
    unsigned reply_size;            /* bytes of the received IP packet */
    bool from_icmp;
    uint8_t icmp_type;
    uint8_t icmp_code;
    /* the probe, as identified by the reply */
    enum probe_protocol protocol;
    struct ip_address probe_source;
    struct ip_address probe_destination;
    uint16_t source_port;
    uint16_t destination_port;
    uint16_t icmp_id;
    uint16_t icmp_sequence;
    uint16_t udp_checksum;
    uint32_t tcp_sequence;          /* the SYN's: quoted, or acknowledged - 1 */
    bool from_tcp;                  /* a SYN-ACK or RST from the destination */
    bool tcp_reset;                 /* from_tcp: it was a RST */
    bool has_sctp_tag;              /* the INIT's initiate tag was seen */
    uint32_t sctp_tag;
    bool sctp_tag_reflected;        /* an ABORT with the T bit: tag is ours */
    int mpls_count;
    struct mpls_label mpls[MAX_MPLS_LABELS];
};

/*
 * A packet from an IPv4 raw socket (ICMP, TCP or SCTP), IP header included.
 */
bool decode_ipv4_packet(const uint8_t *packet, size_t length,
                        struct decoded_reply *reply);

/*
 * An ICMPv6 message from a raw socket (no IP header): SOURCE sent it to
 * LOCAL; HOP_LIMIT is from IPV6_HOPLIMIT (-1 if unknown).
 */
bool decode_icmp6_message(const uint8_t *message, size_t length,
                          const struct ip_address *source,
                          const struct ip_address *local, int hop_limit,
                          struct decoded_reply *reply);

/*
 * A TCP segment from an IPv6 raw socket (no IP header): a SYN-ACK or a RST
 * with ACK, the answers a SYN gets from its destination.
 */
bool decode_tcp6_packet(const uint8_t *packet, size_t length,
                        const struct ip_address *source,
                        const struct ip_address *local, int hop_limit,
                        struct decoded_reply *reply);

/* An SCTP packet from an IPv6 raw socket (no IP header). */
bool decode_sctp6_packet(const uint8_t *packet, size_t length,
                         const struct ip_address *source,
                         const struct ip_address *local, int hop_limit,
                         struct decoded_reply *reply);

/*
 * An echo reply from an ICMP datagram ("ping") socket: the ICMP header and
 * payload, no IP header.
 */
bool decode_datagram_echo(const uint8_t *message, size_t length,
                          const struct ip_address *source, int ttl,
                          struct decoded_reply *reply);

/*
 * An ICMP error from a datagram socket's error queue: MESSAGE is our own
 * echo request as quoted, TYPE/CODE and OFFENDER come from the extended error.
 */
bool decode_datagram_error(const uint8_t *message, size_t length,
                           int family, uint8_t type, uint8_t code,
                           const struct ip_address *offender,
                           const struct ip_address *destination,
                           struct decoded_reply *reply);

/*
 * A probe as the kernel handed it to a device, looped back on a socket's
 * error queue with its transmit timestamp: the link-layer header (14 bytes
 * on Ethernet and loopback, none on layer-3 devices), then our IP packet of
 * FAMILY.  Fills the probe fields of REPLY (protocol, addresses, ids, ports)
 * so that the probe can be found as a quoted one would be.
 */
bool decode_sent_packet(const uint8_t *frame, size_t length, int family,
                        struct decoded_reply *reply);

/*
 * MPLS label stack entries from the RFC 4884 extension structure of the
 * ICMP error at ICMP (LENGTH bytes, ICMP header first).  Returns the number
 * of labels stored (0 when there is no valid MPLS extension object).
 */
int decode_mpls_extension(const uint8_t *icmp, size_t length, int family,
                          struct mpls_label *labels, int max_labels);

/* Where reading an RTM_GETADDR dump stands after one read of it. */
enum address_dump_status {
    ADDRESS_DUMP_CONTINUES,         /* read the next part */
    ADDRESS_DUMP_DONE,              /* NLMSG_DONE: the list is complete */
    ADDRESS_DUMP_FAILED,            /* see the error stored */
};

/*
 * One read (LENGTH bytes at DATA) from a NETLINK_ROUTE socket that asked for
 * an RTM_GETADDR dump with sequence number SEQUENCE.  Sets *LISTED when an
 * RTM_NEWADDR message of ADDRESS's family names ADDRESS as an interface's
 * own address (IFA_LOCAL; IFA_ADDRESS when there is no IFA_LOCAL, as on
 * IPv6, where a point-to-point peer is IFA_ADDRESS beside an IFA_LOCAL).
 * Messages of other sequence numbers are skipped.  FAILED stores in *ERROR
 * the kernel's error (NLMSG_ERROR), or EPROTO for a message whose lengths
 * do not fit what holds it; nothing after it is read.
 */
enum address_dump_status decode_address_dump(const uint8_t *data,
                                             size_t length, uint32_t sequence,
                                             const struct ip_address *address,
                                             bool *listed, int *error);

#endif
