#!/usr/bin/env python3
"""Benchmark (issue 11): scamper tracelb and our multipath trace on the same ECMP
diamonds, in one run; classic against Paris traces through them.

Labs (tests/lab/ecmp.py, kernel multipath routes hashed on ports, seeded per router):
``series`` (diamonds 4 and 2 wide in series: the issue's lab), ``meshed`` and
``unequal``; IPv4 and IPv6.  Per lab, family and confidence (95 and 99):

a. scamper tracelb (Debian's scamper, tests/lab/scamper.py): ``scamper -O warts -o FILE
   -c "tracelb -P udp-dport -c C" -i DST`` in the lab's client namespace, at its defaults
   (one probe per 250 ms, -W 25; 2 attempts), read back with ``sc_warts2json``;
   ``--scamper-rounds`` runs (default 1: a run takes 5-20 s), each ended after
   ``--scamper-timeout`` s.
b. ours: ``multipath_trace(DST, confidence=C, protocol="udp")`` on an open session
   whose helper runs in the client namespace, ``--rounds`` runs (default 10), run i
   with flows from 1 + 1000 i (the labs' hashes are seeded: the same flows would take
   the same paths every run).

For each: nodes and links (from, to) found against the lab's truth (missing and
invented ones), probes sent, wall time; medians; ratios ours / scamper (scamper's links
as lab.scamper.found reads them).  Goals: every link
at 99% in every run, probes <= 1.2 x scamper's, time <= 1/20 of scamper's.  Beside
them, what the stopping rule strictly needs for the lab's truth (:func:`rule_minimum`:
per TTL, node control where meshed, MDA-Lite elsewhere, every probe landing where it
is needed), the per-packet tests ours adds, and each tool's probes against it.

c. classic against Paris: ``--traces`` traces (default 20) with one probe per TTL
   through each lab: classic (each probe its own flow) and Paris (trace i in flow i);
   false links (consecutive answers the lab has no link for) per trace.

Run as root (a helper with the ``flow`` extension is needed for b and c's Paris
column; without it they say so):

    python3 tests/bench/bench_multipath.py [--rounds 10] [--scamper-rounds 1]
        [--labs series,meshed,unequal] [--families 4,6] [--confidences 95,99]
        [--traces 20] [--helper PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

Edge = tuple[str, str]


@dataclass
class Run:
    """One trace: what it found, what it cost."""

    nodes: set[str]
    edges: set[Edge]
    probes: int
    seconds: float
    complete: bool = True  # ended on its own (not stopped by a deadline or timeout)


@dataclass
class Column:
    """The runs of one tool on one case."""

    name: str
    runs: list[Run] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median(self, what: str) -> float | None:
        values = [float(getattr(run, what)) for run in self.runs]
        return statistics.median(values) if values else None


def helper_path() -> str:
    """The tree's helper, built as the tests build it."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper"), "WERROR=1"], check=True)
    return str(ROOT / "helper" / "brokerpkg-helper")


# ----------------------------------------------------------------------------- scamper


def scamper_run(lab: Any, target: str, confidence: int, timeout: float) -> Run | str:
    """One scamper tracelb in the lab's client; a Run, or why there is none."""
    from lab import scamper

    try:
        result = scamper.tracelb(lab, "client", target, confidence=confidence, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"did not finish in {timeout:g} s"
    return Run(result.nodes, result.edges, result.probes, result.seconds)


# ----------------------------------------------------------------------------- ours


async def our_runs(
    lab: Any, helper: str, target: str, family: int, confidence: int, rounds: int
) -> Column | str:
    """``rounds`` multipath traces on one session; a Column, or why there is none."""
    from brokerpkg import Session
    from brokerpkg.multipath import multipath_trace

    column = Column("brokerpkg")
    async with Session(command=lab.exec_argv("client", [helper])) as session:
        if session.features.get("flow", "no") != "ok":
            return "the helper has no flow extension"
        for index in range(rounds):
            start = time.monotonic()
            result = await multipath_trace(
                target,
                max_ttl=12,
                timeout=1.0,
                confidence=confidence,
                family=family,
                protocol="udp",
                first_flow=1 + 1000 * index,  # other flows each run: other hashes
                session=session,
            )
            seconds = time.monotonic() - start
            column.runs.append(
                Run(
                    set(result.nodes),
                    set(result.edges()),
                    result.probes,
                    seconds,
                    result.confidence_reached,
                )
            )
    return column


# ----------------------------------------------------------------------------- the rule's minimum


@dataclass(frozen=True)
class RuleMinimum:
    """The fewest probes the MDA's stopping rule needs for a lab's truth: ``per_ttl``
    probes at each TTL if every probe landed on a node that still needed one (a lower
    bound: flows land at random), and ``per_packet_tests``, the second probes ours adds
    to tell a per-packet balancer (not part of the rule)."""

    per_ttl: dict[int, int]
    per_packet_tests: int

    @property
    def probes(self) -> int:
        """The rule's probes, every TTL together."""
        return sum(self.per_ttl.values())

    @property
    def with_tests(self) -> int:
        """The rule's probes and the per-packet tests."""
        return self.probes + self.per_packet_tests


def rule_minimum(
    nodes: dict[int, set[str]], links: set[tuple[int, str, str]], confidence: float
) -> RuleMinimum:
    """What the stopping rule strictly needs for a truth (``nodes[ttl]`` the addresses at
    each TTL from 1, the destination's alone at the last; ``links`` (ttl, from, to)):
    for each pair of TTLs (h, h + 1), from the source (before TTL 1) on, the nodes of h
    that lead on (not the destination) and their next hops give

    * one such node with k next hops: n_k probes at h + 1 through it;
    * several, meshed (one with two next hops, a next hop with two predecessors) or with
      different numbers of next hops: node control, n_k through each (k its next hops),
      so as many at h + 1, and at h as many flows landing on them;
    * several otherwise (MDA-Lite): n_k at h + 1 for the k nodes there, and at least
      MESHING_TEST_FLOWS through each node of h;

    a TTL's probes are the most either of its pairs needs.  Per-packet tests: those
    :func:`brokerpkg.mda.per_packet_tests` gives, at each TTL of two nodes or more behind
    a node with two next hops there, followed by a TTL of two nodes or more.

    Raises ValueError (from probes_needed) for a bad confidence.
    """
    from brokerpkg.mda import MESHING_TEST_FLOWS, per_packet_tests, probes_needed

    last = max(nodes)
    (destination,) = nodes[last]
    successors: dict[tuple[int, str], set[str]] = {(0, "(source)"): set(nodes[1])}
    for ttl, source, target in links:
        successors.setdefault((ttl, source), set()).add(target)
    at_least: dict[int, int] = dict.fromkeys(range(1, last + 1), 0)
    tests = 0
    for ttl in range(last):
        transit = [
            hops
            for (hop_ttl, node), hops in successors.items()
            if hop_ttl == ttl and node != destination
        ]
        needs = [probes_needed(len(hops), confidence) for hops in transit]
        width = len(set().union(*transit))
        predecessors = [target for hops in transit for target in hops]
        meshed = any(len(hops) > 1 for hops in transit) and len(predecessors) > width
        if len(transit) == 1:  # flows land on it by themselves when it is alone
            landing = needs[0] if ttl >= 1 and len(nodes[ttl]) > 1 else 0
            following = needs[0]
        elif meshed or len({len(hops) for hops in transit}) > 1:  # node control
            landing, following = sum(needs), sum(needs)
        else:  # MDA-Lite
            landing = MESHING_TEST_FLOWS * len(transit)
            following = max(probes_needed(width, confidence), landing)
        if ttl >= 1:
            at_least[ttl] = max(at_least[ttl], landing)
        at_least[ttl + 1] = max(at_least[ttl + 1], following)
        fans = any(len(hops) > 1 for hops in transit)
        if fans and len(nodes[ttl + 1]) > 1 and len(nodes.get(ttl + 2, ())) > 1:
            tests += per_packet_tests(confidence)
    return RuleMinimum(at_least, tests)


# ----------------------------------------------------------------------------- classic/Paris


def false_links(hops: Sequence[str | None], truth_links: set[tuple[int, str, str]]) -> int:
    pairs = {
        (ttl, a, b)
        for ttl, (a, b) in enumerate(itertools.pairwise(hops), start=1)
        if a is not None and b is not None
    }
    return len(pairs - truth_links)


async def classic_and_paris(
    lab: Any, helper: str, target: str, family: int, traces: int
) -> tuple[float, float | None]:
    """False links per trace: classic, and Paris (None without the flow extension)."""
    from brokerpkg import Session, traceroute

    truth = lab.truth(family).links
    counts: dict[str, list[int]] = {"classic": [], "paris": []}
    async with Session(command=lab.exec_argv("client", [helper])) as session:
        paris = session.features.get("flow", "no") == "ok"
        for index in range(traces):
            for kind in ("classic", "paris") if paris else ("classic",):
                trace = await traceroute(
                    target,
                    probes_per_hop=1,
                    family=family,
                    protocol="udp",
                    timeout=1.0,
                    flow=index + 1 if kind == "paris" else None,
                    session=session,
                )
                counts[kind].append(false_links([hop.address for hop in trace.hops], truth))
    classic = statistics.mean(counts["classic"])
    return classic, statistics.mean(counts["paris"]) if paris else None


# ----------------------------------------------------------------------------- report


def judged(run: Run, nodes: set[str], edges: set[Edge]) -> str:
    missing_nodes, missing_edges = len(nodes - run.nodes), len(edges - run.edges)
    invented = len(run.edges - edges) + len(run.nodes - nodes)
    return (
        f"nodes {len(run.nodes & nodes)}/{len(nodes)}, links {len(run.edges & edges)}/"
        f"{len(edges)}, missing {missing_nodes}+{missing_edges}, invented {invented}"
    )


def every_link(column: Column, edges: set[Edge]) -> str:
    full = sum(1 for run in column.runs if edges <= run.edges)
    return f"all links in {full} of {len(column.runs)} runs"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or not theirs:
        return "n/a"
    return f"{ours / theirs:.3f}"


def show_case(title: str, truth: Any, confidence: int, scamper: Column, ours: Column) -> None:
    nodes, edges = truth.addresses, truth.edges()
    print(f"== {title}: truth {len(nodes)} nodes, {len(edges)} links")
    for column in (scamper, ours):
        for failure in column.failures:
            print(f"  {column.name}: {failure}")
        if not column.runs:
            continue
        worst = min(column.runs, key=lambda run: len(run.edges & edges))
        print(
            f"  {column.name}: {len(column.runs)} runs, {every_link(column, edges)}; "
            f"worst: {judged(worst, nodes, edges)}; median probes "
            f"{column.median('probes'):g}, median time {column.median('seconds'):.3f} s"
        )
    print(
        f"  ratios ours/scamper: probes {ratio(ours.median('probes'), scamper.median('probes'))}"
        f" (goal <= 1.2), time {ratio(ours.median('seconds'), scamper.median('seconds'))}"
        " (goal <= 0.05)"
    )
    rule = rule_minimum(truth.nodes, truth.links, confidence)
    per_ttl = ", ".join(f"{count}" for _ttl, count in sorted(rule.per_ttl.items()))
    print(
        f"  the rule's minimum for the truth: {rule.probes} probes (per TTL {per_ttl}), "
        f"with ours' {rule.per_packet_tests} per-packet tests {rule.with_tests}; ratios to it: "
        f"ours {ratio(ours.median('probes'), rule.with_tests)}, "
        f"scamper {ratio(scamper.median('probes'), rule.probes)} (to the rule's probes)"
    )


def parse_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--scamper-rounds", type=int, default=1)
    parser.add_argument("--scamper-timeout", type=float, default=120.0)
    parser.add_argument("--traces", type=int, default=20)
    parser.add_argument("--labs", default="series,meshed,unequal")
    parser.add_argument("--families", default="4,6")
    parser.add_argument("--confidences", default="95,99")
    parser.add_argument("--helper", help="the helper to run (default: the tree's, built)")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (network namespaces)", file=sys.stderr)
        return 2
    from lab import scamper
    from lab.ecmp import TOPOLOGIES, EcmpLab

    if not scamper.available():
        print("scamper is not installed (apt-get install scamper)", file=sys.stderr)
        return 2

    helper = arguments.helper or helper_path()
    status = 0
    for name in parse_list(arguments.labs):
        with EcmpLab(TOPOLOGIES[name](), tag="bench") as lab:
            for family in (int(f) for f in parse_list(arguments.families)):
                status |= bench_family(lab, name, family, helper, arguments)
    return status


def bench_family(lab: Any, name: str, family: int, helper: str, arguments: Any) -> int:
    """Every confidence on one lab and family, then classic against Paris; 1 when a
    99% run of ours missed a link."""
    target = lab.server_address(family)
    truth = lab.truth(family)
    status = 0
    for confidence in (int(c) for c in parse_list(arguments.confidences)):
        scamper = Column("scamper")
        for _ in range(arguments.scamper_rounds):
            run = scamper_run(lab, target, confidence, arguments.scamper_timeout)
            if isinstance(run, str):
                scamper.failures.append(run)
            else:
                scamper.runs.append(run)
        ours = asyncio.run(our_runs(lab, helper, target, family, confidence, arguments.rounds))
        if isinstance(ours, str):
            ours = Column("brokerpkg", failures=[ours])
        show_case(f"{name} IPv{family} {confidence}%", truth, confidence, scamper, ours)
        if confidence == 99 and any(not truth.edges() <= run.edges for run in ours.runs):
            status = 1
    classic, paris = asyncio.run(classic_and_paris(lab, helper, target, family, arguments.traces))
    paris_text = "n/a (no flow extension)" if paris is None else f"{paris:.2f}"
    print(
        f"== {name} IPv{family}: false links per trace ({arguments.traces} traces): "
        f"classic {classic:.2f}, Paris {paris_text}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
