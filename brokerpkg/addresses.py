"""Host names to numeric addresses and back, without asyncio: the rules every resolver
shares and the blocking lookups of :mod:`brokerpkg.blocking`.

The helper only takes numeric addresses.  A numeric address is used as it is (no DNS);
a name goes through getaddrinfo, and the first address of the wanted family is taken.
:mod:`brokerpkg.resolve` asks the same questions through the event loop, with caches.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from .errors import HostResolveError

DEFAULT_NAME_TIMEOUT = 2.0
"""Seconds a reverse name lookup may take before the address is taken as nameless."""

FAMILIES = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}
"""getaddrinfo's family for an IP version (None: any)."""
_VERSIONS: dict[int, int] = {socket.AF_INET: 4, socket.AF_INET6: 6}


class ResolvedAddress(NamedTuple):
    """A numeric address and its IP version (4 or 6)."""

    address: str
    ip_version: int


@functools.lru_cache(maxsize=65536)
def numeric_address(host: str) -> ResolvedAddress | None:
    """Return ``host`` as a ResolvedAddress if it is a numeric IP address, else None.

    Cached: the same targets are probed again and again."""
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        return None
    return ResolvedAddress(host, parsed.version)


def check_request(host: object, ip_version: object) -> None:
    """Raise TypeError/ValueError for a non-str host or an ip_version other than 4/6/None."""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, got {type(host).__name__} {host!r}")
    if ip_version is not None and (type(ip_version) is not int or ip_version not in (4, 6)):
        raise ValueError(f"ip_version must be 4, 6 or None, got {ip_version!r}")


def check_numeric_family(
    host: str, numeric: ResolvedAddress, ip_version: int | None
) -> ResolvedAddress:
    """Return ``numeric`` if its family fits; raises HostResolveError otherwise."""
    if ip_version is not None and numeric.ip_version != ip_version:
        raise HostResolveError(
            f"{host!r} is an IPv{numeric.ip_version} address, not IPv{ip_version}"
        )
    return numeric


def first_of_family(
    infos: Sequence[tuple[int, int, int, str, tuple[Any, ...]]], ip_version: int | None
) -> ResolvedAddress | None:
    """The first getaddrinfo result of the wanted version (any version for None)."""
    for family, _type, _proto, _name, sockaddr in infos:
        version = _VERSIONS.get(family)
        if version is not None and ip_version in (None, version):
            return ResolvedAddress(str(sockaddr[0]), version)
    return None


def lookup_failure(host: str, ip_version: int | None, error: object) -> HostResolveError:
    """The error for a name that did not resolve (``error``: why)."""
    family_text = "" if ip_version is None else f" to an IPv{ip_version} address"
    return HostResolveError(f"unable to resolve {host!r}{family_text}: {error}")


def resolve_now(host: str, ip_version: int | None = None) -> ResolvedAddress:
    """Resolve ``host`` as :meth:`brokerpkg.resolve.Resolver.resolve` does, blocking
    (no cache: a blocking caller resolves each target once).

    Raises TypeError for a non-str host, ValueError for a bad ip_version, and
    HostResolveError when the name does not resolve or has no address of the family.
    """
    check_request(host, ip_version)
    numeric = numeric_address(host)
    if numeric is not None:
        return check_numeric_family(host, numeric, ip_version)
    if not host:
        raise HostResolveError("cannot resolve an empty host name")
    try:
        infos = socket.getaddrinfo(host, None, family=FAMILIES[ip_version], type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as error:
        raise lookup_failure(host, ip_version, error) from error
    found = first_of_family(infos, ip_version)
    if found is None:
        raise lookup_failure(host, ip_version, "no such address")
    return found


def canonical(address: str) -> str:
    """A numeric address in canonical form (``Session.resolve`` returns that)."""
    return str(ipaddress.ip_address(address))


def names_now(
    addresses: Iterable[str], timeout: float = DEFAULT_NAME_TIMEOUT
) -> dict[str, str | None]:
    """The reverse names of ``addresses`` (None: none, or not within ``timeout``
    seconds), looked up at once, blocking for at most ``timeout`` in all.

    The system resolver blocks and cannot be interrupted: each lookup runs on a daemon
    thread, and one still running at the timeout is left behind (it never delays the
    program's exit).  Never raises.
    """
    unique = list(dict.fromkeys(addresses))
    names: dict[str, str | None] = dict.fromkeys(unique)

    def look_up(address: str) -> None:
        with contextlib.suppress(OSError, UnicodeError):
            names[address] = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)[0]

    threads = [threading.Thread(target=look_up, args=(address,), daemon=True) for address in unique]
    for thread in threads:
        thread.start()
    end = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return {
        address: names[address] if not thread.is_alive() else None
        for address, thread in zip(unique, threads, strict=True)
    }
