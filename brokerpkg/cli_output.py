"""What the command prints, whichever way a subcommand runs: lines and JSON (into one
vantage point's block when several run at once: :class:`_Blocks`), the one-line
messages of local errors and the JSON document printed with them.

Light on purpose: imported by the blocking subcommands (:mod:`brokerpkg.cli_blocking`)
as well as the asyncio ones (:mod:`brokerpkg.cli_async`), so it imports no asyncio.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .cli_args import (
    DEFAULT_PACKET_SIZE,
    EXIT_NO_REPLY,
    EXIT_REPLY,
    MTR_JSON_INDENT,
    MTR_REPORT_CYCLES,
    TCP_SYN_BYTES,
)
from .defaults import ENVIRONMENT_VARIABLE
from .errors import (
    FeatureNotSupportedError,
    HelperNotFoundError,
    HostResolveError,
    ProbeSendError,
    ProcessError,
    RemoteHelperNotFoundError,
    StateError,
)

if TYPE_CHECKING:
    from .mtr import FlowsReport, MonitorReport
    from .protocol import ProbeResult
    from .results import PingResult, TraceResult

LOCAL_ERRORS = (ValueError, TypeError, HostResolveError, ProcessError, StateError, OSError)
"""Errors that end a command with status 2 and a one-line message."""


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
    """Print ``lines`` in one write: a Ctrl-C (KeyboardInterrupt) between print()'s two
    writes (the text, then its newline: separate system calls when PYTHONUNBUFFERED is
    set) would leave the line open, for the summary's blank line to close."""
    out = _out()
    out.write("".join(f"{line}\n" for line in lines))
    out.flush()


def _print_json(document: object, indent: int = 2) -> None:
    import json

    block = _BLOCK.get()
    if block is not None:
        block.document(document)
        return
    print(json.dumps(document, indent=indent))
    sys.stdout.flush()


def _local_host(args: argparse.Namespace | None = None) -> str:
    """This host's name, as mtr's report shows it; with --from, the vantage point's host
    as given (used when its own name is not known: a failure before it was asked)."""
    vantage_point = None if args is None else getattr(args, "vantage", None)
    if vantage_point is not None:
        from .ssh import parse_destination

        return parse_destination(vantage_point).host
    return socket.gethostname()


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


def print_multiping(
    args: argparse.Namespace,
    results: Sequence[PingResult],
    transmitted: Sequence[int],
    width: int,
    quiet: bool,
) -> int:
    """Print multiping's summaries (or JSON) in input order, ``transmitted`` probes per
    host (those cancelled at an interrupt count as sent); return its exit status."""
    from . import cli_format as fmt

    if args.json:
        documents = []
        for result, sent in zip(results, transmitted, strict=True):
            document = result.to_dict()
            document["transmitted"] = sent
            documents.append(document)
        _print_json({"hosts": documents})
    else:
        summaries = [
            fmt.fping_summary_line(result, width, transmitted=sent)
            for result, sent in zip(results, transmitted, strict=True)
        ]
        _print(*([] if quiet else [""]), *summaries)  # fping: a blank line unless -q
    return EXIT_REPLY if all(result.is_alive for result in results) else EXIT_NO_REPLY


def print_probe(args: argparse.Namespace, result: ProbeResult) -> int:
    """Print ``brokerpkg probe``'s line (or JSON); its exit status.

    Raises ProbeSendError for a probe the host refused to send (a local error).
    """
    from .answers import classify, probe_to_dict

    classify(result)
    if args.json:
        _print_json(probe_to_dict(result))
    else:
        _print(format_result(result))
    return EXIT_REPLY if result.success else EXIT_NO_REPLY


def print_trace(args: argparse.Namespace, trace: TraceResult) -> int:
    """Print ``brokerpkg trace``'s lines (or JSON); its exit status."""
    from . import cli_format as fmt

    if args.json:
        _print_json(fmt.trace_json(trace))
    else:
        size = args.size or DEFAULT_PACKET_SIZE
        if args.protocol == "tcp":  # the kernel's SYN, as traceroute -T says it
            size = fmt.IP_HEADER[6 if ":" in trace.destination else 4] + TCP_SYN_BYTES
        _print(*fmt.traceroute_lines(trace, numeric=args.numeric, show_mpls=args.mpls, size=size))
    return EXIT_REPLY if trace.reached else EXIT_NO_REPLY


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


def report_local_error(args: argparse.Namespace, error: BaseException) -> None:
    """Say a local error on standard error (and with -j, its JSON document)."""
    message = describe_error(error)
    print(f"brokerpkg {args.command}: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        indent = MTR_JSON_INDENT if args.command == "mtr" else 2
        _print_json(_error_document(args, message), indent)


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
