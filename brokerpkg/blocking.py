"""A blocking session with the helper: :class:`BlockingSession`, for scripts and the
command line's one-shot subcommands, with no event loop and no thread.

The helper runs as a child process (its own process group) behind a
:class:`~brokerpkg.transport.ProcessTransport` (non-blocking pipes); one
:mod:`selectors` loop moves bytes between it and the sans-I/O
:class:`~brokerpkg.engine.Engine`, which keeps the tokens, slots, deadlines and the
reply reader exactly as the asyncio :class:`~brokerpkg.session.Session` has them, and
probes are encoded by the same :func:`~brokerpkg.templates.probe_template`.  The
caller starts probes (:meth:`BlockingSession.start`) and collects whatever finished
(:meth:`BlockingSession.wait`); :meth:`BlockingSession.probe` does both for one probe.

Nothing can leave a caller waiting forever: the helper exiting fails what is
outstanding with HelperExitedError, a request past its deadline fails with
ResponseTimeoutError (probes once the helper answered a later question, as in the
engine), and :meth:`BlockingSession.close` kills and reaps the helper.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self

from . import protocol as wire
from .addresses import canonical, resolve_now
from .engine import Engine, ProbeTemplate, Request
from .errors import (
    HelperExitedError,
    ProcessError,
    ResponseTimeoutError,
    StateError,
    looks_like_privilege_failure,
)
from .locate import HelperLocation, locate_helper, privilege_error
from .protocol import ProbeOptions, ProbeResult
from .templates import (
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PROBE_GRACE,
    feature_question,
    in_flight_limit,
    probe_outcome,
    probe_template,
    require_send_probe,
)
from .transport import EXIT_WAIT, ProcessTransport

READ_CHUNK = 65536


class BlockingSession:
    """A helper session driven by blocking calls (see the module documentation).

    ``helper`` as for :class:`~brokerpkg.session.Session` (a path, or None to search),
    or ``command``, the argv to run instead (no shell; e.g. the helper inside a network
    namespace); ``probe_grace``, ``open_timeout`` and ``max_in_flight`` as for Session.
    Use it as a context manager, or call :meth:`open` and :meth:`close`.

    Raises ValueError when both ``helper`` and ``command`` are given.
    """

    def __init__(
        self,
        helper: str | os.PathLike[str] | None = None,
        *,
        command: Sequence[str] | None = None,
        probe_grace: float = DEFAULT_PROBE_GRACE,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        max_in_flight: int | None = None,
    ) -> None:
        if helper is not None and command is not None:
            raise ValueError("give helper or command, not both")
        self._helper = helper
        self._command = None if command is None else list(command)
        self._open_timeout = open_timeout
        self._max_in_flight_argument = max_in_flight
        self._engine = Engine(probe_grace)
        self._location: HelperLocation | None = None
        self._transport: ProcessTransport | None = None
        self._selector = selectors.DefaultSelector()
        # the transport's descriptors once the helper runs (-1: none)
        self._stdin = self._stdout = self._stderr = -1
        self._output = bytearray()
        self._watching_stdin = False
        self._finished: list[Request] = []
        self._features: dict[str, str] = {}
        self._templates: dict[tuple[str, ProbeOptions], ProbeTemplate] = {}
        self._state = "new"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def description(self) -> str:
        """The helper's path (or what was asked for before it was found)."""
        if self._location is not None:
            return self._location.path
        if self._command is not None:
            return " ".join(self._command)
        return os.fspath(self._helper) if self._helper is not None else "brokerpkg-helper"

    @property
    def features(self) -> dict[str, str]:
        """The helper's check-support answers read at open (feature -> answer)."""
        return dict(self._features)

    @property
    def max_in_flight(self) -> int:
        """Probes in flight at most (the argument, else what the helper says, else 1024)."""
        return self._engine.max_in_flight

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered (given-up ones included)."""
        return self._engine.in_flight

    def open(self) -> Self:
        """Start the helper and read its features, as ``Session.open`` does.

        Raises StateError if opened before, HelperNotFoundError, HelperPrivilegeError,
        HelperExitedError, ResponseTimeoutError and ProcessError as ``Session.open``.
        """
        if self._state != "new":
            raise StateError("session already opened or closed; create a new one")
        self._state = "open"
        try:
            self._start()
            self._query_features()
        except BaseException:
            self.close()
            raise
        self._engine.set_limit(in_flight_limit(self._max_in_flight_argument, self._features))
        return self

    def _start(self) -> None:
        """Run the helper with non-blocking pipes; raises HelperNotFoundError, ProcessError."""
        if self._command is None:
            self._location = locate_helper(self._helper)
        self._transport = transport = ProcessTransport.start(
            self._command or [self.description], description=self.description
        )
        self._stdin, self._stdout = transport.write_fileno(), transport.fileno()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        stderr = transport.stderr_fileno()
        if stderr is not None:
            self._stderr = stderr
            self._selector.register(stderr, selectors.EVENT_READ)

    def _query_features(self) -> None:
        """Ask every feature of wire.FEATURES at once; require send-probe."""
        requests = [
            self._engine.submit(feature_question(name), self._open_timeout, None, False)
            for name in wire.FEATURES
        ]
        waiting = set(requests)
        while waiting:
            for request in self.wait():
                waiting.discard(request)
        for name, request in zip(wire.FEATURES, requests, strict=True):
            error = request.error
            if isinstance(error, HelperExitedError):
                if looks_like_privilege_failure(error.returncode, error.stderr_line):
                    raise privilege_error(error, self._location, self._command) from error
                raise error
            if isinstance(error, ResponseTimeoutError):
                raise ResponseTimeoutError(
                    "the feature queries at open", self._open_timeout, self._engine.messages
                ) from None
            if error is not None:
                raise error
            self._features[name] = wire.feature_value(request.result)
        require_send_probe(self._features, self.description)

    def close(self) -> None:
        """Stop the helper and release everything; calling it again does nothing.

        Outstanding requests fail with ProcessError.  Never raises.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        description = self.description
        self._engine.fail(lambda: ProcessError(f"session with helper {description} was closed"))
        if self._transport is not None:
            self._transport.close()
        self._selector.close()

    # ------------------------------------------------------------------ the loop

    def wait(self, until: float | None = None) -> list[Request]:
        """Move bytes until at least one request finished, or (``until``, a
        time.monotonic() time) that time came; return the finished requests (result or
        error set), possibly none at ``until`` or when nothing is outstanding.

        Raises StateError when the session is not open.
        """
        if self._state != "open":
            raise StateError("session is not open" if self._state == "new" else "session is closed")
        while not self._finished and self._step(until):
            pass
        finished, self._finished = self._finished, []
        return finished

    def _step(self, until: float | None) -> bool:
        """One round: expire deadlines, write, wait for one pipe (at most until the next
        deadline or ``until``) and serve it.  False when there is nothing to wait for:
        ``until`` passed, or nothing is outstanding and no time was given."""
        now = time.monotonic()
        self._finished += self._engine.due(now)
        self._take_output(now)
        if until is not None and now >= until:
            return False
        wakeup = self._engine.next_wakeup()
        if until is not None:
            wakeup = until if wakeup is None else min(wakeup, until)
        if wakeup is None and not self._engine.pending:
            return False  # nothing will ever finish: do not block forever
        timeout = None if wakeup is None else max(0.0, wakeup - now)
        watched = self._selector.get_map()
        for key, _ in self._selector.select(timeout):
            if key.fd in watched:  # serving one may have ended another (the helper's exit)
                self._ready(key.fd)
        return True

    def _take_output(self, now: float) -> None:
        """Write what the engine has queued, as far as the pipe takes it."""
        if self._engine.queued:
            self._output += self._engine.take_output(now)
        if self._output:
            self._write()

    def _write(self) -> None:
        """Write buffered requests; watch stdin while some are left."""
        assert self._transport is not None
        try:
            written = self._transport.write(self._output)
        except OSError:  # the helper is gone: its output's end says how
            self._output.clear()
            written = 0
        del self._output[:written]
        if self._output and not self._watching_stdin:
            self._selector.register(self._stdin, selectors.EVENT_WRITE)
        elif not self._output and self._watching_stdin:
            self._selector.unregister(self._stdin)
        self._watching_stdin = bool(self._output)

    def _ready(self, fd: int) -> None:
        """One pipe is ready: write requests, read replies or the helper's stderr."""
        transport = self._transport
        assert transport is not None
        if fd == self._stdin:
            self._write()
        elif fd == self._stderr:
            if not transport.read_stderr():
                self._selector.unregister(fd)  # its end
        else:
            try:
                data = transport.read(READ_CHUNK)
            except BlockingIOError:
                return
            if data:
                self._finished += self._engine.feed(data)
            else:
                self._helper_gone()

    def _helper_gone(self) -> None:
        """The helper's output ended: fail everything with its exit status and last
        stderr line (both waited for, at most EXIT_WAIT)."""
        transport = self._transport
        assert transport is not None
        self._selector.unregister(self._stdout)
        self._finished += self._engine.feed_eof()
        returncode = transport.process.wait_for(EXIT_WAIT)
        self._drain_stderr()
        lines = transport.stderr_lines()
        last = lines[-1] if lines else None
        opened = bool(self._features)
        self._finished += self._engine.fail(
            lambda: transport.exit_error(returncode, last, opened=opened)
        )

    def _drain_stderr(self) -> None:
        """Read what is left on stderr (bounded by EXIT_WAIT)."""
        end = time.monotonic() + EXIT_WAIT
        while self._stderr in self._selector.get_map():
            remaining = end - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                return
            self._ready(self._stderr)

    # ------------------------------------------------------------------ probing

    def template(self, host: str, options: ProbeOptions) -> ProbeTemplate:
        """Resolve ``host``, check the helper's features and encode the probe once, as
        ``Session`` does.  Raises HostResolveError, FeatureNotSupportedError,
        StateError."""
        key = (host, options)
        made = self._templates.get(key)
        if made is not None:
            return made
        if self._state != "open":
            raise StateError("session is not open" if self._state == "new" else "session is closed")
        target = resolve_now(host, options.ip_version)
        local = None
        if options.local_ip is not None:
            local = resolve_now(options.local_ip, target.ip_version).address
        made = probe_template(
            options,
            target.address,
            target.ip_version,
            local,
            self._features,
            self._engine.probe_grace,
        )
        self._templates[key] = made
        return made

    def start(self, template: ProbeTemplate) -> Request:
        """Send a probe (waiting for a flow-control slot first, collecting what
        finishes meanwhile for the next :meth:`wait`); its Request.

        Raises StateError, and the helper's error when it is gone.
        """
        engine = self._engine
        if self._state != "open":
            raise StateError("session is not open" if self._state == "new" else "session is closed")
        while not engine.try_take_slot():  # every slot is held by a probe in flight
            if engine.failed is not None:
                raise engine.failed()
            self._step(None)
        if engine.failed is not None:
            engine.release_slot()
            raise engine.failed()
        return engine.submit(template.tail, template.deadline, template, True)

    def give_up(self, requests: Iterable[Request]) -> None:
        """Stop waiting for ``requests`` (their tokens stay reserved until answered)."""
        for request in requests:
            self._engine.give_up(request)

    def result(self, request: Request) -> ProbeResult:
        """A finished probe's result, as ``Session.probe`` returns it.

        Raises its error (ResponseTimeoutError, HelperExitedError, ProtocolError...),
        InvalidProbeError when the helper refused the probe, ProcessError when it does
        not know send-probe.
        """
        if request.error is not None:
            raise request.error
        return probe_outcome(request.result, self.description)

    def probe(self, host: str, **options: Any) -> ProbeResult:
        """One probe, as :meth:`brokerpkg.session.Session.probe` (same options, same
        result, same errors)."""
        template = self.template(host, wire.make_probe_options(**options))
        request = self.start(template)
        while True:
            for finished in self.wait():
                if finished is request:
                    return self.result(request)

    def resolve(self, host: str, ip_version: int | None = None) -> str:
        """``host`` as a numeric address in canonical form, as ``Session.resolve``.

        Raises TypeError, ValueError, HostResolveError."""
        return canonical(resolve_now(host, ip_version).address)
