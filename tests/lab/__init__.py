"""Network-namespace test lab for brokerpkg (standard library only).

* :mod:`lab.topology` — :class:`Lab` (any topology) and :class:`Chain`
  (client -> routers -> server, with a responder), the address plan, run/popen
  inside namespaces, sysctls, special routes, silent routers, reference trace.
* :mod:`lab.responder` — the scripted responder program and its controller.
* :mod:`lab.capture` — tcpdump captures parsed into :class:`lab.packets.Packet`.
* :mod:`lab.sshd` — a real OpenSSH server in a node (:class:`SshServer`) and the
  client keys and configuration that reach it (:class:`SshKeys`).
* :mod:`lab.packets` — packet builders/decoders (ICMP extensions, MPLS, SCTP CRC32c).
* :mod:`lab.pcap` — pcap reader.  :mod:`lab.rawprobe` — raw-socket reference prober.
* :mod:`lab.inject` — system calls injected into a running process (ptrace).
* :mod:`lab.netns` — namespace names, ``ip -batch``, sysctl writer, stale cleanup.
"""

from .capture import Capture, CaptureError
from .netns import LabError, cleanup_stale
from .packets import Mpls, Packet, parse_ip
from .responder import Responder, ResponderError, RxEvent, TxEvent, validate_spec
from .topology import (
    RESPONDER_LINK,
    VIRTUAL_HOPS4,
    VIRTUAL_HOPS6,
    VIRTUAL_ROUTE4,
    VIRTUAL_ROUTE6,
    VIRTUAL_TARGETS4,
    VIRTUAL_TARGETS6,
    Chain,
    Destination,
    Interface,
    Lab,
    Node,
    RawProbeResult,
    link_address,
    link_prefix,
    special_prefixes,
    virtual_hop,
    virtual_target,
)

__all__ = [
    "Capture",
    "CaptureError",
    "Chain",
    "Destination",
    "Interface",
    "Lab",
    "LabError",
    "Mpls",
    "Node",
    "Packet",
    "RawProbeResult",
    "Responder",
    "ResponderError",
    "RxEvent",
    "TxEvent",
    "RESPONDER_LINK",
    "VIRTUAL_HOPS4",
    "VIRTUAL_HOPS6",
    "VIRTUAL_ROUTE4",
    "VIRTUAL_ROUTE6",
    "VIRTUAL_TARGETS4",
    "VIRTUAL_TARGETS6",
    "cleanup_stale",
    "link_address",
    "link_prefix",
    "parse_ip",
    "special_prefixes",
    "validate_spec",
    "virtual_hop",
    "virtual_target",
]
