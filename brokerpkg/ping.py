"""ping and multiping, and what every high-level function shares.

:func:`ping` sends ``count`` probes to one host, one every ``interval`` seconds without
waiting for earlier answers (as ping and fping do: a ping lasts about ``(count - 1) *
interval`` plus one round trip, not ``count * timeout``), and returns a
:class:`PingResult` that computes its statistics (:mod:`brokerpkg.stats`) from the raw
results.  :func:`multiping` pings many hosts through one helper with a bound on how many
run at once and returns results in input order; :func:`multiping_iter` yields each
host's result as soon as it is complete.

Any protocol (icmp, udp, tcp, sctp), IPv4 or IPv6, every probe option of
:meth:`Session.probe`.  Each function uses the open ``session`` it is given, or opens
its own (the helper found by :func:`~brokerpkg.locate.locate_helper`, or ``helper``).

Errors, split as icmplib splits them:

- answers from the network are results: a probe that got "destination unreachable" or
  "time exceeded" is recorded, and :meth:`PingResult.raise_for_status` turns it into a
  :class:`NetworkError` (:class:`DestinationUnreachable`, :class:`TimeExceeded`, or
  :class:`NoReplyError` when nothing answered);
- local failures are raised at once: TypeError/ValueError for bad arguments (before
  anything is sent), :class:`~brokerpkg.errors.HostResolveError`, the session's errors
  (:class:`~brokerpkg.errors.ProcessError` and subclasses, StateError,
  InvalidProbeError), and :class:`ProbeSendError` (an OSError) when the kernel refused
  to send a probe.  The other probes of the call are then cancelled.

This module also holds what :mod:`brokerpkg.trace` and :mod:`brokerpkg.mtr` share: the
answer classification (:func:`classify`), option checking, progress events, address
resolution through the session (:func:`resolve_address`, :func:`resolve_addresses`) and a
small task group.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import errno
import math
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from . import protocol as wire
from . import stats
from .errors import (
    DestinationUnreachable,
    NetworkError,
    NoReplyError,
    ProbeSendError,
    ProtocolError,
    TimeExceeded,
)
from .protocol import ProbeOptions, ProbeResult
from .session import Session

__all__ = [
    "Answer",
    "DestinationUnreachable",
    "NetworkError",
    "NoReplyError",
    "PingResult",
    "ProbeSendError",
    "ProgressCallback",
    "ProgressEvent",
    "TimeExceeded",
    "classify",
    "multiping",
    "multiping_iter",
    "ping",
    "probe_to_dict",
    "raise_for_probe",
]

T = TypeVar("T")

IP_HEADER_SIZE = {4: 20, 6: 40}
PAYLOAD_OFFSET = {"icmp": 8, "udp": 8}
"""Bytes between the IP header and the payload, for protocols where payload_size applies."""

DEFAULT_CONCURRENCY = 50


# ----------------------------------------------------------------------------- answers


class Answer(enum.StrEnum):
    """What the network said to one probe (see :func:`classify`)."""

    REPLY = "reply"
    """The destination answered (echo reply, port unreachable from it, SYN-ACK/RST...)."""
    TIME_EXCEEDED = "time-exceeded"
    """A router on the way answered ICMP time exceeded (the TTL ran out)."""
    UNREACHABLE = "unreachable"
    """A router or the destination answered ICMP destination unreachable."""
    NO_REPLY = "no-reply"
    """Nothing answered within the timeout."""


_LOCAL_FAILURES: dict[str, tuple[int | None, str]] = {
    wire.NO_ROUTE: (
        errno.EHOSTUNREACH,
        "the kernel has no route to it (check `ip route get ADDRESS`)",
    ),
    "network-down": (errno.ENETDOWN, "the network interface is down"),
    "permission-denied": (
        errno.EACCES,
        "permission denied (a local firewall rule, a broadcast destination, "
        "or a mark the caller may not set)",
    ),
    "address-in-use": (errno.EADDRINUSE, "the source address and port are already in use"),
    "address-not-available": (
        errno.EADDRNOTAVAIL,
        "the source address is not assigned to this host",
    ),
    "unexpected-error": (None, "the kernel refused to send the probe"),
    "probes-exhausted": (
        None,
        "the helper has no free probe slot or identity left for this protocol "
        "(too many probes in flight, perhaps from other sessions)",
    ),
}


def _send_error(result: ProbeResult) -> ProbeSendError:
    """The ProbeSendError for a reply word that means nothing was sent."""
    code, why = _LOCAL_FAILURES[result.result]
    reason = result.reason or ""
    if result.result == "unexpected-error" and reason.startswith("errno "):
        number = reason.removeprefix("errno ")
        if number.isascii() and number.isdigit():
            code = int(number)
            why = f"{why}: {os.strerror(code)}"
    target = result.target or "the destination"
    message = f"cannot send {result.protocol or 'the'} probe to {target}: {why}"
    if result.reason and result.result != "unexpected-error":
        message += f" ({result.reason})"
    return ProbeSendError(code, message, result.result, result)


def classify(result: ProbeResult) -> Answer:
    """Say what the network answered to one probe.

    Raises ProbeSendError when the reply word says nothing was sent (``no-route``
    without an address, ``network-down``, ``permission-denied``, ``address-in-use``,
    ``address-not-available``, ``unexpected-error``, ``probes-exhausted``), and
    ProtocolError for a word this library does not know.
    """
    if result.success:
        return Answer.REPLY
    if result.result == wire.TTL_EXPIRED:
        return Answer.TIME_EXCEEDED
    if result.result == wire.NO_ROUTE and result.responder is not None:
        return Answer.UNREACHABLE
    if result.result == wire.NO_REPLY:
        return Answer.NO_REPLY
    if result.result in _LOCAL_FAILURES:
        raise _send_error(result)
    raise ProtocolError(f"helper answered a probe with an unknown word {result.result!r}")


def _icmp_text(result: ProbeResult) -> str:
    """`` (ICMP type T, code C)`` when the reply details are known, else ''."""
    if result.icmp_type is None:
        return ""
    return f" (ICMP type {result.icmp_type}, code {result.icmp_code})"


def raise_for_probe(result: ProbeResult, host: str | None = None) -> ProbeResult:
    """Return ``result`` if the destination answered; raise otherwise.

    Raises DestinationUnreachable, TimeExceeded or NoReplyError for those answers, and
    like :func:`classify` for local failures.  ``host`` names the destination in the
    message (default: the probe's target address).
    """
    answer = classify(result)
    name = host or result.target or "the destination"
    if answer is Answer.REPLY:
        return result
    if answer is Answer.UNREACHABLE:
        raise DestinationUnreachable(
            f"{name} is unreachable: {result.responder} answered destination "
            f"unreachable{_icmp_text(result)}",
            host=host,
            result=result,
        )
    if answer is Answer.TIME_EXCEEDED:
        raise TimeExceeded(
            f"{name} was not reached: time exceeded at {result.responder} "
            f"(TTL {result.ttl}){_icmp_text(result)}",
            host=host,
            result=result,
        )
    raise NoReplyError(f"no reply from {name}", host=host, result=result)


def probe_to_dict(result: ProbeResult) -> dict[str, Any]:
    """A ProbeResult as a JSON-ready dict (MPLS entries as dicts, None as null)."""
    fields = result._asdict()
    fields["mpls"] = [entry._asdict() for entry in result.mpls]
    return fields


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


class _Progress:
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


# ----------------------------------------------------------------------------- arguments


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int (not bool) in [low, high].

    Raises TypeError for another type, ValueError when out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    """Return ``value`` as float seconds if it is a finite number >= 0 (> 0 if positive).

    Raises TypeError for a non-number, ValueError when out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        relation = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {relation}, got {value!r}")
    return seconds


PARIS_FLOW = 1
"""The flow of a Paris trace or monitor when none is named."""


def paris_flow(paris: object, flow: object) -> int | None:
    """The flow number of flow-stable (Paris) probes: ``flow`` (0-65535; naming one
    implies ``paris``), PARIS_FLOW with ``paris`` alone, None for neither (classic
    probes, each its own flow).

    Raises TypeError for a paris that is not a bool or a flow that is not an int,
    ValueError for a flow out of range.
    """
    if not isinstance(paris, bool):
        raise TypeError(f"paris must be True or False, got {paris!r}")
    if flow is None:
        return PARIS_FLOW if paris else None
    return check_int("flow", flow, 0, wire.MAX_FLOW)


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Probe options shared by all probes of a call, checked before anything is sent.

    Built by :func:`probe_settings`; :meth:`arguments` gives the keyword arguments of
    :meth:`Session.probe` for one resolved address.
    """

    options: ProbeOptions
    payload_size: int | None

    def arguments(self, address: str) -> dict[str, Any]:
        """Keyword arguments for ``Session.probe(address, ...)``.

        ``payload_size`` becomes the helper's ``size`` (IP header + ICMP/UDP header +
        payload) for the address's family.  Raises ValueError when that exceeds 9000.
        """
        fields = self.options._asdict()
        if self.payload_size is not None:
            version = wire.ip_version_of(address)
            protocol = self.options.protocol or wire.DEFAULT_PROTOCOL
            size = IP_HEADER_SIZE[version] + PAYLOAD_OFFSET[protocol] + self.payload_size
            if size > 9000:
                raise ValueError(
                    f"payload_size {self.payload_size} makes IPv{version} packets of {size} "
                    "bytes, more than 9000"
                )
            fields["size"] = size
        return fields


def probe_settings(
    *,
    family: int | None = None,
    protocol: str | None = None,
    port: int | None = None,
    ttl: int | None = None,
    timeout: float | None = None,
    size: int | None = None,
    payload_size: int | None = None,
    bit_pattern: int | None = None,
    tos: int | None = None,
    mark: int | None = None,
    local_ip: str | None = None,
    local_port: int | None = None,
    local_device: str | None = None,
    details: bool = False,
    flow: int | None = None,
) -> ProbeSettings:
    """Check probe options (types, ranges, and whether they apply) and bundle them.

    ``family`` is 4, 6 or None; ``flow`` the flow number of flow-stable (Paris)
    probes (0-65535, see :meth:`Session.probe`); ``size`` is the whole packet as the
    helper takes it, ``payload_size`` the bytes after the ICMP or UDP header (like
    ``ping -s`` and icmplib's payload_size; icmp and udp only).  Options that cannot
    apply are refused rather than ignored: ``port``/``local_port`` for icmp,
    ``payload_size`` for tcp and sctp, ``size``/``payload_size``/``bit_pattern`` for
    tcp (a TCP probe is a SYN without payload).

    Raises TypeError or ValueError naming the option.
    """
    if size is not None and payload_size is not None:
        raise ValueError("give size (whole packet) or payload_size (after the header), not both")
    name = protocol or wire.DEFAULT_PROTOCOL
    if payload_size is not None:
        check_int("payload_size", payload_size, 0, 9000 - 20 - 8)
        if name not in PAYLOAD_OFFSET:
            raise ValueError(
                f"payload_size applies to icmp and udp probes, not {name}; give size instead"
            )
    if name == "tcp":
        for option, value in (
            ("size", size),
            ("payload_size", payload_size),
            ("bit_pattern", bit_pattern),
        ):
            if value is not None:
                raise ValueError(f"{option} does not apply to tcp probes (a SYN has no payload)")
    options = wire.make_probe_options(
        ip_version=family,
        protocol=protocol,
        port=port,
        ttl=ttl,
        timeout=timeout,
        size=size,
        bit_pattern=bit_pattern,
        tos=tos,
        mark=mark,
        local_ip=local_ip,
        local_port=local_port,
        local_device=local_device,
        details=details,
        flow=flow,
    )
    return ProbeSettings(options, payload_size)


# ----------------------------------------------------------------------------- sessions


@contextlib.asynccontextmanager
async def session_scope(
    session: Session | None, helper: str | os.PathLike[str] | None
) -> AsyncIterator[Session]:
    """Yield ``session`` (open, the caller's), or open a new one on ``helper`` and close
    it afterwards.

    Raises ValueError when both are given, TypeError when ``session`` is not a Session,
    and what :meth:`Session.open` raises.
    """
    if session is not None:
        if helper is not None:
            raise ValueError("give session or helper, not both")
        if not isinstance(session, Session):
            raise TypeError(f"session must be a brokerpkg.Session, got {type(session).__name__}")
        yield session
        return
    async with Session(helper) as own:
        yield own


async def resolve_address(session: Session, host: str, family: int | None) -> str:
    """Resolve ``host`` to a numeric address of ``family`` (4, 6, None: the first given)
    through the session's resolver (:meth:`Session.resolve`: cached until its
    ``clear_dns_cache``); numeric addresses are returned in canonical form.

    Raises HostResolveError, TypeError for a non-str host.
    """
    return await session.resolve(host, family)


# ----------------------------------------------------------------------------- tasks


class TaskGroup(Generic[T]):
    """Tasks that fail together: the first exception is raised by the next wait, and
    leaving the ``async with`` block cancels what is left and waits for it.

    Unlike :class:`asyncio.TaskGroup` it raises the original exception (not an
    ExceptionGroup), lets the owner cancel single tasks (a cancelled task is not an
    error), and hands out results in completion order (:meth:`next_result`) when made
    with ``collect=True``.
    """

    def __init__(self, *, collect: bool = False) -> None:
        self._collect = collect
        self._pending: set[asyncio.Task[T]] = set()
        self._finished: collections.deque[T] = collections.deque()
        self._error: BaseException | None = None
        self._wakeup = asyncio.Event()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def pending(self) -> int:
        """Tasks not finished yet."""
        return len(self._pending)

    def start(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coroutine`` as a task of the group."""
        task = asyncio.create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[T]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                if self._error is None:
                    self._error = error
            elif self._collect:
                self._finished.append(task.result())
        self._wakeup.set()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def _wait_wakeup(self, until: float | None) -> bool:
        """Wait for a task to finish, at most until loop time ``until``; False on time."""
        self._wakeup.clear()
        if until is None:
            await self._wakeup.wait()
            return True
        delay = until - asyncio.get_running_loop().time()
        if delay <= 0:
            return False
        try:
            async with asyncio.timeout(delay):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    async def sleep_until(self, until: float) -> None:
        """Sleep until loop time ``until``; raise the first task error meanwhile."""
        while True:
            self._raise_error()
            if not await self._wait_wakeup(until):
                self._raise_error()
                return

    async def wait_all(self, until: float | None = None) -> bool:
        """Wait until every task finished (True) or loop time ``until`` (False); raise
        the first task error."""
        while True:
            self._raise_error()
            if not self._pending:
                return True
            if not await self._wait_wakeup(until):
                self._raise_error()
                return not self._pending

    async def wait_any(self, until: float | None = None) -> bool:
        """Wait until a task finishes (True) or loop time ``until`` (False); raise the
        first task error."""
        self._raise_error()
        finished = await self._wait_wakeup(until)
        self._raise_error()
        return finished

    async def next_result(self) -> T | None:
        """The next result in completion order, or None once nothing is left (needs
        ``collect=True``); raises the first task error."""
        while True:
            self._raise_error()
            if self._finished:
                return self._finished.popleft()
            if not self._pending:
                return None
            await self._wait_wakeup(None)

    async def aclose(self) -> None:
        """Cancel the tasks left and wait for them to end; never raises their errors."""
        tasks = list(self._pending)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


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
            "sent": self.sent,
            "received": self.received,
            "packet_loss": self.packet_loss,
            "min_rtt": self.min_rtt,
            "avg_rtt": self.avg_rtt,
            "max_rtt": self.max_rtt,
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


async def _ping_address(
    session: Session,
    host: str,
    address: str,
    count: int,
    interval: float,
    arguments: Mapping[str, Any],
    progress: _Progress,
) -> PingResult:
    """Send ``count`` probes to ``address`` paced by ``interval``; wait for all."""
    results: list[ProbeResult | None] = [None] * count

    async def one(sequence: int) -> None:
        result = await session.probe(address, **arguments)
        classify(result)  # raises for local failures
        results[sequence] = result
        progress.report(host, sequence, result)

    loop = asyncio.get_running_loop()
    async with TaskGroup[None]() as tasks:
        start = loop.time()
        for sequence in range(count):
            if sequence:
                await tasks.sleep_until(start + sequence * interval)
            tasks.start(one(sequence))
        await tasks.wait_all()
    probes = tuple(result for result in results if result is not None)
    assert len(probes) == count
    return PingResult(host, address, probes)


def _check_ping(count: object, interval: object, timeout: object) -> tuple[int, float]:
    """Check count (>= 1), interval and timeout; return count and interval."""
    check_seconds("timeout", timeout)
    return check_int("count", count, 1), check_seconds("interval", interval)


async def ping(
    host: str,
    count: int = 4,
    interval: float = 1.0,
    timeout: float = 2.0,  # noqa: ASYNC109 - each probe's own timeout, sent to the helper
    *,
    session: Session | None = None,
    helper: str | os.PathLike[str] | None = None,
    family: int | None = None,
    protocol: str | None = None,
    port: int | None = None,
    ttl: int | None = None,
    size: int | None = None,
    payload_size: int | None = None,
    bit_pattern: int | None = None,
    tos: int | None = None,
    mark: int | None = None,
    local_ip: str | None = None,
    local_port: int | None = None,
    local_device: str | None = None,
    details: bool = False,
    progress: ProgressCallback | None = None,
) -> PingResult:
    """Ping ``host``: ``count`` probes, one every ``interval`` seconds, each waiting at
    most ``timeout`` seconds for its answer; return a :class:`PingResult`.

    Probes do not wait for each other: the call lasts about ``(count - 1) * interval``
    plus the last answer's round trip (or ``timeout``).  ``session`` is an open Session
    to use; without it one is opened on ``helper`` (default: search) and closed after.
    Probe options are those of :meth:`Session.probe` (``family`` is its ip_version) and
    ``payload_size`` (bytes after the ICMP/UDP header; see :func:`probe_settings`).
    ``progress`` is called with a :class:`ProgressEvent` as each probe finishes.

    Network answers (unreachable, time exceeded, no reply) are results: see
    :meth:`PingResult.raise_for_status`.

    Raises TypeError/ValueError for bad arguments (before anything is sent),
    HostResolveError, ProbeSendError when the kernel refuses to send a probe, and the
    session's errors (ProcessError and subclasses, StateError, InvalidProbeError,
    FeatureNotSupportedError); the remaining probes are then cancelled.
    """
    count, interval = _check_ping(count, interval, timeout)
    settings = probe_settings(
        family=family,
        protocol=protocol,
        port=port,
        ttl=ttl,
        timeout=timeout,
        size=size,
        payload_size=payload_size,
        bit_pattern=bit_pattern,
        tos=tos,
        mark=mark,
        local_ip=local_ip,
        local_port=local_port,
        local_device=local_device,
        details=details,
    )
    async with session_scope(session, helper) as open_session:
        address = await resolve_address(open_session, host, family)
        return await _ping_address(
            open_session,
            host,
            address,
            count,
            interval,
            settings.arguments(address),
            _Progress(progress, count),
        )


async def resolve_addresses(
    session: Session, hosts: Sequence[str], family: int | None, concurrency: int
) -> list[str]:
    """Every host's address, as :func:`resolve_address` gives it, in input order, at most
    ``concurrency`` lookups at once (multiping, and the multiping command, resolve every
    host before anything is sent).

    Raises the first error, like :func:`resolve_address` (HostResolveError, TypeError).
    """
    addresses: list[str] = [""] * len(hosts)
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with slots:
            addresses[index] = await resolve_address(session, hosts[index], family)

    async with TaskGroup[None]() as tasks:
        for index in range(len(hosts)):
            tasks.start(one(index))
        await tasks.wait_all()
    return addresses


def _host_list(hosts: Iterable[str]) -> list[str]:
    """The hosts of multiping as a list.

    Raises TypeError for one str (or bytes) instead of a collection of them, and for a
    host that is not a str.
    """
    if isinstance(hosts, str | bytes | bytearray):
        raise TypeError(
            f"hosts must be a collection of host names, not one {type(hosts).__name__} "
            f"({hosts!r}); for one host use ping() or [{hosts!r}]"
        )
    names = list(hosts)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"hosts must be str, got {type(name).__name__} {name!r}")
    return names


async def _multiping_indexed(
    hosts: Iterable[str],
    count: int,
    interval: float,
    timeout: float,  # noqa: ASYNC109 - each probe's own timeout, sent to the helper
    concurrency: int,
    session: Session | None,
    helper: str | os.PathLike[str] | None,
    family: int | None,
    progress: ProgressCallback | None,
    options: Mapping[str, Any],
) -> AsyncGenerator[tuple[int, PingResult], None]:
    """Ping every host; yield (input index, result) as each completes."""
    names = _host_list(hosts)
    count, interval = _check_ping(count, interval, timeout)
    concurrency = check_int("concurrency", concurrency, 1)
    settings = probe_settings(family=family, timeout=timeout, **options)
    if not names:
        return
    async with session_scope(session, helper) as open_session:
        addresses = await resolve_addresses(open_session, names, family, concurrency)
        arguments = [settings.arguments(address) for address in addresses]
        counter = _Progress(progress, count * len(names))
        slots = asyncio.Semaphore(concurrency)

        async def one(index: int) -> tuple[int, PingResult]:
            async with slots:
                result = await _ping_address(
                    open_session,
                    names[index],
                    addresses[index],
                    count,
                    interval,
                    arguments[index],
                    counter,
                )
            return index, result

        async with TaskGroup[tuple[int, PingResult]](collect=True) as tasks:
            for index in range(len(names)):
                tasks.start(one(index))
            while (item := await tasks.next_result()) is not None:
                yield item


async def multiping(
    hosts: Iterable[str],
    count: int = 2,
    interval: float = 0.5,
    timeout: float = 2.0,  # noqa: ASYNC109 - each probe's own timeout, sent to the helper
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    session: Session | None = None,
    helper: str | os.PathLike[str] | None = None,
    family: int | None = None,
    protocol: str | None = None,
    port: int | None = None,
    ttl: int | None = None,
    size: int | None = None,
    payload_size: int | None = None,
    bit_pattern: int | None = None,
    tos: int | None = None,
    mark: int | None = None,
    local_ip: str | None = None,
    local_port: int | None = None,
    local_device: str | None = None,
    details: bool = False,
    progress: ProgressCallback | None = None,
) -> list[PingResult]:
    """Ping every host of ``hosts`` through one helper; return the results in input
    order (defaults as icmplib's multiping: count 2, interval 0.5 s, 50 at once).

    Each host is pinged as :func:`ping` does; at most ``concurrency`` hosts are pinged at
    once.  All host names are resolved first, so a name that does not resolve fails the
    call before any probe is sent.  ``progress`` gets one event per probe, counted over
    all hosts.

    Raises like :func:`ping` (ValueError also for concurrency < 1, TypeError for
    ``hosts`` given as one str instead of a collection of names); any error cancels the
    pings still running.
    """
    names = _host_list(hosts)
    results: list[PingResult | None] = [None] * len(names)
    stream = _multiping_indexed(
        names,
        count,
        interval,
        timeout,
        concurrency,
        session,
        helper,
        family,
        progress,
        _options(
            protocol,
            port,
            ttl,
            size,
            payload_size,
            bit_pattern,
            tos,
            mark,
            local_ip,
            local_port,
            local_device,
            details,
        ),
    )
    async with contextlib.aclosing(stream):
        async for index, result in stream:
            results[index] = result
    return [result for result in results if result is not None]


async def multiping_iter(
    hosts: Iterable[str],
    count: int = 2,
    interval: float = 0.5,
    timeout: float = 2.0,  # noqa: ASYNC109 - each probe's own timeout, sent to the helper
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    session: Session | None = None,
    helper: str | os.PathLike[str] | None = None,
    family: int | None = None,
    protocol: str | None = None,
    port: int | None = None,
    ttl: int | None = None,
    size: int | None = None,
    payload_size: int | None = None,
    bit_pattern: int | None = None,
    tos: int | None = None,
    mark: int | None = None,
    local_ip: str | None = None,
    local_port: int | None = None,
    local_device: str | None = None,
    details: bool = False,
    progress: ProgressCallback | None = None,
) -> AsyncGenerator[PingResult, None]:
    """Like :func:`multiping`, but yield each host's PingResult as soon as it is
    complete (completion order; ``result.host`` says which host it is).

    Errors are raised by the iteration.  To stop early and cancel the pings still
    running at once, close the iterator: ``async with contextlib.aclosing(
    multiping_iter(...)) as results: async for result in results: ...``.
    """
    stream = _multiping_indexed(
        hosts,
        count,
        interval,
        timeout,
        concurrency,
        session,
        helper,
        family,
        progress,
        _options(
            protocol,
            port,
            ttl,
            size,
            payload_size,
            bit_pattern,
            tos,
            mark,
            local_ip,
            local_port,
            local_device,
            details,
        ),
    )
    async with contextlib.aclosing(stream):
        async for _, result in stream:
            yield result


def _options(
    protocol: str | None,
    port: int | None,
    ttl: int | None,
    size: int | None,
    payload_size: int | None,
    bit_pattern: int | None,
    tos: int | None,
    mark: int | None,
    local_ip: str | None,
    local_port: int | None,
    local_device: str | None,
    details: bool,
) -> dict[str, Any]:
    """The probe options of multiping as keyword arguments of probe_settings."""
    return {
        "protocol": protocol,
        "port": port,
        "ttl": ttl,
        "size": size,
        "payload_size": payload_size,
        "bit_pattern": bit_pattern,
        "tos": tos,
        "mark": mark,
        "local_ip": local_ip,
        "local_port": local_port,
        "local_device": local_device,
        "details": details,
    }
