"""Shared fixtures: the helper build, the namespace lab, unprivileged copies, CI rules.

Fixtures:

``helper_path`` (session)
    Builds the helper with ``make -C helper WERROR=1`` (every warning an error)
    and returns the absolute path of ``helper/brokerpkg-helper`` (a ``str``).
    Skips if ``helper/Makefile`` does not exist; fails if the build fails.
``privileged`` (session)
    Skips unless the run is root and can create network namespaces.  The
    ``@pytest.mark.privileged`` marker does the same for a test.
``chain`` (session)
    A built :class:`lab.Chain` (3 routers, client, server, responder) with its
    scripted responder running.  Do not change its routing in a test (use
    ``make_chain``); special destinations (``add_blackhole``) are fine, they
    use fresh prefixes.
``responder`` (function)
    ``chain``'s responder, reset (empty script, empty logs) for the test.
``make_chain`` (function)
    Factory: ``make_chain(routers=3, responder=False, **kw)`` builds a fresh
    chain, removed after the test.
``make_lab`` (function)
    Factory: ``make_lab(tag="lab")`` returns an empty :class:`lab.Lab` to
    describe and ``build()``; removed after the test.
``unprivileged_copy`` (session)
    An :class:`UnprivilegedCopy` of the package source and the helper in a
    temporary directory readable by ``nobody``; ``.helper("setuid")`` /
    ``.helper("setcap")`` give privileged copies of the helper.
``make_unprivileged_copy`` (session)
    Factory for the same with any binary standing in for the helper.
``fresh_caller`` (function)
    A user id (not nobody) that has no rate-limit state yet: a test that needs a
    full burst of 1000 probes (the bucket is shared by all of a user's helpers,
    helper/ratestate.c) runs its helpers as this uid; its state file is removed
    afterwards.

Privileged copies are installed as ``brokerpkg setup`` installs the helper: owned
root:brokerpkg, set-group-id (setuid copies: mode 6755; setcap copies: 2755 plus
cap_net_raw+ep), so that they can open ``/var/lib/brokerpkg/<uid>``; the group and the
directory (root:brokerpkg, mode 02770) are created when missing and left in place.

CI rule: with ``BROKERPKG_REQUIRE_PRIVILEGED=1`` in the environment every skip
(test or module) fails the run, so CI can never pass by skipping the lab.

Sanitizers: with ``BROKERPKG_SANITIZE=1`` ``helper_path`` is a helper built with
``make SANITIZE=1`` (AddressSanitizer + UndefinedBehaviorSanitizer) in its own
directory (``$TMPDIR/bpk-sanitize-*``; helper/*.o are left alone), so the whole suite
runs against it.  ASAN_OPTIONS/UBSAN_OPTIONS send every sanitizer report to a
world-writable directory; any report there fails the run and is printed at its end.
Without seccomp under ASan, ``check-support feature sandbox`` then says ``none``, and
the tests marked ``sandbox`` (which attack the filter) are deselected.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import grp
import hashlib
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from lab import netns  # noqa: E402
from lab.responder import Responder  # noqa: E402
from lab.topology import Chain, Lab  # noqa: E402

REPO = TESTS_DIR.parent
HELPER_DIR = REPO / "helper"
HELPER_NAME = "brokerpkg-helper"
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
REQUIRE_ENV = "BROKERPKG_REQUIRE_PRIVILEGED"
# The tests build the helper as developers and CI do: every warning is an error
# (helper/Makefile; users' builds only show warnings).
DEVELOPMENT_MAKE_ARGS = ("WERROR=1",)
SANITIZE_ENV = "BROKERPKG_SANITIZE"


def _require_privileged_run() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def sanitized_build() -> bool:
    """True when ``BROKERPKG_SANITIZE=1``: ``helper_path`` is the ASan+UBSan build."""
    return os.environ.get(SANITIZE_ENV, "") == "1"


# Where sanitized helpers write their reports (made in pytest_configure), and the
# options that send them there (also given to nobody's environment, UnprivilegedCopy.env).
_SANITIZER_REPORTS: list[Path] = []
_SANITIZER_OPTIONS: dict[str, str] = {}


def _setup_sanitizer_reports() -> None:
    reports = Path(tempfile.mkdtemp(prefix="bpk-sanitizer-reports-"))
    reports.chmod(0o1777)  # setuid/setcap copies write there as nobody
    _SANITIZER_REPORTS.append(reports)
    for name, kind in (("ASAN_OPTIONS", "asan"), ("UBSAN_OPTIONS", "ubsan")):
        ours = f"log_path={reports / kind}:print_stacktrace=1"
        _SANITIZER_OPTIONS[name] = ":".join(filter(None, (os.environ.get(name), ours)))
    os.environ.update(_SANITIZER_OPTIONS)


def sanitizer_reports() -> list[Path]:
    """Report files sanitized helpers have written so far in this run."""
    return sorted(p for d in _SANITIZER_REPORTS if d.is_dir() for p in d.iterdir() if p.is_file())


# --------------------------------------------------------------------------- privilege


@functools.cache
def privilege_status() -> tuple[bool, str]:
    """Return (True, "") if this run is root and can build namespace labs."""
    return netns.namespaces_supported()


def require_privileged() -> None:
    """Skip the calling test unless root with network namespaces is available."""
    ok, why = privilege_status()
    if not ok:
        pytest.skip(f"privileged test: {why}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "privileged: needs root and network namespaces; skipped otherwise "
        f"(and a failure when {REQUIRE_ENV}=1)",
    )
    config.addinivalue_line(
        "markers",
        "sandbox: tries the seccomp filter from inside a running helper; deselected "
        f"with {SANITIZE_ENV}=1, whose ASan build has no filter (it reports sandbox none)",
    )
    # A SIGTERM (CI timeout, kill) unwinds like Ctrl-C so fixtures remove their
    # namespaces; the atexit hook in lab.topology is the second line of defence.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:

        def _term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _term)
    if sanitized_build() and not _SANITIZER_REPORTS:
        _setup_sanitizer_reports()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the sanitized build, deselect (not skip) the tests that need the filter."""
    if not sanitized_build():
        return
    kept = [item for item in items if item.get_closest_marker("sandbox") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() == 0:
        try:
            removed = netns.cleanup_stale()
        except netns.LabError as e:
            print(f"warning: stale lab cleanup failed: {e}", file=sys.stderr)
            return
        if removed:
            print(f"removed {len(removed)} stale lab namespaces", file=sys.stderr)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("privileged") is not None:
        require_privileged()


@pytest.fixture(scope="session")
def privileged() -> None:
    """Skip unless root with network namespaces."""
    require_privileged()


# --------------------------------------------------------------------------- CI: no skips

_COLLECT_SKIPS: list[str] = []
_TEST_SKIPS: list[str] = []


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if _require_privileged_run() and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = _skip_reason(rep.longrepr)
        _TEST_SKIPS.append(f"{item.nodeid}: {reason}")
        rep.outcome = "failed"
        rep.longrepr = (
            f"test skipped ({reason}), but {REQUIRE_ENV}=1 turns every skip into a failure"
        )


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if _require_privileged_run() and report.skipped:
        _COLLECT_SKIPS.append(f"{report.nodeid}: {_skip_reason(report.longrepr)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _require_privileged_run() and _COLLECT_SKIPS:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if sanitizer_reports():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if not sanitizer_reports():  # reports are kept for reading
        for d in _SANITIZER_REPORTS:
            shutil.rmtree(d, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    reports = sanitizer_reports()
    if reports:
        terminalreporter.section(f"sanitizer reports ({len(reports)}): the run fails")
        for report in reports:
            terminalreporter.write_line(f"--- {report}")
            terminalreporter.write_line(report.read_text(errors="replace")[:20000])
    if not _require_privileged_run():
        return
    if _COLLECT_SKIPS or _TEST_SKIPS:
        terminalreporter.section(f"skips refused ({REQUIRE_ENV}=1)")
        for line in _COLLECT_SKIPS + _TEST_SKIPS:
            terminalreporter.write_line(line)


# --------------------------------------------------------------------------- helper build


@pytest.fixture(scope="session")
def helper_path() -> str:
    """Build the helper (``make -C helper WERROR=1``) and return its absolute path.

    Skips when helper/Makefile does not exist; fails when make fails or does
    not produce helper/brokerpkg-helper.  Concurrent sessions serialise on a
    lock file so parallel runs do not build over each other.
    """
    if not (HELPER_DIR / "Makefile").exists():
        pytest.skip("helper/Makefile does not exist yet: the helper cannot be built")
    if shutil.which("make") is None:
        pytest.skip("make is not installed (apt-get install make gcc)")
    digest = hashlib.sha256(str(HELPER_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"bpk-build-{digest}.lock"
    build_dir = HELPER_DIR
    make_args = list(DEVELOPMENT_MAKE_ARGS)
    if sanitized_build():
        build_dir = Path(tempfile.gettempdir()) / f"bpk-sanitize-{digest}"
        make_args += ["SANITIZE=1", f"-j{os.cpu_count() or 1}"]
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if sanitized_build():
            _mirror_helper_sources(build_dir)
        res = subprocess.run(
            ["make", "-C", str(build_dir), *make_args], capture_output=True, text=True, check=False
        )
    if res.returncode != 0:
        pytest.fail(
            f"make -C {build_dir} {' '.join(make_args)} failed ({res.returncode}):\n"
            f"{res.stdout}\n{res.stderr}"
        )
    path = build_dir / HELPER_NAME
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"make -C helper did not produce an executable {path}")
    return str(path.resolve())


def _mirror_helper_sources(dest: Path) -> None:
    """Make ``dest`` hold exactly helper/*.c, *.h and the Makefile.

    Only files whose content changed are rewritten (a fresh mtime makes make rebuild
    what depends on them); sources gone from helper/ are removed with their objects.
    """
    dest.mkdir(mode=0o755, exist_ok=True)
    wanted = {
        p.name: p
        for p in HELPER_DIR.iterdir()
        if p.is_file() and (p.suffix in (".c", ".h") or p.name == "Makefile")
    }
    for old in dest.iterdir():
        if old.suffix in (".c", ".h") and old.name not in wanted:
            old.unlink()
            old.with_suffix(".o").unlink(missing_ok=True)
    for name, source in wanted.items():
        data = source.read_bytes()
        target = dest / name
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)


# --------------------------------------------------------------------------- labs


@pytest.fixture(scope="session")
def chain(privileged: None) -> Iterator[Chain]:
    """Session chain: client -> r1 -> r2 -> r3 -> server, responder behind r3."""
    lab = Chain(3, responder=True, tag="session")
    try:
        lab.build()
        lab.start_responder()
        yield lab
    finally:
        lab.close()


@pytest.fixture
def responder(chain: Chain) -> Responder:
    """The session chain's responder, reset to an empty script and empty logs."""
    r: Responder | None = chain.responder
    assert r is not None
    r.reset()
    return r


@pytest.fixture
def make_chain(privileged: None) -> Iterator[Callable[..., Chain]]:
    """Factory for fresh chains: ``make_chain(routers=3, responder=False, **kw)``.

    With ``responder=True`` the responder is started too.
    """
    made: list[Chain] = []

    def factory(
        routers: int = 3,
        *,
        responder: bool = False,
        script: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Chain:
        c = Chain(routers, responder=responder, **kwargs)
        made.append(c)
        c.build()
        if responder:
            c.start_responder(script)
        return c

    try:
        yield factory
    finally:
        for c in made:
            c.close()


@pytest.fixture
def make_lab(privileged: None) -> Iterator[Callable[..., Lab]]:
    """Factory for custom topologies: returns an empty Lab to describe and build()."""
    made: list[Lab] = []

    def factory(tag: str = "lab", **kwargs: Any) -> Lab:
        lab = Lab(tag, **kwargs)
        made.append(lab)
        return lab

    try:
        yield factory
    finally:
        for lab in made:
            lab.close()


# --------------------------------------------------------------------------- unprivileged


# The per-user rate-limit state (helper/ratestate.c; provisioned by `brokerpkg setup`).
STATE_GROUP = "brokerpkg"
STATE_DIR = Path("/var/lib/brokerpkg")


def rate_state_path(uid: int) -> Path:
    """Where the helper keeps the rate-limit state of the user ``uid``."""
    return STATE_DIR / str(uid)


def ensure_rate_state_dir() -> int:
    """Make sure the group ``brokerpkg`` and ``/var/lib/brokerpkg`` exist; return the gid.

    Missing ones are created (``groupadd --system``; the directory root:brokerpkg, mode
    02770) and left in place afterwards; existing ones are not changed.

    Raises:
        OSError, subprocess.CalledProcessError: not root, or groupadd failed.
    """
    try:
        gid = grp.getgrnam(STATE_GROUP).gr_gid
    except KeyError:
        res = subprocess.run(
            ["groupadd", "--system", STATE_GROUP], capture_output=True, text=True, check=False
        )
        try:  # another session may have created it meanwhile
            gid = grp.getgrnam(STATE_GROUP).gr_gid
        except KeyError:
            raise subprocess.CalledProcessError(
                res.returncode, res.args, res.stdout, res.stderr
            ) from None
    try:
        STATE_DIR.mkdir(mode=0o700)
    except FileExistsError:
        return gid
    os.chown(STATE_DIR, 0, gid)
    os.chmod(STATE_DIR, 0o2770)  # mkdir's mode is masked by the umask, chmod's is not
    return gid


# What a running helper holds: its limits (helper/main.c set_limits).
CAP_SYS_RESOURCE = 24


def proc_limits(pid: int) -> dict[str, tuple[str, str]]:
    """The soft and hard limits of process ``pid`` by name, as /proc/PID/limits shows them
    (``{"Max open files": ("1024", "4096"), ...}``).  Raises OSError when it is gone."""
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        found = re.match(r"(.+?)\s{2,}(\S+)\s+(\S+)", line)
        if found:
            limits[found.group(1)] = (found.group(2), found.group(3))
    return limits


def may_raise_hard_limits() -> bool:
    """True when CAP_SYS_RESOURCE is in this process's bounding set (containers drop it):
    then a root helper may raise its hard limits."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def make_setuid_root(path: Path) -> Path:
    """chown root:brokerpkg and chmod 6755 ``path`` (setuid root, set-group-id); return it.

    Raises:
        OSError: not permitted (not root) or the filesystem refuses.
        subprocess.CalledProcessError: the group could not be created.
    """
    os.chown(path, 0, ensure_rate_state_dir())
    os.chmod(path, 0o6755)
    return path


def make_setcap_net_raw(path: Path) -> Path:
    """chown root:brokerpkg, chmod 2755 and give ``path`` ``cap_net_raw+ep``; return it.

    Raises:
        RuntimeError: setcap is missing or failed.
        OSError, subprocess.CalledProcessError: as :func:`make_setuid_root`.
    """
    if shutil.which("setcap") is None:
        raise RuntimeError("setcap not installed (apt-get install libcap2-bin)")
    os.chown(path, 0, ensure_rate_state_dir())  # chown clears file capabilities: first
    os.chmod(path, 0o2755)
    res = subprocess.run(
        ["setcap", "cap_net_raw+ep", str(path)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"setcap cap_net_raw+ep {path}: {res.stderr.strip()}")
    return path


def _nosuid(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_NOSUID)


class UnprivilegedCopy:
    """Package source + helper binary copied where ``nobody`` can read and run them.

    ``root`` (mode 0755) holds ``src/brokerpkg`` (put ``src`` on PYTHONPATH,
    which :meth:`env` does), ``src/brokerpkg/_helper/brokerpkg-helper`` and
    ``bin/brokerpkg-helper`` (plain copies, mode 0755), and privileged
    variants made by :meth:`helper`.
    """

    def __init__(self, root: Path, helper: Path | None) -> None:
        self.root = root
        self.src = root / "src"
        self.bin = root / "bin"
        self.python = SYSTEM_PYTHON
        self.uid = NOBODY
        self.gid = NOBODY
        self._source_helper = helper
        self.bin.mkdir(mode=0o755, exist_ok=True)
        self.src.mkdir(mode=0o755, exist_ok=True)
        pkg = REPO / "brokerpkg"
        if pkg.is_dir():
            shutil.copytree(
                pkg, self.src / "brokerpkg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
            if helper is not None:
                inner = self.src / "brokerpkg" / "_helper"
                inner.mkdir(mode=0o755, exist_ok=True)
                shutil.copy2(helper, inner / HELPER_NAME)
        if helper is not None:
            shutil.copy2(helper, self.bin / HELPER_NAME)
        _open_up(root)

    @property
    def plain_helper(self) -> Path:
        """The unprivileged copy of the helper (``bin/brokerpkg-helper``).

        Raises:
            LookupError: the copy was made without a helper.
        """
        if self._source_helper is None:
            raise LookupError("copy made without a helper binary")
        return self.bin / HELPER_NAME

    def helper(self, mode: str = "plain", name: str | None = None) -> Path:
        """Return a copy of the helper: ``plain``, ``setuid`` (root, 4755) or ``setcap``.

        Each mode gets its own file ``bin/<mode>/<name>`` (made once).

        Raises:
            ValueError: unknown mode.
            LookupError: no helper in this copy.
            OSError, RuntimeError: the privilege could not be applied.
        """
        if mode not in ("plain", "setuid", "setcap"):
            raise ValueError(f"unknown mode {mode!r}")
        source = self.plain_helper
        d = self.bin / mode
        d.mkdir(mode=0o755, exist_ok=True)
        dest = d / (name or HELPER_NAME)
        if not dest.exists():
            shutil.copy2(source, dest)
            os.chmod(dest, 0o755)
            if mode == "setuid":
                make_setuid_root(dest)
            elif mode == "setcap":
                make_setcap_net_raw(dest)
        return dest

    def add_binary(self, source: Path, name: str, mode: str = "plain") -> Path:
        """Copy any binary into ``bin/<mode>/<name>`` and apply ``mode`` (as :meth:`helper`).

        Raises:
            ValueError, OSError, RuntimeError: as :meth:`helper`.
        """
        if mode not in ("plain", "setuid", "setcap"):
            raise ValueError(f"unknown mode {mode!r}")
        d = self.bin / mode
        d.mkdir(mode=0o755, exist_ok=True)
        dest = d / name
        shutil.copy2(source, dest)
        os.chmod(dest, 0o755)
        if mode == "setuid":
            make_setuid_root(dest)
        elif mode == "setcap":
            make_setcap_net_raw(dest)
        return dest

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A minimal environment for the unprivileged user (PYTHONPATH = src)."""
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(self.src),
            "HOME": str(self.root),
            "PYTHONDONTWRITEBYTECODE": "1",
            **_SANITIZER_OPTIONS,
        }
        if extra:
            env.update(extra)
        return env

    def argv(
        self, args: Sequence[str], *, python: bool = True, uid: int | None = None
    ) -> list[str]:
        """argv running ``args`` as nobody (or ``uid``, as its own group too) with ``setpriv``,
        through /usr/bin/python3 if ``python``."""
        user, group = (self.uid, self.gid) if uid is None else (uid, uid)
        cmd = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups"]
        return cmd + ([self.python] if python else []) + list(args)

    def run(
        self,
        args: Sequence[str],
        *,
        python: bool = True,
        env: Mapping[str, str] | None = None,
        lab: Lab | None = None,
        node: Any = None,
        timeout: float = 60,
        input: str | None = None,
        uid: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``args`` as nobody (or ``uid``; in ``lab``'s ``node`` namespace if given);
        capture output."""
        argv = self.argv(args, python=python, uid=uid)
        if lab is not None:
            argv = lab.exec_argv(node, argv)
        return subprocess.run(
            argv,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            cwd=str(self.root),
            check=False,
        )


def _open_up(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            p = Path(dirpath) / f
            mode = p.stat().st_mode
            os.chmod(p, 0o755 if mode & stat.S_IXUSR else 0o644)


def _copy_base() -> Path:
    for base in (tempfile.gettempdir(), "/var/tmp", "/dev/shm"):
        if os.path.isdir(base) and not _nosuid(Path(base)):
            return Path(base)
    return Path(tempfile.gettempdir())


@pytest.fixture(scope="session")
def make_unprivileged_copy() -> Iterator[Callable[[Path | None], UnprivilegedCopy]]:
    """Factory: ``make_unprivileged_copy(helper_binary_or_None)`` -> UnprivilegedCopy.

    Copies live on a filesystem without ``nosuid`` when one is available
    (checked with statvfs) and are removed at the end of the session.
    """
    if os.geteuid() != 0:
        pytest.skip("making unprivileged copies (chown, setuid, setcap) needs root")
    made: list[Path] = []

    def factory(helper: Path | None = None) -> UnprivilegedCopy:
        root = Path(tempfile.mkdtemp(prefix="bpk-unpriv-", dir=_copy_base()))
        made.append(root)
        atexit.register(shutil.rmtree, root, True)  # also when the session is interrupted
        return UnprivilegedCopy(root, Path(helper) if helper is not None else None)

    try:
        yield factory
    finally:
        for root in made:
            shutil.rmtree(root, ignore_errors=True)


# Uids handed out by fresh_caller: far above the ranges of system and login accounts.
_FRESH_UIDS = range(2_100_000_000, 2_100_000_000 + 1_000_000)


@pytest.fixture
def fresh_caller() -> Iterator[int]:
    """A uid far above any account's, without rate-limit state; its state file is removed after.

    Skips unless root (needs setpriv to become it).
    """
    if os.geteuid() != 0:
        pytest.skip("running helpers as another user needs root")
    ensure_rate_state_dir()
    rng = random.Random()
    while True:
        uid = rng.choice(_FRESH_UIDS)
        if not rate_state_path(uid).exists():
            break
    try:
        yield uid
    finally:
        rate_state_path(uid).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def unprivileged_copy(
    helper_path: str, make_unprivileged_copy: Callable[[Path | None], UnprivilegedCopy]
) -> UnprivilegedCopy:
    """Package source + the built helper, readable and runnable by nobody."""
    return make_unprivileged_copy(Path(helper_path))
