"""The probe options of the high-level functions, declared once, and their checks.

Every high-level function (:func:`~brokerpkg.ping.ping`, ``multiping``,
``multiping_iter``, :func:`~brokerpkg.trace.traceroute`, :func:`~brokerpkg.mtr.monitor`,
``monitor_flows``, :func:`~brokerpkg.multipath.multipath_trace`) takes its probe options
as ``**options`` typed with one of the TypedDicts here (PEP 692's ``Unpack``), so that
their names, types and ranges are written once and a type checker checks every call.
They nest, each adding what fewer functions take:

- :class:`CommonOptions`: what every function takes (``multipath_trace`` takes these
  alone: it chooses the TTLs, flows and ports itself);
- :class:`TraceOptions`: and ``local_port`` (``traceroute``, ``monitor``: the TTL is what
  they vary; their ``paris`` and ``flow`` arguments choose the flow);
- :class:`PingOptions`: and ``ttl`` (``ping``, ``multiping``, ``multiping_iter``);
- :class:`ProbeOptionsDict`: and ``flow``: all of them (:func:`probe_settings`).

At run time :func:`probe_settings` checks the values (through
:func:`brokerpkg.protocol.make_probe_options`, with the wire's ranges) and
:func:`refuse_unknown_options` the names, with Python's own message for an unknown
keyword argument.  Also here: the checks of the functions' other arguments
(:func:`check_int`, :func:`check_seconds`, :func:`paris_flow`).  Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

from . import protocol as wire
from .protocol import ProbeOptions

__all__ = [
    "CommonOptions",
    "PingOptions",
    "ProbeOptionsDict",
    "ProbeSettings",
    "TraceOptions",
    "check_int",
    "check_ping",
    "check_seconds",
    "host_list",
    "paris_flow",
    "probe_settings",
    "refuse_unknown_options",
]

IP_HEADER_SIZE = {4: 20, 6: 40}
PAYLOAD_OFFSET = {"icmp": 8, "udp": 8}
"""Bytes between the IP header and the payload, for protocols where payload_size applies."""
MAX_SIZE = 9000
"""The helper's largest packet (``size``), headers included."""


# ----------------------------------------------------------------------------- the options


class CommonOptions(TypedDict, total=False):
    """The probe options every high-level function takes (None: the helper's default)."""

    family: int | None
    """4 or 6: the address family to resolve the host to and probe (None: the first
    address the name has)."""
    protocol: str | None
    """``"icmp"`` (the default), ``"udp"``, ``"tcp"`` (a SYN) or ``"sctp"`` (an INIT)."""
    port: int | None
    """Destination port, 1-65535 (udp, tcp, sctp only)."""
    size: int | None
    """The whole packet as the helper sends it, IP header included: 0-9000 (not tcp)."""
    payload_size: int | None
    """Bytes after the ICMP or UDP header, 0-8972 (``ping -s``, icmplib's payload_size;
    icmp and udp only; IPv4 or IPv6 packets of at most 9000 bytes; not with ``size``)."""
    bit_pattern: int | None
    """The byte the payload is filled with, 0-255 (not tcp)."""
    tos: int | None
    """The IPv4 type of service or IPv6 traffic class byte, 0-255."""
    mark: int | None
    """The packets' firewall mark (SO_MARK), 0-4294967295."""
    local_ip: str | None
    """The source address (a name or number of the probe's family)."""
    local_device: str | None
    """The interface to send from (SO_BINDTODEVICE), a name of 1-15 characters."""
    details: bool
    """True to get each answer's reply_ttl, icmp_type, icmp_code and reply_size."""


class TraceOptions(CommonOptions, total=False):
    """The probe options of traceroute and monitor: every one but ``ttl`` (what they
    vary) and ``flow`` (their own ``paris``/``flow`` arguments)."""

    local_port: int | None
    """Source port, 1024-65535 (udp, tcp, sctp only)."""


class PingOptions(TraceOptions, total=False):
    """The probe options of ping, multiping and multiping_iter."""

    ttl: int | None
    """The probes' TTL (IPv6 hop limit), 1-255."""


class ProbeOptionsDict(PingOptions, total=False):
    """Every probe option (:func:`probe_settings`): those of :class:`PingOptions` and the
    flow."""

    flow: int | None
    """The flow of flow-stable (Paris) probes, 0-65535: probes to one target with the
    same protocol, port, tos and flow share every field that per-flow load balancers
    hash, whatever their TTL (the helper's ``flow`` extension)."""


def refuse_unknown_options(
    function: str, options: Mapping[str, object], accepted: Collection[str]
) -> None:
    """Refuse the names in ``options`` that ``function`` does not take (``accepted``: a
    TypedDict's ``__optional_keys__``), as Python refuses an unknown keyword argument.

    Raises TypeError (``ping() got an unexpected keyword argument 'colour'``).
    """
    for name in options:
        if name not in accepted:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")


# ----------------------------------------------------------------------------- other arguments


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an int (not bool) in [low, high].

    Raises TypeError for another type, ValueError when out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_seconds(name: str, value: object, *, positive: bool = False) -> float:
    """Return ``value`` as float seconds if it is a finite number >= 0 (> 0 if positive).

    Raises TypeError for a non-number, ValueError when out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        relation = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {relation}, got {value!r}")
    return seconds


PARIS_FLOW = 1
"""The flow of a Paris trace or monitor when none is named."""


def paris_flow(paris: object, flow: object) -> int | None:
    """The flow number of flow-stable (Paris) probes: ``flow`` (0-65535; naming one
    implies ``paris``), PARIS_FLOW with ``paris`` alone, None for neither (classic
    probes, each its own flow).

    Raises TypeError for a paris that is not a bool or a flow that is not an int,
    ValueError for a flow out of range.
    """
    if not isinstance(paris, bool):
        raise TypeError(f"paris must be True or False, got {paris!r}")
    if flow is None:
        return PARIS_FLOW if paris else None
    return check_int("flow", flow, 0, wire.MAX_FLOW)


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Probe options shared by all probes of a call, checked before anything is sent.

    Built by :func:`probe_settings`; :meth:`arguments` gives the keyword arguments of
    :meth:`Session.probe` for one resolved address.
    """

    options: ProbeOptions
    payload_size: int | None

    def arguments(self, address: str) -> dict[str, Any]:
        """Keyword arguments for ``Session.probe(address, ...)``.

        ``payload_size`` becomes the helper's ``size`` (IP header + ICMP/UDP header +
        payload) for the address's family.  Raises ValueError when that exceeds 9000.
        """
        fields = self.options._asdict()
        if self.payload_size is not None:
            version = wire.ip_version_of(address)
            protocol = self.options.protocol or wire.DEFAULT_PROTOCOL
            size = IP_HEADER_SIZE[version] + PAYLOAD_OFFSET[protocol] + self.payload_size
            if size > MAX_SIZE:
                raise ValueError(
                    f"payload_size {self.payload_size} makes IPv{version} packets of {size} "
                    f"bytes, more than {MAX_SIZE}"
                )
            fields["size"] = size
        return fields


def probe_settings(
    *, timeout: float | None = None, **options: Unpack[ProbeOptionsDict]
) -> ProbeSettings:
    """Check probe options (names, types, ranges, and whether they apply) and bundle
    them with ``timeout`` (seconds, 0-3600: each probe's wait for its answer).

    The options are those of :class:`ProbeOptionsDict`.  Options that cannot apply are
    refused rather than ignored: ``port``/``local_port`` for icmp, ``payload_size`` for
    tcp and sctp, ``size``/``payload_size``/``bit_pattern`` for tcp (a TCP probe is a
    SYN without payload).

    Raises TypeError or ValueError naming the option.
    """
    refuse_unknown_options("probe_settings", options, ProbeOptionsDict.__optional_keys__)
    fields: dict[str, object] = dict(options)
    ip_version = fields.pop("family", None)
    payload_size = fields.pop("payload_size", None)
    _check_payload_applies(fields.get("protocol"), fields.get("size"), payload_size)
    if fields.get("protocol") == "tcp":
        _check_no_payload(fields.get("size"), payload_size, fields.get("bit_pattern"))
    checked = wire.make_probe_options(ip_version=ip_version, timeout=timeout, **fields)
    return ProbeSettings(checked, options.get("payload_size"))


def _check_payload_applies(protocol: object, size: object, payload_size: object) -> None:
    """Refuse size with payload_size, a payload_size out of range or for a protocol
    without one; raises TypeError/ValueError."""
    if size is not None and payload_size is not None:
        raise ValueError("give size (whole packet) or payload_size (after the header), not both")
    if payload_size is None:
        return
    largest = MAX_SIZE - IP_HEADER_SIZE[4] - PAYLOAD_OFFSET["icmp"]  # IPv6 is checked later
    check_int("payload_size", payload_size, 0, largest)
    name = protocol or wire.DEFAULT_PROTOCOL
    if name not in PAYLOAD_OFFSET:
        raise ValueError(
            f"payload_size applies to icmp and udp probes, not {name}; give size instead"
        )


def _check_no_payload(size: object, payload_size: object, bit_pattern: object) -> None:
    """Refuse the payload options for tcp probes (a SYN has none); raises ValueError."""
    for option, value in (
        ("size", size),
        ("payload_size", payload_size),
        ("bit_pattern", bit_pattern),
    ):
        if value is not None:
            raise ValueError(f"{option} does not apply to tcp probes (a SYN has no payload)")


# ----------------------------------------------------------------------------- calls


def check_ping(count: object, interval: object, timeout: object) -> tuple[int, float]:
    """Check count (>= 1), interval and timeout; return count and interval."""
    check_seconds("timeout", timeout)
    return check_int("count", count, 1), check_seconds("interval", interval)


def host_list(hosts: Iterable[str]) -> list[str]:
    """The hosts of multiping as a list.

    Raises TypeError for one str (or bytes) instead of a collection of them, and for a
    host that is not a str.
    """
    if isinstance(hosts, str | bytes | bytearray):
        raise TypeError(
            f"hosts must be a collection of host names, not one {type(hosts).__name__} "
            f"({hosts!r}); for one host use ping() or [{hosts!r}]"
        )
    names = list(hosts)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"hosts must be str, got {type(name).__name__} {name!r}")
    return names
