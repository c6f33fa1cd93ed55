"""Terminal output for the command line: the live view's screen and a progress line.

:class:`Screen` takes over a terminal for ``brokerpkg mtr``'s live view as mtr does: the
alternate screen, no cursor, keys read one at a time without echo; every frame is drawn
from the top-left corner over the previous one.  Leaving it (normally, on ``q``, Ctrl-C,
or an exception) restores the terminal's settings and the screen that was there.

:class:`ProgressLine` keeps one transient line on a terminal (``12/100 hosts done``) and
stays silent when its stream is not a terminal.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import termios
import time
import tty
from collections.abc import AsyncGenerator, Callable, Sequence
from types import TracebackType
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

ENTER = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J"
"""Switch to the alternate screen, hide the cursor, clear."""
LEAVE = "\x1b[?25h\x1b[?1049l"
"""Show the cursor, back to the normal screen (as it was before)."""
HOME = "\x1b[H"
CLEAR_LINE = "\x1b[K"
CLEAR_BELOW = "\x1b[J"
QUIT_KEYS = frozenset(b"qQ\x03")
"""Keys that end the live view (Ctrl-C also arrives as SIGINT)."""
QUIT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Screen:
    """A terminal taken over for a full-screen display (a context manager).

    ``out`` must be a terminal; ``keys`` is read for :data:`QUIT_KEYS` when it is a
    terminal too (its settings are switched to cbreak: no echo, no line buffering, and
    restored on exit).
    """

    def __init__(self, out: TextIO, keys: TextIO | None) -> None:
        self.out = out
        self.keys_fd: int | None = None
        if keys is not None and keys.isatty():
            self.keys_fd = keys.fileno()
        self._saved: list[Any] | None = None

    def __enter__(self) -> Screen:
        if self.keys_fd is not None:
            self._saved = termios.tcgetattr(self.keys_fd)
            tty.setcbreak(self.keys_fd, termios.TCSANOW)
        self.out.write(ENTER)
        self.out.flush()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.out.write(LEAVE)
            self.out.flush()
        finally:
            if self.keys_fd is not None and self._saved is not None:
                termios.tcsetattr(self.keys_fd, termios.TCSADRAIN, self._saved)

    def size(self) -> os.terminal_size:
        """The terminal's columns and lines."""
        return shutil.get_terminal_size()

    def draw(self, lines: Sequence[str]) -> None:
        """Draw ``lines`` from the top-left corner over the previous frame."""
        body = (CLEAR_LINE + "\n").join(lines)
        self.out.write(HOME + body + CLEAR_LINE + CLEAR_BELOW)
        self.out.flush()


async def run_screen(
    screen: Screen,
    frames: AsyncGenerator[T, None],
    render: Callable[[T | None, os.terminal_size], Sequence[str]],
) -> T | None:
    """Show ``render(frame, size)`` for each frame of ``frames`` until they end or the
    user quits (``q``, Ctrl-C, SIGTERM, SIGHUP); redraw on a terminal resize.  Returns
    the last frame (None if none came).

    Quitting cancels the iteration of ``frames`` (an async generator is closed, so its
    own clean-up runs).  Raises what iterating ``frames`` raises.
    """
    import asyncio  # here: multiping's progress line comes from this module too

    loop = asyncio.get_running_loop()
    quit_event = asyncio.Event()
    latest: list[T] = []

    def redraw() -> None:
        screen.draw(render(latest[-1] if latest else None, screen.size()))

    def on_key() -> None:
        assert screen.keys_fd is not None
        try:
            data = os.read(screen.keys_fd, 1024)
        except OSError:
            data = b""
        if not data:  # the keyboard went away: stop watching it
            loop.remove_reader(screen.keys_fd)
        elif QUIT_KEYS.intersection(data):
            quit_event.set()

    async def consume() -> None:
        async with contextlib.aclosing(frames):
            async for frame in frames:
                latest.append(frame)
                del latest[:-1]
                redraw()

    for number in QUIT_SIGNALS:
        loop.add_signal_handler(number, quit_event.set)
    loop.add_signal_handler(signal.SIGWINCH, redraw)
    if screen.keys_fd is not None:
        loop.add_reader(screen.keys_fd, on_key)
    try:
        redraw()
        consumer = asyncio.create_task(consume())
        quitter = asyncio.create_task(quit_event.wait())
        await asyncio.wait({consumer, quitter}, return_when=asyncio.FIRST_COMPLETED)
        quitter.cancel()
        if not consumer.done():
            consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
    finally:
        if screen.keys_fd is not None:
            loop.remove_reader(screen.keys_fd)
        for number in (*QUIT_SIGNALS, signal.SIGWINCH):
            loop.remove_signal_handler(number)
    return latest[-1] if latest else None


class ProgressLine:
    """A transient status line (``12/100 hosts done``) on ``stream`` if it is a
    terminal; nothing otherwise.

    It appears ``delay`` seconds after creation (short runs never show it), is redrawn
    at most every ``every`` seconds, and is erased by :meth:`clear` (call it before
    writing anything else to the same terminal) and :meth:`finish`.
    """

    def __init__(
        self,
        stream: TextIO,
        total: int,
        *,
        what: str = "hosts done",
        delay: float = 0.5,
        every: float = 0.1,
    ) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.total = total
        self.what = what
        self.done = 0
        self._shown = False
        self._show_after = time.monotonic() + delay
        self._every = every
        self._last_drawn = 0.0

    def update(self, done: int) -> None:
        """Record ``done`` and redraw when due."""
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._show_after or (now - self._last_drawn < self._every and done < self.total):
            return
        self._last_drawn = now
        self.stream.write(f"\r{self.done}/{self.total} {self.what}{CLEAR_LINE}")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the line (it comes back at the next update)."""
        if self._shown:
            self.stream.write("\r" + CLEAR_LINE)
            self.stream.flush()
            self._shown = False
            self._last_drawn = 0.0

    def finish(self) -> None:
        """Erase the line for good."""
        self.clear()
        self.enabled = False
