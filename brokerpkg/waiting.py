"""How long a trace waits for each probe, and when a silent hop is tried again.

Pure: no I/O, no asyncio and no clock of its own -- every method takes the time (seconds
on one monotonic clock) from its caller, so the tests drive it with a fake clock.
:func:`~brokerpkg.trace.traceroute` follows all of it (:class:`TracePlan`); the monitor
(:func:`~brokerpkg.mtr.monitor`) gives the silent hops of its first cycle the same further
tries (:func:`retry_offsets`, :func:`wants_retry`).

**Waiting** (:class:`Wait`) is traceroute(8)'s ``-w MAX,HERE,NEAR``: a probe is waited
for at most MAX seconds (default 5); once a probe of the same TTL has answered, at most
HERE (default 3) times that answer's round trip; else, once a probe of a later TTL has
answered, at most NEAR (default 10) times its round trip (the nearest such TTL's first
answer).  Round trips are measured as traceroute measures them, from sending to
receiving (:class:`TracePlan` is told both times), plus traceroute's 1 ms precision; a
factor of 0 turns its rule off.

**Further tries**: a probe that is lost while a router resolves its next hop (ARP, IPv6
neighbour discovery) leaves a silent hop in a trace whose probes all go out at once.
So a TTL with no answer yet is probed again (another ``probes_per_hop`` probes) at
0.25 s, 0.75 s and 1.75 s after its first probe (:func:`retry_offsets`: each gap twice
the one before; ``retries`` of them, default 3, those less than MAX), when it is below
the farthest TTL that answered, or -- while the destination has not answered -- at most
:data:`AHEAD` TTLs beyond it (:func:`wants_retry`).  Earlier probes keep waiting
meanwhile: a router that holds packets while it resolves answers them late.  No probe
of a TTL is waited for beyond MAX after the TTL's first probe, so a trace ends within
MAX of its start.  On a path where every hop answers, nothing is sent again and every
TTL stays in flight at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from .defaults import MTR_MAX_UNKNOWN, RETRIES, RETRIES_MAX
from .options import check_int, check_seconds

__all__ = [
    "AHEAD",
    "DEFAULT_RETRIES",
    "PRECISION",
    "Try",
    "TracePlan",
    "Wait",
    "parse_wait",
    "retry_offsets",
    "wants_retry",
]

DEFAULT_MAX = 5.0
DEFAULT_HERE = 3.0
DEFAULT_NEAR = 10.0
MAX_WAIT = 3600.0
"""The longest wait accepted: the helper's largest probe timeout."""
PRECISION = 0.001
"""Added to a round trip before HERE or NEAR multiply it (traceroute's DEF_WAIT_PREC)."""
DEFAULT_RETRIES = RETRIES
FIRST_GAP = 0.25
"""Seconds from a TTL's first probe to its first further try; each next gap doubles."""
MAX_RETRIES = RETRIES_MAX
AHEAD = MTR_MAX_UNKNOWN
"""TTLs beyond the farthest answer that get further tries while the destination has not
answered (as many as mtr's -U default)."""


class Wait(NamedTuple):
    """traceroute's ``-w MAX,HERE,NEAR``: the longest wait for a probe (seconds), and the
    factors of a same-hop and of a later-hop round trip that shorten it (0: off)."""

    max: float = DEFAULT_MAX
    here: float = DEFAULT_HERE
    near: float = DEFAULT_NEAR

    @classmethod
    def of(cls, value: object) -> Wait:
        """``value`` as a checked Wait: a Wait or a 3-sequence (max, here, near), a
        number (MAX alone: HERE and NEAR off, as traceroute's ``-w 5``), or a string for
        :func:`parse_wait`.

        Raises TypeError for another type, ValueError for values out of range (MAX
        0 < MAX <= 3600, factors >= 0, all finite).
        """
        if isinstance(value, str):
            return parse_wait(value)
        if isinstance(value, bool):
            raise TypeError("wait must be a Wait, a number of seconds or 'MAX[,HERE,NEAR]'")
        if isinstance(value, int | float):
            return _checked(float(value), 0.0, 0.0)
        if isinstance(value, tuple | list) and len(value) == 3:
            numbers = [_number(item) for item in value]
            return _checked(*numbers)
        raise TypeError(
            f"wait must be a Wait, a number of seconds or 'MAX[,HERE,NEAR]', "
            f"got {type(value).__name__}"
        )

    def limit(self, here_rtt: float | None, near_rtt: float | None) -> float:
        """Seconds to wait for a probe: HERE x (``here_rtt`` + 1 ms) when a probe of its
        TTL answered after ``here_rtt`` seconds, else NEAR x (``near_rtt`` + 1 ms) when
        a later TTL did, else MAX -- never more than MAX."""
        if self.here and here_rtt is not None:
            return min(self.max, self.here * (here_rtt + PRECISION))
        if self.near and near_rtt is not None:
            return min(self.max, self.near * (near_rtt + PRECISION))
        return self.max

    def __str__(self) -> str:
        return f"{self.max:g},{self.here:g},{self.near:g}"


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"wait values must be numbers, got {type(value).__name__}")
    return float(value)


def _checked(maximum: float, here: float, near: float) -> Wait:
    """A Wait of these values; raises ValueError when one is out of range."""
    if not (math.isfinite(maximum) and 0 < maximum <= MAX_WAIT):
        raise ValueError(f"wait MAX must be a number of seconds > 0 and <= 3600, got {maximum:g}")
    for name, factor in (("HERE", here), ("NEAR", near)):
        if not (math.isfinite(factor) and factor >= 0):
            raise ValueError(f"wait {name} must be a finite factor >= 0, got {factor:g}")
    return Wait(maximum, here, near)


def parse_wait(text: str) -> Wait:
    """Parse traceroute's ``MAX[,HERE,NEAR]`` (commas or slashes).  As in traceroute,
    factors not given are 0 (off): ``"5"`` waits 5 s for every probe, ``"5,3,10"`` is
    the default.

    Raises ValueError for anything else, naming the text.
    """
    parts = text.replace("/", ",").split(",")
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"wait must be MAX[,HERE,NEAR], got {text!r}")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"wait must be MAX[,HERE,NEAR] (numbers), got {text!r}") from None
    numbers += [0.0] * (3 - len(numbers))
    return _checked(*numbers)


def check_retries(retries: object) -> int:
    """``retries`` if it is an int from 0 to 10; raises TypeError/ValueError."""
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(f"retries must be an integer, got {type(retries).__name__}")
    if not 0 <= retries <= MAX_RETRIES:
        raise ValueError(f"retries must be from 0 to {MAX_RETRIES}, got {retries}")
    return retries


def retry_offsets(retries: int, until: float) -> tuple[float, ...]:
    """Seconds after a TTL's first probe at which it is tried again: 0.25, 0.75, 1.75,
    3.75, ... (each gap twice the one before), the first ``retries`` of them, only those
    less than ``until``."""
    offsets = [FIRST_GAP * (2**number - 1) for number in range(1, retries + 1)]
    return tuple(offset for offset in offsets if offset < until)


def wants_retry(ttl: int, farthest: int, destination_known: bool, ahead: int = AHEAD) -> bool:
    """Whether a TTL that has no answer gets a further try: it is below ``farthest``
    (the highest TTL that answered), or the destination has not answered and it is at
    most ``ahead`` TTLs beyond ``farthest``."""
    if ttl < farthest:
        return True
    return not destination_known and ttl <= farthest + ahead


class Try(NamedTuple):
    """One probe the plan asks for: its TTL, its position (0 .. probes_per_hop - 1)
    within the TTL, when it was sent, and its round (0 first, then 1, 2... for the
    further tries)."""

    ttl: int
    slot: int
    sent_at: float
    round: int


class TracePlan:
    """When each probe of a trace is sent and given up (see the module documentation).

    The driver sends what :meth:`start` returns, then, until :attr:`finished`, reports
    each probe's outcome with :meth:`answered` or :meth:`lost` (a cancelled or finished
    probe must not be reported twice), and at :meth:`next_event` calls
    :meth:`expired` (probes to give up: each counts as lost) and :meth:`due` (further
    tries to send now).  :attr:`end` is the last TTL of the path: it drops to the first
    TTL whose answer ended the path (the destination's reply, or destination
    unreachable); :meth:`answered` returns the probes beyond it to cancel.

    Raises ValueError for bad arguments (TypeError for retries that is not an int) and
    for outcomes of probes not outstanding.
    """

    def __init__(
        self,
        first_ttl: int,
        max_ttl: int,
        probes_per_hop: int,
        wait: Wait | None = None,
        retries: int = DEFAULT_RETRIES,
        ahead: int = AHEAD,
    ) -> None:
        if not 1 <= first_ttl <= max_ttl or probes_per_hop < 1 or ahead < 0:
            raise ValueError("need 1 <= first_ttl <= max_ttl, probes_per_hop >= 1, ahead >= 0")
        self.first_ttl = first_ttl
        self.max_ttl = max_ttl
        self.probes_per_hop = probes_per_hop
        self.wait = Wait() if wait is None else wait
        self.offsets = retry_offsets(check_retries(retries), self.wait.max)
        self.ahead = ahead
        self.end = max_ttl
        self.destination_known = False
        self._outstanding: dict[Try, None] = {}
        # (ttl, sent_at) -> how many of the outstanding probes: those share a deadline
        self._sent_together: dict[tuple[int, float], int] = {}
        self._first_sent: dict[int, float] = {}
        self._first_rtt: dict[int, float] = {}
        self._rounds: dict[int, int] = {}
        self._near: dict[int, float] = {}  # ttl -> NEAR's round trip, rebuilt on answers
        self._farthest = first_ttl - 1

    # ------------------------------------------------------------------ the driver's calls

    def start(self, now: float) -> list[Try]:
        """The first round: every slot of every TTL, slot by slot (each TTL's first
        probe before any second one)."""
        ttls = range(self.first_ttl, self.max_ttl + 1)
        tries = [Try(ttl, slot, now, 0) for slot in range(self.probes_per_hop) for ttl in ttls]
        for ttl in ttls:
            self._first_sent[ttl] = now
            self._rounds[ttl] = 0
        self._add(tries)
        return tries

    def answered(self, probe: Try, now: float, *, ends_path: bool = False) -> list[Try]:
        """``probe`` was answered at ``now`` (``ends_path``: by the destination, or with
        destination unreachable).  Returns the outstanding probes beyond the new
        :attr:`end` (none unless the end dropped), which the driver cancels; they are
        no longer outstanding.

        Raises ValueError when ``probe`` is not outstanding.
        """
        self._settle(probe)
        ttl = probe.ttl
        if ttl > self.end:
            return []
        if ttl not in self._first_rtt:
            self._first_rtt[ttl] = max(0.0, now - probe.sent_at)
            self._near = {}
        self._farthest = max(self._farthest, ttl)
        if not ends_path:
            return []
        self.destination_known = True
        if ttl >= self.end:
            return []
        self.end = ttl
        self._farthest = min(self._farthest, ttl)
        beyond = [other for other in self._outstanding if other.ttl > ttl]
        for other in beyond:
            self._settle(other)
        self._near = {}
        return beyond

    def lost(self, probe: Try) -> None:
        """``probe`` ended without an answer (the helper's no-reply).

        Raises ValueError when ``probe`` is not outstanding.
        """
        self._settle(probe)

    def expired(self, now: float) -> list[Try]:
        """The outstanding probes whose wait is over at ``now``; they are no longer
        outstanding (the driver gives them up: no answer)."""
        over = {
            group
            for group in self._sent_together
            if self._group_deadline(*group) <= now  # the deadline of each probe in it
        }
        if not over:
            return []
        done = [probe for probe in self._outstanding if (probe.ttl, probe.sent_at) in over]
        for probe in done:
            self._settle(probe)
        return done

    def due(self, now: float) -> list[Try]:
        """Further tries to send at ``now`` (recorded as sent then): a round of
        ``probes_per_hop`` probes for each TTL whose next try time has come."""
        tries: list[Try] = []
        for ttl in self._retry_ttls():
            at = self._next_retry(ttl)
            if at is None or at > now:
                continue
            passed = sum(1 for offset in self.offsets if self._first_sent[ttl] + offset <= now)
            self._rounds[ttl] = passed
            tries.extend(Try(ttl, slot, now, passed) for slot in range(self.probes_per_hop))
        self._add(tries)
        return tries

    def next_event(self) -> float | None:
        """When :meth:`expired` or :meth:`due` next has something (None: nothing left)."""
        times = [self._group_deadline(*group) for group in self._sent_together]
        times.extend(
            at for at in (self._next_retry(ttl) for ttl in self._retry_ttls()) if at is not None
        )
        return min(times, default=None)

    @property
    def finished(self) -> bool:
        """True when no probe is outstanding and no further try is coming."""
        if self._outstanding:
            return False
        return all(self._next_retry(ttl) is None for ttl in self._retry_ttls())

    # ------------------------------------------------------------------ the rules

    def deadline(self, probe: Try) -> float:
        """When ``probe`` is given up (with the answers known now)."""
        return self._group_deadline(probe.ttl, probe.sent_at)

    def _group_deadline(self, ttl: int, sent_at: float) -> float:
        """When the probes of ``ttl`` sent at ``sent_at`` are given up: the rules know
        nothing else of a probe, so the plan's work per answer does not grow with
        probes_per_hop."""
        limit = self.wait.limit(self._first_rtt.get(ttl), self._near_rtt(ttl))
        return min(sent_at + limit, self._first_sent[ttl] + self.wait.max)

    @property
    def outstanding(self) -> Iterable[Try]:
        """The probes sent and not settled yet."""
        return tuple(self._outstanding)

    @property
    def farthest(self) -> int:
        """The highest TTL (up to :attr:`end`) that answered; first_ttl - 1 if none."""
        return self._farthest

    def _add(self, tries: Iterable[Try]) -> None:
        for probe in tries:
            self._outstanding[probe] = None
            group = (probe.ttl, probe.sent_at)
            self._sent_together[group] = self._sent_together.get(group, 0) + 1

    def _settle(self, probe: Try) -> None:
        """``probe`` is no longer outstanding; raises ValueError when it was not."""
        try:
            del self._outstanding[probe]
        except KeyError:
            raise ValueError(f"probe {probe} is not outstanding") from None
        group = (probe.ttl, probe.sent_at)
        left = self._sent_together[group] - 1
        if left:
            self._sent_together[group] = left
        else:
            del self._sent_together[group]

    def _near_rtt(self, ttl: int) -> float | None:
        """The first answer's round trip of the nearest later TTL that answered."""
        if not self._near and self._first_rtt:
            nearest: float | None = None
            for each in range(self.end, self.first_ttl - 1, -1):
                if nearest is not None:
                    self._near[each] = nearest
                rtt = self._first_rtt.get(each)
                if rtt is not None:
                    nearest = rtt
        return self._near.get(ttl)

    def _retry_ttls(self) -> Iterable[int]:
        """TTLs without an answer that the retry rule wants now."""
        if not self.offsets:
            return ()
        return (
            ttl
            for ttl in range(self.first_ttl, self.end + 1)
            if ttl not in self._first_rtt
            and wants_retry(ttl, self._farthest, self.destination_known, self.ahead)
        )

    def _next_retry(self, ttl: int) -> float | None:
        """When ``ttl`` gets its next further try, or None when it has had them all."""
        done = self._rounds.get(ttl)
        if done is None or done >= len(self.offsets):
            return None
        return self._first_sent[ttl] + self.offsets[done]


# ----------------------------------------------------------------------------- a trace's arguments


def check_ttls(first_ttl: object, max_ttl: object, probes_per_hop: object) -> None:
    """Check the TTL range and probes per hop; raises TypeError/ValueError."""
    first = check_int("first_ttl", first_ttl, 1, 255)
    check_int("max_ttl", max_ttl, first, 255)
    check_int("probes_per_hop", probes_per_hop, 1, 1000)


def check_wait(wait: object, timeout: object) -> Wait:
    """The Wait for ``wait`` or ``timeout`` (MAX alone, as traceroute's ``-w N``), the
    default when neither is given; raises TypeError/ValueError (both given, bad
    values)."""
    if timeout is not None:
        if wait is not None:
            raise ValueError("give wait or timeout, not both")
        return Wait.of(check_seconds("timeout", timeout, positive=True))
    return Wait() if wait is None else Wait.of(wait)
