#!/usr/bin/env python3
"""Write the seed corpora of the fuzz harnesses (fuzz/corpus/{requests,answers}).

The answer seeds answer exactly the probes fuzz_answers.c puts in flight, with the
identities the stub network (net_stub.c) makes the prober choose: ICMP id 0x4242 with
sequences 0-3, UDP checksums 1 and 2 from source port 0x4242, SCTP source ports 33434
and 33435, TCP sequences 0 and 1 from source ports 0x5151 and 0x5152.  So the fuzzer
starts from packets that reach the matching code.
"""

from __future__ import annotations

import ipaddress
import pathlib
import struct

HERE = pathlib.Path(__file__).parent
ICMP_ID = 0x4242
UDP_PORT = 0x4242
V4_PROBE_DST, V4_SRC, V4_ROUTER = "198.18.0.1", "198.18.0.2", "198.18.0.254"
V6_PROBE_DST, V6_SRC = "2001:db8::1", "2001:db8::2"
ETHERNET = bytes(12)  # addresses; the EtherType follows
TCP_PORTS = (0x5151, 0x5152)  # the stub's default TCP source ports; sequences from 0
TCP_SYN, TCP_RST, TCP_ACK = 0x02, 0x04, 0x10


def ip4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def ip6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return ~crc & 0xFFFFFFFF


def ipv4(src: str, dst: str, protocol: int, payload: bytes, ttl: int = 64) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, ttl, protocol, 0, ip4(src), ip4(dst)
    )
    header = header[:10] + struct.pack("!H", inet_checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hops: int = 64) -> bytes:
    return (
        struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hops, ip6(src), ip6(dst))
        + payload
    )


def icmp(kind: int, code: int, rest: bytes, v4: bool = True, word: bytes = b"\0\0\0\0") -> bytes:
    message = struct.pack("!BBH", kind, code, 0) + word + rest
    if v4:
        message = message[:2] + struct.pack("!H", inet_checksum(message)) + message[4:]
    return message


def echo(kind: int, sequence: int, payload: bytes = b"\0" * 36) -> bytes:
    return icmp(kind, 0, payload, word=struct.pack("!HH", ICMP_ID, sequence))


def udp(sport: int, dport: int, checksum: int, payload: bytes = b"\0" * 26) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), checksum) + payload


def sctp(sport: int, dport: int, vtag: int, chunk: bytes) -> bytes:
    packet = struct.pack("!HHII", sport, dport, vtag, 0) + chunk
    crc = crc32c(packet)
    return packet[:8] + struct.pack("<I", crc) + packet[12:]


def tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    """A TCP header from SRC to DST (packed addresses), its checksum filled in."""
    segment = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!IxxxB", len(segment), 6)
    return segment[:16] + struct.pack("!H", inet_checksum(pseudo + segment)) + segment[18:]


def sctp_tag(port: int) -> int:
    return ((port * 0x9E3779B1) & 0xFFFFFFFF) | 1


def init_chunk(tag: int) -> bytes:
    return struct.pack("!BBHIIHHI", 1, 0, 20, tag, 65535, 10, 10, tag)


def mpls_extension(labels: list[tuple[int, int, int, int]]) -> bytes:
    entries = b"".join(
        struct.pack("!I", label << 12 | tc << 9 | s << 8 | ttl) for label, tc, s, ttl in labels
    )
    obj = struct.pack("!HBB", 4 + len(entries), 1, 1) + entries
    header = struct.pack("!BBH", 0x20, 0, 0)
    structure = header + obj
    return header[:2] + struct.pack("!H", inet_checksum(structure)) + obj


def with_extension(
    quote: bytes, v4: bool, labels: list[tuple[int, int, int, int]]
) -> tuple[bytes, bytes]:
    """The quote padded to 128 bytes, and the RFC 4884 length word."""
    quote = quote[:128].ljust(128, b"\0")
    length = len(quote) // 4 if v4 else len(quote) // 8
    word = struct.pack("!BBH", 0, length, 0) if v4 else struct.pack("!BBH", length, 0, 0)
    return quote + mpls_extension(labels), word


# Netlink (host byte order): one read of an RTM_GETADDR dump, sequence 1 (fuzz_answers.c)
NLMSG_ERROR, NLMSG_DONE, RTM_NEWADDR, NLM_F_MULTI = 2, 3, 20, 2
IFA_ADDRESS, IFA_LOCAL = 1, 2
DUMP_SEQUENCE = 1


def netlink(kind: int, payload: bytes, sequence: int = DUMP_SEQUENCE) -> bytes:
    padded = payload + bytes(-len(payload) % 4)
    return struct.pack("=IHHII", 16 + len(payload), kind, NLM_F_MULTI, sequence, 0) + padded


def new_address(family: int, attributes: dict[int, bytes], sequence: int = DUMP_SEQUENCE) -> bytes:
    body = struct.pack("=BBBBI", family, 128 if family == 10 else 8, 0, 0, 1)
    for kind, value in attributes.items():
        body += struct.pack("=HH", 4 + len(value), kind) + value + bytes(-len(value) % 4)
    return netlink(RTM_NEWADDR, body, sequence)


def address_dumps() -> dict[str, bytes]:
    done = netlink(NLMSG_DONE, struct.pack("=i", 0))
    loopback4 = {IFA_ADDRESS: ip4("127.0.0.1"), IFA_LOCAL: ip4("127.0.0.1")}
    return {
        "netlink-v4-dump": b"\x06\x00"
        + new_address(2, {IFA_ADDRESS: ip4("198.18.0.3"), IFA_LOCAL: ip4("198.18.0.2")})
        + new_address(2, loopback4)
        + done,
        # 127.0.0.1 only in another request's answer, and as a point-to-point peer
        "netlink-v4-stale": b"\x06\x00"
        + new_address(2, loopback4, sequence=7)
        + new_address(2, {IFA_ADDRESS: ip4("127.0.0.1"), IFA_LOCAL: ip4("198.18.0.2")})
        + done,
        # IPv6 names its address in IFA_ADDRESS alone; the dump goes on
        "netlink-v6-dump": b"\x86\x00" + new_address(10, {IFA_ADDRESS: ip6("::1")}),
        "netlink-error": b"\x06\x00" + netlink(NLMSG_ERROR, struct.pack("=i", -16) + bytes(16)),
    }


def answers() -> dict[str, bytes]:
    v4_icmp_probe = ipv4(V4_SRC, V4_PROBE_DST, 1, echo(8, 2), ttl=1)
    v4_udp_probe = ipv4(V4_SRC, V4_PROBE_DST, 17, udp(UDP_PORT, 33435, 1))
    v4_sctp_probe = ipv4(V4_SRC, V4_PROBE_DST, 132, sctp(33434, 80, 0, init_chunk(sctp_tag(33434))))
    syn = tcp(ip4(V4_SRC), ip4(V4_PROBE_DST), TCP_PORTS[0], 80, 0, 0, TCP_SYN)
    v4_tcp_probe = ipv4(V4_SRC, V4_PROBE_DST, 6, syn, ttl=1)
    syn_ack = tcp(ip4(V4_PROBE_DST), ip4(V4_SRC), 80, TCP_PORTS[0], 777, 1, TCP_SYN | TCP_ACK)
    rst = tcp(ip6(V6_PROBE_DST), ip6(V6_SRC), 80, TCP_PORTS[1], 0, 2, TCP_RST | TCP_ACK)
    v6_icmp_probe = ipv6(V6_SRC, V6_PROBE_DST, 58, echo(128, 3), hops=1)
    v6_udp_probe = ipv6(V6_SRC, V6_PROBE_DST, 17, udp(UDP_PORT, 33436, 2))
    body4, word4 = with_extension(v4_icmp_probe, True, [(24001, 0, 0, 1), (16, 5, 1, 1)])
    body6, word6 = with_extension(v6_icmp_probe, False, [(1048575, 7, 1, 255)])
    return {
        "v4-echo-reply": b"\0\0" + ipv4(V4_PROBE_DST, V4_SRC, 1, echo(0, 0)),
        "v4-ttl-mpls": b"\0\0" + ipv4(V4_ROUTER, V4_SRC, 1, icmp(11, 0, body4, word=word4)),
        "v4-ttl-plain": b"\0\0" + ipv4(V4_ROUTER, V4_SRC, 1, icmp(11, 0, v4_icmp_probe[:28])),
        "v4-port-unreachable": b"\0\0"
        + ipv4(V4_PROBE_DST, V4_SRC, 1, icmp(3, 3, v4_udp_probe[:36])),
        "v4-host-unreachable": b"\0\0"
        + ipv4(V4_ROUTER, V4_SRC, 1, icmp(3, 1, ipv4(V4_SRC, V4_PROBE_DST, 1, echo(8, 0))[:28])),
        "v4-sctp-ttl": b"\0\0" + ipv4(V4_ROUTER, V4_SRC, 1, icmp(11, 0, v4_sctp_probe[:52])),
        "v4-sctp-init-ack": b"\0\0"
        + ipv4(
            V4_PROBE_DST,
            V4_SRC,
            132,
            sctp(80, 33434, sctp_tag(33434), struct.pack("!BBHI", 2, 0, 8, 7)),
        ),
        "v4-sctp-abort-t": b"\0\0"
        + ipv4(V4_PROBE_DST, V4_SRC, 132, sctp(80, 33434, 0, struct.pack("!BBH", 6, 1, 4))),
        "v4-tcp-syn-ack": b"\0\0" + ipv4(V4_PROBE_DST, V4_SRC, 6, syn_ack),
        "v4-tcp-ttl": b"\0\0" + ipv4(V4_ROUTER, V4_SRC, 1, icmp(11, 0, v4_tcp_probe[:28])),
        "v6-tcp-rst": b"\x87\x80" + rst,
        "sent-v4-tcp": b"\x05\x00" + ETHERNET + b"\x08\x00" + v4_tcp_probe,
        "v6-echo-reply": b"\x81\x80" + echo(129, 1),
        "v6-ttl-mpls": b"\x81\x81" + icmp(3, 0, body6, v4=False, word=word6),
        "v6-port-unreachable": b"\x81\x01" + icmp(1, 4, v6_udp_probe[:56], v4=False),
        "v6-sctp-init-ack": b"\x82\x80"
        + sctp(80, 33435, sctp_tag(33435), struct.pack("!BBHI", 2, 0, 8, 7)),
        "dgram-v4-echo": b"\x03\x80" + echo(0, 0),
        "dgram-v6-echo": b"\x83\x80" + echo(129, 1),
        "dgram-v4-error": b"\x04\x01" + bytes([11, 0]) + echo(8, 2)[:8],
        # departures: the probe as sent, behind an Ethernet header or none
        "sent-v4-udp": b"\x05\x00" + ETHERNET + b"\x08\x00" + v4_udp_probe,
        "sent-v6-icmp": b"\x85\x00" + ipv6(V6_SRC, V6_PROBE_DST, 58, echo(128, 1), hops=255),
        **address_dumps(),
    }


REQUESTS = {
    "probe": b"1 send-probe ip-4 127.0.0.1\n",
    "all-arguments": (
        b"2 send-probe ip-6 2001:db8::1 protocol udp port 53 local-port 40000 "
        b"timeout 0.5 ttl 3 size 100 bit-pattern 7 tos 8 mark 1 details yes\n"
    ),
    "sctp": b"3 send-probe ip-4 198.18.0.1 protocol sctp size 200 local-device lo\n",
    "tcp": b"4 send-probe ip-4 198.18.0.1 protocol tcp port 443\n",
    "flow": (
        b"17 send-probe ip-6 2001:db8::1 flow 9 size 0\n"
        b"18 send-probe ip-4 198.18.0.1 protocol udp flow 65535 ttl 2\n"
        b"19 send-probe ip-4 198.18.0.1 protocol tcp flow 0\n"
        b"20 send-probe ip-6 2001:db8::1 protocol sctp flow 3\n"
        b"21 send-probe ip-6 2001:db8::1 protocol sctp flow 3\n"
        b"22 send-probe ip-4 198.18.0.1 protocol udp flow 16566\n"
    ),
    "check-support": b"5 check-support feature max-probes\n6 check-support\n",
    "errors": b"x\n\n7 frob\n8 send-probe ip-4 1.2.3\n9 send-probe ip-4 127.0.0.1 ttl 0\n",
    "reuse": b"10 send-probe ip-4 198.18.0.1\n10 send-probe ip-4 198.18.0.1\n",
    "local": b"11 send-probe ip-4 127.0.0.1 local-ip-4 127.0.0.1\n",
    "local-port": (
        b"12 send-probe ip-4 198.18.0.1 protocol udp local-port 40000\n"
        b"13 send-probe ip-4 198.18.0.1 protocol udp local-port 40000\n"
        b"14 send-probe ip-6 2001:db8::1 protocol sctp local-port 50001\n"
        b"15 send-probe ip-6 2001:db8::1 local-ip-6 2001:db8::2 local-port 40001"
        b" protocol sctp\n"
        b"16 send-probe ip-6 ::ffff:198.18.0.1 local-ip-6 ::\n"
    ),
}


def main() -> None:
    for name, corpus in (("answers", answers()), ("requests", REQUESTS)):
        folder = HERE / "corpus" / name
        folder.mkdir(parents=True, exist_ok=True)
        for seed, data in corpus.items():
            (folder / seed).write_bytes(data)


if __name__ == "__main__":
    main()
