"""The command line's output layouts: pure functions from results to text and JSON.

Nothing here prints or reads the clock; :mod:`brokerpkg.cli` does that.  Each layout
follows the program its users know, column for column:

- ``ping``: iputils ping's reply lines and statistics (:func:`ping_reply_line`,
  :func:`ping_summary`);
- ``multiping``: fping's ``-c`` lines and per-host summaries (:func:`fping_reply_line`,
  :func:`fping_summary_line`);
- ``trace``: traceroute's hop lines (:func:`traceroute_lines`), several responders of
  one hop on one line, ``*`` for silence, ``<MPLS:...>`` as ``traceroute -e``;
- ``mtr``: mtr 0.95's report (:func:`mtr_report_lines`: the Start line, then the
  table of :func:`brokerpkg.mtr.report_lines`, which ``str(MonitorReport)`` prints
  too, fixed columns included: a value wider than its column is cut by the next one,
  as mtr does), its JSON
  (:func:`mtr_json`), its CSV (:func:`mtr_csv_lines`) and a screen for the live view
  (:func:`mtr_screen_lines`).  A monitor in flows (``--paris``, ``--flows K``) names
  its flow: one table (and screen block) per flow, ``HOST: vm (flow 1)``, a ``flow``
  key in each JSON hub and a last CSV column ``Flow``.

The multipath trace's layouts (scamper tracelb's text, Graphviz) are
:func:`brokerpkg.multipath.tracelb_lines` and :func:`brokerpkg.multipath.dot_lines`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import stats
from ._version import __version__
from .answers import Answer, classify

if TYPE_CHECKING:  # types of arguments only: the trace command never imports the monitor
    from datetime import datetime

    from .mtr import FlowsReport, MonitorReport
    from .ping import PingResult
    from .protocol import Mpls, ProbeResult
    from .trace import Hop, TraceResult

IP_HEADER = {4: 20, 6: 40}
CSV_VERSION = f"MTR.brokerpkg-{__version__}"
"""First CSV column: mtr writes ``MTR.<version>``; the prefix keeps the format's tag."""

# ICMP destination unreachable codes: (iputils ping's text, traceroute's mark).
_UNREACHABLE_V4 = {
    0: ("Destination Net Unreachable", "!N"),
    1: ("Destination Host Unreachable", "!H"),
    2: ("Destination Protocol Unreachable", "!P"),
    3: ("Destination Port Unreachable", ""),
    4: ("Frag needed", "!F"),
    5: ("Source Route Failed", "!S"),
    9: ("Destination Net Prohibited", "!X"),
    10: ("Destination Host Prohibited", "!X"),
    13: ("Packet filtered", "!X"),
}
_UNREACHABLE_V6 = {
    0: ("Destination unreachable: No route", "!N"),
    1: ("Destination unreachable: Administratively prohibited", "!X"),
    3: ("Destination unreachable: Address unreachable", "!H"),
    4: ("Destination unreachable: Port unreachable", ""),
}


# ----------------------------------------------------------------------------- shared


def ms_text(value: float) -> str:
    """A round-trip time (ms) with iputils ping's precision: 3 decimals below 1 ms, 2
    below 10, 1 below 100, none above."""
    if value >= 99.95:
        return f"{value:.0f}"
    if value >= 9.995:
        return f"{value:.1f}"
    if value >= 1.0:
        return f"{value:.2f}"
    return f"{value:.3f}"


def iso_time(moment: datetime) -> str:
    """mtr's time stamp: ``2026-11-27T16:07:49+0000`` (``moment`` must be aware)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S%z")


def _family(result: ProbeResult) -> int:
    address = result.responder or result.target or ""
    return 6 if ":" in address else 4


def _unreachable(result: ProbeResult) -> tuple[str, str]:
    """(ping's text, traceroute's mark) for a destination-unreachable answer."""
    table = _UNREACHABLE_V6 if _family(result) == 6 else _UNREACHABLE_V4
    if result.icmp_code is None:
        return "Destination Unreachable", "!H"
    return table.get(
        result.icmp_code,
        (f"Destination Unreachable, code {result.icmp_code}", f"!<{result.icmp_code}>"),
    )


def reply_bytes(result: ProbeResult) -> int | None:
    """Bytes of the answer after its IP header (ping's "64 bytes"), when details say."""
    if result.reply_size is None:
        return None
    return max(0, result.reply_size - IP_HEADER[_family(result)])


# ----------------------------------------------------------------------------- ping


def named(address: str, name: str | None) -> str:
    """``name (address)`` when there is a name other than the address, else the
    address (iputils ping's way of writing an address)."""
    return f"{name} ({address})" if name and name != address else address


def ping_header(
    host: str,
    address: str,
    protocol: str,
    payload: int | None,
    port: int | None,
    *,
    shown: str | None = None,
) -> str:
    """ping's first line: ``PING host (address) 56(84) bytes of data.``, for IPv6
    ``PING host(shown) 56 data bytes`` (``shown``: the address as iputils writes it
    there, ``name (address)`` when the target was given by name; default the
    address); the protocol before the sizes for udp, the protocol and port instead of
    them for tcp and sctp."""
    version = 6 if ":" in address else 4
    if payload is not None:
        total = payload + 8 + IP_HEADER[version]
        what = f"{payload}({total}) bytes of data." if version == 4 else f"{payload} data bytes"
        if protocol != "icmp":
            what = f"{protocol}, " + what
    else:
        what = (f"{protocol} port {port}" if port is not None else protocol) + "."
    target = f" ({address})" if version == 4 else f"({shown or address})"
    return f"PING {host}{target} {what}"


def ping_reply_line(result: ProbeResult, sequence: int, responder: str | None = None) -> str | None:
    """ping's line for one probe (``sequence`` counted from 1), or None for silence.

    ``64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.050 ms`` for an answer from
    the destination (bytes and ttl when the helper gives reply details; ``seq`` for
    protocols other than icmp), ``From ADDRESS icmp_seq=N Time to live exceeded`` and
    ``From ADDRESS icmp_seq=N Destination Host Unreachable`` for routers' answers.
    ``responder`` is the answering address as the line shows it (default its
    address; ping writes ``localhost (127.0.0.1)`` for a target given by name).
    """
    shown = responder or result.responder
    name = "icmp_seq" if (result.protocol or "icmp") == "icmp" else "seq"
    answer = classify(result)
    if answer is Answer.NO_REPLY:
        return None
    if answer is Answer.TIME_EXCEEDED:
        return f"From {shown} {name}={sequence} Time to live exceeded"
    if answer is Answer.UNREACHABLE:
        return f"From {shown} {name}={sequence} {_unreachable(result)[0]}"
    size = reply_bytes(result)
    line = f"{size} bytes from {shown}:" if size is not None else f"Reply from {shown}:"
    line += f" {name}={sequence}"
    if result.reply_ttl is not None:
        line += f" ttl={result.reply_ttl}"
    if result.time_ms is not None:
        line += f" time={ms_text(result.time_ms)} ms"
    return line


def ping_summary(
    host: str, transmitted: int, results: Sequence[ProbeResult], elapsed_ms: float
) -> list[str]:
    """ping's closing lines over ``results`` (the probes that finished; ``transmitted``
    also counts those still waiting when the run was stopped, as lost)::

        --- 127.0.0.1 ping statistics ---
        3 packets transmitted, 3 received, 0% packet loss, time 2003ms
        rtt min/avg/max/mdev = 0.040/0.050/0.060/0.008 ms

    ``+N errors`` counts routers' answers (time exceeded, unreachable); ``mdev`` is the
    population standard deviation, as iputils computes it.
    """
    received = [result for result in results if result.success]
    errors = sum(
        1 for result in results if classify(result) in (Answer.TIME_EXCEEDED, Answer.UNREACHABLE)
    )
    loss = 100.0 * (transmitted - len(received)) / transmitted if transmitted else 0.0
    counts = f"{transmitted} packets transmitted, {len(received)} received"
    if errors:
        counts += f", +{errors} errors"
    counts += f", {loss:g}% packet loss, time {elapsed_ms:.0f}ms"
    lines = [f"--- {host} ping statistics ---", counts]
    rtts = [result.time_ms for result in received if result.time_ms is not None]
    if rtts:
        values = (stats.minimum(rtts), stats.mean(rtts), stats.maximum(rtts), stats.pstdev(rtts))
        lines.append(
            "rtt min/avg/max/mdev = " + "/".join(f"{value or 0.0:.3f}" for value in values) + " ms"
        )
    return lines


# ----------------------------------------------------------------------------- fping


def fping_reply_line(
    host: str, width: int, sequence: int, result: ProbeResult, done: Mapping[int, ProbeResult]
) -> str | None:
    """fping ``-c``'s line for one answer (``sequence`` from 0; ``done``: this host's
    probes finished so far, this one included, by sequence), or None for silence::

        127.0.0.1 : [0], 64 bytes, 0.050 ms (0.050 avg, 0% loss)
    """
    answer = classify(result)
    name = f"{host:<{width}} : [{sequence}]"
    if answer is Answer.NO_REPLY:
        return None
    if answer is Answer.TIME_EXCEEDED:
        return f"{name}, time exceeded from {result.responder}"
    if answer is Answer.UNREACHABLE:
        return f"{name}, {_unreachable(result)[0]} from {result.responder}"
    line = name
    size = reply_bytes(result)
    if size is not None:
        line += f", {size} bytes"
    if result.time_ms is not None:
        line += f", {ms_text(result.time_ms)} ms"
    rtts = [probe.time_ms for probe in done.values() if probe.success and probe.time_ms is not None]
    average = stats.mean(rtts)
    sent = len(done)
    loss = (sent - len(rtts)) * 100 // sent if sent else 0
    if average is not None:
        line += f" ({ms_text(average)} avg, {loss}% loss)"
    return line


def fping_summary_line(result: PingResult, width: int, transmitted: int | None = None) -> str:
    """fping's per-host summary::

        127.0.0.1 : xmt/rcv/%loss = 3/3/0%, min/avg/max = 0.040/0.050/0.060

    ``transmitted`` counts the probes sent (default: those in ``result``); when a run
    is interrupted it also counts those still waiting for an answer, as lost.
    """
    sent = result.sent if transmitted is None else transmitted
    loss = (sent - result.received) * 100 // sent if sent else 0
    line = f"{result.host:<{width}} : xmt/rcv/%loss = {sent}/{result.received}/{loss}%"
    if result.min_rtt is not None and result.avg_rtt is not None and result.max_rtt is not None:
        line += (
            f", min/avg/max = {ms_text(result.min_rtt)}/{ms_text(result.avg_rtt)}/"
            f"{ms_text(result.max_rtt)}"
        )
    return line


# ----------------------------------------------------------------------------- traceroute


def traceroute_header(trace: TraceResult, size: int | None) -> str:
    """``traceroute to HOST (ADDRESS), 30 hops max, 64 byte packets`` (``, flow N``
    after it for a Paris trace)."""
    line = f"traceroute to {trace.host} ({trace.destination}), {trace.max_ttl} hops max"
    if size is not None:
        line += f", {size} byte packets"
    if trace.flow is not None:
        line += f", flow {trace.flow}"
    return line


def _traceroute_mpls(mpls: Sequence[Mpls]) -> str:
    """traceroute -e's extension text: ``<MPLS:L=16,E=0,S=1,T=1>``, entries split by /."""
    return (
        "<MPLS:"
        + "/".join(
            f"L={entry.label},E={entry.traffic_class},S={int(entry.bottom_of_stack)},T={entry.ttl}"
            for entry in mpls
        )
        + ">"
    )


def traceroute_hop_line(hop: Hop, *, numeric: bool, show_mpls: bool) -> str:
    """One hop as traceroute prints it: the hop number, then for each probe its
    responder (when it differs from the previous answer's) and its time, ``*`` for a
    probe nobody answered, ``!H``/``!N``/``!X``... after an unreachable answer::

         4  198.18.201.1 <MPLS:L=16,E=0,S=1,T=1>  0.487 ms * 198.18.201.9  0.380 ms

    Without ``numeric`` a responder reads ``name (address)``, the address standing in
    for a missing name, as traceroute does.
    """
    line = f"{hop.ttl:2d} "
    previous: tuple[str, tuple[Mpls, ...]] | None = None
    for probe in hop.probes:
        if probe.responder is None:
            line += " *"
            continue
        key = (probe.responder, tuple(probe.mpls) if show_mpls else ())
        if key != previous:
            previous = key
            if numeric:
                line += f" {probe.responder}"
            else:
                name = hop.responders[probe.responder].name or probe.responder
                line += f" {name} ({probe.responder})"
            if show_mpls and probe.mpls:
                line += " " + _traceroute_mpls(probe.mpls)
        if probe.time_ms is not None:
            line += f"  {probe.time_ms:.3f} ms"
        if classify(probe) is Answer.UNREACHABLE:
            mark = _unreachable(probe)[1]
            if mark:
                line += f" {mark}"
    return line


def traceroute_lines(
    trace: TraceResult, *, numeric: bool, show_mpls: bool, size: int | None
) -> list[str]:
    """The header and one line per hop."""
    return [traceroute_header(trace, size)] + [
        traceroute_hop_line(hop, numeric=numeric, show_mpls=show_mpls) for hop in trace.hops
    ]


def trace_json(trace: TraceResult) -> dict[str, Any]:
    """The trace as JSON: ``host``, ``destination``, ``reached``, ``distance`` and per
    hop its ``responders`` (address, name, rtts, mpls) and every probe."""
    return trace.to_dict()


# ----------------------------------------------------------------------------- mtr


def flow_reports(report: MonitorReport | FlowsReport) -> tuple[MonitorReport, ...]:
    """The per-flow reports of ``report`` (a plain report is its own only one)."""
    from .mtr import FlowsReport

    return report.flows if isinstance(report, FlowsReport) else (report,)


def flow_host(local_host: str, report: MonitorReport) -> str:
    """The ``HOST:`` of a report: ``vm``, or ``vm (flow 3)`` for a monitor in a flow."""
    return local_host if report.flow is None else f"{local_host} (flow {report.flow})"


def mtr_report_lines(
    report: MonitorReport | FlowsReport,
    *,
    local_host: str,
    started: datetime,
    wide: bool = False,
    numeric: bool = True,
    show_ips: bool = False,
    show_mpls: bool = False,
) -> list[str]:
    """``mtr -r`` (``-w`` with ``wide``): the Start line, then
    :func:`brokerpkg.mtr.report_lines` (once per flow, ``HOST: vm (flow N)``, for a
    monitor in flows)::

    Start: 2026-11-27T16:08:58+0000
    HOST: vm                          Loss%   Snt   Last   Avg  Best  Wrst StDev
      1.|-- 198.18.1.2                 0.0%     3    0.0   0.4   0.0   1.0   0.6
      5.|-- ???                       100.0     3    0.0   0.0   0.0   0.0   0.0
    """
    from .mtr import report_lines

    lines = [f"Start: {iso_time(started)}"]
    for each in flow_reports(report):
        lines += report_lines(
            each,
            local_host=flow_host(local_host, each),
            wide=wide,
            numeric=numeric,
            show_ips=show_ips,
            show_mpls=show_mpls,
        )
    return lines


def _ms(value: float | None) -> float:
    return 0.0 if value is None else value


def mtr_json(
    report: MonitorReport | FlowsReport | None,
    *,
    local_host: str,
    target: str,
    tos: int,
    tests: int,
    packet_size: int,
    bit_pattern: int,
    numeric: bool = True,
    show_ips: bool = False,
) -> dict[str, Any]:
    """``mtr -j``'s document, keys and value types as mtr 0.95 writes them::

        {"report": {"mtr": {"src": "vm", "dst": "host", "tos": 0, "tests": 10,
                            "psize": "64", "bitpattern": "0x00"},
                    "hubs": [{"count": 1, "host": "198.18.1.2", "Loss%": 0.0, "Snt": 10,
                              "Last": 0.065, "Avg": 0.062, "Best": 0.06, "Wrst": 0.065,
                              "StDev": 0.003}]}}

    Times in ms rounded to the microsecond, 0.0 where undefined; ``hubs`` is empty
    without a report (an error before the first cycle).  A monitor in flows has the
    hubs of every flow in turn, each with its ``flow``.
    """
    from .mtr import hop_label

    hubs = []
    for each in flow_reports(report) if report is not None else ():
        for hop in each.hops:
            hub: dict[str, Any] = {
                "count": hop.ttl,
                "host": hop_label(hop, numeric=numeric, show_ips=show_ips),
                "Loss%": round(hop.loss_percent, 3),
                "Snt": hop.sent,
                "Last": round(_ms(hop.last), 3),
                "Avg": round(_ms(hop.avg), 3),
                "Best": round(_ms(hop.best), 3),
                "Wrst": round(_ms(hop.worst), 3),
                "StDev": round(_ms(hop.stdev), 3),
            }
            if each.flow is not None:
                hub["flow"] = each.flow
            hubs.append(hub)
    return {
        "report": {
            "mtr": {
                "src": local_host,
                "dst": target,
                "tos": tos,
                "tests": tests,
                "psize": str(packet_size),
                "bitpattern": f"0x{bit_pattern:02X}",
            },
            "hubs": hubs,
        }
    }


def mtr_csv_lines(
    report: MonitorReport | FlowsReport,
    *,
    target: str,
    started: int,
    numeric: bool = True,
    show_ips: bool = False,
) -> list[str]:
    """``mtr -C``: a header, then one row per hop (``started`` in Unix seconds)::

        Mtr_Version,Start_Time,Status,Host,Hop,Ip,Loss%,Snt, ,Last,Avg,Best,Wrst,StDev,
        MTR.brokerpkg-0.1.0,1795795768,OK,198.18.200.50,1,198.18.1.2,0.00,2,0,0.05,...

    The column titled `` `` is the number of lost probes (mtr's Drop), as in mtr.  A
    monitor in flows adds a last column, ``Flow``, and has the rows of every flow.
    """
    from .mtr import REPORT_FIELDS, hop_label

    reports = flow_reports(report)
    in_flows = any(each.flow is not None for each in reports)
    lines = [
        "Mtr_Version,Start_Time,Status,Host,Hop,Ip,"
        + "".join(f"{field.title}," for field in REPORT_FIELDS)
        + ("Flow," if in_flows else "")
    ]
    for each in reports:
        for hop in each.hops:
            label = hop_label(hop, numeric=numeric, show_ips=show_ips)
            times = (hop.last, hop.avg, hop.best, hop.worst, hop.stdev)
            lines.append(
                f"{CSV_VERSION},{started},OK,{target},{hop.ttl},{label},"
                f"{hop.loss_percent:.2f},{hop.sent},{hop.lost},"
                + ",".join(f"{_ms(value):.2f}" for value in times)
                + (f",{each.flow}" if in_flows else "")
            )
    return lines


def mtr_screen_lines(
    report: MonitorReport | FlowsReport | None,
    *,
    local_host: str,
    target: str,
    address: str,
    now: datetime,
    width: int,
    height: int,
    numeric: bool = True,
    show_ips: bool = False,
    show_mpls: bool = False,
    cycles: int | None = None,
) -> list[str]:
    """The live view's screen (mtr's curses layout), ``height`` lines at most, each at
    most ``width`` characters (a monitor in flows shows each flow's rows under a
    `` flow N`` line)::

                                brokerpkg mtr [v0.1.0]
        vm -> 198.18.200.50 (198.18.200.50)               2026-11-27T16:10:00+0000
        Keys:  q quit                                                  cycle 3
                                               Packets               Pings
         Host                                Loss%   Snt   Last   Avg  Best  Wrst StDev
          1. 198.18.1.2                       0.0%     3    0.1   0.1   0.1   0.1   0.0
          2. (waiting for reply)
    """
    from .mtr import REPORT_FIELDS, header_cells, hop_label, main_mpls, mpls_line, overlay
    from .mtr import report_cells as cells

    width = max(width, 40)
    fields = sum(field.width for field in REPORT_FIELDS)
    name_width = max(width - fields, 20)
    title = f"brokerpkg mtr [v{__version__}]"
    route = f"{local_host} -> {target}" + ("" if target == address else f" ({address})")
    stamp = iso_time(now)
    cycle = (
        ""
        if report is None
        else f"cycle {report.cycle}" + (f" of {cycles}" if cycles is not None else "")
    )
    keys = "Keys:  q quit"
    lines = [
        title.center(width).rstrip(),
        route + stamp.rjust(max(width - len(route), len(stamp) + 1)),
        keys + cycle.rjust(max(width - len(keys), len(cycle) + 1)),
        " " * name_width + f"{'Packets':^13}{'Pings':^30}".rstrip(),
        overlay(" Host", name_width, header_cells()),
    ]
    for each in flow_reports(report) if report is not None else ():
        if each.flow is not None:
            lines.append(f" flow {each.flow}")
        for hop in each.hops:
            label = hop_label(hop, numeric=numeric, show_ips=show_ips)
            if hop.address is None:
                lines.append(f"{hop.ttl:3d}. (waiting for reply)")
                continue
            prefix = f"{hop.ttl:3d}. {label}"[: name_width - 1]
            lines.append(overlay(prefix, name_width, cells(hop)))
            main = main_mpls(hop) if show_mpls else ()
            lines.extend(mpls_line(entry, "       ") for entry in main)
            for responder in hop.responders:
                if responder.address != hop.address:
                    lines.append(f"       {responder.address}")
                    if show_mpls:
                        lines.extend(mpls_line(entry, "       ") for entry in responder.mpls)
    return [line[:width] for line in lines[:height]]
