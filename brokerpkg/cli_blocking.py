"""The one-shot subcommands on the local helper, without an event loop: ``probe``,
``ping``, ``multiping`` and ``trace`` (not ``--multipath``) run on a
:class:`~brokerpkg.blocking.BlockingSession`,
so that the command never imports asyncio and starts as fast as Python does.  Their
output is the asyncio runners' (:mod:`brokerpkg.cli_async`, which serves ``--from``):
the same flag checks (:mod:`brokerpkg.cli_args`), the same printing
(:mod:`brokerpkg.cli_output`).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .cli_args import (
    EXIT_NO_REPLY,
    EXIT_REPLY,
    _check_payload,
    _payload,
    _target_port,
    multiping_targets,
    probe_call,
    probe_options,
    split_target,
    trace_options,
    traceroute_arguments,
)
from .cli_output import (
    _numeric_target,
    _print,
    _print_json,
    print_multiping,
    print_probe,
    print_trace,
)

if TYPE_CHECKING:
    from .blocking_ping import Pinging
    from .protocol import ProbeResult

BLOCKING_COMMANDS = frozenset({"probe", "ping", "multiping", "trace"})
"""The subcommands this module runs (:func:`runs`)."""


def runs(args: argparse.Namespace) -> bool:
    """True if the parsed command runs here: a blocking subcommand on the local helper
    (not from --from vantage points, not a multipath trace)."""
    return (
        args.command in BLOCKING_COMMANDS
        and not getattr(args, "vantage_points", None)
        and not getattr(args, "multipath", False)
    )


def run(args: argparse.Namespace) -> int:
    """Run the parsed subcommand (one :func:`runs` accepts); its exit status.

    Raises what the subcommand raises (LOCAL_ERRORS, KeyboardInterrupt, BrokenPipeError:
    :func:`brokerpkg.cli.main` reports them).
    """
    runners: dict[str, Callable[[argparse.Namespace], int]] = {
        "probe": run_probe,
        "ping": run_ping,
        "multiping": run_multiping,
        "trace": run_trace,
    }
    return runners[args.command](args)


def run_probe(args: argparse.Namespace) -> int:
    """``brokerpkg probe``: one probe, its result on one line (or JSON)."""
    from .blocking import BlockingSession

    host, arguments = probe_call(args)
    with BlockingSession(args.helper) as session:
        result = session.probe(host, **arguments)
    return print_probe(args, result)


class _Names:
    """``name (address)`` for the addresses that answer, when names are looked up (each
    once, for at most the resolver's timeout), else the address."""

    def __init__(self, look_up: bool) -> None:
        self.look_up = look_up
        self._known: dict[str, str | None] = {}

    def shown(self, address: str | None) -> str | None:
        from . import cli_format as fmt
        from .addresses import names_now

        if not self.look_up or address is None:
            return address
        if address not in self._known:
            self._known.update(names_now([address]))
        return fmt.named(address, self._known[address])


class _CtrlC:
    """SIGINT, which ends ping and multiping with their summaries: held while the
    session starts (an early Ctrl-C then sends nothing, and every host still gets its
    summary), KeyboardInterrupt once the probing runs.  Taken also when it was ignored
    at start (a script's background job ``&``): ping and fping catch it there too, so
    ``kill -INT`` stops them."""

    def __init__(self) -> None:
        self.came = False
        signal.signal(signal.SIGINT, self._hold)

    def _hold(self, _signal: int, _frame: object) -> None:
        self.came = True

    def probing(self) -> bool:
        """From here SIGINT raises KeyboardInterrupt; False if one came already."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return not self.came


def run_ping(args: argparse.Namespace) -> int:
    """``brokerpkg ping``: ping's lines; Ctrl-C ends it early with the summary (probes
    in flight count as sent, not received), as the asyncio runner does."""
    from . import cli_format as fmt
    from . import protocol as wire
    from .blocking import BlockingSession
    from .blocking_ping import Pinging, run_pings
    from .options import probe_settings

    ctrl_c = _CtrlC()
    host, target_port = split_target(args.target)
    options = probe_options(args, _target_port(target_port, args.port))
    protocol = options["protocol"] or "icmp"
    payload = _payload(args, protocol)
    checks = {"family": args.ip_version, "ttl": args.ttl, "payload_size": payload, **options}
    probe_settings(timeout=args.timeout, **checks)  # refuse bad options before the header
    quiet = args.quiet or args.json
    names = _Names(not (args.numeric or _numeric_target(host)))

    def report(pinging: Pinging, sequence: int, probe: ProbeResult) -> None:
        if not quiet:
            line = fmt.ping_reply_line(probe, sequence + 1, names.shown(probe.responder))
            if line is not None:
                _print(line)

    with BlockingSession(args.helper) as session:
        address = session.resolve(host, args.ip_version)
        _check_payload(payload, address)
        if not args.json:  # ping -q still prints its first line
            port = options["port"] or (
                None if protocol in ("icmp", "udp") else wire.DEFAULT_CONNECTED_PORT
            )
            # iputils names the address in the IPv6 header only
            target = names.shown(address) if ":" in address else address
            _print(fmt.ping_header(host, address, protocol, payload, port, shown=target))
        details = session.features.get("details") == "ok"
        settings = probe_settings(timeout=args.timeout, details=details, **checks)
        template = session.template(address, wire.make_probe_options(**settings.arguments(address)))
        pinging = Pinging(host, address, template, args.count, args.interval)
        began = time.monotonic()
        with contextlib.suppress(KeyboardInterrupt):  # how ping is stopped: the summary follows
            if ctrl_c.probing():
                run_pings(session, [pinging], 1, report)
        elapsed_ms = (time.monotonic() - began) * 1000
    probes = pinging.probes()
    if args.json:
        document = pinging.result().to_dict()
        document["transmitted"] = pinging.sent
        _print_json(document)
    else:
        _print("", *fmt.ping_summary(host, pinging.sent, probes, elapsed_ms))
    return EXIT_REPLY if any(probe.success for probe in probes) else EXIT_NO_REPLY


def run_multiping(args: argparse.Namespace) -> int:
    """``brokerpkg multiping``: fping's lines, summaries in input order; Ctrl-C ends it
    as it ends fping (no more probes, then the summaries of what was sent)."""
    from . import cli_format as fmt
    from . import protocol as wire
    from .blocking import BlockingSession
    from .blocking_ping import Pinging, run_pings
    from .cli_terminal import ProgressLine
    from .options import probe_settings

    ctrl_c = _CtrlC()
    hosts, options, payload = multiping_targets(args)
    checks = {"family": args.ip_version, "ttl": args.ttl, "payload_size": payload, **options}
    quiet = args.quiet or args.json
    width = max(len(host) for host in hosts)
    progress = ProgressLine(sys.stderr, len(hosts))

    def report(pinging: Pinging, sequence: int, result: ProbeResult) -> None:
        if quiet:
            return
        line = fmt.fping_reply_line(pinging.host, width, sequence, result, pinging.results)
        if line is not None:
            progress.clear()
            _print(line)
            progress.update(progress.done)

    pings: list[Pinging] = []
    try:
        with BlockingSession(args.helper) as session:
            addresses = [session.resolve(host, args.ip_version) for host in hosts]
            for address in addresses:
                _check_payload(payload, address)
            details = session.features.get("details") == "ok"
            settings = probe_settings(timeout=args.timeout, details=details, **checks)
            for host, address in zip(hosts, addresses, strict=True):
                probe = wire.make_probe_options(**settings.arguments(address))
                template = session.template(address, probe)
                pings.append(Pinging(host, address, template, args.count, args.interval))
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends in the summaries
                if ctrl_c.probing():
                    run_pings(
                        session,
                        pings,
                        args.concurrency,
                        report,
                        lambda _: progress.update(progress.done + 1),
                    )
    finally:
        progress.finish()
    results = [pinging.result() for pinging in pings]
    return print_multiping(args, results, [pinging.sent for pinging in pings], width, quiet)


def run_trace(args: argparse.Namespace) -> int:
    """``brokerpkg trace``: traceroute's lines (or JSON) once every hop is settled."""
    from .blocking import BlockingSession
    from .blocking_trace import trace_on

    host, options = trace_options(args)
    with BlockingSession(args.helper) as session:
        trace = trace_on(
            session,
            host,
            details=session.features.get("details") == "ok",
            **traceroute_arguments(args, options),
        )
    return print_trace(args, trace)
