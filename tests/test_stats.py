"""brokerpkg.stats against hand-computed vectors, icmplib's own Host, and the statistics
module.  Pure: no helper, no lab.

Vector A = [20, 60, 30, 80] ms, by hand:
    min 20, max 80, mean 190 / 4 = 47.5
    deviations -27.5, 12.5, -17.5, 32.5; squares 756.25 + 156.25 + 306.25 + 1056.25 = 2275
    sample stdev sqrt(2275 / 3) = 27.537852736430509..., population sqrt(2275 / 4) = 23.848...
    |differences| 40, 30, 50: icmplib jitter 120 / 3 = 40; mtr Javg 120 / 4 = 30 (the first
    reply counts as 0); Jttr (last) 50; Jmax 50
    RFC 3550 J: 0 -> 0 + 40/16 = 2.5 -> 2.5 + 27.5/16 = 4.21875 -> 4.21875 + 45.78125/16
    = 7.080078125
"""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from brokerpkg import stats

A = [20.0, 60.0, 30.0, 80.0]
A_SAMPLE_STDEV = math.sqrt(2275 / 3)
A_POPULATION_STDEV = math.sqrt(2275 / 4)


def test_hand_computed_vector() -> None:
    assert stats.minimum(A) == 20.0
    assert stats.maximum(A) == 80.0
    assert stats.mean(A) == 47.5
    assert stats.stdev(A) == pytest.approx(27.537852736430509, abs=1e-12)
    assert stats.stdev(A) == pytest.approx(A_SAMPLE_STDEV, abs=1e-12)
    assert stats.pstdev(A) == pytest.approx(A_POPULATION_STDEV, abs=1e-12)
    assert stats.jitter(A) == 40.0


def test_summary_bundles_the_same_values() -> None:
    summary = stats.summarize(A)
    assert summary == stats.RttSummary(
        count=4,
        minimum=20.0,
        mean=47.5,
        maximum=80.0,
        stdev=stats.stdev(A),
        pstdev=stats.pstdev(A),
        jitter=40.0,
    )
    assert summary.to_dict()["jitter"] == 40.0


def test_packet_loss_is_a_fraction() -> None:
    assert stats.packet_loss(4, 3) == 0.25
    assert stats.packet_loss(10, 7) == pytest.approx(0.3)
    assert stats.packet_loss(3, 0) == 1.0
    assert stats.packet_loss(5, 5) == 0.0
    assert stats.packet_loss(0, 0) == 0.0  # icmplib: nothing sent is no loss
    with pytest.raises(ValueError, match="exceed"):
        stats.packet_loss(2, 3)
    with pytest.raises(ValueError, match=">= 0"):
        stats.packet_loss(-1, 0)


def test_undefined_values_are_none() -> None:
    assert stats.summarize([]) == stats.RttSummary(0, None, None, None, None, None, None)
    one = stats.summarize([5.0])
    assert (one.minimum, one.mean, one.maximum) == (5.0, 5.0, 5.0)
    assert one.pstdev == 0.0  # population of one: no spread
    assert one.stdev is None  # sample of one: undefined (mtr prints 0)
    assert one.jitter is None  # no consecutive pair (icmplib gives 0.0)


def test_constant_samples_have_no_spread() -> None:
    flat = [1.5, 1.5, 1.5]
    assert stats.stdev(flat) == 0.0
    assert stats.pstdev(flat) == 0.0
    assert stats.jitter(flat) == 0.0


def test_order_matters_for_jitter_only() -> None:
    ordered, shuffled = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    assert stats.jitter(ordered) == 1.0
    assert stats.jitter(shuffled) == pytest.approx((2 + 1 + 2) / 3)
    assert stats.stdev(ordered) == stats.stdev(shuffled)


@pytest.mark.parametrize(
    "rtts",
    [
        A,
        [0.031, 0.029, 0.044, 0.027, 0.030],
        [12.25, 11.0, 13.5, 9.75, 16.0, 11.25, 12.0],
        [1e-3, 1e3, 5.0],
    ],
)
def test_standard_deviations_agree_with_the_statistics_module(rtts: list[float]) -> None:
    assert stats.stdev(rtts) == pytest.approx(statistics.stdev(rtts), rel=1e-12)
    assert stats.pstdev(rtts) == pytest.approx(statistics.pstdev(rtts), rel=1e-12)
    assert stats.mean(rtts) == pytest.approx(statistics.fmean(rtts), rel=1e-15)


@pytest.mark.parametrize(
    ("sent", "rtts"),
    [
        (4, A),
        (10, [11.595, 13.135, 9.614, 16.018, 11.960, 5.761, 16.207, 11.937, 12.098]),
        (3, []),
        (1, [7.25]),
        (0, []),
    ],
)
def test_definitions_are_icmplibs(sent: int, rtts: list[float]) -> None:
    icmplib = pytest.importorskip("icmplib")
    host = icmplib.Host("192.0.2.1", sent, rtts)
    # icmplib rounds (3 decimals for times, 2 for loss) and gives 0.0 where we give None.
    assert round(stats.packet_loss(sent, len(rtts)), 2) == host.packet_loss
    for ours, theirs in (
        (stats.minimum(rtts), host.min_rtt),
        (stats.mean(rtts), host.avg_rtt),
        (stats.maximum(rtts), host.max_rtt),
        (stats.jitter(rtts), host.jitter),
    ):
        assert round(ours if ours is not None else 0.0, 3) == theirs


def test_running_stats_are_mtrs_columns_for_the_hand_vector() -> None:
    running = stats.RunningStats()
    for rtt in A:
        running.add(rtt)
    assert running.count == 4
    assert running.last == 80.0
    assert (running.best, running.worst) == (20.0, 80.0)
    assert running.mean == 47.5
    assert running.stdev == pytest.approx(A_SAMPLE_STDEV, abs=1e-12)
    assert running.jitter == 50.0
    assert running.javg == 30.0
    assert running.jmax == 50.0
    assert running.interarrival_jitter == 7.080078125


def test_running_stats_step_by_step() -> None:
    running = stats.RunningStats()
    assert (running.count, running.last, running.mean, running.stdev, running.jitter) == (
        0,
        None,
        None,
        None,
        None,
    )
    running.add(10.0)
    assert (running.last, running.best, running.worst, running.mean) == (10.0,) * 4
    # (a tuple: asserting each `is None` would narrow them for mypy past the next add)
    assert (running.stdev, running.jitter, running.javg) == (None, None, None)
    running.add(14.0)
    assert running.jitter == 4.0
    assert running.javg == 2.0  # (0 + 4) / 2, mtr's running mean
    assert running.interarrival_jitter == 0.25
    assert running.stdev == pytest.approx(math.sqrt(8.0))  # (4 + 4) / 1


def test_running_stats_match_the_batch_functions_on_long_input() -> None:
    values = [((i * 7919) % 1000) / 10 + 0.5 for i in range(2000)]
    running = stats.RunningStats()
    for value in values:
        running.add(value)
    assert running.mean == pytest.approx(stats.mean(values), rel=1e-12)
    assert running.stdev == pytest.approx(stats.stdev(values), rel=1e-9)
    assert running.best == min(values) and running.worst == max(values)
    diffs = [abs(b - a) for a, b in itertools.pairwise(values)]
    assert running.javg == pytest.approx(sum(diffs) / len(values), rel=1e-9)
    assert running.jmax == max(diffs)
    j = 0.0
    for d in diffs:
        j += (d - j) / 16
    assert running.interarrival_jitter == pytest.approx(j, rel=1e-12)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_running_stats_refuse_impossible_times(bad: float) -> None:
    with pytest.raises(ValueError, match="round-trip time"):
        stats.RunningStats().add(bad)
