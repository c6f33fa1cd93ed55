"""System calls made by a running process itself, as injected code would make them.

:class:`Injector` attaches to a process with ptrace(2) while it waits in a system call
(the helper's loop waits in epoll_wait), points its instruction pointer at that
``syscall`` instruction with other registers, single-steps it and reads the result: the
process makes the call itself, under its own seccomp filter, credentials and
descriptors.  Buffers (socket addresses, option values, paths) are written below the
process's stack pointer, in stack it is not using while it waits.  When it is done the
registers are put back and the interrupted wait resumes.

This replaces gdb's inferior calls, which fail on CPUs with AMX state under gdb 13
("Couldn't write extended state status: Bad address"): ptrace's general registers are
all an injected system call needs.  x86_64 only.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
WALL = 0x40000000  # __WALL: wait for the traced process whatever its kind

# x86_64 system call numbers of the calls the tests make
NR = {
    "close": 3,
    "mmap": 9,
    "mprotect": 10,
    "ioctl": 16,
    "socket": 41,
    "connect": 42,
    "sendto": 44,
    "setsockopt": 54,
    "getsockopt": 55,
    "execve": 59,
    "capget": 125,
    "capset": 126,
    "openat": 257,
}
SYSCALL_INSTRUCTION = b"\x0f\x05"
REGISTERS = 27  # struct user_regs_struct: 27 unsigned longs
RAX, ORIG_RAX, RIP, RSP = 10, 15, 16, 19
ARGUMENTS = (14, 13, 12, 7, 9, 8)  # rdi, rsi, rdx, r10, r8, r9
SCRATCH_BELOW_STACK = 1024  # past the red zone (128 bytes) and what a wait leaves there
SCRATCH_BYTES = 8192

Argument = int | bytes


class InjectionError(RuntimeError):
    """The process could not be attached or was not waiting in a system call."""


class ProcessDied(Exception):
    """The process ended during an injected call; ``status`` as subprocess gives it."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the process ended with status {status}")
        self.status = status


def supported() -> bool:
    """True on the one architecture the register layout here is written for."""
    return platform.machine() == "x86_64"


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long
_Registers = ctypes.c_ulong * REGISTERS


def _ptrace(request: int, pid: int, data: object = None) -> None:
    """Raises InjectionError with the errno when ptrace fails."""
    pointer = ctypes.addressof(data) if isinstance(data, ctypes.Array) else data
    if _libc.ptrace(request, pid, None, pointer) == -1:
        errno = ctypes.get_errno()
        raise InjectionError(f"ptrace({request}, {pid}): {os.strerror(errno)}")


def _status_of(wait_status: int) -> int | None:
    """subprocess's returncode for an ended process, None for a stopped one."""
    if os.WIFSIGNALED(wait_status):
        return -os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return None


@dataclass
class Injector:
    """An attached process; use as a context manager (detaches on leaving)."""

    pid: int
    saved: ctypes.Array[ctypes.c_ulong] | None = None
    scratch_top: int = 0
    scratch_used: int = 0
    died: int | None = None
    values: list[int] = field(default_factory=list)  # what each call returned, in order

    def __enter__(self) -> Injector:
        if not supported():
            raise InjectionError(f"injection is written for x86_64, not {platform.machine()}")
        _ptrace(PTRACE_ATTACH, self.pid)
        self._wait_stop()
        self.saved = _Registers()
        _ptrace(PTRACE_GETREGS, self.pid, self.saved)
        rip = self.saved[RIP]
        if self.read(rip - 2, 2) != SYSCALL_INSTRUCTION:
            self.__exit__()
            raise InjectionError(f"process {self.pid} is not waiting in a system call")
        self.scratch_top = self.saved[RSP] - SCRATCH_BELOW_STACK
        return self

    def __exit__(self, *_: object) -> None:
        if self.died is not None or self.saved is None:
            return
        _ptrace(PTRACE_SETREGS, self.pid, self.saved)
        _ptrace(PTRACE_DETACH, self.pid)

    def _wait_stop(self) -> int:
        """Wait for the next stop; raises ProcessDied when the process ended instead."""
        _, wait_status = os.waitpid(self.pid, WALL)
        status = _status_of(wait_status)
        if status is not None:
            self.died = status
            raise ProcessDied(status)
        return os.WSTOPSIG(wait_status)

    def read(self, address: int, size: int) -> bytes:
        with Path(f"/proc/{self.pid}/mem").open("rb", buffering=0) as memory:
            memory.seek(address)
            return memory.read(size)

    def place(self, data: bytes) -> int:
        """Write DATA in the scratch stack; return its address (16-byte aligned)."""
        self.scratch_used += (len(data) + 15) // 16 * 16
        if self.scratch_used > SCRATCH_BYTES:
            raise InjectionError("scratch stack space used up")
        address = self.scratch_top - self.scratch_used
        with Path(f"/proc/{self.pid}/mem").open("r+b", buffering=0) as memory:
            memory.seek(address)
            memory.write(data)
        return address

    def call(self, name: str, *arguments: Argument) -> int:
        """Make system call NAME in the process; bytes arguments are passed by address.

        Returns what the call returned (a negative errno on failure).  Raises
        ProcessDied when the process ends instead (its seccomp filter killed it).
        """
        assert self.saved is not None, "not attached"
        registers = _Registers(*self.saved)
        registers[RAX] = NR[name]
        registers[ORIG_RAX] = 2**64 - 1  # -1: no system call to restart
        registers[RIP] = self.saved[RIP] - len(SYSCALL_INSTRUCTION)
        for index, argument in zip(ARGUMENTS, arguments, strict=False):
            value = self.place(argument) if isinstance(argument, bytes) else argument
            registers[index] = value % 2**64
        _ptrace(PTRACE_SETREGS, self.pid, registers)
        pending = 0
        while True:
            _ptrace(PTRACE_SINGLESTEP, self.pid, pending or None)
            stop = self._wait_stop()
            if stop == signal.SIGTRAP:
                break
            pending = stop  # a signal of its own (SIGSYS): let it have it
        _ptrace(PTRACE_GETREGS, self.pid, registers)
        value = ctypes.c_long(registers[RAX]).value
        self.values.append(value)
        return value


@dataclass
class Injection:
    """What the injected calls returned, in order, and how the process ended."""

    values: list[int]
    status: int | None  # the process's exit status if an injected call ended it

    def describe(self) -> str:
        ended = "alive" if self.status is None else f"ended with status {self.status}"
        return f"the calls returned {self.values}; the process is {ended}"


def run(pid: int, script: Callable[[Injector], object]) -> Injection:
    """Attach to PID, let SCRIPT make its calls, detach; stop at a call that ends it."""
    injector = Injector(pid)
    try:
        with injector:
            script(injector)
    except ProcessDied as died:
        return Injection(injector.values, died.status)
    return Injection(injector.values, None)
