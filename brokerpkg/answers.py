"""What the network said to a probe: :class:`Answer`, :func:`classify`,
:func:`raise_for_probe`, and a probe result as JSON (:func:`probe_to_dict`).

Pure (no I/O, no asyncio): ping, traceroute, the monitors, the exporter and the command
line's formatting all judge results here.  Errors are split as icmplib splits them:
answers from the network (unreachable, time exceeded, no reply) are results, turned into
a :class:`~brokerpkg.errors.NetworkError` only on request (:func:`raise_for_probe`);
a reply word that means nothing was sent is a local failure,
:class:`~brokerpkg.errors.ProbeSendError`, raised by :func:`classify`.
"""

from __future__ import annotations

import enum
import errno
import os
from typing import Any

from . import protocol as wire
from .errors import (
    DestinationUnreachable,
    NoReplyError,
    ProbeSendError,
    ProtocolError,
    TimeExceeded,
)
from .protocol import ProbeResult

__all__ = ["Answer", "classify", "probe_to_dict", "raise_for_probe"]


class Answer(enum.StrEnum):
    """What the network said to one probe (see :func:`classify`)."""

    REPLY = "reply"
    """The destination answered (echo reply, port unreachable from it, SYN-ACK/RST...)."""
    TIME_EXCEEDED = "time-exceeded"
    """A router on the way answered ICMP time exceeded (the TTL ran out)."""
    UNREACHABLE = "unreachable"
    """A router or the destination answered ICMP destination unreachable."""
    NO_REPLY = "no-reply"
    """Nothing answered within the timeout."""


_LOCAL_FAILURES: dict[str, tuple[int | None, str]] = {
    wire.NO_ROUTE: (
        errno.EHOSTUNREACH,
        "the kernel has no route to it (check `ip route get ADDRESS`)",
    ),
    "network-down": (errno.ENETDOWN, "the network interface is down"),
    "permission-denied": (
        errno.EACCES,
        "permission denied (a local firewall rule, a broadcast destination, "
        "or a mark the caller may not set)",
    ),
    "address-in-use": (errno.EADDRINUSE, "the source address and port are already in use"),
    "address-not-available": (
        errno.EADDRNOTAVAIL,
        "the source address is not assigned to this host",
    ),
    "unexpected-error": (None, "the kernel refused to send the probe"),
    "probes-exhausted": (
        None,
        "the helper has no free probe slot or identity left for this protocol "
        "(too many probes in flight, perhaps from other sessions)",
    ),
}


def _send_error(result: ProbeResult) -> ProbeSendError:
    """The ProbeSendError for a reply word that means nothing was sent."""
    code, why = _LOCAL_FAILURES[result.result]
    reason = result.reason or ""
    if result.result == "unexpected-error" and reason.startswith("errno "):
        number = reason.removeprefix("errno ")
        if number.isascii() and number.isdigit():
            code = int(number)
            why = f"{why}: {os.strerror(code)}"
    target = result.target or "the destination"
    message = f"cannot send {result.protocol or 'the'} probe to {target}: {why}"
    if result.reason and result.result != "unexpected-error":
        message += f" ({result.reason})"
    return ProbeSendError(code, message, result.result, result)


def classify(result: ProbeResult) -> Answer:
    """Say what the network answered to one probe.

    Raises ProbeSendError when the reply word says nothing was sent (``no-route``
    without an address, ``network-down``, ``permission-denied``, ``address-in-use``,
    ``address-not-available``, ``unexpected-error``, ``probes-exhausted``), and
    ProtocolError for a word this library does not know.
    """
    if result.success:
        return Answer.REPLY
    if result.result == wire.TTL_EXPIRED:
        return Answer.TIME_EXCEEDED
    if result.result == wire.NO_ROUTE and result.responder is not None:
        return Answer.UNREACHABLE
    if result.result == wire.NO_REPLY:
        return Answer.NO_REPLY
    if result.result in _LOCAL_FAILURES:
        raise _send_error(result)
    raise ProtocolError(f"helper answered a probe with an unknown word {result.result!r}")


def _icmp_text(result: ProbeResult) -> str:
    """`` (ICMP type T, code C)`` when the reply details are known, else ''."""
    if result.icmp_type is None:
        return ""
    return f" (ICMP type {result.icmp_type}, code {result.icmp_code})"


def raise_for_probe(result: ProbeResult, host: str | None = None) -> ProbeResult:
    """Return ``result`` if the destination answered; raise otherwise.

    Raises DestinationUnreachable, TimeExceeded or NoReplyError for those answers, and
    like :func:`classify` for local failures.  ``host`` names the destination in the
    message (default: the probe's target address).
    """
    answer = classify(result)
    name = host or result.target or "the destination"
    if answer is Answer.REPLY:
        return result
    if answer is Answer.UNREACHABLE:
        raise DestinationUnreachable(
            f"{name} is unreachable: {result.responder} answered destination "
            f"unreachable{_icmp_text(result)}",
            host=host,
            result=result,
        )
    if answer is Answer.TIME_EXCEEDED:
        raise TimeExceeded(
            f"{name} was not reached: time exceeded at {result.responder} "
            f"(TTL {result.ttl}){_icmp_text(result)}",
            host=host,
            result=result,
        )
    raise NoReplyError(f"no reply from {name}", host=host, result=result)


def probe_to_dict(result: ProbeResult) -> dict[str, Any]:
    """A ProbeResult as a JSON-ready dict (MPLS entries as dicts, None as null)."""
    fields = result._asdict()
    fields["mpls"] = [entry._asdict() for entry in result.mpls]
    return fields
