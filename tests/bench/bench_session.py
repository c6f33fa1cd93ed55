#!/usr/bin/env python3
"""Benchmark 2: session throughput from Python.

20,000 ICMP probes to 127.0.0.1 with 1,000 in flight at any time, through
brokerpkg.Session driving brokerpkg-helper, and through the mtrpacket package driving
mtr-packet 0.95 (its own MtrPacket class, unchanged), interleaved in one run; medians of
ROUNDS rounds are compared.  The workload is the same for every per-probe contender:
1,000 coroutines, each awaiting probe('127.0.0.1', timeout=1) in a loop until 20,000
were sent.  Also reported: brokerpkg.MtrPacket (our drop-in) driving our helper, the
mtrpacket package driving our helper (the Python side alone compared), and
Session.probe_many (the batch API, 1,000 in flight).  Run as root:

    python3 tests/bench/bench_session.py [--count 20000] [--window 1000] [--rounds 5]

Target (issue 5): ours >= 4x mtrpacket + mtr-packet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import brokerpkg  # noqa: E402

LOST: dict[str, int] = {}
TIMEOUT = 1  # seconds: an answer lost under load costs 1 s, not 10


async def windowed(
    probe: Callable[[], Awaitable[Any]], count: int, window: int, name: str
) -> float:
    """Run COUNT probes, WINDOW at a time; return the seconds taken.  Probes that did not
    get a reply (a helper losing answers under load) are counted in LOST[name]."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            result = await probe()
            if not result.success:
                LOST[name] = LOST.get(name, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    return time.perf_counter() - start


SESSION = "brokerpkg.Session + brokerpkg-helper"
DROP_IN = "brokerpkg.MtrPacket + brokerpkg-helper"
BATCH = "Session.probe_many + brokerpkg-helper"
MTRPACKET_OURS = "mtrpacket 1.0.1 + brokerpkg-helper"
REFERENCE = "mtrpacket 1.0.1 + mtr-packet 0.95"


async def run_brokerpkg(helper: str, count: int, window: int) -> float:
    async with brokerpkg.Session(helper) as session:
        return await windowed(
            lambda: session.probe("127.0.0.1", timeout=TIMEOUT), count, window, SESSION
        )


async def run_brokerpkg_mtrpacket(helper: str, count: int, window: int) -> float:
    os.environ["MTR_PACKET"] = helper
    try:
        async with brokerpkg.MtrPacket() as mtr:
            return await windowed(
                lambda: mtr.probe("127.0.0.1", timeout=TIMEOUT), count, window, DROP_IN
            )
    finally:
        del os.environ["MTR_PACKET"]


async def run_batch(helper: str, count: int, window: int) -> float:
    async with brokerpkg.Session(helper) as session:
        start = time.perf_counter()
        results = await session.probe_many(
            ["127.0.0.1"] * count, concurrency=window, timeout=TIMEOUT
        )
        seconds = time.perf_counter() - start
    LOST[BATCH] = LOST.get(BATCH, 0) + sum(not result.success for result in results)
    return seconds


async def run_mtrpacket(count: int, window: int, helper: str | None = None) -> float:
    import mtrpacket

    name = REFERENCE if helper is None else MTRPACKET_OURS
    if helper is not None:
        os.environ["MTR_PACKET"] = helper
    try:
        async with mtrpacket.MtrPacket() as mtr:
            return await windowed(
                lambda: mtr.probe("127.0.0.1", timeout=TIMEOUT), count, window, name
            )
    finally:
        os.environ.pop("MTR_PACKET", None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (raw sockets)", file=sys.stderr)
        return 2
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    helper = str(ROOT / "helper" / "brokerpkg-helper")
    count, window = arguments.count, arguments.window
    contenders: dict[str, Callable[[], Coroutine[Any, Any, float]]] = {
        SESSION: lambda: run_brokerpkg(helper, count, window),
        DROP_IN: lambda: run_brokerpkg_mtrpacket(helper, count, window),
        BATCH: lambda: run_batch(helper, count, window),
        MTRPACKET_OURS: lambda: run_mtrpacket(count, window, helper),
    }
    if shutil.which("mtr-packet"):
        contenders[REFERENCE] = lambda: run_mtrpacket(count, window)
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(arguments.rounds):
        for name, run in contenders.items():
            runs[name].append(asyncio.run(run()))
    print(f"{count} probes to 127.0.0.1, {window} in flight, {arguments.rounds} rounds (median):")
    for name, seconds in runs.items():
        median = statistics.median(seconds)
        lost = LOST.get(name, 0)
        print(
            f"  {name:40s} {median:7.3f} s  {count / median:8.0f} probes/s"
            f"  (min {min(seconds):.3f} s, max {max(seconds):.3f} s;"
            f" {lost} of {count * arguments.rounds} probes unanswered)"
        )
    ours = statistics.median(runs[SESSION])
    print(
        f"  Session vs mtrpacket, both with brokerpkg-helper (Python side):"
        f" {statistics.median(runs[MTRPACKET_OURS]) / ours:.2f}x"
    )
    if REFERENCE in runs:
        theirs = statistics.median(runs[REFERENCE])
        print(f"  Session vs mtrpacket+mtr-packet: {theirs / ours:.2f}x (target >= 4x)")
        print(
            f"  probe_many vs mtrpacket+mtr-packet: {theirs / statistics.median(runs[BATCH]):.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
