"""The libFuzzer harnesses (helper/fuzz): a short run of each, and their seed corpora.

The harnesses are built with clang (``make fuzz``: libFuzzer + ASan + UBSan) from a
copy of helper/ in a temporary directory, so helper/*.o and helper/fuzz/ are left
alone.  ``BROKERPKG_FUZZ_SECONDS`` (default 30) sets how long each harness runs; both
run at once.  Any crash, leak, sanitizer report or timeout fails the test, which then
names the reproducer it kept.  Executions are printed with ``-s``.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HELPER = REPO / "helper"
FUZZ = HELPER / "fuzz"
CORPUS = FUZZ / "corpus"
HARNESSES = ("fuzz_requests", "fuzz_answers")
MAX_LEN = {"fuzz_requests": 8192, "fuzz_answers": 1600}
SECONDS = int(os.environ.get("BROKERPKG_FUZZ_SECONDS", "30"))
SANITIZER_TROUBLE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:"
    r"|deadly signal|SUMMARY: "
)

# What each answer seed answers (make_seeds.py): the reply the harness prints for it.
SEED_REPLIES = {
    "dgram-v4-echo": "1 reply ip-4 198.18.0.1 round-trip-time 0",
    "dgram-v4-error": "7 ttl-expired ip-4 198.18.0.254 round-trip-time 0 icmp-type 11 icmp-code 0",
    "dgram-v6-echo": "2 reply ip-6 2001:db8::1 round-trip-time 0",
    "v4-echo-reply": "1 reply ip-4 198.18.0.1 round-trip-time 0",
    "v4-host-unreachable": "1 no-route ip-4 198.18.0.254 round-trip-time 0",
    "v4-port-unreachable": "3 reply ip-4 198.18.0.1 round-trip-time 0",
    "v4-sctp-abort-t": "5 reply ip-4 198.18.0.1 round-trip-time 0",
    "v4-sctp-init-ack": "5 reply ip-4 198.18.0.1 round-trip-time 0",
    "v4-sctp-ttl": "5 ttl-expired ip-4 198.18.0.254 round-trip-time 0",
    "v4-ttl-mpls": (
        "7 ttl-expired ip-4 198.18.0.254 round-trip-time 0 mpls 24001,0,0,1,16,5,1,1 "
        "reply-ttl 64 icmp-type 11 icmp-code 0 reply-size 172"
    ),
    "netlink-error": "failed errno 16",
    "netlink-v4-dump": "done listed errno 0",
    "netlink-v4-stale": "done errno 0",
    "netlink-v6-dump": "continues listed errno 0",
    "sent-v4-udp": "departed",
    "sent-v6-icmp": "departed",
    "v4-ttl-plain": (
        "7 ttl-expired ip-4 198.18.0.254 round-trip-time 0 reply-ttl 64 icmp-type 11 "
        "icmp-code 0 reply-size 56"
    ),
    "v6-echo-reply": "2 reply ip-6 2001:db8::1 round-trip-time 0",
    "v4-tcp-syn-ack": "9 reply ip-4 198.18.0.1 round-trip-time 0",
    "v4-tcp-ttl": "9 ttl-expired ip-4 198.18.0.254 round-trip-time 0",
    "v6-tcp-rst": (
        "10 reply ip-6 2001:db8::1 round-trip-time 0 reply-ttl 64 reply-size 60 tcp-flags rst"
    ),
    "sent-v4-tcp": "departed",
    "v6-port-unreachable": "4 reply ip-6 2001:db8::ff round-trip-time 0",
    "v6-sctp-init-ack": "6 reply ip-6 2001:db8::1 round-trip-time 0",
    "v6-ttl-mpls": (
        "8 ttl-expired ip-6 2001:db8::ff round-trip-time 0 mpls 1048575,7,1,255 "
        "reply-ttl 64 icmp-type 3 icmp-code 0 reply-size 188"
    ),
}


def fuzz_env(**extra: str) -> dict[str, str]:
    """Our environment without the suite's sanitizer log options: reports on stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("ASAN_OPTIONS", "UBSAN_OPTIONS")}
    env.update(ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1", **extra)
    return env


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build both harnesses in a copy of helper/; skip only when clang is missing."""
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (apt-get install clang libclang-rt-14-dev)")
    build = tmp_path_factory.mktemp("fuzz-build")
    for source in HELPER.iterdir():
        if source.is_file() and (source.suffix in (".c", ".h") or source.name == "Makefile"):
            shutil.copy2(source, build / source.name)
    (build / "fuzz").mkdir()
    for source in FUZZ.glob("*.c"):
        shutil.copy2(source, build / "fuzz" / source.name)
    res = subprocess.run(
        ["make", "-C", str(build), f"-j{os.cpu_count() or 1}", "fuzz"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, (
        "make fuzz failed (clang needs libclang-rt-14-dev for -fsanitize=fuzzer):\n"
        f"{res.stdout}\n{res.stderr}"
    )
    return {name: build / "fuzz" / name for name in HARNESSES}


def test_seed_corpus_is_what_make_seeds_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_seeds", FUZZ / "make_seeds.py")
    assert spec is not None and spec.loader is not None
    make_seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_seeds)
    for folder, seeds in (("answers", make_seeds.answers()), ("requests", make_seeds.REQUESTS)):
        on_disk = {p.name: p.read_bytes() for p in (CORPUS / folder).iterdir()}
        assert on_disk == seeds, f"corpus/{folder} is stale: run helper/fuzz/make_seeds.py"
    assert set(SEED_REPLIES) == set(make_seeds.answers())


def shown(harness: Path, seed: str) -> list[str]:
    """What the answers harness prints for one seed (BROKERPKG_FUZZ_SHOW)."""
    res = subprocess.run(
        [str(harness), str(CORPUS / "answers" / seed)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=fuzz_env(BROKERPKG_FUZZ_SHOW="1"),
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def test_each_answer_seed_still_answers_its_probe(harnesses: dict[str, Path]) -> None:
    """A decoder or matching change that stops a seed reaching its probe would leave
    the fuzzer starting far from the code it should explore."""
    wrong = {}
    for seed, expected in SEED_REPLIES.items():
        lines = shown(harnesses["fuzz_answers"], seed)
        if lines != [expected]:
            wrong[seed] = lines
    assert not wrong, wrong


def test_show_mode_runs_each_input_once(harnesses: dict[str, Path]) -> None:
    """libFuzzer runs an input again when it counted more mallocs than frees during it,
    and it counts every thread's: its RSS-watching thread starts while the first input
    runs.  Show mode turns that thread off, so what a seed prints is printed once."""
    runs = 200
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        outputs = list(
            pool.map(lambda _: shown(harnesses["fuzz_answers"], "sent-v4-udp"), range(runs))
        )
    twice = [lines for lines in outputs if lines != ["departed"]]
    assert not twice, f"{len(twice)} of {runs} runs: {twice[:3]}"


def test_request_seeds_run_clean(harnesses: dict[str, Path]) -> None:
    seeds = sorted(str(p) for p in (CORPUS / "requests").iterdir())
    res = subprocess.run(
        [str(harnesses["fuzz_requests"]), *seeds],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=fuzz_env(),
    )
    assert res.returncode == 0 and not SANITIZER_TROUBLE.search(res.stderr), res.stderr


def test_short_fuzz_run_of_each_harness(harnesses: dict[str, Path], tmp_path: Path) -> None:
    runs = {}
    for name, binary in harnesses.items():
        corpus, artifacts = tmp_path / f"{name}-corpus", tmp_path / f"{name}-artifacts"
        corpus.mkdir()
        artifacts.mkdir()
        # new inputs go to the first directory; the seeds are only read
        argv = [
            str(binary),
            f"-max_total_time={SECONDS}",
            "-print_final_stats=1",
            f"-max_len={MAX_LEN[name]}",
            "-timeout=10",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={artifacts}/",
            str(corpus),
            str(CORPUS / name.split("_")[1]),
        ]
        runs[name] = (
            subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=fuzz_env()
            ),
            artifacts,
        )
    failures = []
    for name, (proc, artifacts) in runs.items():
        try:
            _, stderr = proc.communicate(timeout=SECONDS + 300)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            failures.append(f"{name}: did not stop after {SECONDS} s")
            continue
        executions = re.search(r"stat::number_of_executed_units:\s*(\d+)", stderr)
        kept = sorted(p.name for p in artifacts.iterdir())
        print(
            f"\n[figures] {name}: {executions[1] if executions else '?'} executions in "
            f"{SECONDS} s, corpus {sum(1 for _ in (tmp_path / f'{name}-corpus').iterdir())} "
            "new inputs",
            file=sys.stderr,
        )
        if proc.returncode != 0 or SANITIZER_TROUBLE.search(stderr) or kept:
            failures.append(
                f"{name}: exit {proc.returncode}, reproducers {kept} in {artifacts}"
                f"\n{stderr[-6000:]}"
            )
        elif executions is None or int(executions[1]) < 100 * SECONDS:
            failures.append(f"{name}: too few executions\n{stderr[-3000:]}")
    assert not failures, "\n\n".join(failures)
