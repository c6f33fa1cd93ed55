"""Pure protocol layer: option validation, request encoding, reply parsing, results."""

from __future__ import annotations

import math
from typing import Any

import pytest

from brokerpkg import protocol
from brokerpkg.errors import ProtocolError
from brokerpkg.protocol import (
    Garbage,
    Mpls,
    ProbeOptions,
    ProbeResult,
    Reply,
    encode_check_support,
    encode_request,
    encode_send_probe,
    feature_value,
    format_timeout,
    helper_timeout,
    make_probe_options,
    make_probe_result,
    next_free_token,
    parse_mpls,
    parse_reply_line,
    probe_arguments,
    required_features,
)

# ------------------------------------------------------------------ option validation

VALID_EDGES = [
    ("ttl", 1),
    ("ttl", 255),
    ("port", 1),
    ("port", 65535),
    ("local_port", 1024),
    ("local_port", 65535),
    ("size", 0),
    ("size", 9000),
    ("bit_pattern", 0),
    ("bit_pattern", 255),
    ("tos", 0),
    ("tos", 255),
    ("mark", 0),
    ("mark", 4294967295),
    ("timeout", 0),
    ("timeout", 3600),
    ("timeout", 0.25),
    ("ip_version", 4),
    ("ip_version", 6),
    ("flow", 0),
    ("flow", 65535),
]


@pytest.mark.parametrize(("name", "value"), VALID_EDGES)
def test_range_edges_are_accepted(name: str, value: object) -> None:
    arguments: dict[str, Any] = {name: value, **({"protocol": "udp"} if "port" in name else {})}
    options = make_probe_options(**arguments)
    assert getattr(options, name) == value


OUT_OF_RANGE = [
    ("ttl", 0),
    ("ttl", 256),
    ("ttl", -1),
    ("port", 0),
    ("port", 65536),
    ("local_port", 1023),
    ("local_port", 65536),
    ("size", -5),
    ("size", 9001),
    ("bit_pattern", -1),
    ("bit_pattern", 256),
    ("tos", 256),
    ("tos", 999),
    ("mark", -1),
    ("mark", 4294967296),
    ("timeout", -0.1),
    ("timeout", 3600.5),
    ("timeout", math.inf),
    ("timeout", math.nan),
    ("ip_version", 5),
    ("protocol", "icmpv6"),
    ("protocol", "UDP"),
    ("local_device", ""),
    ("local_device", "a" * 16),
    ("local_device", "eth 0"),
    ("local_device", "a/b"),
    ("local_ip", ""),
    ("local_ip", "1.2.3.4 ttl 5"),
    ("flow", -1),
    ("flow", 65536),
]


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_out_of_range_values_raise_value_error_naming_the_option(name: str, value: object) -> None:
    arguments: dict[str, Any] = {name: value, **({"protocol": "udp"} if "port" in name else {})}
    with pytest.raises(ValueError, match=name.split("_", maxsplit=1)[0]):
        make_probe_options(**arguments)


WRONG_TYPES = [
    ("ttl", "5"),
    ("ttl", 5.0),
    ("ttl", True),
    ("port", "80"),
    ("timeout", "1"),
    ("timeout", True),
    ("size", [64]),
    ("mark", 1.5),
    ("details", "yes"),
    ("details", 1),
    ("protocol", 6),
    ("ip_version", True),
    ("ip_version", "4"),
    ("local_device", 3),
    ("local_ip", 2130706433),
    ("flow", "1"),
    ("flow", True),
    ("flow", 1.0),
]


@pytest.mark.parametrize(("name", "value"), WRONG_TYPES)
def test_wrong_types_raise_type_error(name: str, value: object) -> None:
    arguments: dict[str, Any] = {name: value, **({"protocol": "udp"} if "port" in name else {})}
    with pytest.raises(TypeError, match=name.split("_", maxsplit=1)[0]):
        make_probe_options(**arguments)


@pytest.mark.parametrize("name", ["port", "local_port"])
def test_ports_are_refused_for_icmp(name: str) -> None:
    port: dict[str, Any] = {name: 2000}
    with pytest.raises(ValueError, match="not icmp"):
        make_probe_options(**port)
    with pytest.raises(ValueError, match="not icmp"):
        make_probe_options(protocol="icmp", **port)


def test_options_default_to_not_given() -> None:
    assert make_probe_options() == ProbeOptions()
    assert ProbeOptions().details is False


# ------------------------------------------------------------------ timeouts


@pytest.mark.parametrize(
    ("seconds", "fractional", "wire"),
    [
        (2, False, "2"),
        (2.0, True, "2"),
        (0.25, True, "0.25"),
        (0.25, False, "1"),
        (1.5, False, "2"),
        (0, False, "0"),
        (0, True, "0"),
        (0.1, True, "0.1"),
        (0.1, False, "1"),
        (1e-7, True, "0.000001"),
        (3.0000001, False, "4"),
        (0.123456, True, "0.123456"),
        (0.1234561, True, "0.123457"),
        (3600, True, "3600"),
    ],
)
def test_timeout_formatting(seconds: float, fractional: bool, wire: str) -> None:
    assert format_timeout(seconds, fractional) == wire


def test_helper_timeout_defaults_to_ten_seconds() -> None:
    assert helper_timeout(None, True) == 10.0
    assert helper_timeout(0.5, False) == 1.0
    assert helper_timeout(0.5, True) == 0.5


# ------------------------------------------------------------------ requests


def test_plain_probe_sends_only_the_address() -> None:
    assert probe_arguments(ProbeOptions(), "127.0.0.1") == [("ip-4", "127.0.0.1")]
    assert encode_send_probe(42, [("ip-4", "127.0.0.1")]) == b"42 send-probe ip-4 127.0.0.1\n"


def test_every_option_is_encoded_in_order() -> None:
    options = make_probe_options(
        protocol="udp",
        port=33434,
        local_port=40000,
        local_device="lo",
        timeout=0.5,
        ttl=3,
        size=100,
        bit_pattern=170,
        tos=16,
        mark=7,
        details=True,
        local_ip="::1",
        flow=12,
    )
    arguments = probe_arguments(options, "::1", "::1", fractional_timeout=True)
    line = encode_send_probe(7, arguments)
    assert line == (
        b"7 send-probe ip-6 ::1 local-ip-6 ::1 protocol udp port 33434 local-port 40000 "
        b"local-device lo timeout 0.5 ttl 3 size 100 bit-pattern 170 tos 16 mark 7 details yes "
        b"flow 12\n"
    )


def test_details_false_is_not_sent() -> None:
    arguments = probe_arguments(make_probe_options(details=False), "127.0.0.1")
    assert all(name != "details" for name, _ in arguments)


def test_timeout_is_rounded_up_without_fractional_support() -> None:
    arguments = probe_arguments(make_probe_options(timeout=0.3), "127.0.0.1")
    assert ("timeout", "1") in arguments


@pytest.mark.parametrize(
    ("address", "local", "version", "message"),
    [
        ("localhost", None, None, "not a numeric"),
        ("127.0.0.1", "::1", None, "not IPv4"),
        ("::1", "127.0.0.1", None, "not IPv6"),
        ("127.0.0.1", None, 6, "IPv4"),
    ],
)
def test_address_problems_raise_value_error(
    address: str, local: str | None, version: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        probe_arguments(ProbeOptions(ip_version=version), address, local)


@pytest.mark.parametrize(
    ("token", "command", "arguments", "error"),
    [
        (0, "send-probe", [], ValueError),
        (2147483648, "send-probe", [], ValueError),
        (-1, "send-probe", [], ValueError),
        ("1", "send-probe", [], TypeError),
        (True, "send-probe", [], TypeError),
        (1, "send probe", [], ValueError),
        (1, "", [], ValueError),
        (1, "send-probe", [("ip-4", "")], ValueError),
        (1, "send-probe", [("ip-4", "1.2.3.4\n2 send-probe")], ValueError),
        (1, "send-probe", [("ip-4", "1.2.3.4\x00")], ValueError),
        (1, "send-probe", [("ip-4", "é")], ValueError),
        (1, "send-probe", [("x", "y" * 4100)], ValueError),
    ],
)
def test_requests_the_wire_cannot_carry_are_refused(
    token: object, command: str, arguments: list[tuple[str, str]], error: type[Exception]
) -> None:
    with pytest.raises(error):
        encode_request(token, command, arguments)  # type: ignore[arg-type]


def test_check_support_encoding() -> None:
    assert encode_check_support(2147483647, "send-probe") == (
        b"2147483647 check-support feature send-probe\n"
    )


def test_required_features() -> None:
    options = make_probe_options(protocol="sctp", mark=1, local_device="lo", details=True, flow=0)
    assert [name for name, _ in required_features(options, 6)] == [
        "ip-6",
        "sctp",
        "mark",
        "local-device",
        "details",
        "flow",
    ]
    assert [name for name, _ in required_features(ProbeOptions(), 4)] == ["ip-4", "icmp"]


# ------------------------------------------------------------------ tokens


def test_tokens_count_up_skip_in_flight_and_wrap() -> None:
    assert next_free_token(1, set()) == (1, 2)
    assert next_free_token(5, {5, 6}) == (7, 8)
    assert next_free_token(protocol.MAX_TOKEN, set()) == (protocol.MAX_TOKEN, 1)
    assert next_free_token(protocol.MAX_TOKEN, {protocol.MAX_TOKEN, 1}) == (2, 3)
    assert next_free_token(0, set()) == (1, 2)


# ------------------------------------------------------------------ replies

REPLY_TABLE = [
    (
        b"42 reply ip-4 127.0.0.1 round-trip-time 126\n",
        ProbeResult(True, "reply", 0.126, "127.0.0.1", []),
    ),
    (
        b"11 ttl-expired ip-4 127.0.0.2 round-trip-time 1634\n",
        ProbeResult(False, "ttl-expired", 1.634, "127.0.0.2", []),
    ),
    (
        b"3 ttl-expired ip-6 ::1 round-trip-time 310 mpls 16,0,1,1\n",
        ProbeResult(False, "ttl-expired", 0.31, "::1", [Mpls(16, 0, True, 1)]),
    ),
    (
        b"4 no-route ip-4 127.0.0.3 round-trip-time 20\n",
        ProbeResult(False, "no-route", 0.02, "127.0.0.3", []),
    ),
    (b"5 no-route\n", ProbeResult(False, "no-route", None, None, [])),
    (b"6 no-reply\n", ProbeResult(False, "no-reply", None, None, [])),
    (b"7 network-down\n", ProbeResult(False, "network-down", None, None, [])),
    (b"8 permission-denied\n", ProbeResult(False, "permission-denied", None, None, [])),
    (b"9 address-in-use\n", ProbeResult(False, "address-in-use", None, None, [])),
    (b"10 address-not-available\n", ProbeResult(False, "address-not-available", None, None, [])),
    (b"12 probes-exhausted\n", ProbeResult(False, "probes-exhausted", None, None, [])),
    (
        b"13 unexpected-error errno 22\n",
        ProbeResult(False, "unexpected-error", None, None, [], reason="errno 22"),
    ),
    (
        b"14 invalid-argument reason ttl-out-of-range\n",
        ProbeResult(False, "invalid-argument", None, None, [], reason="ttl-out-of-range"),
    ),
    (b"15 invalid-argument\n", ProbeResult(False, "invalid-argument", None, None, [])),
    (b"16 unknown-command\n", ProbeResult(False, "unknown-command", None, None, [])),
    (
        b"17 no-route-host ip-4 127.0.0.1 round-trip-time 5\n",
        ProbeResult(False, "no-route-host", 0.005, "127.0.0.1", []),
    ),
]


@pytest.mark.parametrize(("line", "expected"), REPLY_TABLE)
def test_every_reply_kind(line: bytes, expected: ProbeResult) -> None:
    reply = parse_reply_line(line)
    assert isinstance(reply, Reply)
    assert reply.problem is None
    result = make_probe_result(reply)
    assert result[:5] == expected[:5]
    assert result.reason == expected.reason


def test_mtrpacket_style_ttl_expired_without_round_trip_time() -> None:
    reply = parse_reply_line(b"1 ttl-expired ip-4 127.0.0.8 mpls 1,2,0,3,4,5,1,6")
    assert isinstance(reply, Reply)
    result = make_probe_result(reply)
    assert result.time_ms is None
    assert result.mpls == [Mpls(1, 2, False, 3), Mpls(4, 5, True, 6)]
    assert result.mpls[0].bottom_of_stack is False
    assert result.mpls[1].bottom_of_stack is True


def test_details_fields_are_read() -> None:
    reply = parse_reply_line(
        b"7 reply ip-4 127.0.0.1 round-trip-time 52 reply-ttl 64 icmp-type 0 "
        b"icmp-code 0 reply-size 84\n"
    )
    assert isinstance(reply, Reply)
    result = make_probe_result(reply, make_probe_options(ttl=9), "127.0.0.1")
    assert (result.reply_ttl, result.icmp_type, result.icmp_code, result.reply_size) == (
        64,
        0,
        0,
        84,
    )
    assert (result.target, result.ttl, result.protocol, result.port) == (
        "127.0.0.1",
        9,
        "icmp",
        None,
    )


def test_details_with_mpls_and_ipv6() -> None:
    reply = parse_reply_line(
        b"8 ttl-expired ip-6 ::1 round-trip-time 310 mpls 16,0,1,1 reply-ttl 64 "
        b"icmp-type 3 icmp-code 0 reply-size 1280 tcp-flags rst"
    )
    assert isinstance(reply, Reply)
    result = make_probe_result(reply)
    assert result.mpls == [Mpls(16, 0, True, 1)]
    assert (result.icmp_type, result.reply_size) == (3, 1280)


def test_request_defaults_are_filled_in() -> None:
    reply = parse_reply_line(b"1 no-reply")
    assert isinstance(reply, Reply)
    tcp = make_probe_result(reply, make_probe_options(protocol="tcp"), "::1")
    assert (tcp.protocol, tcp.port, tcp.ttl, tcp.target) == ("tcp", 80, 255, "::1")
    udp = make_probe_result(reply, make_probe_options(protocol="udp"))
    assert udp.port is None
    udp_port = make_probe_result(reply, make_probe_options(protocol="udp", port=53))
    assert udp_port.port == 53


def test_probe_result_field_order_and_defaults() -> None:
    assert ProbeResult._fields == (
        "success",
        "result",
        "time_ms",
        "responder",
        "mpls",
        "target",
        "ttl",
        "protocol",
        "port",
        "reply_ttl",
        "icmp_type",
        "icmp_code",
        "reply_size",
        "reason",
    )
    short = ProbeResult(True, "reply", 1.0, "127.0.0.1", [])
    assert short[5:] == (None,) * 9
    assert Mpls._fields == ("label", "traffic_class", "bottom_of_stack", "ttl")


@pytest.mark.parametrize(
    ("line", "token"),
    [
        (b"007 reply ip-4 127.0.0.1 round-trip-time 1\n", 7),
        (b"  5   no-reply  \r\n", 5),
        (b"2147483647 no-reply", 2147483647),
        (b"0 command-parse-error\n", 0),
        (b"0000000000000000000001 no-reply", 1),
    ],
)
def test_tokens_and_spacing(line: bytes, token: int) -> None:
    reply = parse_reply_line(line)
    assert isinstance(reply, Reply)
    assert reply.token == token
    assert reply.problem is None


GARBAGE = [
    b"",
    b"\n",
    b"   \n",
    b"notatoken reply\n",
    b"42\n",
    b"2147483648 reply\n",
    b"-1 reply\n",
    b"\xff\xfe\x00 total garbage\n",
    b"\t7 reply\n",
    b"\xd9\xa3 reply\n",
    b"\xef\xbc\x91 reply\n",
    b"1e3 reply\n",
]


@pytest.mark.parametrize("line", GARBAGE)
def test_garbage_never_raises(line: bytes) -> None:
    parsed = parse_reply_line(line)
    assert isinstance(parsed, Garbage)
    assert parsed.reason
    assert protocol.describe_unattributed(parsed)


MALFORMED = [
    b"3 reply ip-4\n",
    b"3 reply ip-4 127.0.0.1 ip-4 127.0.0.2\n",
    b"3 reply ip-4 127.0.0.\xff\n",
    b"3 reply\x00 ip-4 127.0.0.1\n",
    b"3 re\tply\n",
]


@pytest.mark.parametrize("line", MALFORMED)
def test_malformed_replies_keep_their_token_and_fail_as_protocol_errors(line: bytes) -> None:
    reply = parse_reply_line(line)
    assert isinstance(reply, Reply)
    assert reply.token == 3
    assert reply.problem
    with pytest.raises(ProtocolError, match="malformed"):
        make_probe_result(reply)


@pytest.mark.parametrize(
    "line",
    [
        b"1 reply ip-4 127.0.0.1 round-trip-time fast",
        b"1 reply ip-4 127.0.0.1 round-trip-time -5",
        b"1 reply ip-4 127.0.0.1 reply-ttl 6x4",
        b"1 ttl-expired ip-4 127.0.0.1 mpls 1,2,3",
        b"1 ttl-expired ip-4 127.0.0.1 mpls 1,2,3,x",
    ],
)
def test_bad_numbers_are_protocol_errors(line: bytes) -> None:
    reply = parse_reply_line(line)
    assert isinstance(reply, Reply)
    with pytest.raises(ProtocolError):
        make_probe_result(reply)


def test_every_single_byte_is_survivable() -> None:
    for byte in range(256):
        for line in (bytes([byte]), b"1 reply " + bytes([byte]) + b"\n", bytes([byte]) + b" x"):
            parse_reply_line(line)


def test_parse_mpls() -> None:
    assert parse_mpls("1,2,1,3") == [Mpls(1, 2, True, 3)]
    with pytest.raises(ValueError, match="four"):
        parse_mpls("")


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b"1 feature-support support ok", "ok"),
        (b"1 feature-support support no", "no"),
        (b"1 feature-support support 0.95", "0.95"),
        (b"1 feature-support support 131072", "131072"),
        (b"1 invalid-argument reason missing-feature", "no"),
        (b"1 unknown-command", "no"),
        (b"1 feature-support", "no"),
        (b"1 feature-support support", "no"),
    ],
)
def test_feature_values(line: bytes, value: str) -> None:
    reply = parse_reply_line(line)
    assert isinstance(reply, Reply)
    assert feature_value(reply) == value
