#!/usr/bin/env python3
"""Benchmark 1: helper throughput through a plain pipe.

100,000 ICMP probes to 127.0.0.1 are written to the helper's stdin at once (a writer
thread pushes them as fast as the pipe takes them) and the clock stops at the last reply.
In the same run, side by side:

- brokerpkg-helper: all 100,000 at once;
- mtr-packet 0.95: the same 100,000, but never more than 1,000 in flight, because it
  answers probes-exhausted past 1,024 (the best it can do on this workload);
- rawping (tests/bench/rawping.c, built here): a minimal C program that only sends and
  receives on one raw socket, no requests to parse and no replies to print: the floor.

Each is run ROUNDS times, interleaved; medians are compared.  The benchmark runs in a
network namespace of its own (unshare -n, loopback up): every raw ICMP socket of a
namespace gets a copy of every echo reply in it, so other programs pinging 127.0.0.1
at the same time would otherwise load all three contenders (and overflow mtr-packet's
receive buffer, which shows as no-reply).  --shared-namespace turns that off.
``--helper PATH`` (repeatable) adds another helper binary, e.g. one built from an older
tree (``git archive COMMIT helper | tar -x -C /tmp/old && make -C /tmp/old/helper``), run
all at once like ours in the same interleaved rounds, with its share of rawping's rate.
Run as root:

    python3 tests/bench/bench_helper_pipe.py [--count 100000] [--rounds 5] [--helper PATH]

Targets (issue 5): ours >= 2.5x mtr-packet's rate, and >= 80% of rawping's rate.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def build_helper() -> str:
    """Build helper/brokerpkg-helper with make; return its path."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    return str(ROOT / "helper" / "brokerpkg-helper")


def build_rawping(directory: str) -> str:
    """Compile rawping.c with the system cc (-O2); return the binary's path."""
    binary = os.path.join(directory, "rawping")
    subprocess.run(["cc", "-O2", "-o", binary, str(HERE / "rawping.c")], check=True)
    return binary


def requests(count: int) -> list[bytes]:
    return [
        f"{token} send-probe ip-4 127.0.0.1 timeout 10\n".encode() for token in range(1, count + 1)
    ]


def run_all_at_once(command: list[str], count: int) -> float:
    """Write COUNT requests at once; seconds from the first write to the last reply."""
    lines = requests(count)
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    data = b"".join(lines)

    def write() -> None:
        assert process.stdin is not None
        process.stdin.write(data)
        process.stdin.close()

    start = time.perf_counter()
    writer = threading.Thread(target=write)
    writer.start()
    for replies, line in enumerate(process.stdout, start=1):
        if b" reply " not in line:
            raise RuntimeError(f"unexpected reply: {line!r}")
        if replies == count:
            break
    elapsed = time.perf_counter() - start
    writer.join()
    process.wait()
    return elapsed


def run_windowed(command: list[str], count: int, window: int) -> float:
    """Keep at most WINDOW requests outstanding (for mtr-packet's 1,024 limit)."""
    lines = requests(count)
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    start = time.perf_counter()
    sent = min(window, count)
    process.stdin.write(b"".join(lines[:sent]))
    process.stdin.flush()
    pending_refill = 0
    for replies, line in enumerate(process.stdout, start=1):
        if b" reply " not in line:
            raise RuntimeError(f"unexpected reply: {line!r}")
        pending_refill += 1
        if replies == count:
            break
        # refill in batches of 100, like a client that writes in bursts
        if pending_refill >= 100 and sent < count:
            batch = lines[sent : sent + pending_refill]
            process.stdin.write(b"".join(batch))
            process.stdin.flush()
            sent += len(batch)
            pending_refill = 0
    elapsed = time.perf_counter() - start
    process.stdin.close()
    process.wait()
    return elapsed


def run_rawping(binary: str, count: int) -> float:
    done = subprocess.run([binary, str(count)], capture_output=True, text=True, check=True)
    return float(done.stdout)


def median_of(runs: dict[str, list[float]], name: str) -> float:
    return statistics.median(runs[name])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--shared-namespace", action="store_true", help="run in the current network namespace"
    )
    parser.add_argument(
        "--helper",
        action="append",
        default=[],
        metavar="PATH",
        help="another helper binary to run beside ours, all at once (repeatable)",
    )
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (raw sockets)", file=sys.stderr)
        return 2
    if not arguments.shared_namespace:
        script = 'ip link set lo up && exec "$0" "$@" --shared-namespace'
        os.execvp("unshare", ["unshare", "-n", "sh", "-c", script, sys.executable, *sys.argv])
    mtr_packet = shutil.which("mtr-packet")
    count = arguments.count
    with tempfile.TemporaryDirectory() as directory:
        contenders: dict[str, Callable[[], float]] = {
            "brokerpkg-helper": lambda: run_all_at_once([build_helper()], count),
            "rawping (floor)": lambda: run_rawping(build_rawping(directory), count),
        }
        for other in arguments.helper:
            contenders[other] = functools.partial(run_all_at_once, [other], count)
        if mtr_packet is not None:
            contenders["mtr-packet 0.95 (window 1000)"] = lambda: run_windowed(
                [mtr_packet], count, 1000
            )
        runs: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(arguments.rounds):
            for name, run in contenders.items():
                runs[name].append(run())
    print(f"{count} ICMP probes to 127.0.0.1, {arguments.rounds} rounds (median):")
    for name in runs:
        seconds = median_of(runs, name)
        print(f"  {name:32s} {seconds:7.3f} s  {count / seconds:9.0f} probes/s")
    ours = median_of(runs, "brokerpkg-helper")
    floor = median_of(runs, "rawping (floor)")
    print(f"  ours vs floor: {floor / ours:.2f} of rawping's rate (target >= 0.80)")
    for other in arguments.helper:
        print(f"  {other} vs floor: {floor / median_of(runs, other):.2f} of rawping's rate")
    if mtr_packet is not None:
        theirs = median_of(runs, "mtr-packet 0.95 (window 1000)")
        print(f"  ours vs mtr-packet: {theirs / ours:.2f}x its rate (target >= 2.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
