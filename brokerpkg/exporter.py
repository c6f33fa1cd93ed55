"""``brokerpkg exporter``: a Prometheus exporter that probes through helpers.

One :class:`Exporter` runs, in one event loop:

- a :class:`Vantage` per helper (the local one, or one per ``--from`` host, reached over
  ssh), which starts the helper, watches it, and restarts it with a growing delay when
  it dies or cannot start, counting each failure;
- one scheduler loop per vantage point for every ping target (no task per probe): the
  probes due at the same moment go to the helper as one batch
  (:meth:`Session.probe_many`), and their answers feed smokeping_prober's metrics
  (:mod:`brokerpkg.exporter_metrics`);
- an mtr-style monitor (:func:`brokerpkg.mtr.monitor`) per path target and vantage
  point, whose hop statistics become the ``brokerpkg_hop_*`` series;
- a resolver loop that looks target names up again every ``resolve_interval`` seconds
  (names are resolved here, also for remote vantage points);
- a small HTTP server: ``/metrics``, blackbox_exporter's ``/probe?target=&module=``
  (the probe runs during the scrape), ``/-/reload`` (POST), ``/-/healthy``.

The exporter process needs no privilege: the helper has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import ipaddress
import logging
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.process_collector import ProcessCollector

from .answers import Answer, classify
from .errors import (
    HelperNotFoundError,
    HelperPrivilegeError,
    InvalidProbeError,
    ProcessError,
    ProtocolError,
    StateError,
)
from .exporter_config import ConfigError, Settings, Target
from .exporter_metrics import (
    ExporterCollector,
    ExporterState,
    HopSeries,
    PingSeries,
    VantageHealth,
    path_changed,
    render_ping,
)
from .mtr import monitor
from .options import IP_HEADER_SIZE, PAYLOAD_OFFSET
from .protocol import ProbeResult
from .remote import NAMES_LOCAL
from .session import Session

log = logging.getLogger("brokerpkg.exporter")

DEFAULT_TIMEOUT = 5.0
"""Seconds a ping probe waits for its answer before it counts as lost."""
DEFAULT_RESOLVE_INTERVAL = 60.0
"""Seconds between lookups of every target name."""
RESTART_FIRST = 0.25
RESTART_MAX = 30.0
"""Delays before a helper is started again: doubling from RESTART_FIRST up to RESTART_MAX,
back to RESTART_FIRST once a helper ran for STABLE_RUN seconds."""
STABLE_RUN = 30.0
BATCH_WINDOW = 0.025
"""Probes due within this many seconds (or a quarter of the shortest interval, if less)
leave together, as one batch: a probe leaves at most this late, and its schedule does
not drift (the next one is due an interval after the time this one was due)."""
DETAILS_EVERY = 10
"""Each target's probes ask the helper for reply details (the answer's TTL, for
smokeping_response_ttl) one time in this many, starting with the first: the others take
the session's fast path for plain replies."""
PROBE_TIMEOUT_OFFSET = 0.5
"""blackbox_exporter's --timeout-offset: subtracted from Prometheus's scrape timeout."""
PROBE_DEFAULT_TIMEOUT = 10.0
"""/probe's timeout when the request does not carry Prometheus's timeout header."""
PATH_TIMEOUT = 5.0
"""Seconds a path monitor's probe waits for its answer."""
MAX_REQUEST_HEAD = 16384
REQUEST_TIMEOUT = 10.0
PROBE_MODULES = {
    "icmp": ("icmp", None),
    "icmp_ipv4": ("icmp", 4),
    "icmp_ipv6": ("icmp", 6),
    "udp": ("udp", None),
    "tcp": ("tcp", None),
}
"""/probe's modules: name -> (protocol, IP version or None for the first address)."""


def remote_session(destination: str, helper: str) -> Session:
    """A session with the helper ``helper`` on ``destination`` ([USER@]HOST), over
    ``$BROKERPKG_SSH`` (default ``ssh -T -o BatchMode=yes``): :meth:`Session.over_ssh`,
    with names resolved here (the exporter looks its targets up itself).

    Raises ValueError when BROKERPKG_SSH is not a valid shell word list or
    ``destination`` is not [USER@]HOST.
    """
    return Session.over_ssh(destination, helper=helper, names=NAMES_LOCAL)


def packet_size(payload: int, address: str) -> int:
    """The helper's whole packet size for an ICMP echo with ``payload`` bytes of data."""
    version = ipaddress.ip_address(address).version
    return IP_HEADER_SIZE[version] + PAYLOAD_OFFSET["icmp"] + payload


async def lookup(host: str, family: int | None) -> str:
    """The first address of ``host`` (numeric addresses as they are), asking the system
    resolver every time.

    Raises OSError (socket.gaierror) when the name does not resolve, ValueError when it
    has no address of ``family``.
    """
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if family is not None and parsed.version != family:
            raise ValueError(f"{host} is not an IPv{family} address")
        return str(parsed)
    families = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, None, family=families[family], type=socket.SOCK_DGRAM
    )
    for info_family, _, _, _, sockaddr in infos:
        if info_family in (socket.AF_INET, socket.AF_INET6):
            return str(ipaddress.ip_address(sockaddr[0]))
    raise ValueError(f"{host} has no {'IP' if family is None else f'IPv{family}'} address")


# ----------------------------------------------------------------------------- vantage points


class Vantage:
    """One helper and its supervision: started, watched, restarted after a failure.

    ``name`` is the ``source`` label: ``""`` for the local helper, the ``--from``
    destination otherwise.  :attr:`session` is the open session, or None while there
    is none.
    """

    def __init__(
        self,
        name: str,
        make_session: Callable[[], Session],
        health: VantageHealth,
    ) -> None:
        self.name = name
        self.make_session = make_session
        self.health = health
        self.session: Session | None = None
        self.changed = asyncio.Event()
        self.details = False
        self._last_error = ""

    async def start(self) -> None:
        """Open the first session.

        Raises HelperNotFoundError and HelperPrivilegeError (the exporter cannot work
        without its helper: the message says how to fix it); other failures are
        retried by :meth:`supervise`.
        """
        try:
            await self._open()
        except (HelperNotFoundError, HelperPrivilegeError):
            raise
        except ProcessError as error:
            self._failed(f"cannot start the helper: {error}")

    async def _open(self) -> None:
        session = self.make_session()
        try:
            await session.open()
        except BaseException:
            await session.close()
            raise
        self.session = session
        self.details = session.features.get("details") == "ok"
        self.health.up = True
        self._last_error = ""
        self.changed.set()
        self.changed = asyncio.Event()
        log.info("%s: helper %s running", self.label, session.description)

    @property
    def label(self) -> str:
        """The vantage point for messages."""
        return self.name or "local"

    def _failed(self, message: str) -> None:
        self.health.failures += 1
        self.health.up = False
        if message != self._last_error:
            log.error("%s: %s", self.label, message)
            self._last_error = message

    async def supervise(self) -> None:
        """Watch the helper; when it dies or cannot start, count the failure and start
        another after a delay (doubling up to RESTART_MAX).  Runs until cancelled."""
        loop = asyncio.get_running_loop()
        delay = RESTART_FIRST
        while True:
            session = self.session
            if session is not None:
                started = loop.time()
                process = session.process
                if process is not None:
                    await process.wait()
                status = None if process is None else process.returncode
                self.session = None
                stderr = session.stderr_lines
                await session.close()
                self._failed(
                    f"helper exited (status {status}"
                    + (f": {stderr[-1]}" if stderr else "")
                    + "); starting another"
                )
                if loop.time() - started >= STABLE_RUN:
                    delay = RESTART_FIRST
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)
            try:
                await self._open()
            except ProcessError as error:
                self._failed(f"cannot start the helper: {error}")

    async def close(self) -> None:
        """Close the session (the helper is stopped)."""
        session, self.session = self.session, None
        if session is not None:
            await session.close()
        self.health.up = False


# ----------------------------------------------------------------------------- ping targets


@dataclass(eq=False)
class PingJob:
    """One ping target from one vantage point: when it is due, and its series."""

    target: Target
    vantage: Vantage
    label_values: Callable[[str], tuple[str, ...]]
    address: str | None = None
    size: int = 0
    """The helper's packet size for the address's family."""
    series: PingSeries | None = None
    due: float = 0.0
    active: bool = True
    sent: int = 0


class Scheduler:
    """The ping loop of one vantage point: every target's probe when it is due, the
    probes due together sent as one batch; their results recorded as they come."""

    def __init__(self, exporter: Exporter, vantage: Vantage) -> None:
        self.exporter = exporter
        self.vantage = vantage
        self.heap: list[tuple[float, int, PingJob]] = []
        self.order = 0
        self.wakeup = asyncio.Event()
        self.batches: set[asyncio.Task[None]] = set()
        self.window = BATCH_WINDOW

    def add(self, job: PingJob, due: float) -> None:
        """Schedule ``job`` first at loop time ``due``."""
        job.due = due
        self.order += 1
        heapq.heappush(self.heap, (due, self.order, job))
        self.wakeup.set()

    async def run(self) -> None:
        """Send probes as they fall due, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            while self.heap and not self.heap[0][2].active:
                heapq.heappop(self.heap)
            if not self.heap:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            now = loop.time()
            due = self.heap[0][0]
            if due > now:
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due - now):
                        await self.wakeup.wait()
                continue
            batch: list[PingJob] = []
            while self.heap and self.heap[0][0] <= now + self.window:
                _, _, job = heapq.heappop(self.heap)
                if not job.active:
                    continue
                batch.append(job)
                following = job.due + job.target.interval
                if following < now:  # fell behind (a busy loop): skip the missed ones
                    following = now + job.target.interval
                self.order += 1
                job.due = following
                heapq.heappush(self.heap, (following, self.order, job))
            self._send(batch)

    def _send(self, batch: Sequence[PingJob]) -> None:
        """Hand the due probes to the helper, one batch per set of probe options."""
        session = self.vantage.session
        groups: dict[tuple[Any, ...], list[PingJob]] = {}
        for job in batch:
            series = job.series
            if series is None or job.address is None:
                continue  # not resolved yet
            if session is None:
                series.send_errors += 1
                continue
            target = job.target
            details = self.vantage.details and job.sent % DETAILS_EVERY == 0
            job.sent += 1
            key = (job.size, target.tos, target.source, details)
            groups.setdefault(key, []).append(job)
        for (_, _, _, details), jobs in groups.items():
            for job in jobs:
                assert job.series is not None
                job.series.requests += 1
            assert session is not None
            task = asyncio.create_task(self._batch(session, jobs, details))
            self.batches.add(task)
            task.add_done_callback(self.batches.discard)

    async def _batch(self, session: Session, jobs: list[PingJob], details: bool) -> None:
        """Probe every job's address once and record each outcome."""
        first = jobs[0]
        assert first.address is not None
        target = first.target
        series = [job.series for job in jobs]
        try:
            results = await session.probe_many(
                [job.address or "" for job in jobs],
                size=first.size,
                tos=target.tos or None,
                local_ip=target.source,
                timeout=self.exporter.timeout,
                details=details,
            )
        except (InvalidProbeError, ValueError, TypeError) as error:
            log.error("%s: probes to %s refused: %s", self.vantage.label, target.host, error)
            for one in series:
                if one is not None:
                    one.send_errors += 1
                    one.loss += 1
            return
        except ProtocolError:
            self.exporter.state.receive_errors += 1
            self._lost(series)
            return
        except (ProcessError, StateError):
            self._lost(series)  # the helper died: the supervisor starts another
            return
        record = self.exporter.record
        for one, result in zip(series, results, strict=True):
            if one is not None:
                record(one, result)

    @staticmethod
    def _lost(series: Sequence[PingSeries | None]) -> None:
        for one in series:
            if one is not None:
                one.loss += 1


# ----------------------------------------------------------------------------- paths


@dataclass(eq=False)
class PathJob:
    """One path target from one vantage point, and its monitor task."""

    target: Target
    vantage: Vantage
    series: HopSeries
    address: str | None = None
    task: asyncio.Task[None] | None = None
    resolved: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Monitor the path until cancelled; a new monitor (statistics from zero) when
        the path changes, the address changes or the helper is replaced."""
        while True:
            await self.resolved.wait()
            session = self.vantage.session
            address = self.address
            if session is None or address is None:
                await self.vantage.changed.wait()
                continue
            try:
                await self._monitor(session, address)
            except (ProcessError, StateError):
                await asyncio.sleep(RESTART_FIRST)  # the helper died: wait for another
            except (OSError, ValueError) as error:
                log.error("%s: path to %s: %s", self.vantage.label, self.target.host, error)
                await asyncio.sleep(self.target.interval)

    async def _monitor(self, session: Session, address: str) -> None:
        target = self.target
        reports = monitor(
            address,
            interval=target.interval,
            timeout=PATH_TIMEOUT,
            grace=0.0,
            session=session,
            payload_size=target.payload,
            tos=target.tos or None,
            local_ip=target.source,
        )
        known: list[str | None] | None = None
        async with contextlib.aclosing(reports):
            async for report in reports:
                addresses = [hop.address for hop in report.hops]
                if known is not None and path_changed(known, addresses):
                    log.info("%s: path to %s changed", self.vantage.label, target.host)
                    return
                known = addresses
                self.series.update(report)
                if self.address != address or self.vantage.session is not session:
                    return


# ----------------------------------------------------------------------------- HTTP


@dataclass
class Request:
    """One HTTP request: method, path, query parameters, headers (lower-case names)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Response:
    """One HTTP response."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


def parse_request_head(head: bytes) -> Request:
    """Parse an HTTP/1.x request line and headers (``head`` ends with the blank line).

    Raises ValueError when it is not a valid request head.
    """
    lines = head.decode("latin-1").split("\r\n")
    words = lines[0].split(" ")
    if len(words) != 3 or not words[2].startswith("HTTP/1."):
        raise ValueError(f"bad request line {lines[0]!r}")
    method, target, _ = words
    url = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return Request(method, url.path or "/", query, headers)


def render_response(response: Response) -> bytes:
    """The response's bytes: status line, headers (the connection is closed after it)."""
    reason = _REASONS.get(response.status, "Error")
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + response.body


def probe_timeout(headers: Mapping[str, str]) -> float:
    """/probe's time budget: Prometheus's scrape timeout less PROBE_TIMEOUT_OFFSET (as
    blackbox_exporter), or PROBE_DEFAULT_TIMEOUT without the header.

    Raises ValueError for a header that is not a positive number.
    """
    text = headers.get("x-prometheus-scrape-timeout-seconds")
    if text is None:
        return PROBE_DEFAULT_TIMEOUT
    value = float(text)
    if not value > 0:
        raise ValueError(f"X-Prometheus-Scrape-Timeout-Seconds must be > 0, got {text!r}")
    return max(value - PROBE_TIMEOUT_OFFSET, 0.1) if value > PROBE_TIMEOUT_OFFSET else value


def split_host_port(target: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[V6]:PORT`` or a bare IPv6 address -> (host, port).

    Raises ValueError for a bad port or an empty host.
    """
    host, port = target, None
    if target.startswith("["):
        close = target.find("]")
        if close < 0:
            raise ValueError(f"bad target {target!r}")
        host, rest = target[1:close], target[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad target {target!r}")
            port = _port(rest[1:], target)
    elif target.count(":") == 1:
        host, text = target.split(":")
        port = _port(text, target)
    if not host:
        raise ValueError(f"bad target {target!r}: no host")
    return host, port


def _port(text: str, target: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise ValueError(f"bad port in {target!r}: give 1-65535")
    return int(text)


def address_hash(address: str) -> float:
    """blackbox_exporter's probe_ip_addr_hash: FNV-1a (32 bits) of the address bytes."""
    value = 0x811C9DC5
    for byte in ipaddress.ip_address(address).packed:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return float(value)


# ----------------------------------------------------------------------------- the exporter


class Exporter:
    """Everything ``brokerpkg exporter`` runs; see the module documentation.

    ``load`` returns the settings (called at start and at each reload: it reads the
    configuration file again).  ``vantages`` are (source label, session factory).

    Raises (from :meth:`start`) HelperNotFoundError/HelperPrivilegeError when a helper
    cannot be used at all, OSError when the listening socket cannot be opened.
    """

    def __init__(
        self,
        load: Callable[[], Settings],
        vantages: Sequence[tuple[str, Callable[[], Session]]],
        *,
        listen: tuple[str, int],
        buckets: tuple[float, ...],
        timeout: float = DEFAULT_TIMEOUT,
        resolve_interval: float = DEFAULT_RESOLVE_INTERVAL,
    ) -> None:
        self.load = load
        self.listen = listen
        self.timeout = timeout
        self.resolve_interval = resolve_interval
        settings = load()
        self.settings = settings
        self.state = ExporterState(settings.label_names, buckets, {}, {}, {})
        self.state.reload_timestamp = time.time()
        self.vantages = [
            Vantage(name, factory, self.state.vantages.setdefault(name, VantageHealth()))
            for name, factory in vantages
        ]
        self.registry = CollectorRegistry()
        self.registry.register(ExporterCollector(self.state))
        ProcessCollector(registry=self.registry)
        self.schedulers: dict[Vantage, Scheduler] = {}
        self.ping_jobs: list[PingJob] = []
        self.path_jobs: list[PathJob] = []
        self.addresses: dict[tuple[str, int | None], str] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.server: asyncio.Server | None = None
        self.stopped = asyncio.Event()
        self.unknown_modules = 0
        self._reloads: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Start the helpers, the HTTP server, the loops; raises as the class says."""
        for vantage in self.vantages:
            await vantage.start()
        host, port = self.listen
        self.server = await asyncio.start_server(
            self._serve, host or None, port, limit=MAX_REQUEST_HEAD
        )
        for vantage in self.vantages:
            scheduler = self.schedulers[vantage] = Scheduler(self, vantage)
            self._spawn(scheduler.run())
            self._spawn(vantage.supervise())
        self._apply(self.settings)
        await self._resolve_all()
        self._spawn(self._resolve_loop())

    @property
    def ports(self) -> list[int]:
        """The ports the HTTP server listens on (useful with port 0)."""
        if self.server is None:
            return []
        return sorted({sock.getsockname()[1] for sock in self.server.sockets})

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        self.tasks.append(asyncio.ensure_future(coroutine))

    async def run(self) -> None:
        """Serve until :meth:`stop` is called; a loop that fails ends the exporter with
        its error."""
        stopper = asyncio.ensure_future(self.stopped.wait())
        try:
            done, _ = await asyncio.wait(
                [stopper, *self.tasks], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopper:
                    task.result()  # raises the loop's error
        finally:
            stopper.cancel()

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self.stopped.set()

    async def close(self) -> None:
        """Stop serving, cancel every loop and probe, stop the helpers."""
        if self.server is not None:
            self.server.close()
        tasks = list(self.tasks)
        for scheduler in self.schedulers.values():
            tasks.extend(scheduler.batches)
        tasks.extend(job.task for job in self.path_jobs if job.task is not None)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for vantage in self.vantages:
            await vantage.close()

    # ------------------------------------------------------------------ targets

    def _label_values(self, target: Target, vantage: Vantage) -> Callable[[str], tuple[str, ...]]:
        user = dict(target.labels)
        base = {
            "host": target.host,
            "source": vantage.name or target.source or "",
            "tos": str(target.tos),
        }
        names = self.state.label_names

        def values(ip: str) -> tuple[str, ...]:
            return tuple(
                ip if name == "ip" else base.get(name, user.get(name, "")) for name in names
            )

        return values

    def _apply(self, settings: Settings) -> None:
        """Replace the targets with ``settings``'; series whose labels stay the same keep
        their counts."""
        loop = asyncio.get_running_loop()
        self.settings = settings
        self.state.label_names = settings.label_names
        old_series = {series.labels: series for series in self.state.ping.values()}
        for job in self.ping_jobs:
            job.active = False
        for path in self.path_jobs:
            if path.task is not None:
                path.task.cancel()
        self.state.ping.clear()
        self.state.hops.clear()
        self.ping_jobs, self.path_jobs = [], []
        pings = [target for target in settings.targets if not target.path]
        now = loop.time()
        window = min([BATCH_WINDOW, *(target.interval / 4 for target in pings)])
        for vantage in self.vantages:
            self.schedulers[vantage].window = window
            for index, target in enumerate(pings):
                job = PingJob(target, vantage, self._label_values(target, vantage))
                self.ping_jobs.append(job)
                address = self.addresses.get((target.host, target.family))
                if address is not None:
                    self._set_address(job, address, old_series)
                # spread the first probes over the interval, as smokeping_prober does
                self.schedulers[vantage].add(job, now + target.interval * index / len(pings))
            for target in settings.targets:
                if target.path:
                    series = HopSeries(target.host, vantage.name or target.source or "")
                    path = PathJob(target, vantage, series)
                    self.state.hops[path] = series
                    self.path_jobs.append(path)
                    address = self.addresses.get((target.host, target.family))
                    if address is not None:
                        path.address = address
                        path.resolved.set()
                    path.task = asyncio.ensure_future(path.run())

    def _set_address(
        self, job: PingJob, address: str, old: Mapping[tuple[str, ...], PingSeries] | None = None
    ) -> None:
        """Give ``job`` its (new) address: its series is the one with the new ``ip``."""
        if job.series is not None:
            self.state.ping.pop(job, None)
        job.address = address
        job.size = packet_size(job.target.payload, address)
        labels = job.label_values(address)
        series = (old or {}).get(labels) or self.state.new_series(labels)
        job.series = series
        self.state.ping[job] = series

    async def _resolve_all(self) -> None:
        """Look every target name up (once per name and family) and apply changes."""
        pings: dict[tuple[str, int | None], list[PingJob]] = {}
        paths: dict[tuple[str, int | None], list[PathJob]] = {}
        for job in self.ping_jobs:
            pings.setdefault((job.target.host, job.target.family), []).append(job)
        for path in self.path_jobs:
            paths.setdefault((path.target.host, path.target.family), []).append(path)
        wanted = list(pings.keys() | paths.keys())
        found = await asyncio.gather(*(self._lookup(host, family) for host, family in wanted))
        for key, address in zip(wanted, found, strict=True):
            if address is None:
                continue
            if self.addresses.get(key) != address:
                if key in self.addresses:
                    log.info("%s now resolves to %s", key[0], address)
                self.addresses[key] = address
            for job in pings.get(key, ()):
                if job.address != address and job.active:
                    self._set_address(job, address)
            for path in paths.get(key, ()):
                path.address = address
                path.resolved.set()

    async def _lookup(self, host: str, family: int | None) -> str | None:
        try:
            return await lookup(host, family)
        except (OSError, ValueError, UnicodeError) as error:
            errors = self.state.resolve_errors
            errors[host] = errors.get(host, 0) + 1
            log.error("cannot resolve %s: %s", host, error)
            return None

    async def _resolve_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resolve_interval)
            await self._resolve_all()

    def record(self, series: PingSeries, result: ProbeResult) -> None:
        """Account one probe's result in its series."""
        try:
            answer = classify(result)
        except OSError:  # ProbeSendError: the kernel refused to send it
            series.send_errors += 1
            series.loss += 1
            return
        except ProtocolError:
            self.state.receive_errors += 1
            series.loss += 1
            return
        if answer is Answer.REPLY and result.time_ms is not None:
            self.state.observe(series, result.time_ms / 1000.0)
            if result.reply_ttl is not None:
                series.ttl = float(result.reply_ttl)
        else:
            series.loss += 1

    async def reload(self) -> None:
        """Read the configuration again and apply it.

        Raises ConfigError, OSError (the file cannot be read); the targets then stay
        as they were.
        """
        try:
            settings = self.load()
        except (ConfigError, OSError):
            self.state.reload_successful = 0.0
            raise
        self.state.reload_successful = 1.0
        self.state.reload_timestamp = time.time()
        self._apply(settings)
        await self._resolve_all()
        log.info("configuration reloaded: %d targets", len(settings.targets))

    def reload_soon(self) -> None:
        """Reload in the background (SIGHUP); a failure is logged and changes nothing."""

        async def reload() -> None:
            try:
                await self.reload()
            except (ConfigError, OSError) as error:
                log.error("reload failed: %s", error)

        task = asyncio.ensure_future(reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    # ------------------------------------------------------------------ HTTP

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: one request, one response, then close."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            try:
                request = parse_request_head(head)
            except ValueError as error:
                response = Response(400, f"{error}\n".encode())
            else:
                response = await self.handle(request)
            writer.write(render_response(response))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def handle(self, request: Request) -> Response:
        """The response to one request (never raises for bad input)."""
        routes: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "/metrics": self._metrics_page,
            "/probe": self.probe,
            "/-/reload": self._reload_page,
            "/-/healthy": self._healthy_page,
            "/": self._landing_page,
        }
        route = routes.get(request.path)
        if route is None:
            return Response(404, b"Not Found\n")
        return await route(request)

    async def _metrics_page(self, request: Request) -> Response:
        page = render_ping(self.state).encode() + generate_latest(self.registry)
        return Response(200, page, CONTENT_TYPE_LATEST)

    async def _reload_page(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(405, b"This endpoint requires a POST request.\n")
        try:
            await self.reload()
        except (ConfigError, OSError) as error:
            return Response(500, f"Failed to reload config: {error}\n".encode())
        return Response(200, b"")

    async def _healthy_page(self, request: Request) -> Response:
        return Response(200, b"Healthy")

    async def _landing_page(self, request: Request) -> Response:
        page = (
            "<html><head><title>brokerpkg exporter</title></head><body>"
            "<h1>brokerpkg exporter</h1><p><a href='/metrics'>Metrics</a></p>"
            "<p>/probe?target=HOST&amp;module=icmp|icmp_ipv4|icmp_ipv6|udp|tcp</p>"
            "</body></html>"
        )
        return Response(200, page.encode(), "text/html; charset=utf-8")

    def _vantage(self, name: str | None) -> Vantage | None:
        if name is None:
            return self.vantages[0]
        for vantage in self.vantages:
            if vantage.name == name:
                return vantage
        return None

    async def probe(self, request: Request) -> Response:
        """blackbox_exporter's /probe: one probe of ``target`` with ``module``, run now."""
        module_name = request.query.get("module", "icmp")
        module = PROBE_MODULES.get(module_name)
        if module is None:
            self.unknown_modules += 1
            return Response(400, f"Unknown module {module_name!r}\n".encode())
        target = request.query.get("target", "")
        if not target:
            return Response(400, b"Target parameter is missing\n")
        vantage = self._vantage(request.query.get("source"))
        if vantage is None:
            return Response(400, f"Unknown source {request.query['source']!r}\n".encode())
        try:
            budget = probe_timeout(request.headers)
        except ValueError as error:
            message = f"Failed to parse timeout from Prometheus header: {error}\n"
            return Response(500, message.encode())
        registry = await self._probe_registry(vantage, target, module, budget)
        return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    async def _probe_registry(
        self, vantage: Vantage, target: str, module: tuple[str, int | None], budget: float
    ) -> CollectorRegistry:
        """Run one probe and return blackbox_exporter's metrics of it."""
        protocol, family = module
        registry = CollectorRegistry()

        def gauge(name: str, text: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, text, labelnames=labels, registry=registry)

        success = gauge("probe_success", "Displays whether or not the probe was a success")
        duration = gauge(
            "probe_duration_seconds", "Returns how long the probe took to complete in seconds"
        )
        lookup_time = gauge(
            "probe_dns_lookup_time_seconds",
            "Returns the time taken for probe dns lookup in seconds",
        )
        ip_protocol = gauge(
            "probe_ip_protocol", "Specifies whether probe ip protocol is IP4 or IP6"
        )
        ip_hash = gauge(
            "probe_ip_addr_hash",
            "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
        )
        phases = None
        hop_limit = None
        if protocol == "icmp":
            phases = gauge(
                "probe_icmp_duration_seconds", "Duration of icmp request by phase", ["phase"]
            )
            for phase in ("resolve", "setup", "rtt"):
                phases.labels(phase)
            hop_limit = gauge(
                "probe_icmp_reply_hop_limit", "Replied packet hop limit (TTL for ipv4)"
            )
        start = time.perf_counter()
        try:
            async with asyncio.timeout(budget):
                host, port = split_host_port(target) if protocol != "icmp" else (target, None)
                address = await lookup(host, family)
                resolved = time.perf_counter()
                lookup_time.set(resolved - start)
                ip_protocol.set(ipaddress.ip_address(address).version)
                ip_hash.set(address_hash(address))
                session = vantage.session
                while session is None:
                    await vantage.changed.wait()
                    session = vantage.session
                ready = time.perf_counter()
                remaining = budget - (ready - start)
                result = await session.probe(
                    address,
                    protocol=protocol,
                    port=port,
                    timeout=max(round(remaining, 3), 0.001),
                    details=vantage.details,
                )
                if phases is not None:
                    phases.labels("resolve").set(resolved - start)
                    phases.labels("setup").set(ready - resolved)
                if result.success:
                    success.set(1)
                    if phases is not None and result.time_ms is not None:
                        phases.labels("rtt").set(result.time_ms / 1000.0)
                    if hop_limit is not None and result.reply_ttl is not None:
                        hop_limit.set(result.reply_ttl)
        except (TimeoutError, OSError, ValueError, ProcessError, StateError) as error:
            log.info("%s: probe of %s failed: %s", vantage.label, target, error)
        duration.set(time.perf_counter() - start)
        return registry
