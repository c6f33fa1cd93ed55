"""A small reader for classic pcap files (what ``tcpdump -w`` writes).

Supports both byte orders, microsecond and nanosecond timestamps, and the link
types a Linux capture produces: Ethernet (1), raw IP (101, 228, 229), Linux
cooked v1 (113) and v2 (276).  pcapng is not supported.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .packets import ETH_P_IP, ETH_P_IPV6, Packet, parse_ethernet, parse_ip

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

# Linux packet types (sll_pkttype).
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4


class PcapError(ValueError):
    """The file is not a pcap file this reader understands."""


@dataclass(frozen=True)
class Record:
    """One captured frame: kernel timestamp (ns since the epoch), lengths, bytes."""

    timestamp_ns: int
    orig_len: int
    data: bytes
    linktype: int


def read_records(path: str | Path) -> Iterator[Record]:
    """Yield the records of a pcap file.

    A truncated last record (capture killed mid-write) is ignored.

    Raises:
        PcapError: bad magic number.
        OSError: the file cannot be read.
    """
    raw = Path(path).read_bytes()
    if len(raw) < 24:
        if not raw:
            return
        raise PcapError(f"{path}: too short for a pcap header")
    magic = raw[:4]
    table = {
        b"\xd4\xc3\xb2\xa1": ("<", 1000),
        b"\xa1\xb2\xc3\xd4": (">", 1000),
        b"\x4d\x3c\xb2\xa1": ("<", 1),
        b"\xa1\xb2\x3c\x4d": (">", 1),
    }
    if magic not in table:
        raise PcapError(f"{path}: not a pcap file (magic {magic.hex()})")
    endian, scale = table[magic]
    linktype = struct.unpack(endian + "I", raw[20:24])[0] & 0x0FFFFFFF
    off = 24
    while off + 16 <= len(raw):
        sec, frac, incl, orig = struct.unpack(endian + "IIII", raw[off : off + 16])
        off += 16
        if off + incl > len(raw):
            break
        yield Record(sec * 1_000_000_000 + frac * scale, orig, raw[off : off + incl], linktype)
        off += incl


def decode_record(
    rec: Record,
    *,
    local_macs: frozenset[bytes] = frozenset(),
    ifnames: dict[int, str] | None = None,
    iface: str | None = None,
) -> Packet | None:
    """Decode one record into a :class:`Packet`, or ``None`` if it is not IPv4/IPv6.

    ``local_macs`` lets Ethernet records get a direction (source MAC local ->
    ``out``); Linux cooked records carry their own.  ``ifnames`` maps
    interface indexes (cooked v2) to names.  Never raises for odd frames.
    """
    direction: str | None = None
    name = iface
    data = rec.data
    if rec.linktype == LINKTYPE_ETHERNET:
        try:
            _dst, src, etype, data = parse_ethernet(data)
        except ValueError:
            return None
        if etype not in (ETH_P_IP, ETH_P_IPV6):
            return None
        if local_macs:
            direction = "out" if src in local_macs else "in"
    elif rec.linktype == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        pkttype, _ha, _hl = struct.unpack("!HHH", data[:6])
        etype = struct.unpack("!H", data[14:16])[0]
        if etype not in (ETH_P_IP, ETH_P_IPV6):
            return None
        direction = "out" if pkttype == PACKET_OUTGOING else "in"
        data = data[16:]
    elif rec.linktype == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        etype, _res, ifindex, _hatype, pkttype = struct.unpack("!HHIHB", data[:11])
        if etype not in (ETH_P_IP, ETH_P_IPV6):
            return None
        direction = "out" if pkttype == PACKET_OUTGOING else "in"
        if ifnames is not None:
            name = ifnames.get(ifindex, str(ifindex))
        data = data[20:]
    elif rec.linktype not in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return None
    pkt = parse_ip(data)
    if pkt is None:
        return None
    pkt.timestamp_ns = rec.timestamp_ns
    pkt.timestamp = rec.timestamp_ns / 1e9
    pkt.direction = direction
    pkt.iface = name
    return pkt
