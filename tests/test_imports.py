"""What importing costs: ``import brokerpkg`` loads no submodule until a name is used
(PEP 562), and the command imports only what the subcommand run needs.

Each check runs in a fresh interpreter (``python3 -S -c``, from the worktree root), since
this test process has long imported everything; -S leaves out site and its .pth files,
which import different modules on different machines.  Modules that this bare
interpreter loads by itself (``python3 -S -c pass``) are taken out before comparing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import brokerpkg

REPO = Path(__file__).resolve().parent.parent
TOOLS = {
    "brokerpkg.session",
    "brokerpkg.tasks",
    "brokerpkg.ping",
    "brokerpkg.trace",
    "brokerpkg.mtr",
    "brokerpkg.mda",
    "brokerpkg.multipath",
    "brokerpkg.sync",
    "brokerpkg.stats",
    "brokerpkg.cli_format",
    "brokerpkg.cli_terminal",
    "brokerpkg.cli_doctor",
    "brokerpkg.cli_setup",
    "brokerpkg.exporter",
    "brokerpkg.exporter_config",
    "brokerpkg.exporter_metrics",
}
"""brokerpkg's modules that load asyncio, or serve only some subcommands."""
EXTRAS = {"prometheus_client", "yaml"}
"""The exporter extra's libraries: only ``brokerpkg exporter`` loads them."""
DUMP_MODULES = "import sys; loaded = sorted(sys.modules); import json; print(json.dumps(loaded))"
"""Print the modules loaded so far (json itself is imported after the list is taken)."""


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``python3 -S -c CODE`` in a fresh interpreter from the worktree root; its
    stdout."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def new_modules(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules that CODE loads beyond what the bare interpreter loads (CODE's output
    must end with the line DUMP_MODULES prints)."""
    bare = set(json.loads(run_python(DUMP_MODULES)))
    after = set(json.loads(run_python(f"{code}\n{DUMP_MODULES}", env).splitlines()[-1]))
    return after - bare


# ------------------------------------------------------------------------ the package


def test_import_brokerpkg_loads_no_submodule_and_not_asyncio() -> None:
    loaded = new_modules("import brokerpkg")
    assert {name for name in loaded if name.startswith("brokerpkg")} == {
        "brokerpkg",
        "brokerpkg._version",
    }
    assert not loaded & (TOOLS | EXTRAS | {"asyncio", "typing"})


def test_a_pure_name_loads_only_its_module() -> None:
    loaded = new_modules("from brokerpkg import ProbeResult, StateError")
    assert {"brokerpkg.mtrpacket_compat", "brokerpkg.protocol", "brokerpkg.errors"} <= loaded
    assert not loaded & (TOOLS | {"asyncio"})


def test_answers_and_option_checks_load_no_session_and_not_asyncio() -> None:
    # what the one-shot command-line paths and the exporter's formatting share with
    # ping, without ping's session and event loop
    loaded = new_modules(
        "from brokerpkg.answers import classify\n"
        "from brokerpkg.options import probe_settings\n"
        "from brokerpkg import Answer"
    )
    assert {"brokerpkg.answers", "brokerpkg.options", "brokerpkg.protocol"} <= loaded
    assert not loaded & (TOOLS | {"asyncio"})


def test_brokerpkg_ping_keeps_the_names_it_always_had() -> None:
    # users import the answers, progress events and errors from brokerpkg.ping (each
    # name is looked for where it lives: the first module of the list that has it)
    code = """
import json, sys
from brokerpkg.ping import *
modules = [sys.modules[f"brokerpkg.{name}"] for name in ("errors", "answers", "tasks", "ping")]
homes = {}
for name in modules[-1].__all__:
    value = globals()[name]
    homes[name] = next(
        module.__name__ for module in modules if getattr(module, name, None) is value
    ).removeprefix("brokerpkg.")
print(json.dumps(homes))
"""
    homes = json.loads(run_python(code))
    answers = {"Answer", "classify", "probe_to_dict", "raise_for_probe"}
    errors = {"DestinationUnreachable", "NetworkError", "NoReplyError", "ProbeSendError"}
    errors.add("TimeExceeded")
    tasks = {"ProgressCallback", "ProgressEvent"}
    assert homes == {
        **dict.fromkeys(answers, "answers"),
        **dict.fromkeys(errors, "errors"),
        **dict.fromkeys(tasks, "tasks"),
        **dict.fromkeys(("PingResult", "ping", "multiping", "multiping_iter"), "ping"),
    }


def test_every_public_name_resolves_to_its_module_object() -> None:
    code = """
import importlib, json, sys, types, typing
import brokerpkg
kinds = {}
for name in brokerpkg.__all__:
    value = getattr(brokerpkg, name)
    if isinstance(value, types.ModuleType):
        kinds[name] = "module" if value is sys.modules["brokerpkg." + name] else "other module"
    elif name == "__version__":
        kinds[name] = "version" if value == brokerpkg._version.__version__ else repr(value)
    elif typing.get_origin(value) is not None:  # a type alias has no module of its own
        home = sys.modules["brokerpkg." + brokerpkg._EXPORTS[name]]
        kinds[name] = "defined" if getattr(home, name) is value else home.__name__
    else:
        home = importlib.import_module(value.__module__)
        kinds[name] = "defined" if getattr(home, name) is value else value.__module__
star = {}
exec("from brokerpkg import *", star)
print(json.dumps({"kinds": kinds, "star": sorted(set(star) - {"__builtins__"}),
                  "dir": dir(brokerpkg)}))
"""
    result: dict[str, Any] = json.loads(run_python(code))
    expected = dict.fromkeys(brokerpkg.__all__, "defined")
    expected.update(stats="module", sync="module", __version__="version")
    assert result["kinds"] == expected
    assert result["star"] == sorted(brokerpkg.__all__)
    assert set(brokerpkg.__all__) <= set(result["dir"])


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'traceroot'"):
        _ = brokerpkg.traceroot  # type: ignore[attr-defined]
    with pytest.raises(ImportError, match="traceroot"):
        exec("from brokerpkg import traceroot", {})


@pytest.mark.parametrize(
    "first",
    [
        "import brokerpkg.ping",
        "from brokerpkg.ping import PingResult",
        "import brokerpkg.trace",
        "import brokerpkg.sync",  # imports brokerpkg.ping itself
        "import brokerpkg; brokerpkg.ping; import brokerpkg.mtr",
    ],
)
def test_brokerpkg_ping_stays_the_function_whatever_is_imported_first(first: str) -> None:
    code = f"""
{first}
import inspect, sys
import brokerpkg
print(inspect.iscoroutinefunction(brokerpkg.ping),
      brokerpkg.ping is sys.modules["brokerpkg.ping"].ping)
"""
    assert run_python(code).split() == ["True", "True"]


def test_submodules_are_reachable_as_attributes() -> None:
    code = """
import brokerpkg
print(brokerpkg.session.Session is brokerpkg.Session,
      brokerpkg.protocol.Mpls is brokerpkg.Mpls, brokerpkg.errors.StateError.__name__)
"""
    assert run_python(code).split() == ["True", "True", "StateError"]


# ------------------------------------------------------------------------ the command


def test_importing_the_command_loads_no_tool() -> None:
    loaded = new_modules("import brokerpkg.cli; brokerpkg.cli.build_parser()")
    assert not loaded & (TOOLS | EXTRAS)


@pytest.mark.parametrize("words", [["--help"], ["trace", "--help"], ["mtr", "--help"]])
def test_help_loads_only_the_parser(words: list[str]) -> None:
    # brokerpkg --help within 1.5x of python3 -c pass (tests/bench/bench_startup.py):
    # argparse and the parser's constants, nothing that probes
    code = f"""
from brokerpkg import cli
try:
    cli.main({words!r})
except SystemExit as exit:
    assert exit.code == 0, exit.code
"""
    loaded = new_modules(code)
    assert {name for name in loaded if name.startswith("brokerpkg")} == {
        "brokerpkg",
        "brokerpkg._version",
        "brokerpkg.defaults",
        "brokerpkg.cli",
        "brokerpkg.cli_args",
        "brokerpkg.cli_exporter",  # registers its subcommand: argparse only
    }
    assert "asyncio" not in loaded


def test_a_parser_of_one_subcommand_parses_and_helps_as_the_full_one() -> None:
    from brokerpkg import cli_args

    full = cli_args.build_parser()
    assert cli_args.build_parser("").format_help() == full.format_help()
    words = {
        "probe": ["probe", "-t", "3", "-j", "::1"],
        "ping": ["ping", "-c", "2", "-W-1", "h"],
        "multiping": ["multiping", "--concurrency", "3", "a", "b"],
        "trace": ["trace", "-n", "--paris", "-w", "2,1,3", "h:80"],
        "mtr": ["mtr", "--flows", "4", "-c", "1", "h"],
        "doctor": ["doctor", "-j"],
        "setup": ["setup", "--remove"],
        "exporter": ["exporter", "-i", "1", "h"],
    }
    for name, line in words.items():
        one = cli_args.build_parser(cli_args.subcommand_of(line))
        assert one.format_help() == full.format_help()
        assert cli_args._subcommands(one)[name].format_help() == (
            cli_args._subcommands(full)[name].format_help()
        )
        try:
            expected = vars(cli_args.parse_arguments(full, line))
        except cli_args.UsageError as error:
            with pytest.raises(cli_args.UsageError, match=re.escape(str(error))):
                cli_args.parse_arguments(one, line)
        else:
            assert vars(cli_args.parse_arguments(one, line)) == expected


ASYNC_TOOLS = {
    "asyncio",
    "brokerpkg.session",
    "brokerpkg.tasks",
    "brokerpkg.resolve",
    "brokerpkg.ping",
    "brokerpkg.trace",
    "brokerpkg.cli_async",
}
"""What the one-shot subcommands on the local helper never load (issue 13: they run on
brokerpkg.blocking, without an event loop)."""


@pytest.mark.parametrize(
    "words",
    [["trace", "-n", "-q", "1", "127.0.0.1"], ["trace", "-q", "1", "::1"], ["probe", "127.0.0.1"]],
)
def test_the_one_shot_commands_load_neither_asyncio_nor_the_other_subcommands(
    helper_path: str, words: list[str]
) -> None:
    code = f"""
from brokerpkg import cli
status = cli.main({words!r})
assert status == 0, status
"""
    loaded = new_modules(code, env=dict(os.environ, BROKERPKG_HELPER=helper_path))
    assert {"brokerpkg.cli_blocking", "brokerpkg.blocking", "brokerpkg.engine"} <= loaded
    assert not loaded & ASYNC_TOOLS
    assert not loaded & {
        "brokerpkg.sync",
        "brokerpkg.mtr",
        "brokerpkg.mda",
        "brokerpkg.multipath",
        "brokerpkg.cli_terminal",
        "brokerpkg.cli_doctor",
        "brokerpkg.cli_setup",
        "json",
        "datetime",
    }


@pytest.mark.parametrize(
    "words", [["ping", "-c", "1", "-q", "localhost"], ["multiping", "-q", "127.0.0.1", "::1"]]
)
def test_the_ping_commands_load_neither_the_tracer_nor_the_monitor(
    helper_path: str, words: list[str]
) -> None:
    # ping, by name, looks up the names of the addresses that answer (daemon threads:
    # brokerpkg.addresses.names_now)
    code = f"""
from brokerpkg import cli
status = cli.main({words!r})
assert status == 0, status
"""
    loaded = new_modules(code, env=dict(os.environ, BROKERPKG_HELPER=helper_path))
    assert {"brokerpkg.blocking", "brokerpkg.blocking_ping", "brokerpkg.cli_format"} <= loaded
    assert not loaded & ASYNC_TOOLS
    assert not loaded & {
        "brokerpkg.blocking_trace",
        "brokerpkg.waiting",
        "brokerpkg.mtr",
        "brokerpkg.sync",
        "brokerpkg.cli_doctor",
        "brokerpkg.cli_setup",
    }
