"""The lab's own truth, established without brokerpkg's helper.

Pure tests (packet codecs, spec validation) run anywhere; the rest need root and
network namespaces (the lab fixtures and the ``privileged`` marker skip otherwise).
Raw sockets (lab.rawprobe), Debian's traceroute and tcpdump captures check that the
chain is what lab.topology claims, that blackholes, unreachable routes and silent
routers behave, that every responder mode does what its doc says, and that
namespaces are always removed.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab import netns
from lab import packets as P
from lab.responder import ResponderError, validate_script, validate_spec
from lab.topology import Chain, link_address, link_prefix, virtual_hop, virtual_target

FAMILIES = pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
TESTS_DIR = Path(__file__).resolve().parent


def echo(
    chain: Chain,
    dst: str,
    *,
    count: int = 1,
    ttl: int = 64,
    ident: int = 4242,
    timeout: float = 0.5,
    expect: int = 0,
    gap: float = 0.0,
    **extra: object,
):
    """Send ``count`` ICMP echoes (seq 1..count) from the client; return the result."""
    probes = [{"dst": dst, "ttl": ttl, "id": ident, "seq": s, **extra} for s in range(1, count + 1)]
    return chain.raw_probe("client", probes, timeout=timeout, expect=expect, gap=gap)


def answers_to(res, ident: int = 4242) -> list[P.Packet]:
    """Packets that answer our echoes: echo replies with our id, errors quoting it."""
    out = []
    for p in res.received:
        quoted = p.inner if p.is_icmp_error else None
        if (p.is_echo_reply and p.icmp_id == ident) or (
            quoted is not None and quoted.is_echo_request and quoted.icmp_id == ident
        ):
            out.append(p)
    return out


# --------------------------------------------------------------------------- unit: packets


def test_crc32c_known_vectors() -> None:
    assert P.crc32c(b"123456789") == 0xE3069283
    assert P.crc32c(b"\0" * 32) == 0x8A9136AA
    assert P.crc32c(b"\xff" * 32) == 0x62A8AB43


def test_internet_checksum_and_round_trip() -> None:
    msg = P.echo_message(4, 0x1234, 7, b"abc")
    assert P.internet_checksum(msg) == 0
    pkt = P.parse_ip(
        P.ipv4_packet("198.18.1.1", "198.18.200.1", P.PROTO_ICMP, msg, ttl=9, tos=0x28)
    )
    assert pkt is not None
    assert (pkt.ttl, pkt.tos, pkt.icmp_id, pkt.icmp_seq, pkt.payload) == (
        9,
        0x28,
        0x1234,
        7,
        b"abc",
    )
    assert pkt.header_checksum_ok
    assert pkt.checksum_ok
    msg6 = P.echo_message(6, 1, 2, b"xy", src="2001:db8:1::1", dst="2001:db8:c8::1")
    pkt6 = P.parse_ip(P.ipv6_packet("2001:db8:1::1", "2001:db8:c8::1", P.PROTO_ICMPV6, msg6))
    assert pkt6 is not None
    assert pkt6.checksum_ok
    assert pkt6.is_echo_request


def test_mpls_extension_round_trip_both_families() -> None:
    entries = [P.Mpls(16, 0, 0, 1), P.Mpls(1048575, 7, 1, 255)]
    for v, src, dst in ((4, "198.18.201.1", "198.18.1.1"), (6, "2001:db8:c9::1", "2001:db8:1::1")):
        inner = P.ip_packet(
            dst, "198.18.200.1" if v == 4 else "2001:db8:c8::1", P.PROTO_UDP, b"\0" * 8, ttl=1
        )
        ext = P.icmp_extension_structure([P.mpls_object(entries)])
        msg = P.icmp_error(v, 11 if v == 4 else 3, 0, inner, src=src, dst=dst, extensions=ext)
        pkt = P.parse_ip(P.ip_packet(src, dst, P.PROTO_ICMP if v == 4 else P.PROTO_ICMPV6, msg))
        assert pkt is not None
        assert pkt.mpls == entries
        assert pkt.icmp_length == 128
        assert pkt.extension_checksum_ok
        assert pkt.inner is not None
        assert pkt.inner.dst == ("198.18.200.1" if v == 4 else "2001:db8:c8::1")


def test_parser_survives_garbage() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        if data:
            data = bytes([rng.choice((0x45, 0x60, 0x46, 0x4F)) | 0]) + data[1:]
        P.parse_ip(data)  # must not raise


def test_spec_validation() -> None:
    assert validate_spec({"hops": 2, "mpls": [[16, 0, 1, 1]]})["hops"] == 2
    for bad in (
        {"bogus": 1},
        {"answer": "maybe"},
        {"drop": 1.5},
        {"delay": -1},
        {"mpls": [[1 << 20, 0, 1, 1]]},
        {"hops": [{"addr4": "2001:db8::1"}]},
        {"forge": ["nonsense"]},
        {"duplicate": True},
        {"from4": "::1"},
    ):
        with pytest.raises(ValueError, match=r"\w"):
            validate_spec(bad)
    with pytest.raises(ValueError, match="not an address"):
        validate_script({"targets": {"not-an-address": {}}})


# --------------------------------------------------------------------------- the chain


def test_address_plan() -> None:
    assert link_prefix(1) == "198.18.1.0/24"
    assert link_prefix(10, 6) == "2001:db8:a::/64"
    assert link_address(3, 2) == "198.18.3.2"
    assert link_address(3, 1, 6) == "2001:db8:3::1"
    assert virtual_target(7) == "198.18.200.7"
    assert virtual_hop(2, 6) == "2001:db8:c9::2"


@FAMILIES
def test_chain_path_is_what_the_lab_claims(chain: Chain, family: int) -> None:
    assert chain.path(family) == [link_address(k, 2, family) for k in range(1, 5)]
    assert chain.trace(family) == chain.path(family)


@FAMILIES
def test_debian_traceroute_agrees(chain: Chain, family: int) -> None:
    if shutil.which("traceroute") is None:
        pytest.skip("traceroute not installed (apt-get install traceroute)")
    for mode in (["-I"], ["-U"]):
        argv = [
            "traceroute",
            f"-{family}",
            "-n",
            "-q",
            "1",
            "-w",
            "1",
            "-N",
            "1",
            *mode,
            chain.server_address(family),
        ]
        out = chain.run("client", argv, timeout=60).stdout
        hops = [line.split()[1] for line in out.splitlines()[1:] if line.strip()]
        assert hops == chain.path(family), out


def test_router_namespaces_have_the_lab_sysctls(chain: Chain) -> None:
    r1 = chain.routers[0]
    expect = {
        "net.ipv4.icmp_ratelimit": "0",
        "net.ipv6.icmp.ratelimit": "0",
        "net.ipv4.icmp_msgs_per_sec": "1000000",
        "net.ipv4.icmp_msgs_burst": "1000000",
        "net.ipv4.ip_forward": "1",
        "net.ipv6.conf.all.forwarding": "1",
        "net.ipv6.conf.eth0.accept_dad": "0",
    }
    for key, value in expect.items():
        assert chain.get_sysctl(r1, key) == value, key
    assert chain.get_sysctl(chain.client, "net.ipv4.ip_forward") == "0"
    assert chain.responder_node is not None
    assert chain.get_sysctl(chain.responder_node, "net.ipv4.ip_forward") == "0"
    # IPv6 addresses are usable at once: none is tentative.
    for node in (chain.client, *chain.routers, chain.server):
        assert "tentative" not in chain.ip(node, "-6", "addr")


@FAMILIES
def test_bursts_of_icmp_errors_are_not_rate_limited(chain: Chain, family: int) -> None:
    dst = chain.server_address(family)
    probes = [{"dst": dst, "ttl": 1 + i % 3, "id": 777, "seq": i} for i in range(300)]
    res = chain.raw_probe("client", probes, timeout=2.0, expect=300)
    got = answers_to(res, 777)
    assert len(got) == 300
    assert {p.src for p in got} == set(chain.path(family)[:3])


@FAMILIES
def test_blackhole_is_silent(chain: Chain, family: int) -> None:
    dest = chain.add_blackhole(2)
    dst = dest.address(family)
    with chain.capture(chain.routers[1], "eth0") as cap:
        trace = chain.trace(family, dst, max_ttl=5, timeout=0.5)
    assert trace == [chain.hop_address(1, family), None, None, None, None]
    arrived = cap.select(direction="in", dst=dst)
    assert len(arrived) >= 1, cap.describe()  # probes reached r2 ...
    assert not [p for p in cap.sent if p.is_icmp], cap.describe()  # ... and r2 said nothing


@FAMILIES
@pytest.mark.parametrize(("kind", "codes"), [("unreachable", (1, 0)), ("prohibit", (13, 1))])
def test_unreachable_routes_answer(
    chain: Chain, family: int, kind: str, codes: tuple[int, int]
) -> None:
    dest = chain.add_unreachable(3, kind)
    res = echo(chain, dest.address(family), expect=1)
    got = answers_to(res)
    assert len(got) == 1
    assert got[0].is_dest_unreachable
    assert got[0].src == chain.hop_address(3, family)
    assert got[0].icmp_code == codes[0 if family == 4 else 1]


@FAMILIES
def test_unknown_destination_gets_no_route_from_last_router(chain: Chain, family: int) -> None:
    dst = "198.18.250.1" if family == 4 else "2001:db8:fa::1"
    got = answers_to(echo(chain, dst, expect=1))
    assert len(got) == 1
    assert got[0].is_dest_unreachable
    assert got[0].icmp_code == 0
    assert got[0].src == chain.hop_address(3, family)


@FAMILIES
def test_silent_router_never_answers(make_chain, family: int) -> None:
    c = make_chain(3)
    c.silence_router(2)
    path = c.path(family)
    assert c.trace(family, timeout=0.5) == [path[0], None, path[2], path[3]]
    assert answers_to(echo(c, c.hop_address(2, family))) == []  # not even echo
    c.silence_router(2, silent=False)
    assert c.trace(family) == path


# --------------------------------------------------------------------------- responder


@FAMILIES
def test_responder_answers_every_protocol_normally(chain: Chain, responder, family: int) -> None:
    dst = virtual_target(10, family)
    src = chain.client_address(family)
    # ICMP echo -> echo reply with the same id, seq and data.
    res = echo(chain, dst, expect=1, data="c0ffee")
    (reply,) = answers_to(res)
    assert reply.is_echo_reply
    assert (reply.src, reply.dst, reply.icmp_seq, reply.payload) == (dst, src, 1, b"\xc0\xff\xee")
    # UDP -> port unreachable quoting our ports.
    res = chain.raw_probe(
        "client",
        [{"dst": dst, "proto": "udp", "sport": 41000, "dport": 33500}],
        timeout=0.5,
        expect=1,
    )
    (unreach,) = res.received
    assert unreach.is_dest_unreachable
    assert unreach.icmp_code == (3 if family == 4 else 4)
    assert unreach.src == dst
    assert unreach.inner is not None
    assert (unreach.inner.sport, unreach.inner.dport) == (41000, 33500)
    # TCP SYN -> SYN-ACK acknowledging our sequence number.
    res = chain.raw_probe(
        "client",
        [{"dst": dst, "proto": "tcp", "sport": 41001, "dport": 443, "tcp_seq": 5000}],
        timeout=0.5,
        expect=1,
    )
    synack = next(p for p in res.received if p.proto == P.PROTO_TCP)
    assert synack.tcp_flags == P.TCP_SYN | P.TCP_ACK
    assert (synack.sport, synack.dport, synack.tcp_ack) == (443, 41001, 5001)
    assert synack.checksum_ok
    # SCTP INIT -> INIT-ACK, vtag = INIT's initiate tag, CRC32c right, state cookie.
    res = chain.raw_probe(
        "client",
        [{"dst": dst, "proto": "sctp", "sport": 41002, "dport": 80, "tag": 0xA1B2C3D4}],
        timeout=0.5,
        expect=1,
    )
    initack = next(p for p in res.received if p.proto == P.PROTO_SCTP)
    assert initack.sctp_vtag == 0xA1B2C3D4
    assert initack.checksum_ok
    (chunk,) = initack.sctp_chunks
    assert chunk.type == P.SCTP_INIT_ACK
    assert chunk.initiate_tag not in (None, 0)
    params = chunk.value[16:]
    assert struct.unpack("!H", params[:2])[0] == P.SCTP_PARAM_STATE_COOKIE
    # The responder logged all four, with what it did (the client kernel's RST
    # for the unexpected SYN-ACK is logged as ignored).
    actions = [e.action for e in responder.received(dst=dst)]
    assert [a for a in actions if a != "ignored"] == [
        "echo-reply",
        "port-unreachable",
        "syn-ack",
        "init-ack",
    ]
    assert [e.packet.tcp_flags for e in responder.received(dst=dst, action="ignored")] == [
        P.TCP_RST
    ]


@FAMILIES
def test_responder_rst_and_abort(chain: Chain, responder, family: int) -> None:
    dst = virtual_target(11, family)
    responder.set(dst, tcp="rst", sctp="abort")
    res = chain.raw_probe(
        "client", [{"dst": dst, "proto": "tcp", "dport": 22, "tcp_seq": 77}], timeout=0.5, expect=1
    )
    rst = next(p for p in res.received if p.proto == P.PROTO_TCP)
    assert rst.tcp_flags == P.TCP_RST | P.TCP_ACK
    assert rst.tcp_ack == 78
    res = chain.raw_probe(
        "client", [{"dst": dst, "proto": "sctp", "tag": 0x01020304}], timeout=0.5, expect=1
    )
    abort = next(p for p in res.received if p.proto == P.PROTO_SCTP)
    assert abort.sctp_vtag == 0x01020304
    assert abort.checksum_ok
    assert [(c.type, c.flags & 1) for c in abort.sctp_chunks] == [(P.SCTP_ABORT, 0)]


@FAMILIES
def test_responder_late_reply_is_late(chain: Chain, responder, family: int) -> None:
    dst = virtual_target(12, family)
    responder.set(dst, delay=0.4)
    res = echo(chain, dst, timeout=2.0, expect=1)
    (reply,) = answers_to(res)
    rtt = reply.timestamp - res.sent[0]["t"]
    assert 0.4 <= rtt < 1.2


@FAMILIES
def test_responder_silent_target_logs_but_never_answers(
    chain: Chain, responder, family: int
) -> None:
    dst = virtual_target(13, family)
    responder.set(dst, answer="none")
    assert answers_to(echo(chain, dst, count=3)) == []
    assert [e.action for e in responder.received(dst=dst)] == ["no-answer"] * 3
    assert responder.sent() == []


@FAMILIES
def test_responder_drops_a_seeded_fraction(chain: Chain, responder, family: int) -> None:
    dst = virtual_target(14, family)
    rng = random.Random(7)
    expected_lost = {s for s in range(1, 41) if rng.random() < 0.5}
    seen = []
    for _ in range(2):
        responder.set(dst, drop=0.5, seed=7)  # (re)setting restarts the random sequence
        res = echo(chain, dst, count=40, gap=0.005, timeout=0.5)
        answered = {p.icmp_seq for p in answers_to(res)}
        seen.append(set(range(1, 41)) - answered)
    assert seen[0] == seen[1] == expected_lost
    assert 10 < len(expected_lost) < 30


@FAMILIES
def test_responder_virtual_hops_with_mpls(chain: Chain, responder, family: int) -> None:
    dst = virtual_target(15, family)
    labels = [[16, 0, 0, 1], [24001, 5, 1, 255]]
    responder.set(dst, hops=2, mpls=labels)
    path = chain.trace(family, dst, max_ttl=6)
    assert path == [*chain.path(family)[:3], virtual_hop(1, family), virtual_hop(2, family), dst]
    res = echo(chain, dst, ttl=4, expect=1)
    (te,) = answers_to(res)
    assert te.is_time_exceeded
    assert te.src == virtual_hop(1, family)
    assert te.mpls == [P.Mpls(*m) for m in labels]
    # Wire format: RFC 4884 length field, original datagram padded to 128 bytes,
    # extension version 2 with a valid checksum, one object of class 1, c-type 1.
    icmp = te.transport
    assert (icmp[5] if family == 4 else icmp[4]) == (32 if family == 4 else 16)
    quote = icmp[8:136]
    assert te.inner is not None
    assert quote[te.inner.length :] == b"\0" * (128 - te.inner.length)
    ext = icmp[136:]
    assert ext[0] >> 4 == 2
    assert P.internet_checksum(ext) == 0
    assert struct.unpack("!HBB", ext[4:8]) == (4 + 4 * len(labels), 1, 1)
    assert len(ext) == 8 + 4 * len(labels)
    assert te.inner.ttl == 1


def test_responder_hop_objects_silent_hop_and_addresses(chain: Chain, responder) -> None:
    dst = virtual_target(16)
    responder.set(
        dst, hops=[{"addr4": "198.18.201.77"}, {"silent": True}, {"mpls": [[5, 0, 1, 9]]}]
    )
    path = chain.trace(4, dst, max_ttl=7, timeout=0.5)
    assert path[3:] == ["198.18.201.77", None, virtual_hop(3), dst]


@FAMILIES
def test_responder_duplicates(chain: Chain, responder, family: int) -> None:
    dst = virtual_target(17, family)
    responder.set(dst, duplicate=2)
    got = answers_to(echo(chain, dst, expect=3))
    assert [(p.is_echo_reply, p.icmp_seq) for p in got] == [(True, 1)] * 3


@FAMILIES
def test_responder_unreachable_answer(chain: Chain, responder, family: int) -> None:
    dst = virtual_target(18, family)
    responder.set(dst, answer="unreachable", code=10 if family == 4 else 1)
    (got,) = answers_to(echo(chain, dst, expect=1))
    assert got.is_dest_unreachable
    assert got.icmp_code == (10 if family == 4 else 1)
    assert got.src == dst


@FAMILIES
def test_responder_malformed_answers(chain: Chain, responder, family: int) -> None:
    cases = ["truncate", "bad-checksum", "bad-quote", "short-quote", "bad-extension"]
    quoting = {"bad-quote", "short-quote", "bad-extension"}
    answerer = {}
    for i, malform in enumerate(cases):
        target = virtual_target(20 + i, family)
        spec: dict[str, object] = {"malform": malform}
        answerer[malform] = target
        if malform in quoting:
            hop = virtual_hop(100 + i, family)
            spec["hops"] = [{f"addr{family}": hop}]
            answerer[malform] = hop
            if malform == "bad-extension":
                spec["mpls"] = [[100, 0, 1, 1]]
        responder.set(target, spec)
    with chain.capture("client", "eth0") as cap:
        for i, malform in enumerate(cases):
            echo(
                chain,
                virtual_target(20 + i, family),
                ttl=4 if malform in quoting else 64,
                timeout=0.1,
                expect=1,
            )

    def answer(malform: str) -> P.Packet:
        got: list[P.Packet] = cap.select(direction="in", src=answerer[malform])
        assert len(got) == 1, cap.describe()
        return got[0]

    truncated = answer("truncate")
    assert len(truncated.transport) == 6
    assert truncated.is_echo_reply
    assert truncated.icmp_id is None
    assert truncated.checksum_ok  # short, but its checksum covers what is there
    badsum = answer("bad-checksum")
    assert badsum.is_echo_reply
    assert badsum.checksum_ok is False
    badquote = answer("bad-quote")
    assert badquote.is_time_exceeded
    assert badquote.inner is None
    assert badquote.transport[8] >> 4 == 0
    short = answer("short-quote")
    assert short.inner is not None
    assert short.inner.truncated
    assert short.inner.dst == virtual_target(23, family)
    assert short.inner.icmp_id is None
    badext = answer("bad-extension")
    assert badext.is_time_exceeded
    assert badext.extension_checksum_ok is False
    assert badext.mpls == []


@FAMILIES
def test_responder_forged_errors(chain: Chain, responder, family: int) -> None:
    dst = virtual_target(30, family)
    forge = [
        "wrong-id",
        "wrong-seq",
        "wrong-dst",
        "wrong-src",
        "unrelated",
        "reply-wrong-id",
        "reply-wrong-seq",
    ]
    responder.set(dst, forge=forge)
    res = echo(chain, dst, ident=500, expect=len(forge) + 1)
    forged_src = "198.18.201.254" if family == 4 else "2001:db8:c9::fe"
    errors = [p for p in res.received if p.is_time_exceeded]
    assert len(errors) == 5
    assert all(p.src == forged_src for p in errors)
    inner = [p.inner for p in errors]
    assert all(i is not None for i in inner)
    assert (inner[0].icmp_id, inner[0].icmp_seq) == (501, 1)
    assert (inner[1].icmp_id, inner[1].icmp_seq) == (500, 2)
    assert inner[2].dst != dst
    assert inner[3].src != chain.client_address(family)
    assert inner[4].proto == P.PROTO_UDP
    replies = [(p.icmp_id, p.icmp_seq) for p in res.received if p.is_echo_reply]
    assert replies == [(501, 1), (500, 2), (500, 1)]  # two forged, then the genuine one
    # UDP: wrong-port quotes destination port + 1.
    responder.set(dst, forge=["wrong-port"], answer="none")
    res = chain.raw_probe(
        "client",
        [{"dst": dst, "proto": "udp", "sport": 40500, "dport": 33434}],
        timeout=0.5,
        expect=1,
    )
    (err,) = res.received
    assert err.inner is not None
    assert (err.inner.sport, err.inner.dport) == (40500, 33435)


@FAMILIES
def test_responder_reports_what_it_received(chain: Chain, responder, family: int) -> None:
    dst = virtual_target(31, family)
    echo(chain, dst, ttl=50, tos=0x28, size=100, pattern=0xAB, expect=1)
    (ev,) = responder.wait_received(1, dst=dst)
    p = ev.packet
    assert (p.ttl, p.tos, p.length, p.src) == (47, 0x28, 100, chain.client_address(family))
    assert p.payload == b"\xab" * (100 - (28 if family == 4 else 48))
    assert ev.action == "echo-reply"
    (tx,) = responder.sent(rx=ev.n)
    assert tx.kind == "echo-reply"
    assert tx.packet.dst == chain.client_address(family)


def test_responder_namespace_kernel_stays_quiet(chain: Chain, responder) -> None:
    probes = []
    for family in (4, 6):
        dst = virtual_target(32, family)
        probes += [{"dst": dst, "proto": proto} for proto in ("icmp", "udp", "tcp", "sctp")]
    assert chain.responder_node is not None
    with chain.capture(chain.responder_node, "eth0") as cap:
        chain.raw_probe("client", probes, timeout=0.5, expect=8)
    responder.sync()
    ours = {tx.packet.raw for tx in responder.sent()}
    out = cap.select(direction="out")
    assert len(out) == len(ours) >= 8, cap.describe()
    assert all(p.raw in ours for p in out), cap.describe()


def test_responder_control_errors(chain: Chain, responder) -> None:
    with pytest.raises(ValueError, match="answer must be one of"):
        responder.set(virtual_target(33), answer="maybe")
    with pytest.raises(ResponderError):
        responder._command({"cmd": "frobnicate"})
    responder.sync()  # still serving


def test_responder_script_at_start_and_clean_exit(make_chain) -> None:
    t_silent, t_hops = virtual_target(40), virtual_target(41)
    c = make_chain(
        1,
        responder=True,
        script={"targets": {t_silent: {"answer": "none"}}, "default": {"hops": 1}},
    )
    assert answers_to(echo(c, t_silent)) == []
    assert c.trace(4, t_hops, max_ttl=3) == [c.hop_address(1), virtual_hop(1), t_hops]
    r = c.responder
    assert r.stop() == 0
    assert not r.running


# --------------------------------------------------------------------------- captures


@FAMILIES
def test_capture_sees_every_field_sent_and_received(chain: Chain, family: int) -> None:
    dst = chain.server_address(family)
    t0 = time.time()
    with chain.capture("client", "eth0") as cap:
        chain.raw_probe(
            "client",
            [
                {
                    "dst": dst,
                    "proto": "udp",
                    "ttl": 7,
                    "tos": 0x48,
                    "size": 120,
                    "pattern": 0x5A,
                    "sport": 41234,
                    "dport": 33999,
                }
            ],
            timeout=0.5,
            expect=1,
        )
    t1 = time.time()
    (out,) = cap.select(direction="out", proto="udp")
    assert (out.src, out.dst, out.ttl, out.tos, out.length) == (
        chain.client_address(family),
        dst,
        7,
        0x48,
        120,
    )
    assert (out.sport, out.dport) == (41234, 33999)
    assert out.payload == b"\x5a" * (120 - (28 if family == 4 else 48))
    assert out.checksum_ok
    assert out.iface == "eth0"
    (back,) = cap.select(direction="in", proto="icmp" if family == 4 else "icmp6")
    assert back.is_dest_unreachable
    assert back.src == dst
    assert t0 <= out.timestamp <= back.timestamp <= t1


@FAMILIES
def test_capture_shows_final_checksums_of_kernel_sockets(chain: Chain, family: int) -> None:
    """TX checksum offload is off on lab veths, so kernel-built UDP has a real checksum."""
    dst = chain.server_address(family)
    code = (
        "import socket, sys\n"
        "fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\n"
        "s = socket.socket(fam, socket.SOCK_DGRAM)\n"
        "s.sendto(b'hello', (sys.argv[1], 40404))\n"
    )
    with chain.capture("client", "eth0") as cap:
        chain.python("client", code, dst)
    (out,) = cap.select(direction="out", proto="udp")
    assert out.payload == b"hello"
    assert out.checksum_ok


def test_capture_on_all_interfaces_names_them(chain: Chain) -> None:
    with chain.capture(chain.routers[0], None) as cap:
        echo(chain, chain.server_address(4), expect=1)
    seen = {(p.iface, p.direction) for p in cap.select(proto="icmp")}
    assert seen == {("eth0", "in"), ("eth1", "out"), ("eth1", "in"), ("eth0", "out")}


def test_capture_of_nothing_is_empty(chain: Chain) -> None:
    with chain.capture("client", "eth0", settle=0.3) as cap:
        chain.run("client", ["true"])
    assert cap.select() == [], cap.describe()


# --------------------------------------------------------------------------- cleanup


def _root_state() -> dict[str, str]:
    cmds = {
        "addr": ["ip", "-o", "addr"],
        "route": ["ip", "route"],
        "route6": ["ip", "-6", "route"],
        "rule": ["ip", "rule"],
        "rule6": ["ip", "-6", "rule"],
    }
    state = {
        k: subprocess.run(v, capture_output=True, text=True, check=False).stdout
        for k, v in cmds.items()
    }
    for key in (
        "ipv4/icmp_ratelimit",
        "ipv4/ip_forward",
        "ipv4/ping_group_range",
        "ipv6/icmp/ratelimit",
        "ipv6/conf/all/forwarding",
        "ipv4/icmp_msgs_per_sec",
    ):
        state[key] = Path("/proc/sys/net", key).read_text()
    return state


def test_lab_leaves_the_root_namespace_alone_and_removes_its_namespaces(make_lab) -> None:
    before = _root_state()
    lab = make_lab("mine")
    a, b = lab.add_node("a"), lab.add_node("b", router=True)
    lab.add_link(a, b, 1)
    lab.build()
    lab.sysctl(b, {"net.ipv4.icmp_ratelimit": 5})
    lab.open_ping_group(a)
    lab.add_special(b, "blackhole")
    lab.silence(b)
    names = lab.namespaces()
    assert set(names) <= set(netns.list_namespaces())
    assert lab.get_sysctl(a, "net.ipv4.ping_group_range").split() == ["0", "2147483647"]
    lab.close()
    assert not set(names) & set(netns.list_namespaces())
    assert _root_state() == before


def test_failed_build_removes_everything(make_lab) -> None:
    lab = make_lab("broken")
    a, b = lab.add_node("a"), lab.add_node("b")
    lab.add_link(a, b, 1)
    lab.add_route(a, "198.18.9.0/24", via="198.18.77.1")  # unreachable gateway
    with pytest.raises(netns.LabError):
        lab.build()
    assert not set(lab.namespaces()) & set(netns.list_namespaces())


_CRASH_SCRIPT = """
import os, signal, sys
from lab.topology import Chain
c = Chain(2, responder=True, clean_stale=False).build()
c.start_responder()
print(" ".join(c.namespaces()), flush=True)
how = sys.argv[1]
if how == "interrupt":
    raise KeyboardInterrupt
os.kill(os.getpid(), signal.SIGKILL)
"""


def _crash(how: str) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR))
    res = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT, how],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert res.returncode != 0
    names = res.stdout.split()
    assert len(names) == 5, res.stderr
    return names


@pytest.mark.privileged
def test_keyboard_interrupt_removes_namespaces() -> None:
    names = _crash("interrupt")
    assert not set(names) & set(netns.list_namespaces())


@pytest.mark.privileged
def test_stale_namespaces_of_a_killed_run_are_cleaned_up() -> None:
    names = _crash("kill")
    assert set(names) <= set(netns.list_namespaces())
    assert set(names) <= set(netns.stale_namespaces())
    removed = netns.cleanup_stale()
    assert set(names) <= set(removed)
    assert not set(names) & set(netns.list_namespaces())


def test_stale_cleanup_keeps_live_runs(make_chain) -> None:
    c = make_chain(1)
    netns.cleanup_stale()
    assert set(c.namespaces()) <= set(netns.list_namespaces())


def test_28_router_chain_builds_fast_and_routes_both_families(make_chain, record_property) -> None:
    t0 = time.monotonic()
    c = make_chain(28)
    built = time.monotonic() - t0
    assert c.trace(4) == c.path(4)
    assert c.trace(6) == c.path(6)
    assert c.path(4)[-1] == "198.18.29.2"
    t1 = time.monotonic()
    c.close()
    closed = time.monotonic() - t1
    record_property("build_seconds", round(built, 3))
    record_property("close_seconds", round(closed, 3))
    assert built < 10, built
    assert closed < 10, closed
    assert not set(c.namespaces()) & set(netns.list_namespaces())


# --------------------------------------------------------------------------- unprivileged copies


def test_unprivileged_copy_with_setuid_and_setcap(make_unprivileged_copy) -> None:
    copy = make_unprivileged_copy(Path("/usr/bin/id"))
    plain = copy.helper("plain", "id")
    assert copy.run([str(plain), "-u"], python=False).stdout.strip() == "65534"
    setuid = copy.helper("setuid", "id")
    assert os.stat(setuid).st_mode & 0o4000
    # The effective uid of a setuid-root program run by nobody is 0.
    out = copy.run([str(setuid)], python=False).stdout
    assert "euid=0" in out, out
    setcap = copy.helper("setcap", "id")
    getcap = subprocess.run(["getcap", str(setcap)], capture_output=True, text=True, check=False)
    assert "cap_net_raw" in getcap.stdout
    # nobody can read the package copy with the system python.
    if (copy.src / "brokerpkg").is_dir():
        res = copy.run(["-c", "import brokerpkg, sys; print(brokerpkg.__file__)"])
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(str(copy.src))


def test_unprivileged_raw_socket_needs_the_capability(make_unprivileged_copy, make_chain) -> None:
    """nobody gets EPERM for a raw socket, but ICMP datagram sockets once ping_group_range opens."""
    c = make_chain(1)
    copy = make_unprivileged_copy(None)
    code = (
        "import socket\n"
        "for t in (socket.SOCK_RAW, socket.SOCK_DGRAM):\n"
        "    try:\n"
        "        socket.socket(socket.AF_INET, t, socket.IPPROTO_ICMP).close(); print('ok')\n"
        "    except PermissionError: print('eperm')\n"
    )
    res = copy.run(["-c", code], lab=c, node="client")
    assert res.stdout.split() == ["eperm", "eperm"], res.stderr
    c.open_ping_group("client")
    res = copy.run(["-c", code], lab=c, node="client")
    assert res.stdout.split() == ["eperm", "ok"], res.stderr
