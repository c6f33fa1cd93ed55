"""Vantage points over ssh: ``Session.over_ssh`` and ``--from``, against real OpenSSH.

The lab (``fleet``): a client namespace with links to two vantage points, ``va`` and
``vb``, each running its own sshd (its own host key, authorized_keys, host name and
/etc/hosts: lab/sshd.py).  Behind them, different paths to one target host::

    client --1-- va --3-- ra1 --4-- target(198.18.4.2)
       \\--2-- vb --5-- rb1 --6-- rb2 --7-- target(198.18.7.2)

The name ``probe-target`` means 198.18.4.2 on va and 198.18.7.2 on vb, and each vantage
point names its own routers; the client knows none of these names and has no route to
the target at all, so what the tests see can only come from the vantage point.  Every
ssh command runs inside the client namespace (``ip netns exec``): nothing leaves the lab.
What each vantage point prints is checked against that host's truth: traceroute run
there, its /etc/hosts, its host name.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import _SANITIZER_OPTIONS, UnprivilegedCopy, sanitized_build
from lab.sshd import SshKeys, SshServer, remote_command, sshd_available
from lab.topology import Lab

import brokerpkg
from brokerpkg import Session, cli
from brokerpkg.errors import (
    HelperExitedError,
    HelperNotFoundError,
    HelperPrivilegeError,
    HostResolveError,
    RemoteHelperNotFoundError,
    RemoteHelperPrivilegeError,
    ResponseTimeoutError,
    SshError,
)
from brokerpkg.ssh import (
    DEFAULT_SSH,
    Destination,
    Lookup,
    exit_error,
    first_address,
    lookup_command,
    parse_destination,
    parse_lookup_output,
    ssh_command,
)

REPO = Path(__file__).resolve().parent.parent
VA, VB = "root@198.18.1.2", "root@198.18.2.2"
NAME = "probe-target"
TARGET = {VA: "198.18.4.2", VB: "198.18.7.2"}
PATH = {VA: ["198.18.3.2", "198.18.4.2"], VB: ["198.18.5.2", "198.18.6.2", "198.18.7.2"]}
HOSTS = {
    VA: {"198.18.3.2": "router-a1", "198.18.4.2": NAME},
    VB: {"198.18.5.2": "router-b1", "198.18.6.2": "router-b2", "198.18.7.2": NAME},
}
HOST_NAMES = {VA: "vantage-a", VB: "vantage-b"}
SILENT_DNS = "198.18.200.1"
"""The vantage points' name server: its queries reach the target, which drops them
(what is not in their /etc/hosts takes DNS_TIMEOUT to fail, on any machine)."""
DNS_TIMEOUT = 2
NODES = {VA: "va", VB: "vb"}
LIMIT = 60.0
PRIVILEGE_LINE = (
    "brokerpkg-helper: no privilege for raw sockets (Operation not permitted) and "
    "unprivileged ICMP is off; fix: sudo brokerpkg setup (other ways: brokerpkg-helper(8), "
    "PRIVILEGES)"
)


# ----------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host", Destination(None, "host")),
        ("root@198.18.1.2", Destination("root", "198.18.1.2")),
        ("a@b@host", Destination("a@b", "host")),  # ssh splits at the last '@'
        ("user@2001:db8::1", Destination("user", "2001:db8::1")),
    ],
)
def test_destinations_as_ssh_reads_them(text: str, expected: Destination) -> None:
    assert parse_destination(text) == expected
    assert str(parse_destination(text)) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "without spaces"),
        ("a host", "without spaces"),
        ("@host", "no user before '@'"),
        ("user@", "no host"),
        ("-oProxyCommand=touch /tmp/x", "without spaces"),
        ("-oProxyCommand=x", "must not start with '-'"),
        ("user@-x", "must not start with '-'"),
        ("-u@host", "must not start with '-'"),
        ("host\n", "without spaces"),
    ],
)
def test_bad_destinations_are_refused_before_ssh_runs(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_destination(text)
    with pytest.raises(ValueError, match=re.escape(why)):
        Session.over_ssh(text)


def test_the_ssh_command_argument_then_brokerpkg_ssh_then_the_default() -> None:
    assert ssh_command(None, {}) == DEFAULT_SSH == ("ssh", "-T", "-o", "BatchMode=yes")
    assert ssh_command(None, {"BROKERPKG_SSH": "  "}) == DEFAULT_SSH
    assert ssh_command(None, {"BROKERPKG_SSH": "ssh -F '/a b/c'"}) == ("ssh", "-F", "/a b/c")
    assert ssh_command("ssh -p 2222", {"BROKERPKG_SSH": "other"}) == ("ssh", "-p", "2222")
    assert ssh_command(["ip", "netns", "exec", "x", "ssh"]) == ("ip", "netns", "exec", "x", "ssh")
    with pytest.raises(ValueError, match="BROKERPKG_SSH 'ssh -F \"x' cannot be split"):
        ssh_command(None, {"BROKERPKG_SSH": 'ssh -F "x'})
    with pytest.raises(ValueError, match="the ssh command is empty"):
        ssh_command([])
    with pytest.raises(TypeError):
        ssh_command(["ssh", 1])  # type: ignore[list-item]


def test_over_ssh_refuses_bad_arguments_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="names must be 'remote' or 'local'"):
        Session.over_ssh("host", names="there")
    with pytest.raises(ValueError, match="the remote helper must not be empty"):
        Session.over_ssh("host", helper=" ")
    session = Session.over_ssh("user@host", helper="/opt/h", ssh="ssh -F cfg")
    assert session.vantage_point == "user@host"
    assert session.description == "/opt/h on user@host"
    assert repr(session) == "<Session new: /opt/h on user@host>"


def test_the_lookup_script_run_by_a_posix_shell() -> None:
    """The script as the remote login shell gets it, run by this host's sh: names from
    /etc/hosts (localhost), reverse names, a missing name, the host name, at once."""
    lookups = [
        Lookup("ahostsv4", "localhost"),
        Lookup("hosts", "127.0.0.1"),
        Lookup("ahosts", "no-such-name.invalid"),
        Lookup("uname", "n"),
        Lookup("ahostsv6", "localhost"),
    ]
    command = lookup_command(lookups)
    done = subprocess.run(
        ["sh", "-c", command], capture_output=True, text=True, timeout=30, check=True
    )
    answers = parse_lookup_output(done.stdout, len(lookups))
    assert sorted(answers) == [0, 1, 2, 3, 4]
    assert first_address(answers[0], 4) == ("127.0.0.1", 4)
    assert answers[1].status == 0 and answers[1].lines[0].split()[1] == "localhost"
    assert answers[2].status == 2 and answers[2].lines == ()
    assert answers[3] == (0, (os.uname().nodename,))
    v6 = first_address(answers[4], 6)  # ::1, never ::ffff:127.0.0.1
    assert v6 is None or v6 == ("::1", 6)


def test_lookup_keys_that_getent_would_take_for_options_are_refused() -> None:
    for key in ("-s", "", "a b", "x\n"):
        with pytest.raises(ValueError, match="is not a host name or address"):
            lookup_command([Lookup("hosts", key)])


def test_noise_in_the_lookup_output_is_not_an_answer() -> None:
    text = (
        "Welcome!\n@brokerpkg-lookup 0 0 1.2.3.4 STREAM x\t1.2.3.4 DGRAM\n"
        "@brokerpkg-lookup 7 0 out of range\n@brokerpkg-lookup x 0 bad\n"
    )
    assert parse_lookup_output(text, 1) == {0: (0, ("1.2.3.4 STREAM x", "1.2.3.4 DGRAM"))}


@pytest.mark.parametrize(
    ("returncode", "line", "opened", "kind", "message"),
    [
        (
            255,
            "ssh: connect to host h port 22: No route to host",
            False,
            SshError,
            "ssh to u@h failed (ssh exited with status 255, its own failure): "
            "ssh: connect to host h port 22: No route to host",
        ),
        (
            255,
            "Connection to h closed by remote host.",
            True,
            SshError,
            "the ssh connection to u@h ended (ssh exited with status 255, its own failure): "
            "Connection to h closed by remote host.",
        ),
        (
            -9,
            None,
            True,
            SshError,
            "the ssh connection to u@h ended (ssh was killed by signal 9): ssh said nothing",
        ),
        (
            127,
            "bash: line 1: brokerpkg-helper: command not found",
            False,
            RemoteHelperNotFoundError,
            "no helper brokerpkg-helper on u@h (the remote shell exited with status 127): "
            "bash: line 1: brokerpkg-helper: command not found",
        ),
        (
            1,
            PRIVILEGE_LINE,
            False,
            RemoteHelperPrivilegeError,
            "helper brokerpkg-helper on u@h cannot open its sockets: no privilege for raw "
            "sockets (Operation not permitted) and unprivileged ICMP is off; fix: on u@h, "
            "`sudo brokerpkg setup`",
        ),
        (
            3,
            "brokerpkg-helper: something else",
            True,
            HelperExitedError,
            "helper brokerpkg-helper on u@h exited with status 3; its last error line: "
            "'brokerpkg-helper: something else'",
        ),
    ],
    ids=["unreachable", "dropped", "ssh-killed", "no-helper", "no-privilege", "helper-exit"],
)
def test_what_ssh_exit_statuses_mean(
    returncode: int, line: str | None, opened: bool, kind: type[Exception], message: str
) -> None:
    error = exit_error("u@h", "brokerpkg-helper", returncode, line, opened=opened)
    assert type(error) is kind
    assert str(error) == message
    if kind is not RemoteHelperPrivilegeError:  # a helper's exit: it has the status
        assert error.returncode == returncode  # type: ignore[attr-defined]


def test_the_fix_for_a_named_remote_helper_is_its_capability() -> None:
    error = exit_error("h", "/opt/bpk/brokerpkg-helper", 1, PRIVILEGE_LINE, opened=False)
    assert isinstance(error, RemoteHelperPrivilegeError)
    assert isinstance(error, HelperPrivilegeError)
    assert error.fix.startswith("sudo sh -c ")
    assert "setcap cap_net_raw+ep /opt/bpk/brokerpkg-helper" in error.fix
    assert str(error).endswith(f"; fix: on h, `{error.fix}`")


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--from", VA, "--from", VA], f"--from {VA} is given twice"),
        (["--from", VA, "--helper", "/x"], "--helper names the local helper; with --from give"),
        (["--remote-helper", "/x"], "--remote-helper applies with --from [USER@]HOST"),
        (["--from=-oProxyCommand=x"], "must not start with '-'"),
        (["--from", VA, "--remote-helper", ""], "not a command: ''"),
    ],
)
def test_from_usage_errors(
    words: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["trace", *words, "127.0.0.1"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert captured.err.startswith("usage: brokerpkg trace ")
    assert message in captured.err
    assert "brokerpkg trace: error: " in captured.err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_several_from_mtr_reports_instead_of_the_live_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a terminal, without -r, mtr draws its live view; from several vantage points
    it reports, one report each (one live view per terminal)."""
    monkeypatch.setattr(sys, "stdout", _Terminal())
    parse = cli.build_parser()
    assert cli._mtr_mode(cli.parse_arguments(parse, ["mtr", "--from", VA, "h"])) == "live"
    several = cli.parse_arguments(parse, ["mtr", "--from", VA, "--from", VB, "h"])
    assert cli._mtr_mode(several) == "report"


def test_blocks_come_out_in_from_order_the_first_as_it_is_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = cli._Blocks(["a", "b", "c"])
    blocks.write(1, "b1\n")
    blocks.write(0, "a1\n")
    assert capsys.readouterr().out == "==> a <==\na1\n"  # b waits for a
    blocks.write(2, "c1\n")
    blocks.finish(2)
    blocks.finish(1)
    assert capsys.readouterr().out == ""
    blocks.write(0, "a2\n")
    blocks.finish(0)
    assert capsys.readouterr().out == "a2\n\n==> b <==\nb1\n\n==> c <==\nc1\n"


# ----------------------------------------------------------------------------- the lab


class Fleet(NamedTuple):
    lab: Lab
    keys: SshKeys
    servers: dict[str, SshServer]
    helper: str
    """The remote helper command (the built helper, as root on the vantage points)."""
    unreachable: str
    """An address the client has an unreachable route to."""
    silent: str
    """An address the client routes to va, which drops it (va does not forward)."""
    blackhole: str
    """An address va's probes vanish towards (a blackhole route on ra1)."""

    def ssh(self, identity: Path | None = None) -> list[str]:
        """The ssh command, run in the client namespace."""
        return self.keys.command(self.lab, "client", identity)

    def from_(self, *destinations: str) -> list[str]:
        """``--from D ... --remote-helper HELPER`` for the command line."""
        words = [word for destination in destinations for word in ("--from", destination)]
        return [*words, "--remote-helper", self.helper]

    def session(self, destination: str = VA, **kwargs: Any) -> Session:
        kwargs.setdefault("helper", self.helper)
        kwargs.setdefault("ssh", self.ssh())
        return Session.over_ssh(destination, **kwargs)


def _remote_helper(path: str) -> str:
    """The remote helper command: under the sanitizers, with their options (ssh passes
    no environment to the remote side), so that reports still reach the run's
    report directory."""
    return remote_command(path, _SANITIZER_OPTIONS if sanitized_build() else {})


@pytest.fixture(scope="module")
def fleet(
    privileged: None, helper_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    available, why = sshd_available()
    if not available:
        pytest.skip(why)
    lab = Lab("ssh")
    for role in ("client", "va", "vb", "target"):
        lab.add_node(role)
    for role in ("ra1", "rb1", "rb2"):
        lab.add_node(role, router=True)
    for a, b, k in (
        ("client", "va", 1),
        ("client", "vb", 2),
        ("va", "ra1", 3),
        ("ra1", "target", 4),
        ("vb", "rb1", 5),
        ("rb1", "rb2", 6),
        ("rb2", "target", 7),
    ):
        lab.add_link(a, b, k)
    # towards the target by default: what the target does not own it drops, unanswered
    lab.add_route("va", "default", via="198.18.3.2")
    lab.add_route("ra1", "default", via="198.18.4.2")
    lab.add_route("vb", "default", via="198.18.5.2")
    lab.add_route("rb1", "default", via="198.18.6.2")
    lab.add_route("rb2", "default", via="198.18.7.2")
    lab.add_route("rb2", "198.18.5.0/24", via="198.18.6.1")
    lab.add_route("target", "198.18.3.0/24", via="198.18.4.1")
    lab.add_route("target", "198.18.5.0/24", via="198.18.7.1")
    try:
        lab.build()
        unreachable = lab.add_special("client", "unreachable").address(4)
        silent = lab.add_special("va", "blackhole")
        lab.add_route("client", silent.prefix4, via="198.18.1.2")
        blackhole = lab.add_special("ra1", "blackhole").address(4)
        keys = SshKeys(tmp_path_factory.mktemp("ssh"))
        servers = {}
        for destination in (VA, VB):
            server = SshServer(
                lab,
                NODES[destination],
                parse_destination(destination).host,
                keys,
                host_name=HOST_NAMES[destination],
                hosts=HOSTS[destination],
                resolv_conf=f"nameserver {SILENT_DNS}\noptions timeout:{DNS_TIMEOUT} attempts:1\n",
            )
            server.authorize()
            server.authorize_as_nobody()
            servers[destination] = server.start()
        helper = _remote_helper(helper_path)
        yield Fleet(lab, keys, servers, helper, unreachable, silent.address(4), blackhole)
    finally:
        lab.close()


def traceroute_truth(fleet: Fleet, destination: str) -> list[tuple[str, str]]:
    """(name, address) of every hop, as the real traceroute run on the vantage point
    prints them (its names from its own /etc/hosts)."""
    done = fleet.lab.run(
        NODES[destination], ["traceroute", "-q", "1", "-w", "3", "-m", "8", NAME], timeout=60
    )
    hops = []
    for line in done.stdout.splitlines()[1:]:
        match = re.match(r"^ ?\d+  (\S+) \((\S+)\)", line)
        assert match, done.stdout
        hops.append((match.group(1), match.group(2)))
    return hops


def test_traceroute_on_each_vantage_point_is_the_truth_the_tests_expect(fleet: Fleet) -> None:
    for destination in (VA, VB):
        expected = [(HOSTS[destination][address], address) for address in PATH[destination]]
        assert traceroute_truth(fleet, destination) == expected


# ----------------------------------------------------------------------------- library


async def test_a_session_over_ssh_probes_from_there_with_its_names(fleet: Fleet) -> None:
    async with asyncio.timeout(LIMIT), fleet.session(VA) as session:
        assert session.vantage_point == VA
        assert repr(session).startswith(f"<Session open: {fleet.helper} on {VA} (brokerpkg-")
        assert await session.host_name() == "vantage-a"
        assert await session.resolve(NAME) == TARGET[VA]
        result = await session.probe(NAME, details=True)
        assert (result.success, result.responder, result.target) == (True, TARGET[VA], TARGET[VA])
        assert result.reply_ttl == 63  # two hops away there
        assert await session.name_resolver.name("198.18.3.2") == "router-a1"
        with pytest.raises(HostResolveError) as caught:
            await session.resolve("router-b1")  # vb's name, unknown on va
        assert str(caught.value) == f"unable to resolve 'router-b1' on {VA}: no such address"
        with pytest.raises(HostResolveError, match=f"to an IPv6 address on {VA}: no such"):
            await session.resolve(NAME, 6)  # ahostsv6's IPv4-mapped answer is not IPv6
        assert (await session.probe(TARGET[VA])).success  # the next request still works


async def test_each_name_comes_as_soon_as_it_is_found_there(fleet: Fleet) -> None:
    """Asked together (one lookup command), a name in va's /etc/hosts does not wait for
    one that va's (silent) DNS takes DNS_TIMEOUT to give up on."""
    async with asyncio.timeout(LIMIT), fleet.session(VA) as session:
        loop = asyncio.get_running_loop()
        began = loop.time()

        async def name(address: str) -> tuple[str | None, float]:
            found = await session.name_resolver.name(address)
            return found, loop.time() - began

        (known, known_at), (unknown, unknown_at) = await asyncio.gather(
            name("198.18.3.2"), name("198.18.3.77")
        )
        assert (known, unknown) == ("router-a1", None)
        assert unknown_at >= DNS_TIMEOUT
        assert known_at < unknown_at - DNS_TIMEOUT / 2, (known_at, unknown_at)


async def test_names_resolved_here_when_asked(fleet: Fleet) -> None:
    async with asyncio.timeout(LIMIT), fleet.session(VA, names="local") as session:
        with pytest.raises(HostResolveError) as caught:
            await session.resolve(NAME)
        assert f" on {VA}" not in str(caught.value)
        assert await session.host_name() == "198.18.1.2"
        assert (await session.probe(TARGET[VA])).success


async def test_every_tool_on_many_sessions_at_once_from_one_event_loop(fleet: Fleet) -> None:
    """Three sessions per vantage point, all open at once; each runs ping, multiping,
    probe_many, traceroute and monitor, and each sees its own vantage point's path."""

    async def work(destination: str) -> None:
        async with fleet.session(destination) as session:
            ping = await brokerpkg.ping(NAME, count=3, interval=0.05, session=session)
            assert (ping.address, ping.received) == (TARGET[destination], 3)
            pings = await brokerpkg.multiping([NAME, PATH[destination][0]], session=session)
            assert [p.address for p in pings] == [TARGET[destination], PATH[destination][0]]
            assert all(p.is_alive for p in pings)
            many = await session.probe_many([NAME] * 20, ttl=1)
            assert {r.responder for r in many} == {PATH[destination][0]}
            trace = await brokerpkg.traceroute(NAME, session=session, resolve_names=True)
            assert [(h.name, h.address) for h in trace.hops] == [
                (HOSTS[destination][a], a) for a in PATH[destination]
            ]
            final = None
            async for report in brokerpkg.monitor(
                NAME, cycles=2, interval=0.1, grace=3, session=session
            ):
                final = report
            assert final is not None and final.reached
            assert [hop.address for hop in final.hops] == PATH[destination]

    async with asyncio.timeout(LIMIT * 2):
        await asyncio.gather(*(work(d) for d in (VA, VB, VA, VB, VA, VB)))


async def test_host_unreachable_names_the_vantage_point_and_ssh(fleet: Fleet) -> None:
    destination = f"root@{fleet.unreachable}"
    session = fleet.session(destination)
    with pytest.raises(SshError) as caught:
        async with asyncio.timeout(LIMIT):
            await session.open()
    error = caught.value
    assert (error.returncode, error.destination, error.opened) == (255, destination, False)
    assert str(error) == (
        f"ssh to {destination} failed (ssh exited with status 255, its own failure): "
        f"ssh: connect to host {fleet.unreachable} port 22: No route to host"
    )
    assert not session.is_open
    async with asyncio.timeout(LIMIT), fleet.session(VA) as working:  # the next one works
        assert (await working.probe(TARGET[VA])).success


async def test_a_host_that_never_answers_times_out_naming_the_vantage_point(
    fleet: Fleet,
) -> None:
    """Its SYNs vanish: ssh would wait for its ConnectTimeout (10 s here), the session
    gives up at its open timeout, naming the vantage point."""
    destination = f"root@{fleet.silent}"
    session = fleet.session(destination, open_timeout=2)
    began = time.monotonic()
    with pytest.raises(ResponseTimeoutError) as caught:
        async with asyncio.timeout(LIMIT):
            await session.open()
    assert 1.5 < time.monotonic() - began < 8
    assert str(caught.value).startswith(
        "no answer from the helper to the feature queries at open through ssh to "
        f"{destination} within 2 s"
    )
    assert session.process is not None
    assert session.process.returncode == -9  # closed: ssh killed and reaped


async def test_authentication_refused_names_the_vantage_point_and_ssh(fleet: Fleet) -> None:
    session = fleet.session(VA, ssh=fleet.ssh(fleet.keys.stranger))
    with pytest.raises(SshError) as caught:
        async with asyncio.timeout(LIMIT):
            await session.open()
    assert caught.value.returncode == 255
    assert str(caught.value) == (
        f"ssh to {VA} failed (ssh exited with status 255, its own failure): "
        f"{VA}: Permission denied (publickey)."
    )


@pytest.mark.parametrize(
    ("helper", "said"),
    [
        ("/nonexistent/brokerpkg-helper", "/nonexistent/brokerpkg-helper: No such file or"),
        ("brokerpkg-helper-not-installed", "brokerpkg-helper-not-installed: command not found"),
    ],
)
async def test_remote_helper_missing(fleet: Fleet, helper: str, said: str) -> None:
    session = fleet.session(VA, helper=helper)
    with pytest.raises(RemoteHelperNotFoundError) as caught:
        async with asyncio.timeout(LIMIT):
            await session.open()
    error = caught.value
    assert isinstance(error, HelperNotFoundError)
    assert (error.returncode, error.destination, error.helper) == (127, VA, helper)
    assert str(error).startswith(
        f"no helper {helper} on {VA} (the remote shell exited with status 127): bash: line 1: "
    )
    assert said in str(error)


async def test_remote_helper_without_privilege_says_its_line_through_ssh(
    fleet: Fleet, unprivileged_copy: UnprivilegedCopy
) -> None:
    """The nobody key's forced command runs the plain (unprivileged) helper copy as
    nobody on va: its one-line message comes back through ssh's standard error."""
    plain = str(unprivileged_copy.plain_helper)
    session = fleet.session(VA, helper=plain, ssh=fleet.ssh(fleet.keys.nobody))
    with pytest.raises(RemoteHelperPrivilegeError) as caught:
        async with asyncio.timeout(LIMIT):
            await session.open()
    error = caught.value
    assert error.destination == VA
    assert error.stderr_line == PRIVILEGE_LINE
    assert error.cause == (
        "no privilege for raw sockets (Operation not permitted) and unprivileged ICMP is off"
    )
    assert str(error) == (
        f"helper {plain} on {VA} cannot open its sockets: {error.cause}; fix: on {VA}, "
        f"`{error.fix}`"
    )
    assert f"setcap cap_net_raw+ep {plain}" in error.fix


async def test_connection_dropped_mid_run_fails_pending_probes_at_once(fleet: Fleet) -> None:
    """Probes that would wait 60 s fail within seconds of the sshd session being
    killed, with ssh's exit status; the next session works."""
    server = fleet.servers[VA]
    async with asyncio.timeout(LIMIT), fleet.session(VA) as session:
        pending = [
            asyncio.ensure_future(session.probe(fleet.blackhole, timeout=60)) for _ in range(5)
        ]
        assert (await session.probe(TARGET[VA])).success  # the probes above are on the wire
        assert session.in_flight == 5
        assert server.drop_sessions()
        began = time.monotonic()
        results = await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.monotonic() - began
        assert elapsed < 10, elapsed  # against 60 s of probe timeout
        for error in results:
            assert isinstance(error, SshError), error
            assert (error.returncode, error.opened, error.destination) == (255, True, VA)
            assert str(error) == (
                f"the ssh connection to {VA} ended (ssh exited with status 255, its own "
                f"failure): Connection to {parse_destination(VA).host} closed by remote host."
            )
        with pytest.raises(SshError):
            await session.probe(TARGET[VA])
    async with asyncio.timeout(LIMIT), fleet.session(VA) as working:
        assert (await working.probe(TARGET[VA])).success


async def test_closing_a_session_ends_its_ssh_and_the_remote_helper(fleet: Fleet) -> None:
    server = fleet.servers[VB]
    async with asyncio.timeout(LIMIT), fleet.session(VB) as session:
        assert await session.name_resolver.name("198.18.6.2") == "router-b2"
        assert server.session_pids()
        process = session.process
        assert process is not None
    assert process.returncode is not None
    server.wait_no_sessions()


# ----------------------------------------------------------------------------- the command


def run_cli(
    fleet: Fleet,
    args: Sequence[str],
    *,
    identity: Path | None = None,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python3 -m brokerpkg ARGS`` in the client namespace, BROKERPKG_SSH set to the
    lab's ssh command."""
    argv, env = cli_command(fleet, args, identity)
    return subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


def cli_command(
    fleet: Fleet, args: Sequence[str], identity: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of :func:`run_cli`."""
    argv = fleet.lab.exec_argv("client", [sys.executable, "-m", "brokerpkg", *args])
    env = dict(os.environ, BROKERPKG_SSH=fleet.keys.environment_value(identity))
    env.pop("BROKERPKG_HELPER", None)
    return argv, env


def start_cli(fleet: Fleet, args: Sequence[str]) -> subprocess.Popen[str]:
    """:func:`run_cli`, started (its output read through pipes)."""
    argv, env = cli_command(fleet, args)
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def blocks_of(text: str) -> list[tuple[str, str]]:
    """``==> NAME <==`` blocks -> (name, text); a blank line separates blocks."""
    blocks: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        match = re.fullmatch(r"==> (\S+) <==\n", line)
        if match:
            blocks.append([match.group(1), ""])
        else:
            assert blocks, text
            blocks[-1][1] += line
    for block in blocks[:-1]:
        assert block[1].endswith("\n") and block[1][-2:-1] in ("", "\n"), text
        block[1] = block[1][:-1]
    return [(name, body) for name, body in blocks]


def trace_pairs(text: str) -> list[tuple[str, str]]:
    """(name, address) of each hop of traceroute's lines."""
    pairs = []
    for line in text.splitlines()[1:]:
        match = re.match(r"^ ?\d+  (\S+) \((\S+)\)", line)
        assert match, text
        pairs.append((match.group(1), match.group(2)))
    return pairs


def test_trace_from_two_vantage_points_each_under_its_heading(fleet: Fleet) -> None:
    done = run_cli(
        fleet,
        ["trace", "-q", "1", *fleet.from_(VA, VB), NAME],
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    blocks = blocks_of(done.stdout)
    assert [name for name, _ in blocks] == [VA, VB]
    for destination, text in blocks:
        assert text.splitlines()[0] == (
            f"traceroute to {NAME} ({TARGET[destination]}), 30 hops max, 64 byte packets"
        )
        assert trace_pairs(text) == traceroute_truth(fleet, destination)


def test_trace_json_from_two_is_one_object_keyed_by_vantage_point(fleet: Fleet) -> None:
    done = run_cli(
        fleet,
        ["trace", "-j", "-n", *fleet.from_(VB, VA), NAME],
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert list(document) == [VB, VA]
    for destination, trace in document.items():
        assert (trace["host"], trace["destination"], trace["reached"]) == (
            NAME,
            TARGET[destination],
            True,
        )
        assert [hop["responders"][0]["address"] for hop in trace["hops"]] == PATH[destination]


def test_one_from_prints_what_the_command_prints_there(fleet: Fleet) -> None:
    """No heading; mtr's HOST is the vantage point's host name, names are its names."""
    done = run_cli(fleet, ["mtr", "-r", "-c", "2", *fleet.from_(VB), NAME])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Start: ")
    assert re.match(r"^HOST: vantage-b +Loss%", lines[1]), lines[1]
    hosts = [line.split()[1] for line in lines[2:]]
    assert hosts == ["router-b1", "router-b2", NAME]
    done = run_cli(fleet, ["mtr", "-j", "-c", "1", *fleet.from_(VA), NAME])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["report"]
    assert (report["mtr"]["src"], report["mtr"]["dst"]) == ("vantage-a", NAME)
    assert [hub["host"] for hub in report["hubs"]] == ["router-a1", NAME]


def test_ping_probe_and_multiping_from_two(fleet: Fleet) -> None:
    both = fleet.from_(VA, VB)
    done = run_cli(fleet, ["ping", "-c", "2", "-i", "0.2", *both, NAME])
    assert done.returncode == 0, done.stderr
    for destination, text in blocks_of(done.stdout):
        target = TARGET[destination]
        lines = text.splitlines()
        assert lines[0] == f"PING {NAME} ({target}) 56(84) bytes of data."
        hops = len(PATH[destination])
        assert re.match(
            rf"^64 bytes from {NAME} \({re.escape(target)}\): icmp_seq=1 ttl={65 - hops} ", lines[1]
        ), lines[1]
        assert f"--- {NAME} ping statistics ---" in lines
    done = run_cli(fleet, ["probe", "-t", "1", *both, NAME])
    assert done.returncode == 1, done.stderr  # a router answered: not the target
    assert [(name, text.split(" in ")[0]) for name, text in blocks_of(done.stdout)] == [
        (VA, f"ttl-expired from {PATH[VA][0]}"),
        (VB, f"ttl-expired from {PATH[VB][0]}"),
    ]
    done = run_cli(fleet, ["multiping", "-q", "-c", "2", "-i", "0.1", *both, NAME, "198.18.3.2"])
    assert done.returncode == 1, done.stderr  # 198.18.3.2 is ra1, on va's path only
    blocks = dict(blocks_of(done.stdout))
    assert re.match(r"^probe-target : xmt/rcv/%loss = 2/2/0%", blocks[VA])
    assert re.search(r"^198.18.3.2   : xmt/rcv/%loss = 2/2/0%", blocks[VA], re.MULTILINE)
    assert re.search(r"^198.18.3.2   : xmt/rcv/%loss = 2/0/100%", blocks[VB], re.MULTILINE)


def test_multiping_reads_its_targets_once_for_every_vantage_point(fleet: Fleet) -> None:
    targets = f"{NAME}\n# the first router of each path\nrouter-a1\n"
    args = ["multiping", "-q", "-c", "1", "-f", "-", *fleet.from_(VA, VB)]
    done = run_cli(fleet, args, input=targets)
    assert done.returncode == 2  # router-a1 is va's name only
    assert done.stderr == (
        f"brokerpkg multiping: unable to resolve 'router-a1' on {VB}: no such address\n"
    )
    blocks = blocks_of(done.stdout)
    assert [name for name, _ in blocks] == [VA, VB]
    lines = blocks[0][1].splitlines()
    assert [line.split(" : ")[0].rstrip() for line in lines] == [NAME, "router-a1"]
    assert all("xmt/rcv/%loss = 1/1/0%" in line for line in lines), lines
    assert blocks[1][1] == ""


def test_ctrl_c_stops_every_vantage_point_with_its_summary(fleet: Fleet) -> None:
    """ping until Ctrl-C from both (198.18.7.2 is the target's on both paths): the
    interrupt stops both, each prints its summary.  It is sent once va has printed
    replies and vb's helper runs (vb's output is kept until va's ends)."""
    target = TARGET[VB]
    process = start_cli(fleet, ["ping", "-i", "0.2", *fleet.from_(VA, VB), target])
    try:
        assert process.stdout is not None
        seen = [process.stdout.readline() for _ in range(5)]  # heading, PING, 3 replies
        assert seen[0] == f"==> {VA} <==\n"
        assert all(" bytes from " in line for line in seen[2:]), seen
        fleet.servers[VB].wait_for_process("brokerpkg-helpe")  # the kernel's 15 characters
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=LIMIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = "".join(seen) + out
    blocks = dict(blocks_of(text))
    assert list(blocks) == [VA, VB], text
    received = {}
    for destination, block in blocks.items():
        lines = block.splitlines()
        assert lines[0] == f"PING {target} ({target}) 56(84) bytes of data.", text
        assert lines[-3] == f"--- {target} ping statistics ---", (text, err)
        counts = re.match(r"^(\d+) packets transmitted, (\d+) received", lines[-2])
        assert counts, text
        received[destination] = int(counts.group(2))
    assert received[VA] >= 3
    assert err == ""
    assert process.returncode == (0 if received[VB] else 1)


@pytest.mark.parametrize("kind", ["unreachable", "authentication", "missing", "privilege"])
def test_a_failing_vantage_point_is_named_with_the_cause(
    fleet: Fleet, unprivileged_copy: UnprivilegedCopy, kind: str
) -> None:
    helper, identity, where = fleet.helper, None, VB
    if kind == "unreachable":
        where = f"root@{fleet.unreachable}"
        cause = (
            f"ssh to {where} failed (ssh exited with status 255, its own failure): "
            f"ssh: connect to host {fleet.unreachable} port 22: No route to host"
        )
    elif kind == "authentication":
        identity = fleet.keys.stranger
        cause = (
            f"ssh to {VB} failed (ssh exited with status 255, its own failure): "
            f"{VB}: Permission denied (publickey)."
        )
    elif kind == "missing":
        helper = "/nonexistent/brokerpkg-helper"
        cause = (
            f"no helper {helper} on {VB} (the remote shell exited with status 127): bash: "
            f"line 1: {helper}: No such file or directory; fix: install brokerpkg on {VB} "
            "(`sudo brokerpkg setup` there puts its helper on PATH), or give --remote-helper PATH"
        )
    else:
        identity = fleet.keys.nobody
        helper = str(unprivileged_copy.plain_helper)
        cause = (
            f"helper {helper} on {VB} cannot open its sockets: no privilege for raw sockets "
            f"(Operation not permitted) and unprivileged ICMP is off; fix: on {VB}, `sudo sh -c"
        )
    args = ["trace", "-n", "-q", "1", "--remote-helper", helper, "--from", where, NAME]
    done = run_cli(fleet, args, identity=identity)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"brokerpkg trace: {cause}"), done.stderr
    assert done.stderr.count("\n") == 1
    done = run_cli(fleet, [*args[:-1], "-j", NAME], identity=identity)
    assert done.returncode == 2
    document = json.loads(done.stdout)
    assert document["error"].startswith(cause)
    assert document["target"] == NAME


def test_one_failing_vantage_point_among_several(fleet: Fleet) -> None:
    """The others print their output; the failing one's heading has none, its error
    (naming it) goes to standard error, and the exit status is the worst."""
    bad = f"root@{fleet.unreachable}"
    args = ["trace", "-n", "-q", "1"]
    done = run_cli(fleet, [*args, *fleet.from_(VA, bad, VB), NAME])
    assert done.returncode == 2
    blocks = blocks_of(done.stdout)
    assert [name for name, _ in blocks] == [VA, bad, VB]
    assert blocks[1][1] == ""
    for destination, text in (blocks[0], blocks[2]):
        assert [line.split()[1] for line in text.splitlines()[1:]] == PATH[destination]
    assert done.stderr == (
        f"brokerpkg trace: ssh to {bad} failed (ssh exited with status 255, its own failure): "
        f"ssh: connect to host {fleet.unreachable} port 22: No route to host\n"
    )
    done = run_cli(fleet, [*args, "-j", *fleet.from_(bad, VA), NAME])
    assert done.returncode == 2
    document = json.loads(done.stdout)
    assert list(document) == [bad, VA]
    assert document[bad]["error"].startswith(f"ssh to {bad} failed")
    assert document[VA]["reached"] is True


def test_a_connection_dropped_mid_run_ends_the_command_at_once(fleet: Fleet) -> None:
    process = start_cli(fleet, ["ping", "-i", "0.2", "-W", "60", *fleet.from_(VA), fleet.blackhole])
    try:
        assert process.stdout is not None
        # the header comes once the session is open and the target resolved
        assert process.stdout.readline().startswith(f"PING {fleet.blackhole} ")
        assert fleet.servers[VA].drop_sessions()
        began = time.monotonic()
        _, err = process.communicate(timeout=LIMIT)
        elapsed = time.monotonic() - began
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2
    assert elapsed < 15, elapsed  # its probes wait 60 s each
    assert err == (
        f"brokerpkg ping: the ssh connection to {VA} ended (ssh exited with status 255, its "
        f"own failure): Connection to {parse_destination(VA).host} closed by remote host.\n"
    )
