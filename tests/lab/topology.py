"""Network-namespace topologies: a generic :class:`Lab` and the :class:`Chain`.

Address plan (documentation ranges only, never routed outside the lab):

* link ``k`` (k >= 1) uses ``198.18.k.0/24`` and ``2001:db8:k::/64`` (k written in
  hex in the IPv6 hextet, e.g. link 10 is ``2001:db8:a::/64``); the node on the
  client side of the link gets ``.1`` / ``::1``, the node on the server side
  ``.2`` / ``::2``.  Links are numbered 1..198.
* the chain's responder link is ``198.18.199.0/24`` / ``2001:db8:c7::/64``
  (last router ``.1``, responder ``.2``).
* virtual targets answered by the responder: ``198.18.200.0/24`` and
  ``2001:db8:c8::/64``; virtual hops it impersonates: ``198.18.201.0/24`` and
  ``2001:db8:c9::/64`` (routed to it as ``198.18.200.0/23`` and ``2001:db8:c8::/47``).
* special destinations (blackhole, unreachable, prohibit): number ``n`` uses
  ``198.19.n.0/24`` and ``2001:db8:ffNN::/64`` (NN = n in two hex digits).

In the chain ``client -> r1 .. rN -> server`` the client is node 0, router k is
node k, the server node N+1, and link k joins node k-1 and node k.  So hop k
(router k, 1 <= k <= N) answers time-exceeded from ``198.18.k.2`` /
``2001:db8:k::2`` (its client-side interface), and the server is hop N+1 at
``198.18.(N+1).2``.  Interfaces: ``eth0`` faces the client side, ``eth1`` the
server side, the last router's ``eth2`` the responder.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Self

from . import netns
from .netns import LabError

LAB_DIR = Path(__file__).resolve().parent
TESTS_DIR = LAB_DIR.parent

MAX_LINK = 198
RESPONDER_LINK = 199
VIRTUAL_TARGETS4 = "198.18.200.0/24"
VIRTUAL_TARGETS6 = "2001:db8:c8::/64"
VIRTUAL_HOPS4 = "198.18.201.0/24"
VIRTUAL_HOPS6 = "2001:db8:c9::/64"
VIRTUAL_ROUTE4 = "198.18.200.0/23"
VIRTUAL_ROUTE6 = "2001:db8:c8::/47"


def link_prefix(k: int, family: int = 4) -> str:
    """Return link ``k``'s prefix: ``198.18.k.0/24`` or ``2001:db8:k::/64``.

    Raises:
        ValueError: ``k`` outside 1..199 or family not 4/6.
    """
    if not 1 <= k <= RESPONDER_LINK:
        raise ValueError(f"link number {k} outside 1..{RESPONDER_LINK}")
    if family == 4:
        return f"198.18.{k}.0/24"
    if family == 6:
        return f"2001:db8:{k:x}::/64"
    raise ValueError(f"family must be 4 or 6, not {family}")


def link_address(k: int, side: int, family: int = 4) -> str:
    """Return the address of ``side`` (1: client side, 2: server side) on link ``k``.

    Raises:
        ValueError: as :func:`link_prefix`, or side not 1/2.
    """
    if side not in (1, 2):
        raise ValueError("side must be 1 or 2")
    net = link_prefix(k, family)
    return str(ipaddress.ip_network(net)[side])


def virtual_target(i: int, family: int = 4) -> str:
    """Return responder target number ``i`` (1..254): ``198.18.200.i`` / ``2001:db8:c8::i``."""
    return str(ipaddress.ip_network(VIRTUAL_TARGETS4 if family == 4 else VIRTUAL_TARGETS6)[i])


def virtual_hop(i: int, family: int = 4) -> str:
    """Return the default address of virtual hop ``i``: ``198.18.201.i`` / ``2001:db8:c9::i``."""
    return str(ipaddress.ip_network(VIRTUAL_HOPS4 if family == 4 else VIRTUAL_HOPS6)[i])


def special_prefixes(n: int) -> tuple[str, str]:
    """Return special destination ``n``'s prefixes (``198.19.n.0/24``, ``2001:db8:ffNN::/64``).

    Raises:
        ValueError: ``n`` outside 0..255.
    """
    if not 0 <= n <= 255:
        raise ValueError("special destination number must be 0..255")
    return f"198.19.{n}.0/24", f"2001:db8:ff{n:02x}::/64"


@dataclass
class Interface:
    """One veth end inside a node."""

    name: str
    addr4: str | None = None
    addr6: str | None = None
    prefixlen4: int = 24
    prefixlen6: int = 64
    peer_node: str | None = None
    peer_iface: str | None = None
    link: int | None = None

    def address(self, family: int = 4) -> str:
        """Return the interface's address of ``family``.

        Raises:
            LookupError: it has none.
        """
        addr = self.addr4 if family == 4 else self.addr6
        if addr is None:
            raise LookupError(f"{self.name} has no IPv{family} address")
        return addr


@dataclass
class Node:
    """A host or router: one network namespace.

    ``kernel_nd``: IPv6 neighbour discovery left as the kernel does it (see
    :meth:`Lab.add_node`).
    """

    role: str
    ns: str
    router: bool = False
    interfaces: dict[str, Interface] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    kernel_nd: bool = False

    def address(self, family: int = 4, iface: str | None = None) -> str:
        """Return the address of ``iface`` (default: the first interface).

        Raises:
            LookupError: no such interface or no address of that family.
        """
        if iface is None:
            if not self.interfaces:
                raise LookupError(f"{self.role} has no interfaces")
            iface = next(iter(self.interfaces))
        try:
            return self.interfaces[iface].address(family)
        except KeyError:
            raise LookupError(f"{self.role} has no interface {iface}") from None

    def __str__(self) -> str:
        return self.ns


NodeRef = Node | str


class Destination(NamedTuple):
    """A special destination installed by the lab (blackhole/unreachable/prohibit)."""

    kind: str
    router: str
    prefix4: str
    prefix6: str
    addr4: str
    addr6: str

    def address(self, family: int = 4) -> str:
        """Return the sample host address of ``family`` inside the prefix."""
        return self.addr4 if family == 4 else self.addr6


class RawProbeResult(NamedTuple):
    """What :meth:`Lab.raw_probe` saw: probes sent and every packet received."""

    sent: list[dict[str, Any]]
    received: list[Any]  # list[packets.Packet], with .timestamp = receive time


# Strong references: a lab dropped without close() is still removed at exit.
_LIVE_LABS: set[Lab] = set()


def _close_all_labs() -> None:
    for lab in list(_LIVE_LABS):
        try:
            lab.close()
        except Exception as e:
            print(f"lab cleanup at exit failed: {e}", file=sys.stderr)


atexit.register(_close_all_labs)


class Lab:
    """A set of network namespaces joined by veth pairs, built in a few batches.

    Describe the topology with :meth:`add_node`, :meth:`add_link` and
    :meth:`add_route`, then call :meth:`build` (or use the lab as a context
    manager, which builds on entry and removes everything on exit).  After the
    build, the run-time methods (``run``, ``popen``, ``sysctl``, ``capture``,
    ``add_route``, ...) act at once.

    :meth:`close` kills the processes started through the lab and deletes every
    namespace; it also runs at interpreter exit for labs not closed.
    """

    def __init__(
        self, tag: str = "lab", *, clean_stale: bool = True, checksum_offload: bool = False
    ) -> None:
        """Prepare an empty lab (nothing is created until :meth:`build`).

        ``tag`` becomes part of the run id; ``clean_stale`` removes namespaces
        left by crashed runs first; ``checksum_offload=False`` turns off veth
        TX checksum offload so captured packets carry final checksums.
        """
        self.run_id = f"{netns.new_run_id()}"
        self.tag = tag
        self.nodes: dict[str, Node] = {}
        self.built = False
        self.closed = False
        self.build_seconds: float | None = None
        self._clean_stale = clean_stale
        self._checksum_offload = checksum_offload
        self._links: list[tuple[str, str, str, str, int | None]] = []
        self._pending: dict[str, list[tuple[int | None, str]]] = {}
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._closers: list[Any] = []
        self._special = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ description

    def add_node(
        self,
        role: str,
        *,
        router: bool = False,
        sysctls: Mapping[str, object] | None = None,
        kernel_nd: bool = False,
    ) -> Node:
        """Declare a node (namespace ``bpk-<run>-<role>``).

        Routers get forwarding and the router sysctls (see ``netns.ROUTER_SYSCTLS``).
        ``kernel_nd`` leaves IPv6 neighbour discovery as the kernel does it, where the
        lab otherwise turns it down (``netns.ND_SYSCTLS``): every address of the node
        runs duplicate address detection, so it stays tentative -- neither used nor
        answered for in neighbour discovery -- for 1-2 s after the build (a random
        delay up to ``rtr_solicit_delay``, then ``dad_transmits`` solicitations
        ``retrans_time`` apart), and a neighbour resolving it retries every second
        while it holds the packets: the cold path of freshly configured routers.

        Raises:
            ValueError: duplicate or invalid role.
            LabError: the lab is already built.
        """
        if self.built:
            raise LabError("add_node after build")
        if role in self.nodes:
            raise ValueError(f"duplicate node {role}")
        node = Node(
            role,
            netns.namespace_name(self.run_id, role),
            router,
            sysctls={k: str(v) for k, v in (sysctls or {}).items()},
            kernel_nd=kernel_nd,
        )
        self.nodes[role] = node
        self._pending[role] = [(None, "link set lo up")]
        return node

    def node(self, ref: NodeRef) -> Node:
        """Return the node for a role name or a :class:`Node`.

        Raises:
            KeyError: unknown role.
        """
        if isinstance(ref, Node):
            return ref
        return self.nodes[ref]

    def add_link(
        self,
        a: NodeRef,
        b: NodeRef,
        k: int | None,
        *,
        a_iface: str | None = None,
        b_iface: str | None = None,
    ) -> tuple[Interface, Interface]:
        """Declare a veth pair between ``a`` and ``b`` on link number ``k``.

        ``a`` gets ``link_address(k, 1)``, ``b`` gets ``link_address(k, 2)`` (both
        families); ``k=None`` leaves the link unaddressed.  Interface names default
        to the next free ``ethN`` in each node.

        Raises:
            ValueError: bad link number or duplicate interface name.
            LabError: the lab is already built.
        """
        if self.built:
            raise LabError("add_link after build")
        na, nb = self.node(a), self.node(b)
        ia = a_iface or f"eth{len(na.interfaces)}"
        ib = b_iface or f"eth{len(nb.interfaces)}"
        if ia in na.interfaces or ib in nb.interfaces:
            raise ValueError(f"duplicate interface {na.role}:{ia} / {nb.role}:{ib}")
        ifa = Interface(ia, peer_node=nb.role, peer_iface=ib, link=k)
        ifb = Interface(ib, peer_node=na.role, peer_iface=ia, link=k)
        if k is not None:
            ifa.addr4, ifb.addr4 = link_address(k, 1, 4), link_address(k, 2, 4)
            ifa.addr6, ifb.addr6 = link_address(k, 1, 6), link_address(k, 2, 6)
        na.interfaces[ia] = ifa
        nb.interfaces[ib] = ifb
        self._links.append((na.role, ia, nb.role, ib, k))
        for node, iface in ((na, ifa), (nb, ifb)):
            lines = []
            if iface.addr4:
                lines.append(f"addr add {iface.addr4}/{iface.prefixlen4} dev {iface.name}")
            if iface.addr6:
                nodad = "" if node.kernel_nd else " nodad"
                lines.append(f"addr add {iface.addr6}/{iface.prefixlen6} dev {iface.name}{nodad}")
            lines.append(f"link set {iface.name} up")
            self._apply(node, lines)
        return ifa, ifb

    def add_route(
        self,
        node: NodeRef,
        prefix: str,
        *,
        via: str | None = None,
        dev: str | None = None,
        kind: str = "unicast",
        extra: str = "",
    ) -> None:
        """Add a route (before the build: queued; after: at once).

        ``kind`` is an ``ip route`` type: ``unicast``, ``blackhole``,
        ``unreachable``, ``prohibit``.  ``prefix`` may be ``default`` (give
        ``via`` so the family is known, or use ``default6`` for IPv6).

        Raises:
            LabError: ``ip`` refused the route (after the build).
            ValueError: bad prefix.
        """
        n = self.node(node)
        if prefix == "default6":
            prefix = "::/0"
        elif prefix == "default":
            prefix = "::/0" if via and ":" in via else "0.0.0.0/0"
        family = ipaddress.ip_network(prefix, strict=False).version
        words = ["route", "add"]
        words += [prefix] if kind == "unicast" else [kind, prefix]
        if via:
            words += ["via", via]
        if dev:
            words += ["dev", dev]
        if extra:
            words.append(extra)
        self._apply(n, [" ".join(words)], family)

    def add_rule(self, node: NodeRef, rule: str, family: int = 4) -> None:
        """Add an ``ip rule`` (text after ``ip -4/-6 rule add``).

        Raises:
            LabError: ``ip`` refused it (after the build).
        """
        self._apply(self.node(node), [f"rule add {rule}"], family)

    def _apply(self, node: Node, lines: list[str], family: int | None = None) -> None:
        """Run ``ip`` lines in ``node`` now (after the build) or queue them.

        Lines for ``family`` 6 run under ``ip -6`` (needed for rules; routes
        and addresses infer their family from the prefix).
        """
        if self.built:
            self._check_open()
            netns.ip_batch(lines, node.ns, family=6 if family == 6 else None)
        else:
            self._pending[node.role].extend((family, line) for line in lines)

    # ------------------------------------------------------------------ build / close

    def build(self) -> Self:
        """Create every namespace, link, address, route and sysctl.

        On failure everything created so far is removed before the error
        propagates.

        Raises:
            LabError: a step failed (the message names it).
        """
        if self.built:
            return self
        t0 = time.monotonic()
        if self._clean_stale:
            netns.cleanup_stale()
        _LIVE_LABS.add(self)
        names = [n.ns for n in self.nodes.values()]
        try:
            self._created = names
            netns.ip_batch([f"netns add {n}" for n in names])
            self._build_links()
            self._setup_namespaces()
            batches: list[tuple[str, int | None, list[str]]] = []
            for n in self.nodes.values():
                pending = self._pending[n.role]
                batches.append((n.ns, None, [ln for f, ln in pending if f != 6]))
                batches.append((n.ns, 6, [ln for f, ln in pending if f == 6]))
            netns.ip_batches_parallel(batches)
            self.wait_links_up()
        except BaseException:
            self.close()
            raise
        self._pending = {}
        self.built = True
        self.build_seconds = time.monotonic() - t0
        return self

    def _build_links(self) -> None:
        if not self._links:
            return
        lines = []
        for i, (ra, ia, rb, ib, _k) in enumerate(self._links):
            na, nb = self.nodes[ra], self.nodes[rb]
            # Distinct interface indexes on the two ends make the kernel treat
            # carrier changes as urgent (iflink != ifindex), so links are up
            # at once instead of after the 1 s link-watch batching.
            xa, xb = 10 + 2 * i, 11 + 2 * i
            lines.append(
                f"link add name {ia} index {xa} netns {na.ns} type veth "
                f"peer name {ib} index {xb} netns {nb.ns}"
            )
        # Run inside a lab namespace: the devices are created directly in their
        # target namespaces and never exist in the root namespace.
        first = next(iter(self.nodes.values())).ns
        netns.ip_batch(lines, first)

    def _setup_namespaces(self) -> None:
        settings: dict[str, dict[str, object]] = {}
        for node in self.nodes.values():
            s: dict[str, object] = dict(netns.BASE_SYSCTLS)
            if node.router:
                s.update(netns.ROUTER_SYSCTLS)
            if node.kernel_nd:
                for key in netns.ND_SYSCTLS:
                    del s[key]
            else:
                for iface in node.interfaces:
                    s[f"net.ipv6.conf.{iface}.accept_dad"] = 0
                    s[f"net.ipv6.conf.{iface}.accept_ra"] = 0
                    s[f"net.ipv6.conf.{iface}.router_solicitations"] = 0
            s.update(node.sysctls)
            settings[node.ns] = s
        offload = (
            {}
            if self._checksum_offload
            else {n.ns: list(n.interfaces) for n in self.nodes.values()}
        )
        netns.write_sysctls(settings, tx_checksum_off=offload)

    def wait_links_up(self, timeout: float = 10.0) -> None:
        """Wait until every lab interface is operationally UP (carrier on, queue active).

        Packets sent before that are dropped by the kernel, so :meth:`build`
        calls this.

        Raises:
            LabError: some interface is still down after ``timeout`` seconds.
        """
        pending = {n.ns: set(n.interfaces) for n in self.nodes.values() if n.interfaces}
        deadline = time.monotonic() + timeout
        while pending:
            procs = {
                ns: subprocess.Popen(
                    ["ip", "-n", ns, "-o", "link", "show", "up"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for ns in pending
            }
            for ns, p in procs.items():
                out, _ = p.communicate()
                for line in out.splitlines():
                    fields = line.split()
                    if len(fields) > 1 and "state" in fields:
                        name = fields[1].rstrip(":").split("@")[0]
                        if fields[fields.index("state") + 1] == "UP":
                            pending[ns].discard(name)
                if not pending[ns]:
                    del pending[ns]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LabError(f"interfaces still down after {timeout}s: {pending}")
            time.sleep(0.02)

    def close(self) -> None:
        """Stop lab processes and delete every namespace of this lab (idempotent).

        Raises:
            LabError: a namespace could not be deleted.
        """
        with self._lock:
            if self.closed:
                return
            self.closed = True
        try:
            for closer in reversed(self._closers):
                with contextlib.suppress(Exception):
                    closer()
            for p in self._procs:
                _stop_process(p)
            existing = set(netns.list_namespaces())
            mine = [n for n in self._created if n in existing]
            netns.kill_namespace_processes(mine)
            netns.delete_namespaces(mine)
        finally:
            _LIVE_LABS.discard(self)

    def __enter__(self) -> Self:
        return self.build()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise LabError("lab is closed")
        if not self.built:
            raise LabError("lab is not built yet")

    def register_closer(self, fn: Any) -> None:
        """Call ``fn()`` first thing in :meth:`close` (for helpers like captures)."""
        self._closers.append(fn)

    def namespaces(self) -> list[str]:
        """Return the names of this lab's namespaces."""
        return [n.ns for n in self.nodes.values()]

    # ------------------------------------------------------------------ running things

    def exec_argv(
        self, node: NodeRef, argv: Sequence[str], *, user: int | None = None
    ) -> list[str]:
        """Return argv running ``argv`` in ``node``'s namespace (as ``user`` if given)."""
        return netns.exec_argv(self.node(node).ns, argv, user=user)

    def run(
        self,
        node: NodeRef,
        argv: Sequence[str],
        *,
        user: int | None = None,
        check: bool = True,
        timeout: float = 60,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess[Any]:
        """Run a command inside ``node`` and return its completed process.

        stdout/stderr are captured.

        Raises:
            LabError: ``check`` and it exited non-zero.
            subprocess.TimeoutExpired: it ran longer than ``timeout``.
        """
        self._check_open()
        full = self.exec_argv(node, argv, user=user)
        res = subprocess.run(
            full,
            capture_output=True,
            timeout=timeout,
            input=input,
            env=dict(env) if env is not None else None,
            text=text,
            check=False,
        )
        if check and res.returncode != 0:
            raise LabError(
                f"{' '.join(full)} exited {res.returncode}\nstdout: {res.stdout!r}\n"
                f"stderr: {res.stderr!r}"
            )
        return res

    def popen(
        self,
        node: NodeRef,
        argv: Sequence[str],
        *,
        user: int | None = None,
        die_with_parent: bool = True,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start a command inside ``node``; it is killed by :meth:`close` if still running.

        ``kwargs`` go to :class:`subprocess.Popen`.

        Raises:
            LabError: the lab is not built or closed.
            OSError: the command could not be started.
        """
        self._check_open()
        if die_with_parent and "preexec_fn" not in kwargs:
            kwargs["preexec_fn"] = netns.die_with_parent
        p = subprocess.Popen(self.exec_argv(node, argv, user=user), **kwargs)
        self._procs.append(p)
        return p

    def python_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return an environment whose PYTHONPATH finds the ``lab`` package."""
        env = dict(os.environ)
        paths = [str(TESTS_DIR)] + [p for p in env.get("PYTHONPATH", "").split(":") if p]
        env["PYTHONPATH"] = ":".join(paths)
        if extra:
            env.update(extra)
        return env

    def python(
        self,
        node: NodeRef,
        code: str,
        *args: str,
        user: int | None = None,
        python: str | None = None,
        timeout: float = 60,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -c code args...`` inside ``node`` (``lab`` importable).

        ``python`` defaults to this interpreter; pass ``/usr/bin/python3`` with
        ``user`` for unprivileged runs.

        Raises:
            LabError: ``check`` and it exited non-zero.
            subprocess.TimeoutExpired: timeout.
        """
        exe = python or sys.executable
        return self.run(
            node,
            [exe, "-c", code, *args],
            user=user,
            timeout=timeout,
            check=check,
            input=input,
            env=self.python_env(),
        )

    def ip(self, node: NodeRef, *args: str) -> str:
        """Run ``ip -n NS args...`` and return its stdout.

        Raises:
            LabError: it failed.
        """
        self._check_open()
        res = subprocess.run(
            ["ip", "-n", self.node(node).ns, *args], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise LabError(f"ip -n {self.node(node).ns} {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    # ------------------------------------------------------------------ sysctls, policies

    def sysctl(self, node: NodeRef, settings: Mapping[str, object]) -> None:
        """Write sysctls inside ``node``'s namespace only.

        Raises:
            LabError: a value was refused.
        """
        self._check_open()
        netns.write_sysctls({self.node(node).ns: dict(settings)})

    def get_sysctl(self, node: NodeRef, key: str) -> str:
        """Read a sysctl inside ``node``'s namespace.

        Raises:
            LabError: it cannot be read.
        """
        return netns.read_sysctl(self.node(node).ns, key)

    def open_ping_group(self, node: NodeRef, low: int = 0, high: int = 2147483647) -> None:
        """Allow unprivileged ICMP datagram sockets for gids low..high in ``node``."""
        self.sysctl(node, {"net.ipv4.ping_group_range": f"{low} {high}"})

    def silence(self, node: NodeRef, silent: bool = True) -> None:
        """Make ``node`` originate no ICMP/ICMPv6 at all (or undo it).

        A policy rule ``iif lo ipproto icmp blackhole`` (and the ICMPv6 twin)
        makes the route lookup of every locally generated ICMP message fail, so
        the node still forwards but never answers time-exceeded, unreachable or
        echo.  Neighbour discovery is unaffected (it does no route lookup).

        Raises:
            LabError: ``ip`` refused the rule.
        """
        verb = "add" if silent else "del"
        n = self.node(node)
        self._apply(n, [f"rule {verb} pref 50 iif lo ipproto icmp blackhole"], 4)
        self._apply(n, [f"rule {verb} pref 50 iif lo ipproto ipv6-icmp blackhole"], 6)

    def add_special(self, node: NodeRef, kind: str) -> Destination:
        """Install a ``blackhole``/``unreachable``/``prohibit`` route on ``node``.

        A fresh special destination number is used (see the module doc); the
        route covers both families.  The destination must be routed towards
        ``node`` by the other nodes (in a chain, default routes point away
        from the client, so any router works).

        Raises:
            ValueError: unknown kind.
            LabError: ``ip`` refused a route.
        """
        if kind not in ("blackhole", "unreachable", "prohibit"):
            raise ValueError(f"unknown route kind {kind}")
        with self._lock:
            self._special += 1
            n = self._special
        p4, p6 = special_prefixes(n)
        self.add_route(node, p4, kind=kind)
        self.add_route(node, p6, kind=kind)
        addr4 = str(ipaddress.ip_network(p4)[1])
        addr6 = str(ipaddress.ip_network(p6)[1])
        return Destination(kind, self.node(node).role, p4, p6, addr4, addr6)

    # ------------------------------------------------------------------ observation

    def mac(self, node: NodeRef, iface: str) -> str:
        """Return the MAC address of ``iface`` in ``node``.

        Raises:
            LabError: no such interface.
        """
        out = self.ip(node, "-o", "link", "show", "dev", iface)
        words = out.split()
        return words[words.index("link/ether") + 1]

    def ifindexes(self, node: NodeRef) -> dict[int, str]:
        """Return ``{ifindex: name}`` for ``node``."""
        out = self.ip(node, "-o", "link", "show")
        result = {}
        for line in out.splitlines():
            idx, name = line.split(":")[:2]
            result[int(idx)] = name.strip().split("@")[0]
        return result

    def capture(self, node: NodeRef, iface: str | None = "eth0", **kwargs: Any) -> Any:
        """Return a :class:`capture.Capture` for ``iface`` in ``node`` (not started).

        Use it as a context manager; ``iface=None`` captures on all interfaces.
        """
        from .capture import Capture

        self._check_open()
        return Capture(self, self.node(node), iface, **kwargs)

    def raw_probe(
        self,
        node: NodeRef,
        probes: Sequence[Mapping[str, Any]],
        *,
        timeout: float = 2.0,
        gap: float = 0.0,
        listen: Iterable[str] = (),
        expect: int = 0,
    ) -> RawProbeResult:
        """Send hand-built probes from ``node`` with raw sockets; collect all answers.

        See :mod:`lab.rawprobe` for the probe fields.  Every packet received
        on the listening raw sockets during ``timeout`` seconds after the last
        probe is returned, parsed (IPv6 headers are reconstructed).

        Raises:
            LabError: the prober failed (bad probe description, socket error).
        """
        import json

        from . import packets

        plist = [dict(p) for p in probes]
        spec = {
            "probes": plist,
            "timeout": timeout,
            "gap": gap,
            "listen": list(listen),
            "expect": expect,
        }
        res = self.run(
            node,
            [sys.executable, "-m", "lab.rawprobe"],
            input=json.dumps(spec),
            env=self.python_env(),
            timeout=timeout + 30 + gap * len(plist),
        )
        out = json.loads(res.stdout)
        received = []
        for r in out["received"]:
            pkt = packets.parse_ip(bytes.fromhex(r["hex"]))
            if pkt is None:
                continue
            pkt.timestamp = r["t"]
            pkt.direction = "in"
            received.append(pkt)
        return RawProbeResult(out["sent"], received)


def _stop_process(p: subprocess.Popen[Any], timeout: float = 3.0) -> None:
    """Terminate one process we started (by its pid), then kill it if needed."""
    if p.poll() is not None:
        return
    try:
        p.terminate()
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout)
    except ProcessLookupError:
        pass


class Chain(Lab):
    """``client -> r1 -> ... -> rN -> server``, plus an optional responder after rN.

    See the module docstring for the address plan.  Routers route the client
    side links via their ``eth0`` neighbour and use a default route towards the
    server; the last router has no default route (unknown destinations get
    "network unreachable" there) and routes the virtual prefixes to the
    responder.
    """

    def __init__(
        self,
        routers: int = 3,
        *,
        responder: bool = True,
        tag: str = "chain",
        kernel_nd: bool = False,
        **kwargs: Any,
    ) -> None:
        """Describe the chain (call :meth:`build` or use ``with``).

        ``kernel_nd`` leaves IPv6 neighbour discovery as the kernel does it on the
        path -- routers, server, responder (see :meth:`Lab.add_node`) -- so that a
        trace right after the build crosses routers whose addresses are still
        tentative; the client's addresses are usable at once, as on a host that was
        up before the path was built.

        Raises:
            ValueError: ``routers`` outside 1..197.
        """
        if not 1 <= routers <= MAX_LINK - 1:
            raise ValueError(f"routers must be 1..{MAX_LINK - 1}")
        super().__init__(tag, **kwargs)
        self.n_routers = routers
        self.client = self.add_node("client")
        self.routers = [
            self.add_node(f"r{k}", router=True, kernel_nd=kernel_nd) for k in range(1, routers + 1)
        ]
        self.server = self.add_node("server", kernel_nd=kernel_nd)
        self.responder_node: Node | None = (
            self.add_node("responder", kernel_nd=kernel_nd) if responder else None
        )
        self._responder: Any = None
        chain = [self.client, *self.routers, self.server]
        for k in range(1, routers + 2):
            self.add_link(chain[k - 1], chain[k], k)
        last = self.routers[-1]
        if self.responder_node is not None:
            self.add_link(last, self.responder_node, RESPONDER_LINK)
        # Routes.
        for fam in (4, 6):
            dflt = "default" if fam == 4 else "default6"
            self.add_route(self.client, dflt, via=link_address(1, 2, fam), dev="eth0")
            self.add_route(self.server, dflt, via=link_address(routers + 1, 1, fam), dev="eth0")
            if self.responder_node is not None:
                self.add_route(
                    self.responder_node, dflt, via=link_address(RESPONDER_LINK, 1, fam), dev="eth0"
                )
            for k, r in enumerate(self.routers, start=1):
                for j in range(1, k):
                    self.add_route(r, link_prefix(j, fam), via=link_address(k, 1, fam), dev="eth0")
                if k < routers:
                    self.add_route(r, dflt, via=link_address(k + 1, 2, fam), dev="eth1")
            if self.responder_node is not None:
                via = link_address(RESPONDER_LINK, 2, fam)
                self.add_route(
                    last, VIRTUAL_ROUTE4 if fam == 4 else VIRTUAL_ROUTE6, via=via, dev="eth2"
                )

    # ------------------------------------------------------------------ truth

    def hop(self, k: int) -> Node:
        """Return hop ``k``: router k for 1..N, the server for N+1.

        Raises:
            IndexError: k outside 1..N+1.
        """
        if 1 <= k <= self.n_routers:
            return self.routers[k - 1]
        if k == self.n_routers + 1:
            return self.server
        raise IndexError(f"hop {k} outside 1..{self.n_routers + 1}")

    def hop_address(self, k: int, family: int = 4) -> str:
        """Return the address hop ``k`` answers from (``198.18.k.2`` / ``2001:db8:k::2``).

        Raises:
            IndexError: k outside 1..N+1.
        """
        self.hop(k)
        return link_address(k, 2, family)

    def path(self, family: int = 4) -> list[str]:
        """Return the hop addresses from hop 1 to the server (hop N+1)."""
        return [self.hop_address(k, family) for k in range(1, self.n_routers + 2)]

    def client_address(self, family: int = 4) -> str:
        """Return the client's address (``198.18.1.1`` / ``2001:db8:1::1``)."""
        return link_address(1, 1, family)

    def server_address(self, family: int = 4) -> str:
        """Return the server's address (hop N+1)."""
        return self.hop_address(self.n_routers + 1, family)

    def responder_address(self, family: int = 4) -> str:
        """Return the responder namespace's own address (``198.18.199.2``)."""
        return link_address(RESPONDER_LINK, 2, family)

    def add_blackhole(self, router: int, kind: str = "blackhole") -> Destination:
        """Install a special destination of ``kind`` on router ``router`` (1..N).

        Probes to it vanish silently (``blackhole``), or router ``router``
        answers destination unreachable (``unreachable``: host unreachable for
        IPv4 (code 1), no route (code 0) for IPv6) or administratively
        prohibited (``prohibit``: IPv4 code 13, IPv6 code 1).

        Limit: IPv4 errors for unreachable/prohibit routes (and "no route")
        pass the kernel's route-error limiter, which only the root namespace
        can tune: a burst of 5, then 1 per second per probe source.  For more
        IPv4 unreachables use the responder's ``answer: "unreachable"``.
        IPv6 and time-exceeded are not limited.

        Raises:
            IndexError: bad router number.
            ValueError, LabError: as :meth:`Lab.add_special`.
        """
        if not 1 <= router <= self.n_routers:
            raise IndexError(f"router {router} outside 1..{self.n_routers}")
        return self.add_special(self.routers[router - 1], kind)

    def add_unreachable(self, router: int, kind: str = "unreachable") -> Destination:
        """Install an ``unreachable`` (or ``prohibit``) destination on router ``router``."""
        return self.add_blackhole(router, kind)

    def silence_router(self, router: int, silent: bool = True) -> None:
        """Make router ``router`` (1..N) a hop that never sends time-exceeded.

        Raises:
            IndexError: bad router number.
            LabError: ``ip`` refused the rule.
        """
        if not 1 <= router <= self.n_routers:
            raise IndexError(f"router {router} outside 1..{self.n_routers}")
        self.silence(self.routers[router - 1], silent)

    def trace(
        self,
        family: int = 4,
        dst: str | None = None,
        *,
        max_ttl: int | None = None,
        timeout: float = 1.0,
        node: NodeRef | None = None,
    ) -> list[str | None]:
        """Reference traceroute with raw ICMP echo probes (not using our helper).

        Sends one echo per TTL 1..max_ttl at once from ``node`` (default the
        client) and returns, per TTL, the address that answered (time-exceeded
        source, or the destination for an echo reply), or ``None``.  Answers
        are matched on the echo id/sequence quoted in the error.

        Raises:
            LabError: the raw prober failed.
        """

        dst = dst or self.server_address(family)
        max_ttl = max_ttl or self.n_routers + 1
        ident = (os.getpid() * 7 + max_ttl) & 0xFFFF
        probes = [
            {"dst": dst, "proto": "icmp", "ttl": t, "id": ident, "seq": t}
            for t in range(1, max_ttl + 1)
        ]
        res = self.raw_probe(node or self.client, probes, timeout=timeout, expect=max_ttl)
        hops: list[str | None] = [None] * max_ttl
        for pkt in res.received:
            ref = pkt
            if pkt.is_icmp_error and pkt.inner is not None:
                ref = pkt.inner
                if not (ref.is_echo_request and ref.icmp_id == ident):
                    continue
            elif not (pkt.is_echo_reply and pkt.icmp_id == ident):
                continue
            seq = ref.icmp_seq
            if seq is not None and 1 <= seq <= max_ttl and hops[seq - 1] is None:
                hops[seq - 1] = pkt.src
        return hops

    # ------------------------------------------------------------------ responder

    def start_responder(self, script: Mapping[str, Any] | None = None) -> Any:
        """Start the scripted responder in the responder namespace (once).

        Returns the :class:`responder.Responder` controller; it is stopped by
        :meth:`close`.

        Raises:
            LabError: the chain has no responder node.
            responder.ResponderError: it did not start.
        """
        from .responder import Responder

        if self.responder_node is None:
            raise LabError("chain built without a responder")
        if self._responder is None:
            r = Responder(
                self, self.responder_node, "eth0", [VIRTUAL_ROUTE4, VIRTUAL_ROUTE6], script=script
            )
            r.start()
            self.register_closer(r.stop)
            self._responder = r
        elif script is not None:
            self._responder.load(script)
        return self._responder

    @property
    def responder(self) -> Any:
        """The running :class:`responder.Responder`, or ``None``."""
        return self._responder

    def virtual_target(self, i: int, family: int = 4) -> str:
        """Same as :func:`virtual_target`."""
        return virtual_target(i, family)

    def virtual_hop(self, i: int, family: int = 4) -> str:
        """Same as :func:`virtual_hop`."""
        return virtual_hop(i, family)
