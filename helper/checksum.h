/*
 * checksum.h - the Internet checksum (RFC 1071) and CRC32c (RFC 4960
 * appendix B), shared by the packet builders and the decoders.  Pure.
 */
#ifndef BROKERPKG_CHECKSUM_H
#define BROKERPKG_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"

/* Add DATA to a running one's complement SUM, folded to 16 bits. */
uint32_t checksum_add(uint32_t sum, const void *data, size_t length);

/* The checksum field value for a running SUM (its complement). */
uint16_t checksum_finish(uint32_t sum);

/*
 * The running sum of the pseudo-header of RFC 768 / RFC 793 / RFC 8200
 * section 8.1 for LENGTH bytes of PROTOCOL from SOURCE to DESTINATION.
 */
uint32_t checksum_pseudo_header(const struct ip_address *source,
                                const struct ip_address *destination,
                                uint8_t protocol, size_t length);

#define CRC32C_INITIAL 0xffffffffu

/* Extend a CRC32c register (start with CRC32C_INITIAL) over DATA. */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t length);

/* The finished CRC32c of a register. */
static inline uint32_t crc32c_finish(uint32_t crc)
{
    return ~crc;
}

#endif
