"""traceroute (brokerpkg.trace): every TTL in flight at once, stop at the destination.

The expected paths are the lab's truth: the chain's hop addresses (``chain.path``), the
scripted responder's virtual hops (addresses, MPLS labels, silent hops, delays) and an
ECMP lab whose second hop is two routers (UDP flows spread over both).  Probes go only
to lab addresses (198.18.0.0/15, 2001:db8::/32).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import pytest
from lab import Chain, Lab, link_address, link_prefix, virtual_hop, virtual_target

from brokerpkg import (
    DestinationUnreachable,
    Hop,
    Mpls,
    NameResolver,
    NoReplyError,
    ProgressEvent,
    Session,
    TimeExceeded,
    TraceResult,
    sync,
    traceroute,
)
from brokerpkg.ping import Answer
from brokerpkg.protocol import ProbeResult  # Session's; brokerpkg.ProbeResult is mtrpacket's
from brokerpkg.trace import lookup_names, make_hop, names_for

FAMILIES = pytest.mark.parametrize("family", [4, 6])
PROTOCOLS = pytest.mark.parametrize("protocol", ["icmp", "udp", "tcp", "sctp"])
LIMIT = 30.0
NOWHERE = "/nonexistent/brokerpkg-helper"
LABELS = [[16, 0, 0, 1], [24001, 5, 1, 255]]


@pytest.fixture
async def lab_session(chain: Chain, helper_path: str) -> AsyncIterator[Session]:
    """A session whose helper runs in the chain's client namespace."""
    async with Session(command=chain.exec_argv("client", [helper_path])) as session:
        yield session


def answer(
    word: str,
    responder: str | None,
    time_ms: float | None = None,
    *,
    ttl: int = 3,
    mpls: list[Mpls] | None = None,
) -> ProbeResult:
    """A ProbeResult as the session builds it."""
    return ProbeResult(
        word == "reply",
        word,
        time_ms,
        responder,
        mpls or [],
        target="198.18.200.1",
        ttl=ttl,
        protocol="udp",
    )


class FakeNames(NameResolver):
    """Names from a table, counting lookups (no DNS traffic from the tests)."""

    def __init__(self, table: dict[str, str], delay: float = 0.0) -> None:
        super().__init__(timeout=0.5)
        self.table = table
        self.delay = delay
        self.asked: list[str] = []

    async def lookup(self, address: str) -> str | None:
        self.asked.append(address)
        await asyncio.sleep(self.delay)
        if address == "198.18.9.9":
            raise OSError("lookup failed")
        return self.table.get(address)


# ------------------------------------------------------------------ no packets


def test_a_hop_groups_answers_by_responder() -> None:
    stack = [Mpls(16, 0, True, 1)]
    probes = [
        answer("ttl-expired", "198.18.2.2", 1.5),
        answer("no-reply", None),
        answer("ttl-expired", "198.18.3.2", 2.5, mpls=stack),
        answer("ttl-expired", "198.18.2.2", 1.0, mpls=[Mpls(17, 0, True, 1)]),
    ]
    hop = make_hop(2, probes, {"198.18.3.2": "rb.example"})
    assert list(hop.responders) == ["198.18.2.2", "198.18.3.2"]
    first, second = hop.responders.values()
    assert first.rtts == (1.5, 1.0) and first.mpls == (Mpls(17, 0, True, 1),)
    assert second.rtts == (2.5,) and second.mpls == tuple(stack) and second.name == "rb.example"
    assert first.answers == (Answer.TIME_EXCEEDED,)
    assert (hop.sent, hop.received, hop.packet_loss) == (4, 3, 0.25)
    assert (hop.min_rtt, hop.max_rtt, hop.address) == (1.0, 2.5, "198.18.2.2")
    assert not hop.is_silent and not hop.reached
    assert str(hop) == (
        "  2  198.18.2.2 [MPLS label 17 TTL 1]  1.500 ms  *  rb.example "
        "(198.18.3.2) [MPLS label 16 TTL 1]  2.500 ms  198.18.2.2 [MPLS label "
        "17 TTL 1]  1.000 ms"
    )
    silent = make_hop(5, [answer("no-reply", None)] * 3)
    assert silent.is_silent and silent.address is None and str(silent) == "  5  *  *  *"


def test_trace_result_status_json_and_text() -> None:
    def trace(*hops: Hop, max_ttl: int = 30) -> TraceResult:
        return TraceResult("target", "198.18.200.1", hops, 1, max_ttl, "udp")

    router = make_hop(1, [answer("ttl-expired", "198.18.1.2", 0.1, ttl=1)])
    end = make_hop(2, [answer("reply", "198.18.200.1", 0.3, ttl=2)])
    reached = trace(router, end)
    assert reached.reached and reached.distance == 2 and reached.raise_for_status() is reached
    assert reached.hop(2) is end
    data = json.loads(json.dumps(reached.to_dict()))
    assert data["reached"] and data["hops"][1]["responders"][0]["answers"] == ["reply"]
    assert str(reached).splitlines()[0] == "traceroute to target (198.18.200.1), 30 hops max, udp"

    unreachable = trace(router, make_hop(2, [answer("no-route", "198.18.2.2", 0.2, ttl=2)]))
    assert not unreachable.reached and unreachable.hops[-1].unreachable
    with pytest.raises(DestinationUnreachable):
        unreachable.raise_for_status()
    short = trace(router, max_ttl=1)
    with pytest.raises(TimeExceeded, match="within 1 hops"):
        short.raise_for_status()
    silent = trace(router, make_hop(2, [answer("no-reply", None, ttl=2)]), max_ttl=2)
    with pytest.raises(NoReplyError, match="after TTL 1"):
        silent.raise_for_status()


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"first_ttl": 0}, "first_ttl"),
        ({"first_ttl": 5, "max_ttl": 4}, "max_ttl"),
        ({"max_ttl": 256}, "max_ttl"),
        ({"probes_per_hop": 0}, "probes_per_hop"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"protocol": "icmp", "port": 7}, "port"),
        ({"wait": "5,-1"}, "wait HERE must be a finite factor >= 0, got -1"),
        ({"wait": 0}, "wait MAX must be a number of seconds > 0"),
        ({"wait": "5", "timeout": 5}, "give wait or timeout, not both"),
        ({"retries": 11}, "retries must be from 0 to 10, got 11"),
    ],
)
async def test_bad_arguments_fail_before_any_helper_is_started(
    arguments: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        await traceroute("127.0.0.1", helper=NOWHERE, **arguments)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name_resolver"):
        await traceroute("127.0.0.1", helper=NOWHERE, name_resolver="dns")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retries must be an integer"):
        await traceroute("127.0.0.1", helper=NOWHERE, retries="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wait must be a Wait"):
        await traceroute("127.0.0.1", helper=NOWHERE, wait=object())  # type: ignore[arg-type]


async def test_names_are_looked_up_once_and_failures_are_none() -> None:
    names = FakeNames({"198.18.1.2": "r1.example"}, delay=0.05)
    got = await asyncio.gather(*(names.name("198.18.1.2") for _ in range(5)))
    assert got == ["r1.example"] * 5 and names.asked == ["198.18.1.2"]
    assert await names.name("198.18.1.2") == "r1.example" and len(names.asked) == 1
    assert await names.name("198.18.9.9") is None  # the lookup raised
    assert await names.name("198.18.8.8") is None  # no name
    assert names.cached("198.18.1.2") == "r1.example"
    slow = FakeNames({"198.18.1.2": "late.example"}, delay=2.0)
    began = time.monotonic()
    assert await slow.name("198.18.1.2") is None  # timed out after 0.5 s
    assert time.monotonic() - began < 1.5
    assert await lookup_names(names, ["198.18.1.2", "198.18.8.8", "198.18.1.2"]) == {
        "198.18.1.2": "r1.example",
        "198.18.8.8": None,
    }


async def test_the_system_resolver_names_the_loopback_address() -> None:
    # 127.0.0.1 is named by /etc/hosts: the system resolver answers without DNS traffic.
    with open("/etc/hosts") as hosts:
        entries = [line.split() for line in hosts if line.strip() and not line.startswith("#")]
    expected = next((fields[1] for fields in entries if fields[0] == "127.0.0.1"), None)
    assert await NameResolver().name("127.0.0.1") == expected


# ------------------------------------------------------------------ lab


@FAMILIES
@PROTOCOLS
async def test_the_chain_is_traced_to_the_server_and_no_further(
    chain: Chain, lab_session: Session, family: int, protocol: str
) -> None:
    server = chain.server_address(family)
    events: list[ProgressEvent] = []
    async with asyncio.timeout(LIMIT):
        began = time.monotonic()
        trace = await traceroute(
            server,
            max_ttl=30,
            timeout=5.0,
            protocol=protocol,
            session=lab_session,
            progress=events.append,
        )
        elapsed = time.monotonic() - began
    assert [hop.address for hop in trace.hops] == chain.path(family)
    assert [hop.ttl for hop in trace.hops] == [1, 2, 3, 4]
    assert trace.reached and trace.distance == 4 and trace.destination == server
    assert all(hop.received == hop.sent == 3 for hop in trace.hops)
    assert [len(hop.responders) for hop in trace.hops] == [1, 1, 1, 1]
    assert trace.hops[-1].responders[server].answers == (Answer.REPLY,)
    assert all(not hop.reached for hop in trace.hops[:-1])
    # All hops answer: done in about the farthest round trip (under a millisecond here),
    # not the 5 s timeout of the 26 TTLs beyond the server (their probes were cancelled).
    assert elapsed < 1.5
    assert events and all(event.total == 90 and event.host == server for event in events)
    assert {(event.result.ttl, event.sequence) for event in events} >= {
        (ttl, index) for ttl in range(1, 5) for index in range(3)
    }


@FAMILIES
@PROTOCOLS
async def test_scripted_hops_mpls_silence_and_destination(
    chain: Chain, responder, lab_session: Session, family: int, protocol: str
) -> None:
    dst = virtual_target(121, family)
    responder.set(dst, hops=[{"mpls": LABELS}, {"silent": True}, {"delay": 0.1}], delay=0.05)
    async with asyncio.timeout(LIMIT):
        began = time.monotonic()
        trace = await traceroute(
            dst, max_ttl=12, timeout=1.0, protocol=protocol, session=lab_session
        )
        elapsed = time.monotonic() - began
    expected = [*chain.path(family)[:3], virtual_hop(1, family), None, virtual_hop(3, family), dst]
    assert [hop.address for hop in trace.hops] == expected
    assert trace.reached and trace.distance == 7
    mpls_hop, silent_hop, slow_hop, last = trace.hops[3:]
    assert mpls_hop.responders[virtual_hop(1, family)].mpls == tuple(
        Mpls(label, tc, bool(bos), ttl) for label, tc, bos, ttl in LABELS
    )
    assert all(probe.mpls for probe in mpls_hop.probes)
    # Silent below the destination: tried again at 0.25 and 0.75 s (the 1.75 s try would
    # come after MAX, 1 s), three probes each time, all unanswered.
    assert silent_hop.is_silent and silent_hop.sent == 9 and silent_hop.packet_loss == 1.0
    assert len(silent_hop.probes) == 3 and len(silent_hop.retries) == 6
    assert all(hop.retries == () for hop in trace.hops if hop is not silent_hop)
    assert all(150.0 <= rtt < 350.0 for rtt in slow_hop.rtts), slow_hop.rtts
    assert all(50.0 <= rtt < 150.0 for rtt in last.rtts), last.rtts
    assert not trace.hops[2].responders[chain.hop_address(3, family)].mpls
    # The silent hop below the destination waits for its timeout (MAX after its first
    # probe, also for its further tries), nothing else does.
    assert 1.0 <= elapsed < 1.9


@FAMILIES
async def test_a_trace_of_answering_hops_ends_with_the_farthest_round_trip(
    responder, lab_session: Session, family: int
) -> None:
    dst = virtual_target(122, family)
    responder.set(dst, hops=[{"delay": 0.05}, {"delay": 0.2}], delay=0.1)
    async with asyncio.timeout(LIMIT):
        began = time.monotonic()
        trace = await traceroute(dst, max_ttl=30, timeout=5.0, session=lab_session)
        elapsed = time.monotonic() - began
    assert trace.reached and trace.distance == 6
    assert max(trace.hops[4].rtts) >= 300.0  # the farthest round trip: hop 5, 0.1 + 0.2 s
    # Not 5 s: the probes for TTLs 7..30 were abandoned once TTL 6 answered.
    farthest = max(rtt for hop in trace.hops for rtt in hop.rtts) / 1000
    assert 0.3 <= farthest <= elapsed < farthest + 0.5


@FAMILIES
async def test_a_silent_router_is_kept_as_a_silent_hop(
    make_chain: Callable[..., Chain], helper_path: str, family: int
) -> None:
    chain = make_chain(3)
    chain.silence_router(2)
    async with (
        asyncio.timeout(LIMIT),
        Session(command=chain.exec_argv("client", [helper_path])) as session,
    ):
        trace = await traceroute(chain.server_address(family), timeout=0.5, session=session)
    path = chain.path(family)
    assert [hop.address for hop in trace.hops] == [path[0], None, path[2], path[3]]
    assert trace.hops[1].is_silent and trace.reached


@FAMILIES
async def test_a_silent_router_gets_further_tries_and_near_shortens_their_wait(
    make_chain: Callable[..., Chain], helper_path: str, family: int
) -> None:
    chain = make_chain(3)
    chain.silence_router(2)
    async with (
        asyncio.timeout(LIMIT),
        Session(command=chain.exec_argv("client", [helper_path])) as session,
    ):
        began = time.monotonic()
        trace = await traceroute(chain.server_address(family), session=session)
        elapsed = time.monotonic() - began
    assert [hop.address for hop in trace.hops] == [
        chain.path(family)[0],
        None,
        *chain.path(family)[2:],
    ]
    silent = trace.hops[1]
    # Three probes, then three more at 0.25, 0.75 and 1.75 s: all unanswered.
    assert silent.sent == 12 and len(silent.retries) == 9 and silent.received == 0
    assert all(hop.sent == hop.received == 3 for hop in trace.hops if hop is not silent)
    # Each try waits NEAR (10) x the round trip of hop 3's answer, not MAX (5 s): the
    # trace ends soon after the last try.
    assert 1.75 <= elapsed < 3.0


@FAMILIES
async def test_unreachable_ends_the_path_and_max_ttl_bounds_it(
    chain: Chain, responder, lab_session: Session, family: int
) -> None:
    dst = virtual_target(123, family)
    router = virtual_hop(2, family)
    responder.set(dst, hops=1, answer="unreachable", **{f"from{family}": router})
    blackholed = chain.add_blackhole(2).address(family)
    async with asyncio.timeout(LIMIT):
        unreachable = await traceroute(dst, timeout=1.0, session=lab_session, details=True)
        short = await traceroute(
            chain.server_address(family), max_ttl=2, timeout=1.0, session=lab_session
        )
        silent = await traceroute(blackholed, max_ttl=4, timeout=0.3, session=lab_session)
    assert [hop.ttl for hop in unreachable.hops] == [1, 2, 3, 4, 5]
    assert unreachable.hops[-1].unreachable and unreachable.hops[-1].address == router
    assert not unreachable.reached
    with pytest.raises(DestinationUnreachable) as caught:
        unreachable.raise_for_status()
    assert caught.value.responder == router
    assert [hop.address for hop in short.hops] == chain.path(family)[:2]
    with pytest.raises(TimeExceeded):
        short.raise_for_status()
    assert [hop.is_silent for hop in silent.hops] == [False, True, True, True]
    with pytest.raises(NoReplyError, match="after TTL 1"):
        silent.raise_for_status()


@FAMILIES
async def test_names_first_ttl_and_json(
    chain: Chain, responder, lab_session: Session, family: int
) -> None:
    dst = virtual_target(124, family)
    responder.set(dst, hops=1)
    table = {chain.hop_address(3, family): "r3.lab", dst: "target.lab"}
    names = FakeNames(table)
    async with asyncio.timeout(LIMIT):
        trace = await traceroute(
            dst,
            first_ttl=3,
            timeout=1.0,
            session=lab_session,
            resolve_names=True,
            name_resolver=names,
        )
        plain = await traceroute(dst, first_ttl=3, timeout=1.0, session=lab_session)
    assert [hop.ttl for hop in trace.hops] == [3, 4, 5]
    assert [hop.name for hop in trace.hops] == ["r3.lab", None, "target.lab"]
    assert sorted(names.asked) == sorted([*table, virtual_hop(1, family)])
    assert all(hop.name is None for hop in plain.hops)
    assert names_for(lab_session) is names_for(lab_session)
    data = json.loads(json.dumps(trace.to_dict()))
    assert data["distance"] == 5 and data["hops"][0]["responders"][0]["name"] == "r3.lab"


# ------------------------------------------------------------------ load balancing


def ecmp_lab(make_lab: Callable[..., Lab]) -> Lab:
    """client - r1 = (ra | rb) - r3 - server; r1 spreads flows over ra and rb by their
    ports (multipath hash policy 1).  Hop 2 is ra (link 2) or rb (link 3)."""
    lab = make_lab("ecmp")
    policy = {"net.ipv4.fib_multipath_hash_policy": 1, "net.ipv6.fib_multipath_hash_policy": 1}
    client, r1 = lab.add_node("client"), lab.add_node("r1", router=True, sysctls=policy)
    ra, rb = lab.add_node("ra", router=True), lab.add_node("rb", router=True)
    r3, server = lab.add_node("r3", router=True), lab.add_node("server")
    for a, b, k in (
        (client, r1, 1),
        (r1, ra, 2),
        (r1, rb, 3),
        (ra, r3, 4),
        (rb, r3, 5),
        (r3, server, 6),
    ):
        lab.add_link(a, b, k)
    for family in (4, 6):
        default = "default" if family == 4 else "default6"

        def via(k: int, side: int, family: int = family) -> str:
            return link_address(k, side, family)

        lab.add_route(client, default, via=via(1, 2))
        lab.add_route(
            r1, default, extra=f"nexthop via {via(2, 2)} dev eth1 nexthop via {via(3, 2)} dev eth2"
        )
        for router, k_in, k_out in ((ra, 2, 4), (rb, 3, 5)):
            lab.add_route(router, link_prefix(1, family), via=via(k_in, 1))
            lab.add_route(router, default, via=via(k_out, 2))
        lab.add_route(r3, link_prefix(1, family), via=via(4, 1))
        lab.add_route(server, default, via=via(6, 1))
    lab.build()
    return lab


@FAMILIES
async def test_load_balanced_hop_records_every_responder(
    make_lab: Callable[..., Lab], helper_path: str, family: int
) -> None:
    lab = ecmp_lab(make_lab)
    server = link_address(6, 2, family)
    routers = {link_address(2, 2, family), link_address(3, 2, family)}
    async with (
        asyncio.timeout(LIMIT),
        Session(command=lab.exec_argv("client", [helper_path])) as session,
    ):
        spread = await traceroute(
            server, probes_per_hop=16, protocol="udp", timeout=1.0, session=session
        )
        one_flow = await traceroute(
            server, probes_per_hop=16, protocol="udp", port=33500, timeout=1.0, session=session
        )
    assert spread.reached and spread.distance == 4
    # Each UDP probe has its own destination port, so r1 hashes them over both routers
    # (all 16 on one side: probability 2 ** -15).
    balanced = spread.hop(2)
    assert set(balanced.responders) == routers
    assert sum(len(responder.rtts) for responder in balanced.responders.values()) == 16
    assert all(len(responder.rtts) >= 1 for responder in balanced.responders.values())
    assert balanced.received == 16
    # One flow (fixed ports) takes one path: one responder per hop.
    assert one_flow.reached
    assert [len(hop.responders) for hop in one_flow.hops] == [1, 1, 1, 1]
    assert one_flow.hop(2).address in routers


def test_sync_traceroute(helper_path: str) -> None:
    trace = sync.traceroute("127.0.0.1", max_ttl=3, timeout=1.0, helper=helper_path)
    assert trace.reached and trace.distance == 1
    assert [hop.address for hop in trace.hops] == ["127.0.0.1"]
