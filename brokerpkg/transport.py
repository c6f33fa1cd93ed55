"""Byte pipes to a helper: :class:`ProcessTransport`, a child process.

The drivers (the asyncio :class:`~brokerpkg.session.Session`, a blocking one on
``selectors``) speak the protocol over a :class:`Transport` and never touch a process
themselves, and a helper on another host works through any command that carries bytes
(``ssh host brokerpkg-helper``).  Nothing here imports asyncio or blocks, but for
:meth:`Transport.close` (bounded): a driver waits for :meth:`Transport.fileno` to be
readable and :meth:`Transport.write_fileno` writable and calls the non-blocking
:meth:`~Transport.read` and :meth:`~Transport.write`.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Self

from .errors import HelperExitedError, HelperNotFoundError, ProcessError
from .protocol import decode_line

STDERR_LINES_KEPT = 10
STDERR_CHUNK = 65536
STDERR_LINE_LIMIT = 65536
"""Longest standard-error line kept; longer ones are recorded as ``(over-long line)``."""
EXIT_WAIT = 2.0
"""Seconds to wait for a helper to exit after it closed its output, or after a kill."""
WAIT_POLL = 0.05
"""Longest pause between two looks at a child process :meth:`ChildProcess.wait` awaits."""

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


class Launch(NamedTuple):
    """How to start the helper: argv, or a shell command string."""

    argv: tuple[str, ...] | None
    shell_command: str | None
    description: str


def launch_from_command(command: str | Sequence[str], shell: bool) -> Launch:
    """Check the command argument and say how to run it.

    Raises TypeError/ValueError for an empty command, a string without shell=True, or a
    list with shell=True.
    """
    if isinstance(command, str):
        if not shell:
            raise ValueError(
                "a command string needs shell=True; otherwise pass a list of arguments"
            )
        if not command.strip():
            raise ValueError("command must not be empty")
        return Launch(None, command, command)
    if shell:
        raise ValueError("shell=True needs the command as one string")
    argv = tuple(command)
    if not argv or not all(isinstance(word, str) for word in argv):
        raise TypeError("command must be a non-empty list of str arguments")
    return Launch(argv, None, shlex.join(argv))


class ChildProcess:
    """The helper's process, as :attr:`Transport.process` gives it: ``pid``,
    ``returncode`` (None while it runs), :meth:`kill`, :meth:`send_signal` and the
    coroutine :meth:`wait`, as asyncio's Process has them."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    def __repr__(self) -> str:
        return f"<ChildProcess {self.pid} returncode={self.returncode}>"

    @property
    def pid(self) -> int:
        """The process id."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs; reaps."""
        return self._popen.poll()

    def send_signal(self, number: int) -> None:
        """Send signal ``number`` unless the process was reaped already; never raises."""
        if self._popen.poll() is None:
            with contextlib.suppress(OSError):
                self._popen.send_signal(number)

    def kill(self) -> None:
        """SIGKILL the process (not its group); never raises."""
        self.send_signal(signal.SIGKILL)

    def wait_for(self, timeout: float) -> int | None:
        """Block at most ``timeout`` seconds for the exit; the status, or None."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self._popen.wait(timeout)
        return None

    async def wait(self) -> int:
        """Wait (without blocking the event loop) for the exit; return its status."""
        import asyncio  # noqa: PLC0415 - only asyncio callers get here, blocking ones never

        delay = 0.001
        while (returncode := self._popen.poll()) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, WAIT_POLL)
        return returncode


class Transport(abc.ABC):
    """Non-blocking pipes to a helper: replies come on :meth:`fileno`, requests go to
    :meth:`write_fileno`, its standard error (when there is one) on
    :meth:`stderr_fileno`.  ``description`` names the helper in messages.

    Every method but :meth:`close` returns at once; none raises unless it says so.
    """

    description: str

    @property
    def process(self) -> ChildProcess | None:
        """The child process, if this transport has one."""
        return None

    @abc.abstractmethod
    def fileno(self) -> int:
        """The descriptor the helper's replies are read from."""

    @abc.abstractmethod
    def write_fileno(self) -> int:
        """The descriptor requests are written to."""

    def stderr_fileno(self) -> int | None:
        """The descriptor of the helper's standard error, or None (then it is not read)."""
        return None

    @abc.abstractmethod
    def read(self, size: int) -> bytes:
        """Up to ``size`` reply bytes; b"" at end-of-file (or a broken connection).

        Raises BlockingIOError when none are there yet.
        """

    @abc.abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write what the pipe takes now of ``data``; return how many bytes (0 when full).

        Raises OSError (BrokenPipeError) when the helper stopped reading: the reader
        reports it (it sees end-of-file and the exit status).
        """

    def read_stderr(self) -> bool:
        """Read what the helper wrote on standard error (the last lines are kept);
        False once it ended (or there is none)."""
        return False

    def stderr_lines(self) -> tuple[str, ...]:
        """The last lines the helper wrote on standard error (none for plain pipes)."""
        return ()

    def exit_status(self) -> int | None:
        """The helper's exit status once it exited, else (or with no process) None."""
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

    @abc.abstractmethod
    def close(self) -> None:
        """Stop the helper and close every descriptor; bounded in time, never raises."""


class ProcessTransport(Transport):
    """A helper run as a child process in its own process group, its three pipes
    non-blocking.

    Only the last lines of standard error are kept.  :meth:`close` kills the whole
    process group, reaps the child (waiting at most EXIT_WAIT) and closes every pipe:
    no zombie, no open descriptor.
    """

    def __init__(self, popen: subprocess.Popen[bytes], description: str) -> None:
        assert popen.stdin is not None
        assert popen.stdout is not None
        assert popen.stderr is not None
        self.description = description
        self._popen = popen
        self._process = ChildProcess(popen)
        self._stdin = popen.stdin.fileno()
        self._stdout = popen.stdout.fileno()
        self._stderr = popen.stderr.fileno()
        for descriptor in (self._stdin, self._stdout, self._stderr):
            os.set_blocking(descriptor, False)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._stderr_partial = b""
        self._stderr_open = True

    @classmethod
    def run(cls, launch: Launch, env: Mapping[str, str] | None = None) -> Self:
        """Start the helper as ``launch`` says; raises like :meth:`start`."""
        return cls.start(
            launch.argv, shell_command=launch.shell_command, env=env, description=launch.description
        )

    @classmethod
    def start(
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
        pipe = subprocess.PIPE
        environment = None if env is None else dict(env)
        if shell_command is not None:
            command: str | Sequence[str] = exec_in_shell(shell_command)
        else:
            assert argv
            command = list(argv)
        try:
            popen = subprocess.Popen(
                command,
                shell=shell_command is not None,
                stdin=pipe,
                stdout=pipe,
                stderr=pipe,
                env=environment,
                start_new_session=True,
            )
        except FileNotFoundError as error:
            raise HelperNotFoundError(f"helper {description} does not exist: {error}") from error
        except OSError as error:
            raise ProcessError(f"cannot start helper {description}: {error}") from error
        return cls(popen, description)

    @property
    def process(self) -> ChildProcess:
        """The child process."""
        return self._process

    def fileno(self) -> int:
        """The helper's standard output."""
        return self._stdout

    def write_fileno(self) -> int:
        """The helper's standard input."""
        return self._stdin

    def stderr_fileno(self) -> int | None:
        """The helper's standard error."""
        return self._stderr

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the helper's output; raises BlockingIOError."""
        try:
            return os.read(self._stdout, size)
        except (BlockingIOError, InterruptedError):
            raise BlockingIOError from None
        except OSError:
            return b""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Write to the helper's input what it takes; raises OSError when it is gone."""
        try:
            return os.write(self._stdin, data)
        except (BlockingIOError, InterruptedError):
            return 0

    def read_stderr(self) -> bool:
        """Keep the last non-empty stderr lines; False at its end-of-file."""
        if not self._stderr_open:
            return False
        try:
            chunk = os.read(self._stderr, STDERR_CHUNK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            chunk = b""
        if not chunk:
            self._stderr_open = False
            self._keep_stderr_line(self._stderr_partial)
            self._stderr_partial = b""
            return False
        lines = (self._stderr_partial + chunk).split(b"\n")
        self._stderr_partial = lines.pop()
        for raw in lines:
            self._keep_stderr_line(raw)
        if len(self._stderr_partial) > STDERR_LINE_LIMIT:
            self._stderr_tail.append("(over-long line)")
            self._stderr_partial = b""
        return True

    def _keep_stderr_line(self, raw: bytes) -> None:
        line = decode_line(raw).strip()
        if line:
            self._stderr_tail.append(line)

    def stderr_lines(self) -> tuple[str, ...]:
        """The last lines (at most STDERR_LINES_KEPT) the helper wrote on standard error."""
        return tuple(self._stderr_tail)

    def exit_status(self) -> int | None:
        """The helper's exit status (it is reaped), or None while it runs."""
        return self._popen.poll()

    def _kill_group(self) -> None:
        """SIGKILL the helper's process group (or the helper alone); never raises.

        The group is killed even when the helper itself already exited: a shell's child
        left behind keeps the group (and its id) alive until it is gone.
        """
        try:
            os.killpg(self._popen.pid, signal.SIGKILL)
        except OSError:
            self._process.kill()

    def close(self) -> None:
        """Kill the process group, reap the child (at most EXIT_WAIT), close every pipe.

        Never raises.  A pipe a descendant holds open does not delay it.
        """
        self._kill_group()
        self._process.wait_for(EXIT_WAIT)
        for stream in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
