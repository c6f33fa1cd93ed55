"""icmplib's helpers: name resolution and the address tests, with icmplib's results.

:func:`resolve` asks for IPv4 addresses first and, when that fails and no family was
given, IPv6 ones; :func:`is_hostname` decides which strings ping and traceroute resolve
(the others are sent to as they are).  No asyncio at import: :func:`async_resolve`
imports it when called.
"""

from __future__ import annotations

import os
import re
import socket

from .exceptions import NameLookupError

__all__ = ["PID", "async_resolve", "is_hostname", "is_ipv4_address", "is_ipv6_address", "resolve"]

PID = os.getpid()
"""The process id when the package was imported (icmplib's name)."""

# `$` rather than `\Z`: like icmplib's tests, these accept one final newline.
_ONE_LABEL = r"[a-z0-9-]+"
_DOTTED_NAME = r"(?:[a-z0-9_-]+\.)+[a-z]+"
_HOSTNAME = re.compile(rf"(?:{_ONE_LABEL}|{_DOTTED_NAME})$", re.IGNORECASE)
_DOTTED_QUAD = re.compile(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}$")


def is_hostname(name: str) -> bool:
    """True if ``name`` looks like a host name or FQDN (a name ping resolves: one label,
    or dotted labels ending in letters).  Raises TypeError for a non-str."""
    return _HOSTNAME.match(name) is not None


def is_ipv4_address(address: str) -> bool:
    """True if ``address`` is four dot-separated numbers of 1-3 digits (not checked to
    be below 256, as in icmplib).  Raises TypeError for a non-str."""
    return _DOTTED_QUAD.match(address) is not None


def is_ipv6_address(address: str) -> bool:
    """True if ``address`` contains a colon.  Raises TypeError for a non-str."""
    return ":" in address


def _families(family: int | None) -> list[socket.AddressFamily]:
    """The address families to try in turn: IPv6 for 6, IPv4 for any other given
    family, IPv4 then IPv6 for none (0 counts as none, as in icmplib)."""
    if family == 6:
        return [socket.AF_INET6]
    if family:
        return [socket.AF_INET]
    return [socket.AF_INET, socket.AF_INET6]


def resolve(name: str, family: int | None = None) -> list[str]:
    """The addresses of ``name`` (a host name or FQDN), as the system resolver gives
    them: IPv6 for ``family`` 6, IPv4 for 4, IPv4 else IPv6 for None.

    Raises NameLookupError when it has none of the families tried.
    """
    for each in _families(family):
        try:
            infos = socket.getaddrinfo(name, None, family=each, type=socket.SOCK_DGRAM)
        except OSError:
            continue
        return [str(info[4][0]) for info in infos]
    raise NameLookupError(name)


async def async_resolve(name: str, family: int | None = None) -> list[str]:
    """:func:`resolve` without blocking the event loop (the loop's getaddrinfo).

    Raises NameLookupError like :func:`resolve`.
    """
    import asyncio  # here: the blocking paths never load asyncio

    loop = asyncio.get_running_loop()
    for each in _families(family):
        try:
            infos = await loop.getaddrinfo(name, None, family=each, type=socket.SOCK_DGRAM)
        except OSError:
            continue
        return [str(info[4][0]) for info in infos]
    raise NameLookupError(name)
