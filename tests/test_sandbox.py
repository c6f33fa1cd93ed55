"""The seccomp sandbox, tried the way an attacker would: from inside a running helper.

man brokerpkg-helper(8), PRIVILEGES step 4: after the privilege drop the helper may make
only the system calls its loop makes, with the arguments it makes them with; anything
else kills it with SIGSYS.  Each test starts a helper (as root, the case where uid 0
remains; setuid-root and cap_net_raw+ep copies run by nobody), waits for its loop, then
attaches gdb in batch mode and makes the helper itself call socket(), connect(),
setsockopt(), capset(), open(), execve(), mmap() ... as code that a memory bug had taken
over would.  Every forbidden call must end the helper with SIGSYS (no call fails with an
errno: see helper/sandbox.c), the calls the loop does make must still work, and the
helper must go on serving requests after them.  A lab test captures that a spoofed
source (IP_HDRINCL / IPV6_HDRINCL on the helper's own raw sockets) never leaves.

Builds with AddressSanitizer have no filter (``sandbox none``, checked in
test_privileges.py): conftest deselects the tests marked ``sandbox`` there.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lab import packets as P
from lab.topology import Chain

if TYPE_CHECKING:
    from conftest import UnprivilegedCopy

RootOnly = tuple[Path, socket.socket, Path]  # a directory's socket, its listener, a file

# libc's syscall() numbers for capset and capget (no libc wrapper is exported under
# those names); the filter exists for these two architectures only (sandbox.c)
CAPSET = {"x86_64": 126, "aarch64": 91}
CAPGET = {"x86_64": 125, "aarch64": 90}

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.sandbox,
    pytest.mark.skipif(platform.machine() not in CAPSET, reason="no filter for this machine"),
]

NOBODY = 65534
MODES = ("root", "setuid", "setcap")
CAP_VERSION_3 = 0x20080522
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
ERRNO = "*((int *(*)(void))__errno_location)()"
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


# --------------------------------------------------------------------------- gdb


@dataclass
class Injection:
    values: list[str]  # what each `print` showed, in order
    output: str  # gdb's whole output, for messages
    status: int | None  # the helper's exit status once gdb is done, None if alive


def inject(helper: Helper, commands: Sequence[str]) -> Injection:
    """Attach gdb to the helper, run COMMANDS in it, detach; report what happened."""
    if shutil.which("gdb") is None:
        pytest.fail("gdb is not installed (apt-get install gdb; .ci/run installs it)")
    # Never ask a debuginfod server (the network), nor read libc's debug information
    # where a machine has it: every call goes through the casts written here.
    argv = ["gdb", "-nx", "-batch", "-iex", "set debuginfod enabled off"]
    argv += ["-iex", "set debug-file-directory /nonexistent", "-p", str(helper.pid)]
    for command in ("set confirm off", *commands, "detach"):
        argv += ["-ex", command]
    res = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    output = res.stdout + res.stderr
    values = re.findall(r"^\$\d+ = (.*)$", res.stdout, re.MULTILINE)
    try:
        status = helper.proc.wait(5) if "SIGSYS" in output else helper.proc.wait(0.2)
    except subprocess.TimeoutExpired:
        status = None
    return Injection(values, output, status)


def c_bytes(data: bytes) -> str:
    """DATA as a gdb (C) string literal: octal escapes, so any byte goes through."""
    return '"' + "".join(f"\\{b:03o}" for b in data) + '"'


def sockaddr_un(path: str) -> bytes:
    return struct.pack("<H", socket.AF_UNIX) + path.encode() + b"\0"


INT_ONE = "(int[1]){1}"
# through a cast: were libc's debug information read, gdb would pass the address argument
# as glibc's transparent union __CONST_SOCKADDR_ARG, not as the pointer it is
CONNECT = "((int (*)(int, const void *, unsigned))connect)"
SENDTO = "((long (*)(int, const void *, unsigned long, int, const void *, unsigned))sendto)"
IFREQ_LO = c_bytes(b"lo".ljust(40, b"\0"))  # struct ifreq naming lo


def capset(effective: int, permitted: int) -> str:
    """capset(2) called through libc's syscall(), on one 64-bit capability set pair."""
    nr = CAPSET[platform.machine()]
    header = f"(int[2]){{{CAP_VERSION_3}, 0}}"
    data = f"(int[6]){{{effective}, {permitted}, 0, 0, 0, 0}}"
    return f"(long)syscall({nr}, {header}, {data})"


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

# (name, modes it applies to, gdb commands); RAW4 / RAW6 stand for the helper's raw
# ICMP / ICMPv6 descriptors; each command list ends in the call that must be fatal.
UDP4 = "set $u = (int)socket(2, 2, 17)"  # a socket the loop may make (AF_INET, UDP)
UDP6 = "set $u = (int)socket(10, 2, 17)"
TCP4 = "set $t = (int)socket(2, 1, 6)"  # a TCP local-port hold
FORBIDDEN: list[tuple[str, tuple[str, ...], list[str]]] = [
    ("socket AF_UNIX", MODES, ["print (int)socket(1, 1, 0)"]),
    (
        "connect to a root-only unix socket",
        MODES,
        ["set $s = (int)socket(1, 1, 0)", "print $s", f"print {CONNECT}($s, SOCKADDR_UN, LEN)"],
    ),
    ("socket AF_NETLINK route", MODES, ["print (int)socket(16, 3, 0)"]),
    ("socket AF_PACKET", MODES, ["print (int)socket(17, 3, 768)"]),
    ("socket AF_INET SOCK_RAW", MODES, ["print (int)socket(2, 3, 1)"]),
    ("socket AF_INET6 SOCK_RAW", MODES, ["print (int)socket(10, 3|2048, 58)"]),
    ("socket ICMP datagram", MODES, ["print (int)socket(2, 2, 1)"]),
    ("socket SCTP", MODES, ["print (int)socket(2, 1, 132)"]),
    ("IP_HDRINCL on the raw socket", MODES, [f"print (int)setsockopt(RAW4, 0, 3, {INT_ONE}, 4)"]),
    (
        "IPV6_HDRINCL on the raw socket",
        MODES,
        [f"print (int)setsockopt(RAW6, 41, 36, {INT_ONE}, 4)"],
    ),
    ("IP_TRANSPARENT", MODES, [UDP4, f"print (int)setsockopt($u, 0, 19, {INT_ONE}, 4)"]),
    ("IP_FREEBIND", MODES, [UDP4, f"print (int)setsockopt($u, 0, 15, {INT_ONE}, 4)"]),
    ("IPV6_TRANSPARENT", MODES, [UDP6, f"print (int)setsockopt($u, 41, 75, {INT_ONE}, 4)"]),
    ("IPV6_FREEBIND", MODES, [UDP6, f"print (int)setsockopt($u, 41, 78, {INT_ONE}, 4)"]),
    ("SO_BINDTODEVICE by name", MODES, ['print (int)setsockopt(RAW4, 1, 25, "lo", 3)']),
    (
        "SO_ATTACH_FILTER after the start",
        MODES,
        ["print (int)setsockopt(RAW4, 1, 26, (long[2]){1, (long)(int[2]){6, 0}}, 16)"],
    ),
    (
        "SO_RCVBUFFORCE after the start",
        MODES,
        [f"print (int)setsockopt(RAW4, 1, 33, {INT_ONE}, 4)"],
    ),
    (
        "SO_MARK, caller not entitled",
        ("setuid", "setcap"),
        [UDP4, f"print (int)setsockopt($u, 1, 36, {INT_ONE}, 4)"],
    ),
    (
        "getsockopt",
        MODES,
        ["print (int)getsockopt(RAW4, 1, 3, (int[1]){0}, (int[1]){4})"],
    ),
    # what per-probe TCP sockets needed, allowed until SYNs were built on the raw socket
    (
        "getsockopt SO_ERROR",
        MODES,
        ["print (int)getsockopt(RAW4, 1, 4, (int[1]){0}, (int[1]){4})"],
    ),
    ("TCP_SYNCNT", MODES, [TCP4, f"print (int)setsockopt($t, 6, 7, {INT_ONE}, 4)"]),
    ("SO_LINGER", MODES, [TCP4, "print (int)setsockopt($t, 1, 13, (int[2]){1, 0}, 8)"]),
    ("IP_TTL", MODES, [UDP4, f"print (int)setsockopt($u, 0, 2, {INT_ONE}, 4)"]),
    ("IPV6_UNICAST_HOPS", MODES, [UDP6, f"print (int)setsockopt($u, 41, 16, {INT_ONE}, 4)"]),
    ("IP_RECVERR", MODES, [UDP4, f"print (int)setsockopt($u, 0, 11, {INT_ONE}, 4)"]),
    ("IPV6_TCLASS", MODES, [UDP6, f"print (int)setsockopt($u, 41, 67, {INT_ONE}, 4)"]),
    (
        "capset raising CAP_NET_ADMIN, caller not entitled",
        ("setuid", "setcap"),
        ["print " + capset(1 << CAP_NET_ADMIN, 1 << CAP_NET_ADMIN)],
    ),
    ("capget", MODES, ["print (long)syscall(CAPGET, (int[2]){0x20080522, 0}, (int[6]){0})"]),
    ("ioctl other than SIOCGIFINDEX", MODES, ["print (int)ioctl(RAW4, 0x8913, IFREQ_LO)"]),
    ("open a root-only file", MODES, ["print (int)open(SECRET, 0)"]),
    ("execve", MODES, ['print (int)execve("/bin/sh", (long[2]){0, 0}, (long[1]){0})']),
    ("executable memory", MODES, ["print (long)mmap(0, 4096, 5, 0x22, -1, 0)"]),
    ("mprotect", MODES, ["print (int)mprotect((void *)((long)$sp & ~4095), 4096, 7)"]),
]
FORBIDDEN_CASES = [
    pytest.param(mode, commands, id=f"{mode}-{name.replace(' ', '_')}")
    for name, modes, commands in FORBIDDEN
    for mode in modes
]


def substitute(commands: Sequence[str], helper: Helper, root_only: RootOnly) -> list[str]:
    path, _, secret = root_only
    address = sockaddr_un(str(path))
    words = {
        "RAW4": str(raw_socket_fd(helper.pid, 4)),
        "RAW6": str(raw_socket_fd(helper.pid, 6)),
        "SOCKADDR_UN": c_bytes(address),
        "LEN": str(len(address)),
        "SECRET": c_bytes(str(secret).encode()),
        "CAPGET": str(CAPGET[platform.machine()]),
        "IFREQ_LO": IFREQ_LO,
    }
    pattern = re.compile(r"\b(" + "|".join(words) + r")\b")
    return [pattern.sub(lambda m: words[m.group(1)], c) for c in commands]


@pytest.mark.parametrize(("mode", "commands"), FORBIDDEN_CASES)
def test_a_forbidden_call_made_from_inside_kills_the_helper(
    mode: str,
    commands: list[str],
    helper_path: str,
    unprivileged_copy: UnprivilegedCopy,
    root_only: RootOnly,
) -> None:
    _, server, _ = root_only
    accepted(server)
    with started(helper_argv(mode, helper_path, unprivileged_copy)) as helper:
        result = inject(helper, substitute(commands, helper, root_only))
        connections = accepted(server)
    assert result.status == -signal.SIGSYS, (
        f"the helper survived (status {result.status}); the calls returned {result.values}:\n"
        f"{result.output}"
    )
    assert "Program terminated with signal SIGSYS" in result.output, result.output
    assert connections == 0, "a connection reached the root-only unix socket"


# --------------------------------------------------------------------------- allowed calls


@pytest.mark.parametrize("mode", MODES)
def test_the_calls_the_loop_makes_still_work_and_the_helper_goes_on(
    mode: str, helper_path: str, unprivileged_copy: UnprivilegedCopy
) -> None:
    """The positive control: the harness does inject, and the list is not too narrow."""
    commands = [
        "set $t = (int)socket(10, 1|2048|524288, 6)",  # TCP, SOCK_NONBLOCK|SOCK_CLOEXEC
        "print $t",
        "print (int)close($t)",
        "set $u = (int)socket(2, 2, 17)",
        "print $u",
        "set $r = (char *)malloc(40)",
        f"print (long)memcpy($r, {IFREQ_LO}, 40)",
        "print (int)ioctl($u, 0x8933, $r)",  # SIOCGIFINDEX
        "print *(int *)($r + 16)",
        "print (int)close($u)",
        "print (long)mmap(0, 4096, 3, 0x22, -1, 0) > 0",
    ]
    with started(helper_argv(mode, helper_path, unprivileged_copy)) as helper:
        result = inject(helper, commands)
        assert result.status is None, result.output
        reply = helper.ask("2 send-probe ip-4 127.0.0.1 timeout 2")
        assert reply.startswith("2 reply ip-4 127.0.0.1"), reply
        reply = helper.ask("3 send-probe ip-6 ::1 protocol tcp port 9 local-device lo timeout 2")
        assert reply.startswith("3 reply ip-6 ::1"), reply
        reply = helper.ask("4 send-probe ip-4 127.0.0.1 protocol tcp local-port 45123 timeout 2")
        assert reply.startswith("4 reply ip-4 127.0.0.1"), reply  # a TCP hold, inside
    tcp, close_tcp, udp, _, ioctl, index, close_udp, mapped = result.values
    assert int(tcp) >= 3 and int(udp) >= 3, result.output
    assert [close_tcp, ioctl, close_udp] == ["0"] * 3, result.output
    assert int(index) == socket.if_nametoindex("lo"), result.output
    assert mapped == "1", result.output


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
    raise_other = capset(1 << CAP_NET_RAW, (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW))
    with started([helper_path]) as helper:
        result = inject(
            helper,
            [
                "print " + raise_other,
                f"print {ERRNO}",
                "print " + capset(1 << CAP_NET_ADMIN, 1 << CAP_NET_ADMIN),
                "print " + capset(0, 1 << CAP_NET_ADMIN),
            ],
        )
        assert result.status is None, result.output
        assert result.values == ["-1", str(1), "0", "0"], result.output  # EPERM, then raised
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
            [
                "print " + capset(1 << CAP_NET_ADMIN, 1 << CAP_NET_ADMIN),
                "print (int)socket(16, 3, 0)",
            ],
        )
    assert result.values[:1] == ["0"], result.output
    assert result.status == -signal.SIGSYS, result.output


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
    commands = [
        f"print (int)setsockopt(RAW, {level}, {option}, {INT_ONE}, 4)",
        f"print {SENDTO}(RAW, {c_bytes(packet)}, {len(packet)}, 0, {c_bytes(address)}, "
        f"{len(address)})",
    ]
    argv = chain.exec_argv("client", helper_argv(mode, helper_path, unprivileged_copy))
    with chain.capture("client") as cap, started(argv) as helper:
        # the control: what this helper sends, the capture sees
        control = helper.ask(f"2 send-probe ip-{family} {server} timeout 2")
        raw = str(raw_socket_fd(helper.pid, family))
        result = inject(helper, [c.replace("RAW", raw) for c in commands])
    assert control.startswith(f"2 reply ip-{family} {server}"), control
    assert cap.select(src=chain.client_address(family), dst=server), cap.describe()
    spoofed = cap.select(src=SPOOFED[family])
    assert not spoofed, f"a spoofed packet left ({result.values}):\n{cap.describe()}"
    assert result.status == -signal.SIGSYS, result.output
