"""The multipath benchmark's pure part: what the MDA's stopping rule needs for a lab's
truth (tests/bench/bench_multipath.py's rule_minimum), the figure README's table puts
beside scamper's probes and ours."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from lab.ecmp import TOPOLOGIES, EcmpLab


def load_bench() -> ModuleType:
    path = Path(__file__).parent / "bench" / "bench_multipath.py"
    spec = importlib.util.spec_from_file_location("bench_multipath", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def lab_truth(name: str, family: int) -> tuple[dict[int, set[str]], set[tuple[int, str, str]]]:
    truth = EcmpLab(TOPOLOGIES[name](), tag="truth").truth(family)  # described, not built
    return truth.nodes, truth.links


def test_a_single_path_needs_n1_at_every_ttl() -> None:
    nodes = {1: {"a"}, 2: {"b"}, 3: {"d"}}
    links = {(1, "a", "b"), (2, "b", "d")}
    rule = bench.rule_minimum(nodes, links, 99)
    assert rule.per_ttl == {1: 8, 2: 8, 3: 8}
    assert (rule.probes, rule.per_packet_tests, rule.with_tests) == (24, 0, 24)


def test_a_diamond_is_counted_with_mda_lite() -> None:
    # a -> (b c) -> d -> dest: n_2 at TTL 2; MDA-Lite at 3: n_1 for d, 2 through b and c
    nodes = {1: {"a"}, 2: {"b", "c"}, 3: {"d"}, 4: {"x"}}
    links = {(1, "a", "b"), (1, "a", "c"), (2, "b", "d"), (2, "c", "d"), (3, "d", "x")}
    assert bench.rule_minimum(nodes, links, 95).per_ttl == {1: 6, 2: 11, 3: 6, 4: 6}


def test_a_meshed_pair_is_counted_with_node_control() -> None:
    # b and c each lead to d and e: n_2 through each, found at TTL 2 and counted at 3;
    # TTL 2 fans out to two nodes followed by two: one per-packet test's worth of probes
    nodes = {1: {"a"}, 2: {"b", "c"}, 3: {"d", "e"}, 4: {"x"}}
    links = {(1, "a", "b"), (1, "a", "c"), (3, "d", "x"), (3, "e", "x")}
    links |= {(2, "b", "d"), (2, "b", "e"), (2, "c", "d"), (2, "c", "e")}
    rule = bench.rule_minimum(nodes, links, 99)
    assert rule.per_ttl == {1: 8, 2: 30, 3: 30, 4: 8}
    assert rule.per_packet_tests == 7


def test_uneven_next_hops_are_counted_with_node_control() -> None:
    # b has two next hops, c one (not meshed, but not uniform either): n_2 + n_1
    nodes = {1: {"a"}, 2: {"b", "c"}, 3: {"d", "e", "f"}, 4: {"x"}}
    links = {(1, "a", "b"), (1, "a", "c"), (2, "b", "d"), (2, "b", "e"), (2, "c", "f")}
    links |= {(3, "d", "x"), (3, "e", "x"), (3, "f", "x")}
    assert bench.rule_minimum(nodes, links, 99).per_ttl == {1: 8, 2: 23, 3: 23, 4: 8}


def test_a_node_beside_the_destination_needs_its_flows_found_there() -> None:
    # TTL 3: r (leads on) and the destination x: r's n_1 flows must land on it at 3
    nodes = {1: {"a"}, 2: {"b", "c"}, 3: {"x", "r"}, 4: {"x"}}
    links = {(1, "a", "b"), (1, "a", "c"), (2, "b", "x"), (2, "c", "r"), (3, "r", "x")}
    rule = bench.rule_minimum(nodes, links, 99)
    assert rule.per_ttl == {1: 8, 2: 15, 3: 15, 4: 8}
    assert rule.per_packet_tests == 7


@pytest.mark.parametrize(
    ("name", "family", "per_ttl", "tests"),
    [
        ("series", 4, [8, 28, 8, 15, 8, 8], 0),
        ("series", 6, [8, 28, 60, 60, 15, 8], 14),
        ("meshed", 4, [8, 30, 30, 8, 8], 7),
        ("meshed", 6, [8, 15, 28, 15, 8], 14),
        ("unequal", 4, [8, 15, 15, 15, 8], 7),
        ("unequal", 6, [8, 15, 15, 15, 8], 7),
    ],
)
def test_the_labs_at_99(name: str, family: int, per_ttl: list[int], tests: int) -> None:
    rule = bench.rule_minimum(*lab_truth(name, family), 99)
    assert [rule.per_ttl[ttl] for ttl in sorted(rule.per_ttl)] == per_ttl
    assert rule.per_packet_tests == tests
