"""The mtr-style monitor (brokerpkg.mtr): MonitorState's rules without I/O, then
monitor() in the lab, where the scripted responder's seeded losses, fixed delays and
changing hop addresses give the expected Loss%, Snt, Rcv and times, and its log tells
which TTLs were probed.  Probes go only to lab addresses, 127.0.0.1 and ::1.

A probe sent with TTL t reaches the responder (behind the chain's three routers) with
TTL t - 3, which is the number of the virtual hop that answers it (``RxEvent.hop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lab import Chain, virtual_hop, virtual_target

from brokerpkg import (
    HopStats,
    MonitorReport,
    NameResolver,
    ProbeSendError,
    Session,
    monitor,
    sync,
)
from brokerpkg.mtr import MonitorState
from brokerpkg.protocol import ProbeResult  # Session's; brokerpkg.ProbeResult is mtrpacket's

FAMILIES = pytest.mark.parametrize("family", [4, 6])
LIMIT = 30.0
ROUTERS = 3  # the session chain's
LINKS_MS = 2.0  # both ways over the lab's three routers, with room for a busy machine


@pytest.fixture
async def lab_session(chain: Chain, helper_path: str) -> AsyncIterator[Session]:
    """A session whose helper runs in the chain's client namespace."""
    async with Session(command=chain.exec_argv("client", [helper_path])) as session:
        yield session


def answer(
    word: str, responder: str | None = None, time_ms: float | None = None, ttl: int = 1
) -> ProbeResult:
    """A ProbeResult as the session builds it."""
    return ProbeResult(
        word == "reply", word, time_ms, responder, [], target="198.18.200.1", ttl=ttl
    )


def turnarounds(responder, dst: str) -> list[float]:
    """The responder's time (ms) from receiving each answered probe to ``dst`` (kernel
    timestamp) to having sent its answer, from its log, in arrival order."""
    responder.sync()
    times = []
    for event in responder.received(dst=dst):
        answers = responder.sent(rx=event.n)
        if answers:
            times.append((answers[0].ts_ns - event.ts_ns) / 1e6)
    return times


def router(ttl: int) -> str:
    return f"198.18.{ttl}.2"


async def collect(reports: Any) -> list[MonitorReport]:
    """Every report of a finite monitor, closing it at the end."""
    async with contextlib.aclosing(reports):
        return [report async for report in reports]


# ------------------------------------------------------------------ MonitorState


def test_the_window_grows_with_answers_and_stops_at_the_destination() -> None:
    state = MonitorState(first_ttl=1, max_ttl=30, max_unknown=3)
    assert state.limit() == 3  # nothing known: TTLs 1..3
    assert list(state.shown()) == [1]
    for ttl in (1, 2, 3):
        state.probe_sent(ttl)
    state.probe_answered(1, answer("ttl-expired", router(1), 0.1, 1))
    assert state.limit() == 4 and state.highest_known == 1
    state.probe_answered(3, answer("ttl-expired", router(3), 0.3, 3))
    assert state.limit() == 6  # max_unknown past the highest known, gaps allowed
    state.probe_answered(2, answer("no-reply", ttl=2))
    assert list(state.shown()) == [1, 2, 3, 4]  # one row past the highest known
    for ttl in (4, 5, 6):
        state.probe_sent(ttl)
    state.probe_answered(6, answer("reply", "198.18.200.1", 0.6, 6))
    assert state.destination_ttl == 6 and state.limit() == 6
    state.probe_answered(5, answer("reply", "198.18.200.1", 0.5, 5))
    assert state.destination_ttl == 5 and state.limit() == 5
    assert list(state.shown()) == [1, 2, 3, 4, 5]
    state.probe_withdrawn(4)  # cancelled beyond the destination: as if never sent
    assert state.hop_stats(4).sent == 0
    report = state.report("target", "198.18.200.1", 1, False)
    assert report.reached and [hop.ttl for hop in report.hops] == [1, 2, 3, 4, 5]
    assert report.hop(5).destination and report.hop(2).address is None


def test_max_ttl_caps_the_window() -> None:
    state = MonitorState(first_ttl=4, max_ttl=6, max_unknown=5)
    assert state.limit() == 6
    assert list(state.shown()) == [4]


def test_late_answers_count_for_their_own_probe_and_are_not_lost_meanwhile() -> None:
    state = MonitorState(first_ttl=1, max_ttl=5, max_unknown=5)
    for _ in range(3):
        state.probe_sent(2)
    row = state.hop_stats(2)
    assert (row.sent, row.pending, row.received, row.lost, row.loss_percent) == (3, 3, 0, 0, 0.0)
    state.probe_answered(2, answer("ttl-expired", router(2), 900.0, 2))  # late, from cycle 1
    state.probe_answered(2, answer("no-reply", ttl=2))
    row = state.hop_stats(2)
    assert (row.sent, row.pending, row.received, row.lost) == (3, 1, 1, 1)
    assert row.loss_percent == 50.0  # 1 lost of the 2 settled (mtr excludes those in transit)
    state.probe_abandoned(2)  # the end: given up, counted lost
    row = state.hop_stats(2)
    assert (row.pending, row.lost, row.loss_percent) == (0, 2, pytest.approx(200 / 3))  # type: ignore[comparison-overlap]
    with pytest.raises(ValueError, match="no probe outstanding"):
        state.probe_answered(2, answer("no-reply", ttl=2))
    with pytest.raises(ValueError, match="outside"):
        state.probe_sent(6)


def test_hop_columns_are_mtrs_for_the_hand_vector() -> None:
    # 20, 60, 30, 80 ms (see tests/test_stats.py): Last 80, Avg 47.5, Best 20, Wrst 80,
    # StDev sqrt(2275 / 3), Jttr 50, Javg 120 / 4 = 30, Jmax 50, Jint 7.080078125.
    state = MonitorState(first_ttl=1, max_ttl=3)
    for rtt in (20.0, 60.0, 30.0, 80.0):
        state.probe_sent(3)
        state.probe_answered(3, answer("reply", "198.18.200.1", rtt, 3))
    row = state.hop_stats(3)
    assert (row.sent, row.received, row.lost, row.loss_percent) == (4, 4, 0, 0.0)
    assert (row.last, row.avg, row.best, row.worst) == (80.0, 47.5, 20.0, 80.0)
    assert row.stdev == pytest.approx(math.sqrt(2275 / 3))
    assert (row.jitter, row.javg, row.jmax, row.jint) == (50.0, 30.0, 50.0, 7.080078125)


def test_a_hop_that_changes_address_keeps_one_row_with_every_responder() -> None:
    state = MonitorState(first_ttl=1, max_ttl=3)
    for address in ("198.18.2.2", "198.18.2.2", "198.18.5.2", "198.18.2.2", "198.18.5.2"):
        state.probe_sent(2)
        state.probe_answered(2, answer("ttl-expired", address, 1.0, 2))
    row = state.hop_stats(2, {"198.18.5.2": "rb.example"})
    assert row.received == 5 and row.address == "198.18.5.2" and row.name == "rb.example"
    assert [(r.address, r.received, r.name) for r in row.responders] == [
        ("198.18.2.2", 3, None),
        ("198.18.5.2", 2, "rb.example"),
    ]


def test_destination_unreachable_ends_the_path() -> None:
    state = MonitorState(first_ttl=1, max_ttl=30, max_unknown=5)
    state.probe_sent(1)
    state.probe_sent(2)
    state.probe_answered(1, answer("ttl-expired", router(1), 0.1, 1))
    state.probe_answered(2, answer("no-route", router(2), 0.2, 2))
    assert state.destination_ttl == 2 and state.limit() == 2
    row = state.hop_stats(2)
    assert row.received == 1 and not row.destination  # counted, but not the destination


def test_a_probe_that_was_never_sent_is_not_counted() -> None:
    state = MonitorState(first_ttl=1, max_ttl=3)
    state.probe_sent(1)
    with pytest.raises(ProbeSendError):
        state.probe_answered(1, answer("network-down", ttl=1))
    assert state.hop_stats(1).sent == 0


def test_report_text_and_json() -> None:
    state = MonitorState(first_ttl=1, max_ttl=3)
    state.probe_sent(1)
    state.probe_answered(1, answer("ttl-expired", router(1), 1.25, 1))
    state.probe_sent(2)
    state.probe_answered(2, answer("no-reply", ttl=2))
    report = state.report("target", "198.18.200.1", 1, True)
    # mtr -r's table: this host's name, mtr's columns (no Rcv) at mtr's offsets.
    host = f"HOST: {socket.gethostname()}"[:33]
    assert str(report).splitlines() == [
        f"{host:<33} Loss%   Snt   Last   Avg  Best  Wrst StDev",
        "  1.|-- 198.18.1.2                 0.0%     1    1.2   1.2   1.2   1.2   0.0",
        "  2.|-- ???                       100.0     1    0.0   0.0   0.0   0.0   0.0",
    ]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["final"] and data["hops"][1]["loss_percent"] == 100.0
    assert data["hops"][0]["stdev"] is None and data["hops"][0]["responders"][0]["received"] == 1


async def test_bad_arguments_are_refused() -> None:
    cases: tuple[tuple[dict[str, Any], str], ...] = (
        ({"cycles": 0}, "cycles"),
        ({"interval": 0}, "interval"),
        ({"max_unknown": 0}, "max_unknown"),
        ({"grace": -1}, "grace"),
        ({"first_ttl": 9, "max_ttl": 3}, "max_ttl"),
        ({"retries": -1}, "retries must be from 0 to 10, got -1"),
    )
    for arguments, match in cases:
        with pytest.raises(ValueError, match=match):
            await collect(monitor("127.0.0.1", helper="/nonexistent", **arguments))


def test_sync_monitor_needs_cycles() -> None:
    with pytest.raises(ValueError, match="needs cycles"):
        sync.monitor("127.0.0.1", helper="/nonexistent")


# ------------------------------------------------------------------ lab


@FAMILIES
async def test_seeded_loss_gives_exact_loss_sent_and_received(
    responder, lab_session: Session, family: int
) -> None:
    # Hops 4, 5 (virtual hops) and 6 (the target): every cycle sends TTL 4, 5, 6 at once,
    # in that order, and the responder draws its seeded random numbers in arrival order.
    dst, cycles, drop, seed = virtual_target(131, family), 12, 0.3, 5
    responder.set(dst, hops=2, drop=drop, seed=seed)
    draws = random.Random(seed)
    dropped = [[draws.random() < drop for _ in range(3)] for _ in range(cycles)]
    lost = [sum(cycle[k] for cycle in dropped) for k in range(3)]
    assert sum(lost) > 3 and all(n < cycles for n in lost)
    async with asyncio.timeout(LIMIT):
        reports = await collect(
            monitor(
                dst,
                cycles=cycles,
                interval=0.1,
                first_ttl=4,
                max_ttl=6,
                max_unknown=3,
                timeout=0.5,
                grace=2.0,
                session=lab_session,
            )
        )
    assert [report.cycle for report in reports] == list(range(1, cycles + 1))
    assert [report.final for report in reports] == [False] * (cycles - 1) + [True]
    for number, report in enumerate(reports, start=1):
        for k, ttl in enumerate((4, 5, 6)):
            if ttl not in [hop.ttl for hop in report.hops]:
                continue  # the report shows one row past the highest answered hop
            row = report.hop(ttl)
            assert row.sent == number
            # Answers come at once; drops stay "in transit" until their 0.5 s timeout.
            assert row.received == number - sum(cycle[k] for cycle in dropped[:number])
            assert row.lost + row.pending + row.received == row.sent
            assert row.lost <= sum(cycle[k] for cycle in dropped[:number])
    final = reports[-1]
    assert [hop.ttl for hop in final.hops] == [4, 5, 6] and final.reached
    assert [hop.address for hop in final.hops] == [
        virtual_hop(1, family),
        virtual_hop(2, family),
        dst,
    ]
    for k, row in enumerate(final.hops):
        assert (row.sent, row.received, row.pending, row.lost) == (
            cycles,
            cycles - lost[k],
            0,
            lost[k],
        )
        assert row.loss_percent == pytest.approx(100 * lost[k] / cycles)
    assert len(responder.received(dst=dst)) == 3 * cycles


@FAMILIES
async def test_late_answers_are_counted_for_their_own_probe(
    chain: Chain, responder, lab_session: Session, family: int
) -> None:
    dst, cycles = virtual_target(132, family), 6
    responder.set(dst, delay=0.35)  # 3.5 intervals late
    async with asyncio.timeout(LIMIT):
        reports = await collect(
            monitor(dst, cycles=cycles, interval=0.1, timeout=1.0, grace=2.0, session=lab_session)
        )
    for report in reports[:-1]:
        for row in report.hops:
            assert row.loss_percent == 0.0 and row.lost == 0  # late is not lost
    early = reports[1].hop(4)  # 0.2 s in: nothing back from the target yet
    assert (early.received, early.pending) == (0, 2)
    mid = reports[4].hop(4)  # 0.5 s in: the first answers arrived, the rest in transit
    assert mid.sent == 5 and 1 <= mid.received <= 3 and mid.pending == 5 - mid.received
    final = reports[-1]
    assert final.final and final.reached
    assert [hop.address for hop in final.hops] == [*chain.path(family)[:3], dst]
    for row in final.hops:
        assert (row.sent, row.received, row.lost, row.pending) == (cycles, cycles, 0, 0)
    target = final.hop(4)
    assert target.best is not None and target.best >= 350.0
    for rtt in (target.best, target.worst):
        assert rtt is not None and rtt <= max(turnarounds(responder, dst)) + LINKS_MS


@FAMILIES
async def test_hand_computed_columns_from_per_cycle_delays(
    responder, lab_session: Session, family: int
) -> None:
    # The target's delay changes between cycles: 20, 60, 30, 80 ms (tests/test_stats.py's
    # vector): Last 80, Avg 47.5, Best 20, Wrst 80, StDev 27.54, Jttr 50, Javg 30, Jmax 50,
    # Jint 7.08.  Each cycle's RTT (its report's Last) lies between the delay and the
    # responder's turnaround for that probe plus the links; the columns are checked by
    # hand from those RTTs, and against the delays' values within the measured excess.
    dst, delays = virtual_target(133, family), [0.02, 0.06, 0.03, 0.08]
    responder.set(dst, delay=delays[0])
    reports = []
    async with asyncio.timeout(LIMIT):
        stream = monitor(
            dst, cycles=4, interval=0.25, first_ttl=4, max_ttl=4, timeout=1.0, session=lab_session
        )
        async with contextlib.aclosing(stream):
            async for report in stream:
                reports.append(report)
                if report.cycle < 4:  # before the next cycle is sent
                    responder.set(dst, delay=delays[report.cycle])
    rtts = [report.hop(4).last for report in reports]
    assert all(rtt is not None for rtt in rtts)
    x: list[float] = [rtt for rtt in rtts if rtt is not None]
    for rtt, delay, turnaround in zip(x, delays, turnarounds(responder, dst), strict=True):
        assert delay * 1000 <= rtt <= turnaround + LINKS_MS
    excess = max(rtt - delay * 1000 for rtt, delay in zip(x, delays, strict=True))
    row = reports[-1].hop(4)
    assert (row.sent, row.received, row.address) == (4, 4, dst)
    mean = sum(x) / 4
    diffs = [abs(x[1] - x[0]), abs(x[2] - x[1]), abs(x[3] - x[2])]
    jint = 0.0
    for diff in diffs:
        jint += (diff - jint) / 16
    assert (row.last, row.best, row.worst) == (x[3], min(x), max(x))
    assert row.avg == pytest.approx(mean, abs=1e-9)
    assert row.stdev == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in x) / 3), abs=1e-9)
    assert (row.jitter, row.jmax) == (pytest.approx(diffs[2]), pytest.approx(max(diffs)))  # type: ignore[comparison-overlap]
    assert row.javg == pytest.approx(sum(diffs) / 4, abs=1e-9)
    assert row.jint == pytest.approx(jint, abs=1e-9)
    assert 80.0 <= row.last <= 80.0 + excess  # type: ignore[operator]
    assert 47.5 <= row.avg <= 47.5 + excess  # type: ignore[operator]
    assert 20.0 <= row.best <= 20.0 + excess  # type: ignore[operator]
    assert row.stdev == pytest.approx(27.538, abs=excess)
    assert row.jitter == pytest.approx(50.0, abs=excess)
    assert row.javg == pytest.approx(30.0, abs=excess)
    assert row.jmax == pytest.approx(50.0, abs=excess)
    assert row.jint == pytest.approx(7.080078125, abs=excess * 3 / 16)


@FAMILIES
async def test_a_hop_that_changes_address_lists_both(
    responder, lab_session: Session, family: int
) -> None:
    dst = virtual_target(134, family)
    first, second = virtual_hop(41, family), virtual_hop(42, family)
    responder.set(dst, hops=[{f"addr{family}": first}])
    async with asyncio.timeout(LIMIT):
        stream = monitor(
            dst, cycles=5, interval=0.15, first_ttl=4, timeout=1.0, session=lab_session
        )
        async with contextlib.aclosing(stream):
            async for report in stream:
                if report.cycle == 2:
                    responder.set(dst, hops=[{f"addr{family}": second}])
    row: HopStats = report.hop(4)
    assert row.address == second and row.received == 5
    assert [(r.address, r.received) for r in row.responders] == [(first, 2), (second, 3)]
    assert "    |  `|-- " + first in str(report)  # mtr's extra line for the other address


@FAMILIES
async def test_max_unknown_stops_probing_past_silent_hops(
    responder, lab_session: Session, family: int
) -> None:
    # Virtual hop 1 (TTL 4) answers; TTLs 5.. are silent: with max_unknown 3 only TTLs up
    # to 4 + 3 = 7 are ever probed, i.e. up to virtual hop 4 at the responder.
    dst, cycles = virtual_target(135, family), 4
    responder.set(dst, hops=[{}] + [{"silent": True}] * 10, answer="none")
    async with asyncio.timeout(LIMIT):
        reports = await collect(
            monitor(
                dst,
                cycles=cycles,
                interval=0.1,
                max_unknown=3,
                timeout=0.3,
                grace=1.0,
                session=lab_session,
            )
        )
    responder.sync()
    seen = [event.hop for event in responder.received(dst=dst)]
    assert sorted(set(seen)) == [1, 2, 3, 4]
    assert all(seen.count(hop) == cycles for hop in (1, 2, 3, 4))  # each TTL once a cycle
    final = reports[-1]
    assert not final.reached
    assert [hop.ttl for hop in final.hops] == [1, 2, 3, 4, 5]  # one ??? row, as mtr
    assert final.hop(5).address is None and final.hop(5).loss_percent == 100.0
    assert final.hop(5).sent == cycles


@FAMILIES
async def test_nothing_beyond_the_destination_is_probed_after_it_is_found(
    responder, lab_session: Session, family: int
) -> None:
    dst, cycles = virtual_target(136, family), 5
    responder.set(dst, hops=1)  # target at TTL 5
    async with asyncio.timeout(LIMIT):
        reports = await collect(
            monitor(dst, cycles=cycles, interval=0.1, max_ttl=30, timeout=0.5, session=lab_session)
        )
    assert all(report.reached for report in reports)
    assert all([hop.ttl for hop in report.hops] == [1, 2, 3, 4, 5] for report in reports)
    final = reports[-1]
    assert all((row.sent, row.received) == (cycles, cycles) for row in final.hops)
    responder.sync()
    ttls = [event.packet.ttl + ROUTERS for event in responder.received(dst=dst)]
    assert ttls.count(4) == cycles and ttls.count(5) == cycles
    # Beyond TTL 5 only the first cycle's window, sent before the destination answered.
    assert len([ttl for ttl in ttls if ttl > 5]) <= 5
    assert max(ttls) <= 10


async def test_names_are_filled_in_as_they_are_found(
    chain: Chain, responder, lab_session: Session
) -> None:
    class Table(NameResolver):
        async def lookup(self, address: str) -> str | None:
            return {chain.hop_address(1): "r1.lab"}.get(address)

    names = Table()
    async with asyncio.timeout(LIMIT):
        reports = await collect(
            monitor(
                chain.server_address(),
                cycles=3,
                interval=0.1,
                timeout=0.5,
                session=lab_session,
                resolve_names=True,
                name_resolver=names,
            )
        )
    assert reports[-1].hop(1).name == "r1.lab"
    assert reports[-1].hop(2).name is None
    assert "r1.lab" in str(reports[-1])


async def test_local_failures_end_the_iteration(responder, lab_session: Session) -> None:
    with pytest.raises(ProbeSendError, match="not assigned"):
        await collect(
            monitor(
                virtual_target(137),
                cycles=3,
                interval=0.1,
                local_ip="198.18.99.1",
                session=lab_session,
            )
        )
    assert responder.received(dst=virtual_target(137)) == []


async def test_closing_an_endless_monitor_stops_its_probes(responder, lab_session: Session) -> None:
    dst = virtual_target(138)
    responder.set(dst, answer="none")
    async with asyncio.timeout(LIMIT):
        stream = monitor(
            dst, interval=0.05, first_ttl=4, max_ttl=4, timeout=5.0, session=lab_session
        )
        async with contextlib.aclosing(stream):
            async for report in stream:
                if report.cycle == 3:
                    break
        responder.sync()
        sent = len(responder.received(dst=dst))
        await asyncio.sleep(0.3)
    responder.sync()
    assert sent == 3 and len(responder.received(dst=dst)) == 3


def test_sync_monitor_returns_every_report(helper_path: str) -> None:
    reports = sync.monitor("127.0.0.1", cycles=2, interval=0.05, timeout=1.0, helper=helper_path)
    assert [(report.cycle, report.final) for report in reports] == [(1, False), (2, True)]
    assert reports[-1].reached and reports[-1].hop(1).received == 2
    six = sync.monitor("::1", 1, protocol="udp", helper=helper_path)
    assert six[0].final and six[0].hop(1).address == "::1"
