"""Resolve host names to numeric addresses and back, asynchronously, with caches.

The helper only takes numeric addresses.  A numeric address is used as it is (no DNS);
a name goes through ``loop.getaddrinfo`` once per (host, family) and is then served from
the cache until :meth:`Resolver.clear`.  :class:`NameResolver` looks up the reverse
names of responders (for traceroute and monitor), cached until :meth:`NameResolver.clear`.
A session owns one of each (``Session.clear_dns_cache`` empties both).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket

from .addresses import (
    DEFAULT_NAME_TIMEOUT,
    FAMILIES,
    ResolvedAddress,
    check_numeric_family,
    check_request,
    first_of_family,
    lookup_failure,
    numeric_address,
)
from .errors import HostResolveError

__all__ = ["DEFAULT_NAME_TIMEOUT", "NameResolver", "ResolvedAddress", "Resolver"]


class Resolver:
    """Asynchronous host name resolution with a cache keyed by (host, ip_version)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int | None], ResolvedAddress] = {}

    def clear(self) -> None:
        """Forget every cached resolution."""
        self._cache.clear()

    async def resolve(self, host: str, ip_version: int | None = None) -> ResolvedAddress:
        """Resolve ``host`` to a numeric address of ``ip_version`` (4, 6, or None: the
        first address getaddrinfo gives).

        Raises TypeError for a non-str host, ValueError for a bad ip_version, and
        HostResolveError when the name does not resolve or has no address of the family
        (a numeric address of the other family included).
        """
        check_request(host, ip_version)
        numeric = numeric_address(host)
        if numeric is not None:
            return check_numeric_family(host, numeric, ip_version)
        key = (host, ip_version)
        if key not in self._cache:
            self._cache[key] = await self._lookup(host, ip_version)
        return self._cache[key]

    async def _lookup(self, host: str, ip_version: int | None) -> ResolvedAddress:
        """Ask getaddrinfo (a subclass asks elsewhere: brokerpkg.remote.RemoteResolver);
        raises HostResolveError on failure or no address of the family."""
        if not host:
            raise HostResolveError("cannot resolve an empty host name")
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, None, family=FAMILIES[ip_version], type=socket.SOCK_DGRAM
            )
        except (OSError, UnicodeError) as error:
            raise lookup_failure(host, ip_version, error) from error
        found = first_of_family(infos, ip_version)
        if found is None:
            raise lookup_failure(host, ip_version, "no such address")
        return found


class NameResolver:
    """Reverse DNS lookups (address -> name) with a cache, each bounded by ``timeout``.

    Concurrent requests for one address share one lookup; failures and timeouts give
    None and are cached too (use :meth:`clear` to retry).  Subclass and override
    :meth:`lookup` to use another source of names.

    Raises TypeError for a timeout that is not a number, ValueError for one that is not
    finite and > 0.
    """

    def __init__(self, timeout: float = DEFAULT_NAME_TIMEOUT) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        self._names: dict[str, str | None] = {}
        self._lookups: dict[str, asyncio.Future[str | None]] = {}

    def cached(self, address: str) -> str | None:
        """The name already known for ``address`` (None if unknown or not looked up)."""
        return self._names.get(address)

    def clear(self) -> None:
        """Forget every name (lookups under way still finish)."""
        self._names.clear()

    async def name(self, address: str) -> str | None:
        """The name of ``address``, or None when it has none; never raises (except
        CancelledError)."""
        if address in self._names:
            return self._names[address]
        lookup = self._lookups.get(address)
        if lookup is None:
            lookup = asyncio.ensure_future(self._resolve(address))
            self._lookups[address] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(address, None))
        return await asyncio.shield(lookup)

    async def _resolve(self, address: str) -> str | None:
        name: str | None = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                name = await self.lookup(address)
        self._names[address] = name
        return name

    async def lookup(self, address: str) -> str | None:
        """Ask the system resolver (getnameinfo with NI_NAMEREQD) for ``address``'s
        name; may raise OSError."""
        loop = asyncio.get_running_loop()
        host, _port = await loop.getnameinfo((address, 0), socket.NI_NAMEREQD)
        return host
