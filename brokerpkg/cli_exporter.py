"""``brokerpkg exporter``: its flags (smokeping_prober's, and ours), and running it.

Registering the subcommand imports nothing beyond argparse; running it imports
:mod:`brokerpkg.exporter`, which needs the ``exporter`` extra (prometheus_client and
PyYAML): without it the command says how to install it.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

from .cli_args import let_options_follow_hosts
from .defaults import HELPER_NAME

EXIT_ERROR = 2
EXTRA_HINT = "python3 -m pip install 'brokerpkg[exporter]'"


def _duration(text: str) -> float:
    from .exporter_config import ConfigError, parse_duration

    try:
        return parse_duration(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _integer(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a decimal integer: {text!r}")
    return int(text)


def add_exporter_parser(commands: Any) -> None:
    """Add the ``exporter`` subcommand to ``commands`` (argparse's subparsers)."""
    parser = commands.add_parser(
        "exporter",
        help="serve Prometheus metrics (smokeping_prober's and blackbox_exporter's)",
        description="Probe targets on a schedule and serve Prometheus metrics: "
        "smokeping_prober's on /metrics, blackbox_exporter's on /probe, per-hop series "
        "for --path targets.",
    )
    let_options_follow_hosts(parser)
    parser.add_argument("hosts", metavar="HOST", nargs="*", help="hosts to ping")
    parser.add_argument(
        "--helper",
        metavar="PATH",
        help="brokerpkg-helper to run (default: $BROKERPKG_HELPER, then a search)",
    )
    parser.add_argument(
        "--listen",
        "--web.listen-address",
        dest="listen",
        default=":9374",
        metavar="ADDR:PORT",
        help="where to serve HTTP (default :9374, every address)",
    )
    parser.add_argument(
        "--config",
        "--config.file",
        dest="config",
        metavar="FILE",
        help="smokeping_prober's YAML file (reloaded on SIGHUP and POST /-/reload)",
    )
    parser.add_argument(
        "-i",
        "--interval",
        "--ping.interval",
        dest="interval",
        type=_duration,
        default=1.0,
        metavar="DURATION",
        help="seconds between probes to each host given here: 0.2, or 200ms (default 1s)",
    )
    parser.add_argument(
        "-s",
        "--size",
        "--ping.size",
        dest="size",
        type=_integer,
        default=56,
        metavar="BYTES",
        help="ICMP payload bytes of the hosts given here (default 56)",
    )
    parser.add_argument(
        "--buckets",
        metavar="LIST",
        help="comma-separated histogram bounds in seconds (default smokeping_prober's "
        "20 doubling from 5e-05)",
    )
    parser.add_argument(
        "--path",
        dest="paths",
        action="append",
        default=[],
        metavar="HOST",
        help="monitor the path to HOST per hop (mtr-style; repeatable)",
    )
    parser.add_argument(
        "--from",
        dest="vantages",
        action="append",
        default=[],
        metavar="[USER@]HOST",
        help="probe from HOST too, through its helper over ssh ($BROKERPKG_SSH; repeatable)",
    )
    parser.add_argument(
        "--remote-helper",
        metavar="PATH",
        help="the helper to run on --from hosts (default brokerpkg-helper)",
    )
    parser.add_argument(
        "--local",
        action="store_true",
        help="with --from: probe from this host as well",
    )
    parser.add_argument(
        "-W",
        "--timeout",
        type=_duration,
        default=5.0,
        metavar="DURATION",
        help="wait this long for each answer before counting the probe lost (default 5s)",
    )
    parser.add_argument(
        "--resolve-interval",
        type=_duration,
        default=60.0,
        metavar="DURATION",
        help="look target names up again this often (default 60s)",
    )
    parser.add_argument(
        "--privileged",
        action="store_true",
        help="accepted for smokeping_prober's command lines; the helper holds the privilege",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        choices=("debug", "info", "warn", "error"),
        default="info",
        help="log messages of this severity and above on standard error (default info)",
    )


def _fail(message: str) -> int:
    print(f"brokerpkg exporter: {message}", file=sys.stderr)
    return EXIT_ERROR


def _fail_without_extra(error: ImportError) -> int:
    return _fail(f"needs the exporter extra ({error}); install it with {EXTRA_HINT}")


async def run_exporter(args: argparse.Namespace) -> int:
    """Run the exporter until SIGTERM or SIGINT; 2 when it cannot start."""
    try:
        from . import exporter as exp
        from . import exporter_config as config
    except ImportError as error:
        return _fail_without_extra(error)
    import asyncio
    import logging
    import signal

    from .errors import ProcessError
    from .session import Session

    level = {"warn": logging.WARNING}.get(args.log_level, args.log_level.upper())
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        listen = config.parse_listen(args.listen)
        buckets = (
            config.DEFAULT_BUCKETS if args.buckets is None else config.parse_buckets(args.buckets)
        )
        load = functools.partial(_load, args, config)
        load()  # refuse a bad configuration before anything starts
        factories = _vantages(args, exp, Session)
    except (config.ConfigError, OSError, ValueError) as error:
        return _fail(str(error))
    except ImportError as error:  # PyYAML, which only a configuration file needs
        return _fail_without_extra(error)
    exporter = exp.Exporter(
        load,
        factories,
        listen=listen,
        buckets=buckets,
        timeout=args.timeout,
        resolve_interval=args.resolve_interval,
    )
    loop = asyncio.get_running_loop()
    try:
        await exporter.start()
    except (OSError, ProcessError) as error:
        await exporter.close()
        return _fail(str(error))
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, exporter.stop)
    loop.add_signal_handler(signal.SIGHUP, exporter.reload_soon)
    logging.getLogger("brokerpkg.exporter").info(
        "listening on %s port %s", listen[0] or "every address", exporter.ports
    )
    try:
        await exporter.run()
    finally:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(number)
        await exporter.close()
    return 0


def _load(args: argparse.Namespace, config: Any) -> Any:
    """The settings from the flags and the configuration file (read again each time)."""
    file_targets = [] if args.config is None else config.load_config_file(args.config)
    return config.settings_from(
        args.hosts,
        args.paths,
        interval=args.interval,
        payload=args.size,
        file_targets=file_targets,
    )


def _vantages(args: argparse.Namespace, exp: Any, session_class: Any) -> list[tuple[str, Any]]:
    """(source label, session factory) for each vantage point; raises ValueError."""
    vantages: list[tuple[str, Any]] = []
    if not args.vantages or args.local:
        vantages.append(("", functools.partial(session_class, args.helper)))
    for destination in args.vantages:
        exp.remote_session(destination, args.remote_helper or HELPER_NAME)  # checks $BROKERPKG_SSH
        vantages.append(
            (
                destination,
                functools.partial(
                    exp.remote_session, destination, args.remote_helper or HELPER_NAME
                ),
            )
        )
    return vantages
