"""icmplib's result classes: :class:`Host`, :class:`Hop` and :class:`ICMPReply`.

Host and Hop compute their statistics from the raw round-trip times as icmplib does:
milliseconds, min/avg/max and jitter rounded to 3 decimals, packet loss a fraction
rounded to 2, and 0.0 where a statistic is undefined (no reply; jitter with fewer than
two).  Their ``repr`` and ``str`` read as icmplib's.  Pure: no I/O.
"""

from __future__ import annotations

from .exceptions import (
    DestinationUnreachable,
    ICMPError,
    ICMPv4DestinationUnreachable,
    ICMPv4TimeExceeded,
    ICMPv6DestinationUnreachable,
    ICMPv6TimeExceeded,
    TimeExceeded,
)

__all__ = ["Hop", "Host", "ICMPReply"]

RULE = "-" * 60
"""The line around a Host's printed statistics."""


class Host:
    """A host that was pinged: ``address``, ``packets_sent`` and the round-trip times
    (``rtts``, milliseconds, one per reply) its statistics come from."""

    __slots__ = ("_address", "_packets_sent", "_rtts")

    def __init__(self, address: str, packets_sent: int, rtts: list[float]) -> None:
        self._address = address
        self._packets_sent = packets_sent
        self._rtts = rtts

    def __repr__(self) -> str:
        return f"<Host [{self._address}]>"

    def __str__(self) -> str:
        return (
            f"  {self._address}\n{RULE}\n"
            f"  Packets sent:     {self._packets_sent}\n"
            f"  Packets received: {self.packets_received}\n"
            f"  Packet loss:      {self.packet_loss * 100}%\n"
            f"  Round-trip times: {self.min_rtt} ms / {self.avg_rtt} ms / {self.max_rtt} ms\n"
            f"  Jitter:           {self.jitter} ms\n{RULE}"
        )

    @property
    def address(self) -> str:
        """The address that was probed (a name's first address)."""
        return self._address

    @property
    def rtts(self) -> list[float]:
        """The round-trip times of the replies, in milliseconds, in sending order."""
        return self._rtts

    @property
    def packets_sent(self) -> int:
        """Requests sent."""
        return self._packets_sent

    @property
    def packets_received(self) -> int:
        """Replies received."""
        return len(self._rtts)

    @property
    def min_rtt(self) -> float:
        """The shortest round-trip time (ms, 3 decimals; 0.0 without replies)."""
        return round(min(self._rtts), 3) if self._rtts else 0.0

    @property
    def avg_rtt(self) -> float:
        """The mean round-trip time (ms, 3 decimals; 0.0 without replies)."""
        return round(sum(self._rtts) / len(self._rtts), 3) if self._rtts else 0.0

    @property
    def max_rtt(self) -> float:
        """The longest round-trip time (ms, 3 decimals; 0.0 without replies)."""
        return round(max(self._rtts), 3) if self._rtts else 0.0

    @property
    def packet_loss(self) -> float:
        """The fraction of requests unanswered, 0 to 1 (2 decimals; 0.0 if none sent)."""
        if not self._packets_sent:
            return 0.0
        return round(1 - len(self._rtts) / self._packets_sent, 2)

    @property
    def jitter(self) -> float:
        """The mean absolute difference of consecutive round-trip times (ms, 3 decimals;
        0.0 with fewer than two replies)."""
        steps = len(self._rtts) - 1
        if steps < 1:
            return 0.0
        total = 0.0  # added in order (not sum(), which compensates from Python 3.12 on)
        for earlier, later in zip(self._rtts, self._rtts[1:], strict=False):
            total += abs(earlier - later)
        return round(total / steps, 3)

    @property
    def is_alive(self) -> bool:
        """True if at least one reply came."""
        return bool(self._rtts)


class Hop(Host):
    """A hop of a traceroute: the address that answered at TTL ``distance``, the
    requests sent with that TTL and the round-trip times of every answer (time
    exceeded, unreachable or echo reply)."""

    __slots__ = ("_distance",)

    def __init__(self, address: str, packets_sent: int, rtts: list[float], distance: int) -> None:
        super().__init__(address, packets_sent, rtts)
        self._distance = distance

    def __repr__(self) -> str:
        return f"<Hop {self._distance} [{self._address}]>"

    def __str__(self) -> str:
        return f"  #{self._distance:<2} {super().__str__()[2:]}"

    @property
    def distance(self) -> int:
        """The TTL at which this address answered."""
        return self._distance


# ICMP types: echo reply, destination unreachable, time exceeded, per IP version.
_ECHO_REPLY = {4: 0, 6: 129}
_ERRORS: dict[tuple[int, int], type[DestinationUnreachable | TimeExceeded]] = {
    (4, 3): ICMPv4DestinationUnreachable,
    (4, 11): ICMPv4TimeExceeded,
    (6, 1): ICMPv6DestinationUnreachable,
    (6, 3): ICMPv6TimeExceeded,
}


class ICMPReply:
    """An ICMP message received in answer to a request, as icmplib describes one.

    ``family`` is 4 or 6, ``time`` the moment it was received (seconds).
    """

    __slots__ = (
        "_bytes_received",
        "_code",
        "_family",
        "_id",
        "_sequence",
        "_source",
        "_time",
        "_type",
    )

    def __init__(
        self,
        source: str,
        family: int,
        id: int,
        sequence: int,
        type: int,
        code: int,
        bytes_received: int,
        time: float,
    ) -> None:
        self._source = source
        self._family = family
        self._id = id
        self._sequence = sequence
        self._type = type
        self._code = code
        self._bytes_received = bytes_received
        self._time = time

    def __repr__(self) -> str:
        return f"<ICMPReply [{self._source}]>"

    def raise_for_status(self) -> None:
        """Return if this is an echo reply; raise otherwise.

        Raises ICMPv4DestinationUnreachable / ICMPv6DestinationUnreachable,
        ICMPv4TimeExceeded / ICMPv6TimeExceeded, and ICMPError for any other type
        (as in icmplib, a family other than 6 is taken as 4 for the first two, and
        only 4 and 6 have an echo reply type to compare with).
        """
        error = _ERRORS.get((6 if self._family == 6 else 4, self._type))
        if error is not None:
            raise error(self)
        echo_reply = _ECHO_REPLY.get(self._family)
        if echo_reply is not None and self._type != echo_reply:
            raise ICMPError(f"Error type: {self._type}, code: {self._code}", self)

    @property
    def source(self) -> str:
        """The address that sent the message."""
        return self._source

    @property
    def family(self) -> int:
        """The IP version: 4 or 6."""
        return self._family

    @property
    def id(self) -> int:
        """The identifier of the request answered."""
        return self._id

    @property
    def sequence(self) -> int:
        """The sequence number of the request answered."""
        return self._sequence

    @property
    def type(self) -> int:
        """The ICMP type."""
        return self._type

    @property
    def code(self) -> int:
        """The ICMP code."""
        return self._code

    @property
    def bytes_received(self) -> int:
        """The size of the message received."""
        return self._bytes_received

    @property
    def time(self) -> float:
        """When the message was received (seconds)."""
        return self._time
