"""The exporter's metrics: plain counters kept per series, turned into Prometheus's text
format by a prometheus_client collector at each scrape.

Recording an answer is a few integer additions (no lock, no label lookup: each target
holds its :class:`PingSeries`), which is what lets one Python process record thousands
of probes a second.  Names, labels, types and buckets are smokeping_prober's:

- ``smokeping_requests_total`` (counter): probes handed to the helper;
- ``smokeping_response_duration_seconds`` (histogram): round-trip times of the target's
  answers, from the helper's kernel timestamps;
- ``smokeping_response_ttl`` (gauge): the TTL (hop limit) of the latest answer;
- ``smokeping_response_duplicates_total`` (counter): always 0 here, since the helper
  reports one answer per probe and drops duplicates;
- ``smokeping_send_errors_total`` (counter): probes due that could not be sent (no
  helper running, or the kernel refused them);
- ``smokeping_receive_errors_total`` (counter, no labels): replies from a helper that
  did not follow the protocol;

plus ours: ``smokeping_response_loss_total`` (counter), every request that got no
answer from the target (nothing within the timeout, an ICMP error instead, refused by
the kernel, or lost with a helper that died), so that ``requests_total`` equals
``response_duration_seconds_count + response_loss_total`` plus the probes in flight.
Per-hop series (``brokerpkg_hop_*``) are in :class:`HopSeries`; the exporter's own
health in :class:`ExporterCollector`.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .mtr import HopStats, MonitorReport

HOP_LABELS = ("host", "source", "hop", "path_id")
VANTAGE_LABELS = ("source",)


class PingSeries:
    """The counters of one ping target as seen from one vantage point."""

    __slots__ = (
        "bucket_counts",
        "label_text",
        "labels",
        "loss",
        "requests",
        "response_count",
        "response_sum",
        "send_errors",
        "ttl",
    )

    def __init__(self, labels: tuple[str, ...], label_text: str, buckets: int) -> None:
        self.labels = labels
        self.label_text = label_text
        """The labels as the text format writes them, without braces."""
        self.requests = 0
        self.loss = 0
        self.send_errors = 0
        self.response_count = 0
        self.response_sum = 0.0
        self.bucket_counts = [0] * (buckets + 1)  # the last one: above every bound
        self.ttl = 0.0


def path_id(addresses: Sequence[str | None]) -> str:
    """A short stable name for a path: 8 hex digits of the SHA-1 of its hop addresses
    (``*`` for a hop that never answered)."""
    text = ",".join(address or "*" for address in addresses)
    return hashlib.sha1(text.encode("ascii", "replace")).hexdigest()[:8]


def path_changed(before: Sequence[str | None], after: Sequence[str | None]) -> bool:
    """True if ``after`` is another path than ``before``, not the same one better known:
    a hop that had answered from one address now answers from another (the
    destination's answer moving to another hop is that too).  A hop answering for the
    first time, or hops found beyond the last one known, is the same path."""
    for old, new in zip(before, after, strict=False):
        if old is not None and new is not None and old != new:
            return True
    return False


class HopSeries:
    """The per-hop statistics of one path target from one vantage point: the latest
    monitor report, and the path id its hop addresses give."""

    __slots__ = ("host", "path_id", "reached", "report", "source")

    def __init__(self, host: str, source: str) -> None:
        self.host = host
        self.source = source
        self.report: MonitorReport | None = None
        self.path_id = ""
        self.reached = False

    def update(self, report: MonitorReport) -> None:
        """Take the monitor's latest report."""
        self.report = report
        self.path_id = path_id([hop.address for hop in report.hops])
        self.reached = report.reached

    @property
    def hops(self) -> tuple[HopStats, ...]:
        """The hops of the latest report (none before the first)."""
        return () if self.report is None else self.report.hops


@dataclass(slots=True)
class VantageHealth:
    """One vantage point's helper: running or not, and how often it failed."""

    up: bool = False
    failures: int = 0


@dataclass
class ExporterState:
    """What the collector reads at each scrape; the exporter updates it in place."""

    label_names: tuple[str, ...]
    buckets: tuple[float, ...]
    ping: dict[object, PingSeries]
    hops: dict[object, HopSeries]
    vantages: dict[str, VantageHealth]
    """source label -> its helper's health"""
    receive_errors: int = 0
    resolve_errors: dict[str, int] = field(default_factory=dict)
    reload_successful: float = 1.0
    reload_timestamp: float = 0.0

    def new_series(self, labels: tuple[str, ...]) -> PingSeries:
        """A PingSeries with these label values (in :attr:`label_names` order)."""
        text = ",".join(
            f'{name}="{_escape(value)}"'
            for name, value in zip(self.label_names, labels, strict=True)
        )
        return PingSeries(labels, text, len(self.buckets))

    def observe(self, series: PingSeries, seconds: float) -> None:
        """Record one answer's round-trip time."""
        series.bucket_counts[bisect.bisect_left(self.buckets, seconds)] += 1
        series.response_count += 1
        series.response_sum += seconds


def _bound(value: float) -> str:
    """A bucket bound as Prometheus writes it (``5e-05``, ``0.1024``, ``26.2144``)."""
    return repr(float(value))


def _escape(value: str) -> str:
    """A label value escaped for the text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_PING_FAMILIES = (
    ("smokeping_requests_total", "counter", "Number of ping requests sent"),
    (
        "smokeping_response_duration_seconds",
        "histogram",
        "A histogram of latencies for ping responses.",
    ),
    ("smokeping_response_ttl", "gauge", "The last response Time To Live (TTL)."),
    (
        "smokeping_response_duplicates_total",
        "counter",
        "The number of duplicated response packets.",
    ),
    (
        "smokeping_send_errors_total",
        "counter",
        "The number of errors when Pinger attempts to send packets.",
    ),
    (
        "smokeping_response_loss_total",
        "counter",
        "Requests without an answer from the target (timeout, ICMP error, not sent).",
    ),
)


def render_ping(state: ExporterState) -> str:
    """The ping families in Prometheus's text format (version 0.0.4).

    Written by hand rather than through prometheus_client's collector: each series
    keeps its label text, so a page of 1,000 targets (28,000 samples) takes some
    milliseconds instead of half a second of CPU.
    """
    series = list(state.ping.values())
    out: list[str] = []
    bounds = [f'le="{_bound(bound)}"' for bound in state.buckets] + ['le="+Inf"']
    for name, kind, text in _PING_FAMILIES:
        out.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")
        if kind == "histogram":
            for one in series:
                labels = one.label_text
                running = 0
                for bound, count in zip(bounds, one.bucket_counts, strict=True):
                    running += count
                    out.append(f"{name}_bucket{{{labels},{bound}}} {running}\n")
                out.append(f"{name}_sum{{{labels}}} {one.response_sum!r}\n")
                out.append(f"{name}_count{{{labels}}} {one.response_count}\n")
            continue
        field_of = {
            "smokeping_requests_total": "requests",
            "smokeping_response_ttl": "ttl",
            "smokeping_send_errors_total": "send_errors",
            "smokeping_response_loss_total": "loss",
        }.get(name)
        for one in series:
            number = 0 if field_of is None else getattr(one, field_of)
            out.append(f"{name}{{{one.label_text}}} {number}\n")
    return "".join(out)


class ExporterCollector(Collector):
    """Turns :class:`ExporterState` into metric families at each scrape."""

    def __init__(self, state: ExporterState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        """The per-hop and exporter families (:func:`render_ping` writes the others)."""
        yield from self._hop_families()
        yield from self._exporter_families()

    def _hop_families(self) -> Iterator[Metric]:
        names = list(HOP_LABELS)
        requests = CounterMetricFamily(
            "brokerpkg_hop_requests", "Probes sent to this hop (TTL).", labels=names
        )
        responses = CounterMetricFamily(
            "brokerpkg_hop_responses", "Probes this hop answered.", labels=names
        )
        loss = GaugeMetricFamily(
            "brokerpkg_hop_loss_ratio",
            "mtr's Loss%, as a ratio: lost / (sent - in flight), since the path began.",
            labels=names,
        )
        times = {
            "last": "Round-trip time of the hop's latest answer (mtr's Last).",
            "avg": "Mean round-trip time of the hop's answers (mtr's Avg).",
            "best": "Shortest round-trip time of the hop's answers (mtr's Best).",
            "worst": "Longest round-trip time of the hop's answers (mtr's Wrst).",
            "stdev": "Standard deviation of the hop's round-trip times (mtr's StDev).",
        }
        rtt = {
            name: GaugeMetricFamily(f"brokerpkg_hop_{name}_seconds", text, labels=names)
            for name, text in times.items()
        }
        path_hops = GaugeMetricFamily(
            "brokerpkg_path_hops",
            "Hops of the current path (to the destination once it answers).",
            labels=["host", "source", "path_id"],
        )
        reached = GaugeMetricFamily(
            "brokerpkg_path_reached",
            "1 if the destination answers at the end of the current path.",
            labels=["host", "source", "path_id"],
        )
        for series in self.state.hops.values():
            if series.report is None:
                continue
            path = [series.host, series.source, series.path_id]
            path_hops.add_metric(path, len(series.hops))
            reached.add_metric(path, 1.0 if series.reached else 0.0)
            for hop in series.hops:
                labels = [series.host, series.source, str(hop.ttl), series.path_id]
                requests.add_metric(labels, hop.sent)
                responses.add_metric(labels, hop.received)
                loss.add_metric(labels, hop.loss_percent / 100.0)
                for name, value in (
                    ("last", hop.last),
                    ("avg", hop.avg),
                    ("best", hop.best),
                    ("worst", hop.worst),
                    ("stdev", hop.stdev),
                ):
                    if value is not None:
                        rtt[name].add_metric(labels, value / 1000.0)
        yield from (requests, responses, loss)
        yield from rtt.values()
        yield from (path_hops, reached)

    def _exporter_families(self) -> Iterator[Metric]:
        state = self.state
        up = GaugeMetricFamily(
            "brokerpkg_helper_up", "1 while the vantage point's helper runs.", labels=["source"]
        )
        failures = CounterMetricFamily(
            "brokerpkg_helper_failures",
            "Helper starts that failed and helpers that died (each is restarted).",
            labels=["source"],
        )
        for source, health in state.vantages.items():
            up.add_metric([source], 1.0 if health.up else 0.0)
            failures.add_metric([source], health.failures)
        yield from (up, failures)
        resolve = CounterMetricFamily(
            "brokerpkg_resolve_errors",
            "Failed lookups of a target's name (the last address found is kept).",
            labels=["host"],
        )
        for host, count in state.resolve_errors.items():
            resolve.add_metric([host], count)
        yield resolve
        yield CounterMetricFamily(
            "smokeping_receive_errors",
            "The number of errors when Pinger attempts to receive packets.",
            value=state.receive_errors,
        )
        yield GaugeMetricFamily(
            "smokeping_prober_config_last_reload_successful",
            "smokeping_prober config loaded successfully.",
            value=state.reload_successful,
        )
        yield GaugeMetricFamily(
            "smokeping_prober_config_last_reload_success_timestamp_seconds",
            "Timestamp of the last successful configuration reload.",
            value=state.reload_timestamp,
        )
