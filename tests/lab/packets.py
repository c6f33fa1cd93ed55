"""Build and parse IPv4/IPv6 packets with the standard library only.

Used by the scripted responder (which answers with hand-built packets), by the
capture reader (which decodes what went over the wire) and by tests that want to
look inside an ICMP error (quoted datagram, RFC 4884 extensions, RFC 4950 MPLS
label stack entries).

Parsing never raises on short or odd input: fields that are not present are left
as ``None`` and :attr:`Packet.truncated` is set.  Builders raise ``ValueError``
for impossible arguments (bad address family mix, values out of range).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# IP protocol numbers.
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132
PROTO_NAMES = {
    PROTO_ICMP: "icmp",
    PROTO_TCP: "tcp",
    PROTO_UDP: "udp",
    PROTO_ICMPV6: "icmp6",
    PROTO_SCTP: "sctp",
}

# ICMPv4 types.
ICMP4_ECHO_REPLY = 0
ICMP4_DEST_UNREACH = 3
ICMP4_ECHO_REQUEST = 8
ICMP4_TIME_EXCEEDED = 11
ICMP4_PARAM_PROBLEM = 12
# ICMPv6 types.
ICMP6_DEST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROBLEM = 4
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129

# Error types that quote the offending datagram, per family.
ICMP_ERROR_TYPES = {
    4: frozenset({ICMP4_DEST_UNREACH, ICMP4_TIME_EXCEEDED, ICMP4_PARAM_PROBLEM, 4, 5}),
    6: frozenset(
        {ICMP6_DEST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROBLEM}
    ),
}
# Error types that may carry an RFC 4884 length field and extension structure.
ICMP_EXTENSIBLE_TYPES = {
    4: frozenset({ICMP4_DEST_UNREACH, ICMP4_TIME_EXCEEDED, ICMP4_PARAM_PROBLEM}),
    6: frozenset({ICMP6_DEST_UNREACH, ICMP6_TIME_EXCEEDED}),
}
# ICMPv6 neighbour discovery and multicast listener messages: background noise.
ICMP6_NOISE_TYPES = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})

# TCP flags.
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

# SCTP chunk types.
SCTP_DATA = 0
SCTP_INIT = 1
SCTP_INIT_ACK = 2
SCTP_ABORT = 6
SCTP_COOKIE_ECHO = 10
SCTP_PARAM_STATE_COOKIE = 7

# RFC 4884: minimum length of the "original datagram" field when extensions follow.
RFC4884_ORIGINAL_MIN = 128
# RFC 4950: MPLS label stack object.
MPLS_CLASS = 1
MPLS_CTYPE_INCOMING = 1


def internet_checksum(data: bytes) -> int:
    """Return the RFC 1071 one's complement checksum of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """Return the CRC32c (Castagnoli) of ``data``, as SCTP uses it (RFC 9260 App. B)."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def family_of(address: str) -> int:
    """Return 4 or 6 for a numeric address.

    Raises:
        ValueError: ``address`` is not a numeric IPv4/IPv6 address.
    """
    return ipaddress.ip_address(address).version


def _addr_bytes(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def _addr_str(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    """Return the IPv4 or IPv6 pseudo-header used by UDP/TCP/ICMPv6 checksums.

    Raises:
        ValueError: the addresses are not numeric or not of one family.
    """
    s, d = _addr_bytes(src), _addr_bytes(dst)
    if len(s) != len(d):
        raise ValueError(f"address family mismatch: {src} / {dst}")
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!I3xB", length, proto)


# --------------------------------------------------------------------------- builders


def ipv4_packet(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    df: bool = False,
    total_length: int | None = None,
) -> bytes:
    """Return an IPv4 packet (20-byte header with a correct checksum) + ``payload``.

    ``total_length`` overrides the header's length field (for malformed packets).

    Raises:
        ValueError: an address is not IPv4 or a field is out of range.
        struct.error: a field does not fit its width.
    """
    s, d = _addr_bytes(src), _addr_bytes(dst)
    if len(s) != 4 or len(d) != 4:
        raise ValueError(f"not IPv4: {src} -> {dst}")
    length = 20 + len(payload) if total_length is None else total_length
    flags = 0x4000 if df else 0
    header = struct.pack("!BBHHHBBH4s4s", 0x45, tos, length, ident, flags, ttl, proto, 0, s, d)
    csum = internet_checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def ipv6_packet(
    src: str,
    dst: str,
    next_header: int,
    payload: bytes,
    *,
    hop_limit: int = 64,
    tclass: int = 0,
    flow_label: int = 0,
    payload_length: int | None = None,
) -> bytes:
    """Return an IPv6 packet (40-byte header) + ``payload``.

    Raises:
        ValueError: an address is not IPv6.
        struct.error: a field does not fit its width.
    """
    s, d = _addr_bytes(src), _addr_bytes(dst)
    if len(s) != 16 or len(d) != 16:
        raise ValueError(f"not IPv6: {src} -> {dst}")
    plen = len(payload) if payload_length is None else payload_length
    first = (6 << 28) | (tclass << 20) | (flow_label & 0xFFFFF)
    return struct.pack("!IHBB16s16s", first, plen, next_header, hop_limit, s, d) + payload


def ip_packet(
    src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64, tos: int = 0
) -> bytes:
    """Return an IPv4 or IPv6 packet, the family taken from ``src``.

    For IPv6, ``proto`` 1 (ICMP) is not translated: pass 58 for ICMPv6.

    Raises:
        ValueError: addresses not numeric or of different families.
    """
    if family_of(src) == 4:
        return ipv4_packet(src, dst, proto, payload, ttl=ttl, tos=tos)
    return ipv6_packet(src, dst, proto, payload, hop_limit=ttl, tclass=tos)


def icmp_message(
    version: int,
    icmp_type: int,
    code: int,
    body: bytes,
    *,
    src: str | None = None,
    dst: str | None = None,
    checksum: int | None = None,
) -> bytes:
    """Return an ICMP (version 4) or ICMPv6 (version 6) message.

    ``body`` is everything after the 4-byte type/code/checksum header.  ICMPv6
    needs ``src`` and ``dst`` for the pseudo-header checksum.  ``checksum``
    forces a (possibly wrong) checksum value.

    Raises:
        ValueError: ICMPv6 without src/dst, or a bad version.
    """
    msg = struct.pack("!BBH", icmp_type, code, 0) + body
    if checksum is None:
        if version == 4:
            checksum = internet_checksum(msg)
        elif version == 6:
            if src is None or dst is None:
                raise ValueError("ICMPv6 checksum needs src and dst")
            checksum = internet_checksum(pseudo_header(src, dst, PROTO_ICMPV6, len(msg)) + msg)
        else:
            raise ValueError(f"bad IP version {version}")
    return msg[:2] + struct.pack("!H", checksum) + msg[4:]


def echo_message(
    version: int,
    ident: int,
    seq: int,
    data: bytes = b"",
    *,
    reply: bool = False,
    src: str | None = None,
    dst: str | None = None,
) -> bytes:
    """Return an ICMP/ICMPv6 echo request (or reply with ``reply=True``).

    Raises:
        ValueError: as :func:`icmp_message`.
    """
    if version == 4:
        icmp_type = ICMP4_ECHO_REPLY if reply else ICMP4_ECHO_REQUEST
    else:
        icmp_type = ICMP6_ECHO_REPLY if reply else ICMP6_ECHO_REQUEST
    return icmp_message(
        version, icmp_type, 0, struct.pack("!HH", ident, seq) + data, src=src, dst=dst
    )


@dataclass(frozen=True)
class Mpls:
    """One RFC 4950 label stack entry (as mtr prints it: label,tc,bos,ttl)."""

    label: int
    tc: int = 0
    bos: int = 1
    ttl: int = 1

    def pack(self) -> bytes:
        """Return the 4-byte wire form.

        Raises:
            ValueError: a field is out of range.
        """
        if not (
            0 <= self.label < 1 << 20
            and 0 <= self.tc < 8
            and self.bos in (0, 1)
            and 0 <= self.ttl < 256
        ):
            raise ValueError(f"MPLS entry out of range: {self}")
        return struct.pack("!I", (self.label << 12) | (self.tc << 9) | (self.bos << 8) | self.ttl)

    @classmethod
    def unpack(cls, raw: bytes) -> Mpls:
        """Decode 4 bytes.  Raises ``struct.error`` if ``raw`` is not 4 bytes."""
        (word,) = struct.unpack("!I", raw)
        return cls(word >> 12, (word >> 9) & 7, (word >> 8) & 1, word & 0xFF)

    def mtr(self) -> str:
        """Return ``L,TC,BOS,TTL`` as in mtr-packet's ``mpls`` reply field."""
        return f"{self.label},{self.tc},{self.bos},{self.ttl}"


@dataclass(frozen=True)
class IcmpExtensionObject:
    """One RFC 4884 extension object: class-num, c-type, payload."""

    class_num: int
    c_type: int
    data: bytes

    def pack(self) -> bytes:
        """Return the object with its 4-byte header (length includes the header)."""
        return struct.pack("!HBB", 4 + len(self.data), self.class_num, self.c_type) + self.data


def mpls_object(entries: Iterable[Mpls]) -> IcmpExtensionObject:
    """Return an RFC 4950 "incoming MPLS label stack" object (class 1, c-type 1)."""
    return IcmpExtensionObject(MPLS_CLASS, MPLS_CTYPE_INCOMING, b"".join(e.pack() for e in entries))


def icmp_extension_structure(
    objects: Iterable[IcmpExtensionObject], *, version: int = 2, checksum: int | None = None
) -> bytes:
    """Return an RFC 4884 extension structure: header (version, checksum) + objects."""
    body = b"".join(o.pack() for o in objects)
    header = struct.pack("!BBH", version << 4, 0, 0)
    if checksum is None:
        checksum = internet_checksum(header + body)
    return struct.pack("!BBH", version << 4, 0, checksum) + body


def icmp_error(
    version: int,
    icmp_type: int,
    code: int,
    original: bytes,
    *,
    src: str,
    dst: str,
    extensions: bytes | None = None,
    max_quote: int | None = None,
    rest: bytes | None = None,
) -> bytes:
    """Return an ICMP/ICMPv6 error message quoting ``original``.

    Without ``extensions`` the original datagram is quoted as is, cut to
    ``max_quote`` bytes (default: 548 for IPv4 so the whole error stays within
    576 bytes, 1232 for IPv6 so it stays within 1280).  With ``extensions``
    (see :func:`icmp_extension_structure`) the quote is cut or zero-padded to
    128 bytes and the RFC 4884 length field is set (32-bit words for ICMPv4,
    64-bit words for ICMPv6).  ``rest`` overrides the 4 bytes after the checksum.

    Raises:
        ValueError: as :func:`icmp_message`.
    """
    if max_quote is None:
        max_quote = 548 if version == 4 else 1232
    if extensions is not None:
        quote = original[:RFC4884_ORIGINAL_MIN].ljust(RFC4884_ORIGINAL_MIN, b"\0")
        words = len(quote) // (4 if version == 4 else 8)
        if rest is None:
            rest = struct.pack("!xBxx", words) if version == 4 else struct.pack("!Bxxx", words)
        body = rest + quote + extensions
    else:
        body = (rest if rest is not None else b"\0\0\0\0") + original[:max_quote]
    return icmp_message(version, icmp_type, code, body, src=src, dst=dst)


def udp_datagram(
    src: str, dst: str, sport: int, dport: int, data: bytes = b"", *, checksum: bool = True
) -> bytes:
    """Return a UDP header + ``data`` with the pseudo-header checksum (if asked).

    Raises:
        ValueError: bad addresses.
        struct.error: a port out of range.
    """
    length = 8 + len(data)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + data
    if not checksum:
        return seg
    csum = internet_checksum(pseudo_header(src, dst, PROTO_UDP, length) + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", csum) + seg[8:]


def tcp_segment(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    *,
    seq: int = 0,
    ack: int = 0,
    flags: int = TCP_SYN,
    window: int = 65535,
    options: bytes = b"",
    data: bytes = b"",
) -> bytes:
    """Return a TCP segment with a correct checksum.

    ``options`` are zero-padded to a multiple of 4 bytes.

    Raises:
        ValueError: bad addresses.
        struct.error: a field out of range.
    """
    if len(options) % 4:
        options += b"\0" * (4 - len(options) % 4)
    offset = (20 + len(options)) // 4
    header = (
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            offset << 4,
            flags,
            window,
            0,
            0,
        )
        + options
    )
    seg = header + data
    csum = internet_checksum(pseudo_header(src, dst, PROTO_TCP, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def sctp_chunk(chunk_type: int, flags: int, value: bytes) -> bytes:
    """Return one SCTP chunk, its length field set and padded to 4 bytes."""
    chunk = struct.pack("!BBH", chunk_type, flags, 4 + len(value)) + value
    return chunk + b"\0" * (-len(chunk) % 4)


def sctp_init_chunk(
    initiate_tag: int,
    *,
    a_rwnd: int = 65535,
    outbound_streams: int = 10,
    inbound_streams: int = 10,
    initial_tsn: int = 0,
    params: bytes = b"",
    ack: bool = False,
) -> bytes:
    """Return an INIT (or INIT-ACK with ``ack=True``) chunk.

    For INIT-ACK, ``params`` must contain a State Cookie parameter
    (see :func:`sctp_param`); this function does not add one.
    """
    value = (
        struct.pack("!IIHHI", initiate_tag, a_rwnd, outbound_streams, inbound_streams, initial_tsn)
        + params
    )
    return sctp_chunk(SCTP_INIT_ACK if ack else SCTP_INIT, 0, value)


def sctp_param(param_type: int, value: bytes) -> bytes:
    """Return one SCTP TLV parameter padded to 4 bytes."""
    param = struct.pack("!HH", param_type, 4 + len(value)) + value
    return param + b"\0" * (-len(param) % 4)


def sctp_packet(
    sport: int, dport: int, vtag: int, chunks: Sequence[bytes], *, crc: int | None = None
) -> bytes:
    """Return an SCTP common header + ``chunks`` with the CRC32c checksum.

    ``crc`` forces a (possibly wrong) checksum value.  The CRC is stored in the
    byte order SCTP uses (the little-endian value of the reflected CRC).
    """
    body = b"".join(chunks)
    pkt = struct.pack("!HHII", sport, dport, vtag, 0) + body
    if crc is None:
        crc = crc32c(pkt)
    return pkt[:8] + struct.pack("<I", crc) + pkt[12:]


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class SctpChunk:
    """A decoded SCTP chunk."""

    type: int
    flags: int
    value: bytes

    @property
    def initiate_tag(self) -> int | None:
        """The initiate tag of an INIT or INIT-ACK chunk, else ``None``."""
        if self.type in (SCTP_INIT, SCTP_INIT_ACK) and len(self.value) >= 4:
            return int(struct.unpack("!I", self.value[:4])[0])
        return None


@dataclass
class Packet:
    """A decoded IP packet (possibly a truncated one quoted in an ICMP error).

    Lengths: ``length`` is the IP header's own claim (IPv4 total length, IPv6
    40 + payload length); ``captured`` is how many bytes were really there.
    ``ttl``/``tos`` are the IPv4 TTL/TOS or the IPv6 hop limit/traffic class.
    ``proto`` is the transport protocol number (after IPv6 extension headers).
    ``payload`` is what follows the transport header: echo data, UDP data,
    TCP data, SCTP chunks, or for ICMP errors the bytes after the 8-byte header.
    """

    version: int
    src: str
    dst: str
    ttl: int
    tos: int
    proto: int
    length: int
    captured: int
    raw: bytes = field(repr=False)
    header_length: int = 20
    ident: int | None = None
    df: bool | None = None
    flow_label: int | None = None
    header_checksum_ok: bool | None = None
    truncated: bool = False
    transport: bytes = field(default=b"", repr=False)
    # ICMP / ICMPv6
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    icmp_seq: int | None = None
    icmp_length: int | None = None  # RFC 4884 length field, in bytes (0: none)
    inner: Packet | None = None
    extension_version: int | None = None
    extension_checksum_ok: bool | None = None
    extensions: list[IcmpExtensionObject] = field(default_factory=list)
    mpls: list[Mpls] = field(default_factory=list)
    # UDP / TCP / SCTP
    sport: int | None = None
    dport: int | None = None
    checksum_ok: bool | None = None
    tcp_flags: int | None = None
    tcp_seq: int | None = None
    tcp_ack: int | None = None
    sctp_vtag: int | None = None
    sctp_chunks: list[SctpChunk] = field(default_factory=list)
    payload: bytes = field(default=b"", repr=False)
    # Capture metadata.
    timestamp: float | None = None
    timestamp_ns: int | None = None
    direction: str | None = None  # "in", "out" or None when unknown
    iface: str | None = None

    @property
    def proto_name(self) -> str:
        """``icmp``, ``icmp6``, ``udp``, ``tcp``, ``sctp`` or the number as text."""
        return PROTO_NAMES.get(self.proto, str(self.proto))

    @property
    def is_icmp(self) -> bool:
        """True for ICMP over IPv4 and ICMPv6 over IPv6."""
        return (self.version, self.proto) in ((4, PROTO_ICMP), (6, PROTO_ICMPV6))

    @property
    def is_icmp_error(self) -> bool:
        """True for an ICMP error type that quotes a datagram."""
        return self.is_icmp and self.icmp_type in ICMP_ERROR_TYPES[self.version]

    @property
    def is_echo_request(self) -> bool:
        """True for an ICMP/ICMPv6 echo request."""
        return self.is_icmp and self.icmp_type == (
            ICMP4_ECHO_REQUEST if self.version == 4 else ICMP6_ECHO_REQUEST
        )

    @property
    def is_echo_reply(self) -> bool:
        """True for an ICMP/ICMPv6 echo reply."""
        return self.is_icmp and self.icmp_type == (
            ICMP4_ECHO_REPLY if self.version == 4 else ICMP6_ECHO_REPLY
        )

    @property
    def is_time_exceeded(self) -> bool:
        """True for ICMP time exceeded / ICMPv6 time exceeded."""
        return self.is_icmp and self.icmp_type == (
            ICMP4_TIME_EXCEEDED if self.version == 4 else ICMP6_TIME_EXCEEDED
        )

    @property
    def is_dest_unreachable(self) -> bool:
        """True for ICMP/ICMPv6 destination unreachable."""
        return self.is_icmp and self.icmp_type == (
            ICMP4_DEST_UNREACH if self.version == 4 else ICMP6_DEST_UNREACH
        )

    @property
    def is_noise(self) -> bool:
        """True for ICMPv6 neighbour discovery / MLD (traffic no test sent)."""
        return (
            self.version == 6
            and self.proto == PROTO_ICMPV6
            and (self.icmp_type in ICMP6_NOISE_TYPES)
        )

    @property
    def sctp_init_tag(self) -> int | None:
        """Initiate tag of the first INIT/INIT-ACK chunk, if any."""
        for chunk in self.sctp_chunks:
            if chunk.initiate_tag is not None:
                return chunk.initiate_tag
        return None

    def summary(self) -> str:
        """A one-line human description (for assertion messages)."""
        parts = [
            f"v{self.version} {self.src} > {self.dst} ttl={self.ttl} tos={self.tos}",
            f"len={self.length}",
            self.proto_name,
        ]
        if self.icmp_type is not None:
            parts.append(f"type={self.icmp_type}/{self.icmp_code}")
            if self.icmp_id is not None:
                parts.append(f"id={self.icmp_id} seq={self.icmp_seq}")
        if self.sport is not None:
            parts.append(f"{self.sport}->{self.dport}")
        if self.tcp_flags is not None:
            parts.append(f"flags=0x{self.tcp_flags:02x}")
        if self.sctp_vtag is not None:
            parts.append(f"vtag=0x{self.sctp_vtag:08x} chunks={[c.type for c in self.sctp_chunks]}")
        if self.mpls:
            parts.append("mpls=" + ",".join(m.mtr() for m in self.mpls))
        if self.inner is not None:
            parts.append(f"[quoting {self.inner.summary()}]")
        if self.direction:
            parts.insert(0, self.direction)
        return " ".join(parts)


def parse_ip(data: bytes) -> Packet | None:
    """Decode an IPv4 or IPv6 packet starting at ``data[0]``.

    Returns ``None`` if there is not even a complete fixed IP header or the
    version nibble is neither 4 nor 6.  Never raises for odd content.
    """
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        return _parse_ipv4(data)
    if version == 6:
        return _parse_ipv6(data)
    return None


def _parse_ipv4(data: bytes) -> Packet | None:
    if len(data) < 20:
        return None
    vihl, tos, length, ident, frag, ttl, proto, _csum = struct.unpack("!BBHHHBBH", data[:12])
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or len(data) < ihl:
        return None
    pkt = Packet(
        version=4,
        src=_addr_str(data[12:16]),
        dst=_addr_str(data[16:20]),
        ttl=ttl,
        tos=tos,
        proto=proto,
        length=length,
        captured=len(data),
        raw=bytes(data),
        header_length=ihl,
        ident=ident,
        df=bool(frag & 0x4000),
        header_checksum_ok=internet_checksum(data[:ihl]) == 0,
    )
    end = min(len(data), length) if length >= ihl else len(data)
    pkt.truncated = len(data) < length
    # Non-first fragments carry no transport header.
    if frag & 0x1FFF:
        pkt.transport = bytes(data[ihl:end])
        return pkt
    _parse_transport(pkt, bytes(data[ihl:end]), complete=not pkt.truncated and not frag & 0x2000)
    return pkt


_IPV6_EXT_HEADERS = (0, 43, 60)


def _parse_ipv6(data: bytes) -> Packet | None:
    if len(data) < 40:
        return None
    first, plen, nh, hlim = struct.unpack("!IHBB", data[:8])
    pkt = Packet(
        version=6,
        src=_addr_str(data[8:24]),
        dst=_addr_str(data[24:40]),
        ttl=hlim,
        tos=(first >> 20) & 0xFF,
        proto=nh,
        length=40 + plen,
        captured=len(data),
        raw=bytes(data),
        header_length=40,
        flow_label=first & 0xFFFFF,
    )
    pkt.truncated = len(data) < 40 + plen
    end = min(len(data), 40 + plen)
    off = 40
    fragmented = False
    while nh in _IPV6_EXT_HEADERS or nh == 44:
        if off + 8 > end:
            pkt.proto = nh
            pkt.transport = bytes(data[off:end])
            return pkt
        if nh == 44:
            frag_off = struct.unpack("!H", data[off + 2 : off + 4])[0]
            fragmented = True
            nh = data[off]
            off += 8
            if frag_off & 0xFFF8:
                pkt.proto = nh
                pkt.header_length = off
                pkt.transport = bytes(data[off:end])
                return pkt
            continue
        nh, hlen = data[off], (data[off + 1] + 1) * 8
        off += hlen
    pkt.proto = nh
    pkt.header_length = off
    _parse_transport(pkt, bytes(data[off:end]), complete=not pkt.truncated and not fragmented)
    return pkt


def _parse_transport(pkt: Packet, seg: bytes, *, complete: bool) -> None:
    pkt.transport = seg
    if pkt.is_icmp:
        _parse_icmp(pkt, seg, complete=complete)
    elif pkt.proto == PROTO_UDP:
        if len(seg) >= 4:
            pkt.sport, pkt.dport = struct.unpack("!HH", seg[:4])
        if len(seg) >= 8:
            pkt.payload = seg[8:]
            csum = struct.unpack("!H", seg[6:8])[0]
            if complete:
                if csum == 0 and pkt.version == 4:
                    pkt.checksum_ok = True
                else:
                    pkt.checksum_ok = (
                        internet_checksum(
                            pseudo_header(pkt.src, pkt.dst, PROTO_UDP, len(seg)) + seg
                        )
                        == 0
                    )
        else:
            pkt.truncated = True
    elif pkt.proto == PROTO_TCP:
        if len(seg) >= 4:
            pkt.sport, pkt.dport = struct.unpack("!HH", seg[:4])
        if len(seg) >= 8:
            pkt.tcp_seq = struct.unpack("!I", seg[4:8])[0]
        if len(seg) >= 14:
            pkt.tcp_ack = struct.unpack("!I", seg[8:12])[0]
            pkt.tcp_flags = seg[13]
            offset = (seg[12] >> 4) * 4
            pkt.payload = seg[offset:]
            if complete:
                pkt.checksum_ok = (
                    internet_checksum(pseudo_header(pkt.src, pkt.dst, PROTO_TCP, len(seg)) + seg)
                    == 0
                )
        else:
            pkt.truncated = True
    elif pkt.proto == PROTO_SCTP:
        if len(seg) >= 4:
            pkt.sport, pkt.dport = struct.unpack("!HH", seg[:4])
        if len(seg) >= 8:
            pkt.sctp_vtag = struct.unpack("!I", seg[4:8])[0]
        if len(seg) >= 12:
            pkt.payload = seg[12:]
            if complete:
                stored = struct.unpack("<I", seg[8:12])[0]
                pkt.checksum_ok = crc32c(seg[:8] + b"\0\0\0\0" + seg[12:]) == stored
            off = 12
            while off + 4 <= len(seg):
                ctype, cflags, clen = struct.unpack("!BBH", seg[off : off + 4])
                if clen < 4:
                    break
                pkt.sctp_chunks.append(SctpChunk(ctype, cflags, seg[off + 4 : off + clen]))
                off += clen + (-clen % 4)
        else:
            pkt.truncated = True


def _parse_icmp(pkt: Packet, seg: bytes, *, complete: bool) -> None:
    if len(seg) < 2:
        pkt.truncated = True
        return
    pkt.icmp_type, pkt.icmp_code = seg[0], seg[1]
    if complete and len(seg) >= 4:
        if pkt.version == 4:
            pkt.checksum_ok = internet_checksum(seg) == 0
        else:
            pkt.checksum_ok = (
                internet_checksum(pseudo_header(pkt.src, pkt.dst, PROTO_ICMPV6, len(seg)) + seg)
                == 0
            )
    if len(seg) < 8:
        pkt.truncated = True
        return
    if pkt.is_echo_request or pkt.is_echo_reply:
        pkt.icmp_id, pkt.icmp_seq = struct.unpack("!HH", seg[4:8])
        pkt.payload = seg[8:]
        return
    pkt.payload = seg[8:]
    if not pkt.is_icmp_error:
        return
    body = seg[8:]
    ext_at: int | None = None
    if pkt.icmp_type in ICMP_EXTENSIBLE_TYPES[pkt.version]:
        units = seg[5] * 4 if pkt.version == 4 else seg[4] * 8
        pkt.icmp_length = units
        if units:
            ext_at = units
        elif len(body) > RFC4884_ORIGINAL_MIN + 4 and body[RFC4884_ORIGINAL_MIN] >> 4 == 2:
            # Pre-RFC 4884 (RFC 4950 compatibility): extension after 128 bytes.
            ext_at = RFC4884_ORIGINAL_MIN
    quote = body[:ext_at] if ext_at is not None else body
    pkt.inner = parse_ip(quote)
    if ext_at is not None and len(body) >= ext_at + 4:
        _parse_extensions(pkt, body[ext_at:])


def _parse_extensions(pkt: Packet, ext: bytes) -> None:
    pkt.extension_version = ext[0] >> 4
    stored = struct.unpack("!H", ext[2:4])[0]
    pkt.extension_checksum_ok = stored == 0 or internet_checksum(ext) == 0
    off = 4
    while off + 4 <= len(ext):
        olen, cnum, ctype = struct.unpack("!HBB", ext[off : off + 4])
        if olen < 4 or off + olen > len(ext):
            break
        obj = IcmpExtensionObject(cnum, ctype, ext[off + 4 : off + olen])
        pkt.extensions.append(obj)
        if cnum == MPLS_CLASS and ctype == MPLS_CTYPE_INCOMING:
            data = obj.data
            pkt.mpls.extend(Mpls.unpack(data[i : i + 4]) for i in range(0, len(data) - 3, 4))
        off += olen


ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100


def parse_ethernet(frame: bytes) -> tuple[bytes, bytes, int, bytes]:
    """Split an Ethernet II frame into (dst mac, src mac, ethertype, payload).

    One 802.1Q tag is skipped.

    Raises:
        ValueError: the frame is shorter than an Ethernet header.
    """
    if len(frame) < 14:
        raise ValueError("short Ethernet frame")
    dst, src = frame[:6], frame[6:12]
    etype = struct.unpack("!H", frame[12:14])[0]
    off = 14
    if etype == ETH_P_8021Q and len(frame) >= 18:
        etype = struct.unpack("!H", frame[16:18])[0]
        off = 18
    return dst, src, etype, frame[off:]


def mac_str(raw: bytes) -> str:
    """Format 6 bytes as ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{b:02x}" for b in raw)
