"""Session against scripted fake helpers (tests/fakes/fake_helper.py) and scripted streams.

No packet is sent by these tests: the fakes only print replies.  Addresses stay within
127.0.0.0/8 and ::1 all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from brokerpkg import (
    FeatureNotSupportedError,
    HelperExitedError,
    HelperNotFoundError,
    HelperPrivilegeError,
    HostResolveError,
    InvalidProbeError,
    ProcessError,
    ProtocolError,
    ResponseTimeoutError,
    Session,
    StateError,
)
from brokerpkg.locate import capability_fix
from brokerpkg.protocol import FEATURES

FAKE = Path(__file__).parent / "fakes" / "fake_helper.py"
LIMIT = 20.0  # no test may take longer than this


def fake(scenario: str, *arguments: str) -> list[str]:
    """argv running the fake helper with ``scenario``."""
    return [sys.executable, str(FAKE), scenario, *arguments]


def open_fds() -> set[str]:
    """What this process's descriptors point at (pipes, sockets, files)."""
    targets = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used is gone
            targets.add(f"{name}->{os.readlink(f'/proc/self/fd/{name}')}")
    return targets


def process_state(pid: int) -> str | None:
    """The State letter of /proc/PID/status, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split()[1]
    except FileNotFoundError:
        return None
    return None


def sent_lines(log: Path) -> list[str]:
    """Request lines the fake received."""
    return log.read_text().splitlines() if log.exists() else []


def sent_probes(log: Path) -> list[str]:
    """The send-probe request lines the fake received."""
    return [line for line in sent_lines(log) if line.split()[1:2] == ["send-probe"]]


@pytest.fixture
async def echo(tmp_path: Path) -> AsyncIterator[Session]:
    session = Session(command=fake("echo", "--log", str(tmp_path / "log")))
    async with asyncio.timeout(LIMIT), session:
        yield session


# ------------------------------------------------------------------ open and features


async def test_open_reads_every_feature_once(echo: Session, tmp_path: Path) -> None:
    assert echo.is_open
    assert echo.version == "brokerpkg-0.1.0"
    assert echo.features["sockets"] == "raw"
    assert echo.max_in_flight == 131072
    assert await echo.check_support("details") is True
    assert await echo.check_support("sctp") is False
    assert await echo.feature_value("max-probes") == "131072"
    queries = [line for line in sent_lines(tmp_path / "log") if "check-support" in line]
    assert len(queries) == len(FEATURES)


async def test_unknown_feature_is_asked_and_answered_no(echo: Session) -> None:
    assert await echo.feature_value("hex-payload") == "no"
    with pytest.raises(ValueError, match="printable"):
        await echo.feature_value("two words")


async def test_mtr_packet_profile_gets_default_flow_limit() -> None:
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("echo", "--features", "mtr")) as session,
    ):
        assert session.version == "0.95"
        assert session.features["details"] == "no"
        assert session.features["fractional-timeout"] == "no"
        assert session.max_in_flight == 1024


async def test_max_in_flight_argument_wins() -> None:
    async with asyncio.timeout(LIMIT), Session(command=fake("echo"), max_in_flight=3) as session:
        assert session.max_in_flight == 3


async def test_probe_result_carries_request_and_details(echo: Session) -> None:
    result = await echo.probe("127.0.0.1", details=True, ttl=7)
    assert result.success
    assert result.result == "reply"
    assert result.time_ms == 0.25
    assert (result.responder, result.target, result.ttl, result.protocol) == (
        "127.0.0.1",
        "127.0.0.1",
        7,
        "icmp",
    )
    assert (result.reply_ttl, result.icmp_type, result.icmp_code, result.reply_size) == (
        64,
        0,
        0,
        84,
    )
    v6 = await echo.probe("::1", protocol="tcp")
    assert (v6.responder, v6.port, v6.reply_ttl) == ("::1", 80, None)


async def test_host_names_are_resolved_once(echo: Session, tmp_path: Path) -> None:
    first = await echo.probe("localhost", ip_version=4)
    second = await echo.probe("localhost", ip_version=4)
    assert first.target == second.target == "127.0.0.1"
    probes = sent_probes(tmp_path / "log")
    assert len(probes) == 2
    assert all(line.endswith("send-probe ip-4 127.0.0.1") for line in probes)


async def test_fractional_timeout_is_sent_when_supported(echo: Session, tmp_path: Path) -> None:
    await echo.probe("127.0.0.1", timeout=0.25)
    first = len(FEATURES) + 1  # the token after the feature queries at open
    assert sent_probes(tmp_path / "log") == [f"{first} send-probe ip-4 127.0.0.1 timeout 0.25"]


async def test_fractional_timeout_is_rounded_up_for_mtr_packet(tmp_path: Path) -> None:
    log = tmp_path / "log"
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("echo", "--features", "mtr", "--log", str(log))) as session,
    ):
        await session.probe("127.0.0.1", timeout=0.25)
    first = len(FEATURES) + 1
    assert sent_probes(log) == [f"{first} send-probe ip-4 127.0.0.1 timeout 1"]


@pytest.mark.parametrize(
    ("options", "feature"),
    [
        ({"details": True}, "details"),
        ({"local_device": "lo"}, "local-device"),
        ({"protocol": "sctp"}, "sctp"),
        ({"flow": 3}, "flow"),
    ],
)
async def test_options_mtr_packet_lacks_are_refused_before_sending(
    tmp_path: Path, options: dict[str, object], feature: str
) -> None:
    log = tmp_path / "log"
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("echo", "--features", "mtr", "--log", str(log))) as session,
    ):
        with pytest.raises(FeatureNotSupportedError, match=feature) as caught:
            await session.probe("127.0.0.1", **options)  # type: ignore[arg-type]
        assert caught.value.feature == feature
        assert await session.probe("127.0.0.1")  # the session goes on
    assert len(sent_probes(log)) == 1


async def test_flow_goes_on_the_wire_only_when_given(echo: Session, tmp_path: Path) -> None:
    assert (await echo.probe("127.0.0.1", ttl=3, flow=7)).success
    assert (await echo.probe("127.0.0.1", ttl=3, flow=0)).success
    assert (await echo.probe("127.0.0.1", ttl=3)).success
    assert await echo.probe_many(["127.0.0.1", "::1"], protocol="udp", flow=65535)
    lines = [line.split(" ", 1)[1] for line in sent_probes(tmp_path / "log")]
    assert lines == [
        "send-probe ip-4 127.0.0.1 ttl 3 flow 7",
        "send-probe ip-4 127.0.0.1 ttl 3 flow 0",
        "send-probe ip-4 127.0.0.1 ttl 3",
        "send-probe ip-4 127.0.0.1 protocol udp flow 65535",
        "send-probe ip-6 ::1 protocol udp flow 65535",
    ]


async def test_bad_flows_are_refused_and_the_next_probe_goes_out(
    echo: Session, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"^flow must be from 0 to 65535, got 65536$"):
        await echo.probe("127.0.0.1", flow=65536)
    with pytest.raises(ValueError, match=r"^flow must be from 0 to 65535, got -1$"):
        await echo.probe("127.0.0.1", flow=-1)
    with pytest.raises(TypeError, match=r"^flow must be an integer, got bool True$"):
        await echo.probe("127.0.0.1", flow=True)
    with pytest.raises(TypeError, match=r"^flow must be an integer, got str '1'$"):
        await echo.probe_many(["127.0.0.1"], flow="1")
    assert sent_probes(tmp_path / "log") == []
    assert (await echo.probe("127.0.0.1", flow=1)).success
    assert [line.split(" ", 1)[1] for line in sent_probes(tmp_path / "log")] == [
        "send-probe ip-4 127.0.0.1 flow 1"
    ]


async def test_flow_refused_when_helper_says_no(tmp_path: Path) -> None:
    log = tmp_path / "log"
    command = fake("echo", "--feature", "flow=no", "--log", str(log))
    async with asyncio.timeout(LIMIT), Session(command=command) as session:
        with pytest.raises(FeatureNotSupportedError) as caught:
            await session.probe("127.0.0.1", flow=2)
        assert (caught.value.feature, caught.value.value) == ("flow", "no")
        with pytest.raises(FeatureNotSupportedError, match="flow"):
            await session.probe_many(["127.0.0.1"] * 3, flow=2)
        assert sent_probes(log) == []
        assert (await session.probe("127.0.0.1")).success
    assert len(sent_probes(log)) == 1


async def test_mark_refused_when_helper_says_no(echo: Session, tmp_path: Path) -> None:
    with pytest.raises(FeatureNotSupportedError, match="mark"):
        await echo.probe("127.0.0.1", mark=1)
    assert sent_probes(tmp_path / "log") == []


async def test_bad_option_never_reaches_the_helper(echo: Session, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await echo.probe("127.0.0.1", ttl=0)
    with pytest.raises(TypeError, match="port"):
        await echo.probe("127.0.0.1", protocol="udp", port="53")  # type: ignore[arg-type]
    with pytest.raises(HostResolveError, match="not IPv4"):
        await echo.probe("127.0.0.1", local_ip="::1")
    assert sent_probes(tmp_path / "log") == []


async def test_repeated_probe_still_refuses_values_of_the_wrong_type(
    echo: Session, tmp_path: Path
) -> None:
    """Repeated probes skip validation through a cache, but True == 1 == 1.0 must not
    let a bool or a float through where the cached call had an int (or vice versa)."""
    assert (await echo.probe("127.0.0.1", ttl=1, tos=0, timeout=1)).ttl == 1
    assert (await echo.probe("127.0.0.1", ttl=1, tos=0, timeout=1)).ttl == 1
    with pytest.raises(TypeError, match="ttl"):
        await echo.probe("127.0.0.1", ttl=True, tos=0, timeout=1)
    with pytest.raises(TypeError, match="tos"):
        await echo.probe("127.0.0.1", ttl=1, tos=False, timeout=1)
    with pytest.raises(TypeError, match="timeout"):
        await echo.probe("127.0.0.1", ttl=1, tos=0, timeout=True)
    with pytest.raises(TypeError, match="ttl"):
        await echo.probe("127.0.0.1", ttl=1.0, tos=0, timeout=1)  # type: ignore[arg-type]
    assert (await echo.probe("127.0.0.1", details=True)).reply_ttl == 64
    with pytest.raises(TypeError, match="details"):
        await echo.probe("127.0.0.1", details=1)  # type: ignore[arg-type]
    assert len(sent_probes(tmp_path / "log")) == 3


async def test_helper_invalid_argument_raises_invalid_probe_error() -> None:
    async with asyncio.timeout(LIMIT), Session(command=fake("invalid")) as session:
        with pytest.raises(InvalidProbeError, match="ttl-out-of-range") as caught:
            await session.probe("127.0.0.1")
        assert caught.value.reason == "ttl-out-of-range"


async def test_malformed_reply_fails_its_probe_only() -> None:
    async with asyncio.timeout(LIMIT), Session(command=fake("malformed")) as session:
        with pytest.raises(ProtocolError, match="round-trip-time"):
            await session.probe("127.0.0.1")
        assert await session.check_support("icmp")


# ------------------------------------------------------------------ concurrency


async def test_out_of_order_replies_reach_their_callers() -> None:
    targets = [f"127.0.0.{number}" for number in range(1, 6)]
    async with asyncio.timeout(LIMIT), Session(command=fake("reverse", "--count", "5")) as session:
        results = await asyncio.gather(*(session.probe(target) for target in targets))
    assert [result.responder for result in results] == targets
    assert [result.target for result in results] == targets


async def test_flow_control_bounds_probes_in_flight() -> None:
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("delay", "--delay", "0.3"), max_in_flight=2) as session,
    ):
        started = time.monotonic()
        probes = [asyncio.create_task(session.probe("127.0.0.1")) for _ in range(4)]
        await asyncio.sleep(0.15)
        assert session.in_flight == 2
        await asyncio.gather(*probes)
        assert time.monotonic() - started >= 0.55


# ------------------------------------------------------------------ failures


async def test_helper_exit_fails_every_pending_probe_at_once() -> None:
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("exit-after", "--count", "3")) as session,
    ):
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(session.probe(f"127.0.0.{n}", timeout=30) for n in (1, 2, 3)),
            return_exceptions=True,
        )
        assert time.monotonic() - started < 5
        for outcome in outcomes:
            assert isinstance(outcome, HelperExitedError)
            assert outcome.returncode == 3
            assert outcome.stderr_line == "fake-helper: fatal: socket exploded"
            assert "exited with status 3" in str(outcome)
            assert "socket exploded" in str(outcome)
        with pytest.raises(HelperExitedError, match="status 3"):
            await session.probe("127.0.0.1")
        assert session.stderr_lines[-2:] == (
            "fake-helper: first words",
            "fake-helper: fatal: socket exploded",
        )


async def test_helper_that_closes_its_output_is_reported() -> None:
    async with asyncio.timeout(LIMIT), Session(command=fake("close-stdout")) as session:
        with pytest.raises(HelperExitedError, match="closed its output") as caught:
            await session.probe("127.0.0.1", timeout=30)
        assert caught.value.returncode is None


async def test_token_zero_errors_are_recorded_and_named_in_the_timeout() -> None:
    async with asyncio.timeout(LIMIT), Session(command=fake("token0"), probe_grace=0.3) as session:
        with pytest.raises(ResponseTimeoutError, match="command-parse-error"):
            await session.probe("127.0.0.1", timeout=0.2)
        assert "0 command-parse-error" in session.helper_messages
        assert await session.check_support("icmp")  # the reader survived


async def test_garbage_lines_never_stop_the_reader() -> None:
    async with asyncio.timeout(LIMIT), Session(command=fake("garbage")) as session:
        first = await session.probe("127.0.0.1")
        second = await session.probe("127.0.0.2")
        assert (first.responder, second.responder) == ("127.0.0.1", "127.0.0.2")
        messages = session.helper_messages
        assert len(messages) == 16
        assert any("total garbage" in message for message in messages)
        assert any("token not in flight" in message for message in messages)


async def test_silent_helper_hits_the_python_deadline() -> None:
    async with asyncio.timeout(LIMIT), Session(command=fake("silent"), probe_grace=0.3) as session:
        started = time.monotonic()
        with pytest.raises(ResponseTimeoutError, match="no unattributed error") as caught:
            await session.probe("127.0.0.1", timeout=0.2)
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 3
        assert caught.value.deadline == pytest.approx(0.5)
        assert "send-probe ip-4 127.0.0.1" in str(caught.value)
        assert session.in_flight == 1  # the token stays reserved


async def test_deadline_starts_when_the_request_is_written_not_when_queued() -> None:
    # 20,000 probes at once to a helper that takes ~2 s to read them all: each one's
    # deadline (0.2 s + 1 s grace) must start when it is handed to the pipe, so none of
    # them fails although the last ones wait far longer than 1.2 s in the queue
    async with (
        asyncio.timeout(LIMIT),
        Session(
            command=fake("throttle", "--count", "1000", "--delay", "0.1"), probe_grace=1.0
        ) as session,
    ):
        started = time.monotonic()
        results = await asyncio.gather(
            *(session.probe("127.0.0.1", timeout=0.2) for _ in range(20_000))
        )
        assert time.monotonic() - started > 1.5
        assert all(result.success for result in results)


async def test_deadline_uses_the_timeout_the_helper_really_gets() -> None:
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("silent", "--features", "mtr"), probe_grace=0.1) as session,
    ):
        started = time.monotonic()
        with pytest.raises(ResponseTimeoutError):
            await session.probe("127.0.0.1", timeout=0.2)  # sent as 1 second
        assert time.monotonic() - started >= 1.0


async def test_a_reply_left_unread_past_the_deadline_is_no_timeout() -> None:
    # An event loop too busy to read (here: blocked) until long after a probe's deadline
    # (0.1 s + 0.2 s grace), while the helper's reply (sent after 0.1 s) waits in the
    # pipe: the probe gets its reply, not ResponseTimeoutError.
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("delay", "--delay", "0.1"), probe_grace=0.2) as session,
    ):
        probe = asyncio.create_task(session.probe("127.0.0.1", timeout=0.1))
        while session.in_flight == 0:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # the writer task hands it to the pipe
        time.sleep(1.5)  # noqa: ASYNC251 - the busy loop under test
        result = await probe
        assert result.success and result.responder == "127.0.0.1"


async def test_a_helper_that_answers_nothing_fails_a_grace_after_the_deadline() -> None:
    # Past the deadline the session asks the helper a question; a helper silent for a
    # whole grace more (0.3 s) is stuck: the probe fails then, not later.
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_features(reader, writer)
        await reader.read()  # until the session closes, answering nothing

    session, task, _ = await scripted_pair(script)
    async with asyncio.timeout(LIMIT), session:
        started = time.monotonic()
        with pytest.raises(ResponseTimeoutError):
            await session.probe("127.0.0.1", timeout=0.2)
        assert 0.8 <= time.monotonic() - started < 3
    await task


async def test_privilege_failure_says_the_one_fix_once() -> None:
    session = Session(command=fake("privilege"))
    with pytest.raises(HelperPrivilegeError) as caught:
        async with asyncio.timeout(LIMIT):
            await session.open()
    message = str(caught.value)
    assert message.endswith(
        " cannot open its sockets: no privilege for raw sockets (Operation not permitted) "
        "and unprivileged ICMP is off; fix: `sudo brokerpkg setup`"
    )
    assert message.count("fix:") == message.count("sudo") == 1
    assert caught.value.fix == "sudo brokerpkg setup"
    assert "Operation not permitted" in (caught.value.stderr_line or "")
    assert not session.is_open


async def test_helper_without_send_probe_is_refused() -> None:
    session = Session(command=fake("nosend"))
    with pytest.raises(ProcessError, match="send-probe"):
        await session.open()
    with pytest.raises(StateError):
        await session.probe("127.0.0.1")


async def test_helper_that_exits_at_once_is_reported() -> None:
    with pytest.raises(HelperExitedError, match="status 0"):
        await Session(command=["true"]).open()


async def test_missing_helper_is_reported() -> None:
    with pytest.raises(HelperNotFoundError):
        await Session("/nonexistent/brokerpkg-helper").open()
    with pytest.raises(HelperNotFoundError):
        await Session(command=["/nonexistent/brokerpkg-helper"]).open()


# ------------------------------------------------------------------ probe_many


async def test_probe_many_keeps_input_order_and_its_concurrency(tmp_path: Path) -> None:
    log = tmp_path / "log"
    # the fake holds replies until 4 probes arrived, then answers newest first: with
    # more than 4 in flight the order is scrambled, with fewer nothing is ever answered
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("reverse", "--count", "4", "--log", str(log))) as session,
    ):
        hosts = [f"127.0.0.{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 3, 3, 2, 1)]
        results = await session.probe_many(hosts, concurrency=4, ttl=9)
        assert [result.responder for result in results] == hosts
        assert all(result.success and result.ttl == 9 for result in results)
        assert session.in_flight == 0
        assert (await session.probe_many([])) == []
    sent = sent_probes(log)
    assert len(sent) == len(hosts)
    assert all("ttl 9" in line for line in sent)


async def test_probe_many_checks_everything_before_sending(echo: Session, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await echo.probe_many(["127.0.0.1"], concurrency=0)
    with pytest.raises(TypeError, match="colour"):
        await echo.probe_many(["127.0.0.1"], colour="red")
    with pytest.raises(ValueError, match="ttl"):
        await echo.probe_many(["127.0.0.1"], ttl=0)
    with pytest.raises(HostResolveError):
        await echo.probe_many(["127.0.0.1", "::1"], ip_version=4)
    assert sent_probes(tmp_path / "log") == []
    results = await echo.probe_many(["127.0.0.1", "::1"], details=True)
    assert [result.reply_ttl for result in results] == [64, 64]


async def test_probe_many_raises_the_first_failure_and_gives_up_the_rest() -> None:
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("exit-after", "--count", "3")) as session,
    ):
        with pytest.raises(HelperExitedError, match="status 3"):
            await session.probe_many(["127.0.0.1"] * 10, concurrency=5)
        assert session.in_flight == 0
    async with asyncio.timeout(LIMIT), Session(command=fake("invalid")) as session:
        with pytest.raises(InvalidProbeError, match="ttl-out-of-range"):
            await session.probe_many(["127.0.0.1"] * 3)
        # the others were given up: their tokens stay reserved until their replies come
        given_up = session.in_flight
        for _ in range(500):
            if not session.in_flight:
                break
            await asyncio.sleep(0.01)
        assert session.in_flight == 0
        assert session.discarded_replies == given_up


async def test_probe_many_cancelled_keeps_tokens_and_returns_slots() -> None:
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("silent"), max_in_flight=3, probe_grace=0.1) as session,
    ):
        hosts = ["127.0.0.1"] * 5
        task = asyncio.create_task(session.probe_many(hosts, concurrency=2, timeout=0.2))
        await asyncio.sleep(0.05)
        assert session.in_flight == 2  # its own concurrency holds
        other = asyncio.create_task(session.probe_many(hosts, timeout=0.2))
        await asyncio.sleep(0.05)
        assert session.in_flight == 3  # the session's in-flight limit holds
        task.cancel()
        other.cancel()
        await asyncio.gather(task, other, return_exceptions=True)
        assert task.cancelled() and other.cancelled()
        assert session.in_flight == 3  # given up, tokens kept until the deadline
        started = time.monotonic()
        with pytest.raises(ResponseTimeoutError):
            await session.probe("127.0.0.2", timeout=0.2)  # a slot came back
        assert time.monotonic() - started < 1.5


# ------------------------------------------------------------------ cancellation


async def test_cancelled_probe_keeps_its_token_until_the_late_reply(tmp_path: Path) -> None:
    log = tmp_path / "log"
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("delay", "--delay", "0.4", "--log", str(log))) as session,
    ):
        task = asyncio.create_task(session.probe("127.0.0.1"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.in_flight == 1
        cancelled_token = int(sent_probes(log)[-1].split()[0])
        session._engine._next_token = cancelled_token  # white box: force the counter onto it
        other = await session.probe("127.0.0.2")
        assert other.responder == "127.0.0.2"
        tokens = [int(line.split()[0]) for line in sent_probes(log)]
        assert tokens[0] == cancelled_token
        assert tokens[1] != cancelled_token
        await asyncio.sleep(0.5)
        assert session.discarded_replies == 1
        assert session.in_flight == 0


async def test_cancelling_while_waiting_for_a_slot_is_safe() -> None:
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("delay", "--delay", "0.3"), max_in_flight=1) as session,
    ):
        first = asyncio.create_task(session.probe("127.0.0.1"))
        waiting = asyncio.create_task(session.probe("127.0.0.2"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (await first).success
        assert (await session.probe("127.0.0.3")).responder == "127.0.0.3"


async def test_probe_cancelled_before_it_was_sent_is_dropped(tmp_path: Path) -> None:
    log = tmp_path / "log"
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("echo", "--log", str(log)), max_in_flight=1) as session,
    ):
        task = asyncio.create_task(session.probe("127.0.0.1"))
        await asyncio.sleep(0)  # queued for the writer task, not yet written
        assert session.in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.in_flight == 0  # no token kept back: it was never sent
        # its slot came back at once (the only one): the next probe goes out
        assert (await session.probe("127.0.0.2")).responder == "127.0.0.2"
    assert [line.split()[3] for line in sent_probes(log)] == ["127.0.0.2"]


async def test_cancelled_probe_slot_returns_at_its_deadline() -> None:
    async with (
        asyncio.timeout(LIMIT),
        Session(command=fake("silent"), max_in_flight=1, probe_grace=0.1) as session,
    ):
        task = asyncio.create_task(session.probe("127.0.0.1", timeout=0.2))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        started = time.monotonic()
        with pytest.raises(ResponseTimeoutError):
            await session.probe("127.0.0.2", timeout=0.2)
        assert time.monotonic() - started < 1.5


# ------------------------------------------------------------------ close


async def test_close_reaps_the_helper_and_closes_every_descriptor(tmp_path: Path) -> None:
    before = open_fds()
    session = Session(command=fake("echo"))
    async with asyncio.timeout(LIMIT):
        await session.open()
        process = session.process
        assert process is not None
        pid = process.pid
        assert process_state(pid) in ("R", "S")
        assert (await session.probe("127.0.0.1")).success
        await session.close()
    assert process_state(pid) is None  # no zombie: reaped
    assert open_fds() == before
    await session.close()  # twice is fine
    with pytest.raises(StateError, match="closed"):
        await session.probe("127.0.0.1")
    with pytest.raises(StateError):
        await session.open()


async def test_close_fails_pending_probes_promptly() -> None:
    session = Session(command=fake("silent"))
    async with asyncio.timeout(LIMIT):
        await session.open()
        pending = asyncio.create_task(session.probe("127.0.0.1", timeout=60))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await session.close()
        with pytest.raises(ProcessError, match="closed"):
            await pending
        assert time.monotonic() - started < 5


async def test_failed_open_leaves_nothing_behind(tmp_path: Path) -> None:
    before = open_fds()
    pidfile = tmp_path / "pid"
    with pytest.raises(HelperPrivilegeError):
        await Session(command=fake("privilege", "--pidfile", str(pidfile))).open()
    assert process_state(int(pidfile.read_text())) is None
    assert open_fds() == before


async def test_shell_command_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    command = f"{sys.executable} {FAKE} echo --pidfile {pidfile}; echo after"
    async with asyncio.timeout(LIMIT):
        session = Session(command=command, shell=True)
        async with session:
            assert (await session.probe("127.0.0.1")).success
            pid = int(pidfile.read_text())
            assert process_state(pid) in ("R", "S")
    for _ in range(50):
        if process_state(pid) in (None, "Z", "X"):
            break
        await asyncio.sleep(0.02)
    assert process_state(pid) in (None, "Z", "X")


async def test_stderr_flood_does_not_block_and_keeps_only_last_lines() -> None:
    async with asyncio.timeout(LIMIT), Session(command=fake("stderr-flood")) as session:
        assert (await session.probe("127.0.0.1")).success
        await asyncio.sleep(0.1)
        lines = session.stderr_lines
        assert len(lines) == 10
        assert lines[-1] == "last words of the flood"


# ------------------------------------------------------------------ state errors


async def test_state_errors() -> None:
    session = Session(command=fake("echo"))
    with pytest.raises(StateError, match="not open"):
        await session.probe("127.0.0.1")
    with pytest.raises(StateError, match="not open"):
        await session.check_support("icmp")
    async with asyncio.timeout(LIMIT), session:
        with pytest.raises(StateError, match="already"):
            await session.open()


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"helper": "x", "command": ["y"]}, ValueError),
        ({"command": "echo hi"}, ValueError),
        ({"command": ["echo"], "shell": True}, ValueError),
        ({"shell": True}, ValueError),
        ({"command": []}, TypeError),
        ({"command": ["x"], "probe_grace": -1}, ValueError),
        ({"command": ["x"], "max_in_flight": 0}, ValueError),
    ],
)
def test_contradictory_constructor_arguments(
    arguments: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        Session(**arguments)  # type: ignore[arg-type]


# ------------------------------------------------------------------ scripted streams


ScriptedHelper = Callable[[asyncio.StreamReader, asyncio.StreamWriter], "asyncio.Future[None]"]


async def scripted_pair(
    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> tuple[Session, asyncio.Task[object], list[asyncio.StreamWriter]]:
    """A session over a socketpair whose other end runs ``script``."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    their_reader, their_writer = await asyncio.open_connection(sock=theirs)
    task: asyncio.Task[Any] = asyncio.create_task(script(their_reader, their_writer))  # type: ignore[arg-type]
    return (
        Session.from_streams(reader, writer, name="scripted", probe_grace=0.3),
        task,
        [their_writer],
    )


async def answer_features(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> list[bytes]:
    """Answer the feature queries (all ok); return other lines seen."""
    others = []
    answered = 0
    while answered < len(FEATURES):
        line = await reader.readline()
        words = line.split()
        if words[1] == b"check-support":
            writer.write(words[0] + b" feature-support support ok\n")
            answered += 1
        else:
            others.append(line)
    await writer.drain()
    return others


async def test_streams_out_of_order_and_end_of_stream() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_features(reader, writer)
        first = (await reader.readline()).split()[0]
        second = (await reader.readline()).split()[0]
        writer.write(b"0 command-parse-error\n" + second + b" no-reply\n")
        writer.write(first + b" ttl-expired ip-4 127.0.0.9 round-trip-time 77 mpls 1,2,1,3\n")
        await writer.drain()
        await reader.readline()  # a third probe: never answered, the stream ends instead
        writer.close()

    session, task, _ = await scripted_pair(script)
    async with asyncio.timeout(LIMIT), session:
        assert session.process is None
        first, second = await asyncio.gather(session.probe("127.0.0.1"), session.probe("127.0.0.2"))
        assert (first.result, first.responder, first.time_ms) == ("ttl-expired", "127.0.0.9", 0.077)
        assert first.mpls[0].bottom_of_stack is True
        assert second.result == "no-reply"
        assert session.helper_messages == ("0 command-parse-error",)
        with pytest.raises(HelperExitedError, match="scripted closed its output"):
            await session.probe("127.0.0.3")
    await task


async def test_streams_deadline_names_unattributed_errors() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_features(reader, writer)
        await reader.readline()
        writer.write(b"0 command-buffer-overflow\n\xff\xfe\n")
        await writer.drain()
        await reader.read()  # until the session closes

    session, task, _ = await scripted_pair(script)
    async with asyncio.timeout(LIMIT), session:
        with pytest.raises(ResponseTimeoutError) as caught:
            await session.probe("127.0.0.1", timeout=0.1)
        assert "command-buffer-overflow" in str(caught.value)
        assert len(caught.value.helper_messages) == 2
    await task


# ------------------------------------------------------------------ host resolution

AddrInfo = list[tuple[int, int, int, str, tuple[object, ...]]]


class FakeGetaddrinfo:
    """Stands in for loop.getaddrinfo: counts calls, answers from a table, no DNS."""

    def __init__(self, table: dict[str, AddrInfo]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(
        self, host: str, port: object, *, family: int = 0, type: int = 0
    ) -> AddrInfo:
        self.calls.append((host, family))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [info for info in self.table[host] if family in (0, info[0])]


V4 = (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.7", 0))
V6 = (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("::1", 0, 0, 0))


@pytest.fixture
async def dns(monkeypatch: pytest.MonkeyPatch) -> FakeGetaddrinfo:
    fake_lookup = FakeGetaddrinfo({"dual.test": [V6, V4], "four.test": [V4]})
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_lookup)
    return fake_lookup


async def test_resolution_family_choice_and_cache(dns: FakeGetaddrinfo) -> None:
    from brokerpkg.resolve import ResolvedAddress, Resolver

    resolver = Resolver()
    assert await resolver.resolve("dual.test") == ResolvedAddress("::1", 6)
    assert await resolver.resolve("dual.test", 4) == ResolvedAddress("127.0.0.7", 4)
    assert await resolver.resolve("dual.test", 6) == ResolvedAddress("::1", 6)
    assert await resolver.resolve("dual.test", 4) == ResolvedAddress("127.0.0.7", 4)
    assert dns.calls == [
        ("dual.test", socket.AF_UNSPEC),
        ("dual.test", socket.AF_INET),
        ("dual.test", socket.AF_INET6),
    ]
    resolver.clear()
    await resolver.resolve("dual.test", 4)
    assert len(dns.calls) == 4


async def test_numeric_addresses_skip_dns(dns: FakeGetaddrinfo) -> None:
    from brokerpkg.resolve import ResolvedAddress, Resolver

    resolver = Resolver()
    assert await resolver.resolve("127.0.0.1") == ResolvedAddress("127.0.0.1", 4)
    assert await resolver.resolve("::1", 6) == ResolvedAddress("::1", 6)
    with pytest.raises(HostResolveError, match="IPv4 address, not IPv6"):
        await resolver.resolve("127.0.0.1", 6)
    assert dns.calls == []


@pytest.mark.parametrize(
    ("host", "version"), [("missing.test", None), ("four.test", 6), ("", None)]
)
async def test_resolution_failures(dns: FakeGetaddrinfo, host: str, version: int | None) -> None:
    from brokerpkg.resolve import Resolver

    with pytest.raises(HostResolveError, match="resolve"):
        await Resolver().resolve(host, version)


async def test_resolution_argument_errors() -> None:
    from brokerpkg.resolve import Resolver

    with pytest.raises(TypeError):
        await Resolver().resolve(b"127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ip_version"):
        await Resolver().resolve("127.0.0.1", 5)


async def test_session_resolves_names_and_local_ip_in_the_target_family(
    dns: FakeGetaddrinfo, echo: Session, tmp_path: Path
) -> None:
    await echo.probe("dual.test", local_ip="dual.test", protocol="udp", port=53)
    await echo.probe("dual.test", ip_version=4)
    echo.clear_dns_cache()
    await echo.probe("dual.test", ip_version=4)
    first = len(FEATURES) + 1
    assert sent_probes(tmp_path / "log") == [
        f"{first} send-probe ip-6 ::1 local-ip-6 ::1 protocol udp port 53",
        f"{first + 1} send-probe ip-4 127.0.0.7",
        f"{first + 2} send-probe ip-4 127.0.0.7",
    ]
    assert len(dns.calls) == 4
    with pytest.raises(HostResolveError):
        await echo.probe("missing.test")


async def test_mtrpacket_clear_dns_cache_reaches_new_addresses(
    dns: FakeGetaddrinfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that moved is probed at its new address after clear_dns_cache(), as in
    mtrpacket: the session's cached probe templates are forgotten too."""
    from brokerpkg import MtrPacket

    command = " ".join(fake("echo", "--log", str(tmp_path / "log")))
    monkeypatch.setenv("MTR_PACKET", command)
    async with asyncio.timeout(LIMIT), MtrPacket() as mtr:
        await mtr.probe("four.test")
        dns.table["four.test"] = [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.9", 0))]
        await mtr.probe("four.test")
        mtr.clear_dns_cache()
        await mtr.probe("four.test")
    assert [line.split()[3] for line in sent_probes(tmp_path / "log")] == [
        "127.0.0.7",
        "127.0.0.7",
        "127.0.0.9",
    ]


# ------------------------------------------------------------------ real helpers on loopback
#
# Probes go to 127.0.0.0/8 and ::1 only.  mtr-packet (Debian's mtr-tiny) is the reference;
# ``helper_path`` (tests/conftest.py) builds ours.

MTR_PACKET = "/usr/bin/mtr-packet"
needs_mtr_packet = pytest.mark.skipif(
    not os.access(MTR_PACKET, os.X_OK), reason="mtr-packet not installed (apt-get install mtr-tiny)"
)
LOOPBACK_PROBES = [
    ("127.0.0.1", "icmp", None),
    ("127.0.0.1", "udp", None),
    ("127.0.0.1", "tcp", 1),
    ("::1", "icmp", None),
    ("::1", "udp", 33434),
    ("::1", "tcp", 9),
]


@pytest.fixture(params=["mtr-packet", "brokerpkg-helper"])
def real_helper(request: pytest.FixtureRequest) -> str:
    """Path of a real helper: the reference mtr-packet, then ours."""
    if request.param == "mtr-packet":
        if not os.access(MTR_PACKET, os.X_OK):
            pytest.skip("mtr-packet not installed (apt-get install mtr-tiny)")
        return MTR_PACKET
    return str(request.getfixturevalue("helper_path"))


@pytest.mark.parametrize(("target", "proto", "port"), LOOPBACK_PROBES)
async def test_real_helper_probes_loopback(
    real_helper: str, target: str, proto: str, port: int | None
) -> None:
    async with asyncio.timeout(LIMIT), Session(real_helper) as session:
        result = await session.probe(target, protocol=proto, port=port, timeout=2)
    assert result.success, result
    assert (result.result, result.responder, result.target) == ("reply", target, target)
    assert result.time_ms is not None and 0 < result.time_ms < 2000
    assert result.protocol == proto


async def test_real_helpers_answer_many_concurrent_probes(real_helper: str) -> None:
    targets = [f"127.0.0.{number}" for number in range(1, 41)] + ["::1"] * 10
    async with asyncio.timeout(LIMIT), Session(real_helper) as session:
        results = await asyncio.gather(
            *(
                session.probe(target, ttl=number % 30 + 1, timeout=2)
                for number, target in enumerate(targets)
            )
        )
        assert session.in_flight == 0
    assert [result.responder for result in results] == targets
    assert all(result.success for result in results)


@needs_mtr_packet
async def test_mtr_packet_lacks_our_extensions() -> None:
    async with asyncio.timeout(LIMIT), Session(MTR_PACKET) as session:
        assert session.version == "0.95"
        for feature in ("fractional-timeout", "details", "local-device", "sockets", "max-probes"):
            assert session.features[feature] == "no"
        with pytest.raises(FeatureNotSupportedError, match="details"):
            await session.probe("127.0.0.1", details=True)
        with pytest.raises(FeatureNotSupportedError, match="local-device"):
            await session.probe("127.0.0.1", local_device="lo")
        rounded = await session.probe("127.0.0.1", timeout=0.4)  # sent as "timeout 1"
        assert rounded.success


async def test_our_helper_extensions(helper_path: str) -> None:
    async with asyncio.timeout(LIMIT), Session(helper_path) as session:
        assert session.version == "brokerpkg-0.1.0"
        assert session.features["fractional-timeout"] == "ok"
        assert session.features["details"] == "ok"
        assert session.max_in_flight == int(session.features["max-probes"])
        icmp = await session.probe("127.0.0.1", details=True, timeout=0.5)
        assert (icmp.reply_ttl, icmp.icmp_type, icmp.icmp_code) == (64, 0, 0)
        assert icmp.reply_size is not None and icmp.reply_size >= 28
        udp6 = await session.probe("::1", protocol="udp", details=True, local_device="lo")
        assert (udp6.icmp_type, udp6.icmp_code) == (1, 4)  # ICMPv6 port unreachable
        with pytest.raises(InvalidProbeError, match="local-device-not-found"):
            await session.probe("127.0.0.1", local_device="nosuchdev0")


UNPRIVILEGED_PROGRAM = """
import asyncio, sys
import brokerpkg

async def main():
    try:
        async with brokerpkg.Session(sys.argv[1]) as session:
            result = await session.probe("127.0.0.1", details=True)
            print("ok", session.features["sockets"], result.result, result.reply_ttl)
    except brokerpkg.HelperPrivilegeError as error:
        print("privilege", error)

asyncio.run(main())
"""


def test_unprivileged_user_gets_the_privilege_fix(unprivileged_copy: object) -> None:
    copy = unprivileged_copy
    plain = copy.helper("plain")  # type: ignore[attr-defined]
    done = copy.run(["-c", UNPRIVILEGED_PROGRAM, str(plain)])  # type: ignore[attr-defined]
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("privilege ")
    # the caller named this file: the one fix is for it
    assert done.stdout.endswith(f"; fix: `{capability_fix(str(plain))}`\n")
    assert done.stdout.count("sudo") == 1


def test_unprivileged_user_probes_with_a_capability_copy(unprivileged_copy: object) -> None:
    copy = unprivileged_copy
    capable = copy.helper("setcap")  # type: ignore[attr-defined]
    done = copy.run(["-c", UNPRIVILEGED_PROGRAM, str(capable)])  # type: ignore[attr-defined]
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "raw", "reply", "64"]


@pytest.mark.parametrize(
    ("returncode", "line", "expected"),
    [
        (1, "brokerpkg-helper: no privilege to open raw sockets (Operation not permitted)", True),
        (1, "mtr-packet: Failure to open IPv6 sockets: Permission denied", True),
        (126, "sh: 1: /tmp/brokerpkg-helper: Permission denied", False),
        (1, "fatal: out of memory", False),
        (1, None, False),
        (None, "setcap", False),
    ],
)
def test_privilege_failure_recognition(
    returncode: int | None, line: str | None, expected: bool
) -> None:
    from brokerpkg.errors import looks_like_privilege_failure

    assert looks_like_privilege_failure(returncode, line) is expected


async def test_non_executable_helper_is_not_a_privilege_problem(tmp_path: Path) -> None:
    script = tmp_path / "brokerpkg-helper"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(HelperExitedError) as caught:
        await Session(command=str(script), shell=True).open()
    assert not isinstance(caught.value, HelperPrivilegeError)
    assert caught.value.returncode == 126


# ------------------------------------------------------------------ repr


async def test_repr_says_state_helper_version_process_and_probes_in_flight() -> None:
    command = fake("silent", "--max-probes", "8")
    described = " ".join(command)
    session = Session(command=command)
    assert repr(session) == f"<Session new: {described}>"
    async with asyncio.timeout(LIMIT), session:
        pid = session.process.pid  # type: ignore[union-attr]
        assert repr(session) == (
            f"<Session open: {described} (brokerpkg-0.1.0), pid {pid}, 0 of 8 in flight>"
        )
        probes = [asyncio.ensure_future(session.probe("127.0.0.1", timeout=60)) for _ in range(3)]
        await asyncio.sleep(0)  # each probe's request is queued
        await session.check_support("no-such-feature")  # answered after the fake read them
        assert repr(session).endswith(f", pid {pid}, 3 of 8 in flight>")
        os.kill(pid, 9)
        await asyncio.gather(*probes, return_exceptions=True)
        assert repr(session) == (
            f"<Session failed: {described} (brokerpkg-0.1.0), pid {pid} was killed by "
            "signal 9, 0 of 8 in flight>"
        )
    assert repr(session) == f"<Session closed: {described} (brokerpkg-0.1.0)>"
