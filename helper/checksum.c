/*
 * checksum.c - Internet checksum and CRC32c (see checksum.h).
 */
#include "checksum.h"

uint32_t checksum_add(uint32_t sum, const void *data, size_t length)
{
    const uint8_t *bytes = data;
    /* folded once at the end: 64 bits hold any packet's carries */
    uint64_t total = sum;
    size_t i;

    for (i = 0; i + 1 < length; i += 2) {
        total += (uint32_t)bytes[i] << 8 | bytes[i + 1];
    }
    if (i < length) {
        total += (uint32_t)bytes[i] << 8;
    }
    while (total >> 16) {
        total = (total & 0xffff) + (total >> 16);
    }
    return (uint32_t)total;
}

uint32_t checksum_pseudo_header(const struct ip_address *source,
                                const struct ip_address *destination,
                                uint8_t protocol, size_t length)
{
    uint8_t tail[8] = {
        (uint8_t)(length >> 24), (uint8_t)(length >> 16),
        (uint8_t)(length >> 8), (uint8_t)length, 0, 0, 0, protocol,
    };
    uint32_t sum = 0;

    sum = checksum_add(sum, &source->u, ip_address_length(source));
    sum = checksum_add(sum, &destination->u, ip_address_length(destination));
    return checksum_add(sum, tail, sizeof(tail));
}

uint16_t checksum_finish(uint32_t sum)
{
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return (uint16_t)~sum;
}

/* Table for the reflected Castagnoli polynomial, built on first use. */
static uint32_t crc32c_table[256];
static int crc32c_table_ready;

static void crc32c_build_table(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;

        for (int bit = 0; bit < 8; bit++) {
            crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
        }
        crc32c_table[n] = crc;
    }
    crc32c_table_ready = 1;
}

uint32_t crc32c_update(uint32_t crc, const void *data, size_t length)
{
    const uint8_t *bytes = data;

    if (!crc32c_table_ready) {
        crc32c_build_table();
    }
    for (size_t i = 0; i < length; i++) {
        crc = crc32c_table[(crc ^ bytes[i]) & 0xff] ^ (crc >> 8);
    }
    return crc;
}
