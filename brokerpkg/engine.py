"""The sans-I/O core of a session: :class:`Engine`.

No asyncio, no I/O, no clock: a driver (the asyncio :class:`~brokerpkg.session.Session`,
or a blocking one) moves bytes between the engine and a transport and passes the time
(``now``, seconds on any monotonic clock) to the calls that need it.

The API (stable; every call is synchronous and cheap):

``Engine(probe_grace, wake=..., cancelled=...)``
    ``wake(waiter) -> bool`` hands a free flow-control slot to a waiter the driver
    queued with :meth:`~Engine.wait_for_slot`; it returns False when that waiter is gone
    (cancelled), and the slot goes to the next one.  ``cancelled(handle) -> bool``, if
    given, tells whether the caller of a request not yet written gave it up (its
    ``handle``, e.g. a cancelled future) before the driver could say so: such a request
    is dropped, not written.
``set_limit(n)``
    The in-flight limit (call once, at open, after the feature queries).
Slots: ``try_take_slot() -> bool``, ``wait_for_slot(waiter)``, ``forget_waiter(waiter)``,
``release_slot()``
    One slot per probe in flight (check-support requests hold none).  A probe's slot is
    taken by the driver before :meth:`~Engine.submit` and freed by the engine: when the
    reply is read, when the probe times out, when everything fails, or (for a probe
    given up while the helper works on it) at its deadline.  ``release_slot`` is only
    for a slot the driver took (or was handed) and did not use.
``submit(tail, deadline, template, holds_slot) -> Request``
    Give a request a token (never one in flight or given up and unanswered) and queue
    it.  ``template`` None makes a check-support (its result is the :class:`Reply`), a
    :class:`ProbeTemplate` a probe (its result the :class:`ProbeResult`).
``queued`` / ``take_output(now) -> bytes``
    Requests waiting to be written; the bytes of up to WRITE_BATCH of them, whose
    deadlines (``deadline`` seconds) start at ``now``.
``feed(data) -> list[Request]`` / ``feed_eof() -> list[Request]``
    Reply bytes in any chunks (partial lines kept, over-long lines discarded, ``\\r`` and
    odd bytes go to the full parser) -> the requests completed by them, each with
    ``result`` or ``error`` set (ProtocolError for a malformed reply, or
    ResponseTimeoutError for overdue probes the reply confirmed lost).
``due(now) -> list[Request]`` / ``next_wakeup() -> float | None``
    Requests failed at ``now`` with ResponseTimeoutError, and when to call ``due``
    next.  A check-support fails at its deadline; a probe past its deadline fails only
    once the helper answered a question the engine sends then (the helper answers in
    order: the probe's reply was not just waiting in a busy driver's pipe), or stayed
    silent (no bytes fed) for ``probe_grace`` more.
``give_up(request)``
    The caller stopped waiting (cancelled): the token stays reserved until the late
    reply (then discarded) or the session's end; a probe's slot until its deadline.
``fail(error) -> list[Request]``
    The helper is gone: every waiting request gets ``error()``, and later work too.
Counters and views: ``in_flight``, ``pending``, ``messages`` (unattributed helper
lines: token-0 errors, unknown tokens, garbage), ``messages_since(mark)``,
``discarded_replies``, ``chunks_read``, ``free_slots``, ``max_in_flight``; ``queued``
and ``failed`` are plain attributes (read on every probe).

A blocking driver, in outline (the transport: :mod:`brokerpkg.transport`): submit;
then until the request has its ``result`` or ``error``: write ``take_output(now)``
when the transport's write descriptor takes it, wait for the read descriptor at most
until ``next_wakeup()``, and pass what :meth:`~Engine.feed` (``transport.read``) or
:meth:`~Engine.due` returns to the callers; at end-of-file ``feed_eof()``, then
``fail(lambda: transport.exit_error(...))``.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from . import protocol as wire
from .errors import ProcessError, ProtocolError, ResponseTimeoutError
from .protocol import Garbage, Mpls, ProbeOptions, ProbeResult, Reply

WRITE_BATCH = 1024
"""Requests handed out by one :meth:`Engine.take_output`; their deadlines start then."""

MESSAGES_KEPT = 50
READ_LIMIT = 65536
"""Longest line read from the helper; longer ones are recorded and discarded."""

MIDDLES_KEPT = 4096
"""Middles of reply lines (reply word, address family, responder) judged once (the cache
is emptied past this)."""

_ADDRESS_NAMES = frozenset((b"ip-4", b"ip-6"))
_ADDRESS_BYTES = b"0123456789abcdefABCDEF.:"
"""Bytes of a numeric address on the fast path (anything else takes the full parser)."""
_FAST_SUCCESS = {b"reply": True, b"ttl-expired": False}
"""Reply words of the fast path -> a result's success field (_FAST_RESULTS: its result)."""
_FAST_RESULTS = {True: wire.REPLY, False: wire.TTL_EXPIRED}
_CONFIRM_TAIL = wire.encode_request_tail(wire.CHECK_SUPPORT, [("feature", "version")])

_FastMiddle = tuple[bool, str, str] | tuple[()]
"""A fast-path reply's success, result and responder, or () for any other line."""
_new_tuple = tuple.__new__
"""Builds a ProbeResult from all its fields at once, without NamedTuple's argument handling."""

ResultTail = tuple[str | None, int | None, str | None, int | None, None, None, None, None, None]


class ProbeTemplate(NamedTuple):
    """What every probe with the same host and options shares, worked out once: the
    encoded request without its token, the deadline length (seconds), the numeric
    target, the options, and the request's fields of every result (target, ttl,
    protocol, port, and no reply details).  A request sent as given has no options,
    and None for every request field but the target."""

    tail: bytes
    deadline: float
    target: str | None
    options: ProbeOptions | None
    result_tail: ResultTail


class Request:
    """A request under its token (decimal digits, as bytes, so reply lines are matched
    without converting numbers).

    ``deadline_at`` is set when the request is written (:meth:`Engine.take_output`).
    Once completed, ``result`` (ProbeResult or Reply) or ``error`` is set.  ``handle``
    is the driver's (e.g. the future its caller awaits); the engine never reads it.
    """

    __slots__ = (
        "deadline",
        "deadline_at",
        "error",
        "given_up",
        "handle",
        "holds_slot",
        "message_mark",
        "overdue",
        "result",
        "tail",
        "template",
        "token",
    )

    def __init__(
        self,
        token: bytes,
        tail: bytes,
        deadline: float,
        template: ProbeTemplate | None,
        holds_slot: bool,
        message_mark: int,
    ) -> None:
        self.token = token
        self.tail = tail
        self.deadline = deadline
        self.template = template
        self.holds_slot = holds_slot
        self.message_mark = message_mark
        self.deadline_at: float | None = None
        self.result: Any = None
        self.error: ProcessError | None = None
        self.given_up = False
        self.overdue = False
        self.handle: Any = None

    def __repr__(self) -> str:
        return f"<Request {(self.token + self.tail).decode('ascii').strip()!r}>"


class _TokensInUse:
    """Tokens that must not be reused yet (waiting, or given up but unanswered), without
    copying them: allocating a token stays cheap with 100,000 probes in flight."""

    def __init__(self, *tables: Mapping[bytes, object]) -> None:
        self._tables = tables

    def __contains__(self, token: object) -> bool:
        key = b"%d" % token if isinstance(token, int) else token
        return any(key in table for table in self._tables)


class Engine:
    """Tokens, pending and given-up requests, flow control, deadlines and the reply
    reader of one helper session (see the module documentation for the API).

    Raises ValueError for a negative ``probe_grace``.
    """

    def __init__(
        self,
        probe_grace: float,
        wake: Callable[[Any], bool] | None = None,
        cancelled: Callable[[Any], bool] | None = None,
    ) -> None:
        if not probe_grace >= 0:
            raise ValueError(f"probe_grace must be >= 0 seconds, got {probe_grace!r}")
        self.probe_grace = float(probe_grace)
        self._wake = wake if wake is not None else _no_waiter
        self._cancelled = cancelled
        self.pending: dict[bytes, Request] = {}
        # given up and unanswered: token -> the request while it still holds its slot
        self._abandoned: dict[bytes, Request | None] = {}
        self._next_token = 1
        self._outbox: list[Request] = []
        # deadline length -> (deadline, tokens) in the order they were written
        self._deadlines: dict[float, collections.deque[tuple[float, list[bytes]]]] = {}
        self._overdue: list[Request] = []
        self._overdue_later: list[Request] = []
        self._confirm: Request | None = None
        self._confirm_chunks = 0
        self._free_slots = 0
        self._waiters: collections.deque[Any] = collections.deque()
        self.max_in_flight = 0
        self._messages: collections.deque[tuple[int, str]] = collections.deque(maxlen=MESSAGES_KEPT)
        self._message_count = 0
        self.discarded_replies = 0
        self.chunks_read = 0
        self.failed: Callable[[], ProcessError] | None = None
        """The error factory given to :meth:`fail`, or None while the helper is there."""
        self.queued = 0
        """Requests submitted and not yet handed out by :meth:`take_output`."""
        self._partial = b""
        self._discarding = False
        self._middles: dict[bytes, _FastMiddle] = {}

    # ------------------------------------------------------------------ views

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered, given-up ones included."""
        return len(self.pending) + len(self._abandoned)

    @property
    def free_slots(self) -> int:
        """Flow-control slots free right now."""
        return self._free_slots

    @property
    def messages(self) -> tuple[str, ...]:
        """Recent helper lines that matched no request (the last MESSAGES_KEPT)."""
        return tuple(text for _, text in self._messages)

    def messages_since(self, mark: int) -> list[str]:
        """Unattributed lines recorded after message number ``mark``."""
        return [text for number, text in self._messages if number > mark]

    # ------------------------------------------------------------------ slots

    def set_limit(self, limit: int) -> None:
        """Set the in-flight limit; raises ValueError below 1 or when set already."""
        if limit < 1:
            raise ValueError(f"in-flight limit must be >= 1, got {limit!r}")
        if self.max_in_flight:
            raise ValueError("the in-flight limit is set once")
        self.max_in_flight = limit
        self._free_slots = limit

    def try_take_slot(self) -> bool:
        """Take a free slot if there is one and nobody waits for one (first come, first
        served)."""
        if self._free_slots and not self._waiters:
            self._free_slots -= 1
            return True
        return False

    def wait_for_slot(self, waiter: object) -> None:
        """Queue ``waiter``: the next slot freed goes to it through ``wake``."""
        self._waiters.append(waiter)

    def forget_waiter(self, waiter: object) -> None:
        """Take ``waiter`` out of the queue (gone before a slot came); never raises."""
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def release_slot(self) -> None:
        """Give a slot back: to the first live waiter, else to the free ones."""
        waiters = self._waiters
        while waiters:
            if self._wake(waiters.popleft()):
                return
        self._free_slots += 1

    def _free(self, request: Request) -> None:
        """Free the request's slot if it still holds one (each slot is freed once)."""
        if request.holds_slot:
            request.holds_slot = False
            if self._waiters:
                self.release_slot()
            else:
                self._free_slots += 1

    def _free_many(self, count: int) -> None:
        """Give back ``count`` slots whose requests no longer hold them."""
        if self._waiters:
            for _ in range(count):
                self.release_slot()
        else:
            self._free_slots += count

    # ------------------------------------------------------------------ requests

    def submit(
        self, tail: bytes, deadline: float, template: ProbeTemplate | None, holds_slot: bool
    ) -> Request:
        """Give a request (``tail``: :func:`~brokerpkg.protocol.encode_request_tail`) a
        token and queue it for :meth:`take_output`.

        Raises ProtocolError if every token is in use (the caller keeps its slot).
        """
        number = self._next_token
        token = b"%d" % number
        if token in self.pending or token in self._abandoned or number > wire.MAX_TOKEN:
            in_use = _TokensInUse(self.pending, self._abandoned)
            number, self._next_token = wire.next_free_token(number, in_use)
            token = b"%d" % number
        else:
            self._next_token = number + 1
        request = Request(token, tail, deadline, template, holds_slot, self._message_count)
        self.pending[token] = request
        outbox = self._outbox
        outbox.append(request)
        self.queued = len(outbox)
        return request

    def take_output(self, now: float) -> bytes:
        """The request lines of up to WRITE_BATCH queued requests (given-up and
        cancelled ones are dropped), whose deadlines start at ``now``; b"" when nothing
        is queued."""
        batch = self._outbox
        if len(batch) > WRITE_BATCH:
            batch, self._outbox = batch[:WRITE_BATCH], batch[WRITE_BATCH:]
        else:
            self._outbox = []
        self.queued = len(self._outbox)
        lines = []
        # requests in a row with the same deadline length share one deadline record
        runs: list[tuple[float, float, list[bytes]]] = []
        length = deadline_at = -1.0
        tokens: list[bytes] = []
        cancelled = self._cancelled
        for request in batch:
            if request.given_up:
                continue
            if cancelled is not None and request.handle is not None and cancelled(request.handle):
                self.give_up(request)  # not written: dropped
                continue
            lines.append(request.token)
            lines.append(request.tail)
            if request.deadline != length:
                length = request.deadline
                deadline_at = now + length
                tokens = []
                runs.append((length, deadline_at, tokens))
            request.deadline_at = deadline_at
            tokens.append(request.token)
        for length, deadline_at, tokens in runs:
            # one first-in-first-out queue per deadline length: appends stay in order
            queue = self._deadlines.get(length)
            if queue is None:
                queue = self._deadlines[length] = collections.deque()
            queue.append((deadline_at, tokens))
        return b"".join(lines)

    def give_up(self, request: Request) -> None:
        """The caller stopped waiting for ``request`` (cancelled) before its result.

        Not yet written: dropped.  Written: its token stays reserved until its reply
        comes (and is discarded) and a probe keeps its slot until its deadline (the
        helper still works on it; past it, the slot is freed at once).  Answered, timed
        out or failed already: nothing to do.
        """
        token = request.token
        if self.pending.get(token) is not request:
            return
        del self.pending[token]
        request.given_up = True
        if self.failed is not None or request.deadline_at is None:
            self._free(request)
        elif request.overdue:  # its deadline passed: the slot is free now
            self._abandoned[token] = None
            self._free(request)
        else:
            self._abandoned[token] = request if request.holds_slot else None

    def fail(self, error: Callable[[], ProcessError]) -> list[Request]:
        """The helper is gone: every waiting request fails with ``error()`` (returned),
        slots and tokens are freed, and :attr:`failed` is set (first error kept)."""
        if self.failed is None:
            self.failed = error
        confirm = self._confirm
        failed = [request for request in self.pending.values() if request is not confirm]
        self.pending = {}
        for request in failed:
            request.error = error()
            self._free(request)
        for held in self._abandoned.values():
            if held is not None:
                self._free(held)
        self._abandoned.clear()
        self._outbox = []
        self.queued = 0
        self._deadlines.clear()
        self._overdue, self._overdue_later, self._confirm = [], [], None
        return failed

    # ------------------------------------------------------------------ deadlines

    def next_wakeup(self) -> float | None:
        """When :meth:`due` has work next (the earliest deadline), or None."""
        heads = [queue[0][0] for queue in self._deadlines.values() if queue]
        return min(heads) if heads else None

    def due(self, now: float) -> list[Request]:
        """Handle every deadline up to ``now``; return the requests failed with
        ResponseTimeoutError (queue output afterwards: a confirming question may wait)."""
        expired: list[Request] = []
        for length, queue in list(self._deadlines.items()):
            while queue and queue[0][0] <= now:
                deadline_at, tokens = queue.popleft()
                for token in tokens:
                    self._deadline_passed(token, deadline_at, expired)
            if not queue:
                del self._deadlines[length]
        if self._confirm is None and self._overdue:
            self._send_confirm()
        return expired

    def _deadline_passed(self, token: bytes, deadline_at: float, expired: list[Request]) -> None:
        """One request's deadline passed: expire it, or hold a probe until confirmed."""
        request = self.pending.get(token)
        if request is None or request.deadline_at != deadline_at:
            held = self._abandoned.get(token)
            if held is not None and held.deadline_at == deadline_at:
                self._abandoned[token] = None  # a given-up probe: its slot is free now
                self._free(held)
            return
        if request is self._confirm:
            self._confirm_timed_out(expired)
        elif request.template is None:
            self._expire(request, expired)
        else:
            request.overdue = True
            (self._overdue if self._confirm is None else self._overdue_later).append(request)

    def _send_confirm(self) -> None:
        """Ask the helper a question after the overdue probes' deadlines."""
        self._confirm = self.submit(_CONFIRM_TAIL, self.probe_grace, None, False)
        self._confirm_chunks = self.chunks_read

    def _confirm_timed_out(self, expired: list[Request]) -> None:
        """No answer to the confirming question within the grace: if the helper was
        silent all along it is stuck (the overdue probes fail), else it is only busy
        (ask again, for every overdue probe)."""
        assert self._confirm is not None
        confirm, self._confirm = self._confirm, None
        self.give_up(confirm)  # its token stays reserved
        if self.chunks_read == self._confirm_chunks:
            overdue, self._overdue = self._overdue, self._overdue_later
            self._overdue_later = []
            for request in overdue:
                self._expire(request, expired)
        else:
            self._overdue += self._overdue_later
            self._overdue_later = []
        if self._overdue:
            self._send_confirm()

    def _confirmed(self, expired: list[Request]) -> None:
        """The confirming question was answered: overdue probes not answered first fail."""
        self._confirm = None
        overdue, self._overdue = self._overdue, self._overdue_later
        self._overdue_later = []
        for request in overdue:
            self._expire(request, expired)
        if self._overdue:
            self._send_confirm()

    def _expire(self, request: Request, expired: list[Request]) -> None:
        """Fail ``request`` with ResponseTimeoutError unless it was answered; its token
        stays reserved (the helper may still answer), its slot is freed."""
        token = request.token
        if self.pending.get(token) is not request:
            return  # answered, given up or failed since
        del self.pending[token]
        self._abandoned[token] = None
        self._free(request)
        what = f"request {(token + request.tail).decode('ascii').strip()!r}"
        messages = self.messages_since(request.message_mark)
        request.error = ResponseTimeoutError(what, request.deadline, messages)
        expired.append(request)

    # ------------------------------------------------------------------ reading

    def feed(self, data: bytes) -> list[Request]:
        """Read reply bytes; return the requests they completed, in order.

        The common probe reply (``TOKEN reply|ttl-expired ip-N ADDRESS round-trip-time
        N`` for a probe in flight) becomes its result right here; any other line goes
        through the full parser.  A line longer than READ_LIMIT is recorded and
        discarded.  Never raises.
        """
        done: list[Request] = []
        if not data:
            return done
        self.chunks_read += 1
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if self._discarding and lines:  # the end of an over-long line
            self._discarding = False
            del lines[0]
        pending = self.pending
        middles = self._middles
        freed = 0  # slots of fast-path probes, handed back after the loop
        for raw in lines:
            token, _, rest = raw.partition(b" ")
            middle, _, rtt = rest.rpartition(b" ")
            fast = middles.get(middle)
            if fast is None:
                fast = self._fast_middle(middle)
            if (
                fast  # () unless the line's middle words are those of the fast path
                and (request := pending.get(token)) is not None
                and (template := request.template) is not None
                and rtt.isdigit()
            ):
                del pending[token]
                mpls: list[Mpls] = []
                head = (fast[0], fast[1], float(rtt) / 1000.0, fast[2], mpls)
                request.result = _new_tuple(ProbeResult, head + template.result_tail)
                if request.holds_slot:
                    request.holds_slot = False
                    freed += 1
                done.append(request)
            else:
                self._dispatch(wire.parse_reply_line(raw), done)
        if freed:
            self._free_many(freed)
        if len(self._partial) > READ_LIMIT:
            self._record_message("(over-long line from the helper, discarded)")
            self._partial, self._discarding = b"", True
        return done

    def feed_eof(self) -> list[Request]:
        """The helper's output ended: a last line without its newline is read; returns
        the requests it completed."""
        done: list[Request] = []
        partial, self._partial = self._partial, b""
        if partial and not self._discarding:
            self._dispatch(wire.parse_reply_line(partial), done)
        self._discarding = False
        return done

    def _fast_middle(self, middle: bytes) -> _FastMiddle:
        """The success, result and responder of a reply line whose words between the
        token and the last one are ``middle`` (remembered), or () unless they are
        ``reply|ttl-expired ip-N ADDRESS round-trip-time`` with a numeric address
        (then the full parser judges the line)."""
        words = middle.split(b" ")
        fast: _FastMiddle = ()
        if (
            len(words) == 4
            and words[3] == b"round-trip-time"
            and (success := _FAST_SUCCESS.get(words[0])) is not None
            and words[1] in _ADDRESS_NAMES
            and words[2]
            and not words[2].translate(None, _ADDRESS_BYTES)
        ):
            fast = (success, _FAST_RESULTS[success], words[2].decode("ascii"))
        if len(self._middles) >= MIDDLES_KEPT:
            self._middles.clear()
        self._middles[middle] = fast
        return fast

    def _dispatch(self, line: Reply | Garbage, done: list[Request]) -> None:
        """Complete the request with the line's token, or record the line as
        unattributed (garbage, token 0, a token not in flight)."""
        if isinstance(line, Garbage) or line.token == 0:
            self._record_message(wire.describe_unattributed(line))
            return
        token = b"%d" % line.token
        request = self.pending.pop(token, None)
        if request is None:
            if token in self._abandoned:
                held = self._abandoned.pop(token)
                if held is not None:
                    self._free(held)
                self.discarded_replies += 1
            else:
                self._record_message(f"{line.text} (token not in flight)")
            return
        if request is self._confirm:
            self._confirmed(done)
            return
        template = request.template
        if template is None:
            request.result = line
        else:
            try:
                request.result = wire.make_probe_result(line, template.options, template.target)
            except ProtocolError as error:
                request.error = error
            self._free(request)
        done.append(request)

    def _record_message(self, text: str) -> None:
        """Remember an unattributed helper line (the last MESSAGES_KEPT of them)."""
        self._message_count += 1
        self._messages.append((self._message_count, text))

    @property
    def message_count(self) -> int:
        """How many unattributed lines were recorded so far (a mark for messages_since)."""
        return self._message_count


def _no_waiter(waiter: object) -> bool:
    """The default ``wake``: a driver that never queues waiters."""
    raise AssertionError(f"no wake function given for slot waiter {waiter!r}")
