"""ping, multiping and traceroute with icmplib's signatures, through the helper.

What icmplib does, and how it is done here:

- a name that :func:`~.utils.is_hostname` accepts is resolved with icmplib's rules and
  the host is reported under its first address; any other string is sent to as given
  (icmplib's socket resolves it: "127.1", "localhost."), and one that is no address at
  all gets a Host with nothing sent, as icmplib's failed sends give;
- errors while sending count as requests not sent (ping: ``packets_sent`` stays 0;
  traceroute: no hop), answers from the network as requests unanswered;
- local failures are raised: SocketPermissionError when the helper lacks its
  privilege, SocketAddressError for a ``source`` that is not this host's (or not of
  the destination's family), ICMPSocketError when the helper is missing or fails,
  NameLookupError, and TypeError/ValueError for bad arguments.

The blocking functions go through :mod:`brokerpkg.sync`, the ``async_*`` ones through
the asynchronous functions, each imported when first called: importing this package
loads no asyncio.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from ..errors import HelperPrivilegeError, HostResolveError, ProbeSendError, ProcessError
from .exceptions import ICMPSocketError, SocketAddressError, SocketPermissionError
from .models import Hop, Host
from .utils import async_resolve, is_hostname, resolve

if TYPE_CHECKING:
    from ..ping import PingResult
    from ..session import Session
    from ..trace import TraceResult

__all__ = [
    "async_multiping",
    "async_ping",
    "async_traceroute",
    "multiping",
    "ping",
    "traceroute",
]

PAYLOAD_SIZE = 56
"""icmplib's payload size (bytes after the ICMP header)."""
PING_TTL = 64
"""icmplib's TTL for echo requests."""

T = TypeVar("T")


# ----------------------------------------------------------------------------- targets


class _Target(NamedTuple):
    """A destination: ``shown`` is what icmplib reports (a name's first address, or the
    string as given), ``numeric`` the address probed (None: it is no address, so
    nothing can be sent to it)."""

    shown: str
    numeric: str | None


def _socket_family(address: str) -> socket.AddressFamily:
    """The family of the socket icmplib would send from (IPv6 when there is a colon)."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _first_address(infos: list[Any]) -> str | None:
    return str(infos[0][4][0]) if infos else None


def _target(address: str, family: int | None) -> _Target:
    """The destination ``address`` names; raises NameLookupError for a host name that
    does not resolve."""
    if is_hostname(address):
        first = resolve(address, family)[0]
        return _Target(first, first)
    try:
        infos = socket.getaddrinfo(address, None, _socket_family(address), socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return _Target(address, None)
    return _Target(address, _first_address(infos))


async def _async_target(address: str, family: int | None) -> _Target:
    """:func:`_target` without blocking the event loop."""
    import asyncio

    if is_hostname(address):
        first = (await async_resolve(address, family))[0]
        return _Target(first, first)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            address, None, family=_socket_family(address), type=socket.SOCK_DGRAM
        )
    except (OSError, UnicodeError):
        return _Target(address, None)
    return _Target(address, _first_address(infos))


# ----------------------------------------------------------------------------- options


ADVANCED = frozenset({"payload", "payload_size", "traffic_class"})
"""icmplib's advanced keyword arguments (those of its ICMPRequest that a call passes on);
ping's also take ``ttl``, which traceroute sets itself."""


def _probe_options(
    caller: str, source: str | None, kwargs: Mapping[str, Any], allowed: frozenset[str]
) -> dict[str, Any]:
    """brokerpkg probe options for icmplib's ``source`` and advanced keyword arguments
    (``allowed`` of ``payload``, ``payload_size``, ``traffic_class``, ``ttl``).

    A ``payload`` gives its length; its bytes are sent when they are one byte repeated
    (the helper fills payloads with one byte).  Raises TypeError for any other keyword
    argument, as icmplib does.
    """
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    payload = kwargs.get("payload")
    options: dict[str, Any] = {"payload_size": kwargs.get("payload_size", PAYLOAD_SIZE)}
    if payload:
        options["payload_size"] = len(payload)
        if len(set(payload)) == 1:
            options["bit_pattern"] = payload[0]
    traffic_class = kwargs.get("traffic_class", 0)
    if traffic_class:
        options["tos"] = traffic_class
    if source is not None:
        options["local_ip"] = source
    return options


def _ping_options(caller: str, source: str | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ping's requests: :func:`_probe_options`, with icmplib's TTL (64)
    unless ``ttl`` is given."""
    options = _probe_options(caller, source, kwargs, ADVANCED | {"ttl"})
    return {**options, "ttl": kwargs.get("ttl", PING_TTL)}


def _trace_options(timeout: float, source: str | None, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The options of traceroute: each probe waits at most ``timeout``, and is sent once
    (icmplib sends no further tries to a silent hop)."""
    options = _probe_options("traceroute", source, kwargs, ADVANCED)
    return {**options, "timeout": timeout, "retries": 0}


# ----------------------------------------------------------------------------- errors


@contextlib.contextmanager
def _socket_errors(source: str | None, privileged: bool) -> Iterator[None]:
    """Raise brokerpkg's local failures as icmplib's.

    Raises SocketPermissionError for a helper without its privilege, ICMPSocketError
    for any other failure of the helper, SocketAddressError for a ``source`` that
    cannot be used (not an address of the destination's family, not this host's).
    """
    try:
        yield
    except HelperPrivilegeError as error:
        raise SocketPermissionError(privileged, str(error)) from error
    except ProcessError as error:
        raise ICMPSocketError(str(error)) from error
    except HostResolveError as error:  # the destination is numeric: the source did not fit
        raise SocketAddressError(source) from error
    except ProbeSendError as error:
        if _refuses_source(error):
            raise SocketAddressError(source) from error
        raise


def _refuses_source(error: ProbeSendError) -> bool:
    """True when a send failed for the source address (then the call fails; other send
    failures count as requests not sent)."""
    return error.errno == errno.EADDRNOTAVAIL


def _nothing_sent(error: ProbeSendError, nothing: T) -> T:
    """``nothing``, what a call returns when a send failed (icmplib counts its requests
    as not sent); re-raises ``error`` when the send failed for the source address (then
    the call fails: :func:`_socket_errors` raises SocketAddressError)."""
    if _refuses_source(error):
        raise error
    return nothing


# ----------------------------------------------------------------------------- results


def _host(target: _Target, result: PingResult) -> Host:
    """icmplib's Host for a brokerpkg PingResult."""
    return Host(target.shown, result.sent, result.rtts)


def _unsent(target: _Target) -> Host:
    """The Host of a destination nothing could be sent to."""
    return Host(target.shown, 0, [])


def _hops(result: TraceResult) -> list[Hop]:
    """icmplib's hops for a brokerpkg trace: one per TTL that got any answer, under the
    address of its last answer, with every answer's round-trip time."""
    hops = []
    for hop in result.hops:
        answered = [probe.responder for probe in hop.probes if probe.responder is not None]
        if answered:
            hops.append(Hop(answered[-1], hop.sent, hop.rtts, hop.ttl))
    return hops


# ----------------------------------------------------------------------------- blocking


def _event_loop_running() -> bool:
    """True when called from a running asyncio event loop (then asyncio is imported)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _blocking(call: Callable[[], T]) -> T:
    """``call()``, which runs brokerpkg.sync; from a running event loop, in a worker
    thread, waited for: icmplib's ping and traceroute block a loop they are called from,
    where brokerpkg.sync refuses to run."""
    if not _event_loop_running():
        return call()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="brokerpkg.icmplib") as worker:
        return worker.submit(call).result()


# ----------------------------------------------------------------------------- ping


def ping(
    address: str,
    count: int = 4,
    interval: float = 1,
    timeout: float = 2,
    id: int | None = None,
    source: str | None = None,
    family: int | None = None,
    privileged: bool = True,
    **kwargs: Any,
) -> Host:
    """Send ``count`` echo requests to ``address``, one every ``interval`` seconds, each
    waiting up to ``timeout`` seconds for its reply; return a :class:`Host`.

    As icmplib's ping; the helper holds the privilege, so ``privileged`` changes
    nothing, and it chooses the ICMP identifiers (``id`` is not used), as Linux does
    for icmplib's unprivileged sockets.  Requests do not wait for earlier replies:
    a ping lasts about ``(count - 1) * interval`` plus the last round trip.  Called
    from a running event loop it blocks it, as icmplib's does (use :func:`async_ping`).
    Advanced: ``payload``, ``payload_size`` (56), ``traffic_class``, ``ttl`` (64).

    Raises NameLookupError, SocketPermissionError, SocketAddressError, ICMPSocketError
    (see the module documentation), TypeError/ValueError for bad arguments.
    """
    del id  # the helper matches replies to requests itself
    target = _target(address, family)
    options = _ping_options("ping", source, kwargs)
    numeric = target.numeric
    if numeric is None or count <= 0:
        return _unsent(target)
    from .. import sync

    with _socket_errors(source, privileged):
        try:
            result = _blocking(
                functools.partial(sync.ping, numeric, count, interval, timeout, **options)
            )
        except ProbeSendError as error:
            return _nothing_sent(error, _unsent(target))
    return _host(target, result)


async def _ping_target(
    target: _Target,
    count: int,
    interval: float,
    timeout: float,  # noqa: ASYNC109 - each request's own, sent to the helper
    options: Mapping[str, Any],
    session: Session | None,
) -> Host:
    """Ping one destination (in ``session``, or the helper's own); a failed send gives
    a Host with nothing sent."""
    if target.numeric is None or count <= 0:
        return _unsent(target)
    from ..ping import ping as ping_async

    try:
        result = await ping_async(
            target.numeric, count, interval, timeout, session=session, **options
        )
    except ProbeSendError as error:
        return _nothing_sent(error, _unsent(target))
    return _host(target, result)


async def async_ping(
    address: str,
    count: int = 4,
    interval: float = 1,
    timeout: float = 2,  # noqa: ASYNC109 - icmplib's parameter: each request's own
    id: int | None = None,
    source: str | None = None,
    family: int | None = None,
    privileged: bool = True,
    **kwargs: Any,
) -> Host:
    """:func:`ping` for asyncio programs (the same arguments, result and errors)."""
    del id
    target = await _async_target(address, family)
    options = _ping_options("async_ping", source, kwargs)
    with _socket_errors(source, privileged):
        return await _ping_target(target, count, interval, timeout, options, None)


# ----------------------------------------------------------------------------- multiping


def _same_address(first: str, second: str | None) -> bool:
    """True if the numeric addresses are equal (brokerpkg reports them canonically)."""
    if second is None:
        return False
    try:
        return socket.inet_pton(_socket_family(first), first) == socket.inet_pton(
            _socket_family(second), second
        )
    except OSError:
        return first == second


def _multiping_round(
    targets: list[_Target],
    pending: list[int],
    hosts: dict[int, Host],
    arguments: tuple[int, float, float, int],
    options: Mapping[str, Any],
) -> list[int]:
    """Ping the ``pending`` targets through one helper, filling ``hosts``; return the
    targets still to ping (those of a round that a failed send cut short, minus the
    destination that failed, which gets a Host with nothing sent)."""
    from .. import sync

    try:
        results = sync.multiping([targets[i].numeric or "" for i in pending], *arguments, **options)
    except ProbeSendError as error:
        if _refuses_source(error):
            raise
        failed = [
            i for i in pending if _same_address(targets[i].numeric or "", error.result.target)
        ]
        if not failed:
            raise ICMPSocketError(str(error)) from error
        hosts.update((i, _unsent(targets[i])) for i in failed)
        return [i for i in pending if i not in failed]
    hosts.update((i, _host(targets[i], result)) for i, result in zip(pending, results, strict=True))
    return []


def multiping(
    addresses: Iterable[str],
    count: int = 2,
    interval: float = 0.5,
    timeout: float = 2,
    concurrent_tasks: int = 50,
    source: str | None = None,
    family: int | None = None,
    privileged: bool = True,
    **kwargs: Any,
) -> list[Host]:
    """Ping every address of ``addresses`` (at most ``concurrent_tasks`` at once) through
    one helper; return their Hosts in input order.

    As icmplib's multiping (see :func:`ping`).  A destination that cannot be sent to
    gets a Host with nothing sent, and the others are pinged all the same.
    Raises like :func:`ping`.
    """
    targets = [_target(address, family) for address in addresses]
    options = _ping_options("multiping", source, kwargs)
    hosts = {
        i: _unsent(target)
        for i, target in enumerate(targets)
        if target.numeric is None or count <= 0
    }
    pending = [i for i in range(len(targets)) if i not in hosts]
    with _socket_errors(source, privileged):
        while pending:
            pending = _multiping_round(
                targets, pending, hosts, (count, interval, timeout, concurrent_tasks), options
            )
    return [hosts[i] for i in range(len(targets))]


async def async_multiping(
    addresses: Iterable[str],
    count: int = 2,
    interval: float = 0.5,
    timeout: float = 2,  # noqa: ASYNC109 - icmplib's parameter: each request's own
    concurrent_tasks: int = 50,
    source: str | None = None,
    family: int | None = None,
    privileged: bool = True,
    **kwargs: Any,
) -> list[Host]:
    """:func:`multiping` for asyncio programs: one helper, at most ``concurrent_tasks``
    destinations at once.  As in icmplib, every destination is pinged before the first
    error in input order is raised (a name that does not resolve, ...)."""
    import asyncio

    from ..session import Session

    options = _ping_options("async_multiping", source, kwargs)
    names = list(addresses)
    if not names:
        return []
    if concurrent_tasks < 1:
        raise ValueError(f"concurrent_tasks must be >= 1, got {concurrent_tasks}")
    slots = asyncio.Semaphore(concurrent_tasks)

    async def one(session: Session, address: str) -> Host:
        async with slots:
            target = await _async_target(address, family)
            return await _ping_target(target, count, interval, timeout, options, session)

    with _socket_errors(source, privileged):
        async with Session() as session:
            outcomes = await asyncio.gather(
                *(one(session, name) for name in names), return_exceptions=True
            )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [outcome for outcome in outcomes if isinstance(outcome, Host)]


# ----------------------------------------------------------------------------- traceroute


def traceroute(
    address: str,
    count: int = 2,
    interval: float = 0.05,
    timeout: float = 2,
    first_hop: int = 1,
    max_hops: int = 30,
    fast: bool = False,
    id: int | None = None,
    source: str | None = None,
    family: int | None = None,
    **kwargs: Any,
) -> list[Hop]:
    """Trace the route to ``address``: ``count`` echo requests for every TTL from
    ``first_hop`` to ``max_hops``, every TTL in flight at once; return a :class:`Hop`
    for each TTL that answered, up to the destination.

    As icmplib's traceroute, except that probes are not sent hop by hop: ``interval``
    (icmplib's pause between a hop's requests) and ``fast`` (which icmplib 3.0 does
    not use either) have nothing to pace, and ``id`` is the helper's.  A path that
    ends in "destination unreachable" ends at that hop (icmplib probes on up to
    ``max_hops``, listing the router again at each TTL).

    Raises like :func:`ping`.
    """
    del interval, fast, id  # every probe is in flight at once; the helper picks ids
    target = _target(address, family)
    options = _trace_options(timeout, source, kwargs)
    numeric = target.numeric
    if numeric is None or count <= 0 or first_hop > max_hops:
        return []
    from .. import sync

    with _socket_errors(source, True):
        try:
            result = _blocking(
                functools.partial(sync.traceroute, numeric, first_hop, max_hops, count, **options)
            )
        except ProbeSendError as error:
            return _nothing_sent(error, [])
    return _hops(result)


async def async_traceroute(
    address: str,
    count: int = 2,
    interval: float = 0.05,
    timeout: float = 2,  # noqa: ASYNC109 - icmplib's parameter: each request's own
    first_hop: int = 1,
    max_hops: int = 30,
    fast: bool = False,
    id: int | None = None,
    source: str | None = None,
    family: int | None = None,
    **kwargs: Any,
) -> list[Hop]:
    """:func:`traceroute` for asyncio programs (which icmplib does not have): the same
    arguments, result and errors, every TTL in flight at once."""
    from ..trace import traceroute as trace_async

    del interval, fast, id
    target = await _async_target(address, family)
    options = _trace_options(timeout, source, kwargs)
    if target.numeric is None or count <= 0 or first_hop > max_hops:
        return []
    with _socket_errors(source, True):
        try:
            return _hops(await trace_async(target.numeric, first_hop, max_hops, count, **options))
        except ProbeSendError as error:
            return _nothing_sent(error, [])
