"""The subcommands that run on asyncio: ``mtr`` (its live view too), ``trace
--multipath``, every subcommand run from --from vantage points (over ssh, several at
once), and ``doctor``, ``setup`` and ``exporter``.  The one-shot subcommands on the local
helper run without an event loop (:mod:`brokerpkg.cli_blocking`); :mod:`brokerpkg.cli`
chooses.  Each subcommand imports its own tools.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .cli_args import (
    EXIT_ERROR,
    EXIT_NO_REPLY,
    EXIT_REPLY,
    MTR_JSON_INDENT,
    MTR_REPORT_CYCLES,
    _check_payload,
    _mtr_mode,
    _payload,
    _target_port,
    multiping_targets,
    probe_call,
    probe_options,
    read_targets,
    split_target,
    trace_options,
    traceroute_arguments,
)
from .cli_output import (
    _BLOCK,
    LOCAL_ERRORS,
    _Blocks,
    _BlockStream,
    _error_document,
    _mtr_json,
    _numeric_target,
    _print,
    _print_json,
    describe_error,
    print_multiping,
    print_probe,
    print_trace,
)
from .defaults import HELPER_NAME
from .protocol import DEFAULT_CONNECTED_PORT

if TYPE_CHECKING:
    from .mtr import FlowsReport, MonitorReport
    from .protocol import ProbeResult
    from .session import Session


def _has_details(session: Session) -> bool:
    """True if the helper gives reply details (reply TTL, ICMP code, size)."""
    return session.features.get("details") == "ok"


def _session(args: argparse.Namespace) -> Session:
    """The session of a subcommand: the local helper (--helper, or found), or the one
    on the --from vantage point this run serves (``args.vantage``) over ssh."""
    from .session import Session

    vantage_point = getattr(args, "vantage", None)
    if vantage_point is None:
        return Session(args.helper)
    return Session.over_ssh(vantage_point, helper=args.remote_helper or HELPER_NAME)


class _Interrupts:
    """Ctrl-C for the runs of one command (one per vantage point): the calls of the
    runs that stop on it, and whether it came."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []
        self.interrupted = False

    def interrupt(self) -> None:
        self.interrupted = True
        for call in list(self.calls):
            call()


_INTERRUPTS = _Interrupts()


@contextlib.contextmanager
def _interrupt_calls(call: Callable[[], None]) -> Iterator[None]:
    """While in the block, Ctrl-C (SIGINT) calls ``call`` instead of raising
    KeyboardInterrupt.  Blocks may be entered at once (one per vantage point): Ctrl-C
    calls each, and one entered after it calls ``call`` at once."""
    loop = asyncio.get_running_loop()
    if not _INTERRUPTS.calls:
        loop.add_signal_handler(signal.SIGINT, _INTERRUPTS.interrupt)
    _INTERRUPTS.calls.append(call)
    if _INTERRUPTS.interrupted:
        call()
    try:
        yield
    finally:
        _INTERRUPTS.calls.remove(call)
        if not _INTERRUPTS.calls:
            loop.remove_signal_handler(signal.SIGINT)


# ----------------------------------------------------------------------------- probe


async def run_probe(args: argparse.Namespace) -> int:
    """``brokerpkg probe``: one probe, its result on one line (or JSON).

    A probe the host refused to send (no route, address not available, permission
    denied...) is a local error: classify raises ProbeSendError, and main exits 2.
    """
    host, arguments = probe_call(args)
    async with _session(args) as session:
        result = await session.probe(host, **arguments)
    return print_probe(args, result)


# ----------------------------------------------------------------------------- ping


class _Pinger:
    """ping's loop for one address: one probe every interval (until ``count``, or until
    ``stop`` is set), ``report(self, sequence, result)`` awaited as each one finishes
    (sequence from 0).  :meth:`run` returns once all are settled, or at the stop,
    cancelling the probes in flight: they count as sent (``sent``), not received."""

    def __init__(
        self,
        session: Session,
        host: str,
        address: str,
        args: argparse.Namespace,
        options: dict[str, Any],
        payload: int | None,
        stop: asyncio.Event,
        report: Callable[[_Pinger, int, ProbeResult], Awaitable[None]],
    ) -> None:
        self.session = session
        self.host = host
        self.address = address
        self.args = args
        self.options = options
        self.payload = payload
        self.stop = stop
        self.report = report
        self.details = _has_details(session)
        self.results: dict[int, ProbeResult] = {}
        self.sent = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _one(self, sequence: int) -> None:
        from .ping import ping

        result = await ping(
            self.address,
            count=1,
            timeout=self.args.timeout,
            session=self.session,
            family=self.args.ip_version,
            ttl=self.args.ttl,
            payload_size=self.payload,
            details=self.details,
            **self.options,
        )
        probe = result.probes[0]
        self.results[sequence] = probe
        await self.report(self, sequence, probe)

    async def _wait(self, until: float | None) -> None:
        """Wait for loop time ``until`` (None: every probe settled) or the stop; raise
        the first probe's error."""
        loop = asyncio.get_running_loop()
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            while not self.stop.is_set():
                if until is None and not self._tasks:
                    return
                delay = None if until is None else until - loop.time()
                if delay is not None and delay <= 0:
                    return
                done, _ = await asyncio.wait(
                    {*self._tasks, stopper}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done - {stopper}:
                    self._tasks.discard(task)
                    error = task.exception()
                    if error is not None:
                        raise error
        finally:
            stopper.cancel()

    async def run(self) -> None:
        """Send and wait; cancels what is in flight when stopped or failing."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        count = self.args.count
        try:
            while not self.stop.is_set() and (count is None or self.sent < count):
                self._tasks.add(asyncio.create_task(self._one(self.sent)))
                self.sent += 1
                if count is not None and self.sent == count:
                    break
                await self._wait(start + self.sent * self.args.interval)
            await self._wait(None)
        finally:
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks)

    def probes(self) -> tuple[ProbeResult, ...]:
        """The finished probes in sequence order."""
        return tuple(self.results[sequence] for sequence in sorted(self.results))


async def run_ping(args: argparse.Namespace) -> int:
    """``brokerpkg ping``: ping's lines, Ctrl-C ends early with the summary.

    As iputils ping, a target given by name (without -n) shows the names of the
    addresses that answer: ``64 bytes from localhost (127.0.0.1): ...``.
    """
    from . import cli_format as fmt
    from .options import probe_settings
    from .ping import PingResult
    from .resolve import NameResolver
    from .tasks import resolve_address

    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    protocol = options["protocol"] or "icmp"
    payload = _payload(args, protocol)
    probe_settings(
        family=args.ip_version, timeout=args.timeout, ttl=args.ttl, payload_size=payload, **options
    )  # refuse bad options before the header
    quiet = args.quiet or args.json
    look_up_names = not (args.numeric or _numeric_target(host))
    names: NameResolver | None = None  # the session's (the vantage point's names there)

    async def shown(address: str | None) -> str | None:
        """``name (address)`` when names are looked up and one differs, else ``address``."""
        if names is None or address is None:
            return address
        return fmt.named(address, await names.name(address))

    async def report(pinger: _Pinger, sequence: int, probe: ProbeResult) -> None:
        if not quiet:
            line = fmt.ping_reply_line(probe, sequence + 1, await shown(probe.responder))
            if line is not None:
                _print(line)

    async with _session(args) as session:
        if look_up_names:
            names = session.name_resolver
        address = await resolve_address(session, host, args.ip_version)
        _check_payload(payload, address)
        if not args.json:  # ping -q still prints its first line
            port = options["port"] or (
                None if protocol in ("icmp", "udp") else DEFAULT_CONNECTED_PORT
            )
            # iputils names the address in the IPv6 header only
            target = await shown(address) if ":" in address else address
            _print(fmt.ping_header(host, address, protocol, payload, port, shown=target))
        stop = asyncio.Event()
        pinger = _Pinger(session, host, address, args, options, payload, stop, report)
        began = time.monotonic()
        with _interrupt_calls(stop.set):
            await pinger.run()
        elapsed_ms = (time.monotonic() - began) * 1000
    probes = pinger.probes()
    if args.json:
        document = PingResult(host, address, probes).to_dict()
        document["transmitted"] = pinger.sent
        _print_json(document)
    else:
        _print("", *fmt.ping_summary(host, pinger.sent, probes, elapsed_ms))
    return EXIT_REPLY if any(probe.success for probe in probes) else EXIT_NO_REPLY


# ----------------------------------------------------------------------------- multiping


async def _ping_all(pingers: Sequence[_Pinger], concurrency: int, done: Callable[[], None]) -> None:
    """Run the pingers, at most ``concurrency`` at once in input order, ``done()`` after
    each; once they are stopped, those still waiting for their turn send nothing.
    The first error cancels the others and is raised."""
    from .tasks import TaskGroup

    slots = asyncio.Semaphore(concurrency)

    async def one(pinger: _Pinger) -> None:
        async with slots:
            if not pinger.stop.is_set():
                await pinger.run()
        done()

    async with TaskGroup[None]() as tasks:
        for pinger in pingers:
            tasks.start(one(pinger))
        await tasks.wait_all()


async def run_multiping(args: argparse.Namespace) -> int:
    """``brokerpkg multiping``: fping's lines, summaries in input order.

    Ctrl-C ends it as it ends fping: no more probes, then the summaries of what was
    sent (probes in flight count as sent, not received) and the usual exit status.
    """
    from . import cli_format as fmt
    from .cli_terminal import ProgressLine
    from .ping import PingResult
    from .tasks import resolve_addresses

    hosts, options, payload = multiping_targets(args)
    quiet = args.quiet or args.json
    width = max(len(host) for host in hosts)
    progress = ProgressLine(sys.stderr, len(hosts))
    if _BLOCK.get() is not None:
        progress.finish()  # several vantage points at once: no progress line to share

    async def report(pinger: _Pinger, sequence: int, result: ProbeResult) -> None:
        if quiet:
            return
        line = fmt.fping_reply_line(pinger.host, width, sequence, result, pinger.results)
        if line is not None:
            progress.clear()
            _print(line)
            progress.update(progress.done)

    stop = asyncio.Event()
    try:
        with _interrupt_calls(stop.set):  # from here on Ctrl-C ends in summaries
            async with _session(args) as session:
                addresses = await resolve_addresses(
                    session, hosts, args.ip_version, args.concurrency
                )
                for address in addresses:
                    _check_payload(payload, address)
                pingers = [
                    _Pinger(session, host, address, args, options, payload, stop, report)
                    for host, address in zip(hosts, addresses, strict=True)
                ]
                await _ping_all(
                    pingers, args.concurrency, lambda: progress.update(progress.done + 1)
                )
    finally:
        progress.finish()
    results = [PingResult(pinger.host, pinger.address, pinger.probes()) for pinger in pingers]
    return print_multiping(args, results, [pinger.sent for pinger in pingers], width, quiet)


# ----------------------------------------------------------------------------- trace


async def run_trace(args: argparse.Namespace) -> int:
    """``brokerpkg trace``: traceroute's lines (or JSON) once every hop is settled."""
    from .trace import traceroute

    host, options = trace_options(args)
    if args.multipath:
        return await run_multipath(args, host, options)
    async with _session(args) as session:
        trace = await traceroute(
            host,
            session=session,
            details=_has_details(session),
            **traceroute_arguments(args, options),
        )
    return print_trace(args, trace)


def _multipath_wait(args: argparse.Namespace) -> float:
    """Each probe's wait in a multipath trace: -Z, -w MAX, else 2 seconds."""
    from .multipath import DEFAULT_TIMEOUT

    if args.timeout is not None:
        return float(args.timeout)
    return DEFAULT_TIMEOUT if args.wait is None else args.wait.max


async def run_multipath(args: argparse.Namespace, host: str, options: dict[str, Any]) -> int:
    """``brokerpkg trace --multipath``: scamper tracelb's text, JSON or Graphviz."""
    from . import mda, multipath

    del options["local_port"]  # refused: the flows choose the ports
    async with _session(args) as session:
        result = await multipath.multipath_trace(
            host,
            first_ttl=args.first_ttl,
            max_ttl=args.max_ttl,
            timeout=_multipath_wait(args),
            confidence=args.confidence or mda.DEFAULT_CONFIDENCE,
            attempts=args.attempts or mda.DEFAULT_ATTEMPTS,
            gap_limit=args.gap_limit or mda.DEFAULT_GAP_LIMIT,
            max_probes=args.max_probes or mda.DEFAULT_MAX_PROBES,
            rate=args.rate or multipath.DEFAULT_RATE,
            deadline=args.deadline or multipath.DEFAULT_DEADLINE,
            session=session,
            family=args.ip_version,
            size=args.size,
            details=_has_details(session),
            resolve_names=not args.numeric,
            **options,
        )
    if args.json:
        _print_json(result.to_dict())
    elif args.dot:
        _print(*multipath.dot_lines(result))
    else:
        _print(*multipath.tracelb_lines(result, show_mpls=args.mpls))
    return EXIT_REPLY if result.reached else EXIT_NO_REPLY


# ----------------------------------------------------------------------------- mtr


async def run_mtr(args: argparse.Namespace) -> int:
    """``brokerpkg mtr``: mtr's report, JSON, CSV, or the live view."""
    from datetime import UTC, datetime

    from . import cli_format as fmt
    from .mtr import monitor, monitor_flows
    from .tasks import resolve_address

    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    mode = _mtr_mode(args)
    cycles = (
        args.count if args.count is not None else (None if mode == "live" else MTR_REPORT_CYCLES)
    )
    if args.flows is not None and args.flows > 1 and args.localport is not None:
        raise ValueError("-L does not apply to --flows (the flows choose the ports)")
    started = datetime.now(UTC).astimezone()
    async with _session(args) as session:
        # together: on a vantage point both are asked with one lookup command
        address, local_host = await asyncio.gather(
            resolve_address(session, host, args.ip_version), session.host_name()
        )
        settings: dict[str, Any] = {
            "first_ttl": args.first_ttl,
            "max_ttl": args.max_ttl,
            "max_unknown": args.max_unknown,
            "timeout": args.timeout,
            "grace": args.gracetime,
            "retries": args.retries,
            "session": session,
            "family": args.ip_version,
            "size": args.size,
            "resolve_names": not args.numeric,
            **options,
        }
        reports: AsyncGenerator[MonitorReport | FlowsReport, None]
        if args.flows is not None and args.flows > 1:
            del settings["local_port"]
            reports = monitor_flows(host, args.flows, cycles, args.interval, **settings)
        else:
            paris = args.paris or args.flows is not None
            reports = monitor(host, cycles, args.interval, paris=paris, **settings)
        if mode == "live":
            final = await _live_view(args, reports, address, cycles, local_host)
        else:
            final = None
            async with contextlib.aclosing(reports):
                async for report in reports:
                    final = report
    if mode == "json":
        _print_json(_mtr_json(args, final, local_host), MTR_JSON_INDENT)
    elif mode == "csv" and final is not None:
        _print(
            *fmt.mtr_csv_lines(
                final,
                target=args.target,
                started=int(started.timestamp()),
                numeric=args.numeric,
                show_ips=args.show_ips,
            )
        )
    elif mode == "report" and final is not None:
        _print(
            *fmt.mtr_report_lines(
                final,
                local_host=local_host,
                started=started,
                wide=args.wide,
                numeric=args.numeric,
                show_ips=args.show_ips,
                show_mpls=args.mpls,
            )
        )
    return EXIT_REPLY if final is not None and final.reached else EXIT_NO_REPLY


async def _live_view(
    args: argparse.Namespace,
    reports: AsyncGenerator[MonitorReport | FlowsReport, None],
    address: str,
    cycles: int | None,
    local_host: str,
) -> MonitorReport | FlowsReport | None:
    """Run the live view until the cycles end or the user quits; the last report."""
    from datetime import UTC, datetime

    from . import cli_format as fmt
    from .cli_terminal import Screen, run_screen

    def render(report: MonitorReport | FlowsReport | None, size: os.terminal_size) -> list[str]:
        return fmt.mtr_screen_lines(
            report,
            local_host=local_host,
            target=args.target,
            address=address,
            now=datetime.now(UTC).astimezone(),
            width=size.columns,
            height=size.lines,
            numeric=args.numeric,
            show_ips=args.show_ips,
            show_mpls=args.mpls,
            cycles=cycles,
        )

    with Screen(sys.stdout, sys.stdin) as screen:
        return await run_screen(screen, reports, render)


# ----------------------------------------------------------------------------- running

Runner = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
P = ParamSpec("P")
T = TypeVar("T")
_Job = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs the event loop's blocking calls (getaddrinfo, getnameinfo) on at most
    ``workers`` daemon threads, and never waits for them on shutdown.

    The system resolver may sit on a reverse lookup for 10 s and more after the
    library has given up on it (2 s); with the default executor the command would
    wait for that thread before exiting.  A daemon thread is simply left behind.
    It subclasses ThreadPoolExecutor only because ``loop.set_default_executor``
    insists on one; none of that class's machinery is used.
    """

    def __init__(self, workers: int = 16) -> None:
        super().__init__(max_workers=1)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._daemons: list[threading.Thread] = []
        self._workers = workers

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((future, fn, args, kwargs))
        if len(self._daemons) < self._workers:
            thread = threading.Thread(target=self._work, name="brokerpkg-lookup", daemon=True)
            thread.start()
            self._daemons.append(thread)
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:  # handed to the waiting coroutine
                future.set_exception(error)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let idle workers end; never waits (``wait`` is ignored: daemon threads)."""
        for _ in self._daemons:
            self._jobs.put(None)


async def _run(runner: Runner, args: argparse.Namespace) -> int:
    """Run a subcommand with name lookups on daemon threads (see DaemonExecutor): here,
    on the one --from vantage point (its output as the command prints it there), or on
    several at once (:func:`_run_from_several`)."""
    asyncio.get_running_loop().set_default_executor(DaemonExecutor())
    _INTERRUPTS.interrupted = False
    vantage_points = getattr(args, "vantage_points", None) or []
    args.vantage = vantage_points[0] if len(vantage_points) == 1 else None
    if len(vantage_points) > 1:
        return await _run_from_several(runner, args, vantage_points)
    return await runner(args)


async def _run_from_several(
    runner: Runner, args: argparse.Namespace, vantage_points: Sequence[str]
) -> int:
    """Run the subcommand on every vantage point at once, each one's output under its
    heading in --from order (:class:`_Blocks`; with -j one JSON object keyed by vantage
    point).  A vantage point's local error is said on standard error (naming it) and,
    with -j, is its document.  Returns the worst exit status (2 over 1 over 0).

    Raises OSError, ValueError when multiping's targets cannot be read (once, for all).
    """
    if args.command == "multiping":  # read once: -f - (standard input) cannot be read twice
        args = argparse.Namespace(**{**vars(args), "targets": read_targets(args), "file": None})
    blocks = _Blocks(vantage_points, headings=not args.json)

    async def one(index: int, vantage_point: str) -> int:
        mine = argparse.Namespace(**{**vars(args), "vantage": vantage_point})
        _BLOCK.set(_BlockStream(blocks, index))  # this task's context only
        try:
            return await runner(mine)
        except LOCAL_ERRORS as error:
            message = describe_error(error)
            if vantage_point not in message:
                message = f"from {vantage_point}: {message}"
            print(f"brokerpkg {args.command}: {message}", file=sys.stderr)
            if args.json:
                _print_json(_error_document(mine, message))
            return EXIT_ERROR
        finally:
            blocks.finish(index)

    statuses = await asyncio.gather(*(one(i, point) for i, point in enumerate(vantage_points)))
    if args.json:
        indent = MTR_JSON_INDENT if args.command == "mtr" else 2
        documents = blocks.documents
        _print_json({name: documents[name] for name in vantage_points if name in documents}, indent)
    return max(statuses)


def _runner(command: str) -> Runner:
    """The coroutine function that runs ``command`` (doctor's and setup's are imported
    only for them)."""
    if command == "doctor":
        from .cli_doctor import run_doctor

        return run_doctor
    if command == "setup":
        from .cli_setup import run_setup

        return run_setup

    if command == "exporter":
        from .cli_exporter import run_exporter

        return run_exporter
    runners: dict[str, Runner] = {
        "probe": run_probe,
        "ping": run_ping,
        "multiping": run_multiping,
        "trace": run_trace,
        "mtr": run_mtr,
    }
    return runners[command]


def run(args: argparse.Namespace) -> int:
    """Run the parsed command line's subcommand in a new event loop; its exit status.

    Raises what the subcommand raises (LOCAL_ERRORS, KeyboardInterrupt, BrokenPipeError:
    :func:`brokerpkg.cli.main` reports them).
    """
    return asyncio.run(_run(_runner(args.command), args))
