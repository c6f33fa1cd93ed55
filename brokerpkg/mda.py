"""The multipath detection algorithm (MDA) and MDA-Lite, without I/O or time.

A multipath trace discovers every router (node) at every TTL between this host and a
destination, and the links between consecutive TTLs, through load balancers that
hash each packet's flow (addresses, protocol, ports...) onto one of their next hops.
Each probe goes in a numbered flow (the helper's ``flow`` extension): the same flow
takes the same path, whatever its TTL.  :class:`MultipathState` decides which
(flow, TTL) pairs to probe next from the answers so far; the asynchronous driver
(:mod:`brokerpkg.multipath`) sends them and reports back.

**The stopping rule** (Augustin et al.): to rule out that a node with ``k`` next hops
seen so far has one more, reached as often as the others, send probes through it
until ``n_k`` of them have been answered (or lost), the fewest ``n`` for which the
chance of seeing at most ``k`` of ``k + 1`` equally likely next hops is at most
``1 - confidence``::

    P_fail(K, n) = sum_{i=1}^{K-1} (-1)^(i+1) C(K, i) ((K - i) / K)^n,  K = k + 1

:func:`probes_needed` computes it exactly (integers, any confidence); at 95% and 99%
it gives scamper's and libparistraceroute's table (6, 11, 16, 21, 27, ... and 8, 15,
21, 28, 36, ...).

**Node control** (the MDA): the probes that count for a node's next hops must pass
through that node, so flows are first found at the node's TTL that reach it (a new
flow probed there lands on each node of the TTL in proportion to its share of the
flows seen so far), then probed one TTL further.  Where a TTL has a single node,
every flow passes through it and new flows go straight to the next TTL.

**MDA-Lite** (Vermeulen et al., IMC 2018): where the nodes of a TTL share their next
hops evenly and the diamond is not meshed (no node with two next hops whose next hop
has two predecessors), counting the flows of the whole next TTL is enough: ``n_k``
flows at TTL h+1 for the ``k`` nodes seen there, and at least MESHING_TEST_FLOWS
flows through each node of TTL h (the meshing test; a single flow would not show a
second next hop).  A pair of TTLs found meshed, or whose nodes show different numbers
of next hops once that count is met (the uniformity assumption fails), falls back to
node control for good.  While a TTL's nodes are still being found, only the meshing
test's flows through those known go on to the next TTL: the rest of the count waits
for every node, which needs its own.

**Links back**: node control and MDA-Lite send new flows straight to the TTL they
count at, so a node may be found only by flows never probed one TTL earlier (where a
branch was missed, as the stopping rule allows); one of its flows is then probed at the
TTL before, which shows where it comes from (and the missed node, now counted).

**Per-packet balancers**: a balancer that picks a next hop per packet, not per flow,
sends the probes of one flow down different branches, so a flow's answers at two
TTLs would make up links.  Where that could happen (a TTL with two nodes behind a
node with two next hops, followed by a TTL with two nodes), a few flows already
answered are probed again (:func:`per_packet_tests` of them: enough that a balancer
choosing per packet between two next hops is caught with the trace's confidence).  A
different answer for the same flow marks the TTL per-packet: its nodes are still
counted (n_k answers at the next TTL), nothing is controlled through it, and only the
links that one node on either side implies are reported.  Where the next TTL has a
single node, every link is true whatever the balancer does, and nothing is tested.

**Attempts and gaps** (as scamper's ``-q`` and ``-g``): a probe nobody answered is
sent again in the same flow up to ``attempts`` times in all; a TTL where nobody
answered is crossed (its flows go on to the next TTL through a silent node ``*``),
and the trace gives up after ``gap_limit`` such TTLs in a row.

The state also counts probes against ``max_probes`` (scamper's ``-U``), and can be
stopped (:meth:`MultipathState.stop`, e.g. at a deadline): partial results then say
so.  The probes-per-second budget is :class:`Budget`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from .protocol import MAX_FLOW, ProbeResult

__all__ = [
    "Budget",
    "Link",
    "MdaSettings",
    "MultipathState",
    "ProbeRecord",
    "ProbeRequest",
    "failure_probability",
    "per_packet_tests",
    "probes_needed",
]

DEFAULT_CONFIDENCE = 95.0
"""Percent, as scamper's tracelb ``-c``."""
DEFAULT_ATTEMPTS = 2
"""Probes per (flow, TTL) before it counts as lost, as scamper's ``-q``."""
DEFAULT_GAP_LIMIT = 3
"""Silent TTLs in a row crossed before the trace gives up, as scamper's ``-g``."""
DEFAULT_MAX_PROBES = 3000
"""Probes per trace at most, as scamper's ``-U``."""
FIRST_FLOW = 1
"""The first flow number a trace uses; later flows count up from it."""
MESHING_TEST_FLOWS = 2
"""Flows through each node of a TTL probed one TTL further in MDA-Lite (the meshing
test, MDA-Lite's phi)."""

SOURCE = "(source)"
"""The node before the first TTL: every flow passes through it."""
SILENT = "*"
"""A TTL where nobody answered, as one node that flows cross."""
_UNKNOWN = "(unknown)"
"""The node a flow passed at the previous TTL when that is not known."""


# ----------------------------------------------------------------------------- the rule


def _alpha(confidence: object) -> Fraction:
    """1 - confidence (a percent strictly between 0 and 100), as an exact fraction.

    Raises TypeError for a non-number, ValueError outside (0, 100).
    """
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise TypeError(f"confidence must be a number (percent), got {confidence!r}")
    if not math.isfinite(confidence) or not 0 < confidence < 100:
        raise ValueError(f"confidence must be a percent above 0 and below 100, got {confidence!r}")
    percent = Fraction(str(confidence)) if isinstance(confidence, float) else Fraction(confidence)
    return 1 - percent / 100


def failure_probability(branches: int, probes: int) -> Fraction:
    """The chance that ``probes`` probes spread evenly at random over ``branches`` next
    hops miss at least one of them (P_fail above), exactly.

    Raises ValueError for branches < 1 or probes < 0.
    """
    if branches < 1 or probes < 0:
        raise ValueError(f"need branches >= 1 and probes >= 0, got {branches}, {probes}")
    missed = sum(
        (-1) ** (i + 1) * math.comb(branches, i) * (branches - i) ** probes
        for i in range(1, branches)
    )
    return Fraction(missed, branches**probes)


@functools.lru_cache(maxsize=4096)
def _needed(seen: int, alpha: Fraction) -> int:
    branches = seen + 1
    low = 1
    # the union bound K ((K-1)/K)^n <= alpha gives an n that always suffices
    high = max(1, math.ceil(math.log(float(alpha) / branches) / math.log(seen / branches)))
    while failure_probability(branches, high) > alpha:  # float rounding, never in practice
        high *= 2
    while low < high:
        middle = (low + high) // 2
        if failure_probability(branches, middle) <= alpha:
            high = middle
        else:
            low = middle + 1
    return low


def probes_needed(seen: int, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """n_k: the probes through a node with ``seen`` (k >= 1) next hops so far that rule
    out a (k+1)-th one with ``confidence`` percent (any value strictly between 0 and
    100; see the module documentation).

    Raises TypeError/ValueError for a bad confidence, ValueError for seen < 1.
    """
    if isinstance(seen, bool) or not isinstance(seen, int) or seen < 1:
        raise ValueError(f"seen must be an integer >= 1, got {seen!r}")
    return _needed(seen, _alpha(confidence))


def per_packet_tests(confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Flows probed a second time at a TTL to tell a per-packet balancer: a balancer
    that picks one of two next hops per packet gives the same answer twice with chance
    1/2, so n tests all agree with chance 2^-n <= 1 - confidence.

    Raises TypeError/ValueError for a bad confidence.
    """
    alpha = _alpha(confidence)
    tests = 1
    while Fraction(1, 2**tests) > alpha:
        tests += 1
    return tests


# ----------------------------------------------------------------------------- settings


def _check_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an int (not bool) in [low, high]; raises TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class MdaSettings:
    """What a multipath trace may do: ``confidence`` percent (0-100 exclusive),
    ``first_ttl`` 1-255 to ``max_ttl`` (first_ttl-255), ``attempts`` 1-10 per (flow,
    TTL), ``gap_limit`` 1-255 silent TTLs in a row, ``max_probes`` 1 or more,
    ``lite`` (MDA-Lite where it applies, else node control everywhere) and
    ``first_flow`` 0-65535 (flows count up from it).

    Raises TypeError/ValueError naming the setting.
    """

    confidence: float = DEFAULT_CONFIDENCE
    first_ttl: int = 1
    max_ttl: int = 30
    attempts: int = DEFAULT_ATTEMPTS
    gap_limit: int = DEFAULT_GAP_LIMIT
    max_probes: int = DEFAULT_MAX_PROBES
    lite: bool = True
    first_flow: int = FIRST_FLOW

    def __post_init__(self) -> None:
        _alpha(self.confidence)
        _check_int("first_ttl", self.first_ttl, 1, 255)
        _check_int("max_ttl", self.max_ttl, self.first_ttl, 255)
        _check_int("attempts", self.attempts, 1, 10)
        _check_int("gap_limit", self.gap_limit, 1, 255)
        _check_int("max_probes", self.max_probes, 1, 10**9)
        _check_int("first_flow", self.first_flow, 0, MAX_FLOW)
        if not isinstance(self.lite, bool):
            raise TypeError(f"lite must be True or False, got {self.lite!r}")


# ----------------------------------------------------------------------------- probes


class ProbeRequest(NamedTuple):
    """A probe to send: ``flow`` at ``ttl``; ``attempt`` counts from 0 (a later one
    repeats an unanswered probe); ``recheck`` marks the second probe of an answered
    (flow, TTL) that tests for a per-packet balancer."""

    flow: int
    ttl: int
    attempt: int = 0
    recheck: bool = False


class ProbeRecord(NamedTuple):
    """A probe and the helper's result; ``terminal`` tells that the answer ends the
    path (the destination's reply, or destination unreachable)."""

    request: ProbeRequest
    result: ProbeResult
    terminal: bool


class Link(NamedTuple):
    """Consecutive TTLs ``ttl`` and ``ttl + 1`` joined: ``source`` at ``ttl`` to
    ``target`` at ``ttl + 1`` (None for a TTL where nobody answered), seen by
    ``flows`` (empty for a link that a single node on one side implies across a
    per-packet TTL)."""

    ttl: int
    source: str | None
    target: str | None
    flows: tuple[int, ...]


class _Cell:
    """One (flow, TTL): its probe's state and answer."""

    __slots__ = ("pending", "responder", "settled", "terminal")

    def __init__(self) -> None:
        self.pending = True
        self.settled = False
        self.responder: str | None = None
        self.terminal = False


@dataclass(slots=True)
class _Node:
    """A node at one TTL: the flows it answered, and those among them that went on
    (time exceeded, not the end of the path)."""

    flows: list[int] = field(default_factory=list)
    transit: list[int] = field(default_factory=list)


class _Level:
    """Everything probed at one TTL."""

    __slots__ = (
        "cells",
        "checked",
        "fallback",
        "nodes",
        "per_packet",
        "rechecks_done",
        "rechecks_pending",
    )

    def __init__(self) -> None:
        self.cells: dict[int, _Cell] = {}
        self.nodes: dict[str, _Node] = {}
        self.per_packet = False
        self.fallback = False  # the pair (this TTL, the next) uses node control for good
        self.checked: set[int] = set()
        self.rechecks_pending = 0
        self.rechecks_done = 0

    def pending(self) -> int:
        """(flow, TTL) pairs still waiting for an outcome (a repeat included)."""
        return sum(1 for cell in self.cells.values() if cell.pending)

    def silent(self) -> bool:
        """Probed, every probe settled, nobody answered."""
        return (
            bool(self.cells)
            and not self.nodes
            and all(cell.settled for cell in self.cells.values())
        )


class _Want(NamedTuple):
    """A probe the plan asks for: ``flow`` None for a new flow."""

    flow: int | None
    ttl: int
    attempt: int = 0
    recheck: bool = False


# ----------------------------------------------------------------------------- the state


class MultipathState:
    """The MDA's bookkeeping and decisions, without I/O or time.

    The driver asks :meth:`next_probes` what to send (at most a number it can afford
    now), sends each, and reports each outcome once: :meth:`answered` (a reply or
    time exceeded), :meth:`lost` (no reply), or :meth:`abandoned` (given up before
    its outcome, e.g. at a deadline).  The trace is over when :attr:`finished`.

    Raises ValueError for outcomes of probes that are not outstanding.
    """

    def __init__(self, settings: MdaSettings | None = None) -> None:
        self.settings = settings or MdaSettings()
        self._alpha = _alpha(self.settings.confidence)
        self._tests = per_packet_tests(self.settings.confidence)
        first, last = self.settings.first_ttl, self.settings.max_ttl
        self._levels = {ttl: _Level() for ttl in range(first, last + 1)}
        self._flows: dict[int, dict[int, _Cell]] = {}
        self._next_flow = self.settings.first_flow
        self._retries: list[_Want] = []
        self._outstanding: set[ProbeRequest] = set()
        self.records: list[ProbeRecord] = []
        """Every probe with a result, in the order the results came."""
        self.sent = 0
        """Probes handed out by :meth:`next_probes`."""
        self.stopped: str | None = None
        """Why probing stopped early: ``deadline``, ``probe-limit``, ``flow-limit``
        (or what :meth:`stop` was given); None while it runs and after a trace that
        met its confidence."""

    # ------------------------------------------------------------------ rule

    def _n(self, seen: int) -> int:
        return _needed(max(1, seen), self._alpha)

    # ------------------------------------------------------------------ outcomes

    def _outstanding_cell(self, request: ProbeRequest) -> _Cell:
        if request not in self._outstanding:
            raise ValueError(f"no probe outstanding for {request}")
        self._outstanding.discard(request)
        return self._flows[request.flow][request.ttl]

    def answered(self, request: ProbeRequest, result: ProbeResult, terminal: bool) -> None:
        """An outstanding probe got ``result`` from ``result.responder`` (a result
        without a responder counts as lost); ``terminal``: the path ends there.

        Raises ValueError when ``request`` is not outstanding.
        """
        if result.responder is None:
            self.lost(request, result)
            return
        cell = self._outstanding_cell(request)
        self.records.append(ProbeRecord(request, result, terminal))
        level = self._levels[request.ttl]
        if request.recheck:
            level.rechecks_pending -= 1
            level.rechecks_done += 1
            if result.responder != cell.responder:
                level.per_packet = True
                node = level.nodes.setdefault(result.responder, _Node())
                if request.flow not in node.flows:
                    node.flows.append(request.flow)
            return
        cell.pending = False
        cell.settled = True
        cell.responder = result.responder
        cell.terminal = terminal
        node = level.nodes.setdefault(result.responder, _Node())
        node.flows.append(request.flow)
        if not terminal:
            node.transit.append(request.flow)

    def lost(self, request: ProbeRequest, result: ProbeResult | None = None) -> None:
        """An outstanding probe got no answer (``result``, the helper's no-reply, is
        recorded when given): it is sent again while attempts remain.

        Raises ValueError when ``request`` is not outstanding.
        """
        cell = self._outstanding_cell(request)
        if result is not None:
            self.records.append(ProbeRecord(request, result, False))
        if request.recheck:
            self._levels[request.ttl].rechecks_pending -= 1
            return
        if request.attempt + 1 < self.settings.attempts and self.stopped is None:
            self._retries.append(_Want(request.flow, request.ttl, request.attempt + 1))
            return
        cell.pending = False
        cell.settled = True

    def abandoned(self, request: ProbeRequest, result: ProbeResult | None = None) -> None:
        """An outstanding probe was given up before its outcome (``result``, what stands
        for it, e.g. a no-reply, is recorded when given); it is not sent again.

        Raises ValueError when ``request`` is not outstanding.
        """
        cell = self._outstanding_cell(request)
        if result is not None:
            self.records.append(ProbeRecord(request, result, False))
        if request.recheck:
            self._levels[request.ttl].rechecks_pending -= 1
            return
        cell.pending = False
        cell.settled = True

    def stop(self, reason: str) -> None:
        """Send nothing more (the first reason given is kept); queued repeats are
        dropped and their (flow, TTL) counts as lost."""
        if self.stopped is None:
            self.stopped = reason
        for want in self._retries:
            assert want.flow is not None
            cell = self._flows[want.flow][want.ttl]
            cell.pending = False
            cell.settled = True
        self._retries.clear()

    # ------------------------------------------------------------------ planning

    @property
    def outstanding(self) -> int:
        """Probes handed out and not yet reported."""
        return len(self._outstanding)

    @property
    def finished(self) -> bool:
        """Nothing outstanding and nothing more to send (or stopped)."""
        if self._outstanding:
            return False
        return self.stopped is not None or not self._plan()

    @property
    def confidence_reached(self) -> bool:
        """Finished without being stopped: every node's next hops were probed as the
        stopping rule asks."""
        return self.stopped is None and self.finished

    def next_probes(self, limit: int) -> tuple[list[ProbeRequest], bool]:
        """Up to ``limit`` probes to send now, and whether more are wanted beyond them.

        The probes are outstanding from now on.  Nothing is handed out once stopped;
        reaching ``max_probes`` or the last flow number stops the state.
        """
        if self.stopped is not None:
            return [], False
        wants = self._plan()
        room = self.settings.max_probes - self.sent
        chosen: list[ProbeRequest] = []
        for want in wants[: max(0, min(limit, room))]:
            request = self._commit(want)
            if request is None:
                break
            chosen.append(request)
        if self.stopped is None and len(wants) > len(chosen) and len(chosen) == room:
            self.stop("probe-limit")
        more = self.stopped is None and len(wants) > len(chosen)
        return chosen, more

    def _commit(self, want: _Want) -> ProbeRequest | None:
        """Make a want outstanding (a new flow gets its number); None when flow numbers
        ran out (the state is then stopped)."""
        flow = want.flow
        if flow is None:
            if self._next_flow > MAX_FLOW:
                self.stop("flow-limit")
                return None
            flow = self._next_flow
            self._next_flow += 1
        request = ProbeRequest(flow, want.ttl, want.attempt, want.recheck)
        cells = self._flows.setdefault(flow, {})
        level = self._levels[want.ttl]
        if want.recheck:
            level.rechecks_pending += 1
            level.checked.add(flow)
        elif want.attempt:
            self._retries.remove(want)
        else:
            cell = cells[want.ttl] = _Cell()
            level.cells[flow] = cell
        self._outstanding.add(request)
        self.sent += 1
        return request

    def _plan(self) -> list[_Want]:
        """Every probe wanted now, most urgent first: repeats, then TTL by TTL the
        probes that the stopping rule asks for, then per-packet tests."""
        wants: list[_Want] = list(self._retries)
        settled = True  # the TTL before the pair: its nodes are known
        first = self.settings.first_ttl
        for ttl in range(first - 1, self.settings.max_ttl):
            pair = self._pair_wants(ttl, settled)
            wants.extend(pair)
            following = self._levels[ttl + 1]
            settled = settled and not pair and not following.pending()
        for ttl in range(first + 1, self.settings.max_ttl + 1):
            wants.extend(self._backfill(ttl))
        for ttl in range(first, self.settings.max_ttl + 1):
            wants.extend(self._rechecks(ttl))
        return wants

    def _backfill(self, ttl: int) -> list[_Want]:
        """One flow of each node of ``ttl`` that no flow links back (every flow of it
        entered at ``ttl``, as node control and MDA-Lite send new flows, and the TTL
        before has several nodes), probed at ``ttl - 1``: it shows where the node comes
        from, and a node seen there for the first time is then counted."""
        before = ttl - 1
        if self._sole(before) is not None:
            return []
        wants = []
        for node in self._levels[ttl].nodes.values():
            if any(self._previous(flow, ttl) != _UNKNOWN for flow in node.flows):
                continue
            unprobed = [flow for flow in node.flows if before not in self._flows[flow]]
            if unprobed:
                wants.append(_Want(unprobed[0], before))
        return wants

    # ------------------------------------------------------------------ graph

    def _transit(self, ttl: int) -> list[str]:
        """The nodes at ``ttl`` whose flows go on: SOURCE before the first TTL, the
        nodes that answered time exceeded, or SILENT for a silent TTL within the gap
        limit; empty when the path ends there or nothing is known yet."""
        if ttl < self.settings.first_ttl:
            return [SOURCE]
        level = self._levels[ttl]
        transit = [address for address, node in level.nodes.items() if node.transit]
        if transit or level.nodes:
            return transit
        if level.silent() and self._silent_run(ttl) < self.settings.gap_limit:
            return [SILENT]
        return []

    def _silent_run(self, ttl: int) -> int:
        """Silent TTLs in a row ending at ``ttl``."""
        run = 0
        while ttl >= self.settings.first_ttl and self._levels[ttl].silent():
            run += 1
            ttl -= 1
        return run

    def _sole(self, ttl: int) -> str | None:
        """The node every flow passes at ``ttl`` when there is exactly one (SOURCE
        before the first TTL, SILENT for a silent TTL), else None."""
        if ttl < self.settings.first_ttl:
            return SOURCE
        level = self._levels[ttl]
        if not level.nodes:
            return SILENT if level.silent() else None
        if len(level.nodes) == 1:
            address, node = next(iter(level.nodes.items()))
            return address if node.transit else None
        return None

    def _previous(self, flow: int, ttl: int) -> str:
        """The node ``flow`` passed at ``ttl - 1``: its answer there, SILENT for a
        silent TTL, the only node of that TTL for a flow not probed there, else
        _UNKNOWN."""
        before = ttl - 1
        if before < self.settings.first_ttl:
            return SOURCE
        cell = self._flows[flow].get(before)
        if cell is None:
            return self._sole(before) or _UNKNOWN
        if cell.responder is not None:
            return cell.responder if not cell.terminal else _UNKNOWN
        if cell.settled and not self._levels[before].nodes:
            return SILENT
        return _UNKNOWN

    def _idle(self, node: str, ttl: int) -> list[int]:
        """Flows through ``node`` at ``ttl`` not yet probed at ``ttl + 1``."""
        if node == SOURCE:
            return []
        level = self._levels[ttl]
        if node == SILENT:
            flows = [flow for flow, cell in level.cells.items() if cell.settled]
        else:
            flows = level.nodes[node].transit
        return [flow for flow in flows if ttl + 1 not in self._flows[flow]]

    def _pair_wants(self, ttl: int, settled: bool) -> list[_Want]:
        """The probes at ``ttl + 1`` (and node control at ``ttl``) that the nodes of
        ``ttl`` need; ``settled``: the nodes of ``ttl`` are all known."""
        following = ttl + 1
        nodes = self._transit(ttl)
        if not nodes:
            return []
        cells = self._levels[following].cells
        out: dict[str, int] = dict.fromkeys(nodes, 0)
        seen: dict[str, set[str]] = {node: set() for node in nodes}
        settled_out: dict[str, int] = dict.fromkeys(nodes, 0)
        total = 0
        for flow, cell in cells.items():
            total += 1
            before = self._previous(flow, following)
            if before not in out:
                continue
            out[before] += 1
            if cell.settled:
                settled_out[before] += 1
                if cell.responder is not None:
                    seen[before].add(cell.responder)
        if len(nodes) == 1:
            node = nodes[0]
            missing = self._n(len(seen[node])) - out[node]
            if self.settings.lite and not settled:  # others may yet be found at ``ttl``:
                missing = min(missing, MESHING_TEST_FLOWS - out[node])  # MDA-Lite's share
            return self._single_wants(node, ttl, missing, settled)
        level = self._levels[ttl]
        if level.per_packet:
            width = len(self._levels[following].nodes)
            return self._fill(nodes, ttl, self._n(width) - total, {}, following, settled)
        if self.settings.lite and not level.fallback and not self._meshed(seen):
            width = len(self._levels[following].nodes)
            coverage = {node: MESHING_TEST_FLOWS - out[node] for node in nodes}
            wants = self._fill(nodes, ttl, self._n(width) - total, coverage, following, settled)
            counted = settled and not wants and not self._levels[following].pending()
            if not counted or not self._uneven(seen, settled_out):
                return wants
        level.fallback = True
        return self._controlled_wants(nodes, ttl, out, seen, settled)

    @staticmethod
    def _meshed(seen: Mapping[str, set[str]]) -> bool:
        """True if the pair is meshed (a node with two next hops, and a next hop with
        two predecessors): MDA-Lite does not apply."""
        predecessors: dict[str, int] = {}
        for hops in seen.values():
            for hop in hops:
                predecessors[hop] = predecessors.get(hop, 0) + 1
        fanning = any(len(hops) >= 2 for hops in seen.values())
        return fanning and any(count >= 2 for count in predecessors.values())

    @staticmethod
    def _uneven(seen: Mapping[str, set[str]], settled_out: Mapping[str, int]) -> bool:
        """True if nodes probed through enough to tell (MESHING_TEST_FLOWS answers
        at least) show different numbers of next hops: MDA-Lite's uniformity fails.
        Asked once MDA-Lite's count is met, so that it compares every flow's answer
        (two flows through a node with two next hops show one of them half the time)."""
        widths = {len(seen[node]) for node in seen if settled_out[node] >= MESHING_TEST_FLOWS}
        return len(widths) > 1

    def _single_wants(self, node: str, ttl: int, missing: int, settled: bool) -> list[_Want]:
        """The only node of ``ttl`` whose flows go on needs ``missing`` more flows at
        ``ttl + 1``: its idle flows, then, once ``ttl`` is settled, new flows straight
        at ``ttl + 1`` when every flow passes that node, else new flows at ``ttl``
        (others end the path there: node control)."""
        if missing <= 0:
            return []
        following = ttl + 1
        wants = [_Want(flow, following) for flow in self._idle(node, ttl)[:missing]]
        missing -= len(wants)
        if missing > 0 and settled:
            if self._sole(ttl) == node:
                wants.extend(_Want(None, following) for _ in range(missing))
            else:
                wants.extend(self._explorers(ttl, {node: missing}))
        return wants

    def _controlled_wants(
        self,
        nodes: Sequence[str],
        ttl: int,
        out: Mapping[str, int],
        seen: Mapping[str, set[str]],
        settled: bool,
    ) -> list[_Want]:
        """Node control: each node of ``ttl`` needs n_k flows through it at ``ttl +
        1`` (k its next hops so far): its idle flows, then new flows at ``ttl`` once
        ``ttl`` is settled."""
        wants: list[_Want] = []
        missing = {}
        for node in nodes:
            lacking = self._n(len(seen[node])) - out[node]
            if lacking <= 0:
                continue
            idle = self._idle(node, ttl)[:lacking]
            wants.extend(_Want(flow, ttl + 1) for flow in idle)
            if lacking > len(idle):
                missing[node] = lacking - len(idle)
        if settled:
            wants.extend(self._explorers(ttl, missing))
        return wants

    def _fill(
        self,
        nodes: Sequence[str],
        ttl: int,
        total_missing: int,
        coverage: Mapping[str, int],
        enter: int,
        settled: bool,
    ) -> list[_Want]:
        """MDA-Lite and per-packet TTLs: ``coverage`` flows more through each node of
        ``ttl`` (new flows at ``ttl`` once it is settled when a node has none left),
        then ``total_missing`` flows more at ``ttl + 1`` from any node's idle flows,
        the least probed first, then new flows entered at ``enter``."""
        wants: list[_Want] = []
        idle = {node: self._idle(node, ttl) for node in nodes}
        lacking: dict[str, int] = {}
        for node in nodes:
            need = coverage.get(node, 0)
            if need <= 0:
                continue
            taken, idle[node] = idle[node][:need], idle[node][need:]
            wants.extend(_Want(flow, ttl + 1) for flow in taken)
            if need > len(taken):
                lacking[node] = need - len(taken)
        # the coverage still lacking will count too, once explorers find its flows
        total_missing -= len(wants) + sum(lacking.values())
        if not settled:  # a node still to be found at ``ttl`` will need its own coverage
            return wants
        while total_missing > 0 and any(idle.values()):
            for node in nodes:
                if total_missing > 0 and idle[node]:
                    wants.append(_Want(idle[node].pop(0), ttl + 1))
                    total_missing -= 1
        wants.extend(self._explorers(ttl, lacking))
        wants.extend(_Want(None, enter) for _ in range(total_missing))
        return wants

    def _explorers(self, ttl: int, missing: Mapping[str, int]) -> list[_Want]:
        """New flows at ``ttl`` (node control, once the TTL is settled, so that the
        shares are known) so that, landing on each node in proportion to its share of
        the answers there (one answer more for every node), each node of ``missing``
        gets that many more."""
        if not missing:
            return []
        level = self._levels[ttl]
        # each node's share, one answer more for every node (Laplace's rule of
        # succession): a node seen once in 20 answers is likelier 2 in 24 than 1 in 20
        answered = sum(len(node.flows) for node in level.nodes.values()) + len(level.nodes)
        landing = [
            math.ceil(count * answered / (len(level.nodes[node].flows) + 1))
            for node, count in missing.items()
            if node in level.nodes
        ]
        if not landing:
            return []
        exploring = sum(
            1
            for flow, cell in level.cells.items()
            if cell.pending and ttl - 1 not in self._flows[flow]
        )
        return [_Want(None, ttl) for _ in range(max(landing) - exploring)]

    def _rechecks(self, ttl: int) -> list[_Want]:
        """Second probes of flows answered at ``ttl`` (the per-packet test), once the
        TTL shows two nodes behind a node with two next hops and the next TTL shows
        two nodes."""
        level = self._levels[ttl]
        if level.per_packet or len(level.nodes) < 2 or ttl == self.settings.max_ttl:
            return []
        if len(self._levels[ttl + 1].nodes) < 2:
            return []
        wanted = self._tests - level.rechecks_done - level.rechecks_pending
        if wanted <= 0 or not self._fans_out(ttl):
            return []
        candidates = [
            flow
            for flow, cell in level.cells.items()
            if cell.responder is not None and flow not in level.checked
        ]
        # alternate between the nodes, so that a test compares different branches
        by_node: dict[str, list[int]] = {}
        for flow in candidates:
            by_node.setdefault(level.cells[flow].responder or "", []).append(flow)
        ordered: list[int] = []
        while any(by_node.values()) and len(ordered) < wanted:
            for flows in by_node.values():
                if flows and len(ordered) < wanted:
                    ordered.append(flows.pop(0))
        return [_Want(flow, ttl, recheck=True) for flow in ordered]

    def _fans_out(self, ttl: int) -> bool:
        """True if some node before ``ttl`` (or a per-packet TTL) leads to two nodes."""
        before = ttl - 1
        if before >= self.settings.first_ttl and self._levels[before].per_packet:
            return True
        following: dict[str, set[str]] = {}
        for flow, cell in self._levels[ttl].cells.items():
            if cell.responder is not None:
                following.setdefault(self._previous(flow, ttl), set()).add(cell.responder)
        following.pop(_UNKNOWN, None)
        return any(len(hops) >= 2 for hops in following.values())

    # ------------------------------------------------------------------ results

    def probed_ttls(self) -> list[int]:
        """The TTLs probed at all, in order."""
        return [ttl for ttl, level in self._levels.items() if level.cells]

    def nodes(self, ttl: int) -> dict[str, tuple[int, ...]]:
        """The nodes found at ``ttl``: address -> the flows that found it."""
        return {address: tuple(node.flows) for address, node in self._levels[ttl].nodes.items()}

    def per_packet(self, ttl: int) -> bool:
        """True if ``ttl`` showed a per-packet balancer (one flow, two answers)."""
        return self._levels[ttl].per_packet

    def controlled(self, ttl: int) -> bool:
        """True if the pair (``ttl``, ``ttl + 1``) fell back from MDA-Lite to node
        control (meshed, or uneven next hops)."""
        return self._levels[ttl].fallback

    def links(self) -> list[Link]:
        """Every link between consecutive TTLs, in TTL order: the flows probed at both
        ends, SILENT ends as None; across a per-packet TTL only those implied by a
        single node on one side."""
        found: dict[tuple[int, str | None, str | None], list[int]] = {}
        for ttl in range(self.settings.first_ttl, self.settings.max_ttl):
            level, following = self._levels[ttl], self._levels[ttl + 1]
            if not following.cells:
                continue
            if level.per_packet or following.per_packet:
                for link in self._implied_links(ttl):
                    found.setdefault(link[:3], []).extend(link.flows)
                continue
            silent = following.silent()
            for flow, cell in following.cells.items():
                if not cell.settled or (cell.responder is None and not silent):
                    continue
                before = self._previous(flow, ttl + 1)
                if before in (_UNKNOWN, SOURCE):
                    continue
                key = (ttl, None if before == SILENT else before, cell.responder)
                found.setdefault(key, []).append(flow)
        return [Link(*key, tuple(flows)) for key, flows in found.items()]

    def _implied_links(self, ttl: int) -> Iterable[Link]:
        """Links of the pair (``ttl``, ``ttl + 1``) that a single node on one side
        implies (the pair touches a per-packet TTL)."""
        level, following = self._levels[ttl], self._levels[ttl + 1]
        sources = {a: node.transit for a, node in level.nodes.items() if node.transit}
        targets = {a: node.flows for a, node in following.nodes.items()}
        if len(sources) == 1:
            source = next(iter(sources))
            return [Link(ttl, source, target, tuple(flows)) for target, flows in targets.items()]
        if len(targets) == 1:
            target = next(iter(targets))
            return [Link(ttl, source, target, tuple(flows)) for source, flows in sources.items()]
        return []


# ----------------------------------------------------------------------------- budget


class Budget:
    """A probes-per-second budget: a token bucket of ``burst`` probes refilled at
    ``rate`` per second, starting full at loop time ``now``.

    Raises TypeError/ValueError unless rate > 0 and burst >= 1.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError(f"rate must be a number of probes per second, got {rate!r}")
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"rate must be more than 0 probes per second, got {rate!r}")
        self.rate = float(rate)
        self.burst = _check_int("burst", burst, 1, 10**9)
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now

    def available(self, now: float) -> int:
        """Probes that may be sent at ``now``."""
        self._refill(now)
        return int(self._tokens)

    def spend(self, count: int, now: float) -> None:
        """Take ``count`` probes from the budget at ``now`` (it may go below zero)."""
        self._refill(now)
        self._tokens -= count

    def next_at(self, now: float) -> float:
        """When the next probe may be sent (``now`` if one may be sent already)."""
        self._refill(now)
        if self._tokens >= 1:
            return now
        return now + (1 - self._tokens) / self.rate
