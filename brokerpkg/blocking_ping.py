"""A host's ping on a :class:`~brokerpkg.blocking.BlockingSession`: :class:`Pinging`
and :func:`run_pings`, the loop of :func:`brokerpkg.sync.ping`, :func:`brokerpkg.sync.multiping`
and the command line's ping and multiping (which stop it with Ctrl-C).  No asyncio.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .answers import classify
from .blocking import BlockingSession
from .engine import ProbeTemplate, Request
from .protocol import ProbeResult
from .results import PingResult

__all__ = ["Pinging", "Report", "run_pings"]


class Pinging:
    """One host's ping on a blocking session: ``count`` probes (None: no end)
    ``interval`` seconds apart from :meth:`begin`; their results by sequence number
    (from 0), ``sent`` and ``settled`` counted."""

    def __init__(
        self, host: str, address: str, template: ProbeTemplate, count: int | None, interval: float
    ) -> None:
        self.host = host
        self.address = address
        self.template = template
        self.count = count
        self.interval = interval
        self.results: dict[int, ProbeResult] = {}
        self.sent = 0
        self.settled = 0
        self.began = 0.0

    def begin(self, now: float) -> None:
        """Its turn came at ``now``: the first probe goes now."""
        self.began = now

    def next_send(self) -> float | None:
        """When the next probe goes (None: all sent)."""
        return None if self.sent == self.count else self.began + self.sent * self.interval

    @property
    def done(self) -> bool:
        """Every probe sent and settled."""
        return self.settled == self.count

    def probes(self) -> tuple[ProbeResult, ...]:
        """The settled probes in sequence order."""
        return tuple(self.results[sequence] for sequence in sorted(self.results))

    def result(self) -> PingResult:
        return PingResult(self.host, self.address, self.probes())


Report = Callable[[Pinging, int, ProbeResult], None]
"""Called with (the host's ping, the sequence number, the result) as each probe ends."""


def run_pings(
    session: BlockingSession,
    pings: Sequence[Pinging],
    concurrency: int,
    report: Report,
    done: Callable[[Pinging], None] | None = None,
) -> None:
    """Ping every host of ``pings``, at most ``concurrency`` at once in input order (a
    host's turn starts when an earlier one is done, ``done(it)`` then); ``report`` as
    each probe ends.  Any error (a probe's local failure, KeyboardInterrupt) gives up
    the probes in flight and is raised: ``sent`` and ``results`` say how far it got."""
    waiting = list(reversed(pings))
    active: list[Pinging] = []
    flight: dict[Request, tuple[Pinging, int]] = {}
    try:
        while waiting or active:
            now = time.monotonic()
            while waiting and len(active) < concurrency:
                pinging = waiting.pop()
                pinging.begin(now)
                active.append(pinging)
            for pinging in active:
                send_at = pinging.next_send()
                while send_at is not None and send_at <= now:
                    flight[session.start(pinging.template)] = (pinging, pinging.sent)
                    pinging.sent += 1
                    send_at = pinging.next_send()
            sends = [at for pinging in active if (at := pinging.next_send()) is not None]
            for request in session.wait(min(sends) if sends else None):
                pinging, sequence = flight.pop(request)
                result = session.result(request)
                classify(result)  # raises for local failures
                pinging.results[sequence] = result
                pinging.settled += 1
                report(pinging, sequence, result)
            for pinging in active:
                if pinging.done and done is not None:
                    done(pinging)
            active = [pinging for pinging in active if not pinging.done]
    finally:
        session.give_up(flight)
