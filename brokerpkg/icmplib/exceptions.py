"""icmplib's exceptions: the same names, bases, constructors and messages.

Two branches, as in icmplib: :class:`ICMPSocketError` for local failures (the helper
cannot open its sockets, the source address is not this host's, a timeout of the
socket layer) and :class:`ICMPError` for ICMP error messages from the network, carried
by an :class:`~brokerpkg.icmplib.models.ICMPReply` and raised by its
``raise_for_status()``.  As in icmplib, ping, multiping and traceroute never raise the
second branch: an unanswered or refused probe is a statistic of the result.
This module is pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .models import ICMPReply

__all__ = [
    "ICMPLibError",
    "NameLookupError",
    "ICMPSocketError",
    "SocketAddressError",
    "SocketPermissionError",
    "SocketUnavailableError",
    "SocketBroadcastError",
    "TimeoutExceeded",
    "ICMPError",
    "DestinationUnreachable",
    "ICMPv4DestinationUnreachable",
    "ICMPv6DestinationUnreachable",
    "TimeExceeded",
    "ICMPv4TimeExceeded",
    "ICMPv6TimeExceeded",
]

PERMISSION_HELP = (
    "A prior configuration of your OS is required to use ICMP sockets without root "
    "privileges. Read more on https://github.com/ValentinBELYN/icmplib"
)


class ICMPLibError(Exception):
    """The base of every exception of this package."""


class NameLookupError(ICMPLibError):
    """A host name or FQDN does not exist or cannot be resolved."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The name '{name}' cannot be resolved")


class ICMPSocketError(ICMPLibError):
    """A local failure: the probes could not be sent (here: the helper failed)."""


class SocketAddressError(ICMPSocketError):
    """The source address cannot be used (not this host's, or not of the family)."""

    def __init__(self, address: object) -> None:
        super().__init__(f"The requested address ({address}) cannot be assigned to the socket")


class SocketPermissionError(ICMPSocketError):
    """No privilege to send probes.

    icmplib raises it when the process may not open ICMP sockets; here the helper
    holds the privilege, and this is raised when the helper itself lacks it: ``reason``
    (the helper's message, with its fix) is then the message.
    """

    def __init__(self, privileged: bool, reason: str | None = None) -> None:
        if reason is not None:
            message = reason
        elif privileged:
            message = "Root privileges are required to create the socket"
        else:
            message = PERMISSION_HELP
        super().__init__(message)


class SocketUnavailableError(ICMPSocketError):
    """A closed socket was used (icmplib's socket layer; kept for its name)."""

    def __init__(self) -> None:
        super().__init__("The socket can no longer be used after its closure")


class SocketBroadcastError(ICMPSocketError):
    """A broadcast address was used without allowing it (icmplib's socket layer)."""

    def __init__(self) -> None:
        super().__init__(
            "Broadcast is not allowed: please use the 'broadcast' property to allow it"
        )


class TimeoutExceeded(ICMPSocketError):
    """No reply came within the timeout (icmplib's socket layer)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"The timeout has been reached ({timeout}s)")


class ICMPError(ICMPLibError):
    """An ICMP message other than an echo reply; ``reply`` is the ICMPReply."""

    def __init__(self, message: str, reply: ICMPReply) -> None:
        super().__init__(message)
        self._reply = reply

    @property
    def reply(self) -> ICMPReply:
        """The reply that carried the error."""
        return self._reply


def _coded_message(codes: dict[int, str], unknown: str, code: int) -> str:
    """The message for ``code``, or ``unknown`` followed by the code."""
    return codes.get(code, f"{unknown}, bad code: {code}")


class DestinationUnreachable(ICMPError):
    """ICMP destination unreachable (the ICMPv4 and ICMPv6 classes name the codes)."""

    _CODES: ClassVar[dict[int, str]] = {}

    def __init__(self, reply: ICMPReply) -> None:
        super().__init__(_coded_message(self._CODES, "Destination unreachable", reply.code), reply)


class ICMPv4DestinationUnreachable(DestinationUnreachable):
    """ICMPv4 destination unreachable (type 3)."""

    _CODES: ClassVar[dict[int, str]] = {
        0: "Destination network unreachable",
        1: "Destination host unreachable",
        2: "Destination protocol unreachable",
        3: "Destination port unreachable",
        4: "Fragmentation needed and DF set",
        5: "Source route failed",
        6: "Destination network unknown",
        7: "Destination host unknown",
        8: "Source host isolated",
        9: "Destination network prohibed",  # sic: icmplib's wording
        10: "Destination host prohibed",
        11: "Destination network unreachable for ToS",
        12: "Destination host unreachable for ToS",
        13: "Packet filtered",
        14: "Precedence violation",
        15: "Precedence cutoff",
    }


class ICMPv6DestinationUnreachable(DestinationUnreachable):
    """ICMPv6 destination unreachable (type 1)."""

    _CODES: ClassVar[dict[int, str]] = {
        0: "No route to destination",
        1: "Communication with destination administratively prohibited",
        2: "Beyond scope of source address",
        3: "Address unreachable",
        4: "Port unreachable",
        5: "Source address failed ingress/egress policy",
        6: "Reject route to destination",
    }


class TimeExceeded(ICMPError):
    """ICMP time exceeded (the ICMPv4 and ICMPv6 classes name the codes)."""

    _CODES: ClassVar[dict[int, str]] = {}

    def __init__(self, reply: ICMPReply) -> None:
        super().__init__(_coded_message(self._CODES, "Time exceeded", reply.code), reply)


class ICMPv4TimeExceeded(TimeExceeded):
    """ICMPv4 time exceeded (type 11)."""

    _CODES: ClassVar[dict[int, str]] = {
        0: "Time to live exceeded",
        1: "Fragment reassembly time exceeded",
    }


class ICMPv6TimeExceeded(TimeExceeded):
    """ICMPv6 time exceeded (type 3)."""

    _CODES: ClassVar[dict[int, str]] = {
        0: "Hop limit exceeded",
        1: "Fragment reassembly time exceeded",
    }
