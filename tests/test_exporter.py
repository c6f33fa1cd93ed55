"""``brokerpkg exporter``: configuration, metrics text, HTTP endpoints, helper restarts,
reloads and the privilege story, against the real helper on loopback.

The lab tests with the real Prometheus, smokeping_prober and blackbox_exporter are in
tests/test_exporter_lab.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from brokerpkg import cli
from brokerpkg.errors import HELPER_NAME
from brokerpkg.exporter import (
    Exporter,
    Request,
    address_hash,
    parse_request_head,
    probe_timeout,
    split_host_port,
)
from brokerpkg.exporter_config import (
    DEFAULT_BUCKETS,
    ConfigError,
    Target,
    load_config_file,
    parse_buckets,
    parse_config,
    parse_duration,
    parse_listen,
    settings_from,
)
from brokerpkg.exporter_metrics import ExporterState, path_changed, path_id, render_ping
from brokerpkg.session import Session

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exporterlab as xl

# ------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1", 1.0), ("0.2", 0.2), ("200ms", 0.2), ("1m30s", 90.0), ("1.5s", 1.5), ("500us", 5e-4)],
)
def test_intervals_take_seconds_and_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1x", "ms", "1s2", "-1s", "0", "0s", "inf"])
def test_bad_intervals_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="interval"):
        parse_duration(text)


def test_listen_addresses() -> None:
    assert parse_listen(":9374") == ("", 9374)
    assert parse_listen("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_listen("[::1]:9374") == ("::1", 9374)
    for bad in ("9374", "::1:9374", "[nope]:1", "host:0", "host:99999", "host:x"):
        with pytest.raises(ConfigError, match="listen address"):
            parse_listen(bad)


def test_buckets() -> None:
    assert DEFAULT_BUCKETS[0] == 5e-05 and len(DEFAULT_BUCKETS) == 20
    assert DEFAULT_BUCKETS[-1] == pytest.approx(26.2144)
    assert parse_buckets("0.001,0.01,1") == (0.001, 0.01, 1.0)
    with pytest.raises(ConfigError, match="increasing"):
        parse_buckets("0.1,0.01")
    with pytest.raises(ConfigError, match="comma-separated numbers"):
        parse_buckets("0.1,x")


SMOKEPING_EXAMPLE = """
---
targets:
- hosts:
  - host1
  - host2
  interval: 1s # Duration, Default 1s.
  network: ip # One of ip, ip4, ip6. Default: ip (automatic IPv4/IPv6)
  protocol: icmp # One of icmp, udp. Default: icmp (Requires privileged operation)
  size: 56 # Packet data size in bytes. Default 56 (Range: 24 - 65535)
  source: 127.0.1.1 # Souce IP address to use. Default: None (automatic selection)
- host: host3
  interval: 200ms
  network: ip6
  protocol: udp
  tos: 184
  labels: {site: ams, rack: 7}
paths:
- hosts: [host4]
  interval: 5s
"""


def test_smokeping_probers_example_file(tmp_path: Path) -> None:
    path = tmp_path / "smokeping.yml"
    path.write_text(SMOKEPING_EXAMPLE)
    targets = load_config_file(str(path))
    assert targets == [
        Target("host1", source="127.0.1.1"),
        Target("host2", source="127.0.1.1"),
        Target("host3", interval=0.2, family=6, tos=184, labels=(("rack", "7"), ("site", "ams"))),
        Target("host4", interval=5.0, path=True),
    ]
    settings = settings_from(["cli"], [], file_targets=targets)
    assert settings.label_names == ("ip", "host", "source", "tos", "rack", "site")
    assert settings.targets[0] == Target("cli")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"targets": [{"hosts": []}]}, r"targets\[0\]: hosts must be a non-empty list"),
        ({"targets": [{"hosts": ["a"], "network": "ip5"}]}, "network must be one of"),
        ({"targets": [{"hosts": ["a"], "size": 23}]}, "size must be an integer from 24"),
        ({"targets": [{"hosts": ["a"], "tos": 256}]}, "tos must be an integer from 0 to 255"),
        ({"targets": [{"hosts": ["a"], "protocol": "tcp"}]}, "protocol must be icmp or udp"),
        ({"targets": [{"hosts": ["a"], "interval": "soon"}]}, "is not a duration"),
        ({"targets": [{"hosts": ["a"], "labels": {"ip": "x"}}]}, "set by the exporter"),
        ({"targets": [{"hosts": ["a"], "labels": {"a-b": "x"}}]}, "not a Prometheus label"),
        ({"targets": [{"hosts": ["a"], "count": 3}]}, "unknown key 'count'"),
        ({"target": []}, "unknown top-level key 'target'"),
        ([1], "must be a mapping"),
    ],
)
def test_bad_configurations_say_where_and_why(document: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(document)


def test_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("targets: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yml: not valid YAML"):
        load_config_file(str(path))


def test_no_targets_at_all() -> None:
    with pytest.raises(ConfigError, match="no targets"):
        settings_from([], [])


# ------------------------------------------------------------------------ pure pieces


def test_path_ids_change_with_the_path_not_with_its_discovery() -> None:
    assert path_id(["a", "b"]) == path_id(["a", "b"]) != path_id(["a", "c"])
    assert len(path_id([None, "b"])) == 8
    assert not path_changed(["a", None], ["a", "b"])  # a silent hop answered
    assert not path_changed(["a"], ["a", "b", "c"])  # hops found beyond
    assert path_changed(["a", "b"], ["a", "c"])  # another router
    assert path_changed(["a", "b", "d"], ["a", "b", "c", "d"])  # the destination moved


def test_render_ping_writes_what_prometheus_reads() -> None:
    state = ExporterState(("ip", "host", "source", "tos"), (0.001, 0.01), {}, {}, {})
    series = state.new_series(("::1", 'a "quoted\\ host', "", "0"))
    state.ping[1] = series
    series.requests = 3
    series.loss = 1
    state.observe(series, 0.0005)
    state.observe(series, 0.02)
    page = xl.samples(render_ping(state))
    labels = {"ip": "::1", "host": 'a "quoted\\ host'}
    assert xl.value(page, "smokeping_requests_total", **labels) == 3
    assert xl.value(page, "smokeping_response_loss_total", **labels) == 1
    assert xl.value(page, "smokeping_response_duration_seconds_count", **labels) == 2
    assert xl.value(page, "smokeping_response_duration_seconds_sum", **labels) == 0.0205
    buckets = {
        le: xl.value(page, "smokeping_response_duration_seconds_bucket", le=le, **labels)
        for le in ("0.001", "0.01", "+Inf")
    }
    assert buckets == {"0.001": 1, "0.01": 1, "+Inf": 2}
    types = xl.families(render_ping(state))
    assert types["smokeping_requests"] == ("counter", frozenset({"ip", "host", "source", "tos"}))
    assert types["smokeping_response_duration_seconds"][0] == "histogram"


def test_http_request_heads() -> None:
    request = parse_request_head(
        b"GET /probe?target=%3A%3A1&module=icmp HTTP/1.1\r\n"
        b"X-Prometheus-Scrape-Timeout-Seconds: 3\r\n\r\n"
    )
    assert request == Request(
        "GET",
        "/probe",
        {"target": "::1", "module": "icmp"},
        {"x-prometheus-scrape-timeout-seconds": "3"},
    )
    assert probe_timeout(request.headers) == 2.5
    assert probe_timeout({}) == 10.0
    with pytest.raises(ValueError, match="> 0"):
        probe_timeout({"x-prometheus-scrape-timeout-seconds": "-1"})
    for bad in (b"GET /\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n"):
        with pytest.raises(ValueError, match="bad"):
            parse_request_head(bad)


def test_targets_and_address_hashes() -> None:
    assert split_host_port("h:80") == ("h", 80)
    assert split_host_port("[::1]:53") == ("::1", 53)
    assert split_host_port("::1") == ("::1", None)
    with pytest.raises(ValueError, match="bad port"):
        split_host_port("h:0")
    # FNV-1a over the address bytes; equal to blackbox_exporter's: test_exporter_lab.py
    assert address_hash("127.0.0.1") != address_hash("127.0.0.2")
    assert address_hash("::1") == address_hash("0::1")


# ------------------------------------------------------------------------ the real helper


async def fetch(
    port: int, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """(status, body) of one HTTP request to 127.0.0.1:PORT."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> None:
    """Poll ``check`` (async) until it returns true; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serving(
    load: Callable[[], Any], vantages: list[tuple[str, Any]], **options: Any
) -> AsyncIterator[Exporter]:
    """A started exporter on 127.0.0.1 (a free port): smokeping_prober's buckets, a 1 s
    timeout and ``options``; closed at the end."""
    exporter = Exporter(
        load,
        vantages,
        listen=("127.0.0.1", 0),
        buckets=DEFAULT_BUCKETS,
        timeout=1.0,
        **options,
    )
    await exporter.start()
    try:
        yield exporter
    finally:
        await exporter.close()


@pytest.fixture
async def running(
    privileged: None, helper_path: str, tmp_path: Path
) -> AsyncIterator[tuple[Exporter, Path]]:
    """An exporter pinging 127.0.0.1 and ::1 every 50 ms from a config file, port 0."""
    config = tmp_path / "smokeping.yml"
    config.write_text("targets:\n- hosts: [127.0.0.1, '::1']\n  interval: 50ms\n")
    async with serving(
        lambda: settings_from([], [], file_targets=load_config_file(str(config))),
        [("", lambda: Session(helper_path))],
    ) as exporter:
        yield exporter, config


async def test_pings_counted_per_target(running: tuple[Exporter, Path]) -> None:
    exporter, _ = running
    port = exporter.ports[0]

    async def answered() -> bool:
        page = xl.samples((await fetch(port, "/metrics"))[1])
        return all(
            xl.value(page, "smokeping_response_duration_seconds_count", ip=ip) >= 10
            for ip in ("127.0.0.1", "::1")
        )

    await wait_for(answered)
    status, body = await fetch(port, "/metrics")
    assert status == 200
    page = xl.samples(body)
    for ip in ("127.0.0.1", "::1"):
        labels = {"ip": ip, "host": ip, "source": "", "tos": "0"}
        requests = xl.value(page, "smokeping_requests_total", **labels)
        answers = xl.value(page, "smokeping_response_duration_seconds_count", **labels)
        assert answers <= requests <= answers + 5  # a few in flight at most
        assert xl.value(page, "smokeping_response_loss_total", **labels) == 0
        assert xl.value(page, "smokeping_response_ttl", **labels) == 64
        mean = xl.value(page, "smokeping_response_duration_seconds_sum", **labels) / answers
        assert 0 < mean < 0.005
    assert xl.value(page, "brokerpkg_helper_up", source="") == 1


async def test_probe_endpoint_and_its_errors(running: tuple[Exporter, Path]) -> None:
    exporter, _ = running
    port = exporter.ports[0]
    timeout = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}
    status, body = await fetch(port, "/probe?target=::1&module=icmp", headers=timeout)
    page = xl.samples(body)
    assert status == 200
    assert xl.value(page, "probe_success") == 1
    assert xl.value(page, "probe_ip_protocol") == 6
    assert xl.value(page, "probe_icmp_reply_hop_limit") == 64
    assert 0 < xl.value(page, "probe_icmp_duration_seconds", phase="rtt") < 0.005
    assert xl.value(page, "probe_duration_seconds") < 1
    assert await fetch(port, "/probe?target=127.0.0.1&module=nope") == (
        400,
        "Unknown module 'nope'\n",
    )
    assert await fetch(port, "/probe?module=icmp") == (400, "Target parameter is missing\n")
    status, body = await fetch(
        port, "/probe?target=127.0.0.1", headers={"X-Prometheus-Scrape-Timeout-Seconds": "x"}
    )
    assert (status, body) == (
        500,
        "Failed to parse timeout from Prometheus header: could not convert string to float: 'x'\n",
    )
    status, body = await fetch(port, "/probe?target=no.such.name.invalid&module=icmp")
    assert status == 200 and xl.value(xl.samples(body), "probe_success") == 0
    assert (await fetch(port, "/nowhere"))[0] == 404
    assert await fetch(port, "/-/reload") == (405, "This endpoint requires a POST request.\n")
    # the next request still works
    status, body = await fetch(port, "/probe?target=127.0.0.1:9&module=udp", headers=timeout)
    assert status == 200 and xl.value(xl.samples(body), "probe_success") == 1


async def test_reload_keeps_counts_adds_targets_and_survives_a_bad_file(
    running: tuple[Exporter, Path],
) -> None:
    exporter, config = running
    port = exporter.ports[0]

    async def count(ip: str) -> float:
        page = xl.samples((await fetch(port, "/metrics"))[1])
        try:
            return xl.value(page, "smokeping_requests_total", ip=ip)
        except KeyError:
            return -1

    async def counted() -> bool:
        return await count("127.0.0.1") >= 5

    await wait_for(counted)
    before = await count("127.0.0.1")
    config.write_text("targets:\n- hosts: [127.0.0.1, 127.0.0.2]\n  interval: 50ms\n")
    assert await fetch(port, "/-/reload", method="POST") == (200, "")
    assert await count("127.0.0.1") >= before  # same labels: the count goes on
    assert await count("::1") == -1  # gone from the file, gone from the page

    async def new_target() -> bool:
        return await count("127.0.0.2") > 0

    await wait_for(new_target)
    config.write_text("targets: [\n")
    status, body = await fetch(port, "/-/reload", method="POST")
    assert status == 500 and body.startswith("Failed to reload config: ")
    assert "not valid YAML" in body
    page = xl.samples((await fetch(port, "/metrics"))[1])
    assert xl.value(page, "smokeping_prober_config_last_reload_successful") == 0
    assert xl.value(page, "smokeping_requests_total", ip="127.0.0.2") > 0  # still probing


async def test_a_dead_helper_is_counted_and_replaced(running: tuple[Exporter, Path]) -> None:
    exporter, _ = running
    port = exporter.ports[0]
    vantage = exporter.vantages[0]
    first = vantage.session
    assert first is not None and first.process is not None
    first.process.kill()

    async def replaced() -> bool:
        session = vantage.session
        return session is not None and session is not first

    await wait_for(replaced)
    page = xl.samples((await fetch(port, "/metrics"))[1])
    assert xl.value(page, "brokerpkg_helper_failures_total", source="") == 1
    assert xl.value(page, "brokerpkg_helper_up", source="") == 1
    answered = xl.value(page, "smokeping_response_duration_seconds_count", ip="::1")

    async def resumed() -> bool:
        page = xl.samples((await fetch(port, "/metrics"))[1])
        return xl.value(page, "smokeping_response_duration_seconds_count", ip="::1") > answered + 5

    await wait_for(resumed)


# ------------------------------------------------------------------------ the command


def test_the_command_refuses_bad_flags_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["exporter", "-i", "soon", "127.0.0.1"]) == 2
    assert "interval 'soon' is not a duration" in capsys.readouterr().err
    assert cli.main(["exporter", "--listen", "9374", "127.0.0.1"]) == 2
    assert "brokerpkg exporter: listen address '9374'" in capsys.readouterr().err
    assert cli.main(["exporter"]) == 2
    assert capsys.readouterr().err == (
        "brokerpkg exporter: no targets: give hosts, --path HOST or --config FILE\n"
    )
    assert cli.main(["exporter", "--config", "/nonexistent/smokeping.yml", "127.0.0.1"]) == 2
    assert capsys.readouterr().err == (
        "brokerpkg exporter: [Errno 2] No such file or directory: '/nonexistent/smokeping.yml'\n"
    )


def test_remote_helper_goes_with_from(capsys: pytest.CaptureFixture[str]) -> None:
    """--remote-helper names the helper of the --from hosts: refused without one, taken
    with one (the exporter's own --from, which probes from every host in one run)."""
    assert cli.main(["exporter", "--remote-helper", "/r/h", "127.0.0.1"]) == 2
    assert capsys.readouterr().err.endswith(
        "brokerpkg exporter: error: --remote-helper applies with --from [USER@]HOST\n"
    )
    args = cli.parse_arguments(
        cli.build_parser(), ["exporter", "--from", "far", "--remote-helper", "/r/h", "h"]
    )
    assert (args.vantages, args.remote_helper) == (["far"], "/r/h")


@pytest.mark.parametrize(
    "words",
    [
        ["h1", "h2", "-i", "200ms", "--path", "p", "-s", "100"],  # options after the hosts
        ["h1", "-i", "200ms", "h2", "--path", "p", "-s", "100"],  # between them
        ["-i", "200ms", "--path", "p", "-s", "100", "h1", "h2"],  # before them
    ],
)
def test_options_go_before_between_or_after_the_hosts(words: list[str]) -> None:
    args = cli.parse_arguments(cli.build_parser(), ["exporter", *words])
    assert (args.hosts, args.interval, args.paths, args.size) == (["h1", "h2"], 0.2, ["p"], 100)


@pytest.mark.parametrize("library", ["prometheus_client", "yaml"])
def test_without_the_extra_the_command_says_how_to_install_it(library: str, tmp_path: Path) -> None:
    """With one of the extra's libraries missing (None in sys.modules: its import fails),
    the command exits 2 naming the extra (PyYAML: when given a configuration file)."""
    config = tmp_path / "smokeping.yml"
    config.write_text("targets:\n- hosts: ['::1']\n")
    script = (
        f"import sys; sys.modules[{library!r}] = None\n"
        "from brokerpkg import cli\n"
        f"sys.exit(cli.main(['exporter', '--config', {str(config)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=xl.exporter_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("brokerpkg exporter: needs the exporter extra (")
    assert done.stderr.endswith("install it with python3 -m pip install 'brokerpkg[exporter]'\n")


def test_the_command_says_when_the_helper_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = cli.main(
        ["exporter", "--listen", "127.0.0.1:19999", "--helper", "/nonexistent/h", "::1"]
    )
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("brokerpkg exporter: ") and "/nonexistent/h" in err


def test_the_exporter_runs_as_nobody_and_holds_no_capability(
    privileged: None, unprivileged_copy: Any
) -> None:
    """The exporter as nobody with a cap_net_raw helper: it serves answers, its own
    process has no capability, the helper (its child) dropped its own too."""
    helper = unprivileged_copy.helper("setcap")
    port = 19000 + os.getpid() % 1000
    argv = unprivileged_copy.argv(
        ["-m", "brokerpkg", "exporter", "--listen", f"127.0.0.1:{port}", "-i", "50ms", "::1"]
    )
    process = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv],
        env=unprivileged_copy.env({"BROKERPKG_HELPER": str(helper)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=str(unprivileged_copy.root),
    )
    try:
        deadline = time.monotonic() + 30

        def helpers() -> list[int]:
            """The helper once the exporter runs it (before: sh, ip, setpriv)."""
            found = []
            for child in xl.children(process.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{child}/comm").read_text().startswith("brokerpkg-help"):
                        found.append(child)
            return found

        while not (children := helpers()):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        script = (
            "import sys, time, urllib.request\n"
            "for _ in range(200):\n"
            "    try:\n"
            f"        page = urllib.request.urlopen('http://127.0.0.1:{port}/metrics').read()\n"
            "    except OSError:\n"
            "        time.sleep(0.1); continue\n"
            "    if b'smokeping_response_duration_seconds_count{ip=\"::1\"' in page and "
            'b\'_count{ip="::1",host="::1",source="",tos="0"} 0\' not in page:\n'
            "        print('answered'); break\n"
            "    time.sleep(0.1)\n"
        )
        done = subprocess.run(
            ["nsenter", "-t", str(process.pid), "-n", sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.stdout.strip() == "answered", done.stderr
        status = Path(f"/proc/{process.pid}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[0] == "65534"
        assert fields["CapEff"].strip() == "0000000000000000"
        assert fields["CapPrm"].strip() == "0000000000000000"
        helper_status = Path(f"/proc/{children[0]}/status").read_text()
        # it answered probes, so it dropped its privilege (it does before reading input)
        assert "CapEff:\t0000000000000000" in helper_status
    finally:
        process.terminate()
        process.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _page(port: int) -> dict[tuple[str, Any], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return xl.samples(answer.read().decode())


def _wait_page(port: int, check: Callable[[dict[tuple[str, Any], float]], bool]) -> None:
    """Scrape until ``check(page)`` holds (the exporter may not listen yet)."""
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError):
            if check(_page(port)):
                return
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def _answered(page: dict[tuple[str, Any], float], ip: str) -> bool:
    counts = [
        number
        for (name, labels), number in page.items()
        if name == "smokeping_response_duration_seconds_count" and dict(labels)["ip"] == ip
    ]
    return bool(counts) and counts[0] > 3


def test_the_command_reloads_its_file_on_sighup(
    privileged: None, helper_path: str, tmp_path: Path
) -> None:
    """The running command, its host before its options: SIGHUP reads the file again
    (its target replaced), the command line's host goes on."""
    config = tmp_path / "smokeping.yml"
    config.write_text("targets:\n- hosts: ['::1']\n  interval: 50ms\n")
    port = _free_port()
    argv = ["127.0.0.1", "--listen", f"127.0.0.1:{port}", "--config", str(config), "-i", "50ms"]
    process = subprocess.Popen(
        xl.exporter_argv(argv),
        env=xl.exporter_env(helper=helper_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_page(port, lambda page: _answered(page, "::1") and _answered(page, "127.0.0.1"))
        config.write_text("targets:\n- hosts: [127.0.0.3]\n  interval: 50ms\n")
        process.send_signal(signal.SIGHUP)
        _wait_page(port, lambda page: _answered(page, "127.0.0.3"))
        page = _page(port)
        ips = {dict(labels)["ip"] for (name, labels) in page if name == "smokeping_requests_total"}
        assert ips == {"127.0.0.1", "127.0.0.3"}
        assert xl.value(page, "smokeping_prober_config_last_reload_successful") == 1
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(10)


async def test_names_are_looked_up_again_and_the_ip_label_follows(
    privileged: None, helper_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name whose address changes: the series with the old ``ip`` goes, one with the
    new address comes (the system resolver is replaced by a table that changes)."""
    import brokerpkg.exporter as exporter_module

    answers = {"target.test": "127.0.0.1"}
    lookups: list[str] = []

    async def fake_lookup(host: str, family: int | None) -> str:
        lookups.append(host)
        return answers[host]

    monkeypatch.setattr(exporter_module, "lookup", fake_lookup)
    async with serving(
        lambda: settings_from(["target.test"], [], interval=0.05),
        [("", lambda: Session(helper_path))],
        resolve_interval=0.2,
    ) as exporter:
        port = exporter.ports[0]

        async def answered(ip: str) -> bool:
            page = xl.samples((await fetch(port, "/metrics"))[1])
            try:
                count = xl.value(
                    page, "smokeping_response_duration_seconds_count", host="target.test", ip=ip
                )
            except KeyError:
                return False
            return count > 3

        await wait_for(lambda: answered("127.0.0.1"))
        answers["target.test"] = "127.0.0.2"
        await wait_for(lambda: answered("127.0.0.2"))
        page = xl.samples((await fetch(port, "/metrics"))[1])
        assert {
            dict(labels)["ip"] for (name, labels) in page if name == "smokeping_requests_total"
        } == {"127.0.0.2"}
        assert lookups.count("target.test") >= 2


async def test_an_unreachable_vantage_point_is_counted_and_the_rest_goes_on(
    privileged: None, helper_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--from`` a host that ssh cannot reach (BROKERPKG_SSH is ``false``, which exits
    1 at once): its failures are counted and retried, local probing goes on."""
    from brokerpkg.exporter import remote_session

    monkeypatch.setenv("BROKERPKG_SSH", "false")
    async with serving(
        lambda: settings_from(["::1"], [], interval=0.05),
        [("", lambda: Session(helper_path)), ("far", lambda: remote_session("far", "helper"))],
    ) as exporter:
        port = exporter.ports[0]

        async def retried() -> bool:
            page = xl.samples((await fetch(port, "/metrics"))[1])
            return xl.value(page, "brokerpkg_helper_failures_total", source="far") >= 3

        await wait_for(retried)
        page = xl.samples((await fetch(port, "/metrics"))[1])
        assert xl.value(page, "brokerpkg_helper_up", source="far") == 0
        assert xl.value(page, "brokerpkg_helper_up", source="") == 1
        assert xl.value(page, "smokeping_response_duration_seconds_count", source="") > 5
        far = {"source": "far", "ip": "::1"}
        assert xl.value(page, "smokeping_requests_total", **far) == 0
        assert xl.value(page, "smokeping_send_errors_total", **far) > 5


# ------------------------------------------------------------- the documents and the code

OTHER_PROGRAMS_OPTIONS = {"-T", "-o", "-m", "-l"}
"""Options the documents give to other programs: ``ssh -T -o``, ``python3 -m``, ``man -l``."""
FLAG = re.compile(r"(?<![\w-])--?[a-zA-Z][\w.-]*")
METRIC = re.compile(r"\b(?:smokeping|brokerpkg|probe)_\w+")
DOCUMENTED_DEFAULTS = {
    "--listen": ":9374",
    "--interval": "1s",
    "--size": "56",
    "--timeout": "5s",
    "--resolve-interval": "60s",
    "--remote-helper": "brokerpkg-helper",
    "--log.level": "info",
}
"""Each option's default as the man page and --help write it."""


def _man_exporter_section() -> str:
    """brokerpkg(1)'s EXPORTER section as text: one line per paragraph or item."""
    page = (xl.REPO / "man" / "brokerpkg.1").read_text()
    roff = page[page.index(".SH EXPORTER") : page.index(".SH VANTAGE POINTS")]
    words = []
    for line in roff.splitlines():
        font = re.match(r"^\.(?:B|I|BR|RB|BI|IB|IR|RI) (.*)$", line)
        if font:
            words.append(" ".join(w.strip('"') for w in re.findall(r'"[^"]*"|\S+', font[1])))
        else:
            words.append("\n" if line.startswith(".") else line)
    text = re.sub(r"\\f[BIRP]", "", " ".join(words)).replace("\\-", "-")
    return re.sub(r" ([,.;)])", r"\1", re.sub(r"[ \t]+", " ", text))


def _readme_fleet_section() -> str:
    """README's "Monitoring a fleet", ``a_{b,c}_d`` written out as ``a_b_d a_c_d``."""
    readme = (xl.REPO / "README.md").read_text()
    start = readme.index("## Monitoring a fleet")
    end = readme.find("\n## ", start + 1)
    text = readme[start : None if end < 0 else end]
    while brace := re.search(r"(\w*)\{([\w,]+)\}(\w*)", text):
        spelt = " ".join(f"{brace[1]}{word}{brace[3]}" for word in brace[2].split(","))
        text = text[: brace.start()] + spelt + text[brace.end() :]
    return text


def _exporter_parser() -> Any:
    commands = next(
        action
        for action in cli.build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return commands.choices["exporter"]


def _served_metric_names(page: str) -> set[str]:
    """The metric names of a page as queries spell them (counters with ``_total``)."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in text_string_to_metric_families(page)
        if not family.name.startswith(("process_", "python_"))
    }


def test_the_man_page_and_readme_name_only_the_exporters_flags() -> None:
    options = {option for action in _exporter_parser()._actions for option in action.option_strings}
    in_man = set(FLAG.findall(_man_exporter_section())) - OTHER_PROGRAMS_OPTIONS
    assert options - {"-h", "--help"} <= in_man
    assert in_man <= options
    assert set(FLAG.findall(_readme_fleet_section())) - OTHER_PROGRAMS_OPTIONS <= options


def _man_item(section: str, option: str) -> str:
    """The man page's item of ``option`` (its ``.TP`` line and text)."""
    head = re.compile(rf"^ ?(?:-\w \w+, )?{re.escape(option)}[ ,]")
    return next(line for line in section.splitlines() if head.match(line))


def test_the_defaults_are_those_the_man_page_and_help_give() -> None:
    section = _man_exporter_section()
    actions = {
        option: action for action in _exporter_parser()._actions for option in action.option_strings
    }
    for option, written in DOCUMENTED_DEFAULTS.items():
        action = actions[option]
        # the remote helper's default is a name the code gives when the flag is absent
        default = HELPER_NAME if option == "--remote-helper" else action.default
        assert default == (action.type(written) if action.type else written), option
        assert f"(default {written}" in action.help, option
        assert f"default {written}" in _man_item(section, option), option


async def test_the_man_page_names_every_series_served_and_the_readme_no_other(
    privileged: None, helper_path: str
) -> None:
    async with serving(
        lambda: settings_from(["::1"], ["127.0.0.1"], interval=0.05),
        [("", lambda: Session(helper_path))],
    ) as exporter:
        port = exporter.ports[0]

        async def hops_seen() -> bool:
            return "brokerpkg_hop_requests_total{" in (await fetch(port, "/metrics"))[1]

        await wait_for(hops_seen)
        served = _served_metric_names((await fetch(port, "/metrics"))[1])
        served |= _served_metric_names((await fetch(port, "/probe?target=::1&module=icmp"))[1])
    program = {"smokeping_prober"}  # the name of the program, not of a series
    assert set(METRIC.findall(_man_exporter_section())) - program == served
    assert set(METRIC.findall(_readme_fleet_section())) - program <= served
