"""The helper for real, through its pipe, inside the namespace lab.

Every send-probe argument is checked on the wire with a tcpdump capture, every reply
kind is produced by real packets (routers, the scripted responder, local routes),
answers are matched to the right probe under concurrency, forgery, duplication and
lateness, a whole trace leaves as one burst, and the unprivileged ICMP datagram mode
works.  Probes only go to lab addresses (198.18.0.0/15, 2001:db8::/32) and 127.0.0.1.

Reply lines are compared with their round-trip time masked (``helperio.words``);
everything else is an exact expected value.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from helperio import words
from lab import packets as P
from lab.capture import Capture
from lab.topology import Chain, Lab, link_address, link_prefix

FAMILIES = (4, 6)
PROTOCOLS = ("icmp", "udp", "tcp", "sctp")
IP_HEADER = {4: 20, 6: 40}
PROTO_NUMBER = {
    "icmp": {4: P.PROTO_ICMP, 6: P.PROTO_ICMPV6},
    "udp": P.PROTO_UDP,
    "tcp": P.PROTO_TCP,
    "sctp": P.PROTO_SCTP,
}
TIME_EXCEEDED = {4: "icmp-type 11 icmp-code 0", 6: "icmp-type 3 icmp-code 0"}
SCTP_PAD_PARAMETER = 0x8005
MAX_PROBES = 131072  # check-support feature max-probes with raw sockets

privileged = pytest.mark.privileged
pytestmark = privileged


# --------------------------------------------------------------------------- helpers


def ip_word(family: int) -> str:
    return "ip-4" if family == 4 else "ip-6"


def req(token: int, family: int, dst: str, **args: object) -> str:
    """A send-probe line; keyword names use _ for - (local_port -> local-port)."""
    parts = [str(token), "send-probe", ip_word(family), dst]
    for name, value in args.items():
        if value is not None:
            parts += [name.replace("_", "-"), str(value)]
    return " ".join(parts)


def ans(token: int, kind: str, family: int, addr: str, *extra: object) -> str:
    """An expected reply line with its round-trip time masked."""
    return " ".join(
        [str(token), kind, ip_word(family), addr, "round-trip-time", "N", *(str(e) for e in extra)]
    )


def serve(
    lab: Lab,
    helper: str,
    requests: Sequence[str],
    *,
    node: str = "client",
    user: int | None = None,
    timeout: float = 60.0,
) -> dict[int, str]:
    """Run the helper in ``node`` on ``requests`` until it exits; replies by token (masked).

    Fails if it exits non-zero or answers a token twice.
    """
    res = lab.run(
        node,
        [helper],
        user=user,
        check=False,
        timeout=timeout,
        input="".join(f"{r}\n" for r in requests),
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    replies = {int(line.split(" ", 1)[0]): words(line) for line in lines}
    assert len(replies) == len(lines), "a token was answered twice:\n" + res.stdout
    return replies


def rtt_us(line: str) -> int:
    parts = line.split()
    return int(parts[parts.index("round-trip-time") + 1])


class LiveHelper:
    """The helper running in a lab namespace, fed line by line, replies timestamped."""

    def __init__(self, lab: Lab, helper: str, node: str = "client", user: int | None = None):
        self.proc = lab.popen(
            node,
            [helper],
            user=user,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[tuple[float, str]] = []
        self.by_token: dict[int, tuple[float, str]] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            now = time.monotonic()
            line = raw.decode("ascii", "replace").rstrip("\n")
            with self._cond:
                self.lines.append((now, line))
                self.by_token.setdefault(int(line.split(" ", 1)[0]), (now, line))
                self._cond.notify_all()

    def send(self, lines: Sequence[str]) -> float:
        """Write request lines; return the monotonic time just before writing."""
        assert self.proc.stdin is not None
        start = time.monotonic()
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        self.proc.stdin.flush()
        return start

    def wait_tokens(self, tokens: Sequence[int], timeout: float) -> dict[int, tuple[float, str]]:
        """Wait until every token has a reply; return (arrival time, line) per token."""
        deadline = time.monotonic() + timeout
        with self._cond:
            pending = {t for t in tokens if t not in self.by_token}
            scanned = len(self.lines)
            while pending:  # each new line is looked at once, however many are awaited
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no reply for {len(pending)} tokens after {timeout}s,"
                        f" e.g. {sorted(pending)[:5]}"
                    )
                self._cond.wait(left)
                for _, line in self.lines[scanned:]:
                    pending.discard(int(line.split(" ", 1)[0]))
                scanned = len(self.lines)
            return {t: self.by_token[t] for t in tokens}

    def forget(self, tokens: Sequence[int]) -> None:
        """Allow these tokens to be waited for again (after they were reused)."""
        with self._cond:
            for t in tokens:
                self.by_token.pop(t, None)

    def close(self, timeout: float = 30.0) -> int:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        err = self.proc.stderr.read().decode(errors="replace")
        assert rc == 0, err
        return rc


class MergedCapture:
    """Captures on several interfaces of one node, read as one (``select``, ``describe``).

    (A capture on the "any" device sizes its ring by the snap length and loses
    bursts of a few dozen packets, so each interface gets its own.)
    """

    def __init__(self, captures: Sequence[Capture]) -> None:
        self.captures = list(captures)

    @property
    def packets(self) -> list[P.Packet]:
        merged = [p for c in self.captures for p in c.packets]
        return sorted(merged, key=lambda p: p.timestamp or 0.0)

    def select(self, **criteria: Any) -> list[P.Packet]:
        merged = [p for c in self.captures for p in c.select(**criteria)]
        return sorted(merged, key=lambda p: p.timestamp or 0.0)

    def describe(self) -> str:
        return "\n".join(f"{p.iface}: {p.summary()}" for p in self.packets) or "(no packets)"


@contextlib.contextmanager
def capture_all(lab: Lab, node: str, ifaces: Sequence[str]) -> Iterator[MergedCapture]:
    with contextlib.ExitStack() as stack:
        captures = [stack.enter_context(lab.capture(node, iface)) for iface in ifaces]
        yield MergedCapture(captures)


Captured = Capture | MergedCapture


def wire_proto(proto: str, family: int) -> str:
    return ("icmp" if family == 4 else "icmp6") if proto == "icmp" else proto


def probes_out(cap: Captured, dst: str, proto: str, family: int, **fields: Any) -> list[P.Packet]:
    """Probe packets sent to ``dst`` (echo requests, TCP SYNs, UDP, SCTP INITs)."""
    out = []
    for p in cap.select(direction="out", dst=dst, proto=wire_proto(proto, family), **fields):
        if proto == "icmp" and not p.is_echo_request:
            continue
        if proto == "tcp" and p.tcp_flags != P.TCP_SYN:
            continue
        out.append(p)
    return out


def one_probe(cap: Captured, dst: str, proto: str, family: int, **fields: Any) -> P.Packet:
    found = probes_out(cap, dst, proto, family, **fields)
    assert len(found) == 1, f"{len(found)} {proto} probes to {dst} {fields}:\n{cap.describe()}"
    return found[0]


def answers_in(cap: Captured, src: str, proto: str, family: int) -> list[P.Packet]:
    """Packets from ``src`` that answer a probe of ``proto``: echo replies, ICMP errors
    quoting such a probe, TCP and SCTP segments."""
    number = PROTO_NUMBER[proto]
    number = number[family] if isinstance(number, dict) else number
    out = []
    for p in cap.select(direction="in", src=src, version=family):
        if p.is_icmp_error and p.inner is not None and p.inner.proto == number:
            if proto != "icmp" or p.inner.is_echo_request:
                out.append(p)
        elif (proto == "icmp" and p.is_echo_reply) or (
            proto in ("tcp", "sctp") and p.proto == number
        ):
            out.append(p)
    return out


def is_probe(pkt: P.Packet) -> bool:
    """True for what a probe sends first: echo request, UDP, TCP SYN, SCTP INIT."""
    return (
        pkt.is_echo_request
        or pkt.proto == P.PROTO_UDP
        or (pkt.proto == P.PROTO_TCP and pkt.tcp_flags == P.TCP_SYN)
        or (
            pkt.proto == P.PROTO_SCTP
            and bool(pkt.sctp_chunks)
            and pkt.sctp_chunks[0].type == P.SCTP_INIT
        )
    )


def one_answer(cap: Captured, src: str, proto: str, family: int) -> P.Packet:
    found = answers_in(cap, src, proto, family)
    if proto == "tcp":  # a SYN-ACK is followed by the responder's reset of our ACK
        found = found[:1]
    assert len(found) == 1, f"{len(found)} answers from {src} to {proto}:\n{cap.describe()}"
    return found[0]


def sized(packet: P.Packet) -> str:
    """The details words a reply carries for the answer packet as captured."""
    return f"reply-size {packet.length}"


# --------------------------------------------------------------------------- labs


@pytest.fixture(scope="module")
def two_way(privileged: None) -> Iterator[Lab]:
    """client with two interfaces: eth0 -> ra -> server and eth1 -> rb -> server.

    The client's default route goes through ra (eth0); a second default route
    (metric 200) and table 100 go through rb (eth1); ``fwmark 7`` selects table 100.
    The client's eth0 also has 198.18.1.3 / 2001:db8:1::3.
    """
    lab = Lab("twoway")
    client = lab.add_node("client")
    ra = lab.add_node("ra", router=True)
    rb = lab.add_node("rb", router=True)
    server = lab.add_node("server")
    lab.add_link(client, ra, 1)  # client eth0 .1 - ra eth0 .2
    lab.add_link(client, rb, 2)  # client eth1 .1 - rb eth0 .2
    lab.add_link(ra, server, 3)  # ra eth1 .1 - server eth0 .2
    lab.add_link(rb, server, 4)  # rb eth1 .1 - server eth1 .2
    for fam in FAMILIES:
        default = "default" if fam == 4 else "default6"
        lab.add_route(client, default, via=link_address(1, 2, fam), dev="eth0", extra="metric 100")
        lab.add_route(client, default, via=link_address(2, 2, fam), dev="eth1", extra="metric 200")
        lab.add_route(client, default, via=link_address(2, 2, fam), dev="eth1", extra="table 100")
        lab.add_rule(client, "fwmark 7 table 100", fam)
        lab.add_route(rb, link_prefix(3, fam), via=link_address(4, 2, fam), dev="eth1")
        lab.add_route(server, default, via=link_address(3, 1, fam), dev="eth0")
        lab.add_route(server, link_prefix(2, fam), via=link_address(4, 1, fam), dev="eth1")
    try:
        lab.build()
        lab.ip("client", "addr", "add", "198.18.1.3/24", "dev", "eth0")
        lab.ip("client", "addr", "add", "2001:db8:1::3/64", "dev", "eth0", "nodad")
        yield lab
    finally:
        lab.close()


TWO_WAY_SERVER = {4: "198.18.3.2", 6: "2001:db8:3::2"}
TWO_WAY_RA = {4: "198.18.1.2", 6: "2001:db8:1::2"}  # hop 1 through eth0
TWO_WAY_RB = {4: "198.18.2.2", 6: "2001:db8:2::2"}  # hop 1 through eth1
TWO_WAY_ETH1 = {4: "198.18.2.1", 6: "2001:db8:2::1"}  # client eth1's address
SECOND_ADDRESS = {4: "198.18.1.3", 6: "2001:db8:1::3"}  # extra address on client eth0
NOT_LOCAL = {4: "198.18.250.1", 6: "2001:db8:fa::1"}

SERVER_REPLY_ICMP = {
    # (protocol, family): the ICMP type/code the server's kernel answers with
    ("icmp", 4): (0, 0),
    ("icmp", 6): (129, 0),
    ("udp", 4): (3, 3),
    ("udp", 6): (1, 4),
    ("sctp", 4): (3, 2),
    ("sctp", 6): (4, 1),  # no SCTP stack: protocol unreachable
}


# =========================================================================== 1. the wire


def test_ttl_and_tos_on_the_wire(chain: Chain, responder: Any, helper_path: str) -> None:
    cases = [(None, None, 255, 0), (9, 40, 9, 40), (200, 184, 200, 184), (4, 252, 4, 252)]
    requests, expected, checks = [], {}, []
    n = 0
    for fam in FAMILIES:
        for proto in PROTOCOLS:
            for ttl, tos, wire_ttl, wire_tos in cases:
                n += 1
                dst = chain.virtual_target(n, fam)
                requests.append(req(n, fam, dst, protocol=proto, ttl=ttl, tos=tos, timeout=3))
                expected[n] = ans(n, "reply", fam, dst)
                checks.append((dst, proto, fam, wire_ttl, wire_tos))
    with chain.capture("client", "eth0") as cap:
        replies = serve(chain, helper_path, requests)
    assert replies == expected
    for dst, proto, fam, wire_ttl, wire_tos in checks:
        probe = one_probe(cap, dst, proto, fam)
        assert (probe.ttl, probe.tos) == (wire_ttl, wire_tos), probe.summary()


def _check_payload(probe: P.Packet, proto: str, pattern: int, transport: int) -> None:
    """The payload carries ``pattern`` and the checksums are valid."""
    assert probe.checksum_ok is True, probe.summary()
    if proto == "icmp":
        assert probe.payload == bytes([pattern]) * (transport - 8)
    elif proto == "udp":
        assert len(probe.payload) == transport - 8
        # the first two payload bytes steer the checksum; the rest is the pattern
        assert probe.payload[2:] == bytes([pattern]) * (transport - 10)
        assert probe.transport[6:8] != b"\0\0"
    elif proto == "sctp":
        assert probe.sctp_vtag == 0
        assert len(probe.sctp_chunks) == 1
        init = probe.sctp_chunks[0]
        assert init.type == P.SCTP_INIT
        room = transport - 12 - 20
        assert len(init.value) == 16 + room
        if room:
            assert init.value[16:20] == SCTP_PAD_PARAMETER.to_bytes(2, "big") + room.to_bytes(
                2, "big"
            )
            assert init.value[20:] == bytes([pattern]) * (room - 4)


def test_size_and_bit_pattern_on_the_wire(chain: Chain, responder: Any, helper_path: str) -> None:
    # (size requested, bit-pattern) -> whole IP packet length on the wire, per protocol
    minimum = {"icmp": 8, "udp": 10, "sctp": 32}
    requests, expected, checks = [], {}, []
    n = 0
    for fam in FAMILIES:
        hdr = IP_HEADER[fam]
        for proto in ("icmp", "udp", "sctp"):
            least = hdr + minimum[proto]
            cases = [
                (None, None, max(64, least), 0),
                (0, 0xA5, least, 0xA5),
                (least - 1, 0xFF, least, 0xFF),
                (least + 1, 0, least + (4 if proto == "sctp" else 1), 0),
                (101, 0x5A, 104 if proto == "sctp" else 101, 0x5A),
                (1400, 1, 1400, 1),
            ]
            if proto == "sctp":
                cases += [(102, 7, 104, 7), (103, 7, 104, 7), (105, 7, 108, 7)]
            for size, pattern, length, wire_pattern in cases:
                n += 1
                dst = chain.virtual_target(n, fam)
                requests.append(
                    req(n, fam, dst, protocol=proto, size=size, bit_pattern=pattern, timeout=3)
                )
                expected[n] = ans(n, "reply", fam, dst)
                checks.append((dst, proto, fam, length, wire_pattern))
        # tcp ignores size and bit-pattern: the SYN is the kernel's
        for size, pattern in ((None, None), (500, 0xA5), (0, 0xFF)):
            n += 1
            dst = chain.virtual_target(n, fam)
            requests.append(
                req(n, fam, dst, protocol="tcp", size=size, bit_pattern=pattern, timeout=3)
            )
            expected[n] = ans(n, "reply", fam, dst)
            checks.append((dst, "tcp", fam, None, None))  # type: ignore[arg-type]
    with chain.capture("client", "eth0") as cap:
        replies = serve(chain, helper_path, requests)
    assert replies == expected
    syn_lengths: dict[int, set[int]] = {4: set(), 6: set()}
    for dst, proto, fam, length, pattern in checks:
        probe = one_probe(cap, dst, proto, fam)
        if proto == "tcp":
            syn_lengths[fam].add(probe.length)
            assert probe.payload == b""
            continue
        assert probe.length == length, (probe.summary(), length)
        _check_payload(probe, proto, pattern, length - IP_HEADER[fam])
    assert all(len(lengths) == 1 for lengths in syn_lengths.values()), syn_lengths


def test_ports_on_the_wire(chain: Chain, responder: Any, helper_path: str) -> None:
    requests, expected = [], {}
    targets: dict[int, tuple[str, str, int]] = {}

    # token offset -> (protocol, request arguments); local ports differ between the
    # families (an IPv6 wildcard bind also holds the IPv4 port)
    def cases(fam: int) -> dict[int, tuple[str, dict[str, int]]]:
        return {
            1: ("udp", {}),
            2: ("udp", {}),
            3: ("udp", {}),
            4: ("udp", {"port": 5000}),
            5: ("udp", {"local_port": 40000 + fam}),
            6: ("udp", {"local_port": 65535 - fam, "port": 1}),
            7: ("tcp", {}),
            8: ("tcp", {"port": 8080}),
            9: ("tcp", {"local_port": 41000 + fam}),
            10: ("sctp", {}),
            11: ("sctp", {}),
            12: ("sctp", {"port": 9999}),
            13: ("sctp", {"local_port": 42000 + fam, "port": 65535}),
        }

    args = cases(4)
    for fam in FAMILIES:
        for offset, (proto, extra) in cases(fam).items():
            n = fam * 100 + offset
            dst = chain.virtual_target(offset, fam)
            requests.append(req(n, fam, dst, protocol=proto, timeout=3, **extra))
            expected[n] = ans(n, "reply", fam, dst)
            targets[n] = (dst, proto, fam)
    with chain.capture("client", "eth0") as cap:
        replies = serve(chain, helper_path, requests)
    assert replies == expected
    for fam in FAMILIES:
        p = {offset: one_probe(cap, *targets[fam * 100 + offset]) for offset in args}
        default_udp = [p[1].dport, p[2].dport, p[3].dport]
        assert all(33434 <= port <= 65535 for port in default_udp), default_udp  # type: ignore[operator]
        assert len(set(default_udp)) == 3, default_udp  # varies per probe
        assert p[4].dport == 5000
        # without local-port udp uses the port the helper holds bound: one, unprivileged
        assert p[1].sport == p[2].sport == p[3].sport == p[4].sport >= 1024  # type: ignore[operator]
        assert (p[5].sport, p[6].sport, p[6].dport) == (40000 + fam, 65535 - fam, 1)
        assert all(p[k].checksum_ok for k in range(1, 7))
        assert (p[7].dport, p[8].dport, p[9].dport, p[9].sport) == (80, 8080, 80, 41000 + fam)
        assert p[7].sport >= 1024 and p[8].sport >= 1024  # type: ignore[operator]
        assert (p[10].dport, p[11].dport, p[12].dport) == (80, 80, 9999)
        assert (p[13].sport, p[13].dport) == (42000 + fam, 65535)
        sctp_ports = [p[10].sport, p[11].sport, p[12].sport]
        assert all(33434 <= port <= 65535 for port in sctp_ports), sctp_ports  # type: ignore[operator]
        assert len(set(sctp_ports)) == 3, sctp_ports  # one per probe in flight


def test_local_ip_is_the_source_on_the_wire(two_way: Lab, helper_path: str) -> None:
    requests, expected, checks = [], {}, []
    n = 0
    for fam in FAMILIES:
        for proto in PROTOCOLS:
            for source, tos in ((SECOND_ADDRESS[fam], 4), (TWO_WAY_ETH1[fam], 8)):
                n += 1
                requests.append(
                    req(
                        n,
                        fam,
                        TWO_WAY_SERVER[fam],
                        protocol=proto,
                        tos=tos,
                        **{f"local_ip_{fam}": source},
                        timeout=3,
                    )
                )
                expected[n] = ans(n, "reply", fam, TWO_WAY_SERVER[fam])
                checks.append((fam, proto, tos, source))
            n += 1
            requests.append(
                req(
                    n,
                    fam,
                    TWO_WAY_SERVER[fam],
                    protocol=proto,
                    tos=12,
                    **{f"local_ip_{fam}": NOT_LOCAL[fam]},
                    timeout=3,
                )
            )
            expected[n] = f"{n} address-not-available"
    with capture_all(two_way, "client", ("eth0", "eth1")) as cap:
        replies = serve(two_way, helper_path, requests)
    assert replies == expected
    for fam, proto, tos, source in checks:
        probe = one_probe(cap, TWO_WAY_SERVER[fam], proto, fam, tos=tos)
        assert probe.src == source, probe.summary()
        assert proto == "tcp" or probe.checksum_ok, probe.summary()
    # nothing at all left for the refused probes (tos 12), nor from the non-local address
    assert cap.select(direction="out", tos=12) == []
    assert [p for p in cap.packets if NOT_LOCAL[p.version] in (p.src, p.dst)] == []


def test_local_device_leaves_through_that_interface_only(two_way: Lab, helper_path: str) -> None:
    # (tos tag, local-device, ttl) -> (answer kind, answering address, interface it leaves)
    cases = [
        (4, "eth1", 1, "ttl-expired", TWO_WAY_RB, "eth1"),
        (8, "eth0", 1, "ttl-expired", TWO_WAY_RA, "eth0"),
        (12, "eth1", 255, "reply", TWO_WAY_SERVER, "eth1"),
        (16, None, 1, "ttl-expired", TWO_WAY_RA, "eth0"),
    ]
    requests, expected, checks = [], {}, []
    n = 0
    for fam in FAMILIES:
        for proto in PROTOCOLS:
            for tos, device, ttl, kind, answerer, iface in cases:
                n += 1
                requests.append(
                    req(
                        n,
                        fam,
                        TWO_WAY_SERVER[fam],
                        protocol=proto,
                        tos=tos,
                        local_device=device,
                        ttl=ttl,
                        timeout=3,
                    )
                )
                expected[n] = ans(n, kind, fam, answerer[fam])
                checks.append((fam, proto, tos, iface))
    with capture_all(two_way, "client", ("eth0", "eth1")) as cap:
        replies = serve(two_way, helper_path, requests)
    assert replies == expected
    for fam, proto, tos, iface in checks:
        probe = one_probe(cap, TWO_WAY_SERVER[fam], proto, fam, tos=tos)
        assert probe.iface == iface, probe.summary()
        sources = (
            {TWO_WAY_ETH1[fam]}
            if iface == "eth1"
            else {link_address(1, 1, fam), SECOND_ADDRESS[fam]}
        )
        assert probe.src in sources, probe.summary()
        assert proto == "tcp" or probe.checksum_ok, probe.summary()


def test_mark_takes_the_policy_route(two_way: Lab, helper_path: str) -> None:
    # the client has "ip rule add fwmark 7 table 100", table 100 leaving through eth1
    cases = [
        (4, 7, 1, "ttl-expired", TWO_WAY_RB, "eth1"),
        (8, 7, 255, "reply", TWO_WAY_SERVER, "eth1"),
        (12, 8, 1, "ttl-expired", TWO_WAY_RA, "eth0"),
        (16, None, 1, "ttl-expired", TWO_WAY_RA, "eth0"),
        (20, 0, 1, "ttl-expired", TWO_WAY_RA, "eth0"),
    ]
    requests, expected, checks = (
        ["1 check-support feature mark"],
        {1: "1 feature-support support ok"},
        [],
    )
    n = 1
    for fam in FAMILIES:
        for proto in PROTOCOLS:
            for tos, mark, ttl, kind, answerer, iface in cases:
                n += 1
                requests.append(
                    req(
                        n,
                        fam,
                        TWO_WAY_SERVER[fam],
                        protocol=proto,
                        tos=tos,
                        mark=mark,
                        ttl=ttl,
                        timeout=3,
                    )
                )
                expected[n] = ans(n, kind, fam, answerer[fam])
                checks.append((fam, proto, tos, iface))
    with capture_all(two_way, "client", ("eth0", "eth1")) as cap:
        replies = serve(two_way, helper_path, requests)
    assert replies == expected
    for fam, proto, tos, iface in checks:
        probe = one_probe(cap, TWO_WAY_SERVER[fam], proto, fam, tos=tos)
        assert probe.iface == iface, probe.summary()
        assert proto == "tcp" or probe.checksum_ok, probe.summary()


def test_fractional_timeouts_end_on_time(chain: Chain, helper_path: str) -> None:
    hole = chain.add_blackhole(2)
    live = LiveHelper(chain, helper_path)
    timeouts: dict[float, list[int]] = {0.3: [], 0.75: [], 0.0: []}
    lines: list[str] = []
    n = 0
    for fam in FAMILIES:
        for proto in PROTOCOLS:
            for timeout, tokens in timeouts.items():
                n += 1
                tokens.append(n)
                lines.append(req(n, fam, hole.address(fam), protocol=proto, timeout=timeout))
    start = live.send(lines)
    got = live.wait_tokens(list(range(1, n + 1)), 5)
    live.close()
    for timeout, tokens in timeouts.items():
        for token in tokens:
            at, line = got[token]
            assert line == f"{token} no-reply"
            elapsed = at - start
            assert timeout <= elapsed < timeout + 0.12, (line, timeout, elapsed)


# =========================================================================== 2. reply kinds


def test_replies_from_the_destination_with_details(
    chain: Chain, responder: Any, helper_path: str
) -> None:
    server = {fam: chain.server_address(fam) for fam in FAMILIES}
    plain = {fam: chain.virtual_target(1, fam) for fam in FAMILIES}  # syn-ack, init-ack
    other = {fam: chain.virtual_target(2, fam) for fam in FAMILIES}  # rst, abort, ttl 100
    for fam in FAMILIES:
        responder.set(other[fam], tcp="rst", sctp="abort", reply_ttl=100)
    # (token offset, target, protocol, expected words after the address)
    table: list[tuple[int, dict[int, str], str, Callable[[int], str]]] = []
    for i, proto in enumerate(PROTOCOLS):
        if proto == "tcp":
            table.append((i, server, proto, lambda fam: "reply-ttl 61"))
        else:
            table.append(
                (
                    i,
                    server,
                    proto,
                    lambda fam, p=proto: (  # type: ignore[misc]
                        f"reply-ttl 61 icmp-type {SERVER_REPLY_ICMP[p, fam][0]} "
                        f"icmp-code {SERVER_REPLY_ICMP[p, fam][1]}"
                    ),
                )
            )
    table += [
        (10, plain, "tcp", lambda fam: "reply-ttl 61"),
        (11, plain, "sctp", lambda fam: "reply-ttl 61"),
        (12, other, "tcp", lambda fam: "reply-ttl 97"),
        (13, other, "sctp", lambda fam: "reply-ttl 97"),
        (
            14,
            other,
            "icmp",
            lambda fam: f"reply-ttl 97 icmp-type {0 if fam == 4 else 129} icmp-code 0",
        ),
        (
            15,
            other,
            "udp",
            lambda fam: (
                f"reply-ttl 97 icmp-type {3 if fam == 4 else 1} icmp-code {3 if fam == 4 else 4}"
            ),
        ),
    ]
    requests, expected_head = [], {}
    for fam in FAMILIES:
        for offset, target, proto, tail in table:
            n = fam * 100 + offset
            requests.append(req(n, fam, target[fam], protocol=proto, details="yes", timeout=3))
            expected_head[n] = ans(n, "reply", fam, target[fam], tail(fam))
    with chain.capture("client", "eth0") as cap:
        replies = serve(chain, helper_path, requests)
    assert sorted(replies) == sorted(expected_head)
    for fam in FAMILIES:
        for offset, target, proto, _tail in table:
            n = fam * 100 + offset
            answer = one_answer(cap, target[fam], proto, fam)
            if proto == "tcp":
                # the raw TCP socket sees the answer itself: its TTL and size too
                word = "syn-ack" if target is plain else "rst"
                assert replies[n] == f"{expected_head[n]} {sized(answer)} tcp-flags {word}"
                flags = P.TCP_SYN | P.TCP_ACK if word == "syn-ack" else P.TCP_RST | P.TCP_ACK
                assert answer.tcp_flags == flags, answer.summary()
                continue
            # reply-size is the received packet's length, reply-ttl its TTL as received
            assert replies[n] == f"{expected_head[n]} {sized(answer)}"
            assert f"reply-ttl {answer.ttl} " in replies[n]
            if target is server and proto == "icmp":
                assert answer.length == 64
            if target is server and proto in ("udp", "sctp"):  # the whole probe quoted
                probe = one_probe(cap, target[fam], proto, fam)
                assert answer.length == IP_HEADER[fam] + 8 + probe.length
            if proto == "sctp" and target is not server:
                chunk = P.SCTP_INIT_ACK if target is plain else P.SCTP_ABORT
                assert answer.sctp_chunks[0].type == chunk


def test_ttl_expired_from_each_router_with_details(chain: Chain, helper_path: str) -> None:
    requests, expected = [], {}
    n = 0
    meta = {}
    for fam in FAMILIES:
        for proto in PROTOCOLS:
            for ttl in (1, 2, 3):
                n += 1
                requests.append(
                    req(
                        n,
                        fam,
                        chain.server_address(fam),
                        protocol=proto,
                        ttl=ttl,
                        details="yes",
                        timeout=3,
                    )
                )
                expected[n] = ans(
                    n,
                    "ttl-expired",
                    fam,
                    chain.hop_address(ttl, fam),
                    f"reply-ttl {65 - ttl}",
                    TIME_EXCEEDED[fam],
                )
                meta[n] = (fam, proto, ttl)
            n += 1
            requests.append(
                req(n, fam, chain.server_address(fam), protocol=proto, ttl=4, timeout=3)
            )
            expected[n] = ans(n, "reply", fam, chain.server_address(fam))
    with chain.capture("client", "eth0") as cap:
        replies = serve(chain, helper_path, requests)
    for token, (fam, proto, ttl) in meta.items():
        error = one_answer(cap, chain.hop_address(ttl, fam), proto, fam)
        assert error.is_time_exceeded and error.inner is not None and error.inner.ttl == 1
        assert error.ttl == 65 - ttl
        expected[token] = f"{expected[token]} {sized(error)}"
    assert replies == expected


# (ttl, size) of flow FLOW_A's probes and of FLOW_B's one: the wire tells them apart by ttl
FLOW_A, FLOW_B = 7, 8
FLOW_A_PROBES = ((1, 64), (2, 100), (9, 80))
FLOW_B_PROBE = (4, 64)


def hashed_fields(packet: P.Packet) -> tuple[object, ...]:
    """What a per-flow balancer hashes: addresses, protocol, TOS / traffic class, IPv6
    flow label, the first 4 transport bytes (ports; ICMP type, code, checksum)."""
    return (
        packet.src,
        packet.dst,
        packet.proto,
        packet.tos,
        packet.flow_label,
        packet.transport[:4],
    )


def test_a_flow_keeps_every_hashed_field_and_its_probes_are_told_apart_by_their_answers(
    chain: Chain, helper_path: str
) -> None:
    """Probes of one flow share every field per-flow balancers hash, whatever their ttl
    and size; another flow differs in them; answers still reach the right probe (each
    ttl's router answers its own token, matched on what the error quotes).  Before:
    ``flow`` was refused (unknown-argument) and each probe was a flow of its own."""
    hole = chain.add_blackhole(3)
    requests, expected, meta = [], {}, {}
    for fam in FAMILIES:
        for p, proto in enumerate(PROTOCOLS):
            for k, (ttl, size) in enumerate((*FLOW_A_PROBES, FLOW_B_PROBE)):
                n = fam * 100 + p * 10 + k
                flow = FLOW_B if k == len(FLOW_A_PROBES) else FLOW_A
                requests.append(
                    req(
                        n,
                        fam,
                        hole.address(fam),
                        protocol=proto,
                        flow=flow,
                        ttl=ttl,
                        size=size,
                        tos=32,
                        timeout=2,
                    )
                )
                meta[n] = (fam, proto, ttl, flow)
                expected[n] = (
                    ans(n, "ttl-expired", fam, chain.hop_address(ttl, fam))
                    if ttl <= 2
                    else f"{n} no-reply"
                )
    with chain.capture("client", "eth0") as cap:
        replies = serve(chain, helper_path, requests)
    assert replies == expected
    for fam in FAMILIES:
        for proto in PROTOCOLS:
            sent = probes_out(cap, hole.address(fam), proto, fam)
            by_ttl = {packet.ttl: packet for packet in sent}
            assert sorted(by_ttl) == [1, 2, 4, 9], cap.describe()
            flow_a = {hashed_fields(by_ttl[ttl]) for ttl, _ in FLOW_A_PROBES}
            assert len(flow_a) == 1, (proto, fam, flow_a)
            assert hashed_fields(by_ttl[FLOW_B_PROBE[0]]) not in flow_a, (proto, fam)
            if proto != "tcp":  # sizes differ on the wire; tcp ignores size
                assert len({by_ttl[ttl].length for ttl, _ in FLOW_A_PROBES}) == 3
            if fam == 6:
                assert by_ttl[1].flow_label not in (None, 0)
                assert by_ttl[1].flow_label != by_ttl[FLOW_B_PROBE[0]].flow_label


MPLS_HOPS = [
    {"mpls": [[16, 0, 0, 1], [1048575, 7, 1, 255]]},
    {"addr4": "198.18.201.77", "addr6": "2001:db8:c9::77", "mpls": [[24001, 3, 1, 9]]},
    {},
    {"mpls": [[0, 0, 1, 0]]},
]
MPLS_WORDS = ["mpls 16,0,0,1,1048575,7,1,255", "mpls 24001,3,1,9", None, "mpls 0,0,1,0"]


def test_ttl_expired_with_mpls_labels_as_configured(
    chain: Chain, responder: Any, helper_path: str
) -> None:
    requests, expected = [], {}
    for fam in FAMILIES:
        target = chain.virtual_target(3, fam)
        responder.set(target, hops=MPLS_HOPS)
        hops = [
            chain.virtual_hop(1, fam),
            "198.18.201.77" if fam == 4 else "2001:db8:c9::77",
            chain.virtual_hop(3, fam),
            chain.virtual_hop(4, fam),
        ]
        for p, proto in enumerate(PROTOCOLS):
            for i in range(4):
                n = fam * 100 + p * 10 + i
                requests.append(req(n, fam, target, protocol=proto, ttl=4 + i, timeout=3))
                extra = [MPLS_WORDS[i]] if MPLS_WORDS[i] else []
                expected[n] = ans(n, "ttl-expired", fam, hops[i], *extra)
            n = fam * 100 + p * 10 + 4
            requests.append(req(n, fam, target, protocol=proto, ttl=8, timeout=3))
            expected[n] = ans(n, "reply", fam, target)
    assert serve(chain, helper_path, requests) == expected


def test_no_route_with_the_address_and_code(chain: Chain, responder: Any, helper_path: str) -> None:
    codes = {4: [0, 1, 2, 9, 10, 13], 6: [0, 1, 3, 5, 6]}
    requests, expected = [], {}
    i = 0
    for fam in FAMILIES:
        icmp_type = 3 if fam == 4 else 1
        for code in codes[fam]:
            i += 1
            target = chain.virtual_target(i, fam)
            responder.set(target, answer="unreachable", code=code)
            for p, proto in enumerate(PROTOCOLS):
                n = i * 10 + p
                requests.append(req(n, fam, target, protocol=proto, details="yes", timeout=3))
                # protocol unreachable from the destination answers an SCTP probe
                kind = "reply" if (fam, code, proto) == (4, 2, "sctp") else "no-route"
                expected[n] = ans(
                    n, kind, fam, target, "reply-ttl 61", f"icmp-type {icmp_type} icmp-code {code}"
                )
        # unreachable sent by a router in front of the target names the router
        i += 1
        target = chain.virtual_target(i, fam)
        router = "198.18.201.9" if fam == 4 else "2001:db8:c9::9"
        responder.set(target, answer="unreachable", **{f"from{fam}": router})
        for p, proto in enumerate(PROTOCOLS):
            n = i * 10 + p
            requests.append(req(n, fam, target, protocol=proto, timeout=3))
            expected[n] = ans(n, "no-route", fam, router)
    replies = serve(chain, helper_path, requests)
    # reply-size depends on the probe's length (the TCP SYN's is the kernel's): see
    # test_replies_from_the_destination_with_details for its check against the wire
    assert {t: line.rsplit(" reply-size ", 1)[0] for t, line in replies.items()} == expected


def test_no_route_from_unreachable_and_prohibit_routes(
    make_chain: Callable[..., Chain], helper_path: str
) -> None:
    # fresh routers: IPv4 route errors pass a limiter (burst 5 per source and router)
    c = make_chain(2)
    unreachable = c.add_unreachable(2, "unreachable")  # v4 host unreachable, v6 no route
    prohibit = c.add_unreachable(1, "prohibit")  # v4 code 13, v6 code 1
    cases = [(unreachable, 2, {4: 1, 6: 0}), (prohibit, 1, {4: 13, 6: 1})]
    requests, expected = [], {}
    n = 0
    for dest, router, code in cases:
        for fam in FAMILIES:
            for proto in PROTOCOLS:
                n += 1
                requests.append(
                    req(n, fam, dest.address(fam), protocol=proto, details="yes", timeout=3)
                )
                expected[n] = ans(
                    n,
                    "no-route",
                    fam,
                    c.hop_address(router, fam),
                    f"reply-ttl {65 - router}",
                    f"icmp-type {3 if fam == 4 else 1} icmp-code {code[fam]}",
                )
    replies = serve(c, helper_path, requests)
    assert {t: line.rsplit(" reply-size ", 1)[0] for t, line in replies.items()} == expected


def test_local_route_errors_are_bare_and_send_nothing(
    make_chain: Callable[..., Chain], helper_path: str
) -> None:
    c = make_chain(1)
    # errors the client's own kernel gives at send: EHOSTUNREACH/ENETUNREACH, EACCES, EINVAL
    kinds = {
        "unreachable": "no-route",
        "prohibit": "permission-denied",
        "blackhole": "invalid-argument",
    }
    dests = {kind: c.add_special("client", kind) for kind in kinds}
    requests, expected = [], {}
    n = 0
    for kind, word in kinds.items():
        for fam in FAMILIES:
            for proto in PROTOCOLS:
                n += 1
                requests.append(
                    req(n, fam, dests[kind].address(fam), protocol=proto, details="yes", timeout=3)
                )
                expected[n] = f"{n} {word}"
    with c.capture("client", None) as cap:
        replies = serve(c, helper_path, requests)
    assert replies == expected
    assert cap.select(direction="out") == [], cap.describe()


def test_no_reply_from_a_blackhole_and_a_silent_target(
    chain: Chain, responder: Any, helper_path: str
) -> None:
    hole = chain.add_blackhole(2)
    requests, expected = [], {}
    n = 0
    for fam in FAMILIES:
        silent = chain.virtual_target(5, fam)
        responder.set(silent, answer="none")
        for proto in PROTOCOLS:
            for dst in (hole.address(fam), silent):
                n += 1
                requests.append(req(n, fam, dst, protocol=proto, details="yes", timeout=0.5))
                expected[n] = f"{n} no-reply"
    start = time.monotonic()
    assert serve(chain, helper_path, requests) == expected
    assert time.monotonic() - start < 3
    assert len(responder.received(dst=chain.virtual_target(5, 4))) == 4


def test_a_tcp_probe_to_a_silent_host_ends_at_its_own_timeout(
    chain: Chain, helper_path: str
) -> None:
    """Before, the kernel's connect gave up after about 3 s and retransmitted the SYN;
    now the helper's own SYN leaves once and the probe ends at its timeout, shorter or
    longer, as no-reply."""
    hole = chain.add_blackhole(2)
    timeouts = {1: 1, 2: 1, 3: 5, 4: 5}  # token: seconds; 1, 3 IPv4, 2, 4 IPv6
    with chain.capture("client", "eth0") as cap:
        live = LiveHelper(chain, helper_path)
        start = live.send(
            [
                req(t, f, hole.address(f), protocol="tcp", timeout=s)
                for t, s in timeouts.items()
                for f in [4 if t % 2 else 6]
            ]
        )
        got = live.wait_tokens(list(timeouts), 15)
        live.close()
    assert {t: line for t, (_, line) in got.items()} == {t: f"{t} no-reply" for t in timeouts}
    for t, seconds in timeouts.items():
        elapsed = got[t][0] - start
        assert seconds <= elapsed < seconds + 1.5, (t, seconds, elapsed)
    for fam in FAMILIES:
        syns = probes_out(cap, hole.address(fam), "tcp", fam)
        assert len(syns) == 2 and all(p.tcp_flags == P.TCP_SYN for p in syns), cap.describe()


def test_twenty_thousand_tcp_probes_in_flight_hold_few_descriptors(
    make_chain: Callable[..., Chain], helper_path: str, record_property: Callable[..., None]
) -> None:
    """Before: a connected socket per TCP probe (14,730 descriptors with 20,000 in
    flight, and 712 refused).  Now every SYN leaves from the raw socket: fewer than 64
    descriptors, none refused, and each probe ends no-reply at its own timeout."""
    c = make_chain(1, tag="tcpfd")
    hole = c.add_blackhole(1)
    count, timeout = 20000, 10.0
    live = LiveHelper(c, helper_path)
    t0 = live.send(
        [
            req(
                10 + i,
                4 if i % 2 else 6,
                hole.address(4 if i % 2 else 6),
                protocol="tcp",
                timeout=timeout,
            )
            for i in range(count)
        ]
        + ["1 check-support feature tcp"]  # answered once every probe above has left
    )
    assert live.wait_tokens([1], timeout)[1][1] == "1 feature-support support ok"
    in_flight_by = time.monotonic() - t0
    descriptors = len(os.listdir(f"/proc/{live.proc.pid}/fd"))
    early = [line for _, line in live.lines if not line.startswith("1 ")]
    assert in_flight_by < timeout - 1, f"sending took {in_flight_by:.1f} s: cannot test"
    assert early == [], early[:5]
    assert descriptors < 64, descriptors
    tokens = [10 + i for i in range(count)]
    ended = live.wait_tokens(tokens, timeout + 30)
    live.close()
    assert all(ended[t][1] == f"{t} no-reply" for t in tokens)
    assert min(at for at, _ in ended.values()) - t0 >= timeout
    record_property("tcp_in_flight_descriptors", descriptors)


def test_address_in_use_for_a_local_port_already_probing(chain: Chain, helper_path: str) -> None:
    """Two sctp probes in flight from one local-port: the second is address-in-use
    (the port is their identity).  Two tcp probes share it, as udp ones do: their
    sequence numbers tell them apart."""
    hole = chain.add_blackhole(2)
    live = LiveHelper(chain, helper_path)
    first: list[int] = []
    lines: list[str] = []
    for fam in FAMILIES:
        for proto, port in (("tcp", 41000 + fam), ("sctp", 42000 + fam)):
            t = len(lines) + 1
            lines.append(
                req(t, fam, hole.address(fam), protocol=proto, local_port=port, timeout=0.5)
            )
            lines.append(
                req(t + 1, fam, hole.address(fam), protocol=proto, local_port=port, timeout=0.5)
            )
            first.append(t)
    live.send(lines)
    got = live.wait_tokens(list(range(1, len(lines) + 1)), 5)
    tcp = {t for t, line in enumerate(lines, 1) if "protocol tcp" in line}
    assert {t: line for t, (_, line) in got.items()} == {
        t: f"{t} no-reply" if t in first or t in tcp else f"{t} address-in-use" for t in got
    }
    # the port is free again once the first probe has ended (no TIME_WAIT left behind)
    live.forget(first)
    live.send([lines[t - 1] for t in first])
    again = live.wait_tokens(first, 5)
    live.close()
    assert {t: line for t, (_, line) in again.items()} == {t: f"{t} no-reply" for t in first}


def test_probes_exhausted_then_everything_recovers(
    make_chain: Callable[..., Chain], helper_path: str, record_property: Callable[..., None]
) -> None:
    c = make_chain(1)
    hole = c.add_blackhole(1)
    live = LiveHelper(c, helper_path)
    live.send(["1 check-support feature max-probes"])
    assert live.wait_tokens([1], 5)[1][1] == f"1 feature-support support {MAX_PROBES}"
    timeout = 5.0
    t0 = live.send(
        [
            req(10 + i, 4 if i % 2 else 6, hole.address(4 if i % 2 else 6), timeout=timeout)
            for i in range(MAX_PROBES)
        ]
    )
    fed = time.monotonic() - t0
    assert fed < timeout - 1, f"feeding {MAX_PROBES} probes took {fed:.1f}s: cannot test"
    live.send([req(2, 4, hole.address(4), timeout=1), req(3, 6, "::1", protocol="udp")])
    first = live.wait_tokens([2, 3], 5)
    assert [first[2][1], first[3][1]] == ["2 probes-exhausted", "3 probes-exhausted"]
    assert first[3][0] - t0 < timeout, "the table was not full any more"
    tokens = [10 + i for i in range(MAX_PROBES)]
    ended = live.wait_tokens(tokens, timeout + 30)
    assert all(ended[t][1] == f"{t} no-reply" for t in tokens)
    last = max(at for at, _ in ended.values())
    assert timeout <= last - t0 < timeout + fed + 3
    full_cycle = time.monotonic() - t0

    # per-protocol identities: 65535 UDP checksums, 32102 SCTP source ports
    udp = [
        req(200000 + i, 4, hole.address(4), protocol="udp", timeout=timeout) for i in range(65535)
    ]
    sctp = [
        req(300000 + i, 6, hole.address(6), protocol="sctp", timeout=timeout)
        for i in range(65536 - 33434)
    ]
    t1 = live.send(udp + sctp)
    live.send(
        [
            req(4, 6, hole.address(6), protocol="udp"),
            req(5, 4, hole.address(4), protocol="sctp"),
            req(6, 4, hole.address(4), protocol="icmp", timeout=0.2),
        ]
    )
    more = live.wait_tokens([4, 5, 6], 10)
    assert [more[t][1] for t in (4, 5, 6)] == [
        "4 probes-exhausted",
        "5 probes-exhausted",
        "6 no-reply",
    ]
    assert more[5][0] - t1 < timeout, "the first UDP probes had ended already"
    rest = live.wait_tokens(
        [200000 + i for i in range(65535)] + [300000 + i for i in range(65536 - 33434)], 40
    )
    assert all(line.endswith(" no-reply") for _, line in rest.values())
    live.send([req(7, 4, "127.0.0.1", timeout=2)])
    assert live.wait_tokens([7], 5)[7][1].startswith("7 reply ip-4 127.0.0.1 round-trip-time ")
    live.close()
    assert len(live.lines) == 1 + MAX_PROBES + 2 + 65535 + 32102 + 3 + 1
    record_property("probes_exhausted_cycle_s", round(full_cycle, 2))
    record_property("identities_cycle_s", round(time.monotonic() - t1, 2))


# =========================================================================== 3. matching


def test_two_helpers_at_once_each_get_exactly_their_own_answers(
    chain: Chain, responder: Any, helper_path: str
) -> None:
    per = 24  # probes per protocol and family and helper
    paths = {}
    for fam in FAMILIES:
        target = chain.virtual_target(7, fam)
        responder.set(target, hops=4)
        paths[fam] = [*chain.path(fam)[:3], *(chain.virtual_hop(i, fam) for i in range(1, 5))]
    plans: list[tuple[list[str], dict[int, str]]] = []
    for shift in (0, 3):
        requests, expected = [], {}
        for fam in FAMILIES:
            target = chain.virtual_target(7, fam)
            for p, proto in enumerate(PROTOCOLS):
                for i in range(per):
                    n = fam * 1000 + p * 100 + i
                    ttl = 1 + (i + shift) % 9
                    requests.append(req(n, fam, target, protocol=proto, ttl=ttl, timeout=3))
                    if ttl <= 7:
                        expected[n] = ans(n, "ttl-expired", fam, paths[fam][ttl - 1])
                    else:
                        expected[n] = ans(n, "reply", fam, target)
        plans.append((requests, expected))
    helpers = [LiveHelper(chain, helper_path) for _ in plans]
    for live, (requests, _) in zip(helpers, plans, strict=True):
        live.send(requests)
    for live in helpers:
        live.proc.stdin.close()  # type: ignore[union-attr]
    for live, (_, expected) in zip(helpers, plans, strict=True):
        assert live.proc.wait(30) == 0
        live._reader.join(5)
        got = {int(line.split()[0]): words(line) for _, line in live.lines}
        assert len(got) == len(live.lines) == len(expected)
        assert got == expected
    # every probe with a TTL of 4 or more reached the responder exactly once
    reaching = sum(1 for shift in (0, 3) for i in range(per) if 1 + (i + shift) % 9 >= 4)
    for fam in FAMILIES:
        probes = [
            e for e in responder.received(dst=chain.virtual_target(7, fam)) if is_probe(e.packet)
        ]
        assert len(probes) == len(PROTOCOLS) * reaching


FORGES = ["wrong-id", "wrong-seq", "wrong-port", "wrong-dst", "wrong-src", "unrelated"]


def _forge_cases(
    chain: Chain,
    responder: Any,
    protocols: Sequence[str],
    forges: Sequence[str],
) -> tuple[list[str], dict[int, str]]:
    requests, expected = [], {}
    i = 0
    for fam in FAMILIES:
        for forge in forges:
            for forge_type in ("time-exceeded", "unreachable"):
                for answer in ("none", "normal"):
                    i += 1
                    target = chain.virtual_target(i, fam)
                    responder.set(target, forge=[forge], forge_type=forge_type, answer=answer)
                    for p, proto in enumerate(protocols):
                        if forge.startswith("reply-") and proto != "icmp":
                            continue
                        n = i * 10 + p
                        requests.append(req(n, fam, target, protocol=proto, timeout=1))
                        expected[n] = (
                            f"{n} no-reply" if answer == "none" else ans(n, "reply", fam, target)
                        )
    return requests, expected


def test_forged_and_unrelated_errors_never_complete_a_probe(
    chain: Chain, responder: Any, helper_path: str
) -> None:
    requests, expected = _forge_cases(
        chain, responder, ("icmp", "udp", "sctp"), [*FORGES, "reply-wrong-id", "reply-wrong-seq"]
    )
    tcp_requests, tcp_expected = _forge_cases(chain, responder, ("tcp",), FORGES)
    # the two case lists script different targets for the same number: run them apart
    assert serve(chain, helper_path, requests) == expected
    assert serve(chain, helper_path, tcp_requests) == tcp_expected
    assert len(responder.sent(kind="forged-wrong-src")) > 0


def test_duplicated_answers_give_one_reply_line(
    chain: Chain, responder: Any, helper_path: str
) -> None:
    hole = chain.add_blackhole(2)
    requests, expected = [], {}
    for fam in FAMILIES:
        target = chain.virtual_target(9, fam)
        responder.set(target, duplicate=3, hops=1)
        for p, proto in enumerate(PROTOCOLS):
            n = fam * 10 + p
            requests.append(req(n, fam, target, protocol=proto, timeout=2))
            expected[n] = ans(n, "reply", fam, target)
            requests.append(req(n + 100, fam, target, protocol=proto, ttl=4, timeout=2))
            expected[n + 100] = ans(n + 100, "ttl-expired", fam, chain.virtual_hop(1, fam))
    # a probe that keeps the helper running while the copies arrive
    requests.append(req(999, 4, hole.address(4), timeout=1))
    expected[999] = "999 no-reply"
    assert serve(chain, helper_path, requests) == expected
    # each answer went out four times
    for kind in ("time-exceeded", "echo-reply", "port-unreachable", "syn-ack", "init-ack"):
        assert len(responder.sent(kind=kind)) == 4 * (8 if kind == "time-exceeded" else 2), kind


def test_an_answer_after_the_timeout_is_dropped(
    chain: Chain, responder: Any, helper_path: str
) -> None:
    delay = 0.6
    lines = []
    for fam in FAMILIES:
        for p, proto in enumerate(PROTOCOLS):
            target = chain.virtual_target(10 + p, fam)
            responder.set(target, delay=delay)
            lines.append((fam * 10 + p, fam, target, proto))
    live = LiveHelper(chain, helper_path)
    live.send([req(n, fam, t, protocol=proto, timeout=0.3) for n, fam, t, proto in lines])
    tokens = [n for n, *_ in lines]
    late = live.wait_tokens(tokens, 5)
    assert {t: line for t, (_, line) in late.items()} == {t: f"{t} no-reply" for t in tokens}
    # the same tokens again at once: the late answers to the first probes arrive while
    # these are in flight and must not complete them
    live.forget(tokens)
    live.send([req(n, fam, t, protocol=proto, timeout=3) for n, fam, t, proto in lines])
    again = live.wait_tokens(tokens, 5)
    responder.wait_sent(2 * len(lines), timeout=5)
    time.sleep(0.2)
    live.close()
    for n, fam, target, _proto in lines:
        assert words(again[n][1]) == ans(n, "reply", fam, target)
        assert delay * 1e6 <= rtt_us(again[n][1]) < (delay + 0.25) * 1e6, again[n][1]
    assert len(live.lines) == 2 * len(lines)


def test_round_trip_times_agree_with_the_delay_and_the_wire(
    chain: Chain, responder: Any, helper_path: str
) -> None:
    delay = 0.2
    cases = []
    for fam in FAMILIES:
        for p, proto in enumerate(PROTOCOLS):
            target = chain.virtual_target(20 + p, fam)
            responder.set(target, delay=delay)
            cases.append((fam * 10 + p, fam, target, proto))
    # The first router's neighbour entries exist before the capture, so that no probe
    # waits in a neighbour queue: each leaves within the call that sends it.
    first_hops = {fam: chain.hop_address(1, fam) for fam in FAMILIES}
    assert serve(chain, helper_path, [req(f, f, first_hops[f]) for f in FAMILIES]) == {
        f: ans(f, "reply", f, first_hops[f]) for f in FAMILIES
    }
    with chain.capture("client", "eth0") as cap:
        replies = chain.run(
            "client",
            [helper_path],
            input="".join(
                req(n, fam, t, protocol=proto, timeout=3) + "\n" for n, fam, t, proto in cases
            ),
        )
    lines = {int(line.split()[0]): line for line in replies.stdout.splitlines()}
    stamp_gaps = []
    for i, (n, fam, target, proto) in enumerate(cases):
        assert words(lines[n]) == ans(n, "reply", fam, target)
        rtt = rtt_us(lines[n]) / 1e6
        probe = one_probe(cap, target, proto, fam)
        answer = one_answer(cap, target, proto, fam)
        assert probe.timestamp is not None and answer.timestamp is not None
        on_wire = answer.timestamp - probe.timestamp
        [rx] = [e for e in responder.received(dst=target) if is_probe(e.packet)]
        [tx] = responder.sent(rx=rx.n)
        held = (tx.ts_ns - rx.ts_ns) / 1e9  # kernel stamps: delay + the responder's lag
        assert held >= delay
        # The responder's stamps lie inside the client's: the answer timed is the one held
        # (the path between them, three routers each way, is quick even on a busy machine).
        assert held - 0.000001 <= on_wire < held + 0.05, (proto, fam, held, on_wire)
        if proto != "tcp":
            # Kernel timestamps at both ends: the helper's transmit stamp is taken as the
            # probe is queued to the device, a few microseconds before the capture's
            # (which a loaded machine can stretch: the test's last line bounds most of
            # them); the receive stamp is the capture's own.
            assert on_wire - 0.000002 <= rtt < on_wire + 0.05, (proto, fam, rtt, on_wire)
            stamp_gaps.append(rtt - on_wire)
            continue
        # TCP is timed by the helper's clock (brokerpkg-helper(8)): read before the
        # connect, so after the previous probe of this run (the line before) left, and on
        # seeing the outcome, before the helper resets the connection.  How long a busy
        # machine takes to wake the helper is not bounded; what the wire shows around the
        # two readings is.
        _, previous_family, previous_target, previous_proto = cases[i - 1]
        assert previous_family == fam
        before = one_probe(cap, previous_target, previous_proto, fam).timestamp
        resets = [
            pkt
            for pkt in cap.select(direction="out", dst=target, proto="tcp", version=fam)
            if (pkt.tcp_flags or 0) & P.TCP_RST
        ]
        assert resets, f"the helper did not reset the connection to {target}:\n{cap.describe()}"
        after = resets[0].timestamp
        assert before is not None and after is not None
        assert on_wire - 0.000002 <= rtt <= after - before + 0.000002, (
            fam,
            rtt,
            on_wire,
            after - before,
        )
    # Interrupting the microseconds between a probe's two transmit stamps takes a loaded
    # machine's bad luck; doing it to most of the probes of one run would take a helper
    # that times probes by something else.
    assert statistics.median(stamp_gaps) < 0.00002, stamp_gaps


# =========================================================================== 4. many TTLs


def test_a_ten_router_trace_as_one_burst(
    make_chain: Callable[..., Chain], helper_path: str, record_property: Callable[..., None]
) -> None:
    c = make_chain(10)
    timeout = 3
    requests, expected = [], {}
    for fam in FAMILIES:
        path = c.path(fam)  # hops 1..10 then the server (hop 11)
        for p, proto in enumerate(PROTOCOLS):
            for ttl in range(1, 13):
                n = fam * 100 + p * 20 + ttl
                requests.append(
                    req(n, fam, c.server_address(fam), protocol=proto, ttl=ttl, timeout=timeout)
                )
                kind = "ttl-expired" if ttl <= 10 else "reply"
                expected[n] = ans(n, kind, fam, path[min(ttl, 11) - 1])
    start = time.monotonic()
    replies = serve(c, helper_path, requests)
    elapsed = time.monotonic() - start
    assert replies == expected
    assert elapsed < 2.0, f"{elapsed:.2f}s for {len(requests)} probes of {timeout}s"
    record_property("trace_burst_s", round(elapsed, 3))
    reference = c.trace(4, max_ttl=12)
    assert reference == [c.path(4)[min(t, 11) - 1] for t in range(1, 13)]


# =========================================================================== 5. datagram mode


@pytest.fixture(scope="module")
def ping_chain(privileged: None) -> Iterator[Chain]:
    """A chain whose client lets every group open ICMP datagram sockets."""
    c = Chain(3, responder=True, tag="ping")
    try:
        c.build()
        c.start_responder()
        c.open_ping_group("client")
        yield c
    finally:
        c.close()


def test_datagram_mode_without_privilege(ping_chain: Chain, unprivileged_copy: Any) -> None:
    c = ping_chain
    helper = str(unprivileged_copy.plain_helper)
    features = {
        "sockets": "datagram",
        "icmp": "ok",
        "udp": "no",
        "tcp": "no",
        "sctp": "no",
        "ip-4": "ok",
        "ip-6": "ok",
        "mark": "no",
        "flow": "no",
        "max-probes": "65536",
    }
    requests = [f"{i} check-support feature {name}" for i, name in enumerate(features, 1)]
    expected = {
        i: f"{i} feature-support support {value}" for i, value in enumerate(features.values(), 1)
    }
    for fam in FAMILIES:
        unreachable = c.virtual_target(30, fam)
        c.responder.set(unreachable, answer="unreachable", code=13 if fam == 4 else 1)
        for rnd in range(3):  # bursts: every router's error arrives while others are sent
            for ttl in (1, 2, 3, 4, 255):
                n = fam * 1000 + rnd * 100 + ttl
                requests.append(req(n, fam, c.server_address(fam), ttl=ttl, timeout=3))
                if ttl <= 3:
                    expected[n] = ans(n, "ttl-expired", fam, c.hop_address(ttl, fam))
                else:
                    expected[n] = ans(n, "reply", fam, c.server_address(fam))
        n = fam * 1000 + 900
        requests.append(req(n, fam, unreachable, details="yes", timeout=3))
        expected[n] = ans(
            n,
            "no-route",
            fam,
            unreachable,
            f"icmp-type {3 if fam == 4 else 1} icmp-code {13 if fam == 4 else 1}",
        )
        n += 1
        requests.append(req(n, fam, c.server_address(fam), details="yes", timeout=3))
        expected[n] = ans(
            n,
            "reply",
            fam,
            c.server_address(fam),
            "reply-ttl 61",
            f"icmp-type {0 if fam == 4 else 129} icmp-code 0 reply-size 64",
        )
        for p, proto in enumerate(("udp", "tcp", "sctp")):
            n = fam * 1000 + 950 + p
            requests.append(req(n, fam, c.server_address(fam), protocol=proto, timeout=3))
            expected[n] = f"{n} invalid-argument reason protocol-not-supported"
        # the kernel chooses a datagram socket's echo id: no flow can be kept
        n = fam * 1000 + 960
        requests.append(req(n, fam, c.server_address(fam), flow=1, timeout=3))
        expected[n] = f"{n} invalid-argument reason flow-not-supported"
    with c.capture("client", "eth0") as cap:
        replies = serve(c, helper, requests, user=65534)
    assert replies == expected
    # the refused protocols sent nothing
    assert [p for p in cap.select(direction="out") if not p.is_icmp] == []
