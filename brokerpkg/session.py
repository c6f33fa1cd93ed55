"""asyncio sessions with a helper: :class:`Session`, the asyncio driver of the engine.

The protocol's state lives in :class:`~brokerpkg.engine.Engine` (tokens, flow control,
deadlines, the reply reader); this module moves its bytes through a channel
(:mod:`brokerpkg.channel`: the transport's descriptors on the event loop, or asyncio
streams), keeps its clock (the loop's) and turns its completed requests into futures.
Nothing can leave a caller waiting forever:

- the helper exiting fails every outstanding request at once with HelperExitedError
  (exit status and last stderr line);
- each request has a Python-side deadline (probe timeout + ``probe_grace``) raising
  ResponseTimeoutError, whose message lists the helper's unattributed errors (token-0
  replies, garbage lines), which are recorded and never stop the reader; a probe past
  its deadline fails only once the helper has answered a request sent after it (the
  helper answers in order, so its reply was not just waiting to be read by a busy
  event loop), or the helper stayed silent for ``probe_grace``;
- a cancelled probe's token stays reserved until its late reply arrives (then it is
  discarded), so a token is never reused while the helper may still answer it;
- :meth:`Session.close` kills and reaps the helper, closes its pipes and cancels tasks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, Self

from . import protocol as wire
from .channel import PipeChannel, StreamChannel
from .engine import Engine, ProbeTemplate, Request
from .errors import (
    HELPER_NAME,
    HelperExitedError,
    ProcessError,
    ResponseTimeoutError,
    StateError,
    describe_exit_status,
    looks_like_privilege_failure,
)
from .locate import HelperLocation, locate_helper, privilege_error
from .planning import SessionTemplates
from .protocol import ProbeResult, Reply
from .remote import NAMES_REMOTE, VantagePoint
from .resolve import NameResolver, Resolver
from .templates import (
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PROBE_GRACE,
    REFUSALS,
    feature_question,
    in_flight_limit,
    probe_outcome,
    require_send_probe,
)
from .transport import ChildProcess, ProcessTransport, Transport, launch_from_command

EAGER_WRITE = 64
"""Queued requests written at once, without waiting for the next turn of the loop, while
the pipe takes everything: the helper starts on them while later ones are still made."""

_NEW, _OPEN, _CLOSED = "new", "open", "closed"

_Future = asyncio.Future
"""Futures made directly: loop.create_future() costs a Python call more per probe."""


class Session:
    """A session with one helper, over a child process or any pair of byte streams.

    ``Session(helper)`` runs the helper found by :func:`~brokerpkg.locate.locate_helper`
    (``helper`` is a path or name, or None to search); ``Session(command=[...])`` runs
    that argv instead (e.g. ``['ssh', 'host', 'brokerpkg-helper']``), and
    ``Session(command='...', shell=True)`` a shell command string (``exec``'d by
    /bin/sh when it is one simple command, so that the child process is the helper:
    :func:`~brokerpkg.transport.exec_in_shell`); :meth:`over_ssh` runs it on another
    host, with names resolved there.  ``env`` is the
    helper's environment (default: inherited).  ``probe_grace`` is added to each probe's
    timeout to get the Python-side deadline (past it, a probe fails once the helper has
    answered a question sent then, or stayed silent a grace more: see the module
    documentation); ``max_in_flight`` bounds concurrent probes
    (default: the helper's ``max-probes``, else 1024); ``open_timeout`` bounds the
    feature queries at open and every check-support.

    Use ``async with Session() as session:`` or :meth:`open` / :meth:`close`.  A session
    is opened once; after :meth:`close` create a new one.

    Raises ValueError/TypeError for contradictory arguments (both helper and command, a
    command string without shell=True, a negative grace).
    """

    _loop: asyncio.AbstractEventLoop
    """The event loop the session was opened in (set by :meth:`open`)."""

    def __init__(
        self,
        helper: str | os.PathLike[str] | None = None,
        *,
        command: str | Sequence[str] | None = None,
        shell: bool = False,
        env: Mapping[str, str] | None = None,
        probe_grace: float = DEFAULT_PROBE_GRACE,
        max_in_flight: int | None = None,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        resolver: Resolver | None = None,
    ) -> None:
        if helper is not None and command is not None:
            raise ValueError("give either helper or command, not both")
        if command is None and shell:
            raise ValueError("shell=True needs a command string")
        self._launch = None if command is None else launch_from_command(command, shell)
        self._helper_argument = helper
        self._env = env
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter, str] | None = None
        self._remote: VantagePoint | None = None
        self._init_state(probe_grace, max_in_flight, open_timeout, resolver)

    @classmethod
    def over_ssh(
        cls,
        destination: str,
        *,
        helper: str = HELPER_NAME,
        ssh: str | Sequence[str] | None = None,
        names: str = NAMES_REMOTE,
        env: Mapping[str, str] | None = None,
        probe_grace: float = DEFAULT_PROBE_GRACE,
        max_in_flight: int | None = None,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
    ) -> Session:
        """A session with the helper on the vantage point ``destination``
        (``[USER@]HOST``): :meth:`open` runs ``SSH [USER@]HOST HELPER``, where ``ssh`` is
        the ssh command (a list of words, or a string split as the shell splits it;
        None: ``$BROKERPKG_SSH``, else ``ssh -T -o BatchMode=yes``) and ``helper`` the
        command the remote shell runs (default ``brokerpkg-helper``, found on PATH
        there).  Every tool takes the session as it takes a local one.

        ``names`` says where host names are resolved: ``remote`` (default) on the
        vantage point, with its own resolver (``getent ahosts`` / ``getent hosts``
        through ssh, one connection for the lookups asked together; numeric addresses
        need none), so that a name means what it means there; ``local`` here.
        :meth:`host_name` is the remote host's name.  ``env`` is ssh's environment; the
        other arguments are :class:`Session`'s.

        Failures name the vantage point: :meth:`open` raises SshError (ssh's own
        failure, its exit status 255: host unreachable, authentication refused),
        RemoteHelperNotFoundError (the remote shell found no helper),
        RemoteHelperPrivilegeError (the remote helper's no-privilege line and the fix to
        run there), and otherwise as :meth:`open` does; a connection lost mid-run fails
        every pending request at once with SshError (``opened`` True, ssh's status).

        Raises TypeError/ValueError for a bad destination (empty, spaces, a leading
        ``-``), ssh command, helper or ``names``, before anything runs.
        """
        remote = VantagePoint(destination, helper=helper, ssh=ssh, names=names, env=env)
        session = cls(
            command=list(remote.argv),
            env=env,
            probe_grace=probe_grace,
            max_in_flight=max_in_flight,
            open_timeout=open_timeout,
            resolver=remote.resolver,
        )
        session._launch = remote.launch
        session._remote = remote
        if remote.name_resolver is not None:
            session._names = remote.name_resolver
        return session

    @classmethod
    def from_streams(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        name: str = "stream",
        probe_grace: float = DEFAULT_PROBE_GRACE,
        max_in_flight: int | None = None,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        resolver: Resolver | None = None,
    ) -> Session:
        """A session speaking to a helper over existing streams (``name`` is for messages).

        :meth:`close` closes ``writer``; the other end owns the helper.
        """
        session = cls(
            probe_grace=probe_grace,
            max_in_flight=max_in_flight,
            open_timeout=open_timeout,
            resolver=resolver,
        )
        session._streams = (reader, writer, name)
        return session

    def _init_state(
        self,
        probe_grace: float,
        max_in_flight: int | None,
        open_timeout: float,
        resolver: Resolver | None,
    ) -> None:
        """Check the tuning arguments and set up an unopened session."""
        if not open_timeout > 0:
            raise ValueError(f"open_timeout must be > 0 seconds, got {open_timeout!r}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        self._engine = Engine(probe_grace, _hand_slot, _Future.cancelled)  # checks the grace
        self._probe_grace = self._engine.probe_grace
        self._open_timeout = float(open_timeout)
        self._max_in_flight_argument = max_in_flight
        self._names = NameResolver()
        self._state = _NEW
        self._channel: PipeChannel | StreamChannel | None = None
        self._location: HelperLocation | None = None
        self._features: dict[str, str] = {}
        self._templates = SessionTemplates(
            resolver if resolver is not None else Resolver(), self._features, self._probe_grace
        )
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._ending: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        """``<Session open: /usr/bin/brokerpkg-helper (brokerpkg-0.1.0), pid 42, 3 of 131072
        in flight>``: state (new, open, failed: the helper is gone, closed), helper,
        version, process (and how it ended) and probes in flight."""
        failed = self._state == _OPEN and self._engine.failed is not None
        state = "failed" if failed else self._state
        text = f"<Session {state}: {self.description}"
        if self.version is not None:
            text += f" ({self.version})"
        process = self.process
        if process is not None and state != _CLOSED:
            text += f", pid {process.pid}"
            if process.returncode is not None:
                text += f" {describe_exit_status(process.returncode)}"
        if self._state == _OPEN:
            text += f", {self.in_flight} of {self.max_in_flight} in flight"
        return text + ">"

    # ------------------------------------------------------------------ properties

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""
        return self._state == _OPEN

    @property
    def description(self) -> str:
        """What the helper is (path, command, or stream name), for messages."""
        if self._channel is not None:
            return self._channel.description
        if self._launch is not None:
            return self._launch.description
        return str(self._helper_argument or HELPER_NAME)

    @property
    def vantage_point(self) -> str | None:
        """The ``[USER@]HOST`` of a session made by :meth:`over_ssh`, else None."""
        return None if self._remote is None else self._remote.destination

    async def host_name(self) -> str:
        """The name of the host the helper runs on: this one's (gethostname), or the
        vantage point's (``uname -n`` there, asked once; the destination as given when
        names are resolved here).

        Raises ProcessError (SshError) when the remote command fails.
        """
        if self._remote is None:
            return socket.gethostname()
        return await self._remote.host_name()

    @property
    def location(self) -> HelperLocation | None:
        """Where the helper was found (None when run from a command or streams)."""
        return self._location

    @property
    def process(self) -> ChildProcess | None:
        """The helper's process while open (None over streams): ``pid``, ``returncode``,
        ``kill()``, ``await wait()``."""
        return None if self._channel is None else self._channel.process

    @property
    def features(self) -> Mapping[str, str]:
        """The helper's answers to check-support, read at open (read-only view)."""
        return MappingProxyType(self._features)

    @property
    def version(self) -> str | None:
        """The helper's version (``brokerpkg-0.1.0``, ``0.95`` for mtr-packet), after open."""
        return self._features.get("version")

    @property
    def max_in_flight(self) -> int:
        """How many probes may be in flight at once (0 before open)."""
        return self._engine.max_in_flight

    @property
    def helper_messages(self) -> tuple[str, ...]:
        """Recent helper lines that matched no request (token-0 errors, garbage)."""
        return self._engine.messages

    @property
    def stderr_lines(self) -> tuple[str, ...]:
        """The last lines the helper wrote on standard error."""
        return () if self._channel is None else self._channel.stderr_lines()

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered, given-up ones included."""
        return self._engine.in_flight

    @property
    def discarded_replies(self) -> int:
        """Late replies to probes whose caller had given up (cancelled or timed out)."""
        return self._engine.discarded_replies

    # ------------------------------------------------------------------ open / close

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> Self:
        """Start the helper, ask for its features, and get ready to probe.

        Raises StateError if already opened (or closed), HelperNotFoundError when the
        helper cannot be found, HelperPrivilegeError when it exits at start for lack of
        privilege, HelperExitedError when it exits otherwise, ResponseTimeoutError when
        it does not answer within ``open_timeout``, and ProcessError when it cannot send
        probes (``send-probe`` not ``ok``).  On failure everything is cleaned up.
        """
        if self._state != _NEW:
            raise StateError(
                "session already opened"
                if self._state == _OPEN
                else "session closed; create a new Session"
            )
        self._state = _OPEN
        self._loop = asyncio.get_running_loop()
        try:
            self._channel = self._start_channel()
            self._channel.start(self._on_data, self._on_eof, self._pump)
            await self._query_features()
        except BaseException:
            await self.close()
            raise
        self._start_flow_control()
        return self

    def _start_channel(self) -> PipeChannel | StreamChannel:
        """Open the pipes: given streams, a command, or the located helper.

        Raises HelperNotFoundError and ProcessError when the helper cannot be started.
        """
        if self._streams is not None:
            return StreamChannel(*self._streams)
        return PipeChannel(self._start_transport())

    def _start_transport(self) -> Transport:
        """Start the helper: a command (through ssh for a vantage point), or the located one."""
        if self._remote is not None:
            return self._remote.connect(self._env)
        if self._launch is not None:
            return ProcessTransport.run(self._launch, self._env)
        self._location = locate_helper(self._helper_argument)
        return ProcessTransport.start(
            [self._location.path], env=self._env, description=self._location.path
        )

    async def _query_features(self) -> None:
        """Ask every feature of wire.FEATURES at once; require send-probe.

        Raises HelperPrivilegeError, HelperExitedError, ResponseTimeoutError, ProcessError.
        """
        try:
            async with asyncio.timeout(self._open_timeout):
                values = await asyncio.gather(*(self._ask_feature(name) for name in wire.FEATURES))
        except HelperExitedError as error:
            if looks_like_privilege_failure(error.returncode, error.stderr_line):
                argv = None if self._launch is None else self._launch.argv
                raise privilege_error(error, self._location, argv) from error
            raise
        except TimeoutError:
            what = "the feature queries at open"
            if self._remote is not None:  # ssh may still be connecting
                what += f" through ssh to {self._remote.destination}"
            raise ResponseTimeoutError(what, self._open_timeout, self.helper_messages) from None
        self._features.update(zip(wire.FEATURES, values, strict=True))
        require_send_probe(self._features, self.description)

    def _start_flow_control(self) -> None:
        """Set the in-flight limit: the argument, else max-probes, else 1024."""
        self._engine.set_limit(in_flight_limit(self._max_in_flight_argument, self._features))

    async def close(self) -> None:
        """Stop the helper and release everything; calling it again does nothing.

        Outstanding requests fail with ProcessError.  The helper is killed and reaped,
        its pipes closed, the session's tasks finished.  Never raises.
        """
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._complete(
            self._engine.fail(
                lambda: ProcessError(f"session with helper {self.description} was closed")
            )
        )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._remote is not None:
            await self._remote.close()
        if self._channel is not None:
            await self._channel.close()
        if self._ending is not None:
            self._ending.cancel()
            await asyncio.wait({self._ending})

    # ------------------------------------------------------------------ reading

    def _on_data(self, data: bytes) -> None:
        """Reply bytes came: hand every completed request its result."""
        self._complete(self._engine.feed(data))

    def _complete(self, requests: Iterable[Request]) -> None:
        """Hand each of ``requests`` (completed by the engine) its result or error."""
        for request in requests:
            future = request.handle
            if future is not None and not future.done():
                if request.error is None:
                    future.set_result(request.result)
                else:
                    future.set_exception(request.error)

    def _on_eof(self) -> None:
        """The helper's output ended: read a last line, then fail what is left with the
        reason, once the helper's exit is known (the ending task)."""
        self._complete(self._engine.feed_eof())
        if self._state == _OPEN:
            self._ending = self._loop.create_task(self._end())

    async def _end(self) -> None:
        """Ending task: fail every outstanding request with the helper's exit error."""
        channel = self._channel
        assert channel is not None
        await channel.wait_ended()
        opened = bool(self._features)
        self._complete(self._engine.fail(lambda: channel.exit_error(opened)))

    # ------------------------------------------------------------------ writing

    def _ensure_usable(self) -> None:
        """Raise StateError unless open, or the stored error if the helper is gone."""
        if self._state != _OPEN:
            raise StateError("session is not open" if self._state == _NEW else "session is closed")
        failure = self._engine.failed
        if failure is not None:
            raise failure()

    def _submit(
        self,
        tail: bytes,
        deadline: float,
        template: ProbeTemplate | None,
        holds_slot: bool,
        awaited: bool = True,
    ) -> Request:
        """Submit a request to the engine, with a future (its handle) if ``awaited``:
        written at once when enough are queued and the pipe takes them, else at the
        loop's next turn.

        Raises ProtocolError if every token is in use (the request's slot given back).
        """
        engine = self._engine
        try:
            request = engine.submit(tail, deadline, template, holds_slot)
        except BaseException:
            if holds_slot:
                engine.release_slot()
            raise
        if awaited:
            request.handle = _Future(loop=self._loop)
        if engine.queued >= EAGER_WRITE:
            assert self._channel is not None
            if self._channel.idle:
                self._pump()
        if not self._pump_scheduled and engine.queued:
            self._pump_scheduled = True
            self._loop.call_soon(self._scheduled_pump)
        return request

    async def _exchange(self, tail: bytes, deadline: float) -> Reply:
        """Send one request and wait at most ``deadline`` seconds for its Reply.

        Raises StateError, HelperExitedError / ProcessError (helper gone),
        ResponseTimeoutError (deadline passed; the token stays reserved).
        """
        self._ensure_usable()
        request = self._submit(tail, deadline, None, False)
        try:
            reply: Reply = await request.handle
        except BaseException:
            self._engine.give_up(request)
            raise
        return reply

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _pump(self) -> None:
        """Hand queued requests to the channel while it takes them without holding any
        back (it calls this again once it drained), and arm the deadline timer."""
        engine = self._engine
        channel = self._channel
        if channel is None or self._state != _OPEN:
            return
        while engine.queued and channel.idle:
            data = engine.take_output(self._loop.time())
            if data:
                channel.send(data)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Make sure the deadline timer goes off by the engine's next wakeup."""
        wakeup = self._engine.next_wakeup()
        if wakeup is None or (self._timer is not None and self._timer_at <= wakeup):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = wakeup
        self._timer = self._loop.call_at(wakeup, self._on_timer)

    def _on_timer(self) -> None:
        """Deadlines passed: fail what the engine says failed, send what it queued."""
        self._timer = None
        self._complete(self._engine.due(self._loop.time()))
        self._pump()

    def _give_up(self, request: Request) -> None:
        """A probe of :meth:`probe_many` whose result will not be read: its error (if
        any) counts as retrieved, and the engine keeps its token as needed."""
        future = request.handle
        if future is not None and not future.done():
            future.cancel()
        elif future is not None and not future.cancelled():
            future.exception()
        self._engine.give_up(request)

    async def _wait_for_slot(self) -> None:
        """Wait until a flow-control slot is handed over; on cancellation, pass it on.

        Raises StateError / the helper's error when the session became unusable meanwhile
        (the slot is given back first).
        """
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._engine.wait_for_slot(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._engine.release_slot()  # a slot was handed over just now: pass it on
            else:
                self._engine.forget_waiter(waiter)
            raise
        try:
            self._ensure_usable()
        except BaseException:
            self._engine.release_slot()
            raise

    # ------------------------------------------------------------------ features

    async def _ask_feature(self, name: str) -> str:
        """Ask the helper one check-support question; tolerant of odd answers."""
        reply = await self._exchange(feature_question(name), self._open_timeout)
        return wire.feature_value(reply)

    async def feature_value(self, name: str) -> str:
        """The helper's check-support answer for ``name`` (``ok``, ``no``, a version,
        a number...).  Features read at open are answered from memory.

        Raises StateError when not open, ValueError for a name the wire cannot carry,
        ProcessError subclasses when the helper is gone or silent.
        """
        self._ensure_usable()
        if name not in self._features:
            wire.encode_check_support(1, name)  # validates the name before sending
            self._features[name] = await self._ask_feature(name)
        return self._features[name]

    async def check_support(self, feature: str) -> bool:
        """True if the helper answers ``ok`` for ``feature``; raises like feature_value."""
        return await self.feature_value(feature) == "ok"

    # ------------------------------------------------------------------ probing

    async def probe(
        self,
        host: str,
        *,
        ip_version: int | None = None,
        ttl: int | None = None,
        protocol: str | None = None,
        port: int | None = None,
        local_ip: str | None = None,
        local_port: int | None = None,
        local_device: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the probe's own timeout, sent to the helper
        size: int | None = None,
        bit_pattern: int | None = None,
        tos: int | None = None,
        mark: int | None = None,
        details: bool = False,
        flow: int | None = None,
    ) -> ProbeResult:
        """Send one probe to ``host`` (name or numeric address) and return its result.

        Options (None: the helper's default): ip_version 4/6; ttl 1-255; protocol icmp,
        udp, tcp, sctp; port 1-65535 and local_port 1024-65535 (not for icmp); local_ip
        source address (name or number, same family); local_device interface name;
        timeout seconds 0-3600 (fractions are sent only if the helper supports them,
        else rounded up); size 0-9000; bit_pattern 0-255; tos 0-255; mark 0-4294967295;
        details True to get reply_ttl, icmp_type, icmp_code, reply_size; flow 0-65535
        puts the probe in that numbered flow (the helper's ``flow`` extension: probes
        to the same target with the same protocol, port, tos and flow share every
        field that per-flow load balancers hash, whatever their TTL; different flows
        differ there), for Paris traces and multipath traces.

        Raises TypeError/ValueError for a bad option (before anything is sent),
        FeatureNotSupportedError when the helper lacks what an option needs (before
        anything is sent), HostResolveError, InvalidProbeError when the helper refuses
        the probe, StateError when not open, HelperExitedError when the helper exits,
        ResponseTimeoutError when it does not answer by timeout + probe_grace (see the
        class documentation), and
        ProcessError (ProtocolError) for replies that do not follow the protocol.
        """
        key = (
            host,
            details,
            ip_version,
            ttl,
            protocol,
            port,
            local_ip,
            local_port,
            local_device,
            timeout,
            size,
            bit_pattern,
            tos,
            mark,
            flow,
        )
        template = self._templates.by_call.get(key)
        if template is None:
            template = await self._templates.of_call(key, self._ensure_usable)
        # probe_arguments' send-and-await, written out here: a shared coroutine would be
        # one more per probe on the hot path (~1 us, bench_session)
        request = self._send_probe(template) or await self._send_probe_later(template)
        try:
            result: ProbeResult = await request.handle
        except BaseException:
            self._engine.give_up(request)
            raise
        return result if result.result not in REFUSALS else probe_outcome(result, self.description)

    async def probe_many(
        self, hosts: Iterable[str], *, concurrency: int | None = None, **options: Any
    ) -> list[ProbeResult]:
        """Probe each of ``hosts`` (repeats allowed) with the same ``options`` (those of
        :meth:`probe`), at most ``concurrency`` at once (default and ceiling: the
        session's in-flight limit, shared with other probes), and return the results in
        the order of ``hosts``.

        Cheaper per probe than as many :meth:`probe` calls: no task or coroutine per
        probe, and each answer frees its slot for the next host at once.

        Raises ValueError for a concurrency below 1, and like :meth:`probe` (options are
        checked and every host resolved before anything is sent); on the first failure
        the probes still in flight are given up as if cancelled and the error is raised.
        """
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        checked = wire.make_probe_options(**options)
        self._ensure_usable()
        plan = await self._templates.plan(hosts, checked)
        limit = min(concurrency or self.max_in_flight, self.max_in_flight)
        engine = self._engine
        results: list[ProbeResult] = []
        flight: collections.deque[Request] = collections.deque()
        try:
            for template in plan:
                if self._state != _OPEN or engine.failed is not None:
                    self._ensure_usable()
                # a slot: a free one, else the next one freed once our oldest is answered
                while len(flight) >= limit or not engine.try_take_slot():
                    if not flight:
                        await self._wait_for_slot()
                        break
                    if flight[0].result is None and flight[0].error is None:
                        await self._completion(flight[0])
                    results.append(self._batch_result(flight.popleft()))
                flight.append(self._submit(template.tail, template.deadline, template, True, False))
            while flight:
                if flight[0].result is None and flight[0].error is None:
                    await self._completion(flight[0])
                results.append(self._batch_result(flight.popleft()))
        except BaseException:
            for request in flight:
                self._give_up(request)
            raise
        return results

    def _batch_result(self, request: Request) -> ProbeResult:
        """The result of a completed probe of :meth:`probe_many` (out of its flight);
        raises its error, InvalidProbeError and ProcessError like :meth:`probe`."""
        if request.error is not None:
            raise request.error
        result: ProbeResult = request.result
        return result if result.result not in REFUSALS else probe_outcome(result, self.description)

    async def _completion(self, request: Request) -> None:
        """Wait until the engine completed ``request`` of :meth:`probe_many`, with a
        future made only now; raises CancelledError (its own error is left for
        :meth:`_batch_result`)."""
        future = request.handle = _Future(loop=self._loop)
        with contextlib.suppress(Exception):
            await future

    async def probe_arguments(self, arguments: Sequence[tuple[str, str]]) -> ProbeResult:
        """Send ``send-probe`` with ``arguments`` (NAME, VALUE pairs of str) exactly as
        given, in their order, and return the result of whatever the helper replies,
        ``invalid-argument`` included: no option checks, no feature checks, no name
        resolution, as mtrpacket sends its probes (:class:`~brokerpkg.MtrPacket` uses
        it).  The result's request fields are None but ``target`` (the ``ip-4`` or
        ``ip-6`` value).  The Python-side deadline is the ``timeout`` argument's seconds
        (the helper's default when it is absent or not a number) plus ``probe_grace``.

        Raises TypeError/ValueError when a name or value is not one wire word or the
        line is too long (before anything is sent), StateError when not open, and like
        :meth:`probe` when the helper is gone, silent or malformed (HelperExitedError,
        ResponseTimeoutError, ProtocolError).
        """
        self._ensure_usable()
        template = self._templates.given(arguments)
        request = self._send_probe(template) or await self._send_probe_later(template)
        try:
            result: ProbeResult = await request.handle
        except BaseException:
            self._engine.give_up(request)
            raise
        return result

    def _send_probe(self, template: ProbeTemplate) -> Request | None:
        """Send a probe of ``template`` if a flow-control slot is free, else return None
        (then :meth:`_send_probe_later`).  Raises StateError, HelperExitedError /
        ProcessError (the helper gone), ProtocolError (every token in use)."""
        engine = self._engine
        if self._state != _OPEN or engine.failed is not None:
            self._ensure_usable()
        if not engine.try_take_slot():
            return None
        return self._submit(template.tail, template.deadline, template, True)

    async def _send_probe_later(self, template: ProbeTemplate) -> Request:
        """Wait for a flow-control slot, then send a probe of ``template``; raises like
        :meth:`_send_probe`."""
        await self._wait_for_slot()
        return self._submit(template.tail, template.deadline, template, True)

    # ------------------------------------------------------------------ names

    async def resolve(self, host: str, ip_version: int | None = None) -> str:
        """``host`` (a name or a numeric address) as a numeric address of ``ip_version``
        (4, 6, or None: the first address the system gives), in canonical form.  Names
        are resolved once per session (as for :meth:`probe`, and for ping, traceroute and
        monitor on this session) until :meth:`clear_dns_cache`.

        Raises TypeError for a non-str host, ValueError for a bad ip_version and
        HostResolveError when there is no such address.
        """
        address = (await self._templates.resolver.resolve(host, ip_version)).address
        return str(ipaddress.ip_address(address))

    @property
    def name_resolver(self) -> NameResolver:
        """The session's reverse name lookups (address -> name, cached), which
        traceroute and monitor use unless given another; emptied by
        :meth:`clear_dns_cache`."""
        return self._names

    def clear_dns_cache(self) -> None:
        """Forget resolved host names and looked-up reverse names (each is resolved once
        per session otherwise, by this session's probes and the tools using it)."""
        self._templates.resolver.clear()
        self._names.clear()
        self._templates.forget_names()


def _hand_slot(waiter: asyncio.Future[None]) -> bool:
    """The engine's ``wake``: hand a slot to a waiting probe, unless it gave up."""
    if waiter.done():
        return False
    waiter.set_result(None)
    return True
