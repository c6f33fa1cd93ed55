"""The pure MDA engine (brokerpkg.mda) against simulated networks (tests/fakes/simnet.py).

Each run feeds the engine the simulated answers one at a time, in a shuffled order
(as they come back from a helper), and compares what it found with every path of the
network.  Runs are deterministic (seeded): a rate measured over many seeds is the same
at every run of the test.
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest

from brokerpkg.mda import (
    MESHING_TEST_FLOWS,
    Budget,
    MdaSettings,
    MultipathState,
    ProbeRequest,
    failure_probability,
    per_packet_tests,
    probes_needed,
)
from brokerpkg.protocol import ProbeResult

sys.path.insert(0, str(Path(__file__).parent / "fakes"))
from simnet import Network, build

TARGET = "127.0.0.1"
TABLE = {
    95: [6, 11, 16, 21, 27, 33, 38, 44, 51, 57, 63, 70, 76, 83, 90, 96],
    99: [8, 15, 21, 28, 36, 43, 51, 58, 66, 74, 82, 90, 98, 106, 115, 123],
}
"""n_k for k = 1..16 (../shared/multipath.md, scamper_tracelb_do.c)."""
SCAMPER_PROBES_99 = 78
"""scamper tracelb's probes at 99% on two diamonds in series, 4 and 2 wide (issue 11)."""


def run(network: Network, settings: MdaSettings | None = None, order: int = 0) -> MultipathState:
    """Drive a MultipathState over ``network``: every probe it asks for is answered,
    one at a time, in a random order (seeded by ``order``)."""
    state = MultipathState(settings)
    shuffle = random.Random(order)
    outstanding: list[ProbeRequest] = []
    while True:
        requests, _ = state.next_probes(10**6)
        outstanding.extend(requests)
        if not outstanding:
            return state
        shuffle.shuffle(outstanding)
        answer_one(state, network, outstanding.pop())


def answer_one(state: MultipathState, network: Network, request: ProbeRequest) -> None:
    answer = network.answer(request.flow, request.ttl, TARGET)
    if answer is None:
        state.lost(request, ProbeResult(False, "no-reply", None, None, [], TARGET, request.ttl))
        return
    result = ProbeResult(
        answer.kind == "reply", answer.kind, answer.rtt, answer.address, [], TARGET, request.ttl
    )
    state.answered(request, result, terminal=answer.kind == "reply")


def found(state: MultipathState) -> tuple[dict[int, set[str]], set[tuple[int, str, str]]]:
    """The nodes (by TTL) and links the state found, silent ends left out."""
    nodes = {ttl: set(state.nodes(ttl)) for ttl in state.probed_ttls() if state.nodes(ttl)}
    links = {
        (link.ttl, link.source, link.target)
        for link in state.links()
        if link.source is not None and link.target is not None
    }
    return nodes, links


def complete(network: Network, state: MultipathState) -> bool:
    return found(state) == network.truth(TARGET)


def probes_by_ttl(state: MultipathState) -> Counter[tuple[int, bool]]:
    return Counter((record.request.ttl, record.request.recheck) for record in state.records)


def series(seed: int = 1) -> Network:
    """Two diamonds in series, 4 and 2 wide (the lab scamper was measured on)."""
    return build([["A"], ["B1", "B2", "B3", "B4"], ["C"], ["E1", "E2"], ["F"], ["D"]], seed=seed)


def meshed(seed: int = 1) -> Network:
    """A -> (B1, B2) -> (C1, C2) -> E -> D, every B linked to every C."""
    return build([["A"], ["B1", "B2"], ["C1", "C2"], ["E"], ["D"]], seed=seed)


def per_packet(seed: int = 1) -> Network:
    """A -> (B1, B2) -> (C1, C2) -> E -> D, A balancing per packet, B1 -> C1, B2 -> C2."""
    return build(
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
        seed=seed,
        A={"balance": "packet"},
    )


def failures(make: Callable[[int], Network], confidence: float, seeds: int = 100) -> float:
    """The share of seeds for which a trace missed a node or a link."""
    missed = 0
    for seed in range(seeds):
        network = make(seed)
        state = run(network, MdaSettings(confidence=confidence), order=seed)
        missed += not complete(network, state)
    return missed / seeds


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize("confidence", [95, 99])
def test_the_stopping_rule_reproduces_the_table(confidence: int) -> None:
    assert [probes_needed(k, confidence) for k in range(1, 17)] == TABLE[confidence]


@pytest.mark.parametrize("confidence", [50, 90, 95.5, 99.9, 99.99])
def test_any_confidence_comes_from_the_exact_formula(confidence: float) -> None:
    alpha = 1 - Fraction(str(confidence)) / 100
    previous = 0
    for k in range(1, 12):
        n = probes_needed(k, confidence)
        assert failure_probability(k + 1, n) <= alpha < failure_probability(k + 1, n - 1)
        assert n > previous
        previous = n
    assert probes_needed(5, 99.9) > probes_needed(5, 99) > probes_needed(5, 90)


def test_failure_probability_is_inclusion_exclusion() -> None:
    assert failure_probability(2, 1) == 1
    assert failure_probability(2, 3) == Fraction(2, 8)  # all heads or all tails
    assert failure_probability(3, 3) == 1 - Fraction(6, 27)  # 3! of 27 see all three
    assert failure_probability(1, 0) == 0


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"confidence": 100}, ValueError, "confidence must be a percent above 0 and below 100"),
        ({"confidence": 0}, ValueError, "confidence must be a percent above 0 and below 100"),
        ({"confidence": "95"}, TypeError, "confidence must be a number"),
        ({"attempts": 0}, ValueError, "attempts must be from 1 to 10, got 0"),
        ({"gap_limit": 0}, ValueError, "gap_limit must be from 1 to 255, got 0"),
        ({"first_ttl": 5, "max_ttl": 4}, ValueError, "max_ttl must be from 5 to 255, got 4"),
        ({"max_probes": 0}, ValueError, "max_probes must be from 1 to"),
        ({"first_flow": 65536}, ValueError, "first_flow must be from 0 to 65535, got 65536"),
        ({"lite": 1}, TypeError, "lite must be True or False"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        MdaSettings(**settings)  # type: ignore[arg-type]
    assert MdaSettings().confidence == 95.0  # and the next one is made as usual


def test_per_packet_tests_give_the_confidence() -> None:
    assert [per_packet_tests(c) for c in (50, 95, 99)] == [1, 5, 7]
    with pytest.raises(ValueError, match="below 100"):
        per_packet_tests(100)


# ----------------------------------------------------------------------------- topologies


def test_a_chain_takes_n1_probes_per_hop_and_nothing_else() -> None:
    network = build([["A"], ["B"], ["C"], ["D"]])
    state = run(network)
    assert complete(network, state)
    assert state.confidence_reached and state.stopped is None
    assert state.sent == 4 * probes_needed(1)  # 6 flows per hop, every one answered
    assert all(not recheck for _, recheck in probes_by_ttl(state))


def test_mda_lite_finds_a_diamond_with_fewer_probes_than_node_control() -> None:
    network = build([["A"], ["B1", "B2", "B3", "B4"], ["C"], ["D"]])
    lite = run(network, MdaSettings(lite=True))
    controlled = run(network, MdaSettings(lite=False))
    assert complete(network, lite) and complete(network, controlled)
    by_ttl = probes_by_ttl(lite)
    # MDA-Lite: n(4) flows at hop 2, then the meshing test's flows through each B
    assert by_ttl[2, False] == probes_needed(4)
    assert by_ttl[3, False] == 4 * MESHING_TEST_FLOWS
    # node control: n(1) flows through each B at hop 3
    assert probes_by_ttl(controlled)[3, False] == 4 * probes_needed(1)
    assert lite.sent < 0.75 * controlled.sent
    assert not lite.controlled(2) and controlled.controlled(2)


def test_mda_lite_sends_what_the_rule_needs_whatever_order_the_answers_come_in() -> None:
    # n(1) flows at hop 3 and MESHING_TEST_FLOWS through each B, no more: none is sent
    # beyond the coverage of the Bs known while hop 2 is still being answered (a B
    # found later needs its own, and those sent before would have been too many)
    for seed in range(50):
        network = build([["A"], ["B1", "B2", "B3", "B4"], ["C"], ["D"]], seed=seed)
        state = run(network, MdaSettings(confidence=99), order=seed)
        wanted = max(probes_needed(1, 99), len(state.nodes(2)) * MESHING_TEST_FLOWS)
        assert probes_by_ttl(state)[3, False] == wanted, seed


def test_a_node_seen_once_is_explored_for_at_its_likely_share() -> None:
    # A -> (B1..B4) -> C -> D at 95%: n(4) = 21 flows at hop 2 of which B1 answers one;
    # MDA-Lite wants a second flow through it, so new flows go to hop 2, as many as its
    # share asks, one answer more for every node: 1 in (21 + 4) / (1 + 1), 13 flows (its
    # share as seen, 1 in 21, asked for 21)
    state = MultipathState(MdaSettings(confidence=95))
    others = ["127.1.0.3", "127.1.0.4", "127.1.0.5"]

    def responder(request: ProbeRequest) -> tuple[str, bool]:
        if request.ttl == 1:
            return "127.1.0.1", False
        if request.ttl == 2:
            explorer = request.flow > probes_needed(4)
            return (
                "127.1.0.2" if request.flow == 1 or explorer else others[request.flow % 3]
            ), False
        return ("127.1.0.9", False) if request.ttl == 3 else (TARGET, True)

    while not state.finished:
        requests, _ = state.next_probes(10**6)
        for request in requests:
            address, terminal = responder(request)
            kind = "reply" if terminal else "ttl-expired"
            result = ProbeResult(terminal, kind, 0.1, address, [], TARGET, request.ttl)
            state.answered(request, result, terminal=terminal)
    assert probes_by_ttl(state)[2, False] == probes_needed(4) + math.ceil((21 + 4) / (1 + 1))


def test_two_diamonds_in_series_at_99_percent_within_scamper_probes() -> None:
    probes = []
    missed = 0
    for seed in range(100):
        network = series(seed)
        state = run(network, MdaSettings(confidence=99), order=seed)
        missed += not complete(network, state)
        probes.append(state.sent)
    assert missed <= 5  # four decisions at 1% each
    assert sum(probes) / len(probes) <= 1.2 * SCAMPER_PROBES_99


def test_a_meshed_diamond_falls_back_to_node_control_and_finds_every_link() -> None:
    network = meshed(seed=3)
    state = run(network, MdaSettings(confidence=99), order=3)
    assert complete(network, state)
    assert state.controlled(2)  # B -> C is meshed
    assert not state.controlled(3)  # C -> E is not
    _, links = network.truth(TARGET)
    assert len([link for link in links if link[0] == 2]) == 4
    assert failures(meshed, 99) <= 0.05


def test_uneven_next_hops_fall_back_to_node_control() -> None:
    # B1 -> (C1, C2), B2 -> C3: not meshed, but not uniform either
    network = build(
        [["A"], ["B1", "B2"], ["C1", "C2", "C3"], ["E"], ["D"]],
        [
            ("A", "B1"),
            ("A", "B2"),
            ("B1", "C1"),
            ("B1", "C2"),
            ("B2", "C3"),
            *[(c, "E") for c in ("C1", "C2", "C3")],
            ("E", "D"),
        ],
        seed=4,
    )
    state = run(network, MdaSettings(confidence=99), order=4)
    assert complete(network, state)
    assert state.controlled(2)


def test_even_next_hops_stay_with_mda_lite() -> None:
    # B1 -> (C1, C2), B2 -> (C3, C4) (the ECMP lab's meshed diamond over IPv6, where each
    # C is one address of a router with two): uniform and not meshed, so MDA-Lite's
    # count, n(4) at hop 3, is all it takes, also where the first two flows through a B
    # showed one of its next hops (64 runs of 100 fell back to node control when the
    # uniformity test compared the first flows; it now compares them all, once the
    # count is met, and falls back only where a B showed one next hop in all of them)
    fallbacks = missed = 0
    for seed in range(100):
        network = build(
            [["A"], ["B1", "B2"], ["C1", "C2", "C3", "C4"], ["E"], ["D"]],
            [("A", "B1"), ("A", "B2"), ("B1", "C1"), ("B1", "C2"), ("B2", "C3"), ("B2", "C4")]
            + [(c, "E") for c in ("C1", "C2", "C3", "C4")]
            + [("E", "D")],
            seed=seed,
        )
        state = run(network, MdaSettings(confidence=99), order=seed)
        fallbacks += state.controlled(2)
        missed += not complete(network, state)
    assert fallbacks <= 5
    assert missed <= 3


def test_unequal_branch_lengths_put_a_router_at_two_ttls() -> None:
    # A -> B -> X -> D and A -> C1 -> C2 -> X -> D
    network = build(
        [["A"], ["B", "C1"], ["C2"], ["X"], ["D"]],
        [("A", "B"), ("A", "C1"), ("B", "X"), ("C1", "C2"), ("C2", "X"), ("X", "D")],
        seed=2,
    )
    state = run(network, MdaSettings(confidence=99), order=2)
    assert complete(network, state)
    x = network.routers["X"].address
    assert x in state.nodes(3) and x in state.nodes(4)
    assert TARGET in state.nodes(4) and TARGET in state.nodes(5)
    assert state.confidence_reached


def aliased(seed: int = 1) -> Network:
    """The ECMP lab's series over IPv6 (tests/lab/ecmp.py): A -> (B1..B4) -> C -> (E1,
    E2) -> F -> D where C and F answer from the link a probe came in on, as four
    routers X1..X4 (one behind each B) and two F1, F2, each X linked to both Es."""
    bs, xs = [f"B{i}" for i in range(1, 5)], [f"X{i}" for i in range(1, 5)]
    links = [("A", b) for b in bs] + list(zip(bs, xs, strict=True))
    links += [(x, e) for x in xs for e in ("E1", "E2")]
    links += [("E1", "F1"), ("E2", "F2"), ("F1", "D"), ("F2", "D")]
    return build([["A"], bs, xs, ["E1", "E2"], ["F1", "F2"], ["D"]], links, seed=seed)


def test_a_node_only_new_flows_reached_is_linked_back() -> None:
    # Node control sends new flows straight to the TTL of the nodes it controls (X*):
    # with seed 9 the 16 flows probed at TTL 2 miss one B, whose X is found only by
    # new flows at TTL 3; one of them probed at TTL 2 finds that B and its link.
    network = aliased(seed=9)
    state = run(network, MdaSettings(confidence=95), order=9)
    assert complete(network, state)
    assert len(state.nodes(2)) == 4


def test_every_node_of_the_aliased_series_is_linked_back() -> None:
    # over 100 seeds no node is ever left without a link from the TTL before
    for seed in range(100):
        state = run(aliased(seed), MdaSettings(confidence=95), order=seed)
        nodes, links = found(state)
        for ttl, addresses in nodes.items():
            if ttl > 1:
                linked = {target for t, _source, target in links if t == ttl - 1}
                assert addresses == linked, (seed, ttl)


def test_a_per_packet_balancer_is_told_and_its_links_are_not_made_up() -> None:
    network = per_packet(seed=6)
    state = run(network, MdaSettings(confidence=95), order=6)
    assert state.finished and state.per_packet(2)
    nodes, _ = found(state)
    assert nodes == network.truth(TARGET)[0]
    links = {(link.ttl, link.source, link.target) for link in state.links()}
    # A -> B and C -> E are implied by the single node on one side; B -> C is unknown
    assert {ttl for ttl, _, _ in links} == {1, 3, 4}
    assert probes_by_ttl(state)[2, True] <= per_packet_tests(95)


def test_per_packet_detection_rate_meets_the_confidence() -> None:
    caught = 0
    for seed in range(100):
        network = per_packet(seed)
        state = run(network, MdaSettings(confidence=95), order=seed)
        assert state.finished
        caught += state.per_packet(2)
    assert caught >= 90


def test_a_diamond_that_merges_at_once_needs_no_per_packet_test() -> None:
    network = build([["A"], ["B1", "B2"], ["C"], ["D"]], A={"balance": "packet"})
    state = run(network)
    assert complete(network, state)  # every link is true whatever A does
    assert not any(recheck for _, recheck in probes_by_ttl(state))


def test_lost_answers_are_asked_again_up_to_the_attempts() -> None:
    network = build([["A"], ["B1", "B2"], ["C"], ["D"]], B1={"loss": 0.3}, C={"loss": 0.3})
    state = run(network, MdaSettings(attempts=3), order=6)
    assert complete(network, state)
    attempts = Counter(record.request.attempt for record in state.records)
    assert attempts[1] > 0 and max(attempts) <= 2


def test_a_silent_router_is_crossed_and_the_gap_limit_ends_the_trace() -> None:
    network = build([["A"], ["B"], ["C"], ["D"]], B={"silent": True})
    state = run(network)
    assert state.nodes(2) == {} and set(state.nodes(3)) == {network.routers["C"].address}
    a, c = network.routers["A"].address, network.routers["C"].address
    assert {(link.ttl, link.source, link.target) for link in state.links()} == {
        (1, a, None),
        (2, None, c),
        (3, c, TARGET),
    }
    silent = {"silent": True}
    silent_end = build(
        [["A"], ["B"], ["C"], ["E"], ["F"], ["D"]], C=silent, E=silent, F=silent, D=silent
    )
    ended = run(silent_end, MdaSettings(gap_limit=2))
    assert ended.probed_ttls() == [1, 2, 3, 4]  # two silent TTLs, then no more
    assert ended.finished and ended.stopped is None


def test_the_probe_limit_stops_the_trace() -> None:
    state = run(series(), MdaSettings(max_probes=20))
    assert state.sent == 20 and state.stopped == "probe-limit"
    assert state.finished and not state.confidence_reached
    assert state.next_probes(100) == ([], False)


def test_flow_numbers_run_out() -> None:
    state = run(series(), MdaSettings(first_flow=65530))
    assert state.stopped == "flow-limit" and not state.confidence_reached
    assert sorted({record.request.flow for record in state.records}) == list(range(65530, 65536))


def test_a_stopped_state_sends_nothing_and_gives_up_what_is_outstanding() -> None:
    state = MultipathState()
    requests, more = state.next_probes(3)
    assert [(r.flow, r.ttl) for r in requests] == [(1, 1), (2, 1), (3, 1)] and more
    state.stop("deadline")
    state.stop("later reason")
    assert state.next_probes(10) == ([], False)
    assert state.outstanding == 3  # not finished while they are out
    for request in requests:
        state.abandoned(request)
    assert state.finished and state.stopped == "deadline" and not state.confidence_reached
    with pytest.raises(ValueError, match="no probe outstanding"):
        state.abandoned(requests[0])
    with pytest.raises(ValueError, match="no probe outstanding"):
        state.lost(ProbeRequest(99, 1))


def test_the_budget_is_a_token_bucket() -> None:
    budget = Budget(100, 10, now=0.0)
    assert budget.available(0.0) == 10
    budget.spend(10, 0.0)
    assert budget.available(0.0) == 0 and budget.next_at(0.0) == pytest.approx(0.01)
    assert budget.available(0.05) == 5
    assert budget.available(10.0) == 10  # never more than the burst
    with pytest.raises(ValueError, match="rate must be more than 0"):
        Budget(0, 1, now=0.0)
    with pytest.raises(ValueError, match="burst must be from 1"):
        Budget(1, 0, now=0.0)
