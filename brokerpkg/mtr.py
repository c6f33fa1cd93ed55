"""An mtr-style monitor: probe every hop each cycle, keep per-hop statistics.

``async for report in monitor(host, cycles=10): ...`` yields a :class:`MonitorReport`
after every cycle.  Its hops carry mtr's columns (:class:`HopStats`): Loss%, Snt, Rcv,
Last, Avg, Best, Wrst, StDev and the jitter columns Jttr, Javg, Jmax, Jint, plus every
address that answered the hop.  The bookkeeping is the pure :class:`MonitorState`; the
async :func:`monitor` only sends probes and keeps time.

With ``paris=True`` every probe is in one flow (the helper's ``flow`` extension), so
each row is one router of the one path that flow takes through per-flow load
balancers, not a mix of branches; :func:`monitor_flows` runs K flows side by side and
yields each flow's path with its own loss and RTT per hop (:class:`FlowsReport`).

Where this follows mtr 0.95 (ui/net.c, ui/select.c):

- **statistics** are per hop (TTL), over the replies of all its responders, fed in the
  order replies arrive (mtr's ``net_process_ping``): Last is the most recent reply,
  StDev the sample standard deviation, Javg counts the first reply as a difference of
  0 -- see :mod:`brokerpkg.stats` for each definition;
- **late answers** count for their own probe: probes stay outstanding until the helper's
  ``timeout`` (mtr's -Z, default 10 s), whatever cycle is running by then;
- **Loss%** is ``100 * (1 - Rcv / (Snt - in transit))``: probes still waiting for an
  answer are not counted lost (mtr's ``net_loss``);
- **any answer counts as received**: time exceeded, the destination's reply, and
  "destination unreachable", which also ends the path there (mtr's ``net_max``);
- **a hop that changes address** keeps its statistics and lists every address it
  answered from, the latest being :attr:`HopStats.address` (mtr's ``addrs[]`` and
  ``addr``);
- **the destination's hop** is the lowest TTL whose latest answer came from the
  destination: no TTL beyond it is probed, and the report stops there (mtr restarts its
  batch at the destination);
- **rows shown**: up to the destination's hop, or, while it is unknown, up to one row
  past the highest hop that ever answered (mtr's ``net_max``);
- **after the last cycle**, outstanding probes get up to ``grace`` seconds (mtr's -G,
  default 5 s); those still unanswered then count as lost (mtr's ``net_end_transit``).

Where it differs, on purpose:

- **each cycle sends every hop's probe at once**, where mtr spreads one probe per hop
  over the interval; a cycle starts every ``interval`` seconds;
- **max_unknown** (mtr's -U) stops probing after ``max_unknown`` consecutive unknown TTLs
  past the highest TTL that ever answered: TTLs up to ``highest + max_unknown`` are
  probed.  mtr 0.95 instead counts every unknown hop below the one it sends (its reset
  on a known hop was removed in 0.65, see the comment in ``net_send_batch``), stops
  once that count exceeds -U and still sends that TTL, so it probes -U + 2 unknown TTLs
  past the last known hop when none is unknown below it, and fewer after scattered
  silent hops (measured in the lab: with -U 3 and TTL 4 the last answering hop, it
  probes TTLs up to 9).  Its man page gives -U a default of 5; its code (mtr.c) sets
  12.  The default here is 5.  While nothing has answered yet (the first cycle) the
  window grows as answers arrive: every answer from a new highest TTL sends the TTLs it
  brings into reach at once, so the first cycle still discovers the whole path;
- **the first cycle tries silent hops again**, as :func:`~brokerpkg.trace.traceroute`
  does (:mod:`brokerpkg.waiting`): a TTL of the first cycle with no answer yet gets one
  more probe at 0.25, 0.75, 1.75 s ... after the cycle started (``retries`` of them,
  default 3, those before the next cycle, the grace period after a last cycle, and the
  timeout) when it is below the highest TTL that answered, or beyond it within
  ``max_unknown`` while the destination is unknown.  Probes a router loses while it
  resolves its next hop on a path nobody used for a while would otherwise leave the
  first report (``-c 1``) with holes and the destination unknown.  These probes count
  in Snt like any other: a hop that never answers shows ``retries`` more sent than
  cycles (at most, fewer with a short interval); on a path whose hops all answer none
  is sent;
- **probes withdrawn** beyond a newly found destination are not counted at all (mtr
  never sends them, as it probes hop by hop);
- **undefined values are None** (no reply yet; StDev and jitters below two replies)
  where mtr prints 0, and values are floats in ms, not mtr's integer microseconds.
  mtr's Jint column shows 16 times the RFC 3550 jitter (its fixed-point counter); here
  ``jint`` is the RFC value itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Unpack

from .answers import Answer, classify
from .defaults import MTR_GRACE as DEFAULT_GRACE
from .defaults import MTR_MAX_UNKNOWN as DEFAULT_MAX_UNKNOWN
from .defaults import MTR_TIMEOUT as DEFAULT_TIMEOUT
from .options import (
    PARIS_FLOW,
    CommonOptions,
    TraceOptions,
    check_int,
    check_seconds,
    paris_flow,
    probe_settings,
    refuse_unknown_options,
)
from .protocol import MAX_FLOW, Mpls, ProbeResult
from .session import Session
from .stats import RunningStats
from .tasks import TaskGroup, resolve_address, session_scope
from .trace import NameResolver, names_for
from .waiting import DEFAULT_RETRIES, check_retries, retry_offsets, wants_retry

__all__ = [
    "FlowsReport",
    "HopStats",
    "MonitorReport",
    "MonitorState",
    "ResponderStats",
    "monitor",
    "monitor_flows",
]


@dataclass(frozen=True, slots=True)
class ResponderStats:
    """An address that answered a hop: how many replies came from it, the MPLS label
    stack its first answer quoted, its reverse name if looked up."""

    address: str
    received: int
    mpls: tuple[Mpls, ...] = ()
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "address": self.address,
            "name": self.name,
            "received": self.received,
            "mpls": [entry._asdict() for entry in self.mpls],
        }


@dataclass(frozen=True, slots=True)
class HopStats:
    """One hop's row, mtr's columns: ``sent`` Snt, ``received`` Rcv, ``loss_percent``
    Loss%, ``lost`` Drop, ``last`` Last, ``avg`` Avg, ``best`` Best, ``worst`` Wrst,
    ``stdev`` StDev, ``jitter`` Jttr, ``javg`` Javg, ``jmax`` Jmax, ``jint`` Jint
    (RFC 3550 J, see the module documentation).  Times in ms, None when undefined.

    ``pending`` counts probes still waiting for an answer, ``address`` is the latest
    responder, ``responders`` all of them in order of first answer, ``destination``
    tells whether the latest answer came from the destination.
    """

    ttl: int
    sent: int
    received: int
    pending: int
    last: float | None
    avg: float | None
    best: float | None
    worst: float | None
    stdev: float | None
    jitter: float | None
    javg: float | None
    jmax: float | None
    jint: float | None
    address: str | None
    responders: tuple[ResponderStats, ...]
    destination: bool = False

    @property
    def lost(self) -> int:
        """Probes that got no answer in time (mtr's Drop)."""
        return self.sent - self.pending - self.received

    @property
    def loss_percent(self) -> float:
        """mtr's Loss%: lost / (sent - pending) * 100, 0.0 when nothing is settled."""
        settled = self.sent - self.pending
        return 100.0 * self.lost / settled if settled else 0.0

    @property
    def is_known(self) -> bool:
        """True once anything answered this hop (mtr shows ``???`` until then)."""
        return self.address is not None

    @property
    def name(self) -> str | None:
        """The reverse name of the latest responder, if looked up and found."""
        for responder in self.responders:
            if responder.address == self.address:
                return responder.name
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every column."""
        return {
            "ttl": self.ttl,
            "address": self.address,
            "name": self.name,
            "destination": self.destination,
            "loss_percent": self.loss_percent,
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "pending": self.pending,
            "last": self.last,
            "avg": self.avg,
            "best": self.best,
            "worst": self.worst,
            "stdev": self.stdev,
            "jitter": self.jitter,
            "javg": self.javg,
            "jmax": self.jmax,
            "jint": self.jint,
            "responders": [responder.to_dict() for responder in self.responders],
        }


@dataclass(frozen=True, slots=True)
class MonitorReport:
    """The statistics after ``cycle`` cycles (``final`` after the last one, once the
    outstanding probes are settled).  ``hops`` are the rows mtr would show; ``flow``
    is the flow of every probe of a Paris monitor (None: each probe its own flow)."""

    host: str
    destination: str
    cycle: int
    final: bool
    hops: tuple[HopStats, ...]
    flow: int | None = None

    @property
    def reached(self) -> bool:
        """True if the destination's hop is known."""
        return bool(self.hops) and self.hops[-1].destination

    def hop(self, ttl: int) -> HopStats:
        """The row for ``ttl``; raises KeyError when the report has none."""
        for hop in self.hops:
            if hop.ttl == ttl:
                return hop
        raise KeyError(f"no hop at TTL {ttl}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the report."""
        return {
            "host": self.host,
            "destination": self.destination,
            "cycle": self.cycle,
            "final": self.final,
            "flow": self.flow,
            "reached": self.reached,
            "hops": [hop.to_dict() for hop in self.hops],
        }

    def __str__(self) -> str:
        """``mtr -r``'s table without its Start line: the ``HOST:`` line (this host's
        name, as mtr prints it) and one row per hop, mtr's columns and offsets (see
        :func:`report_lines`), names where they were looked up."""
        return "\n".join(report_lines(self, local_host=socket.gethostname(), numeric=False))


# ----------------------------------------------------------------------------- mtr -r


@dataclass(frozen=True, slots=True)
class ReportField:
    """A column of mtr's report: its title and its width (mtr's ui/mtr.c data_fields)."""

    title: str
    width: int


REPORT_FIELDS = (
    ReportField("Loss%", 6),
    ReportField("Snt", 6),
    ReportField(" ", 1),
    ReportField("Last", 6),
    ReportField("Avg", 6),
    ReportField("Best", 6),
    ReportField("Wrst", 6),
    ReportField("StDev", 6),
)
"""mtr's default fields ``LS NABWV``: Loss%, Snt, a blank, Last, Avg, Best, Wrst, StDev."""
REPORT_HOST_WIDTH = 33
"""mtr's report: the host column ends at this offset unless the report is wide (-w)."""
UNKNOWN_HOST = "???"


def _ms(value: float | None) -> float:
    return 0.0 if value is None else value


def report_cells(hop: HopStats) -> list[str]:
    """The row's cells in mtr's formats (`` %4.1f%%``, `` %5d``, `` ``, `` %5.1f``)."""
    times = (hop.last, hop.avg, hop.best, hop.worst, hop.stdev)
    return [
        f" {hop.loss_percent:4.1f}%",
        f" {hop.sent:5d}",
        " ",
        *(f" {_ms(value):5.1f}" for value in times),
    ]


def header_cells() -> list[str]:
    """The column titles, each right-aligned in its width."""
    return [f"{field.title:>{field.width}}" for field in REPORT_FIELDS]


def overlay(prefix: str, start: int, cells: list[str]) -> str:
    """Write ``cells`` at fixed offsets from ``start`` as mtr's snprintf chain does:
    each cell starts ``width`` after the previous one and cuts what overflowed."""
    line = prefix[:start].ljust(start)
    position = start
    for cell, field in zip(cells, REPORT_FIELDS, strict=True):
        line = line[:position] + cell
        position += field.width
    return line


def hop_label(hop: HopStats, *, numeric: bool, show_ips: bool) -> str:
    """The host of a row: ``???`` when unknown, the name when looked up and found
    (``name (address)`` with ``show_ips``), else the address."""
    if hop.address is None:
        return UNKNOWN_HOST
    name = None if numeric else hop.name
    if name is None:
        return hop.address
    return f"{name} ({hop.address})" if show_ips else name


def mpls_line(entry: Mpls, lead: str) -> str:
    """mtr's line for one MPLS label stack entry, after ``lead``."""
    return (
        f"{lead}[MPLS: Lbl {entry.label} Exp {entry.traffic_class} "
        f"S {int(entry.bottom_of_stack)} TTL {entry.ttl}]"
    )


def main_mpls(hop: HopStats) -> tuple[Mpls, ...]:
    """The label stack quoted by the hop's latest responder."""
    for responder in hop.responders:
        if responder.address == hop.address:
            return responder.mpls
    return ()


def _report_extra_lines(hop: HopStats, show_mpls: bool) -> list[str]:
    """mtr's lines under a row: other addresses of the hop, and MPLS labels (-e)."""
    lines: list[str] = []
    others = [responder for responder in hop.responders if responder.address != hop.address]
    main = main_mpls(hop) if show_mpls else ()
    if not others:
        lines.extend(mpls_line(entry, "    |   +-- ") for entry in main)
        return lines
    lines.extend(mpls_line(entry, "    |  |+-- ") for entry in main)
    for index, responder in enumerate(others):
        lines.append(("    |  `|-- " if index == 0 else "    |   |-- ") + responder.address)
        if show_mpls:
            lines.extend(mpls_line(entry, "    |   +-- ") for entry in responder.mpls)
    return lines


def report_lines(
    report: MonitorReport,
    *,
    local_host: str,
    wide: bool = False,
    numeric: bool = True,
    show_ips: bool = False,
    show_mpls: bool = False,
) -> list[str]:
    """``mtr -r``'s table (``-w`` with ``wide``) after its Start line::

        HOST: vm                          Loss%   Snt   Last   Avg  Best  Wrst StDev
          1.|-- 198.18.1.2                 0.0%     3    0.0   0.4   0.0   1.0   0.6
          5.|-- ???                       100.0     3    0.0   0.0   0.0   0.0   0.0

    Fixed columns as mtr's: a host wider than its column is cut by the first value,
    a value wider than its column by the next one.
    """
    labels = [hop_label(hop, numeric=numeric, show_ips=show_ips) for hop in report.hops]
    width = REPORT_HOST_WIDTH
    if wide:
        width = max([len(local_host), *(len(label) for label in labels)])
    header = f"HOST: {local_host:<{width}}"
    lines = [overlay(header, len(header) if wide else width, header_cells())]
    for hop, label in zip(report.hops, labels, strict=True):
        prefix = f" {hop.ttl:2d}.|-- {label:<{width}}"
        lines.append(overlay(prefix, len(prefix) if wide else width, report_cells(hop)))
        lines.extend(_report_extra_lines(hop, show_mpls))
    return lines


class _Hop:
    """Mutable per-TTL bookkeeping."""

    __slots__ = (
        "address",
        "destination",
        "pending",
        "received",
        "responders",
        "sent",
        "stats",
        "terminal",
    )

    def __init__(self) -> None:
        self.sent = 0
        self.pending = 0
        self.received = 0
        self.stats = RunningStats()
        self.responders: dict[str, list[Any]] = {}  # address -> [received, mpls]
        self.address: str | None = None
        self.terminal = False
        self.destination = False


class MonitorState:
    """mtr's per-hop bookkeeping, without I/O or time: feed it what was sent and what
    answered, ask it which TTLs to probe and for a report.

    The driver calls :meth:`probe_sent` for every probe, then exactly one of
    :meth:`probe_answered` (the helper's result), :meth:`probe_withdrawn` (cancelled
    because it is beyond the destination: as if never sent) or :meth:`probe_abandoned`
    (given up at the end: lost).  :meth:`limit` is the highest TTL to probe now.

    Raises ValueError for TTLs outside first_ttl..max_ttl and for accounting that does
    not add up (an answer for a TTL with nothing outstanding).
    """

    def __init__(
        self,
        first_ttl: int = 1,
        max_ttl: int = 30,
        max_unknown: int = DEFAULT_MAX_UNKNOWN,
        flow: int | None = None,
    ) -> None:
        self.flow = flow
        """The flow of every probe (reports carry it), None for classic probes."""
        self.first_ttl = check_int("first_ttl", first_ttl, 1, 255)
        self.max_ttl = check_int("max_ttl", max_ttl, first_ttl, 255)
        self.max_unknown = check_int("max_unknown", max_unknown, 1)
        self._hops = {ttl: _Hop() for ttl in range(first_ttl, max_ttl + 1)}

    def _hop(self, ttl: int, outstanding: bool = False) -> _Hop:
        hop = self._hops.get(ttl)
        if hop is None:
            raise ValueError(f"TTL {ttl} outside {self.first_ttl}..{self.max_ttl}")
        if outstanding and hop.pending <= 0:
            raise ValueError(f"no probe outstanding at TTL {ttl}")
        return hop

    def probe_sent(self, ttl: int) -> None:
        """A probe for ``ttl`` was sent."""
        hop = self._hop(ttl)
        hop.sent += 1
        hop.pending += 1

    def probe_withdrawn(self, ttl: int) -> None:
        """An outstanding probe was cancelled before its outcome: forget it was sent."""
        hop = self._hop(ttl, outstanding=True)
        hop.sent -= 1
        hop.pending -= 1

    def probe_abandoned(self, ttl: int) -> None:
        """An outstanding probe was given up: count it lost."""
        self._hop(ttl, outstanding=True).pending -= 1

    def probe_answered(self, ttl: int, result: ProbeResult) -> Answer:
        """Account the helper's result for an outstanding probe; return its Answer.

        Raises ProbeSendError/ProtocolError (see :func:`~brokerpkg.answers.classify`)
        for a probe that was never sent -- the probe is then no longer outstanding.
        """
        hop = self._hop(ttl, outstanding=True)
        hop.pending -= 1
        try:
            answer = classify(result)
        except BaseException:
            hop.sent -= 1
            raise
        if answer is Answer.NO_REPLY or result.responder is None:
            return answer
        hop.received += 1
        if result.time_ms is not None:
            hop.stats.add(result.time_ms)
        entry = hop.responders.setdefault(result.responder, [0, ()])
        entry[0] += 1
        if result.mpls and not entry[1]:
            entry[1] = tuple(result.mpls)
        hop.address = result.responder
        hop.terminal = answer in (Answer.REPLY, Answer.UNREACHABLE)
        hop.destination = answer is Answer.REPLY
        return answer

    def pending(self, ttl: int) -> int:
        """Probes outstanding at ``ttl``."""
        return self._hop(ttl).pending

    def received(self, ttl: int) -> int:
        """Answers received at ``ttl``."""
        return self._hop(ttl).received

    @property
    def destination_ttl(self) -> int | None:
        """The lowest TTL whose latest answer ended the path (the destination's reply,
        or destination unreachable), or None."""
        for ttl, hop in self._hops.items():
            if hop.terminal:
                return ttl
        return None

    @property
    def highest_known(self) -> int:
        """The highest TTL that ever answered (first_ttl - 1 if none)."""
        known = [ttl for ttl, hop in self._hops.items() if hop.received]
        return max(known, default=self.first_ttl - 1)

    def limit(self) -> int:
        """The highest TTL to probe: the destination's, else max_unknown past the
        highest known one (at most max_ttl)."""
        end = self.destination_ttl
        if end is not None:
            return end
        return min(self.max_ttl, self.highest_known + self.max_unknown)

    def shown(self) -> range:
        """The TTLs a report shows: to the destination's, else one past the highest
        known (mtr's net_max)."""
        end = self.destination_ttl
        if end is None:
            end = min(self.max_ttl, self.highest_known + 1)
        return range(self.first_ttl, end + 1)

    def hop_stats(self, ttl: int, names: Mapping[str, str | None] | None = None) -> HopStats:
        """The row for ``ttl``; ``names`` gives reverse names of responders."""
        hop = self._hop(ttl)
        known = names or {}
        running = hop.stats
        return HopStats(
            ttl=ttl,
            sent=hop.sent,
            received=hop.received,
            pending=hop.pending,
            last=running.last,
            avg=running.mean,
            best=running.best,
            worst=running.worst,
            stdev=running.stdev,
            jitter=running.jitter,
            javg=running.javg,
            jmax=running.jmax,
            jint=running.interarrival_jitter,
            address=hop.address,
            responders=tuple(
                ResponderStats(address, count, mpls, known.get(address))
                for address, (count, mpls) in hop.responders.items()
            ),
            destination=hop.destination,
        )

    def report(
        self,
        host: str,
        destination: str,
        cycle: int,
        final: bool,
        names: Mapping[str, str | None] | None = None,
    ) -> MonitorReport:
        """A snapshot of the shown hops."""
        hops = tuple(self.hop_stats(ttl, names) for ttl in self.shown())
        return MonitorReport(host, destination, cycle, final, hops, self.flow)

    def responders(self) -> list[str]:
        """Every address that answered any hop."""
        return [address for hop in self._hops.values() for address in hop.responders]


class _Driver:
    """Sends a monitor's probes and feeds their outcomes to a MonitorState."""

    def __init__(
        self,
        session: Session,
        address: str,
        arguments: Mapping[str, Any],
        state: MonitorState,
        tasks: TaskGroup[None],
        names: NameResolver | None,
    ) -> None:
        self.session = session
        self.address = address
        self.arguments = arguments
        self.state = state
        self.tasks = tasks
        self.names = names
        self.in_flight: dict[asyncio.Task[None], int] = {}
        self.cycle_top = state.first_ttl - 1
        self.looked_up: set[str] = set()
        self.name_lookups: set[asyncio.Task[None]] = set()
        """Reverse name lookups still under way (a vantage point's take an ssh connection)."""

    def start_cycle(self) -> None:
        """Send this cycle's probes: every TTL up to the limit, at once."""
        self.cycle_top = self.state.first_ttl - 1
        self.fill()

    def fill(self) -> None:
        """Send the TTLs of the current cycle not sent yet, up to the limit."""
        while self.cycle_top < self.state.limit():
            self.cycle_top += 1
            self.send(self.cycle_top)

    def send(self, ttl: int) -> None:
        """Send one probe for ``ttl``."""
        self.state.probe_sent(ttl)
        task = self.tasks.start(self.probe(ttl))
        self.in_flight[task] = ttl

    def silent(self) -> list[int]:
        """The TTLs of this cycle with no answer yet that the retry rule
        (:func:`~brokerpkg.waiting.wants_retry`) wants probed again."""
        state = self.state
        farthest = state.highest_known
        known = state.destination_ttl is not None
        return [
            ttl
            for ttl in range(state.first_ttl, min(self.cycle_top, state.limit()) + 1)
            if not state.received(ttl) and wants_retry(ttl, farthest, known, state.max_unknown)
        ]

    async def probe(self, ttl: int) -> None:
        """One probe; account its result, then widen or trim what is in flight."""
        task = asyncio.current_task()
        assert task is not None
        try:
            result = await self.session.probe(self.address, ttl=ttl, **self.arguments)
        except asyncio.CancelledError:
            raise  # accounted by whoever cancelled it
        except BaseException:
            if self.in_flight.pop(task, None) is not None:
                self.state.probe_withdrawn(ttl)
            raise
        if self.in_flight.pop(task, None) is None:
            return  # withdrawn meanwhile
        self.state.probe_answered(ttl, result)
        if self.names is not None and result.responder and result.responder not in self.looked_up:
            self.looked_up.add(result.responder)
            lookup = self.tasks.start(self._look_up(self.names, result.responder))
            self.name_lookups.add(lookup)
            lookup.add_done_callback(self.name_lookups.discard)
        self.fill()
        self.trim()

    @staticmethod
    async def _look_up(names: NameResolver, address: str) -> None:
        await names.name(address)

    def trim(self) -> None:
        """Withdraw the probes beyond the destination's hop."""
        end = self.state.destination_ttl
        if end is None:
            return
        for task, ttl in list(self.in_flight.items()):
            if ttl > end:
                self.cancel(task, withdraw=True)

    def cancel(self, task: asyncio.Task[None], *, withdraw: bool) -> None:
        """Cancel an outstanding probe: withdrawn (never counted) or abandoned (lost)."""
        ttl = self.in_flight.pop(task)
        if withdraw:
            self.state.probe_withdrawn(ttl)
        else:
            self.state.probe_abandoned(ttl)
        task.cancel()

    def abandon_all(self) -> None:
        """Give up every outstanding probe (counted lost)."""
        for task in list(self.in_flight):
            self.cancel(task, withdraw=False)

    def cached_names(self) -> dict[str, str | None]:
        """Names found so far for the responders."""
        if self.names is None:
            return {}
        return {address: self.names.cached(address) for address in self.looked_up}


async def monitor(
    host: str,
    cycles: int | None = None,
    interval: float = 1.0,
    *,
    first_ttl: int = 1,
    max_ttl: int = 30,
    max_unknown: int = DEFAULT_MAX_UNKNOWN,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - each probe's own timeout
    grace: float = DEFAULT_GRACE,
    session: Session | None = None,
    helper: str | os.PathLike[str] | None = None,
    resolve_names: bool = False,
    name_resolver: NameResolver | None = None,
    retries: int = DEFAULT_RETRIES,
    paris: bool = False,
    flow: int | None = None,
    **options: Unpack[TraceOptions],
) -> AsyncGenerator[MonitorReport, None]:
    """Monitor the path to ``host`` as mtr does; yield a :class:`MonitorReport` after
    every cycle (forever when ``cycles`` is None).

    A cycle starts every ``interval`` seconds and sends one probe to every TTL from
    ``first_ttl`` up to the destination's hop (or ``max_unknown`` unknown TTLs past the
    highest that answered, at most ``max_ttl``) at once.  Each probe waits up to
    ``timeout`` seconds (mtr's -Z, 10 s), across later cycles if need be.  The report
    of cycle N is yielded when cycle N + 1 is due; the last one (``final``) once every
    probe is settled, or ``grace`` seconds (mtr's -G, 5 s) after the last cycle started,
    whichever comes first.  See the module documentation for mtr's rules followed here.

    ``retries`` (0-10, default 3) is how many further tries a silent hop of the first
    cycle gets (see the module documentation; 0: none).

    ``session``/``helper`` are those of :func:`~brokerpkg.ping.ping`, the probe options
    those of :class:`~brokerpkg.options.TraceOptions`; ``resolve_names`` looks up
    responders' reverse names in the background (reports show them once known).
    ``paris`` keeps every probe in one flow (number ``flow``, 0-65535, default 1; naming
    a flow implies ``paris``; the helper must support ``flow``), so each row is one
    router (see :func:`~brokerpkg.trace.traceroute`).

    Cycles are sent while the iteration runs: a consumer that blocks delays the next
    cycle.  Close the iterator to stop early and cancel the outstanding probes at once
    (``contextlib.aclosing``), or break out and let it be finalized.

    Raises (from the iteration) TypeError/ValueError for bad arguments (cycles >= 1,
    interval > 0, ttl range, max_unknown >= 1, grace >= 0, retries 0-10, flow
    0-65535), HostResolveError, FeatureNotSupportedError (a Paris monitor on a helper
    without flows), ProbeSendError and the session's errors.
    """
    refuse_unknown_options("monitor", options, TraceOptions.__optional_keys__)
    if cycles is not None:
        check_int("cycles", cycles, 1)
    interval = check_seconds("interval", interval, positive=True)
    grace = check_seconds("grace", grace)
    check_retries(retries)
    flow = paris_flow(paris, flow)
    state = MonitorState(first_ttl, max_ttl, max_unknown, flow)
    settings = probe_settings(timeout=timeout, flow=flow, **options)
    if name_resolver is not None and not isinstance(name_resolver, NameResolver):
        raise TypeError("name_resolver must be a NameResolver")
    async with session_scope(session, helper) as open_session:
        address = await resolve_address(open_session, host, options.get("family"))
        arguments = settings.arguments(address)
        del arguments["ttl"]
        names = (name_resolver or names_for(open_session)) if resolve_names else None
        loop = asyncio.get_running_loop()
        async with TaskGroup[None]() as tasks:
            driver = _Driver(open_session, address, arguments, state, tasks, names)
            start = loop.time()
            cycle = 0
            while cycles is None or cycle < cycles:
                cycle += 1
                began = loop.time()
                driver.start_cycle()
                if cycle == 1:
                    horizon = min(grace if cycle == cycles else interval, timeout)
                    await _retry_silent(tasks, driver, began, retry_offsets(retries, horizon))
                if cycle == cycles:
                    await _settle(tasks, driver, began + grace)
                    yield state.report(host, address, cycle, True, driver.cached_names())
                    return
                due = start + cycle * interval
                await tasks.sleep_until(due)
                yield state.report(host, address, cycle, False, driver.cached_names())
                start = max(start, loop.time() - cycle * interval)  # a slow consumer


async def _retry_silent(
    tasks: TaskGroup[None], driver: _Driver, began: float, offsets: tuple[float, ...]
) -> None:
    """At each of ``offsets`` after ``began``, probe the cycle's silent TTLs once more
    (:meth:`_Driver.silent`); return early once every probe is settled and none is
    silent."""
    loop = asyncio.get_running_loop()
    for offset in offsets:
        at = began + offset
        while driver.in_flight and loop.time() < at:
            await tasks.wait_any(at)
        if loop.time() < at:
            if not driver.silent():
                return
            await tasks.sleep_until(at)
        for ttl in driver.silent():
            driver.send(ttl)


async def _settle(tasks: TaskGroup[None], driver: _Driver, until: float) -> None:
    """Wait for the outstanding probes and name lookups until ``until``; abandon the
    probes left (names not found by then are left out of the final report)."""
    while (driver.in_flight or driver.name_lookups) and await tasks.wait_any(until):
        pass
    driver.abandon_all()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)  # let the cancelled probes unwind


# ----------------------------------------------------------------------------- flows

MAX_FLOWS = 1024
"""Flows :func:`monitor_flows` runs side by side at most."""


@dataclass(frozen=True, slots=True)
class FlowsReport:
    """The reports of the flows of :func:`monitor_flows` after ``cycle`` cycles
    (``final`` after the last one): ``flows`` holds one :class:`MonitorReport` per
    flow, in flow order, each with its own path, loss and round-trip times per hop
    (mtr #233: which path is losing)."""

    host: str
    destination: str
    cycle: int
    final: bool
    flows: tuple[MonitorReport, ...]

    @property
    def reached(self) -> bool:
        """True if the destination's hop is known for some flow."""
        return any(report.reached for report in self.flows)

    def flow(self, number: int) -> MonitorReport:
        """The report of flow ``number``; raises KeyError when there is none."""
        for report in self.flows:
            if report.flow == number:
                return report
        raise KeyError(f"no flow {number}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the cycle and each flow's report (with its ``flow``)."""
        return {
            "host": self.host,
            "destination": self.destination,
            "cycle": self.cycle,
            "final": self.final,
            "reached": self.reached,
            "flows": [report.to_dict() for report in self.flows],
        }

    def __str__(self) -> str:
        """One ``mtr -r`` table per flow, its ``HOST:`` line naming the flow."""
        host = socket.gethostname()
        lines: list[str] = []
        for report in self.flows:
            lines.extend(
                report_lines(report, local_host=f"{host} (flow {report.flow})", numeric=False)
            )
        return "\n".join(lines)


class MonitorFlowsOptions(CommonOptions, total=False):
    """What :func:`monitor_flows` passes on to each flow's :func:`monitor`: its own
    settings (as it takes them) and the probe options but ``local_port`` (the flows
    choose the ports); ``paris`` and ``flow`` are monitor_flows' choice too."""

    first_ttl: int
    max_ttl: int
    max_unknown: int
    timeout: float
    grace: float
    resolve_names: bool
    name_resolver: NameResolver | None
    retries: int


async def monitor_flows(
    host: str,
    flows: int,
    cycles: int | None = None,
    interval: float = 1.0,
    *,
    first_flow: int = PARIS_FLOW,
    session: Session | None = None,
    helper: str | os.PathLike[str] | None = None,
    **options: Unpack[MonitorFlowsOptions],
) -> AsyncGenerator[FlowsReport, None]:
    """Monitor ``flows`` paths to ``host`` side by side: one Paris :func:`monitor` per
    flow (flows ``first_flow`` .. ``first_flow + flows - 1``), all on one session and
    in step; yield a :class:`FlowsReport` after every cycle.

    ``options`` (:class:`MonitorFlowsOptions`) are :func:`monitor`'s (``first_ttl``,
    ``max_ttl``, ``timeout``, ``protocol``, ``resolve_names``...), except ``paris`` and
    ``flow`` (each monitor has its flow) and ``local_port`` (the flows choose the
    ports).  Close the iterator to stop early (every flow's probes are cancelled).

    Raises (from the iteration) TypeError for ``paris``, ``flow`` or ``local_port`` in
    ``options`` and for an argument :func:`monitor` does not take, ValueError for
    flows outside 1-1024 or flow numbers past 65535 (all before the helper is
    started), and what :func:`monitor` raises (its values are checked as the monitors
    start).
    """
    for name in ("paris", "flow", "local_port"):
        if name in options:
            raise TypeError(f"monitor_flows() chooses {name} itself; do not pass it")
    refuse_unknown_options("monitor_flows", options, MonitorFlowsOptions.__optional_keys__)
    count = check_int("flows", flows, 1, MAX_FLOWS)
    first = check_int("first_flow", first_flow, 0, MAX_FLOW - count + 1)
    async with session_scope(session, helper) as open_session:
        monitors = [
            monitor(host, cycles, interval, session=open_session, flow=first + index, **options)
            for index in range(count)
        ]
        try:
            while True:
                reports = await asyncio.gather(*(_next_report(each) for each in monitors))
                if any(report is None for report in reports):
                    return
                ready = tuple(report for report in reports if report is not None)
                head = ready[0]
                yield FlowsReport(head.host, head.destination, head.cycle, head.final, ready)
        finally:
            for each in monitors:
                await each.aclose()


async def _next_report(reports: AsyncGenerator[MonitorReport, None]) -> MonitorReport | None:
    """The next report of a monitor, None once it is over."""
    try:
        return await anext(reports)
    except StopAsyncIteration:
        return None
