"""``brokerpkg doctor``: which helper is in use, what it can do, how to fix the rest.

It finds the helper as every command does (:func:`~brokerpkg.locate.locate_helper`),
reads the file's privilege (setuid-root, file capability), starts it and asks its
features, then says whether it opened raw sockets (every protocol) or fell back to
ICMP datagram sockets (``net.ipv4.ping_group_range``), and gives the exact command that
fixes what is missing (``sudo brokerpkg setup`` for a helper it searched for).  PATH
entries the user may not search are named: the search skips them.  Exit status: 0 when
every protocol works over IPv4 and IPv6, 1 when something is missing, 2 when the helper
cannot be found or started.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .errors import HelperNotFoundError, HelperPrivilegeError, ProcessError
from .locate import (
    ENVIRONMENT_VARIABLE,
    PRIVILEGE_CAPABILITY,
    PRIVILEGE_SETUID,
    HelperLocation,
    locate_helper,
    privilege_fix,
    unsearchable_path_entries,
)
from .session import Session

PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
NEEDED = ("ip-4", "ip-6", "icmp", "udp", "tcp", "sctp")
"""Features that must be ``ok`` for the helper to do everything."""
SEARCH_ORDER = (
    f"--helper, ${ENVIRONMENT_VARIABLE}, a setuid-root or cap_net_raw "
    "brokerpkg-helper on PATH, the copy installed with the package, the "
    "source checkout's helper/brokerpkg-helper"
)

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_ERROR = 2


PING_GROUP_FIX = "sudo sysctl -w net.ipv4.ping_group_range='0 2147483647'"


def ping_group_range(path: Path = PING_GROUP_RANGE) -> tuple[int, int] | None:
    """The (low, high) gid range allowed ICMP datagram sockets, None if unreadable."""
    try:
        low, high = path.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def _in_ping_group(span: tuple[int, int] | None) -> bool:
    if span is None:
        return False
    groups = {os.getgid(), os.getegid(), *os.getgroups()}
    return any(span[0] <= gid <= span[1] for gid in groups)


def _file_privilege(location: HelperLocation) -> str:
    if location.privilege == PRIVILEGE_SETUID:
        return "setuid-root: raw sockets for every user (it drops to the caller's ids)"
    if location.privilege == PRIVILEGE_CAPABILITY:
        return "file capability cap_net_raw: raw sockets for every user"
    return "none (no setuid-root bit, no cap_net_raw file capability)"


def _running_as() -> str:
    euid = os.geteuid()
    if euid == 0:
        return "root (uid 0): the helper opens raw sockets without any file privilege"
    return f"uid {os.getuid()} (not root): the helper needs a file privilege for raw sockets"


def _socket_text(sockets: str) -> str:
    if sockets == "raw":
        return "raw: icmp, udp, tcp and sctp probes"
    if sockets == "datagram":
        return (
            "datagram ICMP sockets only (allowed by net.ipv4.ping_group_range): icmp "
            "probes only, no udp, tcp or sctp"
        )
    return f"{sockets} (the helper does not say: not a brokerpkg-helper?)"


def diagnose(
    location: HelperLocation, features: dict[str, str], euid: int
) -> tuple[list[str], list[str]]:
    """(problems, fixes) for a helper that started with ``features``."""
    problems: list[str] = []
    fixes: list[str] = []
    missing = [name for name in NEEDED if features.get(name) != "ok"]
    if features.get("sockets") == "datagram":
        problems.append(
            "the helper has no raw-socket privilege: it fell back to ICMP datagram sockets"
        )
        fixes.append(privilege_fix(location))
    if missing:
        problems.append("not available: " + ", ".join(missing))
    if "ip-6" in missing and "ip-4" not in missing:
        fixes.append(
            "IPv6 sockets could not be opened: is IPv6 disabled "
            "(sysctl net.ipv6.conf.all.disable_ipv6)?"
        )
    if features.get("mark") != "ok" and euid != 0:
        problems.append("marks (-M) need CAP_NET_ADMIN: only root may set them")
    return problems, fixes


def _lines(report: dict[str, Any]) -> list[str]:
    """The text layout of a doctor report."""
    rows: list[tuple[str, str]] = [("helper", report["helper"] or "not found")]
    if report.get("found_by"):
        rows.append(("found by", f"{report['found_by']} ({report['reason']})"))
    rows.append(("search order", SEARCH_ORDER))
    if report["skipped_path"]:
        rows.append(
            (
                "skipped",
                "PATH entries you may not search: " + ", ".join(report["skipped_path"]),
            )
        )
    for key, title in (
        ("version", "version"),
        ("file_privilege", "file privilege"),
        ("running_as", "running as"),
        ("sockets_text", "sockets"),
        ("sandbox", "sandbox"),
    ):
        if report.get(key):
            rows.append((title, report[key]))
    if report.get("features"):
        rows.append(
            ("features", "  ".join(f"{name} {value}" for name, value in report["features"].items()))
        )
    span = report.get("ping_group_range")
    if span is not None:
        state = "your groups are in it" if report["in_ping_group"] else "your groups are not in it"
        rows.append(("ping_group_range", f"{span[0]} {span[1]} ({state})"))
    rows.append(("status", report["status"]))
    rows.extend(("problem", problem) for problem in report["problems"])
    rows.extend(("fix", fix) for fix in report["fixes"])
    rows.extend(("note", note) for note in report["notes"])
    width = max(len(title) for title, _ in rows) + 1
    return [f"{title + ':':<{width}} {value}" for title, value in rows]


async def check(helper: str | None) -> tuple[dict[str, Any], int]:
    """Find and start the helper; return the report and the exit status."""
    span = ping_group_range()
    report: dict[str, Any] = {
        "helper": None,
        "found_by": None,
        "reason": None,
        "version": None,
        "file_privilege": None,
        "running_as": _running_as(),
        "sockets": None,
        "sockets_text": None,
        "sandbox": None,
        "features": {},
        "ping_group_range": list(span) if span is not None else None,
        "skipped_path": unsearchable_path_entries(),
        "in_ping_group": _in_ping_group(span),
        "status": "",
        "problems": [],
        "fixes": [],
        "notes": [],
    }
    try:
        location = locate_helper(helper)
    except HelperNotFoundError as error:
        report["status"] = "error: no helper"
        report["problems"].append(str(error))
        if helper is None and os.environ.get(ENVIRONMENT_VARIABLE):
            report["fixes"].append(
                f"unset {ENVIRONMENT_VARIABLE} or point it at an executable brokerpkg-helper"
            )
        report["fixes"].append("python3 -m pip install .   (builds and installs the helper)")
        report["fixes"].append("or, in a source checkout: make -C helper")
        return report, EXIT_ERROR
    report.update(
        helper=location.path,
        found_by=location.found_by,
        reason=location.reason,
        file_privilege=_file_privilege(location),
    )
    try:
        async with Session(location.path) as session:
            features = dict(session.features)
            report["sandbox"] = await session.feature_value("sandbox")
    except HelperPrivilegeError as error:
        report["status"] = "error: the helper cannot open any socket"
        cause = f": {error.cause}" if error.cause else ""
        report["problems"].append(f"the helper cannot open its sockets{cause}")
        report["fixes"].append(privilege_fix(location))
        report["fixes"].append(f"or, for icmp probes only: {PING_GROUP_FIX}")
        return report, EXIT_ERROR
    except ProcessError as error:
        report["status"] = "error: the helper does not work"
        report["problems"].append(" ".join(str(error).split()))
        return report, EXIT_ERROR
    report.update(
        version=features.get("version"),
        features=features,
        sockets=features.get("sockets"),
        sockets_text=_socket_text(features.get("sockets", "no")),
    )
    problems, fixes = diagnose(location, features, os.geteuid())
    report["problems"].extend(problems)
    report["fixes"].extend(fixes)
    if os.geteuid() == 0 and location.privilege not in (PRIVILEGE_SETUID, PRIVILEGE_CAPABILITY):
        report["notes"].append(f"for users who are not root: {privilege_fix(location)}")
    if any(features.get(name) != "ok" for name in NEEDED):
        report["status"] = "degraded: " + "; ".join(problems)
        return report, EXIT_DEGRADED
    report["status"] = "ok: every protocol over IPv4 and IPv6"
    return report, EXIT_OK


async def run_doctor(args: argparse.Namespace) -> int:
    """``brokerpkg doctor``: print the report (text or JSON); 0 ok, 1 degraded, 2 error."""
    report, status = await check(args.helper)
    if args.json:
        document = {key: value for key, value in report.items() if key != "sockets_text"}
        document["exit_status"] = status
        print(json.dumps(document, indent=2))
    else:
        print("\n".join(_lines(report)))
    return status
