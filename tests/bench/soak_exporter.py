#!/usr/bin/env python3
"""Soak: ``brokerpkg exporter`` with 1,000 targets for 10 minutes (issue 12).

In a lab namespace (only ``lo``: the targets are 1,000 loopback addresses
127.0.1.1-127.0.4.250, answered by the kernel), the exporter pings every target once a
second from a smokeping_prober configuration file, and this script scrapes /metrics
every 5 s (from inside the namespace, 5 s timeout).  Printed every minute, then a
summary: the resident memory of the exporter and of its helper, the number of series
on the page, requests and answers so far, scrapes lost (an error or no answer within
the timeout) and the slowest scrape.  Targets: memory flat (the last minute within 5%
of the second), the same number of series throughout, no lost scrape.

Run as root:  python3 tests/bench/soak_exporter.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import exporterlab as xl  # noqa: E402

SCRAPE_EVERY = 5.0
SCRAPE_TIMEOUT = 5.0


def targets(count: int) -> list[str]:
    """``count`` loopback addresses, 250 per /24 from 127.0.1.0."""
    return [f"127.0.{1 + index // 250}.{1 + index % 250}" for index in range(count)]


def scrape(lab: object, port: int) -> tuple[bool, float, dict[tuple[str, Any], float]]:
    """(ok, seconds, samples) of one scrape from inside the namespace."""
    began = time.monotonic()
    try:
        done = lab.run(  # type: ignore[attr-defined]
            "probe",
            [
                sys.executable,
                "-c",
                "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
                f"'http://127.0.0.1:{port}/metrics', timeout={SCRAPE_TIMEOUT}).read().decode())",
            ],
            check=False,
            timeout=SCRAPE_TIMEOUT + 10,
        )
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - began, {}
    took = time.monotonic() - began
    if done.returncode != 0:
        return False, took, {}
    return True, took, xl.samples(done.stdout)


def total(page: dict[tuple[str, Any], float], name: str) -> float:
    return sum(number for (sample, _), number in page.items() if sample == name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--targets", type=int, default=1000)
    arguments = parser.parse_args()
    from lab import Lab

    subprocess.run(["make", "-s", "-C", str(ROOT / "helper")], check=True)
    lab = Lab("soak")
    lab.add_node("probe")
    with tempfile.TemporaryDirectory(prefix="bpk-soak-") as scratch, lab:
        config = Path(scratch) / "smokeping.yml"
        hosts = "".join(f"  - {host}\n" for host in targets(arguments.targets))
        config.write_text(f"targets:\n- hosts:\n{hosts}  interval: 1s\n")
        with socket.socket() as probe_port:
            probe_port.bind(("127.0.0.1", 0))
            port = probe_port.getsockname()[1]  # any free number: the namespace is empty
        exporter = xl.start(
            lab,
            "probe",
            xl.exporter_argv(["--listen", f"127.0.0.1:{port}", "--config", str(config)]),
            xl.exporter_env(),
            Path(scratch) / "exporter.log",
        )
        xl.wait_http(lab, "probe", f"http://127.0.0.1:{port}/-/healthy")
        pid = int(lab.run("probe", ["pgrep", "-f", "-n", f"127.0.0.1:{port}"]).stdout.split()[0])
        helper = xl.children(pid)[0]
        began = time.monotonic()
        end = began + arguments.minutes * 60
        lost, slowest, scrapes = 0, 0.0, 0
        series_counts: set[int] = set()
        minute_rss: list[tuple[int, int, int]] = []
        next_report = began + 60
        print(
            f"{arguments.targets} targets at 1/s for {arguments.minutes:g} min; "
            f"scraping every {SCRAPE_EVERY:g} s"
        )
        page: dict[tuple[str, Any], float] = {}
        while time.monotonic() < end:
            ok, took, current = scrape(lab, port)
            scrapes += 1
            slowest = max(slowest, took)
            if ok:
                page = current
                series_counts.add(len(page))
            else:
                lost += 1
            if time.monotonic() >= next_report:
                minute = round((time.monotonic() - began) / 60)
                rss = (xl.rss_kib(pid), xl.rss_kib(helper))
                minute_rss.append((minute, *rss))
                print(
                    f"  minute {minute:3d}: exporter RSS {rss[0] / 1024:6.1f} MiB, helper "
                    f"{rss[1] / 1024:5.1f} MiB, {len(page)} samples, requests "
                    f"{total(page, 'smokeping_requests_total'):.0f}, answers "
                    f"{total(page, 'smokeping_response_duration_seconds_count'):.0f}, "
                    f"lost scrapes {lost}, slowest scrape {slowest:.3f} s",
                    flush=True,
                )
                next_report += 60
            time.sleep(max(0.0, SCRAPE_EVERY - took))
        cpu = xl.process_tree_cpu(pid)
        exporter.terminate()
        exporter.wait(10)
    elapsed = time.monotonic() - began
    second = minute_rss[1] if len(minute_rss) > 1 else minute_rss[0]
    last = minute_rss[-1]
    growth = (last[1] - second[1]) / second[1]
    print(
        f"summary: {scrapes} scrapes, {lost} lost, slowest {slowest:.3f} s; series counts "
        f"seen {sorted(series_counts)}; exporter RSS minute {second[0]} {second[1] / 1024:.1f} "
        f"MiB -> minute {last[0]} {last[1] / 1024:.1f} MiB ({growth * 100:+.1f}%), helper "
        f"{second[2] / 1024:.1f} -> {last[2] / 1024:.1f} MiB; CPU {cpu:.1f} s over "
        f"{elapsed:.0f} s ({cpu / elapsed * 100:.1f}% of a core)"
    )
    met = lost == 0 and len(series_counts) == 1 and abs(growth) <= 0.05
    print("targets met" if met else "targets NOT met")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
