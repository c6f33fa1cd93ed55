"""Command line (the only module that prints).  Minimal for now: ``brokerpkg probe HOST``.

Exit status: 0 when the target answered, 1 when the probe got another result, 2 on an
error (bad option, helper missing or failing, unresolvable host).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from . import __version__
from .errors import HostResolveError, ProcessError, StateError
from .protocol import PROTOCOLS, ProbeResult
from .session import Session

EXIT_REPLY = 0
EXIT_NO_REPLY = 1
EXIT_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    """The argument parser: ``probe`` and its options."""
    parser = argparse.ArgumentParser(
        prog="brokerpkg", description="Network probes via brokerpkg-helper."
    )
    parser.add_argument("--version", action="version", version=f"brokerpkg {__version__}")
    parser.add_argument("--helper", help="path of brokerpkg-helper (default: search)")
    commands = parser.add_subparsers(dest="command", required=True)
    probe = commands.add_parser("probe", help="send one probe and print its result")
    probe.add_argument("host")
    family = probe.add_mutually_exclusive_group()
    family.add_argument("-4", dest="ip_version", action="store_const", const=4)
    family.add_argument("-6", dest="ip_version", action="store_const", const=6)
    probe.add_argument("--protocol", choices=PROTOCOLS)
    probe.add_argument("--port", type=int)
    probe.add_argument("--ttl", type=int)
    probe.add_argument("--timeout", type=float)
    probe.add_argument("--details", action="store_true")
    return parser


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


async def _probe(arguments: argparse.Namespace) -> ProbeResult:
    """Open a session, send the probe, close."""
    async with Session(arguments.helper) as session:
        return await session.probe(
            arguments.host,
            ip_version=arguments.ip_version,
            protocol=arguments.protocol,
            port=arguments.port,
            ttl=arguments.ttl,
            timeout=arguments.timeout,
            details=arguments.details,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = _parser().parse_args(argv)
    try:
        result = asyncio.run(_probe(arguments))
    except (ValueError, TypeError, HostResolveError, ProcessError, StateError) as error:
        print(f"brokerpkg: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(format_result(result))
    return EXIT_REPLY if result.success else EXIT_NO_REPLY


if __name__ == "__main__":
    sys.exit(main())
