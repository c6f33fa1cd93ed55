/*
 * fuzz_answers.c - libFuzzer harness for the receiving path: bytes as they
 * come from a socket -> the pure decoders -> matching against a probe table
 * that holds probes of every protocol and family -> replies.
 *
 * Input: byte 0 picks the socket kind (low bits; bit 0x80: IPv6 for kind 4;
 * bit 0x40: recompute the packet's checksums first, so that mutations reach
 * the code behind the checksum checks), byte 1 the sender, the rest is the
 * packet.  Each packet is delivered twice (duplicates must be harmless).
 * Kind 5 is a packet we sent, looped back with its transmit timestamp: a
 * departure, which completes nothing (BROKERPKG_FUZZ_SHOW prints
 * "departed" when a probe took the stamp).  Kind 6 is one read of the
 * kernel's RTM_GETADDR dump (sequence 1), searched for 127.0.0.1 (::1 with
 * bit 0x80): BROKERPKG_FUZZ_SHOW prints what the decoder made of it.  Kind 7
 * is a TCP segment from an IPv6 raw socket (IPv4's come as kind 0).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../checksum.h"
#include "../decode.h"
#include "../net.h"
#include "../policy.h"
#include "../prober.h"
#include "../reply.h"

/* The probes in flight; fuzz/make_seeds.py answers exactly these. */
static const char requests[] =
    "1 send-probe ip-4 198.18.0.1\n"
    "2 send-probe ip-6 2001:db8::1\n"
    "3 send-probe ip-4 198.18.0.1 protocol udp\n"
    "4 send-probe ip-6 2001:db8::1 protocol udp\n"
    "5 send-probe ip-4 198.18.0.1 protocol sctp\n"
    "6 send-probe ip-6 2001:db8::1 protocol sctp\n"
    "7 send-probe ip-4 198.18.0.1 ttl 3 details yes\n"
    "8 send-probe ip-6 2001:db8::1 ttl 3 details yes\n"
    "9 send-probe ip-4 198.18.0.1 protocol tcp\n"
    "10 send-probe ip-6 2001:db8::1 protocol tcp details yes\n"
    "11 send-probe ip-6 2001:db8::1 protocol sctp flow 5\n";

static void address(int family, const char *text, struct ip_address *out)
{
    if (!ip_address_parse(family, text, out)) {
        abort();
    }
}

#define KIND_FIX_CHECKSUMS 0x40
#define KIND_TCP6 7
#define FUZZ_PACKET_MAX 65536

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t value)
{
    p[0] = (uint8_t)(value >> 8);
    p[1] = (uint8_t)value;
}

/* The Internet checksum at AT (an offset in DATA) made right for DATA. */
static void fix_internet_checksum(uint8_t *data, size_t length, size_t at)
{
    if (length >= at + 2) {
        put16(data + at, 0);
        put16(data + at, checksum_finish(checksum_add(0, data, length)));
    }
}

/* ICMP (or ICMPv6) ICMP: its RFC 4884 extension's checksum, as decode.c
   finds the extension, then (IPv4) the message's own. */
static void fix_icmp(uint8_t *icmp, size_t length, int family)
{
    size_t declared;
    size_t offset;

    if (length < 8) {
        return;
    }
    declared = family == AF_INET6 ? (size_t)icmp[4] * 8 : (size_t)icmp[5] * 4;
    offset = 8 + (declared != 0 ? declared : 128);
    if (length >= offset + 4) {
        fix_internet_checksum(icmp + offset, length - offset, 2);
    }
    if (family == AF_INET) {
        fix_internet_checksum(icmp, length, 2);
    }
}

static void fix_sctp(uint8_t *sctp, size_t length)
{
    uint32_t crc;

    if (length < 12) {
        return;
    }
    memset(sctp + 8, 0, 4);
    crc = crc32c_finish(crc32c_update(CRC32C_INITIAL, sctp, length));
    sctp[8] = (uint8_t)crc;             /* little-endian on the wire */
    sctp[9] = (uint8_t)(crc >> 8);
    sctp[10] = (uint8_t)(crc >> 16);
    sctp[11] = (uint8_t)(crc >> 24);
}

/* A TCP segment's checksum made right for SOURCE -> DESTINATION (FAMILY). */
static void fix_tcp(uint8_t *tcp, size_t length, int family,
                    const uint8_t *source, const uint8_t *destination)
{
    struct ip_address from = {.family = family};
    struct ip_address to = {.family = family};
    uint32_t sum;

    if (length < 20) {
        return;
    }
    memcpy(&from.u, source, ip_address_length(&from));
    memcpy(&to.u, destination, ip_address_length(&to));
    put16(tcp + 16, 0);
    sum = checksum_pseudo_header(&from, &to, 6, length);
    put16(tcp + 16, checksum_finish(checksum_add(sum, tcp, length)));
}

/* Make the checksums of PACKET (as socket kind KIND delivers it) right. */
static void fix_checksums(uint8_t kind, uint8_t *packet, size_t length)
{
    size_t header;
    size_t total;

    switch (kind & 0x3f) {
    case 0:
        if (length < 20) {
            return;
        }
        header = (size_t)(packet[0] & 0x0f) * 4;
        total = get16(packet + 2);
        if (header < 20 || total < header || total > length) {
            return;
        }
        if (packet[9] == 1) {
            fix_icmp(packet + header, total - header, AF_INET);
        } else if (packet[9] == 132) {
            fix_sctp(packet + header, total - header);
        } else if (packet[9] == 6) {
            fix_tcp(packet + header, total - header, AF_INET, packet + 12,
                    packet + 16);
        }
        return;
    case 1:
        fix_icmp(packet, length, AF_INET6);
        return;
    case 2:
        fix_sctp(packet, length);
        return;
    case KIND_TCP6: {
        struct ip_address source;
        struct ip_address local;

        address(AF_INET6, "2001:db8::1", &source);
        address(AF_INET6, "2001:db8::2", &local);
        fix_tcp(packet, length, AF_INET6, source.u.bytes, local.u.bytes);
        return;
    }
    default:
        return;
    }
}

static bool decode(uint8_t kind, uint8_t sender, const uint8_t *packet,
                   size_t length, struct decoded_reply *reply)
{
    struct ip_address source;
    struct ip_address local;
    int family = kind & 0x80 ? AF_INET6 : AF_INET;

    address(AF_INET6, sender & 1 ? "2001:db8::ff" : "2001:db8::1", &source);
    address(AF_INET6, "2001:db8::2", &local);
    if (family == AF_INET) {
        address(AF_INET, sender & 1 ? "198.18.0.254" : "198.18.0.1", &source);
    }
    switch (kind & 0x3f) {
    case 0:
        return decode_ipv4_packet(packet, length, reply);
    case 1:
        return decode_icmp6_message(packet, length, &source, &local,
                                    sender >> 1, reply);
    case 2:
        return decode_sctp6_packet(packet, length, &source, &local,
                                   sender >> 1, reply);
    case KIND_TCP6:
        return decode_tcp6_packet(packet, length, &source, &local,
                                  sender >> 1, reply);
    case 3:
        return decode_datagram_echo(packet, length, &source, sender >> 1,
                                    reply);
    case 4: {
        struct ip_address destination;

        if (length < 2) {
            return false;
        }
        address(family, family == AF_INET6 ? "2001:db8::1" : "198.18.0.1",
                &destination);
        return decode_datagram_error(packet + 2, length - 2, family, packet[0],
                                     packet[1], &source, &destination, reply);
    }
    default:
        return false;
    }
}

#define KIND_ADDRESS_DUMP 6
#define ADDRESS_DUMP_SEQUENCE 1

static void read_address_dump(uint8_t kind, const uint8_t *dump, size_t length)
{
    static const char *const statuses[] = {
        [ADDRESS_DUMP_CONTINUES] = "continues",
        [ADDRESS_DUMP_DONE] = "done",
        [ADDRESS_DUMP_FAILED] = "failed",
    };
    struct ip_address wanted;
    bool listed = false;
    int error = 0;
    enum address_dump_status status;
    char line[64];
    int n;

    address(kind & 0x80 ? AF_INET6 : AF_INET,
            kind & 0x80 ? "::1" : "127.0.0.1", &wanted);
    status = decode_address_dump(dump, length, ADDRESS_DUMP_SEQUENCE, &wanted,
                                 &listed, &error);
    if (status == ADDRESS_DUMP_FAILED && error == 0) {
        abort();    /* a failure always says why */
    }
    if (getenv("BROKERPKG_FUZZ_SHOW") != NULL) {
        n = snprintf(line, sizeof(line), "%s%s errno %d\n", statuses[status],
                     listed ? " listed" : "", error);
        (void)!write(1, line, (size_t)n);
    }
}

static void check_replies(const struct reply_writer *out)
{
    for (size_t i = out->start; i < out->length; i++) {
        unsigned char c = (unsigned char)out->buffer[i];

        if (c != '\n' && (c < 0x20 || c > 0x7e)) {
            abort();    /* replies are printable ASCII lines */
        }
    }
}

/*
 * With BROKERPKG_FUZZ_SHOW each input must run exactly once, or what it shows
 * is shown twice.  libFuzzer runs an input again (to look for a leak) when it
 * counted more mallocs than frees during it, and it counts every thread's: its
 * RSS-watching thread starts while the first input runs, and that thread's
 * start-up allocations fall inside the count now and then.  So show mode runs
 * without that thread (-rss_limit_mb=0, after the caller's flags: the last
 * one counts).  The argument vector made here is kept for the process's life.
 */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char no_rss_thread[] = "-rss_limit_mb=0";
    static char **arguments;

    if (getenv("BROKERPKG_FUZZ_SHOW") == NULL) {
        return 0;
    }
    arguments = calloc((size_t)*argc + 2, sizeof(*arguments));
    if (arguments == NULL) {
        abort();
    }
    memcpy(arguments, *argv, (size_t)*argc * sizeof(*arguments));
    arguments[(*argc)++] = no_rss_thread;
    *argv = arguments;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct net_state net;
    /* root's: marks allowed, no rate limit (the fuzzer would only wait) */
    static const struct caller_policy caller = {.may_mark = true};
    struct prober *prober;
    struct decoded_reply reply;
    struct timespec received = {.tv_sec = 1, .tv_nsec = 0};
    const uint8_t *packet = data + 2;

    if (size < 2) {
        return 0;
    }
    net_open(&net);
    prober = prober_create(&net, &caller, false);
    if (prober == NULL) {
        abort();
    }
    prober_feed(prober, requests, strlen(requests));
    if ((data[0] & KIND_FIX_CHECKSUMS) != 0 && size - 2 <= FUZZ_PACKET_MAX) {
        static uint8_t fixed[FUZZ_PACKET_MAX];

        memcpy(fixed, data + 2, size - 2);
        fix_checksums(data[0], fixed, size - 2);
        packet = fixed;
    }
    if ((data[0] & 0x3f) == KIND_ADDRESS_DUMP) {
        read_address_dump(data[0], packet, size - 2);
    }
    for (int copy = 0; copy < 2; copy++) {
        if ((data[0] & 0x3f) == 5) {
            /* after the probes' own send times, read from the real clock */
            struct timespec sent = {.tv_sec = (time_t)1 << 40, .tv_nsec = 0};

            if (decode_sent_packet(packet, size - 2,
                                   data[0] & 0x80 ? AF_INET6 : AF_INET, &reply)
                && prober_departed(prober, &reply, &sent)
                && getenv("BROKERPKG_FUZZ_SHOW") != NULL) {
                (void)!write(1, "departed\n", 9);
            }
        } else if (decode(data[0], data[1], packet, size - 2, &reply)) {
            prober_deliver(prober, &reply, &received);
        }
    }
    check_replies(prober_replies(prober));
    /* tests/test_fuzz.py checks the seeds: show which probes each answered */
    if (getenv("BROKERPKG_FUZZ_SHOW") != NULL) {
        reply_flush(prober_replies(prober), 1);
    }
    if (prober_in_flight(prober) < 10) {
        abort();    /* one packet answers at most one probe */
    }
    prober_destroy(prober);
    return 0;
}
