#!/usr/bin/env python3
"""Benchmark 6: start-up.

1. The session: time from creating a session to having the first reply (open: start
   the helper, read its features; then one probe to 127.0.0.1), for brokerpkg.Session +
   brokerpkg-helper and, beside it, mtrpacket + mtr-packet 0.95.  Target (issue 5): ours
   at most 20 ms.
2. The command (issue 13): wall time of ``python3 -c pass``, ``brokerpkg --help`` and
   ``brokerpkg trace -n 127.0.0.1``, each run as the console script runs it (same
   interpreter), for main's package (``git archive main`` into a temporary directory,
   "before") and this tree's ("after"), with the ratios to ``python3 -c pass``.
   Targets: --help within 1.5x, trace within 2x.

Medians of ROUNDS runs, interleaved.  Run as root:

    python3 tests/bench/bench_startup.py [--rounds 30] [--base main]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


CONSOLE_SCRIPT = "import sys; from brokerpkg.cli import main; sys.exit(main())"
"""What the ``brokerpkg`` console script runs (pyproject.toml: brokerpkg.cli:main)."""
COMMANDS = {
    "python3 -c pass": None,
    "brokerpkg --help": ["--help"],
    "brokerpkg trace -n 127.0.0.1": ["trace", "-n", "127.0.0.1"],
}
TARGETS = {"brokerpkg --help": 1.5, "brokerpkg trace -n 127.0.0.1": 2.0}
"""Issue 13: at most this many times ``python3 -c pass``."""


def run_once(words: list[str] | None, package_root: str, helper: str) -> float:
    """Wall time of one command (``python3 -c pass`` when ``words`` is None)."""
    argv = [sys.executable, "-c", "pass" if words is None else CONSOLE_SCRIPT, *(words or [])]
    env = dict(os.environ, PYTHONPATH=package_root, BROKERPKG_HELPER=helper)
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=package_root, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _trees(scratch: Path, base: str) -> dict[str, str]:
    """Copies of the package to time: ``base``'s (git archive) and this tree's, each
    twice: compiled (``.pyc`` files, as ``pip install`` leaves them) and as source only
    (``PYTHONDONTWRITEBYTECODE=1``, which this lab machine sets, recompiles every module
    at every start)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", base, "brokerpkg"], capture_output=True, check=True
    )
    trees: dict[str, str] = {}
    for label in (f"before ({base})", "after"):
        for compiled in (True, False):
            root = scratch / f"{label.split()[0]}-{'pyc' if compiled else 'source'}"
            root.mkdir()
            if label == "after":
                shutil.copytree(
                    ROOT / "brokerpkg",
                    root / "brokerpkg",
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
            else:
                subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
            if compiled:
                subprocess.run(
                    [sys.executable, "-m", "compileall", "-q", str(root / "brokerpkg")], check=True
                )
            trees[f"{label}, {'.pyc' if compiled else 'source'}"] = str(root)
    return trees


def command_startup(rounds: int, base: str, helper: str) -> None:
    """Print the medians of the commands, before (``base``) and after (this tree)."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        trees = _trees(Path(scratch), base)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(rounds):
            for tree, root in trees.items():
                for name, words in COMMANDS.items():
                    times.setdefault((tree, name), []).append(run_once(words, root, helper))
    # python3 -c pass does not depend on the tree: its runs of every tree make one median
    bare = statistics.median(
        value
        for (_, name), values in times.items()
        if name == "python3 -c pass"
        for value in values
    )
    print(f"command start-up, {rounds} rounds (medians; ratio to python3 -c pass,", end=" ")
    print(f"{bare * 1000:.1f} ms):")
    for tree in trees:
        for name in COMMANDS:
            if name == "python3 -c pass":
                continue
            median = statistics.median(times[(tree, name)])
            target = TARGETS.get(name)
            ratio = median / bare
            verdict = (
                ""
                if target is None
                else f"  target {target}x: " + ("met" if ratio <= target else "NOT met")
            )
            print(f"  {tree:22s} {name:28s} {median * 1000:7.1f} ms  {ratio:4.2f}x{verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--base", default="main", help="the git revision to compare with")
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (raw sockets)", file=sys.stderr)
        return 2
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    helper = str(ROOT / "helper" / "brokerpkg-helper")
    command_startup(arguments.rounds, arguments.base, helper)
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
