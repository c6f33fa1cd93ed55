"""In-tree PEP 517 build backend for brokerpkg: setuptools plus the C helper.

pyproject.toml names this module as the backend (``backend-path = ["helper/pybuild"]``)
and these classes as setuptools commands (``[tool.setuptools.cmdclass]``):

- ``BuildPyWithHelper`` runs ``make -C helper`` (the system C compiler, ``$MAKE`` and
  ``$CC`` honoured) and copies ``helper/brokerpkg-helper`` into the package as
  ``brokerpkg/_helper/brokerpkg-helper`` (mode 0755), where ``locate_helper`` finds it.
  In an editable install the copy is skipped: the package then runs from the checkout
  and finds ``helper/brokerpkg-helper`` itself.
- ``PlatformWheel`` tags the wheel ``py3-none-<platform>``: it carries a native program
  (not a CPython extension, so no ABI tag), and must never be ``py3-none-any``.  On glibc
  the platform is ``manylinux_X_Y_<arch>`` for the glibc the helper was built against (a
  program linked against glibc X.Y runs on X.Y and later, and package indexes accept the
  tag, PEP 600); elsewhere (musl) it stays setuptools' ``linux_<arch>``, for local installs.
- ``build_editable`` also puts the data files (``[tool.setuptools.data-files]``: the man
  pages) in the editable wheel, which setuptools leaves out, so that ``pip install -e .``
  installs them into the environment's ``share/man`` as ``pip install .`` does (copies:
  after editing a page, install again).
- ``SdistWithSources`` adds what a wheel build from the sdist needs: the helper's sources
  and Makefile, this backend, the man pages, the tests and the README.

Every PEP 517 hook is setuptools' own (``setuptools.build_meta``), wrapped so that the
``build/`` and ``brokerpkg.egg-info/`` directories setuptools leaves in the source tree are
removed again (the repository's top level is fixed); ones that existed before are kept.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools_backend
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist

BUILD_LEFTOVERS = ("build", "brokerpkg.egg-info")
HELPER_DIR = "helper"
HELPER_NAME = "brokerpkg-helper"
PACKAGED_HELPER = ("brokerpkg", "_helper", HELPER_NAME)
SDIST_TREES = ("helper", "man", "tests")
SDIST_FILES = ("README.md", "pyproject.toml")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIPPED_SUFFIXES = (".o", ".a", ".so", ".pyc", ".d")


class HelperBuildError(RuntimeError):
    """The C helper could not be built."""


@contextlib.contextmanager
def _top_level_kept_clean() -> Iterator[None]:
    """Remove the build leftovers that did not exist before the block."""
    new = [Path(name) for name in BUILD_LEFTOVERS if not Path(name).exists()]
    try:
        yield
    finally:
        for path in new:
            shutil.rmtree(path, ignore_errors=True)


def _keeping_top_level_clean(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a setuptools hook with _top_level_kept_clean."""

    @functools.wraps(hook)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with _top_level_kept_clean():
            return hook(*args, **kwargs)

    return wrapped


build_wheel = _keeping_top_level_clean(_setuptools_backend.build_wheel)
build_sdist = _keeping_top_level_clean(_setuptools_backend.build_sdist)
get_requires_for_build_wheel = _keeping_top_level_clean(
    _setuptools_backend.get_requires_for_build_wheel
)
get_requires_for_build_sdist = _keeping_top_level_clean(
    _setuptools_backend.get_requires_for_build_sdist
)
get_requires_for_build_editable = _keeping_top_level_clean(
    _setuptools_backend.get_requires_for_build_editable
)
prepare_metadata_for_build_wheel = _keeping_top_level_clean(
    _setuptools_backend.prepare_metadata_for_build_wheel
)
prepare_metadata_for_build_editable = _keeping_top_level_clean(
    _setuptools_backend.prepare_metadata_for_build_editable
)


@_keeping_top_level_clean
def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """setuptools' editable wheel, with the project's data files added (see the module)."""
    name = _setuptools_backend.build_editable(wheel_directory, config_settings, metadata_directory)
    add_data_files(Path(wheel_directory) / name, data_files(Path.cwd()))
    return name


def data_files(source_root: Path) -> dict[str, Path]:
    """``[tool.setuptools.data-files]`` of ``source_root``: installed path -> source file."""
    pyproject = tomllib.loads((source_root / "pyproject.toml").read_text())
    table = pyproject.get("tool", {}).get("setuptools", {}).get("data-files", {})
    files = {}
    for directory, patterns in table.items():
        for pattern in patterns:
            for source in sorted(source_root.glob(pattern)):
                files[f"{directory}/{source.name}"] = source
    return files


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def add_data_files(wheel: Path, files: dict[str, Path]) -> None:
    """Rewrite ``wheel`` with ``files`` (installed path -> source) in its ``.data/data``
    (those it holds already are kept as they are).

    Raises:
        ValueError: the wheel has no RECORD.
    """
    name, version = wheel.name.split("-")[:2]
    data_dir = f"{name}-{version}.data/data"
    record_name = f"{name}-{version}.dist-info/RECORD"
    with zipfile.ZipFile(wheel) as original:
        entries = [(info, original.read(info)) for info in original.infolist()]
    if not any(info.filename == record_name for info, _ in entries):
        raise ValueError(f"{wheel.name} has no {record_name}")
    present = {info.filename for info, _ in entries}
    added = [
        (f"{data_dir}/{path}", source.read_bytes())
        for path, source in files.items()
        if f"{data_dir}/{path}" not in present
    ]
    rewritten = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as out:
        for info, data in entries:
            if info.filename == record_name:
                lines = [_record_line(path, content) for path, content in added]
                out.writestr(
                    info, data.rstrip(b"\n") + "".join(f"\n{x}" for x in lines).encode() + b"\n"
                )
            else:
                out.writestr(info, data)
        for path, content in added:
            out.writestr(path, content)
    rewritten.replace(wheel)


def build_helper(source_root: Path) -> Path:
    """Run ``make -C helper`` in ``source_root``; return the built helper's path.

    Raises HelperBuildError when there is no helper/Makefile, make fails, or it does
    not produce helper/brokerpkg-helper.
    """
    helper_dir = source_root / HELPER_DIR
    if not (helper_dir / "Makefile").is_file():
        raise HelperBuildError(f"{helper_dir / 'Makefile'} is missing: cannot build {HELPER_NAME}")
    make = os.environ.get("MAKE", "make")
    completed = subprocess.run([make, "-C", str(helper_dir)], check=False)
    if completed.returncode != 0:
        raise HelperBuildError(
            f"`{make} -C {helper_dir}` failed with status {completed.returncode}"
        )
    built = helper_dir / HELPER_NAME
    if not built.is_file():
        raise HelperBuildError(f"`{make} -C {helper_dir}` did not produce {built}")
    return built


class BuildPyWithHelper(_build_py):
    """build_py that also builds the helper and installs it inside the package."""

    def run(self) -> None:
        super().run()
        built = build_helper(Path.cwd())
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib).joinpath(*PACKAGED_HELPER)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)
        os.chmod(target, 0o755)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(str(Path(self.build_lib).joinpath(*PACKAGED_HELPER)))
        return outputs


def _glibc_version() -> tuple[int, int] | None:
    """The C library's version (major, minor) when it is glibc, else None."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    found = re.fullmatch(r"glibc (\d+)\.(\d+)(\.\d+)*", text or "")
    return (int(found[1]), int(found[2])) if found else None


def manylinux_platform(platform: str, glibc: tuple[int, int] | None) -> str:
    """``linux_<arch>`` -> ``manylinux_X_Y_<arch>`` for glibc X.Y; other tags unchanged."""
    if glibc is None or not platform.startswith("linux_"):
        return platform
    return f"manylinux_{glibc[0]}_{glibc[1]}_{platform.removeprefix('linux_')}"


def _load_bdist_wheel() -> Any:
    """setuptools' bdist_wheel (setuptools >= 70.1), else the wheel package's."""
    try:
        from setuptools.command.bdist_wheel import bdist_wheel  # noqa: PLC0415 - optional
    except ImportError:
        try:
            from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]  # noqa: PLC0415
        except ImportError:
            return None
    return bdist_wheel


_bdist_wheel = _load_bdist_wheel()

if _bdist_wheel is not None:

    class PlatformWheel(_bdist_wheel):  # type: ignore[misc, valid-type]
        """bdist_wheel for a package that carries a native program: py3-none-PLATFORM."""

        def finalize_options(self) -> None:
            # A binary payload: install into platlib at the wheel's root, not .data/purelib.
            self.distribution.has_ext_modules = lambda: True
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self) -> tuple[str, str, str]:
            _python, _abi, platform = super().get_tag()
            return "py3", "none", manylinux_platform(platform, _glibc_version())

else:  # pragma: no cover - only without setuptools >= 70.1 and without wheel

    class PlatformWheel(_build_py):  # type: ignore[no-redef]
        """Placeholder that explains what is missing."""

        def run(self) -> None:
            raise HelperBuildError("building a wheel needs setuptools >= 70.1 or the wheel package")


def _source_files(root: Path) -> list[str]:
    """Relative paths of the files an sdist needs beyond the Python package."""
    files = [name for name in SDIST_FILES if (root / name).is_file()]
    for tree in SDIST_TREES:
        for directory, subdirs, names in os.walk(root / tree):
            subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS)
            for name in sorted(names):
                path = Path(directory) / name
                if not _is_build_output(path):
                    files.append(str(path.relative_to(root)))
    return files


def _is_build_output(path: Path) -> bool:
    """True for compiled objects, binaries (ELF files) and caches."""
    if path.name.endswith(SKIPPED_SUFFIXES) or path.name == HELPER_NAME:
        return True
    try:
        with path.open("rb") as stream:
            return stream.read(4) == b"\x7fELF"
    except OSError:
        return True


class SdistWithSources(_sdist):
    """sdist that also ships the helper's sources, this backend, man pages and tests."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        extra = [name for name in _source_files(Path.cwd()) if name not in set(files)]
        super().make_release_tree(base_dir, [*files, *extra])
