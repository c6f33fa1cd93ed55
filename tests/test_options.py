"""The probe options, declared once (brokerpkg.options): what each high-level function
takes, checked by the type checker and at run time, and how each option reaches the
helper.  Nothing is sent: calls that pass their checks fail on a helper that does not
exist.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from brokerpkg import (
    monitor,
    monitor_flows,
    multipath_trace,
    multiping,
    multiping_iter,
    ping,
    sync,
    traceroute,
)
from brokerpkg.mtr import MonitorFlowsOptions
from brokerpkg.options import (
    CommonOptions,
    PingOptions,
    ProbeOptionsDict,
    TraceOptions,
    probe_settings,
)

REPO = Path(__file__).resolve().parent.parent
NOWHERE = "/nonexistent/brokerpkg-helper"
FUNCTIONS: dict[str, tuple[Callable[..., Any], type]] = {
    "ping": (ping, PingOptions),
    "multiping": (multiping, PingOptions),
    "multiping_iter": (multiping_iter, PingOptions),
    "traceroute": (traceroute, TraceOptions),
    "monitor": (monitor, TraceOptions),
    "monitor_flows": (monitor_flows, MonitorFlowsOptions),
    "multipath_trace": (multipath_trace, CommonOptions),
}
"""Each high-level function and the TypedDict of its ``**options``."""


def keys(options: type) -> frozenset[str]:
    """A TypedDict's keys (all optional)."""
    keys: frozenset[str] = getattr(options, "__optional_keys__")  # noqa: B009 - not in typeshed
    return keys


async def call(name: str, **arguments: Any) -> None:
    """Call the high-level function ``name`` on 127.0.0.1 with the helper NOWHERE (its
    first result for the iterators)."""
    function = FUNCTIONS[name][0]
    first = ["127.0.0.1"] if name.startswith("multiping") else "127.0.0.1"
    extra = {"flows": 2, "cycles": 1} if name == "monitor_flows" else {}
    result = function(first, helper=NOWHERE, **extra, **arguments)
    if inspect.isasyncgen(result):
        await anext(result)
    else:
        await result


# ----------------------------------------------------------------------------- declared once


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_function_takes_its_probe_options_from_one_typed_dict(name: str) -> None:
    function, options = FUNCTIONS[name]
    parameters = inspect.signature(function).parameters
    variadic = [p for p in parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    assert [p.annotation for p in variadic] == [f"Unpack[{options.__name__}]"]
    # flow is traceroute's and monitor's own argument (with paris), no other option is
    assert not keys(PingOptions) & set(parameters), "a probe option declared again"


def test_the_typed_dicts_nest_as_documented() -> None:
    assert keys(TraceOptions) == keys(CommonOptions) | {"local_port"}
    assert keys(PingOptions) == keys(TraceOptions) | {"ttl"}
    assert keys(ProbeOptionsDict) == keys(PingOptions) | {"flow"}


def test_monitor_flows_passes_on_what_monitor_takes() -> None:
    # its own settings are declared a second time (in the TypedDict): keep them in step
    parameters = inspect.signature(monitor).parameters
    settings = {p.name for p in parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    chosen = {"session", "helper", "paris", "flow"}  # monitor_flows' own, or its choice
    expected = (settings - chosen) | (keys(TraceOptions) - {"local_port"})
    assert keys(MonitorFlowsOptions) == expected


SAMPLES: dict[str, tuple[Any, str, Any]] = {
    "family": (4, "ip_version", 4),
    "protocol": ("udp", "protocol", "udp"),
    "port": (33434, "port", 33434),
    "ttl": (7, "ttl", 7),
    "size": (100, "size", 100),
    "payload_size": (56, "size", 20 + 8 + 56),
    "bit_pattern": (0xA5, "bit_pattern", 0xA5),
    "tos": (16, "tos", 16),
    "mark": (7, "mark", 7),
    "local_ip": ("127.0.0.1", "local_ip", "127.0.0.1"),
    "local_port": (4000, "local_port", 4000),
    "local_device": ("lo", "local_device", "lo"),
    "details": (True, "details", True),
    "flow": (9, "flow", 9),
}
"""option: (a value, the Session.probe argument it becomes, that argument's value)."""


def test_every_option_has_a_sample() -> None:
    assert set(SAMPLES) == keys(ProbeOptionsDict)


@pytest.mark.parametrize("option", sorted(SAMPLES))
def test_each_option_reaches_the_probe_arguments(option: str) -> None:
    value, argument, expected = SAMPLES[option]
    options = {"protocol": "udp", option: value}  # udp: every option applies
    arguments = probe_settings(timeout=1.5, **options).arguments("127.0.0.1")
    assert arguments[argument] == expected
    assert arguments["timeout"] == 1.5


# ----------------------------------------------------------------------------- run time


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("ping", "flow"),
        ("ping", "colour"),
        ("multiping", "flow"),
        ("multiping_iter", "flow"),
        ("traceroute", "ttl"),
        ("traceroute", "colour"),
        ("monitor", "ttl"),
        ("monitor", "colour"),
        ("monitor_flows", "ttl"),
        ("monitor_flows", "colour"),
        ("multipath_trace", "ttl"),
        ("multipath_trace", "local_port"),
        ("multipath_trace", "flow"),
    ],
)
async def test_an_option_a_function_does_not_take_is_refused_by_name(
    name: str, option: str
) -> None:
    message = f"{name}() got an unexpected keyword argument '{option}'"
    with pytest.raises(TypeError) as caught:
        await call(name, **{option: 1})
    assert str(caught.value) == message


@pytest.mark.parametrize("name", ["ping", "multiping", "traceroute", "multipath_trace"])
def test_the_blocking_functions_refuse_them_too(name: str) -> None:
    function = getattr(sync, name)
    first = ["127.0.0.1"] if name == "multiping" else "127.0.0.1"
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'x'$"):
        function(first, helper=NOWHERE, x=1)


@pytest.mark.parametrize("name", sorted(set(FUNCTIONS) - {"monitor_flows"}))
async def test_values_are_still_checked_before_any_helper_is_started(name: str) -> None:
    # (monitor_flows leaves them to each flow's monitor, on the helper it started)
    with pytest.raises(ValueError, match=r"^tos must be from 0 to 255, got 256$"):
        await call(name, tos=256)
    with pytest.raises(TypeError, match=r"^details must be True or False, got 'yes'$"):
        await call(name, details="yes")


# ----------------------------------------------------------------------------- type checker


TYPED_CALLS = """
from brokerpkg import monitor_flows, multipath_trace, ping, sync, traceroute


async def main() -> None:
    await ping("127.0.0.1", ttl=3, local_port=4000, details=True, payload_size=56)
    monitor_flows("127.0.0.1", 2, max_ttl=5, protocol="udp", name_resolver=None)
    await ping("127.0.0.1", tos="16")  # line 8
    await traceroute("127.0.0.1", ttl=3)  # line 9
    await multipath_trace("127.0.0.1", local_port=4000)  # line 10
    monitor_flows("127.0.0.1", 2, tos="16")  # line 11
    monitor_flows("127.0.0.1", 2, max_ttl="5")  # line 12
    sync.ping("127.0.0.1", family="4")  # line 13
"""


def test_the_type_checker_checks_each_option_of_each_call(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install mypy)")
    program = tmp_path / "calls.py"
    program.write_text(TYPED_CALLS)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml")),
            *("--no-incremental", "--hide-error-context", "--no-error-summary", str(program)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in done.stdout.splitlines() if ": error: " in line]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [8, 9, 10, 11, 12, 13], done.stdout + done.stderr
