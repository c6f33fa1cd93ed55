#!/usr/bin/env python3
"""Benchmark 7: the TCP figures (issue 11).  Three helpers side by side in one run:

- after:  this tree's brokerpkg-helper (SYNs built on its raw socket);
- before: the helper of BEFORE (default main's 4c8b8df, one connect()ed socket per
  TCP probe), built from ``git archive`` in a temporary directory;
- mtr-packet (Debian's mtr-tiny), which also connects a socket per probe.

1. RTT truth.  In a lab chain (client -> router -> server), tcpdump captures the
   client's interface with nanosecond kernel timestamps while a helper sends TCP
   probes to the server: to an open port (a listener: the kernel answers SYN-ACK)
   and to a closed one (the kernel answers RST), IPv4 and IPv6; at low load (500
   probes one at a time, 2 ms apart) and in bursts (5,000 probes, 500 in flight,
   refilled 100 at a time).  A probe's wire RTT is (its answer's capture timestamp -
   its SYN's), the answer matched on the SYN's source port and sequence number (it
   acknowledges sequence + 1), the probes paired with their reports in sending
   order.  Printed: p50 and p99 of (reported - wire) and p99 of its absolute value,
   in microseconds, and the before's and mtr-packet's p50 and p99 of the absolute
   error over the after's (taken as at least 1 us, the reports' resolution).
   Goal: the after's |p99| <= 50 us.
2. Descriptors.  20,000 TCP probes written at once to a destination the router
   blackholes (timeout 10 s): the helper's peak number of open descriptors (read
   from /proc every 0.5 ms while under 2,000, then every 20 ms), the replies
   (refused: anything but no-reply) and how the helper ended.
   Goal: fewer than 64 descriptors and none refused.

Exits 1 when the after helper misses a goal.  Run as root:
python3 tests/bench/bench_tcp.py [--before REV] [--count N] [--burst N] [--window N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

OPEN_PORT = 8080
CLOSED_PORT = 8081
SPACING = 0.002  # seconds between one answer and the next probe
FLOOD = 20_000
FLOOD_TIMEOUT = 10
# /proc/PID/fd is read every FD_SAMPLE s, every FD_SAMPLE_FAST s while it is short
# (mtr-packet aborts within milliseconds of its 1,024th descriptor)
FD_SAMPLE, FD_SAMPLE_FAST, FD_FEW = 0.02, 0.0005, 2000
GOAL_P99_US = 50
GOAL_FDS = 64
TCP_SYN, TCP_RST, TCP_ACK = 0x02, 0x04, 0x10

# A listener on both families: the kernel answers SYN-ACK; accepted connections
# (the connect()ing helpers complete them) are closed at once.
LISTENER = f"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", {OPEN_PORT}))
s.listen(4096)
print("ready", flush=True)
while True:
    s.accept()[0].close()
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def probe_line(token: int, family: int, target: str, port: int, timeout: float) -> bytes:
    words = f"send-probe ip-{family} {target} protocol tcp port {port} timeout {timeout:g}"
    return f"{token} {words}\n".encode()


# ---------------------------------------------------------------- inside the client namespace


def read_reply(stdout: Any) -> tuple[int, int]:
    """(token, round-trip time in us) of the next reply.

    Raises:
        RuntimeError: the probe was not answered (SYN-ACK or RST), or the helper exited.
    """
    words = stdout.readline().split()
    if len(words) < 6 or words[1] != b"reply":
        raise RuntimeError(f"expected a reply: {b' '.join(words)!r}")
    return int(words[0]), int(words[5])


def run_rtt(command: list[str], lines: list[bytes], window: int) -> list[int]:
    """Send LINES, WINDOW in flight (1: one at a time, SPACING apart), refilled 100 at a
    time; returns the reported round-trip times (us) in token order.

    Raises:
        RuntimeError: as read_reply.
    """
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    reported: dict[int, int] = {}
    sent = min(window, len(lines))
    process.stdin.write(b"".join(lines[:sent]))
    process.stdin.flush()
    while len(reported) < len(lines):
        token, us = read_reply(process.stdout)
        reported[token] = us
        refill = 1 if window == 1 else 100
        if sent < len(lines) and len(reported) + window - sent >= refill:
            if window == 1:
                time.sleep(SPACING)
            process.stdin.write(b"".join(lines[sent : sent + refill]))
            process.stdin.flush()
            sent += len(lines[sent : sent + refill])
    process.stdin.close()
    process.wait()
    return [reported[token] for token in range(1, len(lines) + 1)]


def descriptors(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


def run_flood(command: list[str], lines: list[bytes]) -> dict[str, Any]:
    """Write LINES at once; returns the peak descriptors, the reply words counted, and
    how the helper ended (a helper that exits early leaves its probes unanswered)."""
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    peak = descriptors(process.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        count = peak
        while not done.wait(FD_SAMPLE if count > FD_FEW else FD_SAMPLE_FAST):
            count = descriptors(process.pid)
            peak = max(peak, count)

    def write() -> None:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # the helper died: its status says why
            process.stdin.write(b"".join(lines))
            process.stdin.flush()

    sampler = threading.Thread(target=sample)
    writer = threading.Thread(target=write)
    sampler.start()
    writer.start()
    replies: dict[str, int] = {}
    for _ in lines:
        words = process.stdout.readline().split()
        word = words[1].decode() if len(words) > 1 else "unanswered (helper exited)"
        replies[word] = replies.get(word, 0) + 1
    done.set()
    sampler.join()
    writer.join()
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()
    assert process.stderr is not None
    said = process.stderr.read().decode(errors="replace").strip().splitlines()
    return {
        "fds": peak,
        "replies": replies,
        "status": process.wait(),
        "stderr": said[0] if said else "",
    }


def inside(arguments: argparse.Namespace) -> int:
    """The measurements, run inside the lab's client namespace; prints JSON."""
    if arguments.inside == "rtt":
        lines = [
            probe_line(t, arguments.family, arguments.target, arguments.port, 2)
            for t in range(1, arguments.count + 1)
        ]
        result: Any = run_rtt(arguments.command, lines, arguments.window)
    else:
        lines = [
            probe_line(t, arguments.family, arguments.target, 80, FLOOD_TIMEOUT)
            for t in range(1, arguments.count + 1)
        ]
        result = run_flood(arguments.command, lines)
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- the lab side


def wire_rtts(packets: list[Any], target: str, port: int) -> list[int]:
    """Wire RTTs (ns) of the SYNs to TARGET:PORT in sending order (retransmissions skipped).

    Raises:
        RuntimeError: a SYN was not answered on the wire.
    """
    first_syn: dict[tuple[int, int], int] = {}
    for p in packets:
        if (
            p.direction == "out"
            and p.dst == target
            and p.dport == port
            and p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        ):
            first_syn.setdefault((p.sport, p.tcp_seq), p.timestamp_ns)
    answers: dict[tuple[int, int], int] = {}
    for p in packets:
        if (
            p.direction == "in"
            and p.src == target
            and p.sport == port
            and p.tcp_flags & TCP_ACK
            and p.tcp_flags & (TCP_SYN | TCP_RST)
        ):
            answers.setdefault((p.dport, (p.tcp_ack - 1) % 2**32), p.timestamp_ns)
    missing = [key for key in first_syn if key not in answers]
    if missing:
        raise RuntimeError(f"{len(missing)} SYNs unanswered on the wire, e.g. {missing[0]}")
    return [answers[key] - sent for key, sent in first_syn.items()]


def run_inside(chain: Any, command: list[str], *options: str) -> Any:
    """Run this file's --inside part in the client namespace; returns what it printed.

    Raises:
        LabError: it failed.
    """
    argv = [sys.executable, __file__, *options, "--", *command]
    return json.loads(chain.run("client", argv, env=chain.python_env(), timeout=300).stdout)


def rtt_errors(
    chain: Any, command: list[str], family: int, port: int, count: int, window: int
) -> list[float]:
    """(reported - wire) in microseconds for COUNT probes to the server's PORT.

    Raises:
        RuntimeError: the capture and the reports disagree on the number of probes.
        CaptureError: the kernel dropped captured packets.
    """
    target = chain.server_address(family)
    with chain.capture("client", "eth0", bpf="tcp", snaplen=128, buffer_kib=131072) as capture:
        reported = run_inside(
            chain,
            command,
            *("--inside", "rtt", "--family", str(family), "--target", target),
            *("--port", str(port), "--count", str(count), "--window", str(window)),
        )
    wire = wire_rtts(capture.packets, target, port)
    if len(wire) != len(reported):
        raise RuntimeError(f"capture saw {len(wire)} probes, helper reported {len(reported)}")
    return [us - ns / 1000 for us, ns in zip(reported, wire, strict=True)]


def build_before(revision: str, directory: Path) -> str:
    """Build the helper of REVISION in DIRECTORY; returns its path.

    Raises:
        subprocess.CalledProcessError: git or make failed.
    """
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "helper"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    subprocess.run(["make", "-s", "-C", str(directory / "helper")], check=True)
    return str(directory / "helper" / "brokerpkg-helper")


def summary(errors: list[float]) -> tuple[float, float, float, float]:
    """p50 and p99 of the signed errors, and of their absolute values."""
    absolute = [abs(e) for e in errors]
    return (
        percentile(errors, 0.5),
        percentile(errors, 0.99),
        percentile(absolute, 0.5),
        percentile(absolute, 0.99),
    )


def ratio(theirs: float, ours: float) -> str:
    """THEIRS / OURS, ours taken as at least 1 us: the resolution of a reported time."""
    return f"{theirs / max(ours, 1.0):.0f}x"


def measure_rtt(
    chain: Any, helpers: dict[str, list[str]], workloads: list[tuple[str, int, int]]
) -> bool:
    """Part 1; True when the after helper meets the goal in every case."""
    print("1. reported RTT - wire RTT in us (p50, p99; of |reported - wire|: p99), one router away")
    met = True
    for label, count, window in workloads:
        print(f"   {label}: {count} probes, {window} in flight")
        for family in (4, 6):
            for port, answer in ((OPEN_PORT, "SYN-ACK"), (CLOSED_PORT, "RST")):
                figures = {
                    name: summary(rtt_errors(chain, command, family, port, count, window))
                    for name, command in helpers.items()
                }
                after = figures["after"]
                met = met and after[3] <= GOAL_P99_US
                for name, (p50, p99, _, abs99) in figures.items():
                    versus = (
                        ""
                        if name == "after"
                        else f"   / after: |p50| {ratio(figures[name][2], after[2])},"
                        f" |p99| {ratio(abs99, after[3])}"
                    )
                    print(
                        f"     IPv{family} {answer:7s} {name:10s} p50 {p50:8.1f}  p99 {p99:8.1f}"
                        f"  |p99| {abs99:8.1f}{versus}"
                    )
    return met


def measure_fds(chain: Any, helpers: dict[str, list[str]]) -> bool:
    """Part 2; True when the after helper meets the goal."""
    blackhole = chain.add_blackhole(1).address(4)
    print(f"2. {FLOOD:,} TCP probes at once to a blackhole (timeout {FLOOD_TIMEOUT} s):")
    met = True
    for name, command in helpers.items():
        result = run_inside(
            chain,
            command,
            *("--inside", "flood", "--family", "4", "--target", blackhole),
            *("--count", str(FLOOD)),
        )
        replies = result["replies"]
        refused = FLOOD - replies.get("no-reply", 0)
        ending = f"exit status {result['status']}" + (
            f" ({result['stderr']})" if result["status"] != 0 else ""
        )
        print(
            f"   {name:10s} peak descriptors {result['fds']:6,d}, not no-reply {refused:6,d}:"
            f" {replies}, {ending}"
        )
        if name == "after":
            met = result["fds"] < GOAL_FDS and refused == 0
    return met


def start_listener(chain: Any) -> None:
    """LISTENER in the server namespace (killed with the lab).

    Raises:
        RuntimeError: it did not start.
    """
    listener = chain.popen(
        "server", [sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True
    )
    assert listener.stdout is not None
    if listener.stdout.readline().strip() != "ready":
        raise RuntimeError("the listener did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="4c8b8df", help="revision of the before helper")
    parser.add_argument("--count", type=int, default=500, help="probes per case, one at a time")
    parser.add_argument("--burst", type=int, default=5000, help="probes per case, in bursts")
    parser.add_argument("--window", type=int, default=500, help="in flight in the bursts")
    parser.add_argument("--inside", choices=["rtt", "flood"], help=argparse.SUPPRESS)
    parser.add_argument("--family", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.inside:
        return inside(arguments)
    from lab import Chain

    workloads = [("low load", arguments.count, 1), ("bursts", arguments.burst, arguments.window)]
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    with tempfile.TemporaryDirectory(prefix="bench-tcp-") as scratch:
        helpers = {
            "after": [str(ROOT / "helper" / "brokerpkg-helper")],
            "before": [build_before(arguments.before, Path(scratch))],
        }
        mtr_packet = shutil.which("mtr-packet")
        if mtr_packet:
            helpers["mtr-packet"] = [mtr_packet]
        with Chain(1, responder=False, tag="tcpbench") as chain:
            start_listener(chain)
            chain.trace(4)  # warm up the neighbour caches on the path
            chain.trace(6)
            rtt_met = measure_rtt(chain, helpers, workloads)
            fds_met = measure_fds(chain, helpers)
    print(
        f"goals (after): |p99| <= {GOAL_P99_US} us: {'met' if rtt_met else 'NOT met'};"
        f" < {GOAL_FDS} descriptors, none refused: {'met' if fds_met else 'NOT met'}"
    )
    return 0 if rtt_met and fds_met else 1


if __name__ == "__main__":
    sys.exit(main())
