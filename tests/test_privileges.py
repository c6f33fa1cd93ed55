"""What the helper is while it runs, and what it refuses to lend to callers who are not root.

Start-up (man brokerpkg-helper(8), PRIVILEGES): a RUNNING helper is inspected through
/proc (its stdin kept open) when started (a) by root, (b) setuid-root by nobody and
(c) with cap_net_raw+ep by nobody.  The callers are set up to make each check able to
fail: they hold supplementary groups and inheritable (root: also ambient)
capabilities, pass a secret in the environment and extra descriptors, raise the core
limit, lower the open-files limit, ignore and block SIGINT/SIGTERM.  strace shows that
no input (nor the arguments) is read before the privilege drop, and a process of
nobody's tries to ptrace the helper, read its memory and steal its raw socket with
pidfd_getfd.

Policy (non-root callers, lab namespace): marks, multicast, broadcast, unspecified and
foreign source addresses, low source ports are refused, and a capture proves nothing
left the client; the rate limit delays (burst 1000, then 1000/s) and never drops.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import may_raise_hard_limits, proc_limits
from lab.topology import Chain

NOBODY = 65534
CALLER_GROUPS = (27, 100)
CAP_NET_ADMIN = 12
WANTED_OPEN_FILES = 65536  # helper/main.c
MODES = ("root", "setuid", "setcap")
SANITIZED = os.environ.get("BROKERPKG_SANITIZE", "") == "1"
SECRET = "bpk-secret-4711-do-not-keep"

pytestmark = pytest.mark.privileged


# --------------------------------------------------------------------------- running helpers


def sanitizer_env() -> dict[str, str]:
    """The sanitizer options of this run (conftest sets them with BROKERPKG_SANITIZE=1)."""
    return {k: v for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS") if (v := os.environ.get(k))}


class Running:
    """A helper process with its stdin kept open, spoken to one line at a time."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._buffer = b""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, timeout: float = 10.0) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"no reply line from the helper within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"helper closed its output; status {self.proc.wait(5)}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def ask(self, line: str) -> str:
        self.send(line)
        return self.read_line()

    def feature(self, name: str) -> str:
        reply = self.ask(f"1 check-support feature {name}").split()
        assert reply[:3] == ["1", "feature-support", "support"], reply
        return reply[3]

    def finish(self, timeout: float = 10.0) -> tuple[int, str]:
        """Close stdin, wait; return (status, stderr)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        stderr = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        return self.proc.returncode, stderr


@contextlib.contextmanager
def running(argv: Sequence[str], **kwargs: object) -> Iterator[Running]:
    kwargs.setdefault("stdin", subprocess.PIPE)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("env", {"PATH": "/usr/bin:/bin", **sanitizer_env()})
    proc = subprocess.Popen(list(argv), **kwargs)  # type: ignore[call-overload]
    helper = Running(proc)
    try:
        yield helper
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def caller_argv(mode: str, helper_path: str, unprivileged_copy, *extra: str) -> list[str]:
    """argv for caller (a) root, (b) nobody running the setuid copy, (c) nobody, setcap copy.

    Every caller holds supplementary groups and inheritable CAP_NET_RAW+CAP_NET_ADMIN;
    root also has them ambient (nobody's ambient set would be cleared by the kernel
    at a privileged exec anyway).
    """
    common = [f"--groups={','.join(map(str, CALLER_GROUPS))}", "--inh-caps=+net_raw,+net_admin"]
    if mode == "root":
        return ["setpriv", *common, "--ambient-caps=+net_raw,+net_admin", helper_path, *extra]
    helper = str(unprivileged_copy.helper(mode))
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", *common, helper, *extra]


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def own_bounding_set() -> int:
    return int(proc_status(os.getpid())["CapBnd"], 16)


def expected_sandbox() -> str:
    """What check-support feature sandbox must say for this build on this machine."""
    if SANITIZED or platform.machine() not in ("x86_64", "aarch64"):
        return "none"  # the filter is compiled out under ASan / not written for this arch
    return "seccomp"


# --------------------------------------------------------------------------- start-up state


@pytest.mark.parametrize("mode", MODES)
def test_running_helper_holds_only_the_callers_ids_and_no_capabilities(
    mode: str, helper_path: str, unprivileged_copy
) -> None:
    uid = 0 if mode == "root" else NOBODY
    with running(caller_argv(mode, helper_path, unprivileged_copy)) as helper:
        assert helper.feature("version").startswith("brokerpkg-")  # start-up is over
        status = proc_status(helper.pid)
        sandbox = helper.feature("sandbox")
        rate_limit = helper.feature("rate-limit")
        returncode, stderr = helper.finish()
    observed = {
        key: status[key]
        for key in (
            "Uid",
            "Gid",
            "Groups",
            "CapInh",
            "CapPrm",
            "CapEff",
            "CapBnd",
            "CapAmb",
            "NoNewPrivs",
            "Seccomp",
        )
    }
    ids = "\t".join([str(uid)] * 4)
    expected = {
        "Uid": ids,
        "Gid": ids,
        # A file-capability helper cannot drop groups (no CAP_SETGID): it keeps the
        # caller's own, which give it nothing the caller has not got.
        "Groups": " ".join(map(str, CALLER_GROUPS)) if mode == "setcap" else "",
        "CapInh": f"{0:016x}",
        # root keeps CAP_NET_ADMIN permitted (not effective) for marks
        "CapPrm": f"{(1 << CAP_NET_ADMIN) if mode == 'root' else 0:016x}",
        "CapEff": f"{0:016x}",
        # without CAP_SETPCAP (setcap) the bounding set stays the caller's; the man
        # page's answer is no_new_privs, checked below
        "CapBnd": f"{own_bounding_set() if mode == 'setcap' else 0:016x}",
        "CapAmb": f"{0:016x}",
        "NoNewPrivs": "1",
        "Seccomp": "2" if sandbox == "seccomp" else "0",
    }
    assert observed == expected
    assert sandbox == expected_sandbox()
    assert rate_limit == ("none" if mode == "root" else "1000")
    assert (returncode, stderr) == (0, "")


def _hostile_caller_state() -> None:
    """preexec_fn: the limits and signal state a careless or hostile caller leaves."""
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})


def _expected_open_files(mode: str, hard: int) -> tuple[str, str]:
    """main.c set_limits(): for a root caller raise to 65536 if it may (CAP_SYS_RESOURCE);
    soft = hard (at most 65536) otherwise, a setuid copy's caller keeping its hard limit."""
    may_raise = mode == "root" and may_raise_hard_limits()
    if hard < WANTED_OPEN_FILES and may_raise:
        return str(WANTED_OPEN_FILES), str(WANTED_OPEN_FILES)
    return str(min(hard, WANTED_OPEN_FILES)), str(hard)


def _fd_links(pid: int) -> dict[str, str]:
    """The process's descriptors and what they point to (a racy snapshot)."""
    links = {}
    for n in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            links[n] = os.readlink(f"/proc/{pid}/fd/{n}")
    return links


def _object_id(path: str | int) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


@pytest.mark.parametrize("mode", MODES)
def test_start_up_hygiene_environment_descriptors_limits_signals(
    mode: str, helper_path: str, unprivileged_copy, tmp_path: Path
) -> None:
    inherited_file = open(tmp_path / "inherited", "w")  # noqa: SIM115 - closed below
    read_end, write_end = os.pipe()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    high = os.dup2(sock.fileno(), 200)
    passed = (inherited_file.fileno(), write_end, high)
    passed_objects = {_object_id(fd) for fd in passed}
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        with running(
            caller_argv(mode, helper_path, unprivileged_copy),
            env={"PATH": "/usr/bin:/bin", "BPK_SECRET": SECRET, **sanitizer_env()},
            pass_fds=passed,
            preexec_fn=_hostile_caller_state,
        ) as helper:
            helper.feature("version")
            pid = helper.pid
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            fds = {int(n): _object_id(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
            links = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in fds}
            limits = proc_limits(pid)
            status = proc_status(pid)
            assert helper.proc.stdin is not None and helper.proc.stdout is not None
            stdin_id = _object_id(helper.proc.stdin.fileno())
            stdout_id = _object_id(helper.proc.stdout.fileno())
            # SIGTERM, ignored and blocked by the caller, has its default action again
            os.kill(pid, signal.SIGTERM)
            assert helper.proc.wait(5) == -signal.SIGTERM
    finally:
        inherited_file.close()
        for fd in (read_end, write_end, high):
            os.close(fd)
        sock.close()

    assert SECRET.encode() not in environ
    assert environ.strip(b"\0") == b"", f"environment left in memory: {environ!r}"
    assert fds[0] == stdin_id and fds[1] == stdout_id
    leaked = {n: links[n] for n, obj in fds.items() if obj in passed_objects}
    assert not leaked, f"inherited descriptors still open: {leaked}"
    own = {n: links[n] for n in fds if n > 2}
    assert all(
        re.fullmatch(r"socket:\[\d+\]|anon_inode:\[(eventpoll|timerfd)\]", t) for t in own.values()
    ), own
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max open files"] == _expected_open_files(mode, hard)
    assert int(status["SigIgn"], 16) == 1 << (signal.SIGPIPE - 1)  # SIGPIPE only
    assert int(status["SigBlk"], 16) == 0


@pytest.mark.parametrize("mode", MODES)
def test_closed_standard_descriptors_are_reopened_on_dev_null(
    mode: str, helper_path: str, unprivileged_copy
) -> None:
    # stdout and stderr closed: a socket opened at fd 1 would receive our replies
    def close_output() -> None:
        os.close(1)
        os.close(2)

    with running(
        caller_argv(mode, helper_path, unprivileged_copy),
        stdout=None,
        stderr=None,
        preexec_fn=close_output,
    ) as helper:
        fd_dir = f"/proc/{helper.pid}/fd"
        deadline = time.monotonic() + 10
        while "anon_inode:[eventpoll]" not in _fd_links(helper.pid).values():
            # the event loop is set up: start-up is over
            assert time.monotonic() < deadline, "helper never reached its event loop"
            time.sleep(0.01)
        links = {n: os.readlink(f"{fd_dir}/{n}") for n in ("1", "2")}
        helper.send("1 send-probe ip-4 127.0.0.1 timeout 1")
        status, _ = helper.finish()
    assert links == {"1": "/dev/null", "2": "/dev/null"}
    assert status == 0

    # stdin closed: it reads /dev/null (not a raw socket), so it ends at once, cleanly
    with running(
        caller_argv(mode, helper_path, unprivileged_copy),
        stdin=None,
        preexec_fn=lambda: os.close(0),
    ) as helper:
        assert helper.proc.wait(10) == 0
        assert helper.proc.stdout is not None and helper.proc.stdout.read() == b""


# --------------------------------------------------------------------------- order: drop, then read


TRACED = "socket,setgroups,setresgid,setresuid,capset,prctl,seccomp,read,write"
DROP_STEPS = {
    "setresgid": r"setresgid\(",
    "setresuid": r"setresuid\(",
    "capset": r"capset\(",
    "no_new_privs": r"prctl\(PR_SET_NO_NEW_PRIVS, 1",
    "non-dumpable": r"prctl\(PR_SET_DUMPABLE, (SUID_DUMP_DISABLE|0)\b",
}


def _strace(
    mode: str, helper_path: str, unprivileged_copy, args: Sequence[str], stdin: str, out: Path
) -> tuple[list[str], bool]:
    helper = helper_path if mode == "root" else str(unprivileged_copy.helper(mode))
    # strace -u runs it as nobody with the setuid bit / file capability honoured
    user = [] if mode == "root" else ["-u", "nobody"]
    env = {"PATH": "/usr/bin:/bin", **sanitizer_env()}
    if "ASAN_OPTIONS" in env:  # LeakSanitizer cannot work in a traced process
        env["ASAN_OPTIONS"] += ":detect_leaks=0"
    res = subprocess.run(
        ["strace", *user, "-f", "-qq", "-o", str(out), "-e", f"trace={TRACED}", helper, *args],
        input=stdin.encode(),
        capture_output=True,
        timeout=30,
        check=False,
        env=env,
    )
    # A setcap process cannot read its own /proc/self/environ, where the sanitizer
    # runtime looks for ASAN_OPTIONS: its leak check still runs, and fails under ptrace.
    lsan_traced = SANITIZED and b"LeakSanitizer does not work under ptrace" in res.stderr
    assert res.returncode == 0 or lsan_traced, res
    return out.read_text().splitlines(), lsan_traced


def _first(lines: list[str], pattern: str) -> int:
    return next((i for i, line in enumerate(lines) if re.search(pattern, line)), -1)


def _last(lines: list[str], pattern: str) -> int:
    found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
    return found[-1] if found else -1


@pytest.mark.parametrize("mode", MODES)
def test_no_input_nor_argument_is_read_before_the_privilege_drop(
    mode: str, helper_path: str, unprivileged_copy, tmp_path: Path
) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    lines, _ = _strace(
        mode,
        helper_path,
        unprivileged_copy,
        [],
        "1 check-support feature sandbox\n",
        tmp_path / "requests.trace",
    )
    first_read = _first(lines, r"\bread\(0,")
    drop = {step: _first(lines, pattern) for step, pattern in DROP_STEPS.items()}
    raw_sockets = _last(lines, r"socket\(.*SOCK_RAW")
    seccomp = _first(lines, r"PR_SET_SECCOMP|seccomp\(SECCOMP_SET_MODE_FILTER")
    sandboxed = seccomp >= 0
    if sandboxed:
        drop["seccomp"] = seccomp
    assert first_read > 0, "\n".join(lines)
    assert all(0 <= at < first_read for at in drop.values()), (drop, first_read, lines)
    assert 0 <= raw_sockets < drop["setresuid"], "raw sockets must be opened before the drop"
    assert sandboxed == (expected_sandbox() == "seccomp")

    # the command line too: --version is answered only after the drop
    lines, lsan_traced = _strace(
        mode, helper_path, unprivileged_copy, ["--version"], "", tmp_path / "version.trace"
    )
    answer = _first(lines, r'write\(1, "brokerpkg-helper')
    if answer < 0 and lsan_traced:
        return  # the failed leak check ended it before stdio was flushed: nothing written
    assert answer > 0, "\n".join(lines)
    assert all(0 <= _first(lines, p) < answer for p in DROP_STEPS.values()), lines


# --------------------------------------------------------------------------- non-dumpable

ATTACK = r"""
import ctypes, errno, json, os, sys
pid, fd = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long]

def check(result):
    if result < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def ptrace_seize():
    check(libc.ptrace(0x4206, pid, None, None))

def read_memory():
    with open(f"/proc/{pid}/mem", "rb"):
        pass

def list_descriptors():
    os.listdir(f"/proc/{pid}/fd")

def read_environment():
    with open(f"/proc/{pid}/environ", "rb") as f:
        f.read()

def steal_descriptor():
    pidfd = os.pidfd_open(pid)
    try:
        stolen = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        check(stolen)
        os.close(stolen)
    finally:
        os.close(pidfd)

out = {}
for attempt in (ptrace_seize, read_memory, list_descriptors, read_environment, steal_descriptor):
    try:
        attempt()
        out[attempt.__name__] = "done"
    except OSError as e:
        out[attempt.__name__] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""
ATTACKS = (
    "ptrace_seize",
    "read_memory",
    "list_descriptors",
    "read_environment",
    "steal_descriptor",
)


def attack_as_nobody(unprivileged_copy, pid: int, fd: int) -> dict[str, str]:
    res = unprivileged_copy.run(["-c", ATTACK, str(pid), str(fd)], timeout=30)
    assert res.returncode == 0, res.stderr
    outcome: dict[str, str] = json.loads(res.stdout)
    return outcome


def test_attack_works_on_an_ordinary_process_of_nobody(unprivileged_copy) -> None:
    """Control: the same attacks succeed against a process nobody may trace."""
    sleeper = (
        "import ctypes, time; ctypes.CDLL(None).prctl(0x59616d61, ctypes.c_ulong(-1), 0, 0,"
        " 0); print('ready', flush=True); time.sleep(60)"
    )  # PR_SET_PTRACER_ANY (Yama)
    with running(unprivileged_copy.argv(["-c", sleeper]), env=unprivileged_copy.env()) as victim:
        assert victim.read_line() == "ready"
        assert attack_as_nobody(unprivileged_copy, victim.pid, 0) == dict.fromkeys(ATTACKS, "done")


@pytest.mark.parametrize("mode", ["setuid", "setcap"])
def test_nobody_cannot_trace_read_or_rob_the_privileged_helper(
    mode: str, helper_path: str, unprivileged_copy
) -> None:
    with running(caller_argv(mode, helper_path, unprivileged_copy)) as helper:
        assert helper.feature("sockets") == "raw"
        assert os.readlink(f"/proc/{helper.pid}/fd/3").startswith("socket:")  # the raw ICMP one
        owner = os.stat(f"/proc/{helper.pid}/mem").st_uid
        results = attack_as_nobody(unprivileged_copy, helper.pid, 3)
        assert proc_status(helper.pid)["Uid"].split()[0] == str(NOBODY)
        assert helper.finish()[0] == 0
    assert owner == 0, "a dumpable process owns its /proc/PID/mem"
    assert all(results[a] in ("EPERM", "EACCES") for a in ATTACKS), results


def test_helper_makes_itself_non_dumpable_even_without_set_id(make_lab, unprivileged_copy) -> None:
    """The plain copy (datagram sockets) gains nothing from exec, so the kernel leaves it
    dumpable: only the helper's own PR_SET_DUMPABLE keeps nobody out."""
    lab = make_lab("dumpable")
    host = lab.add_node("host")
    lab.build()
    lab.open_ping_group(host)
    argv = lab.exec_argv(
        host, unprivileged_copy.argv([str(unprivileged_copy.helper("plain"))], python=False)
    )
    with running(argv, env=unprivileged_copy.env()) as helper:
        assert helper.feature("sockets") == "datagram"
        owner = os.stat(f"/proc/{helper.pid}/mem").st_uid
        results = attack_as_nobody(unprivileged_copy, helper.pid, 3)
        assert helper.finish()[0] == 0
    assert owner == 0
    assert all(results[a] in ("EPERM", "EACCES") for a in ATTACKS), results


# --------------------------------------------------------------------------- policy for nobody


def run_in(
    lab: Chain,
    node: str,
    argv: Sequence[str],
    requests: str,
    *,
    env: dict[str, str],
    timeout: float = 60,
) -> list[str]:
    res = subprocess.run(
        lab.exec_argv(node, list(argv)),
        input=requests.encode(),
        capture_output=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert (res.returncode, res.stderr) == (0, b""), res
    return res.stdout.decode().splitlines()


def refused_requests(chain: Chain) -> tuple[list[str], dict[str, str]]:
    """Requests nobody must not get sent, with the exact reply each must get.

    Marked, low-port and foreign-source probes go to router 1, which nothing else
    probes, so a capture shows any that leaked."""
    r1_4, r1_6 = chain.hop_address(1, 4), chain.hop_address(1, 6)
    broadcast = re.sub(r"\.\d+$", ".255", chain.client_address(4))  # the client's /24
    cases = [
        (f"ip-4 {r1_4} mark 5 details yes", "permission-denied reason mark-not-permitted"),
        (f"ip-4 {r1_4} mark 5", "permission-denied"),
        (
            f"ip-6 {r1_6} protocol tcp mark 1 details yes",
            "permission-denied reason mark-not-permitted",
        ),
        ("ip-4 224.0.0.1 details yes", "permission-denied reason multicast-destination"),
        (
            "ip-4 239.1.2.3 protocol udp details yes",
            "permission-denied reason multicast-destination",
        ),
        ("ip-6 ff02::1 details yes", "permission-denied reason multicast-destination"),
        (
            "ip-6 ff0e::1 protocol sctp details yes",
            "permission-denied reason multicast-destination",
        ),
        ("ip-4 255.255.255.255 details yes", "permission-denied reason broadcast-destination"),
        ("ip-4 255.255.255.255 protocol udp", "permission-denied"),
        # directed broadcast: the helper never sets SO_BROADCAST, the kernel says EACCES
        # (TCP SYNs leave from a raw socket too)
        (f"ip-4 {broadcast} details yes", "permission-denied"),
        (f"ip-4 {broadcast} protocol udp", "permission-denied"),
        (f"ip-4 {broadcast} protocol sctp", "permission-denied"),
        (f"ip-4 {broadcast} protocol tcp", "permission-denied"),
        ("ip-4 0.0.0.0 details yes", "permission-denied reason unspecified-destination"),
        (
            "ip-4 0.1.2.3 protocol tcp details yes",
            "permission-denied reason unspecified-destination",
        ),
        ("ip-6 :: details yes", "permission-denied reason unspecified-destination"),
        (f"ip-4 {r1_4} local-ip-4 198.18.1.99", "address-not-available"),
        (f"ip-6 {r1_6} protocol udp local-ip-6 2001:db8:1::99", "address-not-available"),
        (f"ip-4 {r1_4} protocol sctp local-ip-4 224.0.0.1", "address-not-available"),
        (f"ip-4 {r1_4} local-ip-4 {broadcast}", "address-not-available"),
        (f"ip-4 {r1_4} local-ip-4 0.0.0.0", "invalid-argument reason unspecified-source"),
        (f"ip-6 {r1_6} protocol tcp local-ip-6 ::", "invalid-argument reason unspecified-source"),
        # an IPv4-mapped destination is judged as its IPv4 address, then refused
        ("ip-6 ::ffff:224.0.0.1 details yes", "permission-denied reason multicast-destination"),
        (
            "ip-6 ::ffff:255.255.255.255 protocol udp details yes",
            "permission-denied reason broadcast-destination",
        ),
        (f"ip-6 ::ffff:{r1_4} protocol tcp", "invalid-argument reason v4-mapped-destination"),
        (
            f"ip-4 {r1_4} protocol udp local-port 1023 details yes",
            "invalid-argument reason local-port-out-of-range",
        ),
        (
            f"ip-6 {r1_6} protocol tcp local-port 80",
            "invalid-argument reason local-port-out-of-range",
        ),
    ]
    lines, expected = [], {}
    for token, (args, reply) in enumerate(cases, start=10):
        lines.append(f"{token} send-probe {args} timeout 1")
        expected[str(token)] = f"{token} {reply}"
    return lines, expected


@pytest.mark.parametrize("mode", ["setuid", "setcap"])
def test_refused_probes_get_their_reply_and_send_nothing(
    mode: str, chain: Chain, unprivileged_copy
) -> None:
    lines, expected = refused_requests(chain)
    s4, s6 = chain.server_address(4), chain.server_address(6)
    # controls at the end: the capture does see what this helper sends
    requests = [
        "1 check-support feature mark",
        "2 check-support feature rate-limit",
        *lines,
        f"98 send-probe ip-4 {s4} timeout 2",
        f"99 send-probe ip-6 {s6} timeout 2",
    ]
    argv = unprivileged_copy.argv([str(unprivileged_copy.helper(mode))], python=False)
    with chain.capture("client", None) as cap:
        replies = run_in(
            chain, "client", argv, "\n".join(requests) + "\n", env=unprivileged_copy.env()
        )
    got = {line.split()[0]: re.sub(r" round-trip-time \d+", "", line) for line in replies}
    assert len(replies) == len(got) == len(requests)
    assert got.pop("1") == "1 feature-support support no"
    assert got.pop("2") == "2 feature-support support 1000"
    assert got.pop("98") == f"98 reply ip-4 {s4}"
    assert got.pop("99") == f"99 reply ip-6 {s6}"
    assert got == expected
    allowed = {
        (chain.client_address(4), s4),
        (s4, chain.client_address(4)),
        (chain.client_address(6), s6),
        (s6, chain.client_address(6)),
    }
    seen = cap.select()  # ICMPv6 neighbour discovery and MLD are left out
    assert all((p.src, p.dst) in allowed for p in seen), cap.describe()
    assert len(seen) == 4, cap.describe()


def test_root_may_probe_what_nobody_may_not(chain: Chain, helper_path: str) -> None:
    """The same requests from root are not refused by policy (only the kernel's own
    refusals remain), so the policy above is what refuses them for nobody."""
    lines, _ = refused_requests(chain)
    replies = run_in(
        chain,
        "client",
        [helper_path],
        "1 check-support feature mark\n" + "\n".join(lines) + "\n",
        env={"PATH": "/usr/bin:/bin", **sanitizer_env()},
        timeout=60,
    )
    assert "1 feature-support support ok" in replies
    policy = re.compile(r"reason (mark-not-permitted|\w+-destination)")
    assert not [line for line in replies if policy.search(line)]


def make_mark_chain(make_chain) -> Chain:
    """A chain whose client routes fwmark 7 to an unreachable table: a probe that
    really carries mark 7 gets no-route, without it a reply."""
    c: Chain = make_chain(1, tag="mark")
    for family in ("-4", "-6"):
        c.run("client", ["ip", family, "rule", "add", "fwmark", "7", "table", "77", "pref", "100"])
        c.run("client", ["ip", family, "route", "add", "unreachable", "default", "table", "77"])
    return c


def mark_requests(c: Chain) -> tuple[str, list[str]]:
    s4, s6 = c.server_address(4), c.server_address(6)
    requests = (
        f"1 check-support feature mark\n"
        f"2 send-probe ip-4 {s4} mark 7 timeout 2\n"
        f"3 send-probe ip-6 {s6} protocol udp mark 7 timeout 2\n"
        f"4 send-probe ip-4 {s4} protocol tcp port 9 mark 7 timeout 2\n"
        f"5 send-probe ip-6 {s6} protocol sctp mark 7 timeout 2\n"
        f"6 send-probe ip-4 {s4} mark 8 timeout 2\n"
        f"7 send-probe ip-4 {s4} timeout 2\n"
    )
    return requests, ["1", "2", "3", "4", "5", "6", "7"]


def _words(replies: list[str]) -> dict[str, str]:
    return {line.split()[0]: " ".join(line.split()[1:3]) for line in replies}


def test_marks_work_for_root_and_for_a_caller_with_its_own_net_admin(
    make_chain, helper_path: str, unprivileged_copy
) -> None:
    c = make_mark_chain(make_chain)
    requests, _ = mark_requests(c)
    s4 = c.server_address(4)
    expected = {
        "1": "feature-support support",
        "2": "no-route",
        "3": "no-route",
        "4": "no-route",
        "5": "no-route",
        "6": "reply ip-4",
        "7": "reply ip-4",
    }
    root = run_in(
        c, "client", [helper_path], requests, env={"PATH": "/usr/bin:/bin", **sanitizer_env()}
    )
    assert _words(root) == expected
    assert "1 feature-support support ok" in root
    assert any(line.startswith(f"6 reply ip-4 {s4} ") for line in root)
    # nobody holding CAP_NET_ADMIN (ambient) of its own, running the plain copy
    own = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--inh-caps=+net_raw,+net_admin",
        "--ambient-caps=+net_raw,+net_admin",
        str(unprivileged_copy.helper("plain")),
    ]
    entitled = run_in(c, "client", own, requests, env=unprivileged_copy.env())
    assert _words(entitled) == expected
    assert "1 feature-support support ok" in entitled


def test_marks_are_refused_to_nobody_even_with_net_admin_in_the_file(
    make_chain, unprivileged_copy
) -> None:
    c = make_mark_chain(make_chain)
    requests, tokens = mark_requests(c)
    # set-group-id brokerpkg like the setcap copy (make_setcap_net_raw), then more capabilities
    admin = unprivileged_copy.add_binary(
        unprivileged_copy.helper("plain"), "net-admin-helper", "setcap"
    )
    subprocess.run(["setcap", "cap_net_raw,cap_net_admin+ep", str(admin)], check=True)
    helpers = [unprivileged_copy.helper("setuid"), unprivileged_copy.helper("setcap"), admin]
    for helper in helpers:
        argv = unprivileged_copy.argv([str(helper)], python=False)
        with c.capture("client", None) as cap:
            replies = run_in(c, "client", argv, requests, env=unprivileged_copy.env())
        words = _words(replies)
        assert words["1"] == "feature-support support" and "1 feature-support support no" in replies
        assert [words[t] for t in tokens[1:6]] == ["permission-denied"] * 5, (helper, replies)
        assert words["7"] == "reply ip-4", (helper, replies)
        # only the unmarked control probe and its answer crossed the wire
        assert len(cap.select()) == 2, (helper, cap.describe())


# --------------------------------------------------------------------------- rate limit

RATE_PROBES = 3000


def timed_probes(
    lab: Chain, argv: Sequence[str], env: dict[str, str]
) -> tuple[list[float], list[str]]:
    """Send RATE_PROBES echo probes at once; return each reply's arrival (s) and the lines."""
    dst = lab.server_address(4)
    requests = "".join(f"{t} send-probe ip-4 {dst} timeout 3\n" for t in range(1, RATE_PROBES + 1))
    proc = subprocess.Popen(
        lab.exec_argv("client", list(argv)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"1 check-support feature version\n")
    proc.stdin.flush()
    assert proc.stdout.readline().startswith(b"1 feature-support")  # started up
    start = time.monotonic()
    proc.stdin.write(requests.encode())
    proc.stdin.close()
    arrivals, lines = [], []
    for raw in proc.stdout:
        arrivals.append(time.monotonic() - start)
        lines.append(raw.decode().rstrip("\n"))
    assert proc.wait(30) == 0
    assert proc.stderr.read() == b""
    return arrivals, lines


def _check_all_answered(lines: list[str]) -> None:
    tokens = [int(line.split()[0]) for line in lines]
    assert sorted(tokens) == list(range(1, RATE_PROBES + 1)), "every probe answered once"
    assert {line.split()[1] for line in lines} == {"reply"}, "delayed, never dropped"


@pytest.mark.parametrize("mode", ["setuid", "setcap"])
def test_rate_limit_delays_nobody_and_drops_nothing(
    mode: str, chain: Chain, unprivileged_copy, fresh_caller: int
) -> None:
    # a user with a full bucket: the limit is per user (tests/test_ratelimit.py), and
    # nobody's bucket is shared by every test that runs helpers as nobody
    argv = unprivileged_copy.argv(
        [str(unprivileged_copy.helper(mode))], python=False, uid=fresh_caller
    )
    arrivals, lines = timed_probes(chain, argv, unprivileged_copy.env())
    _check_all_answered(lines)
    # a burst of 1000 at once, then 1000 per second: 2000 more take 2 s
    assert arrivals[999] < 0.6, f"burst: the 1000th reply came after {arrivals[999]:.2f} s"
    assert 0.9 < arrivals[1999] < 1.6, f"2000th reply after {arrivals[1999]:.2f} s"
    assert 1.9 < arrivals[-1] < 3.5, f"last reply after {arrivals[-1]:.2f} s"


def test_root_is_not_rate_limited(chain: Chain, helper_path: str) -> None:
    arrivals, lines = timed_probes(
        chain, [helper_path], {"PATH": "/usr/bin:/bin", **sanitizer_env()}
    )
    _check_all_answered(lines)
    assert arrivals[-1] < 1.0, f"3000 probes took {arrivals[-1]:.2f} s"


# --------------------------------------------------------------------------- checked drop

# A root wrapper installs a seccomp filter (root needs no no_new_privs for it) that makes
# one system call return 0 without doing anything, becomes the caller with setuid/setgid
# (not filtered), then runs the helper: the drop step "succeeds" but did not happen, and
# only the helper's own check afterwards can notice.
FAKE_SUCCESS = r"""
import ctypes, os, struct, sys
nr, uid, helper = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
LD_NR, JEQ, RET = 0x20, 0x15, 0x06
ALLOW, ERRNO_0 = 0x7FFF0000, 0x00050000
code = [(LD_NR, 0, 0, 0), (JEQ, 0, 1, nr), (RET, 0, 0, ERRNO_0), (RET, 0, 0, ALLOW)]
buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in code))
prog = struct.pack("HxxxxxxQ", len(code), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(22, 2, ctypes.c_char_p(prog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
    raise OSError(ctypes.get_errno(), "seccomp")
if uid:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
os.execv(helper, [helper])
"""
SYSCALLS = {
    "x86_64": {"capset": 126, "setresuid": 117},
    "aarch64": {"capset": 91, "setresuid": 147},
}


@pytest.mark.skipif(platform.machine() not in SYSCALLS, reason="syscall numbers for x86_64/aarch64")
@pytest.mark.parametrize(
    ("mode", "syscall", "step"),
    [
        ("root", "capset", "verify capability sets"),
        ("setuid", "setresuid", "verify uids"),
    ],
)
def test_a_drop_step_that_did_nothing_aborts_before_any_input(
    mode: str, syscall: str, step: str, helper_path: str, unprivileged_copy
) -> None:
    helper = helper_path if mode == "root" else str(unprivileged_copy.helper(mode))
    argv = [
        "/usr/bin/python3",
        "-c",
        FAKE_SUCCESS,
        str(SYSCALLS[platform.machine()][syscall]),
        "0" if mode == "root" else str(NOBODY),
        helper,
    ]
    res = subprocess.run(
        argv,
        input=b"1 check-support feature version\n",
        capture_output=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", **sanitizer_env()},
    )
    assert res.returncode == -signal.SIGABRT, res
    assert res.stdout == b"", "nothing was served"
    assert f"privilege drop failed at {step}".encode() in res.stderr, res.stderr
