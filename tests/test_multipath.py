"""Multipath traces (brokerpkg.multipath) through the scripted fake helper's simulated
network (tests/fakes/fake_helper.py, scenario ``network``; tests/fakes/simnet.py).

No packet is sent: the fake computes each answer from the probe's flow and TTL.  Target
addresses are 127.0.0.1 and ::1; the simulated routers' addresses (127.1.x.y,
2001:db8:1::n) only appear in the fake's replies.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from brokerpkg import FeatureNotSupportedError, Session
from brokerpkg.mda import probes_needed
from brokerpkg.mtr import MonitorReport, monitor, monitor_flows
from brokerpkg.multipath import MultipathResult, dot_lines, multipath_trace, tracelb_lines
from brokerpkg.protocol import FEATURES
from brokerpkg.resolve import NameResolver
from brokerpkg.trace import traceroute

sys.path.insert(0, str(Path(__file__).parent / "fakes"))
from simnet import Network, build

FAKE = Path(__file__).parent / "fakes" / "fake_helper.py"
LIMIT = 30.0
FAMILIES = pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
TARGETS = {4: "127.0.0.1", 6: "::1"}


def series(seed: int = 1, **options: dict[str, object]) -> Network:
    """Two diamonds in series, 4 and 2 wide."""
    layers = [["A"], ["B1", "B2", "B3", "B4"], ["C"], ["E1", "E2"], ["F"], ["D"]]
    return build(layers, seed=seed, **options)  # type: ignore[arg-type]


def fake_network(network: Network, tmp_path: Path, *arguments: str) -> list[str]:
    """argv of the fake helper answering as ``network`` (requests logged to tmp_path/log)."""
    topology = tmp_path / "topology.json"
    topology.write_text(network.to_json())
    command = [sys.executable, str(FAKE), "network", "--topology", str(topology)]
    return [*command, "--log", str(tmp_path / "log"), *arguments]


def sent_probes(tmp_path: Path) -> list[dict[str, str]]:
    """The send-probe requests the fake received, as argument dicts."""
    lines = (tmp_path / "log").read_text().splitlines() if (tmp_path / "log").exists() else []
    probes = []
    for line in lines:
        words = line.split()
        if words[1] == "send-probe":
            probes.append(dict(zip(words[2::2], words[3::2], strict=True)))
    return probes


def found(result: MultipathResult) -> tuple[dict[int, set[str]], set[tuple[int, str, str]]]:
    nodes = {hop.ttl: set(hop.responders) for hop in result.hops if hop.responders}
    links = {
        (link.ttl, link.source, link.target)
        for link in result.links
        if link.source is not None and link.target is not None
    }
    return nodes, links


@pytest.fixture
async def series_session(tmp_path: Path) -> AsyncIterator[Session]:
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake_network(series(), tmp_path)) as session,
    ):
        yield session


# ----------------------------------------------------------------------------- tracing


@FAMILIES
@pytest.mark.parametrize("protocol", ["icmp", "udp", "tcp", "sctp"])
async def test_every_node_and_link_of_two_diamonds(
    tmp_path: Path, family: int, protocol: str
) -> None:
    network = series()
    target = TARGETS[family]
    command = fake_network(network, tmp_path, "--feature", "sctp=ok")
    async with asyncio.timeout(LIMIT), Session(command=command) as session:
        result = await multipath_trace(
            target, session=session, protocol=protocol, confidence=99, timeout=0.5
        )
    assert found(result) == network.truth(target, family)
    assert result.reached and result.distance == 6 and result.confidence_reached
    assert not result.partial and result.stopped is None
    probes = sent_probes(tmp_path)
    assert len(probes) == result.probes == sum(hop.sent for hop in result.hops)
    assert all("flow" in probe and "ttl" in probe for probe in probes)
    assert all(probe.get("protocol", "icmp") == protocol for probe in probes)
    assert not any("port" in probe for probe in probes)  # UDP: the flow picks the port
    assert {probe["flow"] for probe in probes} >= {"1", "2", "3"}
    assert result.hop(1).sent == probes_needed(1, 99)


async def test_the_helper_must_put_probes_in_flows(tmp_path: Path) -> None:
    command = fake_network(series(), tmp_path, "--feature", "flow=no")
    async with asyncio.timeout(LIMIT), Session(command=command) as session:
        with pytest.raises(FeatureNotSupportedError) as caught:
            await multipath_trace("127.0.0.1", session=session)
        assert (caught.value.feature, caught.value.value) == ("flow", "no")
        assert sent_probes(tmp_path) == []
        assert (await session.probe("127.0.0.1", ttl=9)).success  # the session goes on
    assert len(sent_probes(tmp_path)) == 1


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"confidence": 100}, ValueError, "confidence must be a percent above 0 and below 100"),
        ({"attempts": 11}, ValueError, "attempts must be from 1 to 10, got 11"),
        ({"gap_limit": 0}, ValueError, "gap_limit must be from 1 to 255, got 0"),
        ({"first_ttl": 0}, ValueError, "first_ttl must be from 1 to 255, got 0"),
        ({"rate": 0}, ValueError, "rate must be more than 0 probes per second"),
        ({"deadline": 0}, ValueError, "deadline must be a finite number of seconds > 0"),
        ({"protocol": "icmp", "port": 80}, ValueError, "port applies to udp, tcp and sctp"),
        ({"local_port": 4000}, TypeError, "unexpected keyword argument 'local_port'"),
    ],
)
async def test_bad_arguments_fail_before_any_helper_is_started(
    arguments: dict[str, object], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        await multipath_trace("127.0.0.1", helper="/nonexistent/helper", **arguments)  # type: ignore[arg-type]


async def test_node_control_everywhere_finds_the_same_with_more_probes(
    tmp_path: Path, series_session: Session
) -> None:
    lite = await multipath_trace("127.0.0.1", session=series_session, confidence=99)
    classic = await multipath_trace("127.0.0.1", session=series_session, confidence=99, lite=False)
    assert found(lite) == found(classic) == series().truth("127.0.0.1")
    assert lite.probes < classic.probes


async def test_branches_and_ttls_are_probed_at_once(tmp_path: Path) -> None:
    """Each answer comes 0.1 s after its probe: one probe at a time (scamper's way,
    without its 250 ms pause) would take probes x 0.1 s; the trace takes about the
    path's depth x 0.1 s."""
    network = series()
    command = fake_network(network, tmp_path, "--delay", "0.1")
    async with asyncio.timeout(LIMIT), Session(command=command) as session:
        began = time.monotonic()
        result = await multipath_trace("127.0.0.1", session=session, confidence=99)
        elapsed = time.monotonic() - began
    assert found(result) == network.truth("127.0.0.1")
    assert elapsed < 0.5 * result.probes * 0.1


async def test_the_budget_paces_the_probes(tmp_path: Path, series_session: Session) -> None:
    began = time.monotonic()
    result = await multipath_trace("127.0.0.1", session=series_session, rate=100)
    elapsed = time.monotonic() - began
    burst = 10  # a tenth of a second's worth
    assert result.confidence_reached
    assert elapsed >= (result.probes - burst) / 100 * 0.9


async def test_the_deadline_gives_up_and_says_the_result_is_partial(tmp_path: Path) -> None:
    network = build([["A"], ["B"], ["C"], ["E"], ["D"]], C={"silent": True})
    async with asyncio.timeout(LIMIT), Session(command=fake_network(network, tmp_path)) as session:
        began = time.monotonic()
        result = await multipath_trace("127.0.0.1", session=session, timeout=20, deadline=0.5)
        elapsed = time.monotonic() - began
        assert elapsed < 5  # the probes at the silent TTL wait 20 s each
        assert result.partial and result.stopped == "deadline" and not result.confidence_reached
        assert [hop.ttl for hop in result.hops] == [1, 2, 3]
        assert result.hop(3).is_silent and result.hop(3).packet_loss == 1.0
        assert result.probes == sum(hop.sent for hop in result.hops)
        text = tracelb_lines(result)
        assert text[-1] == f"stopped at the deadline after {result.probes} probes: partial result"
        assert json.loads(json.dumps(result.to_dict()))["partial"] is True
        # the session goes on; the given-up probes keep their tokens until answered
        after = await multipath_trace(
            "127.0.0.1", session=session, timeout=0.2, max_ttl=2, confidence=90
        )
        assert after.confidence_reached and not after.reached


async def test_a_per_packet_balancer_ends_and_says_what_it_saw(tmp_path: Path) -> None:
    network = build(
        [["A"], ["B1", "B2"], ["C1", "C2"], ["E"], ["D"]],
        [
            ("A", "B1"),
            ("A", "B2"),
            ("B1", "C1"),
            ("B2", "C2"),
            ("C1", "E"),
            ("C2", "E"),
            ("E", "D"),
        ],
        seed=7,
        A={"balance": "packet"},
    )
    async with asyncio.timeout(LIMIT), Session(command=fake_network(network, tmp_path)) as session:
        result = await multipath_trace("127.0.0.1", session=session, deadline=10)
    assert result.confidence_reached and result.hop(2).per_packet
    assert found(result)[0] == network.truth("127.0.0.1")[0]
    assert {link.ttl for link in result.links} == {1, 3, 4}  # none made up from 2 to 3
    assert (
        "TTL 2: per-packet load balancing (one flow, several answers): links through it are "
        "not known"
    ) in tracelb_lines(result)
    assert json.loads(json.dumps(result.to_dict()))["hops"][1]["per_packet"] is True


async def test_lost_answers_are_asked_again(tmp_path: Path) -> None:
    network = series(E1={"loss": 0.3}, C={"loss": 0.2})
    async with asyncio.timeout(LIMIT), Session(command=fake_network(network, tmp_path)) as session:
        result = await multipath_trace("127.0.0.1", session=session, timeout=0.2, attempts=3)
    assert found(result) == network.truth("127.0.0.1")
    again = [probe for hop in result.hops for probe in hop.probes if probe.attempt > 0]
    assert again and all(probe.attempt <= 2 for probe in again)
    assert result.hop(3).packet_loss > 0


# ----------------------------------------------------------------------------- output


async def test_text_json_and_dot(tmp_path: Path) -> None:
    network = series(C={"mpls": [[16, 0, 1, 1]]})
    async with asyncio.timeout(LIMIT), Session(command=fake_network(network, tmp_path)) as session:
        result = await multipath_trace("127.0.0.1", session=session, confidence=99)
    b = ", ".join(f"127.1.0.{n}" for n in (3, 4, 5, 6))
    assert tracelb_lines(result) == [
        f"multipath trace to 127.0.0.1 (127.0.0.1), 10 nodes, 13 links, {result.probes} "
        "probes, 99%",
        f"127.1.0.2 -> ({b}) -> 127.1.0.7 -> (127.1.0.8, 127.1.0.9) -> 127.1.0.10 -> 127.0.0.1",
    ]
    assert tracelb_lines(result, show_mpls=True)[1].startswith(
        f"127.1.0.2 -> ({b}) -> 127.1.0.7 <MPLS:L=16,E=0,S=1,T=1> -> "
    )
    assert str(result) == "\n".join(tracelb_lines(result))
    document = json.loads(json.dumps(result.to_dict()))
    assert set(document) >= {"host", "destination", "hops", "links", "probes", "confidence"}
    assert document["probes"] == result.probes and document["confidence"] == 99.0
    assert document["confidence_reached"] is True and document["partial"] is False
    assert {json.dumps(link, sort_keys=True) for link in document["links"]} == {
        json.dumps(link.to_dict(), sort_keys=True) for link in result.links
    }
    assert set(document["links"][0]) == {"ttl", "from", "to", "flows"}
    hop = document["hops"][2]
    assert hop["responders"][0]["address"] == "127.1.0.7"
    assert hop["responders"][0]["mpls"] == [
        {"label": 16, "traffic_class": 0, "bottom_of_stack": True, "ttl": 1}
    ]
    assert sorted(hop["responders"][0]["flows"]) == sorted({p["flow"] for p in hop["probes"]})
    dot = dot_lines(result)
    assert dot[0] == "digraph multipath {" and dot[-1] == "}"
    assert '  "127.1.0.7" [label="127.1.0.7\\nTTL 3"];' in dot
    assert '  "127.0.0.1" [label="127.0.0.1\\nTTL 6" shape=doubleoctagon];' in dot
    edges = [line for line in dot if " -> " in line]
    assert len(edges) == 13
    assert sum(int(line.rsplit('label="', 1)[1].split('"')[0]) for line in edges) == sum(
        len(link.flows) for link in result.links
    )


async def test_meshed_pairs_list_their_links(tmp_path: Path) -> None:
    network = build([["A"], ["B1", "B2"], ["C1", "C2"], ["E"], ["D"]], seed=3)
    async with asyncio.timeout(LIMIT), Session(command=fake_network(network, tmp_path)) as session:
        result = await multipath_trace("127.0.0.1", session=session, confidence=99)
    assert found(result) == network.truth("127.0.0.1")
    lines = tracelb_lines(result)
    b1, b2, c1, c2 = "127.1.0.3", "127.1.0.4", "127.1.0.5", "127.1.0.6"
    assert lines[1] == f"127.1.0.2 -> ({b1}, {b2}) -> ({c1}, {c2}) -> 127.1.0.7 -> 127.0.0.1"
    assert sorted(lines[2:]) == sorted(f"{b} -> {c}" for b in (b1, b2) for c in (c1, c2))


async def test_silent_hops_and_names(tmp_path: Path) -> None:
    network = build([["A"], ["B"], ["C"], ["D"]], B={"silent": True})

    class Names(NameResolver):
        """Names from a table (no DNS traffic from the tests)."""

        async def lookup(self, address: str) -> str | None:
            return {"127.1.0.4": "c.example"}.get(address)

    resolver = Names()
    async with asyncio.timeout(LIMIT), Session(command=fake_network(network, tmp_path)) as session:
        result = await multipath_trace(
            "127.0.0.1", session=session, timeout=0.2, resolve_names=True, name_resolver=resolver
        )
    assert tracelb_lines(result)[1] == "127.1.0.2 -> * -> 127.1.0.4 -> 127.0.0.1"
    assert [(link.ttl, link.source, link.target) for link in result.links] == [
        (1, "127.1.0.2", None),
        (2, None, "127.1.0.4"),
        (3, "127.1.0.4", "127.0.0.1"),
    ]
    assert result.hop(3).responders["127.1.0.4"].name == "c.example"
    assert '  "*2" [label="*\\nTTL 2"];' in dot_lines(result)


def test_the_feature_is_asked_at_open() -> None:
    assert "flow" in FEATURES


# ----------------------------------------------------------------------------- Paris


def path_of(network: Network, flow: int, target: str, family: int = 4) -> list[str]:
    """The addresses flow ``flow`` meets, hop by hop, up to ``target``."""
    routers = network.walk(flow, 255)
    return [
        target
        if router is routers[-1]
        else network.routers[router].address
        if family == 4
        else network.routers[router].address6
        for router in routers
    ]


@FAMILIES
@pytest.mark.parametrize("protocol", ["icmp", "udp", "tcp"])
async def test_a_paris_trace_is_one_path_where_a_classic_one_mixes_branches(
    tmp_path: Path, family: int, protocol: str
) -> None:
    network = series()
    target = TARGETS[family]
    logs = {"classic": tmp_path / "classic", "paris": tmp_path / "paris"}
    for log in logs.values():
        log.mkdir()
    # a session each: closing one waits for its helper, which has logged every probe
    # written to it by then (a trace's last probes may still be on their way at its end)
    async with asyncio.timeout(LIMIT):
        async with Session(command=fake_network(network, logs["classic"])) as session:
            classic = await traceroute(
                target, probes_per_hop=16, protocol=protocol, session=session, timeout=0.5
            )
        async with Session(command=fake_network(network, logs["paris"])) as session:
            paris = await traceroute(
                target, probes_per_hop=16, protocol=protocol, session=session, flow=7, timeout=0.5
            )
    # every probe of the classic trace is a new flow: hop 2 shows several branches
    assert len(classic.hop(2).responders) >= 2 and classic.flow is None
    # the Paris trace shows the one path of flow 7, one responder per hop
    assert [hop.address for hop in paris.hops] == path_of(network, 7, target, family)
    assert all(len(hop.responders) == 1 for hop in paris.hops)
    assert paris.reached and paris.flow == 7 and paris.to_dict()["flow"] == 7
    assert str(paris).splitlines()[0].endswith(f", {protocol}, flow 7")
    probes = sent_probes(logs["paris"])
    # every TTL at once, as a classic trace: all 30 sent, 16 each up to the destination
    # (those beyond it the trace may cancel before they are written once it has ended)
    ttls = collections.Counter(int(probe["ttl"]) for probe in probes)
    assert set(ttls) == set(range(1, 31)), ttls
    assert [ttls[ttl] for ttl in range(1, len(paris.hops) + 1)] == [16] * len(paris.hops)
    assert {probe["flow"] for probe in probes} == {"7"}
    assert not any("port" in probe for probe in probes)
    assert not any("flow" in probe for probe in sent_probes(logs["classic"]))


async def test_paris_alone_uses_flow_1(tmp_path: Path, series_session: Session) -> None:
    trace = await traceroute("127.0.0.1", session=series_session, paris=True, timeout=0.5)
    assert trace.flow == 1
    assert [hop.address for hop in trace.hops] == path_of(series(), 1, "127.0.0.1")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"flow": 65536}, ValueError, r"^flow must be from 0 to 65535, got 65536$"),
        ({"flow": -1}, ValueError, r"^flow must be from 0 to 65535, got -1$"),
        ({"flow": "1"}, TypeError, r"^flow must be an integer, got str '1'$"),
        ({"paris": "yes"}, TypeError, r"^paris must be True or False, got 'yes'$"),
    ],
)
async def test_bad_flows_are_refused_before_any_helper_is_started(
    arguments: dict[str, object], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        await traceroute("127.0.0.1", helper="/nonexistent/helper", **arguments)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        await anext(monitor("127.0.0.1", cycles=1, helper="/nonexistent/helper", **arguments))  # type: ignore[arg-type]


async def test_paris_needs_a_helper_with_flows(tmp_path: Path) -> None:
    command = fake_network(series(), tmp_path, "--feature", "flow=no")
    async with asyncio.timeout(LIMIT), Session(command=command) as session:
        with pytest.raises(FeatureNotSupportedError, match="flow"):
            await traceroute("127.0.0.1", session=session, paris=True)
        with pytest.raises(FeatureNotSupportedError, match="flow"):
            await anext(monitor("127.0.0.1", cycles=1, session=session, paris=True))
        assert sent_probes(tmp_path) == []
        assert (await traceroute("127.0.0.1", session=session, timeout=0.5)).reached
    assert sent_probes(tmp_path)


# ----------------------------------------------------------------------------- monitor


async def test_a_paris_monitor_keeps_one_router_per_row(
    tmp_path: Path, series_session: Session
) -> None:
    options = {"interval": 0.05, "timeout": 0.5, "session": series_session}
    classic = await last(monitor("127.0.0.1", cycles=12, **options))  # type: ignore[arg-type]
    paris = await last(monitor("127.0.0.1", cycles=3, paris=True, flow=5, **options))  # type: ignore[arg-type]
    assert len(classic.hop(2).responders) >= 2  # twelve cycles, each probe a new flow
    assert [hop.address for hop in paris.hops] == path_of(series(), 5, "127.0.0.1")
    assert all(len(hop.responders) == 1 for hop in paris.hops)
    assert paris.flow == 5 and paris.to_dict()["flow"] == 5 and classic.flow is None
    assert paris.reached and paris.hop(6).destination


async def test_flows_side_by_side_tell_which_path_loses(tmp_path: Path) -> None:
    network = series(B2={"loss": 0.5})
    lossy = network.routers["B2"].address
    async with asyncio.timeout(LIMIT), Session(command=fake_network(network, tmp_path)) as session:
        reports = [
            report
            async for report in monitor_flows(
                "127.0.0.1", 8, cycles=10, interval=0.02, timeout=0.2, session=session
            )
        ]
    assert [report.cycle for report in reports] == list(range(1, 11))
    final = reports[-1]
    assert final.final and final.reached
    assert [report.flow for report in final.flows] == list(range(1, 9))
    through = {report.flow: report.hop(2).address for report in final.flows}
    assert lossy in through.values() and len(set(through.values())) >= 2
    for report in final.flows:
        assert [hop.address for hop in report.hops] == path_of(
            network, report.flow or 0, "127.0.0.1"
        )
        loss = report.hop(2).loss_percent
        assert (loss > 0) == (through[report.flow] == lossy), (report.flow, loss)
        assert all(hop.loss_percent == 0 for hop in report.hops if hop.ttl != 2)
    document = json.loads(json.dumps(final.to_dict()))
    assert [flow["flow"] for flow in document["flows"]] == list(range(1, 9))
    text = str(final).splitlines()
    assert sum(line.startswith("HOST: ") for line in text) == 8
    assert text[0].split()[2:4] == ["(flow", "1)"]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"flows": 0}, ValueError, r"^flows must be from 1 to 1024, got 0$"),
        ({"flows": 2, "first_flow": 65535}, ValueError, r"^first_flow must be from 0 to 65534"),
        ({"flows": 2, "flow": 3}, TypeError, "chooses flow itself"),
        ({"flows": 2, "local_port": 4000}, TypeError, "chooses local_port itself"),
        ({"flows": 2, "bogus": 1}, TypeError, "unexpected keyword argument 'bogus'"),
    ],
)
async def test_bad_flow_monitors_are_refused(
    arguments: dict[str, object], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        await anext(
            monitor_flows("127.0.0.1", cycles=1, helper="/nonexistent/helper", **arguments)  # type: ignore[arg-type]
        )


async def last(reports: AsyncIterator[MonitorReport]) -> MonitorReport:
    seen = [report async for report in reports]
    assert seen
    return seen[-1]


# ----------------------------------------------------------------------------- command


REPO = Path(__file__).resolve().parent.parent
MTR_PACKET = "/usr/bin/mtr-packet"


def helper_file(network: Network, tmp_path: Path, *arguments: str) -> str:
    """An executable that runs the fake helper answering as ``network``."""
    script = tmp_path / "fake-helper"
    command = " ".join(shlex.quote(word) for word in fake_network(network, tmp_path, *arguments))
    script.write_text(f"#!/bin/sh\nexec {command}\n")
    script.chmod(0o755)
    return str(script)


def run_cli(arguments: list[str], helper: str) -> subprocess.CompletedProcess[str]:
    """``python3 -m brokerpkg ARGUMENTS`` from the worktree root, with ``helper``."""
    return subprocess.run(
        [sys.executable, "-m", "brokerpkg", *arguments],
        cwd=REPO,
        env=dict(os.environ, BROKERPKG_HELPER=helper),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_trace_multipath_text_json_and_dot(tmp_path: Path) -> None:
    helper = helper_file(series(), tmp_path)
    done = run_cli(["trace", "--multipath", "-n", "127.0.0.1"], helper)
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("multipath trace to 127.0.0.1 (127.0.0.1), 10 nodes, 13 links, ")
    assert lines[0].endswith(" probes, 95%") and len(lines) == 2
    assert lines[1].startswith("127.1.0.2 -> (127.1.0.3, 127.1.0.4, 127.1.0.5, 127.1.0.6) -> ")
    document = json.loads(run_cli(["trace", "--multipath", "-j", "127.0.0.1"], helper).stdout)
    assert document["confidence"] == 95.0 and document["reached"] is True
    assert len(document["links"]) == 13 and document["hops"][0]["sent"] == probes_needed(1)
    strict = json.loads(
        run_cli(["trace", "--multipath", "-j", "--confidence", "99", "127.0.0.1"], helper).stdout
    )
    assert strict["confidence"] == 99.0 and strict["hops"][0]["sent"] == probes_needed(1, 99)
    dot = run_cli(["trace", "--multipath", "--dot", "-n", "127.0.0.1"], helper).stdout
    assert dot.startswith("digraph multipath {\n") and dot.endswith("}\n")
    assert dot.count(" -> ") == 13


def test_trace_paris_is_one_flow(tmp_path: Path) -> None:
    network = series()
    helper = helper_file(network, tmp_path)
    done = run_cli(["trace", "--paris", "-u", "-n", "127.0.0.1"], helper)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ("traceroute to 127.0.0.1 (127.0.0.1), 30 hops max, 64 byte packets, flow 1")
    assert [line.split()[1] for line in lines[1:]] == path_of(network, 1, "127.0.0.1")
    assert all(line.count(" ms") == 3 for line in lines[1:])  # one responder per hop
    document = json.loads(run_cli(["trace", "--flow", "4", "-j", "127.0.0.1"], helper).stdout)
    assert document["flow"] == 4
    assert {probe["flow"] for probe in sent_probes(tmp_path)} == {"1", "4"}


def test_mtr_flows_report_csv_and_json(tmp_path: Path) -> None:
    network = series(B2={"loss": 0.5})
    helper = helper_file(network, tmp_path)
    common = ["-c", "4", "-i", "0.05", "-Z", "0.3", "-n", "127.0.0.1"]
    done = run_cli(["mtr", "--flows", "3", "-r", *common], helper)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    hosts = [line for line in lines if line.startswith("HOST: ")]
    assert [line.split()[2:4] for line in hosts] == [["(flow", f"{n})"] for n in (1, 2, 3)]
    for flow in (1, 2, 3):
        start = lines.index(hosts[flow - 1])
        rows = [line.split()[1] for line in lines[start + 1 : start + 7]]
        assert rows == path_of(network, flow, "127.0.0.1")
    csv = run_cli(["mtr", "--flows", "3", "-C", *common], helper).stdout.splitlines()
    assert csv[0].endswith(",StDev,Flow,")
    assert [row.rsplit(",", 1)[1] for row in csv[1:]] == ["1"] * 6 + ["2"] * 6 + ["3"] * 6
    document = json.loads(run_cli(["mtr", "--paris", "-j", *common], helper).stdout)
    assert [hub["flow"] for hub in document["report"]["hubs"]] == [1] * 6
    assert [hub["host"] for hub in document["report"]["hubs"]] == path_of(network, 1, "127.0.0.1")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["trace", "--confidence", "100", "127.0.0.1"],
            "brokerpkg trace: error: argument --confidence: 100 is out of range: "
            "give a percent above 0 and below 100",
        ),
        (
            ["trace", "--flow", "65536", "127.0.0.1"],
            "brokerpkg trace: error: argument --flow: 65536 is out of range: give 0 to 65535",
        ),
        (
            ["trace", "--rate", "0", "127.0.0.1"],
            "brokerpkg trace: error: argument --rate: 0 is out of range: "
            "give more than 0 probes per second",
        ),
        (
            ["mtr", "--flows", "0", "127.0.0.1"],
            "brokerpkg mtr: error: argument --flows: 0 is out of range: give 1 to 1024",
        ),
    ],
)
def test_usage_errors_of_the_flow_flags(arguments: list[str], message: str) -> None:
    done = run_cli(arguments, "/nonexistent")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == message


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["trace", "--confidence", "99", "127.0.0.1"],
            "brokerpkg trace: --confidence applies to --multipath traces only",
        ),
        (
            ["trace", "--dot", "127.0.0.1"],
            "brokerpkg trace: --dot applies to --multipath traces only",
        ),
        (
            ["trace", "--multipath", "--paris", "127.0.0.1"],
            "brokerpkg trace: --paris does not apply to --multipath (it chooses its own flows)",
        ),
        (
            ["trace", "--multipath", "-q", "3", "127.0.0.1"],
            "brokerpkg trace: -q does not apply to --multipath (it chooses its own flows)",
        ),
        (
            ["trace", "--multipath", "-u", "-L", "4000", "127.0.0.1"],
            "brokerpkg trace: -L does not apply to --multipath (the flows choose the ports)",
        ),
        (
            ["mtr", "--flows", "2", "-r", "-u", "-L", "4000", "127.0.0.1"],
            "brokerpkg mtr: -L does not apply to --flows (the flows choose the ports)",
        ),
    ],
)
def test_flags_that_cannot_go_together_are_refused(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    helper = helper_file(series(), tmp_path)
    done = run_cli(arguments, helper)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")
    document = json.loads(run_cli([arguments[0], "-j", *arguments[1:]], helper).stdout)
    assert document["error"] == message.split(": ", 1)[1]
    assert sent_probes(tmp_path) == []
    assert run_cli(["trace", "--paris", "-n", "127.0.0.1"], helper).returncode == 0


def test_json_and_dot_are_one_or_the_other(tmp_path: Path) -> None:
    helper = helper_file(series(), tmp_path)
    done = run_cli(["trace", "--multipath", "--dot", "-j", "127.0.0.1"], helper)
    assert (done.returncode, done.stderr) == (2, "brokerpkg trace: give -j or --dot, not both\n")
    assert json.loads(done.stdout) == {
        "error": "give -j or --dot, not both",
        "target": "127.0.0.1",
    }
    assert sent_probes(tmp_path) == []


@pytest.mark.parametrize(
    "arguments",
    [
        ["trace", "--paris", "127.0.0.1"],
        ["trace", "--multipath", "127.0.0.1"],
        ["mtr", "--flows", "2", "-r", "-c", "1", "127.0.0.1"],
    ],
)
def test_a_helper_without_flows_is_named(arguments: list[str]) -> None:
    if not os.access(MTR_PACKET, os.X_OK):
        pytest.skip("mtr-packet not installed (apt-get install mtr-tiny)")
    done = run_cli(arguments, MTR_PACKET)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        f"brokerpkg {arguments[0]}: --paris, --flow, --flows or --multipath needs the helper "
        "feature 'flow', which this helper does not support (check-support feature flow: "
        "no); `brokerpkg doctor` shows what the helper can do\n"
    )


def test_the_live_view_shows_each_flow() -> None:
    from datetime import UTC, datetime

    from brokerpkg import cli_format as fmt
    from brokerpkg.mtr import FlowsReport, MonitorState
    from brokerpkg.protocol import ProbeResult

    reports = []
    for flow, router in ((1, "127.1.0.3"), (2, "127.1.0.4")):
        state = MonitorState(max_ttl=2, flow=flow)
        for ttl, address, kind in ((1, router, "ttl-expired"), (2, "127.0.0.1", "reply")):
            state.probe_sent(ttl)
            state.probe_answered(ttl, ProbeResult(kind == "reply", kind, 0.5, address, []))
        reports.append(state.report("127.0.0.1", "127.0.0.1", 1, True))
    both = FlowsReport("127.0.0.1", "127.0.0.1", 1, True, tuple(reports))
    screen = fmt.mtr_screen_lines(
        both,
        local_host="vm",
        target="127.0.0.1",
        address="127.0.0.1",
        now=datetime(2026, 12, 1, tzinfo=UTC),
        width=80,
        height=40,
    )
    body = [line.split()[:2] for line in screen[5:]]
    assert body == [
        ["flow", "1"],
        ["1.", "127.1.0.3"],
        ["2.", "127.0.0.1"],
        ["flow", "2"],
        ["1.", "127.1.0.4"],
        ["2.", "127.0.0.1"],
    ]
    assert both.flow(2) is reports[1] and both.reached
    with pytest.raises(KeyError, match="no flow 3"):
        both.flow(3)


async def test_a_silent_end_stops_at_the_gap_limit(tmp_path: Path) -> None:
    network = build([["A"], ["B"], ["C"], ["D"]], C={"silent": True}, D={"silent": True})
    async with asyncio.timeout(LIMIT), Session(command=fake_network(network, tmp_path)) as session:
        result = await multipath_trace("127.0.0.1", session=session, timeout=0.1, gap_limit=2)
    assert [hop.ttl for hop in result.hops] == [1, 2, 3, 4]
    assert result.hop(3).is_silent and result.hop(4).is_silent
    assert result.confidence_reached and not result.reached and not result.partial
    assert tracelb_lines(result)[1:] == [
        "127.1.0.2 -> 127.1.0.3 -> * -> *",
        "destination not reached",
    ]
