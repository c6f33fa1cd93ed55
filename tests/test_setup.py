"""Finding the helper and ``brokerpkg setup`` (issue 9 §2), and the one no-privilege fix (§4).

- PATH entries the user may not search are skipped, as ``command -v`` skips them, and
  ``doctor`` names them (before: every command died with ``[Errno 13]``).
- ``brokerpkg setup`` (as root) installs a privileged helper into ``--dest`` (a temporary
  directory here, never /usr/local/bin), with the group ``brokerpkg`` and the state
  directory /var/lib/brokerpkg; it verifies the helper as nobody, changes nothing when run
  again, and ``--remove`` undoes it.  Then, as nobody, the command line and
  ``MTR_PACKET=brokerpkg-helper mtr`` work, also after ``pip install --force-reinstall``
  of a virtual environment's package (which drops a capability set on the package's own
  copy: the old advice).
- The no-privilege message names one fix, once, as the user runs brokerpkg.

The group and the state directory are the real ones (the helper's interface): the
``system_state`` fixture puts back what was there before each test that may touch them.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import SANITIZE_ENV, UnprivilegedCopy, _copy_base, ensure_rate_state_dir

from brokerpkg import cli_setup, locate
from brokerpkg.defaults import (
    HELPER_MODE_CAPABILITY,
    HELPER_MODE_SETUID,
    SETUP_GROUP,
    STATE_DIR,
    STATE_DIR_MODE,
)
from brokerpkg.errors import HelperPrivilegeError, privilege_cause
from brokerpkg.locate import HelperLocation

REPO = Path(__file__).resolve().parent.parent
HELPER = "brokerpkg-helper"
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
SANITIZED = os.environ.get(SANITIZE_ENV, "") == "1"
HELPER_LINE = (
    "brokerpkg-helper: no privilege for raw sockets (Operation not permitted) and "
    "unprivileged ICMP is off; fix: sudo brokerpkg setup (other ways: brokerpkg-helper(8), "
    "PRIVILEGES)"
)


# ------------------------------------------------------------------ pure parts


def test_the_cause_is_the_helpers_words_without_its_name_and_fix() -> None:
    assert privilege_cause(HELPER_LINE) == (
        "no privilege for raw sockets (Operation not permitted) and unprivileged ICMP is off"
    )
    assert privilege_cause("/tmp/mtr-packet: Failure to open IPv4 sockets: Permission denied") == (
        "Failure to open IPv4 sockets: Permission denied"
    )
    assert privilege_cause(None) is None
    assert privilege_cause("") is None


def test_the_privilege_error_says_the_cause_and_one_fix_once() -> None:
    error = HelperPrivilegeError("/h/brokerpkg-helper", HELPER_LINE, "sudo brokerpkg setup")
    assert str(error) == (
        "helper /h/brokerpkg-helper cannot open its sockets: no privilege for raw sockets "
        "(Operation not permitted) and unprivileged ICMP is off; fix: `sudo brokerpkg setup`"
    )
    assert (error.cause, error.fix, error.stderr_line) == (
        privilege_cause(HELPER_LINE),
        "sudo brokerpkg setup",
        HELPER_LINE,
    )


def test_the_fix_is_setup_for_a_searched_helper_and_setcap_for_a_named_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(locate, "_state_provisioned", lambda: True)
    searched = HelperLocation("/p/brokerpkg-helper", "package", "none", "")
    named = HelperLocation("/my helper", "argument", "none", "")
    from_env = HelperLocation("/e/brokerpkg-helper", "environment", "none", "")
    setup = f"sudo {locate.setup_command()}"
    assert locate.privilege_fix(searched) == setup
    assert locate.privilege_fix(None) == setup
    assert locate.privilege_fix(named) == (
        "sudo sh -c 'chown root:brokerpkg '\"'\"'/my helper'\"'\"' && chmod 2755 '\"'\"'/my helper'"
        "\"'\"' && setcap cap_net_raw+ep '\"'\"'/my helper'\"'\"''"
    )
    assert locate.privilege_fix(from_env) == (
        "sudo sh -c 'chown root:brokerpkg /e/brokerpkg-helper && chmod 2755 /e/brokerpkg-helper"
        " && setcap cap_net_raw+ep /e/brokerpkg-helper'"
    )
    assert locate.privilege_fix(None, "/c/helper") == (
        "sudo sh -c 'chown root:brokerpkg /c/helper && chmod 2755 /c/helper"
        " && setcap cap_net_raw+ep /c/helper'"
    )
    # where setup never ran, the group and the state directory come first
    monkeypatch.setattr(locate, "_state_provisioned", lambda: False)
    assert locate.privilege_fix(None, "/c/helper") == (
        "sudo sh -c 'groupadd --system brokerpkg && install -d -o root -g brokerpkg -m 2770"
        " /var/lib/brokerpkg && chown root:brokerpkg /c/helper && chmod 2755 /c/helper"
        " && setcap cap_net_raw+ep /c/helper'"
    )


def _script(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_setup_command_is_spelt_as_brokerpkg_was_run(tmp_path: Path) -> None:
    installed = Path(site.getsitepackages()[0]) / "brokerpkg"  # root's python finds it
    venv_script = _script(tmp_path / "venv" / "bin" / "brokerpkg")
    main = str(Path(locate.__file__).resolve().parent / "__main__.py")
    # a library user (any other program): the plain command
    assert locate.setup_command("/usr/bin/my-monitor") == "brokerpkg setup"
    assert locate.setup_command("-c") == "brokerpkg setup"
    # a brokerpkg script sudo's PATH does not find: its absolute path
    assert locate.setup_command(str(venv_script), package_dir=installed) == (f"{venv_script} setup")
    # python3 -m brokerpkg, with an interpreter sudo's PATH does not find, or does
    assert locate.setup_command(main, "/opt/py/bin/python3", package_dir=installed) == (
        "/opt/py/bin/python3 -m brokerpkg setup"
    )
    assert locate.setup_command(main, SYSTEM_PYTHON, package_dir=installed) == (
        "python3 -m brokerpkg setup"
    )
    # a package root's interpreter would not find by itself: PYTHONPATH through env
    assert locate.setup_command(main, SYSTEM_PYTHON, package_dir=tmp_path / "brokerpkg") == (
        f"env PYTHONPATH={tmp_path} python3 -m brokerpkg setup"
    )


def test_only_cap_net_raw_ep_counts_as_the_installed_capability() -> None:
    assert cli_setup._is_net_raw_ep(cli_setup.NET_RAW_EP)
    not_effective = bytes.fromhex("0000000200200000000000000000000000000000")
    more = bytes.fromhex("0100000200300000000000000000000000000000")
    assert not cli_setup._is_net_raw_ep(not_effective)
    assert not cli_setup._is_net_raw_ep(more)
    assert not cli_setup._is_net_raw_ep(None)
    assert locate._capability_grants_net_raw(cli_setup.NET_RAW_EP)


def test_the_verification_names_every_privilege_left_in_the_running_helper() -> None:
    dropped = {
        "Uid": "65534\t65534\t65534\t65534",
        "Gid": "65534\t65534\t65534\t65534",
        "CapEff": "0000000000000000",
        "CapPrm": "0000000000000000",
        "NoNewPrivs": "1",
        "Seccomp": "2",
    }
    assert cli_setup.status_problems(dropped, NOBODY, NOBODY, "seccomp") == []
    kept = dict(
        dropped,
        Gid="65534\t995\t995\t995",
        CapEff="0000000000002000",
        NoNewPrivs="0",
        Seccomp="0",
    )
    assert cli_setup.status_problems(kept, NOBODY, NOBODY, "seccomp") == [
        "Gid is '65534\\t995\\t995\\t995', not the caller's 65534",
        "CapEff is 0000000000002000, not 0",
        "NoNewPrivs is 0, not 1",
        "Seccomp is 0, not 2",
    ]
    assert cli_setup.status_problems(dict(dropped, Seccomp="0"), NOBODY, NOBODY, "none") == []


# ------------------------------------------------------------------ running things


def as_nobody(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as nobody (setpriv) with exactly ``env`` (plus the sanitizer options)."""
    sanitizer = {k: v for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS") if (v := os.environ.get(k))}
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        env={"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", **sanitizer, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_setup(
    *args: str, program: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``brokerpkg setup ARGS`` as root (this worktree's package unless ``program``)."""
    argv = [*(program or [sys.executable, "-m", "brokerpkg"]), "setup", *args]
    environment = dict(os.environ, **(env or {}))
    if program:  # its own package, not one PYTHONPATH points at
        environment.pop("PYTHONPATH", None)
    return subprocess.run(
        argv,
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def public_directory(prefix: str) -> Path:
    """A fresh directory nobody may search, on a filesystem that honours set-id bits."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=_copy_base()))
    path.chmod(0o755)
    return path


def group_id() -> int | None:
    try:
        return grp.getgrnam(SETUP_GROUP).gr_gid
    except KeyError:
        return None


class Entry(NamedTuple):
    """A file or directory's mode, owner and (for a file) content."""

    mode: int
    uid: int
    gid: int
    data: bytes = b""


def entry(path: Path) -> Entry:
    info = path.lstat()
    data = path.read_bytes() if stat.S_ISREG(info.st_mode) else b""
    return Entry(stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, data)


class SystemState(NamedTuple):
    """The group's gid and the state directory with its files, as they were."""

    gid: int | None
    directory: Entry | None
    files: dict[str, Entry]


def snapshot() -> SystemState:
    state = Path(STATE_DIR)
    if not state.is_dir():
        return SystemState(group_id(), None, {})
    files = {p.name: entry(p) for p in state.iterdir() if p.is_file()}
    return SystemState(group_id(), entry(state), files)


def _put(path: Path, was: Entry) -> None:
    os.chown(path, was.uid, was.gid)  # before chmod: a chown clears set-id bits
    path.chmod(was.mode)


def restore(before: SystemState) -> None:
    """Put the group (with its gid) and the state directory (with its files, their
    modes and owners) back as ``before`` had them."""
    now = group_id()
    if before.gid is None and now is not None:
        subprocess.run(["groupdel", SETUP_GROUP], check=True)
    elif before.gid is not None and now != before.gid:
        if now is not None:
            subprocess.run(["groupdel", SETUP_GROUP], check=True)
        subprocess.run(["groupadd", "--system", "-g", str(before.gid), SETUP_GROUP], check=True)
    if snapshot() == before:
        return
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    if before.directory is not None:
        state = Path(STATE_DIR)
        state.mkdir(mode=0o700)
        for name, was in before.files.items():
            (state / name).write_bytes(was.data)
            _put(state / name, was)
        _put(state, before.directory)


@pytest.fixture
def system_state(privileged: None) -> Iterator[SystemState]:
    """The group and state directory before the test; put back after it."""
    before = snapshot()
    try:
        yield before
    finally:
        restore(before)


@pytest.fixture
def directories() -> Iterator[Callable[[str], Path]]:
    """Factory of public directories (``public_directory``), removed after the test."""
    made: list[Path] = []

    def factory(prefix: str = "bpk-setup-") -> Path:
        made.append(public_directory(prefix))
        return made[-1]

    try:
        yield factory
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


def lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return done.stdout.splitlines()


def assert_verified(done: subprocess.CompletedProcess[str]) -> None:
    """setup's verification lines: nobody's ids, no capability, no_new_privs, seccomp."""
    out = done.stdout
    assert "verified as nobody (uid 65534): brokerpkg-" in out, out + done.stderr
    assert "sockets raw" in out and "probe to 127.0.0.1: reply from 127.0.0.1 in " in out
    assert "while it ran: Uid 65534, Gid 65534, CapEff 0, NoNewPrivs 1, Seccomp " in out
    if not SANITIZED:  # ASan builds have no seccomp filter (conftest)
        assert "sandbox seccomp" in out and out.count("Seccomp 2") == 1


def installed_state(target: Path) -> tuple[int, int, int, str]:
    """(uid, gid, mode, getcap's capability text) of an installed helper."""
    info = target.stat()
    capability = subprocess.run(
        ["getcap", str(target)], capture_output=True, text=True, check=False
    ).stdout.split()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode), " ".join(capability[1:])


def assert_group_and_directory(gid: int) -> None:
    assert gid < 1000, "groupadd --system gives a system gid"
    info = os.lstat(STATE_DIR)
    assert stat.S_ISDIR(info.st_mode)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, gid, STATE_DIR_MODE)


def nobody_commands(
    copy: UnprivilegedCopy, path: str, cli: Sequence[str]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every subcommand that probes, doctor and mtr with MTR_PACKET, as nobody."""
    env = {"PATH": path, "HOME": str(copy.root)}
    if cli[0] == SYSTEM_PYTHON:
        env["PYTHONPATH"] = str(copy.src)
    runs = {
        name: as_nobody([*cli, *args], env, copy.root)
        for name, args in {
            "probe": ["probe", "127.0.0.1"],
            "ping": ["ping", "-c", "1", "::1"],
            "trace": ["trace", "-n", "-q", "1", "127.0.0.1"],
            "mtr": ["mtr", "-r", "-n", "-c", "1", "127.0.0.1"],
            "doctor": ["doctor", "-j"],
        }.items()
    }
    runs["mtr-packet"] = as_nobody(
        ["mtr", "-r", "-n", "-c", "1", "127.0.0.1"], dict(env, MTR_PACKET=HELPER), copy.root
    )
    return runs


def assert_every_command_works(
    runs: dict[str, subprocess.CompletedProcess[str]], installed: Path
) -> None:
    for name, done in runs.items():
        assert done.returncode == 0, (name, done.stdout, done.stderr)
    assert runs["probe"].stdout.startswith("reply from 127.0.0.1 in ")
    assert "1 packets transmitted, 1 received" in runs["ping"].stdout
    assert runs["trace"].stdout.splitlines()[1].startswith(" 1  127.0.0.1  ")
    doctor = json.loads(runs["doctor"].stdout)
    assert (doctor["helper"], doctor["found_by"], doctor["sockets"]) == (
        str(installed),
        "path",
        "raw",
    )
    for name in ("mtr", "mtr-packet"):  # ours, and the real mtr running our helper
        hop = runs[name].stdout.splitlines()[-1].split()
        assert hop[:3] == ["1.|--", "127.0.0.1", "0.0%"], (name, runs[name].stdout)


# ------------------------------------------------------------------ PATH


@pytest.mark.privileged
def test_path_entries_nobody_may_not_search_are_skipped_and_named(
    unprivileged_copy: UnprivilegedCopy, directories: Callable[[str], Path]
) -> None:
    locked = directories("bpk-locked-")
    locked.chmod(0o700)  # root's, as /root is
    capable = unprivileged_copy.helper("setcap")
    path = f"{locked / 'bin'}:{capable.parent}:/usr/bin:/bin"
    env = {"PATH": path, "PYTHONPATH": str(unprivileged_copy.src)}
    cli = [SYSTEM_PYTHON, "-m", "brokerpkg"]
    probe = as_nobody([*cli, "probe", "127.0.0.1"], env, unprivileged_copy.root)
    assert probe.returncode == 0, probe.stderr  # was: [Errno 13] Permission denied: '.../bin/...'
    assert probe.stdout.startswith("reply from 127.0.0.1 in ")
    doctor = as_nobody([*cli, "doctor", "-j"], env, unprivileged_copy.root)
    report = json.loads(doctor.stdout)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert report["skipped_path"] == [str(locked / "bin")]
    assert (report["helper"], report["found_by"]) == (str(capable), "path")
    text = as_nobody([*cli, "doctor"], env, unprivileged_copy.root).stdout
    assert f"skipped:          PATH entries you may not search: {locked / 'bin'}\n" in text


@pytest.mark.privileged
def test_a_search_that_finds_nothing_lists_the_skipped_entries(
    make_unprivileged_copy: Callable[[Path | None], UnprivilegedCopy],
    directories: Callable[[str], Path],
) -> None:
    copy = make_unprivileged_copy(None)  # the package without any helper
    locked = directories("bpk-locked-")
    locked.chmod(0o700)
    env = {"PATH": f"{locked / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(copy.src)}
    done = as_nobody([SYSTEM_PYTHON, "-m", "brokerpkg", "probe", "127.0.0.1"], env, copy.root)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        f"brokerpkg probe: cannot find {HELPER}; looked at: BROKERPKG_HELPER: not set; "
        f"PATH: {locked / 'bin'} (skipped: you may not search it); PATH: no privileged {HELPER}"
    )


# ------------------------------------------------------------------ the no-privilege message


@pytest.mark.privileged
def test_the_no_privilege_message_says_one_fix_once(unprivileged_copy: UnprivilegedCopy) -> None:
    copy = unprivileged_copy
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy.src)}
    helper = as_nobody([str(copy.plain_helper)], env, copy.root)
    assert (helper.returncode, helper.stderr) == (1, HELPER_LINE + "\n")
    for command in ("probe", "ping", "trace", "mtr"):
        done = as_nobody([SYSTEM_PYTHON, "-m", "brokerpkg", command, "127.0.0.1"], env, copy.root)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            f"brokerpkg {command}: helper {copy.src}/brokerpkg/_helper/{HELPER} cannot open "
            "its sockets: no privilege for raw sockets (Operation not permitted) and "
            f"unprivileged ICMP is off; fix: `sudo env PYTHONPATH={copy.src} python3 -m "
            "brokerpkg setup`\n"
        )  # was ~950 characters: the helper's text quoted, then the same commands again
    named = as_nobody(
        [SYSTEM_PYTHON, "-m", "brokerpkg", "probe", "--helper", str(copy.plain_helper), "::1"],
        env,
        copy.root,
    )
    fix = locate.capability_fix(str(copy.plain_helper))
    assert named.stderr.endswith(f"; fix: `{fix}`\n")
    assert named.stderr.count("sudo") == 1
    doctor = as_nobody([SYSTEM_PYTHON, "-m", "brokerpkg", "doctor", "-j"], env, copy.root)
    report = json.loads(doctor.stdout)
    assert report["fixes"][0] == f"sudo env PYTHONPATH={copy.src} python3 -m brokerpkg setup"
    assert report["problems"] == [
        "the helper cannot open its sockets: no privilege for raw sockets (Operation not "
        "permitted) and unprivileged ICMP is off"
    ]
    assert len(report["fixes"]) == 2 and "ping_group_range" in report["fixes"][1]


GONE_AT_ONCE = """
import asyncio, gc, os
from brokerpkg.channel import PipeChannel
from brokerpkg.transport import ProcessTransport

async def main():
    transport = ProcessTransport.start(["sh", "-c", "read line"], description="sh")
    channel = PipeChannel(transport)
    channel.send(b"1 check-support feature send-probe\\n")  # sh reads it, exits
    os.waitid(os.P_PID, transport.process.pid, os.WEXITED | os.WNOWAIT)
    # the helper is gone: this write fails (EPIPE), and the reader is left to report it
    channel.send(b"2 check-support feature version\\n")
    await asyncio.sleep(0)
    await channel.close()
    del channel, transport
    gc.collect()
    await asyncio.sleep(0)
    print("closed")

asyncio.run(main())
"""


def test_a_helper_gone_before_its_requests_leaves_no_stray_traceback() -> None:
    # A helper that exits at start (no privilege) breaks the pipe the session writes its
    # feature queries to.  Unless the transport collects that error, Debian's Python 3.11
    # (/usr/bin/python3, 3.11.2) printed "Future exception was never retrieved" and a
    # BrokenPipeError traceback after the one-line message (about 1 run in 4 of
    # `brokerpkg trace` as nobody); later 3.11 releases stay silent by themselves.
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", GONE_AT_ONCE],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "closed\n", "")


# ------------------------------------------------------------------ setup


@pytest.mark.privileged
def test_setup_installs_verifies_changes_nothing_again_and_removes(
    system_state: SystemState,
    helper_path: str,
    unprivileged_copy: UnprivilegedCopy,
    directories: Callable[[str], Path],
) -> None:
    dest = directories("bpk-dest-")
    target = dest / HELPER
    path = f"{dest}:/usr/bin:/bin"
    cli = [SYSTEM_PYTHON, "-m", "brokerpkg"]
    before = as_nobody(
        ["mtr", "-r", "-n", "-c", "1", "127.0.0.1"],
        {"PATH": path, "MTR_PACKET": HELPER},
        unprivileged_copy.root,
    )
    assert before.returncode != 0  # no helper on PATH: what the README's line did

    first = run_setup("--dest", str(dest), "--helper", helper_path)
    assert first.returncode == 0, first.stdout + first.stderr
    gid = group_id()
    assert gid is not None
    made = "created" if system_state.gid is None else "exists"
    assert lines(first)[0] == f"group {SETUP_GROUP}: {made} (gid {gid})"
    if system_state.directory is None:
        assert lines(first)[1] == (
            f"state directory {STATE_DIR}: created (root:{SETUP_GROUP}, mode 2770)"
        )
    assert lines(first)[2] == (
        f"helper {target}: installed from {helper_path} (root:{SETUP_GROUP}, mode 2755, "
        "cap_net_raw+ep)"
    )
    assert_verified(first)
    assert lines(first)[-1].startswith(f"note: {dest} is not on PATH: add it")
    assert installed_state(target) == (0, gid, HELPER_MODE_CAPABILITY, "cap_net_raw=ep")
    assert target.read_bytes() == Path(helper_path).read_bytes()
    assert_group_and_directory(gid)
    inode = target.stat().st_ino

    again = run_setup("--dest", str(dest), "--helper", helper_path, env={"PATH": path})
    assert again.returncode == 0, again.stdout + again.stderr
    assert lines(again)[:3] == [
        f"group {SETUP_GROUP}: exists (gid {gid})",
        f"state directory {STATE_DIR}: as it should be (root:{SETUP_GROUP}, mode 2770)",
        f"helper {target}: up to date (root:{SETUP_GROUP}, mode 2755, cap_net_raw+ep)",
    ]
    assert_verified(again)
    assert lines(again)[-2:] == [
        "nothing changed: already set up",
        "any user can now run `brokerpkg ping|trace|mtr HOST` and "
        "`MTR_PACKET=brokerpkg-helper mtr HOST`",
    ]
    assert target.stat().st_ino == inode and group_id() == gid

    assert_every_command_works(nobody_commands(unprivileged_copy, path, cli), target)

    removed = run_setup("--dest", str(dest), "--remove")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not target.exists()
    assert lines(removed)[0] == f"helper {target}: removed"
    if system_state.gid is None and system_state.directory is None:
        assert lines(removed)[1:] == [
            f"state directory {STATE_DIR}: removed",
            f"group {SETUP_GROUP}: removed",
        ]
        assert group_id() is None and not os.path.lexists(STATE_DIR)
    twice = run_setup("--dest", str(dest), "--remove")
    assert twice.returncode == 0, twice.stdout + twice.stderr
    assert lines(twice)[0] == f"helper {target}: not there"
    if system_state.gid is None:
        assert lines(twice)[-1] == "nothing changed: nothing was set up"


@pytest.mark.privileged
def test_setup_setuid_and_back_to_the_capability(
    system_state: SystemState,
    helper_path: str,
    unprivileged_copy: UnprivilegedCopy,
    directories: Callable[[str], Path],
) -> None:
    dest = directories("bpk-dest-")
    target = dest / HELPER
    done = run_setup("--dest", str(dest), "--helper", helper_path, "--setuid")
    assert done.returncode == 0, done.stdout + done.stderr
    gid = group_id()
    assert f"helper {target}: installed from {helper_path} (root:{SETUP_GROUP}, mode 6755, " in (
        done.stdout
    )
    assert_verified(done)
    assert installed_state(target) == (0, gid, HELPER_MODE_SETUID, "")
    env = {"PATH": f"{dest}:/usr/bin:/bin", "PYTHONPATH": str(unprivileged_copy.src)}
    doctor = as_nobody(
        [SYSTEM_PYTHON, "-m", "brokerpkg", "doctor", "-j"], env, unprivileged_copy.root
    )
    report = json.loads(doctor.stdout)
    assert (report["found_by"], report["sockets"]) == ("path", "raw"), doctor.stdout
    assert report["file_privilege"].startswith("setuid-root")

    back = run_setup("--dest", str(dest), "--helper", helper_path)
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"helper {target}: updated from {helper_path} (root:{SETUP_GROUP}, mode 2755, " in (
        back.stdout
    )
    assert "nothing changed" not in back.stdout
    assert installed_state(target) == (0, gid, HELPER_MODE_CAPABILITY, "cap_net_raw=ep")
    assert run_setup("--dest", str(dest), "--remove").returncode == 0


@pytest.mark.privileged
def test_the_group_and_directory_stay_while_another_installed_helper_uses_them(
    system_state: SystemState, helper_path: str, directories: Callable[[str], Path]
) -> None:
    first, second = directories("bpk-dest-"), directories("bpk-dest-")
    for dest in (first, second):
        done = run_setup("--dest", str(dest), "--helper", helper_path)
        assert done.returncode == 0, done.stdout + done.stderr
    record = Path(STATE_DIR, "installed-helpers").read_text().splitlines()
    assert [str(first / HELPER), str(second / HELPER)] == record[-2:]
    kept = run_setup("--dest", str(first), "--remove")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert lines(kept) == [
        f"helper {first / HELPER}: removed",
        f"kept group {SETUP_GROUP} and {STATE_DIR}: still used by {second / HELPER}",
    ]
    assert group_id() is not None and os.path.isdir(STATE_DIR)
    last = run_setup("--dest", str(second), "--remove")
    assert last.returncode == 0, last.stdout + last.stderr
    if system_state.gid is None:
        assert group_id() is None and not os.path.lexists(STATE_DIR)


@pytest.mark.privileged
def test_setup_refuses_and_changes_nothing(
    system_state: SystemState,
    helper_path: str,
    unprivileged_copy: UnprivilegedCopy,
    directories: Callable[[str], Path],
) -> None:
    dest = directories("bpk-dest-")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(unprivileged_copy.src)}
    cli = [SYSTEM_PYTHON, "-m", "brokerpkg", "setup"]
    for extra in ([], ["--remove"]):
        refused = as_nobody([*cli, "--dest", str(dest), *extra], env, unprivileged_copy.root)
        assert (refused.returncode, refused.stdout) == (2, "")
        assert refused.stderr == (
            "brokerpkg setup: must run as root: sudo env "
            f"PYTHONPATH={unprivileged_copy.src} python3 -m brokerpkg setup\n"
        )
    missing = run_setup("--dest", str(dest / "nothing"), "--helper", helper_path)
    assert (missing.returncode, missing.stderr) == (
        2,
        f"brokerpkg setup: --dest {dest / 'nothing'}: not a directory\n",
    )
    no_helper = run_setup("--dest", str(dest), "--helper", str(dest / "none"))
    assert no_helper.returncode == 2
    assert no_helper.stderr.startswith(f"brokerpkg setup: no helper to install (looked at {dest}")
    nosuid = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs -o nosuid,mode=0755 bpk-nosuid "$1" && shift && exec "$@"',
            "sh",
            str(dest),
            sys.executable,
            "-m",
            "brokerpkg",
            "setup",
            "--dest",
            str(dest),
            "--helper",
            helper_path,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert nosuid.returncode == 2, nosuid.stdout + nosuid.stderr
    assert "is on a filesystem mounted nosuid, where neither setuid nor file capabilities" in (
        nosuid.stderr
    )
    foreign = dest / HELPER
    shutil.copy(helper_path, foreign)
    left = run_setup("--dest", str(dest), "--remove")
    assert left.returncode == 2
    assert "is not a helper that brokerpkg setup installed" in left.stderr
    assert foreign.exists()
    assert snapshot() == system_state  # no group, no directory made by any of these


@pytest.mark.privileged
def test_setup_exits_1_when_nobody_cannot_use_the_installed_helper(
    system_state: SystemState, helper_path: str, directories: Callable[[str], Path]
) -> None:
    locked = directories("bpk-locked-")
    (locked / "bin").mkdir(mode=0o755)
    locked.chmod(0o700)  # --dest /root/bin: nobody cannot reach it
    done = run_setup("--dest", str(locked / "bin"), "--helper", helper_path)
    assert done.returncode == 1, done.stdout + done.stderr
    problem = next(line for line in lines(done) if line.startswith("problem: "))
    assert problem.startswith("problem: nobody (uid 65534) could not use it: helper ")
    assert "Permission denied" in problem
    assert "the installed helper does not work; undo with: " in done.stdout
    undo = run_setup("--dest", str(locked / "bin"), "--remove")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert not (locked / "bin" / HELPER).exists()


# ------------------------------------------------------------------ a package reinstalled


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_packaging import Built

    return Built(tmp_path_factory.mktemp("setup-wheel")).wheel


@pytest.mark.privileged
def test_the_installed_helper_survives_pip_install_force_reinstall(
    system_state: SystemState,
    wheel: Path,
    unprivileged_copy: UnprivilegedCopy,
    directories: Callable[[str], Path],
) -> None:
    base, dest = directories("bpk-venv-"), directories("bpk-dest-")
    venv = base / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)

    def reinstall(*extra: str) -> None:
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
        subprocess.run(
            [*pip, "--no-index", "--disable-pip-version-check", *extra, str(wheel)],
            check=True,
            timeout=300,
        )

    reinstall()
    script = venv / "bin" / "brokerpkg"
    (packaged,) = venv.glob(f"lib/python3*/site-packages/brokerpkg/_helper/{HELPER}")
    env = {"PATH": f"{dest}:{venv / 'bin'}:/usr/bin:/bin", "HOME": str(base)}

    # before: the by-hand fix on the package's own copy (group, set-group-id, capability)
    # is lost at a reinstall
    ensure_rate_state_dir()
    subprocess.run(
        ["sh", "-c", locate.capability_fix(str(packaged)).removeprefix("sudo ")], check=True
    )
    assert as_nobody([str(script), "probe", "127.0.0.1"], env, base).returncode == 0
    reinstall("--force-reinstall")
    (packaged,) = venv.glob(f"lib/python3*/site-packages/brokerpkg/_helper/{HELPER}")
    lost = as_nobody([str(script), "probe", "127.0.0.1"], env, base)
    assert lost.returncode == 2
    assert lost.stderr.endswith(f"; fix: `sudo {script} setup`\n")  # the venv's own script

    # README's second command (we are root already: no sudo), into dest
    line = next(
        line.split("#")[0].strip()
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith('    sudo "$(command -v brokerpkg)" setup')
    )
    done = subprocess.run(
        ["sh", "-c", f'{line.removeprefix("sudo ")} --dest "$1"', "sh", str(dest)],
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"helper {dest / HELPER}: installed from {packaged} " in done.stdout
    assert_verified(done)
    reinstall("--force-reinstall")
    assert_every_command_works(
        nobody_commands(unprivileged_copy, env["PATH"], [str(script)]), dest / HELPER
    )
    again = run_setup("--dest", str(dest), program=[str(script)])
    assert "nothing changed: already set up" in again.stdout, again.stdout + again.stderr
    assert run_setup("--dest", str(dest), "--remove", program=[str(script)]).returncode == 0
