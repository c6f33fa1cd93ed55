"""A hostile network: malformed, forged, duplicated and late answers.

The lab's scripted responder (see tests/lab/responder.py) answers probes from the
chain's client with broken packets.  Every probe goes to its own target address, so a
forged identity never happens to be another probe's, and every probe is sent both to
the responder's first virtual hop (TTL 4: answered with time-exceeded) and to its target
(answered with echo reply, port unreachable, SYN-ACK or INIT-ACK), for ICMP, UDP, TCP
and SCTP over IPv4 and IPv6.  The helper must never crash (exit 0, nothing on stderr;
under BROKERPKG_SANITIZE=1 also no sanitizer report), never answer a probe twice, and end
every probe with its own correct answer or no-reply -- never with a forged, malformed,
duplicated or late one.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from lab.responder import FORGES, MALFORMS
from lab.topology import Chain

pytestmark = pytest.mark.privileged

FAMILIES = (4, 6)
PROTOCOLS = ("icmp", "udp", "tcp", "sctp")
HOP_TTL = 4  # three real routers, then the responder's virtual hop 1
MPLS = [[16, 0, 1, 1]]
NO_REPLY = ("no-reply", None)


def sanitizer_env() -> dict[str, str]:
    return {k: v for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS") if (v := os.environ.get(k))}


@dataclass(frozen=True)
class Probe:
    """One probe of a batch: its own target, sent to the hop in front of it or to it."""

    token: int
    family: int
    protocol: str
    at_hop: bool
    target: str
    hop: str

    def request(self, timeout: float) -> str:
        ttl = HOP_TTL if self.at_hop else 64
        return (
            f"{self.token} send-probe ip-{self.family} {self.target} protocol {self.protocol}"
            f" ttl {ttl} timeout {timeout:g}"
        )

    @property
    def correct(self) -> tuple[str, str]:
        return ("ttl-expired", self.hop) if self.at_hop else ("reply", self.target)

    def __str__(self) -> str:
        where = "hop" if self.at_hop else "target"
        return f"{self.protocol}/v{self.family}@{where} {self.target}"


def make_probes(chain: Chain, first_target: int, first_token: int) -> list[Probe]:
    """The 16 probes of one case: both families, four protocols, hop and target."""
    probes: list[Probe] = []
    for family in FAMILIES:
        index = first_target  # targets first_target .. first_target + 7 of each family
        for protocol in PROTOCOLS:
            for at_hop in (True, False):
                probes.append(
                    Probe(
                        first_token + len(probes),
                        family,
                        protocol,
                        at_hop,
                        chain.virtual_target(index, family),
                        chain.virtual_hop(1, family),
                    )
                )
                index += 1
    return probes


def outcome(line: str) -> tuple[str, str | None]:
    words = line.split()
    return words[1], (words[3] if len(words) > 3 and words[2] in ("ip-4", "ip-6") else None)


def run_batch(
    chain: Chain, helper_path: str, probes: Sequence[Probe], timeout: float
) -> dict[int, str]:
    """Send every probe at once through one helper; return the reply line of each token."""
    requests = "".join(p.request(timeout) + "\n" for p in probes)
    res = subprocess.run(
        chain.exec_argv("client", [helper_path]),
        input=requests.encode(),
        capture_output=True,
        timeout=timeout + 30,
        check=False,
        env={"PATH": "/usr/bin:/bin", **sanitizer_env()},
    )
    assert (res.returncode, res.stderr) == (0, b""), res
    lines = res.stdout.decode().splitlines()
    replies = {int(line.split()[0]): line for line in lines}
    assert len(replies) == len(lines), f"a probe was answered twice:\n{res.stdout.decode()}"
    assert set(replies) == {p.token for p in probes}, "every probe gets exactly one reply"
    return replies


def check(replies: Mapping[int, str], probes: Iterable[Probe], allowed: Any) -> None:
    """Every probe's outcome must be in allowed(probe); report all that are not."""
    wrong = [
        f"{p}: {replies[p.token]!r} (allowed {sorted(map(str, allowed(p)))})"
        for p in probes
        if outcome(replies[p.token]) not in allowed(p)
    ]
    assert not wrong, "\n".join(wrong)


# --------------------------------------------------------------------------- malformed


def test_control_every_probe_is_answered_correctly(
    chain: Chain, responder, helper_path: str
) -> None:
    """Without hostility each probe of a batch gets its correct answer (and hops their
    MPLS labels): the no-reply outcomes below are the helper's choice, not the lab's."""
    probes = make_probes(chain, 1, 1)
    responder.load({"targets": {p.target: {"hops": 1, "mpls": MPLS} for p in probes}})
    replies = run_batch(chain, helper_path, probes, 1)
    check(replies, probes, lambda p: {p.correct})
    assert all(("mpls 16,0,1,1" in replies[p.token]) == p.at_hop for p in probes), replies


MALFORM_CASES = [*MALFORMS, "short-quote-no-extension"]


@pytest.mark.parametrize("malform", MALFORM_CASES)
def test_malformed_answers_never_complete_a_probe_wrongly(
    chain: Chain, responder, helper_path: str, malform: str
) -> None:
    spec: dict[str, Any] = {"hops": 1, "malform": malform.removesuffix("-no-extension")}
    if not malform.endswith("-no-extension"):
        spec["mpls"] = MPLS  # extensions too (and something for bad-extension to break)
    probes = make_probes(chain, 1, 1)
    responder.load({"targets": {p.target: spec for p in probes}})
    replies = run_batch(chain, helper_path, probes, 1)

    def allowed(p: Probe) -> set[tuple[str, str | None]]:
        if malform in ("truncate", "bad-checksum"):
            return {NO_REPLY}  # nothing of a broken packet may be believed
        if malform == "bad-extension":
            return {p.correct}  # the broken extension is dropped, the answer kept
        answer_is_an_error = p.at_hop or p.protocol == "udp"
        if not answer_is_an_error:
            return {p.correct}  # echo reply, SYN-ACK, INIT-ACK quote nothing
        return {p.correct, NO_REPLY}

    check(replies, probes, allowed)
    if malform == "bad-extension":
        assert not [line for line in replies.values() if "mpls" in line], replies


# --------------------------------------------------------------------------- forged

FORGE_TYPES = ("time-exceeded", "unreachable")


def forge_cases(chain: Chain, answer: str) -> tuple[list[Probe], dict[str, Any]]:
    """All forge kinds x forge types, 16 probes each, in one batch."""
    probes: list[Probe] = []
    targets: dict[str, Any] = {}
    for n, (kind, forge_type) in enumerate((k, t) for k in FORGES for t in FORGE_TYPES):
        batch = make_probes(chain, 1 + 8 * n, 1 + 16 * n)
        for p in batch:
            targets[p.target] = {
                "hops": 1,
                "forge": [kind],
                "forge_type": forge_type,
                "answer": answer,
            }
        probes += batch
    return probes, {"targets": targets}


@pytest.mark.parametrize("answer", ["normal", "none"])
def test_forged_answers_never_complete_a_probe(
    chain: Chain, responder, helper_path: str, answer: str
) -> None:
    """Forged errors (and echo replies) arrive before the real answer ("normal") or
    instead of it ("none"); the forger's address must never appear in a reply."""
    probes, script = forge_cases(chain, answer)
    responder.load(script)
    replies = run_batch(chain, helper_path, probes, 1)
    responder.sync()
    forged = {e.kind for e in responder.sent() if e.kind.startswith("forged-")}
    assert forged == {f"forged-{k}" for k in FORGES}, "the responder forged every kind"

    def allowed(p: Probe) -> set[tuple[str, str | None]]:
        if answer == "none" and not p.at_hop:
            return {NO_REPLY}
        return {p.correct}

    check(replies, probes, allowed)


@pytest.mark.parametrize("forge_type", FORGE_TYPES)
@pytest.mark.parametrize("answer", ["normal", "none"])
def test_forged_tcp_sequence_is_not_accepted(
    chain: Chain, responder, helper_path: str, answer: str, forge_type: str
) -> None:
    """An ICMP error quoting a TCP probe's addresses and ports but a sequence number the
    SYN did not carry (the kernel's TCP ignores it) must not end the probe: a hop's real
    time-exceeded and the target's SYN-ACK still win, and silence stays no-reply."""
    probes = [p for p in make_probes(chain, 1, 1) if p.protocol == "tcp"]
    responder.load(
        {
            "targets": {
                p.target: {
                    "hops": 1,
                    "forge": ["wrong-seq"],
                    "forge_type": forge_type,
                    "answer": answer,
                }
                for p in probes
            }
        }
    )
    replies = run_batch(chain, helper_path, probes, 1)
    responder.sync()
    assert len(responder.sent(kind="forged-wrong-seq")) >= len(probes), "each was forged"
    check(replies, probes, lambda p: {p.correct} if answer == "normal" or p.at_hop else {NO_REPLY})


# --------------------------------------------------------------------------- duplicated, late


def test_duplicated_answers_are_reported_once(chain: Chain, responder, helper_path: str) -> None:
    probes = make_probes(chain, 1, 1)
    responder.load({"targets": {p.target: {"hops": 1, "duplicate": 3} for p in probes}})
    replies = run_batch(chain, helper_path, probes, 1)  # asserts one line per token
    check(replies, probes, lambda p: {p.correct})
    responder.sync()
    kinds = ("time-exceeded", "echo-reply", "port-unreachable", "syn-ack", "init-ack")
    answers = [e for e in responder.sent() if e.kind in kinds]
    assert len(answers) == 4 * len(probes), "each answer went out four times"


class Interactive:
    """The helper in the client namespace, fed and read a batch at a time."""

    def __init__(self, chain: Chain, helper_path: str) -> None:
        self.proc = subprocess.Popen(
            chain.exec_argv("client", [helper_path]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", **sanitizer_env()},
        )
        self.buffer = b""

    def send(self, lines: Iterable[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines).encode())
        self.proc.stdin.flush()

    def read(self, count: int, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while self.buffer.count(b"\n") < count:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], "helper went silent"
            chunk = os.read(fd, 65536)
            assert chunk, "helper closed its output"
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n", count)
        return [line.decode() for line in lines]

    def finish(self) -> tuple[int, bytes, bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.stdin.close()
        rest = self.buffer + self.proc.stdout.read()
        status = self.proc.wait(30)
        return status, rest, self.proc.stderr.read()


def test_late_answers_never_complete_the_next_probe(
    chain: Chain, responder, helper_path: str
) -> None:
    """Answers come 1.2 s late.  Round 1 times out at 0.5 s; round 2 (same targets, new
    tokens) is sent at once, so round 1's answers arrive 0.7 s into round 2: each round-2
    probe must wait for its own answer (round-trip time >= 1.1 s)."""
    first = make_probes(chain, 1, 1)
    second = [Probe(p.token + 100, p.family, p.protocol, p.at_hop, p.target, p.hop) for p in first]
    responder.load({"targets": {p.target: {"hops": 1, "delay": 1.2} for p in first}})
    helper = Interactive(chain, helper_path)
    try:
        helper.send(p.request(0.5) for p in first)
        early = helper.read(len(first), 10)
        helper.send(p.request(4) for p in second)
        late = helper.read(len(second), 15)
        status, rest, stderr = helper.finish()
    finally:
        if helper.proc.poll() is None:
            helper.proc.kill()
            helper.proc.wait()
    assert (status, rest, stderr) == (0, b"", b"")
    assert sorted(int(line.split()[0]) for line in early) == [p.token for p in first]
    assert {outcome(line) for line in early} == {NO_REPLY}
    replies = {int(line.split()[0]): line for line in late}
    check(replies, second, lambda p: {p.correct})
    rtts = {p.token: int(re.search(r"round-trip-time (\d+)", replies[p.token])[1]) for p in second}  # type: ignore[index]
    too_soon = {str(p): rtts[p.token] for p in second if rtts[p.token] < 1_100_000}
    assert not too_soon, f"answered by the previous probe's late answer (us): {too_soon}"


# --------------------------------------------------------------------------- garbage on the wire

GARBAGE = r"""
import random, socket, struct, sys
from lab import packets as P

client4, client6, server4, server6, count, seed = sys.argv[1:7]
rng = random.Random(int(seed))
icmp4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
icmp4.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = DONT: big ones fragment
icmp6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)  # kernel sums
sctp4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
sctp6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 132)


def mangle(data):
    data = bytearray(data[:rng.choice([len(data), len(data), rng.randrange(len(data) + 1)])])
    for _ in range(rng.choice([0, 0, 1, 4])):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def quote(v):
    # the start of something that looks like a probe from the client
    src, dst = (client4, server4) if v == 4 else (client6, server6)
    proto = rng.choice([1 if v == 4 else 58, 17, 6, 132, rng.randrange(256)])
    transport = rng.randbytes(rng.choice([0, 4, 8, 20, 36]))
    if proto in (1, 58) and transport:
        transport = bytes([8 if v == 4 else 128]) + transport[1:]
    return mangle(P.ip_packet(src, dst, proto, transport, ttl=1))


def icmp(v):
    kind = rng.choice(["error", "error", "extended", "echo", "random", "big"])
    if kind == "random":
        return rng.randbytes(rng.randrange(0, 300))
    if kind == "echo":
        return struct.pack("!BBHHH", 0 if v == 4 else 129, 0, 0, rng.randrange(65536),
                           rng.randrange(65536)) + rng.randbytes(rng.randrange(64))
    body = quote(v)
    word = 0
    if kind == "extended":  # RFC 4884 length and a random extension structure
        body = body[:128].ljust(128, b"\0")
        word = (128 // 4) << 16 if v == 4 else (128 // 8) << 24
        body += bytes([0x20, 0]) + rng.randbytes(rng.randrange(2, 40))
    if kind == "big":  # reassembled beyond the helper's receive buffer
        body += rng.randbytes(rng.randrange(1500, 20000))
    kind_type = rng.choice([3, 11, 12] if v == 4 else [1, 3, 4, 2])
    return struct.pack("!BBHI", kind_type, rng.randrange(8), 0, word) + body


for _ in range(int(count)):
    v = rng.choice([4, 6])
    target = (client4, 0) if v == 4 else (client6, 0)
    try:
        if rng.random() < 0.15:
            chunk = P.sctp_chunk(rng.choice([2, 6, rng.randrange(256)]), rng.randrange(2),
                                 rng.randbytes(rng.randrange(0, 40)))
            packet = P.sctp_packet(rng.randrange(65536), rng.randrange(65536),
                                   rng.getrandbits(32), [chunk])
            (sctp4 if v == 4 else sctp6).sendto(mangle(packet) if rng.random() < 0.2 else packet,
                                                target)
            continue
        message = icmp(v)
        if v == 4 and len(message) >= 4 and rng.random() < 0.9:
            message = message[:2] + struct.pack("!H", P.internet_checksum(
                message[:2] + b"\0\0" + message[4:])) + message[4:]
        (icmp4 if v == 4 else icmp6).sendto(message, target)
    except OSError:
        pass  # e.g. EMSGSIZE: the next one
print("done")
"""


def test_garbage_on_the_wire_changes_no_outcome(chain: Chain, responder, helper_path: str) -> None:
    """4,000 random and mangled ICMP, ICMPv6 and SCTP packets (errors quoting made-up
    probes, RFC 4884 extensions, reassembled datagrams larger than the helper's buffer)
    flood the client while waves of probes are in flight: every probe still ends exactly
    as it would have, and the helper goes on serving."""
    delayed = [chain.virtual_target(200 + i, f) for i in range(4) for f in FAMILIES]
    silent = [chain.virtual_target(210 + i, f) for i in range(4) for f in FAMILIES]
    responder.load(
        {
            "targets": {
                **{a: {"delay": 0.8} for a in delayed},
                **{a: {"answer": "none"} for a in silent},
            }
        }
    )
    servers = [chain.server_address(f) for f in FAMILIES]
    expected: dict[int, tuple[str, str | None]] = {}
    requests: list[list[str]] = []
    for wave in range(10):
        lines = []
        for n, (address, answer) in enumerate(
            [(a, "reply") for a in servers + delayed] + [(a, "no-reply") for a in silent]
        ):
            # the server's kernel rate-limits its port/protocol unreachables: ICMP and
            # TCP for it, every protocol for the responder
            protocols = ("icmp", "tcp") if address in servers else PROTOCOLS
            protocol = protocols[(wave + n) % len(protocols)]
            token = 1000 * (wave + 1) + n
            family = 6 if ":" in address else 4
            lines.append(f"{token} send-probe ip-{family} {address} protocol {protocol} timeout 2")
            expected[token] = (answer, address if answer == "reply" else None)
        requests.append(lines)
    flood = threading.Thread(
        target=lambda: chain.python(
            "server",
            GARBAGE,
            chain.client_address(4),
            chain.client_address(6),
            servers[0],
            servers[1],
            "4000",
            "7",
            timeout=120,
        )
    )
    helper = Interactive(chain, helper_path)
    try:
        flood.start()
        for lines in requests:
            helper.send(lines)
            time.sleep(0.1)
        flood.join(120)
        replies = {int(line.split()[0]): line for line in helper.read(len(expected), 30)}
        helper.send([f"1 send-probe ip-4 {servers[0]} timeout 2"])
        after = helper.read(1, 10)
        status, rest, stderr = helper.finish()
    finally:
        if helper.proc.poll() is None:
            helper.proc.kill()
            helper.proc.wait()
    assert (status, rest, stderr) == (0, b"", b"")
    wrong = {
        t: replies.get(t)
        for t, want in expected.items()
        if t not in replies or outcome(replies[t]) != want
    }
    assert not wrong, wrong
    assert outcome(after[0]) == ("reply", servers[0])
