"""A scripted stand-in for brokerpkg-helper, run by the tests with sys.executable.

Usage: fake_helper.py SCENARIO [--features ours|mtr] [--feature NAME=VALUE]...
                               [--max-probes N] [--log FILE] [--count N]
                               [--delay SECONDS]

It answers ``check-support`` from a feature profile (ours, or what mtr-packet 0.95 says)
and ``send-probe`` as SCENARIO says.  Replies name the probe's own target address.
Scenarios:

  echo        answer every probe at once (details appended when ``details yes``)
  reverse     hold replies until --count probes arrived, then answer newest first
  exit-after  after --count probes, say a last word on stderr and exit 3, answering none
  silent      never answer probes
  token0      answer every probe with ``0 command-parse-error`` only
  garbage     before each answer, print garbage lines and odd bytes
  delay       answer each probe after --delay seconds
  privilege   say on stderr that raw sockets need privilege, exit 1 before reading
  nosend      say ``no`` to send-probe
  stderr-flood write 300 KiB on stderr first, then behave like echo
  close-stdout close stdout after the first probe but keep running
  malformed   answer probes with a reply whose round-trip-time is not a number
  invalid     answer probes with ``invalid-argument reason ttl-out-of-range``
  throttle    answer every probe at once, but pause --delay seconds after every
              --count probes (a helper that reads its requests slowly)
  network     answer as the simulated network of --topology FILE would (simnet.py):
              by the probe's flow (a random flow without one) and ttl, after
              --delay seconds; no-reply after the probe's timeout when nobody answers

--feature NAME=VALUE answers check-support for NAME with VALUE (after the profile).
--topology FILE is the network scenario's network (simnet.Network.to_json).
--log FILE appends every request line received (exactly as read) to FILE.
--pidfile FILE writes the fake's process id to FILE at start.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from simnet import Network

OURS = {
    "version": "brokerpkg-0.1.0",
    "send-probe": "ok",
    "ip-4": "ok",
    "ip-6": "ok",
    "icmp": "ok",
    "udp": "ok",
    "tcp": "ok",
    "sctp": "no",
    "mark": "no",
    "local-device": "ok",
    "fractional-timeout": "ok",
    "details": "ok",
    "sockets": "raw",
    "max-probes": "131072",
    "flow": "ok",
}
MTR_PACKET = {
    "version": "0.95",
    "send-probe": "ok",
    "ip-4": "ok",
    "ip-6": "ok",
    "icmp": "ok",
    "udp": "ok",
    "tcp": "ok",
    "sctp": "no",
    "mark": "ok",
}

_lock = threading.Lock()


def emit(data: bytes) -> None:
    """Write raw bytes to stdout at once."""
    with _lock:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except (BrokenPipeError, ValueError, OSError):
            os._exit(0)


def say(line: str) -> None:
    emit(line.encode("ascii") + b"\n")


def parse(line: bytes) -> tuple[str, str, dict[str, str]]:
    words = line.decode("ascii", "replace").split()
    args = dict(zip(words[2::2], words[3::2], strict=False))
    return words[0], words[1] if len(words) > 1 else "", args


def answer_for(token: str, args: dict[str, str]) -> str:
    family = "ip-6" if "ip-6" in args else "ip-4"
    address = args.get(family, "127.0.0.1")
    text = f"{token} reply {family} {address} round-trip-time 250"
    if args.get("details") == "yes":
        text += " reply-ttl 64 icmp-type 0 icmp-code 0 reply-size 84"
    return text


def network_answer(network: Network, token: str, args: dict[str, str], delay: float) -> None:
    """Answer a probe as ``network`` would: after ``delay``, or no-reply at its timeout."""
    family = "ip-6" if "ip-6" in args else "ip-4"
    target = args.get(family, "127.0.0.1")
    flow = int(args["flow"]) if "flow" in args else None
    answer = network.answer(flow, int(args.get("ttl", "255")), target, 6 if family == "ip-6" else 4)
    if answer is None:
        later(float(args.get("timeout", "10")), f"{token} no-reply")
        return
    microseconds = round(answer.rtt * 1000)
    text = f"{token} {answer.kind} {family} {answer.address} round-trip-time {microseconds}"
    if answer.mpls:
        text += " mpls " + ",".join(str(number) for entry in answer.mpls for number in entry)
    if delay:
        later(delay, text)
    else:
        say(text)


def later(seconds: float, line: str) -> None:
    """Say ``line`` after ``seconds``."""
    timer = threading.Timer(seconds, say, [line])
    timer.daemon = True
    timer.start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("--features", default="ours")
    parser.add_argument("--max-probes")
    parser.add_argument("--log")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--pidfile")
    parser.add_argument("--feature", action="append", default=[])
    parser.add_argument("--topology")
    options = parser.parse_args()
    if options.pidfile:
        with open(options.pidfile, "w") as stream:
            stream.write(str(os.getpid()))
    features = dict(OURS if options.features == "ours" else MTR_PACKET)
    if options.max_probes:
        features["max-probes"] = options.max_probes
    for pair in options.feature:
        name, _, value = pair.partition("=")
        features[name] = value
    if options.scenario == "nosend":
        features["send-probe"] = "no"
    if options.scenario == "privilege":
        sys.stderr.write(  # helper/main.c report_no_sockets
            "brokerpkg-helper: no privilege for raw sockets (Operation not permitted) and "
            "unprivileged ICMP is off; fix: sudo brokerpkg setup (other ways: "
            "brokerpkg-helper(8), PRIVILEGES)\n"
        )
        sys.exit(1)
    if options.scenario == "stderr-flood":
        for number in range(3000):
            sys.stderr.write(f"noise line {number} " + "x" * 90 + "\n")
        sys.stderr.write("last words of the flood\n")
        sys.stderr.flush()
    log = open(options.log, "ab", buffering=0) if options.log else None  # noqa: SIM115
    network = None
    if options.topology:
        with open(options.topology) as stream:
            network = Network.from_json(stream.read())
    held: list[str] = []
    probes = 0
    for line in sys.stdin.buffer:
        if log:
            log.write(line)
        token, command, args = parse(line)
        if command == "check-support":
            say(f"{token} feature-support support {features.get(args.get('feature', ''), 'no')}")
            continue
        if command != "send-probe":
            say(f"{token} unknown-command")
            continue
        probes += 1
        scenario = options.scenario
        if scenario in ("echo", "stderr-flood", "nosend"):
            say(answer_for(token, args))
        elif scenario == "reverse":
            held.append(answer_for(token, args))
            if len(held) >= options.count:
                for text in reversed(held):
                    say(text)
                held.clear()
        elif scenario == "exit-after":
            if probes >= options.count:
                sys.stderr.write("fake-helper: first words\n")
                sys.stderr.write("fake-helper: fatal: socket exploded\n")
                sys.stderr.flush()
                os._exit(3)
        elif scenario == "token0":
            say("0 command-parse-error")
        elif scenario == "garbage":
            emit(b"\xff\xfe\x00 total garbage\n")
            emit(b"\n")
            emit(b"   \n")
            emit(b"notatoken reply ip-4 127.0.0.1\n")
            emit(b"99999999999 reply\n")
            emit(b"42\n")
            emit(b"\t7 reply\r\n")
            emit(b"99999 reply ip-4 127.0.0.1 round-trip-time 1\n")
            say(answer_for(token, args))
        elif scenario == "delay":
            timer = threading.Timer(options.delay, say, [answer_for(token, args)])
            timer.daemon = True
            timer.start()
        elif scenario == "close-stdout":
            sys.stdout.flush()
            os.close(1)
            time.sleep(30)
        elif scenario == "throttle":
            say(answer_for(token, args))
            if probes % options.count == 0:
                sys.stdout.flush()
                time.sleep(options.delay)
        elif scenario == "network" and network is not None:
            network_answer(network, token, args, options.delay)
        elif scenario == "invalid":
            say(f"{token} invalid-argument reason ttl-out-of-range")
        elif scenario == "malformed":
            say(f"{token} reply ip-4 127.0.0.1 round-trip-time fast")
        # "silent": nothing
    time.sleep(options.delay if options.scenario == "delay" else 0)
    if network is not None:  # answer the no-replies still waiting for their timeout
        for thread in threading.enumerate():
            if isinstance(thread, threading.Timer):
                thread.join()


if __name__ == "__main__":
    main()
