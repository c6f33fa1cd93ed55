"""ping and multiping.

:func:`ping` sends ``count`` probes to one host, one every ``interval`` seconds without
waiting for earlier answers (as ping and fping do: a ping lasts about ``(count - 1) *
interval`` plus one round trip, not ``count * timeout``), and returns a
:class:`PingResult` that computes its statistics (:mod:`brokerpkg.stats`) from the raw
results.  :func:`multiping` pings many hosts through one helper with a bound on how many
run at once and returns results in input order; :func:`multiping_iter` yields each
host's result as soon as it is complete.

Any protocol (icmp, udp, tcp, sctp), IPv4 or IPv6, the probe options of
:class:`~brokerpkg.options.PingOptions`.  Each function uses the open ``session`` it is
given, or opens its own (the helper found by :func:`~brokerpkg.locate.locate_helper`, or
``helper``).

Errors, split as icmplib splits them (:mod:`brokerpkg.answers`):

- answers from the network are results: a probe that got "destination unreachable" or
  "time exceeded" is recorded, and :meth:`PingResult.raise_for_status` turns it into a
  :class:`NetworkError` (:class:`DestinationUnreachable`, :class:`TimeExceeded`, or
  :class:`NoReplyError` when nothing answered);
- local failures are raised at once: TypeError/ValueError for bad arguments (before
  anything is sent), :class:`~brokerpkg.errors.HostResolveError`, the session's errors
  (:class:`~brokerpkg.errors.ProcessError` and subclasses, StateError,
  InvalidProbeError), and :class:`ProbeSendError` (an OSError) when the kernel refused
  to send a probe.  The other probes of the call are then cancelled.

The answers' names (:class:`Answer`, :func:`classify`, :func:`raise_for_probe`,
:func:`probe_to_dict`), the progress events and the errors are importable from here too,
as they always were.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Any, Unpack

from .answers import Answer, classify, probe_to_dict, raise_for_probe
from .defaults import DEFAULT_CONCURRENCY
from .errors import (
    DestinationUnreachable,
    NetworkError,
    NoReplyError,
    ProbeSendError,
    TimeExceeded,
)
from .options import (
    PingOptions,
    check_int,
    check_ping,
    host_list,
    probe_settings,
    refuse_unknown_options,
)
from .protocol import ProbeResult
from .results import PingResult, ProgressCallback, ProgressCounter, ProgressEvent
from .session import Session
from .tasks import TaskGroup, resolve_address, resolve_addresses, session_scope

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

# ----------------------------------------------------------------------------- ping


async def _ping_address(
    session: Session,
    host: str,
    address: str,
    count: int,
    interval: float,
    arguments: Mapping[str, Any],
    progress: ProgressCounter,
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


async def ping(
    host: str,
    count: int = 4,
    interval: float = 1.0,
    timeout: float = 2.0,  # noqa: ASYNC109 - each probe's own timeout, sent to the helper
    *,
    session: Session | None = None,
    helper: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    **options: Unpack[PingOptions],
) -> PingResult:
    """Ping ``host``: ``count`` probes, one every ``interval`` seconds, each waiting at
    most ``timeout`` seconds for its answer; return a :class:`PingResult`.

    Probes do not wait for each other: the call lasts about ``(count - 1) * interval``
    plus the last answer's round trip (or ``timeout``).  ``session`` is an open Session
    to use; without it one is opened on ``helper`` (default: search) and closed after.
    The probe options are those of :class:`~brokerpkg.options.PingOptions` (``family``,
    ``protocol``, ``port``, ``ttl``, ``size`` or ``payload_size``, ``bit_pattern``,
    ``tos``, ``mark``, ``local_ip``, ``local_port``, ``local_device``, ``details``).
    ``progress`` is called with a :class:`ProgressEvent` as each probe finishes.

    Network answers (unreachable, time exceeded, no reply) are results: see
    :meth:`PingResult.raise_for_status`.

    Raises TypeError/ValueError for bad arguments (before anything is sent),
    HostResolveError, ProbeSendError when the kernel refuses to send a probe, and the
    session's errors (ProcessError and subclasses, StateError, InvalidProbeError,
    FeatureNotSupportedError); the remaining probes are then cancelled.
    """
    refuse_unknown_options("ping", options, PingOptions.__optional_keys__)
    count, interval = check_ping(count, interval, timeout)
    settings = probe_settings(timeout=timeout, **options)
    async with session_scope(session, helper) as open_session:
        address = await resolve_address(open_session, host, options.get("family"))
        return await _ping_address(
            open_session,
            host,
            address,
            count,
            interval,
            settings.arguments(address),
            ProgressCounter(progress, count),
        )


async def _multiping_indexed(
    hosts: Iterable[str],
    count: int,
    interval: float,
    timeout: float,  # noqa: ASYNC109 - each probe's own timeout, sent to the helper
    concurrency: int,
    session: Session | None,
    helper: str | os.PathLike[str] | None,
    progress: ProgressCallback | None,
    options: PingOptions,
) -> AsyncGenerator[tuple[int, PingResult], None]:
    """Ping every host; yield (input index, result) as each completes."""
    names = host_list(hosts)
    count, interval = check_ping(count, interval, timeout)
    concurrency = check_int("concurrency", concurrency, 1)
    settings = probe_settings(timeout=timeout, **options)
    if not names:
        return
    async with session_scope(session, helper) as open_session:
        family = options.get("family")
        addresses = await resolve_addresses(open_session, names, family, concurrency)
        arguments = [settings.arguments(address) for address in addresses]
        counter = ProgressCounter(progress, count * len(names))
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
    progress: ProgressCallback | None = None,
    **options: Unpack[PingOptions],
) -> list[PingResult]:
    """Ping every host of ``hosts`` through one helper; return the results in input
    order (defaults as icmplib's multiping: count 2, interval 0.5 s, 50 at once).

    Each host is pinged as :func:`ping` does (with the same probe options); at most
    ``concurrency`` hosts are pinged at once.  All host names are resolved first, so a
    name that does not resolve fails the call before any probe is sent.  ``progress``
    gets one event per probe, counted over all hosts.

    Raises like :func:`ping` (ValueError also for concurrency < 1, TypeError for
    ``hosts`` given as one str instead of a collection of names); any error cancels the
    pings still running.
    """
    refuse_unknown_options("multiping", options, PingOptions.__optional_keys__)
    names = host_list(hosts)
    results: list[PingResult | None] = [None] * len(names)
    stream = _multiping_indexed(
        names, count, interval, timeout, concurrency, session, helper, progress, options
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
    progress: ProgressCallback | None = None,
    **options: Unpack[PingOptions],
) -> AsyncGenerator[PingResult, None]:
    """Like :func:`multiping`, but yield each host's PingResult as soon as it is
    complete (completion order; ``result.host`` says which host it is).

    Errors are raised by the iteration.  To stop early and cancel the pings still
    running at once, close the iterator: ``async with contextlib.aclosing(
    multiping_iter(...)) as results: async for result in results: ...``.
    """
    refuse_unknown_options("multiping_iter", options, PingOptions.__optional_keys__)
    stream = _multiping_indexed(
        hosts, count, interval, timeout, concurrency, session, helper, progress, options
    )
    async with contextlib.aclosing(stream):
        async for _, result in stream:
            yield result
