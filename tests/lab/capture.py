"""Capture packets inside a lab namespace for the duration of a ``with`` block.

``tcpdump -w`` runs inside the namespace (immediate mode, nanosecond kernel
timestamps, full snap length); on exit the pcap is read back with
:mod:`lab.pcap` into :class:`lab.packets.Packet` objects with ``direction``
(``out`` = sent by that namespace through the interface), ``iface`` and
``timestamp`` set.  Example::

    with lab.capture("client", "eth0") as cap:
        ... send something ...
    probes = cap.select(direction="out", proto="icmp")
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import pcap
from .netns import LabError
from .packets import PROTO_NAMES, Packet

if TYPE_CHECKING:
    from .topology import Lab, Node

_PROTO_NUMBERS = {v: k for k, v in PROTO_NAMES.items()}


class CaptureError(LabError):
    """tcpdump did not start, died, or the kernel dropped packets."""


class Capture:
    """A tcpdump capture on one interface (or all, with ``iface=None``) of a node.

    Attributes after the block: ``packets`` (IPv4/IPv6 only, in capture
    order), ``records`` (all raw records), ``pcap_path`` (kept if ``keep=True``),
    ``dropped`` (kernel drop count tcpdump reported).
    """

    def __init__(
        self,
        lab: Lab,
        node: Node,
        iface: str | None = "eth0",
        *,
        bpf: str | None = None,
        settle: float = 0.2,
        keep: bool = False,
        allow_drops: bool = False,
        snaplen: int = 0,
        buffer_kib: int = 8192,
    ) -> None:
        """Prepare a capture (started by ``__enter__`` or :meth:`start`).

        ``bpf`` is an optional tcpdump filter expression; ``settle`` seconds
        are waited before stopping so packets in flight are seen; ``keep``
        keeps the pcap file (path in ``pcap_path``).  ``snaplen`` (0: whole
        packets) and ``buffer_kib`` (the kernel ring) size it for bursts: a
        small snap length fits many more packets in the same ring.
        """
        if shutil.which("tcpdump") is None:
            raise CaptureError("tcpdump is not installed (apt-get install tcpdump)")
        self.snaplen = snaplen
        self.buffer_kib = buffer_kib
        self.lab = lab
        self.node = node
        self.iface = iface
        self.bpf = bpf
        self.settle = settle
        self.keep = keep
        self.allow_drops = allow_drops
        self.packets: list[Packet] = []
        self.records: list[pcap.Record] = []
        self.dropped: int | None = None
        self._dir = tempfile.mkdtemp(prefix="bpk-cap-")
        self.pcap_path = Path(self._dir) / "capture.pcap"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: list[str] = []
        self._stderr_thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._local_macs: frozenset[bytes] = frozenset()
        self._ifnames: dict[int, str] = {}

    def start(self, timeout: float = 10.0) -> Capture:
        """Start tcpdump and wait until it listens.

        Raises:
            CaptureError: tcpdump exited or did not report listening in time.
        """
        if self.iface is not None:
            mac = self.lab.mac(self.node, self.iface)
            self._local_macs = frozenset({bytes.fromhex(mac.replace(":", ""))})
        self._ifnames = self.lab.ifindexes(self.node)
        argv = [
            "tcpdump",
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            str(self.snaplen),
            "-B",
            str(self.buffer_kib),
            "--time-stamp-precision=nano",
            "-Z",
            "root",
            "-i",
            self.iface or "any",
            "-w",
            str(self.pcap_path),
        ]
        if self.bpf:
            argv.append(self.bpf)
        self._proc = self.lab.popen(
            self.node,
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()
        if not self._ready.wait(timeout) or self._proc.poll() is not None:
            self._kill()
            raise CaptureError(f"tcpdump did not start: {''.join(self._stderr).strip()}")
        return self

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace")
            self._stderr.append(line)
            if "listening on" in line:
                self._ready.set()
        self._ready.set()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> list[Packet]:
        """Wait ``settle`` seconds, stop tcpdump, read and decode the capture.

        Raises:
            CaptureError: tcpdump did not stop, or reported kernel drops
                (unless ``allow_drops``).
        """
        if self._proc is None:
            return self.packets
        if self.settle > 0:
            time.sleep(self.settle)
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._kill()
                raise CaptureError("tcpdump did not stop on SIGINT") from None
        if self._stderr_thread is not None:
            self._stderr_thread.join(5)
        text = "".join(self._stderr)
        m = re.search(r"(\d+) packets? dropped by kernel", text)
        self.dropped = int(m.group(1)) if m else None
        try:
            self.records = list(pcap.read_records(self.pcap_path))
        except (OSError, pcap.PcapError) as e:
            raise CaptureError(f"cannot read capture: {e}; tcpdump said: {text.strip()}") from e
        finally:
            if not self.keep:
                shutil.rmtree(self._dir, ignore_errors=True)
        self._proc = None
        self.packets = [
            p
            for p in (
                pcap.decode_record(
                    r, local_macs=self._local_macs, ifnames=self._ifnames, iface=self.iface
                )
                for r in self.records
            )
            if p is not None
        ]
        if self.dropped and not self.allow_drops:
            raise CaptureError(f"kernel dropped {self.dropped} packets during the capture")
        return self.packets

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.stop()
        except CaptureError:
            if exc_type is None:
                raise  # do not hide the exception that ended the block
        finally:
            self._kill()
            if not self.keep:
                shutil.rmtree(self._dir, ignore_errors=True)

    def select(
        self,
        *,
        direction: str | None = None,
        proto: str | int | None = None,
        src: str | None = None,
        dst: str | None = None,
        version: int | None = None,
        noise: bool = False,
        **fields: Any,
    ) -> list[Packet]:
        """Return captured packets matching every given criterion.

        ``proto`` is a number or a name (``icmp``, ``icmp6``, ``udp``, ``tcp``,
        ``sctp``); ``noise=False`` drops ICMPv6 neighbour discovery/MLD;
        other keyword arguments compare :class:`Packet` attributes
        (e.g. ``icmp_type=11``, ``ttl=3``, ``dport=80``).

        Raises:
            AttributeError: an unknown field name.
        """
        pnum = _PROTO_NUMBERS.get(proto, proto) if isinstance(proto, str) else proto
        out = []
        for p in self.packets:
            if not noise and p.is_noise:
                continue
            if direction is not None and p.direction != direction:
                continue
            if pnum is not None and p.proto != pnum:
                continue
            if src is not None and p.src != src:
                continue
            if dst is not None and p.dst != dst:
                continue
            if version is not None and p.version != version:
                continue
            if any(getattr(p, k) != v for k, v in fields.items()):
                continue
            out.append(p)
        return out

    @property
    def sent(self) -> list[Packet]:
        """Packets that left through the interface (noise excluded)."""
        return self.select(direction="out")

    @property
    def received(self) -> list[Packet]:
        """Packets that arrived on the interface (noise excluded)."""
        return self.select(direction="in")

    def describe(self) -> str:
        """All packets as text, one per line (for assertion messages)."""
        return "\n".join(p.summary() for p in self.packets) or "(no packets)"
