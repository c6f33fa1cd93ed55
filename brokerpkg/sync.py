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
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Unpack

from . import protocol as wire
from .blocking import BlockingSession
from .blocking_ping import Pinging, Report, run_pings
from .blocking_trace import trace_on
from .defaults import DEFAULT_CONCURRENCY
from .options import (
    PingOptions,
    TraceOptions,
    check_int,
    check_ping,
    host_list,
    paris_flow,
    probe_settings,
    refuse_unknown_options,
)
from .protocol import ProbeResult
from .results import (
    PingResult,
    ProgressCallback,
    ProgressCounter,
    TraceResult,
)
from .waiting import DEFAULT_RETRIES, Wait, check_retries, check_ttls, check_wait

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


def _counting(progress: ProgressCounter) -> Report:
    """A report that counts each probe for the progress callback."""
    return lambda pinging, sequence, result: progress.report(pinging.host, sequence, result)


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
    count, interval = check_ping(count, interval, timeout)
    settings = probe_settings(timeout=timeout, **options)
    family = options.get("family")
    with BlockingSession(helper) as own:
        address = own.resolve(host, family)
        template = own.template(address, wire.make_probe_options(**settings.arguments(address)))
        pinging = Pinging(host, address, template, count, interval)
        run_pings(own, [pinging], 1, _counting(ProgressCounter(progress, count)))
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
    names = host_list(hosts)
    count, interval = check_ping(count, interval, timeout)
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
            pings.append(Pinging(name, address, template, count, interval))
        counter = ProgressCounter(progress, count * len(names))
        run_pings(own, pings, concurrency, _counting(counter))
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
    check_ttls(first_ttl, max_ttl, probes_per_hop)  # bad arguments fail before the helper runs
    probe_settings(timeout=check_wait(wait, timeout).max, flow=paris_flow(paris, flow), **options)
    check_retries(retries)
    with BlockingSession(helper) as own:
        return trace_on(
            own,
            host,
            first_ttl,
            max_ttl,
            probes_per_hop,
            timeout,
            wait=wait,
            retries=retries,
            resolve_names=resolve_names,
            progress=progress,
            paris=paris,
            flow=flow,
            **options,
        )


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
