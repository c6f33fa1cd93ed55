#!/usr/bin/env python3
"""Benchmark: one icmplib program with the real icmplib and with ``brokerpkg.icmplib``.

In one run, ROUNDS rounds, interleaved, each measure a fresh ``python3`` in the client
namespace of a lab chain of ROUTERS routers (the server is hop ROUTERS + 1), both as
root (the real icmplib needs it; ours runs this tree's helper):

a. start-up: ``from MODULE import ping; ping("127.0.0.1", count=1)``, the whole process,
   beside ``python3 -c pass``;
b. ``traceroute(server, count=2)`` (icmplib's defaults otherwise), timed in the process:
   the first call (ours imports brokerpkg.sync and what it needs then) and a second one;
c. ``multiping`` of 100 loopback addresses (127.0.0.1-100), ``count=2, interval=0.1``;
d. ``ping`` of a blackholed address, ``count=3, interval=0.2, timeout=0.5``.

Medians; ratios are ours / the real icmplib's (below 1: ours is faster).  Every run must
get the expected answer (hops to the server, 100 live hosts, a dead one), else the script
exits 1.  Run as root:

    python3 tests/bench/bench_icmplib.py [--rounds 7] [--routers 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lab.topology import Chain  # noqa: E402

MODULES = {"icmplib": "icmplib", "brokerpkg.icmplib": "brokerpkg.icmplib"}

START = "from {module} import ping\nassert ping('127.0.0.1', count=1).is_alive\n"
TRACE = (
    "import sys, time\n"
    "from {module} import traceroute\n"
    "times = []\n"
    "for _ in range(2):\n"
    "    start = time.perf_counter()\n"
    "    hops = traceroute(sys.argv[1], count=2)\n"
    "    times.append(time.perf_counter() - start)\n"
    "print(*times, hops[-1].distance, hops[-1].address)\n"
)
MULTIPING = (
    "import time\n"
    "from {module} import multiping\n"
    "addresses = ['127.0.0.%d' % i for i in range(1, 101)]\n"
    "start = time.perf_counter()\n"
    "hosts = multiping(addresses, count=2, interval=0.1)\n"
    "print(time.perf_counter() - start, sum(host.is_alive for host in hosts))\n"
)
SILENT = (
    "import sys, time\n"
    "from {module} import ping\n"
    "start = time.perf_counter()\n"
    "host = ping(sys.argv[1], count=3, interval=0.2, timeout=0.5)\n"
    "print(time.perf_counter() - start, host.packets_sent, host.packets_received)\n"
)


def run(chain: Chain, code: str, *args: str) -> tuple[float, str]:
    """Run ``python3 -c code args`` in the client; return (process wall time, stdout)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "BROKERPKG_HELPER": str(ROOT / "helper" / "brokerpkg-helper"),
    }
    start = time.perf_counter()
    done = chain.run("client", [sys.executable, "-c", code, *args], env=env, timeout=120)
    return time.perf_counter() - start, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--routers", type=int, default=8)
    arguments = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (network namespaces, and the real icmplib's raw sockets)")
        return 2
    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    times: dict[str, list[float]] = {}
    failures: list[str] = []

    def record(name: str, value: float) -> None:
        times.setdefault(name, []).append(value)

    with Chain(arguments.routers, responder=False, tag="icmplibbench") as chain:
        server = chain.server_address(4)
        distance = arguments.routers + 1
        silent = chain.add_blackhole(1).address(4)
        for _ in range(arguments.rounds):
            record("python3 -c pass", run(chain, "pass")[0])
            for label, module in MODULES.items():
                record(f"a {label}", run(chain, START.format(module=module))[0])
                out = run(chain, TRACE.format(module=module), server)[1].split()
                record(f"b {label}", float(out[0]))
                record(f"b2 {label}", float(out[1]))
                if out[2:] != [str(distance), server]:
                    failures.append(f"{label} traceroute: {out}")
                out = run(chain, MULTIPING.format(module=module))[1].split()
                record(f"c {label}", float(out[0]))
                if out[1] != "100":
                    failures.append(f"{label} multiping: {out}")
                out = run(chain, SILENT.format(module=module), silent)[1].split()
                record(f"d {label}", float(out[0]))
                if out[1:] != ["3", "0"]:
                    failures.append(f"{label} silent ping: {out}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{arguments.rounds} rounds, chain of {arguments.routers} routers; medians")
    print(f"python3 -c pass: {medians['python3 -c pass'] * 1000:.1f} ms")
    for measure, what in (
        ("a", "start-up + ping 127.0.0.1 (process)"),
        ("b", f"traceroute to hop {arguments.routers + 1}, count=2, first call"),
        ("b2", "the same traceroute, second call in the process"),
        ("c", "multiping 100 loopback addresses, count=2, interval=0.1"),
        ("d", "ping a blackhole, count=3, interval=0.2, timeout=0.5"),
    ):
        ours, theirs = medians[f"{measure} brokerpkg.icmplib"], medians[f"{measure} icmplib"]
        print(
            f"{measure}. {what}: brokerpkg.icmplib {ours * 1000:.1f} ms, "
            f"icmplib {theirs * 1000:.1f} ms, ratio {ours / theirs:.3f}"
        )
    for failure in failures:
        print("FAILED:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
