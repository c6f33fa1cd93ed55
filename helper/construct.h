/*
 * construct.h - building the bytes of a probe: ICMP echo requests, UDP
 * datagrams whose checksum carries the probe's identity, TCP SYNs, SCTP
 * INIT chunks.
 * Pure.  The kernel adds the IP header (no IP_HDRINCL anywhere), so every
 * builder returns the transport-layer bytes only.
 */
#ifndef BROKERPKG_CONSTRUCT_H
#define BROKERPKG_CONSTRUCT_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "command.h"
#include "wire.h"

#define IPV4_HEADER_BYTES 20
#define IPV6_HEADER_BYTES 40
#define ICMP_HEADER_BYTES 8
#define UDP_HEADER_BYTES 8
#define UDP_IDENTITY_BYTES 2        /* payload bytes that steer the checksum */
#define ICMP_FLOW_BYTES 10          /* an echo header and its steering bytes */
#define TCP_SYN_BYTES 24            /* header and one MSS option */
#define SCTP_COMMON_BYTES 12
#define SCTP_INIT_BYTES 20
#define SCTP_PAD_PARAMETER 0x8005   /* RFC 4820 padding parameter */
#define PACKET_BUFFER_BYTES SIZE_MAX_BYTES

unsigned ip_header_bytes(int family);

/*
 * Bytes of transport header and payload for a probe of SIZE (whole packet,
 * IP header included), raised to the protocol's minimum like mtr-packet
 * does.  SCTP sizes are rounded up to a multiple of 4 (chunk padding).
 */
size_t transport_bytes(int family, enum probe_protocol protocol,
                       unsigned size);

/* ICMP or ICMPv6 echo request of LENGTH bytes; ICMPv4 checksum filled in
   (the kernel fills ICMPv6's). */
size_t build_icmp_echo(uint8_t *buffer, size_t length, int family,
                       uint16_t id, uint16_t sequence, uint8_t pattern);

/*
 * An echo request of LENGTH bytes (at least ICMP_FLOW_BYTES) whose checksum
 * is CHECKSUM whatever its id and sequence: the first two payload bytes are
 * chosen to make it so (ICMPv6's checksum, which the kernel computes, covers
 * the pseudo-header of SOURCE and DESTINATION).
 */
size_t build_icmp_echo_flow(uint8_t *buffer, size_t length,
                            const struct ip_address *source,
                            const struct ip_address *destination,
                            uint16_t id, uint16_t sequence, uint16_t checksum,
                            uint8_t pattern);

/* UDP datagram of LENGTH bytes whose checksum field equals CHECKSUM (never
   0): the first two payload bytes are chosen to make it so. */
size_t build_udp(uint8_t *buffer, size_t length,
                 const struct ip_address *source,
                 const struct ip_address *destination,
                 uint16_t source_port, uint16_t destination_port,
                 uint16_t checksum, uint8_t pattern);

/*
 * A TCP SYN from SOURCE_PORT to DESTINATION_PORT with SEQUENCE, a maximum
 * segment size option (what connect() would send, less its other options)
 * and its checksum over the pseudo-header of SOURCE and DESTINATION.
 * Returns TCP_SYN_BYTES.
 */
size_t build_tcp_syn(uint8_t *buffer, const struct ip_address *source,
                     const struct ip_address *destination,
                     uint16_t source_port, uint16_t destination_port,
                     uint32_t sequence);

/* SCTP packet with one INIT chunk carrying INITIATE_TAG, padded with an
   RFC 4820 PAD parameter full of PATTERN up to LENGTH bytes. */
size_t build_sctp_init(uint8_t *buffer, size_t length,
                       uint16_t source_port, uint16_t destination_port,
                       uint32_t initiate_tag, uint8_t pattern);

#endif
