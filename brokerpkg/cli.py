"""The ``brokerpkg`` command (also ``python3 -m brokerpkg``): the only code that prints.

Subcommands: ``probe`` (one probe), ``ping`` (iputils ping's conventions),
``multiping`` (fping's), ``trace`` (traceroute's output, mtr's flags), ``mtr`` (mtr's
flags, report, JSON, CSV and live view) and ``doctor`` (which helper, what it can do,
how to fix what it cannot).  man/brokerpkg.1 documents every flag and layout; the
layouts themselves are pure functions in :mod:`brokerpkg.cli_format`, the terminal
handling is in :mod:`brokerpkg.cli_terminal`.

Exit status: 0 when the target answered (multiping: every target), 1 when it did not,
2 for usage errors and local errors (bad option, helper missing or without privilege,
unresolvable host, a probe the kernel refused), with a one-line message on standard
error; with ``-j`` standard output still carries a JSON document, with an ``error`` key.
130 after Ctrl-C, except where Ctrl-C is the normal way to stop (ping without ``-c``,
the live view), which end as they would have.

Start-up time counts for a command (a trace takes a few milliseconds; Python's imports
took many times that): this module imports only what parsing the arguments and
reporting errors need, and each subcommand imports its own tools (the trace command
never loads the monitor, the terminal code or the doctor).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import math
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

from ._version import __version__
from .defaults import MTR_GRACE, MTR_MAX_UNKNOWN, MTR_TIMEOUT
from .errors import (
    FeatureNotSupportedError,
    HelperNotFoundError,
    HostResolveError,
    ProcessError,
    StateError,
)
from .locate import ENVIRONMENT_VARIABLE
from .protocol import DEFAULT_CONNECTED_PORT, PROTOCOLS

if TYPE_CHECKING:
    from .mtr import MonitorReport
    from .ping import ProgressEvent
    from .protocol import ProbeResult
    from .session import Session

EXIT_REPLY = 0
EXIT_NO_REPLY = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

DEFAULT_PACKET_SIZE = 64
"""The helper's (and mtr-packet's) packet size when -s is not given."""
PING_PAYLOAD = 56
"""ping's default payload (-s): 64-byte ICMP messages."""
MTR_REPORT_CYCLES = 10
"""mtr's default -c in report mode."""
MTR_JSON_INDENT = 4
"""mtr -j indents by 4."""

LOCAL_ERRORS = (ValueError, TypeError, HostResolveError, ProcessError, StateError, OSError)
"""Errors that end a command with status 2 and a one-line message."""


# ----------------------------------------------------------------------------- arguments


class UsageError(Exception):
    """A command line that argparse refused; ``usage`` is the subcommand's usage text."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of exiting (main prints it)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message}", self.format_usage())


def _integer(text: str) -> int:
    """A decimal integer (digits only, as the helper's protocol)."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a decimal integer: {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    """A finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text!r}")
    return value


def _byte(text: str) -> int:
    """0-255, decimal or 0x hexadecimal (mtr's -B and -Q take both)."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else _integer(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"must be from 0 to 255: {text!r}")
    return value


def split_target(text: str) -> tuple[str, int | None]:
    """Split ``HOST``, ``HOST:PORT``, ``[IPV6]:PORT``, ``[IPV6]`` or a bare IPv6
    address into (host, port or None).

    Raises ValueError for an empty host, an unbalanced bracket or a bad port.
    """
    host, port_text = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or (close + 1 < len(text) and text[close + 1] != ":"):
            raise ValueError(f"bad target {text!r}: write [IPV6] or [IPV6]:PORT")
        host = text[1:close]
        if close + 1 < len(text):
            port_text = text[close + 2 :]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ValueError(f"bad target {text!r}: no host")
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError(f"bad port in target {text!r}: give 1-65535")
    return host, int(port_text)


def _target_port(target_port: int | None, option_port: int | None) -> int | None:
    """The port of HOST:PORT or -P (both: they must agree); raises ValueError."""
    if target_port is not None and option_port is not None and target_port != option_port:
        raise ValueError(f"port {target_port} in the target and -P {option_port} disagree")
    return target_port if target_port is not None else option_port


def _common_parent() -> _Parser:
    """Options of every probing subcommand: mtr's letters and meanings."""
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--helper",
        metavar="PATH",
        help=f"brokerpkg-helper to run (default: ${ENVIRONMENT_VARIABLE}, "
        "then a search; see brokerpkg doctor)",
    )
    family = parent.add_mutually_exclusive_group()
    family.add_argument("-4", dest="ip_version", action="store_const", const=4, help="IPv4 only")
    family.add_argument("-6", dest="ip_version", action="store_const", const=6, help="IPv6 only")
    protocol = parent.add_mutually_exclusive_group()
    protocol.add_argument(
        "-u", "--udp", dest="protocol", action="store_const", const="udp", help="UDP probes"
    )
    protocol.add_argument(
        "-T", "--tcp", dest="protocol", action="store_const", const="tcp", help="TCP SYN probes"
    )
    protocol.add_argument(
        "-S", "--sctp", dest="protocol", action="store_const", const="sctp", help="SCTP INIT probes"
    )
    protocol.add_argument("--protocol", choices=PROTOCOLS, help="probe protocol (default icmp)")
    parent.add_argument(
        "-P", "--port", type=_integer, help="destination port (udp, tcp, sctp); also HOST:PORT"
    )
    parent.add_argument("-L", "--localport", type=_integer, help="source port")
    parent.add_argument("-a", "--address", metavar="ADDRESS", help="source address")
    parent.add_argument("-I", "--interface", metavar="NAME", help="send through this interface")
    parent.add_argument("-B", "--bitpattern", type=_byte, metavar="NUM", help="payload byte, 0-255")
    parent.add_argument(
        "-Q", "--tos", type=_byte, metavar="NUM", help="type of service / traffic class, 0-255"
    )
    parent.add_argument("-M", "--mark", type=_integer, metavar="MARK", help="packet mark")
    parent.add_argument("-j", "--json", action="store_true", help="print JSON")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog="brokerpkg",
        description="Network probes (ping, traceroute, mtr) via brokerpkg-helper.",
        epilog="See brokerpkg(1) for every option, output layout and exit status.",
    )
    parser.add_argument("--version", action="version", version=f"brokerpkg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_parent()

    probe = commands.add_parser("probe", parents=[common], help="send one probe")
    probe.add_argument("target", metavar="HOST")
    probe.add_argument("-t", "--ttl", type=_integer, help="time to live / hop limit")
    probe.add_argument(
        "-W",
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="wait this long for the answer (default 10)",
    )
    probe.add_argument(
        "-s",
        "--psize",
        "--size",
        dest="size",
        type=_integer,
        metavar="BYTES",
        help="whole packet size, IP header included (default 64)",
    )
    probe.add_argument(
        "--details",
        action="store_true",
        help="ask for reply details (reply TTL, ICMP type and code, size)",
    )

    ping_parser = commands.add_parser(
        "ping", parents=[common], help="ping one host (iputils ping's output)"
    )
    ping_parser.add_argument("target", metavar="HOST")
    _add_ping_options(ping_parser, count=None)

    many = commands.add_parser(
        "multiping", parents=[common], help="ping many hosts (fping's output)"
    )
    many.add_argument("targets", metavar="HOST", nargs="*")
    many.add_argument(
        "-f",
        "--file",
        metavar="FILE",
        help="read targets from FILE, one per line (- for standard input)",
    )
    many.add_argument(
        "--concurrency",
        type=_integer,
        default=50,
        metavar="N",
        help="ping at most N hosts at once (default 50)",
    )
    _add_ping_options(many, count=1)

    trace = commands.add_parser(
        "trace", parents=[common], help="trace the path (traceroute's output)"
    )
    trace.add_argument("target", metavar="HOST")
    _add_path_options(trace, timeout=2.0)
    trace.add_argument(
        "-q", "--queries", type=_integer, default=3, metavar="N", help="probes per hop (default 3)"
    )
    trace.add_argument(
        "-w",
        "--wait",
        dest="timeout",
        type=_seconds,
        metavar="SECONDS",
        help="same as -Z (traceroute's name)",
    )

    mtr = commands.add_parser(
        "mtr", parents=[common], help="monitor the path (mtr's report, JSON, CSV, live view)"
    )
    mtr.add_argument("target", metavar="HOST")
    _add_path_options(mtr, timeout=MTR_TIMEOUT)
    mtr.add_argument(
        "-c",
        "--report-cycles",
        dest="count",
        type=_integer,
        metavar="COUNT",
        help="cycles to run (default: 10 for reports, endless live)",
    )
    mtr.add_argument(
        "-i",
        "--interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between cycles (default 1)",
    )
    mtr.add_argument(
        "-G",
        "--gracetime",
        type=_seconds,
        default=MTR_GRACE,
        metavar="SECONDS",
        help=f"wait for late answers after the last cycle (default {MTR_GRACE:g})",
    )
    mtr.add_argument(
        "-U",
        "--max-unknown",
        type=_integer,
        default=MTR_MAX_UNKNOWN,
        metavar="N",
        help=f"unknown hops in a row before giving up (default {MTR_MAX_UNKNOWN})",
    )
    mtr.add_argument("-b", "--show-ips", action="store_true", help="show addresses beside names")
    mtr.add_argument("-r", "--report", action="store_true", help="report mode")
    mtr.add_argument(
        "-w",
        "--report-wide",
        dest="wide",
        action="store_true",
        help="wide report (names are not cut)",
    )
    mtr.add_argument("-C", "--csv", action="store_true", help="print CSV")

    doctor = commands.add_parser(
        "doctor", help="which helper, its privileges and features, and how to fix what is missing"
    )
    doctor.add_argument("--helper", metavar="PATH", help="check this helper")
    doctor.add_argument("-j", "--json", action="store_true", help="print JSON")

    from .cli_exporter import add_exporter_parser

    add_exporter_parser(commands)
    return parser


def _add_ping_options(parser: argparse.ArgumentParser, count: int | None) -> None:
    """ping's and fping's -c, -i, -W, -q, -s, -t."""
    default = "until interrupted" if count is None else str(count)
    parser.add_argument(
        "-c",
        "--count",
        type=_integer,
        default=count,
        metavar="COUNT",
        help=f"probes per host (default {default})",
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between probes to a host (default 1)",
    )
    parser.add_argument(
        "-W",
        "--timeout",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="wait this long for each answer (default 2)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no line per answer, only the summary"
    )
    parser.add_argument(
        "-s",
        "--size",
        dest="payload",
        type=_integer,
        metavar="BYTES",
        help=f"payload bytes after the ICMP/UDP header (default {PING_PAYLOAD})",
    )
    parser.add_argument("-t", "--ttl", type=_integer, help="time to live / hop limit")


def _add_path_options(parser: argparse.ArgumentParser, timeout: float) -> None:
    """The options trace and mtr share: TTL range, probe timeout, size, names, MPLS."""
    parser.add_argument(
        "-f", "--first-ttl", type=_integer, default=1, metavar="TTL", help="first TTL (default 1)"
    )
    parser.add_argument(
        "-m", "--max-ttl", type=_integer, default=30, metavar="TTL", help="largest TTL (default 30)"
    )
    parser.add_argument(
        "-Z",
        "--timeout",
        type=_seconds,
        default=timeout,
        metavar="SECONDS",
        help=f"wait this long for each answer (default {timeout:g})",
    )
    parser.add_argument(
        "-s",
        "--psize",
        dest="size",
        type=_integer,
        metavar="BYTES",
        help="whole packet size, IP header included (default 64)",
    )
    parser.add_argument(
        "-n",
        "--no-dns",
        dest="numeric",
        action="store_true",
        help="numeric addresses, no reverse DNS",
    )
    parser.add_argument("-e", "--mpls", action="store_true", help="show MPLS labels")


def probe_options(args: argparse.Namespace, port: int | None) -> dict[str, Any]:
    """The probe options every tool takes, from the common flags."""
    return {
        "protocol": args.protocol,
        "port": port,
        "local_port": args.localport,
        "local_ip": args.address,
        "local_device": args.interface,
        "bit_pattern": args.bitpattern,
        "tos": args.tos,
        "mark": args.mark,
    }


def _wants_json(argv: Sequence[str]) -> bool:
    """True if -j/--json is among arguments that could not be parsed."""
    for word in argv:
        if word == "--json":
            return True
        if (
            word.startswith("-")
            and not word.startswith("--")
            and word[1:].isalpha()
            and "j" in word[1:]
        ):
            return True
    return False


# ----------------------------------------------------------------------------- output


def _print(*lines: str) -> None:
    for line in lines:
        print(line)
    sys.stdout.flush()


def _print_json(document: object, indent: int = 2) -> None:
    import json

    print(json.dumps(document, indent=indent))
    sys.stdout.flush()


def _has_details(session: Session) -> bool:
    """True if the helper gives reply details (reply TTL, ICMP code, size)."""
    return session.features.get("details") == "ok"


def _local_host() -> str:
    """This host's name, as mtr's report shows it."""
    return socket.gethostname()


# ----------------------------------------------------------------------------- probe


async def run_probe(args: argparse.Namespace) -> int:
    """``brokerpkg probe``: one probe, its result on one line (or JSON)."""
    from .ping import probe_to_dict
    from .session import Session

    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    async with Session(args.helper) as session:
        result = await session.probe(
            host,
            ip_version=args.ip_version,
            ttl=args.ttl,
            timeout=args.timeout,
            size=args.size,
            details=args.details,
            **options,
        )
    if args.json:
        _print_json(probe_to_dict(result))
    else:
        _print(format_result(result))
    return EXIT_REPLY if result.success else EXIT_NO_REPLY


def format_result(result: ProbeResult) -> str:
    """One line describing a probe result."""
    line = result.result
    if result.responder is not None:
        line += f" from {result.responder}"
    if result.time_ms is not None:
        line += f" in {result.time_ms:.3f} ms"
    if result.reply_ttl is not None:
        line += f" reply-ttl {result.reply_ttl}"
    if result.reason is not None:
        line += f" ({result.reason})"
    return line


# ----------------------------------------------------------------------------- ping


def _payload(args: argparse.Namespace, protocol: str) -> int | None:
    """ping's -s: 56 by default for icmp and udp; tcp and sctp take none."""
    if args.payload is not None:
        return int(args.payload)
    return PING_PAYLOAD if protocol in ("icmp", "udp") else None


class _Pinger:
    """ping's loop: one probe every interval (until ``count``, or until stopped), each
    answer printed as it comes; :meth:`run` returns when all are settled or on stop."""

    def __init__(
        self,
        session: Session,
        address: str,
        args: argparse.Namespace,
        options: dict[str, Any],
        payload: int | None,
        quiet: bool,
    ) -> None:
        self.session = session
        self.address = address
        self.args = args
        self.options = options
        self.payload = payload
        self.quiet = quiet
        self.details = _has_details(session)
        self.results: dict[int, ProbeResult] = {}
        self.sent = 0
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _one(self, sequence: int) -> None:
        from . import cli_format as fmt
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
        line = fmt.ping_reply_line(probe, sequence + 1)
        if line is not None and not self.quiet:
            _print(line)

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
            while count is None or self.sent < count:
                self._tasks.add(asyncio.create_task(self._one(self.sent)))
                self.sent += 1
                if count is not None and self.sent == count:
                    break
                await self._wait(start + self.sent * self.args.interval)
                if self.stop.is_set():
                    break
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
    """``brokerpkg ping``: ping's lines, Ctrl-C ends early with the summary."""
    from . import cli_format as fmt
    from .ping import PingResult, probe_settings, resolve_address
    from .session import Session

    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    protocol = options["protocol"] or "icmp"
    payload = _payload(args, protocol)
    if args.count is not None and args.count < 1:
        raise ValueError("count must be >= 1")
    if args.interval <= 0:
        raise ValueError("interval must be > 0 seconds")
    probe_settings(
        family=args.ip_version, timeout=args.timeout, ttl=args.ttl, payload_size=payload, **options
    )  # refuse bad options before the header
    quiet = args.quiet or args.json
    loop = asyncio.get_running_loop()
    async with Session(args.helper) as session:
        address = await resolve_address(session, host, args.ip_version)
        if not args.json:  # ping -q still prints its first line
            port = options["port"] or (
                None if protocol in ("icmp", "udp") else DEFAULT_CONNECTED_PORT
            )
            _print(fmt.ping_header(host, address, protocol, payload, port))
        pinger = _Pinger(session, address, args, options, payload, quiet)
        loop.add_signal_handler(signal.SIGINT, pinger.stop.set)
        began = time.monotonic()
        try:
            await pinger.run()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
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


def read_targets(args: argparse.Namespace) -> list[str]:
    """Targets from the arguments, then from -f FILE (``-`` is standard input): one per
    line, blank lines and ``#`` comments skipped.  Raises OSError, ValueError."""
    targets = list(args.targets)
    if args.file is not None:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as stream:
                text = stream.read()
        for line in text.splitlines():
            word = line.split("#", 1)[0].strip()
            if word:
                targets.append(word)
    if not targets:
        raise ValueError("no targets: give hosts as arguments or with -f FILE")
    return targets


async def run_multiping(args: argparse.Namespace) -> int:
    """``brokerpkg multiping``: fping's lines, summaries in input order."""
    from . import cli_format as fmt
    from .cli_terminal import ProgressLine
    from .ping import multiping
    from .session import Session

    parsed = [split_target(target) for target in read_targets(args)]
    hosts = [host for host, _ in parsed]
    ports = {port for _, port in parsed if port is not None}
    if len(ports) > 1:
        raise ValueError(
            f"multiping probes one port for all targets: the targets name ports {sorted(ports)}"
        )
    options = probe_options(args, _target_port(next(iter(ports), None), args.port))
    payload = _payload(args, options["protocol"] or "icmp")
    quiet = args.quiet or args.json
    width = max(len(host) for host in hosts)
    occurrences = collections.Counter(hosts)
    finished: collections.Counter[str] = collections.Counter()
    rtts: dict[str, list[float]] = collections.defaultdict(list)
    progress = ProgressLine(sys.stderr, len(hosts))

    def on_probe(event: ProgressEvent) -> None:
        finished[event.host] += 1
        done, rest = divmod(finished[event.host], args.count)
        if rest == 0 and done <= occurrences[event.host]:  # one more host is complete
            progress.update(progress.done + 1)
        result = event.result
        if result.success and result.time_ms is not None:
            rtts[event.host].append(result.time_ms)
        if not quiet:
            line = fmt.fping_reply_line(
                event.host, width, event.sequence, result, finished[event.host], rtts[event.host]
            )
            if line is not None:
                progress.clear()
                _print(line)
                progress.update(progress.done)

    try:
        async with Session(args.helper) as session:
            results = await multiping(
                hosts,
                count=args.count,
                interval=args.interval,
                timeout=args.timeout,
                concurrency=args.concurrency,
                session=session,
                family=args.ip_version,
                ttl=args.ttl,
                payload_size=payload,
                details=_has_details(session),
                progress=on_probe,
                **options,
            )
    finally:
        progress.finish()
    if args.json:
        _print_json({"hosts": [result.to_dict() for result in results]})
    else:
        _print(*(fmt.fping_summary_line(result, width) for result in results))
    return EXIT_REPLY if all(result.is_alive for result in results) else EXIT_NO_REPLY


# ----------------------------------------------------------------------------- trace


async def run_trace(args: argparse.Namespace) -> int:
    """``brokerpkg trace``: traceroute's lines (or JSON) once every hop is settled."""
    from . import cli_format as fmt
    from .session import Session
    from .trace import traceroute

    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    async with Session(args.helper) as session:
        trace = await traceroute(
            host,
            first_ttl=args.first_ttl,
            max_ttl=args.max_ttl,
            probes_per_hop=args.queries,
            timeout=args.timeout,
            session=session,
            family=args.ip_version,
            size=args.size,
            details=_has_details(session),
            resolve_names=not args.numeric,
            **options,
        )
    if args.json:
        _print_json(fmt.trace_json(trace))
    else:
        size = None if options["protocol"] == "tcp" else args.size or DEFAULT_PACKET_SIZE
        _print(*fmt.traceroute_lines(trace, numeric=args.numeric, show_mpls=args.mpls, size=size))
    return EXIT_REPLY if trace.reached else EXIT_NO_REPLY


# ----------------------------------------------------------------------------- mtr


def _mtr_mode(args: argparse.Namespace) -> str:
    """json, csv, report, or live (a terminal and no format asked for)."""
    if args.json:
        return "json"
    if args.csv:
        return "csv"
    if args.report or args.wide or not sys.stdout.isatty():
        return "report"
    return "live"


def _mtr_json(args: argparse.Namespace, report: MonitorReport | None) -> dict[str, Any]:
    from . import cli_format as fmt

    return fmt.mtr_json(
        report,
        local_host=_local_host(),
        target=args.target,
        tos=args.tos or 0,
        tests=args.count if args.count is not None else MTR_REPORT_CYCLES,
        packet_size=args.size or DEFAULT_PACKET_SIZE,
        bit_pattern=args.bitpattern or 0,
        numeric=args.numeric,
        show_ips=args.show_ips,
    )


async def run_mtr(args: argparse.Namespace) -> int:
    """``brokerpkg mtr``: mtr's report, JSON, CSV, or the live view."""
    from datetime import UTC, datetime

    from . import cli_format as fmt
    from .mtr import monitor
    from .ping import resolve_address
    from .session import Session

    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    mode = _mtr_mode(args)
    cycles = (
        args.count if args.count is not None else (None if mode == "live" else MTR_REPORT_CYCLES)
    )
    started = datetime.now(UTC).astimezone()
    async with Session(args.helper) as session:
        address = await resolve_address(session, host, args.ip_version)
        reports = monitor(
            host,
            cycles=cycles,
            interval=args.interval,
            first_ttl=args.first_ttl,
            max_ttl=args.max_ttl,
            max_unknown=args.max_unknown,
            timeout=args.timeout,
            grace=args.gracetime,
            session=session,
            family=args.ip_version,
            size=args.size,
            resolve_names=not args.numeric,
            **options,
        )
        if mode == "live":
            final = await _live_view(args, reports, address, cycles)
        else:
            final = None
            async with contextlib.aclosing(reports):
                async for report in reports:
                    final = report
    if mode == "json":
        _print_json(_mtr_json(args, final), MTR_JSON_INDENT)
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
                local_host=_local_host(),
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
    reports: AsyncGenerator[MonitorReport, None],
    address: str,
    cycles: int | None,
) -> MonitorReport | None:
    """Run the live view until the cycles end or the user quits; the last report."""
    from datetime import UTC, datetime

    from . import cli_format as fmt
    from .cli_terminal import Screen, run_screen

    local_host = _local_host()

    def render(report: MonitorReport | None, size: os.terminal_size) -> list[str]:
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


# ----------------------------------------------------------------------------- main

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
    """Run a subcommand with name lookups on daemon threads (see DaemonExecutor)."""
    asyncio.get_running_loop().set_default_executor(DaemonExecutor())
    return await runner(args)


def _runner(command: str) -> Runner:
    """The coroutine function that runs ``command`` (doctor's is imported only for it)."""
    if command == "doctor":
        from .cli_doctor import run_doctor

        return run_doctor
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


def describe_error(error: BaseException) -> str:
    """One line for a local error, with the fix where one is known."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, HelperNotFoundError):
        if os.environ.get(ENVIRONMENT_VARIABLE):
            message += (
                f"; fix: unset {ENVIRONMENT_VARIABLE} or point it at an executable brokerpkg-helper"
            )
        else:
            message += (
                "; fix: install the package with `python3 -m pip install .` (it "
                "builds the helper), run `make -C helper` in a source checkout, or "
                f"give --helper PATH or {ENVIRONMENT_VARIABLE}"
            )
    elif isinstance(error, FeatureNotSupportedError):
        message += "; `brokerpkg doctor` shows what the helper can do"
    return message


def _error_document(args: argparse.Namespace, message: str) -> dict[str, Any]:
    """The JSON printed with -j when a command fails locally."""
    if args.command == "mtr":
        document = _mtr_json(args, None)
        document["error"] = message
        return document
    document = {"error": message}
    for name in ("target", "targets"):
        if hasattr(args, name):
            document[name] = getattr(args, name)
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(words)
    except UsageError as error:
        sys.stderr.write(error.usage)
        print(error, file=sys.stderr)
        if _wants_json(words):
            _print_json({"error": str(error)})
        return EXIT_ERROR
    try:
        return asyncio.run(_run(_runner(args.command), args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``| head``): say nothing more on that pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except LOCAL_ERRORS as error:
        message = describe_error(error)
        print(f"brokerpkg {args.command}: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            _print_json(_error_document(args, message))
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
