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
import signal
import subprocess
import sys
import time
import types
import typing
from pathlib import Path

import pytest

import brokerpkg
from brokerpkg.transport import exec_in_shell

REPO = Path(__file__).resolve().parent.parent
FAKE = Path(__file__).parent / "fakes" / "fake_helper.py"
MTR_PACKET = "/usr/bin/mtr-packet"
LIMIT = 20.0
PYTHON = os.path.realpath(sys.executable)
"""The fake helper's executable (/proc/PID/exe of the fake)."""

has_mtrpacket = importlib.util.find_spec("mtrpacket") is not None
needs_mtrpacket = pytest.mark.skipif(not has_mtrpacket, reason="pip install mtrpacket")
needs_mtr_packet = pytest.mark.skipif(
    not os.access(MTR_PACKET, os.X_OK), reason="mtr-packet not installed (apt-get install mtr-tiny)"
)

EXAMPLE_PROGRAM = """\
import asyncio
import re
import sys
import typing

import mtrpacket

CACHE: mtrpacket.DnsCacheType = {}  # module annotations are evaluated
REFUSED = [  # both helpers answer these with invalid-argument
    {"protocol": "gre"},
    {"size": 100000},
    {"size": 9001},
    {"ttl": 1.5},
    {"ttl": True},
    {"protocol": "ICMP"},
    {"protocol": "udp", "local_port": 80},
    {"timeout": "1e1"},
]


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
        success, result, time_ms, responder, mpls = await mtr.probe("127.0.0.1")
        print("unpacked", success, result, time_ms > 0, responder, mpls)
        plain = await mtr.probe("::1", timeout=1)
        print("type", type(plain).__name__, plain._fields, len(plain), plain._field_defaults,
              isinstance(plain, mtrpacket.ProbeResult), isinstance(plain, tuple))
        print("equal", plain._replace(time_ms=None) == mtrpacket.ProbeResult(
            True, "reply", None, "::1", []), plain == tuple(plain))
        print("repr", re.sub(r"time_ms=[0-9.]+", "time_ms=T", repr(plain)))
        print("asdict", list(plain._asdict()))
        for args in REFUSED:
            refused = await mtr.probe("127.0.0.1", **args)
            print("refused", args, refused,
                  refused == mtrpacket.ProbeResult(False, "invalid-argument", None, None, []))
        print("after refusals", (await mtr.probe("127.0.0.1")).result)
        try:
            await mtr.probe("127.0.0.1", ip_version=5)
        except ValueError as error:
            print("ValueError", error)
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
            await mtr.open()
        except mtrpacket.StateError as error:
            print("StateError", error)
    try:
        await mtr.probe("127.0.0.1")
    except mtrpacket.StateError as error:
        print("StateError after close:", error)
    print("cache annotation", typing.get_origin(mtrpacket.DnsCacheType).__name__, CACHE)


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
unpacked True reply True 127.0.0.1 []
type ProbeResult ('success', 'result', 'time_ms', 'responder', 'mpls') 5 {} True True
equal True True
repr ProbeResult(success=True, result='reply', time_ms=T, responder='::1', mpls=[])
asdict ['success', 'result', 'time_ms', 'responder', 'mpls']
refused {'protocol': 'gre'} ProbeResult(success=False, result='invalid-argument', \
time_ms=None, responder=None, mpls=[]) True
refused {'size': 100000} ProbeResult(success=False, result='invalid-argument', \
time_ms=None, responder=None, mpls=[]) True
refused {'size': 9001} ProbeResult(success=False, result='invalid-argument', \
time_ms=None, responder=None, mpls=[]) True
refused {'ttl': 1.5} ProbeResult(success=False, result='invalid-argument', \
time_ms=None, responder=None, mpls=[]) True
refused {'ttl': True} ProbeResult(success=False, result='invalid-argument', \
time_ms=None, responder=None, mpls=[]) True
refused {'protocol': 'ICMP'} ProbeResult(success=False, result='invalid-argument', \
time_ms=None, responder=None, mpls=[]) True
refused {'protocol': 'udp', 'local_port': 80} ProbeResult(success=False, \
result='invalid-argument', time_ms=None, responder=None, mpls=[]) True
refused {'timeout': '1e1'} ProbeResult(success=False, result='invalid-argument', \
time_ms=None, responder=None, mpls=[]) True
after refusals reply
ValueError expected ip_version to be either 4 or 6
HostResolveError
TypeError unexpected keyword argument 'bogus'
StateError already open
StateError after close: not open
cache annotation dict {}
"""


def run_program(
    program: str, module: str, environment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``program`` with ``import mtrpacket`` (module 'mtrpacket') or ours
    ('brokerpkg'), with ``environment`` instead of this process's MTR_PACKET and
    BROKERPKG_HELPER."""
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


def run_example(module: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the example with mtrpacket or ours (see :func:`run_program`)."""
    return run_program(EXAMPLE_PROGRAM, module, environment)


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


def type_shape(hint: object) -> object:
    """A type hint with typing's spellings made one (Dict[...] and dict[...], Optional[X]
    and X | None compare equal)."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return ("union", frozenset(type_shape(argument) for argument in arguments))
    if origin is None:
        return hint
    return (origin, tuple(type_shape(argument) for argument in arguments))


@needs_mtrpacket
def test_every_public_name_of_mtrpacket_behaves_the_same_here() -> None:
    import mtrpacket

    public = {
        name
        for name, value in vars(mtrpacket).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(typing, name, None) is not value  # its imports from typing
    }
    assert public == {
        "DnsCacheType",
        "HostResolveError",
        "Mpls",
        "MtrPacket",
        "ProbeResult",
        "ProcessError",
        "StateError",
    }
    assert public <= set(brokerpkg.__all__)
    for name in ("HostResolveError", "ProcessError", "StateError"):
        ours = getattr(brokerpkg, name)
        assert ours.__name__ == name
        assert (
            ours.__mro__[1:]
            == getattr(mtrpacket, name).__mro__[1:]
            == (
                Exception,
                BaseException,
                object,
            )
        )
    for name in ("ProbeResult", "Mpls"):
        ours, theirs = getattr(brokerpkg, name), getattr(mtrpacket, name)
        assert ours.__name__ == theirs.__name__ == name
        assert ours.__bases__ == theirs.__bases__ == (tuple,)
        assert ours._fields == theirs._fields
        assert ours._field_defaults == theirs._field_defaults == {}
    values = (False, "ttl-expired", 1.5, "198.18.1.2", [brokerpkg.Mpls(16, 0, True, 1)])
    assert brokerpkg.ProbeResult(*values) == mtrpacket.ProbeResult(*values)
    assert repr(brokerpkg.ProbeResult(*values)) == repr(mtrpacket.ProbeResult(*values))
    assert repr(brokerpkg.Mpls(1, 2, False, 3)) == repr(mtrpacket.Mpls(1, 2, False, 3))
    assert type_shape(brokerpkg.DnsCacheType) == type_shape(mtrpacket.DnsCacheType)
    reference = {name for name in dir(mtrpacket.MtrPacket) if not name.startswith("_")}
    assert reference <= set(dir(brokerpkg.MtrPacket)) | {"process"}
    assert "process" in dir(brokerpkg.MtrPacket)


def test_sessions_keep_their_rich_results() -> None:
    assert brokerpkg.ProbeResult is brokerpkg.mtrpacket_compat.ProbeResult
    assert brokerpkg.ProbeResult._fields == ("success", "result", "time_ms", "responder", "mpls")
    rich = brokerpkg.protocol.ProbeResult._fields
    assert rich[:5] == brokerpkg.ProbeResult._fields
    assert "target" in rich
    assert "reply_ttl" in rich


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


REQUEST_PROGRAM = """\
import asyncio
import re
import sys

import mtrpacket

CALLS = [
    ("127.0.0.1", {}),
    ("127.0.0.1", {"bit_pattern": 42}),
    ("127.0.1.1", {"local_ip": "127.0.0.1"}),
    ("::1", {"ttl": "4", "timeout": "2"}),
    ("::1", {"timeout": 2, "ttl": 4}),
    ("127.0.0.1", {"protocol": "icmp", "port": 80}),
    ("127.0.0.1", {"protocol": "udp", "port": 53, "local_port": 40000, "mark": 3}),
    ("127.0.0.1", {"protocol": "udp", "local-port": 40001}),
    ("127.0.0.1", {"ttl": 1}),
    ("127.0.0.1", {"ttl": True}),
    ("127.0.0.1", {"ttl": 1.0}),
    ("127.0.0.1", {"ttl": 1}),
    ("127.0.0.1", {"ttl": [1]}),
    ("127.0.0.1", {"ttl": None}),
    ("127.0.0.1", {"ttl": 0}),
    ("127.0.0.1", {"ttl": 300}),
    ("127.0.0.1", {"timeout": 0.5}),
    ("127.0.0.1", {"timeout": 0.0}),
    ("127.0.0.1", {"timeout": -0.0}),
    ("127.0.0.1", {"protocol": "gre"}),
    ("127.0.0.1", {"size": 100000}),
    ("127.0.0.1", {"ip_version": 4, "tos": 255}),
    ("127.0.0.1", {"ip_version": 4.0}),
    ("127.0.0.1", {"ip_version": 0}),
    ("localhost", {"ip_version": 4, "local_ip": "localhost"}),
    ("127.0.0.1", {"bogus": 1}),
    ("127.0.0.1", {"ttl": 5, "details": True}),
    ("127.0.0.1", {"ip_version": 5}),
    ("127.0.0.1", {"ip_version": "4"}),
    ("127.0.0.1", {"ip_version": 6}),
    ("127.0.0.1", {"ip_version": 6, "bogus": 1}),
    ("127.0.0.1", {"local_ip": "::1"}),
]


async def main():
    async with mtrpacket.MtrPacket() as mtr:
        for host, args in CALLS:
            try:
                result = await mtr.probe(host, **args)
            except Exception as error:
                result = "{}: {}".format(type(error).__name__, error)
                if isinstance(error, mtrpacket.HostResolveError):
                    result = "HostResolveError"
            print(args, re.sub(r"time_ms=[0-9.]+", "time_ms=T", repr(result)))


asyncio.run(main())
"""

REQUESTS_SENT = [
    "ip-4 127.0.0.1",
    "ip-4 127.0.0.1 bit-pattern 42",
    "ip-4 127.0.1.1 local-ip-4 127.0.0.1",
    "ip-6 ::1 ttl 4 timeout 2",
    "ip-6 ::1 timeout 2 ttl 4",
    "ip-4 127.0.0.1 protocol icmp port 80",
    "ip-4 127.0.0.1 protocol udp port 53 local-port 40000 mark 3",
    "ip-4 127.0.0.1 protocol udp local-port 40001",
    "ip-4 127.0.0.1 ttl 1",
    "ip-4 127.0.0.1 ttl True",
    "ip-4 127.0.0.1 ttl 1.0",
    "ip-4 127.0.0.1 ttl 1",
    "ip-4 127.0.0.1 ttl [1]",
    "ip-4 127.0.0.1 ttl None",
    "ip-4 127.0.0.1 ttl 0",
    "ip-4 127.0.0.1 ttl 300",
    "ip-4 127.0.0.1 timeout 0.5",
    "ip-4 127.0.0.1 timeout 0.0",
    "ip-4 127.0.0.1 timeout -0.0",
    "ip-4 127.0.0.1 protocol gre",
    "ip-4 127.0.0.1 size 100000",
    "ip-4 127.0.0.1 tos 255",
    "ip-4 127.0.0.1",
    "ip-4 127.0.0.1",
    "ip-4 127.0.0.1 local-ip-4 127.0.0.1",
]
"""What mtrpacket 1.0.1 sends for REQUEST_PROGRAM's calls (token and command left out):
every value as str(value), in the caller's order; the other calls raise before sending."""


def run_requests(module: str, log: Path) -> tuple[list[str], list[str]]:
    """Run REQUEST_PROGRAM with ``module`` against the echo fake: its printed lines and
    the send-probe requests the fake received."""
    done = run_program(
        REQUEST_PROGRAM, module, {"MTR_PACKET": shell_fake("echo", "--log", str(log))}
    )
    assert done.returncode == 0, done.stderr
    requests = [
        line.split(" ", 2)[2]
        for line in log.read_text().splitlines()
        if line.split()[1] == "send-probe"
    ]
    return done.stdout.splitlines(), requests


def test_probe_sends_each_value_as_given_like_mtrpacket(tmp_path: Path) -> None:
    printed, requests = run_requests("brokerpkg", tmp_path / "log")
    assert requests == REQUESTS_SENT
    echoed = "ProbeResult(success=True, result='reply', time_ms=T, responder='{}', mpls=[])"
    assert printed[0] == "{} " + echoed.format("127.0.0.1")
    assert printed[3] == "{'ttl': '4', 'timeout': '2'} " + echoed.format("::1")
    assert printed[-7:] == [
        "{'bogus': 1} \"TypeError: unexpected keyword argument 'bogus'\"",
        "{'ttl': 5, 'details': True} \"TypeError: unexpected keyword argument 'details'\"",
        "{'ip_version': 5} 'ValueError: expected ip_version to be either 4 or 6'",
        "{'ip_version': '4'} 'ValueError: expected ip_version to be either 4 or 6'",
        "{'ip_version': 6} 'HostResolveError'",
        "{'ip_version': 6, 'bogus': 1} 'HostResolveError'",
        "{'local_ip': '::1'} 'HostResolveError'",
    ]


@needs_mtrpacket
def test_mtrpacket_sends_and_prints_the_same(tmp_path: Path) -> None:
    ours = run_requests("brokerpkg", tmp_path / "ours")
    reference = run_requests("mtrpacket", tmp_path / "reference")
    assert reference[1] == REQUESTS_SENT
    assert ours == reference


async def test_values_that_are_not_one_word_are_refused_unsent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    monkeypatch.setenv("MTR_PACKET", shell_fake("echo", "--log", str(log)))
    refused = brokerpkg.ProbeResult(False, "invalid-argument", None, None, [])
    async with asyncio.timeout(LIMIT), brokerpkg.MtrPacket() as mtr:
        for args in (
            {"ttl": ""},
            {"protocol": "udp port 53"},
            {"ttl": "4\n2 send-probe ip-4 127.0.0.2"},
            {"protocol": "\u00e9"},
            {"local_device": "x" * 5000},
        ):
            assert await mtr.probe("127.0.0.1", **args) == refused, args
        assert await mtr.probe("127.0.0.1", local_device="lo") == (
            True,
            "reply",
            0.25,
            "127.0.0.1",
            [],
        )
    probes = [line for line in log.read_text().splitlines() if line.split()[1] == "send-probe"]
    assert [line.split(" ", 2)[2] for line in probes] == ["ip-4 127.0.0.1 local-device lo"]


async def test_invalid_argument_is_a_result_like_mtrpacket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTR_PACKET", shell_fake("invalid"))
    async with asyncio.timeout(LIMIT), brokerpkg.MtrPacket() as mtr:
        result = await mtr.probe("127.0.0.1")
    assert result == brokerpkg.ProbeResult(False, "invalid-argument", None, None, [])
    assert type(result) is brokerpkg.ProbeResult
    assert not hasattr(result, "reason")


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


# ------------------------------------------------------------------ MTR_PACKET shell strings


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("brokerpkg-helper", "exec brokerpkg-helper"),
        ("/opt/h -x 2>/dev/null", "exec /opt/h -x 2>/dev/null"),
        ("2>/dev/null /opt/h", "exec 2>/dev/null /opt/h"),
        ("ssh -T host brokerpkg-helper", "exec ssh -T host brokerpkg-helper"),
        ("A=1 B='x y' /opt/h", "A=1 B='x y' exec /opt/h"),
        ('A="a \\" b"   /opt/h', 'A="a \\" b" exec   /opt/h'),
        ("exec /opt/h", "exec /opt/h"),
        # not one simple command, or not a program: left to the shell as it is
        ("cd /opt && ./h", "cd /opt && ./h"),
        ("/opt/h | tee log", "/opt/h | tee log"),
        ("/opt/h; echo done", "/opt/h; echo done"),
        ("$(command -v h)", "$(command -v h)"),
        ("/opt/h &", "/opt/h &"),
        ("/opt/h\necho", "/opt/h\necho"),
        ("{ /opt/h; }", "{ /opt/h; }"),
        ("exit 3", "exit 3"),
        ("A=1", "A=1"),
        ("A=1>log B=2 /opt/h", "A=1>log B=2 /opt/h"),
        ("'/opt/h", "'/opt/h"),
        ("", ""),
    ],
)
def test_exec_in_shell_rewrites_one_simple_command(command: str, expected: str) -> None:
    assert exec_in_shell(command) == expected


def program_of(pid: int) -> tuple[str, bytes]:
    """The executable (/proc/PID/exe) and command line of process ``pid``."""
    return os.readlink(f"/proc/{pid}/exe"), Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.parametrize(
    "prefix",
    ["", "BROKERPKG_TEST_MARK=1 ", "2>/dev/null "],
    ids=["plain", "assignment", "redirect"],
)
@pytest.mark.parametrize("client", ["MtrPacket", "Session"])
async def test_killing_the_child_of_a_shell_string_fails_pending_probes_at_once(
    monkeypatch: pytest.MonkeyPatch, prefix: str, client: str
) -> None:
    command = prefix + shell_fake("silent")
    monkeypatch.setenv("MTR_PACKET", command)
    opener = (
        brokerpkg.MtrPacket()
        if client == "MtrPacket"
        else brokerpkg.Session(command=command, shell=True)
    )
    async with asyncio.timeout(LIMIT), opener as mtr:
        process = mtr.process
        assert process is not None
        exe, cmdline = program_of(process.pid)
        assert exe == PYTHON
        assert str(FAKE).encode() in cmdline
        probes = [asyncio.ensure_future(mtr.probe("127.0.0.1", timeout=60)) for _ in range(3)]
        await asyncio.sleep(0)  # each probe's request is queued
        await mtr.check_support("no-such-feature")  # answered after the fake read them
        started = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        done = await asyncio.gather(*probes, return_exceptions=True)
        waited = time.monotonic() - started
    assert waited < 5.0  # the probes' own deadline is 62 s
    for error in done:
        assert isinstance(error, brokerpkg.HelperExitedError), error
        assert error.returncode == -signal.SIGKILL
        assert "was killed by signal 9" in str(error)


async def test_a_compound_shell_string_still_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MTR_PACKET", f"cd {tmp_path} && " + shell_fake("echo"))
    async with asyncio.timeout(LIMIT), brokerpkg.MtrPacket() as mtr:
        assert (await mtr.probe("127.0.0.1")).success
