"""brokerpkg.waiting: traceroute's -w rules and the further tries, on a fake clock.

Times are plain numbers handed to the plan (seconds since the trace started); nothing
here sleeps or sends anything.
"""

from __future__ import annotations

import pytest

from brokerpkg.waiting import (
    AHEAD,
    PRECISION,
    TracePlan,
    Try,
    Wait,
    parse_wait,
    retry_offsets,
    wants_retry,
)


def answer_all(plan: TracePlan, tries: list[Try], at: float, *, end: int | None = None) -> None:
    """Answer every try (at ``at``); the one at TTL ``end`` ends the path."""
    for probe in tries:
        if probe in plan.outstanding:
            plan.answered(probe, at, ends_path=probe.ttl == end)


# ------------------------------------------------------------------ -w MAX,HERE,NEAR


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5,3,10", Wait(5.0, 3.0, 10.0)),
        ("5/3/10", Wait(5.0, 3.0, 10.0)),
        ("2", Wait(2.0, 0.0, 0.0)),  # MAX alone: HERE and NEAR off, as traceroute
        ("1.5,2", Wait(1.5, 2.0, 0.0)),
        ("0.2,0,4", Wait(0.2, 0.0, 4.0)),
    ],
)
def test_wait_is_parsed_as_traceroute_parses_it(text: str, expected: Wait) -> None:
    assert parse_wait(text) == expected
    assert Wait.of(text) == expected
    assert parse_wait(str(expected)) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "wait must be MAX\\[,HERE,NEAR\\] \\(numbers\\), got ''"),
        ("5,3,10,1", "wait must be MAX\\[,HERE,NEAR\\], got '5,3,10,1'"),
        ("five", "got 'five'"),
        ("0", "wait MAX must be a number of seconds > 0 and <= 3600, got 0"),
        ("3601", "got 3601"),
        ("nan", "wait MAX"),
        ("5,-1", "wait HERE must be a finite factor >= 0, got -1"),
        ("5,3,inf", "wait NEAR must be a finite factor >= 0, got inf"),
        (-1, "wait MAX"),
        ((5, 3, -2), "wait NEAR"),
    ],
)
def test_bad_waits_are_refused_with_what_is_wrong(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Wait.of(value)


def test_wait_of_numbers_and_sequences() -> None:
    assert Wait.of(3) == Wait(3.0, 0.0, 0.0)
    assert Wait.of([5, 3, 10]) == Wait()
    assert Wait.of(Wait(1, 2, 3)) == Wait(1.0, 2.0, 3.0)
    for bad in (True, None, b"5", (5, 3), ("5", 3, 10)):
        with pytest.raises(TypeError):
            Wait.of(bad)


def test_here_then_near_then_max_and_never_more_than_max() -> None:
    wait = Wait(5.0, 3.0, 10.0)
    assert wait.limit(None, None) == 5.0
    assert wait.limit(0.010, 0.5) == pytest.approx(3 * (0.010 + PRECISION))  # HERE first
    assert wait.limit(None, 0.020) == pytest.approx(10 * (0.020 + PRECISION))
    assert wait.limit(None, 2.0) == 5.0 and wait.limit(4.0, None) == 5.0
    assert Wait(5.0, 0.0, 10.0).limit(0.01, None) == 5.0  # HERE off
    assert Wait(5.0, 0.0, 0.0).limit(0.01, 0.01) == 5.0


# ------------------------------------------------------------------ further tries


def test_retry_offsets_double_their_gaps_and_stay_before_max() -> None:
    assert retry_offsets(3, 5.0) == (0.25, 0.75, 1.75)
    assert retry_offsets(5, 5.0) == (0.25, 0.75, 1.75, 3.75)
    assert retry_offsets(3, 1.0) == (0.25, 0.75)
    assert retry_offsets(0, 5.0) == () and retry_offsets(3, 0.25) == ()


def test_which_silent_ttls_want_a_further_try() -> None:
    assert wants_retry(3, farthest=9, destination_known=True)  # below an answer
    assert not wants_retry(10, farthest=9, destination_known=True)
    assert wants_retry(9 + AHEAD, farthest=9, destination_known=False)  # ahead, no dest
    assert not wants_retry(10 + AHEAD, farthest=9, destination_known=False)
    assert wants_retry(1, farthest=0, destination_known=False, ahead=1)
    assert not wants_retry(2, farthest=0, destination_known=False, ahead=1)


def test_a_warm_path_is_sent_at_once_and_ends_with_its_last_answer() -> None:
    plan = TracePlan(1, 30, 3)
    tries = plan.start(0.0)
    assert len(tries) == 90 and {probe.sent_at for probe in tries} == {0.0}
    assert [probe.ttl for probe in tries[:30]] == list(range(1, 31))  # first probes first
    # finished is compared, not negated: mypy would take `not plan.finished` to fix the
    # property at False for the rest of the test, past the answers that finish the plan
    assert (plan.finished,) == (False,)
    answer_all(plan, [probe for probe in tries if probe.ttl <= 8], 0.002)
    reply = next(probe for probe in tries if probe.ttl == 9)
    beyond = plan.answered(reply, 0.003, ends_path=True)
    assert {probe.ttl for probe in beyond} == set(range(10, 31)) and len(beyond) == 63
    assert (plan.end, plan.finished) == (9, False)  # TTL 9's other two are out
    answer_all(plan, [probe for probe in tries if probe.ttl == 9], 0.003)
    assert plan.finished and plan.next_event() is None
    assert plan.due(10.0) == [] and plan.expired(10.0) == []


def test_silent_ttls_below_the_answers_are_tried_again_and_the_wait_shrinks() -> None:
    # TTL 2 lost its probes (a router resolving its next hop); TTLs 1 and 3 answer.
    plan = TracePlan(1, 3, 2)
    tries = plan.start(0.0)
    answer_all(plan, [probe for probe in tries if probe.ttl != 2], 0.010, end=3)
    # NEAR: 10 x (10 ms + 1 ms) after sending, instead of MAX.
    assert plan.next_event() == pytest.approx(0.110)
    assert plan.expired(0.1) == []
    given_up = plan.expired(0.111)
    assert sorted(given_up) == sorted(probe for probe in tries if probe.ttl == 2)
    assert not plan.finished and plan.next_event() == 0.25
    assert plan.due(0.2) == []
    second = plan.due(0.25)
    assert second == [Try(2, 0, 0.25, 1), Try(2, 1, 0.25, 1)]
    assert plan.next_event() == pytest.approx(0.25 + 0.110)
    plan.expired(0.5)
    assert plan.due(0.74) == [] and len(plan.due(0.8)) == 2  # 0.75 s, sent late: now
    third = list(plan.outstanding)
    assert {probe.round for probe in third} == {2} and {probe.sent_at for probe in third} == {0.8}
    # An answer at last: the other try of TTL 2 waits HERE x its round trip.
    plan.answered(third[0], 0.805)
    assert plan.next_event() == pytest.approx(0.8 + 3 * (0.005 + PRECISION))
    plan.lost(third[1])
    assert plan.finished


def test_a_trace_with_no_answer_beyond_a_hop_tries_ahead_and_ends_at_max() -> None:
    plan = TracePlan(1, 30, 1, Wait(5.0, 3.0, 10.0))
    tries = plan.start(0.0)
    plan.answered(tries[0], 0.001)  # TTL 1 answers, nothing else ever does
    assert plan.next_event() == 0.25
    again = plan.due(0.25)
    assert [probe.ttl for probe in again] == list(range(2, 2 + AHEAD))
    plan.due(0.75)
    plan.due(1.75)
    assert plan.due(3.75) == []  # three further tries only
    # Nothing answered past TTL 1: every probe waits MAX from its TTL's first probe.
    assert plan.next_event() == 5.0
    assert plan.expired(4.999) == []
    assert len(plan.expired(5.0)) == 29 + 3 * AHEAD
    assert plan.finished


def test_retries_zero_sends_every_probe_once() -> None:
    plan = TracePlan(1, 3, 1, Wait(2.0, 0.0, 0.0), retries=0)
    tries = plan.start(0.0)
    plan.answered(tries[2], 0.01, ends_path=True)
    assert plan.next_event() == 2.0
    assert plan.due(1.0) == []
    assert len(plan.expired(2.0)) == 2 and plan.finished


def test_a_held_answer_still_counts_and_no_wait_passes_max() -> None:
    # A router holds every packet for 2 s (neighbour discovery): the first round is
    # answered then, together with the further tries held behind it.
    plan = TracePlan(1, 2, 1)
    tries = plan.start(0.0)
    retry_times = [0.25, 0.75, 1.75]
    for at in retry_times:
        assert [probe.ttl for probe in plan.due(at)] == [1, 2]
    assert plan.next_event() == 5.0  # no answer anywhere: MAX
    answer_all(plan, list(plan.outstanding), 2.0, end=2)
    assert plan.finished and plan.end == 2
    assert all(probe.sent_at in (0.0, *retry_times) for probe in tries)


def test_a_nearer_end_cancels_and_bad_reports_are_refused() -> None:
    plan = TracePlan(3, 6, 1)
    tries = plan.start(1.0)
    assert [probe.ttl for probe in tries] == [3, 4, 5, 6]
    assert plan.answered(tries[3], 1.01, ends_path=True) == []
    assert plan.answered(tries[1], 1.02, ends_path=True) == [tries[2]]  # TTL 4 ends it
    assert plan.end == 4 and plan.farthest == 4
    with pytest.raises(ValueError, match="not outstanding"):
        plan.lost(tries[2])
    with pytest.raises(ValueError, match="not outstanding"):
        plan.answered(tries[1], 1.03)
    plan.answered(tries[0], 1.02)
    assert plan.finished
    with pytest.raises(ValueError, match="first_ttl <= max_ttl"):
        TracePlan(5, 4, 1)
    with pytest.raises(ValueError, match="retries must be from 0 to 10"):
        TracePlan(1, 4, 1, retries=11)
    with pytest.raises(TypeError, match="retries must be an integer"):
        TracePlan(1, 4, 1, retries=1.5)  # type: ignore[arg-type]


class CountingWait(Wait):
    """The default Wait, counting how often a probe's wait is worked out."""

    calls = 0

    def limit(self, here_rtt: float | None, near_rtt: float | None) -> float:
        CountingWait.calls += 1
        return super().limit(here_rtt, near_rtt)


def test_the_work_per_answer_does_not_grow_with_the_probes_in_flight() -> None:
    # A driver's turn per answer, as trace._trace_probes takes it: every router of 30
    # answers, the destination never, and nothing expires meanwhile.  The probes of one
    # TTL sent at one time share their deadline: a turn works out one per such group,
    # not one per probe (-q 100: 3,000 in flight).
    counted = []
    for per_hop in (1, 100):
        CountingWait.calls = 0
        plan = TracePlan(1, 30, per_hop, CountingWait())
        tries = plan.start(0.0)
        for number, probe in enumerate(tries, start=1):
            now = number * 1e-7
            plan.answered(probe, now)
            plan.expired(now)
            plan.due(now)
            plan.next_event()
            assert not plan.finished or number == len(tries)
        counted.append(CountingWait.calls / len(tries))
    # -q 1: a turn works out each TTL still waiting once or twice (expired, next_event);
    # -q 100 keeps all 30 TTLs waiting longer, never a deadline per probe (100 x)
    assert counted[1] <= 3 * counted[0], counted
