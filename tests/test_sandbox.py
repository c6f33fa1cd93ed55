"""The seccomp sandbox, tried the way an attacker would: from inside a running helper.

man brokerpkg-helper(8), PRIVILEGES step 4: after the privilege drop the helper may make
only the system calls its loop makes, with the arguments it makes them with; anything
else kills it with SIGSYS.  Each test starts a helper (as root, the case where uid 0
remains; setuid-root and cap_net_raw+ep copies run by nobody), waits for its loop, then
attaches to it with ptrace (tests/lab/inject.py) and makes the helper itself call
socket(), connect(), setsockopt(), capset(), openat(), execve(), mmap() ... as code that a
memory bug had taken over would.  Every forbidden call must end the helper with SIGSYS
(no call fails with an errno: see helper/sandbox.c), the calls the loop does make must
still work, and the helper must go on serving requests after them.  A lab test captures
that a spoofed source (IP_HDRINCL / IPV6_HDRINCL on the helper's own raw sockets) never
leaves.

Builds with AddressSanitizer have no filter (``sandbox none``, checked in
test_privileges.py): conftest deselects the tests marked ``sandbox`` there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lab import packets as P
from lab.inject import Injection, Injector
from lab.inject import run as inject_calls
from lab.inject import supported as injection_supported
from lab.topology import Chain

if TYPE_CHECKING:
    from conftest import UnprivilegedCopy

RootOnly = tuple[Path, socket.socket, Path]  # a directory's socket, its listener, a file


pytestmark = [
    pytest.mark.privileged,
    pytest.mark.sandbox,
    pytest.mark.skipif(
        not injection_supported(),
        reason=f"calls are injected with x86_64 registers (tests/lab/inject.py), not "
        f"{platform.machine()}'s",
    ),
]

NOBODY = 65534
MODES = ("root", "setuid", "setcap")
CAP_VERSION_3 = 0x20080522
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
SPOOFED = {4: "198.18.250.99", 6: "2001:db8:250::99"}


# --------------------------------------------------------------------------- a running helper


class Helper:
    """A helper with its stdin kept open, spoken to one line at a time."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
        )
        self.pid = self.proc.pid
        self._buffer = b""

    def ask(self, line: str, timeout: float = 10.0) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no reply to {line!r} within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"helper closed its output; status {self.proc.wait(5)}")
            self._buffer += chunk
        reply, self._buffer = self._buffer.split(b"\n", 1)
        return reply.decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def helper_argv(mode: str, helper_path: str, unprivileged_copy: UnprivilegedCopy) -> list[str]:
    """root runs the build itself; nobody runs the setuid-root or cap_net_raw+ep copy."""
    if mode == "root":
        return [helper_path]
    helper = str(unprivileged_copy.helper(mode))
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", helper]


@contextlib.contextmanager
def started(argv: Sequence[str]) -> Iterator[Helper]:
    """A helper whose start-up is over (it answered) and which reports the filter."""
    helper = Helper(argv)
    try:
        assert helper.ask("1 check-support feature sandbox") == "1 feature-support support seccomp"
        yield helper
    finally:
        helper.close()


def socket_inodes(pid: int) -> dict[int, int]:
    """{socket inode: fd} of the process."""
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{pid}/fd/{name}"))
            if m:
                found[int(m.group(1))] = int(name)
    return found


def raw_socket_fd(pid: int, family: int) -> int:
    """A descriptor of the helper's raw ICMP (family 4) or ICMPv6 (6) socket."""
    table = "raw" if family == 4 else "raw6"
    protocol = 1 if family == 4 else 58
    fds = socket_inodes(pid)
    for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
        words = line.split()
        local_protocol = int(words[1].rsplit(":", 1)[1], 16)
        inode = int(words[9])
        if local_protocol == protocol and inode in fds:
            return fds[inode]
    raise AssertionError(f"no raw ICMP socket of family {family} in process {pid}")


# --------------------------------------------------------------------------- injection


def inject(helper: Helper, script: Callable[[Injector], object]) -> Injection:
    """Attach to the helper, let SCRIPT make its calls in it, detach; report what happened.

    The helper is this process's child: when a call ends it, the status read here is
    handed to its Popen (which could no longer read it).
    """
    result = inject_calls(helper.pid, script)
    if result.status is not None:
        helper.proc.returncode = result.status
        return result
    try:
        return Injection(result.values, helper.proc.wait(0.2))
    except subprocess.TimeoutExpired:
        return result


def sockaddr_un(path: str) -> bytes:
    return struct.pack("<H", socket.AF_UNIX) + path.encode() + b"\0"


ONE = struct.pack("<i", 1)  # an int option value of 1
IFREQ_LO = b"lo".ljust(40, b"\0")  # struct ifreq naming lo
AT_FDCWD = -100


def capset(injector: Injector, effective: int, permitted: int) -> int:
    """capset(2) on one 64-bit capability set pair (version 3 header, this process)."""
    header = struct.pack("<II", CAP_VERSION_3, 0)
    data = struct.pack("<6I", effective, permitted, 0, 0, 0, 0)
    return injector.call("capset", header, data)


@pytest.fixture(scope="module")
def root_only() -> Iterator[RootOnly]:
    """A root-only directory with a listening unix socket and a secret file in it."""
    base = Path(tempfile.mkdtemp(prefix="bpk-sbx-"))
    os.chmod(base, 0o700)
    path = base / "sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(8)
    server.setblocking(False)
    secret = base / "secret"
    secret.write_text("root only\n")
    os.chmod(secret, 0o600)
    try:
        yield path, server, secret
    finally:
        server.close()
        shutil.rmtree(base, ignore_errors=True)


def accepted(server: socket.socket) -> int:
    """How many connections wait on SERVER (each one accepted and closed)."""
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


# --------------------------------------------------------------------------- forbidden calls


@dataclass
class Inside:
    """What a script reaches inside the helper: its raw ICMP sockets, a root-only socket
    address and file."""

    raw4: int
    raw6: int
    unix_address: bytes
    secret: bytes


def udp(injector: Injector, family: int = socket.AF_INET) -> int:
    """A socket the loop may make (UDP of FAMILY)."""
    return injector.call("socket", family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)


def tcp(injector: Injector) -> int:
    """A socket the loop may make (TCP over IPv4: a local-port hold)."""
    return injector.call("socket", socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)


def connect_unix(injector: Injector, inside: Inside) -> int:
    fd = injector.call("socket", socket.AF_UNIX, socket.SOCK_STREAM, 0)
    return injector.call("connect", fd, inside.unix_address, len(inside.unix_address))


def attach_filter(injector: Injector, inside: Inside) -> int:
    """SO_ATTACH_FILTER with a one-instruction program (return 0)."""
    program = injector.place(struct.pack("<HBBI", 6, 0, 0, 0))
    fprog = struct.pack("<HxxxxxxQ", 1, program)
    return injector.call("setsockopt", inside.raw4, 1, 26, fprog, len(fprog))


def mprotect_stack(injector: Injector, _: Inside) -> int:
    page = injector.scratch_top & ~4095
    return injector.call("mprotect", page, 4096, 7)


Script = Callable[[Injector, Inside], object]
# (name, modes it applies to, script); each script ends in the call that must be fatal.
FORBIDDEN: list[tuple[str, tuple[str, ...], Script]] = [
    ("socket AF_UNIX", MODES, lambda j, _: j.call("socket", 1, 1, 0)),
    ("connect to a root-only unix socket", MODES, connect_unix),
    ("socket AF_NETLINK route", MODES, lambda j, _: j.call("socket", 16, 3, 0)),
    ("socket AF_PACKET", MODES, lambda j, _: j.call("socket", 17, 3, 768)),
    ("socket AF_INET SOCK_RAW", MODES, lambda j, _: j.call("socket", 2, 3, 1)),
    ("socket AF_INET6 SOCK_RAW", MODES, lambda j, _: j.call("socket", 10, 3 | 2048, 58)),
    ("socket ICMP datagram", MODES, lambda j, _: j.call("socket", 2, 2, 1)),
    ("socket SCTP", MODES, lambda j, _: j.call("socket", 2, 1, 132)),
    (
        "IP_HDRINCL on the raw socket",
        MODES,
        lambda j, i: j.call("setsockopt", i.raw4, 0, 3, ONE, 4),
    ),
    (
        "IPV6_HDRINCL on the raw socket",
        MODES,
        lambda j, i: j.call("setsockopt", i.raw6, 41, 36, ONE, 4),
    ),
    ("IP_TRANSPARENT", MODES, lambda j, _: j.call("setsockopt", udp(j), 0, 19, ONE, 4)),
    ("IP_FREEBIND", MODES, lambda j, _: j.call("setsockopt", udp(j), 0, 15, ONE, 4)),
    (
        "IPV6_TRANSPARENT",
        MODES,
        lambda j, _: j.call("setsockopt", udp(j, socket.AF_INET6), 41, 75, ONE, 4),
    ),
    (
        "IPV6_FREEBIND",
        MODES,
        lambda j, _: j.call("setsockopt", udp(j, socket.AF_INET6), 41, 78, ONE, 4),
    ),
    (
        "SO_BINDTODEVICE by name",
        MODES,
        lambda j, i: j.call("setsockopt", i.raw4, 1, 25, b"lo\0", 3),
    ),
    ("SO_ATTACH_FILTER after the start", MODES, attach_filter),
    (
        "SO_RCVBUFFORCE after the start",
        MODES,
        lambda j, i: j.call("setsockopt", i.raw4, 1, 33, ONE, 4),
    ),
    (
        "SO_MARK, caller not entitled",
        ("setuid", "setcap"),
        lambda j, _: j.call("setsockopt", udp(j), 1, 36, ONE, 4),
    ),
    (
        "getsockopt",
        MODES,
        lambda j, i: j.call("getsockopt", i.raw4, 1, 3, bytes(4), struct.pack("<i", 4)),
    ),
    # what per-probe TCP sockets needed, allowed until SYNs were built on the raw socket
    (
        "getsockopt SO_ERROR",
        MODES,
        lambda j, i: j.call("getsockopt", i.raw4, 1, 4, bytes(4), struct.pack("<i", 4)),
    ),
    ("TCP_SYNCNT", MODES, lambda j, _: j.call("setsockopt", tcp(j), 6, 7, ONE, 4)),
    (
        "SO_LINGER",
        MODES,
        lambda j, _: j.call("setsockopt", tcp(j), 1, 13, struct.pack("<ii", 1, 0), 8),
    ),
    ("IP_TTL", MODES, lambda j, _: j.call("setsockopt", udp(j), 0, 2, ONE, 4)),
    (
        "IPV6_UNICAST_HOPS",
        MODES,
        lambda j, _: j.call("setsockopt", udp(j, socket.AF_INET6), 41, 16, ONE, 4),
    ),
    ("IP_RECVERR", MODES, lambda j, _: j.call("setsockopt", udp(j), 0, 11, ONE, 4)),
    (
        "IPV6_TCLASS",
        MODES,
        lambda j, _: j.call("setsockopt", udp(j, socket.AF_INET6), 41, 67, ONE, 4),
    ),
    (
        "capset raising CAP_NET_ADMIN, caller not entitled",
        ("setuid", "setcap"),
        lambda j, _: capset(j, 1 << CAP_NET_ADMIN, 1 << CAP_NET_ADMIN),
    ),
    (
        "capget",
        MODES,
        lambda j, _: j.call("capget", struct.pack("<II", CAP_VERSION_3, 0), bytes(24)),
    ),
    (
        "ioctl other than SIOCGIFINDEX",
        MODES,
        lambda j, i: j.call("ioctl", i.raw4, 0x8913, IFREQ_LO),
    ),
    ("open a root-only file", MODES, lambda j, i: j.call("openat", AT_FDCWD, i.secret, 0)),
    ("execve", MODES, lambda j, _: j.call("execve", b"/bin/sh\0", bytes(16), bytes(8))),
    ("executable memory", MODES, lambda j, _: j.call("mmap", 0, 4096, 5, 0x22, -1, 0)),
    ("mprotect", MODES, mprotect_stack),
]
FORBIDDEN_CASES = [
    pytest.param(mode, script, id=f"{mode}-{name.replace(' ', '_')}")
    for name, modes, script in FORBIDDEN
    for mode in modes
]


def inside(helper: Helper, root_only: RootOnly) -> Inside:
    path, _, secret = root_only
    return Inside(
        raw4=raw_socket_fd(helper.pid, 4),
        raw6=raw_socket_fd(helper.pid, 6),
        unix_address=sockaddr_un(str(path)),
        secret=str(secret).encode() + b"\0",
    )


@pytest.mark.parametrize(("mode", "script"), FORBIDDEN_CASES)
def test_a_forbidden_call_made_from_inside_kills_the_helper(
    mode: str,
    script: Script,
    helper_path: str,
    unprivileged_copy: UnprivilegedCopy,
    root_only: RootOnly,
) -> None:
    _, server, _ = root_only
    accepted(server)
    with started(helper_argv(mode, helper_path, unprivileged_copy)) as helper:
        reached = inside(helper, root_only)
        result = inject(helper, lambda injector: script(injector, reached))
        connections = accepted(server)
    assert result.status == -signal.SIGSYS, f"the helper survived: {result.describe()}"
    assert connections == 0, "a connection reached the root-only unix socket"


# --------------------------------------------------------------------------- allowed calls


@pytest.mark.parametrize("mode", MODES)
def test_the_calls_the_loop_makes_still_work_and_the_helper_goes_on(
    mode: str, helper_path: str, unprivileged_copy: UnprivilegedCopy
) -> None:
    """The positive control: the harness does inject, and the list is not too narrow."""

    def loop_calls(injector: Injector) -> None:
        tcp6 = injector.call("socket", 10, 1 | 2048 | 524288, 6)  # NONBLOCK|CLOEXEC
        injector.call("close", tcp6)
        udp4 = udp(injector)
        request = injector.place(IFREQ_LO)
        injector.call("ioctl", udp4, 0x8933, request)  # SIOCGIFINDEX
        index.append(struct.unpack("<i", injector.read(request + 16, 4))[0])
        injector.call("close", udp4)
        injector.call("mmap", 0, 4096, 3, 0x22, -1, 0)

    index: list[int] = []
    with started(helper_argv(mode, helper_path, unprivileged_copy)) as helper:
        result = inject(helper, loop_calls)
        assert result.status is None, result.describe()
        reply = helper.ask("2 send-probe ip-4 127.0.0.1 timeout 2")
        assert reply.startswith("2 reply ip-4 127.0.0.1"), reply
        reply = helper.ask("3 send-probe ip-6 ::1 protocol tcp port 9 local-device lo timeout 2")
        assert reply.startswith("3 reply ip-6 ::1"), reply
        reply = helper.ask("4 send-probe ip-4 127.0.0.1 protocol tcp local-port 45123 timeout 2")
        assert reply.startswith("4 reply ip-4 127.0.0.1"), reply  # a TCP hold, inside
    tcp6, close_tcp, udp4, ioctl, close_udp, mapped = result.values
    assert tcp6 >= 3 and udp4 >= 3, result.describe()
    assert [close_tcp, ioctl, close_udp] == [0] * 3, result.describe()
    assert index == [socket.if_nametoindex("lo")], result.describe()
    assert mapped > 0, result.describe()


@pytest.mark.parametrize("mode", MODES)
def test_interface_names_are_looked_up_inside_the_sandbox(
    mode: str, helper_path: str, unprivileged_copy: UnprivilegedCopy
) -> None:
    """local-device: an ioctl on a socket the helper holds (glibc's if_nametoindex()
    would open an AF_UNIX socket, which the filter punishes with SIGSYS)."""
    requests = [
        ("2 send-probe ip-4 127.0.0.1 local-device lo timeout 2", "2 reply ip-4 127.0.0.1"),
        (
            "3 send-probe ip-4 127.0.0.1 local-device nosuchdev0 timeout 2",
            "3 invalid-argument reason local-device-not-found",
        ),
        (
            "4 send-probe ip-6 ::1 local-device abcdefghijklmno timeout 2",
            "4 invalid-argument reason local-device-not-found",
        ),
        ("5 send-probe ip-6 ::1 protocol udp local-device lo timeout 2", "5 reply ip-6 ::1"),
        ("6 send-probe ip-4 127.0.0.1 protocol tcp local-device lo timeout 2", "6 reply ip-4"),
    ]
    with started(helper_argv(mode, helper_path, unprivileged_copy)) as helper:
        replies = [helper.ask(line) for line, _ in requests]
        assert helper.proc.stdin is not None
        helper.proc.stdin.close()
        status = helper.proc.wait(10)
        assert helper.proc.stderr is not None
        stderr = helper.proc.stderr.read()
    assert [r.startswith(want) for r, (_, want) in zip(replies, requests, strict=True)] == [
        True
    ] * 5, replies
    assert (status, stderr) == (0, b"")


def test_root_keeps_only_cap_net_admin_to_raise_and_it_opens_nothing_more(
    helper_path: str, unprivileged_copy: UnprivilegedCopy
) -> None:
    """Root is entitled to marks: capset may raise CAP_NET_ADMIN (nothing else is
    permitted), and what that capability could open stays closed."""
    with started([helper_path]) as helper:
        result = inject(
            helper,
            lambda j: (
                capset(j, 1 << CAP_NET_RAW, (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)),
                capset(j, 1 << CAP_NET_ADMIN, 1 << CAP_NET_ADMIN),
                capset(j, 0, 1 << CAP_NET_ADMIN),
            ),
        )
        assert result.status is None, result.describe()
        assert result.values == [-errno.EPERM, 0, 0], result.describe()  # then raised
        assert helper.ask("2 check-support feature mark") == "2 feature-support support ok"
        # marks, which raise and lower CAP_NET_ADMIN around SO_MARK (option and control)
        for line in (
            "3 send-probe ip-4 127.0.0.1 protocol tcp port 9 mark 7 timeout 2",
            "4 send-probe ip-6 ::1 protocol udp mark 7 timeout 2",
            "5 send-probe ip-4 127.0.0.1 mark 7 timeout 2",
        ):
            reply = helper.ask(line)
            assert reply.startswith(f"{line[0]} reply ip-"), reply
        status = Path(f"/proc/{helper.pid}/status").read_text()
        assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status
        # raised, CAP_NET_ADMIN still cannot reach a netlink socket
        result = inject(
            helper,
            lambda j: (
                capset(j, 1 << CAP_NET_ADMIN, 1 << CAP_NET_ADMIN),
                j.call("socket", 16, 3, 0),
            ),
        )
    assert result.values[:1] == [0], result.describe()
    assert result.status == -signal.SIGSYS, result.describe()


# --------------------------------------------------------------------------- spoofed sources


def spoofed_echo(family: int, source: str, destination: str) -> tuple[bytes, bytes]:
    """(packet with its IP header, sockaddr of DESTINATION) for a raw IP_HDRINCL send."""
    echo = P.echo_message(family, 0x5353, 1, b"spoofed!", src=source, dst=destination)
    protocol = P.PROTO_ICMP if family == 4 else P.PROTO_ICMPV6
    packet = P.ip_packet(source, destination, protocol, echo)
    if family == 4:
        address = struct.pack("<H", socket.AF_INET) + b"\0\0"
        address += socket.inet_pton(socket.AF_INET, destination) + bytes(8)
        return packet, address
    address = struct.pack("<HHI", socket.AF_INET6, 0, 0)
    address += socket.inet_pton(socket.AF_INET6, destination) + bytes(4)
    return packet, address


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode", ["root", "setuid"])
def test_a_spoofed_source_never_leaves_through_the_raw_sockets(
    mode: str, family: int, chain: Chain, helper_path: str, unprivileged_copy: UnprivilegedCopy
) -> None:
    server = chain.server_address(family)
    packet, address = spoofed_echo(family, SPOOFED[family], server)
    level, option = (0, 3) if family == 4 else (41, 36)  # IP_HDRINCL, IPV6_HDRINCL
    argv = chain.exec_argv("client", helper_argv(mode, helper_path, unprivileged_copy))
    with chain.capture("client") as cap, started(argv) as helper:
        # the control: what this helper sends, the capture sees
        control = helper.ask(f"2 send-probe ip-{family} {server} timeout 2")
        raw = raw_socket_fd(helper.pid, family)
        result = inject(
            helper,
            lambda j: (
                j.call("setsockopt", raw, level, option, ONE, 4),
                j.call("sendto", raw, packet, len(packet), 0, address, len(address)),
            ),
        )
    assert control.startswith(f"2 reply ip-{family} {server}"), control
    assert cap.select(src=chain.client_address(family), dst=server), cap.describe()
    spoofed = cap.select(src=SPOOFED[family])
    assert not spoofed, f"a spoofed packet left ({result.describe()}):\n{cap.describe()}"
    assert result.status == -signal.SIGSYS, result.describe()
