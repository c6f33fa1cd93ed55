"""The blocking driver (brokerpkg.blocking) and the blocking functions on it
(brokerpkg.sync): the same results as the asyncio functions, the same errors, no
asyncio imported.

Results are compared with times masked: the loopback, and the lab's chain (hop
addresses per TTL, every protocol and family), run in the chain's client namespace.
Failures come from the scripted fake helper (tests/fakes/fake_helper.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lab import Chain
from test_imports import new_modules

import brokerpkg
from brokerpkg import sync
from brokerpkg.blocking import BlockingSession
from brokerpkg.errors import (
    HelperExitedError,
    HelperNotFoundError,
    HelperPrivilegeError,
    InvalidProbeError,
    ProcessError,
    ResponseTimeoutError,
    StateError,
)
from brokerpkg.ping import PingResult
from brokerpkg.protocol import ProbeResult
from brokerpkg.trace import TraceResult

FAKE = Path(__file__).parent / "fakes" / "fake_helper.py"
FAMILIES = pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
PROTOCOLS = pytest.mark.parametrize("protocol", ["icmp", "udp", "tcp"])
LOOPBACK = {4: "127.0.0.1", 6: "::1"}


def fake(scenario: str, *arguments: str) -> list[str]:
    return [sys.executable, str(FAKE), scenario, *arguments]


def masked_probe(result: ProbeResult) -> dict[str, Any]:
    """A probe result without its round-trip time."""
    return {**result._asdict(), "time_ms": None}


def masked_ping(result: PingResult) -> dict[str, Any]:
    return {
        "host": result.host,
        "address": result.address,
        "probes": [masked_probe(probe) for probe in result.probes],
    }


def masked_trace(result: TraceResult) -> dict[str, Any]:
    """The trace without times: per hop, its probes' outcomes and its responders."""
    return {
        "host": result.host,
        "destination": result.destination,
        "range": [result.first_ttl, result.max_ttl],
        "protocol": result.protocol,
        "flow": result.flow,
        "hops": [
            {
                "ttl": hop.ttl,
                "probes": [masked_probe(probe) for probe in hop.probes],
                "responders": {
                    address: [list(responder.answers), responder.name]
                    for address, responder in hop.responders.items()
                },
            }
            for hop in result.hops
        ],
    }


# ----------------------------------------------------------------------------- the loopback


@FAMILIES
def test_probe_gives_what_the_session_gives(helper_path: str, family: int) -> None:
    target = LOOPBACK[family]
    options: dict[str, Any] = {
        "ttl": 5,
        "protocol": "udp",
        "port": 33434,
        "details": True,
        "timeout": 1.0,
    }

    async def on_asyncio() -> ProbeResult:
        async with brokerpkg.Session(helper_path) as session:
            return await session.probe(target, **options)

    expected = asyncio.run(on_asyncio())
    got = sync.probe(target, helper=helper_path, **options)
    assert masked_probe(got) == masked_probe(expected)
    assert got.success and got.reply_ttl is not None


@FAMILIES
def test_ping_and_multiping_give_what_the_async_ones_give(helper_path: str, family: int) -> None:
    target = LOOPBACK[family]
    options: dict[str, Any] = {"count": 3, "interval": 0.05, "timeout": 1.0, "payload_size": 100}
    expected = asyncio.run(brokerpkg.ping(target, helper=helper_path, **options))
    got = sync.ping(target, helper=helper_path, **options)
    assert masked_ping(got) == masked_ping(expected)
    assert got.received == 3

    hosts = ["127.0.0.1", "::1", "127.0.0.3", "localhost"]
    expected_many = asyncio.run(
        brokerpkg.multiping(hosts, count=2, interval=0.05, concurrency=2, helper=helper_path)
    )
    events: list[tuple[str, int, int, int]] = []
    got_many = sync.multiping(
        hosts,
        count=2,
        interval=0.05,
        concurrency=2,
        helper=helper_path,
        progress=lambda event: events.append((event.host, event.sequence, event.done, event.total)),
    )
    assert [masked_ping(result) for result in got_many] == [
        masked_ping(result) for result in expected_many
    ]
    assert [done for _, _, done, _ in events] == list(range(1, 9))
    assert {total for *_, total in events} == {8}


def test_ping_paces_its_probes_by_the_interval(helper_path: str) -> None:
    began = time.monotonic()
    sync.ping("127.0.0.1", count=4, interval=0.2, helper=helper_path)
    elapsed = time.monotonic() - began
    assert 0.6 <= elapsed < 3.0  # three intervals, plus start-up on a loaded machine


def test_multiping_runs_at_most_concurrency_hosts_at_once(helper_path: str) -> None:
    # two at a time, each 2 probes 0.2 s apart: two rounds of about 0.2 s
    began = time.monotonic()
    results = sync.multiping(
        ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"],
        count=2,
        interval=0.2,
        concurrency=2,
        helper=helper_path,
    )
    elapsed = time.monotonic() - began
    assert [result.address for result in results] == [f"127.0.0.{n}" for n in range(1, 5)]
    assert all(result.is_alive for result in results)
    assert 0.4 <= elapsed < 3.0


@FAMILIES
def test_traceroute_gives_what_the_async_one_gives(helper_path: str, family: int) -> None:
    options: dict[str, Any] = {"max_ttl": 4, "timeout": 1.0, "resolve_names": True}
    target = LOOPBACK[family]
    expected = asyncio.run(brokerpkg.traceroute(target, helper=helper_path, **options))
    got = sync.traceroute(target, helper=helper_path, **options)
    assert masked_trace(got) == masked_trace(expected)
    assert got.reached and got.distance == 1


def test_bad_arguments_fail_before_any_helper_runs() -> None:
    nowhere = "/nonexistent/brokerpkg-helper"
    with pytest.raises(ValueError, match="count"):
        sync.ping("127.0.0.1", count=0, helper=nowhere)
    with pytest.raises(ValueError, match="max_ttl"):
        sync.traceroute("127.0.0.1", first_ttl=5, max_ttl=4, helper=nowhere)
    with pytest.raises(ValueError, match="ttl"):
        sync.probe("127.0.0.1", ttl=0, helper=nowhere)
    with pytest.raises(TypeError, match="one str"):
        sync.multiping("127.0.0.1", helper=nowhere)
    with pytest.raises(TypeError, match="helper= instead of session="):
        sync.traceroute("127.0.0.1", session=object(), helper=nowhere)
    with pytest.raises(HelperNotFoundError):
        sync.ping("127.0.0.1", helper=nowhere)


# ----------------------------------------------------------------------------- the lab


LAB_PROGRAM = """
import asyncio, json, sys
sys.path.insert(0, {tests!r})
import brokerpkg
from brokerpkg import sync
from test_blocking import masked_trace

helper, target, protocol = sys.argv[1:4]
options = dict(timeout=1.0, protocol=protocol, helper=helper, max_ttl=8)
blocking = sync.traceroute(target, **options)
on_asyncio = asyncio.run(brokerpkg.traceroute(target, **options))
print(json.dumps([masked_trace(blocking), masked_trace(on_asyncio)]))
"""


@FAMILIES
@PROTOCOLS
def test_the_chain_is_traced_as_the_async_traceroute_traces_it(
    chain: Chain, helper_path: str, family: int, protocol: str
) -> None:
    target = chain.server_address(family)
    program = LAB_PROGRAM.format(tests=str(Path(__file__).parent))
    done = chain.python("client", program, helper_path, target, protocol, timeout=60)
    blocking, on_asyncio = json.loads(done.stdout.splitlines()[-1])
    assert blocking == on_asyncio
    hops = [next(iter(hop["responders"]), None) for hop in blocking["hops"]]
    assert hops == chain.path(family)


# ----------------------------------------------------------------------------- failures


def test_a_helper_that_exits_fails_the_probe_with_its_status_and_last_word() -> None:
    with BlockingSession(command=fake("exit-after", "--count", "1")) as session:
        with pytest.raises(HelperExitedError) as caught:
            session.probe("127.0.0.1")
        assert caught.value.returncode == 3
        assert caught.value.stderr_line
        with pytest.raises(HelperExitedError):
            session.probe("127.0.0.1")  # the failure stays


def test_a_silent_helper_times_out_after_the_timeout_and_the_grace() -> None:
    with BlockingSession(command=fake("silent"), probe_grace=0.2) as session:
        began = time.monotonic()
        with pytest.raises(ResponseTimeoutError):
            session.probe("127.0.0.1", timeout=0.3)
        elapsed = time.monotonic() - began
    assert 0.5 <= elapsed < 5.0  # 0.3 + 0.2, then a grace for the confirming question


def test_privilege_refused_replies_and_state_errors() -> None:
    with pytest.raises(HelperPrivilegeError):
        BlockingSession(command=fake("privilege")).open()
    with pytest.raises(ProcessError, match="send-probe"):
        BlockingSession(command=fake("nosend")).open()
    with BlockingSession(command=fake("invalid")) as session, pytest.raises(InvalidProbeError):
        session.probe("127.0.0.1")
    session = BlockingSession(command=fake("echo"))
    with pytest.raises(StateError):
        session.probe("127.0.0.1")
    session.open()
    session.close()
    with pytest.raises(StateError):
        session.probe("127.0.0.1")
    with pytest.raises(ValueError, match="not both"):
        BlockingSession("/x", command=["/x"])


def test_probes_beyond_the_in_flight_limit_wait_for_a_slot() -> None:
    with BlockingSession(command=fake("echo"), max_in_flight=2) as session:
        template = session.template("127.0.0.1", brokerpkg.protocol.make_probe_options())
        requests = []
        for _ in range(5):
            requests.append(session.start(template))  # the third waits for an answer
            assert session.in_flight <= 2
        finished: set[object] = set()
        while len(finished) < 5:
            finished.update(session.wait())  # those answered while waiting come too
        assert finished == set(requests)
        assert all(session.result(request).success for request in requests)


def test_close_kills_and_reaps_the_helper(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    session = BlockingSession(command=fake("echo", "--pidfile", str(pidfile))).open()
    pid = int(pidfile.read_text())
    session.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# ----------------------------------------------------------------------------- imports


def test_the_blocking_functions_never_import_asyncio(helper_path: str) -> None:
    code = f"""
from brokerpkg import sync
helper = {helper_path!r}
assert sync.probe("127.0.0.1", helper=helper).success
assert sync.ping("127.0.0.1", count=2, interval=0.01, helper=helper).is_alive
assert all(r.is_alive for r in sync.multiping(["127.0.0.1", "::1"], count=1, helper=helper))
assert sync.traceroute("127.0.0.1", max_ttl=2, resolve_names=True, helper=helper).reached
"""
    loaded = new_modules(code)
    assert "asyncio" not in loaded
    assert "brokerpkg.session" not in loaded
