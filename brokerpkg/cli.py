"""The ``brokerpkg`` command (also ``python3 -m brokerpkg``): the only code that prints.

Subcommands: ``probe`` (one probe), ``ping`` (iputils ping's conventions),
``multiping`` (fping's), ``trace`` (traceroute's output, mtr's flags), ``mtr`` (mtr's
flags, report, JSON, CSV and live view), ``doctor`` (which helper, what it can do,
how to fix what it cannot) and ``setup`` (as root: install a privileged helper on PATH,
:mod:`brokerpkg.cli_setup`).  man/brokerpkg.1 documents every flag and layout; the
layouts themselves are pure functions in :mod:`brokerpkg.cli_format`, the terminal
handling is in :mod:`brokerpkg.cli_terminal`.

Exit status: 0 when the target answered (multiping: every target), 1 when it did not,
2 for usage errors and local errors (bad option, helper missing or without privilege,
unresolvable host, a probe the host refused to send), in every subcommand.  A usage
error prints the subcommand's usage and names the command's flags (the CLI checks
ranges and which options apply before the library sees them); a local error prints a
one-line message on standard error; with ``-j`` standard output still carries a JSON
document, with an ``error`` key.
130 after Ctrl-C, except where Ctrl-C is the normal way to stop (ping, multiping, the
live view), which end as they would have, with their summaries.

Start-up time counts for a command (a trace takes a few milliseconds; Python's imports
took many times that): this module imports only what parsing the arguments and
reporting errors need, and each subcommand imports its own tools (the trace command
never loads the monitor, the terminal code or the doctor).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import contextvars
import math
import os
import queue
import re
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TextIO, TypeVar

from ._version import __version__
from .defaults import MTR_GRACE, MTR_MAX_UNKNOWN, MTR_TIMEOUT, RETRIES, RETRIES_MAX, SETUP_DEST
from .errors import (
    HELPER_NAME,
    FeatureNotSupportedError,
    HelperNotFoundError,
    HostResolveError,
    ProbeSendError,
    ProcessError,
    RemoteHelperNotFoundError,
    StateError,
)
from .locate import ENVIRONMENT_VARIABLE
from .protocol import (
    DEFAULT_CONNECTED_PORT,
    IFNAMSIZ,
    MAX_FLOW,
    MAX_REQUEST_LENGTH,
    MAX_TIMEOUT,
    PROTOCOLS,
)
from .ssh import DEFAULT_SSH, SSH_ENVIRONMENT_VARIABLE, parse_destination

if TYPE_CHECKING:
    from .mtr import FlowsReport, MonitorReport
    from .protocol import ProbeResult
    from .session import Session
    from .waiting import Wait

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
BYTE_MAX = 255
TTL_MAX = 255
PORT_MAX = 65535
LOCAL_PORT_MIN = 1024
"""The helper binds source ports from here up (below are privileged ports)."""
MARK_MAX = 4294967295
PACKET_MAX = 9000
"""The largest packet the helper sends (its size argument)."""
PING_PAYLOAD_MAX = {4: PACKET_MAX - 20 - 8, 6: PACKET_MAX - 40 - 8}
"""ping's -s (after the 8-byte ICMP or UDP header) that keeps packets within PACKET_MAX."""
QUERIES_MAX = 1000
DEFAULT_QUERIES = 3
"""traceroute's default -q."""
MAX_FLOWS = 1024
"""mtr --flows K: K flows side by side at most (brokerpkg.mtr.MAX_FLOWS)."""
TCP_SYN_BYTES = 40
"""A Linux SYN: the 20-byte TCP header and 20 bytes of options (MSS, SACK permitted,
timestamps, window scale), as the kernel sends it for the helper's connect()."""

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


def _range_text(low: float, high: float | None, unit: str = "") -> str:
    """``1 to 255``, ``1 or more``, ``more than 0`` (with ``unit`` after the numbers)."""
    unit = f" {unit}" if unit else ""

    def number(value: float) -> str:
        return str(value) if isinstance(value, int) else f"{value:g}"

    if high is None:
        return f"{number(low)}{unit} or more"
    return f"{number(low)} to {number(high)}{unit}"


def _out_of_range(text: str, allowed: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{text} is out of range: give {allowed}")


def _decimal(text: str) -> int:
    """A decimal integer: digits, a minus sign allowed (so that a range check can say
    what is wrong with ``-1``)."""
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"not a decimal integer: {text!r}")
    return int(text)


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """A decimal integer from ``low`` to ``high`` (None: no upper bound)."""

    def parse(text: str) -> int:
        value = _decimal(text)
        if value < low or (high is not None and value > high):
            raise _out_of_range(text, _range_text(low, high))
        return value

    return parse


def _seconds(
    low: float = 0.0, high: float | None = None, *, positive: bool = False
) -> Callable[[str], float]:
    """A finite number of seconds from ``low`` (excluded with ``positive``) to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number of seconds: {text!r}")
        if value < low or (positive and value == low) or (high is not None and value > high):
            allowed = (
                f"more than {low:g} seconds" if positive else _range_text(low, high, "seconds")
            )
            raise _out_of_range(text, allowed)
        return value

    return parse


def _wait(text: str) -> Wait:
    """traceroute's -w MAX[,HERE,NEAR]."""
    from .waiting import parse_wait

    try:
        return parse_wait(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _byte(text: str) -> int:
    """0-255, decimal or 0x hexadecimal (mtr's -B and -Q take both)."""
    try:
        value = int(text, 16) if text.lower().startswith("0x") else _decimal(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= BYTE_MAX:
        raise _out_of_range(text, _range_text(0, BYTE_MAX))
    return value


def _wire_word(what: str, max_length: int) -> Callable[[str], str]:
    """Text the helper's protocol can carry: printable ASCII, no spaces, not too long."""

    def parse(text: str) -> str:
        if not text or not all("!" <= character <= "~" for character in text):
            raise argparse.ArgumentTypeError(
                f"not {what}: {text!r} (printable ASCII without spaces)"
            )
        if len(text) > max_length:
            raise argparse.ArgumentTypeError(
                f"not {what}: {text!r} is longer than {max_length} characters"
            )
        return text

    return parse


def _interface(text: str) -> str:
    """An interface name (1-15 characters, no ``/``), as the kernel takes it."""
    name = _wire_word("an interface name", IFNAMSIZ - 1)(text)
    if "/" in name or name in (".", ".."):
        raise argparse.ArgumentTypeError(f"not an interface name: {text!r}")
    return name


def _vantage_point(text: str) -> str:
    """``[USER@]HOST`` for --from, as ssh takes it (brokerpkg.ssh.parse_destination)."""
    try:
        return str(parse_destination(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _remote_helper(text: str) -> str:
    """The helper command the remote shell runs (--remote-helper): not empty."""
    if not text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError(f"not a command: {text!r}")
    return text


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
    parent.add_argument(
        "--from",
        dest="vantage_points",
        action="append",
        type=_vantage_point,
        metavar="[USER@]HOST",
        help=f"run the helper on HOST over ssh (${SSH_ENVIRONMENT_VARIABLE}, default "
        f"{shlex.join(DEFAULT_SSH)!r}); repeat for several vantage points",
    )
    parent.add_argument(
        "--remote-helper",
        type=_remote_helper,
        metavar="PATH",
        help=f"the helper the --from hosts run (default {HELPER_NAME}, on PATH there)",
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
        "-P",
        "--port",
        type=_integer(1, PORT_MAX),
        help="destination port (udp, tcp, sctp); also HOST:PORT",
    )
    parent.add_argument(
        "-L", "--localport", type=_integer(LOCAL_PORT_MIN, PORT_MAX), help="source port"
    )
    parent.add_argument(
        "-a",
        "--address",
        type=_wire_word("an address", MAX_REQUEST_LENGTH),
        metavar="ADDRESS",
        help="source address",
    )
    parent.add_argument(
        "-I", "--interface", type=_interface, metavar="NAME", help="send through this interface"
    )
    parent.add_argument("-B", "--bitpattern", type=_byte, metavar="NUM", help="payload byte, 0-255")
    parent.add_argument(
        "-Q", "--tos", type=_byte, metavar="NUM", help="type of service / traffic class, 0-255"
    )
    parent.add_argument(
        "-M", "--mark", type=_integer(0, MARK_MAX), metavar="MARK", help="packet mark"
    )
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
    probe.add_argument("-t", "--ttl", type=_integer(1, TTL_MAX), help="time to live / hop limit")
    probe.add_argument(
        "-W",
        "--timeout",
        type=_seconds(0, MAX_TIMEOUT),
        metavar="SECONDS",
        help="wait this long for the answer (default 10)",
    )
    probe.add_argument(
        "-s",
        "--psize",
        "--size",
        dest="size",
        type=_integer(0, PACKET_MAX),
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
    ping_parser.add_argument(
        "-n",
        "--numeric",
        action="store_true",
        help="numeric addresses only: no reverse DNS of the addresses that answer",
    )

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
        type=_integer(1),
        default=50,
        metavar="N",
        help="ping at most N hosts at once (default 50)",
    )
    _add_ping_options(many, count=1)

    trace = commands.add_parser(
        "trace", parents=[common], help="trace the path (traceroute's output)"
    )
    trace.add_argument("target", metavar="HOST")
    _add_path_options(trace, timeout=None)
    trace.add_argument(
        "-q",
        "--queries",
        type=_integer(1, QUERIES_MAX),
        metavar="N",
        help=f"probes per hop (default {DEFAULT_QUERIES})",
    )
    trace.add_argument(
        "-w",
        "--wait",
        type=_wait,
        metavar="MAX[,HERE,NEAR]",
        help="wait for each answer at most MAX seconds, HERE times the round trip of an "
        "answer from the same hop, NEAR times one from a later hop (traceroute's -w; "
        "default 5,3,10; -w MAX alone turns HERE and NEAR off)",
    )
    trace.add_argument(
        "--retries",
        type=_integer(0, RETRIES_MAX),
        default=RETRIES,
        metavar="N",
        help=f"probe a silent hop again up to N times, at 0.25, 0.75, 1.75 s ... "
        f"(default {RETRIES})",
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
        type=_integer(1),
        metavar="COUNT",
        help="cycles to run (default: 10 for reports, endless live)",
    )
    mtr.add_argument(
        "-i",
        "--interval",
        type=_seconds(positive=True),
        default=1.0,
        metavar="SECONDS",
        help="seconds between cycles (default 1)",
    )
    mtr.add_argument(
        "-G",
        "--gracetime",
        type=_seconds(),
        default=MTR_GRACE,
        metavar="SECONDS",
        help=f"wait for late answers after the last cycle (default {MTR_GRACE:g})",
    )
    mtr.add_argument(
        "-U",
        "--max-unknown",
        type=_integer(1),
        default=MTR_MAX_UNKNOWN,
        metavar="N",
        help=f"unknown hops in a row before giving up (default {MTR_MAX_UNKNOWN})",
    )
    mtr.add_argument(
        "--retries",
        type=_integer(0, RETRIES_MAX),
        default=RETRIES,
        metavar="N",
        help=f"probe a silent hop of the first cycle again up to N times (default {RETRIES})",
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
    _add_flow_options(trace, mtr)

    doctor = commands.add_parser(
        "doctor", help="which helper, its privileges and features, and how to fix what is missing"
    )
    doctor.add_argument("--helper", metavar="PATH", help="check this helper")
    doctor.add_argument("-j", "--json", action="store_true", help="print JSON")

    setup = commands.add_parser(
        "setup", help="as root: install a privileged helper on PATH for every user (brokerpkg(1))"
    )
    setup.add_argument(
        "--dest", metavar="DIR", default=SETUP_DEST, help=f"install into DIR (default {SETUP_DEST})"
    )
    setup.add_argument(
        "--setuid", action="store_true", help="setuid root instead of the file capability"
    )
    setup.add_argument("--remove", action="store_true", help="undo what setup did")
    setup.add_argument(
        "--helper", metavar="PATH", help="install this helper (default: the package's own)"
    )

    from .cli_exporter import add_exporter_parser

    add_exporter_parser(commands)
    return parser


TOP_LEVEL_OPTIONS = frozenset({"-h", "--help", "--version"})
NEGATIVE_NUMBER = re.compile(r"-\.?\d")
"""A word that starts like a negative number: the value of the option before it."""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings of ``parser`` that take a value (``-W SECONDS``)."""
    return {
        option
        for action in parser._actions
        if action.nargs != 0
        for option in action.option_strings
    }


def _attach_negative_values(words: list[str], value_options: set[str]) -> list[str]:
    """Join ``-W -1`` into ``-W-1`` (``--timeout -1`` into ``--timeout=-1``): an option
    that takes a value takes the next word when it looks like a negative number, as
    getopt does, so that the value's range check can name what is wrong with it
    (argparse would take ``-1`` for an option and say "expected one argument")."""
    joined: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            return joined + words[index:]
        following = words[index + 1] if index + 1 < len(words) else ""
        if word in value_options and NEGATIVE_NUMBER.match(following):
            joined.append(f"{word}={following}" if word.startswith("--") else word + following)
            index += 2
            continue
        joined.append(word)
        index += 1
    return joined


def parse_arguments(parser: argparse.ArgumentParser, words: Sequence[str]) -> argparse.Namespace:
    """Parse a command line as ``parser.parse_args`` does, except that errors about a
    subcommand's options name that subcommand and show its usage: an option it does
    not know, an option written before it (``brokerpkg -n trace HOST``), a negative
    number given to one of its options (out of range, not "expected one argument").

    Raises UsageError.
    """
    words = list(words)
    commands = _subcommands(parser)
    position = next((index for index, word in enumerate(words) if word in commands), None)
    if position is None:  # argparse refuses it (the subcommand is required) or exits
        return parser.parse_args(words)  # for --help and --version
    command, before = commands[words[position]], words[:position]
    misplaced = [word for word in before if word not in TOP_LEVEL_OPTIONS]
    if misplaced:
        fixed = shlex.join(["brokerpkg", words[position], *misplaced, *words[position + 1 :]])
        command.error(f"{' '.join(misplaced)}: options go after the subcommand, as in: {fixed}")
    rest = _attach_negative_values(words[position + 1 :], _value_options(command))
    args, unknown = parser.parse_known_args([*before, words[position], *rest])
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    _check_vantage_points(args, command)
    return args


def _check_vantage_points(args: argparse.Namespace, command: argparse.ArgumentParser) -> None:
    """Refuse --from twice for one host, --helper with --from (the local helper: give
    --remote-helper) and --remote-helper without --from.  Raises UsageError."""
    vantage_points = getattr(args, "vantage_points", None) or []
    seen: set[str] = set()
    for vantage_point in vantage_points:
        if vantage_point in seen:
            command.error(f"--from {vantage_point} is given twice")
        seen.add(vantage_point)
    if vantage_points and getattr(args, "helper", None) is not None:
        command.error("--helper names the local helper; with --from give --remote-helper PATH")
    # the exporter keeps its --from hosts apart (``vantages``): it probes from all of
    # them in one run, and from here too with --local
    remote_hosts = vantage_points or getattr(args, "vantages", None)
    if getattr(args, "remote_helper", None) is not None and not remote_hosts:
        command.error("--remote-helper applies with --from [USER@]HOST")


def _add_ping_options(parser: argparse.ArgumentParser, count: int | None) -> None:
    """ping's and fping's -c, -i, -W, -q, -s, -t."""
    default = "until interrupted" if count is None else str(count)
    parser.add_argument(
        "-c",
        "--count",
        type=_integer(1),
        default=count,
        metavar="COUNT",
        help=f"probes per host (default {default})",
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=_seconds(positive=True),
        default=1.0,
        metavar="SECONDS",
        help="seconds between probes to a host (default 1)",
    )
    parser.add_argument(
        "-W",
        "--timeout",
        type=_seconds(0, MAX_TIMEOUT),
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
        type=_integer(0, PING_PAYLOAD_MAX[4]),
        metavar="BYTES",
        help=f"payload bytes after the ICMP/UDP header (default {PING_PAYLOAD})",
    )
    parser.add_argument("-t", "--ttl", type=_integer(1, TTL_MAX), help="time to live / hop limit")


def _add_path_options(parser: argparse.ArgumentParser, timeout: float | None) -> None:
    """The options trace and mtr share: TTL range, probe timeout, size, names, MPLS.
    ``timeout`` None: -Z has no default of its own (trace: the same as -w SECONDS)."""
    parser.add_argument(
        "-f",
        "--first-ttl",
        type=_integer(1, TTL_MAX),
        default=1,
        metavar="TTL",
        help="first TTL (default 1)",
    )
    parser.add_argument(
        "-m",
        "--max-ttl",
        type=_integer(1, TTL_MAX),
        default=30,
        metavar="TTL",
        help="largest TTL (default 30)",
    )
    parser.add_argument(
        "-Z",
        "--timeout",
        type=_seconds(0, MAX_TIMEOUT),
        default=timeout,
        metavar="SECONDS",
        help="same as -w SECONDS"
        if timeout is None
        else f"wait this long for each answer (default {timeout:g})",
    )
    parser.add_argument(
        "-s",
        "--psize",
        dest="size",
        type=_integer(0, PACKET_MAX),
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


def _percent(text: str) -> float:
    """A confidence in percent, above 0 and below 100."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 < value < 100):
        raise _out_of_range(text, "a percent above 0 and below 100")
    return value


def _rate(text: str) -> float:
    """Probes per second, more than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise _out_of_range(text, "more than 0 probes per second")
    return value


def _add_flow_options(trace: argparse.ArgumentParser, mtr: argparse.ArgumentParser) -> None:
    """trace's --paris, --flow and --multipath (with the MDA's options), mtr's --paris
    and --flows."""
    trace.add_argument(
        "--paris", action="store_true", help="one flow for every probe (a Paris traceroute)"
    )
    trace.add_argument(
        "--flow",
        type=_integer(0, MAX_FLOW),
        metavar="N",
        help=f"the flow of a Paris trace, 0-{MAX_FLOW} (implies --paris; default 1)",
    )
    trace.add_argument(
        "--multipath",
        action="store_true",
        help="find every path through load balancers (MDA; scamper tracelb's output)",
    )
    trace.add_argument(
        "--confidence",
        type=_percent,
        metavar="P",
        help="--multipath: rule out one more next hop with P%% confidence (default 95)",
    )
    trace.add_argument("--dot", action="store_true", help="--multipath: print Graphviz DOT")
    trace.add_argument(
        "--attempts",
        type=_integer(1, 10),
        metavar="N",
        help="--multipath: probes per flow and TTL before it counts as lost (default 2)",
    )
    trace.add_argument(
        "--gap-limit",
        type=_integer(1, TTL_MAX),
        metavar="N",
        help="--multipath: silent TTLs in a row before giving up (default 3)",
    )
    trace.add_argument(
        "--max-probes",
        type=_integer(1),
        metavar="N",
        help="--multipath: probes at most (default 3000)",
    )
    trace.add_argument(
        "--rate",
        type=_rate,
        metavar="PPS",
        help="--multipath: probes per second at most (default 500)",
    )
    trace.add_argument(
        "--deadline",
        type=_seconds(positive=True),
        metavar="SECONDS",
        help="--multipath: stop after this long, with a partial result (default 60)",
    )
    mtr.add_argument(
        "--paris", action="store_true", help="one flow for every probe: one router per row"
    )
    mtr.add_argument(
        "--flows",
        type=_integer(1, MAX_FLOWS),
        metavar="K",
        help="monitor K flows side by side, each its own path, loss and RTT per hop",
    )


MULTIPATH_FLAGS = (
    ("confidence", "--confidence"),
    ("dot", "--dot"),
    ("attempts", "--attempts"),
    ("gap_limit", "--gap-limit"),
    ("max_probes", "--max-probes"),
    ("rate", "--rate"),
    ("deadline", "--deadline"),
)
"""trace's flags that only --multipath takes: (attribute, flag)."""


def check_trace_flags(args: argparse.Namespace) -> None:
    """Refuse trace's flags that cannot apply together; raises ValueError naming them."""
    if not args.multipath:
        for name, flag in MULTIPATH_FLAGS:
            if getattr(args, name) not in (None, False):
                raise ValueError(f"{flag} applies to --multipath traces only")
        return
    for flag, given in (
        ("--paris", args.paris),
        ("--flow", args.flow is not None),
        ("-q", args.queries is not None),
    ):
        if given:
            raise ValueError(f"{flag} does not apply to --multipath (it chooses its own flows)")
    if args.localport is not None:
        raise ValueError("-L does not apply to --multipath (the flows choose the ports)")
    if args.wait is not None and (args.wait.here or args.wait.near):
        raise ValueError("-w takes MAX alone with --multipath (each probe's wait)")
    if args.retries != RETRIES:
        raise ValueError("--retries does not apply to --multipath (see --attempts)")
    if args.dot and args.json:
        raise ValueError("give -j or --dot, not both")


def probe_options(args: argparse.Namespace, port: int | None) -> dict[str, Any]:
    """The probe options every tool takes, from the common flags.

    Raises ValueError, naming the flags, for an option that cannot apply to the
    protocol: a port (-P, HOST:PORT) or -L for icmp, -s or -B for tcp (a SYN carries
    no payload), ping's -s (the payload after the ICMP or UDP header) for sctp; and
    for -m below -f.
    """
    protocol = args.protocol or "icmp"
    if protocol == "icmp":
        where = "-P" if args.port is not None else "the port of HOST:PORT"
        for flag, value in ((where, port), ("-L", args.localport)):
            if value is not None:
                raise ValueError(
                    f"{flag} applies to udp, tcp and sctp probes (-u, -T, -S), not icmp"
                )
    size = getattr(args, "size", None)
    payload = getattr(args, "payload", None)
    if protocol == "tcp":
        for flag, value in (("-s", size if payload is None else payload), ("-B", args.bitpattern)):
            if value is not None:
                raise ValueError(f"{flag} does not apply to tcp probes (a SYN carries no payload)")
    if payload is not None and protocol == "sctp":
        raise ValueError(
            "-s (the payload after the ICMP or UDP header) applies to icmp and udp probes, not sctp"
        )
    if getattr(args, "max_ttl", TTL_MAX) < getattr(args, "first_ttl", 1):
        raise ValueError(f"-m {args.max_ttl} is below -f {args.first_ttl}")
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


def _check_payload(payload: int | None, address: str) -> None:
    """Refuse ping's -s when it makes packets larger than the helper sends to
    ``address``'s family; raises ValueError naming -s."""
    version = 6 if ":" in address else 4
    if payload is not None and payload > PING_PAYLOAD_MAX[version]:
        size = PACKET_MAX - PING_PAYLOAD_MAX[version] + payload
        raise ValueError(
            f"-s {payload} makes IPv{version} packets of {size} bytes, more than "
            f"{PACKET_MAX}: give -s {PING_PAYLOAD_MAX[version]} or less for {address}"
        )


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


class _Blocks:
    """The output of several vantage points at once, each under a heading naming it
    (``==> [USER@]HOST <==``, blocks separated by a blank line, as ``head`` and ``tail``
    head several files), in --from order.

    The first unfinished block is written as it comes; the others are kept until every
    block before them is finished.  Each block's JSON document is kept in
    ``documents`` (keyed by vantage point, printed as one object by the caller);
    ``headings`` False (for -j) writes no heading.
    """

    def __init__(self, names: Sequence[str], *, headings: bool = True) -> None:
        self.names = list(names)
        self.headings = headings
        self._kept: list[list[str]] = [[] for _ in self.names]
        self._finished = [False] * len(self.names)
        self._live = 0
        self.documents: dict[str, object] = {}
        self._heading(0)

    def _heading(self, index: int) -> None:
        if not self.headings:
            return
        gap = "\n" if index else ""
        sys.stdout.write(f"{gap}==> {self.names[index]} <==\n")
        sys.stdout.flush()

    def write(self, index: int, text: str) -> None:
        """Block ``index``'s text: written now if it is the live block, else kept."""
        if index == self._live:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            self._kept[index].append(text)

    def finish(self, index: int) -> None:
        """Block ``index`` is complete: write the next ones that can be written."""
        self._finished[index] = True
        while self._live < len(self.names) and self._finished[self._live]:
            self._live += 1
            if self._live < len(self.names):
                self._heading(self._live)
                sys.stdout.write("".join(self._kept[self._live]))
                self._kept[self._live] = []
                sys.stdout.flush()


class _BlockStream:
    """The text stream of one block of :class:`_Blocks` (what ``print`` writes to)."""

    def __init__(self, blocks: _Blocks, index: int) -> None:
        self.blocks = blocks
        self.index = index

    def write(self, text: str) -> int:
        self.blocks.write(self.index, text)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: :meth:`_Blocks.write` flushes what it writes."""

    def document(self, document: object) -> None:
        """Keep this block's JSON document (the caller prints them all at the end)."""
        self.blocks.documents[self.blocks.names[self.index]] = document


_BLOCK: contextvars.ContextVar[_BlockStream | None] = contextvars.ContextVar(
    "brokerpkg_block", default=None
)
"""The block a vantage point's task prints into (None: straight to standard output)."""


def _out() -> TextIO | _BlockStream:
    """Where the running subcommand prints: its vantage point's block, or stdout."""
    return _BLOCK.get() or sys.stdout


def _print(*lines: str) -> None:
    out = _out()
    for line in lines:
        print(line, file=out)
    out.flush()


def _print_json(document: object, indent: int = 2) -> None:
    import json

    block = _BLOCK.get()
    if block is not None:
        block.document(document)
        return
    print(json.dumps(document, indent=indent))
    sys.stdout.flush()


def _has_details(session: Session) -> bool:
    """True if the helper gives reply details (reply TTL, ICMP code, size)."""
    return session.features.get("details") == "ok"


def _local_host(args: argparse.Namespace | None = None) -> str:
    """This host's name, as mtr's report shows it; with --from, the vantage point's host
    as given (used when its own name is not known: a failure before it was asked)."""
    vantage_point = None if args is None else getattr(args, "vantage", None)
    if vantage_point is not None:
        return parse_destination(vantage_point).host
    return socket.gethostname()


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
    from .answers import classify, probe_to_dict

    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    async with _session(args) as session:
        result = await session.probe(
            host,
            ip_version=args.ip_version,
            ttl=args.ttl,
            timeout=args.timeout,
            size=args.size,
            details=args.details,
            **options,
        )
    classify(result)
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


def _numeric_target(host: str) -> bool:
    """True if ``host`` is written as an address, as iputils ping decides it (an IPv4
    address inet_aton reads, or anything with a colon): then it looks up no names."""
    if ":" in host:
        return True
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


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
    from .options import probe_settings
    from .ping import PingResult
    from .tasks import resolve_addresses

    parsed = [split_target(target) for target in read_targets(args)]
    hosts = [host for host, _ in parsed]
    ports = {port for _, port in parsed if port is not None}
    if len(ports) > 1:
        raise ValueError(
            f"multiping probes one port for all targets: the targets name ports {sorted(ports)}"
        )
    options = probe_options(args, _target_port(next(iter(ports), None), args.port))
    payload = _payload(args, options["protocol"] or "icmp")
    probe_settings(
        family=args.ip_version, timeout=args.timeout, ttl=args.ttl, payload_size=payload, **options
    )  # refuse bad options before anything is sent
    quiet = args.quiet or args.json
    width = max(len(host) for host in hosts)
    progress = ProgressLine(sys.stderr, len(hosts))
    if _BLOCK.get() is not None:
        progress.finish()  # several vantage points at once: no progress line to share

    async def report(pinger: _Pinger, sequence: int, result: ProbeResult) -> None:
        if quiet:
            return
        rtts = [
            probe.time_ms
            for probe in pinger.results.values()
            if probe.success and probe.time_ms is not None
        ]
        line = fmt.fping_reply_line(pinger.host, width, sequence, result, len(pinger.results), rtts)
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
    if args.json:
        documents = []
        for pinger, result in zip(pingers, results, strict=True):
            document = result.to_dict()
            document["transmitted"] = pinger.sent
            documents.append(document)
        _print_json({"hosts": documents})
    else:
        summaries = [
            fmt.fping_summary_line(result, width, transmitted=pinger.sent)
            for pinger, result in zip(pingers, results, strict=True)
        ]
        _print(*([] if quiet else [""]), *summaries)  # fping: a blank line unless -q
    return EXIT_REPLY if all(result.is_alive for result in results) else EXIT_NO_REPLY


# ----------------------------------------------------------------------------- trace


async def run_trace(args: argparse.Namespace) -> int:
    """``brokerpkg trace``: traceroute's lines (or JSON) once every hop is settled."""
    from . import cli_format as fmt
    from .trace import traceroute

    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    if args.wait is not None and args.timeout is not None:
        raise ValueError("give -w or -Z, not both (-Z SECONDS is -w SECONDS)")
    check_trace_flags(args)
    if args.multipath:
        return await run_multipath(args, host, options)
    async with _session(args) as session:
        trace = await traceroute(
            host,
            first_ttl=args.first_ttl,
            max_ttl=args.max_ttl,
            probes_per_hop=args.queries or DEFAULT_QUERIES,
            timeout=args.timeout,
            wait=args.wait,
            retries=args.retries,
            session=session,
            family=args.ip_version,
            size=args.size,
            details=_has_details(session),
            resolve_names=not args.numeric,
            paris=args.paris,
            flow=args.flow,
            **options,
        )
    if args.json:
        _print_json(fmt.trace_json(trace))
    else:
        size = args.size or DEFAULT_PACKET_SIZE
        if options["protocol"] == "tcp":  # the kernel's SYN, as traceroute -T says it
            size = fmt.IP_HEADER[6 if ":" in trace.destination else 4] + TCP_SYN_BYTES
        _print(*fmt.traceroute_lines(trace, numeric=args.numeric, show_mpls=args.mpls, size=size))
    return EXIT_REPLY if trace.reached else EXIT_NO_REPLY


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


def _mtr_mode(args: argparse.Namespace) -> str:
    """json, csv, report, or live (a terminal and no format asked for)."""
    if args.json:
        return "json"
    if args.csv:
        return "csv"
    if args.report or args.wide or not sys.stdout.isatty():
        return "report"
    if len(getattr(args, "vantage_points", None) or ()) > 1:
        return "report"  # one live view per terminal: several vantage points report
    return "live"


def _mtr_json(
    args: argparse.Namespace,
    report: MonitorReport | FlowsReport | None,
    local_host: str | None = None,
) -> dict[str, Any]:
    from . import cli_format as fmt

    return fmt.mtr_json(
        report,
        local_host=local_host or _local_host(args),
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


FEATURE_FLAGS = {
    "ip-4": "an IPv4 target",
    "ip-6": "an IPv6 target",
    "icmp": "an icmp probe",
    "udp": "-u",
    "tcp": "-T",
    "sctp": "-S",
    "mark": "-M",
    "local-device": "-I",
    "details": "--details",
    "flow": "--paris, --flow, --flows or --multipath",
}
"""What asked for each helper feature, in the command's words (FeatureNotSupportedError
names the library's parameter)."""


def describe_error(error: BaseException) -> str:
    """One line for a local error, with the fix where one is known."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, RemoteHelperNotFoundError):
        message += (
            f"; fix: install brokerpkg on {error.destination} (`sudo brokerpkg setup` there "
            "puts its helper on PATH), or give --remote-helper PATH"
        )
    elif isinstance(error, HelperNotFoundError):
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
        flag = FEATURE_FLAGS.get(error.feature, error.option)
        message = (
            f"{flag} needs the helper feature {error.feature!r}, which this helper does not "
            f"support (check-support feature {error.feature}: {error.value}); "
            "`brokerpkg doctor` shows what the helper can do"
        )
    elif isinstance(error, ProbeSendError):
        message = error.strerror or message  # without OSError's "[Errno N]" prefix
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
        args = parse_arguments(build_parser(), words)
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
            indent = MTR_JSON_INDENT if args.command == "mtr" else 2
            _print_json(_error_document(args, message), indent)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
