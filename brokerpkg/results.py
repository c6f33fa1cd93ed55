"""What ping and traceroute return, and the progress they report: pure frozen
dataclasses (:class:`PingResult`, :class:`Hop`, :class:`Responder`,
:class:`TraceResult`, :class:`ProgressEvent`) and the bookkeeping that builds them
(:func:`make_hop`, :class:`TtlSlots`, :class:`TraceRun`, :func:`trace_result`,
:class:`ProgressCounter`).

No asyncio and no I/O: the asyncio functions (:mod:`brokerpkg.ping`,
:mod:`brokerpkg.trace`) and the blocking ones (:mod:`brokerpkg.sync`) build the same
results here; those modules re-export these names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from . import protocol as wire
from . import stats
from .answers import Answer, classify, probe_to_dict, raise_for_probe
from .errors import NoReplyError, TimeExceeded
from .protocol import Mpls, ProbeOptions, ProbeResult

if TYPE_CHECKING:  # ping does not load the traces' plan
    from .waiting import TracePlan, Try

__all__ = [
    "TERMINAL_ANSWERS",
    "Hop",
    "PingResult",
    "ProgressCallback",
    "ProgressCounter",
    "ProgressEvent",
    "Responder",
    "TraceResult",
    "TraceRun",
    "TtlResults",
    "TtlSlots",
    "answering_addresses",
    "given_up_result",
    "make_hop",
    "trace_result",
]

TERMINAL_ANSWERS = (Answer.REPLY, Answer.UNREACHABLE)
"""Answers after which a larger TTL cannot get further along the path."""


# ----------------------------------------------------------------------------- progress


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One probe finished (passed to the ``progress`` callback of ping, multiping and
    traceroute, in the order probes finish).

    ``host`` is the host as given; ``sequence`` the probe's number (ping: its sequence
    number from 0; traceroute: its number within its hop); ``done`` counts the probes
    finished so far in this call (all hosts for multiping) and ``total`` those the call
    plans to send (for traceroute an upper bound: probes beyond the destination are
    abandoned; it grows when a silent hop gets further tries).
    """

    host: str
    sequence: int
    result: ProbeResult
    done: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        return {
            "host": self.host,
            "sequence": self.sequence,
            "result": probe_to_dict(self.result),
            "done": self.done,
            "total": self.total,
        }


ProgressCallback = Callable[[ProgressEvent], object]
"""Called synchronously in the event loop; an exception it raises fails the call."""


class ProgressCounter:
    """Counts finished probes and reports them to an optional callback."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.done = 0

    def report(self, host: str, sequence: int, result: ProbeResult) -> None:
        """Count one probe and call the callback (its exceptions propagate)."""
        self.done += 1
        if self.callback is not None:
            self.callback(ProgressEvent(host, sequence, result, self.done, self.total))


# ----------------------------------------------------------------------------- ping


@dataclass(frozen=True, slots=True, repr=False)
class PingResult(stats.ProbeCounts):
    """The result of pinging one host: the raw probe results and statistics computed
    from them (:mod:`brokerpkg.stats`; times in milliseconds).

    ``host`` is the host as given, ``address`` the numeric address probed, ``probes``
    one ProbeResult per probe in sequence order.  Statistics follow icmplib's
    definitions (``packet_loss`` a fraction, ``jitter`` the mean absolute difference of
    consecutive round-trip times), unrounded, and are None where undefined (icmplib
    gives 0.0): min/avg/max without any reply, stdev and jitter with fewer than two.
    ``stdev_rtt`` is the sample standard deviation (n - 1, mtr's StDev), ``mdev_rtt``
    the population one (iputils ping's mdev).  Its repr sums the probes up (counts and
    times) instead of listing them.
    """

    host: str
    address: str
    probes: tuple[ProbeResult, ...]

    def __repr__(self) -> str:
        """``PingResult(host='localhost', address='127.0.0.1', sent=4, received=4,
        packet_loss=0.0, min_rtt=0.031, avg_rtt=0.035, max_rtt=0.04)``."""
        times = ", ".join(
            f"{name}={value!r}"
            for name, value in (
                ("min_rtt", self.min_rtt),
                ("avg_rtt", self.avg_rtt),
                ("max_rtt", self.max_rtt),
            )
        )
        return (
            f"PingResult(host={self.host!r}, address={self.address!r}, sent={self.sent}, "
            f"received={self.received}, packet_loss={self.packet_loss!r}, {times})"
        )

    @property
    def sent(self) -> int:
        """Probes sent."""
        return len(self.probes)

    @property
    def received(self) -> int:
        """Probes the destination answered."""
        return sum(1 for probe in self.probes if probe.success)

    @property
    def rtts(self) -> list[float]:
        """Round-trip times (ms) of the answered probes, in sequence order."""
        return [
            probe.time_ms for probe in self.probes if probe.success and probe.time_ms is not None
        ]

    @property
    def stdev_rtt(self) -> float | None:
        """Sample standard deviation of the round-trip times (ms), as mtr's StDev."""
        return stats.stdev(self.rtts)

    @property
    def mdev_rtt(self) -> float | None:
        """Population standard deviation (ms), as iputils ping's mdev."""
        return stats.pstdev(self.rtts)

    @property
    def jitter(self) -> float | None:
        """Mean absolute difference of consecutive round-trip times (ms), icmplib's."""
        return stats.jitter(self.rtts)

    @property
    def is_alive(self) -> bool:
        """True if the destination answered at least once."""
        return self.received > 0

    @property
    def answers(self) -> list[Answer]:
        """What the network said to each probe, in sequence order."""
        return [classify(probe) for probe in self.probes]

    def raise_for_status(self) -> Self:
        """Return self if the destination answered and no probe met an error; raise
        otherwise.

        Raises DestinationUnreachable or TimeExceeded for the first probe that got that
        answer, else NoReplyError when nothing answered.
        """
        for probe in self.probes:
            if classify(probe) in (Answer.UNREACHABLE, Answer.TIME_EXCEEDED):
                raise_for_probe(probe, self.host)
        if not self.is_alive:
            raise NoReplyError(
                f"no reply from {self._name()} to {self.sent} probe{'' if self.sent == 1 else 's'}",
                host=self.host,
            )
        return self

    def _name(self) -> str:
        return self.address if self.host == self.address else f"{self.host} ({self.address})"

    def to_dict(self) -> dict[str, Any]:
        """Everything as a JSON-ready dict: counts, statistics, rtts and each probe."""
        return {
            "host": self.host,
            "address": self.address,
            **self.counts_to_dict(),
            "stdev_rtt": self.stdev_rtt,
            "mdev_rtt": self.mdev_rtt,
            "jitter": self.jitter,
            "is_alive": self.is_alive,
            "rtts": self.rtts,
            "probes": [probe_to_dict(probe) for probe in self.probes],
        }

    def __str__(self) -> str:
        line = (
            f"{self._name()}: {self.sent} sent, {self.received} received, "
            f"{self.packet_loss * 100:g}% loss"
        )
        if self.is_alive:
            values = [self.min_rtt, self.avg_rtt, self.max_rtt, self.stdev_rtt]
            line += (
                ", rtt min/avg/max/stdev "
                + "/".join("-" if value is None else f"{value:.3f}" for value in values)
                + " ms"
            )
        if self.jitter is not None:
            line += f", jitter {self.jitter:.3f} ms"
        return line


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
            **self.counts_to_dict(),
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


# ----------------------------------------------------------------------------- trace slots


class TtlSlots:
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

    def done(self) -> TtlResults:
        """The settled TTL's results; every position has one."""
        probes = [result for result in self.probes if result is not None]
        assert len(probes) == len(self.probes), "a probe at or below the end of the path was lost"
        return TtlResults(probes, self.retries)


class TtlResults(NamedTuple):
    """A settled TTL's results: one per probe position, and the further tries'."""

    probes: list[ProbeResult]
    retries: list[ProbeResult]


class TraceRun:
    """A trace's probes between its :class:`~brokerpkg.waiting.TracePlan` and the
    driver that sends them, as either driver's traceroute runs it.

    The driver calls :meth:`start`, then :meth:`record` with each probe's result and
    :meth:`wake` at each of ``plan.next_event()`` until ``plan.finished``; the run keeps
    the results (and reports them to ``progress``) and calls ``launch`` with the probes
    to send, ``cancel`` with those to stop.  ``given_up(ttl)`` makes the result of a
    probe given up: no reply, as the helper's own would read at its timeout.
    """

    __slots__ = ("_cancel", "_given_up", "_host", "_launch", "_progress", "_slots", "plan")

    def __init__(
        self,
        host: str,
        plan: TracePlan,
        given_up: Callable[[int], ProbeResult],
        progress: ProgressCounter,
        launch: Callable[[Iterable[Try]], None],
        cancel: Callable[[Iterable[Try]], None],
    ) -> None:
        self.plan = plan
        self._host = host
        self._given_up = given_up
        self._progress = progress
        self._launch = launch
        self._cancel = cancel
        self._slots = {
            ttl: TtlSlots(plan.probes_per_hop) for ttl in range(plan.first_ttl, plan.max_ttl + 1)
        }

    def start(self, now: float) -> None:
        """Launch the first probes."""
        self._launch(self.plan.start(now))

    def record(self, probe: Try, result: ProbeResult, now: float) -> None:
        """Take the ``result`` of ``probe`` (come at ``now``): cancel the probes its
        answer makes needless, keep it when its TTL is not beyond the end of the path.

        Raises like :func:`~brokerpkg.answers.classify` for a local failure.
        """
        answer = classify(result)
        if answer is Answer.NO_REPLY:
            self.plan.lost(probe)
        else:
            ends = answer in TERMINAL_ANSWERS
            self._cancel(self.plan.answered(probe, now, ends_path=ends))
        if probe.ttl <= self.plan.end:
            self._finish(probe, result)

    def wake(self, now: float) -> None:
        """Give up the probes whose wait is over, launch the further tries now due."""
        expired = self.plan.expired(now)
        self._cancel(expired)
        for probe in expired:
            self._finish(probe, self._given_up(probe.ttl))
        further = self.plan.due(now)
        self._progress.total += len(further)
        self._launch(further)

    def results(self) -> dict[int, TtlResults]:
        """The results of the TTLs up to the end of the path (all of them when it was
        not found); every probe at those TTLs has one."""
        plan = self.plan
        return {ttl: self._slots[ttl].done() for ttl in range(plan.first_ttl, plan.end + 1)}

    def _finish(self, probe: Try, result: ProbeResult) -> None:
        self._slots[probe.ttl].record(probe.slot, result)
        self._progress.report(self._host, probe.slot, result)


def given_up_result(options: ProbeOptions, destination: str, ttl: int | None) -> ProbeResult:
    """The result of a probe with ``options`` to ``destination`` at ``ttl`` that was
    given up: no reply, as the helper's own reads at its timeout."""
    return ProbeResult(
        False,
        wire.NO_REPLY,
        None,
        None,
        [],
        destination,
        ttl,
        options.protocol or wire.DEFAULT_PROTOCOL,
        wire.effective_port(options),
    )


def answering_addresses(slots: Mapping[int, TtlResults]) -> Iterator[str]:
    """The responder of every answered probe and further try in ``slots`` (an address
    as often as it answered): what a trace's reverse lookups are for."""
    return (
        probe.responder
        for results in slots.values()
        for probe in (*results.probes, *results.retries)
        if probe.responder is not None
    )


def trace_result(
    host: str,
    destination: str,
    slots: Mapping[int, TtlResults],
    names: Mapping[str, str | None],
    first_ttl: int,
    max_ttl: int,
    protocol: str,
    flow: int | None,
) -> TraceResult:
    """The TraceResult of a trace's settled TTLs ``slots``: a Hop per TTL, in order,
    its responders named from ``names``.

    Raises like :func:`make_hop`.
    """
    hops = tuple(
        make_hop(ttl, slots[ttl].probes, names, slots[ttl].retries) for ttl in sorted(slots)
    )
    return TraceResult(host, destination, hops, first_ttl, max_ttl, protocol, flow)
