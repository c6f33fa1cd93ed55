"""brokerpkg: network probes from Python through a small privileged helper.

``Session`` speaks the helper's line protocol (mtr-packet's, plus extensions) over a child
process or any byte stream, with rich results (:class:`brokerpkg.protocol.ProbeResult`).
``MtrPacket``, ``ProbeResult`` (mtrpacket's five fields), ``Mpls``, the errors and
``DnsCacheType`` are the ``mtrpacket`` package's names (:mod:`brokerpkg.mtrpacket_compat`),
so ``import brokerpkg as mtrpacket`` runs mtrpacket programs unchanged, and
``from brokerpkg import icmplib`` (:mod:`brokerpkg.icmplib`) runs icmplib programs.

On top of a session (or opening their own), async-first: :func:`ping`,
:func:`multiping` and :func:`multiping_iter` (:mod:`brokerpkg.ping`), :func:`traceroute`
(:mod:`brokerpkg.trace`), the mtr-style :func:`monitor` and :func:`monitor_flows`
(:mod:`brokerpkg.mtr`), multipath traces :func:`multipath_trace` (:mod:`brokerpkg.multipath`
over the pure MDA engine of :mod:`brokerpkg.mda`), pure statistics in
:mod:`brokerpkg.stats`, the traces' waiting and retry rules in :mod:`brokerpkg.waiting`
(:class:`Wait`), and blocking versions in :mod:`brokerpkg.sync` (probe, ping, multiping
and traceroute on :mod:`brokerpkg.blocking`, without asyncio).  What they share lives
in :mod:`brokerpkg.answers` (what the network said: :class:`Answer`),
:mod:`brokerpkg.options` (their probe options, declared once) and :mod:`brokerpkg.tasks`
(sessions, name resolution, task groups, progress events).
Their results are frozen dataclasses with ``to_dict()`` for JSON.  As in icmplib,
``brokerpkg.ping`` is the function; its module is reached with ``from brokerpkg.ping
import ...``.

``import brokerpkg`` itself is cheap: each public name (and each submodule) is imported
on first use (PEP 562), so a program that needs only the pure parts, or the command line
for one subcommand, does not pay for asyncio and the rest.
"""

import importlib
import sys
import types

from ._version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)

if TYPE_CHECKING:
    from . import stats, sync
    from .answers import Answer
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
        RemoteHelperNotFoundError,
        RemoteHelperPrivilegeError,
        ResponseTimeoutError,
        SshError,
        StateError,
        TimeExceeded,
    )
    from .locate import HelperLocation, locate_helper
    from .mtr import FlowsReport, HopStats, MonitorReport, ResponderStats, monitor, monitor_flows
    from .mtrpacket_compat import DnsCacheType, MtrPacket, ProbeResult
    from .multipath import MultipathResult, multipath_trace
    from .ping import multiping, multiping_iter, ping
    from .protocol import Mpls
    from .resolve import NameResolver
    from .results import Hop, PingResult, ProgressEvent, Responder, TraceResult
    from .session import Session
    from .trace import traceroute
    from .waiting import Wait

__all__ = [
    "DnsCacheType",
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
    "RemoteHelperNotFoundError",
    "RemoteHelperPrivilegeError",
    "ResponseTimeoutError",
    "Session",
    "SshError",
    "StateError",
    "__version__",
    "locate_helper",
    # high level
    "Answer",
    "DestinationUnreachable",
    "FlowsReport",
    "Hop",
    "HopStats",
    "MonitorReport",
    "MultipathResult",
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
    "Wait",
    "monitor",
    "monitor_flows",
    "multipath_trace",
    "multiping",
    "multiping_iter",
    "ping",
    "stats",
    "sync",
    "traceroute",
]

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "DestinationUnreachable",
            "FeatureNotSupportedError",
            "HelperExitedError",
            "HelperNotFoundError",
            "HelperPrivilegeError",
            "HostResolveError",
            "InvalidProbeError",
            "NetworkError",
            "NoReplyError",
            "ProbeSendError",
            "ProcessError",
            "ProtocolError",
            "RemoteHelperNotFoundError",
            "RemoteHelperPrivilegeError",
            "ResponseTimeoutError",
            "SshError",
            "StateError",
            "TimeExceeded",
        ),
        "errors",
    ),
    **dict.fromkeys(("HelperLocation", "locate_helper"), "locate"),
    **dict.fromkeys(
        ("FlowsReport", "HopStats", "MonitorReport", "ResponderStats", "monitor", "monitor_flows"),
        "mtr",
    ),
    **dict.fromkeys(("MultipathResult", "multipath_trace"), "multipath"),
    "Answer": "answers",
    **dict.fromkeys(("multiping", "multiping_iter", "ping"), "ping"),
    **dict.fromkeys(("Hop", "PingResult", "ProgressEvent", "Responder", "TraceResult"), "results"),
    **dict.fromkeys(("DnsCacheType", "MtrPacket", "ProbeResult"), "mtrpacket_compat"),
    "Mpls": "protocol",
    "NameResolver": "resolve",
    "Session": "session",
    "traceroute": "trace",
    "Wait": "waiting",
}
"""Public name -> the submodule that defines it (imported on first use)."""

_SUBMODULES = frozenset(
    {
        "addresses",
        "answers",
        "blocking",
        "engine",
        "errors",
        "icmplib",
        "locate",
        "mda",
        "mtr",
        "mtrpacket_compat",
        "multipath",
        "options",
        "protocol",
        "remote",
        "resolve",
        "results",
        "session",
        "ssh",
        "stats",
        "sync",
        "tasks",
        "trace",
        "transport",
        "waiting",
    }
)
"""Submodules reachable as attributes without importing them first (``brokerpkg.stats``;
the package used to import them all eagerly).  ``ping`` is not among them: the name is
the function."""


if not TYPE_CHECKING:  # type checkers see the imports above; an unknown name stays an error

    def __getattr__(name: str) -> object:
        """Import a public name or submodule on first use (PEP 562); raises AttributeError
        for any other name, and what the submodule's import raises."""
        if name in _EXPORTS:
            value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        elif name in _SUBMODULES:
            value = importlib.import_module(f"{__name__}.{name}")
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__, *_SUBMODULES})


class _Package(types.ModuleType):
    """The package's module type: keeps ``brokerpkg.ping`` the function.

    Importing a submodule sets the package's attribute of that name to the submodule;
    for ``brokerpkg.ping`` that would replace the function ``ping`` with its module
    (the package used to import the function after the module, so it won).
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name == "ping" and isinstance(value, types.ModuleType):
            value = value.ping
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
