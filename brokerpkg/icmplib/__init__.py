"""icmplib's high-level API through brokerpkg's helper: ``from brokerpkg import icmplib``.

The functions, result classes and exceptions of icmplib 3 with the same names,
signatures, defaults, units (milliseconds) and rounding, so that an icmplib program
runs unchanged -- without root, without ``ping_group_range`` and without raw-socket
rights for the interpreter: the helper holds the privilege (``privileged=`` is
accepted and changes nothing).

- :func:`ping`, :func:`multiping`, :func:`traceroute` (blocking, through
  :mod:`brokerpkg.sync`), :func:`async_ping`, :func:`async_multiping` and
  :func:`async_traceroute` (which icmplib lacks: every TTL in flight at once);
- :func:`resolve`, :func:`async_resolve`, :func:`is_hostname`,
  :func:`is_ipv4_address`, :func:`is_ipv6_address`, ``PID``;
- :class:`Host`, :class:`Hop`, :class:`ICMPReply` and icmplib's exceptions
  (:mod:`.exceptions`).

Not offered: icmplib's socket layer (ICMPv4Socket, ICMPv6Socket, AsyncSocket,
ICMPRequest), which opens raw sockets in the calling process -- what the helper is
there to avoid.  Where the results differ from icmplib's, the functions say so
(requests are paced by ``interval`` without waiting for replies; traceroute sends
every TTL at once).  Importing this package loads no asyncio.
"""

from . import exceptions
from ._probing import async_multiping, async_ping, async_traceroute, multiping, ping, traceroute
from .exceptions import *  # noqa: F403 - icmplib's exceptions, listed in exceptions.__all__
from .models import Hop, Host, ICMPReply
from .utils import PID, async_resolve, is_hostname, is_ipv4_address, is_ipv6_address, resolve

__all__ = [
    "ping",
    "async_ping",
    "multiping",
    "async_multiping",
    "traceroute",
    "async_traceroute",
    "resolve",
    "async_resolve",
    "is_hostname",
    "is_ipv4_address",
    "is_ipv6_address",
    "PID",
    "Host",
    "Hop",
    "ICMPReply",
]
__all__ += exceptions.__all__
