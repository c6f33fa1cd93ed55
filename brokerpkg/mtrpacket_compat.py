"""The ``mtrpacket`` package's API on brokerpkg: ``import brokerpkg as mtrpacket`` runs
mtrpacket programs unchanged.

Every public name of mtrpacket 1.0.1 is one of ``brokerpkg`` and behaves as there: this
module's :class:`MtrPacket`, :class:`ProbeResult` (its five-field NamedTuple) and
``DnsCacheType``, and ``Mpls``, ``StateError``, ``HostResolveError`` and
``ProcessError`` (from :mod:`brokerpkg.protocol` and :mod:`brokerpkg.errors`, whose
other errors subclass mtrpacket's).  :meth:`MtrPacket.probe`
sends the request mtrpacket sends (``ip-4``/``ip-6``, then each keyword argument as
``str(value)``, in the caller's order) and returns the helper's reply as mtrpacket
does, whatever its word: an argument the helper refuses comes back as
``ProbeResult(success=False, result='invalid-argument', ...)``, not as an exception.
So a program gets from brokerpkg what mtrpacket gets from the same helper.

What differs, on purpose: without ``MTR_PACKET`` our own helper is located instead of
``mtr-packet``; a shell command string in ``MTR_PACKET`` that is one simple command is
``exec``'d by the shell (the child process is the helper: killing it fails pending
probes at once); a helper that stops answering fails its pending probes past their
deadline (mtrpacket waits forever); ``local_device`` is accepted (the helper's
``local-device``); and a value that cannot be sent as one word of the protocol (empty,
with spaces or control characters, or a request line too long) is refused as
``invalid-argument`` without being sent, where mtrpacket would send a broken line.

:class:`~brokerpkg.Session` is the richer API on the same helper: its results are
:class:`brokerpkg.protocol.ProbeResult` (these five fields, then the request's and the
reply's details).

This module loads asyncio only when an MtrPacket is made, so ``from brokerpkg import
ProbeResult`` stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from . import protocol as wire
from .errors import StateError
from .protocol import Mpls

if TYPE_CHECKING:
    from types import TracebackType

    from .resolve import Resolver
    from .session import Session
    from .transport import ChildProcess

MTR_PACKET_VARIABLE = "MTR_PACKET"
"""The environment variable naming the helper, as a shell command string (mtrpacket's)."""

DnsCacheType = dict[tuple[str, int | None], tuple[str, int]]
"""mtrpacket's type of its DNS cache, (host, ip_version) -> (address, version), kept
for annotations in mtrpacket programs."""

SENT_AS_GIVEN = frozenset(
    {
        # mtrpacket's
        *("protocol", "port", "local-port", "timeout", "ttl", "size", "bit-pattern"),
        *("tos", "mark"),
        # ours
        "local-device",
    }
)
"""probe() keywords (``_`` written ``-``) sent as ``NAME str(value)``."""

REQUESTS_KEPT = 4096
"""Requests remembered per MtrPacket by their arguments (emptied past this)."""

_EXACT_TEXT = frozenset({str, int, bool, float})
"""Types whose equal values of the same type have the same str(), zero floats aside
(0.0 == -0.0): a request built from such arguments can be remembered by their values."""


class ProbeResult(NamedTuple):
    """The result of a probe as mtrpacket returns it (``mtrpacket.ProbeResult``).

    ``success`` is True only when the target itself answered; ``result`` is the helper's
    reply word (``reply``, ``ttl-expired``, ``no-reply``, ``invalid-argument``, ...);
    ``time_ms`` the round-trip time and ``responder`` the address that answered (both
    None when the reply has none); ``mpls`` the MPLS label stack quoted with a
    ``ttl-expired`` (possibly empty).
    """

    success: bool
    result: str
    time_ms: float | None
    responder: str | None
    mpls: list[Mpls]


_new_tuple = tuple.__new__
"""Builds a ProbeResult from Session's result at once, without NamedTuple's argument
handling (the first five fields are the same)."""


def _refused() -> ProbeResult:
    """The result of a request refused before it was sent (a value no helper accepts)."""
    return ProbeResult(False, wire.INVALID_ARGUMENT, None, None, [])


def _request_key(host: object, args: Mapping[str, Any]) -> tuple[object, ...] | None:
    """The arguments of probe() as a key of the requests remembered, or None when a
    value's text is not fixed by its type and value (then the request is built anew)."""
    if host.__class__ is not str:
        return None
    key: list[object] = [host]
    for name, value in args.items():
        kind = value.__class__
        if kind not in _EXACT_TEXT or (kind is float and not value):
            return None
        key += (name, kind, value)
    return tuple(key)


def _sendable(arguments: tuple[tuple[str, str], ...]) -> bool:
    """True if the request fits the protocol: each value one word, the line short enough."""
    try:
        wire.encode_request_tail(wire.SEND_PROBE, arguments)
    except ValueError:
        return False
    return True


def _ip_version(value: object) -> int | None:
    """mtrpacket's reading of ``ip_version``: any false value means either family.

    Raises ValueError (mtrpacket's message) for a value other than 4 and 6.
    """
    if not value:
        return None
    if value not in (4, 6):
        raise ValueError("expected ip_version to be either 4 or 6")
    return 4 if value == 4 else 6


class MtrPacket:
    """Drop-in for ``mtrpacket.MtrPacket``: a helper process that sends probes.

    ``MTR_PACKET`` in the environment is run as a shell command string, as mtrpacket
    does; without it our own helper is located (:func:`~brokerpkg.locate_helper`)
    instead of ``mtr-packet``.  Host names are resolved once per MtrPacket (the cache
    survives :meth:`close` and :meth:`open`) until :meth:`clear_dns_cache`.
    """

    def __init__(self) -> None:
        from .resolve import Resolver  # asyncio, only once an MtrPacket is made

        self._session: Session | None = None
        self._resolver: Resolver = Resolver()
        self._requests: dict[tuple[object, ...], tuple[tuple[str, str], ...] | None] = {}

    def __repr__(self) -> str:
        process = self.process
        return "<MtrPacket" + (f" PID {process.pid}" if process is not None else "") + ">"

    @property
    def process(self) -> ChildProcess | None:
        """The helper process while open, else None."""
        return None if self._session is None else self._session.process

    async def __aenter__(self) -> MtrPacket:
        return await self.open()

    async def __aexit__(
        self,
        etype: type[BaseException] | None,
        evalue: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _new_session(self) -> Session:
        """A session for MTR_PACKET (shell command string) or the located helper."""
        from .session import Session  # the session module, only once opened

        command = os.environ.get(MTR_PACKET_VARIABLE)
        if command:
            return Session(command=command, shell=True)
        return Session()

    async def open(self) -> MtrPacket:
        """Start the helper.

        Raises StateError if already open, ProcessError (or a subclass) if the helper
        cannot be run or does not support sending probes.
        """
        if self._session is not None:
            raise StateError("already open")
        session = self._new_session()
        self._session = session
        try:
            await session.open()
        except BaseException:
            self._session = None
            raise
        return self

    async def close(self) -> None:
        """Stop the helper; harmless when not open."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open_session(self) -> Session:
        """The open session; raises StateError when not open."""
        if self._session is None:
            raise StateError("not open")
        return self._session

    async def check_support(self, feature: str) -> bool:
        """True if the helper supports ``feature``.

        Raises StateError when not open, ProcessError when the helper exited.
        """
        return await self._open_session().check_support(feature)

    async def probe(self, host: str, **args: Any) -> ProbeResult:
        """Send a probe to ``host`` (a name or numeric address) and return its result,
        whatever the helper replies.

        Keyword arguments are mtrpacket's (ip_version, ttl, protocol, port, local_ip,
        local_port, timeout, size, bit_pattern, tos, mark), plus local_device; each but
        ip_version and local_ip is sent as ``str(value)`` for the helper to judge.

        Raises ValueError for an ip_version other than 4 and 6, HostResolveError when
        ``host`` or ``local_ip`` does not resolve (in the family asked), TypeError for an
        unknown keyword (checked in that order, as mtrpacket does), then StateError when
        not open and ProcessError when the helper exited, stopped answering or broke
        the protocol.
        """
        key = _request_key(host, args)
        arguments = self._requests.get(key) if key is not None else None
        if arguments is None:
            arguments = await self._request(host, args)
            if key is not None:
                if len(self._requests) >= REQUESTS_KEPT:
                    self._requests.clear()
                self._requests[key] = arguments
        session = self._open_session()
        if not arguments:
            return _refused()
        return _new_tuple(ProbeResult, (await session.probe_arguments(arguments))[:5])

    async def _request(self, host: str, args: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """The send-probe arguments mtrpacket sends for ``probe(host, **args)``, or ()
        when a value cannot be sent as one word; raises like :meth:`probe`."""
        target = await self._resolver.resolve(host, _ip_version(args.get("ip_version")))
        family = target.ip_version
        arguments = [(f"ip-{family}", target.address)]
        for name, value in args.items():
            word = name.replace("_", "-")
            if name == "local_ip":
                local = await self._resolver.resolve(value, family)
                arguments.append((f"local-ip-{family}", local.address))
            elif name != "ip_version":
                if word not in SENT_AS_GIVEN:
                    raise TypeError(f"unexpected keyword argument '{word}'")
                arguments.append((word, str(value)))
        request = tuple(arguments)
        return request if _sendable(request) else ()

    def clear_dns_cache(self) -> None:
        """Forget resolved host names (and the requests built from them)."""
        self._requests.clear()
        self._resolver.clear()
