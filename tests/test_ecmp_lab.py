"""Load-balanced paths on the wire: kernel ECMP diamonds and scripted balancers (issue 11).

The labs (:mod:`lab.ecmp`) know their truth: every node per TTL and link between TTLs
per family, and, from each router's kernel, which way a flow goes.  First the truth
itself is checked against raw probes (so the later tests compare with something
true); then classic traces (false links), Paris traces (one true path per flow),
multipath traces (every node and link, none invented), ICMP through kernel diamonds
(one path) and through the responder's scripted balancers, mtr per flow, and the
probes' fields on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lab import Chain, Lab, Packet, scamper
from lab.ecmp import TOPOLOGIES, EcmpLab, Flow, Topology, Truth
from lab.packets import TCP_SYN

from brokerpkg import Session, traceroute
from brokerpkg.mtr import monitor, monitor_flows
from brokerpkg.multipath import MultipathResult, multipath_trace

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

pytestmark = pytest.mark.privileged

FAMILIES = pytest.mark.parametrize("family", [4, 6])
TOPOLOGY_NAMES = pytest.mark.parametrize("name", sorted(TOPOLOGIES))
LIMIT = 60.0
RAW_FLOWS = 96
"""Flows the truth checks send: every path of every lab is taken by some (the chance
that 96 flows miss one of the series lab's 8 paths is below 10^-4, and the kernels'
hashes are seeded, so a run that passes passes again)."""


@pytest.fixture
def make_ecmp(privileged: None) -> Iterator[Callable[[Topology], EcmpLab]]:
    """Factory: ``make_ecmp(topology)`` builds an ECMP lab, removed after the test."""
    made: list[EcmpLab] = []

    def factory(topology: Topology) -> EcmpLab:
        lab = EcmpLab(topology)
        made.append(lab)
        return lab.build()

    try:
        yield factory
    finally:
        for lab in made:
            lab.close()


def ecmp_lab(make_ecmp: Callable[[Topology], EcmpLab], name: str) -> EcmpLab:
    return make_ecmp(TOPOLOGIES[name]())


# ------------------------------------------------------------------ helpers


def path_links(hops: Sequence[str | None]) -> set[tuple[int, str, str]]:
    """(ttl, from, to) for consecutive answered TTLs of one path."""
    return {
        (ttl, a, b)
        for ttl, (a, b) in enumerate(itertools.pairwise(hops), start=1)
        if a is not None and b is not None
    }


def raw_hops(lab: EcmpLab, family: int, flows: Sequence[Flow]) -> dict[Flow, list[str | None]]:
    """Probe every flow at every TTL with raw packets of its protocol (UDP, TCP or
    SCTP); return who answered each flow with an ICMP error at TTL 1, 2, ... (the
    probe's size carries its TTL through the quote)."""
    depth = max(lab.truth(family).distances)
    base = 100
    probes = [
        {
            "dst": lab.server_address(family),
            "proto": flow.proto,
            "sport": flow.sport,
            "dport": flow.dport,
            "ttl": ttl,
            "size": base + ttl,
        }
        for flow in flows
        for ttl in range(1, depth + 1)
    ]
    res = lab.raw_probe("client", probes, timeout=2.0, expect=len(probes))
    seen: dict[Flow, list[str | None]] = {flow: [None] * depth for flow in flows}
    by_ports = {(flow.sport, flow.dport): flow for flow in flows}
    for pkt in res.received:
        inner = pkt.inner
        if inner is None or not pkt.is_icmp_error or inner.sport is None:
            continue
        flow = by_ports.get((inner.sport, inner.dport or 0))
        if flow is None:
            continue
        ttl = inner.length - base
        if 1 <= ttl <= depth and seen[flow][ttl - 1] is None:
            seen[flow][ttl - 1] = pkt.src
    return seen


def trimmed(hops: list[str | None], destination: str) -> list[str | None]:
    """The hops up to the destination's first answer."""
    if destination in hops:
        return hops[: hops.index(destination) + 1]
    return hops


def port_flows(count: int, proto: str = "udp") -> list[Flow]:
    return [Flow(proto, 40000 + 7 * i, 33434 + (i % 5)) for i in range(count)]


# ------------------------------------------------------------------ the truth


@TOPOLOGY_NAMES
@FAMILIES
def test_the_labs_truth_is_what_raw_probes_find(
    make_ecmp: Callable[[Topology], EcmpLab], name: str, family: int
) -> None:
    lab = ecmp_lab(make_ecmp, name)
    truth = lab.truth(family)
    flows = port_flows(RAW_FLOWS)
    predicted = lab.flow_hops(family, flows)
    seen = raw_hops(lab, family, flows)
    server = lab.server_address(family)
    for flow in flows:
        # every flow goes where the routers' kernels say it goes
        assert trimmed(seen[flow], server) == predicted[flow], flow
    # and the flows cover the whole truth: every path is taken
    nodes: dict[int, set[str]] = {}
    links: set[tuple[int, str, str]] = set()
    for hops in predicted.values():
        for ttl, address in enumerate(hops, start=1):
            nodes.setdefault(ttl, set()).add(address)
        links |= path_links(hops)
    assert nodes == truth.nodes
    assert links == truth.links


PROTOCOL_UNREACHABLE = {4: (3, 2), 6: (4, 1)}
"""What a host without an SCTP stack answers an SCTP INIT: ICMP destination
unreachable, protocol unreachable; ICMPv6 parameter problem, unrecognised next header."""


@TOPOLOGY_NAMES
@FAMILIES
def test_the_routers_hash_sctp_ports_onto_true_paths_and_the_server_refuses_sctp(
    make_ecmp: Callable[[Topology], EcmpLab], name: str, family: int
) -> None:
    """The routers' kernels will not say where an SCTP flow goes (``ip route get``
    refuses ``ipproto sctp``: Unsupported ip proto), so raw SCTP INITs show it: each
    flow one true path to the server, and the flows, differing in their ports only,
    cover the whole truth (the flow dissector reads SCTP ports as it reads UDP's)."""
    lab = ecmp_lab(make_ecmp, name)
    truth = lab.truth(family)
    server = lab.server_address(family)
    flows = port_flows(RAW_FLOWS, "sctp")
    seen = raw_hops(lab, family, flows)
    nodes: dict[int, set[str]] = {}
    links: set[tuple[int, str, str]] = set()
    for flow in flows:
        hops = trimmed(seen[flow], server)
        assert hops[-1] == server and len(hops) in truth.distances, (flow, hops)
        assert path_links(hops) <= truth.links, (flow, hops)
        for ttl, address in enumerate(hops, start=1):
            assert address is not None, (flow, hops)
            nodes.setdefault(ttl, set()).add(address)
        links |= path_links(hops)
    assert nodes == truth.nodes
    assert links == truth.links
    # the server has no SCTP stack: its kernel refuses the protocol
    probe = {"dst": server, "proto": "sctp", "sport": 40000, "dport": 80}
    res = lab.raw_probe("client", [probe], timeout=2.0, expect=1)
    answers = [(p.icmp_type, p.icmp_code) for p in res.received if p.src == server]
    assert answers == [PROTOCOL_UNREACHABLE[family]]


def test_ipv4_and_ipv6_routers_answer_from_different_interfaces(
    make_ecmp: Callable[[Topology], EcmpLab],
) -> None:
    lab = ecmp_lab(make_ecmp, "meshed")
    v4, v6 = lab.truth(4), lab.truth(6)
    # IPv4: one address per router (its interface towards the client): 2 at TTL 3;
    # IPv6: the incoming interface: n1 and n2 each have two, r2 two.
    assert [len(v4.nodes[ttl]) for ttl in range(1, 6)] == [1, 2, 2, 1, 1]
    assert [len(v6.nodes[ttl]) for ttl in range(1, 6)] == [1, 2, 4, 2, 1]
    assert len(v4.links) == 1 + 2 + 4 + 2 + 1 - 1  # r1-m*, m*-n*, n*-r2, r2-server
    assert len(v6.links) == 2 + 4 + 4 + 2
    unequal = ecmp_lab(make_ecmp, "unequal").truth(4)
    # r2 behind branches of 1 and 2 routers: at TTL 3 and 4, the server at 4 and 5
    assert unequal.distances == {4, 5}
    assert unequal.nodes[3] & unequal.nodes[4]


@FAMILIES
def test_icmp_echo_takes_one_path_through_kernel_diamonds(
    make_ecmp: Callable[[Topology], EcmpLab], family: int
) -> None:
    lab = ecmp_lab(make_ecmp, "series")
    depth = max(lab.truth(family).distances)
    server = lab.server_address(family)
    probes = [
        {"dst": server, "proto": "icmp", "id": 4000 + i, "seq": ttl, "ttl": ttl}
        for i in range(24)
        for ttl in range(1, depth + 1)
    ]
    res = lab.raw_probe("client", probes, timeout=2.0, expect=len(probes))
    answers: dict[int, set[str]] = {}
    for pkt in res.received:
        ref = pkt.inner if pkt.is_icmp_error else pkt
        if ref is None or ref.icmp_seq is None or not 4000 <= (ref.icmp_id or 0) < 4024:
            continue
        answers.setdefault(ref.icmp_seq, set()).add(pkt.src)
    # Linux hashes ICMP echo on its addresses only: 24 echo ids, one (true) path
    assert all(len(answers.get(ttl, ())) == 1 for ttl in range(1, depth + 1)), answers
    path = [next(iter(answers[ttl])) for ttl in range(1, depth + 1)]
    assert path_links(path) <= lab.truth(family).links
    if family == 4:  # the path the routers' kernels name (IPv6's route get differs)
        (icmp_path,) = lab.flow_hops(family, [Flow("icmp")]).values()
        assert path == icmp_path


# ------------------------------------------------------------------ classic traces


async def classic_traces(
    lab: EcmpLab, helper_path: str, family: int, protocol: str, count: int
) -> list[list[str | None]]:
    """``count`` classic traces, one probe per TTL: each probe its own flow."""
    server = lab.server_address(family)
    traces = []
    async with (
        asyncio.timeout(LIMIT),
        Session(command=lab.exec_argv("client", [helper_path])) as session,
    ):
        for _ in range(count):
            trace = await traceroute(
                server,
                probes_per_hop=1,
                family=family,
                protocol=protocol,
                timeout=1.0,
                session=session,
            )
            assert trace.reached
            traces.append([hop.address for hop in trace.hops])
    return traces


def false_links(truth: Truth, traces: Sequence[Sequence[str | None]]) -> set[tuple[int, str, str]]:
    """The links classic traces imply that the lab does not have."""
    implied: set[tuple[int, str, str]] = set()
    for hops in traces:
        implied |= path_links(hops)
    return implied - truth.links


@pytest.mark.parametrize(("name", "family"), [("unequal", 4), ("unequal", 6), ("series", 6)])
@pytest.mark.parametrize("protocol", ["udp", "tcp"])
async def test_classic_traces_through_diamonds_make_up_links(
    make_ecmp: Callable[[Topology], EcmpLab],
    helper_path: str,
    name: str,
    family: int,
    protocol: str,
) -> None:
    lab = ecmp_lab(make_ecmp, name)
    truth = lab.truth(family)
    traces = await classic_traces(lab, helper_path, family, protocol, 12)
    # each probe is its own flow, so consecutive hops are often on different branches
    # (half of the unequal lab's traces, three quarters of the IPv6 series lab's):
    # 12 traces without a false link have a chance below 2^-12
    assert false_links(truth, traces)
    for hops in traces:  # yet every address is a true node at its TTL
        for ttl, address in enumerate(hops, start=1):
            assert address is None or address in truth.nodes[ttl]


# ------------------------------------------------------------------ scripted balancers


def virtual_diamond(width: int) -> list[list[dict[str, Any]]]:
    """Paths for the responder: ``width`` branches between two shared virtual hops
    (virtual hop 1 and 3: ``198.18.201.1`` and ``.2``; the branches ``.11``, ``.12``...)."""
    paths = []
    for branch in range(1, width + 1):
        paths.append(
            [
                {"addr4": "198.18.201.1", "addr6": "2001:db8:c9::1"},
                {"addr4": f"198.18.201.{10 + branch}", "addr6": f"2001:db8:c9::{10 + branch:x}"},
                {"addr4": "198.18.201.2", "addr6": "2001:db8:c9::2"},
            ]
        )
    return paths


@FAMILIES
def test_the_responders_per_flow_balancer_hashes_the_first_transport_bytes(
    make_chain: Callable[..., Chain], family: int
) -> None:
    target = virtual_target(family)
    chain = make_chain(
        1, responder=True, script={"targets": {target: {"paths": virtual_diamond(4)}}}
    )
    # echo requests: the id and sequence change the checksum, so each (id, seq) is a
    # flow; the same (id, seq) at every TTL stays on one branch
    probes = [
        {"dst": target, "proto": "icmp", "id": 500 + i, "seq": 7, "ttl": ttl}
        for i in range(32)
        for ttl in (2, 3, 4, 5)
    ]
    chain.raw_probe("client", probes, timeout=1.5, expect=len(probes))
    responder = chain.responder
    assert responder is not None
    responder.sync()
    branches: dict[int, set[int]] = {}
    for event in responder.received(proto="icmp"):
        if event.packet.is_echo_request and event.path is not None:
            branches.setdefault(event.packet.icmp_id or 0, set()).add(event.path)
    assert len(branches) == 32
    assert all(len(paths) == 1 for paths in branches.values())  # one flow, one branch
    assert {p for paths in branches.values() for p in paths} == {0, 1, 2, 3}
    # the branches answer from their own addresses, at TTL 3 (one router, then hop 2)
    branch_addresses = {path[1][f"addr{family}"] for path in virtual_diamond(4)}
    answering = {e.packet.src for e in responder.sent(kind="time-exceeded")}
    assert branch_addresses <= answering


@FAMILIES
def test_the_responders_per_packet_balancer_splits_one_flow(
    make_chain: Callable[..., Chain], family: int
) -> None:
    target = virtual_target(family)
    spec = {"paths": virtual_diamond(2), "balance": "packet", "seed": 3}
    chain = make_chain(1, responder=True, script={"targets": {target: spec}})
    probes = [
        {"dst": target, "proto": "udp", "sport": 40000, "dport": 33434, "ttl": 3} for _ in range(24)
    ]
    chain.raw_probe("client", probes, timeout=1.5, expect=len(probes))
    responder = chain.responder
    assert responder is not None
    responder.sync()
    taken = {e.path for e in responder.received(proto="udp")}
    assert taken == {0, 1}  # one flow, both branches (all 24 on one: 2^-23)


# ------------------------------------------------------------------ flows (the helper's)


@contextlib.asynccontextmanager
async def flow_session(lab: Lab, helper_path: str) -> AsyncIterator[Session]:
    """A session whose helper runs in the lab's client and puts probes in flows; skips
    (a failure under CI's no-skip rule) with a helper without the ``flow`` extension."""
    async with Session(command=lab.exec_argv("client", [helper_path])) as session:
        support = session.features.get("flow", "no")
        if support != "ok":
            pytest.skip(f"the helper cannot put probes in flows (check-support flow: {support})")
        yield session


def flow_key(pkt: Packet) -> tuple[Any, ...]:
    """What per-flow balancers hash: addresses, protocol, TOS / traffic class, flow
    label, the first 4 transport bytes."""
    return (pkt.src, pkt.dst, pkt.proto, pkt.tos, pkt.flow_label, pkt.transport[:4])


PARIS_FLOWS = range(1, 7)


@pytest.mark.parametrize("protocol", ["icmp", "udp", "tcp", "sctp"])
@FAMILIES
async def test_paris_traces_take_one_true_path_per_flow_and_keep_its_fields(
    make_ecmp: Callable[[Topology], EcmpLab], helper_path: str, protocol: str, family: int
) -> None:
    lab = ecmp_lab(make_ecmp, "series")
    truth = lab.truth(family)
    server = lab.server_address(family)
    paths: dict[int, list[str | None]] = {}
    keys: dict[int, set[tuple[Any, ...]]] = {}
    async with asyncio.timeout(LIMIT), flow_session(lab, helper_path) as session:
        for flow in PARIS_FLOWS:
            # the helper sends every TTL's probes at once: tcpdump may miss some of
            # the burst, so drops are allowed and what it kept must span the TTLs
            with lab.capture("client", "eth0", allow_drops=True) as cap:
                trace = await traceroute(
                    server,
                    probes_per_hop=3,
                    family=family,
                    protocol=protocol,
                    timeout=1.0,
                    flow=flow,
                    session=session,
                )
            assert trace.reached and trace.flow == flow
            # one flow, one path: a single router per hop, on a true path
            assert all(len(hop.responders) == 1 for hop in trace.hops), trace
            paths[flow] = [hop.address for hop in trace.hops]
            assert path_links(paths[flow]) <= truth.links
            sent = cap.select(direction="out", dst=server, version=family)
            probes = [p for p in sent if not p.is_icmp or p.is_echo_request]
            assert len({p.ttl for p in probes}) >= len(trace.hops) // 2, cap.describe()
            keys[flow] = {flow_key(p) for p in probes}
    # on the wire: a flow keeps every hashed field whatever the TTL, flows differ
    assert all(len(k) == 1 for k in keys.values()), keys
    assert len({next(iter(k)) for k in keys.values()}) == len(PARIS_FLOWS)
    if protocol == "icmp":
        # the kernel hashes ICMP on addresses: every flow takes the same path
        assert len({tuple(p) for p in paths.values()}) == 1
        return
    assert len({tuple(p) for p in paths.values()}) >= 2  # flows spread over branches
    if protocol in ("udp", "tcp"):
        # each path is the one the routers' kernels give the flow's ports
        flows = {}
        for flow, key in keys.items():
            ports = next(iter(key))[5]
            flows[flow] = Flow(protocol, int.from_bytes(ports[:2]), int.from_bytes(ports[2:]))
        predicted = lab.flow_hops(family, flows.values())
        for flow, hops in paths.items():
            assert hops == predicted[flows[flow]], flow


def found(result: MultipathResult) -> tuple[dict[int, set[str]], set[tuple[int, str, str]]]:
    """A multipath trace's nodes per TTL and links between answering nodes."""
    nodes = {hop.ttl: set(hop.responders) for hop in result.hops if hop.responders}
    links = {
        (link.ttl, link.source, link.target)
        for link in result.links
        if link.source is not None and link.target is not None
    }
    return nodes, links


def flows_sent(result: MultipathResult) -> set[int]:
    """The flows a multipath trace sent its probes in."""
    return {probe.flow for hop in result.hops for probe in hop.probes}


def is_probe(pkt: Packet) -> bool:
    """True for what the helper sends: echo requests, SYNs (not the client kernel's RST
    for a SYN-ACK), every UDP and SCTP packet."""
    if pkt.is_icmp:
        return pkt.is_echo_request
    if pkt.proto_name == "tcp":
        return pkt.tcp_flags == TCP_SYN
    return True


def probe_keys(packets: Iterable[Packet]) -> set[tuple[Any, ...]]:
    """The flow keys (:func:`flow_key`) of the probes among ``packets``."""
    return {flow_key(p) for p in packets if is_probe(p)}


MULTIPATH_CASES = [
    (name, family, protocol)
    for name in sorted(TOPOLOGIES)
    for family in (4, 6)
    for protocol in ("udp", "tcp", "sctp")
]
WHOLE_TRUTH_CONFIDENCE = 99.9
"""The confidence of the run that must find the whole truth.  The lab's hashes are
seeded, but which flows the MDA sends through a node depends on the order answers came
in: at 99% one SCTP run in ten through the IPv4 series lab missed b1 (eight flows, two
through each a*, all hashed to b2 by r2; 3 of 30 runs, UDP 0 of 30); at 99.9%, 0 of 30."""
RUNS_AT_95 = 8
"""Multipath traces at 95% per lab and family, each with other flows (first_flow)."""


async def lab_multipath(
    session: Session, target: str, family: int, protocol: str, **settings: Any
) -> MultipathResult:
    """A multipath trace to ``target`` up to TTL 10, each probe waiting 1 s, with the
    MDA's ``settings`` (confidence, first_flow, deadline)."""
    return await multipath_trace(
        target,
        max_ttl=10,
        timeout=1.0,
        family=family,
        protocol=protocol,
        session=session,
        **settings,
    )


@pytest.mark.parametrize(("name", "family", "protocol"), MULTIPATH_CASES)
async def test_multipath_traces_find_every_node_and_link_and_invent_none(
    make_ecmp: Callable[[Topology], EcmpLab],
    helper_path: str,
    name: str,
    family: int,
    protocol: str,
) -> None:
    lab = ecmp_lab(make_ecmp, name)
    truth = lab.truth(family)
    server = lab.server_address(family)
    async with asyncio.timeout(LIMIT), flow_session(lab, helper_path) as session:
        with lab.capture("client", "eth0", allow_drops=True) as cap:
            result = await lab_multipath(
                session, server, family, protocol, confidence=WHOLE_TRUTH_CONFIDENCE, first_flow=1
            )
        at_95 = [
            await lab_multipath(
                session, server, family, protocol, confidence=95, first_flow=1 + 1000 * run
            )
            for run in range(RUNS_AT_95)
        ]
    # 99.9%: the whole truth; the server has no SCTP stack, and its protocol unreachable
    # is its answer
    assert result.confidence_reached and not result.partial
    nodes, links = found(result)
    assert nodes == truth.nodes
    assert links == truth.links
    assert result.distance == min(truth.distances)
    # on the wire, each flow kept its hashed fields (ports) at every TTL and attempt: no
    # more keys than flows (tcpdump may miss some of a burst; a probe per key would be
    # several times as many)
    keys = probe_keys(cap.select(direction="out", dst=server, version=family))
    assert 0 < len(keys) <= len(flows_sent(result)), cap.describe()
    # 95%: each router's next hops are complete with 95% confidence, so a run may miss
    # a link now and then (the IPv6 series has 5 routers that branch: about one run in
    # five misses one), and never invents one
    complete = 0
    for run in at_95:
        assert run.confidence_reached
        nodes, links = found(run)
        assert links <= truth.links
        assert all(addresses <= truth.nodes[ttl] for ttl, addresses in nodes.items())
        complete += links == truth.links
    assert complete >= RUNS_AT_95 // 2


@FAMILIES
async def test_icmp_multipath_through_kernel_diamonds_is_one_path(
    make_ecmp: Callable[[Topology], EcmpLab], helper_path: str, family: int
) -> None:
    lab = ecmp_lab(make_ecmp, "series")
    truth = lab.truth(family)
    async with asyncio.timeout(LIMIT), flow_session(lab, helper_path) as session:
        result = await lab_multipath(session, lab.server_address(family), family, "icmp")
    assert result.confidence_reached
    nodes, links = found(result)
    # Linux hashes ICMP echo on addresses only: every flow takes one of the 8 paths
    assert all(len(addresses) == 1 for addresses in nodes.values()), nodes
    assert len(links) == len(nodes) - 1 and links <= truth.links


def virtual_target(family: int) -> str:
    """The responder's target behind its virtual hops."""
    return "198.18.200.9" if family == 4 else "2001:db8:c8::9"


def balanced_target(
    chain: Chain, family: int, paths: list[list[dict[str, Any]]], balance: str
) -> str:
    """The responder's target behind the virtual ``paths``, balanced per ``balance``."""
    target = virtual_target(family)
    responder = chain.responder
    assert responder is not None
    responder.set(target, paths=paths, balance=balance, seed=5)
    return target


@pytest.mark.parametrize("protocol", ["icmp", "udp", "tcp", "sctp"])
@FAMILIES
async def test_multipath_through_a_per_flow_balancer_finds_its_branches(
    make_chain: Callable[..., Chain], helper_path: str, protocol: str, family: int
) -> None:
    chain = make_chain(1, responder=True)
    target = balanced_target(chain, family, virtual_diamond(4), "flow")
    diamond = virtual_diamond(4)
    branches = {path[1][f"addr{family}"] for path in diamond}
    async with asyncio.timeout(LIMIT), flow_session(chain, helper_path) as session:
        result = await lab_multipath(session, target, family, protocol, confidence=99)
    assert result.confidence_reached
    # each flow kept the bytes the balancer hashes: as many keys reached it as flows
    responder = chain.responder
    assert responder is not None
    responder.sync()
    received = [e.packet for e in responder.received(proto=protocol, dst=target)]
    assert 0 < len(probe_keys(received)) <= len(flows_sent(result))
    nodes, links = found(result)
    # hop 1 the chain's router, then the virtual hops: shared, 4 branches, shared
    first, last = diamond[0][0][f"addr{family}"], diamond[0][2][f"addr{family}"]
    assert nodes[2] == {first} and nodes[3] == branches and nodes[4] == {last}
    assert {(3, b, last) for b in branches} | {(2, first, b) for b in branches} <= links
    assert nodes[5] == {target}


def virtual_mesh() -> list[list[dict[str, Any]]]:
    """Paths for the responder: two 2-wide diamonds in series, every branch of the
    first leading to both of the second (virtual hops 2 and 3: ``.11``, ``.12`` and
    ``.21``, ``.22``), between two shared hops (``.1`` and ``.2``)."""
    shared = [{"addr4": "198.18.201.1", "addr6": "2001:db8:c9::1"}]
    last = [{"addr4": "198.18.201.2", "addr6": "2001:db8:c9::2"}]
    return [
        [
            *shared,
            {"addr4": f"198.18.201.1{a}", "addr6": f"2001:db8:c9::1{a}"},
            {"addr4": f"198.18.201.2{c}", "addr6": f"2001:db8:c9::2{c}"},
            *last,
        ]
        for a in (1, 2)
        for c in (1, 2)
    ]


@FAMILIES
async def test_multipath_through_a_per_packet_balancer_ends_in_time_and_says_so(
    make_chain: Callable[..., Chain], helper_path: str, family: int
) -> None:
    chain = make_chain(1, responder=True)
    target = balanced_target(chain, family, virtual_mesh(), "packet")
    deadline = 10.0
    async with asyncio.timeout(LIMIT), flow_session(chain, helper_path) as session:
        start = time.monotonic()
        result = await lab_multipath(session, target, family, "udp", deadline=deadline)
        took = time.monotonic() - start
    assert took < deadline + 5.0
    # what it saw: one flow answered from two branches of the first diamond (TTL 3)
    assert result.hop(3).per_packet, result
    assert any(line.startswith("TTL 3: per-packet") for line in str(result).splitlines())
    # links through the per-packet TTL: only those a single node implies
    _nodes, links = found(result)
    assert not {(a, b) for ttl, a, b in links if ttl == 3}


# ------------------------------------------------------------------ mtr per flow


async def last_report(lab: Lab, helper_path: str, watch: Callable[..., AsyncIterator[T]]) -> T:
    """The last report ``watch(session=...)`` (mtr's monitor or monitor_flows) yields
    on a flow session in the lab."""
    async with asyncio.timeout(LIMIT), flow_session(lab, helper_path) as session:
        reports = [report async for report in watch(session=session)]
    return reports[-1]


@FAMILIES
async def test_mtr_paris_rows_are_one_router_each(
    make_ecmp: Callable[[Topology], EcmpLab], helper_path: str, family: int
) -> None:
    lab = ecmp_lab(make_ecmp, "series")
    truth = lab.truth(family)
    server = lab.server_address(family)
    watch = functools.partial(
        monitor, server, 4, 0.1, timeout=1.0, family=family, protocol="udp", paris=True
    )
    final = await last_report(lab, helper_path, watch)
    assert final.reached
    hops = [hop for hop in final.hops if hop.received]
    assert all(len(hop.responders) == 1 for hop in hops)
    assert path_links([hop.address for hop in hops]) <= truth.links


@FAMILIES
async def test_mtr_flows_gives_each_flow_its_true_path(
    make_ecmp: Callable[[Topology], EcmpLab], helper_path: str, family: int
) -> None:
    lab = ecmp_lab(make_ecmp, "series")
    truth = lab.truth(family)
    server = lab.server_address(family)
    watch = functools.partial(
        monitor_flows, server, 6, 3, 0.1, timeout=1.0, family=family, protocol="udp"
    )
    final = await last_report(lab, helper_path, watch)
    paths = set()
    for report in final.flows:
        hops = [hop for hop in report.hops if hop.received]
        assert report.reached and all(len(hop.responders) == 1 for hop in hops)
        path = [hop.address for hop in hops]
        assert path_links(path) <= truth.links
        paths.add(tuple(path))
    assert len(paths) >= 2  # 6 flows over 8 paths


@FAMILIES
def test_the_mtr_command_with_flows_shows_each_flows_true_path(
    make_ecmp: Callable[[Topology], EcmpLab], helper_path: str, family: int
) -> None:
    lab = ecmp_lab(make_ecmp, "series")
    truth = lab.truth(family)
    args = ["mtr", f"-{family}", "-u", "-n", "-c", "2", "-i", "0.2", "--flows", "6", "-j"]
    res = run_brokerpkg(lab, helper_path, [*args, lab.server_address(family)])
    assert res.returncode == 0, res.stderr
    rows: dict[int, list[tuple[int, str]]] = {}
    for hub in json.loads(res.stdout)["report"]["hubs"]:
        rows.setdefault(hub["flow"], []).append((hub["count"], hub["host"]))
    assert sorted(rows) == list(range(1, 7))
    paths = set()
    for flow_rows in rows.values():
        counts = [count for count, _host in flow_rows]
        assert counts == list(range(1, len(counts) + 1))  # one router per row
        path = [host for _count, host in flow_rows]
        assert path_links(path) <= truth.links and path[-1] == lab.server_address(family)
        paths.add(tuple(path))
    assert len(paths) >= 2


@FAMILIES
async def test_icmp_paris_traces_through_the_per_flow_balancer_keep_one_branch(
    make_chain: Callable[..., Chain], helper_path: str, family: int
) -> None:
    chain = make_chain(1, responder=True)
    target = balanced_target(chain, family, virtual_diamond(4), "flow")
    branches = {path[1][f"addr{family}"] for path in virtual_diamond(4)}
    seen = set()
    async with asyncio.timeout(LIMIT), flow_session(chain, helper_path) as session:
        for flow in range(1, 13):
            trace = await traceroute(
                target, probes_per_hop=4, family=family, timeout=1.0, flow=flow, session=session
            )
            assert trace.reached
            assert all(len(hop.responders) == 1 for hop in trace.hops)  # ICMP kept its flow
            seen.add(trace.hop(3).address)
    # the balancer hashes the ICMP checksum: the flows spread over its branches
    assert len(seen) >= 2 and seen <= branches


# ------------------------------------------------------------------ the command line


def run_brokerpkg(lab: Lab, helper: str, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """``python3 -m brokerpkg ARGS`` in the lab's client, from this tree."""
    argv = lab.exec_argv("client", [sys.executable, "-m", "brokerpkg", *args])
    env = dict(os.environ, BROKERPKG_HELPER=helper)
    return subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=LIMIT, check=False
    )


@FAMILIES
def test_the_multipath_command_prints_the_truth(
    make_ecmp: Callable[[Topology], EcmpLab], helper_path: str, family: int
) -> None:
    lab = ecmp_lab(make_ecmp, "meshed")
    truth = lab.truth(family)
    server = lab.server_address(family)
    # at 99% (a single run at the default 95% may miss a link of this lab)
    command = ["trace", f"-{family}", "-u", "-n", "--multipath", "--confidence", "99"]
    res = run_brokerpkg(lab, helper_path, [*command, "-j", "-w", "1", server])
    if "flow" in res.stderr and res.returncode != 0:
        pytest.skip(f"the helper cannot put probes in flows: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    document = json.loads(res.stdout)
    links = {(link["ttl"], link["from"], link["to"]) for link in document["links"]}
    assert links == truth.links
    assert document["confidence"] == 99 and document["confidence_reached"]
    text = run_brokerpkg(lab, helper_path, [*command, server])
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert f"{len(truth.addresses)} nodes, {len(truth.edges())} links" in lines[0]
    assert lines[0].endswith(", 99%")


# ------------------------------------------------------------------ side by side


async def test_scamper_and_our_multipath_trace_find_the_same_links(
    make_ecmp: Callable[[Topology], EcmpLab], helper_path: str
) -> None:
    """Not timed: on the issue's lab (diamonds 4 and 2 wide, IPv4, 99%) both find the
    truth (scamper takes ~20 s: one probe per 250 ms)."""
    if not scamper.available():
        pytest.skip("scamper is not installed (apt-get install scamper)")
    lab = ecmp_lab(make_ecmp, "series")
    truth = lab.truth(4)
    server = lab.server_address(4)
    async with asyncio.timeout(LIMIT), flow_session(lab, helper_path) as session:
        ours = await multipath_trace(
            server, max_ttl=10, timeout=1.0, confidence=99, protocol="udp", session=session
        )
    theirs = await asyncio.to_thread(scamper.tracelb, lab, "client", server, confidence=99)
    assert set(ours.edges()) == truth.edges() == theirs.edges
    assert set(ours.nodes) == truth.addresses == theirs.nodes
