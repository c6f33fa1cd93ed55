/*
 * decode.c - received packet decoding (see decode.h).
 *
 * Layout reminders: an ICMP error carries, after its 8-byte header, the
 * start of the datagram that caused it (our probe: IP header + at least 8
 * bytes of transport header).  RFC 4884 puts a length of that quote in the
 * header (ICMPv4 byte 5, 32-bit words; ICMPv6 byte 4, 64-bit words) when an
 * extension structure follows it.
 */
#include "decode.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>

#include "checksum.h"

#define IPPROTO_NUMBER_ICMP 1
#define IPPROTO_NUMBER_TCP 6
#define IPPROTO_NUMBER_UDP 17
#define IPPROTO_NUMBER_ICMPV6 58
#define IPPROTO_NUMBER_SCTP 132

#define ICMP4_ECHO_REPLY 0
#define ICMP4_UNREACHABLE 3
#define ICMP4_ECHO_REQUEST 8
#define ICMP4_TIME_EXCEEDED 11
#define ICMP4_CODE_PROTOCOL_UNREACHABLE 2
#define ICMP4_CODE_PORT_UNREACHABLE 3

#define ICMP6_UNREACHABLE 1
#define ICMP6_TIME_EXCEEDED 3
#define ICMP6_PARAMETER_PROBLEM 4
#define ICMP6_ECHO_REQUEST 128
#define ICMP6_ECHO_REPLY 129
#define ICMP6_CODE_PORT_UNREACHABLE 4
#define ICMP6_CODE_UNKNOWN_NEXT_HEADER 1

#define TCP_HEADER_BYTES 20
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#define SCTP_INIT 1
#define SCTP_INIT_ACK 2
#define SCTP_ABORT 6
#define SCTP_FLAG_T 1

#define RFC4884_MINIMUM_QUOTE 128
#define MPLS_CLASS 1
#define MPLS_CTYPE_INCOMING_STACK 1

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) << 16 | get16(p + 2);
}

static void set_address(struct ip_address *address, int family,
                        const uint8_t *bytes)
{
    memset(address, 0, sizeof(*address));
    address->family = family;
    memcpy(&address->u, bytes, family == AF_INET6 ? 16 : 4);
}

static void reset_reply(struct decoded_reply *reply)
{
    memset(reply, 0, sizeof(*reply));
    reply->reply_ttl = -1;
}

/* The transport header of the quoted probe, TRANSPORT_LENGTH bytes. */
static bool decode_quoted_transport(uint8_t ip_protocol,
                                    const uint8_t *transport,
                                    size_t transport_length,
                                    struct decoded_reply *reply)
{
    if (transport_length < 8) {
        return false;
    }
    switch (ip_protocol) {
    case IPPROTO_NUMBER_ICMP:
    case IPPROTO_NUMBER_ICMPV6:
        if (transport[0] != ICMP4_ECHO_REQUEST
            && transport[0] != ICMP6_ECHO_REQUEST) {
            return false;
        }
        reply->protocol = PROBE_ICMP;
        reply->icmp_id = get16(transport + 4);
        reply->icmp_sequence = get16(transport + 6);
        return true;
    case IPPROTO_NUMBER_UDP:
        reply->protocol = PROBE_UDP;
        reply->udp_checksum = get16(transport + 6);
        break;
    case IPPROTO_NUMBER_TCP:
        reply->protocol = PROBE_TCP;
        reply->tcp_sequence = get32(transport + 4);
        break;
    case IPPROTO_NUMBER_SCTP:
        reply->protocol = PROBE_SCTP;
        /* the INIT's initiate tag sits 4 bytes into the first chunk */
        if (transport_length >= 20 && transport[12] == SCTP_INIT) {
            reply->has_sctp_tag = true;
            reply->sctp_tag = get32(transport + 16);
        }
        break;
    default:
        return false;
    }
    reply->source_port = get16(transport);
    reply->destination_port = get16(transport + 2);
    return true;
}

static bool decode_quoted_ipv4(const uint8_t *quote, size_t length,
                               struct decoded_reply *reply)
{
    size_t header;

    if (length < 20 || quote[0] >> 4 != 4) {
        return false;
    }
    header = (size_t)(quote[0] & 0x0f) * 4;
    if (header < 20 || header > length) {
        return false;
    }
    set_address(&reply->probe_source, AF_INET, quote + 12);
    set_address(&reply->probe_destination, AF_INET, quote + 16);
    return decode_quoted_transport(quote[9], quote + header, length - header,
                                   reply);
}

static bool decode_quoted_ipv6(const uint8_t *quote, size_t length,
                               struct decoded_reply *reply)
{
    if (length < 40 || quote[0] >> 4 != 6) {
        return false;
    }
    set_address(&reply->probe_source, AF_INET6, quote + 8);
    set_address(&reply->probe_destination, AF_INET6, quote + 24);
    return decode_quoted_transport(quote[6], quote + 40, length - 40, reply);
}

/* Which result an ICMP error gives for a probe of PROTOCOL; false: ignore. */
static bool classify_icmp_error(int family, uint8_t type, uint8_t code,
                                enum probe_protocol protocol,
                                enum reply_outcome *outcome)
{
    if (family == AF_INET) {
        if (type == ICMP4_TIME_EXCEEDED) {
            *outcome = OUTCOME_TTL_EXPIRED;
        } else if (type != ICMP4_UNREACHABLE) {
            return false;
        } else if (code == ICMP4_CODE_PORT_UNREACHABLE
                   || (code == ICMP4_CODE_PROTOCOL_UNREACHABLE
                       && protocol == PROBE_SCTP)) {
            /* the destination itself said the port (or SCTP) is closed */
            *outcome = OUTCOME_REPLY;
        } else {
            *outcome = OUTCOME_NO_ROUTE;
        }
        return true;
    }
    if (type == ICMP6_TIME_EXCEEDED) {
        *outcome = OUTCOME_TTL_EXPIRED;
    } else if (type == ICMP6_UNREACHABLE) {
        *outcome = code == ICMP6_CODE_PORT_UNREACHABLE ? OUTCOME_REPLY
                                                       : OUTCOME_NO_ROUTE;
    } else if (type == ICMP6_PARAMETER_PROBLEM
               && code == ICMP6_CODE_UNKNOWN_NEXT_HEADER
               && protocol == PROBE_SCTP) {
        *outcome = OUTCOME_REPLY;
    } else {
        return false;
    }
    return true;
}

/* Bytes of the quoted datagram: the RFC 4884 length when given. */
static size_t quoted_length(const uint8_t *icmp, size_t length, int family)
{
    size_t available = length - 8;
    size_t declared = family == AF_INET6 ? (size_t)icmp[4] * 8
                                         : (size_t)icmp[5] * 4;

    return declared != 0 && declared < available ? declared : available;
}

static bool extension_checksum_ok(const uint8_t *extension, size_t length)
{
    if (get16(extension + 2) == 0) {
        return true;    /* some senders leave it unset */
    }
    return checksum_finish(checksum_add(0, extension, length)) == 0;
}

static int decode_mpls_object(const uint8_t *object, size_t length,
                              struct mpls_label *labels, int max_labels)
{
    int count = 0;

    for (size_t at = 4; at + 4 <= length && count < max_labels; at += 4) {
        uint32_t entry = get32(object + at);
        struct mpls_label *label = &labels[count++];

        label->label = entry >> 12;
        label->traffic_class = (uint8_t)((entry >> 9) & 0x7);
        label->bottom_of_stack = (uint8_t)((entry >> 8) & 0x1);
        label->ttl = (uint8_t)(entry & 0xff);
    }
    return count;
}

int decode_mpls_extension(const uint8_t *icmp, size_t length, int family,
                          struct mpls_label *labels, int max_labels)
{
    size_t declared;
    size_t offset;
    const uint8_t *extension;
    size_t extension_length;

    if (length < 8) {
        return 0;
    }
    declared = family == AF_INET6 ? (size_t)icmp[4] * 8 : (size_t)icmp[5] * 4;
    /* RFC 4884 5.5: without a length, assume the 128-byte quote */
    offset = 8 + (declared != 0 ? declared : RFC4884_MINIMUM_QUOTE);
    if (declared != 0 && declared < RFC4884_MINIMUM_QUOTE) {
        return 0;
    }
    if (length < offset + 4) {
        return 0;
    }
    extension = icmp + offset;
    extension_length = length - offset;
    if (extension[0] >> 4 != 2
        || !extension_checksum_ok(extension, extension_length)) {
        return 0;
    }
    for (size_t at = 4; at + 4 <= extension_length;) {
        const uint8_t *object = extension + at;
        size_t object_length = get16(object);

        if (object_length < 4 || object_length > extension_length - at) {
            return 0;
        }
        if (object[2] == MPLS_CLASS && object[3] == MPLS_CTYPE_INCOMING_STACK) {
            return decode_mpls_object(object, object_length, labels,
                                      max_labels);
        }
        at += object_length;
    }
    return 0;
}

/*
 * An ICMP error (either family) at ICMP, LENGTH bytes, delivered to LOCAL
 * (NULL or family 0 when unknown).  An error goes to the source of the
 * packet it quotes, so a quote whose source is not LOCAL is not of a packet
 * sent from here: this catches forged quotes even for probes whose source
 * the helper does not know itself (icmp, sctp without local-ip).
 */
static bool decode_icmp_error(const uint8_t *icmp, size_t length, int family,
                              const struct ip_address *local,
                              struct decoded_reply *reply)
{
    size_t quote_length = quoted_length(icmp, length, family);
    bool quoted = family == AF_INET6
                      ? decode_quoted_ipv6(icmp + 8, quote_length, reply)
                      : decode_quoted_ipv4(icmp + 8, quote_length, reply);

    if (!quoted
        || (local != NULL && local->family != 0
            && !ip_address_equal(&reply->probe_source, local))
        || !classify_icmp_error(family, icmp[0], icmp[1], reply->protocol,
                                &reply->outcome)) {
        return false;
    }
    reply->from_icmp = true;
    reply->icmp_type = icmp[0];
    reply->icmp_code = icmp[1];
    reply->mpls_count = decode_mpls_extension(icmp, length, family,
                                              reply->mpls, MAX_MPLS_LABELS);
    return true;
}

/* An echo reply: identity from its own header; it came from the target. */
static void decode_echo_reply(const uint8_t *icmp,
                              const struct ip_address *source,
                              const struct ip_address *local,
                              struct decoded_reply *reply)
{
    reply->outcome = OUTCOME_REPLY;
    reply->from_icmp = true;
    reply->icmp_type = icmp[0];
    reply->icmp_code = icmp[1];
    reply->protocol = PROBE_ICMP;
    reply->icmp_id = get16(icmp + 4);
    reply->icmp_sequence = get16(icmp + 6);
    reply->probe_destination = *source;
    if (local != NULL) {
        reply->probe_source = *local;
    }
}

static bool decode_icmp4(const uint8_t *icmp, size_t length,
                         const struct ip_address *source,
                         const struct ip_address *local,
                         struct decoded_reply *reply)
{
    if (length < 8 || checksum_finish(checksum_add(0, icmp, length)) != 0) {
        return false;
    }
    if (icmp[0] == ICMP4_ECHO_REPLY) {
        decode_echo_reply(icmp, source, local, reply);
        return true;
    }
    return decode_icmp_error(icmp, length, AF_INET, local, reply);
}

/* An SCTP answer from the destination: INIT-ACK or ABORT. */
static bool decode_sctp(const uint8_t *packet, size_t length,
                        const struct ip_address *source,
                        const struct ip_address *local,
                        struct decoded_reply *reply)
{
    static const uint8_t zero[4];
    uint32_t crc;
    uint32_t stored;
    uint8_t chunk;

    if (length < 16 || get16(packet + 14) < 4
        || get16(packet + 14) > length - 12) {
        return false;
    }
    crc = crc32c_update(CRC32C_INITIAL, packet, 8);
    crc = crc32c_update(crc, zero, sizeof(zero));
    crc = crc32c_finish(crc32c_update(crc, packet + 12, length - 12));
    stored = (uint32_t)packet[8] | (uint32_t)packet[9] << 8
             | (uint32_t)packet[10] << 16 | (uint32_t)packet[11] << 24;
    chunk = packet[12];
    if (crc != stored || (chunk != SCTP_INIT_ACK && chunk != SCTP_ABORT)) {
        return false;
    }
    reply->outcome = OUTCOME_REPLY;
    reply->protocol = PROBE_SCTP;
    reply->source_port = get16(packet + 2);
    reply->destination_port = get16(packet);
    reply->has_sctp_tag = true;
    reply->sctp_tag = get32(packet + 4);
    reply->sctp_tag_reflected = chunk == SCTP_ABORT
                                && (packet[13] & SCTP_FLAG_T) != 0;
    reply->probe_destination = *source;
    if (local != NULL) {
        reply->probe_source = *local;
    }
    return true;
}

/*
 * True when SEGMENT's checksum is right for SOURCE -> LOCAL, or holds what a
 * sender's checksum offload leaves for the device to finish, the folded
 * pseudo-header sum: loopback and veth hand such segments on unfinished
 * (the kernel marks them as checked; a raw socket gets them as they are).
 * A segment damaged on the wire has neither.
 */
static bool tcp_checksum_ok(const uint8_t *segment, size_t length,
                            const struct ip_address *source,
                            const struct ip_address *local)
{
    uint32_t pseudo;
    uint16_t unfinished;

    if (local == NULL || local->family != source->family) {
        return false;
    }
    pseudo = checksum_pseudo_header(source, local, IPPROTO_NUMBER_TCP, length);
    unfinished = (uint16_t)(0xffffu - checksum_finish(pseudo));
    return checksum_finish(checksum_add(pseudo, segment, length)) == 0
           || get16(segment + 16) == unfinished;
}

/*
 * A TCP answer from the destination to a SYN: SYN-ACK, or RST with ACK (the
 * kernel's answer to a SYN for a closed port).  Both acknowledge the SYN's
 * sequence number + 1: that is the probe's identity.
 */
static bool decode_tcp(const uint8_t *segment, size_t length,
                       const struct ip_address *source,
                       const struct ip_address *local,
                       struct decoded_reply *reply)
{
    uint8_t flags;

    if (length < TCP_HEADER_BYTES
        || (size_t)(segment[12] >> 4) * 4 < TCP_HEADER_BYTES
        || !tcp_checksum_ok(segment, length, source, local)) {
        return false;
    }
    flags = segment[13];
    if ((flags & TCP_FLAG_ACK) == 0
        || (flags & (TCP_FLAG_SYN | TCP_FLAG_RST)) == 0) {
        return false;
    }
    reply->outcome = OUTCOME_REPLY;
    reply->protocol = PROBE_TCP;
    reply->from_tcp = true;
    reply->tcp_reset = (flags & TCP_FLAG_RST) != 0;
    reply->source_port = get16(segment + 2);
    reply->destination_port = get16(segment);
    reply->tcp_sequence = get32(segment + 8) - 1u;
    reply->probe_destination = *source;
    if (local != NULL) {
        reply->probe_source = *local;
    }
    return true;
}

bool decode_ipv4_packet(const uint8_t *packet, size_t length,
                        struct decoded_reply *reply)
{
    size_t header;
    size_t total;
    struct ip_address source;
    struct ip_address local;

    reset_reply(reply);
    if (length < 20 || packet[0] >> 4 != 4) {
        return false;
    }
    header = (size_t)(packet[0] & 0x0f) * 4;
    total = get16(packet + 2);
    if (header < 20 || total < header || total > length) {
        return false;
    }
    set_address(&source, AF_INET, packet + 12);
    set_address(&local, AF_INET, packet + 16);
    reply->responder = source;
    reply->reply_ttl = packet[8];
    reply->reply_size = (unsigned)total;
    if (packet[9] == IPPROTO_NUMBER_ICMP) {
        return decode_icmp4(packet + header, total - header, &source, &local,
                            reply);
    }
    if (packet[9] == IPPROTO_NUMBER_SCTP) {
        return decode_sctp(packet + header, total - header, &source, &local,
                           reply);
    }
    if (packet[9] == IPPROTO_NUMBER_TCP) {
        return decode_tcp(packet + header, total - header, &source, &local,
                          reply);
    }
    return false;
}

static void set_ipv6_envelope(struct decoded_reply *reply, size_t length,
                              const struct ip_address *source, int hop_limit)
{
    reply->responder = *source;
    reply->reply_ttl = hop_limit;
    reply->reply_size = (unsigned)length + 40;
}

bool decode_icmp6_message(const uint8_t *message, size_t length,
                          const struct ip_address *source,
                          const struct ip_address *local, int hop_limit,
                          struct decoded_reply *reply)
{
    reset_reply(reply);
    set_ipv6_envelope(reply, length, source, hop_limit);
    if (length < 8) {
        return false;
    }
    if (message[0] == ICMP6_ECHO_REPLY) {
        decode_echo_reply(message, source, local, reply);
        return true;
    }
    return decode_icmp_error(message, length, AF_INET6, local, reply);
}

bool decode_sctp6_packet(const uint8_t *packet, size_t length,
                         const struct ip_address *source,
                         const struct ip_address *local, int hop_limit,
                         struct decoded_reply *reply)
{
    reset_reply(reply);
    set_ipv6_envelope(reply, length, source, hop_limit);
    return decode_sctp(packet, length, source, local, reply);
}

bool decode_tcp6_packet(const uint8_t *packet, size_t length,
                        const struct ip_address *source,
                        const struct ip_address *local, int hop_limit,
                        struct decoded_reply *reply)
{
    reset_reply(reply);
    set_ipv6_envelope(reply, length, source, hop_limit);
    return decode_tcp(packet, length, source, local, reply);
}

bool decode_datagram_echo(const uint8_t *message, size_t length,
                          const struct ip_address *source, int ttl,
                          struct decoded_reply *reply)
{
    reset_reply(reply);
    reply->responder = *source;
    reply->reply_ttl = ttl;
    reply->reply_size = (unsigned)length + (source->family == AF_INET6 ? 40
                                                                       : 20);
    if (length < 8
        || (message[0] != ICMP4_ECHO_REPLY && message[0] != ICMP6_ECHO_REPLY)) {
        return false;
    }
    decode_echo_reply(message, source, NULL, reply);
    return true;
}

bool decode_datagram_error(const uint8_t *message, size_t length,
                           int family, uint8_t type, uint8_t code,
                           const struct ip_address *offender,
                           const struct ip_address *destination,
                           struct decoded_reply *reply)
{
    reset_reply(reply);
    reply->responder = *offender;
    if (!decode_quoted_transport(family == AF_INET6 ? IPPROTO_NUMBER_ICMPV6
                                                    : IPPROTO_NUMBER_ICMP,
                                 message, length, reply)
        || !classify_icmp_error(family, type, code, PROBE_ICMP,
                                &reply->outcome)) {
        return false;
    }
    reply->from_icmp = true;
    reply->icmp_type = type;
    reply->icmp_code = code;
    reply->probe_destination = *destination;
    return true;
}

/*
 * Where the IP header of a looped-back sent packet starts: after a link
 * header of a length seen in practice, where the version matches FAMILY and
 * the IP length fields cover exactly the rest of the frame.
 */
static bool find_sent_ip_header(const uint8_t *frame, size_t length,
                                int family, size_t *offset)
{
    static const size_t link_lengths[] = {14, 0, 18, 16};

    for (size_t i = 0; i < sizeof(link_lengths) / sizeof(link_lengths[0]);
         i++) {
        size_t at = link_lengths[i];
        const uint8_t *ip = frame + at;

        if (family == AF_INET && length >= at + 20 && ip[0] >> 4 == 4
            && get16(ip + 2) == length - at) {
            *offset = at;
            return true;
        }
        if (family == AF_INET6 && length >= at + 40 && ip[0] >> 4 == 6
            && (size_t)get16(ip + 4) + 40 == length - at) {
            *offset = at;
            return true;
        }
    }
    return false;
}

bool decode_sent_packet(const uint8_t *frame, size_t length, int family,
                        struct decoded_reply *reply)
{
    size_t offset;

    reset_reply(reply);
    if (!find_sent_ip_header(frame, length, family, &offset)) {
        return false;
    }
    return family == AF_INET6
               ? decode_quoted_ipv6(frame + offset, length - offset, reply)
               : decode_quoted_ipv4(frame + offset, length - offset, reply);
}

/* Netlink: an RTM_GETADDR dump, in the host's byte order. */

/* What the address attributes of one RTM_NEWADDR message say of ADDRESS. */
struct address_attributes {
    bool has_local;
    bool local_matches;
    bool has_address;
    bool address_matches;
};

static bool attribute_names(const uint8_t *payload, size_t length,
                            const struct ip_address *address)
{
    return length == ip_address_length(address)
           && memcmp(payload, address->u.bytes, length) == 0;
}

/* The attributes of one RTM_NEWADDR (LENGTH bytes after its ifaddrmsg). */
static bool read_address_attributes(const uint8_t *data, size_t length,
                                    const struct ip_address *address,
                                    struct address_attributes *found)
{
    size_t offset = 0;

    memset(found, 0, sizeof(*found));
    while (length - offset >= sizeof(struct rtattr)) {
        struct rtattr attribute;
        size_t payload;

        memcpy(&attribute, data + offset, sizeof(attribute));
        if (attribute.rta_len < sizeof(attribute)
            || attribute.rta_len > length - offset) {
            return false;
        }
        payload = attribute.rta_len - sizeof(attribute);
        if (attribute.rta_type == IFA_LOCAL) {
            found->has_local = true;
            found->local_matches |= attribute_names(
                data + offset + sizeof(attribute), payload, address);
        } else if (attribute.rta_type == IFA_ADDRESS) {
            found->has_address = true;
            found->address_matches |= attribute_names(
                data + offset + sizeof(attribute), payload, address);
        }
        offset += RTA_ALIGN(attribute.rta_len) < length - offset
                      ? RTA_ALIGN(attribute.rta_len) : length - offset;
    }
    return true;
}

/* One RTM_NEWADDR message's payload; false when it does not parse. */
static bool read_new_address(const uint8_t *payload, size_t length,
                             const struct ip_address *address, bool *listed)
{
    struct ifaddrmsg header;
    struct address_attributes found;
    size_t start = NLMSG_ALIGN(sizeof(header));

    if (length < sizeof(header)) {
        return false;
    }
    memcpy(&header, payload, sizeof(header));
    if (header.ifa_family != address->family) {
        return true;
    }
    if (start > length) {
        start = length;
    }
    if (!read_address_attributes(payload + start, length - start, address,
                                 &found)) {
        return false;
    }
    if (found.has_local ? found.local_matches : found.address_matches) {
        *listed = true;
    }
    return true;
}

enum address_dump_status decode_address_dump(const uint8_t *data,
                                             size_t length, uint32_t sequence,
                                             const struct ip_address *address,
                                             bool *listed, int *error)
{
    size_t offset = 0;

    while (length - offset >= sizeof(struct nlmsghdr)) {
        struct nlmsghdr header;
        const uint8_t *payload = data + offset + sizeof(header);
        size_t payload_length;

        memcpy(&header, data + offset, sizeof(header));
        if (header.nlmsg_len < sizeof(header)
            || header.nlmsg_len > length - offset) {
            *error = EPROTO;
            return ADDRESS_DUMP_FAILED;
        }
        payload_length = header.nlmsg_len - sizeof(header);
        offset += NLMSG_ALIGN(header.nlmsg_len) < length - offset
                      ? NLMSG_ALIGN(header.nlmsg_len) : length - offset;
        if (header.nlmsg_seq != sequence) {
            continue;       /* an earlier request's */
        }
        if (header.nlmsg_type == NLMSG_DONE) {
            return ADDRESS_DUMP_DONE;
        }
        if (header.nlmsg_type == NLMSG_ERROR) {
            int code;

            if (payload_length < sizeof(code)) {
                *error = EPROTO;
                return ADDRESS_DUMP_FAILED;
            }
            memcpy(&code, payload, sizeof(code));
            *error = code < 0 && code > -4096 ? -code : EPROTO;
            return ADDRESS_DUMP_FAILED;
        }
        if (header.nlmsg_type == RTM_NEWADDR
            && !read_new_address(payload, payload_length, address, listed)) {
            *error = EPROTO;
            return ADDRESS_DUMP_FAILED;
        }
    }
    return ADDRESS_DUMP_CONTINUES;
}
