"""``import brokerpkg as mtrpacket``: same API, same behaviour, on mtr-packet and on our helper.

The example program below is written against mtrpacket's documented API.  It is run as it
is with the real ``mtrpacket`` package (the reference), and with only its import line
changed to ``import brokerpkg as mtrpacket``, against mtr-packet and against our helper;
every run must print the same lines.  Probes go to 127.0.0.1 and ::1 only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import brokerpkg

REPO = Path(__file__).resolve().parent.parent
FAKE = Path(__file__).parent / "fakes" / "fake_helper.py"
MTR_PACKET = "/usr/bin/mtr-packet"
LIMIT = 20.0

has_mtrpacket = importlib.util.find_spec("mtrpacket") is not None
needs_mtrpacket = pytest.mark.skipif(not has_mtrpacket, reason="pip install mtrpacket")
needs_mtr_packet = pytest.mark.skipif(
    not os.access(MTR_PACKET, os.X_OK), reason="mtr-packet not installed (apt-get install mtr-tiny)"
)

EXAMPLE_PROGRAM = """\
import asyncio
import sys

import mtrpacket


async def probe_all(hosts):
    async with mtrpacket.MtrPacket() as mtr:
        for feature in ("send-probe", "ip-4", "ip-6", "icmp", "udp", "tcp", "no-such-feature"):
            print(feature, await mtr.check_support(feature))
        for host, args in hosts:
            result = await mtr.probe(host, **args)
            if result.success:
                print("reply from {} mpls={} timed={}".format(
                    result.responder, result.mpls, result.time_ms > 0))
            else:
                print("no reply ({})".format(result.result))
        results = await asyncio.gather(
            *(mtr.probe("127.0.0.{}".format(n), ttl=n, timeout=1) for n in range(1, 9)))
        print("concurrent", [(r.result, r.responder) for r in results])
        try:
            await mtr.probe("127.0.0.1", ip_version=6)
        except mtrpacket.HostResolveError:
            print("HostResolveError")
        try:
            await mtr.probe("127.0.0.1", bogus=1)
        except TypeError as error:
            print("TypeError", error)
        mtr.clear_dns_cache()
    try:
        await mtr.probe("127.0.0.1")
    except mtrpacket.StateError:
        print("StateError after close")


hosts = [
    ("127.0.0.1", {}),
    ("::1", {"protocol": "udp"}),
    ("127.0.0.1", {"protocol": "tcp", "port": 1, "timeout": 2}),
    ("::1", {"ip_version": 6, "ttl": 10, "size": 100, "bit_pattern": 255, "tos": 0}),
    ("localhost", {"ip_version": 4, "local_ip": "127.0.0.1"}),
]

loop = asyncio.new_event_loop()
try:
    loop.run_until_complete(probe_all(hosts))
except mtrpacket.ProcessError as error:
    print("ProcessError", error)
    sys.exit(1)
finally:
    loop.close()
"""

EXPECTED_OUTPUT = """\
send-probe True
ip-4 True
ip-6 True
icmp True
udp True
tcp True
no-such-feature False
reply from 127.0.0.1 mpls=[] timed=True
reply from ::1 mpls=[] timed=True
reply from 127.0.0.1 mpls=[] timed=True
reply from ::1 mpls=[] timed=True
reply from 127.0.0.1 mpls=[] timed=True
concurrent [('reply', '127.0.0.1'), ('reply', '127.0.0.2'), ('reply', '127.0.0.3'), \
('reply', '127.0.0.4'), ('reply', '127.0.0.5'), ('reply', '127.0.0.6'), ('reply', '127.0.0.7'), \
('reply', '127.0.0.8')]
HostResolveError
TypeError unexpected keyword argument 'bogus'
StateError after close
"""


def run_example(module: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the example with ``import mtrpacket`` (module 'mtrpacket') or ours ('brokerpkg')."""
    program = EXAMPLE_PROGRAM
    if module == "brokerpkg":
        program = program.replace("import mtrpacket\n", "import brokerpkg as mtrpacket\n", 1)
        assert program.count("brokerpkg") == 1  # nothing else changed
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MTR_PACKET", "BROKERPKG_HELPER")
    }
    env.update(environment)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


@needs_mtrpacket
@needs_mtr_packet
def test_reference_mtrpacket_on_mtr_packet_prints_the_expected_lines() -> None:
    done = run_example("mtrpacket", {"MTR_PACKET": "mtr-packet"})
    assert (done.stdout, done.returncode) == (EXPECTED_OUTPUT, 0), done.stderr


@needs_mtr_packet
def test_example_unchanged_on_brokerpkg_with_mtr_packet() -> None:
    done = run_example("brokerpkg", {"MTR_PACKET": "mtr-packet"})
    assert (done.stdout, done.returncode) == (EXPECTED_OUTPUT, 0), done.stderr


def test_example_unchanged_on_brokerpkg_with_our_helper(helper_path: str) -> None:
    done = run_example("brokerpkg", {"MTR_PACKET": helper_path})
    assert (done.stdout, done.returncode) == (EXPECTED_OUTPUT, 0), done.stderr


def test_example_unchanged_on_brokerpkg_finding_our_helper(helper_path: str) -> None:
    done = run_example("brokerpkg", {"BROKERPKG_HELPER": helper_path})
    assert (done.stdout, done.returncode) == (EXPECTED_OUTPUT, 0), done.stderr


@needs_mtrpacket
def test_reference_mtrpacket_drives_our_helper(helper_path: str) -> None:
    done = run_example("mtrpacket", {"MTR_PACKET": helper_path})
    assert (done.stdout, done.returncode) == (EXPECTED_OUTPUT, 0), done.stderr


def test_example_reports_a_missing_helper_as_process_error() -> None:
    done = run_example("brokerpkg", {"MTR_PACKET": "brokerpkg-helper-missing"})
    assert done.returncode == 1
    assert done.stdout.startswith("ProcessError ")


# ------------------------------------------------------------------ API surface


@needs_mtrpacket
def test_public_names_match_mtrpacket() -> None:
    import mtrpacket

    public = {name for name in dir(mtrpacket) if not name.startswith("_")}
    ours = set(dir(brokerpkg))
    for name in (
        "MtrPacket",
        "ProbeResult",
        "Mpls",
        "StateError",
        "HostResolveError",
        "ProcessError",
    ):
        assert name in public
        assert name in ours
    reference = {name for name in dir(mtrpacket.MtrPacket) if not name.startswith("_")}
    assert reference <= set(dir(brokerpkg.MtrPacket)) | {"process"}
    assert brokerpkg.ProbeResult._fields[:5] == mtrpacket.ProbeResult._fields
    assert brokerpkg.Mpls._fields == mtrpacket.Mpls._fields


@needs_mtrpacket
@pytest.mark.parametrize(
    "method",
    [
        "open",
        "close",
        "probe",
        "check_support",
        "clear_dns_cache",
        "__aenter__",
        "__aexit__",
        "__init__",
    ],
)
def test_method_signatures_match_mtrpacket(method: str) -> None:
    import mtrpacket

    reference = inspect.signature(getattr(mtrpacket.MtrPacket, method))
    ours = inspect.signature(getattr(brokerpkg.MtrPacket, method))
    assert list(ours.parameters) == list(reference.parameters)
    assert inspect.iscoroutinefunction(getattr(brokerpkg.MtrPacket, method)) == (
        inspect.iscoroutinefunction(getattr(mtrpacket.MtrPacket, method))
    )


def test_exceptions_keep_mtrpacket_meanings() -> None:
    assert issubclass(brokerpkg.HelperExitedError, brokerpkg.ProcessError)
    assert issubclass(brokerpkg.HelperNotFoundError, brokerpkg.ProcessError)
    assert issubclass(brokerpkg.HelperPrivilegeError, brokerpkg.ProcessError)
    assert issubclass(brokerpkg.ResponseTimeoutError, brokerpkg.ProcessError)
    assert issubclass(brokerpkg.InvalidProbeError, ValueError)
    assert issubclass(brokerpkg.FeatureNotSupportedError, ValueError)


# ------------------------------------------------------------------ behaviour with fakes


def shell_fake(scenario: str, *arguments: str) -> str:
    """An MTR_PACKET shell command string running the fake helper."""
    return " ".join([sys.executable, str(FAKE), scenario, "--features", "mtr", *arguments])


async def test_not_open_raises_state_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTR_PACKET", shell_fake("echo"))
    mtr = brokerpkg.MtrPacket()
    with pytest.raises(brokerpkg.StateError):
        await mtr.probe("127.0.0.1")
    with pytest.raises(brokerpkg.StateError):
        await mtr.check_support("udp")
    async with asyncio.timeout(LIMIT), mtr:
        assert repr(mtr).startswith("<MtrPacket PID ")
        with pytest.raises(brokerpkg.StateError):
            await mtr.open()
    assert repr(mtr) == "<MtrPacket>"
    await mtr.close()  # closing again is harmless


async def test_reopen_after_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTR_PACKET", shell_fake("echo"))
    mtr = brokerpkg.MtrPacket()
    for _ in range(2):
        async with asyncio.timeout(LIMIT), mtr:
            assert (await mtr.probe("127.0.0.1")).success


@pytest.mark.parametrize("command", ["true", "brokerpkg-helper-missing", "exit 3"])
async def test_helper_that_cannot_serve_raises_process_error(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("MTR_PACKET", command)
    with pytest.raises(brokerpkg.ProcessError):
        async with asyncio.timeout(LIMIT), brokerpkg.MtrPacket():
            pass


async def test_without_send_probe_open_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTR_PACKET", shell_fake("nosend"))
    with pytest.raises(brokerpkg.ProcessError, match="send-probe"):
        await brokerpkg.MtrPacket().open()


async def test_arguments_are_passed_like_mtrpacket(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    monkeypatch.setenv("MTR_PACKET", shell_fake("echo", "--log", str(log)))
    async with asyncio.timeout(LIMIT), brokerpkg.MtrPacket() as mtr:
        await mtr.probe("127.0.0.1", bit_pattern=42)
        await mtr.probe("127.0.1.1", local_ip="127.0.0.1")
        await mtr.probe("::1", ttl="4", timeout="2")  # mtrpacket sent str(value)
        await mtr.probe("127.0.0.1", protocol="icmp", port=80)  # ignored, as mtr-packet does
        await mtr.probe("127.0.0.1", protocol="udp", port=53, local_port=40000, mark=3)
        await mtr.probe("127.0.0.1", details=True)  # our extension, passed through
        with pytest.raises(TypeError, match="unexpected keyword argument 'local-devices'"):
            await mtr.probe("127.0.0.1", local_devices="lo")
        with pytest.raises(ValueError, match="ttl"):
            await mtr.probe("127.0.0.1", ttl=300)
        await mtr.probe("127.0.0.1", ttl=1)
        await mtr.probe("127.0.0.1", ttl=1)  # options remembered: still checked by type
        with pytest.raises(TypeError, match="ttl"):
            await mtr.probe("127.0.0.1", ttl=True)
        with pytest.raises(TypeError, match="ttl"):
            await mtr.probe("127.0.0.1", ttl=1.0)
        with pytest.raises(TypeError, match="ttl"):
            await mtr.probe("127.0.0.1", ttl=[1])
    probes = [
        line.split(" ", 2)[2]
        for line in log.read_text().splitlines()
        if line.split()[1] == "send-probe"
    ]
    assert probes == [
        "ip-4 127.0.0.1 bit-pattern 42",
        "ip-4 127.0.1.1 local-ip-4 127.0.0.1",
        "ip-6 ::1 timeout 2 ttl 4",
        "ip-4 127.0.0.1 protocol icmp",
        "ip-4 127.0.0.1 protocol udp port 53 local-port 40000 mark 3",
        "ip-4 127.0.0.1 details yes",
        "ip-4 127.0.0.1 ttl 1",
        "ip-4 127.0.0.1 ttl 1",
    ]


async def test_invalid_argument_is_a_result_like_mtrpacket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTR_PACKET", shell_fake("invalid"))
    async with asyncio.timeout(LIMIT), brokerpkg.MtrPacket() as mtr:
        result = await mtr.probe("127.0.0.1")
    assert (result.success, result.result, result.reason) == (
        False,
        "invalid-argument",
        "ttl-out-of-range",
    )


async def test_helper_exit_raises_process_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTR_PACKET", shell_fake("exit-after"))
    async with asyncio.timeout(LIMIT), brokerpkg.MtrPacket() as mtr:
        with pytest.raises(brokerpkg.ProcessError, match="socket exploded"):
            await mtr.probe("127.0.0.1")


async def test_cancelling_a_probe_task_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTR_PACKET", shell_fake("silent"))
    async with asyncio.timeout(LIMIT), brokerpkg.MtrPacket() as mtr:
        task = asyncio.ensure_future(mtr.probe("127.0.0.1", timeout=60))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await mtr.check_support("udp")


async def test_without_mtr_packet_variable_our_helper_is_located(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    wrapper = tmp_path / "brokerpkg-helper"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} echo --log {log}\n")
    wrapper.chmod(0o755)
    monkeypatch.delenv("MTR_PACKET", raising=False)
    monkeypatch.setenv("BROKERPKG_HELPER", str(wrapper))
    async with asyncio.timeout(LIMIT), brokerpkg.MtrPacket() as mtr:
        assert (await mtr.probe("127.0.0.1")).success
    assert "send-probe ip-4 127.0.0.1" in log.read_text()
