"""One icmplib program, run with the real icmplib (as root) and with ``brokerpkg.icmplib``
(as nobody) by tests/test_icmplib.py, which compares what the two print.

argv[1] is the module to use as ``icmplib`` (``icmplib`` or ``brokerpkg.icmplib``), argv[2]
a JSON object of targets (see ``TARGET_KEYS``).  Round-trip times are masked in the
output; everything else (addresses, counts, loss, hops, exception classes and messages)
is printed as the program sees it.
"""

import asyncio
import importlib
import json
import re
import sys
from collections.abc import Callable
from typing import Any

TIME = re.compile(r"\d+\.\d+ ms")
TARGET_KEYS = (
    *("alive", "silent", "unreachable", "unsendable"),  # lists of addresses
    *("server4", "server6", "blackhole4", "foreign_source"),  # one address each
)

icmplib: Any = importlib.import_module(sys.argv[1])
targets: dict[str, Any] = json.loads(sys.argv[2])


def show_host(label: str, host: Any) -> None:
    print(
        label,
        repr(host),
        host.address,
        host.packets_sent,
        host.packets_received,
        host.packet_loss,
        host.is_alive,
        len(host.rtts),
    )
    print(TIME.sub("T ms", str(host)))


def show_hops(label: str, hops: list[Any]) -> None:
    print(label, hops)
    for hop in hops:
        print(hop.distance, hop.address, hop.packets_sent, hop.packets_received, hop.packet_loss)
        print(TIME.sub("T ms", str(hop)))


def show_error(label: str, call: Callable[[], object]) -> None:
    try:
        result = call()
    except icmplib.ICMPLibError as error:
        print(label, [kind.__name__ for kind in type(error).__mro__], error)
    except Exception as error:  # the message of a TypeError names icmplib's internals
        print(label, type(error).__name__)
    else:
        print(label, "no error", TIME.sub("T ms", str(result)))


for group, count, timeout in (
    ("alive", 3, 1),
    ("silent", 2, 0.5),
    ("unreachable", 2, 1),
    ("unsendable", 2, 1),
):
    for address in targets[group]:
        show_host(f"ping {group}", icmplib.ping(address, count, 0.2, timeout))

everyone = [*targets["alive"], targets["silent"][-1], targets["unreachable"][-1]]
everyone += targets["unsendable"]
for host in icmplib.multiping(everyone, count=2, interval=0.2, timeout=0.5):
    show_host("multiping", host)

show_host("async_ping", asyncio.run(icmplib.async_ping(targets["server6"], 2, 0.2, 1)))
everyone = [*targets["alive"], targets["silent"][0], *targets["unsendable"]]
for host in asyncio.run(icmplib.async_multiping(everyone, 2, 0.2, 0.5)):
    show_host("async_multiping", host)

show_hops("traceroute server4", icmplib.traceroute(targets["server4"], timeout=1))
show_hops("traceroute server6", icmplib.traceroute(targets["server6"], count=3, timeout=1))
show_hops("traceroute loopback", icmplib.traceroute("127.0.0.1"))
if hasattr(icmplib, "async_traceroute"):  # ours: it must give what icmplib's traceroute does
    hops = asyncio.run(icmplib.async_traceroute(targets["server6"], count=3, timeout=1))
else:
    hops = icmplib.traceroute(targets["server6"], count=3, timeout=1)
show_hops("async_traceroute server6", hops)
show_hops(
    "traceroute TTLs 2-3, fast",
    icmplib.traceroute(targets["server4"], count=3, first_hop=2, max_hops=3, fast=True),
)
show_hops(
    "traceroute blackhole",
    icmplib.traceroute(targets["blackhole4"], count=1, timeout=0.5, max_hops=4),
)

print("resolve", icmplib.resolve("localhost"), icmplib.is_hostname("localhost"))
show_error("no such name", lambda: icmplib.ping("nonexistent.invalid", count=1))
show_error("no IPv6 address", lambda: icmplib.ping("localhost", count=1, family=6))
show_error("no such name in multiping", lambda: icmplib.multiping(["::1", "nonexistent.invalid"]))
show_error(
    "foreign source",
    lambda: icmplib.ping(targets["server4"], count=1, source=targets["foreign_source"]),
)
show_error("source of the other family", lambda: icmplib.ping("127.0.0.1", 1, source="::1"))
show_error("unknown option", lambda: icmplib.ping("127.0.0.1", 1, colour="red"))
show_error("bad payload size", lambda: icmplib.ping("127.0.0.1", 1, 0.2, 1, payload_size=100))
