"""scamper tracelb (Debian's scamper) run in a lab node, its result read back.

:func:`tracelb` runs ``scamper -O warts -o FILE -c "tracelb -P METHOD -c C" -i DST``
inside a node (scamper's defaults otherwise: one probe per 250 ms, 2 attempts, a gap
limit of 3) and reads the warts file with ``sc_warts2json``.  :func:`found` gives the
nodes and links of its result, read from its probes as our multipath trace reads its
own: a flow answered at TTL t and t+1 links the two answers, a flow not answered at t
passed the only node there, and, as its text says (``(A, B) -> C``), every node of a
TTL before a TTL of one node links to that node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .topology import Lab

Edge = tuple[str, str]


class TracelbResult(NamedTuple):
    """What a tracelb found: ``nodes``, ``edges`` (from, to), ``probes`` it sent and
    the ``seconds`` it took; ``document`` is its JSON object."""

    nodes: set[str]
    edges: set[Edge]
    probes: int
    seconds: float
    document: dict[str, Any]


def available() -> bool:
    """True if scamper and sc_warts2json are installed."""
    return shutil.which("scamper") is not None and shutil.which("sc_warts2json") is not None


def tracelb(
    lab: Lab,
    node: str,
    target: str,
    *,
    confidence: int = 95,
    method: str = "udp-dport",
    timeout: float = 120.0,
) -> TracelbResult:
    """Run one tracelb from ``node`` to ``target``.

    Raises:
        subprocess.TimeoutExpired: it did not end within ``timeout`` seconds.
        lab.LabError: scamper failed.
        LookupError: its output holds no tracelb result.
    """
    with tempfile.TemporaryDirectory(prefix="bpk-scamper-") as directory:
        warts = os.path.join(directory, "out.warts")
        command = f"tracelb -P {method} -c {confidence}"
        start = time.monotonic()
        lab.run(
            node,
            ["scamper", "-O", "warts", "-o", warts, "-c", command, "-i", target],
            timeout=timeout,
        )
        seconds = time.monotonic() - start
        converted = subprocess.run(
            ["sc_warts2json", warts], capture_output=True, text=True, check=True
        )
    for line in converted.stdout.splitlines():
        document = json.loads(line)
        if document.get("type") == "tracelb":
            nodes, edges = found(document)
            return TracelbResult(nodes, edges, int(document["probec"]), seconds, document)
    raise LookupError("scamper wrote no tracelb result")


def found(document: dict[str, Any]) -> tuple[set[str], set[Edge]]:
    """The nodes and links of a tracelb JSON object (see the module documentation)."""
    answers: dict[tuple[int, int], str] = {}  # (flow, TTL) -> who answered
    nodes = [node["addr"] for node in document.get("nodes", [])]
    for node in document.get("nodes", []):
        for hops in node.get("links", []):
            for hop in hops:
                for probe in hop.get("probes", []):
                    if probe.get("replies"):
                        answers[probe["flowid"], probe["ttl"]] = hop["addr"]
    by_ttl: dict[int, set[str]] = {}
    for (_flow, ttl), address in answers.items():
        by_ttl.setdefault(ttl, set()).add(address)
    if nodes:  # the first node's own probes are not in the file
        by_ttl.setdefault(int(document.get("firsthop", 1)), set()).add(nodes[0])
    edges: set[Edge] = set()
    for (flow, ttl), address in answers.items():
        before = answers.get((flow, ttl - 1))
        if before is None and len(by_ttl.get(ttl - 1, ())) == 1:
            (before,) = by_ttl[ttl - 1]  # every flow passed the only node there
        if before is not None and before != address:
            edges.add((before, address))
    destination = document.get("dst")
    for ttl, addresses in by_ttl.items():
        following = by_ttl.get(ttl + 1, set())
        if len(following) == 1:  # its text's "(A, B) -> C": every node there leads on
            (only,) = following
            edges.update((a, only) for a in addresses if a not in (only, destination))
    return set(nodes) | set(answers.values()), edges
