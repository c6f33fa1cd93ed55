"""Exceptions raised by brokerpkg.

The first three names and meanings are the ones of the ``mtrpacket`` package, so that
programs written for it catch the same errors here:

- :class:`StateError`: the session is used in a state that does not allow it (not open,
  already open, closed).
- :class:`HostResolveError`: a host name could not be resolved to an address.
- :class:`ProcessError`: the helper process cannot serve requests (it is missing, lacks
  privileges, exited, stopped answering, or said something we cannot understand).

The session's errors subclass one of those or :class:`ValueError`, so a broad
``except`` written for mtrpacket still catches them.  The high-level tools add two more
branches, split as icmplib splits them: :class:`NetworkError` (and its subclasses) for
answers from the network, raised only on request by ``raise_for_status()``, and
:class:`ProbeSendError` (an :class:`OSError`) when the kernel refused to send a probe.
This module is pure: no I/O, no asyncio.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import defaults

if TYPE_CHECKING:
    from .protocol import ProbeResult

HELPER_NAME = defaults.HELPER_NAME


class StateError(Exception):
    """The session is not in a state that allows the call (not open, already open, closed)."""


class HostResolveError(Exception):
    """A host name could not be resolved to an address of the requested family."""


class ProcessError(Exception):
    """The helper process cannot serve requests."""


class HelperNotFoundError(ProcessError):
    """No helper executable was found; ``searched`` lists every place that was looked at."""

    def __init__(self, message: str, searched: Sequence[str] = ()) -> None:
        self.searched: tuple[str, ...] = tuple(searched)
        if self.searched:
            message = message + "; looked at: " + "; ".join(self.searched)
        super().__init__(message)


FIX_SEPARATOR = "; fix: "
"""What separates the cause from the fix in the helper's no-privilege line (and ours)."""
DEFAULT_PRIVILEGE_FIX = "sudo brokerpkg setup"


def privilege_cause(stderr_line: str | None) -> str | None:
    """What a helper's no-privilege line says went wrong, without its program-name
    prefix (``NAME: ``) and without the fix it suggests (from ``; fix: ``).

    None when there is no line or it says nothing else.
    """
    if not stderr_line:
        return None
    cause = stderr_line.split(FIX_SEPARATOR, 1)[0].strip()
    name, colon, rest = cause.partition(": ")
    if colon and name and not any(space in name for space in " \t") and rest:
        cause = rest.strip()
    return cause or None


_PRIVILEGE_WORDS = re.compile(
    r"cap_net_raw|setcap|setuid|privilege|ping_group_range|raw socket"
    r"|permission denied|operation not permitted",
    re.IGNORECASE,
)


def looks_like_privilege_failure(returncode: int | None, stderr_line: str | None) -> bool:
    """True if a helper that exited at start lacked the privilege to open its sockets.

    Our helper and mtr-packet both exit with status 1 and say so on stderr (a shell that
    cannot run a file says "Permission denied" too, but exits 126).
    """
    return returncode == 1 and bool(stderr_line and _PRIVILEGE_WORDS.search(stderr_line))


class HelperPrivilegeError(ProcessError):
    """The helper started but could not open its sockets for lack of privilege.

    ``path`` is the helper that was run, ``stderr_line`` what it said, ``cause`` the
    part of it that says what went wrong (see :func:`privilege_cause`) and ``fix`` the
    one command that grants the privilege; the message says the cause and the fix once.
    """

    def __init__(
        self, path: str, stderr_line: str | None = None, fix: str = DEFAULT_PRIVILEGE_FIX
    ) -> None:
        self.path = path
        self.stderr_line = stderr_line
        self.cause = privilege_cause(stderr_line)
        self.fix = fix
        said = f": {self.cause}" if self.cause else ""
        super().__init__(f"helper {path} cannot open its sockets{said}{FIX_SEPARATOR}`{fix}`")


def describe_exit_status(returncode: int | None) -> str:
    """Describe a process exit status the way a person reads it."""
    if returncode is None:
        return "closed its output"
    if returncode < 0:
        return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class HelperExitedError(ProcessError):
    """The helper exited (or closed its output) while requests were outstanding.

    ``returncode`` is the exit status (negative: killed by that signal; None: unknown or
    still running) and ``stderr_line`` the last line it wrote on standard error, if any.
    """

    def __init__(self, helper: str, returncode: int | None, stderr_line: str | None = None) -> None:
        self.helper = helper
        self.returncode = returncode
        self.stderr_line = stderr_line
        message = f"helper {helper} {describe_exit_status(returncode)}"
        if stderr_line:
            message += f"; its last error line: {stderr_line!r}"
        super().__init__(message)


class SshError(HelperExitedError):
    """ssh itself failed on the way to a vantage point: its exit status 255 (the host
    unreachable, the authentication refused, the connection lost; a remote helper
    killed by a signal ends so too) or ssh killed by a signal.

    ``destination`` is the vantage point (``[USER@]HOST``), ``helper`` the remote helper
    command, ``returncode`` ssh's exit status, ``stderr_line`` the last line ssh (or the
    remote side) wrote on standard error, ``opened`` whether the helper had answered.
    """

    def __init__(
        self,
        destination: str,
        helper: str,
        returncode: int | None,
        stderr_line: str | None = None,
        *,
        opened: bool = False,
    ) -> None:
        super().__init__(f"{helper} on {destination}", returncode, stderr_line)
        self.destination = destination
        self.opened = opened
        said = stderr_line or "ssh said nothing"
        if returncode is not None and returncode < 0:
            status = f"ssh {describe_exit_status(returncode)}"
        else:
            status = f"ssh {describe_exit_status(returncode)}, its own failure"
        if opened:
            message = f"the ssh connection to {destination} ended ({status}): {said}"
        else:
            message = f"ssh to {destination} failed ({status}): {said}"
        Exception.__init__(self, message)


class RemoteHelperNotFoundError(HelperNotFoundError):
    """The remote shell of a vantage point found no helper to run (it exited with 127,
    or 126: not executable).  ``destination``, ``helper``, ``returncode`` and
    ``stderr_line`` (the remote shell's message) as in :class:`SshError`."""

    def __init__(
        self, destination: str, helper: str, returncode: int, stderr_line: str | None = None
    ) -> None:
        self.destination = destination
        self.helper = helper
        self.returncode = returncode
        self.stderr_line = stderr_line
        said = f": {stderr_line}" if stderr_line else ""
        super().__init__(
            f"no helper {helper} on {destination} (the remote shell exited with status "
            f"{returncode}){said}"
        )


class RemoteHelperPrivilegeError(HelperPrivilegeError):
    """A vantage point's helper started but could not open its sockets; ``fix`` is the
    command to run there (``destination``).  The message says the remote helper's cause
    and the fix once."""

    def __init__(
        self,
        destination: str,
        helper: str,
        stderr_line: str | None = None,
        fix: str = DEFAULT_PRIVILEGE_FIX,
    ) -> None:
        super().__init__(f"{helper} on {destination}", stderr_line, fix)
        self.destination = destination
        said = f": {self.cause}" if self.cause else ""
        Exception.__init__(
            self,
            f"helper {helper} on {destination} cannot open its sockets{said}"
            f"{FIX_SEPARATOR}on {destination}, `{fix}`",
        )


class ResponseTimeoutError(ProcessError):
    """The helper did not answer within the Python-side deadline (timeout + grace).

    ``helper_messages`` lists error lines the helper printed meanwhile that could not be
    attributed to any request (token-0 errors, garbage); they often explain the silence.
    """

    def __init__(self, what: str, deadline: float, helper_messages: Sequence[str] = ()) -> None:
        self.deadline = deadline
        self.helper_messages: tuple[str, ...] = tuple(helper_messages)
        message = f"no answer from the helper to {what} within {deadline:g} s"
        if self.helper_messages:
            quoted = ", ".join(repr(line) for line in self.helper_messages)
            message += f"; meanwhile the helper said, without a request token: {quoted}"
        else:
            message += "; the helper printed no unattributed error meanwhile"
        super().__init__(message)


class ProtocolError(ProcessError):
    """The helper sent a reply that does not follow the protocol."""


class InvalidProbeError(ValueError):
    """The helper refused a probe with ``invalid-argument``; ``reason`` says why."""

    def __init__(self, reason: str | None, request: str = "") -> None:
        self.reason = reason
        why = reason if reason else "no reason given"
        message = f"the helper refused the probe: invalid-argument ({why})"
        if request:
            message += f"; request was {request!r}"
        super().__init__(message)


class FeatureNotSupportedError(InvalidProbeError):
    """A probe option needs a helper feature that this helper does not advertise.

    Raised before anything is sent.  ``feature`` is the check-support name and
    ``value`` what the helper answered for it.
    """

    def __init__(self, feature: str, value: str, option: str) -> None:
        self.feature = feature
        self.value = value
        self.option = option
        ValueError.__init__(
            self,
            f"{option} needs the helper feature {feature!r}, which this helper does not "
            f"support (check-support feature {feature}: {value})",
        )
        self.reason = None


# ----------------------------------------------------------------- network answers


class NetworkError(Exception):
    """An answer from the network (or its silence) says the destination was not reached.

    Raised only by ``raise_for_status()`` / :func:`brokerpkg.answers.raise_for_probe`,
    never by the probing functions themselves.  ``host`` is the host as given,
    ``result`` the probe that shows it (None when the error sums up several probes).
    """

    def __init__(
        self, message: str, *, host: str | None = None, result: ProbeResult | None = None
    ) -> None:
        super().__init__(message)
        self.host = host
        self.result = result

    @property
    def responder(self) -> str | None:
        """The address that answered, if one did."""
        return None if self.result is None else self.result.responder


class DestinationUnreachable(NetworkError):
    """ICMP destination unreachable (the helper's ``no-route`` with an address)."""


class TimeExceeded(NetworkError):
    """ICMP time exceeded: the TTL ran out before the destination (``ttl-expired``)."""


class NoReplyError(NetworkError):
    """Nothing answered within the timeout."""


class ProbeSendError(OSError):
    """The kernel (or the helper's capacity) refused to send a probe: nothing was sent.

    ``errno`` is the matching errno value when the helper's reply word implies one
    (``no-route`` EHOSTUNREACH, ``network-down`` ENETDOWN, ``permission-denied`` EACCES,
    ``address-in-use`` EADDRINUSE, ``address-not-available`` EADDRNOTAVAIL,
    ``unexpected-error errno N`` N), else None.  ``word`` is the reply word and
    ``result`` the whole ProbeResult.
    """

    def __init__(self, code: int | None, message: str, word: str, result: ProbeResult) -> None:
        if code is None:
            super().__init__(message)
        else:
            super().__init__(code, message)
        self.word = word
        self.result = result
