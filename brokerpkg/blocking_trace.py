"""traceroute on a :class:`~brokerpkg.blocking.BlockingSession`: :func:`trace_on`, the
body of :func:`brokerpkg.sync.traceroute` and of the command line's trace.  The plan is
:class:`~brokerpkg.waiting.TracePlan`'s, the results :mod:`brokerpkg.results`', as for
the asyncio traceroute.  No asyncio.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Unpack

from . import protocol as wire
from .addresses import names_now
from .blocking import BlockingSession
from .engine import ProbeTemplate, Request
from .options import TraceOptions, paris_flow, probe_settings, refuse_unknown_options
from .protocol import ProbeResult
from .results import (
    ProgressCallback,
    ProgressCounter,
    TraceResult,
    TraceRun,
    TtlResults,
    answering_addresses,
    given_up_result,
    trace_result,
)
from .waiting import DEFAULT_RETRIES, TracePlan, Try, Wait, check_retries, check_ttls, check_wait

__all__ = ["trace_on"]


def trace_on(
    session: BlockingSession,
    host: str,
    first_ttl: int = 1,
    max_ttl: int = 30,
    probes_per_hop: int = 3,
    timeout: float | None = None,
    *,
    wait: Wait | str | float | Sequence[float] | None = None,
    retries: int = DEFAULT_RETRIES,
    resolve_names: bool = False,
    progress: ProgressCallback | None = None,
    paris: bool = False,
    flow: int | None = None,
    **options: Unpack[TraceOptions],
) -> TraceResult:
    """:func:`brokerpkg.sync.traceroute` on an open BlockingSession (the command line's
    trace asks the helper's features first); raises like it."""
    refuse_unknown_options("traceroute", options, TraceOptions.__optional_keys__)
    check_ttls(first_ttl, max_ttl, probes_per_hop)
    flow = paris_flow(paris, flow)
    patience = check_wait(wait, timeout)
    plan = TracePlan(first_ttl, max_ttl, probes_per_hop, patience, check_retries(retries))
    settings = probe_settings(timeout=patience.max, flow=flow, **options)
    address = session.resolve(host, options.get("family"))
    arguments = settings.arguments(address)
    templates = {
        ttl: session.template(address, wire.make_probe_options(**{**arguments, "ttl": ttl}))
        for ttl in range(first_ttl, max_ttl + 1)
    }
    given_up = functools.partial(given_up_result, settings.options, address)
    total = (max_ttl - first_ttl + 1) * probes_per_hop
    counter = ProgressCounter(progress, total)
    slots = _trace_probes(session, host, plan, templates, given_up, counter)
    names = names_now(answering_addresses(slots)) if resolve_names else {}
    protocol_name = settings.options.protocol or wire.DEFAULT_PROTOCOL
    return trace_result(host, address, slots, names, first_ttl, max_ttl, protocol_name, flow)


def _trace_probes(
    session: BlockingSession,
    host: str,
    plan: TracePlan,
    templates: dict[int, ProbeTemplate],
    given_up: Callable[[int], ProbeResult],
    progress: ProgressCounter,
) -> dict[int, TtlResults]:
    """Send the probes ``plan`` asks for and give them up when it says (a
    :class:`~brokerpkg.results.TraceRun`, as brokerpkg.trace's traceroute runs on
    asyncio); the results of the TTLs up to the end of the path."""
    running: dict[Try, Request] = {}
    tries: dict[Request, Try] = {}

    def launch(probes: Iterable[Try]) -> None:
        for probe in probes:
            request = session.start(templates[probe.ttl])
            running[probe] = request
            tries[request] = probe

    def cancel(probes: Iterable[Try]) -> None:
        session.give_up(request for probe in probes if (request := running.pop(probe, None)))

    run = TraceRun(host, plan, given_up, progress, launch, cancel)
    try:
        run.start(time.monotonic())
        while not plan.finished:
            for request in session.wait(plan.next_event()):
                probe = tries.pop(request)
                if running.pop(probe, None) is None:
                    continue  # given up meanwhile
                run.record(probe, session.result(request), time.monotonic())
            run.wake(time.monotonic())
    except BaseException:
        session.give_up(running.values())
        raise
    return run.results()
