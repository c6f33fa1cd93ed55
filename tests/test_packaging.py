"""Packaging: the wheel carries the compiled helper, is platform-tagged, installs man pages,
and the sdist holds everything needed to build that wheel again.

Builds run in a scratch copy of the repository (never in the checkout itself), with pip and
the in-tree backend (helper/pybuild/brokerpkg_backend.py).  pip's isolated build takes
setuptools from the package index.  If helper/Makefile does not exist yet, a stand-in
helper is built instead, so the mechanism is still tested.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import brokerpkg

REPO = Path(__file__).resolve().parent.parent
ALLOWED_TOP_LEVEL = {
    "pyproject.toml",
    "README.md",
    "brokerpkg",
    "helper",
    "tests",
    "man",
    ".ci",
    ".git",
    ".gitignore",
}
HELPER_IN_WHEEL = "brokerpkg/_helper/brokerpkg-helper"
MANYLINUX = re.compile(r"manylinux_(?P<major>\d+)_(?P<minor>\d+)_(?P<arch>\w+)")
STANDIN_MAKEFILE = "brokerpkg-helper: standin.c\n\t$(CC) -o $@ standin.c\n"
STANDIN_SOURCE = "int main(void) { return 0; }\n"
IGNORED = shutil.ignore_patterns(
    "*.o",
    "brokerpkg-helper",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "_helper",
    "build",
    "*.egg-info",
)


def make_scratch_copy(destination: Path) -> Path:
    """Copy the repository's sources to ``destination``; add stand-ins where parts are missing."""
    destination.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, destination / name)
    for tree in ("brokerpkg", "helper", "tests", "man"):
        if (REPO / tree).is_dir():
            shutil.copytree(REPO / tree, destination / tree, ignore=IGNORED)
    if not (destination / "README.md").exists():
        (destination / "README.md").write_text("# brokerpkg\n")
    helper = destination / "helper"
    if not (helper / "Makefile").exists():
        (helper / "Makefile").write_text(STANDIN_MAKEFILE)
        (helper / "standin.c").write_text(STANDIN_SOURCE)
    man = destination / "man"
    if not list(man.glob("*.[18]")):
        man.mkdir(exist_ok=True)
        (man / "brokerpkg-helper.8").write_text(".TH BROKERPKG-HELPER 8\n")
        (man / "brokerpkg.1").write_text(".TH BROKERPKG 1\n")
    return destination


def pip(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run pip quietly; fail the test with its output when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"pip {' '.join(arguments)} failed:\n{done.stdout}\n{done.stderr}")
    return done


class Built:
    """A scratch source tree, the wheel built from it (``log``: pip's verbose output,
    which shows the helper's compile lines) and the sdist."""

    def __init__(self, root: Path) -> None:
        self.source = make_scratch_copy(root / "src")
        self.out = root / "out"
        built = pip("wheel", "-v", "--no-deps", "-w", str(self.out), str(self.source), cwd=root)
        self.log = built.stdout + built.stderr
        self.wheel = next(self.out.glob("brokerpkg-*.whl"))
        self.sdist = self._build_sdist(root / "sdist")

    def _build_sdist(self, directory: Path) -> Path:
        """Build the sdist with the in-tree backend itself (pip cannot build sdists)."""
        code = (
            "import sys; sys.path.insert(0, 'helper/pybuild'); import brokerpkg_backend as b; "
            f"print(b.build_sdist({str(directory)!r}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.source,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"build_sdist failed:\n{done.stdout}\n{done.stderr}")
        return directory / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return Built(tmp_path_factory.mktemp("packaging"))


# ------------------------------------------------------------------ wheel


def test_wheel_is_platform_tagged(built: Built) -> None:
    name = built.wheel.name
    assert not name.endswith("-any.whl")
    tag = MANYLINUX.fullmatch(name.removeprefix("brokerpkg-0.1.0-py3-none-").removesuffix(".whl"))
    assert tag, name
    glibc = os.confstr("CS_GNU_LIBC_VERSION")
    assert glibc == f"glibc {tag['major']}.{tag['minor']}"  # the glibc it was built against
    wheel_file = zipfile.ZipFile(built.wheel).read("brokerpkg-0.1.0.dist-info/WHEEL").decode()
    assert "Root-Is-Purelib: false" in wheel_file
    assert f"Tag: py3-none-{tag[0]}" in wheel_file.splitlines()


def test_auditwheel_finds_the_tag_consistent(built: Built) -> None:
    """auditwheel reads the glibc symbol versions the helper needs and the libraries it
    links: the wheel's manylinux tag must be one that allows them (no lower glibc)."""
    done = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(built.wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    found = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
    assert found, done.stdout
    needed = MANYLINUX.fullmatch(found[1])
    ours = MANYLINUX.fullmatch(
        built.wheel.name.removeprefix("brokerpkg-0.1.0-py3-none-").removesuffix(".whl")
    )
    assert needed and ours, (found[1], built.wheel.name)
    assert ours["arch"] == needed["arch"]
    assert (int(ours["major"]), int(ours["minor"])) >= (
        int(needed["major"]),
        int(needed["minor"]),
    )


def test_the_users_build_does_not_make_warnings_errors(built: Built) -> None:
    """What pip runs (the backend's `make -C helper`) compiles without -Werror."""
    compiles = [line for line in built.log.splitlines() if re.search(r" -c -o \S+\.o \S+\.c", line)]
    assert len(compiles) >= len(list((built.source / "helper").glob("*.c"))), built.log
    assert not [line for line in compiles if "-Werror" in line]


def test_wheel_carries_the_executable_helper(built: Built) -> None:
    archive = zipfile.ZipFile(built.wheel)
    info = archive.getinfo(HELPER_IN_WHEEL)
    assert (info.external_attr >> 16) & 0o777 == 0o755
    assert archive.read(HELPER_IN_WHEEL)[:4] == b"\x7fELF"


def test_wheel_carries_every_module_of_the_package(built: Built) -> None:
    modules = sorted(
        path.relative_to(built.source).as_posix()
        for path in built.source.joinpath("brokerpkg").rglob("*.py")
    )
    assert "brokerpkg/icmplib/__init__.py" in modules
    names = set(zipfile.ZipFile(built.wheel).namelist())
    assert [module for module in modules if module not in names] == []


def test_wheel_puts_man_pages_in_share_man(built: Built) -> None:
    pages = sorted(built.source.joinpath("man").glob("*.[18]"))
    assert pages
    expected = sorted(
        f"brokerpkg-0.1.0.data/data/share/man/man{page.suffix[1:]}/{page.name}" for page in pages
    )
    names = zipfile.ZipFile(built.wheel).namelist()
    assert sorted(name for name in names if "/share/man/" in name) == expected


def test_wheel_metadata(built: Built) -> None:
    archive = zipfile.ZipFile(built.wheel)
    metadata = archive.read("brokerpkg-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Python: >=3.11" in metadata
    requirements = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requirements
    # the core library has no runtime dependency: each one belongs to an extra
    assert all('extra == "test"' in line or 'extra == "exporter"' in line for line in requirements)
    assert any("prometheus" in line and 'extra == "exporter"' in line for line in requirements)
    entry_points = archive.read("brokerpkg-0.1.0.dist-info/entry_points.txt").decode()
    assert "brokerpkg = brokerpkg.cli:main" in entry_points


def test_build_leaves_no_new_top_level_files(built: Built) -> None:
    assert {path.name for path in built.source.iterdir()} <= ALLOWED_TOP_LEVEL


def test_installed_package_finds_its_helper_without_settings(built: Built, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip(
        "install",
        "--no-deps",
        "--no-index",
        "--target",
        str(target),
        str(built.wheel),
        cwd=tmp_path,
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    code = "from brokerpkg import locate_helper; print(*locate_helper())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    path, found_by, *_ = done.stdout.split()
    assert (path, found_by) == (str(target / HELPER_IN_WHEEL), "package")
    assert os.access(path, os.X_OK)
    assert sorted(p.name for p in (target / "share" / "man").glob("man*/*")) == sorted(
        p.name for p in (built.source / "man").glob("*.[18]")
    )
    script = target / "bin" / "brokerpkg"
    version = subprocess.run(
        [sys.executable, str(script), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.stdout.strip() == "brokerpkg 0.1.0"


@pytest.mark.skipif(os.geteuid() != 0, reason="an unprivileged copy cannot open raw sockets")
@pytest.mark.skipif(not (REPO / "helper" / "Makefile").exists(), reason="stand-in helper only")
def test_installed_command_probes_loopback(built: Built, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip(
        "install",
        "--no-deps",
        "--no-index",
        "--target",
        str(target),
        str(built.wheel),
        cwd=tmp_path,
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(target / "bin" / "brokerpkg"), "probe", "127.0.0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("reply from 127.0.0.1 in ")
    # README's first command, after its `pip install . &&`, through the installed script.
    first = next(
        line.strip()
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("    python3 -m pip install . && ")
    )
    words = first.split(" && ", 1)[1].split()
    assert words[0] == "brokerpkg"
    readme = subprocess.run(
        [sys.executable, str(target / "bin" / "brokerpkg"), *words[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert readme.returncode == 0, readme.stderr
    assert readme.stdout.startswith("Start: ")
    assert "  1.|-- " in readme.stdout


# ------------------------------------------------------------------ editable install


def test_editable_install_makes_the_man_pages_findable(tmp_path: Path) -> None:
    """`pip install -e .` installs the man pages into the environment's share/man, where
    man(1) looks for the environment's bin/ on PATH; uninstalling removes them."""
    if shutil.which("man") is None:
        pytest.fail("man is not installed (apt-get install man-db; .ci/run installs it)")
    source = make_scratch_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}

    def venv_pip(*arguments: str) -> None:
        done = subprocess.run(
            [python, "-m", "pip", "--disable-pip-version-check", "-q", *arguments],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def man_where(page: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["man", "-w", page], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    venv_pip("install", "--no-deps", "-e", str(source))
    for page, section in (("brokerpkg", 1), ("brokerpkg-helper", 8)):
        found = man_where(page)
        assert found.returncode == 0, found.stderr
        assert found.stdout.strip() == str(
            venv / "share" / "man" / f"man{section}" / f"{page}.{section}"
        )
        installed = venv / "share" / "man" / f"man{section}" / f"{page}.{section}"
        assert installed.read_bytes() == (source / "man" / f"{page}.{section}").read_bytes()
    venv_pip("uninstall", "-y", "brokerpkg")
    assert str(venv) not in man_where("brokerpkg").stdout


# ------------------------------------------------------------------ sdist


def test_sdist_holds_what_the_wheel_build_needs(built: Built) -> None:
    with tarfile.open(built.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {
        "pyproject.toml",
        "README.md",
        "helper/Makefile",
        "helper/pybuild/brokerpkg_backend.py",
        "brokerpkg/session.py",
        "tests/fakes/fake_helper.py",
    }
    expected |= {
        str(path.relative_to(built.source)) for path in (built.source / "helper").glob("*.[ch]")
    }
    expected |= {
        str(path.relative_to(built.source)) for path in (built.source / "man").glob("*.[18]")
    }
    assert expected <= names
    assert not any(name.endswith((".o", "/brokerpkg-helper")) for name in names)


def test_wheel_builds_from_the_sdist(built: Built, tmp_path: Path) -> None:
    pip("wheel", "--no-deps", "-w", str(tmp_path), str(built.sdist), cwd=tmp_path)
    wheel = next(tmp_path.glob("brokerpkg-*.whl"))
    assert wheel.name == built.wheel.name
    assert HELPER_IN_WHEEL in zipfile.ZipFile(wheel).namelist()


# ------------------------------------------------------------------ project metadata


def test_versions_agree() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == brokerpkg.__version__ == "0.1.0"
    assert project["requires-python"] == ">=3.11"
    assert project["dependencies"] == []


EXPORTER_MODULES = {"exporter.py", "exporter_config.py", "exporter_metrics.py"}
"""The modules of ``brokerpkg exporter``: they may use the exporter extra's libraries."""
EXPORTER_EXTRA = {"prometheus_client", "yaml"}


def test_package_imports_only_the_standard_library() -> None:
    """...except the exporter's own modules, which use the exporter extra."""
    for source in (REPO / "brokerpkg").glob("*.py"):
        allowed = EXPORTER_EXTRA if source.name in EXPORTER_MODULES else set()
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or top in allowed, f"{source.name}: {module}"


def test_ci_runs_the_test_command_readme_gives_users() -> None:
    """README's second command is the line .ci/run runs, so what users run is what CI
    checks."""
    lines = (REPO / "README.md").read_text().splitlines()
    command = next(
        line.strip()
        for line in lines
        if line.startswith("    ") and line.strip().endswith("python3 -m pytest")
    )
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert command in [line.strip() for line in ci]


def test_ci_lints_types_and_builds_with_both_compilers_before_the_tests() -> None:
    """The fast checks come first, and the test files' mypy line is the one pyproject.toml
    documents."""
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    tests = ci.index("python3 -m pip install -e '.[test]' && python3 -m pytest")
    narrower = "mypy --allow-untyped-defs --allow-incomplete-defs tests"
    assert f"`{narrower}`" in " ".join((REPO / "pyproject.toml").read_text().split())
    for step in (
        "python3 -m ruff check .",
        "python3 -m ruff format --check .",
        "python3 -m mypy",
        f"python3 -m {narrower}",
        "for cc in gcc clang; do",
        'make -s -C "$scratch" -j"$(nproc)" CC="$cc" WERROR=1',
    ):
        assert step in ci[:tests], step
