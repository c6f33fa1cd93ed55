#!/usr/bin/env python3
"""Benchmark 5: traceroute over a 28-router lab chain (tests/lab; the target, the
server, is hop 29; routers have no ICMP rate limit).  In one run, ROUNDS rounds,
interleaved, from the lab's client namespace:

a. the library: ``brokerpkg.traceroute(target, probes_per_hop=1)`` (numeric, every TTL
   in flight at once) on an open session; wall time from the call to the result, against
   the farthest hop's round-trip time (hop 29's RTT in the result, and a plain probe to
   the target).  Target (issue 5): wall <= 1.5 x farthest RTT + 10 ms.  Also shown: the
   same call opening its own session (helper start-up included), the same call with the
   policy before issue 9 (``timeout=2.0, retries=0``: every probe waits 2 s and is sent
   once, no -w HERE/NEAR; where the tree has no ``retries`` the column says so), and the
   floor under them: brokerpkg-helper alone through a pipe, 30 probes (TTL 1-30) written
   at once, until hops 1-29 answered (the kernel forwards every probe through the chain
   inside the helper's send call, so this is mostly the lab's own cost).
b. the command: ``python3 -m brokerpkg trace -n -q 1 TARGET`` less the interpreter's own
   start-up (``python3 -c pass``; ``python3 -c "import brokerpkg.cli"`` shown too),
   against ``traceroute -n -q 1 TARGET`` (Debian's traceroute, 16 probes at once) and
   ``mtr -r -c 1 -n TARGET``.  Target: ours no slower than traceroute.  (mtr's time is
   mostly its own waiting: the report ends an interval, -i, and a grace time, -G,
   after its last probe: about 8 s with the defaults.)  Where the
   installed brokerpkg has no ``trace`` subcommand the column says "command not
   available".

c. a cold path (issue 9): per round and per tool a chain of COLD_ROUTERS (default 8: the
   issue's 9-hop path) built just before the trace, IPv6 neighbour discovery as the kernel does it
   (``Chain(kernel_nd=True)``: the routers' addresses are tentative for 1-2 s), no
   warm-up; ``brokerpkg trace -6 -n TARGET`` (defaults: -w 5,3,10, 3 retries), the same
   with ``-w 2 --retries 0`` (the policy before issue 9) and ``traceroute -6 -n TARGET``,
   each on its own fresh lab: wall time, hops found, runs that reached the target.
   Skipped where the tree's lab has no ``kernel_nd``.

Every warm trace must reach the target at hop 29 (else its time means nothing): a run
that does not is reported and counted, and the script exits 1 (cold runs that miss are
part of what is measured, and only counted).  Medians of ROUNDS (COLD_ROUNDS for c).
Run as root:

    python3 tests/bench/bench_trace.py [--rounds 20] [--routers 28] [--cold-rounds 5]
        [--cold-routers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

HOP_LINE = re.compile(r"^\s*(\d+)[.|\-\s]+(\S+)", re.MULTILINE)
"""A hop line of traceroute (`` 29  198.18.29.2  0.3 ms``), mtr -r (`` 29.|-- 198...``)
and brokerpkg trace: hop number, then the first address (or ``*``/``???``)."""
IMPORT = "python3 -c 'import brokerpkg.cli'"


def last_hop(output: str) -> tuple[int, str] | None:
    """The (hop number, first address) of the last hop line in OUTPUT, if any."""
    hops = [(int(number), address) for number, address in HOP_LINE.findall(output)]
    return hops[-1] if hops else None


class Column:
    """Wall times (seconds) of one tool, and the runs that failed to reach the target."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.times: list[float] = []
        self.by_round: dict[int, float] = {}
        self.failures: list[str] = []

    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def show(self, minus: Column | None = None) -> str:
        """The median in ms with min and max, or the median of (ours - MINUS's) per round."""
        median = self.median()
        if median is None:
            return "no valid run"
        if minus is not None:
            difference = per_round([self, minus], lambda ours, theirs: ours - theirs)
            return "no valid run" if difference is None else f"median {difference * 1000:7.2f} ms"
        return (
            f"median {median * 1000:7.2f} ms  (min {min(self.times) * 1000:7.2f}  "
            f"max {max(self.times) * 1000:7.2f})"
        )


def timed_run(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, str, int]:
    """Run ARGV; return (wall seconds, stdout, exit status)."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    return time.perf_counter() - start, done.stdout, done.returncode


def command_round(
    column: Column,
    argv: Sequence[str],
    target: str,
    distance: int,
    env: dict[str, str] | None = None,
    check: Callable[[str], bool] | None = None,
) -> None:
    """Time one run of a trace command; keep the time only if it reached TARGET at
    hop DISTANCE."""
    seconds, output, status = timed_run(argv, env)
    hop = last_hop(output)
    if hop == (distance, target) and (check is None or check(output)):
        column.times.append(seconds)
    else:
        column.failures.append(f"exit {status}, last hop {hop}: {output[-300:]!r}")


def command_available(python: str, env: dict[str, str]) -> bool:
    """True if ``python -m brokerpkg trace`` exists in this tree."""
    done = subprocess.run(
        [python, "-m", "brokerpkg", "trace", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    return done.returncode == 0 and "-q" in done.stdout and "-n" in done.stdout


def helper_round(column: Column, helper: str, target: str, distance: int) -> None:
    """Time brokerpkg-helper alone: every TTL up to distance + 1 written at once, until
    the probes up to DISTANCE are answered (the target answering the last)."""
    process = subprocess.Popen([helper], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    request = b"".join(
        f"{ttl} send-probe ip-4 {target} ttl {ttl} timeout 2\n".encode()
        for ttl in range(1, distance + 2)
    )
    replies: dict[int, list[bytes]] = {}
    start = time.perf_counter()
    process.stdin.write(request)
    process.stdin.flush()
    while not all(ttl in replies for ttl in range(1, distance + 1)):
        words = process.stdout.readline().split()
        if not words:
            break
        replies[int(words[0])] = words
    seconds = time.perf_counter() - start
    process.stdin.close()
    process.kill()
    process.wait()
    last = replies.get(distance, [])
    if last[1:2] == [b"reply"] and last[3:4] == [target.encode()]:
        column.times.append(seconds)
    else:
        column.failures.append(f"hop {distance} answered {b' '.join(last)!r}")


async def library_round(
    helper: str,
    target: str,
    distance: int,
    columns: dict[str, Column],
    rtts: dict[str, list[float]],
) -> None:
    """One round of the library: a plain probe, a trace on an open session, a trace with
    its own session."""
    import brokerpkg

    async with brokerpkg.Session(helper) as session:
        await session.probe(target, timeout=1)  # warm: resolver cache, helper sockets
        plain = await session.probe(target, timeout=1)
        if plain.success and plain.time_ms is not None:
            rtts["probe"].append(plain.time_ms)
        start = time.perf_counter()
        result = await brokerpkg.traceroute(target, probes_per_hop=1, session=session)
        seconds = time.perf_counter() - start
        if (
            result.distance == distance
            and result.hops[-1].address == target
            and result.hops[-1].rtts
        ):
            columns["library"].times.append(seconds)
            rtts["trace"].append(result.hops[-1].rtts[0])
            rtts["ratio"].append(seconds * 1000 / (1.5 * result.hops[-1].rtts[0] + 10))
        else:
            columns["library"].failures.append(
                f"reached {result.reached}, distance {result.distance}"
            )
        if "retries" in inspect.signature(brokerpkg.traceroute).parameters:
            start = time.perf_counter()
            result = await brokerpkg.traceroute(
                target, probes_per_hop=1, session=session, timeout=2.0, retries=0
            )
            seconds = time.perf_counter() - start
            if result.distance == distance and result.hops[-1].address == target:
                columns["library, old policy"].times.append(seconds)
            else:
                columns["library, old policy"].failures.append(f"distance {result.distance}")
    start = time.perf_counter()
    result = await brokerpkg.traceroute(target, probes_per_hop=1, helper=helper)
    seconds = time.perf_counter() - start
    if result.distance == distance and result.hops[-1].address == target:
        columns["library, own session"].times.append(seconds)
    else:
        columns["library, own session"].failures.append(f"distance {result.distance}")


def inside(target: str, distance: int, rounds: int) -> int:
    """The measurements, run inside the lab's client namespace."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    helper = str(ROOT / "helper" / "brokerpkg-helper")
    python = sys.executable
    env = dict(os.environ, BROKERPKG_HELPER=helper)
    env.pop("PYTHONPATH", None)  # brokerpkg from this tree (cwd), nothing else
    available = command_available(python, env)
    names = [
        "library",
        "library, old policy",
        "library, own session",
        "helper alone",
        "python3 -c pass",
        "python3 -c 'import brokerpkg.cli'",
        "brokerpkg trace -n -q 1",
        "traceroute -n -q 1",
        "mtr -r -c 1 -n",
    ]
    columns = {name: Column(name) for name in names}
    rtts: dict[str, list[float]] = {"probe": [], "trace": [], "ratio": []}
    tools: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "python3 -c pass": ([python, "-c", "pass"], None),
        "python3 -c 'import brokerpkg.cli'": ([python, "-c", "import brokerpkg.cli"], None),
        "traceroute -n -q 1": (["traceroute", "-n", "-q", "1", target], None),
        "mtr -r -c 1 -n": (["mtr", "-r", "-c", "1", "-n", target], None),
    }
    if available:
        tools["brokerpkg trace -n -q 1"] = (
            [python, "-m", "brokerpkg", "trace", "-n", "-q", "1", target],
            env,
        )
    for name in ("traceroute", "mtr"):
        if shutil.which(name) is None:
            del tools[f"{name} -n -q 1" if name == "traceroute" else "mtr -r -c 1 -n"]
    for number in range(rounds):
        counts = {name: len(column.times) for name, column in columns.items()}
        asyncio.run(library_round(helper, target, distance, columns, rtts))
        helper_round(columns["helper alone"], helper, target, distance)
        for name, (argv, tool_env) in tools.items():
            if name.startswith("python3 -c"):
                seconds, _output, status = timed_run(argv, tool_env)
                if status == 0:
                    columns[name].times.append(seconds)
                else:
                    columns[name].failures.append(f"exit {status}")
            else:
                command_round(columns[name], argv, target, distance, tool_env)
        for name, column in columns.items():
            if len(column.times) > counts[name]:
                column.by_round[number] = column.times[-1]
    report(columns, rtts, rounds, target, distance, available)
    return 1 if any(column.failures for column in columns.values()) else 0


def per_round(columns: Sequence[Column], combine: Callable[..., float]) -> float | None:
    """The median over the rounds all COLUMNS have of combine(their times...)."""
    rounds = set.intersection(*(set(column.by_round) for column in columns))
    values = [combine(*(column.by_round[number] for column in columns)) for number in rounds]
    return statistics.median(values) if values else None


def report(
    columns: dict[str, Column],
    rtts: dict[str, list[float]],
    rounds: int,
    target: str,
    distance: int,
    available: bool,
) -> None:
    print(
        f"trace to {target} (hop {distance}), 1 probe per hop, numeric; medians of {rounds} rounds"
    )
    library = columns["library"].median()
    rtt = statistics.median(rtts["trace"]) if rtts["trace"] else None
    probe = statistics.median(rtts["probe"]) if rtts["probe"] else None
    print("a. library")
    print(
        f"   farthest hop RTT: {rtt:.3f} ms in the trace, {probe:.3f} ms by a plain probe"
        if rtt is not None and probe is not None
        else "   farthest hop RTT: unknown"
    )
    print(f"   traceroute(), open session     {columns['library'].show()}")
    old = columns["library, old policy"]
    print(
        "   the same, old policy           "
        + (old.show() if old.times or old.failures else "not available (no retries)")
    )
    difference = per_round([columns["library"], old], lambda new, before: new - before)
    if difference is not None:
        print(f"     new less old, per round      median {difference * 1000:7.2f} ms")
    print(f"   traceroute(), own session      {columns['library, own session'].show()}")
    print(f"   helper alone through a pipe    {columns['helper alone'].show()}")
    if library is not None and rtt is not None:
        bound = 1.5 * rtt + 10
        worst = max(rtts["ratio"])
        print(
            f"   target 1.5 x {rtt:.3f} + 10 = {bound:.2f} ms: ratio wall/target "
            f"{library * 1000 / bound:.2f} (median), {worst:.2f} (worst round); "
            f"{'met' if library * 1000 <= bound else 'NOT met'}"
        )
    start = columns["python3 -c pass"]
    print("b. command (wall time of the whole process; 'less' lines and ratios are medians")
    print("   of the per-round values)")
    print(f"   python3 -c pass                  {start.show()}")
    print(f"   python3 -c 'import brokerpkg.cli' {columns[IMPORT].show()}")
    ours = columns["brokerpkg trace -n -q 1"]
    if not available:
        print("   brokerpkg trace -n -q 1          command not available")
    else:
        print(f"   brokerpkg trace -n -q 1          {ours.show()}")
        print(f"     less python3 start-up          {ours.show(minus=start)}")
        print(f"     less start-up and the import   {ours.show(minus=columns[IMPORT])}")
    print(f"   traceroute -n -q 1               {columns['traceroute -n -q 1'].show()}")
    print(f"   mtr -r -c 1 -n                   {columns['mtr -r -c 1 -n'].show()}")
    for reference, target_text in (
        ("traceroute -n -q 1", " (target <= 1.00)"),
        ("mtr -r -c 1 -n", ""),
    ):
        ratio = per_round(
            [ours, start, columns[reference]],
            lambda command, python, other: (command - python) / other,
        )
        if ratio is not None:
            print(
                f"   ratio (brokerpkg trace - python3 start-up) / {reference.split()[0]}: "
                f"{ratio:.2f}{target_text}"
            )
    for column in columns.values():
        for failure in column.failures[:3]:
            print(f"   FAILED {column.name}: {failure}")
        if column.failures:
            print(
                f"   {column.name}: {len(column.failures)} of {rounds} runs did not reach "
                f"hop {distance}; their times are left out"
            )


COLD_TOOLS = {
    "brokerpkg trace -6 -n": ["-m", "brokerpkg", "trace", "-6", "-n"],
    "brokerpkg trace -6 -n -w 2 --retries 0": [
        *("-m", "brokerpkg", "trace", "-6", "-n"),
        *("-w", "2", "--retries", "0"),
    ],
    "traceroute -6 -n": [],
}
"""The cold-path runs: python3 arguments (brokerpkg) or, empty, traceroute itself."""


def cold_path(routers: int, rounds: int) -> None:
    """Part c: each tool on its own freshly built kernel-ND chain, every round."""
    from lab import Chain

    if "kernel_nd" not in inspect.signature(Chain).parameters:
        print("c. cold path: not available (this tree's lab has no kernel_nd)")
        return
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    env = dict(os.environ, BROKERPKG_HELPER=str(ROOT / "helper" / "brokerpkg-helper"))
    env.pop("PYTHONPATH", None)  # brokerpkg from this tree (cwd), nothing else
    results: dict[str, list[tuple[float, int, bool]]] = {name: [] for name in COLD_TOOLS}
    for _ in range(rounds):
        for name, arguments in COLD_TOOLS.items():
            with Chain(routers, responder=False, kernel_nd=True, tag="cold") as chain:
                target = chain.server_address(6)  # timed from the build's end: no warm-up
                argv = (
                    [sys.executable, *arguments, target]
                    if arguments
                    else ["traceroute", "-6", "-n", target]
                )
                seconds, output, _status = timed_run(chain.exec_argv("client", argv), env)
                found = sum(1 for _number, address in HOP_LINE.findall(output) if address != "*")
                results[name].append((seconds, found, last_hop(output) == (routers + 1, target)))
    print(
        f"c. cold path: {routers + 1}-hop IPv6 chain built just before each run (kernel "
        f"neighbour discovery, no warm-up), {rounds} rounds, each run on its own fresh lab"
    )
    for name, runs in results.items():
        times = [seconds for seconds, _found, _reached in runs]
        hops = statistics.median(found for _seconds, found, _reached in runs)
        reached = sum(1 for *_rest, reached in runs if reached)
        print(
            f"   {name:40s} median {statistics.median(times):6.2f} s  (min {min(times):.2f}  "
            f"max {max(times):.2f}); hops found {hops:g} of {routers + 1} (median); "
            f"reached the target {reached} of {len(runs)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--routers", type=int, default=28)
    parser.add_argument("--cold-rounds", type=int, default=5)
    parser.add_argument("--cold-routers", type=int, default=8)  # the 9-hop path
    parser.add_argument("--inside", metavar="TARGET", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    distance = arguments.routers + 1
    if arguments.inside:
        return inside(arguments.inside, distance, arguments.rounds)
    if os.geteuid() != 0:
        print("run as root (network namespaces)", file=sys.stderr)
        return 2
    from lab import Chain

    with Chain(arguments.routers, responder=False, tag="trace") as chain:
        target = chain.server_address(4)
        for router in range(1, arguments.routers + 1):  # no ICMP rate limit on the path
            assert chain.get_sysctl(f"r{router}", "net.ipv4.icmp_ratelimit") == "0"
        path = chain.trace(4)
        assert len(path) == distance and path[-1] == target, path
        process = chain.popen(
            "client",
            [
                sys.executable,
                __file__,
                "--inside",
                target,
                "--rounds",
                str(arguments.rounds),
                "--routers",
                str(arguments.routers),
            ],
            env=chain.python_env(),
        )
        status = process.wait()
    if arguments.cold_rounds > 0:
        cold_path(arguments.cold_routers, arguments.cold_rounds)
    return status


if __name__ == "__main__":
    sys.exit(main())
