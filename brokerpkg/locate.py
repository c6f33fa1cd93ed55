"""Find the helper executable (``brokerpkg-helper``).

Search order, first match wins:

1. an explicit argument (a path, or a bare name looked up on PATH);
2. the ``BROKERPKG_HELPER`` environment variable (same rules);
3. a privileged ``brokerpkg-helper`` on PATH: setuid-root, or carrying a file capability
   that includes cap_net_raw (``security.capability`` extended attribute);
4. the copy installed inside the package (``brokerpkg/_helper/brokerpkg-helper``);
5. in a source checkout, the freshly built ``<repo>/helper/brokerpkg-helper``.

PATH entries this process may not search are skipped, as ``command -v`` skips them
(:func:`unsearchable_path_entries` names them).  Only file metadata is read: nothing is
executed here.  :func:`privilege_fix` says how to give a helper that lacked privilege
what it needs: ``sudo brokerpkg setup`` (named as the user runs brokerpkg) for a helper
that was searched for, ``setcap`` for one the caller named.
"""

from __future__ import annotations

import grp
import os
import shlex
import stat
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from . import defaults
from .defaults import HELPER_MODE_CAPABILITY, SETUP_GROUP, STATE_DIR, STATE_DIR_MODE
from .errors import HELPER_NAME, HelperExitedError, HelperNotFoundError, HelperPrivilegeError

ENVIRONMENT_VARIABLE = defaults.ENVIRONMENT_VARIABLE
CAPABILITY_XATTR = "security.capability"
CAP_NET_RAW = 13

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGED_HELPER = PACKAGE_DIR / "_helper" / HELPER_NAME
CHECKOUT_HELPER = PACKAGE_DIR.parent / "helper" / HELPER_NAME

# How a helper was found (HelperLocation.found_by).
FOUND_BY_ARGUMENT = "argument"
FOUND_BY_ENVIRONMENT = "environment"
FOUND_BY_PATH = "path"
FOUND_BY_PACKAGE = "package"
FOUND_BY_CHECKOUT = "checkout"

# What privilege the file carries (HelperLocation.privilege).
PRIVILEGE_SETUID = "setuid"
PRIVILEGE_CAPABILITY = "capability"
PRIVILEGE_NONE = "none"


class HelperLocation(NamedTuple):
    """A helper that was found: where, how (``found_by``), and what privilege it carries.

    ``found_by`` is one of argument, environment, path, package, checkout;
    ``privilege`` one of setuid, capability, none; ``reason`` a sentence for people.
    """

    path: str
    found_by: str
    privilege: str
    reason: str


SUDO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH a command run with sudo gets (sudo's usual secure_path)."""
PROGRAM_NAME = "brokerpkg"


def is_executable_file(path: Path) -> bool:
    """True if ``path`` is a regular file this process may execute (False when its
    metadata cannot be read, e.g. a directory on the way may not be searched)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode) and os.access(path, os.X_OK)
    except (OSError, ValueError):
        return False


def _capability_grants_net_raw(blob: bytes) -> bool:
    """True if a ``security.capability`` value has cap_net_raw in its permitted set.

    The value is ``struct vfs_cap_data``: a little-endian magic word, then the permitted
    and inheritable 32-bit words of the low capability set (and more words after).
    """
    if len(blob) < 12:
        return False
    _magic, permitted_low, _inheritable_low = struct.unpack_from("<III", blob)
    return bool(permitted_low & (1 << CAP_NET_RAW))


def helper_privilege(path: str | os.PathLike[str]) -> str:
    """Return ``setuid`` (setuid and owned by root), ``capability`` (file capability
    with cap_net_raw) or ``none``.  Unreadable metadata counts as ``none``; never raises
    for a missing file.
    """
    try:
        info = os.stat(path)
    except OSError:
        return PRIVILEGE_NONE
    if info.st_mode & stat.S_ISUID and info.st_uid == 0:
        return PRIVILEGE_SETUID
    try:
        blob = os.getxattr(path, CAPABILITY_XATTR)
    except OSError:
        return PRIVILEGE_NONE
    return PRIVILEGE_CAPABILITY if _capability_grants_net_raw(blob) else PRIVILEGE_NONE


def _path_directories(environ: Mapping[str, str]) -> list[str]:
    """The directories of PATH, in order (an empty entry is the current directory)."""
    return [directory or "." for directory in environ.get("PATH", os.defpath).split(os.pathsep)]


def _may_not_search(directory: str, name: str) -> bool:
    """True if looking ``name`` up in ``directory`` is refused (EACCES): the directory,
    or one on the way to it, may not be searched by this process."""
    try:
        os.stat(Path(directory) / name)
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _search_path(name: str, environ: Mapping[str, str]) -> list[Path]:
    """Every executable file called ``name`` in the directories of PATH, in order;
    directories that may not be searched are skipped, as ``command -v`` skips them."""
    candidates = (Path(directory) / name for directory in _path_directories(environ))
    return [candidate for candidate in candidates if is_executable_file(candidate)]


def unsearchable_path_entries(
    environ: Mapping[str, str] | None = None, name: str = HELPER_NAME
) -> list[str]:
    """The PATH entries in which this process may not look ``name`` up (permission
    denied), in PATH order: the helper search skips them.  Never raises."""
    env = os.environ if environ is None else environ
    return [directory for directory in _path_directories(env) if _may_not_search(directory, name)]


def _resolve_named(
    value: str, found_by: str, origin: str, environ: Mapping[str, str]
) -> HelperLocation:
    """Resolve a user-given helper (a path, or a bare name looked up on PATH).

    Raises HelperNotFoundError when it does not name an executable file.
    """
    if os.sep in value:
        candidates = [Path(value)] if is_executable_file(Path(value)) else []
    else:
        candidates = _search_path(value, environ)[:1]
    if not candidates:
        raise HelperNotFoundError(
            f"helper {value!r} given by {origin} is not an executable file",
            [f"{origin}: {value}"],
        )
    path = str(candidates[0].absolute())
    return HelperLocation(path, found_by, helper_privilege(path), f"given by {origin}")


def _privileged_on_path(environ: Mapping[str, str], searched: list[str]) -> HelperLocation | None:
    """The first setuid-root or cap_net_raw ``brokerpkg-helper`` on PATH, or None."""
    searched.extend(
        f"PATH: {directory} (skipped: you may not search it)"
        for directory in unsearchable_path_entries(environ)
    )
    for candidate in _search_path(HELPER_NAME, environ):
        privilege = helper_privilege(candidate)
        if privilege != PRIVILEGE_NONE:
            return HelperLocation(
                str(candidate.absolute()),
                FOUND_BY_PATH,
                privilege,
                f"privileged ({privilege}) copy on PATH",
            )
        searched.append(f"PATH: {candidate} (skipped: neither setuid-root nor cap_net_raw)")
    searched.append(f"PATH: no privileged {HELPER_NAME}")
    return None


def _built_copy(
    path: Path, found_by: str, reason: str, searched: list[str]
) -> HelperLocation | None:
    """``path`` as a HelperLocation if it is an executable file, else None (noted)."""
    if is_executable_file(path):
        return HelperLocation(str(path), found_by, helper_privilege(path), reason)
    searched.append(f"{found_by}: {path}")
    return None


def _is_source_checkout() -> bool:
    """True when the package runs from a source tree (pyproject.toml beside it)."""
    return (PACKAGE_DIR.parent / "pyproject.toml").is_file()


def locate_helper(
    explicit: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> HelperLocation:
    """Find the helper, in the order given in this module's docstring.

    ``environ`` defaults to ``os.environ`` (for PATH and BROKERPKG_HELPER).

    Raises HelperNotFoundError (a ProcessError) when an explicit argument or
    BROKERPKG_HELPER does not name an executable file, or when nothing was found; the
    message lists every place that was looked at.
    """
    env = os.environ if environ is None else environ
    if explicit is not None:
        return _resolve_named(os.fspath(explicit), FOUND_BY_ARGUMENT, "argument", env)
    if env.get(ENVIRONMENT_VARIABLE):
        return _resolve_named(
            env[ENVIRONMENT_VARIABLE], FOUND_BY_ENVIRONMENT, ENVIRONMENT_VARIABLE, env
        )
    searched = [f"{ENVIRONMENT_VARIABLE}: not set"]
    found = _privileged_on_path(env, searched) or _built_copy(
        PACKAGED_HELPER, FOUND_BY_PACKAGE, "installed with the package", searched
    )
    if found is None and _is_source_checkout():
        found = _built_copy(
            CHECKOUT_HELPER, FOUND_BY_CHECKOUT, "built in the source checkout", searched
        )
    if found is None:
        raise HelperNotFoundError(f"cannot find {HELPER_NAME}", searched)
    return found


# ------------------------------------------------------------------ how to fix a helper


def _first_on(path: str, name: str) -> str | None:
    """The first executable ``name`` in the directories of ``path``, or None."""
    found = _search_path(name, {"PATH": path})
    return str(found[0]) if found else None


def _same_file(first: str | None, second: str) -> bool:
    try:
        return first is not None and os.path.samefile(first, second)
    except OSError:
        return False


def _found_by_every_user(package_parent: Path) -> bool:
    """True if this interpreter, run by root (sudo), imports the package from
    ``package_parent`` without help: it is one of the interpreter's own site
    directories, not the user's site or a PYTHONPATH entry."""
    # imported here, on the error path only: start-up pays for neither
    import site  # noqa: PLC0415
    import sysconfig  # noqa: PLC0415

    directories = [*site.getsitepackages(), *sysconfig.get_paths().values()]
    return any(_same_file(directory, str(package_parent)) for directory in directories)


def setup_command(
    argv0: str | None = None, executable: str | None = None, package_dir: Path = PACKAGE_DIR
) -> str:
    """The ``brokerpkg setup`` command as the user runs brokerpkg, for ``sudo`` to run.

    ``argv0`` (default ``sys.argv[0]``) tells how this process was started: the
    ``brokerpkg`` script (named ``brokerpkg`` when sudo's PATH finds that very file,
    else by its absolute path) or ``python3 -m brokerpkg`` (the interpreter named
    ``python3`` when sudo's PATH finds that very interpreter, else by its path, as
    ``executable``, default ``sys.executable``, says).  When root's run of that
    interpreter would not find the package in ``package_dir`` by itself (a user's own
    site, PYTHONPATH, a checkout), the command sets PYTHONPATH through ``env``.  Any
    other program (a library user) gets ``brokerpkg setup``.  Never raises.
    """
    program = sys.argv[0] if argv0 is None else argv0
    python = sys.executable if executable is None else executable
    path = Path(program)
    if path.name == "__main__.py" and path.parent.name == PROGRAM_NAME and python:
        short = "python3" if _same_file(_first_on(SUDO_PATH, "python3"), python) else python
        command = f"{shlex.quote(short)} -m {PROGRAM_NAME} setup"
    elif path.name == PROGRAM_NAME and os.sep in program and is_executable_file(path):
        if _same_file(_first_on(SUDO_PATH, PROGRAM_NAME), program):
            command = f"{PROGRAM_NAME} setup"
        else:
            command = f"{shlex.quote(os.path.abspath(program))} setup"
    else:
        return f"{PROGRAM_NAME} setup"
    if not _found_by_every_user(package_dir.parent):
        command = f"env PYTHONPATH={shlex.quote(str(package_dir.parent))} {command}"
    return command


def capability_fix(path: str) -> str:
    """The command that makes the helper file at ``path`` lend cap_net_raw.

    The capability alone is not enough for callers who are not root: the helper keeps
    their rate limit in SETUP_GROUP's state directory, which it opens set-group-id
    (brokerpkg-helper(8), PRIVILEGES): where the group or the directory is missing
    (``brokerpkg setup`` never ran), the command makes them first.  chown clears file
    capabilities, so setcap comes last.
    """
    quoted = shlex.quote(path)
    steps = (
        f"chown root:{SETUP_GROUP} {quoted} && chmod {HELPER_MODE_CAPABILITY:o} {quoted}"
        f" && setcap cap_net_raw+ep {quoted}"
    )
    if not _state_provisioned():
        steps = (
            f"groupadd --system {SETUP_GROUP} && install -d -o root -g {SETUP_GROUP}"
            f" -m {STATE_DIR_MODE:o} {STATE_DIR} && {steps}"
        )
    return f"sudo sh -c {shlex.quote(steps)}"


def _state_provisioned() -> bool:
    """True when SETUP_GROUP and the state directory exist (``brokerpkg setup`` ran)."""
    try:
        grp.getgrnam(SETUP_GROUP)
    except KeyError:
        return False
    return os.path.isdir(STATE_DIR)


def privilege_fix(location: HelperLocation | None, path: str | None = None) -> str:
    """The one command that gives a helper without raw-socket privilege what it needs.

    A helper the caller named (``location`` found by argument or environment, or
    ``path`` of a helper run as a command) gets :func:`capability_fix` for that file;
    a helper that was searched for (or nothing known) gets ``sudo brokerpkg setup``,
    after which the installed privileged copy on PATH is found first.  Never raises.
    """
    if location is not None and location.found_by in (FOUND_BY_ARGUMENT, FOUND_BY_ENVIRONMENT):
        return capability_fix(location.path)
    if location is None and path is not None:
        return capability_fix(path)
    return f"sudo {setup_command()}"


def privilege_error(
    exited: HelperExitedError, location: HelperLocation | None, argv: Sequence[str] | None
) -> HelperPrivilegeError:
    """The error of a helper that exited at start for lack of privilege: it names the
    helper (where it was found, else the last word of the command ``argv`` that ran
    it, else a placeholder) and the one command that fixes it (:func:`privilege_fix`;
    a command's last word counts as the helper the caller named when it is a file).
    Never raises."""
    named = None
    if location is not None:
        path = location.path
    elif argv:
        path = argv[-1]
        named = path if os.path.isfile(path) else None
    else:
        path = f"/path/to/{HELPER_NAME}"
    return HelperPrivilegeError(path, exited.stderr_line, privilege_fix(location, named))
