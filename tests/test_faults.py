"""Faults around the helper: its client dies or stops reading or closes its input, it runs
out of descriptors, it is killed under a Session, it serves a million probes.

Probes go to 127.0.0.1/::1 or to the lab (the responder's silent targets keep probes
in flight).  Figures (memory, descriptors, timings) are printed with ``-s``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from lab.topology import Chain

from brokerpkg import HelperExitedError, Session

SANITIZED = os.environ.get("BROKERPKG_SANITIZE", "") == "1"


def sanitizer_env() -> dict[str, str]:
    return {k: v for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS") if (v := os.environ.get(k))}


def helper_env() -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", **sanitizer_env()}


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def report(text: str) -> None:
    print(f"\n[figures] {text}", file=sys.stderr)


# --------------------------------------------------------------------------- client dies

CLIENT = r"""
import signal, subprocess, sys
helper, target, disposition = sys.argv[1], sys.argv[2], sys.argv[3]
signal.signal(signal.SIGPIPE, signal.SIG_IGN if disposition == "ignored" else signal.SIG_DFL)
# restore_signals=False: the helper inherits this client's SIGPIPE disposition
helper = subprocess.Popen([helper], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          restore_signals=False, env={"PATH": "/usr/bin:/bin"})
helper.stdin.write(b"0 check-support feature version\n")
helper.stdin.flush()
helper.stdout.readline()
print(helper.pid, flush=True)
for token in range(1, 51):
    helper.stdin.write(f"{token} send-probe ip-4 {target} timeout 30\n".encode())
helper.stdin.flush()
print("sent", flush=True)
signal.pause()
"""

SUPERVISOR = r"""
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come to us
client = subprocess.Popen(json.loads(sys.argv[1]), stdout=subprocess.PIPE)
helper = int(client.stdout.readline())
assert client.stdout.readline().strip() == b"sent"
time.sleep(float(sys.argv[2]))
os.kill(client.pid, signal.SIGKILL)
client.wait()
killed = time.monotonic()
while True:
    pid, status = os.waitpid(helper, os.WNOHANG)
    if pid:
        print(json.dumps({"after": time.monotonic() - killed,
                          "status": os.waitstatus_to_exitcode(status)}))
        break
    if time.monotonic() - killed > 5:
        os.kill(helper, signal.SIGKILL)
        os.waitpid(helper, 0)
        print(json.dumps({"after": None, "status": None}))
        break
    time.sleep(0.002)
"""


@pytest.mark.privileged
@pytest.mark.parametrize("disposition", ["default", "ignored"])
def test_helper_exits_when_its_client_is_killed(
    chain: Chain, responder, helper_path: str, disposition: str
) -> None:
    """50 probes in flight (30 s timeouts to a silent target); the client is SIGKILLed.
    mtr-packet with SIGPIPE ignored outlives its client; the helper must be gone within
    1 s, with status 0 (its reader went away)."""
    target = chain.virtual_target(77)
    responder.set(target, answer="none")
    client = chain.exec_argv(
        "client", [sys.executable, "-c", CLIENT, helper_path, target, disposition]
    )
    res = subprocess.run(
        [sys.executable, "-c", SUPERVISOR, json.dumps(client), "0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **helper_env()},
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert len(responder.received(dst=target)) == 50, "the probes were in flight"
    assert result["after"] is not None, "the helper outlived its client by 5 s"
    report(
        f"client killed (SIGPIPE {disposition}): helper gone after {result['after']:.3f} s, "
        f"status {result['status']}"
    )
    assert result["after"] < 1.0
    assert result["status"] == 0


# --------------------------------------------------------------------------- end of input


@pytest.mark.privileged
def test_end_of_input_finishes_the_probes_in_flight(
    chain: Chain, responder, helper_path: str
) -> None:
    slow, silent = chain.virtual_target(80), chain.virtual_target(81)
    slow6, silent6 = chain.virtual_target(80, 6), chain.virtual_target(81, 6)
    for address in (slow, slow6):
        responder.set(address, delay=0.6)
    for address in (silent, silent6):
        responder.set(address, answer="none")
    requests: list[str] = []
    answered: list[int] = []
    for n, protocol in enumerate(("icmp", "udp", "tcp", "sctp") * 3):
        for family, (fast, quiet) in ((4, (slow, silent)), (6, (slow6, silent6))):
            token = len(requests) + 1
            requests.append(
                f"{token} send-probe ip-{family} {fast} protocol {protocol} "
                f"port {1000 + n} timeout 3"
            )
            answered.append(token)
            requests.append(
                f"{token + 1} send-probe ip-{family} {quiet} protocol {protocol} "
                f"port {1000 + n} timeout 1.5"
            )
    started = time.monotonic()
    res = subprocess.run(
        chain.exec_argv("client", [helper_path]),
        input="".join(r + "\n" for r in requests).encode(),
        capture_output=True,
        timeout=30,
        env=helper_env(),
        check=False,
    )
    took = time.monotonic() - started
    assert (res.returncode, res.stderr) == (0, b"")
    replies = {int(line.split()[0]): line.split()[1] for line in res.stdout.decode().splitlines()}
    assert len(replies) == len(requests) == len(res.stdout.splitlines())
    assert {replies[t] for t in answered} == {"reply"}
    assert {w for t, w in replies.items() if t not in answered} == {"no-reply"}
    assert 1.5 <= took < 6, f"waited for the last timeout, then exited: {took:.2f} s"


# --------------------------------------------------------------------------- never reading

FLOOD = 200_000


def test_writer_that_never_reads_keeps_memory_bounded(helper_path: str) -> None:
    """200,000 requests written without reading a reply: the helper stops reading at a
    4 MB reply backlog, so its memory stays bounded and the writer blocks; once the
    client reads, everything completes."""
    proc = subprocess.Popen(
        [helper_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=helper_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(b"0 check-support feature version\n")
    proc.stdin.flush()
    proc.stdout.readline()
    start = memory_kb(proc.pid)
    written = [0]

    def writer() -> None:
        assert proc.stdin is not None
        for first in range(1, FLOOD + 1, 1000):
            chunk = "".join(
                f"{t} send-probe ip-4 127.0.0.1 timeout 1\n"
                for t in range(first, min(first + 1000, FLOOD + 1))
            )
            proc.stdin.write(chunk.encode())
            proc.stdin.flush()
            written[0] = min(first + 999, FLOOD)
        proc.stdin.close()

    thread = threading.Thread(target=writer, daemon=True)
    try:
        thread.start()
        last, stalled_since = -1, time.monotonic()
        while time.monotonic() - stalled_since < 1.5:  # no progress for 1.5 s: stalled
            if written[0] != last:
                last, stalled_since = written[0], time.monotonic()
            assert thread.is_alive(), "the helper read every request: it never paused"
            time.sleep(0.05)
        stalled_at = written[0]
        stalled = memory_kb(proc.pid)
        assert proc.poll() is None
        # now read: everything must complete
        tokens: Counter[int] = Counter()
        buffer = b""
        deadline = time.monotonic() + 120
        fd = proc.stdout.fileno()
        while True:
            assert time.monotonic() < deadline, f"deadlock: {sum(tokens.values())} replies"
            if not select.select([fd], [], [], 5)[0]:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            tokens.update(int(line.split(b" ", 1)[0]) for line in lines)
        thread.join(30)
        assert proc.wait(30) == 0
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report(
        f"never-reading writer: stalled after {stalled_at} of {FLOOD} requests; helper "
        f"VmRSS {start['VmRSS']} -> {stalled['VmRSS']} kB, VmHWM {stalled['VmHWM']} kB"
    )
    assert stalled_at < FLOOD * 0.75, "the helper kept reading though nobody read its replies"
    # 4 MB of backlog (at most 8 MB of buffer) and a 64 kB input chunk, nothing more
    limit = 12 * 1024 if not SANITIZED else 40 * 1024
    assert stalled["VmHWM"] - start["VmRSS"] < limit
    assert sorted(tokens) == list(range(1, FLOOD + 1)) and max(tokens.values()) == 1


# --------------------------------------------------------------------------- TCP descriptors


def tcp_flood(
    chain: Chain,
    argv: Sequence[str],
    target: str,
    count: int,
    preexec: Callable[[], None] | None = None,
) -> tuple[Counter[str], int, list[str]]:
    """``count`` TCP probes to a silent port, then probes that must work; returns the
    reply kinds of the flood, the most descriptors seen, and the later replies."""
    server = chain.server_address(4)
    proc = subprocess.Popen(
        chain.exec_argv("client", list(argv)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=helper_env(),
        preexec_fn=preexec,  # noqa: PLW1509 - no threads here
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(
            "".join(
                f"{t} send-probe ip-4 {target} protocol tcp port 8080 timeout 1.5\n"
                for t in range(1, count + 1)
            ).encode()
        )
        proc.stdin.flush()
        most = 0
        kinds: Counter[str] = Counter()
        tokens: set[int] = set()
        buffer = b""
        deadline = time.monotonic() + 60
        fd = proc.stdout.fileno()
        while len(tokens) < count:
            assert time.monotonic() < deadline, f"only {len(tokens)} of {count} replies"
            most = max(most, fd_count(proc.pid))
            if select.select([fd], [], [], 0.05)[0]:
                chunk = os.read(fd, 1 << 16)
                assert chunk, f"helper exited: {proc.wait()} {proc.stderr.read()!r}"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    token, word = line.decode().split()[:2]
                    tokens.add(int(token))
                    kinds[word] += 1
        assert tokens == set(range(1, count + 1)) and buffer == b""
        # still serving: a feature, an echo, a TCP probe answered with a reset
        out, err = proc.communicate(
            f"90001 check-support feature max-probes\n"
            f"90002 send-probe ip-4 {server} timeout 2\n"
            f"90003 send-probe ip-4 {server} protocol tcp port 9 "
            f"timeout 2\n".encode(),
            timeout=30,
        )
        after = sorted(out.decode().splitlines())
        assert (proc.returncode, err) == (0, b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [line.split()[:2] for line in after] == [
        ["90001", "feature-support"],
        ["90002", "reply"],
        ["90003", "reply"],
    ]
    return kinds, most, after


@pytest.mark.privileged
def test_2000_tcp_probes_to_a_silent_port(chain: Chain, responder, helper_path: str) -> None:
    """mtr-packet aborts past FD_SETSIZE (select), as the helper before the raw SYNs held a
    socket per probe; here every SYN leaves the raw socket: 2000 in flight time out
    cleanly while the helper's descriptors stay few."""
    target = chain.virtual_target(90)
    responder.set(target, answer="none")
    kinds, most, _ = tcp_flood(chain, [helper_path], target, 2000)
    report(f"2000 TCP probes: {dict(kinds)}, up to {most} descriptors open")
    assert kinds == {"no-reply": 2000}
    assert most < 64


@pytest.mark.privileged
def test_tcp_probes_need_no_descriptor_under_a_low_limit(
    chain: Chain, responder, helper_path: str
) -> None:
    """With a hard limit of 512 descriptors it cannot raise (CAP_SYS_RESOURCE gone from
    its bounding set), 2000 TCP probes are all in flight and time out (the helper before
    the raw SYNs answered those past its limit probes-exhausted); afterwards the helper
    serves normally."""
    target = chain.virtual_target(91)
    responder.set(target, answer="none")

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    argv = ["setpriv", "--bounding-set=-sys_resource", helper_path]
    kinds, most, _ = tcp_flood(chain, argv, target, 2000, low_limit)
    report(f"2000 TCP probes with 512 descriptors: {dict(kinds)}, up to {most} open")
    assert kinds == {"no-reply": 2000}
    assert most < 64


# --------------------------------------------------------------------------- killed under a Session


@pytest.mark.privileged
async def test_sigkill_under_a_session_fails_every_pending_probe(
    chain: Chain, responder, helper_path: str
) -> None:
    target = chain.virtual_target(95)
    responder.set(target, answer="none")
    command = chain.exec_argv("client", [helper_path])
    async with Session(command=command, env=helper_env()) as session:
        assert session.process is not None
        pid = session.process.pid
        tasks = [asyncio.create_task(session.probe(target, timeout=30)) for _ in range(20)]
        await asyncio.to_thread(responder.wait_received, 20, 10.0, dst=target)
        assert session.in_flight == 20 and not any(t.done() for t in tasks)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        done, pending = await asyncio.wait(tasks, timeout=5)
        took = time.monotonic() - killed
        assert not pending
        errors = [t.exception() for t in done]
        assert all(isinstance(e, HelperExitedError) for e in errors), errors
        assert {e.returncode for e in errors if isinstance(e, HelperExitedError)} == {-9}
        assert "killed by signal 9" in str(errors[0])
        reaped = not await asyncio.to_thread(os.path.exists, f"/proc/{pid}")
        assert reaped, "the helper was reaped: no zombie"
        with pytest.raises(HelperExitedError):
            await session.probe(target, timeout=1)
    report(f"SIGKILL under a Session: 20 pending probes failed {took * 1000:.0f} ms later")
    assert took < 1.0
    async with Session(command=command, env=helper_env()) as again:
        result = await again.probe(chain.server_address(4), timeout=2)
        assert result.result == "reply"


# --------------------------------------------------------------------------- a million probes

MILLION = 1_000_000
WINDOW = 10_000
SAMPLES = 10
MIX = (" protocol tcp port 9", " protocol udp port 9", "", "", "", "", "", "", "", "")


def million_requests(first: int, count: int) -> bytes:
    lines = []
    for token in range(first, first + count):
        address = "ip-6 ::1" if token % 4 == 0 else "ip-4 127.0.0.1"
        lines.append(f"{token} send-probe {address} timeout 2{MIX[token % len(MIX)]}\n")
    return "".join(lines).encode()


def test_a_million_probes_keep_descriptors_and_memory_flat(helper_path: str) -> None:
    """1,000,000 probes (ICMP, UDP, TCP; IPv4 and IPv6 loopback) through one helper with
    up to 10,000 in flight: every one answered once; open descriptors and RSS sampled
    every 100,000 replies stay flat."""
    proc = subprocess.Popen(
        [helper_path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=helper_env(),
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out_fd, in_fd = proc.stdin.fileno(), proc.stdout.fileno()
    os.write(out_fd, b"0 check-support feature version\n")
    assert os.read(in_fd, 4096).startswith(b"0 feature-support")  # started up
    os.set_blocking(out_fd, False)
    started = time.monotonic()
    sent = done = 0
    pending = b""
    buffer = b""
    kinds: Counter[bytes] = Counter()
    seen = bytearray(MILLION + 1)
    samples: list[tuple[int, int, int]] = []
    try:
        fds_at_start = fd_count(proc.pid)
        while done < MILLION:
            if not pending and sent < MILLION and sent - done < WINDOW:
                count = min(MILLION - sent, WINDOW - (sent - done), 2000)
                pending = million_requests(sent + 1, count)
                sent += count
            ready = select.select([in_fd], [out_fd] if pending else [], [], 10)
            assert ready[0] or ready[1], f"stuck after {done} replies"
            if ready[1]:
                with_room = os.write(out_fd, pending)
                pending = pending[with_room:]
            if ready[0]:
                chunk = os.read(in_fd, 1 << 20)
                assert chunk, f"helper exited after {done} replies: {proc.wait()}"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    token, word, _ = line.split(b" ", 2)
                    assert not seen[int(token)], f"token {token!r} answered twice"
                    seen[int(token)] = 1
                    kinds[word] += 1
                done += len(lines)
                if done >= (len(samples) + 1) * (MILLION // SAMPLES):
                    mem = memory_kb(proc.pid)
                    samples.append((done, fd_count(proc.pid), mem["VmRSS"]))
        took = time.monotonic() - started
        fds_at_end = fd_count(proc.pid)
        proc.stdin.close()
        assert proc.wait(30) == 0
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report(
        f"1,000,000 probes in {took:.1f} s ({MILLION / took:,.0f}/s), replies {dict(kinds)}; "
        f"descriptors {fds_at_start} at start, {fds_at_end} at the end; samples "
        f"(replies, descriptors, VmRSS kB): {samples}"
    )
    assert kinds == {b"reply": MILLION}
    assert fds_at_end == fds_at_start, "a descriptor leaked"
    assert max(fds for _, fds, _ in samples) < fds_at_start + WINDOW // 10 + 50
    rss = [kb for _, _, kb in samples]
    growth = max(rss[2:]) - rss[1]  # after warm-up (the first 200,000)
    assert growth < (1024 if not SANITIZED else 16 * 1024), f"RSS grew by {growth} kB: {rss}"
