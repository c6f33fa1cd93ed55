"""Our helper side by side with the reference, Debian's mtr-packet 0.95, in the lab.

Three clients see both: ``mtr -r`` (through ``MTR_PACKET``), the raw pipe protocol
(a corpus of well-formed requests, replies compared with round-trip times masked), and
the real ``mtrpacket`` package.  Each must see the same thing through either helper,
and that thing must be the lab's truth.  SCTP is left out: mtr-packet needs a kernel
SCTP stack, which this kernel lacks (its check-support says ``sctp no``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from helperio import words
from lab.topology import Chain

pytestmark = pytest.mark.privileged

MTR = "/usr/bin/mtr"
MTR_PACKET = "/usr/bin/mtr-packet"
FAMILIES = (4, 6)
HOP_LINE = re.compile(r"^\s*(\d+)\.\|--\s+(\S+)")
MPLS_HOPS = [{"mpls": [[16, 0, 0, 1], [1048575, 7, 1, 255]]}, {"mpls": [[24001, 3, 1, 9]]}]
# Targets answer TCP with a reset: after a SYN-ACK the responder resets our ACK at once,
# and mtr-packet 0.95 then reports "unexpected-error errno 104" (ECONNRESET) when the
# reset beats it to the connected socket (ours reports the SYN-ACK: see
# test_helper_lab.py).  A RST to the SYN is a reply for both.
TARGET = {"hops": MPLS_HOPS, "tcp": "rst"}
# mtr-packet 0.95 also reports a bare "no-route" for 1 TCP probe in 5 or so when the
# time-exceeded comes from the responder's virtual hops (it takes the connect error
# without the ICMP error that names the hop); the kernel's routers are fine.  So TCP is
# compared through the real routers only.
TCP_VIRTUAL_TTLS = (4, 5)


@pytest.fixture(scope="module")
def reference() -> str:
    if not (os.access(MTR_PACKET, os.X_OK) and os.access(MTR, os.X_OK)):
        pytest.skip("mtr-packet/mtr not installed (apt-get install mtr-tiny)")
    return MTR_PACKET


@pytest.fixture
def helpers(reference: str, helper_path: str) -> dict[str, str]:
    return {"ours": helper_path, "mtr-packet": reference}


def ip_word(family: int) -> str:
    return "ip-4" if family == 4 else "ip-6"


# --------------------------------------------------------------------------- mtr -r


def mtr_hops(chain: Chain, helper: str, args: list[str], target: str) -> list[tuple[int, str]]:
    """``mtr -r -n -c 2`` from the client through ``helper``: (hop number, host) rows."""
    env = dict(os.environ, MTR_PACKET=helper)
    res = chain.run(
        "client",
        [MTR, "-r", "-n", "-c", "2", "-i", "0.1", "-G", "0.5", *args, target],
        env=env,
        check=False,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    rows = [HOP_LINE.match(line) for line in res.stdout.splitlines()]
    return [(int(m.group(1)), m.group(2)) for m in rows if m]


@pytest.mark.parametrize("mode", [[], ["-u"], ["-T", "-P", "80"]], ids=["icmp", "udp", "tcp"])
@pytest.mark.parametrize("family", FAMILIES, ids=["ipv4", "ipv6"])
def test_mtr_report_shows_the_same_hops_through_both_helpers(
    chain: Chain, responder: Any, helpers: dict[str, str], mode: list[str], family: int
) -> None:
    target = chain.virtual_target(50, family)
    responder.set(target, **TARGET)
    truth = [
        *chain.path(family)[:3],
        chain.virtual_hop(1, family),
        chain.virtual_hop(2, family),
        target,
    ]
    if "-T" in mode:  # see TCP_VIRTUAL_TTLS
        target = chain.server_address(family)
        truth = chain.path(family)
    seen = {
        name: mtr_hops(chain, path, [f"-{family}", *mode], target) for name, path in helpers.items()
    }
    assert seen["ours"] == seen["mtr-packet"] == list(enumerate(truth, start=1))


# --------------------------------------------------------------------------- the pipe


def corpus(chain: Chain, responder: Any) -> tuple[list[str], dict[int, str]]:
    """Well-formed requests into the lab and the replies the lab's truth calls for."""
    hole = chain.add_blackhole(2)
    requests: list[str] = []
    truth: dict[int, str] = {}
    labels = ["mpls 16,0,0,1,1048575,7,1,255", "mpls 24001,3,1,9"]

    def add(family: int, dst: str, args: str, expected: str) -> None:
        token = len(requests) + 1
        requests.append(f"{token} send-probe {ip_word(family)} {dst} {args}")
        truth[token] = f"{token} {expected}"

    for fam in FAMILIES:
        ip = ip_word(fam)
        target = chain.virtual_target(51, fam)
        unreachable = chain.virtual_target(52, fam)
        responder.set(target, **TARGET)
        responder.set(unreachable, answer="unreachable")
        server = chain.server_address(fam)
        for proto_args in (
            "protocol icmp",
            "protocol udp port 33434",
            "protocol tcp port 80",
            "protocol udp port 53 size 100 tos 40 bit-pattern 165",
            "protocol icmp size 200 bit-pattern 255",
        ):
            for ttl in range(1, 8):
                if "tcp" in proto_args and ttl in TCP_VIRTUAL_TTLS:
                    continue
                if ttl <= 3:
                    hop = f"ttl-expired {ip} {chain.hop_address(ttl, fam)} round-trip-time N"
                elif ttl <= 5:
                    hop = (
                        f"ttl-expired {ip} {chain.virtual_hop(ttl - 3, fam)} "
                        f"round-trip-time N {labels[ttl - 4]}"
                    )
                else:
                    hop = f"reply {ip} {target} round-trip-time N"
                add(fam, target, f"{proto_args} ttl {ttl} timeout 2", hop)
            add(fam, server, f"{proto_args} timeout 2", f"reply {ip} {server} round-trip-time N")
            add(fam, hole.address(fam), f"{proto_args} timeout 1", "no-reply")
            if "tcp" not in proto_args:
                # (for TCP mtr-packet races the kernel's connect error against the ICMP
                # error and prints a bare no-route half of the time)
                add(
                    fam,
                    unreachable,
                    f"{proto_args} timeout 2",
                    f"no-route {ip} {unreachable} round-trip-time N",
                )
        add(
            fam,
            server,
            "ttl 2 timeout 2",
            f"ttl-expired {ip} {chain.hop_address(2, fam)} round-trip-time N",
        )
    return requests, truth


def test_same_reply_words_as_mtr_packet_for_a_corpus(
    chain: Chain, responder: Any, helpers: dict[str, str]
) -> None:
    requests, truth = corpus(chain, responder)
    seen = {}
    for name, path in helpers.items():
        res = chain.run(
            "client", [path], input="".join(f"{r}\n" for r in requests), check=False, timeout=60
        )
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        seen[name] = {int(line.split()[0]): words(line) for line in lines}
        assert len(seen[name]) == len(lines) == len(requests), name
    assert {"ours": seen["ours"], "mtr-packet": seen["mtr-packet"]} == {
        "ours": truth,
        "mtr-packet": truth,
    }


# --------------------------------------------------------------------------- mtrpacket

MTRPACKET_PROGRAM = """
import asyncio, json, sys
import mtrpacket

async def main(probes):
    async with mtrpacket.MtrPacket() as mtr:
        results = await asyncio.gather(*(mtr.probe(host, **args) for host, args in probes))
    print(json.dumps([[r.success, r.result, r.responder, [list(m) for m in r.mpls],
                       r.time_ms is not None] for r in results]))

asyncio.run(main(json.loads(sys.argv[1])))
"""


def test_mtrpacket_gets_the_same_results_through_both_helpers(
    chain: Chain, responder: Any, helpers: dict[str, str]
) -> None:
    pytest.importorskip("mtrpacket")
    hole = chain.add_blackhole(2)
    probes: list[tuple[str, dict[str, Any]]] = []
    expected: list[list[Any]] = []
    labels: list[list[list[Any]]] = [
        [[16, 0, False, 1], [1048575, 7, True, 255]],
        [[24001, 3, True, 9]],
    ]
    for fam in FAMILIES:
        target = chain.virtual_target(53, fam)
        responder.set(target, **TARGET)
        for proto, port in (("icmp", None), ("udp", 33434), ("tcp", 80)):
            for ttl in range(1, 7):
                if proto == "tcp" and ttl in TCP_VIRTUAL_TTLS:
                    continue
                args = {"ip_version": fam, "ttl": ttl, "protocol": proto, "timeout": 2}
                if port is not None:
                    args["port"] = port
                probes.append((target, args))
                if ttl <= 3:
                    expected.append([False, "ttl-expired", chain.hop_address(ttl, fam), [], True])
                elif ttl <= 5:
                    expected.append(
                        [
                            False,
                            "ttl-expired",
                            chain.virtual_hop(ttl - 3, fam),
                            labels[ttl - 4],
                            True,
                        ]
                    )
                else:
                    expected.append([True, "reply", target, [], True])
            probes.append(
                (
                    hole.address(fam),
                    {"protocol": proto, "timeout": 1, **({"port": port} if port else {})},
                )
            )
            expected.append([False, "no-reply", None, [], False])
    seen = {}
    for name, path in helpers.items():
        res = chain.run(
            "client",
            [sys.executable, "-c", MTRPACKET_PROGRAM, json.dumps(probes)],
            env=dict(os.environ, MTR_PACKET=path),
            check=False,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        seen[name] = json.loads(res.stdout)
    assert seen["ours"] == expected
    assert seen["mtr-packet"] == expected


# --------------------------------------------------------------------------- drop-in

REPO = Path(__file__).resolve().parent.parent
DROP_IN_PROGRAM = """
import asyncio, json, re, sys
import mtrpacket

async def main(probes):
    async with mtrpacket.MtrPacket() as mtr:
        results = await asyncio.gather(*(mtr.probe(host, **args) for host, args in probes))
    for number, result in enumerate(results):
        success, reply, time_ms, responder, mpls = result  # five fields, as mtrpacket's
        assert isinstance(result, mtrpacket.ProbeResult) and result._fields == (
            "success", "result", "time_ms", "responder", "mpls")
        print(number, re.sub(r"time_ms=[0-9.]+", "time_ms=T", repr(result)))

asyncio.run(main(json.loads(sys.argv[1])))
"""
"""An mtrpacket program: every probe at once, then one line per result (times masked)."""


def drop_in_run(chain: Chain, module: str, helper: str, probes: list[Any]) -> list[str]:
    """The lines DROP_IN_PROGRAM prints in the client namespace with ``import mtrpacket``
    (module 'mtrpacket') or ``import brokerpkg as mtrpacket`` ('brokerpkg'), its helper
    given by MTR_PACKET."""
    program = DROP_IN_PROGRAM
    if module == "brokerpkg":
        program = program.replace("import mtrpacket\n", "import brokerpkg as mtrpacket\n", 1)
    res = chain.run(
        "client",
        [sys.executable, "-c", program, json.dumps(probes)],
        env=dict(os.environ, MTR_PACKET=helper, PYTHONPATH=str(REPO)),
        check=False,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    lines: list[str] = res.stdout.splitlines()
    return lines


def differences(seen: list[str], expected: list[str]) -> list[tuple[str, str]]:
    """(printed, expected) for each line that is not what was expected."""
    return [(got, want) for got, want in zip(seen, expected, strict=True) if got != want]


def result_text(success: bool, result: str, responder: str | None = None, mpls: str = "[]") -> str:
    """mtrpacket's repr of a result, time masked (None without a responder)."""
    time_ms = "T" if responder else "None"
    return (
        f"ProbeResult(success={success}, result={result!r}, time_ms={time_ms}, "
        f"responder={responder!r}, mpls={mpls})"
    )


REFUSED_BY_BOTH: list[dict[str, object]] = [
    {"protocol": "gre"},
    {"size": 100000},
    {"ttl": 1.5},
    {"protocol": "ICMP"},
    {"protocol": "udp", "local_port": 1023},
    {"timeout": "1e1"},
]
"""Arguments that mtr-packet 0.95 and our helper both answer with invalid-argument, in
both families (mtr-packet takes IPv6 probes of 9001 bytes and more, not IPv4 ones)."""
HELPERS_DIFFER: list[tuple[dict[str, object], str, str]] = [
    ({"ttl": 0}, "ttl-expired from hop 1", "invalid-argument"),
    ({"timeout": 0.5}, "invalid-argument", "reply"),
    ({"protocol": "sctp"}, "invalid-argument", "reply"),
]
"""Arguments the two helpers judge differently (mtr-packet 0.95's answer, ours): TTL 0
is sent as 1 by mtr-packet; fractional timeouts and SCTP (without a kernel SCTP stack)
are ours alone."""


def drop_in_corpus(chain: Chain, responder: Any) -> tuple[list[Any], list[str]]:
    """Probes (host, mtrpacket keyword arguments) both helpers answer alike, and what the
    lab's truth says mtrpacket prints for each."""
    hole = chain.add_blackhole(2)
    probes: list[Any] = []
    expected: list[str] = []
    labels = [
        "[Mpls(label=16, traffic_class=0, bottom_of_stack=False, ttl=1), "
        "Mpls(label=1048575, traffic_class=7, bottom_of_stack=True, ttl=255)]",
        "[Mpls(label=24001, traffic_class=3, bottom_of_stack=True, ttl=9)]",
    ]

    def add(host: str, args: dict[str, Any], text: str) -> None:
        probes.append((host, args))
        expected.append(f"{len(expected)} {text}")

    for fam in FAMILIES:
        target = chain.virtual_target(56, fam)
        unreachable = chain.virtual_target(57, fam)
        responder.set(target, **TARGET)
        responder.set(unreachable, answer="unreachable")
        server = chain.server_address(fam)
        for proto, extra in (("icmp", {}), ("udp", {"port": 33434})):
            for ttl in range(1, 7):
                args = {"ip_version": fam, "protocol": proto, "ttl": ttl, "timeout": 2, **extra}
                if ttl <= 3:
                    text = result_text(False, "ttl-expired", chain.hop_address(ttl, fam))
                elif ttl <= 5:
                    hop = chain.virtual_hop(ttl - 3, fam)
                    text = result_text(False, "ttl-expired", hop, labels[ttl - 4])
                else:
                    text = result_text(True, "reply", target)
                add(target, args, text)
            add(
                unreachable,
                {"protocol": proto, "timeout": 2},
                result_text(False, "no-route", unreachable),
            )
        add(
            target,
            {
                "protocol": "udp",
                "port": 53,
                "size": 100,
                "tos": 40,
                "bit_pattern": 165,
                "timeout": 2,
            },
            result_text(True, "reply", target),
        )
        for ttl in range(1, 5):  # TCP through the kernel's routers (see TCP_VIRTUAL_TTLS)
            text = (
                result_text(True, "reply", server)
                if ttl == 4
                else result_text(False, "ttl-expired", chain.hop_address(ttl, fam))
            )
            add(server, {"protocol": "tcp", "port": 80, "ttl": ttl, "timeout": 2}, text)
        for proto in ("icmp", "udp", "tcp"):
            add(
                hole.address(fam), {"protocol": proto, "timeout": 1}, result_text(False, "no-reply")
            )
        for args in REFUSED_BY_BOTH:
            add(target, {"timeout": 2, **args}, result_text(False, "invalid-argument"))
    return probes, expected


def test_an_mtrpacket_program_prints_the_same_with_brokerpkg_in_its_place(
    chain: Chain, responder: Any, helpers: dict[str, str]
) -> None:
    pytest.importorskip("mtrpacket")
    probes, expected = drop_in_corpus(chain, responder)
    reference = drop_in_run(chain, "mtrpacket", helpers["mtr-packet"], probes)
    ours = drop_in_run(chain, "brokerpkg", helpers["ours"], probes)
    assert len(reference) == len(ours) == len(expected)
    assert {
        "mtrpacket + mtr-packet": differences(reference, expected),
        "brokerpkg + our helper": differences(ours, expected),
    } == {"mtrpacket + mtr-packet": [], "brokerpkg + our helper": []}


def test_where_the_helpers_differ_both_libraries_print_what_the_helper_says(
    chain: Chain, responder: Any, helpers: dict[str, str]
) -> None:
    pytest.importorskip("mtrpacket")
    target = chain.virtual_target(58, 4)
    responder.set(target, **TARGET)
    probes = [(target, {"timeout": 2, **args}) for args, _, _ in HELPERS_DIFFER]
    seen = {
        (module, name): drop_in_run(chain, module, path, probes)
        for module in ("mtrpacket", "brokerpkg")
        for name, path in helpers.items()
    }
    # the library makes no difference: each helper's answers come through unchanged
    assert seen["brokerpkg", "mtr-packet"] == seen["mtrpacket", "mtr-packet"]
    assert seen["brokerpkg", "ours"] == seen["mtrpacket", "ours"]
    words = {
        "ttl-expired from hop 1": result_text(False, "ttl-expired", chain.hop_address(1, 4)),
        "invalid-argument": result_text(False, "invalid-argument"),
        "reply": result_text(True, "reply", target),
    }
    assert seen["mtrpacket", "mtr-packet"] == [
        f"{number} {words[theirs]}" for number, (_, theirs, _) in enumerate(HELPERS_DIFFER)
    ]
    assert seen["brokerpkg", "ours"] == [
        f"{number} {words[ours]}" for number, (_, _, ours) in enumerate(HELPERS_DIFFER)
    ]


KILL_PROGRAM = """
import asyncio, os, signal, sys, time
import brokerpkg as mtrpacket

async def main(target):
    async with mtrpacket.MtrPacket() as mtr:
        pid = mtr.process.pid
        print("exe", os.readlink("/proc/{}/exe".format(pid)))
        probes = [asyncio.ensure_future(mtr.probe(target, timeout=30)) for _ in range(3)]
        await asyncio.sleep(0)  # each probe's request is queued
        await mtr.check_support("no-such-feature")  # answered after the helper read them
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        for error in await asyncio.gather(*probes, return_exceptions=True):
            print(type(error).__name__, error.returncode, time.monotonic() - started < 5)

asyncio.run(main(sys.argv[1]))
"""


def test_killing_the_helper_of_mtr_packet_fails_its_pending_probes_at_once(
    chain: Chain, helper_path: str
) -> None:
    hole = chain.add_blackhole(2)
    res = chain.run(
        "client",
        [sys.executable, "-c", KILL_PROGRAM, hole.address(4)],
        env=dict(os.environ, MTR_PACKET=helper_path, PYTHONPATH=str(REPO)),
        check=False,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"exe {os.path.realpath(helper_path)}",
        *["HelperExitedError -9 True"] * 3,
    ]
