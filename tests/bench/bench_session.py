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

``--before DIR`` (issue 13) compares two trees instead, in one run: DIR holds an older
brokerpkg (e.g. ``git archive main | tar -x -C /tmp/engine-before``), this tree the
newer; each round runs Session.probe from WINDOW workers and Session.probe_many with
each tree (in a child process each, the same helper binary) and the helper's own rate
through a plain pipe with the same window (bench_helper_pipe.run_windowed), and prints
every rate as a ratio of the pipe's.  Targets: Session.probe >= 0.9x the pipe,
probe_many >= 0.95x, neither slower than before.  Beside them, the asyncio floor
(run_asyncio_floor: one future per probe awaited by WINDOW tasks, no helper, no engine):
the pipe's share that Session.probe could reach with nothing of its own.
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
TREE_VARIABLE = "BENCH_SESSION_TREE"
"""A child run imports brokerpkg from this tree (default: this one)."""
sys.path.insert(0, os.environ.get(TREE_VARIABLE, str(ROOT)))

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


async def run_asyncio_floor(count: int, window: int) -> float:
    """Seconds asyncio alone takes for what Session.probe from WINDOW workers needs at
    least per probe: one future, awaited by its task and resolved from a callback (all
    those of a turn at once), without a helper, an engine or bytes."""
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = []
    remaining = count

    def resolve() -> None:
        for future in waiting:
            future.set_result(None)
        waiting.clear()

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            future = loop.create_future()
            if not waiting:
                loop.call_soon(resolve)
            waiting.append(future)
            await future

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    return time.perf_counter() - start


CHILD_RUNS = {"session": run_brokerpkg, "batch": run_batch}


def run_child(tree: Path, kind: str, helper: str, count: int, window: int) -> tuple[float, float]:
    """Seconds one contender took in a child process importing brokerpkg from ``tree``,
    and the CPU seconds that child spent meanwhile (less sensitive to other load)."""
    environment = {**os.environ, TREE_VARIABLE: str(tree)}
    command = [sys.executable, __file__, "--child", kind, "--helper", helper]
    done = subprocess.run(
        [*command, "--count", str(count), "--window", str(window)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    wall, cpu = done.stdout.split()[-2:]
    return float(wall), float(cpu)


def compare_trees(before: Path, helper: str, count: int, window: int, rounds: int) -> None:
    """Print the before/after comparison of --before (see the module documentation)."""
    sys.path.insert(0, str(ROOT / "tests" / "bench"))
    from bench_helper_pipe import run_all_at_once, run_windowed

    trees = {"before": before, "after": ROOT}
    runs: dict[str, list[float]] = {"pipe": [], "pipe, all at once": [], "asyncio floor": []}
    cpu: dict[str, list[float]] = {}
    for _ in range(rounds):
        runs["pipe"].append(run_windowed([helper], count, window))
        runs["pipe, all at once"].append(run_all_at_once([helper], count))
        runs["asyncio floor"].append(asyncio.run(run_asyncio_floor(count, window)))
        for label, tree in trees.items():
            for kind in CHILD_RUNS:
                took, spent = run_child(tree, kind, helper, count, window)
                runs.setdefault(f"{kind} {label}", []).append(took)
                cpu.setdefault(f"{kind} {label}", []).append(spent)
    pipe = statistics.median(runs["pipe"])
    at_once = statistics.median(runs["pipe, all at once"])
    print(f"{count} probes to 127.0.0.1, {window} in flight, {rounds} rounds (median):")
    print(f"  {'helper pipe, same window':32s} {pipe:7.3f} s  {count / pipe:8.0f} probes/s")
    print(f"  {'helper pipe, all at once':32s} {at_once:7.3f} s  {count / at_once:8.0f} probes/s")
    for name, seconds in runs.items():
        if not name.startswith("pipe"):
            median = statistics.median(seconds)
            print(
                f"  {name:32s} {median:7.3f} s  {count / median:8.0f} probes/s"
                f"  {pipe / median:.3f}x the pipe's rate ({at_once / median:.3f}x all at once)"
                f"  (min {min(seconds):.3f} s, max {max(seconds):.3f} s)"
            )
    for kind, target in (("session", 0.9), ("batch", 0.95)):
        old, new = (statistics.median(runs[f"{kind} {label}"]) for label in trees)
        paired = statistics.median(
            b / a for a, b in zip(runs[f"{kind} after"], runs[f"{kind} before"], strict=True)
        )
        old_cpu, new_cpu = (statistics.median(cpu[f"{kind} {label}"]) for label in trees)
        print(
            f"  {kind}: after vs before {old / new:.3f}x (paired by round {paired:.3f}x;"
            f" CPU {old_cpu:.3f} s -> {new_cpu:.3f} s, {old_cpu / new_cpu:.3f}x)\n"
            f"    after {pipe / new:.3f}x the pipe"
            f" ({at_once / new:.3f}x all at once; target >= {target}), before {pipe / old:.3f}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", type=Path, help="an older tree to compare with")
    parser.add_argument("--child", choices=sorted(CHILD_RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    count, window = arguments.count, arguments.window
    if arguments.child:
        started = time.process_time()
        wall = asyncio.run(CHILD_RUNS[arguments.child](arguments.helper, count, window))
        print(wall, time.process_time() - started)
        return 0
    if os.geteuid() != 0:
        print("run as root (raw sockets)", file=sys.stderr)
        return 2
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    helper = str(ROOT / "helper" / "brokerpkg-helper")
    if arguments.before is not None:
        compare_trees(arguments.before, helper, count, window, arguments.rounds)
        return 0
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
