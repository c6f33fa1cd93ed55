"""The ``brokerpkg`` command, run as a user runs it: ``python3 -m brokerpkg ...``.

Layouts are parsed back and checked against what the test knows: the loopback, the
lab's chain (hop addresses, a silent hop, MPLS labels quoted by a virtual hop, a
blackholed destination, a silenced router) and, side by side, the real ``mtr`` (report
columns, JSON keys and value types, CSV header) on the same target.  The live view is
driven in a real terminal (tmux), progress output in a pseudo-terminal (script).
Probes go only to 127.0.0.1, ::1 and lab addresses (198.18.0.0/15, 2001:db8::/32).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import UnprivilegedCopy
from lab import Chain, virtual_hop, virtual_target

from brokerpkg import cli_format as fmt
from brokerpkg import cli_output
from brokerpkg.cli import _wants_json, build_parser, parse_arguments, split_target
from brokerpkg.locate import capability_fix
from brokerpkg.mtr import HopStats, MonitorReport, ResponderStats
from brokerpkg.protocol import Mpls, ProbeResult
from brokerpkg.trace import make_hop
from brokerpkg.waiting import Wait

REPO = Path(__file__).resolve().parent.parent
MTR = "/usr/bin/mtr"
FAMILIES = pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
PROTOCOLS = pytest.mark.parametrize("protocol", ["icmp", "udp", "tcp"])
PROTOCOL_FLAGS = {"icmp": [], "udp": ["-u"], "tcp": ["-T"], "sctp": ["-S"]}
LABELS = [[16, 0, 1, 1]]
# Columns of ``mtr -r`` after the host: where each title and each value ends.
REPORT_ROW = re.compile(
    r"^ *(\d+)\.\|-- (\S+) +(\d+\.\d)%? +(\d+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)"
    r" +([\d.]+)$"
)


# ------------------------------------------------------------------------- running it


def run_cli(
    args: Sequence[str],
    helper: str,
    *,
    chain: Chain | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python3 -m brokerpkg ARGS`` from the worktree root (in the chain's client
    namespace if given), with BROKERPKG_HELPER set to ``helper``."""
    argv = [sys.executable, "-m", "brokerpkg", *args]
    if chain is not None:
        argv = chain.exec_argv("client", argv)
    environment = dict(os.environ, BROKERPKG_HELPER=helper)
    environment.pop("COLUMNS", None)
    environment.update(env or {})
    return subprocess.run(
        argv,
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


def trace_hops(text: str) -> list[tuple[int, list[str], int, list[str]]]:
    """traceroute lines -> (hop, addresses in order, stars, extension texts)."""
    lines = text.splitlines()
    assert lines[0].startswith("traceroute to ")
    hops = []
    for line in lines[1:]:
        match = re.match(r"^ ?(\d+) (.*)$", line)
        assert match, line
        addresses: list[str] = []
        stars = 0
        extensions: list[str] = []
        for token in match.group(2).split():
            word = token.strip("()")
            if token == "*":
                stars += 1
            elif token.startswith("<"):
                extensions.append(token)
            elif _is_address(word) and word not in addresses:
                addresses.append(word)
        hops.append((int(match.group(1)), addresses, stars, extensions))
    return hops


def _is_address(word: str) -> bool:
    try:
        ipaddress.ip_address(word)
    except ValueError:
        return False
    return True


def report_rows(text: str) -> list[tuple[int, str, float, int]]:
    """``mtr -r`` rows -> (hop, host, loss %, sent)."""
    rows = []
    for line in text.splitlines():
        match = REPORT_ROW.match(line)
        if match:
            rows.append(
                (int(match.group(1)), match.group(2), float(match.group(3)), int(match.group(4)))
            )
    return rows


def value_ends(line: str, start: int) -> list[int]:
    """Where each word of ``line`` from ``start`` ends (mtr's fixed columns)."""
    return [start + match.end() for match in re.finditer(r"\S+", line[start:])]


def shape(value: Any) -> Any:
    """Keys (in order) and value types of a JSON document."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def lab_truth(chain: Chain, family: int, target: str) -> list[str | None]:
    """The scripted path: 3 routers, an MPLS hop, a silent hop, a hop, the target."""
    return [*chain.path(family)[:3], virtual_hop(1, family), None, virtual_hop(3, family), target]


def script_path(responder: Any, chain: Chain, number: int, family: int) -> str:
    target = virtual_target(number, family)
    responder.set(target, hops=[{"mpls": LABELS}, {"silent": True}, {}])
    return target


# ------------------------------------------------------------------------- no packets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.18.4.2", ("198.18.4.2", None)),
        ("198.18.4.2:443", ("198.18.4.2", 443)),
        ("host.example:80", ("host.example", 80)),
        ("2001:db8::1", ("2001:db8::1", None)),
        ("[2001:db8::1]:33434", ("2001:db8::1", 33434)),
        ("[::1]", ("::1", None)),
    ],
)
def test_targets_split_into_host_and_port(text: str, expected: tuple[str, int | None]) -> None:
    assert split_target(text) == expected


@pytest.mark.parametrize(
    "text", ["host:0", "host:65536", "host:x", "[::1", "[::1]80", ":80", "[::1]:"]
)
def test_bad_targets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="target"):
        split_target(text)


def test_json_is_recognised_among_unparsed_words() -> None:
    assert _wants_json(["trace", "-j", "--bogus"])
    assert _wants_json(["mtr", "-rnj"]) and _wants_json(["ping", "--json"])
    assert not _wants_json(["trace", "-n", "host-j"]) and not _wants_json(["-Z", "1"])


def hop_stats(
    ttl: int,
    address: str | None,
    rtts: Sequence[float],
    sent: int,
    others: Sequence[str] = (),
    mpls: tuple[Mpls, ...] = (),
) -> HopStats:
    """A report row as the monitor builds it, from round trips in arrival order."""
    from brokerpkg.stats import RunningStats

    running = RunningStats()
    for rtt in rtts:
        running.add(rtt)
    responders = tuple(
        ResponderStats(a, 1, mpls if a == address else ())
        for a in ([address] if address else []) + list(others)
    )
    return HopStats(
        ttl,
        sent,
        len(rtts),
        0,
        running.last,
        running.mean,
        running.best,
        running.worst,
        running.stdev,
        running.jitter,
        running.javg,
        running.jmax,
        running.interarrival_jitter,
        address,
        responders,
        destination=False,
    )


def test_the_report_has_mtrs_fixed_columns() -> None:
    stack = (Mpls(16, 0, True, 1),)
    hops = (
        hop_stats(1, "198.18.1.2", [0.1, 0.3, 0.2], 3),
        hop_stats(2, None, [], 3),
        hop_stats(3, "198.18.201.1", [50.0, 52.0], 3, others=["198.18.202.1"], mpls=stack),
    )
    report = MonitorReport("target", "198.18.200.9", 3, True, hops)
    started = datetime(2026, 11, 27, 16, 8, 58, tzinfo=UTC)
    lines = fmt.mtr_report_lines(report, local_host="vm", started=started, show_mpls=True)
    assert lines == [
        "Start: 2026-11-27T16:08:58+0000",
        "HOST: vm                          Loss%   Snt   Last   Avg  Best  Wrst StDev",
        "  1.|-- 198.18.1.2                 0.0%     3    0.2   0.2   0.1   0.3   0.1",
        "  2.|-- ???                       100.0     3    0.0   0.0   0.0   0.0   0.0",
        "  3.|-- 198.18.201.1              33.3%     3   52.0  51.0  50.0  52.0   1.4",
        "    |  |+-- [MPLS: Lbl 16 Exp 0 S 1 TTL 1]",
        "    |  `|-- 198.18.202.1",
    ]
    wide = fmt.mtr_report_lines(report, local_host="vm", started=started, wide=True)
    assert wide[1] == "HOST: vm           Loss%   Snt   Last   Avg  Best  Wrst StDev"
    assert wide[2] == "  1.|-- 198.18.1.2    0.0%     3    0.2   0.2   0.1   0.3   0.1"
    # A name longer than the column is cut by the first value, as in mtr.
    long_hop = hop_stats(1, "2001:db8:ffff:ffff:ffff::1234", [1.0], 1)
    cut = fmt.mtr_report_lines(
        MonitorReport("t", "::1", 1, True, (long_hop,)), local_host="vm", started=started
    )
    assert cut[2] == "  1.|-- 2001:db8:ffff:ffff:ffff::  0.0%     1    1.0   1.0   1.0   1.0   0.0"


def test_mtr_json_and_csv_values() -> None:
    hops = (hop_stats(1, "198.18.1.2", [0.0654, 0.0598], 2), hop_stats(2, None, [], 2))
    report = MonitorReport("t", "198.18.1.2", 2, True, hops)
    document = fmt.mtr_json(
        report, local_host="vm", target="t", tos=16, tests=2, packet_size=100, bit_pattern=255
    )
    assert document["report"]["mtr"] == {
        "src": "vm",
        "dst": "t",
        "tos": 16,
        "tests": 2,
        "psize": "100",
        "bitpattern": "0xFF",
    }
    assert document["report"]["hubs"] == [
        {
            "count": 1,
            "host": "198.18.1.2",
            "Loss%": 0.0,
            "Snt": 2,
            "Last": 0.06,
            "Avg": 0.063,
            "Best": 0.06,
            "Wrst": 0.065,
            "StDev": 0.004,
        },
        {
            "count": 2,
            "host": "???",
            "Loss%": 100.0,
            "Snt": 2,
            "Last": 0.0,
            "Avg": 0.0,
            "Best": 0.0,
            "Wrst": 0.0,
            "StDev": 0.0,
        },
    ]
    csv = fmt.mtr_csv_lines(report, target="t", started=1795795768)
    assert csv[1] == (
        "MTR.brokerpkg-0.1.0,1795795768,OK,t,1,198.18.1.2,0.00,2,0,0.06,0.06,0.06,0.07,0.00"
    )
    assert csv[2].split(",")[5:9] == ["???", "100.00", "2", "2"]


def probe(
    word: str,
    responder: str | None,
    time_ms: float | None,
    *,
    mpls: Sequence[Mpls] = (),
    code: int | None = None,
) -> ProbeResult:
    return ProbeResult(
        word == "reply",
        word,
        time_ms,
        responder,
        list(mpls),
        target="198.18.200.9",
        ttl=4,
        protocol="icmp",
        icmp_code=code,
    )


def test_traceroute_lines_group_responders_like_traceroute() -> None:
    stack = [Mpls(16, 0, True, 1), Mpls(17, 5, False, 255)]
    hop = make_hop(
        4,
        [
            probe("no-reply", None, None),
            probe("ttl-expired", "198.18.201.1", 0.4871, mpls=stack),
            probe("ttl-expired", "198.18.201.1", 0.5),
            probe("ttl-expired", "198.18.202.1", 0.38),
            probe("no-reply", None, None),
        ],
        {"198.18.201.1": "r1.lab"},
    )
    assert fmt.traceroute_hop_line(hop, numeric=True, show_mpls=False) == (
        " 4  * 198.18.201.1  0.487 ms  0.500 ms 198.18.202.1  0.380 ms *"
    )
    assert fmt.traceroute_hop_line(hop, numeric=False, show_mpls=True) == (
        " 4  * r1.lab (198.18.201.1) <MPLS:L=16,E=0,S=1,T=1/L=17,E=5,S=0,T=255>  0.487 ms"
        " r1.lab (198.18.201.1)  0.500 ms 198.18.202.1 (198.18.202.1)  0.380 ms *"
    )
    silent = make_hop(12, [probe("no-reply", None, None)] * 3)
    assert fmt.traceroute_hop_line(silent, numeric=True, show_mpls=True) == "12  * * *"
    unreachable = make_hop(
        5, [probe("no-route", "198.18.2.2", 1.0, code=13), probe("no-route", "198.18.2.2", 1.0)]
    )
    assert fmt.traceroute_hop_line(unreachable, numeric=True, show_mpls=False) == (
        " 5  198.18.2.2  1.000 ms !X  1.000 ms !H"
    )


def test_ping_and_fping_lines_and_statistics() -> None:
    replies = [probe("reply", "127.0.0.1", rtt) for rtt in (0.1, 0.3, 12.5)]
    lost = probe("no-reply", None, None)
    exceeded = probe("ttl-expired", "198.18.1.2", 0.2)
    results = [*replies, lost, exceeded]
    # 6 sent, 3 replies, one answer from a router: 50% loss; mdev over 0.1, 0.3, 12.5.
    assert fmt.ping_summary("host", 6, results, 5003.4) == [
        "--- host ping statistics ---",
        "6 packets transmitted, 3 received, +1 errors, 50% packet loss, time 5003ms",
        "rtt min/avg/max/mdev = 0.100/4.300/12.500/5.799 ms",
    ]
    assert fmt.ping_summary("host", 1, [lost], 1.0)[1:] == [
        "1 packets transmitted, 0 received, 100% packet loss, time 1ms"
    ]
    with_details = replies[2]._replace(reply_ttl=61, reply_size=84)
    assert fmt.ping_reply_line(with_details, 3) == (
        "64 bytes from 127.0.0.1: icmp_seq=3 ttl=61 time=12.5 ms"
    )
    assert fmt.ping_reply_line(exceeded, 5) == "From 198.18.1.2 icmp_seq=5 Time to live exceeded"
    assert fmt.ping_reply_line(lost, 4) is None
    assert [fmt.ms_text(v) for v in (0.0456, 1.234, 12.34, 123.4)] == [
        "0.046",
        "1.23",
        "12.3",
        "123",
    ]
    first = replies[0]._replace(time_ms=0.1)
    assert fmt.fping_reply_line("h", 3, 1, with_details, {0: first, 1: with_details}) == (
        "h   : [1], 64 bytes, 12.5 ms (6.30 avg, 0% loss)"
    )
    from brokerpkg import PingResult

    summary = fmt.fping_summary_line(PingResult("h", "127.0.0.1", (*replies, lost)), 3)
    assert summary == "h   : xmt/rcv/%loss = 4/3/25%, min/avg/max = 0.100/4.30/12.5"
    dead = fmt.fping_summary_line(PingResult("dead", "198.19.1.1", (lost, lost)), 4)
    assert dead == "dead : xmt/rcv/%loss = 2/0/100%"


def test_ping_lines_write_addresses_as_iputils() -> None:
    assert fmt.ping_header("::1", "::1", "icmp", 56, None) == "PING ::1(::1) 56 data bytes"
    assert fmt.ping_header("v6host", "::1", "icmp", 56, None, shown="v6host (::1)") == (
        "PING v6host(v6host (::1)) 56 data bytes"
    )
    assert fmt.ping_header("::1", "::1", "udp", 100, None) == "PING ::1(::1) udp, 100 data bytes"
    assert fmt.ping_header("::1", "::1", "tcp", None, 80) == "PING ::1(::1) tcp port 80."
    assert fmt.ping_header("localhost", "127.0.0.1", "icmp", 56, None) == (
        "PING localhost (127.0.0.1) 56(84) bytes of data."
    )
    assert fmt.named("127.0.0.1", "localhost") == "localhost (127.0.0.1)"
    assert fmt.named("198.18.1.2", None) == fmt.named("198.18.1.2", "198.18.1.2") == "198.18.1.2"
    reply = probe("reply", "127.0.0.1", 0.05)._replace(reply_ttl=64, reply_size=84)
    assert fmt.ping_reply_line(reply, 1, "localhost (127.0.0.1)") == (
        "64 bytes from localhost (127.0.0.1): icmp_seq=1 ttl=64 time=0.050 ms"
    )
    exceeded = probe("ttl-expired", "198.18.1.2", 0.2)
    assert fmt.ping_reply_line(exceeded, 2, "r1.lab (198.18.1.2)") == (
        "From r1.lab (198.18.1.2) icmp_seq=2 Time to live exceeded"
    )


LIBRARY_NAMES = re.compile(
    r"(?<![\w-])(payload_size|cycles|local_port|local_ip|local_device|bit_pattern|"
    r"probes_per_hop|max_unknown|first_ttl|max_ttl|ip_version|grace|size)(?![\w-])"
)
"""Parameters of the library that the command's messages must not name (its flags)."""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["trace", "--bogus", "127.0.0.1"],
            "brokerpkg trace: error: unrecognized arguments: --bogus",
        ),
        (["trace", "127.0.0.1", "-c", "3"], "brokerpkg trace: error: unrecognized arguments: -c 3"),
        (
            ["-n", "trace", "127.0.0.1"],
            "brokerpkg trace: error: -n: options go after the subcommand, as in: "
            "brokerpkg trace -n 127.0.0.1",
        ),
        (
            ["-c", "3", "ping", "::1"],
            "brokerpkg ping: error: -c 3: options go after the subcommand, as in: "
            "brokerpkg ping -c 3 ::1",
        ),
        (
            ["ping", "-W", "-1", "127.0.0.1"],
            "brokerpkg ping: error: argument -W/--timeout: -1 is out of range: "
            "give 0 to 3600 seconds",
        ),
        (
            ["ping", "--count", "-1", "127.0.0.1"],
            "brokerpkg ping: error: argument -c/--count: -1 is out of range: give 1 or more",
        ),
        (
            ["mtr", "-c", "0", "127.0.0.1"],
            "brokerpkg mtr: error: argument -c/--report-cycles: 0 is out of range: give 1 or more",
        ),
        (
            ["mtr", "-i", "0", "127.0.0.1"],
            "brokerpkg mtr: error: argument -i/--interval: 0 is out of range: "
            "give more than 0 seconds",
        ),
        (
            ["mtr", "-U", "0", "127.0.0.1"],
            "brokerpkg mtr: error: argument -U/--max-unknown: 0 is out of range: give 1 or more",
        ),
        (
            ["trace", "-u", "-L", "80", "127.0.0.1"],
            "brokerpkg trace: error: argument -L/--localport: 80 is out of range: "
            "give 1024 to 65535",
        ),
        (
            ["trace", "-q", "0", "127.0.0.1"],
            "brokerpkg trace: error: argument -q/--queries: 0 is out of range: give 1 to 1000",
        ),
        (
            ["trace", "-m", "256", "127.0.0.1"],
            "brokerpkg trace: error: argument -m/--max-ttl: 256 is out of range: give 1 to 255",
        ),
        (
            ["probe", "-t", "-3", "127.0.0.1"],
            "brokerpkg probe: error: argument -t/--ttl: -3 is out of range: give 1 to 255",
        ),
        (
            ["probe", "-s", "9001", "127.0.0.1"],
            "brokerpkg probe: error: argument -s/--psize/--size: 9001 is out of range: "
            "give 0 to 9000",
        ),
        (
            ["ping", "-s", "9000", "127.0.0.1"],
            "brokerpkg ping: error: argument -s/--size: 9000 is out of range: give 0 to 8972",
        ),
        (
            ["multiping", "--concurrency", "0", "127.0.0.1"],
            "brokerpkg multiping: error: argument --concurrency: 0 is out of range: give 1 or more",
        ),
        (
            ["probe", "-M", "4294967296", "127.0.0.1"],
            "brokerpkg probe: error: argument -M/--mark: 4294967296 is out of range: "
            "give 0 to 4294967295",
        ),
        (
            ["probe", "-B", "-1", "127.0.0.1"],
            "brokerpkg probe: error: argument -B/--bitpattern: -1 is out of range: give 0 to 255",
        ),
        (
            ["probe", "-I", "a/b", "127.0.0.1"],
            "brokerpkg probe: error: argument -I/--interface: not an interface name: 'a/b'",
        ),
    ],
)
def test_usage_errors_show_the_subcommands_usage_and_name_its_flags(
    args: list[str], message: str
) -> None:
    done = run_cli(args, "/nonexistent")  # refused before any helper is looked for
    assert done.returncode == 2 and done.stdout == ""
    command = message.split(":", maxsplit=1)[0].removeprefix("brokerpkg ")
    assert done.stderr.startswith(f"usage: brokerpkg {command} [-h]"), done.stderr
    assert done.stderr.splitlines()[-1] == message
    assert not LIBRARY_NAMES.search(done.stderr)


def test_the_manual_documents_every_subcommand_and_option() -> None:
    page = (REPO / "man" / "brokerpkg.1").read_text().replace("\\-", "-")
    parser = build_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    assert set(commands.choices) == {
        "probe",
        "ping",
        "multiping",
        "trace",
        "mtr",
        "doctor",
        "setup",
        "exporter",
    }
    for name, command in commands.choices.items():
        assert f"\n.SH {name.upper()}\n" in page, name
        options = [
            option
            for action in command._actions
            for option in action.option_strings
            if option not in ("-h", "--help")
        ]
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", page), (name, option)
    for section in ("OUTPUT", "EXIT STATUS", "ENVIRONMENT", "EXAMPLES"):
        assert f"\n.SH {section}\n" in page
    assert "BROKERPKG_HELPER" in page


DAEMON_CHECK = """
import asyncio, time
from brokerpkg.cli import DaemonExecutor

async def main():
    loop = asyncio.get_running_loop()
    loop.set_default_executor(DaemonExecutor(workers=2))
    assert await loop.run_in_executor(None, divmod, 7, 2) == (3, 1)
    try:
        await loop.run_in_executor(None, int, "x")
    except ValueError:
        pass
    else:
        raise AssertionError("the error was lost")
    stuck = [loop.run_in_executor(None, time.sleep, 60) for _ in range(3)]
    await asyncio.sleep(0.1)
    print("done", flush=True)

asyncio.run(main())
"""


def test_a_stuck_name_lookup_does_not_delay_the_exit() -> None:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", DAEMON_CHECK],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert time.monotonic() - began < 10  # not the 60 s the stuck calls would take


# ------------------------------------------------------------------------- loopback


def test_module_runs_and_knows_its_version(helper_path: str) -> None:
    done = run_cli(["--version"], helper_path)
    assert done.returncode == 0 and done.stdout.strip() == "brokerpkg 0.1.0"


def test_mtr_report_on_loopback_matches_mtrs_layout(helper_path: str) -> None:
    ours = run_cli(["mtr", "-r", "-c", "3", "-i", "0.2", "-n", "127.0.0.1"], helper_path)
    assert ours.returncode == 0, ours.stderr
    lines = ours.stdout.splitlines()
    assert re.fullmatch(r"Start: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", lines[0])
    assert report_rows(ours.stdout) == [(1, "127.0.0.1", 0.0, 3)]
    if not os.access(MTR, os.X_OK):
        pytest.skip("mtr not installed (apt-get install mtr-tiny)")
    real = subprocess.run(
        [MTR, "-r", "-c", "2", "-i", "0.2", "-n", "127.0.0.1"],
        env=dict(os.environ, MTR_PACKET=helper_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert real.returncode == 0, real.stderr
    mtr_lines = real.stdout.splitlines()
    assert lines[1] == mtr_lines[1]  # the same header, character for character
    assert value_ends(lines[2], 0) == value_ends(mtr_lines[2], 0)


def test_mtr_json_has_the_keys_and_types_of_mtrs(helper_path: str) -> None:
    ours = run_cli(["mtr", "-j", "-c", "2", "-i", "0.2", "-n", "127.0.0.1"], helper_path)
    assert ours.returncode == 0, ours.stderr
    document = json.loads(ours.stdout)
    assert document["report"]["hubs"][0]["host"] == "127.0.0.1"
    assert document["report"]["mtr"]["tests"] == 2
    assert ours.stdout.startswith('{\n    "report": {\n        "mtr": {')  # mtr's indent
    if not os.access(MTR, os.X_OK):
        pytest.skip("mtr not installed (apt-get install mtr-tiny)")
    real = subprocess.run(
        [MTR, "-j", "-c", "2", "-i", "0.2", "-n", "127.0.0.1"],
        env=dict(os.environ, MTR_PACKET=helper_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shape(document) == shape(json.loads(real.stdout))
    csv = run_cli(["mtr", "-C", "-c", "1", "-n", "127.0.0.1"], helper_path)
    real_csv = subprocess.run(
        [MTR, "-C", "-c", "1", "-n", "127.0.0.1"],
        env=dict(os.environ, MTR_PACKET=helper_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ours_lines, mtr_lines = csv.stdout.splitlines(), real_csv.stdout.splitlines()
    assert ours_lines[0] == mtr_lines[0]
    assert [len(line.split(",")) for line in ours_lines] == [
        len(line.split(",")) for line in mtr_lines
    ]
    assert ours_lines[1].split(",")[2:6] == ["OK", "127.0.0.1", "1", "127.0.0.1"]


def test_mtr_without_a_terminal_or_format_prints_a_report(helper_path: str) -> None:
    done = run_cli(["mtr", "-c", "1", "127.0.0.1"], helper_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Start: ")
    rows = report_rows(done.stdout)
    assert len(rows) == 1 and rows[0][1] in ("localhost", "127.0.0.1")


def test_trace_on_loopback_numeric_names_and_json(helper_path: str) -> None:
    numeric = run_cli(["trace", "-n", "127.0.0.1"], helper_path)
    assert numeric.returncode == 0, numeric.stderr
    assert numeric.stdout.splitlines()[0] == (
        "traceroute to 127.0.0.1 (127.0.0.1), 30 hops max, 64 byte packets"
    )
    assert trace_hops(numeric.stdout) == [(1, ["127.0.0.1"], 0, [])]
    assert re.fullmatch(r" 1  127\.0\.0\.1(  \d+\.\d{3} ms){3}", numeric.stdout.splitlines()[1])
    named = run_cli(["trace", "-q", "1", "127.0.0.1"], helper_path)  # /etc/hosts names it
    assert named.returncode == 0, named.stderr
    assert re.fullmatch(r" 1  \S+ \(127\.0\.0\.1\)  \d+\.\d{3} ms", named.stdout.splitlines()[1])
    document = json.loads(run_cli(["trace", "-j", "-q", "2", "127.0.0.1"], helper_path).stdout)
    assert document["reached"] is True and document["distance"] == 1
    assert document["hops"][0]["responders"][0]["address"] == "127.0.0.1"
    assert len(document["hops"][0]["responders"][0]["rtts"]) == 2


@pytest.mark.parametrize(
    ("flags", "target", "seq"),
    [
        ([], "127.0.0.1", "icmp_seq"),
        (["-6"], "::1", "icmp_seq"),
        (["-u"], "127.0.0.1", "seq"),
        (["-T"], "[::1]:9", "seq"),
    ],
)
def test_ping_lines_and_summary_on_loopback(
    helper_path: str, flags: list[str], target: str, seq: str
) -> None:
    done = run_cli(["ping", "-c", "3", "-i", "0.1", *flags, target], helper_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("PING ")
    replies = [line for line in lines if f" {seq}=" in line]
    assert [re.search(rf"{seq}=(\d+)", line).group(1) for line in replies] == ["1", "2", "3"]  # type: ignore[union-attr]
    assert all(re.search(r"time=\d+\.\d+ ms$", line) for line in replies)
    assert lines[-3] == f"--- {split_target(target)[0]} ping statistics ---"
    counts = re.fullmatch(
        r"3 packets transmitted, 3 received, 0% packet loss, time (\d+)ms", lines[-2]
    )
    assert counts and 150 <= int(counts.group(1)) < 2000
    low, mean, high, mdev = map(
        float,
        re.fullmatch(  # type: ignore[union-attr]
            r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", lines[-1]
        ).groups(),
    )
    times = [float(re.search(r"time=([\d.]+)", line).group(1)) for line in replies]  # type: ignore[union-attr]
    assert low <= mean <= high and mdev >= 0
    assert low == pytest.approx(min(times), abs=0.0015)
    assert high == pytest.approx(max(times), abs=0.0015)


def test_ping_quiet_and_json(helper_path: str) -> None:
    quiet = run_cli(["ping", "-q", "-c", "2", "-i", "0.1", "127.0.0.1"], helper_path)
    assert quiet.returncode == 0
    lines = quiet.stdout.splitlines()
    assert lines[0].startswith("PING 127.0.0.1 (127.0.0.1) ") and lines[1] == ""
    assert lines[2] == "--- 127.0.0.1 ping statistics ---" and len(lines) == 5
    document = json.loads(
        run_cli(["ping", "-j", "-c", "2", "-i", "0.1", "127.0.0.1"], helper_path).stdout
    )
    assert document["sent"] == document["received"] == document["transmitted"] == 2
    assert len(document["rtts"]) == 2 and document["is_alive"] is True


def test_multiping_reads_targets_in_input_order(helper_path: str, tmp_path: Path) -> None:
    targets = tmp_path / "targets"
    targets.write_text("# loopback\n127.0.0.3\n\n::1\n127.0.0.2  # trailing comment\n")
    done = run_cli(
        ["multiping", "-c", "2", "-i", "0.1", "-f", str(targets), "127.0.0.9"], helper_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    summary = [line for line in lines if "xmt/rcv/%loss" in line]
    hosts = [line.split(" : ")[0].strip() for line in summary]
    assert hosts == ["127.0.0.9", "127.0.0.3", "::1", "127.0.0.2"]
    assert all(
        re.search(r"xmt/rcv/%loss = 2/2/0%, min/avg/max = [\d.]+/[\d.]+/[\d.]+$", line)
        for line in summary
    )
    replies = [line for line in lines if re.match(r"^\S+ +: \[[01]\], 64 bytes, ", line)]
    assert len(replies) == 8
    assert lines[-4:] == summary  # summaries last, after every reply line
    quiet = run_cli(
        ["multiping", "-q", "-c", "1", "-f", "-"], helper_path, input="127.0.0.5\n127.0.0.4\n"
    )
    assert [line.split()[0] for line in quiet.stdout.splitlines()] == ["127.0.0.5", "127.0.0.4"]
    document = json.loads(run_cli(["multiping", "-j", "127.0.0.7", "::1"], helper_path).stdout)
    assert [host["host"] for host in document["hosts"]] == ["127.0.0.7", "::1"]


def test_usage_errors_exit_2(helper_path: str) -> None:
    for args in (
        ["trace", "--bogus", "127.0.0.1"],
        ["mtr", "-c", "x", "127.0.0.1"],
        ["ping"],
        [],
        ["frobnicate"],
        ["multiping"],
        ["trace", "127.0.0.1:99999"],
        ["ping", "-T", "-s", "10", "127.0.0.1"],
        ["trace", "-f", "5", "-m", "4", "127.0.0.1"],
    ):
        done = run_cli(args, helper_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stdout == ""
        assert done.stderr.strip(), args
    bad = run_cli(["trace", "-j", "--bogus", "127.0.0.1"], helper_path)
    assert bad.returncode == 2 and "unrecognized arguments" in json.loads(bad.stdout)["error"]


def test_trace_waits_as_traceroute_w_says_and_refuses_bad_waits(helper_path: str) -> None:
    parser = build_parser()
    assert parser.parse_args(["trace", "-w", "5/3/10", "h"]).wait == Wait(5.0, 3.0, 10.0)
    assert parser.parse_args(["trace", "-w", "2", "h"]).wait == Wait(2.0, 0.0, 0.0)
    defaults = parser.parse_args(["trace", "h"])
    assert (defaults.wait, defaults.timeout, defaults.retries) == (None, None, 3)
    assert parser.parse_args(["mtr", "-w", "h"]).wide is True  # mtr's -w: the wide report
    assert parser.parse_args(["mtr", "--retries", "0", "h"]).retries == 0
    for args, message in (
        (["-w", "five"], "argument -w/--wait: wait must be MAX[,HERE,NEAR] (numbers), got 'five'"),
        (["-w", "0"], "wait MAX must be a number of seconds > 0 and <= 3600, got 0"),
        (["-w", "5,-3"], "wait HERE must be a finite factor >= 0, got -3"),
        (["-w", "1", "-Z", "1"], "give -w or -Z, not both (-Z SECONDS is -w SECONDS)"),
        (["--retries", "11"], "argument --retries: 11 is out of range: give 0 to 10"),
    ):
        done = run_cli(["trace", "-n", *args, "127.0.0.1"], helper_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr and done.stdout == "", (args, done.stderr)
    done = run_cli(["trace", "-n", "-w", "2,3,10", "--retries", "0", "127.0.0.1"], helper_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split()[:2] == ["1", "127.0.0.1"]


def test_a_missing_helper_exits_2_with_one_line_naming_the_fix() -> None:
    for args in (
        ["trace", "127.0.0.1"],
        ["mtr", "-r", "-c", "1", "127.0.0.1"],
        ["ping", "-c", "1", "127.0.0.1"],
        ["multiping", "127.0.0.1"],
        ["probe", "127.0.0.1"],
    ):
        done = run_cli(args, "/nonexistent")
        assert done.returncode == 2, args
        assert done.stdout == ""
        message = done.stderr.splitlines()
        assert len(message) == 1, done.stderr
        assert "/nonexistent" in message[0] and "fix: unset BROKERPKG_HELPER" in message[0]
    for args in (
        ["trace", "-j", "127.0.0.1"],
        ["ping", "-j", "127.0.0.1"],
        ["multiping", "-j", "127.0.0.1"],
        ["probe", "-j", "127.0.0.1"],
    ):
        done = run_cli(args, "/nonexistent")
        assert done.returncode == 2
        assert "fix: unset BROKERPKG_HELPER" in json.loads(done.stdout)["error"]
    mtr = run_cli(["mtr", "-j", "-c", "1", "127.0.0.1"], "/nonexistent")
    document = json.loads(mtr.stdout)
    assert mtr.returncode == 2 and "/nonexistent" in document["error"]
    assert document["report"]["hubs"] == [] and document["report"]["mtr"]["dst"] == "127.0.0.1"


def test_an_unresolvable_host_exits_2(helper_path: str) -> None:
    done = run_cli(["ping", "-c", "1", "-j", "no-such-host.invalid"], helper_path)
    assert done.returncode == 2
    assert "no-such-host.invalid" in json.loads(done.stdout)["error"]


def test_probe_prints_one_result(helper_path: str) -> None:
    done = run_cli(["probe", "-T", "-P", "9", "127.0.0.1"], helper_path)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"reply from 127\.0\.0\.1 in \d+\.\d{3} ms\n", done.stdout)
    expired = run_cli(["probe", "-j", "--ttl", "1", "--details", "::1"], helper_path)
    assert json.loads(expired.stdout)["reply_ttl"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["ping", "-T", "-s", "100", "127.0.0.1"],
            "brokerpkg ping: -s does not apply to tcp probes (a SYN carries no payload)",
        ),
        (
            ["trace", "-T", "-s", "100", "127.0.0.1"],
            "brokerpkg trace: -s does not apply to tcp probes (a SYN carries no payload)",
        ),
        (
            ["probe", "-T", "-s", "100", "127.0.0.1"],
            "brokerpkg probe: -s does not apply to tcp probes (a SYN carries no payload)",
        ),
        (
            ["mtr", "-T", "-B", "7", "127.0.0.1"],
            "brokerpkg mtr: -B does not apply to tcp probes (a SYN carries no payload)",
        ),
        (
            ["multiping", "-S", "-s", "100", "127.0.0.1"],
            "brokerpkg multiping: -s (the payload after the ICMP or UDP header) applies to "
            "icmp and udp probes, not sctp",
        ),
        (
            ["trace", "-L", "5000", "127.0.0.1"],
            "brokerpkg trace: -L applies to udp, tcp and sctp probes (-u, -T, -S), not icmp",
        ),
        (
            ["ping", "-P", "7", "127.0.0.1"],
            "brokerpkg ping: -P applies to udp, tcp and sctp probes (-u, -T, -S), not icmp",
        ),
        (
            ["mtr", "127.0.0.1:80"],
            "brokerpkg mtr: the port of HOST:PORT applies to udp, tcp and sctp probes "
            "(-u, -T, -S), not icmp",
        ),
        (["trace", "-f", "5", "-m", "4", "127.0.0.1"], "brokerpkg trace: -m 4 is below -f 5"),
        (
            ["ping", "-s", "8960", "::1"],
            "brokerpkg ping: -s 8960 makes IPv6 packets of 9008 bytes, more than 9000: "
            "give -s 8952 or less for ::1",
        ),
        (
            ["multiping", "-s", "8960", "127.0.0.1", "::1"],
            "brokerpkg multiping: -s 8960 makes IPv6 packets of 9008 bytes, more than 9000: "
            "give -s 8952 or less for ::1",
        ),
    ],
)
def test_options_that_cannot_apply_are_refused_in_the_commands_words(
    helper_path: str, args: list[str], message: str
) -> None:
    done = run_cli(args, helper_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")
    assert not LIBRARY_NAMES.search(done.stderr)
    document = json.loads(run_cli([args[0], "-j", *args[1:]], helper_path).stdout)
    assert document["error"] == message.split(": ", 1)[1]
    # the next command runs as usual
    assert run_cli(["probe", "127.0.0.1"], helper_path).returncode == 0


def test_a_missing_feature_is_named_by_its_flag() -> None:
    if not os.access("/usr/bin/mtr-packet", os.X_OK):
        pytest.skip("mtr-packet not installed (apt-get install mtr-tiny)")
    done = run_cli(["probe", "--details", "-I", "lo", "127.0.0.1"], "/usr/bin/mtr-packet")
    assert done.returncode == 2
    assert done.stderr.startswith(
        "brokerpkg probe: -I needs the helper feature 'local-device', which this helper does "
        "not support (check-support feature local-device: no); `brokerpkg doctor` shows"
    )


# Masks for side-by-side comparisons: round-trip times and durations, never addresses.
FLOAT = re.compile(r"(?<![\d.])\d+\.\d+(?![\d.])")
DURATION = re.compile(r"\btime \d+ms\b")


def masked(text: str) -> list[str]:
    return [FLOAT.sub("T", DURATION.sub("time Tms", line)) for line in text.splitlines()]


PRIVATE_HOSTS = "127.0.0.1 localhost\n::1 v6host\n"


@pytest.fixture
def private_lo(tmp_path: Path) -> list[str]:
    """An argv prefix: a new network namespace (only lo, up) and a mount namespace with
    an /etc/hosts of its own (127.0.0.1 localhost, ::1 v6host), so that names and
    reverse names are the same for every program compared, on any machine."""
    hosts = tmp_path / "hosts"
    hosts.write_text(PRIVATE_HOSTS)
    script = 'mount --bind "$0" /etc/hosts && ip link set lo up && exec "$@"'
    return ["unshare", "-m", "-n", "sh", "-c", script, str(hosts)]


def run_beside(
    prefix: list[str], argv: Sequence[str], helper: str
) -> subprocess.CompletedProcess[str]:
    """``argv`` under ``prefix`` from the worktree, BROKERPKG_HELPER and MTR_PACKET set."""
    env = dict(os.environ, BROKERPKG_HELPER=helper, MTR_PACKET=helper)
    env.pop("COLUMNS", None)
    return subprocess.run(
        [*prefix, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )


OURS = [sys.executable, "-m", "brokerpkg"]


@pytest.mark.privileged
@pytest.mark.parametrize(
    "flags",
    [["127.0.0.1"], ["::1"], ["localhost"], ["v6host"], ["-n", "localhost"], ["-q", "v6host"]],
    ids=["ipv4", "ipv6", "name", "ipv6-name", "numeric", "quiet"],
)
def test_ping_prints_what_iputils_ping_prints(
    private_lo: list[str], helper_path: str, flags: list[str]
) -> None:
    if shutil.which("ping") is None:
        pytest.skip("iputils ping not installed (apt-get install iputils-ping)")
    theirs = run_beside(private_lo, ["ping", "-c", "2", "-i", "0.2", *flags], helper_path)
    ours = run_beside(private_lo, [*OURS, "ping", "-c", "2", "-i", "0.2", *flags], helper_path)
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    assert masked(ours.stdout) == masked(theirs.stdout)


@pytest.mark.privileged
def test_multiping_prints_what_fping_prints(private_lo: list[str], helper_path: str) -> None:
    if shutil.which("fping") is None:
        pytest.skip("fping not installed (apt-get install fping)")
    hosts = ["127.0.0.1", "::1", "localhost"]
    theirs = run_beside(private_lo, ["fping", "-c", "2", "-p", "200", *hosts], helper_path)
    ours = run_beside(private_lo, [*OURS, "multiping", "-c", "2", "-i", "0.2", *hosts], helper_path)
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    replies, summaries = masked(theirs.stdout), masked(theirs.stderr)  # fping: summaries on stderr
    assert summaries[0] == ""  # a blank line, then one summary per host in input order
    lines = masked(ours.stdout)
    assert sorted(lines[: len(replies)]) == sorted(replies)  # the order answers came in
    assert lines[len(replies) :] == summaries
    quiet = run_beside(private_lo, ["fping", "-q", "-c", "1", *hosts], helper_path)
    our_quiet = run_beside(private_lo, [*OURS, "multiping", "-q", "-c", "1", *hosts], helper_path)
    assert masked(our_quiet.stdout) == masked(quiet.stderr)  # no blank line with -q


@pytest.mark.privileged
@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        (["traceroute", "-T", "-n", "127.0.0.1"], ["trace", "-T", "-n", "127.0.0.1"]),
        (["traceroute", "-T", "v6host"], ["trace", "-T", "v6host"]),
        (["traceroute", "-I", "127.0.0.1", "64"], ["trace", "127.0.0.1"]),
        (["traceroute", "-I", "-n", "::1", "64"], ["trace", "-n", "::1"]),
    ],
    ids=["tcp-ipv4", "tcp-ipv6-name", "icmp-name", "icmp-ipv6"],
)
def test_trace_prints_what_traceroute_prints(
    private_lo: list[str], helper_path: str, theirs: list[str], ours: list[str]
) -> None:
    # -w 5,0,0: traceroute waits for every answer (by default it gives up on a probe
    # 3 round trips after another answer of its hop came, a few microseconds on lo)
    real = run_beside(private_lo, [theirs[0], "-w", "5,0,0", *theirs[1:]], helper_path)
    done = run_beside(private_lo, [*OURS, *ours], helper_path)
    assert real.returncode == done.returncode == 0, (real.stderr, done.stderr)
    assert masked(done.stdout) == masked(real.stdout)


MONITOR_STR = """
import asyncio, sys
import brokerpkg

async def main():
    async with brokerpkg.Session(sys.argv[1]) as session:
        reports = brokerpkg.monitor(
            "127.0.0.1", cycles=2, interval=0.2, session=session,
            resolve_names=sys.argv[2] == "names",
        )
        async for report in reports:
            final = report
    print(final)

asyncio.run(main())
"""


@pytest.mark.parametrize("names", ["names", "numeric"])
def test_a_monitor_report_prints_as_mtr_r(helper_path: str, names: str) -> None:
    if not os.access(MTR, os.X_OK):
        pytest.skip("mtr not installed (apt-get install mtr-tiny)")
    ours = subprocess.run(
        [sys.executable, "-c", MONITOR_STR, helper_path, names],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ours.returncode == 0, ours.stderr
    numeric = ["-n"] if names == "numeric" else []
    real = subprocess.run(
        [MTR, "-r", "-c", "2", "-i", "0.2", *numeric, "127.0.0.1"],
        env=dict(os.environ, MTR_PACKET=helper_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert real.returncode == 0, real.stderr
    lines, mtr_lines = ours.stdout.splitlines(), real.stdout.splitlines()[1:]  # mtr's Start
    assert len(lines) == len(mtr_lines) == 2
    assert lines[0] == mtr_lines[0]  # HOST: and the titles, character for character
    assert lines[1][:33] == mtr_lines[1][:33]  # the hop and its host
    assert value_ends(lines[1], 0) == value_ends(mtr_lines[1], 0)  # under their titles
    assert value_ends(lines[0], 33) == value_ends(lines[1], 33)


# ------------------------------------------------------------------------- doctor


def test_doctor_as_root(helper_path: str) -> None:
    done = run_cli(["doctor"], helper_path)
    assert done.returncode == 0, done.stdout + done.stderr
    fields = dict(line.split(":", 1) for line in done.stdout.splitlines())
    fields = {key: value.strip() for key, value in fields.items()}
    assert fields["helper"] == helper_path
    assert fields["found by"].startswith("environment")
    assert fields["version"].startswith("brokerpkg-")
    assert fields["running as"].startswith("root")
    assert fields["sockets"].startswith("raw")
    assert fields["status"].startswith("ok")
    document = json.loads(run_cli(["doctor", "-j"], helper_path).stdout)
    assert document["sockets"] == "raw" and document["exit_status"] == 0
    assert document["features"]["tcp"] == "ok" and document["problems"] == []
    missing = run_cli(["doctor"], "/nonexistent")
    assert missing.returncode == 2
    assert "fix:" in missing.stdout and "unset BROKERPKG_HELPER" in missing.stdout


def doctor_as_nobody(
    copy: UnprivilegedCopy, helper: Path, chain: Chain | None = None
) -> subprocess.CompletedProcess[str]:
    return copy.run(
        ["-m", "brokerpkg", "doctor", "-j", "--helper", str(helper)],
        lab=chain,
        node="client" if chain else None,
    )


@pytest.mark.privileged
def test_doctor_for_a_user_who_is_not_root(
    unprivileged_copy: UnprivilegedCopy, make_chain: Callable[..., Chain]
) -> None:
    plain = unprivileged_copy.helper("plain")
    refused = doctor_as_nobody(unprivileged_copy, plain)
    report = json.loads(refused.stdout)
    assert refused.returncode == 2, refused.stderr
    assert report["status"].startswith("error")
    assert capability_fix(str(plain)) in report["fixes"]
    assert any("ping_group_range" in fix for fix in report["fixes"])

    capable = unprivileged_copy.helper("setcap")
    granted = doctor_as_nobody(unprivileged_copy, capable)
    report = json.loads(granted.stdout)
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert report["sockets"] == "raw" and "capability" in report["file_privilege"]
    assert report["running_as"].startswith("uid 65534")

    chain = make_chain(1)
    chain.open_ping_group("client")
    datagram = doctor_as_nobody(unprivileged_copy, plain, chain)
    report = json.loads(datagram.stdout)
    assert datagram.returncode == 1, datagram.stdout + datagram.stderr
    assert report["sockets"] == "datagram" and report["in_ping_group"] is True
    assert capability_fix(str(plain)) in report["fixes"]
    assert report["features"]["udp"] == "no"


# ------------------------------------------------------------------------- the lab


@pytest.mark.privileged
@FAMILIES
@PROTOCOLS
def test_trace_text_and_json_show_the_known_path(
    chain: Chain, responder: Any, helper_path: str, family: int, protocol: str
) -> None:
    target = script_path(responder, chain, 160, family)
    truth = lab_truth(chain, family, target)
    flags = [f"-{family}", *PROTOCOL_FLAGS[protocol], "-Z", "1"]
    text = run_cli(["trace", "-n", "-e", *flags, target], helper_path, chain=chain)
    assert text.returncode == 0, text.stderr
    hops = trace_hops(text.stdout)
    assert [hop for hop, *_ in hops] == list(range(1, 8))
    assert [addresses[0] if addresses else None for _, addresses, _, _ in hops] == truth
    assert [stars for _, _, stars, _ in hops] == [0, 0, 0, 0, 3, 0, 0]
    assert hops[3][3] == ["<MPLS:L=16,E=0,S=1,T=1>"]
    assert all(not extensions for *_, extensions in hops[:3] + hops[4:])
    document = json.loads(
        run_cli(["trace", "-j", "-n", *flags, target], helper_path, chain=chain).stdout
    )
    assert document["reached"] is True and document["distance"] == 7
    seen = [
        hop["responders"][0]["address"] if hop["responders"] else None for hop in document["hops"]
    ]
    assert seen == truth
    assert document["hops"][3]["responders"][0]["mpls"] == [
        {"label": 16, "traffic_class": 0, "bottom_of_stack": True, "ttl": 1}
    ]
    assert all(
        len(hop["responders"][0]["rtts"]) == 3 for hop in document["hops"] if hop["responders"]
    )


@pytest.mark.privileged
@FAMILIES
@PROTOCOLS
def test_mtr_json_shows_the_known_path(
    chain: Chain, responder: Any, helper_path: str, family: int, protocol: str
) -> None:
    target = script_path(responder, chain, 161, family)
    truth = lab_truth(chain, family, target)
    done = run_cli(
        [
            "mtr",
            "-j",
            "-n",
            "-c",
            "2",
            "-i",
            "0.2",
            "-Z",
            "1",
            "-G",
            "1",
            f"-{family}",
            *PROTOCOL_FLAGS[protocol],
            target,
        ],
        helper_path,
        chain=chain,
    )
    assert done.returncode == 0, done.stderr
    hubs = json.loads(done.stdout)["report"]["hubs"]
    assert [hub["count"] for hub in hubs] == list(range(1, 8))
    assert [hub["host"] for hub in hubs] == [address or "???" for address in truth]
    assert [hub["Loss%"] for hub in hubs] == [0.0, 0.0, 0.0, 0.0, 100.0, 0.0, 0.0]
    assert all(hub["Snt"] == 2 for hub in hubs)
    assert all(hub["Best"] <= hub["Avg"] <= hub["Wrst"] for hub in hubs)


@pytest.mark.privileged
@FAMILIES
def test_mtr_report_side_by_side_with_mtr(
    chain: Chain, responder: Any, helper_path: str, family: int
) -> None:
    target = script_path(responder, chain, 162, family)
    truth = lab_truth(chain, family, target)
    ours = run_cli(
        ["mtr", "-r", "-e", "-c", "3", "-i", "0.2", "-Z", "1", "-G", "1", "-n", target],
        helper_path,
        chain=chain,
    )
    assert ours.returncode == 0, ours.stderr
    rows = report_rows(ours.stdout)
    assert [(hop, host) for hop, host, _, _ in rows] == [
        (hop, address or "???") for hop, address in enumerate(truth, start=1)
    ]
    assert [(loss, sent) for _, _, loss, sent in rows] == [(0.0, 3)] * 4 + [(100.0, 3)] + [
        (0.0, 3)
    ] * 2
    assert "    |   +-- [MPLS: Lbl 16 Exp 0 S 1 TTL 1]" in ours.stdout.splitlines()
    if not os.access(MTR, os.X_OK):
        pytest.skip("mtr not installed (apt-get install mtr-tiny)")
    real = chain.run(
        "client",
        [MTR, "-r", "-c", "2", "-i", "0.2", "-G", "1", "-n", target],
        check=False,
        timeout=60,
    )
    real_rows = report_rows(real.stdout)
    assert [(hop, host) for hop, host, _, _ in real_rows] == [
        (hop, host) for hop, host, _, _ in rows
    ]
    our_lines = [line for line in ours.stdout.splitlines() if REPORT_ROW.match(line)]
    mtr_lines = [line for line in real.stdout.splitlines() if REPORT_ROW.match(line)]
    assert ours.stdout.splitlines()[1] == real.stdout.splitlines()[1]
    for our_line, mtr_line in zip(our_lines, mtr_lines, strict=True):
        assert value_ends(our_line, 33) == value_ends(mtr_line, 33), (our_line, mtr_line)


@pytest.mark.privileged
@FAMILIES
def test_a_silenced_router_is_a_silent_hop(
    make_chain: Callable[..., Chain], helper_path: str, family: int
) -> None:
    chain = make_chain(3)
    chain.silence_router(2)
    path = chain.path(family)
    server = chain.server_address(family)
    trace = run_cli(["trace", "-n", "-w", "0.5", server], helper_path, chain=chain)
    assert trace.returncode == 0, trace.stderr
    assert trace_hops(trace.stdout) == [
        (1, [path[0]], 0, []),
        (2, [], 3, []),
        (3, [path[2]], 0, []),
        (4, [server], 0, []),
    ]
    report = run_cli(
        ["mtr", "-r", "-n", "-c", "2", "-i", "0.2", "-Z", "0.5", "-G", "0.5", server],
        helper_path,
        chain=chain,
    )
    assert report.returncode == 0, report.stderr
    assert [(hop, host, loss) for hop, host, loss, _ in report_rows(report.stdout)] == [
        (1, path[0], 0.0),
        (2, "???", 100.0),
        (3, path[2], 0.0),
        (4, server, 0.0),
    ]


@pytest.mark.privileged
@FAMILIES
def test_a_blackholed_destination_exits_1_with_valid_json(
    chain: Chain, helper_path: str, family: int
) -> None:
    hole = chain.add_blackhole(2).address(family)
    trace = run_cli(["trace", "-n", "-m", "4", "-w", "0.3", hole], helper_path, chain=chain)
    assert trace.returncode == 1, trace.stderr
    assert trace_hops(trace.stdout) == [
        (1, [chain.hop_address(1, family)], 0, []),
        (2, [], 3, []),
        (3, [], 3, []),
        (4, [], 3, []),
    ]
    traced = json.loads(
        run_cli(
            ["trace", "-j", "-n", "-m", "3", "-w", "0.3", hole], helper_path, chain=chain
        ).stdout
    )
    assert traced["reached"] is False and traced["distance"] is None
    mtr = run_cli(
        ["mtr", "-j", "-n", "-c", "1", "-m", "4", "-Z", "0.3", "-G", "0.5", hole],
        helper_path,
        chain=chain,
    )
    assert mtr.returncode == 1
    assert [hub["host"] for hub in json.loads(mtr.stdout)["report"]["hubs"]] == [
        chain.hop_address(1, family),
        "???",
    ]
    ping = run_cli(["ping", "-c", "2", "-i", "0.1", "-W", "0.3", hole], helper_path, chain=chain)
    assert ping.returncode == 1
    assert "2 packets transmitted, 0 received, 100% packet loss" in ping.stdout
    many = run_cli(
        ["multiping", "-q", "-W", "0.3", chain.server_address(family), hole],
        helper_path,
        chain=chain,
    )
    assert many.returncode == 1
    assert [line.split()[0] for line in many.stdout.splitlines()] == [
        chain.server_address(family),
        hole,
    ]
    assert many.stdout.splitlines()[1].endswith("xmt/rcv/%loss = 1/0/100%")


@pytest.mark.privileged
def test_ping_summary_counts_the_losses_the_responder_injects(
    chain: Chain, responder: Any, helper_path: str
) -> None:
    target = virtual_target(163)
    responder.set(target, drop=0.5, seed=7)
    done = run_cli(
        ["ping", "-c", "10", "-i", "0.05", "-W", "0.5", target], helper_path, chain=chain
    )
    replies = [line for line in done.stdout.splitlines() if " bytes from " in line]
    received = len(replies)
    assert 0 < received < 10
    assert done.returncode == 0
    loss = f"{(10 - received) * 10:g}%"
    assert f"10 packets transmitted, {received} received, {loss} packet loss" in done.stdout


@pytest.mark.privileged
@FAMILIES
def test_a_probe_the_host_refuses_to_send_exits_2_in_every_subcommand(
    chain: Chain, helper_path: str, family: int
) -> None:
    target = "127.0.0.1" if family == 4 else "::1"
    source = "198.18.77.1" if family == 4 else "2001:db8:77::1"  # not an address of the host
    why = "cannot send icmp probe to {}: the source address is not assigned to this host"
    for command in (["probe"], ["ping", "-c", "1"], ["multiping"], ["trace"], ["mtr", "-c", "1"]):
        done = run_cli([*command, "-a", source, target], helper_path, chain=chain)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr == f"brokerpkg {command[0]}: {why.format(target)}\n"
        document = run_cli([*command, "-j", "-a", source, target], helper_path, chain=chain)
        assert document.returncode == 2
        assert json.loads(document.stdout)["error"] == why.format(target)
    assert run_cli(["probe", target], helper_path, chain=chain).returncode == 0


def read_until(process: subprocess.Popen[bytes], pattern: str, timeout: float = 30) -> str:
    """Standard output of ``process`` until ``pattern`` matches a line (or it ends)."""
    assert process.stdout is not None
    text = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, text.decode(), re.MULTILINE):
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no line matched {pattern!r} in time:\n{text.decode()}"
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        text += chunk
    return text.decode()


def helper_started(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until ``process`` runs its helper as a child."""
    deadline = time.monotonic() + timeout
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    while True:
        for child in children.read_text().split():
            with contextlib.suppress(OSError):
                if b"brokerpkg-helper" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return
        assert process.poll() is None, "it ended before its helper started"
        assert time.monotonic() < deadline, "the helper never started"
        time.sleep(0.05)


SUMMARY = re.compile(r"^(\S+) +: xmt/rcv/%loss = (\d+)/(\d+)/(\d+)%")


IGNORING_SIGINT = ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]
"""Run the rest with SIGINT ignored, as a script's background job (``&``) starts: ping
and fping take it all the same, and so must we (Python alone would not)."""


def interrupted(argv: list[str], after: str | None) -> tuple[int, str, str]:
    """Run ``argv`` (SIGINT ignored at its start), send SIGINT once a line matches
    ``after`` (None: once its helper runs), return (exit status, standard output,
    standard error)."""
    process = subprocess.Popen(
        [*IGNORING_SIGINT, *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        early = read_until(process, after) if after is not None else ""
        if after is None:
            helper_started(process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, early + out.decode(), err.decode()


def test_each_printed_line_goes_out_with_its_newline_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With PYTHONUNBUFFERED every write is a system call, and Ctrl-C raises after the
    one it interrupted: a line written apart from its newline was left open, and the
    summary's blank line went into closing it (seen in the Ctrl-C tests below)."""
    writes: list[str] = []

    class Stream(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    monkeypatch.setattr(sys, "stdout", Stream())
    cli_output._print("64 bytes from 127.0.0.1: icmp_seq=3", "", "--- statistics ---")
    assert writes == ["64 bytes from 127.0.0.1: icmp_seq=3\n\n--- statistics ---\n"]


UNBUFFERED = ["env", "PYTHONUNBUFFERED=1"]
"""Each write a system call, whatever this machine's environment says."""


@pytest.mark.privileged
@pytest.mark.parametrize(
    ("command", "summary"),
    [
        (["multiping"], "\n127.0.0.1 : xmt/rcv/%loss = 0/0/0%\n"),
        (["ping"], "0 packets transmitted, 0 received, 0% packet loss, time "),
        (["multiping", "-j"], '"transmitted": 0'),
    ],
    ids=["multiping", "ping", "multiping-json"],
)
def test_a_ctrl_c_while_the_helper_starts_sends_nothing_and_ends_in_summaries(
    tmp_path: Path, helper_path: str, command: list[str], summary: str
) -> None:
    """Before the probing (here: a helper that takes 2 s to start) an interrupt is held
    until the session is up, then nothing is sent and every host gets its summary, as
    fping and ping end at any time; it raised KeyboardInterrupt there (exit 130)."""
    slow = tmp_path / "brokerpkg-helper"
    slow.write_text(f'#!/bin/sh\nsleep 2\nexec {shlex.quote(helper_path)} "$@"\n')
    slow.chmod(0o755)
    argv = ["env", f"BROKERPKG_HELPER={slow}", *OURS, *command, "-c", "3", "127.0.0.1"]
    status, out, err = interrupted(argv, None)
    assert status == 1, err  # nothing answered
    assert summary in out, out


@pytest.mark.privileged
def test_ping_ends_on_ctrl_c_with_its_summary_as_ping(chain: Chain, helper_path: str) -> None:
    server = chain.server_address()
    third_reply = r" icmp_seq=3 "
    env_argv = [*UNBUFFERED, f"BROKERPKG_HELPER={helper_path}"]
    ours = chain.exec_argv("client", [*env_argv, *OURS, "ping", "-i", "0.2", server])
    status, out, err = interrupted(ours, third_reply)
    real = chain.exec_argv("client", ["ping", "-i", "0.2", server])
    real_status, real_out, _ = interrupted(real, third_reply)
    assert status == real_status == 0, err
    assert "\n\n" in out and "\n\n" in real_out, (out, err, real_out)
    summary, real_summary = out.split("\n\n")[1], real_out.split("\n\n")[1]
    assert summary.splitlines()[0] == f"--- {server} ping statistics ---"
    counts = re.search(r"^(\d+) packets transmitted, (\d+) received", summary, re.MULTILINE)
    assert counts is not None, out
    assert 3 <= int(counts.group(2)) <= int(counts.group(1)) <= int(counts.group(2)) + 1
    assert re.sub(r"\d+", "N", summary) == re.sub(r"\d+", "N", real_summary)


@pytest.mark.privileged
def test_multiping_ends_on_ctrl_c_with_its_summaries_as_fping(
    chain: Chain, helper_path: str
) -> None:
    if shutil.which("fping") is None:
        pytest.skip("fping not installed (apt-get install fping)")
    server, hole = chain.server_address(), chain.add_blackhole(2).address(4)
    env_argv = [*UNBUFFERED, f"BROKERPKG_HELPER={helper_path}"]
    ours = chain.exec_argv("client", [*env_argv, *OURS, "multiping", "-c", "1000", "-i", "0.1"])
    third_answer = rf"^{re.escape(server)} +: \[2\], "
    status, out, err = interrupted([*ours, "-W", "0.5", server, hole], third_answer)
    assert status == 1, err  # fping's status: a host did not answer
    lines = out.splitlines()
    assert "" in lines, f"no blank line before the summaries:\n{out}\nstderr:\n{err}"
    blank = lines.index("")
    assert all(SUMMARY.match(line) is None for line in lines[:blank])
    matched = [SUMMARY.match(line) for line in lines[blank + 1 :]]
    rows = [row for row in matched if row is not None]
    assert [row.group(1) for row in rows] == [server, hole] and len(matched) == 2
    sent, received = int(rows[0].group(2)), int(rows[0].group(3))
    assert 3 <= received <= sent <= received + 6  # in flight at the stop: sent, not received
    assert int(rows[1].group(2)) >= sent - 1 and rows[1].group(3) == "0"
    assert lines[blank + 2].endswith("/0/100%")
    # side by side: fping's own Ctrl-C, its status and its summaries
    fping = chain.exec_argv("client", ["fping", "-c", "1000", "-p", "100", "-t", "500"])
    real_status, _, real_err = interrupted([*fping, server, hole], third_answer)
    assert real_status == status
    assert [FLOAT.sub("T", re.sub(r"\d+/\d+/\d+%", "N", line)) for line in lines[blank:]] == [
        FLOAT.sub("T", re.sub(r"\d+/\d+/\d+%", "N", line)) for line in real_err.splitlines()
    ]
    alive, out, err = interrupted([*ours, server], third_answer)
    assert alive == 0, err  # every host answered
    document_status, out, err = interrupted([*ours, "-j", server, hole], None)
    assert document_status == 1, err
    hosts = json.loads(out)["hosts"]  # valid JSON, whenever the stop came
    assert [host["host"] for host in hosts] == [server, hole]
    assert all(host["transmitted"] >= host["sent"] >= host["received"] for host in hosts)
    assert hosts[1]["received"] == 0


# ------------------------------------------------------------------------- terminals


class Tmux:
    """A private tmux server (its own socket) with one window running a script."""

    def __init__(self, directory: Path) -> None:
        self.socket = f"bpk-test-{os.getpid()}-{time.monotonic_ns()}"
        self.directory = directory

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout

    def start(self, commands: str, env: dict[str, str]) -> None:
        script = self.directory / "run.sh"
        exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
        script.write_text(
            f"#!/bin/bash\ncd {shlex.quote(str(REPO))}\n{exports}{commands}\nsleep 120\n"
        )
        script.chmod(0o755)
        self.tmux("new-session", "-d", "-s", "t", "-x", "120", "-y", "40", str(script))

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never matched:\n{text}")
            time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.tmux("kill-server")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed (apt-get install tmux)")
    session = Tmux(tmp_path)
    try:
        yield session
    finally:
        session.close()


def cycle_of(screen: str) -> int:
    match = re.search(r"cycle (\d+)", screen)
    return int(match.group(1)) if match else 0


def terminal_env(helper_path: str) -> dict[str, str]:
    keep = ("PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS", "PYTHONPATH", "LANG")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    return {**env, "BROKERPKG_HELPER": helper_path, "TERM": "xterm"}


def finished(screen: str) -> bool:
    """The script printed the exit status and both terminal settings after it."""
    return re.search(r"exit=\d+\s+-?icanon\s+-?echo\b", screen) is not None


AFTER = 'echo "exit=$?"; stty -a | tr " ;" "\\n\\n" | grep -x -e icanon -e echo -e -icanon -e -echo'


@pytest.mark.privileged
@pytest.mark.parametrize("key", ["q", "C-c"])
def test_the_live_view_redraws_in_place_and_quits_cleanly(
    chain: Chain, responder: Any, helper_path: str, tmux: Tmux, key: str
) -> None:
    target = script_path(responder, chain, 164, 4)
    truth = lab_truth(chain, 4, target)
    command = shlex.join(
        chain.exec_argv(
            "client",
            [sys.executable, "-m", "brokerpkg", "mtr", "-n", "-e", "-i", "0.2", "-Z", "1", target],
        )
    )
    tmux.start(f"{command}; {AFTER}", terminal_env(helper_path))
    first = tmux.wait_for(lambda text: cycle_of(text) >= 3 and target in text)
    later = tmux.wait_for(lambda text: cycle_of(text) >= cycle_of(first) + 2)
    for screen in (first, later):
        lines = screen.splitlines()
        assert lines[0].strip() == "brokerpkg mtr [v0.1.0]"  # drawn from the top each time
        assert sum(1 for line in lines if line.startswith(" Host ")) == 1
        rows = [re.match(r"^ *(\d+)\. (\S+)", line) for line in lines]
        hops = [(int(m.group(1)), m.group(2)) for m in rows if m]
        assert hops == [(n, address or "(waiting") for n, address in enumerate(truth, 1)]
        assert "       [MPLS: Lbl 16 Exp 0 S 1 TTL 1]" in lines
    tmux.tmux("send-keys", "-t", "t", key)
    after = tmux.wait_for(finished)
    assert "exit=0" in after
    assert "Host" not in after  # back on the normal screen
    assert after.split("exit=0", 1)[1].split() == ["icanon", "echo"]  # settings restored


def test_the_live_view_stops_after_count_cycles(helper_path: str, tmux: Tmux) -> None:
    tmux.start(
        f"python3 -m brokerpkg mtr -n -c 3 -i 0.2 127.0.0.1; {AFTER}", terminal_env(helper_path)
    )
    after = tmux.wait_for(finished)
    assert "exit=0" in after and after.split("exit=0", 1)[1].split() == ["icanon", "echo"]


def test_progress_shows_only_on_a_terminal(helper_path: str) -> None:
    if shutil.which("script") is None:
        pytest.skip("script not installed (apt-get install util-linux)")
    hosts = [f"127.0.0.{n}" for n in range(1, 31)]
    args = ["multiping", "-q", "-c", "4", "-i", "0.3", *hosts]
    env = dict(os.environ, BROKERPKG_HELPER=helper_path)
    argv = shlex.join([sys.executable, "-m", "brokerpkg", *args])
    terminal = subprocess.run(
        ["script", "-q", "-e", "-c", argv, "/dev/null"],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = terminal.stdout.decode()  # bytes: keep the carriage returns
    assert terminal.returncode == 0, output
    assert re.search(r"\r\d+/30 hosts done", output)
    assert "\r30/30 hosts done\x1b[K\r\x1b[K127.0.0.1 " in output  # erased before the summaries
    piped = run_cli(args, helper_path)
    assert piped.returncode == 0
    assert "hosts done" not in piped.stderr and "hosts done" not in piped.stdout
    assert piped.stderr == ""
    assert [line.split()[0] for line in piped.stdout.splitlines()] == hosts


@pytest.mark.parametrize(
    "words",
    [
        ["-c", "2", "-i", "0.5", "h1", "h2"],
        ["h1", "-c", "2", "h2", "-i", "0.5"],
        ["h1", "h2", "-c", "2", "-i", "0.5"],
    ],
)
def test_multiping_options_go_before_between_or_after_the_hosts(words: list[str]) -> None:
    """As fping takes them (getopt permutes): ``multiping h1 -c 2 h2`` once failed with
    "unrecognized arguments: h2"."""
    args = parse_arguments(build_parser(), ["multiping", *words])
    assert (args.targets, args.count, args.interval) == (["h1", "h2"], 2, 0.5)
