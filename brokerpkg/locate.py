"""Find the helper executable (``brokerpkg-helper``).

Search order, first match wins:

1. an explicit argument (a path, or a bare name looked up on PATH);
2. the ``BROKERPKG_HELPER`` environment variable (same rules);
3. a privileged ``brokerpkg-helper`` on PATH: setuid-root, or carrying a file capability
   that includes cap_net_raw (``security.capability`` extended attribute);
4. the copy installed inside the package (``brokerpkg/_helper/brokerpkg-helper``);
5. in a source checkout, the freshly built ``<repo>/helper/brokerpkg-helper``.

Only file metadata is read: nothing is executed here.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from .errors import HELPER_NAME, HelperNotFoundError

ENVIRONMENT_VARIABLE = "BROKERPKG_HELPER"
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


def _is_executable_file(path: Path) -> bool:
    """True if ``path`` is a regular file this process may execute."""
    return path.is_file() and os.access(path, os.X_OK)


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


def _search_path(name: str, environ: Mapping[str, str]) -> list[Path]:
    """Every executable file called ``name`` in the directories of PATH, in order."""
    found = []
    for directory in environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(directory or ".") / name
        if _is_executable_file(candidate):
            found.append(candidate)
    return found


def _resolve_named(
    value: str, found_by: str, origin: str, environ: Mapping[str, str]
) -> HelperLocation:
    """Resolve a user-given helper (a path, or a bare name looked up on PATH).

    Raises HelperNotFoundError when it does not name an executable file.
    """
    if os.sep in value:
        candidates = [Path(value)] if _is_executable_file(Path(value)) else []
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
    if _is_executable_file(path):
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
