/*
 * construct.c - probe packet builders (see construct.h).
 */
#include "construct.h"

#include "checksum.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>

unsigned ip_header_bytes(int family)
{
    return family == AF_INET6 ? IPV6_HEADER_BYTES : IPV4_HEADER_BYTES;
}

static size_t minimum_transport_bytes(enum probe_protocol protocol)
{
    switch (protocol) {
    case PROBE_UDP:
        return UDP_HEADER_BYTES + UDP_IDENTITY_BYTES;
    case PROBE_SCTP:
        return SCTP_COMMON_BYTES + SCTP_INIT_BYTES;
    case PROBE_ICMP:
    case PROBE_TCP:
    case PROBE_PROTOCOL_COUNT:
        break;
    }
    return ICMP_HEADER_BYTES;
}

size_t transport_bytes(int family, enum probe_protocol protocol,
                       unsigned size)
{
    size_t header = ip_header_bytes(family);
    size_t minimum = minimum_transport_bytes(protocol);
    size_t bytes = size > header + minimum ? size - header : minimum;

    if (protocol == PROBE_SCTP) {
        bytes = (bytes + 3) & ~(size_t)3;
    }
    return bytes;
}

static void put16(uint8_t *at, uint16_t value)
{
    at[0] = (uint8_t)(value >> 8);
    at[1] = (uint8_t)value;
}

static void put32(uint8_t *at, uint32_t value)
{
    put16(at, (uint16_t)(value >> 16));
    put16(at + 2, (uint16_t)value);
}

size_t build_icmp_echo(uint8_t *buffer, size_t length, int family,
                       uint16_t id, uint16_t sequence, uint8_t pattern)
{
    memset(buffer, pattern, length);
    buffer[0] = family == AF_INET6 ? 128 : 8;   /* echo request */
    buffer[1] = 0;
    put16(buffer + 2, 0);
    put16(buffer + 4, id);
    put16(buffer + 6, sequence);
    if (family == AF_INET) {
        put16(buffer + 2, checksum_finish(checksum_add(0, buffer, length)));
    }
    return length;
}

size_t build_icmp_echo_flow(uint8_t *buffer, size_t length,
                            const struct ip_address *source,
                            const struct ip_address *destination,
                            uint16_t id, uint16_t sequence, uint16_t checksum,
                            uint8_t pattern)
{
    bool v6 = destination->family == AF_INET6;
    uint32_t sum = v6 ? checksum_pseudo_header(source, destination, 58, length)
                      : 0;

    memset(buffer, pattern, length);
    buffer[0] = v6 ? 128 : 8;
    buffer[1] = 0;
    put16(buffer + 4, id);
    put16(buffer + 6, sequence);
    /* as in build_udp: CHECKSUM in place, the steering bytes make it valid */
    put16(buffer + 2, checksum);
    put16(buffer + ICMP_HEADER_BYTES, 0);
    sum = checksum_add(sum, buffer, length);
    put16(buffer + ICMP_HEADER_BYTES, checksum_finish(sum));
    return length;
}

size_t build_udp(uint8_t *buffer, size_t length,
                 const struct ip_address *source,
                 const struct ip_address *destination,
                 uint16_t source_port, uint16_t destination_port,
                 uint16_t checksum, uint8_t pattern)
{
    uint32_t sum;

    memset(buffer, pattern, length);
    put16(buffer, source_port);
    put16(buffer + 2, destination_port);
    put16(buffer + 4, (uint16_t)length);
    /*
     * Place CHECKSUM in the header, zero the two steering bytes, and store
     * there the one's complement of everything else: the total then sums to
     * 0xffff, so CHECKSUM is the valid checksum of the datagram.
     */
    put16(buffer + 6, checksum);
    put16(buffer + UDP_HEADER_BYTES, 0);
    sum = checksum_pseudo_header(source, destination, 17, length);
    sum = checksum_add(sum, buffer, length);
    put16(buffer + UDP_HEADER_BYTES, checksum_finish(sum));
    return length;
}

#define TCP_WINDOW 64240            /* Linux's initial window */
#define TCP_OPTION_MSS 2
#define TCP_MSS_IPV4 1460           /* an Ethernet MTU less the headers */
#define TCP_MSS_IPV6 1440

size_t build_tcp_syn(uint8_t *buffer, const struct ip_address *source,
                     const struct ip_address *destination,
                     uint16_t source_port, uint16_t destination_port,
                     uint32_t sequence)
{
    uint32_t sum;

    memset(buffer, 0, TCP_SYN_BYTES);
    put16(buffer, source_port);
    put16(buffer + 2, destination_port);
    put32(buffer + 4, sequence);
    buffer[12] = (TCP_SYN_BYTES / 4) << 4;      /* data offset */
    buffer[13] = 0x02;                          /* SYN */
    put16(buffer + 14, TCP_WINDOW);
    buffer[20] = TCP_OPTION_MSS;
    buffer[21] = 4;
    put16(buffer + 22, destination->family == AF_INET6 ? TCP_MSS_IPV6
                                                       : TCP_MSS_IPV4);
    sum = checksum_pseudo_header(source, destination, 6, TCP_SYN_BYTES);
    sum = checksum_add(sum, buffer, TCP_SYN_BYTES);
    put16(buffer + 16, checksum_finish(sum));
    return TCP_SYN_BYTES;
}

size_t build_sctp_init(uint8_t *buffer, size_t length,
                       uint16_t source_port, uint16_t destination_port,
                       uint32_t initiate_tag, uint8_t pattern)
{
    uint8_t *chunk = buffer + SCTP_COMMON_BYTES;
    size_t chunk_length = SCTP_INIT_BYTES;
    size_t room = length - SCTP_COMMON_BYTES - SCTP_INIT_BYTES;
    uint32_t crc;

    memset(buffer, 0, length);
    put16(buffer, source_port);
    put16(buffer + 2, destination_port);
    put32(buffer + 4, 0);               /* INIT travels with tag 0 */
    chunk[0] = 1;                       /* INIT */
    chunk[1] = 0;
    put32(chunk + 4, initiate_tag);
    put32(chunk + 8, 65535);            /* advertised receiver window */
    put16(chunk + 12, 10);              /* outbound streams */
    put16(chunk + 14, 10);              /* maximum inbound streams */
    put32(chunk + 16, initiate_tag);    /* initial TSN */
    if (room >= 4) {
        uint8_t *pad = chunk + SCTP_INIT_BYTES;

        put16(pad, SCTP_PAD_PARAMETER);
        put16(pad + 2, (uint16_t)room);
        memset(pad + 4, pattern, room - 4);
        chunk_length += room;
    }
    put16(chunk + 2, (uint16_t)chunk_length);
    crc = crc32c_finish(crc32c_update(CRC32C_INITIAL, buffer, length));
    /* The CRC goes on the wire least significant byte first. */
    buffer[8] = (uint8_t)crc;
    buffer[9] = (uint8_t)(crc >> 8);
    buffer[10] = (uint8_t)(crc >> 16);
    buffer[11] = (uint8_t)(crc >> 24);
    return length;
}
