#!/usr/bin/env python3
"""Benchmark 6: start-up.  Time from creating a session to having the first reply
(open: start the helper, read its features; then one probe to 127.0.0.1), for
brokerpkg.Session + brokerpkg-helper and, beside it, mtrpacket + mtr-packet 0.95.
Medians of ROUNDS runs, interleaved.  Run as root:

    python3 tests/bench/bench_startup.py [--rounds 30]

Target (issue 5): ours at most 20 ms.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

import brokerpkg  # noqa: E402


async def ours(helper: str) -> float:
    start = time.perf_counter()
    async with brokerpkg.Session(helper) as session:
        result = await session.probe("127.0.0.1")
        elapsed = time.perf_counter() - start
    assert result.success, result
    return elapsed


async def reference() -> float:
    import mtrpacket

    start = time.perf_counter()
    async with mtrpacket.MtrPacket() as mtr:
        result = await mtr.probe("127.0.0.1")
        elapsed = time.perf_counter() - start
    assert result.success, result
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (raw sockets)", file=sys.stderr)
        return 2
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    helper = str(ROOT / "helper" / "brokerpkg-helper")
    times: dict[str, list[float]] = {"brokerpkg": [], "mtrpacket + mtr-packet": []}
    for _ in range(arguments.rounds):
        times["brokerpkg"].append(asyncio.run(ours(helper)))
        if shutil.which("mtr-packet"):
            times["mtrpacket + mtr-packet"].append(asyncio.run(reference()))
    print(f"open + first reply from 127.0.0.1, {arguments.rounds} rounds:")
    for name, values in times.items():
        if values:
            values.sort()
            p90 = values[int(len(values) * 0.9) - 1]
            print(
                f"  {name:24s} median {statistics.median(values) * 1000:6.2f} ms"
                f"  p90 {p90 * 1000:6.2f} ms"
            )
    print("  target: ours at most 20 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
