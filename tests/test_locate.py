"""locate_helper: search order, privilege detection, and what it reports when nothing is found."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from brokerpkg import HelperNotFoundError, locate
from brokerpkg.locate import HelperLocation, helper_privilege, locate_helper

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="setcap and setuid-root need root")
needs_setcap = pytest.mark.skipif(shutil.which("setcap") is None, reason="setcap not installed")

HELPER = "brokerpkg-helper"


def executable(path: Path, content: str = "#!/bin/sh\nexit 0\n") -> Path:
    """Create an executable file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    path.chmod(0o755)
    return path


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the package and checkout copies into tmp_path (both absent at first)."""
    monkeypatch.setattr(locate, "PACKAGED_HELPER", tmp_path / "package" / "_helper" / HELPER)
    monkeypatch.setattr(locate, "CHECKOUT_HELPER", tmp_path / "checkout" / "helper" / HELPER)
    monkeypatch.setattr(locate, "_is_source_checkout", lambda: True)
    return tmp_path


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment whose PATH is tmp_path/bin only."""
    return {"PATH": str(tmp_path / "bin"), **extra}


# ------------------------------------------------------------------ explicit and environment


def test_explicit_path_wins(layout: Path) -> None:
    given = executable(layout / "mine" / HELPER)
    executable(layout / "package" / "_helper" / HELPER)
    found = locate_helper(given, environ=env(layout, BROKERPKG_HELPER="/elsewhere"))
    assert found == HelperLocation(str(given), "argument", "none", "given by argument")


def test_explicit_bare_name_is_looked_up_on_path(layout: Path) -> None:
    on_path = executable(layout / "bin" / "my-helper")
    found = locate_helper("my-helper", environ=env(layout))
    assert (found.path, found.found_by) == (str(on_path), "argument")


def test_relative_explicit_path_becomes_absolute(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable(layout / "rel" / HELPER)
    monkeypatch.chdir(layout)
    found = locate_helper(f"rel/{HELPER}", environ=env(layout))
    assert found.path == str(layout / "rel" / HELPER)


@pytest.mark.parametrize("kind", ["missing", "not-executable", "directory"])
def test_bad_explicit_helper_raises(layout: Path, kind: str) -> None:
    target = layout / "bad" / HELPER
    if kind == "not-executable":
        target.parent.mkdir()
        target.write_text("x")
        target.chmod(0o644)
    elif kind == "directory":
        target.mkdir(parents=True)
    with pytest.raises(HelperNotFoundError, match="not an executable file") as caught:
        locate_helper(target, environ=env(layout))
    assert caught.value.searched == (f"argument: {target}",)


def test_environment_variable_is_second(layout: Path) -> None:
    given = executable(layout / "from-env" / HELPER)
    executable(layout / "package" / "_helper" / HELPER)
    found = locate_helper(environ=env(layout, BROKERPKG_HELPER=str(given)))
    assert (found.path, found.found_by, found.reason) == (
        str(given),
        "environment",
        "given by BROKERPKG_HELPER",
    )


def test_bad_environment_variable_raises(layout: Path) -> None:
    with pytest.raises(HelperNotFoundError, match="BROKERPKG_HELPER"):
        locate_helper(environ=env(layout, BROKERPKG_HELPER="no-such-helper-anywhere"))


# ------------------------------------------------------------------ privileged copies on PATH


@needs_root
@needs_setcap
def test_capability_copy_on_path_wins_over_package(layout: Path) -> None:
    on_path = executable(layout / "bin" / HELPER)
    subprocess.run(["setcap", "cap_net_raw+ep", str(on_path)], check=True)
    executable(layout / "package" / "_helper" / HELPER)
    found = locate_helper(environ=env(layout))
    assert (found.path, found.found_by, found.privilege) == (str(on_path), "path", "capability")


@needs_root
def test_setuid_root_copy_on_path_is_found(layout: Path) -> None:
    on_path = executable(layout / "bin" / HELPER)
    os.chown(on_path, 0, 0)
    on_path.chmod(0o4755)
    found = locate_helper(environ=env(layout))
    assert (found.found_by, found.privilege) == ("path", "setuid")


@needs_root
@needs_setcap
def test_unprivileged_copies_on_path_are_skipped(layout: Path) -> None:
    plain = executable(layout / "bin" / HELPER)
    other_cap = executable(layout / "bin2" / HELPER)
    subprocess.run(["setcap", "cap_net_admin+ep", str(other_cap)], check=True)
    packaged = executable(layout / "package" / "_helper" / HELPER)
    found = locate_helper(environ={"PATH": f"{plain.parent}:{other_cap.parent}"})
    assert (found.path, found.found_by) == (str(packaged), "package")
    assert helper_privilege(other_cap) == "none"


def test_setuid_not_owned_by_root_is_not_privileged(tmp_path: Path) -> None:
    path = executable(tmp_path / HELPER)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    path.chmod(0o4755)
    assert os.stat(path).st_mode & stat.S_ISUID
    assert helper_privilege(path) == "none"


def test_privilege_of_missing_file_is_none(tmp_path: Path) -> None:
    assert helper_privilege(tmp_path / "nothing") == "none"


@pytest.mark.parametrize(
    ("blob", "grants"),
    [
        (bytes.fromhex("0100000200200000000000000000000000000000"), True),
        (bytes.fromhex("0100000200100000000000000000000000000000"), False),
        (struct.pack("<III", 0x02000001, 1 << 13, 0) + bytes(8), True),
        (struct.pack("<IIIII", 0x03000001, 1 << 13, 0, 0, 0) + struct.pack("<I", 0), True),
        (b"\x01\x00", False),
    ],
)
def test_capability_blob_parsing(blob: bytes, grants: bool) -> None:
    assert locate._capability_grants_net_raw(blob) is grants


# ------------------------------------------------------------------ installed and checkout copies


def test_package_copy_before_checkout(layout: Path) -> None:
    packaged = executable(layout / "package" / "_helper" / HELPER)
    executable(layout / "checkout" / "helper" / HELPER)
    found = locate_helper(environ=env(layout))
    assert (found.path, found.found_by, found.reason) == (
        str(packaged),
        "package",
        "installed with the package",
    )


def test_checkout_copy_is_the_last_resort(layout: Path) -> None:
    built = executable(layout / "checkout" / "helper" / HELPER)
    found = locate_helper(environ=env(layout))
    assert (found.path, found.found_by) == (str(built), "checkout")


def test_checkout_copy_is_ignored_outside_a_checkout(
    layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executable(layout / "checkout" / "helper" / HELPER)
    monkeypatch.setattr(locate, "_is_source_checkout", lambda: False)
    with pytest.raises(HelperNotFoundError):
        locate_helper(environ=env(layout))


def test_nothing_found_lists_every_place(layout: Path) -> None:
    executable(layout / "bin" / HELPER)  # unprivileged: skipped
    with pytest.raises(HelperNotFoundError) as caught:
        locate_helper(environ=env(layout))
    message = str(caught.value)
    assert "cannot find brokerpkg-helper" in message
    for expected in (
        "BROKERPKG_HELPER: not set",
        "skipped: neither setuid-root nor cap_net_raw",
        "package:",
        "checkout:",
    ):
        assert expected in message
    assert len(caught.value.searched) == 5


def test_real_source_checkout_is_recognised() -> None:
    repository = Path(__file__).resolve().parent.parent
    assert repository / "brokerpkg" == locate.PACKAGE_DIR
    assert locate._is_source_checkout()
    assert repository / "helper" / HELPER == locate.CHECKOUT_HELPER
