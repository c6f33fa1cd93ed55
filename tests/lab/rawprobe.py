"""Reference prober: send hand-built probes with raw sockets, print what came back.

Independent of brokerpkg's helper, so tests can establish the lab's truth.
Run inside a namespace as ``python3 -m lab.rawprobe`` with a JSON document on
stdin::

    {"probes": [PROBE, ...], "timeout": 2.0, "gap": 0.0, "listen": ["tcp"]}

PROBE fields: ``dst`` (required, numeric), ``proto`` (``icmp`` default, ``udp``,
``tcp``, ``sctp``), ``ttl`` (64), ``tos`` (0), ``id``/``seq`` (icmp), ``sport``/
``dport`` (udp, tcp, sctp), ``size`` (whole IP packet; payload filled with
``pattern``, default 0), ``data`` (hex payload, instead of size), ``flags``
(tcp, default SYN), ``tcp_seq``, ``tag`` (sctp INIT initiate tag), ``vtag``
(sctp common-header tag, default 0).  ``listen`` adds raw sockets for those
protocols (the probes' own protocols are always listened to, and ICMP of the
family).  ``expect`` (optional) ends the wait early once that many packets
were received.  ICMPv6 neighbour discovery and MLD messages are not reported.

Prints one JSON object: ``{"sent": [{"i", "t", "src", "dst", "proto", "hex"}],
"received": [{"t", "hex"}]}`` where ``t`` is wall-clock seconds (kernel receive
timestamps) and ``hex`` the full IP packet (IPv6 headers are rebuilt from the
ancillary data, since IPv6 raw sockets do not return them).  Exits 2 with a
message on stderr for a bad probe description.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time
from typing import Any

from . import packets as P

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
PROTOS = {"icmp": None, "udp": P.PROTO_UDP, "tcp": P.PROTO_TCP, "sctp": P.PROTO_SCTP}


def _source_for(dst: str) -> str:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))
        return str(s.getsockname()[0])


def _proto_number(family: int, name: str) -> int:
    if name == "icmp":
        return P.PROTO_ICMP if family == 4 else P.PROTO_ICMPV6
    if name not in PROTOS:
        raise ValueError(f"unknown proto {name!r}")
    num = PROTOS[name]
    assert num is not None
    return num


def build_transport(probe: dict[str, Any], src: str, family: int) -> bytes:
    """Return the transport bytes (ICMP/UDP/TCP/SCTP header + payload) of ``probe``.

    Raises:
        ValueError: unknown protocol or bad field.
    """
    proto = probe.get("proto", "icmp")
    dst = probe["dst"]
    headers = {"icmp": 8, "udp": 8, "tcp": 20, "sctp": 12 + 20}[proto] if proto in PROTOS else 0
    if "data" in probe:
        data = bytes.fromhex(probe["data"])
    else:
        iplen = 20 if family == 4 else 40
        size = int(probe.get("size", iplen + headers))
        data = bytes([int(probe.get("pattern", 0))]) * max(0, size - iplen - headers)
    if proto == "icmp":
        return P.echo_message(
            family, int(probe.get("id", 1)), int(probe.get("seq", 1)), data, src=src, dst=dst
        )
    if proto == "udp":
        return P.udp_datagram(
            src, dst, int(probe.get("sport", 40000)), int(probe.get("dport", 33434)), data
        )
    if proto == "tcp":
        return P.tcp_segment(
            src,
            dst,
            int(probe.get("sport", 40000)),
            int(probe.get("dport", 80)),
            seq=int(probe.get("tcp_seq", 1000)),
            flags=int(probe.get("flags", P.TCP_SYN)),
            data=data,
        )
    if proto == "sctp":
        chunk = P.sctp_init_chunk(int(probe.get("tag", 0x11223344)), initial_tsn=1)
        return (
            P.sctp_packet(
                int(probe.get("sport", 40000)),
                int(probe.get("dport", 80)),
                int(probe.get("vtag", 0)),
                [chunk],
            )
            + data
        )
    raise ValueError(f"unknown proto {proto!r}")


class Prober:
    """Raw sockets per (family, protocol), opened on demand."""

    def __init__(self) -> None:
        self.socks: dict[tuple[int, int], socket.socket] = {}

    def sock(self, family: int, proto: int) -> socket.socket:
        key = (family, proto)
        if key not in self.socks:
            af = socket.AF_INET if family == 4 else socket.AF_INET6
            s = socket.socket(af, socket.SOCK_RAW, proto)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            if family == 6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            s.setblocking(False)
            self.socks[key] = s
        return self.socks[key]

    def send(self, probe: dict[str, Any]) -> dict[str, Any]:
        dst = probe["dst"]
        family = P.family_of(dst)
        proto = _proto_number(family, probe.get("proto", "icmp"))
        src = _source_for(dst)
        payload = build_transport(probe, src, family)
        s = self.sock(family, proto)
        ttl, tos = int(probe.get("ttl", 64)), int(probe.get("tos", 0))
        if family == 4:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
        t = time.time()
        s.sendto(payload, (dst, 0))
        return {"t": t, "src": src, "dst": dst, "proto": proto, "hex": payload.hex()}

    def recv_all(self, s: socket.socket, family: int, proto: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            try:
                data, anc, _flags, addr = s.recvmsg(65535, 1024)
            except BlockingIOError:
                return out
            t = time.time()
            hlim, tclass, dst = 64, 0, "::"
            for level, ctype, cdata in anc:
                if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    t = sec + nsec / 1e9
                elif level == socket.IPPROTO_IPV6 and ctype == socket.IPV6_HOPLIMIT:
                    hlim = struct.unpack("i", cdata[:4])[0]
                elif level == socket.IPPROTO_IPV6 and ctype == socket.IPV6_TCLASS:
                    tclass = struct.unpack("i", cdata[:4])[0]
                elif level == socket.IPPROTO_IPV6 and ctype == socket.IPV6_PKTINFO:
                    dst = socket.inet_ntop(socket.AF_INET6, cdata[:16])
            if family == 6 and proto == P.PROTO_ICMPV6 and data and data[0] in P.ICMP6_NOISE_TYPES:
                continue
            if family == 6:
                data = P.ipv6_packet(
                    addr[0].split("%")[0], dst, proto, data, hop_limit=hlim, tclass=tclass
                )
            out.append({"t": t, "hex": data.hex()})


def main() -> int:
    """Entry point: read the JSON spec on stdin, probe, print the JSON result."""
    try:
        spec = json.load(sys.stdin)
        probes = spec["probes"]
        timeout = float(spec.get("timeout", 2.0))
        gap = float(spec.get("gap", 0.0))
        listen = list(spec.get("listen", []))
        expect = int(spec.get("expect", 0))
    except (ValueError, KeyError, TypeError) as e:
        print(f"rawprobe: bad input: {e}", file=sys.stderr)
        return 2
    prober = Prober()
    try:
        families = {P.family_of(p["dst"]) for p in probes}
        for fam in families:
            prober.sock(fam, _proto_number(fam, "icmp"))
            for name in listen + [p.get("proto", "icmp") for p in probes]:
                prober.sock(fam, _proto_number(fam, name))
    except (ValueError, KeyError) as e:
        print(f"rawprobe: bad probe: {e}", file=sys.stderr)
        return 2
    sent = []
    received: list[dict[str, Any]] = []
    for i, probe in enumerate(probes):
        try:
            rec = prober.send(probe)
        except (ValueError, KeyError) as e:
            print(f"rawprobe: bad probe {i}: {e}", file=sys.stderr)
            return 2
        rec["i"] = i
        sent.append(rec)
        if gap:
            time.sleep(gap)
    deadline = time.monotonic() + timeout
    by_fd = {s.fileno(): (s, fam, proto) for (fam, proto), s in prober.socks.items()}
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (expect and len(received) >= expect):
            break
        ready, _, _ = select.select(list(by_fd), [], [], left)
        for fd in ready:
            s, fam, proto = by_fd[fd]
            received.extend(prober.recv_all(s, fam, proto))
    for s, fam, proto in by_fd.values():
        received.extend(prober.recv_all(s, fam, proto))
    received.sort(key=lambda r: r["t"])
    json.dump({"sent": sent, "received": received}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
