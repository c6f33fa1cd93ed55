"""Blocking versions of the high-level functions, for scripts without asyncio.

Each function here runs its asynchronous namesake with :func:`asyncio.run` and takes
the same arguments, except ``session`` (a Session belongs to an event loop; give
``helper`` instead, or nothing to search for it): there is one body per function, the
async one.

    >>> from brokerpkg import sync
    >>> result = sync.ping("127.0.0.1", count=3, interval=0.2)     # doctest: +SKIP
    >>> reports = sync.monitor("127.0.0.1", cycles=5)              # doctest: +SKIP

- :func:`ping` -> :class:`~brokerpkg.ping.PingResult` (:func:`brokerpkg.ping.ping`)
- :func:`multiping` -> list of PingResult (:func:`brokerpkg.ping.multiping`)
- :func:`traceroute` -> :class:`~brokerpkg.trace.TraceResult`
  (:func:`brokerpkg.trace.traceroute`)
- :func:`monitor` -> list of :class:`~brokerpkg.mtr.MonitorReport`, one per cycle
  (:func:`brokerpkg.mtr.monitor`; ``cycles`` is required)
- :func:`monitor_flows` -> list of :class:`~brokerpkg.mtr.FlowsReport`, one per cycle
  (:func:`brokerpkg.mtr.monitor_flows`; ``cycles`` is required)
- :func:`multipath_trace` -> :class:`~brokerpkg.multipath.MultipathResult`
  (:func:`brokerpkg.multipath.multipath_trace`)

They raise what the async functions raise, and RuntimeError when called from a running
event loop (use the async functions there).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

# From-imports: ``brokerpkg.ping`` the attribute is the function (as in icmplib), the
# module is reached through the import system.
from .mtr import monitor as _monitor
from .mtr import monitor_flows as _monitor_flows
from .multipath import multipath_trace as _multipath_trace
from .ping import multiping as _multiping
from .ping import ping as _ping
from .trace import traceroute as _traceroute

__all__ = ["monitor", "monitor_flows", "multipath_trace", "multiping", "ping", "traceroute"]

P = ParamSpec("P")
R = TypeVar("R")


def _check_call(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse a running loop and a session argument, before any coroutine exists."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            f"brokerpkg.sync.{name}() cannot run inside an event loop; "
            f"use the asynchronous brokerpkg.{name}() there"
        )
    if kwargs.get("session") is not None:
        raise TypeError(
            f"brokerpkg.sync.{name}() opens its own session; pass helper= instead of session="
        )


def _blocking(function: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """A blocking function running ``function`` in a new event loop."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        _check_call(function.__name__, kwargs)
        return asyncio.run(function(*args, **kwargs))

    run.__doc__ = f"Blocking {function.__name__}: see brokerpkg.{function.__name__}.\n\n" + (
        function.__doc__ or ""
    )
    return run


def _collecting(function: Callable[P, AsyncIterator[R]]) -> Callable[P, list[R]]:
    """A blocking function returning everything the async iterator ``function`` yields;
    its ``cycles`` argument must be given (an endless iteration would never return)."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> list[R]:
        _check_call(function.__name__, kwargs)
        if signature.bind(*args, **kwargs).arguments.get("cycles") is None:
            raise ValueError(
                f"brokerpkg.sync.{function.__name__}() needs cycles (it returns a list)"
            )

        async def collect() -> list[R]:
            return [item async for item in function(*args, **kwargs)]

        return asyncio.run(collect())

    run.__doc__ = (
        f"Blocking {function.__name__} for a number of cycles: returns the list of its "
        f"reports.  See brokerpkg.{function.__name__}.\n\n" + (function.__doc__ or "")
    )
    return run


ping = _blocking(_ping)
multiping = _blocking(_multiping)
traceroute = _blocking(_traceroute)
monitor = _collecting(_monitor)
monitor_flows = _collecting(_monitor_flows)
multipath_trace = _blocking(_multipath_trace)
