"""Probe templates, worked out once per host and options, and the other pure steps
both drivers (the asyncio :class:`~brokerpkg.session.Session` and the blocking
:class:`~brokerpkg.blocking.BlockingSession`) take alike: the feature questions at open,
the in-flight limit they give, and what a probe's result means to its caller.

A :class:`~brokerpkg.engine.ProbeTemplate` is what every probe with the same target and
options shares: the encoded request without its token, the Python-side deadline, and
the request's fields of every result.  :func:`probe_template` makes one from checked
options and resolved addresses, :func:`given_template` from arguments sent as given;
:class:`TypedCache` remembers them by the arguments they were made from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from . import protocol as wire
from .engine import ProbeTemplate
from .errors import FeatureNotSupportedError, InvalidProbeError, ProcessError
from .protocol import ProbeOptions, ProbeResult

DEFAULT_PROBE_GRACE = 2.0
DEFAULT_OPEN_TIMEOUT = 10.0
DEFAULT_MAX_IN_FLIGHT = 1024
"""In-flight limit when the helper does not say (mtr-packet 0.95 allows 1024)."""

TEMPLATES_KEPT = 4096
"""Probe templates cached per session (the caches are emptied when they grow past this)."""

_ADDRESS_WORDS = frozenset(("ip-4", "ip-6"))
REFUSALS = frozenset((wire.INVALID_ARGUMENT, wire.UNKNOWN_COMMAND))
"""Reply words of a probe the helper refused: :func:`probe_outcome` raises for these
alone, so that a hot path may return any other result without calling it."""
_Cached = TypeVar("_Cached")


class TypedCache(Generic[_Cached]):
    """Values remembered by a tuple of the arguments they were validated from.

    Equal is not enough (True == 1 == 1.0, and validation refuses a bool or a float
    ttl): every item that is not None must also have the type it had when the value
    was stored.  Emptied when it grows past TEMPLATES_KEPT entries.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], tuple[_Cached, tuple[tuple[int, type], ...]]]
        self._entries = {}

    def get(self, key: tuple[object, ...]) -> _Cached | None:
        """The value stored under ``key`` with the same item types, or None.

        Raises TypeError when an item of ``key`` is unhashable.
        """
        known = self._entries.get(key)
        if known is None:
            return None
        value, types = known
        for index, kind in types:
            if key[index].__class__ is not kind:
                return None
        return value

    def put(self, key: tuple[object, ...], value: _Cached) -> None:
        """Remember ``value`` for ``key`` and the types of its items."""
        if len(self._entries) >= TEMPLATES_KEPT:
            self._entries.clear()
        self._entries[key] = (
            value,
            tuple((index, item.__class__) for index, item in enumerate(key) if item is not None),
        )

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()


def check_features(options: ProbeOptions, ip_version: int, features: Mapping[str, str]) -> None:
    """Raise FeatureNotSupportedError for the first option the helper lacks."""
    for feature, option in wire.required_features(options, ip_version):
        value = features.get(feature, "no")
        if value != "ok":
            raise FeatureNotSupportedError(feature, value, option)


def probe_template(
    options: ProbeOptions,
    target: str,
    ip_version: int,
    local: str | None,
    features: Mapping[str, str],
    probe_grace: float,
) -> ProbeTemplate:
    """The template of probes of ``target`` (numeric, of ``ip_version``) from ``local``
    (numeric, or None) with ``options``, for a helper with ``features``.

    Raises FeatureNotSupportedError when the helper lacks what an option needs.
    """
    check_features(options, ip_version, features)
    fractional = features.get("fractional-timeout") == "ok"
    arguments = wire.probe_arguments(options, target, local, fractional_timeout=fractional)
    deadline = wire.helper_timeout(options.timeout, fractional) + probe_grace
    tail = wire.encode_request_tail(wire.SEND_PROBE, arguments)
    ttl = options.ttl if options.ttl is not None else wire.DEFAULT_TTL
    protocol = options.protocol or wire.DEFAULT_PROTOCOL
    port = wire.effective_port(options)
    result_tail = (target, ttl, protocol, port, None, None, None, None, None)
    return ProbeTemplate(tail, deadline, target, options, result_tail)


def given_template(arguments: Sequence[tuple[str, str]], probe_grace: float) -> ProbeTemplate:
    """The template of a send-probe with ``arguments`` exactly as given: its deadline
    is the ``timeout`` argument's seconds (the helper's default when it is absent or
    not a number) plus ``probe_grace``, its results' request fields None but the target.

    Raises TypeError/ValueError when a name or value is not one wire word or the line
    is too long.
    """
    tail = wire.encode_request_tail(wire.SEND_PROBE, arguments)
    target = None
    seconds = wire.DEFAULT_TIMEOUT
    for name, value in arguments:
        if name in _ADDRESS_WORDS:
            target = value
        elif name == "timeout":
            seconds = wire.timeout_argument_seconds(value)
    result_tail = (target, None, None, None, None, None, None, None, None)
    return ProbeTemplate(tail, seconds + probe_grace, target, None, result_tail)


def feature_question(name: str) -> bytes:
    """The check-support request (without its token) asking for feature ``name``."""
    return wire.encode_request_tail(wire.CHECK_SUPPORT, [("feature", name)])


def require_send_probe(features: Mapping[str, str], description: str) -> None:
    """Raise ProcessError unless the helper (``description``) answered ``send-probe`` ok."""
    if features["send-probe"] != "ok":
        raise ProcessError(
            f"helper {description} does not support send-probe "
            f"(check-support feature send-probe: {features['send-probe']})"
        )


def in_flight_limit(argument: int | None, features: Mapping[str, str]) -> int:
    """The in-flight limit: ``argument``, else the helper's max-probes, else
    DEFAULT_MAX_IN_FLIGHT."""
    if argument is not None:
        return argument
    advertised = features.get("max-probes", "")
    limit = int(advertised) if advertised.isascii() and advertised.isdigit() else 0
    return limit or DEFAULT_MAX_IN_FLIGHT


def probe_outcome(result: ProbeResult, description: str) -> ProbeResult:
    """``result``, as a probe returns it to its caller.

    Raises InvalidProbeError when the helper refused the probe, ProcessError when the
    helper (``description``) does not know send-probe.
    """
    if result.result == wire.INVALID_ARGUMENT:
        raise InvalidProbeError(result.reason)
    if result.result == wire.UNKNOWN_COMMAND:
        raise ProcessError(f"helper {description} does not know send-probe")
    return result
