"""The transport (brokerpkg/transport.py) without an event loop: a blocking driver's view.

The child processes are the fake helper (tests/fakes/fake_helper.py) and sh; no packet
is sent.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brokerpkg.engine import Engine, ProbeTemplate, Request
from brokerpkg.errors import HelperExitedError, HelperNotFoundError
from brokerpkg.protocol import ProbeOptions
from brokerpkg.transport import ProcessTransport

FAKE = Path(__file__).parent / "fakes" / "fake_helper.py"
LIMIT = 20.0


def read_until(transport: ProcessTransport, wanted: bytes) -> bytes:
    """Read (waiting with selectors) until ``wanted`` was seen or end-of-file."""
    data = b""
    deadline = time.monotonic() + LIMIT
    with selectors.DefaultSelector() as selector:
        selector.register(transport.fileno(), selectors.EVENT_READ)
        while wanted not in data:
            assert selector.select(deadline - time.monotonic()), "no answer in time"
            try:
                chunk = transport.read(65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
    return data


def drain_stderr(transport: ProcessTransport) -> None:
    """Read standard error to its end."""
    stderr = transport.stderr_fileno()
    assert stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + LIMIT
        while transport.read_stderr():
            assert selector.select(deadline - time.monotonic())


def test_requests_and_replies_through_non_blocking_descriptors() -> None:
    transport = ProcessTransport.start(
        [sys.executable, str(FAKE), "echo"], description="fake helper"
    )
    try:
        assert not os.get_blocking(transport.fileno())
        assert not os.get_blocking(transport.write_fileno())
        with pytest.raises(BlockingIOError):
            transport.read(100)  # nothing asked yet: nothing there, and no waiting
        request = b"7 check-support feature version\n"
        assert transport.write(request) == len(request)
        assert b"7 feature-support support" in read_until(transport, b"\n")
        assert transport.exit_status() is None
    finally:
        transport.close()
    assert transport.process.returncode is not None  # killed and reaped
    assert transport.exit_status() is not None


def test_a_full_pipe_takes_part_of_a_write_and_never_blocks() -> None:
    # sh sleeps without reading: the pipe fills, and write says how much it took
    transport = ProcessTransport.start(["sh", "-c", "sleep 30"], description="sh")
    try:
        data = b"x" * (4 << 20)
        taken = transport.write(data)
        assert 0 < taken < len(data)
        assert transport.write(data) == 0
    finally:
        started = time.monotonic()
        transport.close()
    assert time.monotonic() - started < LIMIT
    assert transport.process.returncode == -9


def test_exit_status_stderr_and_the_exit_error() -> None:
    script = "echo first >&2; echo 'no privilege, sorry' >&2; exit 3"
    transport = ProcessTransport.start(["sh", "-c", script], description="sh helper")
    try:
        assert read_until(transport, b"never") == b""  # end-of-file
        drain_stderr(transport)
        status = transport.process.wait_for(LIMIT)
        assert status == 3 and transport.exit_status() == 3
        assert transport.stderr_lines() == ("first", "no privilege, sorry")
        error = transport.exit_error(3, transport.stderr_lines()[-1], opened=False)
        assert isinstance(error, HelperExitedError) and "no privilege, sorry" in str(error)
    finally:
        transport.close()


def test_writing_to_a_helper_gone_raises_broken_pipe() -> None:
    transport = ProcessTransport.start(["true"], description="true")
    try:
        assert transport.process.wait_for(LIMIT) == 0
        with pytest.raises(BrokenPipeError):
            transport.write(b"1 check-support feature version\n")
    finally:
        transport.close()


def test_close_kills_the_group_even_when_a_descendant_holds_the_pipes() -> None:
    transport = ProcessTransport.start(["sh", "-c", "sleep 60 & wait"], description="sh")
    children = subprocess.run(
        ["pgrep", "-g", str(transport.process.pid)], capture_output=True, text=True, check=False
    )
    started = time.monotonic()
    transport.close()
    assert time.monotonic() - started < LIMIT
    assert children.stdout.split()  # the group had members
    for pid in children.stdout.split():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_a_missing_program_is_helper_not_found() -> None:
    with pytest.raises(HelperNotFoundError):
        ProcessTransport.start(["/nonexistent/brokerpkg-helper"], description="missing")


def test_the_transport_imports_no_asyncio() -> None:
    code = "import sys, brokerpkg.transport; print('asyncio' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert done.stdout.strip() == "False"


def test_engine_and_transport_make_a_session_without_an_event_loop() -> None:
    # the outline of a blocking driver (brokerpkg/engine.py's docstring), against the fake
    transport = ProcessTransport.start(
        [sys.executable, str(FAKE), "echo"], description="fake helper"
    )
    engine = Engine(probe_grace=2.0)
    engine.set_limit(10)
    try:
        tail = b" send-probe ip-4 127.0.0.2 timeout 1\n"
        result_tail = ("127.0.0.2", 255, "icmp", None, None, None, None, None, None)
        template = ProbeTemplate(tail, 3.0, "127.0.0.2", ProbeOptions(), result_tail)
        requests = []
        for _ in range(10):
            assert engine.try_take_slot()
            requests.append(engine.submit(tail, template.deadline, template, True))
        assert not engine.try_take_slot()
        done: list[Request] = []
        with selectors.DefaultSelector() as selector:
            selector.register(transport.fileno(), selectors.EVENT_READ)
            output = engine.take_output(time.monotonic())
            while output:
                output = output[transport.write(output) :]
            deadline = time.monotonic() + LIMIT
            while len(done) < len(requests) and time.monotonic() < deadline:
                wakeup = engine.next_wakeup()
                assert wakeup is not None
                if selector.select(max(0.0, wakeup - time.monotonic())):
                    with contextlib.suppress(BlockingIOError):
                        done += engine.feed(transport.read(65536))
                done += engine.due(time.monotonic())
        assert done == requests
        assert all(request.result.success for request in done)
        assert {request.result.responder for request in done} == {"127.0.0.2"}
        assert engine.free_slots == 10 and engine.in_flight == 0
    finally:
        transport.close()
