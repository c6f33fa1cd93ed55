"""``brokerpkg exporter`` with the real engines, in a lab chain.

client -> r1 -> r2 -> server, and the scripted responder behind r2 answering a virtual
target 20 ms late.  Two vantage points: an exporter in the client namespace (probing
from there, and from the server namespace through ``--from far``: a real OpenSSH server
in the server namespace, with its own host key and configuration, reached with key
authentication, ``far`` being a ``Host`` of the client's ssh configuration), and an
exporter in the server namespace.  Debian's Prometheus, in the client namespace,
scrapes both, and the blackbox pattern (``/probe`` with relabelling) on the first; the
results are read through Prometheus's query API.  Debian's smokeping_prober and
blackbox_exporter run on the same targets, and their metric names, labels and types are
compared with ours.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exporterlab as xl
from conftest import _SANITIZER_OPTIONS, sanitized_build
from lab import Chain
from lab.sshd import NETNS_ETC, SshKeys, SshServer, remote_command, sshd_available

pytestmark = pytest.mark.usefixtures("privileged")

PORT_A, PORT_B, PORT_PROMETHEUS, PORT_SMOKEPING, PORT_BLACKBOX = 9374, 9375, 9090, 9376, 9115
PORT_C = 9377
DELAY = 0.02
SIZE_B = 200
"""-s of the exporter in the server namespace (the other sends the default 56 bytes)."""
VIRTUAL = 5


class Engines:
    """The lab, the addresses, and the processes started in it."""

    def __init__(self, chain: Chain, scratch: Path) -> None:
        self.chain = chain
        self.scratch = scratch
        self.client = chain.client_address(4)
        self.server = chain.server_address(4)
        self.virtual = chain.virtual_target(VIRTUAL, 4)
        self.blackhole = chain.add_blackhole(1).address(4)
        self.prometheus = f"http://127.0.0.1:{PORT_PROMETHEUS}"
        self.sshd: SshServer | None = None

    def query(self, text: str) -> list[dict[str, Any]]:
        return xl.prometheus_query(self.chain, "client", self.prometheus, text)

    def wait_query(self, text: str, want: int, timeout: float = 40.0) -> list[dict[str, Any]]:
        """The result of ``text`` once it has at least ``want`` series."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(text)
            if len(result) >= want:
                return result
            assert time.monotonic() < deadline, f"{text}: {result}"
            time.sleep(0.5)


def by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    """Query result as {label values: value}."""
    return {
        tuple(item["metric"].get(label, "") for label in labels): float(item["value"][1])
        for item in result
    }


@pytest.fixture(scope="module")
def engines(privileged: None, helper_path: str) -> Iterator[Engines]:
    available, why = sshd_available()
    if not available:
        pytest.skip(why)
    scratch = Path(tempfile.mkdtemp(prefix="bpk-xlab-"))
    chain = Chain(2, responder=True, tag="xlab")
    try:
        chain.build()
        lab = Engines(chain, scratch)
        chain.start_responder({"targets": {lab.virtual: {"delay": DELAY}}})
        keys = SshKeys(scratch / "ssh")
        keys.alias("far", lab.server)
        sshd = SshServer(chain, "server", lab.server, keys)
        sshd.authorize()
        lab.sshd = sshd.start()
        common = ["-i", "200ms", "--timeout", "1s"]
        xl.start(
            chain,
            "client",
            xl.exporter_argv(
                [
                    "--listen",
                    f":{PORT_A}",
                    *common,
                    "--local",
                    "--from",
                    "far",
                    "--remote-helper",
                    remote_command(helper_path, _SANITIZER_OPTIONS if sanitized_build() else {}),
                    "--path",
                    lab.server,
                    lab.server,
                    lab.virtual,
                    lab.blackhole,
                ]
            ),
            xl.exporter_env({"BROKERPKG_SSH": keys.environment_value()}, helper_path),
            scratch / "exporter-a.log",
        )
        xl.start(
            chain,
            "server",
            xl.exporter_argv(
                [
                    "--listen",
                    f":{PORT_B}",
                    *common,
                    "-s",
                    str(SIZE_B),
                    "--path",
                    lab.client,
                    lab.client,
                    lab.virtual,
                    lab.blackhole,
                ]
            ),
            xl.exporter_env(helper=helper_path),
            scratch / "exporter-b.log",
        )
        config = scratch / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "- job_name: smokeping\n"
            f"  static_configs: [{{targets: ['127.0.0.1:{PORT_A}', '{lab.server}:{PORT_B}']}}]\n"
            "- job_name: blackbox\n"
            "  metrics_path: /probe\n"
            "  params: {module: [icmp]}\n"
            "  scrape_interval: 2s\n"
            "  scrape_timeout: 1500ms\n"
            f"  static_configs: [{{targets: ['{lab.server}', '{lab.blackhole}']}}]\n"
            "  relabel_configs:\n"
            "  - {source_labels: [__address__], target_label: __param_target}\n"
            "  - {source_labels: [__param_target], target_label: instance}\n"
            f"  - {{target_label: __address__, replacement: '127.0.0.1:{PORT_A}'}}\n"
        )
        xl.start(
            chain,
            "client",
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={scratch / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{PORT_PROMETHEUS}",
            ],
            xl.exporter_env(),
            scratch / "prometheus.log",
        )
        xl.wait_http(chain, "client", f"http://127.0.0.1:{PORT_A}/-/healthy")
        xl.wait_http(chain, "server", f"http://127.0.0.1:{PORT_B}/-/healthy")
        xl.wait_http(chain, "client", f"{lab.prometheus}/-/ready")
        yield lab
    finally:
        chain.close()
        shutil.rmtree(scratch, ignore_errors=True)


def test_prometheus_reads_requests_and_answers_of_each_target_from_each_vantage_point(
    engines: Engines,
) -> None:
    lab = engines
    ping_query = "smokeping_response_duration_seconds_count{host=~'%s'} > 5"
    answered = lab.wait_query(ping_query % f"{lab.server}|{lab.client}", 3)
    assert set(by(answered, "instance", "source", "host")) == {
        (f"127.0.0.1:{PORT_A}", "", lab.server),
        (f"127.0.0.1:{PORT_A}", "far", lab.server),
        (f"{lab.server}:{PORT_B}", "", lab.client),
    }
    requests = by(lab.query("smokeping_requests_total"), "instance", "source", "host")
    assert len(requests) == 3 + 3 + 3  # three targets from each of three vantage points
    # answers never outnumber requests (one query: both read from the same scrape)
    assert lab.query("smokeping_response_duration_seconds_count > smokeping_requests_total") == []
    assert len(lab.query("smokeping_response_duration_seconds_count")) == 9
    up = by(lab.query("brokerpkg_helper_up"), "instance", "source")
    assert up == {
        (f"127.0.0.1:{PORT_A}", ""): 1,
        (f"127.0.0.1:{PORT_A}", "far"): 1,
        (f"{lab.server}:{PORT_B}", ""): 1,
    }


def test_the_far_vantage_point_is_reached_through_sshd(engines: Engines) -> None:
    """``source="far"`` comes from a helper that sshd started: one session, authenticated
    by the client's key, with the helper among its descendants."""
    sshd = engines.sshd
    assert sshd is not None
    sessions = sshd.session_pids()
    assert len(sessions) == 1, sshd.log
    descendants, unseen = [], list(sessions)
    while unseen:
        children = xl.children(unseen.pop())
        descendants += children
        unseen += children
    names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in descendants}
    assert "brokerpkg-helpe" in names, names  # the kernel's 15-byte command name
    assert any("Accepted publickey for root" in line for line in sshd.log), sshd.log


def test_prometheus_sees_the_loss_of_a_blackholed_target(engines: Engines) -> None:
    lab = engines
    lost = lab.wait_query(f"smokeping_response_loss_total{{host='{lab.blackhole}'}} > 3", 3)
    assert len(lost) == 3
    answers = lab.query(f"smokeping_response_duration_seconds_count{{host='{lab.blackhole}'}}")
    assert {float(item["value"][1]) for item in answers} == {0.0}
    # the loss of the reachable targets stays 0
    assert {
        float(item["value"][1])
        for item in lab.query(f"smokeping_response_loss_total{{host='{lab.server}'}}")
    } == {0.0}


def test_rtt_quantiles_of_a_slow_target_are_in_range(engines: Engines) -> None:
    lab = engines
    query = (
        "histogram_quantile(0.5, sum by (le, instance, source) "
        f"(rate(smokeping_response_duration_seconds_bucket{{host='{lab.virtual}'}}[5s])))"
    )
    deadline = time.monotonic() + 40
    while True:
        medians = by(lab.query(query), "instance", "source")
        if len(medians) == 3 and not any(math.isnan(value) for value in medians.values()):
            break
        assert time.monotonic() < deadline, medians
        time.sleep(0.5)
    # 20 ms answers fall in the (0.0128, 0.0256] bucket, and the responder (a Python
    # program on a busy machine) may answer later, never earlier: at most one bucket up
    for value in medians.values():
        assert 0.0128 < value <= 0.0512, medians
    mean = by(
        lab.query(
            f"smokeping_response_duration_seconds_sum{{host='{lab.virtual}'}}"
            f" / smokeping_response_duration_seconds_count{{host='{lab.virtual}'}}"
        ),
        "instance",
        "source",
    )
    for value in mean.values():
        assert DELAY <= value < DELAY + 0.03, mean


def test_probe_success_through_the_blackbox_pattern(engines: Engines) -> None:
    lab = engines
    results = lab.wait_query("probe_success{job='blackbox'}", 2)
    assert by(results, "instance") == {(lab.server,): 1.0, (lab.blackhole,): 0.0}
    rtt = by(lab.query("probe_icmp_duration_seconds{phase='rtt'}"), "instance")
    assert 0 < rtt[(lab.server,)] < 0.01
    hop_limit = by(lab.query("probe_icmp_reply_hop_limit"), "instance")
    assert hop_limit[(lab.server,)] == 62  # two routers on the way


def test_per_hop_series_with_bounded_labels(engines: Engines) -> None:
    lab = engines
    hops = lab.wait_query("brokerpkg_hop_responses_total > 2", 3 + 1 + 3)
    found = by(hops, "instance", "source", "host", "hop")
    assert {key for key in found if key[1] == ""} == {
        (f"127.0.0.1:{PORT_A}", "", lab.server, "1"),
        (f"127.0.0.1:{PORT_A}", "", lab.server, "2"),
        (f"127.0.0.1:{PORT_A}", "", lab.server, "3"),
        (f"{lab.server}:{PORT_B}", "", lab.client, "1"),
        (f"{lab.server}:{PORT_B}", "", lab.client, "2"),
        (f"{lab.server}:{PORT_B}", "", lab.client, "3"),
    }
    assert (f"127.0.0.1:{PORT_A}", "far", lab.server, "1") in found  # its own address
    # nothing but these labels (Prometheus drops the empty source of local probes)
    allowed = {"__name__", "instance", "job", "host", "source", "hop", "path_id"}
    for item in hops:
        assert {"instance", "job", "host", "hop", "path_id"} <= set(item["metric"]) <= allowed
    path_ids = by(lab.query("brokerpkg_path_hops"), "instance", "source", "path_id")
    assert len(path_ids) == 3  # one path per target and vantage point
    loss = by(lab.query(f"brokerpkg_hop_loss_ratio{{host='{lab.server}', source=''}}"), "hop")
    assert loss == {("1",): 0.0, ("2",): 0.0, ("3",): 0.0}
    avg = by(lab.query(f"brokerpkg_hop_avg_seconds{{host='{lab.server}', source=''}}"), "hop")
    assert all(0 < value < 0.01 for value in avg.values())


def test_names_labels_and_types_match_debians_smokeping_prober(engines: Engines) -> None:
    lab = engines
    chain = lab.chain
    xl.start(
        chain,
        "client",
        [
            "prometheus-smokeping-prober",
            f"--web.listen-address=127.0.0.1:{PORT_SMOKEPING}",
            "-i",
            "200ms",
            lab.server,
            lab.blackhole,
        ],
        xl.exporter_env(),
        lab.scratch / "smokeping.log",
    )
    xl.wait_http(chain, "client", f"http://127.0.0.1:{PORT_SMOKEPING}/metrics")
    time.sleep(1.0)
    _, theirs_text = xl.http_get(chain, "client", f"http://127.0.0.1:{PORT_SMOKEPING}/metrics")
    _, ours_text = xl.http_get(chain, "client", f"http://127.0.0.1:{PORT_A}/metrics")
    theirs, ours = xl.families(theirs_text), xl.families(ours_text)
    # their probe families (smokeping_prober_build_info describes their build)
    compared = {
        name: kind
        for name, kind in theirs.items()
        if name.startswith("smokeping_") and not name.startswith("smokeping_prober_")
    }
    assert set(compared) >= {
        "smokeping_requests",
        "smokeping_response_duration_seconds",
        "smokeping_response_ttl",
        "smokeping_response_duplicates",
    }
    for name, (kind, labels) in compared.items():
        assert name in ours, name
        our_kind, our_labels = ours[name]
        assert our_kind == kind, name
        # ours adds the labels of later smokeping_prober versions (source, tos)
        assert labels <= our_labels <= labels | {"source", "tos"}, name
    bounds = {
        dict(labels)["le"]
        for (sample, labels) in xl.samples(theirs_text)
        if sample == "smokeping_response_duration_seconds_bucket"
    }
    our_bounds = {
        dict(labels)["le"]
        for (sample, labels) in xl.samples(ours_text)
        if sample == "smokeping_response_duration_seconds_bucket"
    }
    assert our_bounds == bounds and len(bounds) == 21


def test_names_labels_and_types_match_debians_blackbox_exporter(engines: Engines) -> None:
    lab = engines
    chain = lab.chain
    config = lab.scratch / "blackbox.yml"
    config.write_text(
        "modules:\n  icmp:\n    prober: icmp\n    icmp:\n      preferred_ip_protocol: ip4\n"
    )
    xl.start(
        chain,
        "client",
        [
            "prometheus-blackbox-exporter",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{PORT_BLACKBOX}",
        ],
        xl.exporter_env(),
        lab.scratch / "blackbox.log",
    )
    xl.wait_http(chain, "client", f"http://127.0.0.1:{PORT_BLACKBOX}/metrics")
    header = ["X-Prometheus-Scrape-Timeout-Seconds:2"]
    for target, success in ((lab.server, 1.0), (lab.blackhole, 0.0)):
        pages = {}
        for name, port in (("theirs", PORT_BLACKBOX), ("ours", PORT_A)):
            status, pages[name] = xl.http_get(
                chain,
                "client",
                f"http://127.0.0.1:{port}/probe?target={target}&module=icmp",
                headers=header,
            )
            assert status == 200
        theirs, ours = xl.families(pages["theirs"]), xl.families(pages["ours"])
        for name in (
            "probe_success",
            "probe_duration_seconds",
            "probe_ip_protocol",
            "probe_icmp_duration_seconds",
            "probe_icmp_reply_hop_limit",
        ):
            if name == "probe_icmp_reply_hop_limit" and not success:
                continue  # neither has a reply to read it from
            assert ours[name] == theirs[name], name
        assert set(ours) >= set(theirs) - {"probe_icmp_reply_hop_limit"}
        their_page, our_page = xl.samples(pages["theirs"]), xl.samples(pages["ours"])
        for name in ("probe_success", "probe_ip_protocol", "probe_ip_addr_hash"):
            assert xl.value(our_page, name) == xl.value(their_page, name), name
        assert xl.value(our_page, "probe_success") == success


def test_probe_modules_and_the_scrape_timeout(engines: Engines) -> None:
    """/probe's tcp module (a SYN to sshd's port, to a closed port, into the blackhole)
    and udp module, and a lost probe ending within the scrape timeout less 0.5 s."""
    lab = engines
    base = f"http://127.0.0.1:{PORT_A}/probe"
    header = ["X-Prometheus-Scrape-Timeout-Seconds:1.5"]
    for target, module, success in (
        (f"{lab.server}:22", "tcp", 1.0),  # SYN-ACK from sshd
        (f"{lab.server}:23", "tcp", 1.0),  # RST: the host answered
        (f"{lab.blackhole}:22", "tcp", 0.0),
        (f"{lab.server}:33434", "udp", 1.0),  # port unreachable from the destination
        (lab.blackhole, "icmp", 0.0),
    ):
        status, page = xl.http_get(
            lab.chain, "client", f"{base}?target={target}&module={module}", headers=header
        )
        assert status == 200, page
        samples = xl.samples(page)
        assert xl.value(samples, "probe_success") == success, (target, module)
        if not success:  # it waited for its answer as long as the scrape allows
            assert 0.9 <= xl.value(samples, "probe_duration_seconds") < 1.4, (target, module)


def test_probe_from_a_vantage_point_picked_by_source(engines: Engines) -> None:
    """/probe's ``source``: the far helper (over ssh) reaches the client two routers
    away (hop limit 62), as the local helper reaches the server; ``source=`` is this host;
    an unknown source answers 400."""
    lab = engines
    base = f"http://127.0.0.1:{PORT_A}/probe?module=icmp"
    for query, hop_limit in (
        (f"target={lab.client}&source=far", 62),
        (f"target={lab.client}&source=", 64),  # its own address, from here
        (f"target={lab.server}&source=far", 64),  # its own address, from there
    ):
        status, page = xl.http_get(lab.chain, "client", f"{base}&{query}")
        assert status == 200, page
        samples = xl.samples(page)
        assert xl.value(samples, "probe_success") == 1, query
        assert xl.value(samples, "probe_icmp_reply_hop_limit") == hop_limit, query
    assert xl.http_get(lab.chain, "client", f"{base}&target={lab.server}&source=near") == (
        400,
        "Unknown source 'near'\n",
    )


def test_echo_requests_carry_the_payload_size_asked_for(engines: Engines) -> None:
    """On the client's link: the client's exporter sends 56 data bytes (-s's default:
    84-byte IPv4 packets), the server's, given -s 200, 228-byte packets."""
    lab = engines
    with lab.chain.capture("client", "eth0") as capture:
        time.sleep(1.5)
    echo_requests = [packet for packet in capture.select(proto="icmp") if packet.icmp_type == 8]
    # to the virtual target: smokeping_prober, started by a test above, pings the others
    sent = {packet.length for packet in echo_requests if packet.dst == lab.virtual}
    received = {packet.length for packet in echo_requests if packet.dst == lab.client}
    assert (sent, received) == ({20 + 8 + 56}, {20 + 8 + SIZE_B})


def test_a_dropped_ssh_connection_is_counted_and_made_again(engines: Engines) -> None:
    """sshd's session killed under the running exporter (after the tests that read far's counts):
    one failure counted for ``far``, a new ssh session, far's answers going on, and the
    page served throughout."""
    lab = engines
    sshd = lab.sshd
    assert sshd is not None
    far = {"source": "far", "host": lab.server}

    def page() -> dict[tuple[str, Any], float]:
        status, text = xl.http_get(lab.chain, "client", f"http://127.0.0.1:{PORT_A}/metrics")
        assert status == 200
        return xl.samples(text)

    before = page()
    failures = xl.value(before, "brokerpkg_helper_failures_total", source="far")
    answers = xl.value(before, "smokeping_response_duration_seconds_count", **far)
    dropped = sshd.drop_sessions()
    assert len(dropped) == 1
    deadline = time.monotonic() + 30
    while True:
        now = page()
        if (
            xl.value(now, "brokerpkg_helper_failures_total", source="far") == failures + 1
            and xl.value(now, "brokerpkg_helper_up", source="far") == 1
            and xl.value(now, "smokeping_response_duration_seconds_count", **far) > answers + 5
        ):
            break
        assert time.monotonic() < deadline, (failures, answers, sshd.log[-5:])
        time.sleep(0.2)
    sessions = sshd.session_pids()
    assert len(sessions) == 1 and sessions[0] not in dropped
    assert xl.value(now, "brokerpkg_helper_failures_total", source="") == 0


def test_names_are_looked_up_again_as_etc_hosts_changes(engines: Engines) -> None:
    """A third exporter in the client namespace pings a name of that namespace's
    /etc/hosts (``ip netns exec`` mounts /etc/netns/NS/hosts over it): when the name
    moves to another address, its series moves to the new ``ip`` label."""
    lab = engines
    etc = NETNS_ETC / lab.chain.node("client").ns
    etc.mkdir(parents=True, exist_ok=True)
    hosts = etc / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{lab.server} moving.test\n")
    argv = ["--listen", f"127.0.0.1:{PORT_C}", "-i", "100ms", "--resolve-interval", "500ms"]
    process = xl.start(
        lab.chain,
        "client",
        xl.exporter_argv([*argv, "moving.test"]),
        xl.exporter_env(),
        lab.scratch / "exporter-c.log",
    )

    def answered_at() -> dict[str, float]:
        status, text = xl.http_get(lab.chain, "client", f"http://127.0.0.1:{PORT_C}/metrics")
        assert status == 200, text
        return {
            dict(labels)["ip"]: number
            for (name, labels), number in xl.samples(text).items()
            if name == "smokeping_response_duration_seconds_count"
        }

    def wait_answered(ip: str) -> None:
        deadline = time.monotonic() + 30
        while (found := answered_at()).get(ip, 0) <= 3:
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        assert list(found) == [ip]

    try:
        xl.wait_http(lab.chain, "client", f"http://127.0.0.1:{PORT_C}/-/healthy")
        wait_answered(lab.server)
        hosts.write_text(f"127.0.0.1 localhost\n{lab.virtual} moving.test\n")  # same file
        wait_answered(lab.virtual)
    finally:
        process.terminate()
        process.wait(10)
        hosts.unlink()
        with contextlib.suppress(OSError):
            etc.rmdir()
