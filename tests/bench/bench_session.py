#!/usr/bin/env python3
"""Benchmark 2: session throughput from Python.

20,000 ICMP probes to 127.0.0.1 with 1,000 in flight at any time, through
brokerpkg.Session driving brokerpkg-helper, and through the mtrpacket package driving
mtr-packet 0.95 (its own MtrPacket class, unchanged), interleaved in one run; medians of
ROUNDS rounds are compared.  Also reported: brokerpkg.MtrPacket (our drop-in) driving our
helper.  Run as root:

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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import brokerpkg  # noqa: E402

LOST: dict[str, int] = {}
TIMEOUT = 1  # seconds: an answer lost under load costs 1 s, not 10


async def windowed(probe: Callable[[], Awaitable[Any]], count: int, window: int,
                   name: str) -> float:
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
REFERENCE = "mtrpacket 1.0.1 + mtr-packet 0.95"


async def run_brokerpkg(helper: str, count: int, window: int) -> float:
    async with brokerpkg.Session(helper) as session:
        return await windowed(
            lambda: session.probe("127.0.0.1", timeout=TIMEOUT), count, window, SESSION)


async def run_brokerpkg_mtrpacket(helper: str, count: int, window: int) -> float:
    os.environ["MTR_PACKET"] = helper
    try:
        async with brokerpkg.MtrPacket() as mtr:
            return await windowed(
                lambda: mtr.probe("127.0.0.1", timeout=TIMEOUT), count, window, DROP_IN)
    finally:
        del os.environ["MTR_PACKET"]


async def run_mtrpacket(count: int, window: int) -> float:
    import mtrpacket

    async with mtrpacket.MtrPacket() as mtr:
        return await windowed(
            lambda: mtr.probe("127.0.0.1", timeout=TIMEOUT), count, window, REFERENCE)


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
    contenders: dict[str, Callable[[], Awaitable[float]]] = {
        SESSION: lambda: run_brokerpkg(helper, count, window),
        DROP_IN: lambda: run_brokerpkg_mtrpacket(helper, count, window),
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
        print(f"  {name:40s} {median:7.3f} s  {count / median:8.0f} probes/s"
              f"  ({lost} of {count * arguments.rounds} probes unanswered)")
    ours = statistics.median(runs[SESSION])
    if REFERENCE in runs:
        theirs = statistics.median(runs[REFERENCE])
        print(f"  Session vs mtrpacket+mtr-packet: {theirs / ours:.2f}x (target >= 4x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
