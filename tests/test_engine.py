"""The sans-I/O engine (brokerpkg/engine.py), driven synchronously with a fake clock.

No process, no event loop, no packet: request bytes are read back from take_output() and
reply bytes written by hand are fed in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import brokerpkg.engine
from brokerpkg import protocol as wire
from brokerpkg.engine import READ_LIMIT, WRITE_BATCH, Engine, ProbeTemplate, Request
from brokerpkg.errors import ProcessError, ProtocolError, ResponseTimeoutError

GRACE = 2.0
PROBE_TAIL = b" send-probe ip-4 127.0.0.1 timeout 1\n"
CHECK_TAIL = b" check-support feature version\n"


def template(deadline: float = 1.0 + GRACE, tail: bytes = PROBE_TAIL) -> ProbeTemplate:
    """A probe of 127.0.0.1 with default options."""
    result_tail = ("127.0.0.1", 255, "icmp", None, None, None, None, None, None)
    return ProbeTemplate(tail, deadline, "127.0.0.1", wire.ProbeOptions(), result_tail)


class Waiter:
    """A driver's slot waiter: woken once, or gone (cancelled) before."""

    def __init__(self, gone: bool = False) -> None:
        self.gone = gone
        self.woken = False


def wake(waiter: Waiter) -> bool:
    if waiter.gone:
        return False
    waiter.woken = True
    return True


def make_engine(limit: int = 4) -> Engine:
    engine = Engine(GRACE, wake)
    engine.set_limit(limit)
    return engine


def probe(engine: Engine, tmpl: ProbeTemplate | None = None) -> Request:
    """Take a slot and submit a probe (the driver's part)."""
    assert engine.try_take_slot()
    tmpl = tmpl or template()
    return engine.submit(tmpl.tail, tmpl.deadline, tmpl, True)


def tokens_of(output: bytes) -> list[bytes]:
    return [line.split(b" ")[0] for line in output.splitlines()]


def reply(token: bytes, rtt: int = 250, kind: bytes = b"reply") -> bytes:
    return token + b" " + kind + b" ip-4 127.0.0.1 round-trip-time %d\n" % rtt


def confirm_token(output: bytes) -> bytes:
    """The token of the confirming check-support in ``output``."""
    (line,) = [line for line in output.splitlines() if b" check-support " in line]
    return line.split(b" ")[0]


# ---------------------------------------------------------------------- tokens


def test_tokens_count_up_and_replies_complete_their_requests() -> None:
    engine = make_engine()
    first, second = probe(engine), probe(engine)
    output = engine.take_output(now=0.0)
    assert output == b"1" + PROBE_TAIL + b"2" + PROBE_TAIL
    assert engine.take_output(now=0.0) == b""
    done = engine.feed(reply(b"2", 1500) + reply(b"1", 250, b"ttl-expired"))
    assert done == [second, first]
    assert second.result.success and second.result.time_ms == 1.5
    assert first.result.result == wire.TTL_EXPIRED and not first.result.success
    assert first.result.responder == "127.0.0.1" and first.result.ttl == 255
    assert engine.in_flight == 0 and engine.free_slots == 4


def test_a_given_up_token_is_not_reused_until_its_late_reply() -> None:
    engine = make_engine(limit=10)
    given_up = probe(engine)
    engine.take_output(now=0.0)
    engine.give_up(given_up)
    assert engine.in_flight == 1
    engine._next_token = 1  # white box: the counter comes round to the given-up token
    other = probe(engine)
    assert other.token == b"2"
    assert engine.feed(reply(b"1")) == []  # the late reply is discarded
    assert engine.discarded_replies == 1 and engine.messages == ()
    engine._next_token = 1
    assert probe(engine).token == b"1"  # free again


def test_tokens_wrap_after_the_largest_one() -> None:
    engine = make_engine()
    engine._next_token = wire.MAX_TOKEN  # white box
    last, wrapped = probe(engine), probe(engine)
    assert last.token == b"%d" % wire.MAX_TOKEN and wrapped.token == b"1"


def test_a_request_given_up_before_it_was_written_is_never_written() -> None:
    engine = make_engine(limit=1)
    request = probe(engine)
    engine.give_up(request)
    assert engine.take_output(now=0.0) == b""
    assert engine.in_flight == 0 and engine.free_slots == 1


def test_a_request_cancelled_before_it_was_written_is_dropped() -> None:
    engine = Engine(GRACE, wake, cancelled=lambda handle: handle == "cancelled")
    engine.set_limit(2)
    dropped, kept = probe(engine), probe(engine)
    dropped.handle, kept.handle = "cancelled", "waiting"
    assert engine.take_output(now=0.0) == kept.token + PROBE_TAIL
    assert engine.in_flight == 1 and engine.free_slots == 1
    engine.give_up(dropped)  # the driver says so later: nothing more to do
    assert engine.in_flight == 1 and engine.free_slots == 1


def test_a_reply_for_no_request_in_flight_is_recorded() -> None:
    engine = make_engine()
    assert engine.feed(b"77 reply ip-4 127.0.0.1 round-trip-time 5\n") == []
    assert engine.messages == ("77 reply ip-4 127.0.0.1 round-trip-time 5 (token not in flight)",)


# ---------------------------------------------------------------------- slots


def test_slots_are_handed_to_waiters_first_come_first_served() -> None:
    engine = make_engine(limit=2)
    first, second = probe(engine), probe(engine)
    assert not engine.try_take_slot()
    gone, waiting = Waiter(gone=True), Waiter()
    engine.wait_for_slot(gone)
    engine.wait_for_slot(waiting)
    engine.take_output(now=0.0)
    engine.feed(reply(first.token))
    assert waiting.woken and not gone.woken  # the gone waiter was skipped
    assert engine.free_slots == 0
    engine.feed(reply(second.token))
    assert engine.free_slots == 1
    assert engine.try_take_slot()  # nobody waits: taken at once


def test_a_queued_waiter_blocks_a_new_taker() -> None:
    engine = make_engine(limit=1)
    probe(engine)
    waiter = Waiter()
    engine.wait_for_slot(waiter)
    engine.release_slot()  # e.g. a slot taken and not used
    assert waiter.woken and not engine.try_take_slot()
    engine.forget_waiter(waiter)  # gone already: no error


def test_a_given_up_probe_keeps_its_slot_until_its_deadline() -> None:
    engine = make_engine(limit=1)
    request = probe(engine, template(deadline=3.0))
    engine.take_output(now=10.0)
    engine.give_up(request)
    assert engine.free_slots == 0 and engine.next_wakeup() == 13.0
    assert engine.due(12.9) == [] and engine.free_slots == 0
    assert engine.due(13.0) == [] and engine.free_slots == 1
    assert engine.in_flight == 1  # the token is still reserved
    engine.feed(reply(request.token))
    assert engine.in_flight == 0 and engine.free_slots == 1  # freed once only


def test_a_probe_given_up_while_overdue_frees_its_slot_at_once() -> None:
    engine = make_engine(limit=1)
    request = probe(engine)
    engine.take_output(now=0.0)
    assert engine.due(3.0) == []  # overdue, waiting for the confirmation
    engine.give_up(request)
    assert engine.free_slots == 1
    assert engine.in_flight == 2  # its token stays reserved, and the confirmation's


def test_a_given_up_probe_answered_early_frees_its_slot_at_once() -> None:
    engine = make_engine(limit=1)
    request = probe(engine)
    engine.take_output(now=0.0)
    engine.give_up(request)
    engine.feed(b"%s no-reply\n" % request.token)
    assert engine.free_slots == 1 and engine.in_flight == 0
    assert engine.due(100.0) == [] and engine.free_slots == 1


def test_failure_fails_every_request_and_frees_every_slot() -> None:
    engine = make_engine(limit=3)
    first, second, third = probe(engine), probe(engine), probe(engine)
    check = engine.submit(CHECK_TAIL, 10.0, None, False)
    engine.take_output(now=0.0)
    engine.give_up(third)
    failed = engine.fail(lambda: ProcessError("gone"))
    assert failed == [first, second, check]
    assert all(isinstance(request.error, ProcessError) for request in failed)
    assert engine.free_slots == 3 and engine.in_flight == 0
    assert engine.failed is not None and engine.next_wakeup() is None


def test_slot_accounting_holds_over_many_mixed_outcomes() -> None:
    engine = make_engine(limit=100)
    now = 0.0
    for round_number in range(50):
        requests = [probe(engine) for _ in range(100)]
        engine.take_output(now)
        for request in requests[::3]:
            engine.give_up(request)
        answered = b"".join(reply(request.token) for request in requests[1::3])
        engine.feed(answered)
        now += 10.0
        expired = engine.due(now)  # overdue probes wait for a confirmation
        token = confirm_token(engine.take_output(now))
        expired += engine.feed(b"%s feature-support support brokerpkg-0.1.0\n" % token)
        assert len(expired) == len(requests[2::3]), round_number
        assert engine.free_slots == 100
    assert engine.in_flight == 50 * (34 + 33)  # given-up and timed-out tokens stay reserved


# ---------------------------------------------------------------------- deadlines


def test_a_check_support_fails_at_its_deadline() -> None:
    engine = make_engine()
    check = engine.submit(CHECK_TAIL, 5.0, None, False)
    assert engine.next_wakeup() is None  # not written yet: no deadline
    engine.take_output(now=1.0)
    assert engine.next_wakeup() == 6.0
    assert engine.due(5.9) == []
    assert engine.due(6.0) == [check]
    assert isinstance(check.error, ResponseTimeoutError)
    assert "check-support feature version" in str(check.error)


def test_an_overdue_probe_fails_once_a_later_question_is_answered() -> None:
    engine = make_engine()
    request = probe(engine)
    engine.take_output(now=0.0)
    assert engine.due(3.0) == []  # overdue: the engine asks the helper first
    output = engine.take_output(now=3.0)
    token = confirm_token(output)
    assert engine.next_wakeup() == 3.0 + GRACE
    done = engine.feed(b"%s feature-support support 0.95\n" % token)
    assert done == [request] and isinstance(request.error, ResponseTimeoutError)
    assert request.error.deadline == 1.0 + GRACE
    assert engine.free_slots == 4 and engine.in_flight == 1  # the probe's token stays reserved


def test_an_overdue_probe_answered_before_the_confirmation_succeeds() -> None:
    engine = make_engine()
    request = probe(engine)
    engine.take_output(now=0.0)
    engine.due(3.0)
    token = confirm_token(engine.take_output(now=3.0))
    done = engine.feed(reply(request.token) + b"%s feature-support support 0.95\n" % token)
    assert done == [request] and request.error is None and request.result.success


def test_an_overdue_probe_fails_after_a_silent_grace() -> None:
    engine = make_engine()
    request = probe(engine)
    engine.take_output(now=0.0)
    engine.due(3.0)
    engine.take_output(now=3.0)
    assert engine.due(3.0 + GRACE) == [request]
    assert engine.take_output(now=5.0) == b""  # no new question: nothing is overdue


def test_a_busy_helper_is_asked_again_before_an_overdue_probe_fails() -> None:
    engine = make_engine()
    late, busy = probe(engine), probe(engine)
    engine.take_output(now=0.0)
    engine.due(3.0)
    engine.take_output(now=3.0)
    engine.feed(reply(busy.token))  # bytes came: the helper is busy, not stuck
    assert engine.due(3.0 + GRACE) == []
    token = confirm_token(engine.take_output(now=5.0))
    assert engine.feed(b"%s feature-support support 0.95\n" % token) == [late]
    assert isinstance(late.error, ResponseTimeoutError)


def test_deadlines_expire_in_order_with_100000_in_flight() -> None:
    count = 100_000
    engine = Engine(GRACE)
    engine.set_limit(count)
    short, long = template(deadline=3.0), template(deadline=7.0)
    requests = []
    for number in range(count):
        # interleaved deadline lengths, written in batches at increasing times
        chosen = long if number % 2 else short
        assert engine.try_take_slot()
        requests.append(engine.submit(chosen.tail, chosen.deadline, chosen, True))
    now = 0.0
    while engine.queued:
        assert len(tokens_of(engine.take_output(now))) <= WRITE_BATCH
        now += 0.001
    assert engine.in_flight == count
    expected = sorted(requests, key=lambda request: (request.deadline_at, int(request.token)))
    expired: list[Request] = []
    clock = 0.0
    while len(expired) < count:
        wakeup = engine.next_wakeup()
        assert wakeup is not None and wakeup >= clock
        clock = wakeup
        expired += engine.due(clock)
        output = engine.take_output(clock)
        if output:
            expired += engine.feed(b"%s feature-support support 0.95\n" % confirm_token(output))
    assert [request.deadline_at for request in expired] == [r.deadline_at for r in expected]
    assert {id(request) for request in expired} == {id(request) for request in requests}
    assert engine.free_slots == count


# ---------------------------------------------------------------------- odd bytes


def test_lines_split_anywhere_are_joined() -> None:
    engine = make_engine()
    first, second = probe(engine), probe(engine)
    engine.take_output(now=0.0)
    data = reply(first.token) + b"%s no-reply\n" % second.token
    done: list[Request] = []
    for index in range(len(data)):
        done += engine.feed(data[index : index + 1])
    assert done == [first, second]
    assert second.result.result == wire.NO_REPLY
    assert engine.chunks_read == len(data)


def test_carriage_returns_go_through_the_full_parser() -> None:
    engine = make_engine()
    request = probe(engine)
    engine.take_output(now=0.0)
    assert engine.feed(reply(request.token).replace(b"\n", b"\r\n")) == [request]
    assert request.result.success and request.result.time_ms == 0.25


def test_non_utf8_bytes_are_recorded_not_fatal() -> None:
    engine = make_engine()
    request = probe(engine)
    engine.take_output(now=0.0)
    done = engine.feed(b"\xff\xfe garbage\n0 \xc3\x28 error\n" + reply(request.token))
    assert done == [request] and request.result.success
    assert len(engine.messages) == 2


FAST_PATH_LINES = [
    b"reply ip-4 127.0.0.1 round-trip-time 250",
    b"ttl-expired ip-4 192.0.2.1 round-trip-time 0",
    b"reply ip-6 2001:db8::1 round-trip-time 12345",
    b"ttl-expired ip-6 FE80::1 round-trip-time 7",
    # near misses: the full parser judges them
    b"reply ip-4 127.0.0.1 round-trip-time",
    b"reply ip-4 127.0.0.1 round-trip-time 25x",
    b"reply ip-4 127.0.0.1 round-trip-time -1",
    b"reply  ip-4 127.0.0.1 round-trip-time 250",
    b"reply ip-4 127.0.0.1 round-trip-time 250 ",
    b"reply ip-4 127.0.0.1 round-trip-time 250 mpls 1,2,3,4",
    b"reply ip-4 127.0.0.1/8 round-trip-time 250",
    b"reply ip-4  round-trip-time 250",
    b"reply ip-5 127.0.0.1 round-trip-time 250",
    b"no-reply ip-4 127.0.0.1 round-trip-time 250",
    b"reply ip-4 127.0.0.1 rtt 250",
    b"no-reply",
    b"reply",
]


@pytest.mark.parametrize("words", FAST_PATH_LINES)
def test_the_fast_path_gives_what_the_full_parser_gives(words: bytes) -> None:
    """Every reply line completes its probe as make_probe_result would, whether or not it
    takes the fast path (fed twice: once judged, once remembered)."""
    tmpl = template()
    engine = make_engine()
    for _ in range(2):
        request = probe(engine, tmpl)
        engine.take_output(now=0.0)
        line = request.token + b" " + words
        parsed = wire.parse_reply_line(line)
        assert isinstance(parsed, wire.Reply)
        try:
            expected: object = wire.make_probe_result(parsed, tmpl.options, tmpl.target)
        except ProtocolError as error:
            expected = type(error)
        engine.feed(line + b"\n")
        got = type(request.error) if request.error is not None else request.result
        assert got == expected and type(got) is type(expected)


def test_a_malformed_reply_fails_its_probe_with_a_protocol_error() -> None:
    engine = make_engine(limit=1)
    request = probe(engine)
    engine.take_output(now=0.0)
    assert engine.feed(b"%s reply ip-4 127.0.0.1 round-trip-time x\n" % request.token) == [request]
    assert isinstance(request.error, ProtocolError)
    assert engine.free_slots == 1


def test_an_over_long_line_is_discarded_and_reading_goes_on() -> None:
    engine = make_engine()
    request = probe(engine)
    engine.take_output(now=0.0)
    assert engine.feed(request.token + b" reply " + b"x" * (READ_LIMIT + 10)) == []
    assert engine.feed(b"y" * 100 + b"\n" + reply(request.token)) == [request]
    assert engine.messages == ("(over-long line from the helper, discarded)",)


def test_a_last_line_without_newline_is_read_at_end_of_file() -> None:
    engine = make_engine()
    request = probe(engine)
    engine.take_output(now=0.0)
    assert engine.feed(reply(request.token).rstrip(b"\n")) == []
    assert engine.feed_eof() == [request]
    assert engine.feed_eof() == []


def test_a_check_support_gets_the_reply_itself() -> None:
    engine = make_engine()
    check = engine.submit(CHECK_TAIL, 10.0, None, False)
    engine.take_output(now=0.0)
    assert engine.feed(b"%s feature-support support 0.95\n" % check.token) == [check]
    assert isinstance(check.result, wire.Reply) and wire.feature_value(check.result) == "0.95"
    assert engine.free_slots == 4  # a check-support holds no slot


# ---------------------------------------------------------------------- token 0


def test_token_zero_errors_are_recorded_and_named_by_a_timeout() -> None:
    engine = make_engine()
    before = engine.submit(CHECK_TAIL, 5.0, None, False)
    engine.take_output(now=0.0)
    engine.feed(b"0 command-parse-error\n")
    after = engine.submit(CHECK_TAIL, 5.0, None, False)
    engine.take_output(now=1.0)
    engine.feed(b"0 command-buffer-overflow\n")
    assert engine.messages == ("0 command-parse-error", "0 command-buffer-overflow")
    assert engine.due(6.0) == [before, after]
    assert isinstance(before.error, ResponseTimeoutError)
    assert isinstance(after.error, ResponseTimeoutError)
    assert before.error.helper_messages == ("0 command-parse-error", "0 command-buffer-overflow")
    assert after.error.helper_messages == ("0 command-buffer-overflow",)


# ---------------------------------------------------------------------- purity


PURE_MODULES = {"__future__", "collections", "collections.abc", "contextlib", "typing"}
PURE_MODULES |= {"re", "math", "functools", "ipaddress", "protocol", "errors", "engine"}


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", ["engine", "templates", "protocol", "errors"])
def test_the_engine_and_what_it_imports_do_no_io(module: str) -> None:
    path = Path(brokerpkg.engine.__file__).with_name(f"{module}.py")
    assert imported_modules(path) <= PURE_MODULES


def test_engine_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="probe_grace"):
        Engine(-1.0)
    engine = Engine(1.0)
    with pytest.raises(ValueError, match=">= 1"):
        engine.set_limit(0)
    engine.set_limit(1)
    with pytest.raises(ValueError, match="once"):
        engine.set_limit(2)
