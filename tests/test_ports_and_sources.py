"""Ports, probe identities and source addresses a caller must not get (issue 10, 2 and 4).

Two users share the lab's client: A (nobody, 65534) runs the helper's setuid-root or
cap_net_raw copy, B (65533) is another unprivileged user with its own sockets and its
own run of the helper.

* Held ports: a ``local-port`` that B's socket holds is refused to A
  (``address-in-use``, nothing leaves, B's socket hears nothing), and a port A's probes
  hold cannot be taken by B, with a socket or through the helper, until they end; the
  UDP probes of one helper share their port (``mtr -u -L``); the helper's own ports
  are not refused; on a kernel with SCTP the port of an sctp probe is held too.
* Identities: B reads A's pid and start time in /proc and forges the time-exceeded
  answers the old seed (pid ^ time * 2654435761) made predictable; A's probes stay
  ``no-reply``.
* Foreign sources: with ``ip_nonlocal_bind`` set in the client's namespace, an
  address the host does not own is refused for every protocol and family, and a capture
  shows that nothing left.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from helperio import words
from lab import packets as P
from lab.topology import Chain, Lab

pytestmark = pytest.mark.privileged

NOBODY = 65534
OTHER = 65533  # user B
FAMILIES = (4, 6)
PROTOCOLS = ("icmp", "udp", "tcp", "sctp")
MODES = ("setuid", "setcap")
SYSTEM_PYTHON = "/usr/bin/python3"


def ip_word(family: int) -> str:
    return "ip-4" if family == 4 else "ip-6"


def probe(token: int, family: int, dst: str, **args: object) -> str:
    """A send-probe line; keyword names use _ for - (local_port -> local-port)."""
    extra = " ".join(f"{k.replace('_', '-')} {v}" for k, v in args.items())
    return f"{token} send-probe {ip_word(family)} {dst} {extra}".rstrip()


class Running:
    """A helper (or any line-speaking program) running in a lab node, fed line by line."""

    def __init__(
        self, lab: Lab, argv: Sequence[str], *, node: str = "client", user: int | None = None
    ) -> None:
        self.proc = lab.popen(
            node,
            list(argv),
            user=user,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid  # ip netns exec and setpriv exec: the program's own pid
        self.replies: dict[int, tuple[float, str]] = {}
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("ascii", "replace").rstrip("\n")
            with self._cond:
                token = int(line.split(" ", 1)[0])
                assert token not in self.replies, f"token answered twice: {line}"
                self.replies[token] = (time.monotonic(), words(line))
                self._cond.notify_all()

    def send(self, lines: Sequence[str]) -> float:
        """Write request lines; return the monotonic time just before writing."""
        assert self.proc.stdin is not None
        start = time.monotonic()
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        self.proc.stdin.flush()
        return start

    def wait(self, tokens: Sequence[int], timeout: float = 15.0) -> dict[int, str]:
        """Wait for a reply to every token; return the replies (round-trip times masked)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(t in self.replies for t in tokens):
                left = deadline - time.monotonic()
                assert left > 0, f"no reply to {[t for t in tokens if t not in self.replies]}"
                self._cond.wait(left)
            return {t: self.replies[t][1] for t in tokens}

    def sync(self, token: int = 999999) -> None:
        """Return once every line written so far has been served (sent, or refused)."""
        self.send([f"{token} check-support feature version"])
        self.wait([token])

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.close()
        status = self.proc.wait(30)
        self._reader.join(5)
        error = self.proc.stderr.read().decode(errors="replace")
        assert (status, error) == (0, ""), error


def nobody_helper(unprivileged_copy: Any, mode: str) -> list[str]:
    return [str(unprivileged_copy.helper(mode))]


# --------------------------------------------------------------------------- B's sockets

# Runs as B (OTHER): binds the ports of argv[1:] ("udp4 ADDR PORT" / "udp6 ADDR PORT",
# or tcp4 / tcp6: a listening TCP socket), prints "bound" or the errno of the first
# failure, then (if bound) waits for its stdin to close and prints how many datagrams
# (TCP: connections) reached its sockets.
HOLDER = r"""
import errno, socket, sys
args = sys.argv[1:]
sockets = []
for i in range(0, len(args), 3):
    kind, address, port = args[i], args[i + 1], int(args[i + 2])
    s = socket.socket(socket.AF_INET6 if kind.endswith("6") else socket.AF_INET,
                      socket.SOCK_STREAM if kind.startswith("tcp") else socket.SOCK_DGRAM)
    if kind.endswith("6"):
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        s.bind((address, port))
    except OSError as e:
        print(errno.errorcode[e.errno], flush=True)
        sys.exit(0)
    if kind.startswith("tcp"):
        s.listen(8)
    s.setblocking(False)
    sockets.append(s)
print("bound", flush=True)
sys.stdin.read()
heard = 0
for s in sockets:
    while True:
        try:
            s.accept() if s.type == socket.SOCK_STREAM else s.recv(65536)
        except BlockingIOError:
            break
        heard += 1
print(heard, flush=True)
"""


class Holder:
    """B's sockets bound in a lab node (see HOLDER)."""

    def __init__(self, lab: Lab, binds: Sequence[tuple[str, str, int]], node: str = "client"):
        argv = [SYSTEM_PYTHON, "-c", HOLDER]
        for kind, address, port in binds:
            argv += [kind, address, str(port)]
        self.proc = lab.popen(
            node,
            argv,
            user=OTHER,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.status = self.proc.stdout.readline().strip()

    def heard(self) -> int:
        """Close B's stdin; return how many datagrams its sockets received."""
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err
        return int(out.strip())


# Runs as B: binds each of the sockets of argv[1:] (triples as HOLDER's) on its own (each
# closed before the next), and prints a JSON list of "bound" or the errno name.
TRY_BINDS = r"""
import errno, json, socket, sys
args, results = sys.argv[1:], []
for i in range(0, len(args), 3):
    kind, address, port = args[i], args[i + 1], int(args[i + 2])
    with socket.socket(socket.AF_INET6 if kind.endswith("6") else socket.AF_INET,
                       socket.SOCK_STREAM if kind.startswith("tcp") else socket.SOCK_DGRAM) as s:
        if kind.endswith("6"):
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((address, port))
            results.append("bound")
        except OSError as e:
            results.append(errno.errorcode[e.errno])
print(json.dumps(results))
"""


def try_binds(lab: Lab, binds: Sequence[tuple[str, str, int]]) -> list[str]:
    """Let B bind each socket (one process, each bind on its own): "bound" or errno names."""
    argv = [SYSTEM_PYTHON, "-c", TRY_BINDS]
    for kind, address, port in binds:
        argv += [kind, address, str(port)]
    return list(json.loads(lab.run("client", argv, user=OTHER, timeout=30).stdout))


ECHO = r"""
import select, socket, sys
port = int(sys.argv[1])
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("0.0.0.0", port))
b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
b.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
b.bind(("::", port))
print("ready", flush=True)
while True:
    for s in select.select([a, b, sys.stdin], [], [])[0]:
        if s is sys.stdin:
            sys.exit(0)
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)
"""


def udp_echo_service(lab: Lab, node: str, port: int) -> subprocess.Popen[str]:
    """A UDP echo service on ``port`` of ``node`` (both families), until its stdin closes."""
    proc = lab.popen(
        node,
        [SYSTEM_PYTHON, "-c", ECHO, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


# --------------------------------------------------------------------------- held ports

SERVICE_PORT = 7007  # the server's UDP echo service


@pytest.mark.parametrize("mode", MODES)
def test_a_port_another_user_holds_is_refused_and_its_answers_never_reach_that_socket(
    mode: str, chain: Chain, unprivileged_copy: Any
) -> None:
    """Before: the probes left from B's port, the server's echo answered it and B's
    sockets heard both; now address-in-use, nothing leaves, B hears nothing."""
    port = 45010
    echo = udp_echo_service(chain, "server", SERVICE_PORT)
    holder = Holder(chain, [("udp4", "0.0.0.0", port), ("udp6", "::", port)])
    assert holder.status == "bound"
    requests = [
        probe(
            fam,
            fam,
            chain.server_address(fam),
            protocol="udp",
            port=SERVICE_PORT,
            local_port=port,
            timeout=2,
        )
        for fam in FAMILIES
    ] + [  # controls: a free local-port, to a port nobody serves (port unreachable)
        probe(
            10 + fam,
            fam,
            chain.server_address(fam),
            protocol="udp",
            port=7008,
            local_port=port + 1,
            timeout=2,
        )
        for fam in FAMILIES
    ]
    try:
        with chain.capture("client", "eth0") as cap:
            a = Running(chain, nobody_helper(unprivileged_copy, mode), user=NOBODY)
            a.send(requests)
            replies = a.wait([4, 6, 14, 16])
            a.close()
        heard = holder.heard()
    finally:
        assert echo.stdin is not None
        echo.stdin.close()
        echo.wait(10)
    assert replies == {
        4: "4 address-in-use",
        6: "6 address-in-use",
        14: f"14 reply ip-4 {chain.server_address(4)} round-trip-time N",
        16: f"16 reply ip-6 {chain.server_address(6)} round-trip-time N",
    }
    assert heard == 0
    assert not cap.select(proto="udp", sport=port), cap.describe()
    assert len(cap.select(direction="out", proto="udp", sport=port + 1)) == 2, cap.describe()


@pytest.mark.parametrize("mode", MODES)
def test_a_port_the_probes_hold_is_nobody_elses_until_they_end(
    mode: str, chain: Chain, unprivileged_copy: Any
) -> None:
    """While A's udp probes from a port are in flight, B can bind it neither alone nor
    through the helper; once they have ended it can.  Before: B bound it at once."""
    port = 45020
    hole = chain.add_blackhole(2)
    client = {fam: chain.client_address(fam) for fam in FAMILIES}
    a = Running(chain, nobody_helper(unprivileged_copy, mode), user=NOBODY)
    a.send(
        [
            probe(fam, fam, hole.address(fam), protocol="udp", local_port=port, timeout=5)
            for fam in FAMILIES
        ]
    )
    a.sync()
    b_helper = [str(unprivileged_copy.helper(mode))]
    b_requests = [
        probe(20 + fam, fam, chain.server_address(fam), protocol="udp", local_port=port, timeout=2)
        for fam in FAMILIES
    ]
    # B's own sockets: the exact address and port, and any address of the family
    during = try_binds(
        chain,
        [
            ("udp4", client[4], port),
            ("udp4", "0.0.0.0", port),
            ("udp6", client[6], port),
            ("udp6", "::", port),
        ],
    )
    with chain.capture("client", "eth0") as cap:
        b = Running(chain, b_helper, user=OTHER)
        b.send(b_requests)
        b_during = b.wait([24, 26])
        b.close()
    assert a.wait([4, 6], timeout=10) == {4: "4 no-reply", 6: "6 no-reply"}
    a.close()
    after = try_binds(chain, [("udp4", "0.0.0.0", port), ("udp6", "::", port)])
    b = Running(chain, b_helper, user=OTHER)
    b.send(b_requests)
    b_after = b.wait([24, 26])
    b.close()
    assert during == ["EADDRINUSE"] * 4
    assert b_during == {24: "24 address-in-use", 26: "26 address-in-use"}
    assert not cap.select(direction="out", dst=chain.server_address(4)), cap.describe()
    assert not cap.select(direction="out", dst=chain.server_address(6)), cap.describe()
    assert after == ["bound", "bound"]
    assert b_after == {
        24: f"24 reply ip-4 {chain.server_address(4)} round-trip-time N",
        26: f"26 reply ip-6 {chain.server_address(6)} round-trip-time N",
    }


@pytest.mark.parametrize("mode", MODES)
def test_tcp_local_ports_are_held_both_ways(
    mode: str, chain: Chain, unprivileged_copy: Any
) -> None:
    """TCP SYNs leave from the raw socket, so a TCP local-port is held by a bound
    socket of the helper's: a port B listens on is address-in-use for A (nothing
    leaves, B's listener hears nothing), and while A's probes from a port are in flight
    B can bind it neither alone nor through the helper; once they have ended it can."""
    taken, port = 45030, 45031
    hole = chain.add_blackhole(2)
    holder = Holder(chain, [("tcp4", "0.0.0.0", taken), ("tcp6", "::", taken)])
    assert holder.status == "bound"
    client = {fam: chain.client_address(fam) for fam in FAMILIES}
    a = Running(chain, nobody_helper(unprivileged_copy, mode), user=NOBODY)
    b_helper = [str(unprivileged_copy.helper(mode))]
    b_requests = [
        probe(20 + fam, fam, chain.server_address(fam), protocol="tcp", local_port=port, timeout=2)
        for fam in FAMILIES
    ]
    with chain.capture("client", "eth0") as cap:
        a.send(
            [
                probe(
                    fam, fam, chain.server_address(fam), protocol="tcp", local_port=taken, timeout=2
                )
                for fam in FAMILIES
            ]
            + [
                probe(10 + fam, fam, hole.address(fam), protocol="tcp", local_port=port, timeout=5)
                for fam in FAMILIES
            ]
        )
        refused = a.wait([4, 6])
        a.sync()
        during = try_binds(
            chain,
            [
                ("tcp4", client[4], port),
                ("tcp4", "0.0.0.0", port),
                ("tcp6", client[6], port),
                ("tcp6", "::", port),
            ],
        )
        b = Running(chain, b_helper, user=OTHER)
        b.send(b_requests)
        b_during = b.wait([24, 26])
        b.close()
        ended = a.wait([14, 16], timeout=10)
    a.close()
    heard = holder.heard()
    after = try_binds(chain, [("tcp4", "0.0.0.0", port), ("tcp6", "::", port)])
    b = Running(chain, b_helper, user=OTHER)
    b.send(b_requests)
    b_after = b.wait([24, 26])
    b.close()
    assert refused == {4: "4 address-in-use", 6: "6 address-in-use"}
    assert heard == 0
    assert not cap.select(proto="tcp", sport=taken), cap.describe()
    assert during == ["EADDRINUSE"] * 4
    assert b_during == {24: "24 address-in-use", 26: "26 address-in-use"}
    assert not cap.select(direction="out", proto="tcp", dst=chain.server_address(4)), cap.describe()
    assert not cap.select(direction="out", proto="tcp", dst=chain.server_address(6)), cap.describe()
    assert ended == {14: "14 no-reply", 16: "16 no-reply"}
    assert len(cap.select(direction="out", proto="tcp", sport=port)) == 2, cap.describe()
    assert after == ["bound", "bound"]
    assert b_after == {
        24: f"24 reply ip-4 {chain.server_address(4)} round-trip-time N",
        26: f"26 reply ip-6 {chain.server_address(6)} round-trip-time N",
    }


def test_udp_probes_of_one_helper_share_their_local_port(
    chain: Chain, unprivileged_copy: Any
) -> None:
    """mtr sends all its probes from the port of -L: they share the helper's hold, which
    ends with the last of them.  Through the setuid copy, as nobody."""
    port = 45030
    helper = str(unprivileged_copy.helper("setuid"))
    a = Running(chain, [helper], user=NOBODY)
    requests, expected = [], {}
    for fam in FAMILIES:
        path = chain.path(fam)  # three routers, then the server
        for ttl in range(1, 5):
            for i in range(5):
                token = fam * 100 + ttl * 10 + i
                requests.append(
                    probe(
                        token,
                        fam,
                        chain.server_address(fam),
                        protocol="udp",
                        local_port=port,
                        ttl=ttl,
                        timeout=3,
                    )
                )
                kind = "reply" if ttl == 4 else "ttl-expired"
                expected[token] = f"{token} {kind} {ip_word(fam)} {path[ttl - 1]} round-trip-time N"
    a.send(requests)
    assert a.wait(list(expected)) == expected
    a.close()
    assert try_binds(chain, [("udp4", "0.0.0.0", port), ("udp6", "::", port)]) == ["bound"] * 2
    # mtr itself, as nobody, with the helper's setuid copy as its mtr-packet
    for fam in FAMILIES:
        argv = [
            "/usr/bin/mtr",
            f"-{fam}",
            "-u",
            "-L",
            str(port),
            "-r",
            "-n",
            "-c",
            "2",
            "-i",
            "1",  # the least mtr allows a user who is not root
            "-G",
            "0.5",
            chain.server_address(fam),
        ]
        res = chain.run(
            "client",
            ["env", f"MTR_PACKET={helper}", *argv],
            user=NOBODY,
            check=False,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        hops = [line.split()[1] for line in res.stdout.splitlines() if ".|--" in line]
        assert hops == chain.path(fam), res.stdout


def _udp_ports_of(lab: Lab, pid: int) -> list[int]:
    """The UDP ports the sockets of process ``pid`` (in the client) are bound to."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/udp6", "/proc/net/udp"):
        text = lab.run("client", ["cat", table]).stdout
        for line in text.splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def test_the_helpers_own_ports_are_not_refused_as_local_port(
    chain: Chain, helper_path: str
) -> None:
    """The two UDP ports a helper holds for its life (its ICMP ids, the first also its
    default UDP source port) are held already: naming one is not address-in-use."""
    a = Running(chain, [helper_path])
    a.sync()
    own = _udp_ports_of(chain, a.pid)
    assert len(own) == 2, own
    a.send(
        [
            probe(
                i * 10 + fam,
                fam,
                chain.server_address(fam),
                protocol="udp",
                local_port=p,
                timeout=2,
            )
            for i, p in enumerate(own, start=1)
            for fam in FAMILIES
        ]
    )
    tokens = [i * 10 + fam for i in (1, 2) for fam in FAMILIES]
    assert a.wait(tokens) == {
        t: f"{t} reply {ip_word(t % 10)} {chain.server_address(t % 10)} round-trip-time N"
        for t in tokens
    }
    a.close()


# A kernel with SCTP, as far as binding goes: this kernel has none, so the SCTP socket
# that holds an sctp probe's port is made as a UDP one, and its bind meets the UDP
# sockets B binds.  The helper's own code (make the socket, bind, refuse on EADDRINUSE,
# let go when the probe ends) runs unchanged.
SCTP_SHIM = r"""
#define _GNU_SOURCE
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int socket(int domain, int type, int protocol)
{
    if (protocol == IPPROTO_SCTP && (type & 0xf) == SOCK_SEQPACKET) {
        type = (type & ~0xf) | SOCK_DGRAM;
        protocol = IPPROTO_UDP;
    }
    return (int)syscall(SYS_socket, domain, type, protocol);
}
"""


def test_sctp_local_port_is_held_where_the_kernel_has_sctp(
    chain: Chain, helper_path: str, tmp_path: Path
) -> None:
    """With SCTP sockets to be had (SCTP_SHIM), an sctp probe's local-port is refused
    when another socket holds it, and held while the probe is in flight.  On this
    kernel without the shim nothing is held (see the man page, POLICY)."""
    source = tmp_path / "sctp_shim.c"
    source.write_text(SCTP_SHIM)
    shim = tmp_path / "sctp_shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(shim), str(source)], check=True)
    taken, free = 45040, {4: 45041, 6: 45042}
    hole = chain.add_blackhole(2)
    holder = Holder(chain, [("udp4", "0.0.0.0", taken), ("udp6", "::", taken)])
    assert holder.status == "bound"
    requests = [
        probe(fam, fam, hole.address(fam), protocol="sctp", local_port=taken, timeout=2)
        for fam in FAMILIES
    ] + [
        probe(10 + fam, fam, hole.address(fam), protocol="sctp", local_port=free[fam], timeout=4)
        for fam in FAMILIES
    ]
    with chain.capture("client", "eth0") as cap:
        # a sanitized helper's runtime insists on coming first among the libraries
        sanitizer = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
        a = Running(chain, ["env", f"LD_PRELOAD={shim}", f"ASAN_OPTIONS={sanitizer}", helper_path])
        a.send(requests)
        refused = a.wait([4, 6])
        during = try_binds(chain, [("udp4", "0.0.0.0", free[4]), ("udp6", "::", free[6])])
        ended = a.wait([14, 16])
        a.close()
    after = try_binds(chain, [("udp4", "0.0.0.0", free[4]), ("udp6", "::", free[6])])
    assert holder.heard() == 0
    assert refused == {4: "4 address-in-use", 6: "6 address-in-use"}
    assert ended == {14: "14 no-reply", 16: "16 no-reply"}
    assert (during, after) == (["EADDRINUSE"] * 2, ["bound"] * 2)
    assert not cap.select(proto="sctp", sport=taken), cap.describe()
    for fam in FAMILIES:
        assert len(cap.select(direction="out", proto="sctp", sport=free[fam])) == 1, cap.describe()


def test_an_sctp_local_port_nobody_holds_is_sent_from(chain: Chain, helper_path: str) -> None:
    """Without a kernel SCTP stack (this kernel: socket(SOCK_SEQPACKET, IPPROTO_SCTP)
    fails) nothing can be bound to an SCTP port, so nothing is held and the probe leaves
    from the port asked; with one, the port is held first (see the test above)."""
    hole = chain.add_blackhole(2)
    with chain.capture("client", "eth0") as cap:
        a = Running(chain, [helper_path])
        a.send(
            [
                probe(
                    fam, fam, hole.address(fam), protocol="sctp", local_port=45050 + fam, timeout=1
                )
                for fam in FAMILIES
            ]
        )
        assert a.wait([4, 6]) == {4: "4 no-reply", 6: "6 no-reply"}
        a.close()
    for fam in FAMILIES:
        assert len(cap.select(direction="out", proto="sctp", sport=45050 + fam)) == 1


# --------------------------------------------------------------------------- identities

# Runs as B: what /proc shows of A's helper (argv[1]: its pid), turned into the
# identities of its first argv[2] probes of each protocol as the old seed made them:
#   seed = pid ^ time(NULL) * 2654435761 (time at start: btime + starttime, +-1 s)
#   icmp: n = seed + k, id = ids[(n >> 16) % 2], sequence = n & 0xffff
#   udp:  checksums seed >> 16 on (0 skipped), from port ids[0] to 33434 + c % 32102
#   sctp: port 33434 + (seed + k) % 32102, tag (seed * 2246822519 ^ port * 0x9e3779b1) | 1
# where ids are the helper's two UDP ports (any-address UDP sockets in /proc/net/udp6).
GUESS = r"""
import itertools, json, os, sys
pid, count = int(sys.argv[1]), int(sys.argv[2])
fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
ticks = int(fields[19])
btime = next(int(x.split()[1]) for x in open("/proc/stat") if x.startswith("btime "))
start = btime + ticks // os.sysconf("SC_CLK_TCK")
ports = set()
for table in ("/proc/net/udp6", "/proc/net/udp"):
    for line in open(table).read().splitlines()[1:]:
        address, port = line.split()[1].split(":")
        if int(address, 16) == 0:
            ports.add(int(port, 16))
span = 65536 - 33434
icmp, udp, sctp = set(), set(), set()
for t in range(start - 1, start + 2):
    seed = (pid ^ (t * 2654435761)) & 0xFFFFFFFF
    for ids in itertools.permutations(sorted(ports), 2):
        for k in range(count):
            n = (seed + k) & 0xFFFFFFFF
            icmp.add((ids[(n >> 16) % 2], n & 0xFFFF))
    checksums, c = [], (seed >> 16) & 0xFFFF
    while len(checksums) < count:
        if c != 0:
            checksums.append(c)
        c = (c + 1) & 0xFFFF
    for port in ports:
        for c in checksums:
            udp.add((port, 33434 + c % span, c))
    secret = (seed * 2246822519) & 0xFFFFFFFF
    for k in range(count):
        port = 33434 + ((seed + k) & 0xFFFF) % span
        sctp.add((port, (secret ^ ((port * 0x9E3779B1) & 0xFFFFFFFF)) | 1))
print(json.dumps({"icmp": sorted(icmp), "udp": sorted(udp), "sctp": sorted(sctp)}))
"""

# Runs as root in router 1 (the attacker's box on the path): sends a time-exceeded that
# quotes each guessed identity to the client; prints how many it sent per family.
FORGE = r"""
import json, socket, struct, sys
from lab import packets as P
plan = json.loads(sys.argv[1])
guess = plan["guess"]
sent = {}
for fam in (4, 6):
    client, target, router = (plan[k][str(fam)] for k in ("client", "target", "router"))
    quotes = []
    for ident, seq in guess["icmp"]:
        quotes.append((P.PROTO_ICMP if fam == 4 else P.PROTO_ICMPV6,
                       P.echo_message(fam, ident, seq, bytes(36 if fam == 4 else 16),
                                      src=client, dst=target)))
    for sport, dport, checksum in guess["udp"]:
        length = 44 if fam == 4 else 24
        quotes.append((P.PROTO_UDP,
                       struct.pack("!HHHH", sport, dport, length, checksum) + bytes(length - 8)))
    for sport, tag in guess["sctp"]:
        quotes.append((P.PROTO_SCTP, P.sctp_packet(sport, 80, 0, [P.sctp_init_chunk(tag)])))
    family = socket.AF_INET if fam == 4 else socket.AF_INET6
    raw = socket.socket(family, socket.SOCK_RAW,
                        socket.IPPROTO_ICMP if fam == 4 else socket.IPPROTO_ICMPV6)
    for proto, transport in quotes:
        if fam == 4:
            original = P.ipv4_packet(client, target, proto, transport, ttl=1)
        else:
            original = P.ipv6_packet(client, target, proto, transport, hop_limit=1)
        error = P.icmp_error(fam, 11 if fam == 4 else 3, 0, original, src=router, dst=client)
        raw.sendto(error, (client, 0))
    sent[fam] = len(quotes)
print(json.dumps(sent))
"""


def test_another_user_cannot_forge_answers_from_the_pid_and_start_time(
    chain: Chain, unprivileged_copy: Any
) -> None:
    """A's probes to a blackhole get no answer; B computes their identities from what
    /proc shows, the way the old seed allowed, and forges time-exceeded errors for all
    of them from router 1.  Before: every probe ended ttl-expired from router 1.  Now
    their identities are drawn from getrandom() and they stay no-reply."""
    timeout = 6.0
    hole = chain.add_blackhole(2)
    a = Running(chain, nobody_helper(unprivileged_copy, "setuid"), user=NOBODY)
    requests, tokens = [], []
    for fam in FAMILIES:
        for p, proto in enumerate(("icmp", "udp", "sctp")):
            token = fam * 10 + p
            tokens.append(token)
            requests.append(probe(token, fam, hole.address(fam), protocol=proto, timeout=timeout))
    sent_at = a.send(requests)
    a.sync()
    res = chain.run("client", [SYSTEM_PYTHON, "-c", GUESS, str(a.pid), "2"], user=OTHER, timeout=30)
    guess = json.loads(res.stdout)
    assert guess["icmp"] and guess["udp"] and guess["sctp"], guess
    plan = {
        "guess": guess,
        "client": {str(f): chain.client_address(f) for f in FAMILIES},
        "target": {str(f): hole.address(f) for f in FAMILIES},
        "router": {str(f): chain.hop_address(1, f) for f in FAMILIES},
    }
    with chain.capture("client", "eth0") as cap:
        forged = json.loads(chain.python("r1", FORGE, json.dumps(plan), timeout=30).stdout)
        forged_by = time.monotonic() - sent_at
    # the forgeries arrived while the probes were in flight, or this proves nothing
    assert forged_by < timeout - 1, f"forging took {forged_by:.1f} s"
    for fam in FAMILIES:
        router = chain.hop_address(1, fam)
        arrived = cap.select(direction="in", src=router, proto="icmp" if fam == 4 else "icmp6")
        assert len(arrived) == forged[str(fam)], cap.describe()
    assert a.wait(tokens, timeout=timeout + 10) == {t: f"{t} no-reply" for t in tokens}
    a.close()


# --------------------------------------------------------------------------- foreign sources

NOT_OURS = {4: "198.18.250.1", 6: "2001:db8:fa::1"}


@pytest.fixture
def nonlocal_chain(make_chain: Callable[..., Chain]) -> Chain:
    """client -> r1 -> server, ip_nonlocal_bind=1 in the client's namespace only."""
    c = make_chain(1, tag="nonlocal")
    c.sysctl("client", {"net.ipv4.ip_nonlocal_bind": 1, "net.ipv6.ip_nonlocal_bind": 1})
    return c


@pytest.mark.parametrize("mode", MODES)
def test_a_source_the_host_does_not_own_is_refused_even_with_nonlocal_bind(
    mode: str, nonlocal_chain: Chain, unprivileged_copy: Any
) -> None:
    """With ip_nonlocal_bind=1 a bind accepts any address.  Before: the IPv6 probes
    left from the foreign address (captured) and the IPv4 ones failed in the kernel
    (no-route); now every one is address-not-available and nothing leaves."""
    c = nonlocal_chain
    for fam in FAMILIES:  # the setting is in force where the helper runs
        assert c.get_sysctl("client", f"net.ipv{fam}.ip_nonlocal_bind") == "1"
    requests, expected = [], {}
    for fam in FAMILIES:
        server = c.server_address(fam)
        for p, proto in enumerate(PROTOCOLS):
            token = fam * 10 + p
            requests.append(
                probe(
                    token,
                    fam,
                    server,
                    protocol=proto,
                    timeout=1,
                    **{f"local_ip_{fam}": NOT_OURS[fam]},
                )
            )
            expected[token] = f"{token} address-not-available"
            # control: the client's own address still works, for the same protocol
            requests.append(
                probe(
                    token + 100,
                    fam,
                    server,
                    protocol=proto,
                    timeout=2,
                    **{f"local_ip_{fam}": c.client_address(fam)},
                )
            )
            expected[token + 100] = f"{token + 100} reply {ip_word(fam)} {server} round-trip-time N"
    with c.capture("client", None) as cap:
        a = Running(c, nobody_helper(unprivileged_copy, mode), user=NOBODY)
        a.send(requests)
        replies = a.wait(list(expected))
        a.close()
    assert replies == expected
    for fam in FAMILIES:
        assert not cap.select(src=NOT_OURS[fam]), cap.describe()
        # each control probe left from the client's own address (tcp: its SYN)
        out = cap.select(direction="out", src=c.client_address(fam), dst=c.server_address(fam))
        assert len([p for p in out if p.proto != P.PROTO_TCP or p.tcp_flags == P.TCP_SYN]) == 4


def test_root_checks_sources_by_binding_alone_and_holds_no_address_list(
    nonlocal_chain: Chain, helper_path: str
) -> None:
    """A caller entitled to marks (root) keeps CAP_NET_ADMIN permitted, with which a held
    route socket could change the host's routes: it gets no netlink socket, and its
    sources are checked by binding, which ip_nonlocal_bind lets pass (root may send
    from any address with its own sockets).  Without nonlocal bind it is refused."""
    c = nonlocal_chain
    requests = [
        probe(fam * 10, fam, c.server_address(fam), timeout=1, **{f"local_ip_{fam}": NOT_OURS[fam]})
        for fam in FAMILIES
    ]
    a = Running(c, [helper_path])
    a.sync()  # started: every socket it holds is open
    fds = os.listdir(f"/proc/{a.pid}/fd")
    links = [os.readlink(f"/proc/{a.pid}/fd/{fd}") for fd in fds]
    sockets = {
        line.split()[-1] for line in Path(f"/proc/{a.pid}/net/netlink").read_text().splitlines()[1:]
    }
    held = {link.removeprefix("socket:[").rstrip("]") for link in links if "socket:" in link}
    a.send(requests)
    replies = a.wait([40, 60])
    a.close()
    assert not held & sockets, "a netlink socket is held"
    assert all("address-not-available" not in r for r in replies.values()), replies
    c.sysctl("client", {"net.ipv4.ip_nonlocal_bind": 0, "net.ipv6.ip_nonlocal_bind": 0})
    b = Running(c, [helper_path])
    b.send(requests)
    refused = b.wait([40, 60])
    b.close()
    assert refused == {40: "40 address-not-available", 60: "60 address-not-available"}


def test_the_hosts_addresses_are_read_for_each_probe(
    nonlocal_chain: Chain, unprivileged_copy: Any
) -> None:
    """An address added after the helper started is the host's from then on, one removed
    is refused from then on: the list is read per probe, not once at start."""
    c = nonlocal_chain
    extra = {4: "198.18.1.77", 6: "2001:db8:1::77"}
    a = Running(c, nobody_helper(unprivileged_copy, "setuid"), user=NOBODY)

    def lines(base: int) -> list[str]:
        return [
            probe(
                base + fam, fam, c.server_address(fam), timeout=2, **{f"local_ip_{fam}": extra[fam]}
            )
            for fam in FAMILIES
        ]

    a.send(lines(10))
    before = a.wait([14, 16])
    c.ip("client", "addr", "add", f"{extra[4]}/24", "dev", "eth0")
    c.ip("client", "-6", "addr", "add", f"{extra[6]}/64", "dev", "eth0", "nodad")
    a.send(lines(20))
    added = a.wait([24, 26])
    c.ip("client", "addr", "del", f"{extra[4]}/24", "dev", "eth0")
    c.ip("client", "-6", "addr", "del", f"{extra[6]}/64", "dev", "eth0")
    a.send(lines(30))
    removed = a.wait([34, 36])
    a.close()
    assert before == {14: "14 address-not-available", 16: "16 address-not-available"}
    assert added == {
        24: f"24 reply ip-4 {c.server_address(4)} round-trip-time N",
        26: f"26 reply ip-6 {c.server_address(6)} round-trip-time N",
    }
    assert removed == {34: "34 address-not-available", 36: "36 address-not-available"}
