"""The helper's build: clean with gcc and clang, warnings fatal for developers and CI only.

helper/Makefile shows warnings without stopping (users' builds: a newer compiler's new
warning must not break ``pip install``); ``WERROR=1``, which the tests' build
(conftest.DEVELOPMENT_MAKE_ARGS) and .ci/run use, makes each one an error.  Every build
here runs in a scratch copy of helper/, so helper/*.o are left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DEVELOPMENT_MAKE_ARGS

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "helper"
# A line the compilers warn about under -Wall (an unused static variable).
WARNING_LINE = "static int brokerpkg_build_test_unused;\n"
COMPILE_LINE = re.compile(r"^\S+ .* -c -o (\S+)\.o \1\.c$", re.MULTILINE)


def scratch_helper(destination: Path, *, with_warning: bool = False) -> Path:
    """helper/'s sources and Makefile in ``destination``; one warning more if asked."""
    destination.mkdir()
    for source in HELPER.iterdir():
        if source.is_file() and (source.suffix in (".c", ".h") or source.name == "Makefile"):
            shutil.copy2(source, destination / source.name)
    if with_warning:
        with (destination / "addr.c").open("a") as stream:
            stream.write(WARNING_LINE)
    return destination


def make(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(directory), f"-j{os.cpu_count() or 1}", *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_the_helper_builds_without_a_warning(compiler: str, tmp_path: Path) -> None:
    if shutil.which(compiler) is None:
        pytest.fail(f"{compiler} is not installed (.ci/run installs it)")
    done = make(scratch_helper(tmp_path / "helper"), f"CC={compiler}", *DEVELOPMENT_MAKE_ARGS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning:" not in done.stderr, done.stderr
    assert len(COMPILE_LINE.findall(done.stdout)) == len(list(HELPER.glob("*.c")))
    assert (tmp_path / "helper" / "brokerpkg-helper").is_file()


def test_the_users_build_shows_a_warning_and_goes_on(tmp_path: Path) -> None:
    done = make(scratch_helper(tmp_path / "helper", with_warning=True))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "brokerpkg_build_test_unused" in done.stderr and "warning:" in done.stderr
    assert (tmp_path / "helper" / "brokerpkg-helper").is_file()
    lines = COMPILE_LINE.findall(done.stdout)
    assert lines and "-Werror" not in done.stdout


def test_the_development_build_stops_at_a_warning(tmp_path: Path) -> None:
    done = make(scratch_helper(tmp_path / "helper", with_warning=True), *DEVELOPMENT_MAKE_ARGS)
    assert done.returncode != 0
    assert re.search(r"error: .*brokerpkg_build_test_unused", done.stderr), done.stderr
    compiles = [line for line in done.stdout.splitlines() if COMPILE_LINE.match(line)]
    assert compiles and all(" -Werror " in line for line in compiles), done.stdout
    assert not (tmp_path / "helper" / "brokerpkg-helper").exists()


def readme_helper_section() -> str:
    """README's "### helper/" section of "## Architecture", up to the next heading."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"^## Architecture\n(?:.*\n)*?### helper/\n((?:(?!#).*\n)*)", text, re.M)
    assert match, 'README.md has no "### helper/" section under "## Architecture"'
    return match.group(1)


def test_the_readme_architecture_names_every_helper_source() -> None:
    named = set(re.findall(r"`([a-z_]+\.c)`", readme_helper_section()))
    sources = {path.name for path in HELPER.glob("*.c")}
    assert sources - named == set(), "helper/ files the README's architecture leaves out"
    harness_sources = {path.name for path in (HELPER / "fuzz").glob("*.c")}
    assert named - sources - harness_sources == set(), "names in it that are no file"
