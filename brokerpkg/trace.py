"""traceroute with every probe in flight at once, and reverse name lookups.

:func:`traceroute` sends ``probes_per_hop`` probes for every TTL from ``first_ttl`` to
``max_ttl`` at the same moment (not hop by hop) and returns a :class:`TraceResult`:

- the trace ends at the first TTL whose probe reached the destination (or got
  "destination unreachable", which ends a path as well); hops beyond it are dropped;
- as soon as such an answer arrives at TTL d, the probes still outstanding for TTLs
  above d are cancelled (the session keeps their tokens reserved until the helper is
  done with them), so a trace whose hops all answer finishes in about the farthest
  hop's round trip;
- each probe is waited for as traceroute(8) waits (``wait``, its ``-w MAX,HERE,NEAR``:
  at most 5 s, less once its own or a later TTL answered), and a TTL still silent is
  probed again at 0.25, 0.75 and 1.75 s when it is below the farthest TTL that answered,
  or a few TTLs beyond it while the destination has not answered (``retries``): the
  probes a router loses while it resolves its next hop (ARP, IPv6 neighbour discovery)
  on a path nobody used for a while do not leave holes.  The rules are
  :mod:`brokerpkg.waiting`'s; no trace lasts longer than MAX;
- a hop nobody answered is kept, marked :attr:`Hop.is_silent`;
- every address that answered a hop is recorded (load balancing shows several), with
  its round-trip times and the MPLS label stack it quoted.

A Paris trace (``paris=True``, or ``flow=N``) puts every probe, whatever its TTL, in one
flow (the helper's ``flow`` extension: the fields per-flow load balancers hash stay the
same, for every protocol and family), so that each hop is on the one path that flow
takes; the probes are still all in flight at once.  A classic trace gives every probe
its own flow, so a load-balanced path shows several responders per hop, from different
paths.  :func:`brokerpkg.multipath.multipath_trace` finds every path.

Reverse DNS names (``resolve_names=True``) come from a :class:`NameResolver`, by default
the session's own (:func:`names_for`), which ``Session.clear_dns_cache`` empties.

Sending every probe at once is what makes the trace fast; a router that rate-limits its
ICMP errors harder than a burst of ``probes_per_hop`` may then leave some probes
unanswered, where a hop-by-hop traceroute would not.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self, Unpack

from . import protocol as wire
from . import stats
from .answers import Answer, classify, probe_to_dict, raise_for_probe
from .errors import NoReplyError, TimeExceeded
from .options import (
    TraceOptions,
    check_int,
    check_seconds,
    paris_flow,
    probe_settings,
    refuse_unknown_options,
)
from .protocol import Mpls, ProbeResult
from .resolve import NameResolver
from .session import Session
from .tasks import ProgressCallback, ProgressCounter, TaskGroup, resolve_address, session_scope
from .waiting import DEFAULT_RETRIES, TracePlan, Try, Wait, check_retries

__all__ = [
    "Hop",
    "NameResolver",
    "Responder",
    "TraceResult",
    "names_for",
    "traceroute",
]

TERMINAL_ANSWERS = (Answer.REPLY, Answer.UNREACHABLE)
"""Answers after which a larger TTL cannot get further along the path."""


# ----------------------------------------------------------------------------- names


def names_for(session: Session) -> NameResolver:
    """The NameResolver of ``session`` (its :attr:`~Session.name_resolver`)."""
    return session.name_resolver


async def lookup_names(resolver: NameResolver, addresses: Iterable[str]) -> dict[str, str | None]:
    """Names of all ``addresses``, looked up concurrently."""
    unique = list(dict.fromkeys(addresses))
    names = await asyncio.gather(*(resolver.name(address) for address in unique))
    return dict(zip(unique, names, strict=True))


# ----------------------------------------------------------------------------- results


def _format_ms(value: float | None) -> str:
    return "*" if value is None else f"{value:.3f} ms"


@dataclass(frozen=True, slots=True)
class Responder:
    """One address that answered probes of a hop.

    ``rtts`` are its round-trip times (ms) in probe order, ``mpls`` the label stack of
    the first of its answers that quoted one (RFC 4950; empty without), ``answers`` the
    kinds of answer it gave (first seen first), ``name`` its reverse DNS name when
    looked up and found.
    """

    address: str
    rtts: tuple[float, ...]
    mpls: tuple[Mpls, ...] = ()
    answers: tuple[Answer, ...] = ()
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "address": self.address,
            "name": self.name,
            "rtts": list(self.rtts),
            "mpls": [entry._asdict() for entry in self.mpls],
            "answers": [str(answer) for answer in self.answers],
        }


@dataclass(frozen=True, slots=True)
class Hop(stats.ProbeCounts):
    """The probes of one TTL and who answered them.

    ``probes`` holds one ProbeResult per probe position (``probes_per_hop`` of them), in
    probe order: the first answer any try at that position got, else no reply (as the
    hop line shows them).  ``retries`` holds the results of the other probes sent for
    the TTL (further tries of a silent hop, see :mod:`brokerpkg.waiting`): those that
    stayed unanswered and late answers of a position already filled.  ``responders``
    maps each address that answered any of them to its :class:`Responder`, in the
    order they first appear.  The counts and statistics cover every probe sent.
    """

    ttl: int
    probes: tuple[ProbeResult, ...]
    responders: Mapping[str, Responder] = field(default_factory=dict)
    retries: tuple[ProbeResult, ...] = ()

    @property
    def is_silent(self) -> bool:
        """True if no probe of this hop was answered."""
        return not self.responders

    @property
    def address(self) -> str | None:
        """The first address that answered (None when silent)."""
        return next(iter(self.responders), None)

    @property
    def name(self) -> str | None:
        """The reverse name of :attr:`address`, if looked up and found."""
        address = self.address
        return None if address is None else self.responders[address].name

    @property
    def rtts(self) -> list[float]:
        """Round-trip times (ms) of the answered probes: :attr:`probes` in probe order,
        then :attr:`retries`."""
        return [
            probe.time_ms
            for probe in (*self.probes, *self.retries)
            if probe.time_ms is not None and probe.responder is not None
        ]

    @property
    def sent(self) -> int:
        """Probes sent for this TTL, further tries included."""
        return len(self.probes) + len(self.retries)

    @property
    def received(self) -> int:
        """Probes answered (by anyone), further tries included."""
        return sum(1 for probe in (*self.probes, *self.retries) if probe.responder is not None)

    @property
    def reached(self) -> bool:
        """True if the destination itself answered a probe of this hop."""
        return any(probe.success for probe in self.probes)

    @property
    def unreachable(self) -> bool:
        """True if a probe of this hop got "destination unreachable"."""
        return any(classify(probe) is Answer.UNREACHABLE for probe in self.probes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the hop, its responders and every probe."""
        return {
            "ttl": self.ttl,
            "is_silent": self.is_silent,
            "reached": self.reached,
            "sent": self.sent,
            "received": self.received,
            "packet_loss": self.packet_loss,
            "min_rtt": self.min_rtt,
            "avg_rtt": self.avg_rtt,
            "max_rtt": self.max_rtt,
            "responders": [responder.to_dict() for responder in self.responders.values()],
            "probes": [probe_to_dict(probe) for probe in self.probes],
            "retries": [probe_to_dict(probe) for probe in self.retries],
        }

    def __str__(self) -> str:
        """A traceroute line: ``  3  name (address)  0.512 ms  0.498 ms  *``."""
        if self.is_silent:
            return f"{self.ttl:3d}  " + "  ".join("*" for _ in self.probes)
        parts: list[str] = []
        shown: str | None = None
        for probe in self.probes:
            if probe.responder is not None and probe.responder != shown:
                shown = probe.responder
                responder = self.responders[shown]
                label = f"{responder.name} ({shown})" if responder.name else shown
                if responder.mpls:
                    label += (
                        " [MPLS "
                        + ", ".join(
                            f"label {entry.label} TTL {entry.ttl}" for entry in responder.mpls
                        )
                        + "]"
                    )
                parts.append(label)
            marker = " !H" if classify(probe) is Answer.UNREACHABLE else ""
            parts.append(_format_ms(probe.time_ms if probe.responder else None) + marker)
        return f"{self.ttl:3d}  " + "  ".join(parts)


def make_hop(
    ttl: int,
    probes: Sequence[ProbeResult],
    names: Mapping[str, str | None] | None = None,
    retries: Sequence[ProbeResult] = (),
) -> Hop:
    """Build the Hop for ``probes`` (and ``retries``, see :class:`Hop`) of one TTL:
    group answers by responder address.

    Raises like :func:`~brokerpkg.answers.classify` for a result of a probe never sent.
    """
    rtts: dict[str, list[float]] = {}
    mpls: dict[str, tuple[Mpls, ...]] = {}
    answers: dict[str, list[Answer]] = {}
    for probe in (*probes, *retries):
        answer = classify(probe)
        if probe.responder is None:
            continue
        address = probe.responder
        rtts.setdefault(address, [])
        if probe.time_ms is not None:
            rtts[address].append(probe.time_ms)
        if probe.mpls and not mpls.get(address):
            mpls[address] = tuple(probe.mpls)
        kinds = answers.setdefault(address, [])
        if answer not in kinds:
            kinds.append(answer)
    known = names or {}
    responders = {
        address: Responder(
            address,
            tuple(times),
            mpls.get(address, ()),
            tuple(answers[address]),
            known.get(address),
        )
        for address, times in rtts.items()
    }
    return Hop(ttl, tuple(probes), responders, tuple(retries))


@dataclass(frozen=True, slots=True)
class TraceResult:
    """The path to ``destination`` (the numeric address traced; ``host`` as given).

    ``hops`` run from ``first_ttl`` to the hop that reached the destination (or answered
    "destination unreachable"), or to ``max_ttl`` when no hop did.
    """

    host: str
    destination: str
    hops: tuple[Hop, ...]
    first_ttl: int
    max_ttl: int
    protocol: str
    flow: int | None = None
    """The flow of every probe of a Paris trace; None for a classic trace."""

    @property
    def reached(self) -> bool:
        """True if the destination answered."""
        return bool(self.hops) and self.hops[-1].reached

    @property
    def distance(self) -> int | None:
        """The destination's TTL distance, when reached."""
        return self.hops[-1].ttl if self.reached else None

    def hop(self, ttl: int) -> Hop:
        """The hop at ``ttl``; raises KeyError when the trace has none."""
        for hop in self.hops:
            if hop.ttl == ttl:
                return hop
        raise KeyError(f"no hop at TTL {ttl}")

    def raise_for_status(self) -> Self:
        """Return self if the destination was reached; raise otherwise.

        Raises DestinationUnreachable when the path ended with that answer,
        TimeExceeded when the hop at ``max_ttl`` still answered time exceeded, and
        NoReplyError when the last hops stayed silent.
        """
        if self.reached:
            return self
        last = self.hops[-1]
        for probe in last.probes:
            if classify(probe) is not Answer.NO_REPLY:
                if classify(probe) is Answer.TIME_EXCEEDED:
                    raise TimeExceeded(
                        f"{self.host} was not reached within {self.max_ttl} hops "
                        f"(TTL {self.max_ttl} expired at {probe.responder})",
                        host=self.host,
                        result=probe,
                    )
                raise_for_probe(probe, self.host)
        answered = [hop.ttl for hop in self.hops if not hop.is_silent]
        after = f"after TTL {answered[-1]}" if answered else "at any TTL"
        raise NoReplyError(
            f"{self.host} was not reached: no answer {after} up to {self.max_ttl}",
            host=self.host,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole trace."""
        return {
            "host": self.host,
            "destination": self.destination,
            "protocol": self.protocol,
            "first_ttl": self.first_ttl,
            "max_ttl": self.max_ttl,
            "flow": self.flow,
            "reached": self.reached,
            "distance": self.distance,
            "hops": [hop.to_dict() for hop in self.hops],
        }

    def __str__(self) -> str:
        name = (
            self.destination
            if self.host == self.destination
            else (f"{self.host} ({self.destination})")
        )
        paris = "" if self.flow is None else f", flow {self.flow}"
        lines = [f"traceroute to {name}, {self.max_ttl} hops max, {self.protocol}{paris}"]
        lines.extend(str(hop) for hop in self.hops)
        return "\n".join(lines)


# ----------------------------------------------------------------------------- traceroute


def _check_ttls(first_ttl: object, max_ttl: object, probes_per_hop: object) -> None:
    """Check the TTL range and probes per hop; raises TypeError/ValueError."""
    first = check_int("first_ttl", first_ttl, 1, 255)
    check_int("max_ttl", max_ttl, first, 255)
    check_int("probes_per_hop", probes_per_hop, 1, 1000)


def _check_wait(wait: object, timeout: object) -> Wait:
    """The Wait for ``wait`` or ``timeout`` (MAX alone, as traceroute's ``-w N``), the
    default when neither is given; raises TypeError/ValueError (both given, bad
    values)."""
    if timeout is not None:
        if wait is not None:
            raise ValueError("give wait or timeout, not both")
        return Wait.of(check_seconds("timeout", timeout, positive=True))
    return Wait() if wait is None else Wait.of(wait)


async def traceroute(
    host: str,
    first_ttl: int = 1,
    max_ttl: int = 30,
    probes_per_hop: int = 3,
    timeout: float | None = None,  # noqa: ASYNC109 - the longest wait per probe (wait's MAX)
    *,
    wait: Wait | str | float | Sequence[float] | None = None,
    retries: int = DEFAULT_RETRIES,
    session: Session | None = None,
    helper: str | os.PathLike[str] | None = None,
    resolve_names: bool = False,
    name_resolver: NameResolver | None = None,
    progress: ProgressCallback | None = None,
    paris: bool = False,
    flow: int | None = None,
    **options: Unpack[TraceOptions],
) -> TraceResult:
    """Trace the path to ``host``: ``probes_per_hop`` probes for each TTL from
    ``first_ttl`` to ``max_ttl``, all in flight at once; return a :class:`TraceResult`
    (see the module documentation for when it stops).

    ``wait`` is traceroute's ``-w MAX,HERE,NEAR`` (a :class:`~brokerpkg.waiting.Wait`,
    a string such as ``"5,3,10"``, a (max, here, near) sequence, or a number: MAX alone,
    HERE and NEAR off); default 5 s, 3 and 10.  ``timeout`` (seconds) is the same as a
    number ``wait`` (the longest wait for each probe); give one of them.  ``retries``
    (0-10, default 3) is how many further tries a silent TTL gets (at 0.25, 0.75, 1.75 s
    ... after its first probe, those before MAX; see :mod:`brokerpkg.waiting`); 0 sends
    every probe once.  Each hop's :attr:`Hop.retries` holds what its further tries got.

    ``session``/``helper`` are as for :func:`~brokerpkg.ping.ping`, the probe options
    those of :class:`~brokerpkg.options.TraceOptions` (ping's but ``ttl``, what the
    trace varies).  ``paris`` puts
    every probe in one flow (number ``flow``, 0-65535, default 1; naming a flow implies
    ``paris``), so that every hop is on one path through per-flow load balancers, for
    every protocol and family (the helper must support ``flow``; without ``port``, UDP
    probes get their destination port from the flow).  Without it each probe is its
    own flow (classic traceroute: UDP probes without ``port`` go to a different port
    each), so load-balanced paths show several responders per hop.
    ``resolve_names`` looks up each responder's reverse DNS name with ``name_resolver``
    (default: the session's, see :func:`names_for`).  ``progress`` gets a
    :class:`~brokerpkg.tasks.ProgressEvent` per finished probe (further tries raise its
    ``total``).

    Raises like :func:`~brokerpkg.ping.ping`: TypeError/ValueError for bad arguments
    (first_ttl 1-255, max_ttl first_ttl-255, probes_per_hop 1-1000, wait and timeout
    both given, wait's MAX over 0 and up to 3600 s and factors >= 0, retries 0-10, flow
    0-65535), HostResolveError, FeatureNotSupportedError for a Paris trace on a helper
    without flows (before anything is sent), ProbeSendError, the session's errors.
    Network answers are results: see :meth:`TraceResult.raise_for_status`.
    """
    refuse_unknown_options("traceroute", options, TraceOptions.__optional_keys__)
    _check_ttls(first_ttl, max_ttl, probes_per_hop)
    flow = paris_flow(paris, flow)
    patience = _check_wait(wait, timeout)
    plan = TracePlan(first_ttl, max_ttl, probes_per_hop, patience, check_retries(retries))
    settings = probe_settings(timeout=patience.max, flow=flow, **options)
    if name_resolver is not None and not isinstance(name_resolver, NameResolver):
        raise TypeError("name_resolver must be a NameResolver")
    async with session_scope(session, helper) as open_session:
        address = await resolve_address(open_session, host, options.get("family"))
        arguments = settings.arguments(address)
        del arguments["ttl"]  # what the trace varies
        protocol_name = settings.options.protocol or wire.DEFAULT_PROTOCOL
        probe_port = wire.effective_port(settings.options)

        def given_up(ttl: int) -> ProbeResult:
            return ProbeResult(
                False, wire.NO_REPLY, None, None, [], address, ttl, protocol_name, probe_port
            )

        probes = await _trace_probes(
            open_session,
            host,
            address,
            plan,
            arguments,
            given_up,
            ProgressCounter(progress, (max_ttl - first_ttl + 1) * probes_per_hop),
        )
        names: dict[str, str | None] = {}
        if resolve_names:
            resolver = name_resolver or names_for(open_session)
            names = await lookup_names(
                resolver,
                (
                    probe.responder
                    for slots in probes.values()
                    for probe in (*slots.probes, *slots.retries)
                    if probe.responder is not None
                ),
            )
    hops = tuple(
        make_hop(ttl, probes[ttl].probes, names, probes[ttl].retries) for ttl in sorted(probes)
    )
    return TraceResult(host, address, hops, first_ttl, max_ttl, protocol_name, flow)


class _Slots:
    """The results of one TTL: one per probe position (the first answer any try there
    got, else no reply), and the other tries' results."""

    __slots__ = ("probes", "retries")

    def __init__(self, size: int) -> None:
        self.probes: list[ProbeResult | None] = [None] * size
        self.retries: list[ProbeResult] = []

    def record(self, slot: int, result: ProbeResult) -> None:
        """Put a try's result at its position, or among the retries."""
        current = self.probes[slot]
        if current is None:
            self.probes[slot] = result
        elif current.responder is None and result.responder is not None:
            self.retries.append(current)
            self.probes[slot] = result
        else:
            self.retries.append(result)

    def done(self) -> _TtlResults:
        """The settled TTL's results; every position has one."""
        probes = [result for result in self.probes if result is not None]
        assert len(probes) == len(self.probes), "a probe at or below the end of the path was lost"
        return _TtlResults(probes, self.retries)


class _TtlResults(NamedTuple):
    probes: list[ProbeResult]
    retries: list[ProbeResult]


async def _trace_probes(
    session: Session,
    host: str,
    address: str,
    plan: TracePlan,
    arguments: Mapping[str, Any],
    given_up: Callable[[int], ProbeResult],
    progress: ProgressCounter,
) -> dict[int, _TtlResults]:
    """Send the probes ``plan`` asks for, give them up when it says; return the results
    of the TTLs up to the end of the path (all of them when it was not found).

    ``given_up(ttl)`` makes the result of a probe given up: no reply, as the helper's
    own would read at its timeout.
    """
    loop = asyncio.get_running_loop()
    slots = {ttl: _Slots(plan.probes_per_hop) for ttl in range(plan.first_ttl, plan.max_ttl + 1)}
    running: dict[Try, asyncio.Task[None]] = {}

    def cancel(probes: Iterable[Try]) -> None:
        for probe in probes:
            task = running.pop(probe, None)
            if task is not None:
                task.cancel()

    def finish(probe: Try, result: ProbeResult) -> None:
        slots[probe.ttl].record(probe.slot, result)
        progress.report(host, probe.slot, result)

    async def one(probe: Try) -> None:
        result = await session.probe(address, ttl=probe.ttl, **arguments)
        running.pop(probe, None)
        answer = classify(result)  # raises for local failures
        if answer is Answer.NO_REPLY:
            plan.lost(probe)
        else:
            cancel(plan.answered(probe, loop.time(), ends_path=answer in TERMINAL_ANSWERS))
        if probe.ttl <= plan.end:
            finish(probe, result)

    async with TaskGroup[None]() as tasks:

        def launch(probes: Iterable[Try]) -> None:
            for probe in probes:
                running[probe] = tasks.start(one(probe))

        launch(plan.start(loop.time()))
        while not plan.finished:
            await tasks.wait_any(plan.next_event())
            now = loop.time()
            expired = plan.expired(now)
            cancel(expired)
            for probe in expired:
                finish(probe, given_up(probe.ttl))
            further = plan.due(now)
            progress.total += len(further)
            launch(further)
    return {ttl: slots[ttl].done() for ttl in range(plan.first_ttl, plan.end + 1)}
