"""ECMP labs: load-balanced paths from kernel multipath routes, with their truth.

A :class:`Topology` names routers and their next hops towards the server (``SERVER``);
:class:`EcmpLab` builds it: ``client -> first router -> ... -> server``, every edge a
veth link (numbered from 2; link 1 joins the client and the first router, the server's
link comes last).  A router with several next hops has one multipath route
(``nexthop via A nexthop via B ...``) for everything towards the server, hashed on the
5-tuple (``fib_multipath_hash_policy=1``, IPv4 and IPv6), each router with its own
``fib_multipath_hash_seed`` so that routers in series choose independently, as
routers of different vendors do.  The way back to the client is one route, through
the router's first predecessor.  Linux hashes ICMP echo on addresses only, so every
ICMP probe of one client to one server takes one path.

Who answers (the truth differs per family):

* IPv4 routers answer time-exceeded from their interface towards the client (the
  kernel's default, ``icmp_errors_use_inbound_ifaddr=0``): one address per router,
  that of its link from its first predecessor;
* IPv6 routers answer from the interface the probe came in on: a router with two
  predecessors shows two addresses, one per incoming link.

:meth:`EcmpLab.truth` enumerates every path for the nodes per TTL and the links
between TTLs that a complete multipath trace must find; :meth:`EcmpLab.flow_paths`
asks every router's kernel (``ip route get ... ipproto P sport S dport D``) which way
given flows go.  Balancers the kernel does not have (hashing the first 4 transport
bytes as hardware does, or choosing per packet) are the scripted responder's ``paths``
and ``balance`` (:mod:`lab.responder`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .netns import LabError
from .topology import (
    Interface,
    Lab,
    Node,
    link_address,
    link_prefix,
)

SERVER = "server"
"""The name that ends a path in :attr:`Topology.next_hops`."""
CLIENT = "client"
HASH_POLICY = {"net.ipv4.fib_multipath_hash_policy": 1, "net.ipv6.fib_multipath_hash_policy": 1}
# IPv4 routers answer from the interface of their route back to the client.
ANSWER_TOWARDS_CLIENT = {"net.ipv4.icmp_errors_use_inbound_ifaddr": 0}


@dataclass(frozen=True)
class Topology:
    """Routers and their next hops towards the server; paths start at ``first``.

    ``next_hops[router]`` lists the routers (or ``SERVER``) it balances over, in the
    order of its multipath route.  Router names are namespace roles (``[a-z0-9_-]``).
    """

    name: str
    first: str
    next_hops: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        for router, hops in self.next_hops.items():
            if not hops:
                raise ValueError(f"{self.name}: {router} has no next hop")
            for hop in hops:
                if hop != SERVER and hop not in self.next_hops:
                    raise ValueError(f"{self.name}: {router} -> unknown {hop}")
        if self.first not in self.next_hops:
            raise ValueError(f"{self.name}: unknown first router {self.first}")

    @property
    def routers(self) -> list[str]:
        """Router names in the order given."""
        return list(self.next_hops)

    def predecessors(self, router: str) -> list[str]:
        """The nodes with a link to ``router`` (the client for the first router), in
        the order their links are made."""
        before = [CLIENT] if router == self.first else []
        return before + [r for r, hops in self.next_hops.items() if router in hops]

    def paths(self) -> list[list[str]]:
        """Every router path from the first router to the last before the server."""
        out: list[list[str]] = []

        def walk(path: list[str]) -> None:
            for hop in self.next_hops[path[-1]]:
                if hop == SERVER:
                    out.append(path)
                else:
                    walk([*path, hop])

        walk([self.first])
        return out

    @property
    def last(self) -> str:
        """The router whose next hop is the server (there must be exactly one)."""
        lasts = [r for r, hops in self.next_hops.items() if SERVER in hops]
        if len(lasts) != 1:
            raise ValueError(f"{self.name}: {len(lasts)} routers lead to the server, not 1")
        return lasts[0]


def _diamond(
    hops: dict[str, tuple[str, ...]], source: str, prefix: str, width: int, sink: str
) -> None:
    """``source`` balances over ``width`` routers ``prefix1..`` that all lead to ``sink``."""
    branches = tuple(f"{prefix}{i}" for i in range(1, width + 1))
    hops[source] = branches
    for branch in branches:
        hops[branch] = (sink,)


def series() -> Topology:
    """Two diamonds in series, 4 and 2 wide (the issue's scamper lab)::

        r1 -> (a1 a2 a3 a4) -> r2 -> (b1 b2) -> r3 -> server

    TTL 1 r1, 2 a*, 3 r2, 4 b*, 5 r3, 6 the server.
    """
    hops: dict[str, tuple[str, ...]] = {}
    _diamond(hops, "r1", "a", 4, "r2")
    _diamond(hops, "r2", "b", 2, "r3")
    hops["r3"] = (SERVER,)
    return Topology("series", "r1", hops)


def meshed() -> Topology:
    """A 2-wide diamond whose every branch fans out over both branches of a second::

        r1 -> (m1 m2); m1 -> (n1 n2); m2 -> (n1 n2); n1, n2 -> r2 -> server

    TTL 1 r1, 2 m*, 3 n*, 4 r2, 5 the server.  n1, n2 and r2 have two predecessors:
    over IPv6 each shows two addresses.
    """
    hops: dict[str, tuple[str, ...]] = {
        "r1": ("m1", "m2"),
        "m1": ("n1", "n2"),
        "m2": ("n1", "n2"),
        "n1": ("r2",),
        "n2": ("r2",),
        "r2": (SERVER,),
    }
    return Topology("meshed", "r1", hops)


def unequal() -> Topology:
    """A diamond with branches of 1 and 2 routers::

        r1 -> (u1 v1); u1 -> r2; v1 -> v2 -> r2; r2 -> server

    r2 is at TTL 3 (through u1) and 4 (through v1, v2); the server at 4 and 5.
    """
    hops: dict[str, tuple[str, ...]] = {
        "r1": ("u1", "v1"),
        "u1": ("r2",),
        "v1": ("v2",),
        "v2": ("r2",),
        "r2": (SERVER,),
    }
    return Topology("unequal", "r1", hops)


TOPOLOGIES = {"series": series, "meshed": meshed, "unequal": unequal}


class Truth(NamedTuple):
    """What a complete multipath trace of one family finds: ``nodes[ttl]`` the
    addresses answering at each TTL (the destination's included), ``links`` the
    (ttl, from, to) triples between consecutive TTLs, ``distances`` the TTLs at which
    the destination answers."""

    nodes: dict[int, set[str]]
    links: set[tuple[int, str, str]]
    distances: set[int]

    @property
    def addresses(self) -> set[str]:
        """Every address of every TTL."""
        return set().union(*self.nodes.values())

    def edges(self) -> set[tuple[str, str]]:
        """The links as (from, to) pairs, whatever their TTL."""
        return {(a, b) for _ttl, a, b in self.links}


class Flow(NamedTuple):
    """The fields a per-flow balancer hashes, as ``ip route get`` takes them."""

    proto: str  # udp, tcp, icmp (ipv6-icmp for IPv6 is handled by the lab)
    sport: int = 0
    dport: int = 0


class EcmpLab(Lab):
    """A :class:`Topology` built in namespaces (see the module documentation)."""

    def __init__(self, topology: Topology, *, tag: str = "ecmp", **kwargs: Any) -> None:
        """Describe the lab (``build()`` or ``with`` makes it).

        Raises:
            ValueError: more links than the address plan has, or a bad topology.
        """
        super().__init__(tag, **kwargs)
        self.topology = topology
        # (from, to) -> (from's interface, to's interface) for every link
        self._ends: dict[tuple[str, str], tuple[Interface, Interface]] = {}
        self.client = self.add_node(CLIENT)
        self.routers: dict[str, Node] = {}
        for name in topology.routers:
            settings = {**HASH_POLICY, **ANSWER_TOWARDS_CLIENT}
            settings["net.ipv4.fib_multipath_hash_seed"] = _seed(name)
            self.routers[name] = self.add_node(name, router=True, sysctls=settings)
        self.server = self.add_node(SERVER)
        self._link(CLIENT, topology.first)
        for router, hops in topology.next_hops.items():
            for hop in hops:
                self._link(router, hop)
        for family in (4, 6):
            self._routes(family)

    # ------------------------------------------------------------------ building

    def _link(self, a: str, b: str) -> None:
        k = len(self._ends) + 1
        if k > 198:
            raise ValueError("more links than the address plan has (198)")
        self._ends[a, b] = self.add_link(a, b, k)

    def _routes(self, family: int) -> None:
        default = "default" if family == 4 else "default6"
        client_link = self._ends[CLIENT, self.topology.first][1].link
        assert client_link is not None
        self.add_route(
            CLIENT, default, via=link_address(client_link, 2, family), dev=self.ifname(CLIENT, 1)
        )
        for router, hops in self.topology.next_hops.items():
            self._route_out(router, hops, family, default)
            first_in = self.topology.predecessors(router)[0]
            if first_in != CLIENT:
                link, dev = self._in_link(first_in, router)
                self.add_route(
                    router,
                    link_prefix(client_link, family),
                    via=link_address(link, 1, family),
                    dev=dev,
                )
        server_link, server_dev = self._in_link(self.topology.last, SERVER)
        self.add_route(SERVER, default, via=link_address(server_link, 1, family), dev=server_dev)

    def _route_out(self, router: str, hops: Sequence[str], family: int, default: str) -> None:
        """The router's route towards the server: one next hop, or a multipath route."""
        gateways = []
        for hop in hops:
            mine, theirs = self._ends[router, hop]
            gateways.append((theirs.address(family), mine.name))
        if len(gateways) == 1:
            self.add_route(router, default, via=gateways[0][0], dev=gateways[0][1])
            return
        extra = " ".join(f"nexthop via {via} dev {dev}" for via, dev in gateways)
        self.add_route(router, default, extra=extra)

    def _in_link(self, before: str, node: str) -> tuple[int, str]:
        """The link number from ``before`` to ``node``, and ``node``'s interface on it."""
        _mine, theirs = self._ends[before, node]
        assert theirs.link is not None
        return theirs.link, theirs.name

    def ifname(self, node: str, link: int) -> str:
        """``node``'s interface on link ``link``.

        Raises:
            LookupError: it has none there.
        """
        for iface in self.node(node).interfaces.values():
            if iface.link == link:
                return iface.name
        raise LookupError(f"{node} has no interface on link {link}")

    # ------------------------------------------------------------------ addresses

    def client_address(self, family: int = 4) -> str:
        """The client's address (link 1, ``.1``)."""
        return link_address(1, 1, family)

    def server_address(self, family: int = 4) -> str:
        """The server's address: the destination of the lab's traces."""
        return self._ends[self.topology.last, SERVER][1].address(family)

    def answer_address(self, router: str, before: str, family: int) -> str:
        """The address ``router`` answers time-exceeded from for a probe that came from
        ``before``: its link from its first predecessor for IPv4 (the interface towards
        the client), the link from ``before`` for IPv6 (the incoming interface)."""
        if router == SERVER:
            return self.server_address(family)
        if family == 4:
            before = self.topology.predecessors(router)[0]
        return self._ends[before, router][1].address(family)

    # ------------------------------------------------------------------ truth

    def hops_of(self, path: Sequence[str], family: int) -> list[str]:
        """The addresses answering at TTL 1, 2, ... along a router path, the server's
        last."""
        full = [CLIENT, *path, SERVER]
        return [self.answer_address(full[i], full[i - 1], family) for i in range(1, len(full))]

    def truth(self, family: int = 4) -> Truth:
        """Every node per TTL, every link between consecutive TTLs, over all paths."""
        nodes: dict[int, set[str]] = {}
        links: set[tuple[int, str, str]] = set()
        distances: set[int] = set()
        for path in self.topology.paths():
            hops = self.hops_of(path, family)
            for ttl, address in enumerate(hops, start=1):
                nodes.setdefault(ttl, set()).add(address)
            for ttl, (a, b) in enumerate(itertools.pairwise(hops), start=1):
                links.add((ttl, a, b))
            distances.add(len(hops))
        return Truth(nodes, links, distances)

    def flow_paths(self, family: int, flows: Iterable[Flow]) -> dict[Flow, list[str]]:
        """Which routers each flow from the client to the server crosses, as the
        routers' kernels say (``ip route get DST from SRC iif IF ipproto P sport S
        dport D`` in each router, one ``ip -batch`` per router and step).  For UDP and
        TCP that is the path the packets take; for ICMPv6 echo the kernel's route get
        hashes otherwise than its forwarding (the path is one, but maybe another).  The
        kernel refuses route gets for SCTP (Unsupported ip proto), though it forwards
        SCTP hashed on its ports: raw probes tell where SCTP flows go.

        Raises:
            LabError: ``ip`` failed or named an interface without a lab neighbour.
        """
        src, dst = self.client_address(family), self.server_address(family)
        start = (self.topology.first, CLIENT)
        where: dict[Flow, tuple[str, str]] = dict.fromkeys(flows, start)
        paths: dict[Flow, list[str]] = {flow: [] for flow in where}
        while where:
            by_router: dict[str, list[Flow]] = {}
            for flow, (router, _before) in where.items():
                paths[flow].append(router)
                by_router.setdefault(router, []).append(flow)
            moved: dict[Flow, tuple[str, str]] = {}
            for router, group in by_router.items():
                lines = []
                for flow in group:
                    _link, dev = self._in_link(where[flow][1], router)
                    lines.append(_route_get(family, src, dst, dev, flow))
                for flow, out in zip(group, self._batch_json(router, family, lines), strict=True):
                    following = self.node(router).interfaces[out].peer_node
                    if following is None:
                        raise LabError(f"{router}: route out of {out} leads nowhere")
                    if following != SERVER:
                        moved[flow] = (following, router)
            where = moved
        return paths

    def _batch_json(self, router: str, family: int, lines: Sequence[str]) -> list[str]:
        """Run ``ip -j -batch`` route gets in ``router``; return each answer's device."""
        argv = ["ip", f"-{family}", "-j", "-n", self.node(router).ns, "-batch", "-"]
        res = subprocess.run(
            argv, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise LabError(f"{' '.join(argv)}: {res.stderr.strip()}")
        devices: list[str] = []
        decoder = json.JSONDecoder()
        text, at = res.stdout, 0
        while len(devices) < len(lines):
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                raise LabError(f"{router}: {len(devices)} answers for {len(lines)} route gets")
            answer, at = decoder.raw_decode(text, at)
            devices.append(answer[0]["dev"])
        return devices

    def flow_hops(self, family: int, flows: Iterable[Flow]) -> dict[Flow, list[str]]:
        """The addresses answering each flow at TTL 1, 2, ... (see :meth:`flow_paths`)."""
        return {
            flow: self.hops_of(path, family)
            for flow, path in self.flow_paths(family, flows).items()
        }


def _seed(router: str) -> int:
    """A router's multipath hash seed: 32 bits from its name (never 0: 0 is random)."""
    digest = hashlib.blake2b(router.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") or 1


def _route_get(family: int, src: str, dst: str, dev: str, flow: Flow) -> str:
    """An ``ip route get`` line for a forwarded packet of ``flow`` coming in on ``dev``."""
    proto = flow.proto
    if proto == "icmp" and family == 6:
        proto = "ipv6-icmp"
    words = ["route", "get", dst, "from", src, "iif", dev, "ipproto", proto]
    if flow.proto in ("udp", "tcp"):
        words += ["sport", str(flow.sport), "dport", str(flow.dport)]
    return " ".join(words)


__all__ = [
    "CLIENT",
    "SERVER",
    "TOPOLOGIES",
    "EcmpLab",
    "Flow",
    "Topology",
    "Truth",
    "meshed",
    "series",
    "unequal",
]
