"""Round-trip-time statistics: pure functions and one accumulator, no I/O, no asyncio.

All times are in milliseconds, as ``ProbeResult.time_ms``.  Definitions and sources:

- **min / avg / max**: of the round-trip times received; ``avg`` is the arithmetic mean.
  As icmplib's ``Host.min_rtt`` / ``avg_rtt`` / ``max_rtt``.
- **packet loss** (:func:`packet_loss`): ``1 - received / sent``, a fraction from 0 to 1,
  0.0 when nothing was sent.  As icmplib's ``Host.packet_loss``.
- **jitter** (:func:`jitter`): the mean of the absolute differences of consecutive
  round-trip times, ``sum(|x[i+1] - x[i]|) / (n - 1)``.  As icmplib's ``Host.jitter``.
- **standard deviation** (:func:`stdev`): the *sample* standard deviation,
  ``sqrt(sum((x - mean)^2) / (n - 1))``.  This is what mtr shows as StDev: its
  ``net_stdev()`` (ui/net.c) returns ``sqrt(ssd / (returned - 1))`` over the received
  samples, ``ssd`` being the Welford sum of squared deviations, and 0 for fewer than two.
  (It is often described as population-style; mtr's source divides by n - 1.)  The
  round-trip times are a sample of what the path could deliver, not the whole
  population, so n - 1 is also the statistically right choice; it equals
  :func:`statistics.stdev`.
- **mean deviation as iputils ping prints it** (:func:`pstdev`): the *population*
  standard deviation ``sqrt(sum(x^2)/n - mean^2)``, ping's ``mdev`` (iputils
  ping_common.c), equal to :func:`statistics.pstdev`.  Offered so ping users can compare.
- **mtr's jitter columns** (:class:`RunningStats`): Jttr, the absolute difference between
  the last two round-trip times received; Javg, mtr's running mean of that difference,
  in which the first reply counts as a difference of 0 (so it is ``sum(|diff|) / n``,
  not ``/ (n - 1)`` as icmplib's jitter); Jmax, the largest difference; Jint, the
  RFC 3550 (A.8; RFC 1889 before it) interarrival jitter estimate
  ``J += (|diff| - J) / 16``.

Where icmplib rounds (three decimals for times, two for loss) and mtr works in integer
microseconds, these functions keep full float precision: rounding is for display.
Where a statistic is undefined (no sample; fewer than two for the sample standard
deviation and the jitters) the value is None, where icmplib and mtr show 0 -- a 0.0 ms
round trip is a plausible measurement, None cannot be mistaken for one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ProbeCounts",
    "RttSummary",
    "RunningStats",
    "jitter",
    "maximum",
    "mean",
    "minimum",
    "packet_loss",
    "pstdev",
    "stdev",
    "summarize",
]

INTERARRIVAL_GAIN = 16
"""RFC 3550 A.8: the interarrival jitter estimate moves 1/16 of the way to each new sample."""


def minimum(rtts: Sequence[float]) -> float | None:
    """The smallest round-trip time, or None when there is none."""
    return min(rtts) if rtts else None


def maximum(rtts: Sequence[float]) -> float | None:
    """The largest round-trip time, or None when there is none."""
    return max(rtts) if rtts else None


def mean(rtts: Sequence[float]) -> float | None:
    """The arithmetic mean (icmplib's avg_rtt), or None when there is no sample."""
    return math.fsum(rtts) / len(rtts) if rtts else None


def packet_loss(sent: int, received: int) -> float:
    """The fraction of probes lost, ``1 - received / sent`` (0.0 when nothing was sent).

    Raises ValueError for negative counts or more received than sent.
    """
    if sent < 0 or received < 0:
        raise ValueError(f"counts must be >= 0, got sent={sent} received={received}")
    if received > sent:
        raise ValueError(f"received ({received}) cannot exceed sent ({sent})")
    if sent == 0:
        return 0.0
    return (sent - received) / sent


def jitter(rtts: Sequence[float]) -> float | None:
    """icmplib's jitter: mean absolute difference of consecutive round-trip times.

    None with fewer than two samples (icmplib returns 0.0 there).
    """
    if len(rtts) < 2:
        return None
    return math.fsum(abs(b - a) for a, b in itertools.pairwise(rtts)) / (len(rtts) - 1)


def _squared_deviations(rtts: Sequence[float]) -> float:
    """Sum of squared deviations from the mean (two passes, for accuracy)."""
    centre = math.fsum(rtts) / len(rtts)
    return math.fsum((x - centre) ** 2 for x in rtts)


def stdev(rtts: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1), mtr's StDev; None with fewer than two samples."""
    if len(rtts) < 2:
        return None
    return math.sqrt(_squared_deviations(rtts) / (len(rtts) - 1))


def pstdev(rtts: Sequence[float]) -> float | None:
    """Population standard deviation (n), iputils ping's mdev; None without samples."""
    if not rtts:
        return None
    return math.sqrt(_squared_deviations(rtts) / len(rtts))


@dataclass(frozen=True, slots=True)
class RttSummary:
    """Statistics of a list of round-trip times (ms), as :func:`summarize` computes them."""

    count: int
    minimum: float | None
    mean: float | None
    maximum: float | None
    stdev: float | None
    pstdev: float | None
    jitter: float | None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (None becomes null)."""
        return {
            "count": self.count,
            "minimum": self.minimum,
            "mean": self.mean,
            "maximum": self.maximum,
            "stdev": self.stdev,
            "pstdev": self.pstdev,
            "jitter": self.jitter,
        }


class _Counted(Protocol):
    """What :class:`ProbeCounts` computes from."""

    @property
    def sent(self) -> int: ...

    @property
    def received(self) -> int: ...

    @property
    def rtts(self) -> list[float]: ...


class ProbeCounts:
    """Mixin for results that define ``sent``, ``received`` and ``rtts`` (ms): the loss
    and min/avg/max statistics computed from them, as the functions above define them."""

    __slots__ = ()

    @property
    def packet_loss(self: _Counted) -> float:
        """Fraction of probes not answered, 0.0 to 1.0."""
        return packet_loss(self.sent, self.received)

    @property
    def min_rtt(self: _Counted) -> float | None:
        """Smallest round-trip time (ms)."""
        return minimum(self.rtts)

    @property
    def avg_rtt(self: _Counted) -> float | None:
        """Mean round-trip time (ms)."""
        return mean(self.rtts)

    @property
    def max_rtt(self: _Counted) -> float | None:
        """Largest round-trip time (ms)."""
        return maximum(self.rtts)

    def counts_to_dict(self: _Counted) -> dict[str, int | float | None]:
        """``sent``, ``received``, ``packet_loss``, ``min_rtt``, ``avg_rtt`` and
        ``max_rtt`` as a JSON-ready dict, in that order (the results' ``to_dict`` keys)."""
        sent, received, rtts = self.sent, self.received, self.rtts
        return {
            "sent": sent,
            "received": received,
            "packet_loss": packet_loss(sent, received),
            "min_rtt": minimum(rtts),
            "avg_rtt": mean(rtts),
            "max_rtt": maximum(rtts),
        }


def summarize(rtts: Sequence[float]) -> RttSummary:
    """All statistics of ``rtts`` (in the order the samples were taken) at once."""
    return RttSummary(
        count=len(rtts),
        minimum=minimum(rtts),
        mean=mean(rtts),
        maximum=maximum(rtts),
        stdev=stdev(rtts),
        pstdev=pstdev(rtts),
        jitter=jitter(rtts),
    )


class RunningStats:
    """mtr's per-hop statistics, updated one round-trip time at a time in O(1) memory.

    Feed samples with :meth:`add` in the order they arrive (mtr's order: a late reply
    counts when it arrives, so ``last`` is the most recent arrival).  Mean and variance
    use Welford's update, as mtr's ``net_process_ping()`` does, but in floating point
    where mtr truncates to integer microseconds.
    """

    __slots__ = (
        "_count",
        "_interarrival",
        "_javg",
        "_jitter",
        "_jmax",
        "_last",
        "_m2",
        "_maximum",
        "_mean",
        "_minimum",
    )

    def __init__(self) -> None:
        self._count = 0
        self._last = 0.0
        self._minimum = math.inf
        self._maximum = -math.inf
        self._mean = 0.0
        self._m2 = 0.0
        self._jitter = 0.0
        self._javg = 0.0
        self._jmax = 0.0
        self._interarrival = 0.0

    def add(self, rtt: float) -> None:
        """Account one received round-trip time (ms).

        Raises ValueError for a negative or non-finite time.
        """
        if not (math.isfinite(rtt) and rtt >= 0):
            raise ValueError(f"round-trip time must be a finite number >= 0, got {rtt!r}")
        difference = abs(rtt - self._last) if self._count else 0.0
        self._count += 1
        self._last = rtt
        self._minimum = min(self._minimum, rtt)
        self._maximum = max(self._maximum, rtt)
        previous_mean = self._mean
        self._mean += (rtt - previous_mean) / self._count
        self._m2 += (rtt - previous_mean) * (rtt - self._mean)
        self._jitter = difference
        self._jmax = max(self._jmax, difference)
        self._javg += (difference - self._javg) / self._count
        self._interarrival += (difference - self._interarrival) / INTERARRIVAL_GAIN

    @property
    def count(self) -> int:
        """Samples added (mtr's Rcv)."""
        return self._count

    @property
    def last(self) -> float | None:
        """The most recent sample (mtr's Last)."""
        return self._last if self._count else None

    @property
    def best(self) -> float | None:
        """The smallest sample (mtr's Best)."""
        return self._minimum if self._count else None

    @property
    def worst(self) -> float | None:
        """The largest sample (mtr's Wrst)."""
        return self._maximum if self._count else None

    @property
    def mean(self) -> float | None:
        """The mean (mtr's Avg)."""
        return self._mean if self._count else None

    @property
    def stdev(self) -> float | None:
        """Sample standard deviation, n - 1 (mtr's StDev); None below two samples."""
        if self._count < 2:
            return None
        return math.sqrt(max(self._m2, 0.0) / (self._count - 1))

    @property
    def jitter(self) -> float | None:
        """|last - previous| (mtr's Jttr); None below two samples."""
        return self._jitter if self._count >= 2 else None

    @property
    def javg(self) -> float | None:
        """mtr's Javg: sum of |differences| / samples (the first counts as 0)."""
        return self._javg if self._count >= 2 else None

    @property
    def jmax(self) -> float | None:
        """The largest |difference| (mtr's Jmax); None below two samples."""
        return self._jmax if self._count >= 2 else None

    @property
    def interarrival_jitter(self) -> float | None:
        """RFC 3550 A.8 interarrival jitter J (mtr's Jint shows 16 J: its fixed-point
        counter); None below two samples."""
        return self._interarrival if self._count >= 2 else None
