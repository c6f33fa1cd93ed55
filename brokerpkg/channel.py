"""The asyncio side of a helper's pipes, for :class:`~brokerpkg.session.Session`.

A channel moves bytes between the event loop and a helper: :class:`PipeChannel` over a
:class:`~brokerpkg.transport.Transport` (its descriptors watched with
``loop.add_reader`` / ``add_writer``, no stream objects in between), and
:class:`StreamChannel` over a pair of asyncio streams (``Session.from_streams``).

Both take ``on_data(bytes)``, ``on_eof()`` and ``on_idle()`` callbacks at :meth:`start`:
``on_idle`` runs when bytes held back because the pipe was full have all been written,
so that the session hands out more requests only then.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .errors import HelperExitedError, ProcessError
from .transport import EXIT_WAIT, ChildProcess, Transport

READ_CHUNK = 65536
STREAM_END_WAIT = 2.0
"""Seconds to wait for standard error to end once the helper's output ended."""

DataCallback = Callable[[bytes], None]
Callback = Callable[[], None]


class PipeChannel:
    """A transport's descriptors on the event loop."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.description = transport.description
        self._loop = asyncio.get_running_loop()
        self._pending_bytes = bytearray()
        self._watching: list[int] = []
        self._writing = False
        self._stderr_done = self._loop.create_future()
        self._returncode: int | None = None
        self._on_data: DataCallback = _ignore_data
        self._on_eof: Callback = _nothing
        self._on_idle: Callback = _nothing

    @property
    def process(self) -> ChildProcess | None:
        """The helper's process, if any."""
        return self.transport.process

    def stderr_lines(self) -> tuple[str, ...]:
        """The last lines the helper wrote on standard error."""
        return self.transport.stderr_lines()

    def start(self, on_data: DataCallback, on_eof: Callback, on_idle: Callback) -> None:
        """Watch the helper's output (and standard error) from now on."""
        self._on_data, self._on_eof, self._on_idle = on_data, on_eof, on_idle
        self._watch(self.transport.fileno(), self._readable)
        stderr = self.transport.stderr_fileno()
        if stderr is None:
            self._stderr_done.set_result(None)
        else:
            self._watch(stderr, self._stderr_readable)

    def _watch(self, descriptor: int, callback: Callback) -> None:
        self._loop.add_reader(descriptor, callback)
        self._watching.append(descriptor)

    def _unwatch(self, descriptor: int) -> None:
        if descriptor in self._watching:
            self._watching.remove(descriptor)
            self._loop.remove_reader(descriptor)

    def _readable(self) -> None:
        try:
            data = self.transport.read(READ_CHUNK)
        except BlockingIOError:
            return
        if data:
            self._on_data(data)
        else:
            self._unwatch(self.transport.fileno())
            self._on_eof()

    def _stderr_readable(self) -> None:
        if not self.transport.read_stderr():
            stderr = self.transport.stderr_fileno()
            assert stderr is not None
            self._unwatch(stderr)
            if not self._stderr_done.done():
                self._stderr_done.set_result(None)

    @property
    def idle(self) -> bool:
        """True while nothing is held back: the pipe took every byte sent."""
        return not self._pending_bytes

    def send(self, data: bytes) -> None:
        """Write ``data`` (what the pipe does not take now is written when it can).

        A helper gone is left for the reader to report (it sees end-of-file and the
        exit status): the bytes are dropped.
        """
        if self._pending_bytes:
            self._pending_bytes += data
            return
        try:
            written = self.transport.write(data)
        except OSError:
            return
        if written < len(data):
            self._pending_bytes += memoryview(data)[written:]
            self._loop.add_writer(self.transport.write_fileno(), self._writable)
            self._writing = True

    def _writable(self) -> None:
        try:
            written = self.transport.write(self._pending_bytes)
        except OSError:
            written = len(self._pending_bytes)
        del self._pending_bytes[:written]
        if not self._pending_bytes:
            self._stop_writing()
            self._on_idle()

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self.transport.write_fileno())

    async def wait_ended(self) -> None:
        """After end-of-file: wait (bounded) for the helper to exit and for its standard
        error to end.  Never raises."""
        process = self.transport.process
        if process is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(EXIT_WAIT):
                    self._returncode = await process.wait()
        await asyncio.wait({self._stderr_done}, timeout=STREAM_END_WAIT)

    def exit_error(self, opened: bool) -> ProcessError:
        """The error the helper's end means (after :meth:`wait_ended`), a new one each
        call; never raises."""
        stderr = self.transport.stderr_lines()
        last_line = stderr[-1] if stderr else None
        return self.transport.exit_error(self._returncode, last_line, opened=opened)

    async def close(self) -> None:
        """Stop watching, then stop the helper and close its pipes; never raises."""
        for descriptor in list(self._watching):
            self._unwatch(descriptor)
        self._stop_writing()
        self._pending_bytes.clear()
        self.transport.close()


class StreamChannel:
    """A pair of asyncio streams to a helper someone else runs."""

    process = None

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str):
        self.description = name
        self._reader = reader
        self._writer = writer
        self._reading: asyncio.Task[None] | None = None
        self._draining: asyncio.Task[None] | None = None
        self._on_idle: Callback = _nothing

    def stderr_lines(self) -> tuple[str, ...]:
        """None: streams have no standard error."""
        return ()

    def start(self, on_data: DataCallback, on_eof: Callback, on_idle: Callback) -> None:
        """Read the stream from now on."""
        self._on_idle = on_idle
        self._reading = asyncio.create_task(self._read(on_data, on_eof))

    async def _read(self, on_data: DataCallback, on_eof: Callback) -> None:
        while True:
            try:
                chunk = await self._reader.read(READ_CHUNK)
            except ConnectionError:
                chunk = b""
            if not chunk:
                break
            on_data(chunk)
        on_eof()

    @property
    def idle(self) -> bool:
        """True while the stream holds nothing back."""
        writer = self._writer
        return not writer.is_closing() and not writer.transport.get_write_buffer_size()

    def send(self, data: bytes) -> None:
        """Write ``data``; once the stream is above its high water, call ``on_idle``
        when it drained."""
        if self._writer.is_closing():
            return
        self._writer.write(data)
        if self._draining is None and self._writer.transport.get_write_buffer_size():
            self._draining = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()
        finally:
            self._draining = None
        self._on_idle()

    async def wait_ended(self) -> None:
        """Nothing to wait for: someone else owns the helper."""

    def exit_error(self, opened: bool) -> ProcessError:
        """The stream ended: HelperExitedError without a status.  Never raises."""
        return HelperExitedError(self.description, None, None)

    async def close(self) -> None:
        """Close the writer and stop reading; never raises."""
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STREAM_END_WAIT):
                await self._writer.wait_closed()
        for task in (self._reading, self._draining):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                await asyncio.wait({task})


def _ignore_data(data: bytes) -> None:
    """on_data before start()."""


def _nothing() -> None:
    """A callback before start()."""
