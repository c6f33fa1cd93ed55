"""A simulated network for the multipath tests: no packet is sent, answers are computed.

Routers have names, an IPv4 and an IPv6 address, and next hops.  A router with
several next hops balances per flow (the next hop is a hash of the router's name, the
flow number and the network's seed, as a hardware router hashes a flow's header
fields), or per packet (a random next hop for every probe).  A router with no next
hop is the destination: it answers a probe that reaches it with a reply from the
probe's target address.  Routers may lose a share of their answers (``loss``), never
answer (``silent``), quote MPLS labels and have a round-trip time.

A probe without a flow number is a classic probe: a new random flow every time.

:meth:`Network.answer` is what the scripted fake helper (fake_helper.py, scenario
``network``) and the pure engine tests use; :meth:`Network.truth` enumerates every
path for the nodes and links a complete multipath trace must find.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass
class Router:
    """One router (see the module documentation)."""

    address: str
    address6: str
    next: list[str] = field(default_factory=list)
    balance: str = "flow"  # or "packet"
    loss: float = 0.0
    silent: bool = False
    mpls: list[list[int]] = field(default_factory=list)
    rtt: float = 0.1  # ms


class Answer(NamedTuple):
    """What answers a probe: ``kind`` ttl-expired or reply, from ``address``."""

    kind: str
    address: str
    rtt: float
    mpls: list[list[int]]


class Network:
    """Routers by name; probes enter at ``first``."""

    def __init__(self, routers: Mapping[str, Router], first: str, seed: int = 1) -> None:
        self.routers = dict(routers)
        self.first = first
        self.seed = seed
        self.random = random.Random(seed)
        for name, router in self.routers.items():
            for hop in router.next:
                assert hop in self.routers, f"{name} -> unknown {hop}"
            assert router.balance in ("flow", "packet"), router.balance

    # ------------------------------------------------------------------ files

    def to_json(self) -> str:
        return json.dumps(
            {
                "first": self.first,
                "seed": self.seed,
                "routers": {name: vars(router) for name, router in self.routers.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Network:
        data: dict[str, Any] = json.loads(text)
        routers = {name: Router(**spec) for name, spec in data["routers"].items()}
        return cls(routers, data["first"], data["seed"])

    # ------------------------------------------------------------------ answers

    def choose(self, name: str, flow: int | None) -> str:
        """The next hop ``name`` sends ``flow`` to."""
        router = self.routers[name]
        if len(router.next) == 1:
            return router.next[0]
        if router.balance == "packet" or flow is None:
            return self.random.choice(router.next)
        digest = hashlib.blake2b(f"{self.seed}/{name}/{flow}".encode(), digest_size=8)
        return router.next[int.from_bytes(digest.digest(), "big") % len(router.next)]

    def walk(self, flow: int | None, ttl: int) -> list[str]:
        """The routers a probe crosses, at most ``ttl`` of them."""
        names = [self.first]
        while len(names) < ttl and self.routers[names[-1]].next:
            names.append(self.choose(names[-1], flow))
        return names

    def answer(self, flow: int | None, ttl: int, target: str, family: int = 4) -> Answer | None:
        """The answer to a probe in ``flow`` (None: a classic probe) with ``ttl`` to
        ``target``, or None when nobody answers."""
        if flow is None:
            flow = self.random.randrange(1 << 30)
        names = self.walk(flow, ttl)
        router = self.routers[names[-1]]
        if router.silent or (router.loss and self.random.random() < router.loss):
            return None
        if not router.next:
            return Answer("reply", target, router.rtt, [])
        address = router.address if family == 4 else router.address6
        return Answer("ttl-expired", address, router.rtt, router.mpls)

    # ------------------------------------------------------------------ truth

    def paths(self) -> Iterator[list[str]]:
        """Every path from ``first`` to a router without next hops."""
        stack = [[self.first]]
        while stack:
            path = stack.pop()
            hops = self.routers[path[-1]].next
            if not hops:
                yield path
            for hop in reversed(hops):
                stack.append([*path, hop])

    def truth(
        self, target: str, family: int = 4
    ) -> tuple[dict[int, set[str]], set[tuple[int, str, str]]]:
        """Every node (by TTL) and link (TTL of its source, source, target) that the
        paths cross, silent routers left out (and the links touching them)."""
        nodes: dict[int, set[str]] = {}
        links: set[tuple[int, str, str]] = set()
        for path in self.paths():
            shown = [self._shown(name, target, family) for name in path]
            for ttl, address in enumerate(shown, start=1):
                if address is not None:
                    nodes.setdefault(ttl, set()).add(address)
            for ttl, (a, b) in enumerate(itertools.pairwise(shown), start=1):
                if a is not None and b is not None:
                    links.add((ttl, a, b))
        return nodes, links

    def _shown(self, name: str, target: str, family: int) -> str | None:
        router = self.routers[name]
        if router.silent:
            return None
        if not router.next:
            return target
        return router.address if family == 4 else router.address6


# ----------------------------------------------------------------------------- builders


def address(number: int, family: int = 4) -> str:
    """Router ``number``'s address (127.1.x.y, or 2001:db8:1::n): never sent to."""
    if family == 4:
        return f"127.1.{number // 250}.{number % 250 + 1}"
    return f"2001:db8:1::{number:x}"


def build(
    layers: Sequence[Sequence[str]],
    links: Sequence[tuple[str, str]] | None = None,
    *,
    seed: int = 1,
    **options: Mapping[str, Any],
) -> Network:
    """A network from ``layers`` of router names (the first layer one router, the last
    the destination ``D``); without ``links`` every router links to every router of the
    next layer.  ``options`` maps a router name to Router fields (balance, loss...)."""
    names = [name for layer in layers for name in layer]
    routers = {
        name: Router(address(number + 1), address(number + 1, 6), **options.get(name, {}))
        for number, name in enumerate(names)
    }
    if links is None:
        links = [(a, b) for here, there in itertools.pairwise(layers) for a in here for b in there]
    for a, b in links:
        routers[a].next.append(b)
    return Network(routers, layers[0][0], seed)
