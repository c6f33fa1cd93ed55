"""The helper's request handling over a pipe: every malformed, out-of-range or odd
request gets its one exact error reply, nothing else happens for it, and the next
request is served.  Probes go to 127.0.0.1 only."""

from __future__ import annotations

import shutil

import pytest
from helperio import by_token, run_helper, words

GOOD = "77 send-probe ip-4 127.0.0.1 timeout 2"
GOOD_REPLY = "77 reply ip-4 127.0.0.1 round-trip-time N"
PARSE = "0 command-parse-error"
OVERFLOW = "0 command-buffer-overflow"
PROBE = "5 send-probe ip-4 127.0.0.1 "


def invalid(reason: str) -> str:
    return f"5 invalid-argument reason {reason}"


# (request bytes, the exact reply it must get)
CASES: list[tuple[bytes, str]] = [
    # framing
    (b"", PARSE),
    (b"   ", PARSE),
    (b"5", PARSE),
    (b"5 ", PARSE),
    (b"abc send-probe ip-4 127.0.0.1", PARSE),
    (b"-5 send-probe ip-4 127.0.0.1", PARSE),
    (b"+5 send-probe ip-4 127.0.0.1", PARSE),
    (b"0x5 send-probe ip-4 127.0.0.1", PARSE),
    (b"2147483648 check-support feature version", PARSE),
    (b"99999999999 check-support feature version", PARSE),
    (b"5 send-probe ip-4", PARSE),
    (b"5 send-probe ip-4 127.0.0.1 ttl", PARSE),
    (b"5\tsend-probe ip-4 127.0.0.1", PARSE),
    (b"5 send-probe ip-4 127.0.0.1\r", PARSE),
    (b"5 send-probe ip-4 127.0.0.1\x00", PARSE),
    (b"5 send-probe\x00 ip-4 127.0.0.1", PARSE),
    (b"5 send-probe ip-4 127.0.0.\xe9", PARSE),
    (b"\x1b[31m5 check-support feature version", PARSE),
    (b"5 check-support feature version\x7f", PARSE),
    (b"5 check-support feature", PARSE),
    (b"a" * 4096, OVERFLOW),
    (b"a" * 5000 + b" 6 send-probe ip-4 127.0.0.1", OVERFLOW),
    (b"5 check-support feature " + b"x" * 5000, OVERFLOW),
    # commands
    (b"5 frob", "5 unknown-command"),
    (b"5 SEND-PROBE ip-4 127.0.0.1", "5 unknown-command"),
    (b"5 send-probe-now ip-4 127.0.0.1", "5 unknown-command"),
    (b"5 check-support", invalid("missing-feature")),
    (b"5 check-support feature a feature b", invalid("duplicate-argument")),
    (b"5 check-support foo bar", invalid("unknown-argument")),
    # addresses
    (b"5 send-probe", invalid("missing-address")),
    (b"5 send-probe ttl 5", invalid("missing-address")),
    (b"5 send-probe ip-4 127.0.0.1 ip-6 ::1", invalid("conflicting-address")),
    (b"5 send-probe ip-4 127.0.0.1 ip-4 127.0.0.1", invalid("duplicate-argument")),
    (b"5 send-probe ip-4 1.2.3", invalid("ip-4-invalid")),
    (b"5 send-probe ip-4 256.1.1.1", invalid("ip-4-invalid")),
    (b"5 send-probe ip-4 ::1", invalid("ip-4-invalid")),
    (b"5 send-probe ip-4 localhost", invalid("ip-4-invalid")),
    (b"5 send-probe ip-4 127.0.0.1/8", invalid("ip-4-invalid")),
    (b"5 send-probe ip-6 127.0.0.1", invalid("ip-6-invalid")),
    (b"5 send-probe ip-6 ::g", invalid("ip-6-invalid")),
    (b"5 send-probe ip-6 fe80::1%lo", invalid("ip-6-invalid")),
    (PROBE.encode() + b"local-ip-4 abc", invalid("local-ip-4-invalid")),
    (PROBE.encode() + b"local-ip-6 ::1", invalid("local-address-family-mismatch")),
    (PROBE.encode() + b"local-ip-4 127.0.0.1 local-ip-6 ::1", invalid("conflicting-address")),
    (PROBE.encode() + b"local-ip-4 198.18.250.1", "5 address-not-available"),
    # never multicast or broadcast (a bind accepts both) nor an IPv4 address mapped into
    # IPv6 (test_root_sends_from_what_a_bind_accepts: the rest of 127.0.0.0/8)
    (PROBE.encode() + b"local-ip-4 224.0.0.1", "5 address-not-available"),
    (PROBE.encode() + b"local-ip-4 255.255.255.255", "5 address-not-available"),
    (b"5 send-probe ip-6 ::1 local-ip-6 ff02::1", "5 address-not-available"),
    (b"5 send-probe ip-6 ::1 local-ip-6 ::ffff:127.0.0.1", "5 address-not-available"),
    (PROBE.encode() + b"local-ip-4 0.0.0.0", invalid("unspecified-source")),
    (PROBE.encode() + b"protocol tcp local-ip-4 0.0.0.0", invalid("unspecified-source")),
    (b"5 send-probe ip-6 ::1 protocol udp local-ip-6 ::", invalid("unspecified-source")),
    (b"5 send-probe ip-6 ::ffff:127.0.0.1", invalid("v4-mapped-destination")),
    (b"5 send-probe ip-6 ::ffff:127.0.0.1 protocol tcp", invalid("v4-mapped-destination")),
    (b"5 send-probe ip-6 ::ffff:0.0.0.0 protocol udp", invalid("v4-mapped-destination")),
    # names
    (PROBE.encode() + b"foo bar", invalid("unknown-argument")),
    (PROBE.encode() + b"Ttl 5", invalid("unknown-argument")),
    (PROBE.encode() + b"ttl 5 ttl 6", invalid("duplicate-argument")),
    (PROBE.encode() + b"feature version", invalid("unknown-argument")),
    (PROBE.encode() + b" ".join(b"ttl 5" for _ in range(33)), invalid("too-many-arguments")),
    # numbers
    (PROBE.encode() + b"protocol ICMP", invalid("protocol-invalid")),
    (PROBE.encode() + b"protocol raw", invalid("protocol-invalid")),
    (PROBE.encode() + b"protocol udp port 0", invalid("port-out-of-range")),
    (PROBE.encode() + b"protocol udp port 65536", invalid("port-out-of-range")),
    (PROBE.encode() + b"protocol udp port 70000", invalid("port-out-of-range")),
    (PROBE.encode() + b"protocol tcp port 80a", invalid("port-invalid")),
    (PROBE.encode() + b"protocol tcp port -1", invalid("port-invalid")),
    (PROBE.encode() + b"protocol udp local-port 1023", invalid("local-port-out-of-range")),
    (PROBE.encode() + b"protocol udp local-port 65536", invalid("local-port-out-of-range")),
    (PROBE.encode() + b"protocol udp local-port x", invalid("local-port-invalid")),
    (PROBE.encode() + b"ttl 0", invalid("ttl-out-of-range")),
    (PROBE.encode() + b"ttl 256", invalid("ttl-out-of-range")),
    (PROBE.encode() + b"ttl 4294967296", invalid("ttl-out-of-range")),
    (PROBE.encode() + b"ttl -1", invalid("ttl-invalid")),
    (PROBE.encode() + b"ttl 1.5", invalid("ttl-invalid")),
    (PROBE.encode() + b"ttl 1e3", invalid("ttl-invalid")),
    (PROBE.encode() + b"ttl 00000000001", invalid("ttl-invalid")),
    (PROBE.encode() + b"tos 256", invalid("tos-out-of-range")),
    (PROBE.encode() + b"tos 999", invalid("tos-out-of-range")),
    (PROBE.encode() + b"tos 0x10", invalid("tos-invalid")),
    (PROBE.encode() + b"bit-pattern 256", invalid("bit-pattern-out-of-range")),
    (PROBE.encode() + b"bit-pattern x", invalid("bit-pattern-invalid")),
    (PROBE.encode() + b"size 9001", invalid("size-out-of-range")),
    (PROBE.encode() + b"size -5", invalid("size-invalid")),
    (PROBE.encode() + b"timeout -1", invalid("timeout-invalid")),
    (PROBE.encode() + b"timeout 3601", invalid("timeout-out-of-range")),
    (PROBE.encode() + b"timeout 3600.000001", invalid("timeout-out-of-range")),
    (PROBE.encode() + b"timeout 0.1234567", invalid("timeout-invalid")),
    (PROBE.encode() + b"timeout 1.", invalid("timeout-invalid")),
    (PROBE.encode() + b"timeout .5", invalid("timeout-invalid")),
    (PROBE.encode() + b"timeout 1e3", invalid("timeout-invalid")),
    (PROBE.encode() + b"timeout 1.2.3", invalid("timeout-invalid")),
    (PROBE.encode() + b"mark 4294967296", invalid("mark-out-of-range")),
    (PROBE.encode() + b"mark x", invalid("mark-invalid")),
    (PROBE.encode() + b"details maybe", invalid("details-invalid")),
    (PROBE.encode() + b"details YES", invalid("details-invalid")),
    (PROBE.encode() + b"local-device nosuchdev0", invalid("local-device-not-found")),
    (PROBE.encode() + b"local-device " + b"d" * 16, invalid("local-device-invalid")),
    (PROBE.encode() + b"local-device ../lo", invalid("local-device-invalid")),
    # the flow extension: 0-65535; udp, tcp and sctp take their source port from it
    (PROBE.encode() + b"flow -1", invalid("flow-invalid")),
    (PROBE.encode() + b"flow 65536", invalid("flow-out-of-range")),
    (PROBE.encode() + b"flow abc", invalid("flow-invalid")),
    (PROBE.encode() + b"flow 1 flow 2", invalid("duplicate-argument")),
    (
        PROBE.encode() + b"protocol udp flow 3 local-port 40000",
        invalid("flow-with-local-port"),
    ),
    (
        PROBE.encode() + b"protocol tcp local-port 40000 flow 3",
        invalid("flow-with-local-port"),
    ),
    (
        PROBE.encode() + b"protocol sctp flow 0 local-port 40000",
        invalid("flow-with-local-port"),
    ),
]


@pytest.mark.parametrize(("request_bytes", "expected"), CASES, ids=[repr(c[0][:40]) for c in CASES])
def test_bad_request_gets_its_exact_reply_and_next_is_served(
    helper_path: str, request_bytes: bytes, expected: str
) -> None:
    run = run_helper([helper_path], request_bytes + b"\n" + GOOD.encode() + b"\n")
    assert run.returncode == 0, run.stderr
    assert [words(line) for line in run.lines] == [expected, GOOD_REPLY]


def test_sixty_cases_at_least() -> None:
    assert len(CASES) >= 60


def test_all_bad_requests_in_one_stream_then_good_ones_still_work(helper_path: str) -> None:
    stream = b"".join(
        case + b"\n" + f"{900 + i} send-probe ip-4 127.0.0.1 timeout 2\n".encode()
        for i, (case, _) in enumerate(CASES)
    )
    run = run_helper([helper_path], stream)
    errors = [words(line) for line in run.lines if " reply " not in line]
    assert errors == [expected for _, expected in CASES]
    answered = by_token([line for line in run.lines if " reply " in line])
    assert sorted(answered) == sorted(str(900 + i) for i in range(len(CASES)))


def test_root_sends_from_what_a_bind_accepts(helper_path: str) -> None:
    """A root caller's sources are checked by binding (it holds no list of the host's
    addresses: brokerpkg-helper(8), PRIVILEGES), which the rest of 127.0.0.0/8 passes;
    callers who are not root get only assigned addresses (tests/test_privileges.py,
    tests/test_ports_and_sources.py)."""
    run = run_helper([helper_path], PROBE + "local-ip-4 127.0.0.2\n")
    assert [words(line) for line in run.lines] == ["5 reply ip-4 127.0.0.1 round-trip-time N"]


def test_final_line_without_newline_is_served(helper_path: str) -> None:
    run = run_helper([helper_path], "1 check-support feature send-probe")
    assert run.lines == ["1 feature-support support ok"]


def test_token_is_echoed_as_a_plain_number(helper_path: str) -> None:
    run = run_helper([helper_path], "007 check-support feature send-probe\n")
    assert run.lines == ["7 feature-support support ok"]


def test_extra_spaces_between_words_are_accepted(helper_path: str) -> None:
    run = run_helper([helper_path], "  3   send-probe  ip-4   127.0.0.1  \n")
    assert [words(line) for line in run.lines] == ["3 reply ip-4 127.0.0.1 round-trip-time N"]


def test_end_of_input_waits_for_probes_in_flight(helper_path: str) -> None:
    # 127.0.0.1 answers at once; the helper must print it before exiting 0
    requests = "".join(f"{t} send-probe ip-4 127.0.0.1\n" for t in range(1, 51))
    run = run_helper([helper_path], requests)
    assert run.returncode == 0
    assert sorted(by_token(run.lines), key=int) == [str(t) for t in range(1, 51)]


def test_a_long_run_of_requests_written_at_once_gets_every_answer(helper_path: str) -> None:
    # 20,000 requests in one write, the families alternating: the helper serves them in
    # bulk (answers read between sends, its answer sockets out of the epoll set meanwhile,
    # no transmit timestamps); the last answers of each family must still be read
    requests = "".join(
        f"{t} send-probe ip-4 127.0.0.1 timeout 5\n"
        if t % 2
        else f"{t} send-probe ip-6 ::1 timeout 5\n"
        for t in range(1, 20_001)
    )
    run = run_helper([helper_path], requests, timeout=60.0)
    assert run.returncode == 0
    replies = by_token(run.lines)
    assert len(run.lines) == len(replies) == 20_000
    assert {words(line).split(" ", 1)[1] for line in replies.values()} == {
        "reply ip-4 127.0.0.1 round-trip-time N",
        "reply ip-6 ::1 round-trip-time N",
    }


def test_version_flag_and_usage_error(helper_path: str) -> None:
    version = run_helper([helper_path, "--version"], b"")
    assert (version.returncode, version.lines) == (0, ["brokerpkg-helper brokerpkg-0.1.0"])
    usage = run_helper([helper_path, "--frob"], b"")
    assert usage.returncode == 2
    assert usage.stderr.startswith("usage: brokerpkg-helper")
    assert usage.lines == []


FEATURES = {
    "version": "brokerpkg-0.1.0",
    "send-probe": "ok",
    "ip-4": "ok",
    "ip-6": "ok",
    "icmp": "ok",
    "udp": "ok",
    "tcp": "ok",
    "sctp": "ok",
    "mark": "ok",
    "local-device": "ok",
    "fractional-timeout": "ok",
    "details": "ok",
    "flow": "ok",
    "sockets": "raw",
    "max-probes": "131072",
    "no-such-feature": "no",
}


@pytest.mark.privileged
def test_check_support_as_root(helper_path: str) -> None:
    names = list(FEATURES)
    run = run_helper(
        [helper_path],
        "".join(f"{i} check-support feature {name}\n" for i, name in enumerate(names)),
    )
    assert run.lines == [
        f"{i} feature-support support {FEATURES[name]}" for i, name in enumerate(names)
    ]


# Well-formed requests mtr-packet 0.95 accepts: our replies must have the same words.
CORPUS = [
    "send-probe ip-4 127.0.0.1",
    "send-probe ip-6 ::1",
    "send-probe ip-4 127.0.0.2",
    "send-probe ip-4 127.0.0.1 protocol icmp",
    "send-probe ip-4 127.0.0.1 protocol udp",
    "send-probe ip-6 ::1 protocol udp",
    "send-probe ip-4 127.0.0.1 protocol udp port 33434",
    "send-probe ip-4 127.0.0.1 protocol udp local-port 40000",
    "send-probe ip-4 127.0.0.1 protocol tcp",
    "send-probe ip-4 127.0.0.1 protocol tcp port 1",
    "send-probe ip-6 ::1 protocol tcp port 9",
    "send-probe ip-4 127.0.0.1 ttl 1",
    "send-probe ip-4 127.0.0.1 ttl 64",
    "send-probe ip-4 127.0.0.1 size 100",
    "send-probe ip-4 127.0.0.1 size 1500",
    "send-probe ip-4 127.0.0.1 size 9000",
    "send-probe ip-6 ::1 size 1280",
    "send-probe ip-4 127.0.0.1 size 10",
    "send-probe ip-4 127.0.0.1 bit-pattern 255",
    "send-probe ip-4 127.0.0.1 tos 16",
    "send-probe ip-6 ::1 tos 184",
    "send-probe ip-4 127.0.0.1 timeout 1",
    "send-probe ip-4 127.0.0.1 mark 7",
    "send-probe ip-4 127.0.0.1 local-ip-4 127.0.0.1",
    "send-probe ip-6 ::1 local-ip-6 ::1",
    "send-probe ip-4 127.0.0.1 port 80",
    "send-probe ip-4 127.0.0.1 protocol udp size 200 bit-pattern 7 ttl 30 tos 8",
    "check-support feature send-probe",
    "check-support feature ip-4",
    "check-support feature ip-6",
    "check-support feature icmp",
    "check-support feature udp",
    "check-support feature tcp",
    "check-support feature mark",
    "check-support feature no-such-feature",
    "frob",
]


@pytest.mark.privileged
def test_same_words_as_mtr_packet(helper_path: str) -> None:
    mtr_packet = shutil.which("mtr-packet")
    if mtr_packet is None:
        pytest.skip("mtr-packet (Debian mtr-tiny) is not installed")
    requests = "".join(f"{i} {line}\n" for i, line in enumerate(CORPUS, start=1))
    ours = by_token(run_helper([helper_path], requests).lines)
    theirs = by_token(run_helper([mtr_packet], requests).lines)
    assert len(theirs) == len(CORPUS)
    for token, reply in theirs.items():
        assert words(ours[token]) == words(reply), CORPUS[int(token) - 1]


def test_a_token_in_flight_is_refused_and_the_probe_keeps_it(helper_path: str) -> None:
    # both lines arrive in one read, so the first probe is still in flight for the second
    line = b"5 send-probe ip-4 127.0.0.1 timeout 2\n"
    run = run_helper([helper_path], line + line + b"6 send-probe ip-4 127.0.0.1 timeout 2\n")
    assert run.returncode == 0, run.stderr
    assert [words(x) for x in run.lines if " reply " not in x] == [
        "5 invalid-argument reason token-in-use"
    ]
    assert sorted(by_token([x for x in run.lines if " reply " in x])) == ["5", "6"]
