"""Scripted responder: impersonates hosts and routers behind the chain's last router.

The program (``python3 -m lab.responder``) runs inside the responder
namespace.  The last router routes the virtual prefixes (``198.18.200.0/23``,
``2001:db8:c8::/47``) to it; the namespace's own kernel never answers for them
(forwarding is off there, so it drops them silently), while the program reads
every frame with an AF_PACKET socket and answers with hand-built frames sent
through the same interface to the router's MAC address.

Script: JSON ``{"default": SPEC, "targets": {"198.18.200.7": SPEC, ...}}``.  A
SPEC is an object whose keys are all optional:

``answer``
    ``"normal"`` (default): ICMP echo -> echo reply; UDP -> port unreachable
    (ICMP 3/3, ICMPv6 1/4); TCP SYN -> SYN-ACK or RST (see ``tcp``); SCTP
    INIT -> INIT-ACK or ABORT (see ``sctp``), both with the verification tag
    set to the INIT's initiate tag and a CRC32c checksum.
    ``"none"``: no answer at all.
    ``"unreachable"``: destination unreachable with ``code`` (default host
    unreachable: 1 for IPv4, 3 "address unreachable" for IPv6) from the
    target (or ``from4``/``from6``).
``tcp``: ``"syn-ack"`` (default) or ``"rst"``.  ``udp``: ``"port-unreachable"``
    (default) or ``"none"``.  ``sctp``: ``"init-ack"`` (default) or ``"abort"``.
``delay``: seconds to wait before sending any answer (default 0).
``drop``: fraction 0..1 of probes to this target that get no answer at all,
    decided by a ``random.Random(seed)`` per target (``seed``, default 0), so a
    given sequence of probes always loses the same ones.
``cold``: seconds (default 0: off) during which each virtual hop of the target
    drops every probe it has to forward, counted from the first such probe (a
    router that drops packets while it resolves its next hop's address, as many
    do for ARP/ND): a probe passes hops 1 .. TTL-1, is dropped by the first of
    them still resolving (event action ``cold-hop``, ``hop`` that hop), and later
    hops only start resolving once a probe reaches them.  Probes a hop answers
    itself (time-exceeded) are not affected.  ``set`` of the target and ``reset``
    make its hops cold again.
``duplicate``: extra copies of every answer (default 0).
``hops``: virtual routers in front of the target.  An integer ``k`` means k hops
    with the default addresses ``198.18.201.i`` / ``2001:db8:c9::i``; or a list
    of objects ``{"addr4", "addr6", "mpls", "silent", "delay"}``.  A probe that
    arrives with TTL (hop limit) ``t <= k`` is answered by virtual hop ``t``
    with time-exceeded, quoting the probe as that hop received it (TTL 1).  So
    seen from the client, virtual hop i is hop ``N + i`` and the target hop
    ``N + k + 1`` (N real routers).
``paths``: instead of ``hops``, a list of paths, each a list of hop objects (as
    ``hops`` takes them; give each hop its own ``addr4``/``addr6``), and ``balance``
    says which path a probe takes, as a load balancer in front of them would:
    ``"flow"`` (default) hashes what hardware per-flow balancers hash -- the
    addresses, the protocol, the TOS / traffic class, the IPv6 flow label and the
    first 4 transport bytes (ports; ICMP type, code and checksum) -- with ``seed``;
    ``"packet"`` picks a path at random for every probe (``random.Random(seed)``).
    Paths may differ in length (the target is one hop after the path's last).  The
    ``rx`` event's ``path`` is the index of the path taken.
``mpls``: label stack entries ``[[label, tc, bos, ttl], ...]`` appended to every
    virtual hop's time-exceeded as an RFC 4884 extension structure (version 2)
    holding one RFC 4950 object (class 1, c-type 1); the quoted datagram is
    then padded/cut to 128 bytes and the length field set (32-bit words for
    ICMP, 64-bit words for ICMPv6).  A hop object's own ``mpls`` overrides it.
``malform``: applied to every answer for this target:
    ``"truncate"``: the transport message is cut to ``truncate`` bytes
    (default 6; the checksum is computed over what is sent);
    ``"bad-checksum"``: ICMP/TCP checksum or SCTP CRC32c off by one;
    ``"bad-quote"``: errors quote an inner IP header with version 0 and IHL 0;
    ``"short-quote"``: errors quote only the inner IP header + 4 bytes;
    ``"bad-extension"``: the extension structure has a wrong checksum and an
    object length running past the end.
``forge``: list of extra, bogus ICMP errors sent before the real answer (use
    ``"answer": "none"`` to send only them), from ``forge_from4``/``forge_from6``
    (default ``198.18.201.254`` / ``2001:db8:c9::fe``), of type ``forge_type``
    (``"time-exceeded"`` default, or ``"unreachable"``): ``"wrong-id"`` (quote
    with ICMP id + 1, or source port + 1), ``"wrong-seq"`` (ICMP sequence + 1,
    TCP sequence + 2**30, SCTP tag + 1, UDP destination port + 1), ``"wrong-port"``
    (destination port + 1; ICMP id + 1), ``"wrong-dst"`` (quoted destination
    changed), ``"wrong-src"`` (quoted source changed), ``"unrelated"`` (quotes
    a UDP packet nobody sent); and forged echo replies ``"reply-wrong-id"`` /
    ``"reply-wrong-seq"`` (ICMP probes only).
``reply_ttl``: TTL/hop limit of everything sent (default 64).

Protocol on stdin (JSON lines, each answered by ``{"event": "ok", "id": N}`` or
``{"event": "error", "id": N, "message": ...}``): ``{"id": N, "cmd": "set",
"target": ADDR, "spec": SPEC|null}``, ``{"cmd": "default", "spec": SPEC}``,
``{"cmd": "load", "script": SCRIPT}``, ``{"cmd": "reset"}`` (normal default,
no targets, random state reset), ``{"cmd": "ping"}``.  End of stdin: exit 0.

Events on stdout (JSON lines): ``ready``; ``rx`` for every IP packet to a
virtual address (``n``, kernel ``ts_ns``, ``hex``, ``action``, ``hop``);
``tx`` for every packet sent (``rx`` = the n it answers, kernel ``ts_ns``: the
transmit timestamp taken as the frame is queued to the device, ``kind``, ``hex``);
``exit``.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import heapq
import ipaddress
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from . import packets as P

if TYPE_CHECKING:
    from .topology import Lab, Node

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_TIMESTAMPING = getattr(socket, "SO_TIMESTAMPING", 37)  # also SCM_TIMESTAMPING
# <linux/net_tstamp.h>: a software stamp as each sent frame is queued to the device,
# reported on the error queue without the frame.
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_TX_SCHED = 1 << 8
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11

ANSWERS = ("normal", "none", "unreachable")
MALFORMS = ("truncate", "bad-checksum", "bad-quote", "short-quote", "bad-extension")
FORGES = (
    "wrong-id",
    "wrong-seq",
    "wrong-port",
    "wrong-dst",
    "wrong-src",
    "unrelated",
    "reply-wrong-id",
    "reply-wrong-seq",
)
SPEC_KEYS = frozenset(
    {
        "answer",
        "code",
        "from4",
        "from6",
        "tcp",
        "udp",
        "sctp",
        "delay",
        "drop",
        "cold",
        "seed",
        "duplicate",
        "hops",
        "paths",
        "balance",
        "mpls",
        "malform",
        "truncate",
        "forge",
        "forge_type",
        "forge_from4",
        "forge_from6",
        "reply_ttl",
    }
)
HOP_KEYS = frozenset({"addr4", "addr6", "mpls", "silent", "delay"})
DEFAULT_FORGE_FROM = {4: "198.18.201.254", 6: "2001:db8:c9::fe"}


class ResponderError(RuntimeError):
    """The responder failed to start, refused a command or exited badly."""


def _check_addr(value: Any, family: int, what: str) -> None:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{what}: not an address: {value!r}") from None
    if addr.version != family:
        raise ValueError(f"{what}: {value} is not IPv{family}")


def _check_mpls(value: Any, what: str) -> list[P.Mpls]:
    if not isinstance(value, list):
        raise ValueError(f"{what}: must be a list of [label, tc, bos, ttl]")
    out = []
    for entry in value:
        if not (
            isinstance(entry, list) and len(entry) == 4 and all(isinstance(x, int) for x in entry)
        ):
            raise ValueError(f"{what}: bad entry {entry!r}")
        m = P.Mpls(*entry)
        m.pack()  # range check
        out.append(m)
    return out


def validate_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Check a target SPEC (see the module doc) and return a plain copy.

    Raises:
        ValueError: unknown key or bad value (the message says which).
    """
    if not isinstance(spec, Mapping):
        raise ValueError("spec must be an object")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown spec keys {sorted(unknown)}")
    s = dict(spec)
    choices = {
        "answer": ANSWERS,
        "tcp": ("syn-ack", "rst"),
        "udp": ("port-unreachable", "none"),
        "sctp": ("init-ack", "abort"),
        "malform": (None, *MALFORMS),
        "forge_type": ("time-exceeded", "unreachable"),
        "balance": ("flow", "packet"),
    }
    for key, allowed in choices.items():
        if key in s and s[key] not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, not {s[key]!r}")
    for key in ("delay", "drop", "cold"):
        if key in s and (not isinstance(s[key], (int, float)) or s[key] < 0):
            raise ValueError(f"{key} must be a number >= 0")
    if s.get("drop", 0) > 1:
        raise ValueError("drop must be within 0..1")
    for key, lo, hi in (
        ("code", 0, 255),
        ("seed", -(2**63), 2**63),
        ("duplicate", 0, 100),
        ("truncate", 0, 65535),
        ("reply_ttl", 1, 255),
    ):
        if key in s and (
            not isinstance(s[key], int) or isinstance(s[key], bool) or not lo <= s[key] <= hi
        ):
            raise ValueError(f"{key} must be an integer {lo}..{hi}")
    for key, fam in (("from4", 4), ("from6", 6), ("forge_from4", 4), ("forge_from6", 6)):
        if key in s:
            _check_addr(s[key], fam, key)
    if "mpls" in s:
        _check_mpls(s["mpls"], "mpls")
    if "forge" in s and (
        not isinstance(s["forge"], list) or any(f not in FORGES for f in s["forge"])
    ):
        raise ValueError(f"forge must be a list of {FORGES}")
    if "hops" in s:
        hops = s["hops"]
        if isinstance(hops, bool) or not isinstance(hops, (int, list)):
            raise ValueError("hops must be an integer or a list of hop objects")
        if isinstance(hops, int) and not 0 <= hops <= 250:
            raise ValueError("hops must be 0..250")
        if isinstance(hops, list):
            _check_hop_list(hops, "hop")
    if "paths" in s:
        if "hops" in s:
            raise ValueError("give hops or paths, not both")
        paths = s["paths"]
        if not isinstance(paths, list) or not paths or len(paths) > 64:
            raise ValueError("paths must be a list of 1..64 paths (lists of hop objects)")
        for n, path in enumerate(paths, start=1):
            if not isinstance(path, list) or not path:
                raise ValueError(f"path {n}: must be a non-empty list of hop objects")
            _check_hop_list(path, f"path {n} hop")
    elif "balance" in s:
        raise ValueError("balance applies to paths only")
    return s


def _check_hop_list(hops: list[Any], what: str) -> None:
    """Check a list of hop objects (``what`` names them in errors).

    Raises:
        ValueError: too many, or a hop with an unknown key or bad value.
    """
    if len(hops) > 250:
        raise ValueError(f"at most 250 {what}s")
    for i, hop in enumerate(hops, start=1):
        if not isinstance(hop, Mapping) or set(hop) - HOP_KEYS:
            raise ValueError(f"{what} {i}: must be an object with keys {sorted(HOP_KEYS)}")
        if "addr4" in hop:
            _check_addr(hop["addr4"], 4, f"{what} {i} addr4")
        if "addr6" in hop:
            _check_addr(hop["addr6"], 6, f"{what} {i} addr6")
        if "mpls" in hop:
            _check_mpls(hop["mpls"], f"{what} {i} mpls")
        if "delay" in hop and (not isinstance(hop["delay"], (int, float)) or hop["delay"] < 0):
            raise ValueError(f"{what} {i}: delay must be >= 0")


def validate_script(script: Mapping[str, Any]) -> dict[str, Any]:
    """Check a whole script ``{"default": SPEC, "targets": {ADDR: SPEC}}``.

    Raises:
        ValueError: bad structure, address or spec.
    """
    if not isinstance(script, Mapping) or set(script) - {"default", "targets"}:
        raise ValueError('script must be {"default": SPEC, "targets": {ADDR: SPEC}}')
    out: dict[str, Any] = {"default": validate_spec(script.get("default", {})), "targets": {}}
    for addr, spec in dict(script.get("targets", {})).items():
        try:
            canon = str(ipaddress.ip_address(addr))
        except ValueError:
            raise ValueError(f"target {addr!r} is not an address") from None
        out["targets"][canon] = validate_spec(spec)
    return out


# =========================================================================== program


@dataclass(order=True)
class _Scheduled:
    due: float
    order: int
    frame: bytes = field(compare=False)
    rx: int = field(compare=False)
    kind: str = field(compare=False)
    ip: bytes = field(compare=False)


class ResponderProgram:
    """The packet loop (runs inside the responder namespace)."""

    def __init__(
        self, iface: str, prefixes: Sequence[str], script: Mapping[str, Any], out: IO[str]
    ) -> None:
        self.iface = iface
        self.prefixes = [ipaddress.ip_network(p) for p in prefixes]
        self.out = out
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(
            socket.SOL_SOCKET,
            SO_TIMESTAMPING,
            SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_SOFTWARE | SOF_TIMESTAMPING_OPT_TSONLY,
        )
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((iface, 0))
        self.sock.setblocking(False)
        self.mac: bytes = self.sock.getsockname()[4]
        self.n = 0
        self.order = 0
        self.queue: list[_Scheduled] = []
        self.load(script)

    # -- script state
    def load(self, script: Mapping[str, Any]) -> None:
        s = validate_script(script)
        self.default: dict[str, Any] = s["default"]
        self.targets: dict[str, dict[str, Any]] = s["targets"]
        self.rngs: dict[str, random.Random] = {}
        self.path_rngs: dict[str, random.Random] = {}  # per-packet balancers
        self.tcp_isn: dict[str, random.Random] = {}
        self.resolving: dict[tuple[str, int], float] = {}  # (target, hop) -> first forward

    def spec_for(self, dst: str) -> dict[str, Any]:
        return self.targets.get(dst, self.default)

    def rng(self, dst: str, spec: Mapping[str, Any]) -> random.Random:
        if dst not in self.rngs:
            self.rngs[dst] = random.Random(spec.get("seed", 0))
        return self.rngs[dst]

    # -- output
    def emit(self, obj: Mapping[str, Any]) -> None:
        self.out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.out.flush()

    # -- main loop
    def run(self, control: int) -> None:
        self.emit(
            {"event": "ready", "iface": self.iface, "mac": P.mac_str(self.mac), "pid": os.getpid()}
        )
        buf = b""
        control_open = True
        while control_open or self.queue:
            timeout = None
            if self.queue:
                timeout = max(0.0, self.queue[0].due - time.monotonic())
            fds = [self.sock.fileno()] + ([control] if control_open else [])
            ready, _, _ = select.select(fds, [], [], timeout)
            if self.sock.fileno() in ready:
                self.read_frames()
            self.flush_due()
            if control_open and control in ready:
                chunk = os.read(control, 65536)
                if not chunk:
                    control_open = False
                    # Finish scheduled answers that are due soon, drop the rest.
                    horizon = time.monotonic() + 0.5
                    self.queue = [q for q in self.queue if q.due <= horizon]
                    heapq.heapify(self.queue)
                    continue
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self.command(line)
        self.emit({"event": "exit"})

    def command(self, line: bytes) -> None:
        cid = None
        try:
            msg = json.loads(line)
            cid = msg.get("id")
            cmd = msg.get("cmd")
            if cmd == "set":
                target = str(ipaddress.ip_address(msg["target"]))
                if msg.get("spec") is None:
                    self.targets.pop(target, None)
                else:
                    self.targets[target] = validate_spec(msg["spec"])
                self.rngs.pop(target, None)
                self.path_rngs.pop(target, None)
                self.resolving = {k: v for k, v in self.resolving.items() if k[0] != target}
            elif cmd == "default":
                self.default = validate_spec(msg.get("spec") or {})
                self.rngs.clear()
                self.path_rngs.clear()
            elif cmd == "load":
                self.load(msg["script"])
            elif cmd == "reset":
                self.load({})
                self.queue.clear()
            elif cmd == "ping":
                self.read_frames()
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.emit({"event": "error", "id": cid, "message": str(e)})
            return
        self.emit({"event": "ok", "id": cid})

    def read_frames(self) -> None:
        while True:
            try:
                frame, anc, _flags, addr = self.sock.recvmsg(65600, 256)
            except BlockingIOError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            ts_ns = time.time_ns()
            for level, ctype, cdata in anc:
                if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    ts_ns = sec * 1_000_000_000 + nsec
            try:
                _dst, src_mac, etype, data = P.parse_ethernet(frame)
            except ValueError:
                continue
            if etype not in (P.ETH_P_IP, P.ETH_P_IPV6):
                continue
            pkt = P.parse_ip(data)
            if pkt is None or not self.ours(pkt.dst):
                continue
            self.n += 1
            self.handle(pkt, bytes(data[: pkt.length] if pkt.length else data), src_mac, ts_ns)

    def transmit_stamp(self) -> int:
        """The kernel's transmit timestamp of the frame just sent, in ns (CLOCK_REALTIME).

        The stamp is queued within send() itself (the device is a veth without a queue),
        so it is read at once: a clock read here instead would count the time this
        process waits for the CPU after sending, which a loaded machine makes
        milliseconds.

        Raises:
            OSError: the error queue holds no stamp (ENOMSG if it held something else).
        """
        _data, ancillary, _flags, _addr = self.sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPING:
                sec, nsec = struct.unpack("qq", data[:16])
                return int(sec) * 1_000_000_000 + int(nsec)
        raise OSError(errno.ENOMSG, "no transmit timestamp on the error queue")

    def ours(self, dst: str) -> bool:
        addr = ipaddress.ip_address(dst)
        return any(addr in p for p in self.prefixes)

    def flush_due(self) -> None:
        now = time.monotonic()
        while self.queue and self.queue[0].due <= now:
            item = heapq.heappop(self.queue)
            try:
                self.sock.send(item.frame)
                sent_ns = self.transmit_stamp()
            except OSError as e:
                self.emit({"event": "tx-error", "rx": item.rx, "message": str(e)})
                continue
            self.emit(
                {
                    "event": "tx",
                    "rx": item.rx,
                    "ts_ns": sent_ns,
                    "kind": item.kind,
                    "hex": item.ip.hex(),
                }
            )

    def schedule(
        self, ip: bytes, kind: str, delay: float, dst_mac: bytes, rx: int, copies: int
    ) -> None:
        etype = P.ETH_P_IP if ip[0] >> 4 == 4 else P.ETH_P_IPV6
        frame = dst_mac + self.mac + struct.pack("!H", etype) + ip
        due = time.monotonic() + delay
        for _ in range(copies):
            self.order += 1
            heapq.heappush(self.queue, _Scheduled(due, self.order, frame, rx, kind, ip))

    # -- decisions
    def handle(self, pkt: P.Packet, raw: bytes, src_mac: bytes, ts_ns: int) -> None:
        n = self.n
        spec = self.spec_for(pkt.dst)
        rx: dict[str, Any] = {
            "event": "rx",
            "n": n,
            "ts_ns": ts_ns,
            "hex": raw.hex(),
            "action": "",
            "hop": None,
            "path": None,
        }
        hops, rx["path"] = self.route(pkt, spec)
        answers, action, hop = self.decide(pkt, raw, spec, hops)
        rx["action"], rx["hop"] = action, hop
        self.emit(rx)
        if not answers:
            return
        delay = float(spec.get("delay", 0))
        if hop is not None:
            delay += float(hops[hop - 1].get("delay", 0))
        copies = 1 + int(spec.get("duplicate", 0))
        for ip, kind in answers:
            self.schedule(
                ip, kind, delay, src_mac, n, copies if not kind.startswith("forged") else 1
            )

    def route(
        self, pkt: P.Packet, spec: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], int | None]:
        """The virtual hops in front of the target for ``pkt``, and the index of the
        path a balancer chose (None without ``paths``)."""
        paths = spec.get("paths")
        if paths is None:
            hops = spec.get("hops", 0)
            if isinstance(hops, int):
                return [{} for _ in range(hops)], None
            return [dict(h) for h in hops], None
        if spec.get("balance", "flow") == "packet":
            rng = self.path_rngs.setdefault(pkt.dst, random.Random(spec.get("seed", 0)))
            index = rng.randrange(len(paths))
        else:
            index = flow_hash(pkt, int(spec.get("seed", 0))) % len(paths)
        return [dict(h) for h in paths[index]], index

    def decide(
        self, pkt: P.Packet, raw: bytes, spec: Mapping[str, Any], hops: list[dict[str, Any]]
    ) -> tuple[list[tuple[bytes, str]], str, int | None]:
        v = pkt.version
        # Traffic we never answer: ICMP errors and replies, TCP resets.
        if pkt.is_icmp and not pkt.is_echo_request:
            return [], "ignored", None
        if pkt.proto == P.PROTO_TCP and (pkt.tcp_flags or 0) & P.TCP_RST:
            return [], "ignored", None
        if pkt.proto == P.PROTO_SCTP and (
            not pkt.sctp_chunks or pkt.sctp_chunks[0].type != P.SCTP_INIT
        ):
            return [], "ignored", None
        if pkt.truncated or (pkt.sport is None and not pkt.is_icmp):
            return [], "ignored-fragment", None
        if spec.get("drop", 0) and self.rng(pkt.dst, spec).random() < spec["drop"]:
            return [], "dropped", None
        ttl_cfg = spec.get("reply_ttl", 64)
        resolving = self.cold_hop(pkt, float(spec.get("cold", 0)), len(hops))
        if resolving is not None:
            return [], "cold-hop", resolving
        answers: list[tuple[bytes, str]] = []
        hop_no: int | None = None
        forged = self.forged(pkt, raw, spec)
        if pkt.ttl <= len(hops):
            hop_no = pkt.ttl
            hop = hops[hop_no - 1]
            if hop.get("silent"):
                return forged, "silent-hop", hop_no
            src = hop.get(f"addr{v}") or _default_hop(hop_no, v)
            mpls = hop.get("mpls", spec.get("mpls"))
            entries = _check_mpls(mpls, "mpls") if mpls else []
            quoted = _with_ttl(raw, 1)
            msg = self.error_message(
                v,
                P.ICMP4_TIME_EXCEEDED if v == 4 else P.ICMP6_TIME_EXCEEDED,
                0,
                quoted,
                src,
                pkt.src,
                spec,
                entries,
            )
            te = P.ip_packet(src, pkt.src, _icmp_proto(v), msg, ttl=ttl_cfg)
            answers = [*forged, (te, "time-exceeded")]
            return answers, "time-exceeded", hop_no
        answer = spec.get("answer", "normal")
        if answer == "none":
            return forged, "no-answer" if not forged else "forged-only", None
        if answer == "unreachable":
            code = spec.get("code", 1 if v == 4 else 3)
            src = spec.get(f"from{v}", pkt.dst)
            msg = self.error_message(
                v,
                P.ICMP4_DEST_UNREACH if v == 4 else P.ICMP6_DEST_UNREACH,
                code,
                raw,
                src,
                pkt.src,
                spec,
                [],
            )
            unreach = P.ip_packet(src, pkt.src, _icmp_proto(v), msg, ttl=ttl_cfg)
            return [*forged, (unreach, "unreachable")], "unreachable", None
        final = self.final_answer(pkt, raw, spec)
        if final is None:
            return forged, "no-answer", None
        transport, proto, kind = final
        return (
            [*forged, (P.ip_packet(pkt.dst, pkt.src, proto, transport, ttl=ttl_cfg), kind)],
            kind,
            None,
        )

    def cold_hop(self, pkt: P.Packet, cold: float, hops: int) -> int | None:
        """The first virtual hop that drops ``pkt`` because it is still resolving its
        next hop (``cold`` seconds from the first probe it had to forward), or None."""
        if not cold:
            return None
        now = time.monotonic()
        for hop in range(1, min(pkt.ttl - 1, hops) + 1):
            began = self.resolving.setdefault((pkt.dst, hop), now)
            if now - began < cold:
                return hop
        return None

    def final_answer(
        self, pkt: P.Packet, raw: bytes, spec: Mapping[str, Any]
    ) -> tuple[bytes, int, str] | None:
        v = pkt.version
        malform = spec.get("malform")
        if pkt.is_echo_request:
            msg = P.echo_message(
                v,
                pkt.icmp_id or 0,
                pkt.icmp_seq or 0,
                pkt.payload,
                reply=True,
                src=pkt.dst,
                dst=pkt.src,
            )
            msg = self.malform_transport(msg, v, pkt.dst, pkt.src, spec)
            return msg, _icmp_proto(v), "echo-reply"
        if pkt.proto == P.PROTO_UDP:
            if spec.get("udp", "port-unreachable") == "none":
                return None
            msg = self.error_message(
                v,
                P.ICMP4_DEST_UNREACH if v == 4 else P.ICMP6_DEST_UNREACH,
                3 if v == 4 else 4,
                raw,
                pkt.dst,
                pkt.src,
                spec,
                [],
            )
            return msg, _icmp_proto(v), "port-unreachable"
        if pkt.proto == P.PROTO_TCP:
            assert pkt.sport is not None and pkt.dport is not None
            flags = pkt.tcp_flags or 0
            seq_in = pkt.tcp_seq or 0
            if flags & P.TCP_SYN and not flags & P.TCP_ACK:
                if spec.get("tcp", "syn-ack") == "syn-ack":
                    isn = self.tcp_isn.setdefault(pkt.dst, random.Random(spec.get("seed", 0)))
                    seg = P.tcp_segment(
                        pkt.dst,
                        pkt.src,
                        pkt.dport,
                        pkt.sport,
                        seq=isn.getrandbits(32),
                        ack=seq_in + 1,
                        flags=P.TCP_SYN | P.TCP_ACK,
                        window=64240,
                        options=struct.pack("!BBH", 2, 4, 1460),
                    )
                    kind = "syn-ack"
                else:
                    seg = P.tcp_segment(
                        pkt.dst,
                        pkt.src,
                        pkt.dport,
                        pkt.sport,
                        seq=0,
                        ack=seq_in + 1,
                        flags=P.TCP_RST | P.TCP_ACK,
                        window=0,
                    )
                    kind = "rst"
            else:
                # Anything after our SYN-ACK (ACK, FIN, data): reset the connection.
                seg = P.tcp_segment(
                    pkt.dst,
                    pkt.src,
                    pkt.dport,
                    pkt.sport,
                    seq=pkt.tcp_ack or 0,
                    flags=P.TCP_RST,
                    window=0,
                )
                kind = "rst"
            seg = self.malform_transport(seg, v, pkt.dst, pkt.src, spec, tcp=True)
            return seg, P.PROTO_TCP, kind
        if pkt.proto == P.PROTO_SCTP:
            assert pkt.sport is not None and pkt.dport is not None
            init = pkt.sctp_chunks[0]
            tag = init.initiate_tag or 0
            if spec.get("sctp", "init-ack") == "init-ack":
                rng = self.tcp_isn.setdefault(pkt.dst, random.Random(spec.get("seed", 0)))
                own_tag = rng.getrandbits(32) or 1
                os_, mis = 10, 10
                if len(init.value) >= 12:
                    os_, mis = struct.unpack("!HH", init.value[8:12])
                cookie = P.sctp_param(P.SCTP_PARAM_STATE_COOKIE, rng.randbytes(32))
                chunk = P.sctp_init_chunk(
                    own_tag,
                    outbound_streams=min(os_, mis) or 1,
                    inbound_streams=min(os_, mis) or 1,
                    initial_tsn=rng.getrandbits(32),
                    params=cookie,
                    ack=True,
                )
                kind = "init-ack"
            else:
                chunk = P.sctp_chunk(P.SCTP_ABORT, 0, b"")
                kind = "abort"
            crc = None
            if malform == "bad-checksum":
                crc = (
                    P.crc32c(
                        P.sctp_packet(pkt.dport, pkt.sport, tag, [chunk])[:8] + b"\0" * 4 + chunk
                    )
                    + 1
                ) & 0xFFFFFFFF
            body = P.sctp_packet(pkt.dport, pkt.sport, tag, [chunk], crc=crc)
            if malform == "truncate":
                body = body[: spec.get("truncate", 6)]
            return body, P.PROTO_SCTP, kind
        return None

    def malform_transport(
        self, msg: bytes, v: int, src: str, dst: str, spec: Mapping[str, Any], *, tcp: bool = False
    ) -> bytes:
        """Apply ``truncate``/``bad-checksum`` to an ICMP message or TCP segment."""
        return _malform(
            msg, v, src, dst, spec.get("malform"), int(spec.get("truncate", 6)), tcp=tcp
        )

    def error_message(
        self,
        v: int,
        icmp_type: int,
        code: int,
        original: bytes,
        src: str,
        dst: str,
        spec: Mapping[str, Any],
        mpls: list[P.Mpls],
    ) -> bytes:
        malform = spec.get("malform")
        quote = original
        if malform == "bad-quote":
            quote = b"\x00" + original[1:]
        elif malform == "short-quote":
            hl = (original[0] & 0x0F) * 4 if v == 4 else 40
            quote = original[: hl + 4]
        ext = None
        if mpls:
            if malform == "bad-extension":
                obj = P.mpls_object(mpls).pack()
                obj = struct.pack("!H", len(obj) + 16) + obj[2:]
                ext = P.icmp_extension_structure([], checksum=0x1234)[:4] + obj
            else:
                ext = P.icmp_extension_structure([P.mpls_object(mpls)])
        msg = P.icmp_error(v, icmp_type, code, quote, src=src, dst=dst, extensions=ext)
        if malform in ("truncate", "bad-checksum"):
            msg = _malform(msg, v, src, dst, malform, int(spec.get("truncate", 6)))
        return msg

    def forged(self, pkt: P.Packet, raw: bytes, spec: Mapping[str, Any]) -> list[tuple[bytes, str]]:
        kinds = spec.get("forge", [])
        if not kinds:
            return []
        v = pkt.version
        src = spec.get(f"forge_from{v}", DEFAULT_FORGE_FROM[v])
        ttl = spec.get("reply_ttl", 64)
        if spec.get("forge_type", "time-exceeded") == "time-exceeded":
            etype, ecode = (P.ICMP4_TIME_EXCEEDED if v == 4 else P.ICMP6_TIME_EXCEEDED), 0
        else:
            etype, ecode = (P.ICMP4_DEST_UNREACH, 1) if v == 4 else (P.ICMP6_DEST_UNREACH, 3)
        out = []
        for kind in kinds:
            if kind.startswith("reply-"):
                if not pkt.is_echo_request:
                    continue
                ident, seq = pkt.icmp_id or 0, pkt.icmp_seq or 0
                if kind == "reply-wrong-id":
                    ident = (ident + 1) & 0xFFFF
                else:
                    seq = (seq + 1) & 0xFFFF
                msg = P.echo_message(
                    v, ident, seq, pkt.payload, reply=True, src=pkt.dst, dst=pkt.src
                )
                out.append(
                    (P.ip_packet(pkt.dst, pkt.src, _icmp_proto(v), msg, ttl=ttl), f"forged-{kind}")
                )
                continue
            quote = _forge_quote(pkt, raw, kind)
            msg = P.icmp_error(v, etype, ecode, quote, src=src, dst=pkt.src)
            out.append((P.ip_packet(src, pkt.src, _icmp_proto(v), msg, ttl=ttl), f"forged-{kind}"))
        return out


def flow_hash(pkt: P.Packet, seed: int) -> int:
    """What a hardware per-flow balancer hashes, hashed with ``seed``: the addresses,
    the protocol, the TOS / traffic class, the IPv6 flow label and the first 4 bytes of
    the transport header (ports; ICMP type, code and checksum)."""
    fields = "|".join(
        (str(seed), pkt.src, pkt.dst, str(pkt.proto), str(pkt.tos), str(pkt.flow_label or 0))
    )
    digest = hashlib.blake2b(fields.encode() + pkt.transport[:4], digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _icmp_proto(v: int) -> int:
    return P.PROTO_ICMP if v == 4 else P.PROTO_ICMPV6


def _default_hop(i: int, v: int) -> str:
    net = ipaddress.ip_network("198.18.201.0/24" if v == 4 else "2001:db8:c9::/64")
    return str(net[i])


def _with_ttl(raw: bytes, ttl: int) -> bytes:
    """Return ``raw`` with its TTL/hop limit replaced (IPv4 checksum fixed)."""
    if raw[0] >> 4 == 4:
        hl = (raw[0] & 0x0F) * 4
        hdr = bytearray(raw[:hl])
        hdr[8] = ttl
        hdr[10:12] = b"\0\0"
        hdr[10:12] = struct.pack("!H", P.internet_checksum(bytes(hdr)))
        return bytes(hdr) + raw[hl:]
    return raw[:7] + bytes([ttl]) + raw[8:]


def _malform(
    msg: bytes, v: int, src: str, dst: str, malform: str | None, cut: int, *, tcp: bool = False
) -> bytes:
    """Truncate (recomputing the checksum) or spoil the checksum of ICMP/TCP bytes."""
    if malform is None:
        return msg
    off = 16 if tcp else 2
    if malform == "truncate":
        msg = msg[:cut]
        if len(msg) >= off + 2:
            msg = msg[:off] + b"\0\0" + msg[off + 2 :]
            if tcp or v == 6:
                proto = P.PROTO_TCP if tcp else P.PROTO_ICMPV6
                csum = P.internet_checksum(P.pseudo_header(src, dst, proto, len(msg)) + msg)
            else:
                csum = P.internet_checksum(msg)
            msg = msg[:off] + struct.pack("!H", csum) + msg[off + 2 :]
        return msg
    if malform == "bad-checksum" and len(msg) >= off + 2:
        (csum,) = struct.unpack("!H", msg[off : off + 2])
        return msg[:off] + struct.pack("!H", (csum + 1) & 0xFFFF) + msg[off + 2 :]
    return msg


def _forge_quote(pkt: P.Packet, raw: bytes, kind: str) -> bytes:
    """Return a modified copy of the probe (or an unrelated packet) to quote."""
    v = pkt.version
    if kind == "unrelated":
        src = "198.18.1.1" if v == 4 else "2001:db8:1::1"
        dst = "198.18.200.253" if v == 4 else "2001:db8:c8::fd"
        udp = P.udp_datagram(src, dst, 40999, 33999, b"\xee" * 16)
        return P.ip_packet(src, dst, P.PROTO_UDP, udp, ttl=1)
    data = bytearray(_with_ttl(raw, 1))
    hl = pkt.header_length
    if kind in ("wrong-dst", "wrong-src"):
        other = "198.18.200.254" if v == 4 else "2001:db8:c8::fe"
        if kind == "wrong-src":
            other = "198.18.1.254" if v == 4 else "2001:db8:1::fe"
        packed = ipaddress.ip_address(other).packed
        if v == 4:
            at = 16 if kind == "wrong-dst" else 12
            data[at : at + 4] = packed
            data[10:12] = b"\0\0"
            data[10:12] = struct.pack("!H", P.internet_checksum(bytes(data[:hl])))
        else:
            at = 24 if kind == "wrong-dst" else 8
            data[at : at + 16] = packed
        return bytes(data)

    def bump(at: int, width: int = 2, by: int = 1) -> None:
        fmt = "!H" if width == 2 else "!I"
        (val,) = struct.unpack(fmt, data[at : at + width])
        data[at : at + width] = struct.pack(fmt, (val + by) & ((1 << (8 * width)) - 1))

    if pkt.is_icmp:
        bump(hl + (6 if kind == "wrong-seq" else 4))
    elif pkt.proto == P.PROTO_TCP:
        if kind == "wrong-id":
            bump(hl)
        elif kind == "wrong-port":
            bump(hl + 2)
        else:
            # far outside [ISN, ISN + 1], the window the kernel accepts errors for
            bump(hl + 4, 4, by=1 << 30)
    elif pkt.proto == P.PROTO_SCTP:
        if kind == "wrong-id":
            bump(hl)
        elif kind == "wrong-port":
            bump(hl + 2)
        else:
            bump(hl + 4, 4)  # verification tag
            if pkt.sctp_vtag == 0 and pkt.sctp_chunks:
                bump(hl + 16, 4)  # INIT's initiate tag
    else:  # UDP and others: ports
        bump(hl if kind == "wrong-id" else hl + 2)
    return bytes(data)


def main(argv: Sequence[str] | None = None) -> int:
    """Program entry point (inside the responder namespace)."""
    ap = argparse.ArgumentParser(prog="lab.responder", description=__doc__.split("\n")[0])
    ap.add_argument("--iface", required=True)
    ap.add_argument(
        "--prefix", action="append", required=True, help="virtual prefix answered (repeatable)"
    )
    ap.add_argument("--script", help="JSON script file")
    args = ap.parse_args(argv)
    script: dict[str, Any] = {}
    if args.script:
        with open(args.script) as f:
            script = json.load(f)
    try:
        prog = ResponderProgram(args.iface, args.prefix, script, sys.stdout)
    except (OSError, ValueError) as e:
        print(f"responder: {e}", file=sys.stderr)
        return 1
    try:
        prog.run(sys.stdin.fileno())
    except KeyboardInterrupt:
        return 130
    return 0


# =========================================================================== controller


@dataclass
class RxEvent:
    """A packet the responder received (``action`` says what it did about it)."""

    n: int
    ts_ns: int
    packet: P.Packet
    action: str
    hop: int | None
    path: int | None = None


@dataclass
class TxEvent:
    """A packet the responder sent in answer to received packet number ``rx``."""

    rx: int
    ts_ns: int
    kind: str
    packet: P.Packet


class Responder:
    """Controls a responder program running in a lab namespace.

    Use :meth:`set` / :meth:`set_default` / :meth:`load` / :meth:`reset` to
    change the script, :meth:`received` / :meth:`sent` / :meth:`wait_received`
    to see what happened, :meth:`stop` to end it (also done by the lab's close).
    """

    def __init__(
        self,
        lab: Lab,
        node: Node,
        iface: str,
        prefixes: Sequence[str],
        script: Mapping[str, Any] | None = None,
    ) -> None:
        """Prepare (call :meth:`start`).

        Raises:
            ValueError: invalid ``script``.
        """
        self.lab = lab
        self.node = node
        self.iface = iface
        self.prefixes = list(prefixes)
        self.script = validate_script(script or {})
        self.rx: list[RxEvent] = []
        self.tx: list[TxEvent] = []
        self.errors: list[str] = []
        self.ready_info: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._cond = threading.Condition()
        self._acks: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._ready = False
        self._exited = False
        self._stderr: list[str] = []
        self._threads: list[threading.Thread] = []
        self.returncode: int | None = None

    def start(self, timeout: float = 15.0) -> Responder:
        """Start the program and wait for its ``ready`` event.

        Raises:
            ResponderError: it exited or was not ready within ``timeout``.
        """
        fd, path = tempfile.mkstemp(prefix="bpk-responder-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(self.script, f)
        argv = [sys.executable, "-m", "lab.responder", "--iface", self.iface, "--script", path]
        for p in self.prefixes:
            argv += ["--prefix", p]
        self._proc = self.lab.popen(
            self.node,
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.lab.python_env(),
        )
        for target in (self._read_stdout, self._read_stderr):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        try:
            with self._cond:
                if not self._cond.wait_for(lambda: self._ready or self._exited, timeout):
                    raise ResponderError("responder did not become ready: " + "".join(self._stderr))
                if not self._ready:
                    raise ResponderError("responder exited at start: " + "".join(self._stderr))
        except ResponderError:
            self._proc.kill()
            self._proc.wait()
            raise
        finally:
            os.unlink(path)
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                self._stderr.append(f"bad event line: {raw!r}\n")
                continue
            with self._cond:
                self._event(ev)
                self._cond.notify_all()
        with self._cond:
            self._exited = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode(errors="replace"))

    def _event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "ready":
            self._ready = True
            self.ready_info = ev
        elif kind == "rx":
            pkt = P.parse_ip(bytes.fromhex(ev["hex"]))
            if pkt is not None:
                pkt.timestamp_ns = ev["ts_ns"]
                pkt.timestamp = ev["ts_ns"] / 1e9
                pkt.direction = "in"
                self.rx.append(
                    RxEvent(ev["n"], ev["ts_ns"], pkt, ev["action"], ev["hop"], ev.get("path"))
                )
        elif kind == "tx":
            pkt = P.parse_ip(bytes.fromhex(ev["hex"]))
            if pkt is not None:
                pkt.timestamp_ns = ev["ts_ns"]
                pkt.timestamp = ev["ts_ns"] / 1e9
                pkt.direction = "out"
                self.tx.append(TxEvent(ev["rx"], ev["ts_ns"], ev["kind"], pkt))
        elif kind in ("ok", "error"):
            if ev.get("id") is not None:
                self._acks[ev["id"]] = ev
            if kind == "error":
                self.errors.append(ev.get("message", ""))
        elif kind == "tx-error":
            self.errors.append(ev.get("message", ""))

    def _command(self, msg: dict[str, Any], timeout: float = 10.0) -> None:
        if self._proc is None or self._proc.stdin is None or self._exited:
            raise ResponderError("responder is not running")
        with self._cond:
            self._next_id += 1
            cid = self._next_id
        msg = dict(msg, id=cid)
        try:
            self._proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self._proc.stdin.flush()
        except OSError as e:
            raise ResponderError(f"responder control pipe: {e}") from e
        with self._cond:
            if not self._cond.wait_for(lambda: cid in self._acks or self._exited, timeout):
                raise ResponderError(f"responder did not answer {msg['cmd']}")
            ack = self._acks.pop(cid, None)
        if ack is None:
            raise ResponderError("responder exited: " + "".join(self._stderr))
        if ack["event"] == "error":
            raise ResponderError(f"responder refused {msg['cmd']}: {ack.get('message')}")

    def set(self, target: str, spec: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Script ``target`` with ``spec`` (merged with keyword arguments).

        ``set(target)`` with nothing else removes the target's script (it then
        follows the default).

        Raises:
            ValueError: invalid spec or address.
            ResponderError: the program refused or is gone.
        """
        merged = {**(spec or {}), **kw}
        canon = str(ipaddress.ip_address(target))
        if not spec and not kw:
            self._command({"cmd": "set", "target": canon, "spec": None})
            return
        self._command({"cmd": "set", "target": canon, "spec": validate_spec(merged)})

    def set_default(self, spec: Mapping[str, Any] | None = None, **kw: Any) -> None:
        """Set the SPEC used for unscripted addresses.

        Raises:
            ValueError, ResponderError: as :meth:`set`.
        """
        self._command({"cmd": "default", "spec": validate_spec({**(spec or {}), **kw})})

    def load(self, script: Mapping[str, Any]) -> None:
        """Replace the whole script.

        Raises:
            ValueError, ResponderError: as :meth:`set`.
        """
        self._command({"cmd": "load", "script": validate_script(script)})

    def reset(self) -> None:
        """Back to the empty script (everything answered normally) and clear the logs.

        Raises:
            ResponderError: the program is gone.
        """
        self._command({"cmd": "reset"})
        self.clear_log()

    def sync(self) -> None:
        """Round trip through the program: every frame it had read is now logged.

        Raises:
            ResponderError: the program is gone.
        """
        self._command({"cmd": "ping"})

    def clear_log(self) -> None:
        """Forget the received/sent logs."""
        with self._cond:
            self.rx.clear()
            self.tx.clear()
            self.errors.clear()

    @staticmethod
    def _match(pkt: P.Packet, filters: Mapping[str, Any]) -> bool:
        for key, want in filters.items():
            if key == "proto" and isinstance(want, str):
                if pkt.proto_name != want and not (want == "icmp" and pkt.is_icmp):
                    return False
            elif getattr(pkt, key) != want:
                return False
        return True

    def received(self, *, action: str | None = None, **filters: Any) -> list[RxEvent]:
        """Return received-packet events; filters compare :class:`Packet` fields.

        ``proto="icmp"`` matches ICMP and ICMPv6.
        """
        with self._cond:
            return [
                e
                for e in self.rx
                if (action is None or e.action == action) and self._match(e.packet, filters)
            ]

    def sent(
        self, *, kind: str | None = None, rx: int | None = None, **filters: Any
    ) -> list[TxEvent]:
        """Return sent-packet events, filtered like :meth:`received` (and by ``kind``/``rx``)."""
        with self._cond:
            return [
                e
                for e in self.tx
                if (kind is None or e.kind == kind)
                and (rx is None or e.rx == rx)
                and self._match(e.packet, filters)
            ]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` (called under the event lock) is true."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_received(self, count: int = 1, timeout: float = 5.0, **filters: Any) -> list[RxEvent]:
        """Wait until at least ``count`` matching packets were received; return them.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """

        def enough() -> bool:
            return len([e for e in self.rx if self._match(e.packet, filters)]) >= count

        if not self.wait_for(enough, timeout):
            got = self.received(**filters)
            raise TimeoutError(f"responder saw {len(got)} of {count} packets matching {filters}")
        return self.received(**filters)

    def wait_sent(self, count: int = 1, timeout: float = 5.0, **filters: Any) -> list[TxEvent]:
        """Wait until at least ``count`` matching packets were sent; return them.

        Raises:
            TimeoutError: fewer within ``timeout`` seconds.
        """
        kind = filters.pop("kind", None)

        def enough() -> bool:
            return (
                len(
                    [
                        e
                        for e in self.tx
                        if (kind is None or e.kind == kind) and self._match(e.packet, filters)
                    ]
                )
                >= count
            )

        if not self.wait_for(enough, timeout):
            raise TimeoutError(
                f"responder sent {len(self.sent(kind=kind, **filters))} of "
                f"{count} packets matching {filters}"
            )
        return self.sent(kind=kind, **filters)

    @property
    def running(self) -> bool:
        """True while the program runs."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """Close its stdin so it exits (killed after ``timeout``); return the exit code.

        Raises:
            ResponderError: it exited non-zero or had to be killed.
        """
        if self._proc is None:
            return self.returncode or 0
        proc, self._proc = self._proc, None
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ResponderError("responder did not exit on end of input; killed") from None
        finally:
            for t in self._threads:
                t.join(5)
        self.returncode = proc.returncode
        if proc.returncode != 0:
            raise ResponderError(f"responder exited {proc.returncode}: {''.join(self._stderr)}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
