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
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Unpack

from . import protocol as wire
from .options import (
    TraceOptions,
    paris_flow,
    probe_settings,
    refuse_unknown_options,
)
from .protocol import ProbeResult
from .resolve import NameResolver
from .results import (
    TERMINAL_ANSWERS,
    Hop,
    ProgressCallback,
    ProgressCounter,
    Responder,
    TraceResult,
    TraceRun,
    TtlResults,
    answering_addresses,
    given_up_result,
    make_hop,
    trace_result,
)
from .session import Session
from .tasks import TaskGroup, resolve_address, session_scope
from .waiting import DEFAULT_RETRIES, TracePlan, Try, Wait, check_retries, check_ttls, check_wait

__all__ = [
    "TERMINAL_ANSWERS",
    "Hop",
    "NameResolver",
    "Responder",
    "TraceResult",
    "make_hop",
    "names_for",
    "traceroute",
]

# ----------------------------------------------------------------------------- names


def names_for(session: Session) -> NameResolver:
    """The NameResolver of ``session`` (its :attr:`~Session.name_resolver`)."""
    return session.name_resolver


async def lookup_names(resolver: NameResolver, addresses: Iterable[str]) -> dict[str, str | None]:
    """Names of all ``addresses``, looked up concurrently."""
    unique = list(dict.fromkeys(addresses))
    names = await asyncio.gather(*(resolver.name(address) for address in unique))
    return dict(zip(unique, names, strict=True))


# ----------------------------------------------------------------------------- traceroute


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
    check_ttls(first_ttl, max_ttl, probes_per_hop)
    flow = paris_flow(paris, flow)
    patience = check_wait(wait, timeout)
    plan = TracePlan(first_ttl, max_ttl, probes_per_hop, patience, check_retries(retries))
    settings = probe_settings(timeout=patience.max, flow=flow, **options)
    if name_resolver is not None and not isinstance(name_resolver, NameResolver):
        raise TypeError("name_resolver must be a NameResolver")
    async with session_scope(session, helper) as open_session:
        address = await resolve_address(open_session, host, options.get("family"))
        arguments = settings.arguments(address)
        del arguments["ttl"]  # what the trace varies
        probes = await _trace_probes(
            open_session,
            host,
            address,
            plan,
            arguments,
            functools.partial(given_up_result, settings.options, address),
            ProgressCounter(progress, (max_ttl - first_ttl + 1) * probes_per_hop),
        )
        names: dict[str, str | None] = {}
        if resolve_names:
            resolver = name_resolver or names_for(open_session)
            names = await lookup_names(resolver, answering_addresses(probes))
    protocol_name = settings.options.protocol or wire.DEFAULT_PROTOCOL
    return trace_result(host, address, probes, names, first_ttl, max_ttl, protocol_name, flow)


async def _trace_probes(
    session: Session,
    host: str,
    address: str,
    plan: TracePlan,
    arguments: Mapping[str, Any],
    given_up: Callable[[int], ProbeResult],
    progress: ProgressCounter,
) -> dict[int, TtlResults]:
    """Send the probes ``plan`` asks for, give them up when it says; return the results
    of the TTLs up to the end of the path (all of them when it was not found).

    ``given_up(ttl)`` makes the result of a probe given up: no reply, as the helper's
    own would read at its timeout.
    """
    loop = asyncio.get_running_loop()
    running: dict[Try, asyncio.Task[None]] = {}

    def cancel(probes: Iterable[Try]) -> None:
        for probe in probes:
            task = running.pop(probe, None)
            if task is not None:
                task.cancel()

    async def one(probe: Try) -> None:
        result = await session.probe(address, ttl=probe.ttl, **arguments)
        running.pop(probe, None)
        run.record(probe, result, loop.time())

    async with TaskGroup[None]() as tasks:

        def launch(probes: Iterable[Try]) -> None:
            for probe in probes:
                running[probe] = tasks.start(one(probe))

        run = TraceRun(host, plan, given_up, progress, launch, cancel)
        run.start(loop.time())
        while not plan.finished:
            await tasks.wait_any(plan.next_event())
            run.wake(loop.time())
    return run.results()
