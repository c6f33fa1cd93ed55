"""The command line's arguments: every subcommand's parser and the checks of its flags.

Declared apart from the subcommands' code, and importing only argparse and the constants
of :mod:`brokerpkg.defaults`, so that ``brokerpkg --help`` (and a usage error) costs no
more than Python's own start-up and argparse: no asyncio, no session, no tools.  The
few checks that need a library module (``-w``, ``--from``) import it when they run.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
from collections.abc import Callable, Sequence

from ._version import __version__
from .defaults import (
    DEFAULT_SSH,
    ENVIRONMENT_VARIABLE,
    HELPER_NAME,
    IFNAMSIZ,
    MAX_FLOW,
    MAX_REQUEST_LENGTH,
    MAX_TIMEOUT,
    MTR_GRACE,
    MTR_MAX_UNKNOWN,
    MTR_TIMEOUT,
    PROTOCOLS,
    RETRIES,
    RETRIES_MAX,
    SETUP_DEST,
    SSH_ENVIRONMENT_VARIABLE,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)

if TYPE_CHECKING:
    from typing import Any, NoReturn

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
    from .ssh import parse_destination

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


def _probe_arguments(parser: argparse.ArgumentParser) -> None:
    """``brokerpkg probe``'s own arguments."""
    parser.add_argument("target", metavar="HOST")
    _add_ttl(parser)
    _add_timeout(parser, "-W", None, "wait this long for the answer (default 10)")
    _add_packet_size(parser, "-s", "--psize", "--size")
    parser.add_argument(
        "--details",
        action="store_true",
        help="ask for reply details (reply TTL, ICMP type and code, size)",
    )


def _ping_arguments(parser: argparse.ArgumentParser) -> None:
    """``brokerpkg ping``'s own arguments."""
    parser.add_argument("target", metavar="HOST")
    _add_ping_options(parser, count=None)
    parser.add_argument(
        "-n",
        "--numeric",
        action="store_true",
        help="numeric addresses only: no reverse DNS of the addresses that answer",
    )


class _IntermixedHosts(argparse.ArgumentParser):
    """Mixed into a subcommand's parser: options may follow the hosts or come between
    them (``brokerpkg multiping HOST -c 1 HOST``), as fping and smokeping_prober take
    them."""

    _parsing_intermixed = False

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # parse_known_intermixed_args calls parse_known_args itself (Python 3.11):
        # those inner calls parse as argparse does
        if self._parsing_intermixed:
            return super().parse_known_args(args, namespace)
        self._parsing_intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing_intermixed = False


def let_options_follow_hosts(parser: argparse.ArgumentParser) -> None:
    """Let PARSER's options come after or between its hosts (keeping the subparsers'
    own parser class, whose errors are the command line's)."""
    parser.__class__ = type(
        f"Intermixed{type(parser).__name__}", (_IntermixedHosts, type(parser)), {}
    )


def _multiping_arguments(parser: argparse.ArgumentParser) -> None:
    """``brokerpkg multiping``'s own arguments."""
    let_options_follow_hosts(parser)
    parser.add_argument("targets", metavar="HOST", nargs="*")
    parser.add_argument(
        "-f",
        "--file",
        metavar="FILE",
        help="read targets from FILE, one per line (- for standard input)",
    )
    parser.add_argument(
        "--concurrency",
        type=_integer(1),
        default=50,
        metavar="N",
        help="ping at most N hosts at once (default 50)",
    )
    _add_ping_options(parser, count=1)


def _trace_arguments(parser: argparse.ArgumentParser) -> None:
    """``brokerpkg trace``'s own arguments."""
    parser.add_argument("target", metavar="HOST")
    _add_path_options(parser, timeout=None)
    parser.add_argument(
        "-q",
        "--queries",
        type=_integer(1, QUERIES_MAX),
        metavar="N",
        help=f"probes per hop (default {DEFAULT_QUERIES})",
    )
    parser.add_argument(
        "-w",
        "--wait",
        type=_wait,
        metavar="MAX[,HERE,NEAR]",
        help="wait for each answer at most MAX seconds, HERE times the round trip of an "
        "answer from the same hop, NEAR times one from a later hop (traceroute's -w; "
        "default 5,3,10; -w MAX alone turns HERE and NEAR off)",
    )
    _add_retries(
        parser,
        f"probe a silent hop again up to N times, at 0.25, 0.75, 1.75 s ... (default {RETRIES})",
    )
    _add_trace_flow_options(parser)


def _mtr_arguments(parser: argparse.ArgumentParser) -> None:
    """``brokerpkg mtr``'s own arguments."""
    parser.add_argument("target", metavar="HOST")
    _add_path_options(parser, timeout=MTR_TIMEOUT)
    parser.add_argument(
        "-c",
        "--report-cycles",
        dest="count",
        type=_integer(1),
        metavar="COUNT",
        help="cycles to run (default: 10 for reports, endless live)",
    )
    _add_interval(parser, "seconds between cycles (default 1)")
    parser.add_argument(
        "-G",
        "--gracetime",
        type=_seconds(),
        default=MTR_GRACE,
        metavar="SECONDS",
        help=f"wait for late answers after the last cycle (default {MTR_GRACE:g})",
    )
    parser.add_argument(
        "-U",
        "--max-unknown",
        type=_integer(1),
        default=MTR_MAX_UNKNOWN,
        metavar="N",
        help=f"unknown hops in a row before giving up (default {MTR_MAX_UNKNOWN})",
    )
    _add_retries(
        parser, f"probe a silent hop of the first cycle again up to N times (default {RETRIES})"
    )
    parser.add_argument("-b", "--show-ips", action="store_true", help="show addresses beside names")
    parser.add_argument("-r", "--report", action="store_true", help="report mode")
    parser.add_argument(
        "-w",
        "--report-wide",
        dest="wide",
        action="store_true",
        help="wide report (names are not cut)",
    )
    parser.add_argument("-C", "--csv", action="store_true", help="print CSV")
    _add_mtr_flow_options(parser)


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """``brokerpkg doctor``'s own arguments."""
    parser.add_argument("--helper", metavar="PATH", help="check this helper")
    parser.add_argument("-j", "--json", action="store_true", help="print JSON")


def _setup_arguments(parser: argparse.ArgumentParser) -> None:
    """``brokerpkg setup``'s own arguments."""
    parser.add_argument(
        "--dest", metavar="DIR", default=SETUP_DEST, help=f"install into DIR (default {SETUP_DEST})"
    )
    parser.add_argument(
        "--setuid", action="store_true", help="setuid root instead of the file capability"
    )
    parser.add_argument("--remove", action="store_true", help="undo what setup did")
    parser.add_argument(
        "--helper", metavar="PATH", help="install this helper (default: the package's own)"
    )


SUBCOMMANDS: dict[str, tuple[str, bool, Callable[[argparse.ArgumentParser], None]]] = {
    "probe": ("send one probe", True, _probe_arguments),
    "ping": ("ping one host (iputils ping's output)", True, _ping_arguments),
    "multiping": ("ping many hosts (fping's output)", True, _multiping_arguments),
    "trace": ("trace the path (traceroute's output)", True, _trace_arguments),
    "mtr": ("monitor the path (mtr's report, JSON, CSV, live view)", True, _mtr_arguments),
    "doctor": (
        "which helper, its privileges and features, and how to fix what is missing",
        False,
        _doctor_arguments,
    ),
    "setup": (
        "as root: install a privileged helper on PATH for every user (brokerpkg(1))",
        False,
        _setup_arguments,
    ),
}
"""Subcommand -> (its help line, whether it takes the common probe options, what adds
its own arguments), in the order ``--help`` lists them (``exporter`` comes last, from
:mod:`brokerpkg.cli_exporter`)."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every subcommand.  With ``only`` (a subcommand's name, or
    "" for none) just that subcommand gets its arguments and the others their name and
    help line alone: enough to parse a command line of that subcommand (or ``--help``),
    and a trace does not pay for declaring mtr's flags.  :func:`subcommand_of` says
    which one a command line names."""
    parser = _Parser(
        prog="brokerpkg",
        description="Network probes (ping, traceroute, mtr) via brokerpkg-helper.",
        epilog="See brokerpkg(1) for every option, output layout and exit status.",
    )
    parser.add_argument("--version", action="version", version=f"brokerpkg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common: _Parser | None = None
    for name, (help_text, shared, add_arguments) in SUBCOMMANDS.items():
        if only is not None and name != only:
            commands.add_parser(name, help=help_text)
            continue
        if shared and common is None:
            common = _common_parent()
        parents = [common] if shared and common is not None else []
        add_arguments(commands.add_parser(name, parents=parents, help=help_text))

    from .cli_exporter import add_exporter_parser

    add_exporter_parser(commands)
    return parser


def subcommand_of(words: Sequence[str]) -> str:
    """The subcommand a command line names (its first word that is one, as
    :func:`parse_arguments` takes it), or "" when it names none."""
    return next((word for word in words if word in SUBCOMMANDS or word == "exporter"), "")


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


def _add_ttl(parser: argparse.ArgumentParser) -> None:
    """-t/--ttl, the one TTL of probe's and ping's probes."""
    parser.add_argument("-t", "--ttl", type=_integer(1, TTL_MAX), help="time to live / hop limit")


def _add_timeout(
    parser: argparse.ArgumentParser, flag: str, default: float | None, help_text: str
) -> None:
    """``flag``/--timeout SECONDS, each probe's wait for its answer (0 to MAX_TIMEOUT)."""
    parser.add_argument(
        flag,
        "--timeout",
        type=_seconds(0, MAX_TIMEOUT),
        default=default,
        metavar="SECONDS",
        help=help_text,
    )


def _add_interval(parser: argparse.ArgumentParser, help_text: str) -> None:
    """-i/--interval SECONDS (more than 0, default 1): ping's and mtr's pace."""
    parser.add_argument(
        "-i",
        "--interval",
        type=_seconds(positive=True),
        default=1.0,
        metavar="SECONDS",
        help=help_text,
    )


def _add_packet_size(parser: argparse.ArgumentParser, *flags: str) -> None:
    """``flags`` BYTES: the whole packet's size (probe's, trace's and mtr's -s)."""
    parser.add_argument(
        *flags,
        dest="size",
        type=_integer(0, PACKET_MAX),
        metavar="BYTES",
        help="whole packet size, IP header included (default 64)",
    )


def _add_retries(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--retries N (0 to RETRIES_MAX, default RETRIES): trace's and mtr's further tries."""
    parser.add_argument(
        "--retries",
        type=_integer(0, RETRIES_MAX),
        default=RETRIES,
        metavar="N",
        help=help_text,
    )


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
    _add_interval(parser, "seconds between probes to a host (default 1)")
    _add_timeout(parser, "-W", 2.0, "wait this long for each answer (default 2)")
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
    _add_ttl(parser)


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
    _add_timeout(
        parser,
        "-Z",
        timeout,
        "same as -w SECONDS"
        if timeout is None
        else f"wait this long for each answer (default {timeout:g})",
    )
    _add_packet_size(parser, "-s", "--psize")
    parser.add_argument(
        "-n",
        "--no-dns",
        dest="numeric",
        action="store_true",
        help="numeric addresses, no reverse DNS",
    )
    parser.add_argument("-e", "--mpls", action="store_true", help="show MPLS labels")


def _finite(accepts: Callable[[float], bool], allowed: str) -> Callable[[str], float]:
    """A finite number that ``accepts`` takes (``allowed`` says which, for the error)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and accepts(value)):
            raise _out_of_range(text, allowed)
        return value

    return parse


_percent = _finite(lambda value: 0 < value < 100, "a percent above 0 and below 100")
"""A confidence in percent, above 0 and below 100."""
_rate = _finite(lambda value: value > 0, "more than 0 probes per second")
"""Probes per second, more than 0."""


def _add_trace_flow_options(trace: argparse.ArgumentParser) -> None:
    """trace's --paris, --flow and --multipath (with the MDA's options)."""
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


def _add_mtr_flow_options(mtr: argparse.ArgumentParser) -> None:
    """mtr's --paris and --flows."""
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


def probe_call(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The host and keyword arguments of ``brokerpkg probe``'s one probe, the same for
    either driver's ``probe()``.  Raises UsageError for a bad ``HOST:PORT``."""
    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    return host, {
        "ip_version": args.ip_version,
        "ttl": args.ttl,
        "timeout": args.timeout,
        "size": args.size,
        "details": args.details,
        **options,
    }


def trace_options(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The host of ``brokerpkg trace`` and its probe options (:func:`probe_options`),
    once its flags are known to go together.

    Raises ValueError for a bad ``HOST:PORT``, -w with -Z, and as
    :func:`check_trace_flags` and :func:`probe_options`.
    """
    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    if args.wait is not None and args.timeout is not None:
        raise ValueError("give -w or -Z, not both (-Z SECONDS is -w SECONDS)")
    check_trace_flags(args)
    return host, options


def traceroute_arguments(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of either driver's traceroute for ``brokerpkg trace`` with
    the probe ``options`` (all but the session and ``details``, which its helper says)."""
    return {
        "first_ttl": args.first_ttl,
        "max_ttl": args.max_ttl,
        "probes_per_hop": args.queries or DEFAULT_QUERIES,
        "timeout": args.timeout,
        "wait": args.wait,
        "retries": args.retries,
        "family": args.ip_version,
        "size": args.size,
        "resolve_names": not args.numeric,
        "paris": args.paris,
        "flow": args.flow,
        **options,
    }


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


def _payload(args: argparse.Namespace, protocol: str) -> int | None:
    """ping's -s: 56 by default for icmp and udp; tcp and sctp take none."""
    if args.payload is not None:
        return int(args.payload)
    return PING_PAYLOAD if protocol in ("icmp", "udp") else None


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


def multiping_targets(args: argparse.Namespace) -> tuple[list[str], dict[str, Any], int | None]:
    """multiping's hosts, probe options and payload size, checked before anything is
    sent: one port for all targets, the options as every probe will carry them.
    Raises OSError (reading -f), ValueError."""
    from .options import probe_settings

    parsed = [split_target(target) for target in read_targets(args)]
    ports = {port for _, port in parsed if port is not None}
    if len(ports) > 1:
        raise ValueError(
            f"multiping probes one port for all targets: the targets name ports {sorted(ports)}"
        )
    options = probe_options(args, _target_port(next(iter(ports), None), args.port))
    payload = _payload(args, options["protocol"] or "icmp")
    probe_settings(
        family=args.ip_version, timeout=args.timeout, ttl=args.ttl, payload_size=payload, **options
    )
    return [host for host, _ in parsed], options, payload
