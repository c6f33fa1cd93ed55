"""brokerpkg.Session driving the real helper inside the namespace lab.

The helper runs in the chain's client namespace (``Session(command=ip netns exec ...)``);
results are compared field by field with what the lab is known to answer: the server
and routers of the chain, the scripted responder's targets, virtual hops and MPLS labels,
blackholes and local routes.  Only lab addresses and loopback are probed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lab import packets as P
from lab.topology import Chain

from brokerpkg import Mpls, Session
from brokerpkg.protocol import ProbeResult  # Session's (brokerpkg.ProbeResult is mtrpacket's)

pytestmark = pytest.mark.privileged

LIMIT = 30.0
FAMILIES = (4, 6)
PROTOCOLS = ("icmp", "udp", "tcp", "sctp")
SERVER_ICMP = {  # the server kernel's answer to each protocol: ICMP type, code
    ("icmp", 4): (0, 0),
    ("icmp", 6): (129, 0),
    ("udp", 4): (3, 3),
    ("udp", 6): (1, 4),
    ("sctp", 4): (3, 2),
    ("sctp", 6): (4, 1),
}


def port_of(protocol: str) -> int | None:
    return 80 if protocol in ("tcp", "sctp") else None


def untimed(result: ProbeResult) -> ProbeResult:
    """The result without its round-trip time (checked separately)."""
    assert result.time_ms is None or 0 < result.time_ms < 5000, result
    return result._replace(time_ms=None)


@pytest.fixture
async def session(chain: Chain, helper_path: str) -> AsyncIterator[Session]:
    s = Session(command=chain.exec_argv("client", [helper_path]))
    async with asyncio.timeout(LIMIT), s:
        yield s


async def test_every_protocol_and_family_with_details(chain: Chain, session: Session) -> None:
    cases = [(fam, proto) for fam in FAMILIES for proto in PROTOCOLS]
    results = await asyncio.gather(
        *(
            session.probe(chain.server_address(fam), protocol=proto, details=True, timeout=3)
            for fam, proto in cases
        )
    )
    for (fam, proto), result in zip(cases, results, strict=True):
        server = chain.server_address(fam)
        icmp = SERVER_ICMP.get((proto, fam), (None, None))
        size = None
        if proto == "icmp":
            size = 64
        elif proto == "udp":
            size = {4: 20, 6: 40}[fam] + 8 + 64
        elif proto == "sctp":
            size = {4: 20, 6: 40}[fam] + 8 + max(64, {4: 52, 6: 72}[fam])
        elif proto == "tcp":  # the RST, read on the raw socket as ICMP answers are
            size = {4: 20, 6: 40}[fam] + 20
        assert untimed(result) == ProbeResult(
            success=True,
            result="reply",
            time_ms=None,
            responder=server,
            mpls=[],
            target=server,
            ttl=255,
            protocol=proto,
            port=port_of(proto),
            reply_ttl=61,
            icmp_type=icmp[0],
            icmp_code=icmp[1],
            reply_size=size,
        ), (fam, proto)
        assert result.time_ms is not None and result.time_ms > 0


async def test_ttl_expired_with_mpls_labels(chain: Chain, responder: Any, session: Session) -> None:
    hops = [{"mpls": [[16, 0, 0, 1], [1048575, 7, 1, 255]]}, {"mpls": [[24001, 3, 1, 9]]}, {}]
    labels = [[Mpls(16, 0, False, 1), Mpls(1048575, 7, True, 255)], [Mpls(24001, 3, True, 9)], []]
    cases = []
    for fam in FAMILIES:
        responder.set(chain.virtual_target(4, fam), hops=hops)
        for proto in PROTOCOLS:
            for ttl in range(1, 8):
                cases.append((fam, proto, ttl))
    results = await asyncio.gather(
        *(
            session.probe(
                chain.virtual_target(4, fam), protocol=proto, ttl=ttl, details=True, timeout=3
            )
            for fam, proto, ttl in cases
        )
    )
    for (fam, proto, ttl), result in zip(cases, results, strict=True):
        target = chain.virtual_target(4, fam)
        common: dict[str, Any] = {
            "time_ms": None,
            "target": target,
            "ttl": ttl,
            "protocol": proto,
            "port": port_of(proto),
        }
        if ttl <= 6:
            if ttl <= 3:
                hop, mpls, reply_ttl = chain.hop_address(ttl, fam), [], 65 - ttl
            else:
                hop, mpls, reply_ttl = chain.virtual_hop(ttl - 3, fam), labels[ttl - 4], 61
            assert untimed(result)._replace(reply_size=None) == ProbeResult(
                success=False,
                result="ttl-expired",
                responder=hop,
                mpls=mpls,
                reply_ttl=reply_ttl,
                icmp_type=11 if fam == 4 else 3,
                icmp_code=0,
                **common,
            )
            assert result.reply_size is not None and result.reply_size > 28
        else:
            assert (result.success, result.result, result.responder, result.mpls) == (
                True,
                "reply",
                target,
                [],
            )


async def test_no_route_no_reply_and_refused_results(
    chain: Chain, responder: Any, session: Session
) -> None:
    hole = chain.add_blackhole(2)
    prohibited = chain.add_special("client", "prohibit")  # EACCES from the client's kernel
    for fam in FAMILIES:
        responder.set(
            chain.virtual_target(6, fam), answer="unreachable", code=13 if fam == 4 else 1
        )
    start = time.monotonic()
    for fam in FAMILIES:
        target = chain.virtual_target(6, fam)
        unreachable, silent, refused = await asyncio.gather(
            session.probe(target, details=True, timeout=3),
            session.probe(hole.address(fam), protocol="udp", timeout=0.3),
            session.probe(prohibited.address(fam), protocol="tcp", timeout=3),
        )
        assert untimed(unreachable)._replace(reply_size=None) == ProbeResult(
            success=False,
            result="no-route",
            time_ms=None,
            responder=target,
            mpls=[],
            target=target,
            ttl=255,
            protocol="icmp",
            reply_ttl=61,
            icmp_type=3 if fam == 4 else 1,
            icmp_code=13 if fam == 4 else 1,
        )
        assert unreachable.reply_size == {4: 20, 6: 40}[fam] + 8 + 64
        assert silent == ProbeResult(
            success=False,
            result="no-reply",
            time_ms=None,
            responder=None,
            mpls=[],
            target=hole.address(fam),
            ttl=255,
            protocol="udp",
        )
        assert refused == ProbeResult(
            success=False,
            result="permission-denied",
            time_ms=None,
            responder=None,
            mpls=[],
            target=prohibited.address(fam),
            ttl=255,
            protocol="tcp",
            port=80,
        )
    assert time.monotonic() - start < 2.0  # the fractional timeout was used, not 1 s


async def test_localhost_is_resolved_and_probed(session: Session) -> None:
    first = socket.getaddrinfo("localhost", None, type=socket.SOCK_DGRAM)[0][4][0]
    result = await session.probe("localhost", timeout=2)
    assert (result.success, result.responder, result.target) == (True, first, first)
    four = await session.probe("localhost", ip_version=4, protocol="udp", timeout=2)
    assert (four.success, four.result, four.responder, four.target) == (
        True,
        "reply",
        "127.0.0.1",
        "127.0.0.1",
    )


async def test_options_reach_the_wire(chain: Chain, responder: Any, session: Session) -> None:
    target = chain.virtual_target(8, 4)
    with chain.capture("client", "eth0") as cap:
        udp, tcp = await asyncio.gather(
            session.probe(
                target,
                protocol="udp",
                ttl=7,
                tos=40,
                size=100,
                bit_pattern=0xA5,
                port=5000,
                local_port=40123,
                timeout=3,
            ),
            session.probe(target, protocol="tcp", ttl=9, tos=184, port=8080, timeout=3),
        )
    assert (udp.success, tcp.success, udp.port, tcp.port) == (True, True, 5000, 8080)
    [u] = cap.select(direction="out", dst=target, proto="udp")
    assert (u.ttl, u.tos, u.length, u.sport, u.dport) == (7, 40, 100, 40123, 5000)
    assert u.payload[2:] == b"\xa5" * 70 and u.checksum_ok
    [t] = cap.select(direction="out", dst=target, proto="tcp", tcp_flags=P.TCP_SYN)
    assert (t.ttl, t.tos, t.dport) == (9, 184, 8080)


async def test_a_thousand_concurrent_probes(chain: Chain, responder: Any, session: Session) -> None:
    for fam in FAMILIES:
        responder.set(chain.virtual_target(9, fam), hops=2)
    assert session.max_in_flight >= 1000
    cases = []
    for i in range(1000):
        fam = 4 if i % 2 else 6
        proto = PROTOCOLS[(i // 2) % 4]
        target = chain.virtual_target(9, fam) if i % 3 else chain.server_address(fam)
        ttl = 1 + (i // 8) % 7
        cases.append((fam, proto, target, ttl))

    def expected(fam: int, proto: str, target: str, ttl: int) -> tuple[str, str]:
        if ttl <= 3:
            return "ttl-expired", chain.hop_address(ttl, fam)
        if target == chain.server_address(fam) or ttl >= 6:
            return "reply", target
        return "ttl-expired", chain.virtual_hop(ttl - 3, fam)

    start = time.monotonic()
    results = await asyncio.gather(
        *(
            session.probe(target, protocol=proto, ttl=ttl, timeout=5)
            for fam, proto, target, ttl in cases
        )
    )
    elapsed = time.monotonic() - start
    got = [(r.result, r.responder) for r in results]
    assert got == [expected(*case) for case in cases]
    assert session.in_flight == 0
    assert elapsed < 5.0
