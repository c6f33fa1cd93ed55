"""brokerpkg: network probes from Python through a small privileged helper.

``Session`` speaks the helper's line protocol (mtr-packet's, plus extensions) over a child
process or any byte stream; ``MtrPacket`` is a drop-in for the ``mtrpacket`` package, so
``import brokerpkg as mtrpacket`` runs mtrpacket programs unchanged.

On top of a session (or opening their own), async-first: :func:`ping`,
:func:`multiping` and :func:`multiping_iter` (:mod:`brokerpkg.ping`), :func:`traceroute`
(:mod:`brokerpkg.trace`), the mtr-style :func:`monitor` (:mod:`brokerpkg.mtr`), pure
statistics in :mod:`brokerpkg.stats`, and blocking wrappers in :mod:`brokerpkg.sync`.
Their results are frozen dataclasses with ``to_dict()`` for JSON.  As in icmplib,
``brokerpkg.ping`` is the function; its module is reached with ``from brokerpkg.ping
import ...``.
"""

from . import stats, sync
from ._version import __version__
from .errors import (
    DestinationUnreachable,
    FeatureNotSupportedError,
    HelperExitedError,
    HelperNotFoundError,
    HelperPrivilegeError,
    HostResolveError,
    InvalidProbeError,
    NetworkError,
    NoReplyError,
    ProbeSendError,
    ProcessError,
    ProtocolError,
    ResponseTimeoutError,
    StateError,
    TimeExceeded,
)
from .locate import HelperLocation, locate_helper
from .mtr import HopStats, MonitorReport, ResponderStats, monitor
from .ping import (
    Answer,
    PingResult,
    ProgressEvent,
    multiping,
    multiping_iter,
    ping,
)
from .protocol import Mpls, ProbeResult
from .session import MtrPacket, Session
from .trace import Hop, NameResolver, Responder, TraceResult, traceroute

__all__ = [
    "FeatureNotSupportedError",
    "HelperExitedError",
    "HelperLocation",
    "HelperNotFoundError",
    "HelperPrivilegeError",
    "HostResolveError",
    "InvalidProbeError",
    "Mpls",
    "MtrPacket",
    "ProbeResult",
    "ProcessError",
    "ProtocolError",
    "ResponseTimeoutError",
    "Session",
    "StateError",
    "__version__",
    "locate_helper",
    # high level
    "Answer",
    "DestinationUnreachable",
    "Hop",
    "HopStats",
    "MonitorReport",
    "NameResolver",
    "NetworkError",
    "NoReplyError",
    "PingResult",
    "ProbeSendError",
    "ProgressEvent",
    "Responder",
    "ResponderStats",
    "TimeExceeded",
    "TraceResult",
    "monitor",
    "multiping",
    "multiping_iter",
    "ping",
    "stats",
    "sync",
    "traceroute",
]
