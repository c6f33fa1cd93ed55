"""Running exporters in lab namespaces, for tests/test_exporter_lab.py and the benchmarks.

The test process lives in the root namespace and must not reach lab addresses from
there, so HTTP requests to an exporter (or to Prometheus) are made by a short Python
program run inside the namespace (:func:`http_get`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "helper" / "brokerpkg-helper"

_FETCH = """
import sys, urllib.request, urllib.error
request = urllib.request.Request(sys.argv[1], method=sys.argv[2])
for header in sys.argv[3:]:
    name, _, value = header.partition(":")
    request.add_header(name, value)
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as error:
    status, body = error.code, error.read()
sys.stdout.write(str(status) + "\\n")
sys.stdout.buffer.write(body)
"""


def http_get(
    lab: Any, node: Any, url: str, *, method: str = "GET", headers: Sequence[str] = ()
) -> tuple[int, str]:
    """(status, body) of one HTTP request made from inside ``node``'s namespace.

    Raises LabError when the request cannot be made at all (connection refused...).
    """
    done = lab.run(node, [sys.executable, "-c", _FETCH, url, method, *headers], timeout=60)
    status, _, body = done.stdout.partition("\n")
    return int(status), body


def wait_http(lab: Any, node: Any, url: str, timeout: float = 30.0) -> str:
    """Wait until ``url`` answers 200 from inside ``node``; its body.

    Raises TimeoutError when it never does.
    """
    deadline = time.monotonic() + timeout
    while True:
        done = lab.run(node, [sys.executable, "-c", _FETCH, url, "GET"], check=False, timeout=60)
        if done.returncode == 0 and done.stdout.startswith("200\n"):
            return str(done.stdout[4:])
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer: {done.stderr.strip()[-300:]}")
        time.sleep(0.2)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics page: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def families(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Metric family name -> (type, label names of its samples, ``le`` and ``quantile``
    left out) of a metrics page."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for family in text_string_to_metric_families(text):
        names: set[str] = set()
        for sample in family.samples:
            names |= set(sample.labels) - {"le", "quantile"}
        found[family.name] = (family.type, frozenset(names))
    return found


def value(
    page: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The value of the one sample ``name`` whose labels include ``labels``.

    Raises KeyError when none or several match.
    """
    matches = [
        number
        for (sample, sample_labels), number in page.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    ]
    if len(matches) != 1:
        raise KeyError(f"{len(matches)} samples {name}{labels}")
    return matches[0]


def exporter_argv(args: Sequence[str]) -> list[str]:
    """argv running ``brokerpkg exporter ARGS`` from this tree."""
    return [sys.executable, "-m", "brokerpkg", "exporter", *args]


def exporter_env(
    extra: Mapping[str, str] | None = None, helper: str | os.PathLike[str] = HELPER
) -> dict[str, str]:
    """The environment of an exporter from this tree, running ``helper`` (default: the
    helper built in the tree)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    env["BROKERPKG_HELPER"] = str(helper)
    if extra:
        env.update(extra)
    return env


def start(lab: Any, node: Any, argv: Sequence[str], env: Mapping[str, str], log: Path) -> Any:
    """Start ``argv`` in ``node`` with stdout and stderr going to ``log``."""
    stream = open(log, "wb")  # noqa: SIM115 - closed with the process by the caller
    try:
        return lab.popen(node, list(argv), env=dict(env), stdout=stream, stderr=subprocess.STDOUT)
    finally:
        stream.close()


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its living descendants,
    plus what its reaped children used."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    first = True
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
        total += (utime + stime) / ticks
        if first:
            total += (cutime + cstime) / ticks
            first = False
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            pending.extend(int(word) for word in task.read_text().split())
    return total


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found.extend(int(word) for word in task.read_text().split())
    return found


def prometheus_query(lab: Any, node: Any, base: str, query: str) -> list[dict[str, Any]]:
    """The result vector of an instant query to the Prometheus at ``base``.

    Raises AssertionError when Prometheus answers an error.
    """
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body = http_get(lab, node, url)
    document = json.loads(body)
    assert status == 200 and document["status"] == "success", body
    return list(document["data"]["result"])
