"""``brokerpkg setup``: install a privileged helper once, where package upgrades leave it.

Run as root, it copies the package's helper (or ``--helper PATH``) to a directory on
PATH (default :data:`~brokerpkg.defaults.SETUP_DEST`, ``--dest DIR``) as the file
``brokerpkg-helper``, owned by root and the group
:data:`~brokerpkg.defaults.SETUP_GROUP` and set-group-id to it, with the file
capability cap_net_raw+ep (``--setuid``: setuid root instead, for filesystems or
kernels that do not keep file capabilities).  It creates that system group when it is
missing and the helper's state directory :data:`~brokerpkg.defaults.STATE_DIR`
(root:brokerpkg, mode 2770), where the helper keeps one small file per user id for the
per-user rate limit.  Then it verifies the installed helper by running it as an
unprivileged user (``nobody``, through ``setpriv``): check-support and one ICMP probe to
127.0.0.1, while /proc/PID/status must show the caller's ids, CapEff 0, NoNewPrivs 1
and, when the helper says its sandbox is ``seccomp``, Seccomp 2.

Every step checks first and changes only what is not as it should be, so running it
again changes nothing, and says so.  ``--remove`` removes the installed helper, and the
state directory and the group when no other helper installed by setup uses them.  The
helpers installed are listed in :data:`RECORD` (one path a line).

Exit status: 0 done (and verified), 1 the installed helper does not work for an
unprivileged user or something could not be removed, 2 the helper was not installed or
removed (not root, no helper to copy, a destination that cannot hold a privileged
program or cannot be written, a file there that setup did not install).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import shlex
import shutil
import stat
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .defaults import (
    HELPER_MODE_CAPABILITY,
    HELPER_MODE_SETUID,
    SETUP_DEST,
    SETUP_GROUP,
    STATE_DIR,
    STATE_DIR_MODE,
)
from .errors import HELPER_NAME, HelperPrivilegeError, ProcessError
from .locate import (
    CAP_NET_RAW,
    CAPABILITY_XATTR,
    CHECKOUT_HELPER,
    PACKAGED_HELPER,
    is_executable_file,
    setup_command,
)
from .session import Session

EXIT_OK = 0
EXIT_NOT_WORKING = 1
EXIT_NOT_DONE = 2

RECORD = Path(STATE_DIR) / "installed-helpers"
"""The helpers this command installed, one absolute path a line (root's, mode 0644)."""
VERIFY_USER = "nobody"
VERIFY_FALLBACK_ID = 65534
VERIFY_TARGET = "127.0.0.1"
VERIFY_TIMEOUT = 2.0
"""Seconds the verification probe may take (loopback answers in microseconds)."""
SECCOMP_FILTER = "2"
"""/proc/PID/status Seccomp: 2 is filter mode."""

VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000
VFS_CAP_REVISION_MASK = 0xFF000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
NET_RAW_EP = struct.pack(
    "<IIIII", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, 1 << CAP_NET_RAW, 0, 0, 0
)
"""``security.capability`` for cap_net_raw+ep (struct vfs_cap_data, revision 2)."""


class SetupError(Exception):
    """Setup cannot go on; the message says why and what to do (exit status 2).  The
    checks that need no change (root, the helper to copy, the destination) come first."""


class Step(NamedTuple):
    """What one step found or did: a line for people, and whether it changed anything."""

    line: str
    changed: bool


# ------------------------------------------------------------------ what to install


def _require_root() -> None:
    """Raises SetupError unless the effective user is root."""
    if os.geteuid() != 0:
        raise SetupError(f"must run as root: sudo {setup_command()}")


def source_helper(explicit: str | None) -> Path:
    """The helper to install: ``explicit``, else the package's own copy, else (in a
    source checkout) ``helper/brokerpkg-helper``.

    Raises SetupError when it is not an executable file (naming every place looked at).
    """
    candidates = [Path(explicit)] if explicit else [PACKAGED_HELPER, CHECKOUT_HELPER]
    for candidate in candidates:
        if is_executable_file(candidate):
            return candidate.absolute()
    looked = ", ".join(str(candidate) for candidate in candidates)
    raise SetupError(
        f"no helper to install (looked at {looked}): install the package with "
        "`python3 -m pip install .`, or give --helper PATH"
    )


def destination(directory: str) -> Path:
    """The directory to install into, absolute.

    Raises SetupError when it is not a directory, or sits on a filesystem mounted
    nosuid (which honours neither setuid bits nor file capabilities).
    """
    path = Path(directory).absolute()
    if not path.is_dir():
        raise SetupError(f"--dest {directory}: not a directory")
    if os.statvfs(path).f_flag & os.ST_NOSUID:
        raise SetupError(
            f"{path} is on a filesystem mounted nosuid, where neither setuid nor file "
            "capabilities take effect: give --dest a directory elsewhere"
        )
    return path


def _on_path(directory: Path) -> bool:
    """True if ``directory`` is one of the directories of this process's PATH."""
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        with contextlib.suppress(OSError):
            if entry and os.path.samefile(entry, directory):
                return True
    return False


# ------------------------------------------------------------------ group and directory


def _group_id() -> int | None:
    """SETUP_GROUP's gid, None when there is no such group."""
    try:
        return grp.getgrnam(SETUP_GROUP).gr_gid
    except KeyError:
        return None


def _run_tool(argv: Sequence[str]) -> None:
    """Run a system tool (groupadd, groupdel); raises SetupError when it fails."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except OSError as error:
        raise SetupError(f"cannot run {argv[0]}: {error}") from None
    if done.returncode != 0:
        said = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise SetupError(f"{' '.join(argv)} failed: {said}")


def ensure_group() -> tuple[int, Step]:
    """SETUP_GROUP's gid, made with ``groupadd --system`` when missing.

    Raises SetupError when groupadd fails.
    """
    gid = _group_id()
    if gid is not None:
        return gid, Step(f"group {SETUP_GROUP}: exists (gid {gid})", False)
    _run_tool(["groupadd", "--system", SETUP_GROUP])
    gid = _group_id()
    if gid is None:
        raise SetupError(f"groupadd --system {SETUP_GROUP} made no group {SETUP_GROUP}")
    return gid, Step(f"group {SETUP_GROUP}: created (gid {gid})", True)


def _owner_text(info: os.stat_result) -> str:
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"{owner}:{group}, mode {stat.S_IMODE(info.st_mode):04o}"


def ensure_state_directory(gid: int) -> Step:
    """STATE_DIR as a directory owned by root:SETUP_GROUP with STATE_DIR_MODE.

    Raises SetupError when something that is not a directory is in its place, OSError
    when it cannot be made or changed (a read-only /var/lib).
    """
    path = Path(STATE_DIR)
    try:
        info = path.lstat()
    except FileNotFoundError:
        path.mkdir(mode=0o700)
        os.chown(path, 0, gid)
        os.chmod(path, STATE_DIR_MODE)
        return Step(f"state directory {path}: created ({_owner_text(path.lstat())})", True)
    if not stat.S_ISDIR(info.st_mode):
        raise SetupError(f"{path} exists and is not a directory: remove it first")
    if (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, gid, STATE_DIR_MODE):
        return Step(f"state directory {path}: as it should be ({_owner_text(info)})", False)
    was = _owner_text(info)
    os.chown(path, 0, gid)
    os.chmod(path, STATE_DIR_MODE)
    return Step(f"state directory {path}: was {was}, now {_owner_text(path.lstat())}", True)


# ------------------------------------------------------------------ the helper file


def _capability(path: Path) -> bytes | None:
    """The file's ``security.capability`` value, None when it has none."""
    try:
        return os.getxattr(path, CAPABILITY_XATTR, follow_symlinks=False)
    except OSError:
        return None


def _is_net_raw_ep(blob: bytes | None) -> bool:
    """True if a ``security.capability`` value is exactly cap_net_raw+ep."""
    if blob is None or len(blob) < 20:
        return False
    magic, *sets = struct.unpack_from("<IIIII", blob)
    return (
        (magic & VFS_CAP_REVISION_MASK) in (VFS_CAP_REVISION_2, VFS_CAP_REVISION_3)
        and bool(magic & VFS_CAP_FLAGS_EFFECTIVE)
        and sets == [1 << CAP_NET_RAW, 0, 0, 0]  # permitted, inheritable (low, high)
    )


def _privilege_text(setuid: bool) -> str:
    return "setuid root" if setuid else "cap_net_raw+ep"


def _installed_as_wanted(source: Path, target: Path, gid: int, setuid: bool) -> bool:
    """True if ``target`` already is ``source``'s content with the wanted owner, mode
    and capability."""
    try:
        info = target.lstat()
    except FileNotFoundError:
        return False
    mode = HELPER_MODE_SETUID if setuid else HELPER_MODE_CAPABILITY
    if not stat.S_ISREG(info.st_mode) or (info.st_uid, info.st_gid) != (0, gid):
        return False
    if stat.S_IMODE(info.st_mode) != mode:
        return False
    capability = _capability(target)
    if (capability is not None) if setuid else not _is_net_raw_ep(capability):
        return False
    return source.read_bytes() == target.read_bytes()


def _write_privileged_copy(source: Path, target: Path, gid: int, setuid: bool) -> None:
    """Copy ``source`` next to ``target``, set owner, mode and capability, and rename
    it into place (a running helper keeps its old file).  Raises OSError."""
    temporary = target.with_name(f".{target.name}.setup-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(source.read_bytes())
            stream.flush()
            os.fchown(descriptor, 0, gid)  # before chmod: a chown clears set-id bits
            os.fchmod(descriptor, HELPER_MODE_SETUID if setuid else HELPER_MODE_CAPABILITY)
            os.fsync(descriptor)
        if not setuid:  # after chown, which clears file capabilities
            os.setxattr(temporary, CAPABILITY_XATTR, NET_RAW_EP)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def ensure_helper(source: Path, target: Path, gid: int, setuid: bool) -> Step:
    """``target`` as a privileged copy of ``source`` (see the module documentation).

    Raises SetupError when something that is not a regular file is in its place or it
    cannot be written.
    """
    mode = HELPER_MODE_SETUID if setuid else HELPER_MODE_CAPABILITY
    wanted = f"root:{SETUP_GROUP}, mode {mode:04o}, {_privilege_text(setuid)}"
    if _installed_as_wanted(source, target, gid, setuid):
        return Step(f"helper {target}: up to date ({wanted})", False)
    existed = target.exists() or target.is_symlink()
    if existed and not stat.S_ISREG(target.lstat().st_mode):
        raise SetupError(f"{target} exists and is not a regular file: remove it first")
    try:
        _write_privileged_copy(source, target, gid, setuid)
    except OSError as error:
        raise SetupError(f"cannot install {target}: {error}") from None
    verb = "updated" if existed else "installed"
    return Step(f"helper {target}: {verb} from {source} ({wanted})", True)


# ------------------------------------------------------------------ the record


def _read_record() -> list[str]:
    try:
        return [line for line in RECORD.read_text().splitlines() if line.startswith("/")]
    except OSError:
        return []


def _write_record(paths: Sequence[str]) -> None:
    """Replace RECORD with ``paths`` (if its directory exists).  Raises OSError."""
    if not RECORD.parent.is_dir():
        return
    temporary = RECORD.with_name(f".{RECORD.name}.{os.getpid()}")
    temporary.write_text("".join(f"{path}\n" for path in paths))
    os.chown(temporary, 0, 0)
    temporary.chmod(0o644)
    os.replace(temporary, RECORD)


def _is_installed_helper(path: str, gid: int | None) -> bool:
    """True if ``path`` is a helper as setup installs them: a regular file of root's,
    of group ``gid``, set-group-id."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (
        gid is not None
        and stat.S_ISREG(info.st_mode)
        and (info.st_uid, info.st_gid) == (0, gid)
        and bool(info.st_mode & stat.S_ISGID)
    )


def other_installed_helpers(target: Path, gid: int | None) -> list[str]:
    """Installed helpers other than ``target``: those in RECORD and the one in
    SETUP_DEST, that are still there as setup left them."""
    candidates = [*_read_record(), str(Path(SETUP_DEST) / HELPER_NAME)]
    others: list[str] = []
    for path in candidates:
        if path != str(target) and path not in others and _is_installed_helper(path, gid):
            others.append(path)
    return others


# ------------------------------------------------------------------ verification


def _unprivileged_user() -> tuple[str, int, int]:
    """(name, uid, gid) of the user the verification runs as."""
    try:
        entry = pwd.getpwnam(VERIFY_USER)
    except KeyError:
        return f"uid {VERIFY_FALLBACK_ID}", VERIFY_FALLBACK_ID, VERIFY_FALLBACK_ID
    return VERIFY_USER, entry.pw_uid, entry.pw_gid


def read_status(pid: int) -> dict[str, str]:
    """The fields of /proc/PID/status.  Raises OSError when the process is gone."""
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def status_problems(fields: dict[str, str], uid: int, gid: int, sandbox: str) -> list[str]:
    """What is wrong in a running helper's /proc status for a caller ``uid``/``gid``."""
    problems = []
    if fields.get("Uid", "").split() != [str(uid)] * 4:
        problems.append(f"Uid is {fields.get('Uid')!r}, not the caller's {uid}")
    if fields.get("Gid", "").split() != [str(gid)] * 4:
        problems.append(f"Gid is {fields.get('Gid')!r}, not the caller's {gid}")
    for name in ("CapEff", "CapPrm"):
        if int(fields.get(name, "1"), 16) != 0:
            problems.append(f"{name} is {fields.get(name)}, not 0")
    if fields.get("NoNewPrivs") != "1":
        problems.append(f"NoNewPrivs is {fields.get('NoNewPrivs')}, not 1")
    if sandbox == "seccomp" and fields.get("Seccomp") != SECCOMP_FILTER:
        problems.append(f"Seccomp is {fields.get('Seccomp')}, not {SECCOMP_FILTER}")
    return problems


def _status_line(fields: dict[str, str]) -> str:
    uid = fields.get("Uid", "?").split()[0]
    gid = fields.get("Gid", "?").split()[0]
    return (
        f"while it ran: Uid {uid}, Gid {gid}, CapEff {int(fields.get('CapEff', '0'), 16)}, "
        f"NoNewPrivs {fields.get('NoNewPrivs')}, Seccomp {fields.get('Seccomp')}"
    )


async def verify(target: Path, setuid: bool) -> tuple[list[str], list[str]]:
    """Run ``target`` as an unprivileged user: (lines saying what it found, problems)."""
    name, uid, gid = _unprivileged_user()
    setpriv, env = shutil.which("setpriv"), shutil.which("env")
    if setpriv is None or env is None:
        return [], [f"setpriv (util-linux) or env is missing: cannot run the helper as {name}"]
    # setpriv looks the program up with root's rights still in hand: env, run as the
    # user, looks the helper up as the user's own programs will
    argv = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", env, str(target)]
    who = f"{name} (uid {uid})"
    try:
        async with Session(command=argv) as session:
            assert session.process is not None
            sockets = session.features.get("sockets", "?")
            sandbox = await session.feature_value("sandbox")
            result = await session.probe(VERIFY_TARGET, timeout=VERIFY_TIMEOUT)
            fields = read_status(session.process.pid)
            version = session.version
    except HelperPrivilegeError as error:
        hint = "" if setuid else "; file capabilities may not be kept here: try --setuid"
        return [], [f"{who} ran it, and it could not open its sockets: {error.cause}{hint}"]
    except (ProcessError, OSError) as error:
        return [], [f"{who} could not use it: {' '.join(str(error).split())}"]
    answer = f"{result.result} from {result.responder or VERIFY_TARGET}"
    if result.time_ms is not None:
        answer += f" in {result.time_ms:.3f} ms"
    lines = [
        f"verified as {who}: {version}, sockets {sockets}, sandbox {sandbox}, "
        f"probe to {VERIFY_TARGET}: {answer}",
        _status_line(fields),
    ]
    problems = status_problems(fields, uid, gid, sandbox)
    if sockets != "raw":
        problems.append(f"it opened no raw sockets (check-support feature sockets: {sockets})")
    if result.result != "reply":
        problems.append(f"the probe to {VERIFY_TARGET} got {result.result}, not reply")
    return lines, problems


# ------------------------------------------------------------------ the two actions


async def install(args: argparse.Namespace) -> int:
    """Install, verify, print what was done; 0 works, 1 does not.

    Raises SetupError (see the steps), OSError when the state directory or RECORD cannot
    be written.
    """
    source = source_helper(args.helper)
    directory = destination(args.dest)
    target = directory / HELPER_NAME
    gid, group_step = ensure_group()
    print(group_step.line)
    directory_step = ensure_state_directory(gid)
    print(directory_step.line)
    helper_step = ensure_helper(source, target, gid, args.setuid)
    print(helper_step.line)
    steps = (group_step, directory_step, helper_step)
    recorded = _read_record()
    kept = [path for path in recorded if path != str(target) and _is_installed_helper(path, gid)]
    if [*kept, str(target)] != recorded:
        _write_record([*kept, str(target)])
    lines, problems = await verify(target, args.setuid)
    for line in lines:
        print(line)
    if problems:
        for problem in problems:
            print(f"problem: {problem}")
        undo = f"{setup_command()} --remove"
        if str(directory) != SETUP_DEST:
            undo += f" --dest {shlex.quote(str(directory))}"
        print(f"the installed helper does not work; undo with: {undo}")
        return EXIT_NOT_WORKING
    if not any(step.changed for step in steps):
        print("nothing changed: already set up")
    if _on_path(directory):
        print(
            "any user can now run `brokerpkg ping|trace|mtr HOST` and "
            f"`MTR_PACKET={HELPER_NAME} mtr HOST`"
        )
    else:
        print(
            f"note: {directory} is not on PATH: add it, or set BROKERPKG_HELPER={target} "
            f"(and MTR_PACKET={target} for mtr)"
        )
    return EXIT_OK


def remove(args: argparse.Namespace) -> int:
    """Remove what install made, print what was done; 0 done, 1 the group stayed.

    Raises SetupError, having changed nothing, for a file setup did not install; OSError
    when the helper, RECORD or the state directory cannot be removed.
    """
    target = Path(args.dest).absolute() / HELPER_NAME
    gid = _group_id()
    recorded = _read_record()
    changed = False
    if not (target.exists() or target.is_symlink()):
        print(f"helper {target}: not there")
    elif not (_is_installed_helper(str(target), gid) or str(target) in recorded):
        raise SetupError(
            f"{target} is not a helper that brokerpkg setup installed (not set-group-id "
            f"{SETUP_GROUP}): left alone; remove it yourself if you mean to"
        )
    else:
        target.unlink()
        print(f"helper {target}: removed")
        changed = True
    if str(target) in recorded:
        _write_record([path for path in recorded if path != str(target)])
    others = other_installed_helpers(target, gid)
    if others:
        print(f"kept group {SETUP_GROUP} and {STATE_DIR}: still used by {', '.join(others)}")
        return EXIT_OK
    status = EXIT_OK
    if Path(STATE_DIR).is_dir() and not Path(STATE_DIR).is_symlink():
        shutil.rmtree(STATE_DIR)
        print(f"state directory {STATE_DIR}: removed")
        changed = True
    if gid is not None:
        try:
            _run_tool(["groupdel", SETUP_GROUP])
        except SetupError as error:
            print(f"problem: {error}")
            status = EXIT_NOT_WORKING
        else:
            print(f"group {SETUP_GROUP}: removed")
            changed = True
    if not changed:
        print("nothing changed: nothing was set up")
    return status


async def run_setup(args: argparse.Namespace) -> int:
    """``brokerpkg setup [--remove]``: 0 done, 1 not working, 2 not installed or removed."""
    try:
        _require_root()
        if args.remove:
            return remove(args)
        return await install(args)
    except SetupError as error:
        print(f"brokerpkg setup: {error}", file=sys.stderr)
        return EXIT_NOT_DONE
