"""Blocking versions of the high-level functions, for scripts without asyncio.

:func:`probe`, :func:`ping`, :func:`multiping` and :func:`traceroute` run on a
:class:`~brokerpkg.blocking.BlockingSession` (a ``selectors`` loop over the same engine
as the asyncio Session: no event loop, no thread, and asyncio is never imported); they
take the arguments of their asynchronous namesakes, except ``session`` (give ``helper``
instead, or nothing to search for it), and return the same results.  The monitors and
multipath traces run their asynchronous namesakes with :func:`asyncio.run`.

    >>> from brokerpkg import sync
    >>> result = sync.ping("127.0.0.1", count=3, interval=0.2)     # doctest: +SKIP
    >>> reports = sync.monitor("127.0.0.1", cycles=5)              # doctest: +SKIP

- :func:`probe` -> :class:`~brokerpkg.protocol.ProbeResult` (``Session.probe``)
- :func:`ping` -> :class:`~brokerpkg.ping.PingResult` (:func:`brokerpkg.ping.ping`)
- :func:`multiping` -> list of PingResult (:func:`brokerpkg.ping.multiping`)
- :func:`traceroute` -> :class:`~brokerpkg.trace.TraceResult`
  (:func:`brokerpkg.trace.traceroute`)
- :func:`monitor` -> list of :class:`~brokerpkg.mtr.MonitorReport`, one per cycle
  (:func:`brokerpkg.mtr.monitor`; ``cycles`` is required)
- :func:`monitor_flows` -> list of :class:`~brokerpkg.mtr.FlowsReport`, one per cycle
  (:func:`brokerpkg.mtr.monitor_flows`; ``cycles`` is required)
- :func:`multipath_trace` -> :class:`~brokerpkg.multipath.MultipathResult`
  (:func:`brokerpkg.multipath.multipath_trace`)

They raise what the async functions raise, TypeError for a ``session`` argument, and
RuntimeError when called from a running event loop (it would stall: use the async
functions there).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from . import protocol as wire
from .addresses import names_now
from .answers import Answer, classify
from .blocking import BlockingSession
from .engine import ProbeTemplate, Request
from .options import (
    PingOptions,
    TraceOptions,
    check_int,
    paris_flow,
    probe_settings,
    refuse_unknown_options,
)
from .ping import DEFAULT_CONCURRENCY, PingResult, _check_ping, _host_list
from .protocol import ProbeResult
from .tasks import ProgressCallback, ProgressCounter
from .trace import (
    TERMINAL_ANSWERS,
    TraceResult,
    _check_ttls,
    _check_wait,
    _Slots,
    make_hop,
)
from .waiting import DEFAULT_RETRIES, TracePlan, Try, Wait, check_retries

if TYPE_CHECKING:
    from .mtr import FlowsReport, MonitorReport
    from .multipath import MultipathResult
    from .resolve import NameResolver

__all__ = [
    "monitor",
    "monitor_flows",
    "multipath_trace",
    "multiping",
    "ping",
    "probe",
    "traceroute",
]

Helper = str | os.PathLike[str] | None
"""The helper to run: its path, or None to search (``session`` is taken only to be
refused: a Session belongs to an event loop)."""


def _refuse_running_loop(name: str) -> None:
    """Raise RuntimeError when called from a running event loop (it would stall it).
    A running loop means asyncio is imported already: nothing is imported here."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"brokerpkg.sync.{name}() cannot run inside an event loop; "
        f"use the asynchronous brokerpkg.{name}() there"
    )


def _refuse_session(name: str, session: object) -> None:
    """Raise TypeError for a session (a Session belongs to an event loop), and
    RuntimeError inside a running event loop."""
    _refuse_running_loop(name)
    if session is not None:
        raise TypeError(
            f"brokerpkg.sync.{name}() opens its own session; pass helper= instead of session="
        )


# ----------------------------------------------------------------------------- probe


def probe(
    host: str, *, session: object = None, helper: Helper = None, **options: Any
) -> ProbeResult:
    """One probe to ``host`` with the options of :meth:`brokerpkg.Session.probe`, on a
    helper opened for it (``helper``: its path; default: search).

    Raises like ``Session.probe`` and ``Session.open``.
    """
    _refuse_session("probe", session)
    checked = wire.make_probe_options(**options)  # refuse bad options before the helper runs
    with BlockingSession(helper) as own:
        return own.probe(host, **checked._asdict())


# ----------------------------------------------------------------------------- ping


class _Pinging:
    """One host's ping on a blocking session: ``count`` probes ``interval`` apart from
    :meth:`begin`, results by sequence number."""

    def __init__(
        self, host: str, address: str, template: ProbeTemplate, count: int, interval: float
    ) -> None:
        self.host = host
        self.address = address
        self.template = template
        self.count = count
        self.interval = interval
        self.results: list[ProbeResult | None] = [None] * count
        self.sent = 0
        self.settled = 0
        self.began = 0.0

    def begin(self, now: float) -> None:
        self.began = now

    def next_send(self) -> float | None:
        """When the next probe goes (None: all sent)."""
        return None if self.sent == self.count else self.began + self.sent * self.interval

    @property
    def done(self) -> bool:
        return self.settled == self.count

    def result(self) -> PingResult:
        probes = tuple(result for result in self.results if result is not None)
        return PingResult(self.host, self.address, probes)


def _run_pings(
    session: BlockingSession,
    pings: Sequence[_Pinging],
    concurrency: int,
    progress: ProgressCounter,
) -> None:
    """Ping every host of ``pings``, at most ``concurrency`` at once in input order (a
    host's turn starts when an earlier one is done); the first error gives up the
    probes in flight and is raised."""
    waiting = list(reversed(pings))
    active: list[_Pinging] = []
    flight: dict[Request, tuple[_Pinging, int]] = {}
    try:
        while waiting or active:
            now = time.monotonic()
            while waiting and len(active) < concurrency:
                pinging = waiting.pop()
                pinging.begin(now)
                active.append(pinging)
            for pinging in active:
                send_at = pinging.next_send()
                while send_at is not None and send_at <= now:
                    flight[session.start(pinging.template)] = (pinging, pinging.sent)
                    pinging.sent += 1
                    send_at = pinging.next_send()
            sends = [at for pinging in active if (at := pinging.next_send()) is not None]
            for request in session.wait(min(sends) if sends else None):
                pinging, sequence = flight.pop(request)
                result = session.result(request)
                classify(result)  # raises for local failures
                pinging.results[sequence] = result
                pinging.settled += 1
                progress.report(pinging.host, sequence, result)
            active = [pinging for pinging in active if not pinging.done]
    except BaseException:
        session.give_up(flight)
        raise


def ping(
    host: str,
    count: int = 4,
    interval: float = 1.0,
    timeout: float = 2.0,
    *,
    session: object = None,
    helper: Helper = None,
    progress: ProgressCallback | None = None,
    **options: Unpack[PingOptions],
) -> PingResult:
    """Blocking :func:`brokerpkg.ping.ping`: the same arguments (but ``session``), the
    same result and errors."""
    _refuse_session("ping", session)
    refuse_unknown_options("ping", options, PingOptions.__optional_keys__)
    count, interval = _check_ping(count, interval, timeout)
    settings = probe_settings(timeout=timeout, **options)
    family = options.get("family")
    with BlockingSession(helper) as own:
        address = own.resolve(host, family)
        template = own.template(address, wire.make_probe_options(**settings.arguments(address)))
        pinging = _Pinging(host, address, template, count, interval)
        _run_pings(own, [pinging], 1, ProgressCounter(progress, count))
    return pinging.result()


def multiping(
    hosts: Iterable[str],
    count: int = 2,
    interval: float = 0.5,
    timeout: float = 2.0,
    concurrency: int = DEFAULT_CONCURRENCY,
    *,
    session: object = None,
    helper: Helper = None,
    progress: ProgressCallback | None = None,
    **options: Unpack[PingOptions],
) -> list[PingResult]:
    """Blocking :func:`brokerpkg.ping.multiping`: the same arguments (but ``session``),
    the same results (in input order) and errors."""
    _refuse_session("multiping", session)
    refuse_unknown_options("multiping", options, PingOptions.__optional_keys__)
    names = _host_list(hosts)
    count, interval = _check_ping(count, interval, timeout)
    concurrency = check_int("concurrency", concurrency, 1)
    settings = probe_settings(timeout=timeout, **options)
    family = options.get("family")
    if not names:
        return []
    with BlockingSession(helper) as own:
        pings = []
        for name in names:
            address = own.resolve(name, family)
            options_here = wire.make_probe_options(**settings.arguments(address))
            template = own.template(address, options_here)
            pings.append(_Pinging(name, address, template, count, interval))
        _run_pings(own, pings, concurrency, ProgressCounter(progress, count * len(names)))
    return [pinging.result() for pinging in pings]


# ----------------------------------------------------------------------------- traceroute


def traceroute(
    host: str,
    first_ttl: int = 1,
    max_ttl: int = 30,
    probes_per_hop: int = 3,
    timeout: float | None = None,
    *,
    wait: Wait | str | float | Sequence[float] | None = None,
    retries: int = DEFAULT_RETRIES,
    session: object = None,
    helper: Helper = None,
    resolve_names: bool = False,
    name_resolver: NameResolver | None = None,
    progress: ProgressCallback | None = None,
    paris: bool = False,
    flow: int | None = None,
    **options: Unpack[TraceOptions],
) -> TraceResult:
    """Blocking :func:`brokerpkg.trace.traceroute`: the same arguments (but
    ``session``), the same result and errors.  Reverse names (``resolve_names``) are
    looked up at the end, each for at most the resolver's timeout (2 s); with a
    ``name_resolver`` of your own (asynchronous) the trace runs on asyncio."""
    _refuse_session("traceroute", session)
    refuse_unknown_options("traceroute", options, TraceOptions.__optional_keys__)
    if name_resolver is not None:
        traced: TraceResult = _on_asyncio("traceroute")(
            host,
            first_ttl,
            max_ttl,
            probes_per_hop,
            timeout,
            wait=wait,
            retries=retries,
            helper=helper,
            resolve_names=resolve_names,
            name_resolver=name_resolver,
            progress=progress,
            paris=paris,
            flow=flow,
            **options,
        )
        return traced
    _check_ttls(first_ttl, max_ttl, probes_per_hop)
    flow = paris_flow(paris, flow)
    patience = _check_wait(wait, timeout)
    plan = TracePlan(first_ttl, max_ttl, probes_per_hop, patience, check_retries(retries))
    settings = probe_settings(timeout=patience.max, flow=flow, **options)
    with BlockingSession(helper) as own:
        address = own.resolve(host, options.get("family"))
        arguments = settings.arguments(address)
        templates = {
            ttl: own.template(address, wire.make_probe_options(**{**arguments, "ttl": ttl}))
            for ttl in range(first_ttl, max_ttl + 1)
        }
        protocol_name = settings.options.protocol or wire.DEFAULT_PROTOCOL
        probe_port = wire.effective_port(settings.options)

        def given_up(ttl: int) -> ProbeResult:
            return ProbeResult(
                False, wire.NO_REPLY, None, None, [], address, ttl, protocol_name, probe_port
            )

        total = (max_ttl - first_ttl + 1) * probes_per_hop
        slots = _trace_probes(
            own, host, plan, templates, given_up, ProgressCounter(progress, total)
        )
    names: dict[str, str | None] = {}
    if resolve_names:
        names = names_now(
            probe.responder
            for results in slots.values()
            for probe in (*results.probes, *results.retries)
            if probe.responder is not None
        )
    hops = tuple(
        make_hop(ttl, slots[ttl].probes, names, slots[ttl].retries) for ttl in sorted(slots)
    )
    return TraceResult(host, address, hops, first_ttl, max_ttl, protocol_name, flow)


def _trace_probes(
    session: BlockingSession,
    host: str,
    plan: TracePlan,
    templates: dict[int, ProbeTemplate],
    given_up: Callable[[int], ProbeResult],
    progress: ProgressCounter,
) -> dict[int, Any]:
    """Send the probes ``plan`` asks for and give them up when it says (as
    :func:`brokerpkg.trace._trace_probes` does on asyncio); the results of the TTLs up
    to the end of the path."""
    slots = {ttl: _Slots(plan.probes_per_hop) for ttl in range(plan.first_ttl, plan.max_ttl + 1)}
    running: dict[Try, Request] = {}
    tries: dict[Request, Try] = {}

    def launch(probes: Iterable[Try]) -> None:
        for probe in probes:
            request = session.start(templates[probe.ttl])
            running[probe] = request
            tries[request] = probe

    def cancel(probes: Iterable[Try]) -> None:
        session.give_up(request for probe in probes if (request := running.pop(probe, None)))

    def finish(probe: Try, result: ProbeResult) -> None:
        slots[probe.ttl].record(probe.slot, result)
        progress.report(host, probe.slot, result)

    try:
        launch(plan.start(time.monotonic()))
        while not plan.finished:
            for request in session.wait(plan.next_event()):
                probe = tries.pop(request)
                if running.pop(probe, None) is None:
                    continue  # given up meanwhile
                result = session.result(request)
                answer = classify(result)  # raises for local failures
                if answer is Answer.NO_REPLY:
                    plan.lost(probe)
                else:
                    ends = answer in TERMINAL_ANSWERS
                    cancel(plan.answered(probe, time.monotonic(), ends_path=ends))
                if probe.ttl <= plan.end:
                    finish(probe, result)
            now = time.monotonic()
            expired = plan.expired(now)
            cancel(expired)
            for probe in expired:
                finish(probe, given_up(probe.ttl))
            further = plan.due(now)
            progress.total += len(further)
            launch(further)
    except BaseException:
        session.give_up(running.values())
        raise
    return {ttl: slots[ttl].done() for ttl in range(plan.first_ttl, plan.end + 1)}


# ----------------------------------------------------------------------------- on asyncio

_ASYNC_HOMES = {
    "monitor": "mtr",
    "monitor_flows": "mtr",
    "multipath_trace": "multipath",
    "traceroute": "trace",
}
"""The module of each async function run here with asyncio.run (imported on use)."""


def _on_asyncio(name: str) -> Callable[..., Any]:
    """A blocking form of the async function ``NAME``: asyncio.run of it.

    The returned function raises RuntimeError inside a running event loop, TypeError
    for a session argument, and what the async function raises.
    """
    import asyncio

    function = getattr(importlib.import_module(f"{__package__}.{_ASYNC_HOMES[name]}"), name)

    def run(*args: Any, **kwargs: Any) -> Any:
        _refuse_session(name, kwargs.get("session"))
        return asyncio.run(function(*args, **kwargs))

    return run


def _collected(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """Every report the async generator ``NAME`` yields, for its ``cycles`` (required:
    an endless iteration would never return); raises ValueError without them."""
    import asyncio
    import inspect

    _refuse_session(name, kwargs.get("session"))
    function = getattr(importlib.import_module(f"{__package__}.{_ASYNC_HOMES[name]}"), name)
    if inspect.signature(function).bind(*args, **kwargs).arguments.get("cycles") is None:
        raise ValueError(f"brokerpkg.sync.{name}() needs cycles (it returns a list)")

    async def collect() -> list[Any]:
        return [item async for item in function(*args, **kwargs)]

    return asyncio.run(collect())


def monitor(*args: Any, **kwargs: Any) -> list[MonitorReport]:
    """Blocking :func:`brokerpkg.mtr.monitor` for a number of cycles (``cycles`` is
    required): the list of its reports.  The same arguments but ``session``."""
    return _collected("monitor", args, kwargs)


def monitor_flows(*args: Any, **kwargs: Any) -> list[FlowsReport]:
    """Blocking :func:`brokerpkg.mtr.monitor_flows` for a number of cycles (``cycles``
    is required): the list of its reports.  The same arguments but ``session``."""
    return _collected("monitor_flows", args, kwargs)


def multipath_trace(*args: Any, **kwargs: Any) -> MultipathResult:
    """Blocking :func:`brokerpkg.multipath.multipath_trace`: the same arguments but
    ``session``, the same result and errors."""
    result: MultipathResult = _on_asyncio("multipath_trace")(*args, **kwargs)
    return result
