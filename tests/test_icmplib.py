"""``brokerpkg.icmplib`` against the real icmplib.

- Without privilege: the pure parts (Host and Hop statistics, rounding and printing,
  ICMPReply.raise_for_status, the exceptions, the address tests, resolve) give what the
  real icmplib gives on the same inputs; the signatures are icmplib's; importing loads
  no asyncio; the functions work on loopback through the helper.
- In the lab (root): tests/icmplib_program.py run with the real icmplib as root and with
  ours as nobody (through a cap_net_raw copy of the helper) prints the same, times
  masked: pings to live, silent (blackholed), unreachable and unsendable targets,
  multiping, the async functions, traceroutes and the errors.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import json
import random
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from brokerpkg import icmplib as ours

real = pytest.importorskip(
    "icmplib", reason="the real icmplib is not installed (pip install icmplib)"
)

PROGRAM = Path(__file__).resolve().parent / "icmplib_program.py"
REPO = Path(__file__).resolve().parent.parent

HIGH_LEVEL = ("ping", "multiping", "traceroute", "async_ping", "async_multiping")
SOCKET_LAYER = {"ICMPv4Socket", "ICMPv6Socket", "AsyncSocket", "ICMPRequest"}
"""icmplib's names that open sockets in the calling process: not offered."""


# ----------------------------------------------------------------------------- the API


def test_import_loads_no_asyncio() -> None:
    code = "import sys; from brokerpkg import icmplib; print('asyncio' in sys.modules)"
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert res.stdout.strip() == "False"


def test_blocking_functions_load_no_more_than_brokerpkg_sync_does(helper_path: str) -> None:
    # brokerpkg.sync decides whether the blocking paths run asyncio; this package adds
    # nothing to it (no asyncio of its own on the way to sync)
    code = (
        "import sys\n"
        "from brokerpkg import sync\n"
        "before = sorted(name for name in sys.modules if name.split('.')[0] == 'asyncio')\n"
        "from brokerpkg import icmplib\n"
        "assert icmplib.ping('127.0.0.1', 1).is_alive\n"
        "assert icmplib.multiping(['::1'], 1)[0].is_alive\n"
        "assert icmplib.traceroute('127.0.0.1')[0].is_alive\n"
        "after = sorted(name for name in sys.modules if name.split('.')[0] == 'asyncio')\n"
        "print(before == after, len(before))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "BROKERPKG_HELPER": helper_path},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0] == "True"


def test_every_public_name_of_icmplib_but_its_socket_layer() -> None:
    theirs = {name for name in vars(real) if not name.startswith("_")}
    modules = {name for name in theirs if inspect.ismodule(getattr(real, name))}
    assert modules == {"sockets", "models", "exceptions", "utils"}  # ping & co: functions
    wanted = theirs - SOCKET_LAYER - modules
    assert {"ping", "multiping", "traceroute", "Host", "PID"} <= wanted
    assert not {name for name in wanted if not hasattr(ours, name)}
    assert set(ours.__all__) >= wanted
    for module in modules - {"sockets"}:  # from icmplib.exceptions import ... works too
        assert inspect.ismodule(importlib.import_module(f"brokerpkg.icmplib.{module}"))


def _signature(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("name", HIGH_LEVEL)
def test_signatures_and_defaults_are_icmplibs(name: str) -> None:
    assert _signature(getattr(ours, name)) == _signature(getattr(real, name))
    assert inspect.iscoroutinefunction(getattr(ours, name)) == name.startswith("async_")


def test_async_traceroute_takes_traceroutes_arguments() -> None:
    assert _signature(ours.async_traceroute) == _signature(real.traceroute)
    assert inspect.iscoroutinefunction(ours.async_traceroute)


# ----------------------------------------------------------------------------- exceptions


def _exception_classes(module: Any) -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }


def test_exception_hierarchy_is_icmplibs() -> None:
    theirs = _exception_classes(real.exceptions)
    mine = _exception_classes(ours)
    assert set(theirs) <= set(mine)
    for name, kind in theirs.items():
        assert [b.__name__ for b in mine[name].__bases__] == [b.__name__ for b in kind.__bases__]
        assert [c.__name__ for c in mine[name].__mro__] == [c.__name__ for c in kind.__mro__]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("NameLookupError", ("example.invalid",)),
        ("SocketAddressError", ("192.0.2.7",)),
        ("SocketPermissionError", (True,)),
        ("SocketPermissionError", (False,)),
        ("SocketUnavailableError", ()),
        ("SocketBroadcastError", ()),
        ("TimeoutExceeded", (2,)),
        ("TimeoutExceeded", (0.5,)),
        ("ICMPError", ("Error type: 5, code: 1", None)),
    ],
)
def test_exception_messages_are_icmplibs(name: str, args: tuple[Any, ...]) -> None:
    assert str(getattr(ours, name)(*args)) == str(getattr(real, name)(*args))


def _outcome(reply: Any) -> tuple[str, ...]:
    try:
        reply.raise_for_status()
    except Exception as error:
        same_reply = getattr(error, "reply", None) is reply
        return (type(error).__name__, str(error), str(same_reply))
    return ("no error",)


def test_reply_raise_for_status_is_icmplibs() -> None:
    checked = 0
    for family in (4, 6, 5):
        for icmp_type in (*range(20), 128, 129, 130, 255):
            for code in range(18):
                args = ("192.0.2.1", family, 7, 1, icmp_type, code, 64, 1.5)
                assert _outcome(ours.ICMPReply(*args)) == _outcome(real.ICMPReply(*args)), args
                checked += 1
    assert checked == 3 * 24 * 18
    reply = ours.ICMPReply("2001:db8::1", 6, 7, 3, 1, 4, 64, 2.5)
    assert (reply.source, reply.id, reply.sequence, reply.type, reply.code) == (
        "2001:db8::1",
        7,
        3,
        1,
        4,
    )
    assert (reply.bytes_received, reply.time, repr(reply)) == (64, 2.5, "<ICMPReply [2001:db8::1]>")


# ----------------------------------------------------------------------------- results

PROPERTIES = (
    "address",
    "packets_sent",
    "packets_received",
    "packet_loss",
    "min_rtt",
    "avg_rtt",
    "max_rtt",
    "jitter",
    "is_alive",
    "rtts",
)


def _rtt_cases() -> list[tuple[int, list[float]]]:
    rng = random.Random(13)
    cases: list[tuple[int, list[float]]] = [
        (0, []),
        (4, []),
        (1, [0.0125]),
        (3, [0.0005, 0.0015]),  # halves: round() to even, as icmplib
        (3, [1.0, 2.0, 4.0]),
        (7, [12.3456, 12.3454, 99.9995]),
        (2, [2.5e-4, 1e6]),
    ]
    for _ in range(300):
        replies = rng.randrange(0, 12)
        rtts = [
            rng.choice((rng.random(), rng.uniform(0, 500), rng.expovariate(3)))
            for _ in range(replies)
        ]
        cases.append((replies + rng.randrange(0, 5), rtts))
    return cases


def test_host_statistics_rounding_and_printing_are_icmplibs() -> None:
    for sent, rtts in _rtt_cases():
        mine, theirs = (
            ours.Host("192.0.2.9", sent, list(rtts)),
            real.Host("192.0.2.9", sent, list(rtts)),
        )
        for name in PROPERTIES:
            assert getattr(mine, name) == getattr(theirs, name), (name, sent, rtts)
        assert (repr(mine), str(mine)) == (repr(theirs), str(theirs))


def test_hop_is_a_host_with_a_distance_like_icmplibs() -> None:
    for distance, (sent, rtts) in enumerate(_rtt_cases()[:40], start=1):
        mine = ours.Hop("2001:db8::5", sent, list(rtts), distance)
        theirs = real.Hop("2001:db8::5", sent, list(rtts), distance)
        assert isinstance(mine, ours.Host)
        for name in (*PROPERTIES, "distance"):
            assert getattr(mine, name) == getattr(theirs, name)
        assert (repr(mine), str(mine)) == (repr(theirs), str(theirs))


# ----------------------------------------------------------------------------- utils

ADDRESS_CORPUS = [
    "",
    "localhost",
    "LOCALHOST",
    "host-1",
    "-",
    "a_b",
    "a_b.example.org",
    "example.org.",
    "example.c0m",
    "xn--bcher-kva.example",
    "b\u00fccher.example",
    "\u212aelvin.example",  # KELVIN SIGN: folds to k under IGNORECASE
    "stra\u017fe.de",  # LONG S
    "127.0.0.1",
    "127.0.0.1\n",
    "localhost\n",
    "localhost\n\n",
    "999.999.999.999",
    "1.2.3",
    "1.2.3.4.5",
    "01.002.0003.4",
    "\u0661.2.3.4",  # ARABIC-INDIC DIGIT ONE
    "::1",
    "2001:db8::1",
    "fe80::1%eth0",
    "[::1]",
    "1.2.3.4:80",
    " 127.0.0.1",
    "127.0.0.1 ",
    "a..b",
    ".example.org",
]


def _random_strings(count: int) -> list[str]:
    rng = random.Random(85)
    alphabet = "aZ09.-_:\n %\u212a\u00e9"
    return [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) for _ in range(count)
    ]


@pytest.mark.parametrize("name", ["is_hostname", "is_ipv4_address", "is_ipv6_address"])
def test_address_tests_are_icmplibs(name: str) -> None:
    for text in ADDRESS_CORPUS + _random_strings(3000):
        assert getattr(ours, name)(text) == getattr(real, name)(text), repr(text)


@pytest.mark.parametrize("family", [None, 4, 6, 0])
@pytest.mark.parametrize("name", ["localhost", "nonexistent.invalid", "127.0.0.1", "::1"])
def test_resolve_is_icmplibs(name: str, family: int | None) -> None:
    def outcome(resolve: Any) -> object:
        try:
            return resolve(name, family)
        except Exception as error:
            return (type(error).__name__, str(error))

    async def async_outcome(resolve: Any) -> object:
        try:
            return await resolve(name, family)
        except Exception as error:
            return (type(error).__name__, str(error))

    expected = outcome(real.resolve)
    assert outcome(ours.resolve) == expected
    assert asyncio.run(async_outcome(ours.async_resolve)) == asyncio.run(
        async_outcome(real.async_resolve)
    )


# ----------------------------------------------------------------------------- loopback


@pytest.fixture
def helper_env(helper_path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The functions find this tree's helper (run as the caller: loopback needs no lab)."""
    monkeypatch.setenv("BROKERPKG_HELPER", helper_path)
    return helper_path


def _check_loopback_host(host: Any, address: str, sent: int) -> None:
    assert isinstance(host, ours.Host)
    assert (host.address, host.packets_sent, host.packets_received) == (address, sent, sent)
    assert host.packet_loss == 0.0
    assert host.is_alive
    assert all(0 <= rtt < 1000 for rtt in host.rtts)
    assert host.min_rtt <= host.avg_rtt <= host.max_rtt


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_ping_on_loopback(helper_env: str, address: str) -> None:
    _check_loopback_host(ours.ping(address, count=3, interval=0.05, timeout=1), address, 3)


def test_ping_resolves_a_name_and_reports_its_address(helper_env: str) -> None:
    _check_loopback_host(ours.ping("localhost", 2, 0.05, privileged=False), "127.0.0.1", 2)


def test_ping_sends_to_other_strings_as_given(helper_env: str) -> None:
    # icmplib's socket resolves "127.1" (inet_aton); "999.1.1.1" is no address: nothing
    # is sent, as icmplib's failed sends count nothing
    _check_loopback_host(ours.ping("127.1", 2, 0.05), "127.1", 2)
    host = ours.ping("999.1.1.1", 2, 0.05)
    assert (host.packets_sent, host.packets_received, host.packet_loss) == (0, 0, 0.0)


def test_ping_takes_icmplibs_advanced_options(helper_env: str) -> None:
    for options in ({"payload": b"\x00" * 100}, {"payload": b"abc"}, {"payload_size": 1000}):
        _check_loopback_host(ours.ping("::1", 1, traffic_class=0x20, **options), "::1", 1)
    with pytest.raises(TypeError, match="colour"):
        ours.ping("127.0.0.1", 1, colour="red")
    with pytest.raises(TypeError, match="ttl"):  # traceroute sets it (icmplib: TypeError)
        ours.traceroute("127.0.0.1", ttl=3)
    assert ours.ping("127.0.0.1", count=0).packets_sent == 0


def test_multiping_keeps_input_order(helper_env: str) -> None:
    addresses = ["::1", "127.0.0.1", "localhost", "999.1.1.1", "127.0.0.2"]
    hosts = ours.multiping(addresses, count=2, interval=0.05, concurrent_tasks=2)
    assert [host.address for host in hosts] == [
        "::1",
        "127.0.0.1",
        "127.0.0.1",
        "999.1.1.1",
        "127.0.0.2",
    ]
    assert [host.packets_received for host in hosts] == [2, 2, 2, 0, 2]


def test_traceroute_on_loopback(helper_env: str) -> None:
    for address in ("127.0.0.1", "::1"):
        hops = ours.traceroute(address, count=3)
        assert [(hop.distance, hop.address, hop.packets_sent) for hop in hops] == [(1, address, 3)]
        assert isinstance(hops[0], ours.Hop)
        assert hops[0].packets_received == 3
    assert ours.traceroute("127.0.0.1", first_hop=3, max_hops=2) == []


def test_async_functions_on_loopback(helper_env: str) -> None:
    async def main() -> tuple[Any, list[Any], list[Any]]:
        return (
            await ours.async_ping("127.0.0.1", 2, 0.05),
            await ours.async_multiping(["::1", "localhost", "999.1.1.1"], 2, 0.05),
            await ours.async_traceroute("::1", count=2, first_hop=1),
        )

    host, hosts, hops = asyncio.run(main())
    _check_loopback_host(host, "127.0.0.1", 2)
    _check_loopback_host(hosts[0], "::1", 2)
    _check_loopback_host(hosts[1], "127.0.0.1", 2)
    assert hosts[2].packets_sent == 0
    assert [(hop.distance, hop.address, hop.packets_received) for hop in hops] == [(1, "::1", 2)]


def test_blocking_ping_and_traceroute_work_in_a_running_event_loop_as_icmplibs(
    helper_env: str,
) -> None:
    # icmplib's ping and traceroute block the loop they are called from; its multiping
    # (asyncio.run) raises RuntimeError there
    async def main() -> tuple[Any, Any, str, str]:
        host = ours.ping("127.0.0.1", 2, 0.05)
        hops = ours.traceroute("::1")
        with pytest.raises(RuntimeError) as theirs:
            real.multiping(["127.0.0.1"])
        with pytest.raises(RuntimeError) as mine:
            ours.multiping(["127.0.0.1"])
        return host, hops, type(theirs.value).__name__, type(mine.value).__name__

    with warnings.catch_warnings():  # icmplib's coroutine that asyncio.run refused
        warnings.simplefilter("ignore", RuntimeWarning)
        host, hops, theirs, mine = asyncio.run(main())
        gc.collect()
    _check_loopback_host(host, "127.0.0.1", 2)
    assert [(hop.distance, hop.address) for hop in hops] == [(1, "::1")]
    assert theirs == mine == "RuntimeError"


def test_async_multiping_raises_the_first_error_after_pinging_all(helper_env: str) -> None:
    with pytest.raises(ours.NameLookupError, match=r"nonexistent\.invalid"):
        asyncio.run(ours.async_multiping(["127.0.0.1", "nonexistent.invalid"], 1))


@pytest.mark.parametrize("source", ["192.0.2.99", "::1"])
def test_a_source_that_is_not_this_hosts_is_a_socket_address_error(
    helper_env: str, source: str
) -> None:
    expected = str(real.SocketAddressError(source))
    with pytest.raises(ours.SocketAddressError) as raised:
        ours.ping("127.0.0.1", 1, source=source)
    assert str(raised.value) == expected
    with pytest.raises(ours.SocketAddressError):
        ours.traceroute("127.0.0.1", source=source)
    with pytest.raises(ours.SocketAddressError):
        ours.multiping(["127.0.0.1"], 1, source=source)
    with pytest.raises(ours.SocketAddressError):
        asyncio.run(ours.async_ping("127.0.0.1", 1, source=source))


def test_a_missing_helper_is_an_icmp_socket_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKERPKG_HELPER", "/nonexistent/brokerpkg-helper")
    for call in (
        lambda: ours.ping("127.0.0.1", 1),
        lambda: ours.multiping(["127.0.0.1"], 1),
        lambda: ours.traceroute("127.0.0.1"),
        lambda: asyncio.run(ours.async_multiping(["127.0.0.1"], 1)),
    ):
        with pytest.raises(ours.ICMPSocketError, match="/nonexistent/brokerpkg-helper"):
            call()


# ----------------------------------------------------------------------------- the lab


@pytest.fixture
def icmplib_chain(make_chain: Any) -> Any:
    """A chain (client, r1-r3, server) with a blackholed destination behind r2, an
    unreachable one at r2, and one the client has no route to."""
    chain = make_chain(3, tag="icmplib")
    chain.blackhole = chain.add_blackhole(2)
    chain.unreachable = chain.add_unreachable(2)
    chain.unsendable = chain.add_special(chain.client, "unreachable")
    return chain


def _targets(chain: Any) -> dict[str, Any]:
    return {
        "alive": [
            "127.0.0.1",
            "::1",
            "localhost",
            chain.server_address(4),
            chain.server_address(6),
        ],
        "silent": [chain.blackhole.address(4), chain.blackhole.address(6)],
        # one IPv4 unreachable per run: the kernel's route-error limiter lets 5 through
        "unreachable": [chain.unreachable.address(4), chain.unreachable.address(6)],
        "unsendable": [chain.unsendable.address(4), chain.unsendable.address(6)],
        "server4": chain.server_address(4),
        "server6": chain.server_address(6),
        "blackhole4": chain.blackhole.address(4),
        "foreign_source": "198.18.250.1",
    }


@pytest.mark.privileged
def test_one_program_prints_the_same_with_real_icmplib_as_root_and_ours_as_nobody(
    icmplib_chain: Any, unprivileged_copy: Any, fresh_caller: int
) -> None:
    code = PROGRAM.read_text()
    targets = json.dumps(_targets(icmplib_chain))
    theirs = icmplib_chain.run(
        "client", [sys.executable, "-c", code, "icmplib", targets], timeout=120, check=False
    )
    assert theirs.returncode == 0, theirs.stderr
    helper = unprivileged_copy.helper("setcap")
    mine = unprivileged_copy.run(
        ["-c", code, "brokerpkg.icmplib", targets],
        env={"BROKERPKG_HELPER": str(helper)},
        lab=icmplib_chain,
        node="client",
        uid=fresh_caller,
        timeout=120,
    )
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout.splitlines() == theirs.stdout.splitlines()
    # what the comparison covers, so that it cannot pass on two empty outputs
    out = theirs.stdout
    assert (
        sum(
            line.startswith("ping alive") and line.endswith(" 3 3 0.0 True 3")
            for line in out.splitlines()
        )
        == 5
    )
    assert "ping silent <Host [198.19." in out
    assert "SocketAddressError" in out and out.count("NameLookupError") == 3
    assert "traceroute TTLs 2-3, fast [<Hop 2 [198.18.2.2]>, <Hop 3 [198.18.3.2]>]" in out
    assert out.count(f"4 {icmplib_chain.server_address(6)} 3 3 0.0") == 2  # IPv6 traces' last hop


@pytest.mark.privileged
def test_privileged_false_needs_no_ping_group_range_here(
    icmplib_chain: Any, unprivileged_copy: Any, fresh_caller: int
) -> None:
    chain = icmplib_chain
    assert chain.get_sysctl("client", "net.ipv4.ping_group_range").split() == ["1", "0"]
    code = (
        "import sys, importlib\n"
        "icmplib = importlib.import_module(sys.argv[1])\n"
        "try:\n"
        "    print(icmplib.ping(sys.argv[2], 1, privileged=False).is_alive)\n"
        "except icmplib.SocketPermissionError as error:\n"
        "    print(error)\n"
    )
    server = chain.server_address(4)
    theirs = chain.run("client", [sys.executable, "-c", code, "icmplib", server])
    # the real icmplib needs the datagram ICMP sockets that ping_group_range closes,
    # even for root; ours runs the helper, as nobody
    assert theirs.stdout.strip() == str(real.SocketPermissionError(False))
    mine = unprivileged_copy.run(
        ["-c", code, "brokerpkg.icmplib", server],
        env={"BROKERPKG_HELPER": str(unprivileged_copy.helper("setcap"))},
        lab=chain,
        node="client",
        uid=fresh_caller,
    )
    assert (mine.returncode, mine.stdout.strip()) == (0, "True"), mine.stderr


@pytest.mark.privileged
def test_a_helper_without_its_privilege_is_a_socket_permission_error(
    unprivileged_copy: Any,
) -> None:
    code = (
        "from brokerpkg import icmplib\n"
        "try:\n"
        "    icmplib.ping('127.0.0.1', 1)\n"
        "except icmplib.SocketPermissionError as error:\n"
        "    print('SocketPermissionError', error)\n"
    )
    res = unprivileged_copy.run(
        ["-c", code], env={"BROKERPKG_HELPER": str(unprivileged_copy.helper("plain"))}
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("SocketPermissionError helper ")
    assert "setcap cap_net_raw+ep" in res.stdout  # the fix, not icmplib's advice


@pytest.mark.privileged
def test_async_traceroute_has_every_ttl_in_flight(make_chain: Any, helper_env: str) -> None:
    chain = make_chain(4, tag="icmplib")
    for router in (1, 2, 3):
        chain.silence_router(router)
    code = (
        "import asyncio, sys, time\n"
        "from brokerpkg import icmplib\n"
        "start = time.monotonic()\n"
        "hops = asyncio.run(icmplib.async_traceroute(sys.argv[1], count=2, timeout=2))\n"
        "print(time.monotonic() - start, [(h.distance, h.address) for h in hops])\n"
    )
    res = chain.run(
        "client",
        [sys.executable, "-c", code, chain.server_address(6)],
        env={**chain.python_env(), "PYTHONPATH": str(REPO), "BROKERPKG_HELPER": helper_env},
    )
    elapsed, hops = res.stdout.split(" ", 1)
    assert hops.strip() == str([(4, chain.hop_address(4, 6)), (5, chain.server_address(6))])
    # three silent TTLs cost icmplib's hop-by-hop traceroute 3 timeouts (6 s); one here
    assert float(elapsed) < 4.5


@pytest.mark.privileged
def test_a_path_ending_unreachable_ends_at_that_hop(make_chain: Any, helper_env: str) -> None:
    chain = make_chain(3, tag="icmplib")
    unreachable = chain.add_unreachable(2)
    code = (
        "import sys\n"
        "from brokerpkg import icmplib\n"
        "print([(h.distance, h.address, h.packets_sent, h.packets_received)"
        " for h in icmplib.traceroute(sys.argv[1], count=2, timeout=1)])\n"
    )
    res = chain.run(
        "client",
        [sys.executable, "-c", code, unreachable.address(6)],
        env={**chain.python_env(), "PYTHONPATH": str(REPO), "BROKERPKG_HELPER": helper_env},
    )
    assert res.stdout.strip() == str(
        [(1, chain.hop_address(1, 6), 2, 2), (2, chain.hop_address(2, 6), 2, 2)]
    )


def _echo_requests(chain: Any, argv: list[str], **run: Any) -> list[tuple[int, ...]]:
    """(version, length, ttl, tos) of each echo request the client sent while ``argv`` ran."""
    with chain.capture("client", "eth0") as cap:
        res = run.pop("runner")(argv, **run)
        assert res.returncode == 0, res.stderr
    requests = [
        p for p in cap.select(direction="out") if p.icmp_type in (8, 128) and p.icmp_code == 0
    ]
    return sorted((p.version, p.length, p.ttl, p.tos) for p in requests)


@pytest.mark.privileged
def test_requests_on_the_wire_are_icmplibs(
    icmplib_chain: Any, unprivileged_copy: Any, fresh_caller: int
) -> None:
    chain = icmplib_chain
    code = (
        "import sys, importlib\n"
        "icmplib = importlib.import_module(sys.argv[1])\n"
        "icmplib.ping(sys.argv[2], 2, 0.1)\n"
        "icmplib.ping(sys.argv[3], 1, payload_size=100, traffic_class=0x20)\n"
        "icmplib.ping(sys.argv[2], 1, payload=b'x' * 9)\n"
        "icmplib.traceroute(sys.argv[2], count=2, timeout=1)\n"
        "host = icmplib.ping(sys.argv[2], 1, ttl=2)\n"  # time exceeded at r2: not alive
        "assert host.packets_sent == 1 and not host.is_alive, host\n"
    )
    args = [chain.server_address(4), chain.server_address(6)]

    def theirs(argv: list[str]) -> Any:
        return chain.run("client", [sys.executable, *argv], check=False, timeout=60)

    def mine(argv: list[str]) -> Any:
        return unprivileged_copy.run(
            argv,
            env={"BROKERPKG_HELPER": str(unprivileged_copy.helper("setcap"))},
            lab=chain,
            node="client",
            uid=fresh_caller,
        )

    expected = _echo_requests(chain, ["-c", code, "icmplib", *args], runner=theirs)
    sent = _echo_requests(chain, ["-c", code, "brokerpkg.icmplib", *args], runner=mine)
    # every TTL is in flight at once: those beyond the destination (hop 4) go out too
    beyond = [request for request in sent if 4 < request[2] < 64]
    assert sorted({request[2] for request in beyond}) == list(range(5, 31))
    assert [request for request in sent if request not in beyond] == expected
    # ping's 84-byte IPv4 requests with TTL 64, the IPv6 one with its traffic class,
    # the 9-byte payload, the trace's TTLs 1-4 twice each, the ping with TTL 2
    assert (4, 84, 64, 0) in expected and (6, 148, 64, 0x20) in expected
    assert (4, 37, 64, 0) in expected
    assert [ttl for version, length, ttl, tos in expected if ttl < 64] == [
        1,
        1,
        2,
        2,
        2,
        3,
        3,
        4,
        4,
    ]
