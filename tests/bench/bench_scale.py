#!/usr/bin/env python3
"""Benchmark 4: scale.  In a lab namespace with a blackholed destination (tests/lab):

1. 100,000 ICMP probes written at once to brokerpkg-helper, all to the blackhole
   (timeout 5 s): every one must come back no-reply, none lost; the helper's peak
   memory (VmHWM) is reported (target: at most 64 MB).  mtr-packet 0.95 is run on the
   same workload beside it: it answers probes-exhausted past 1,024 in flight.
2. Lookup cost against the number in flight: 20,000 probes to 127.0.0.1 timed with
   nothing else in flight, then again with 100,000 probes to the blackhole in flight
   (ratio near 1: the probe table's lookups do not grow with it).
3. brokerpkg.Session holding 100,000 pending probes to the blackhole at once: all end
   no-reply (any other result or exception is counted and shown); the Python process's
   peak memory is reported.

Exits 1 when part 1 or 3 does not end with 100,000 no-reply.

Run as root:  python3 tests/bench/bench_scale.py
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def pipe_burst(
    command: list[str], lines: list[bytes], expect: int
) -> tuple[float, dict[str, int], int]:
    """Write LINES at once; read EXPECT replies; return (seconds, reply counts, VmHWM KiB)."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None

    def write() -> None:
        assert process.stdin is not None
        process.stdin.write(b"".join(lines))
        process.stdin.flush()

    start = time.perf_counter()
    writer = threading.Thread(target=write)
    writer.start()
    counts: dict[str, int] = {}
    peak = 0
    for number, line in enumerate(process.stdout, start=1):
        word = line.split()[1].decode()
        counts[word] = counts.get(word, 0) + 1
        if number % 10000 == 0:
            peak = max(peak, status_kib(process.pid, "VmHWM"))
        if number == expect:
            break
    elapsed = time.perf_counter() - start
    peak = max(peak, status_kib(process.pid, "VmHWM"))
    writer.join()
    process.stdin.close()
    process.wait()
    return elapsed, counts, peak


def probes(count: int, address: str, timeout: float, first: int = 1) -> list[bytes]:
    return [
        f"{t} send-probe ip-4 {address} timeout {timeout:g}\n".encode()
        for t in range(first, first + count)
    ]


def lookup_cost(helper: str, blackhole: str) -> tuple[float, float]:
    """Seconds for 20,000 loopback probes: alone, and with 100,000 others in flight."""
    alone, counts, _ = pipe_burst([helper], probes(20_000, "127.0.0.1", 10), 20_000)
    assert counts == {"reply": 20_000}, counts
    process = subprocess.Popen([helper], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"".join(probes(100_000, blackhole, 60, first=1_000_000)))
    process.stdin.write(b"1 check-support feature version\n")
    process.stdin.flush()
    assert process.stdout.readline().startswith(b"1 feature-support")
    start = time.perf_counter()
    process.stdin.write(b"".join(probes(20_000, "127.0.0.1", 10)))
    process.stdin.flush()
    for _ in range(20_000):
        line = process.stdout.readline()
        assert b" reply " in line, line
    loaded = time.perf_counter() - start
    process.kill()
    process.wait()
    return alone, loaded


async def session_pending(helper: str, blackhole: str, count: int) -> tuple[float, dict[str, int]]:
    import brokerpkg

    start = time.perf_counter()
    async with brokerpkg.Session(helper, max_in_flight=count) as session:
        results = await asyncio.gather(
            *(session.probe(blackhole, timeout=5) for _ in range(count)), return_exceptions=True
        )
    counts: dict[str, int] = {}
    for result in results:  # an exception (ResponseTimeoutError...) is counted by its name
        kind = type(result).__name__ if isinstance(result, BaseException) else result.result
        counts[kind] = counts.get(kind, 0) + 1
    return time.perf_counter() - start, counts


def inside(blackhole: str) -> int:
    """The measurements, run inside the lab's client namespace."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    helper = str(ROOT / "helper" / "brokerpkg-helper")
    seconds, counts, peak = pipe_burst([helper], probes(100_000, blackhole, 5), 100_000)
    failed = counts != {"no-reply": 100_000}
    print(
        f"1. 100,000 probes to a blackhole at once, timeout 5 s: {seconds:.2f} s, "
        f"replies {counts}, helper VmHWM {peak / 1024:.1f} MB (target <= 64 MB)"
    )
    mtr_packet = shutil.which("mtr-packet")
    if mtr_packet:
        seconds, counts, peak = pipe_burst([mtr_packet], probes(100_000, blackhole, 5), 100_000)
        print(
            f"   mtr-packet 0.95, same workload: {seconds:.2f} s, replies {counts}, "
            f"VmHWM {peak / 1024:.1f} MB"
        )
    alone, loaded = lookup_cost(helper, blackhole)
    print(
        f"2. 20,000 loopback probes: {alone:.3f} s alone, {loaded:.3f} s with 100,000 in "
        f"flight (ratio {loaded / alone:.2f}; 1.0 = lookups do not grow)"
    )
    seconds, counts = asyncio.run(session_pending(helper, blackhole, 100_000))
    failed = failed or counts != {"no-reply": 100_000}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"3. Session with 100,000 pending probes: {seconds:.2f} s, results {counts}, "
        f"Python peak RSS {peak / 1024:.0f} MB"
    )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inside", metavar="BLACKHOLE", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.inside:
        return inside(arguments.inside)
    from lab import Chain

    with Chain(1, responder=False, tag="scale") as chain:
        blackhole = chain.add_blackhole(1).address(4)
        process = chain.popen(
            "client", [sys.executable, __file__, "--inside", blackhole], env=chain.python_env()
        )
        return process.wait()


if __name__ == "__main__":
    sys.exit(main())
