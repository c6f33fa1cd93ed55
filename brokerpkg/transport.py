"""Byte streams to a helper: a child process, or any pair of asyncio streams.

The session speaks the protocol over a :class:`Transport` and never touches a process
itself, so tests can swap in scripted streams, and a helper on another host works through
any command that carries bytes (``ssh host brokerpkg-helper``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shlex
import signal
from collections.abc import Mapping, Sequence
from typing import Self

from .errors import HelperExitedError, HelperNotFoundError, ProcessError
from .protocol import decode_line

READ_LIMIT = 65536
"""Longest line read from the helper; longer ones are discarded as garbage."""

STDERR_LINES_KEPT = 10
EXIT_WAIT = 2.0
"""Seconds to wait for a helper to exit after it closed its output, or after a kill."""

STREAM_END_WAIT = 2.0
"""Seconds to wait for a pipe to reach end-of-file after the helper was killed."""

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_WORD = re.compile(r"""\s*(?:[^\s'"\\]|\\.|'[^']*'|"(?:[^"\\]|\\.)*")+""")
"""One word of a shell command line as the shell splits it (quotes and backslashes kept)."""
_OPERATOR_CHARACTERS = frozenset("();<>|&")
_REDIRECTIONS = frozenset({"<", ">", ">>", "<&", ">&", "<>", ">|"})
_NOT_EXECUTABLE = frozenset(
    {
        # reserved words: the start of a compound command
        *("!", "{", "}", "case", "do", "done", "elif", "else", "esac", "fi", "for", "if"),
        *("in", "then", "until", "while"),
        # built-ins that act on the shell itself (exec would run a program of that name)
        *("break", "cd", "command", "continue", ".", ":", "eval", "exec", "exit", "export"),
        *("readonly", "return", "set", "shift", "times", "trap", "unset"),
    }
)
"""First words after which ``exec`` would change what a command does (``exec`` itself:
the command replaces the shell already)."""


def exec_in_shell(command: str) -> str:
    """The shell command string ``command`` rewritten so that /bin/sh replaces itself
    with the program it runs (``helper -x`` becomes ``exec helper -x``, ``A=1 helper``
    becomes ``A=1 exec helper``): the child process is then the helper, and killing it
    ends the helper and its pipes at once.

    Only one simple command is rewritten (words, leading variable assignments and
    redirections); anything else (``;``, ``&&``, ``|``, ``$(...)``, several lines,
    compound commands, shell built-ins, unbalanced quotes) is returned unchanged and
    keeps its shell as the child.  Pure; never raises.
    """
    words = _simple_command(command)
    if words is None:
        return command
    assignments = 0
    while _ASSIGNMENT.match(words[assignments]):
        assignments += 1
    end = _end_of_words(command, words[:assignments])
    if end is None:
        return command
    return command[:end] + (" exec" if end else "exec ") + command[end:]


def _simple_command(command: str) -> list[str] | None:
    """The words of ``command`` as the shell splits them if it is one simple command
    whose program ``exec`` can run, else None."""
    if "\n" in command:
        return None
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # unbalanced quotes: the shell says so
        return None
    if any(set(word) <= _OPERATOR_CHARACTERS and word not in _REDIRECTIONS for word in words):
        return None
    program = next((word for word in words if not _ASSIGNMENT.match(word)), None)
    if program is None or program in _NOT_EXECUTABLE:
        return None
    return words


def _end_of_words(command: str, words: list[str]) -> int | None:
    """Where the leading ``words`` (assignments) of ``command`` end, or None when the
    shell would split them otherwise."""
    end = 0
    for _ in words:
        match = _SHELL_WORD.match(command, end)
        if match is None:
            return None
        end = match.end()
    return end if shlex.split(command[:end]) == words else None


class Transport:
    """A line stream to a helper: ``reader`` gives reply lines, ``writer`` takes requests.

    ``description`` names the helper in messages.  Subclasses add process handling.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, description: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.description = description

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """The child process, if this transport has one."""
        return None

    def stderr_lines(self) -> tuple[str, ...]:
        """The last lines the helper wrote on standard error (none for plain streams)."""
        return ()

    async def exit_status(self) -> int | None:
        """After the reader reached end-of-file: the helper's exit status, if known.

        Never raises; None when there is no process or it did not exit in time.
        """
        return None

    def exit_error(
        self, returncode: int | None, stderr_line: str | None, *, opened: bool
    ) -> ProcessError:
        """The error that fails every pending request once the helper's output ended
        (``returncode`` from :meth:`exit_status`, ``stderr_line`` its last line,
        ``opened``: it had answered the feature queries): HelperExitedError here,
        explained in ssh's terms by :class:`~brokerpkg.remote.SshTransport`.  Never raises.
        """
        return HelperExitedError(self.description, returncode, stderr_line)

    async def close(self) -> None:
        """Close the stream; never raises."""
        self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STREAM_END_WAIT):
                await self.writer.wait_closed()


class ProcessTransport(Transport):
    """A helper run as a child process in its own process group.

    Standard error is read concurrently (so the helper never blocks on it) and only the
    last lines are kept.  :meth:`close` kills the whole process group, reaps the child
    and waits for every pipe to close: no zombie, no open descriptor.
    """

    def __init__(self, process: asyncio.subprocess.Process, description: str) -> None:
        assert process.stdout is not None
        assert process.stdin is not None
        assert process.stderr is not None
        super().__init__(process.stdout, process.stdin, description)
        self._process = process
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._stderr_task = asyncio.create_task(self._read_stderr(process.stderr))

    @classmethod
    async def start(
        cls,
        argv: Sequence[str] | None = None,
        *,
        shell_command: str | None = None,
        env: Mapping[str, str] | None = None,
        description: str,
    ) -> Self:
        """Start ``argv`` (no shell) or ``shell_command`` (through /bin/sh, which
        ``exec``s the helper when the string is one simple command: see
        :func:`exec_in_shell`).

        Raises HelperNotFoundError when the program does not exist and ProcessError
        when it cannot be started (not executable, out of resources).
        """
        pipe = asyncio.subprocess.PIPE
        environment = None if env is None else dict(env)
        try:
            if shell_command is not None:
                process = await asyncio.create_subprocess_shell(
                    exec_in_shell(shell_command),
                    stdin=pipe,
                    stdout=pipe,
                    stderr=pipe,
                    env=environment,
                    start_new_session=True,
                    limit=READ_LIMIT,
                )
            else:
                assert argv
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=pipe,
                    stdout=pipe,
                    stderr=pipe,
                    env=environment,
                    start_new_session=True,
                    limit=READ_LIMIT,
                )
        except FileNotFoundError as error:
            raise HelperNotFoundError(f"helper {description} does not exist: {error}") from error
        except OSError as error:
            raise ProcessError(f"cannot start helper {description}: {error}") from error
        return cls(process, description)

    @property
    def process(self) -> asyncio.subprocess.Process:
        """The child process."""
        return self._process

    def stderr_lines(self) -> tuple[str, ...]:
        """The last lines (at most STDERR_LINES_KEPT) the helper wrote on standard error."""
        return tuple(self._stderr_tail)

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        """Keep the last non-empty stderr lines until end-of-file."""
        while True:
            try:
                raw = await stream.readline()
            except ValueError:
                self._stderr_tail.append("(over-long line)")
                continue
            except ConnectionError:
                return
            if not raw:
                return
            line = decode_line(raw).strip()
            if line:
                self._stderr_tail.append(line)

    async def exit_status(self) -> int | None:
        """Wait (bounded) for the helper to exit and its stderr to end; return the status."""
        returncode: int | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXIT_WAIT):
                returncode = await self._process.wait()
        await asyncio.wait({self._stderr_task}, timeout=STREAM_END_WAIT)
        return returncode

    def _kill_group(self) -> None:
        """SIGKILL the helper's process group (or the helper alone); never raises.

        The group is killed even when the helper itself already exited: a shell's child
        left behind keeps the group (and its id) alive until it is gone.
        """
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except OSError:
            if self._process.returncode is None:
                with contextlib.suppress(OSError):
                    self._process.kill()

    async def close(self) -> None:
        """Close stdin, kill the process group, reap the child, close every pipe.

        Bounded in time and never raises.  The session's reader sees end-of-file.
        """
        with contextlib.suppress(Exception):
            self.writer.close()
        self._kill_group()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(EXIT_WAIT):
                await self._process.wait()
        await asyncio.wait({self._stderr_task}, timeout=STREAM_END_WAIT)
        self._close_pipes()
        self._stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_task
        # a helper that exited before reading its requests broke the pipe: collect that
        # error, or asyncio (Python 3.11.2, Debian's) prints "Future exception was never
        # retrieved" and a traceback after the command's one-line message
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STREAM_END_WAIT):
                await self.writer.wait_closed()

    def _close_pipes(self) -> None:
        """Close the subprocess transport and with it every pipe, now.

        asyncio closes it by itself only once every pipe reached end-of-file, which a
        descendant holding a pipe open can delay forever; it offers no public way to
        force it, hence the private attribute (a no-op when it is already closed).
        """
        transport = getattr(self._process, "_transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
