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
took many times that): this module imports only the parser (:mod:`brokerpkg.cli_args`,
argparse and constants: ``--help`` loads nothing else), and each subcommand imports its
own tools.  The one-shot subcommands on the local helper run without an event loop
(:mod:`brokerpkg.cli_blocking`: asyncio is never imported), the others on asyncio
(:mod:`brokerpkg.cli_async`); what every subcommand prints is in
:mod:`brokerpkg.cli_output`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .cli_args import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    UsageError,
    _mtr_mode,
    _wants_json,
    build_parser,
    parse_arguments,
    split_target,
    subcommand_of,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)

if TYPE_CHECKING:
    import argparse

    from .cli_async import DaemonExecutor
    from .cli_output import _Blocks

__all__ = [
    "main",
    # what tests and older callers import from here
    "DaemonExecutor",  # imported on first use (__getattr__)
    "_Blocks",
    "_mtr_mode",
    "_wants_json",
    "build_parser",
    "parse_arguments",
    "split_target",
]

_ELSEWHERE = {"DaemonExecutor": "cli_async", "_Blocks": "cli_output"}
"""Names of the command's other modules that used to be defined here (imported on use,
so that importing this module stays as cheap as the parser)."""


if not TYPE_CHECKING:  # type checkers see the imports above

    def __getattr__(name: str) -> object:
        """Import a name of another command module on first use (PEP 562); raises
        AttributeError for any other name."""
        if name not in _ELSEWHERE:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib

        return getattr(importlib.import_module(f"brokerpkg.{_ELSEWHERE[name]}"), name)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed subcommand: without an event loop when it can (the one-shot
    subcommands on the local helper: :mod:`brokerpkg.cli_blocking`), else on asyncio;
    raises what it raises."""
    from . import cli_blocking

    if cli_blocking.runs(args):
        return cli_blocking.run(args)
    from . import cli_async

    return cli_async.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_arguments(build_parser(subcommand_of(words)), words)
    except UsageError as error:
        sys.stderr.write(error.usage)
        print(error, file=sys.stderr)
        if _wants_json(words):
            from .cli_output import _print_json

            _print_json({"error": str(error)})
        return EXIT_ERROR
    from .cli_output import LOCAL_ERRORS, report_local_error

    try:
        return _run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``| head``): say nothing more on that pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except LOCAL_ERRORS as error:
        report_local_error(args, error)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
