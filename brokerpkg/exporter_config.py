"""What ``brokerpkg exporter`` probes, from its flags and smokeping_prober's YAML file.

Pure: no asyncio, no I/O except reading the configuration file.  The file has
smokeping_prober's format (``targets:`` groups of ``hosts``, ``interval``, ``network``,
``protocol``, ``size``, ``source``, ``tos``, ``labels``), and one key of ours beside
``targets``: ``paths:``, groups of the same shape whose hosts get per-hop metrics.
PyYAML parses it (the ``exporter`` extra installs it); it is imported only when a file
is read.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_LISTEN = ":9374"
DEFAULT_INTERVAL = 1.0
DEFAULT_PAYLOAD = 56
"""smokeping_prober's ``-s``/``size``: ICMP payload bytes (64-byte echo requests)."""
MIN_PAYLOAD = 24
"""smokeping_prober's lower bound; the upper one is the helper's 9000-byte packets."""
MAX_PAYLOAD = 9000 - 40 - 8
"""The largest payload that fits the helper's 9000-byte packets over IPv6."""
DEFAULT_BUCKETS = tuple(0.00005 * 2**exponent for exponent in range(20))
"""smokeping_prober's buckets: 20 doubling from 50 us to 26.2144 s."""
NETWORKS = {"ip": None, "ip4": 4, "ip6": 6}
"""smokeping_prober's ``network`` values and the IP version each asks for."""
PROTOCOLS = ("icmp", "udp")
"""smokeping_prober's ``protocol`` values: both send ICMP echo requests (its ``udp``
selects an unprivileged ICMP datagram socket; the helper chooses its sockets itself)."""
BUILTIN_LABELS = ("ip", "host", "source", "tos")
"""The labels smokeping_prober puts on every series, before the user's own."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class ConfigError(ValueError):
    """The configuration (flags or file) is not valid; the message says where and why."""


def parse_duration(text: str, what: str = "interval") -> float:
    """Seconds from ``1.5`` (plain seconds) or a Go duration (``200ms``, ``1m30s``).

    Raises ConfigError unless the result is a finite number of seconds > 0.
    """
    value = text.strip()
    seconds: float | None = None
    try:
        seconds = float(value)
    except ValueError:
        position, total = 0, 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != position:
                break
            total += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if position == len(value) and position:
            seconds = total
    if seconds is None:
        raise ConfigError(
            f"{what} {text!r} is not a duration (give seconds, or a Go duration such as 200ms, 1m)"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{what} must be more than 0 seconds, got {text!r}")
    return seconds


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``:PORT`` (every address) or ``[V6]:PORT`` -> (host, port); host
    ``""`` means every address.

    Raises ConfigError for anything else.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(f"listen address {text!r}: give ADDR:PORT, :PORT or [IPV6]:PORT")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"listen address {text!r}: port must be 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"listen address {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ConfigError(f"listen address {text!r}: write an IPv6 address as [ADDR]:PORT")
    return host, port


def parse_buckets(text: str) -> tuple[float, ...]:
    """smokeping_prober's ``--buckets``: comma-separated upper bounds, increasing.

    Raises ConfigError for a value that is not a number or bounds out of order.
    """
    try:
        bounds = tuple(float(word) for word in text.split(","))
    except ValueError:
        raise ConfigError(f"buckets {text!r}: give comma-separated numbers") from None
    if not all(math.isfinite(bound) for bound in bounds) or any(
        later <= earlier for earlier, later in itertools.pairwise(bounds)
    ):
        raise ConfigError(f"buckets {text!r}: give finite, increasing numbers")
    return bounds


@dataclass(frozen=True, slots=True)
class Target:
    """One host to probe, with its group's settings.

    ``payload`` is the ICMP payload in bytes (smokeping_prober's size), ``family`` 4, 6
    or None (any), ``source`` the source address or None, ``labels`` the user's labels
    in name order, ``path`` True for per-hop metrics (mtr-style) instead of pings.
    """

    host: str
    interval: float = DEFAULT_INTERVAL
    family: int | None = None
    payload: int = DEFAULT_PAYLOAD
    source: str | None = None
    tos: int = 0
    labels: tuple[tuple[str, str], ...] = ()
    path: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the exporter probes: targets from the flags, then from the file."""

    targets: tuple[Target, ...]
    label_names: tuple[str, ...] = field(default=BUILTIN_LABELS)
    """The label names of the ping series: the built-in ones, then every user label
    name of any group (sorted), as smokeping_prober builds them."""


def _group_error(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _integer(value: object, where: str, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _group_error(where, f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _text(value: object, where: str, name: str) -> str:
    if not isinstance(value, str) or not value or value != value.strip():
        raise _group_error(where, f"{name} must be a non-empty string, got {value!r}")
    return value


def _interval(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise _group_error(where, f"interval must be a duration, got {value!r}")
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        raise _group_error(where, f"interval must be a duration, got {value!r}")
    try:
        return parse_duration(value)
    except ConfigError as error:
        raise _group_error(where, str(error)) from None


def _labels(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise _group_error(where, f"labels must be a mapping of names to values, got {value!r}")
    labels = []
    for name, text in value.items():
        if not isinstance(name, str) or _LABEL_NAME.fullmatch(name) is None:
            raise _group_error(where, f"label name {name!r} is not a Prometheus label name")
        if name.startswith("__"):
            raise _group_error(where, f"label name {name!r} is reserved (starts with __)")
        if name in BUILTIN_LABELS:
            raise _group_error(where, f"label {name!r} is set by the exporter")
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise _group_error(where, f"label {name!r} must have a string value, got {text!r}")
        labels.append((name, str(text)))
    return tuple(sorted(labels))


_GROUP_KEYS = frozenset(
    ("hosts", "host", "interval", "network", "protocol", "size", "source", "tos", "labels")
)


def _group(raw: object, where: str, path: bool) -> list[Target]:
    """The targets of one ``targets:`` (or ``paths:``) group; raises ConfigError."""
    if not isinstance(raw, Mapping):
        raise _group_error(where, f"a group must be a mapping, got {raw!r}")
    unknown = sorted(str(key) for key in raw if key not in _GROUP_KEYS)
    if unknown:
        known = ", ".join(sorted(_GROUP_KEYS))
        raise _group_error(where, f"unknown key {unknown[0]!r} (known: {known})")
    hosts = raw.get("hosts")
    if hosts is None and raw.get("host") is not None:
        hosts = [raw["host"]]
    if not isinstance(hosts, list) or not hosts:
        raise _group_error(where, "hosts must be a non-empty list of host names or addresses")
    network = raw.get("network", "ip")
    if network not in NETWORKS:
        raise _group_error(where, f"network must be one of ip, ip4, ip6, got {network!r}")
    protocol = raw.get("protocol", "icmp")
    if protocol not in PROTOCOLS:
        raise _group_error(where, f"protocol must be icmp or udp, got {protocol!r}")
    source = raw.get("source")
    interval = _interval(raw.get("interval", DEFAULT_INTERVAL), where)
    payload = _integer(raw.get("size", DEFAULT_PAYLOAD), where, "size", MIN_PAYLOAD, MAX_PAYLOAD)
    source_address = None if source is None else _text(source, where, "source")
    tos = _integer(raw.get("tos", 0), where, "tos", 0, 255)
    labels = _labels(raw.get("labels"), where)
    return [
        Target(
            _text(host, where, "each host"),
            interval=interval,
            family=NETWORKS[network],
            payload=payload,
            source=source_address,
            tos=tos,
            labels=labels,
            path=path,
        )
        for host in hosts
    ]


def parse_config(document: object) -> list[Target]:
    """The targets of a parsed configuration document; raises ConfigError."""
    if document is None:
        return []
    if not isinstance(document, Mapping):
        raise ConfigError("the configuration must be a mapping with a targets: list")
    unknown = sorted(str(key) for key in document if key not in ("targets", "paths"))
    if unknown:
        raise ConfigError(f"unknown top-level key {unknown[0]!r} (known: targets, paths)")
    targets: list[Target] = []
    for key, path in (("targets", False), ("paths", True)):
        groups = document.get(key) or []
        if not isinstance(groups, list):
            raise ConfigError(f"{key} must be a list of groups")
        for index, group in enumerate(groups):
            targets.extend(_group(group, f"{key}[{index}]", path))
    return targets


def load_config_file(path: str) -> list[Target]:
    """Read and check smokeping_prober's YAML file at ``path``.

    Raises OSError when it cannot be read, ConfigError when it is not valid YAML or not
    a valid configuration, ImportError when PyYAML is not installed.
    """
    import yaml  # noqa: PLC0415 - only a configuration file needs PyYAML

    with open(path, encoding="utf-8") as stream:
        text = stream.read()
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    try:
        return parse_config(document)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def settings_from(
    hosts: Sequence[str],
    paths: Sequence[str],
    *,
    interval: float = DEFAULT_INTERVAL,
    payload: int = DEFAULT_PAYLOAD,
    file_targets: Iterable[Target] = (),
) -> Settings:
    """Targets from the command line (``hosts`` pinged, ``paths`` traced per hop, with
    ``interval`` and ``payload``) followed by the file's, with the label names.

    Raises ConfigError for a payload out of range or no target at all.
    """
    if not MIN_PAYLOAD <= payload <= MAX_PAYLOAD:
        raise ConfigError(f"size must be from {MIN_PAYLOAD} to {MAX_PAYLOAD} bytes, got {payload}")
    targets = [Target(host, interval=interval, payload=payload) for host in hosts]
    targets += [Target(host, interval=interval, payload=payload, path=True) for host in paths]
    targets += list(file_targets)
    if not targets:
        raise ConfigError("no targets: give hosts, --path HOST or --config FILE")
    extra = sorted({name for target in targets for name, _ in target.labels})
    return Settings(tuple(targets), (*BUILTIN_LABELS, *extra))
