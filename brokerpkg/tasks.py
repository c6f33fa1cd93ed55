"""Task plumbing of the high-level calls: the session a call runs on
(:func:`session_scope`), name resolution through it (:func:`resolve_address`,
:func:`resolve_addresses`), a task group whose tasks fail together (:class:`TaskGroup`),
and progress events (:class:`ProgressEvent`, :class:`ProgressCounter`).

ping, traceroute, the monitors, multipath traces and the command line's probing
subcommands run on these.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, Generic, Self, TypeVar

from .results import ProgressCallback, ProgressCounter, ProgressEvent
from .session import Session

__all__ = [
    "ProgressCallback",
    "ProgressCounter",
    "ProgressEvent",
    "TaskGroup",
    "resolve_address",
    "resolve_addresses",
    "session_scope",
]

T = TypeVar("T")


# ----------------------------------------------------------------------------- sessions


@contextlib.asynccontextmanager
async def session_scope(
    session: Session | None, helper: str | os.PathLike[str] | None
) -> AsyncIterator[Session]:
    """Yield ``session`` (open, the caller's), or open a new one on ``helper`` and close
    it afterwards.

    Raises ValueError when both are given, TypeError when ``session`` is not a Session,
    and what :meth:`Session.open` raises.
    """
    if session is not None:
        if helper is not None:
            raise ValueError("give session or helper, not both")
        if not isinstance(session, Session):
            raise TypeError(f"session must be a brokerpkg.Session, got {type(session).__name__}")
        yield session
        return
    async with Session(helper) as own:
        yield own


async def resolve_address(session: Session, host: str, family: int | None) -> str:
    """Resolve ``host`` to a numeric address of ``family`` (4, 6, None: the first given)
    through the session's resolver (:meth:`Session.resolve`: cached until its
    ``clear_dns_cache``); numeric addresses are returned in canonical form.

    Raises HostResolveError, TypeError for a non-str host.
    """
    return await session.resolve(host, family)


async def resolve_addresses(
    session: Session, hosts: Sequence[str], family: int | None, concurrency: int
) -> list[str]:
    """Every host's address, as :func:`resolve_address` gives it, in input order, at most
    ``concurrency`` lookups at once (multiping, and the multiping command, resolve every
    host before anything is sent).

    Raises the first error, like :func:`resolve_address` (HostResolveError, TypeError).
    """
    addresses: list[str] = [""] * len(hosts)
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with slots:
            addresses[index] = await resolve_address(session, hosts[index], family)

    async with TaskGroup[None]() as tasks:
        for index in range(len(hosts)):
            tasks.start(one(index))
        await tasks.wait_all()
    return addresses


# ----------------------------------------------------------------------------- tasks


class TaskGroup(Generic[T]):
    """Tasks that fail together: the first exception is raised by the next wait, and
    leaving the ``async with`` block cancels what is left and waits for it.

    Unlike :class:`asyncio.TaskGroup` it raises the original exception (not an
    ExceptionGroup), lets the owner cancel single tasks (a cancelled task is not an
    error), and hands out results in completion order (:meth:`next_result`) when made
    with ``collect=True``.
    """

    def __init__(self, *, collect: bool = False) -> None:
        self._collect = collect
        self._pending: set[asyncio.Task[T]] = set()
        self._finished: collections.deque[T] = collections.deque()
        self._error: BaseException | None = None
        self._wakeup = asyncio.Event()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def pending(self) -> int:
        """Tasks not finished yet."""
        return len(self._pending)

    def start(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coroutine`` as a task of the group."""
        task = asyncio.create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[T]) -> None:
        self._pending.discard(task)
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                if self._error is None:
                    self._error = error
            elif self._collect:
                self._finished.append(task.result())
        self._wakeup.set()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def _wait_wakeup(self, until: float | None) -> bool:
        """Wait for a task to finish, at most until loop time ``until``; False on time."""
        self._wakeup.clear()
        if until is None:
            await self._wakeup.wait()
            return True
        delay = until - asyncio.get_running_loop().time()
        if delay <= 0:
            return False
        try:
            async with asyncio.timeout(delay):
                await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    async def sleep_until(self, until: float) -> None:
        """Sleep until loop time ``until``; raise the first task error meanwhile."""
        while True:
            self._raise_error()
            if not await self._wait_wakeup(until):
                self._raise_error()
                return

    async def wait_all(self, until: float | None = None) -> bool:
        """Wait until every task finished (True) or loop time ``until`` (False); raise
        the first task error."""
        while True:
            self._raise_error()
            if not self._pending:
                return True
            if not await self._wait_wakeup(until):
                self._raise_error()
                return not self._pending

    async def wait_any(self, until: float | None = None) -> bool:
        """Wait until a task finishes (True) or loop time ``until`` (False); raise the
        first task error."""
        self._raise_error()
        finished = await self._wait_wakeup(until)
        self._raise_error()
        return finished

    async def next_result(self) -> T | None:
        """The next result in completion order, or None once nothing is left (needs
        ``collect=True``); raises the first task error."""
        while True:
            self._raise_error()
            if self._finished:
                return self._finished.popleft()
            if not self._pending:
                return None
            await self._wait_wakeup(None)

    async def aclose(self) -> None:
        """Cancel the tasks left and wait for them to end; never raises their errors."""
        tasks = list(self._pending)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
