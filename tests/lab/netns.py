"""Low-level network-namespace plumbing: names, ``ip -batch``, sysctls, cleanup.

Every namespace this lab creates is named ``bpk-<pid>-<random>-<role>``:
``<pid>`` is the creating process, so a later run can tell namespaces left by a
crashed run (their creator is gone) from those of a run still going on in
parallel (see :func:`cleanup_stale`).

Nothing here changes the root namespace: commands run with ``ip -n NS`` /
``ip netns exec NS``, and sysctls are written by a helper process that first
enters the namespace and checks that it did.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

NS_PREFIX = "bpk-"
NETNS_DIR = Path("/run/netns")
_NAME_RE = re.compile(r"^bpk-(\d+)-([0-9a-f]+)-(.+)$")

# Whole-namespace sysctls written in every lab namespace: ICMP errors are never
# rate-limited, no IPv6 duplicate address detection and no router solicitations.
# The rate masks are emptied too: with a type in the mask, even a zero rate limit
# resets the per-peer token bucket that IPv4's route-error limiter (ip_error, used
# for unreachable/prohibit routes and "no route") shares, so a time-exceeded
# burst would silence the next unreachable.  ip_error's own limit (burst 5, then
# 1/s per source, net.ipv4.route.error_cost/burst) exists only in the root
# namespace and is left alone.
BASE_SYSCTLS: dict[str, str] = {
    "net.ipv4.icmp_ratemask": "0",
    "net.ipv6.icmp.ratemask": "\n",
    "net.ipv4.icmp_ratelimit": "0",
    "net.ipv4.icmp_msgs_per_sec": "1000000",
    "net.ipv4.icmp_msgs_burst": "1000000",
    "net.ipv6.icmp.ratelimit": "0",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.dad_transmits": "0",
    "net.ipv6.conf.default.dad_transmits": "0",
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
    "net.ipv6.conf.all.router_solicitations": "0",
    "net.ipv6.conf.default.router_solicitations": "0",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}
# The IPv6 neighbour-discovery settings above that a node with the kernel's own
# neighbour discovery keeps at the kernel's defaults (topology.Lab.add_node kernel_nd).
ND_SYSCTLS: tuple[str, ...] = tuple(
    key
    for key in BASE_SYSCTLS
    if key.rsplit(".", 1)[1] in ("accept_dad", "dad_transmits", "accept_ra", "router_solicitations")
)
# Added for routers: forwarding on, errors sourced from the inbound interface,
# no redirects.
ROUTER_SYSCTLS: dict[str, str] = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.default.forwarding": "1",
    "net.ipv4.icmp_errors_use_inbound_ifaddr": "1",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
}


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


def new_run_id() -> str:
    """Return ``<pid>-<6 hex digits>``, unique per lab instance."""
    return f"{os.getpid()}-{secrets.token_hex(3)}"


def namespace_name(run_id: str, role: str) -> str:
    """Return the namespace name for ``role`` in the lab ``run_id``.

    Raises:
        ValueError: ``role`` has characters other than ``[a-z0-9_-]``.
    """
    if not re.fullmatch(r"[a-z0-9_-]+", role):
        raise ValueError(f"bad role name {role!r}")
    return f"{NS_PREFIX}{run_id}-{role}"


def list_namespaces() -> list[str]:
    """Return the names in /run/netns (empty if the directory does not exist)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def lab_namespaces() -> list[str]:
    """Return the namespaces named like this lab's (``bpk-<pid>-<hex>-<role>``)."""
    return [n for n in list_namespaces() if _NAME_RE.match(n)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_namespaces() -> list[str]:
    """Return lab namespaces whose creating process no longer exists."""
    stale = []
    for name in lab_namespaces():
        m = _NAME_RE.match(name)
        assert m is not None
        if not _pid_alive(int(m.group(1))):
            stale.append(name)
    return stale


def namespace_pids(name: str) -> list[int]:
    """Return the ids of the processes running inside namespace ``name``."""
    res = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False)
    return [int(p) for p in res.stdout.split() if p.isdigit()]


def kill_namespace_processes(names: Iterable[str]) -> None:
    """SIGKILL every process inside the given lab namespaces (by pid).

    Only namespaces named like this lab's are touched.
    """
    for name in names:
        if not _NAME_RE.match(name):
            continue
        for pid in namespace_pids(name):
            if pid == os.getpid():
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def delete_namespaces(names: Iterable[str]) -> None:
    """Delete namespaces (missing ones are ignored).

    Raises:
        LabError: ``ip`` failed and a namespace is still there afterwards.
    """
    names = [n for n in names if n]
    if not names:
        return
    lines = [f"netns del {n}" for n in names]
    res = subprocess.run(
        ["ip", "-force", "-batch", "-"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    left = set(names) & set(list_namespaces())
    if left:
        raise LabError(f"could not delete namespaces {sorted(left)}: {res.stderr.strip()}")


def cleanup_stale() -> list[str]:
    """Remove namespaces left by crashed earlier runs, and their processes.

    Returns the names removed.  Namespaces of runs still alive are kept.

    Raises:
        LabError: a stale namespace could not be deleted.
    """
    stale = stale_namespaces()
    kill_namespace_processes(stale)
    delete_namespaces(stale)
    return stale


def _ip_argv(ns: str | None, family: int | None, force: bool) -> list[str]:
    argv = ["ip"]
    if family is not None:
        argv.append(f"-{family}")
    if ns is not None:
        argv += ["-n", ns]
    if force:
        argv.append("-force")
    return [*argv, "-batch", "-"]


def ip_batch(
    lines: Sequence[str], ns: str | None = None, *, family: int | None = None, force: bool = False
) -> None:
    """Run ``ip [-4|-6] [-n ns] -batch -`` with ``lines``.

    Raises:
        LabError: ``ip`` exited non-zero (message has the failing line).
    """
    if not lines:
        return
    argv = _ip_argv(ns, family, force)
    res = subprocess.run(
        argv, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise LabError(
            f"{' '.join(argv)} failed: {res.stderr.strip()}\nbatch:\n" + "\n".join(lines)
        )


def ip_batches_parallel(batches: Sequence[tuple[str, int | None, Sequence[str]]]) -> None:
    """Run ``ip [-4|-6] -n NS -batch -`` for each (ns, family, lines), all at once.

    Batches for the same namespace run one after the other, in order.

    Raises:
        LabError: any of them failed (all are waited for first).
    """
    per_ns: dict[str, list[tuple[int | None, Sequence[str]]]] = {}
    for ns, family, lines in batches:
        if lines:
            per_ns.setdefault(ns, []).append((family, lines))
    errors: list[str] = []
    while per_ns:
        procs = []
        for ns, queue in list(per_ns.items()):
            family, lines = queue.pop(0)
            if not queue:
                del per_ns[ns]
            argv = _ip_argv(ns, family, False)
            p = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append((argv, lines, p))
        for argv, lines, p in procs:
            _out, err = p.communicate("\n".join(lines) + "\n")
            if p.returncode != 0:
                errors.append(
                    f"{' '.join(argv)} failed: {err.strip()}\nbatch:\n" + "\n".join(lines)
                )
        if errors:
            raise LabError("\n\n".join(errors))


_SYSCTL_SCRIPT = r"""
import ctypes, fcntl, json, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
root_ino = os.stat("/proc/self/ns/net").st_ino
for ns, items, no_csum in json.load(sys.stdin):
    fd = os.open("/run/netns/" + ns, os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns(%s): %s" % (ns, os.strerror(err)))
    os.close(fd)
    if os.stat("/proc/self/ns/net").st_ino == root_ino:
        raise SystemExit("refusing: still in the root network namespace")
    for key, value in items:
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as e:
            raise SystemExit("%s: %s = %s: %s" % (ns, key, value, e))
    if no_csum:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for name in no_csum:
            ev = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0), 8)
            ifr = struct.pack("16sP", name.encode(), ctypes.addressof(ev)).ljust(40, b"\0")
            try:
                fcntl.ioctl(s, SIOCETHTOOL, ifr)
            except OSError as e:
                raise SystemExit("%s: tx checksum off on %s: %s" % (ns, name, e))
        s.close()
"""


def write_sysctls(
    settings: Mapping[str, Mapping[str, object]],
    *,
    tx_checksum_off: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Write sysctls inside namespaces: ``{ns: {"net.ipv4.ip_forward": 1}}``.

    One helper process enters each namespace in turn (setns) and writes
    /proc/sys; it refuses to write while still in the root namespace.  Keys use
    dots; interface names in keys must not contain dots.  ``tx_checksum_off``
    (``{ns: [ifname, ...]}``) also turns off TX checksum offload on those
    interfaces (ethtool ioctl), so captures show final checksums.

    Raises:
        LabError: a namespace could not be entered or a value was refused.
    """
    offload = tx_checksum_off or {}
    payload = []
    for ns in dict.fromkeys([*settings, *offload]):
        items = settings.get(ns, {})
        payload.append([ns, [[k, str(v)] for k, v in items.items()], list(offload.get(ns, []))])
    if not payload:
        return
    res = subprocess.run(
        [sys.executable, "-I", "-c", _SYSCTL_SCRIPT],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise LabError(f"sysctl write failed: {res.stderr.strip()}")


def read_sysctl(ns: str, key: str) -> str:
    """Return a sysctl's value inside namespace ``ns``.

    Raises:
        LabError: it cannot be read.
    """
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/sys/" + key.replace(".", "/")],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise LabError(f"read {key} in {ns}: {res.stderr.strip()}")
    return res.stdout.strip()


def exec_argv(
    ns: str, argv: Sequence[str], *, user: int | None = None, group: int | None = None
) -> list[str]:
    """Return argv running ``argv`` inside ``ns`` (optionally as another user).

    With ``user`` the command runs through ``setpriv --reuid --regid
    --clear-groups`` (group defaults to the same number), i.e. fully
    unprivileged: no capabilities survive the uid change.
    """
    full = ["ip", "netns", "exec", ns]
    if user is not None:
        gid = user if group is None else group
        full += ["setpriv", f"--reuid={user}", f"--regid={gid}", "--clear-groups"]
    return full + list(argv)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the child when this process exits.

    Used for long-running lab helpers (tcpdump, the responder) so that a
    killed test run does not leave them behind.  The setting survives the
    ``ip netns exec`` exec chain (it is cleared only by set-id executables).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def namespaces_supported() -> tuple[bool, str]:
    """Return (True, "") if this process can create network namespaces.

    Otherwise (False, reason).  Creates and deletes one namespace to check.
    """
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, raw sockets)"
    if shutil.which("ip") is None:
        return False, "iproute2 'ip' not found"
    name = namespace_name(new_run_id(), "check")
    res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return False, f"cannot create a network namespace: {res.stderr.strip()}"
    try:
        res = subprocess.run(
            ["ip", "-n", name, "link", "add", "name", "t0", "type", "veth", "peer", "name", "t1"],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            return False, f"cannot create a veth pair in a namespace: {res.stderr.strip()}"
    finally:
        delete_namespaces([name])
    return True, ""
