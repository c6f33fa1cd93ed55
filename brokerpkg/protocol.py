"""The helper's line protocol: encode requests, parse replies, build results.

Pure functions and NamedTuples only: no asyncio, no I/O.  ``session.py`` moves the bytes;
this module decides what they mean.  The wire format is the one of mtr-packet 0.95 plus
opt-in extensions (the reference is man/brokerpkg-helper.8, whose words helper/wire.h names):

    request: ``TOKEN COMMAND [NAME VALUE]...\\n``
    reply:   ``TOKEN REPLY [NAME VALUE]...\\n``

Every option is validated here first (type and range), so a bad value raises
:class:`TypeError` or :class:`ValueError` in Python and never reaches the helper.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Container, Sequence
from typing import NamedTuple

from . import defaults
from .errors import ProtocolError

# the limits the command line's parser shows too, kept with it (importing nothing)
IFNAMSIZ = defaults.IFNAMSIZ
MAX_FLOW = defaults.MAX_FLOW
MAX_REQUEST_LENGTH = defaults.MAX_REQUEST_LENGTH
MAX_TIMEOUT = defaults.MAX_TIMEOUT
PROTOCOLS = defaults.PROTOCOLS

MAX_TOKEN = 2147483647
"""Largest request token the helper accepts (tokens are 1..MAX_TOKEN; 0 is the helper's)."""

DEFAULT_PROTOCOL = "icmp"
DEFAULT_TTL = 255
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECTED_PORT = 80
"""Destination port the helper uses for tcp and sctp when none is given."""

MAX_TIMEOUT_DECIMALS = 6

# Reply words (mtr-packet 0.95 words; see man/brokerpkg-helper.8, REPLIES).
REPLY = "reply"
TTL_EXPIRED = "ttl-expired"
NO_REPLY = "no-reply"
NO_ROUTE = "no-route"
INVALID_ARGUMENT = "invalid-argument"
UNKNOWN_COMMAND = "unknown-command"
FEATURE_SUPPORT = "feature-support"
COMMAND_PARSE_ERROR = "command-parse-error"
COMMAND_BUFFER_OVERFLOW = "command-buffer-overflow"

# Commands.
SEND_PROBE = "send-probe"
CHECK_SUPPORT = "check-support"

# Features a session asks about when it opens.
FEATURES = (
    "version",
    "send-probe",
    "ip-4",
    "ip-6",
    "icmp",
    "udp",
    "tcp",
    "sctp",
    "mark",
    "local-device",
    "fractional-timeout",
    "details",
    "sockets",
    "max-probes",
    "flow",
)

_WIRE_WORD = re.compile(r"[\x21-\x7e]+")
"""A word: printable ASCII, never a space."""
_WIRE_LINE = re.compile(r"[\x20-\x7e]*")
"""A line: printable ASCII words and spaces."""


class Mpls(NamedTuple):
    """One MPLS label stack entry quoted by a router in a time-exceeded (RFC 4950)."""

    label: int
    traffic_class: int
    bottom_of_stack: bool
    ttl: int


class ProbeResult(NamedTuple):
    """The outcome of one probe, as :class:`~brokerpkg.Session` and the tools return it.

    The first five fields are mtrpacket's: ``success`` (the target itself answered),
    ``result`` (the helper's reply word: reply, ttl-expired, no-reply, ...),
    ``time_ms`` (round-trip time, or None), ``responder`` (address that answered, or
    None) and ``mpls`` (label stack entries, possibly empty).  The rest describe the
    request (``target``, ``ttl``, ``protocol``, ``port``, with the helper's defaults
    filled in; None but the target for a request sent as given by
    ``Session.probe_arguments``) and, when ``details`` was asked for, the received reply
    (``reply_ttl``, ``icmp_type``, ``icmp_code``, ``reply_size``).  ``reason`` carries
    the helper's ``reason`` (or ``errno N``) for error replies.

    ``brokerpkg.ProbeResult`` is another class: mtrpacket's five fields alone, what
    :class:`~brokerpkg.MtrPacket` returns (:mod:`brokerpkg.mtrpacket_compat`).
    """

    success: bool
    result: str
    time_ms: float | None
    responder: str | None
    mpls: list[Mpls]
    target: str | None = None
    ttl: int | None = None
    protocol: str | None = None
    port: int | None = None
    reply_ttl: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    reply_size: int | None = None
    reason: str | None = None


class ProbeOptions(NamedTuple):
    """Validated probe options; None means "not given, let the helper choose"."""

    ip_version: int | None = None
    protocol: str | None = None
    port: int | None = None
    local_ip: str | None = None
    local_port: int | None = None
    local_device: str | None = None
    timeout: float | None = None
    ttl: int | None = None
    size: int | None = None
    bit_pattern: int | None = None
    tos: int | None = None
    mark: int | None = None
    details: bool = False
    flow: int | None = None


class Reply(NamedTuple):
    """A reply line with a usable token.

    ``problem`` is None for a well-formed line; otherwise it says what is wrong with the
    rest of the line (the token is still good, so the reply can fail its request).
    """

    token: int
    kind: str
    arguments: dict[str, str]
    text: str
    problem: str | None = None


class Garbage(NamedTuple):
    """A line that cannot be attributed to any request; ``reason`` says why."""

    text: str
    reason: str


# --------------------------------------------------------------------------- options


def _check_integer(name: str, value: object, low: int, high: int) -> int:
    """Return ``value`` if it is an int in [low, high].

    Raises TypeError for a non-int (bool included) and ValueError when out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, got {value}")
    return value


def _check_optional_integer(name: str, value: object, low: int, high: int) -> int | None:
    """Like :func:`_check_integer`, letting None through."""
    return None if value is None else _check_integer(name, value, low, high)


def _check_timeout(value: object) -> float | None:
    """Return the timeout in seconds as a float, or None.

    Raises TypeError for a non-number and ValueError outside 0..MAX_TIMEOUT or non-finite.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"timeout must be a number of seconds, got {type(value).__name__} {value!r}"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIMEOUT:
        raise ValueError(f"timeout must be from 0 to {MAX_TIMEOUT} seconds, got {value!r}")
    return seconds


def _check_word(name: str, value: object, max_length: int = MAX_REQUEST_LENGTH) -> str:
    """Return ``value`` if it is a non-empty str of printable ASCII without spaces.

    Raises TypeError for a non-str and ValueError for anything the wire cannot carry.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if not is_wire_word(value):
        raise ValueError(f"{name} must be printable ASCII without spaces, got {value!r}")
    if len(value) > max_length:
        raise ValueError(f"{name} must be at most {max_length} characters, got {len(value)}")
    return value


def is_wire_word(text: str) -> bool:
    """True if ``text`` is non-empty and only has bytes 0x21..0x7e (no space, no control)."""
    return _WIRE_WORD.fullmatch(text) is not None


def _check_protocol(value: object) -> str | None:
    """Return the protocol name or None; raises TypeError/ValueError for anything else."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"protocol must be a str, got {type(value).__name__} {value!r}")
    if value not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {value!r}")
    return value


def _check_ip_version(value: object) -> int | None:
    """Return 4, 6 or None; raises TypeError/ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ip_version must be 4, 6 or None, got {value!r}")
    if value not in (4, 6):
        raise ValueError(f"ip_version must be 4, 6 or None, got {value!r}")
    return value


def _check_local_device(value: object) -> str | None:
    """Return an interface name (1-15 printable characters, no '/') or None."""
    if value is None:
        return None
    name = _check_word("local_device", value, max_length=IFNAMSIZ - 1)
    if "/" in name or name in (".", ".."):
        raise ValueError(f"local_device is not a valid interface name: {name!r}")
    return name


def _check_details(value: object) -> bool:
    """Return ``value`` if it is a bool; raises TypeError otherwise."""
    if not isinstance(value, bool):
        raise TypeError(f"details must be True or False, got {value!r}")
    return value


def _check_ports_apply(
    protocol: str | None, port: int | None, local_port: int | None
) -> tuple[int | None, int | None]:
    """Ports mean nothing to icmp probes: reject them."""
    if (protocol or DEFAULT_PROTOCOL) != "icmp":
        return port, local_port
    if port is not None:
        raise ValueError("port applies to udp, tcp and sctp probes only, not icmp")
    if local_port is not None:
        raise ValueError("local_port applies to udp, tcp and sctp probes only, not icmp")
    return None, None


def make_probe_options(
    *,
    ip_version: object = None,
    protocol: object = None,
    port: object = None,
    local_ip: object = None,
    local_port: object = None,
    local_device: object = None,
    timeout: object = None,
    ttl: object = None,
    size: object = None,
    bit_pattern: object = None,
    tos: object = None,
    mark: object = None,
    details: object = False,
    flow: object = None,
) -> ProbeOptions:
    """Validate probe options against the protocol's ranges and return them.

    Ranges: ip_version 4 or 6; protocol icmp/udp/tcp/sctp; port 1-65535; local_port
    1024-65535 (both only for udp, tcp, sctp); local_device an interface name; timeout
    0-3600 seconds; ttl 1-255; size 0-9000; bit_pattern 0-255; tos 0-255; mark
    0-4294967295; details a bool; flow 0-65535 (the ``flow`` extension: probes with the
    same flow number share every field that per-flow load balancers hash).
    ``local_ip`` is a str (a host name is resolved later by the session).

    Raises TypeError for a value of the wrong type, ValueError for one out of range.
    """
    if (
        ip_version is None
        and protocol is None
        and port is None
        and local_ip is None
        and local_port is None
        and local_device is None
        and timeout is None
        and ttl is None
        and size is None
        and bit_pattern is None
        and tos is None
        and mark is None
        and details is False
        and flow is None
    ):
        return _DEFAULT_OPTIONS
    checked_protocol = _check_protocol(protocol)
    checked_port, checked_local_port = _check_ports_apply(
        checked_protocol,
        _check_optional_integer("port", port, 1, 65535),
        _check_optional_integer("local_port", local_port, 1024, 65535),
    )
    return ProbeOptions(
        ip_version=_check_ip_version(ip_version),
        protocol=checked_protocol,
        port=checked_port,
        local_ip=None if local_ip is None else _check_word("local_ip", local_ip),
        local_port=checked_local_port,
        local_device=_check_local_device(local_device),
        timeout=_check_timeout(timeout),
        ttl=_check_optional_integer("ttl", ttl, 1, 255),
        size=_check_optional_integer("size", size, 0, 9000),
        bit_pattern=_check_optional_integer("bit_pattern", bit_pattern, 0, 255),
        tos=_check_optional_integer("tos", tos, 0, 255),
        mark=_check_optional_integer("mark", mark, 0, 4294967295),
        details=_check_details(details),
        flow=_check_optional_integer("flow", flow, 0, MAX_FLOW),
    )


_DEFAULT_OPTIONS = ProbeOptions()
"""Every option left to the helper (the common case, validated once)."""


@functools.lru_cache(maxsize=65536)
def ip_version_of(address: str) -> int:
    """Return 4 or 6 for a numeric address (an IPv6 ``%scope`` suffix is allowed).

    Raises ValueError if ``address`` is not a numeric IPv4 or IPv6 address.  Cached:
    the same targets are probed again and again.
    """
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        raise ValueError(f"not a numeric IP address: {address!r}") from None


def required_features(options: ProbeOptions, ip_version: int) -> list[tuple[str, str]]:
    """List the helper features a probe needs, as (feature name, option that needs it).

    Fractional timeouts are not listed: without the feature they are rounded up.
    """
    needed = [(f"ip-{ip_version}", f"an IPv{ip_version} target")]
    protocol = options.protocol or DEFAULT_PROTOCOL
    needed.append((protocol, f"protocol={protocol!r}"))
    if options.mark is not None:
        needed.append(("mark", "mark"))
    if options.local_device is not None:
        needed.append(("local-device", "local_device"))
    if options.details:
        needed.append(("details", "details=True"))
    if options.flow is not None:
        needed.append(("flow", "flow"))
    return needed


def helper_timeout(seconds: float | None, fractional: bool) -> float:
    """Return the timeout the helper will actually use for ``seconds``.

    None means the helper's default (10 s).  Without ``fractional`` support the value
    is rounded up to whole seconds; with it, up to whole microseconds.
    """
    if seconds is None:
        return DEFAULT_TIMEOUT
    microseconds = math.ceil(round(seconds * 1_000_000, 3))
    if fractional:
        return microseconds / 1_000_000
    return float(math.ceil(microseconds / 1_000_000))


def timeout_argument_seconds(text: str) -> float:
    """The seconds a helper waits for the ``timeout`` value ``text`` sent as given: the
    number when ``text`` is a finite decimal number >= 0, else DEFAULT_TIMEOUT (a helper
    refuses any other value and answers at once).  Never raises."""
    try:
        seconds = float(text)
    except ValueError:
        return DEFAULT_TIMEOUT
    return seconds if math.isfinite(seconds) and seconds >= 0 else DEFAULT_TIMEOUT


def format_timeout(seconds: float, fractional: bool) -> str:
    """Format a timeout for the wire: ``"2"``, or ``"0.25"`` when ``fractional``."""
    value = helper_timeout(seconds, fractional)
    if value == int(value):
        return str(int(value))
    return f"{value:.{MAX_TIMEOUT_DECIMALS}f}".rstrip("0")


def _address_arguments(
    address: str, local_address: str | None, ip_version: int | None
) -> list[tuple[str, str]]:
    """Return the ip-N and local-ip-N pairs; raises ValueError on a family mismatch."""
    version = ip_version_of(address)
    if ip_version is not None and version != ip_version:
        raise ValueError(f"ip_version={ip_version} but the target {address} is IPv{version}")
    pairs = [(f"ip-{version}", address)]
    if local_address is not None:
        if ip_version_of(local_address) != version:
            raise ValueError(
                f"local address {local_address} is not IPv{version} like the target {address}"
            )
        pairs.append((f"local-ip-{version}", local_address))
    return pairs


def probe_arguments(
    options: ProbeOptions,
    address: str,
    local_address: str | None = None,
    *,
    fractional_timeout: bool = False,
) -> list[tuple[str, str]]:
    """Return the send-probe (name, value) pairs for a probe to numeric ``address``.

    ``local_address`` is the numeric source address (``options.local_ip`` resolved).
    Only options that were given are sent; ``details`` is sent only when True, so a
    plain probe is byte-for-byte what mtrpacket would send.

    Raises ValueError when an address is not numeric or the families disagree.
    """
    pairs = _address_arguments(address, local_address, options.ip_version)
    optional: list[tuple[str, object]] = [
        ("protocol", options.protocol),
        ("port", options.port),
        ("local-port", options.local_port),
        ("local-device", options.local_device),
        (
            "timeout",
            None
            if options.timeout is None
            else format_timeout(options.timeout, fractional_timeout),
        ),
        ("ttl", options.ttl),
        ("size", options.size),
        ("bit-pattern", options.bit_pattern),
        ("tos", options.tos),
        ("mark", options.mark),
        ("details", "yes" if options.details else None),
        ("flow", options.flow),
    ]
    pairs.extend((name, str(value)) for name, value in optional if value is not None)
    return pairs


# --------------------------------------------------------------------------- requests


def next_free_token(start: int, in_use: Container[int]) -> tuple[int, int]:
    """Return (token, next start): the first token from ``start`` not in ``in_use``.

    Tokens run 1..MAX_TOKEN and wrap to 1.  ``in_use`` holds tokens still in flight,
    including probes whose caller gave up (their late replies must stay attributable).

    Raises ProtocolError if every token is in use (needs 2**31 - 1 outstanding requests).
    """
    token = start if 1 <= start <= MAX_TOKEN else 1
    for _ in range(MAX_TOKEN):
        following = token + 1 if token < MAX_TOKEN else 1
        if token not in in_use:
            return token, following
        token = following
    raise ProtocolError("every request token is in flight")


def _check_token(token: object) -> int:
    """Return ``token`` if it is an int from 1 to MAX_TOKEN; raises TypeError/ValueError."""
    return _check_integer("token", token, 1, MAX_TOKEN)


def encode_request_tail(command: str, arguments: Sequence[tuple[str, str]] = ()) -> bytes:
    """Encode a request line without its token: ``b" COMMAND NAME VALUE...\\n"``.

    Prefixing any token (:func:`encode_request`) gives a valid line: the length check
    counts the longest token.  A session encodes the tail of a repeated probe once.

    Raises TypeError/ValueError for a word the wire cannot carry (empty, spaces, control
    or non-ASCII characters) or a line longer than MAX_REQUEST_LENGTH bytes.
    """
    words = ["", _check_word("command", command)]
    for name, value in arguments:
        words.append(_check_word("argument name", name))
        words.append(_check_word(f"value of {name}", value))
    tail = " ".join(words)
    if len(tail) + len(str(MAX_TOKEN)) > MAX_REQUEST_LENGTH:
        raise ValueError(
            f"request is {len(tail) + len(str(MAX_TOKEN))} bytes at most, "
            f"more than {MAX_REQUEST_LENGTH}"
        )
    return tail.encode("ascii") + b"\n"


def encode_request(token: int, command: str, arguments: Sequence[tuple[str, str]] = ()) -> bytes:
    """Encode one request line, newline included.

    Raises TypeError/ValueError for a token outside 1..MAX_TOKEN, or like
    :func:`encode_request_tail`.
    """
    return b"%d" % _check_token(token) + encode_request_tail(command, arguments)


def encode_check_support(token: int, feature: str) -> bytes:
    """Encode ``TOKEN check-support feature NAME``; raises like :func:`encode_request`."""
    return encode_request(token, CHECK_SUPPORT, [("feature", feature)])


def encode_send_probe(token: int, arguments: Sequence[tuple[str, str]]) -> bytes:
    """Encode ``TOKEN send-probe ARGS...``; raises like :func:`encode_request`."""
    return encode_request(token, SEND_PROBE, arguments)


# --------------------------------------------------------------------------- replies


def _parse_token(word: str) -> int | None:
    """Return the token as an int, or None unless it is 1-10 ASCII digits <= MAX_TOKEN.

    Leading zeros are allowed (``007`` is 7).
    """
    if not (word.isascii() and word.isdigit()):
        return None
    digits = word.lstrip("0") or "0"
    if len(digits) > len(str(MAX_TOKEN)):
        return None
    value = int(digits)
    return value if value <= MAX_TOKEN else None


def _pair_arguments(words: Sequence[str]) -> tuple[dict[str, str], str | None]:
    """Pair NAME VALUE words; return the mapping and a problem description or None."""
    arguments: dict[str, str] = {}
    if len(words) % 2:
        return arguments, f"name {words[-1]!r} has no value"
    for index in range(0, len(words), 2):
        name, value = words[index], words[index + 1]
        if name in arguments:
            return arguments, f"argument {name!r} appears twice"
        arguments[name] = value
    return arguments, None


def decode_line(raw: bytes) -> str:
    """Decode a raw line without ever raising: non-ASCII bytes become U+FFFD.

    The trailing newline (and a CR before it) is removed.
    """
    text = raw.decode("ascii", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def parse_reply_line(raw: bytes) -> Reply | Garbage:
    """Parse one reply line from the helper; never raises.

    Returns :class:`Garbage` when no token can be read (empty line, bad token, token
    without a reply word), else a :class:`Reply` whose ``problem`` tells whether the rest
    of the line is malformed (odd bytes, a name without a value, a repeated name).
    """
    text = decode_line(raw)
    words = [word for word in text.split(" ") if word]
    if not words:
        return Garbage(text, "empty line")
    token = _parse_token(words[0])
    if token is None:
        return Garbage(text, f"no valid token at the start of the line ({words[0]!r})")
    if len(words) < 2:
        return Garbage(text, "token without a reply word")
    arguments, problem = _pair_arguments(words[2:])
    if _WIRE_LINE.fullmatch(text) is None:
        problem = "line has bytes outside printable ASCII"
    return Reply(token, words[1], arguments, text, problem)


def describe_unattributed(line: Reply | Garbage) -> str:
    """One-line description of a reply or garbage line that matched no request."""
    if isinstance(line, Garbage):
        return f"{line.text!r} ({line.reason})"
    return line.text


def feature_value(reply: Reply) -> str:
    """Return a check-support answer: the ``support`` value, or ``no``.

    A helper that does not know the feature or the command (``invalid-argument``,
    ``unknown-command``, anything but ``feature-support support VALUE``) is taken as ``no``.
    """
    if reply.problem is None and reply.kind == FEATURE_SUPPORT:
        return reply.arguments.get("support", "no")
    return "no"


def _reply_integer(reply: Reply, name: str) -> int | None:
    """Return an integer argument of ``reply`` or None; raises ProtocolError if not decimal."""
    value = reply.arguments.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ProtocolError(f"helper reply has a non-integer {name}: {reply.text!r}")
    return int(value)


def parse_mpls(text: str) -> list[Mpls]:
    """Parse ``L,TC,BOS,TTL[,L,TC,BOS,TTL...]`` into Mpls entries.

    Raises ValueError unless it is a non-empty multiple of four comma-separated integers.
    """
    fields = text.split(",")
    if len(fields) % 4 or not all(field.isascii() and field.isdigit() for field in fields):
        raise ValueError(f"mpls must be groups of four integers, got {text!r}")
    numbers = [int(field) for field in fields]
    return [
        Mpls(numbers[i], numbers[i + 1], bool(numbers[i + 2]), numbers[i + 3])
        for i in range(0, len(numbers), 4)
    ]


def _reply_mpls(reply: Reply) -> list[Mpls]:
    """Return the reply's MPLS entries (empty without ``mpls``); raises ProtocolError."""
    text = reply.arguments.get("mpls")
    if text is None:
        return []
    try:
        return parse_mpls(text)
    except ValueError as error:
        raise ProtocolError(f"helper reply has a malformed mpls: {reply.text!r}") from error


def _reply_reason(reply: Reply) -> str | None:
    """Return the ``reason`` of an error reply, or ``errno N``, or None."""
    if "reason" in reply.arguments:
        return reply.arguments["reason"]
    if "errno" in reply.arguments:
        return f"errno {reply.arguments['errno']}"
    return None


def effective_port(options: ProbeOptions) -> int | None:
    """The destination port the probe uses: given, 80 for tcp/sctp, else None (varies)."""
    protocol = options.protocol or DEFAULT_PROTOCOL
    if protocol == "icmp":
        return None
    if options.port is not None:
        return options.port
    return DEFAULT_CONNECTED_PORT if protocol in ("tcp", "sctp") else None


def make_probe_result(
    reply: Reply, options: ProbeOptions | None = None, target: str | None = None
) -> ProbeResult:
    """Build the ProbeResult for a send-probe reply.

    ``options`` and ``target`` describe the request; the result carries them with the
    helper's defaults filled in (protocol icmp, ttl 255, port 80 for tcp/sctp).  Without
    ``options`` (a request sent as given) ttl, protocol and port are None.

    Raises ProtocolError if the reply is malformed (``reply.problem``, a non-integer
    round-trip-time, reply-ttl, icmp-type, icmp-code or reply-size, a bad mpls list).
    """
    if reply.problem is not None:
        raise ProtocolError(f"malformed helper reply ({reply.problem}): {reply.text!r}")
    round_trip_us = _reply_integer(reply, "round-trip-time")
    return ProbeResult(
        success=reply.kind == REPLY,
        result=reply.kind,
        time_ms=None if round_trip_us is None else round_trip_us / 1000.0,
        responder=reply.arguments.get("ip-4") or reply.arguments.get("ip-6"),
        mpls=_reply_mpls(reply),
        target=target,
        ttl=None if options is None else options.ttl if options.ttl is not None else DEFAULT_TTL,
        protocol=None if options is None else options.protocol or DEFAULT_PROTOCOL,
        port=None if options is None else effective_port(options),
        reply_ttl=_reply_integer(reply, "reply-ttl"),
        icmp_type=_reply_integer(reply, "icmp-type"),
        icmp_code=_reply_integer(reply, "icmp-code"),
        reply_size=_reply_integer(reply, "reply-size"),
        reason=_reply_reason(reply),
    )


def format_arguments(arguments: Sequence[tuple[str, str]]) -> str:
    """Render (name, value) pairs as they appear on the wire, for messages."""
    return " ".join(f"{name} {value}" for name, value in arguments)
