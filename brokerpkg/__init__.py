"""brokerpkg: network probes from Python through a small privileged helper.

``Session`` speaks the helper's line protocol (mtr-packet's, plus extensions) over a child
process or any byte stream; ``MtrPacket`` is a drop-in for the ``mtrpacket`` package, so
``import brokerpkg as mtrpacket`` runs mtrpacket programs unchanged.
"""

from ._version import __version__
from .errors import (
    FeatureNotSupportedError,
    HelperExitedError,
    HelperNotFoundError,
    HelperPrivilegeError,
    HostResolveError,
    InvalidProbeError,
    ProcessError,
    ProtocolError,
    ResponseTimeoutError,
    StateError,
)
from .locate import HelperLocation, locate_helper
from .protocol import Mpls, ProbeResult
from .session import MtrPacket, Session

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
]
