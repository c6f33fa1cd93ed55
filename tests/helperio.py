"""Run brokerpkg-helper (or mtr-packet) over a pipe, the way shell scripts do."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

RTT = re.compile(r"round-trip-time \d+")


@dataclass(frozen=True)
class HelperRun:
    """What one run of a helper printed."""

    lines: list[str]
    stderr: str
    returncode: int


def run_helper(command: Sequence[str], requests: bytes | str, timeout: float = 20.0) -> HelperRun:
    """Feed REQUESTS on stdin, wait for the helper to exit, return its output.

    Raises subprocess.TimeoutExpired if it does not exit within TIMEOUT.
    """
    data = requests.encode() if isinstance(requests, str) else requests
    done = subprocess.run(
        list(command), input=data, capture_output=True, timeout=timeout, check=False
    )
    return HelperRun(
        done.stdout.decode("ascii", "replace").splitlines(),
        done.stderr.decode("utf-8", "replace"),
        done.returncode,
    )


def words(reply: str) -> str:
    """A reply with its round-trip time replaced by N (times differ between runs)."""
    return RTT.sub("round-trip-time N", reply)


def by_token(lines: Sequence[str]) -> dict[str, str]:
    """Replies keyed by their token (replies come in completion order)."""
    return {line.split(" ", 1)[0]: line for line in lines}
