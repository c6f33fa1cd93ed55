"""Multipath traces: every router and link of load-balanced paths, with the MDA.

:func:`multipath_trace` runs the pure engine of :mod:`brokerpkg.mda` (MDA and
MDA-Lite, the exact stopping rule for any confidence, node control, attempts, a gap
limit, per-packet balancers told apart) over a :class:`~brokerpkg.Session`: every
probe goes in a numbered flow (the helper's ``flow`` extension, so each flow keeps one
path through per-flow balancers), every open branch and TTL is probed at once, paced
by a probes-per-second budget, and the trace ends by a hard deadline at the latest
(the result then says it is partial).

The result, :class:`MultipathResult`, has the nodes of every TTL (with their
round-trip times, MPLS label stacks and the flows that found them), the links between
consecutive TTLs with their flows, the probes used and whether the confidence was
reached.  It prints in scamper tracelb's style (:func:`tracelb_lines`: ``A -> (B, C,
D) -> E``), as Graphviz (:func:`dot_lines`) and as JSON (:meth:`MultipathResult.to_dict`,
the layout of :meth:`~brokerpkg.trace.TraceResult.to_dict` with ``links``,
``probes`` and ``confidence``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

from . import protocol as wire
from . import stats
from .answers import Answer, classify, probe_to_dict
from .errors import FeatureNotSupportedError
from .mda import (
    DEFAULT_ATTEMPTS,
    DEFAULT_CONFIDENCE,
    DEFAULT_GAP_LIMIT,
    DEFAULT_MAX_PROBES,
    FIRST_FLOW,
    Budget,
    MdaSettings,
    MultipathState,
    ProbeRequest,
)
from .options import CommonOptions, check_seconds, probe_settings, refuse_unknown_options
from .protocol import Mpls, ProbeResult
from .resolve import NameResolver
from .results import given_up_result
from .session import Session
from .tasks import resolve_address, session_scope
from .trace import TERMINAL_ANSWERS, Responder, lookup_names, make_hop, names_for

__all__ = [
    "FlowProbe",
    "MultipathHop",
    "MultipathLink",
    "MultipathResult",
    "dot_lines",
    "multipath_trace",
    "tracelb_lines",
]

DEFAULT_TIMEOUT = 2.0
"""Seconds each probe waits for its answer."""
DEFAULT_RATE = 500.0
"""Probes per second at most."""
MAX_BURST = 50
"""Probes sent at once at most, before the rate paces them."""
DEFAULT_DEADLINE = 60.0
"""Seconds a trace may take at most."""

STOP_REASONS = {
    "deadline": "stopped at the deadline",
    "probe-limit": "stopped at the probe limit",
    "flow-limit": "stopped: no flow number left",
}


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class FlowProbe:
    """One probe of a multipath trace: its ``flow``, its ``attempt`` (0 first, more
    for a probe sent again after no answer), ``recheck`` (a second probe of an answered
    flow, testing for a per-packet balancer) and the helper's ``result``."""

    flow: int
    attempt: int
    recheck: bool
    result: ProbeResult

    def to_dict(self) -> dict[str, Any]:
        """The result as :func:`~brokerpkg.answers.probe_to_dict` gives it, with ``flow``,
        ``attempt`` and ``recheck``."""
        document = probe_to_dict(self.result)
        document.update(flow=self.flow, attempt=self.attempt, recheck=self.recheck)
        return document


@dataclass(frozen=True, slots=True)
class MultipathHop(stats.ProbeCounts):
    """The nodes found at one TTL.

    ``probes`` are every probe sent at this TTL, in the order their results came (a
    probe given up at the deadline reads no-reply);
    ``responders`` maps each address that answered to its
    :class:`~brokerpkg.trace.Responder` (round-trip times, MPLS labels, answers, name),
    in the order they were found; ``flows`` maps it to the flows that found it;
    ``per_packet`` tells that one flow got answers from two of them (a balancer
    choosing per packet, not per flow, before this TTL).
    """

    ttl: int
    probes: tuple[FlowProbe, ...]
    responders: Mapping[str, Responder] = field(default_factory=dict)
    flows: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    per_packet: bool = False

    @property
    def is_silent(self) -> bool:
        """True if nobody answered at this TTL."""
        return not self.responders

    @property
    def sent(self) -> int:
        """Probes sent at this TTL."""
        return len(self.probes)

    @property
    def received(self) -> int:
        """Probes answered."""
        return sum(1 for probe in self.probes if probe.result.responder is not None)

    @property
    def rtts(self) -> list[float]:
        """Round-trip times (ms) of the answered probes."""
        return [
            probe.result.time_ms
            for probe in self.probes
            if probe.result.time_ms is not None and probe.result.responder is not None
        ]

    @property
    def reached(self) -> bool:
        """True if the destination answered a probe at this TTL."""
        return any(probe.result.success for probe in self.probes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: a trace hop's keys (see
        :meth:`brokerpkg.trace.Hop.to_dict`), each responder with its ``flows``, each
        probe with its ``flow``, and ``per_packet``."""
        responders = []
        for address, responder in self.responders.items():
            document = responder.to_dict()
            document["flows"] = list(self.flows.get(address, ()))
            responders.append(document)
        return {
            "ttl": self.ttl,
            "is_silent": self.is_silent,
            "reached": self.reached,
            **self.counts_to_dict(),
            "per_packet": self.per_packet,
            "responders": responders,
            "probes": [probe.to_dict() for probe in self.probes],
        }


@dataclass(frozen=True, slots=True)
class MultipathLink:
    """A link from ``source`` at ``ttl`` to ``target`` at ``ttl + 1`` (None: a TTL
    where nobody answered), and the flows that crossed it (empty for a link implied
    by a single node on one side of a per-packet TTL)."""

    ttl: int
    source: str | None
    target: str | None
    flows: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """``{"ttl", "from", "to", "flows"}``."""
        return {"ttl": self.ttl, "from": self.source, "to": self.target, "flows": list(self.flows)}


@dataclass(frozen=True, slots=True)
class MultipathResult:
    """A multipath trace to ``destination`` (``host`` as given).

    ``hops`` are the TTLs probed, in order (a router on branches of unequal lengths
    appears at several TTLs); ``links`` join consecutive TTLs; ``probes`` counts every
    probe sent; ``confidence`` is the percent asked for and ``confidence_reached``
    tells whether the stopping rule was met everywhere.  ``stopped`` says why the
    trace ended early (``deadline``, ``probe-limit``, ``flow-limit``), None when it
    ran to its end: then the result is complete, ``partial`` otherwise.
    """

    host: str
    destination: str
    protocol: str
    first_ttl: int
    max_ttl: int
    confidence: float
    hops: tuple[MultipathHop, ...]
    links: tuple[MultipathLink, ...]
    probes: int
    confidence_reached: bool
    stopped: str | None = None

    @property
    def partial(self) -> bool:
        """True if the trace was stopped before its end."""
        return self.stopped is not None

    @property
    def reached(self) -> bool:
        """True if the destination answered."""
        return any(hop.reached for hop in self.hops)

    @property
    def distance(self) -> int | None:
        """The lowest TTL at which the destination answered."""
        return next((hop.ttl for hop in self.hops if hop.reached), None)

    @property
    def nodes(self) -> list[str]:
        """Every address that answered, each once, in TTL order."""
        return list(dict.fromkeys(address for hop in self.hops for address in hop.responders))

    def hop(self, ttl: int) -> MultipathHop:
        """The hop at ``ttl``; raises KeyError when the trace has none."""
        for hop in self.hops:
            if hop.ttl == ttl:
                return hop
        raise KeyError(f"no hop at TTL {ttl}")

    def edges(self) -> list[tuple[str, str]]:
        """The links between answering routers, each (source, target) pair once."""
        pairs: dict[tuple[str, str], None] = {}
        for link in self.links:
            if link.source is not None and link.target is not None:
                pairs[link.source, link.target] = None
        return list(pairs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: a trace's keys (``host``, ``destination``, ``protocol``,
        ``first_ttl``, ``max_ttl``, ``reached``, ``distance``, ``hops``), ``links``
        (``ttl``, ``from``, ``to``, ``flows``), ``probes`` (how many),
        ``confidence``, ``confidence_reached``, ``stopped`` and ``partial``."""
        return {
            "host": self.host,
            "destination": self.destination,
            "protocol": self.protocol,
            "first_ttl": self.first_ttl,
            "max_ttl": self.max_ttl,
            "reached": self.reached,
            "distance": self.distance,
            "hops": [hop.to_dict() for hop in self.hops],
            "links": [link.to_dict() for link in self.links],
            "probes": self.probes,
            "confidence": self.confidence,
            "confidence_reached": self.confidence_reached,
            "stopped": self.stopped,
            "partial": self.partial,
        }

    def __str__(self) -> str:
        """The text of :func:`tracelb_lines`."""
        return "\n".join(tracelb_lines(self))


# ----------------------------------------------------------------------------- layouts


def _percent(value: float) -> str:
    return f"{value:g}%"


def _mpls_text(mpls: Sequence[Mpls]) -> str:
    """``<MPLS:L=16,E=0,S=1,T=1>`` (traceroute -e's way), entries split by /."""
    entries = "/".join(
        f"L={entry.label},E={entry.traffic_class},S={int(entry.bottom_of_stack)},T={entry.ttl}"
        for entry in mpls
    )
    return f"<MPLS:{entries}>"


def _order(address: str | None) -> tuple[int, int]:
    """Addresses in numeric order, IPv4 first."""
    if address is None:
        return 0, 0
    number = ipaddress.ip_address(address)
    return number.version, int(number)


def _address_order(item: tuple[str, object]) -> tuple[int, int]:
    return _order(item[0])


def _hop_set(hop: MultipathHop, show_mpls: bool) -> str:
    """A TTL's nodes as scamper writes a hop: ``A``, ``(A, B, C)`` in address order,
    ``*``."""
    if hop.is_silent:
        return "*"
    names = []
    for address, responder in sorted(hop.responders.items(), key=_address_order):
        label = address
        if show_mpls and responder.mpls:
            label += " " + _mpls_text(responder.mpls)
        names.append(label)
    return names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"


def tracelb_lines(result: MultipathResult, *, show_mpls: bool = False) -> list[str]:
    """scamper tracelb's text: a summary, then the path as hop sets::

        multipath trace to 198.18.50.2 (198.18.50.2), 11 nodes, 14 links, 75 probes, 95%
        198.18.1.2 -> (198.18.10.2, 198.18.11.2) -> 198.18.20.2 -> 198.18.50.2

    then, where both ends of a pair of TTLs have several nodes (which of them are
    linked is not in the hop sets), one ``A -> B`` line per link, as scamper's lines
    for a node with several links; a line per per-packet TTL; and a last line when
    the trace is partial (stopped before its confidence was reached) or did not reach
    the destination.  ``show_mpls`` adds each node's MPLS labels (``<MPLS:L=...>``).
    """
    name = result.destination if result.host == result.destination else result.host
    header = (
        f"multipath trace to {name} ({result.destination}), {len(result.nodes)} nodes, "
        f"{len(result.edges())} links, {result.probes} probes, {_percent(result.confidence)}"
    )
    lines = [header]
    if result.hops:
        lines.append(" -> ".join(_hop_set(hop, show_mpls) for hop in result.hops))
    widths = {hop.ttl: len(hop.responders) for hop in result.hops}
    crossed = [
        link
        for link in result.links
        if widths.get(link.ttl, 0) > 1 and widths.get(link.ttl + 1, 0) > 1
    ]
    crossed.sort(key=lambda link: (link.ttl, _order(link.source), _order(link.target)))
    lines.extend(f"{link.source} -> {link.target}" for link in crossed)
    for hop in result.hops:
        if hop.per_packet:
            lines.append(
                f"TTL {hop.ttl}: per-packet load balancing (one flow, several answers): "
                "links through it are not known"
            )
    lines.extend(_ending(result))
    return lines


def _ending(result: MultipathResult) -> list[str]:
    """The closing line, if any: partial (the confidence was not reached), or the
    destination not reached."""
    if result.stopped is not None:
        reason = STOP_REASONS.get(result.stopped, f"stopped ({result.stopped})")
        return [f"{reason} after {result.probes} probes: partial result"]
    if not result.reached:
        return ["destination not reached"]
    return []


def _dot_id(text: str) -> str:
    """A quoted Graphviz ID (``\\n`` in ``text`` stays a line break in a label)."""
    return '"' + text.replace('"', '\\"') + '"'


def dot_lines(result: MultipathResult) -> list[str]:
    """The trace as a Graphviz digraph: one node per router (labelled with its address
    and the TTLs where it answered; the destination doubly outlined), one per silent
    TTL (``*``), one edge per pair of linked nodes labelled with its flows' count
    (dashed when a single node implies it across a per-packet TTL)."""
    ttls: dict[str, list[int]] = {}
    for hop in result.hops:
        for address in hop.responders:
            ttls.setdefault(address, []).append(hop.ttl)
    lines = [
        "digraph multipath {",
        f"  label={_dot_id(f'multipath trace to {result.destination}')};",
        "  rankdir=LR;",
        "  node [shape=box];",
    ]
    for address, found in ttls.items():
        label = _dot_id(address + "\\nTTL " + ", ".join(str(ttl) for ttl in found))
        shape = " shape=doubleoctagon" if address == result.destination else ""
        lines.append(f"  {_dot_id(address)} [label={label}{shape}];")
    for hop in result.hops:
        if hop.is_silent:
            label = _dot_id(f"*\\nTTL {hop.ttl}")
            lines.append(f"  {_dot_id(f'*{hop.ttl}')} [label={label}];")
    edges: dict[tuple[str, str], int] = {}
    implied: set[tuple[str, str]] = set()
    for link in result.links:
        source = link.source if link.source is not None else f"*{link.ttl}"
        target = link.target if link.target is not None else f"*{link.ttl + 1}"
        edges[source, target] = edges.get((source, target), 0) + len(link.flows)
        if not link.flows:
            implied.add((source, target))
    for (source, target), flows in edges.items():
        style = " style=dashed" if (source, target) in implied and not flows else ""
        lines.append(
            f"  {_dot_id(source)} -> {_dot_id(target)} [label={_dot_id(str(flows))}{style}];"
        )
    lines.append("}")
    return lines


# ----------------------------------------------------------------------------- tracing


def _burst(rate: float) -> int:
    """Probes that may go at once: a tenth of a second's worth, 1 to MAX_BURST."""
    return max(1, min(MAX_BURST, int(rate / 10)))


async def multipath_trace(
    host: str,
    first_ttl: int = 1,
    max_ttl: int = 30,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - each probe's own timeout, sent to the helper
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    attempts: int = DEFAULT_ATTEMPTS,
    gap_limit: int = DEFAULT_GAP_LIMIT,
    max_probes: int = DEFAULT_MAX_PROBES,
    rate: float = DEFAULT_RATE,
    deadline: float = DEFAULT_DEADLINE,
    lite: bool = True,
    first_flow: int = FIRST_FLOW,
    session: Session | None = None,
    helper: str | os.PathLike[str] | None = None,
    resolve_names: bool = False,
    name_resolver: NameResolver | None = None,
    **options: Unpack[CommonOptions],
) -> MultipathResult:
    """Find every router and link between here and ``host`` through load balancers,
    with the MDA (see :mod:`brokerpkg.mda`); return a :class:`MultipathResult`.

    ``confidence`` is the percent (strictly between 0 and 100, default 95) with which
    each router's next hops are ruled complete; ``lite`` uses MDA-Lite where the
    diamond allows it (False: node control everywhere, as the classic MDA).  Each
    (flow, TTL) gets up to ``attempts`` probes (default 2, as scamper's ``-q``), each
    waiting ``timeout`` seconds; the trace gives up after ``gap_limit`` silent TTLs in a
    row (default 3, scamper's ``-g``); at most ``max_probes`` probes are sent (3000, scamper's
    ``-U``), at most ``rate`` a second (500; bursts of a tenth of a second's worth, at
    most 50), and the trace ends after ``deadline`` seconds (60) at the latest, its
    outstanding probes given up: the result is then ``partial``.  Flows are numbered
    from ``first_flow`` (default 1).

    ``session``/``helper`` are those of :func:`~brokerpkg.trace.traceroute`, the probe
    options those of :class:`~brokerpkg.options.CommonOptions` (traceroute's but
    ``local_port``: the flows choose the ports).  UDP probes without ``port`` get their
    destination port from their flow.  ``resolve_names`` looks up each responder's
    reverse name (``name_resolver``, default the session's).

    Raises TypeError/ValueError for bad arguments (first_ttl 1-255, max_ttl
    first_ttl-255, confidence, attempts 1-10, gap_limit 1-255, max_probes >= 1,
    first_flow 0-65535, rate > 0, deadline > 0, the probe options), before anything is
    sent; FeatureNotSupportedError when the helper cannot put probes in flows
    (check-support feature flow is not ``ok``: mtr-packet, or the helper's datagram
    ICMP fallback); HostResolveError; ProbeSendError when the kernel refuses a probe;
    the session's errors.
    """
    refuse_unknown_options("multipath_trace", options, CommonOptions.__optional_keys__)
    settings = MdaSettings(
        confidence=confidence,
        first_ttl=first_ttl,
        max_ttl=max_ttl,
        attempts=attempts,
        gap_limit=gap_limit,
        max_probes=max_probes,
        lite=lite,
        first_flow=first_flow,
    )
    deadline = check_seconds("deadline", deadline, positive=True)
    Budget(rate, _burst(rate), 0.0)  # checks the rate
    probe = probe_settings(timeout=timeout, **options)
    if name_resolver is not None and not isinstance(name_resolver, NameResolver):
        raise TypeError("name_resolver must be a NameResolver")
    async with session_scope(session, helper) as open_session:
        support = open_session.features.get("flow", "no")
        if support != "ok":
            raise FeatureNotSupportedError("flow", support, "multipath_trace")
        address = await resolve_address(open_session, host, options.get("family"))
        arguments = probe.arguments(address)
        del arguments["ttl"], arguments["flow"]  # what the trace chooses
        protocol_name = probe.options.protocol or wire.DEFAULT_PROTOCOL
        loop = asyncio.get_running_loop()
        state = MultipathState(settings)
        start = loop.time()
        budget = Budget(rate, _burst(rate), start)
        given_up = given_up_result(probe.options, address, None)
        await _drive(open_session, address, arguments, state, budget, start + deadline, given_up)
        names: dict[str, str | None] = {}
        if resolve_names:
            resolver = name_resolver or names_for(open_session)
            addresses = (record.result.responder for record in state.records)
            names = await lookup_names(resolver, (a for a in addresses if a is not None))
    return _result(host, address, protocol_name, state, names)


async def _drive(
    session: Session,
    address: str,
    arguments: Mapping[str, Any],
    state: MultipathState,
    budget: Budget,
    deadline_at: float,
    given_up: ProbeResult,
) -> None:
    """Send what ``state`` asks for, as the budget allows, and report every outcome,
    until it is finished or ``deadline_at`` (loop time) passes; then the probes still
    out are given up, recorded as ``given_up`` (a no-reply) with their TTL.  Raises the
    first probe's error (the others are given up)."""
    loop = asyncio.get_running_loop()
    running: dict[asyncio.Task[ProbeResult], ProbeRequest] = {}
    try:
        while True:
            now = loop.time()
            if now >= deadline_at:
                state.stop("deadline")
                return
            requests, more = state.next_probes(budget.available(now))
            budget.spend(len(requests), now)
            for request in requests:
                probe = session.probe(address, ttl=request.ttl, flow=request.flow, **arguments)
                running[loop.create_task(probe)] = request
            if not running and not more:
                return
            wake = budget.next_at(loop.time()) if more else deadline_at
            delay = max(0.0, min(wake, deadline_at) - loop.time())
            if not running:
                await asyncio.sleep(delay)
                continue
            done, _ = await asyncio.wait(
                running, timeout=delay, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                _report(state, running.pop(task), task.result())
    finally:
        for task, request in running.items():
            task.cancel()
            state.abandoned(request, given_up._replace(ttl=request.ttl))
        if running:
            await asyncio.wait(running)


def _report(state: MultipathState, request: ProbeRequest, result: ProbeResult) -> None:
    """Tell ``state`` what a probe got; raises ProbeSendError (via classify) when the
    kernel refused to send it."""
    answer = classify(result)
    if answer is Answer.NO_REPLY:
        state.lost(request, result)
    else:
        state.answered(request, result, terminal=answer in TERMINAL_ANSWERS)


def _result(
    host: str,
    destination: str,
    protocol: str,
    state: MultipathState,
    names: Mapping[str, str | None],
) -> MultipathResult:
    """The MultipathResult of a finished (or stopped) state."""
    probes: dict[int, list[FlowProbe]] = {}
    for record in state.records:
        request = record.request
        probes.setdefault(request.ttl, []).append(
            FlowProbe(request.flow, request.attempt, request.recheck, record.result)
        )
    hops = []
    for ttl in state.probed_ttls():
        sent = probes.get(ttl, [])
        hop = make_hop(ttl, [probe.result for probe in sent], names)
        hops.append(
            MultipathHop(ttl, tuple(sent), hop.responders, state.nodes(ttl), state.per_packet(ttl))
        )
    settings = state.settings
    links = tuple(MultipathLink(*link) for link in state.links())
    return MultipathResult(
        host=host,
        destination=destination,
        protocol=protocol,
        first_ttl=settings.first_ttl,
        max_ttl=settings.max_ttl,
        confidence=float(settings.confidence),
        hops=tuple(hops),
        links=links,
        probes=state.sent,
        confidence_reached=state.confidence_reached,
        stopped=state.stopped,
    )
