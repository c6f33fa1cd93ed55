"""Vantage points over ssh, the pure part: destinations, the ssh command, name lookups
on the remote host as text, and what ssh's exit status means.

A vantage point is a host reached with ``$BROKERPKG_SSH [USER@]HOST REMOTE-HELPER``
(:mod:`brokerpkg.remote` runs it; ``Session.over_ssh`` is the way in).  This module does
no I/O (it reads BROKERPKG_SSH from the environment) and imports no asyncio, so the
command line can check ``--from`` while parsing.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from . import defaults
from .errors import (
    HELPER_NAME,
    HelperExitedError,
    ProcessError,
    RemoteHelperNotFoundError,
    RemoteHelperPrivilegeError,
    SshError,
    looks_like_privilege_failure,
)
from .locate import capability_fix

SSH_ENVIRONMENT_VARIABLE = defaults.SSH_ENVIRONMENT_VARIABLE
DEFAULT_SSH = defaults.DEFAULT_SSH
SSH_FAILURE = 255
"""ssh's exit status for its own errors (unreachable, authentication refused, the
connection lost); any other status is the remote command's."""
COMMAND_NOT_FOUND = 127
COMMAND_NOT_EXECUTABLE = 126
"""What a POSIX shell exits with when it cannot find, or cannot run, the command."""
DEFAULT_REMOTE_FIX = "sudo brokerpkg setup"


class Destination(NamedTuple):
    """Where ssh goes: ``[USER@]HOST`` (``user`` None when not given)."""

    user: str | None
    host: str

    def __str__(self) -> str:
        return self.host if self.user is None else f"{self.user}@{self.host}"


def parse_destination(text: str) -> Destination:
    """``[USER@]HOST`` as ssh reads it (the user is what comes before the last ``@``).

    Raises TypeError for a non-str and ValueError for an empty user or host, spaces or
    control characters, and a user or host starting with ``-`` (ssh would take it for an
    option).
    """
    if not isinstance(text, str):
        raise TypeError(f"a vantage point is a str [USER@]HOST, got {type(text).__name__}")
    if not text or not text.isprintable() or any(char.isspace() for char in text):
        raise ValueError(f"bad vantage point {text!r}: write [USER@]HOST, without spaces")
    user, at, host = text.rpartition("@")
    if at and not user:
        raise ValueError(f"bad vantage point {text!r}: no user before '@'")
    if not host:
        raise ValueError(f"bad vantage point {text!r}: no host")
    for part in (user, host):
        if part.startswith("-"):
            raise ValueError(f"bad vantage point {text!r}: it must not start with '-'")
    return Destination(user or None, host)


def ssh_command(
    ssh: str | Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The words of the ssh command: ``ssh`` itself (a string is split as the shell
    splits it), else BROKERPKG_SSH from ``environ`` (default os.environ) when set and not
    empty, else DEFAULT_SSH.

    Raises TypeError for a sequence of anything but str, ValueError for an empty command
    or unbalanced quotes (naming BROKERPKG_SSH when it came from there).
    """
    source = "the ssh command"
    if ssh is None:
        value = (os.environ if environ is None else environ).get(SSH_ENVIRONMENT_VARIABLE, "")
        if not value.strip():
            return DEFAULT_SSH
        ssh, source = value, SSH_ENVIRONMENT_VARIABLE
    if isinstance(ssh, str):
        try:
            words = tuple(shlex.split(ssh))
        except ValueError as error:
            raise ValueError(f"{source} {ssh!r} cannot be split into words: {error}") from None
    else:
        words = tuple(ssh)
        if not all(isinstance(word, str) for word in words):
            raise TypeError("the ssh command must be a str or a sequence of str")
    if not words:
        raise ValueError(f"{source} is empty")
    return words


def helper_argv(ssh: Sequence[str], destination: Destination | str, helper: str) -> list[str]:
    """``ssh... [USER@]HOST HELPER``: ssh hands HELPER to the remote user's shell as a
    command line (a path, or any command that runs the helper there).

    Raises ValueError for an empty helper.
    """
    if not helper.strip():
        raise ValueError("the remote helper must not be empty")
    return [*ssh, str(destination), helper]


# ------------------------------------------------------------------------ exit status


def remote_privilege_fix(helper: str) -> str:
    """The one command that gives the remote helper its privilege, to run on the remote
    host: ``sudo brokerpkg setup`` for the helper found on PATH there, a capability for
    one named by path.  Never raises."""
    return DEFAULT_REMOTE_FIX if helper == HELPER_NAME else capability_fix(helper)


def exit_error(
    destination: str,
    helper: str,
    returncode: int | None,
    stderr_line: str | None,
    *,
    opened: bool,
) -> ProcessError:
    """The error for an ssh command that ended: ssh's own failure (status 255, or ssh
    killed by a signal) is an SshError, a remote shell that found no helper (127, 126)
    a RemoteHelperNotFoundError, a helper that lacked privilege (its status and line,
    as :func:`~brokerpkg.errors.looks_like_privilege_failure` judges them) a
    RemoteHelperPrivilegeError, anything else the helper's own exit
    (HelperExitedError).  ``opened`` says whether the helper had answered its feature
    queries.  Pure; never raises.
    """
    if returncode == SSH_FAILURE or (returncode is not None and returncode < 0):
        return SshError(destination, helper, returncode, stderr_line, opened=opened)
    if not opened and returncode in (COMMAND_NOT_FOUND, COMMAND_NOT_EXECUTABLE):
        return RemoteHelperNotFoundError(destination, helper, returncode, stderr_line)
    if not opened and looks_like_privilege_failure(returncode, stderr_line):
        return RemoteHelperPrivilegeError(
            destination, helper, stderr_line, remote_privilege_fix(helper)
        )
    return HelperExitedError(f"{helper} on {destination}", returncode, stderr_line)


# ------------------------------------------------------------------------ name lookups

LOOKUP_MARK = "@brokerpkg-lookup"
"""Starts each answer line of the lookup script (getent's output never does)."""
LOOKUP_BYTES = 2000
"""The part of one getent answer that is kept: each answer is one write, shorter than
a pipe's atomic write (PIPE_BUF, 4096), so answers written at once do not mix."""
LOOKUP_SCRIPT = (
    'q() { if [ "$2" = uname ]; then r=$(uname -n); else r=$(getent "$2" "$3" 2>/dev/null); '
    "fi; s=$?; "
    f'printf "%s %s %s %s\\n" {LOOKUP_MARK} "$1" "$s" '
    f'"$(printf %s "$r" | head -c {LOOKUP_BYTES} | tr "\\n" "\\t")"; }}; '
    'while [ "$#" -ge 3 ]; do q "$1" "$2" "$3" & shift 3; done; wait'
)
"""POSIX sh: for each (NUMBER, DATABASE, KEY) of its arguments, ``getent DATABASE KEY``
(``uname -n`` for the database ``uname``) in the background, then one line ``MARK NUMBER
STATUS ANSWER`` (the answer's lines joined by tabs).  No single quotes, so that
shlex.quote keeps it in one piece that any shell reads back unchanged."""

FORWARD_DATABASES = {None: "ahosts", 4: "ahostsv4", 6: "ahostsv6"}
"""getent's getaddrinfo databases, by IP version asked (None: any)."""
REVERSE_DATABASE = "hosts"
"""getent's gethostbyaddr database (``hosts ADDRESS``)."""
HOST_NAME_DATABASE = "uname"
"""Not getent's: the script runs ``uname -n`` for it (the key is not used)."""
GETENT_NOT_FOUND = 2


class Lookup(NamedTuple):
    """One question for the remote host: getent ``database`` ``key``."""

    database: str
    key: str


class LookupAnswer(NamedTuple):
    """getent's exit status and its output lines (tabs: line breaks)."""

    status: int
    lines: tuple[str, ...]


def check_lookup_key(key: str) -> None:
    """Refuse a key that getent would take for an option or that is not one word.

    Raises ValueError.
    """
    if not key or key.startswith("-") or not key.isprintable() or any(c.isspace() for c in key):
        raise ValueError(f"{key!r} is not a host name or address")


def lookup_command(lookups: Sequence[Lookup]) -> str:
    """The remote command line (for the user's login shell, through ssh) that runs
    every lookup at once with LOOKUP_SCRIPT under ``sh -c``.  Answers are numbered from
    0 in the order given.

    Raises ValueError for a key that check_lookup_key refuses.
    """
    words = ["sh", "-c", LOOKUP_SCRIPT, "sh"]
    for number, lookup in enumerate(lookups):
        check_lookup_key(lookup.key)
        words += [str(number), lookup.database, lookup.key]
    return shlex.join(words)


def parse_lookup_line(line: str, count: int) -> tuple[int, LookupAnswer] | None:
    """The answer number (0 to count - 1) and answer of one line of the lookup
    script's output, or None for a line that is not an answer.  Pure; never raises."""
    words = line.rstrip("\r\n").split(" ", 3)
    if len(words) < 3 or words[0] != LOOKUP_MARK:
        return None
    number, status = words[1], words[2]
    if not (number.isascii() and number.isdigit() and status.isascii() and status.isdigit()):
        return None
    if int(number) >= count:
        return None
    body = words[3] if len(words) == 4 else ""
    lines = tuple(part for part in body.split("\t") if part.strip())
    return int(number), LookupAnswer(int(status), lines)


def parse_lookup_output(text: str, count: int) -> dict[int, LookupAnswer]:
    """Every answer in the lookup script's output, by number (see
    :func:`parse_lookup_line`).  Pure; never raises."""
    answers: dict[int, LookupAnswer] = {}
    for line in text.splitlines():
        parsed = parse_lookup_line(line, count)
        if parsed is not None:
            answers[parsed[0]] = parsed[1]
    return answers


def first_address(answer: LookupAnswer, ip_version: int | None) -> tuple[str, int] | None:
    """The first address of ``ip_version`` (None: either) in getent ahosts' lines, and
    its version; IPv4-mapped IPv6 addresses (ahostsv6's answer for an IPv4-only name)
    are not IPv6 addresses.  None when there is none.  Pure; never raises."""
    for line in answer.lines:
        word = line.split(None, 1)[0] if line.split() else ""
        try:
            address = ipaddress.ip_address(word)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            continue
        if ip_version in (None, address.version):
            return str(address), address.version
    return None


def first_name(answer: LookupAnswer) -> str | None:
    """The name in getent hosts' first line (``ADDRESS NAME ALIASES...``), or None."""
    for line in answer.lines:
        words = line.split()
        if len(words) >= 2:
            return words[1]
    return None
