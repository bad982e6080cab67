"""Benchmark: a speaker's heartbeat endpoint under a flood of forged datagrams.

    .venv/bin/python -m bench.heartbeat_flood [--rates 0,10000,30000,100000]
        [--kinds forged,garbage] [--seconds 10] [--pin CPU] [--rt]

Needs root (a network namespace). Three processes, so that none shares an interpreter lock
with another: porterlb's :class:`porterlb.speaker.heartbeats.Heartbeats` endpoint, built as
``porterlb speaker`` builds it (its socket opened in the namespace from the host); a pinger
(this process) that pings it every 100 ms as a manager does, and judges each round with the
manager's own :class:`porterlb.liveness.tracker.Tracker` (a round is answered in time when
its pong is back within half an interval; three rounds in a row without an answer is a
failover); and a flooder that sends datagrams at a fixed rate, bounded in count
(``rate x seconds``) and time, from another loopback address of the namespace. Only loopback
addresses of a namespace the run creates and removes are used.

The flood kinds:

- ``forged``: well-formed pings for the endpoint's node, signed with another key: every
  cheap check passes, so each costs the endpoint an HMAC (the worst a forger can do);
- ``garbage``: random bytes of the same size, refused at the magic.

The flooder sends 64 datagrams per system call (UDP GSO, ``UDP_SEGMENT``); the kernel splits
them before the endpoint's socket, which receives them one by one as from any sender.

Columns: the rate asked for and the rate sent; the datagrams the kernel dropped at the
endpoint's socket (its receive buffer full: ``/proc/net/udp``); pings answered within half an
interval; the pong latency p99 and maximum; the longest run of rounds without an answer (3
is a failover) and the rounds the tracker found the node silent in; the endpoint process's
CPU (100 % is one core); other processes' CPU on the machine (a shared host), from
``/proc/stat``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import _lab
from porterlb.api.keys import NodeName
from porterlb.lab import netns
from porterlb.liveness import guard, tracker, udp, wire
from porterlb.speaker import heartbeats

NODE = "bench-node"
KEY = bytes(range(32))
FORGER_KEY = bytes(32)
SPEAKER = "127.0.0.1"
FLOODER = "127.0.0.2"
INTERVAL = tracker.DEFAULT_INTERVAL
MAX_RATE = 500_000
"""Datagrams per second the flooder may be asked for: a bound, not a target."""
MAX_SECONDS = 120.0
SEGMENTS = 64
"""Datagrams per ``send`` with UDP GSO: the kernel's ``UDP_MAX_SEGMENTS`` before Linux 6.2."""
UDP_SEGMENT = 103
"""``include/uapi/linux/udp.h``; Python's socket module does not name it."""
WARM_UP = 1.0
"""Seconds of pings before a flood starts, and after it ends before the next."""


@dataclasses.dataclass
class Stats:
    """What the pinger saw during one row."""

    rounds: int = 0
    in_time: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)
    miss_run: int = 0
    longest_miss_run: int = 0
    silent_rounds: int = 0


class Pinger(threading.Thread):
    """Pings the endpoint every INTERVAL from the namespace, as a manager does."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(name="bench/pinger", daemon=True)
        self.sock = sock
        self.tracker = tracker.Tracker(session=os.urandom(wire.SESSION_LEN))
        self.stats = Stats()
        self.done = threading.Event()
        self._sent_at: dict[int, float] = {}
        self._answered = 0
        """The latest round answered."""

    def run(self) -> None:
        next_round = time.monotonic()
        while not self.done.is_set():
            sequence = self.tracker.next_round()
            ping = wire.Heartbeat(wire.Kind.PING, self.tracker.session, sequence, NODE)
            sent = time.monotonic()
            self._sent_at[sequence] = sent
            with contextlib.suppress(BlockingIOError):
                self.sock.sendto(wire.encode(ping, KEY), (SPEAKER, udp.DEFAULT_PORT))
            self._receive_until(sent + INTERVAL / 2)
            self.tracker.close_round()
            stats = self.stats
            stats.rounds += 1
            if self._answered >= sequence:
                stats.in_time += 1
                stats.miss_run = 0
            else:
                stats.miss_run += 1
                stats.longest_miss_run = max(stats.longest_miss_run, stats.miss_run)
            if self.tracker.silent([NodeName(NODE)], time.monotonic()):
                stats.silent_rounds += 1
            next_round = max(next_round + INTERVAL, time.monotonic())
            time.sleep(max(0.0, next_round - time.monotonic()))

    def _receive_until(self, deadline: float) -> None:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                return
            with contextlib.suppress(BlockingIOError):
                while True:
                    data, _ = self.sock.recvfrom(wire.MAX_LEN)
                    pong = wire.decode(data, KEY)
                    verdict = self.tracker.received(pong, time.monotonic())
                    if verdict is tracker.Verdict.ACCEPTED:
                        self._answered = pong.sequence
                        self.stats.latencies.append(time.monotonic() - self._sent_at[pong.sequence])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="0,10000,30000,100000")
    parser.add_argument("--kinds", default="forged,garbage")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pin", type=int, default=None, help="the endpoint's CPU")
    parser.add_argument(
        "--rt",
        action="store_true",
        help="run the endpoint, the pinger and the flooder (a child of this process) above"
        " normal tasks (SCHED_FIFO), as if the machine were theirs: a shared host's load then"
        " no longer decides the figures",
    )
    sub = parser.add_subparsers(dest="role")
    serve = sub.add_parser("serve")
    serve.add_argument("--netns", required=True)
    flood = sub.add_parser("flood")
    flood.add_argument("--netns", required=True)
    flood.add_argument("--rate", type=int, required=True)
    flood.add_argument("--seconds", type=float, required=True)
    flood.add_argument("--kind", choices=("forged", "garbage"), required=True)
    args = parser.parse_args()
    if args.role == "serve":
        asyncio.run(_serve(args.netns))
    elif args.role == "flood":
        _flood(args.netns, min(args.rate, MAX_RATE), min(args.seconds, MAX_SECONDS), args.kind)
    else:
        _lab.run(lambda: _bench(args))


async def _serve(namespace: str) -> None:
    endpoint = heartbeats.Heartbeats(
        node=NODE,
        key=KEY,
        lease=guard.Lease(session=os.urandom(8)),
        addresses=(SPEAKER,),
        netns=namespace,
    )
    await endpoint.run()


def _flood(namespace: str, rate: int, seconds: float, kind: str) -> None:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((FLOODER, 0))
        return sock

    sock = netns.call_in(namespace, make)
    ping = wire.Heartbeat(wire.Kind.PING, os.urandom(wire.SESSION_LEN), 1, NODE)
    payload = wire.encode(ping, FORGER_KEY)
    if kind == "garbage":
        payload = os.urandom(len(payload))
    sock.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, len(payload))
    sock.connect((SPEAKER, udp.DEFAULT_PORT))
    burst = payload * SEGMENTS
    total, sent, refused = int(rate * seconds) // SEGMENTS * SEGMENTS, 0, 0
    started = time.monotonic()
    while sent < total and (elapsed := time.monotonic() - started) < seconds + 1:
        due = min(total, int(elapsed * rate))
        while sent + SEGMENTS <= due:
            try:
                sock.send(burst)
            except OSError:  # ENOBUFS or ECONNREFUSED: the kernel's limits, counted
                refused += SEGMENTS
            sent += SEGMENTS
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    print(json.dumps({"sent": sent - refused, "seconds": elapsed}), flush=True)


def _child(*argv: str) -> list[str]:
    return [sys.executable, "-m", "bench.heartbeat_flood", *argv]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drops(namespace: str) -> int:
    """The endpoint socket's drop count (proc(5): the last column of /proc/net/udp)."""
    port = f":{udp.DEFAULT_PORT:04X}"
    for line in netns.run(namespace, ["cat", "/proc/net/udp"]).splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(port):
            return int(fields[-1])
    raise RuntimeError(f"no socket on port {udp.DEFAULT_PORT} in netns {namespace}")


def _bench(args: argparse.Namespace) -> None:
    rates = [min(int(rate), MAX_RATE) for rate in args.rates.split(",")]
    kinds = args.kinds.split(",")
    seconds = min(args.seconds, MAX_SECONDS)
    rows = []
    with netns.scratch(f"plbx-hbflood-{os.getpid()}") as namespace:
        endpoint = subprocess.Popen(_child("serve", "--netns", namespace))
        try:
            _lab.place(endpoint.pid, cpu=args.pin, rt=args.rt)
            if args.rt:  # the pinger thread, started below, inherits it
                _lab.place(0, cpu=None, rt=True)

            def make() -> socket.socket:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((SPEAKER, 0))
                sock.setblocking(False)
                return sock

            pinger = Pinger(netns.call_in(namespace, make))
            pinger.start()
            netns.wait_until(
                lambda: pinger.stats.in_time > 0, timeout=30.0, what="the endpoint's first pong"
            )
            for kind in kinds:
                for rate in rates:
                    rows.append(_row(namespace, endpoint.pid, pinger, kind, rate, seconds))
                    print(_lab.table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
            pinger.done.set()
            pinger.join()
        finally:
            endpoint.terminate()
            endpoint.wait()
    print()
    print(
        f"{seconds:.0f} s per row, a ping every {INTERVAL * 1000:.0f} ms; load average at the end:"
        f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(_lab.table(HEADER, rows))


HEADER = (
    "kind",
    "rate/s",
    "sent/s",
    "dropped %",
    "answered %",
    "p99 ms",
    "max ms",
    "miss run",
    "silent",
    "endpoint CPU %",
    "others CPU %",
)


def _row(
    namespace: str, pid: int, pinger: Pinger, kind: str, rate: int, seconds: float
) -> tuple[object, ...]:
    time.sleep(WARM_UP)
    drops, cpu = _drops(namespace), _cpu_seconds(pid)
    machine = _lab.cpu_times(set(range(os.cpu_count() or 1)))
    pinger.stats = stats = Stats()
    started = time.monotonic()
    sent, flooded = 0, seconds
    if rate:
        done = subprocess.run(
            _child("flood", "--netns", namespace, "--rate", str(rate), "--seconds", str(seconds),
                   "--kind", kind),
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        report = json.loads(done.stdout)
        sent, flooded = report["sent"], report["seconds"]
    else:
        time.sleep(seconds)
    pinger.stats = Stats()  # the row ends here; rounds from now on go nowhere
    wall = time.monotonic() - started
    own = _cpu_seconds(pid) - cpu
    others = _lab.cpu_times(set(range(os.cpu_count() or 1))).busy - machine.busy - own
    dropped = _drops(namespace) - drops
    latencies = sorted(stats.latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
    return (
        kind,
        rate,
        sent / flooded,
        100.0 * dropped / sent if sent else 0.0,
        100.0 * stats.in_time / stats.rounds if stats.rounds else None,
        p99 * 1000 if p99 is not None else None,
        max(latencies) * 1000 if latencies else None,
        stats.longest_miss_run,
        stats.silent_rounds,
        100.0 * own / wall,
        100.0 * others / wall,
    )


if __name__ == "__main__":
    main()
