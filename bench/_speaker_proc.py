"""The speaker under test: one porterlb ``Announcer`` in its own process, driven over stdin.

A separate process, so the prober's CPU never shares a GIL with the announcer. It is built as
``porterlb speaker`` builds it (``afpacket.AfPacketConn.open`` with ``netns=``, from the host
namespace) but takes its IPs from the bench instead of the API. The bench talks to it in JSON
lines (one command in, one answer out): ``services``, ``assign``, ``settle``, ``stats``,
``calibrate`` and ``breakdown`` (in-process timings), ``profile`` (cProfile),
``snapshot``/``snapdiff`` (tracemalloc) and ``quit``.

``services`` gives the process what a real speaker holds besides its announcer: a
``porterlb.speaker.agent.Speaker`` (whose client never connects) takes its node's placement
record listing every IP (:func:`bench._placement_object.placement`), through its reflector
into its watch cache and its assignments, as from a real watch.

What it measures from inside, and the parent cannot see from ``/proc``:

- *service time*: the time the conn's answer function took over a batch (decide, count and
  answer it, on the reader thread), divided evenly over the batch's frames; its sum over a
  phase is the reader's busy time;
- the socket's own drop count (``PACKET_STATISTICS``; read from ``AfPacketConn._sock``, since
  no public API exposes the socket: one of two private reaches into porterlb, the other being
  ``Announcer._answer`` for the in-process timings);
- garbage-collector pauses, by generation (``gc.callbacks``);
- event-loop lag: how late a 10 ms timer fires, i.e. the longest stretch in which one task
  kept the loop to itself.

    python -m bench._speaker_proc --netns plb-NAME-w1 [--ifname eth0] [--imports speaker]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import cProfile
import gc
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from porterlb.api.keys import NodeName
from porterlb.l2 import afpacket, announcer, conn, ethernet, fastpath, metrics, responder

SOL_PACKET = 263
PACKET_STATISTICS = 6
"""include/uapi/linux/if_packet.h: ``struct tpacket_stats``; reading it resets it."""
LAG_TICK = 0.01
"""Seconds between two event-loop lag samples."""
REPEATS = 5
"""In-process timings keep the best of this many runs."""
HISTOGRAM_US = 20_000
"""Service times are kept to the µs up to 20 ms (160 KB, part of the RSS measured)."""


class _Stats:
    def __init__(self) -> None:
        self.service = array.array("q", bytes(8 * HISTOGRAM_US))
        """Frames by service time, one bucket per µs; the last holds everything slower.
        Fixed size, so that measuring does not grow the RSS being measured."""
        self.gratuitous = 0
        self.first_gratuitous: float | None = None
        self.last_gratuitous: float | None = None
        self.gc: dict[int, list[float]] = {}
        """generation -> pause durations in seconds, since the last ``stats``."""
        self.conflicts = 0
        self.lag_max = 0.0
        """Longest the event loop was late for a 10 ms timer, since the last ``stats``."""


class _TimedConn:
    """An AfPacketConn that times the responder's work on each frame and counts burst sends."""

    def __init__(self, inner: afpacket.AfPacketConn, stats: _Stats) -> None:
        self._inner = inner
        self._stats = stats

    @property
    def ifname(self) -> str:
        return self._inner.ifname

    @property
    def mac(self) -> ethernet.MacAddress:
        return self._inner.mac

    async def serve(self, answer: conn.Answer) -> None:
        stats = self._stats

        def timed(frames: list[bytes]) -> None:
            started = time.perf_counter_ns()
            answer(frames)
            bucket = (time.perf_counter_ns() - started) // 1000 // len(frames)
            # Read ``stats.service`` each time: ``cmd_stats`` swaps it, on the loop's thread.
            stats.service[min(bucket, HISTOGRAM_US - 1)] += len(frames)

        await self._inner.serve(timed)

    def transmit(self, frame: bytes) -> None:
        self._inner.transmit(frame)

    async def send(self, frame: bytes) -> None:
        await self._inner.send(frame)
        if frame[0] & 1:
            # To a group: a gratuitous frame (or a probe, or an answer to a DAD probe, which
            # the bench does not send); answers to its requests are unicast. Cheaper than
            # asking which task sends, which the measured CPU time would include.
            now = time.monotonic()
            self._stats.gratuitous += 1
            self._stats.last_gratuitous = now
            if self._stats.first_gratuitous is None:
                self._stats.first_gratuitous = now

    def join(self, ip: ipaddress.IPv6Address) -> None:
        self._inner.join(ip)

    def leave(self, ip: ipaddress.IPv6Address) -> None:
        self._inner.leave(ip)

    def close(self) -> None:
        self._inner.close()

    def socket_stats(self) -> tuple[int, int]:
        sock: socket.socket = self._inner._sock  # no public way to the socket
        packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        return packets, drops

    def rcvbuf(self) -> int:
        sock: socket.socket = self._inner._sock
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


class _NullConn:
    """A PacketConn that sends nowhere: for timing the per-frame Python work alone."""

    def __init__(self, ifname: str, mac: ethernet.MacAddress) -> None:
        self.ifname = ifname
        self.mac = mac

    async def serve(self, answer: conn.Answer) -> None:
        raise NotImplementedError

    def transmit(self, frame: bytes) -> None:
        return None

    async def send(self, frame: bytes) -> None:
        return None

    def join(self, ip: ipaddress.IPv6Address) -> None:
        return None

    def leave(self, ip: ipaddress.IPv6Address) -> None:
        return None

    def close(self) -> None:
        return None


class _Child:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = _Stats()
        self.conns: list[_TimedConn] = []
        self.announcer = announcer.Announcer(open_conn=self._open, on_conflict=self._conflict)
        self.speaker: Any = None
        """The speaker holding its placement record (``services``), kept alive."""
        self.client: Any = None
        """The speaker's API client (``--imports speaker``), which never connects."""
        self.profile: cProfile.Profile | None = None
        self.snapshots: dict[str, tracemalloc.Snapshot] = {}
        self.assigned_at = time.monotonic()
        gc.callbacks.append(self._gc)
        self._gc_started = 0.0

    async def _open(self, ifname: str) -> _TimedConn:
        inner = await afpacket.AfPacketConn.open(ifname, netns=self.args.netns)
        timed = _TimedConn(inner, self.stats)
        self.conns.append(timed)
        return timed

    def _conflict(self, ip: Any, ifname: str, mac: ethernet.MacAddress) -> None:
        self.stats.conflicts += 1

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_started
            self.stats.gc.setdefault(info["generation"], []).append(pause)

    async def watch_lag(self) -> None:
        """Measure how long the event loop goes without running other tasks."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_TICK)
            self.stats.lag_max = max(self.stats.lag_max, loop.time() - started - LAG_TICK)

    async def serve(self, reader: asyncio.StreamReader, out: IO[str]) -> None:
        while line := await reader.readline():
            command = json.loads(line)
            if command["cmd"] == "quit":
                return
            try:
                answer = await getattr(self, "cmd_" + command.pop("cmd"))(**command)
            except Exception as exc:  # handed to the bench, which raises it there
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(answer) + "\n")
            out.flush()

    async def cmd_services(self, ips: list[str], node: str) -> dict[str, Any]:
        """Feed a speaker of `node` its placement record, every IP of `ips` in it."""
        from bench import _placement_object
        from porterlb.speaker import agent

        assert self.client is not None, "services needs --imports speaker"
        self.speaker = agent.Speaker(self.client, node=NodeName(node), netns=self.args.netns)
        started = time.monotonic()
        self.speaker.record.receive(_placement_object.placement(ips, node=node, pool="lan"))
        return {"fed_s": time.monotonic() - started, "mine": len(self.speaker.mine)}

    async def cmd_assign(self, ips: list[str], probe: bool = False) -> dict[str, Any]:
        # The speaker hands the announcer the address objects of its record (``_apply``), so
        # an IP it was given with ``services`` is that very object here too, not a copy.
        known = {ip: ip for ip in self.speaker.mine} if self.speaker is not None else {}
        wanted = {}
        for text in ips:
            ip = ipaddress.ip_address(text)
            wanted[known.get(ip, ip)] = announcer.Announcement(self.args.ifname, probe=probe)
        del known
        self.stats.first_gratuitous = self.stats.last_gratuitous = None
        self.assigned_at = started = time.monotonic()
        self.announcer.update(wanted)
        return {"update_s": time.monotonic() - started}

    async def cmd_settle(self, quiet: float, at_least: float, limit: float) -> dict[str, Any]:
        """Wait until the bursts are over: no gratuitous frame for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        while True:
            now = time.monotonic()
            last = self.stats.last_gratuitous
            if last is not None and now - last >= quiet and now - self.assigned_at >= at_least:
                break
            if now > deadline:
                raise TimeoutError(f"bursts still running after {limit} s (last send {last})")
            await asyncio.sleep(0.05)
        first = self.stats.first_gratuitous
        assert first is not None and last is not None
        per_ip: dict[int, int] = {}  # gratuitous frames sent for one IP -> how many IPs
        for metric in metrics.GRATUITOUS_SENT.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    per_ip[int(sample.value)] = per_ip.get(int(sample.value), 0) + 1
        return {
            "first_gratuitous_s": first - self.assigned_at,
            "last_gratuitous_s": last - self.assigned_at,
            "gratuitous": self.stats.gratuitous,
            "frames_per_ip": dict(sorted(per_ip.items())),
        }

    async def cmd_stats(self) -> dict[str, Any]:
        service, self.stats.service = self.stats.service, array.array("q", bytes(8 * HISTOGRAM_US))
        gcs, self.stats.gc = self.stats.gc, {}
        lag, self.stats.lag_max = self.stats.lag_max, 0.0
        packets = drops = 0
        for timed in self.conns:
            more_packets, more_drops = timed.socket_stats()  # since the last call
            packets += more_packets
            drops += more_drops
        verdicts: dict[str, float] = {}
        for metric in metrics.FRAMES.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    verdict = sample.labels["verdict"]
                    verdicts[verdict] = verdicts.get(verdict, 0) + sample.value
        frames = sum(service)
        busy_us = sum(us * count for us, count in enumerate(service))

        def pick(fraction: float) -> int | None:
            rank, seen = fraction * frames, 0
            for us, count in enumerate(service):
                seen += count
                if count and seen >= rank:
                    return us
            return None

        return {
            "verdicts": verdicts,
            "socket_packets": packets,
            "socket_drops": drops,
            "rcvbuf": self.conns[0].rcvbuf() if self.conns else None,
            "frames": frames,
            "service_busy_s": busy_us / 1e6,
            "service_us": {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
            "gc": {str(gen): [len(p), sum(p), max(p)] for gen, p in sorted(gcs.items())},
            "gc_objects": len(gc.get_objects()),
            "conflicts": self.stats.conflicts,
            "loop_lag_max_ms": lag * 1000,
        }

    async def cmd_calibrate(
        self, frames: dict[str, str], count: int
    ) -> dict[str, dict[str, float]]:
        """CPU µs per frame of the announcer's own handling, without the socket.

        ``reference`` is ``responder.handle`` alone (full decode, ownership, the answer's
        bytes), ``fast`` is ``fastpath.decide`` (the same verdict from slices; the announcer
        falls back to the reference only when it declines); ``total`` is the responder
        task's whole step for one frame (``Announcer._answer``: the fast path or the
        reference, the counters, the conflict check) on a conn whose ``send`` does nothing,
        and ``in batch`` the same per frame for a batch of ``conn.BATCH``. All are porterlb's
        Python cost alone; the reader thread adds a ``poll``, a ``recv`` and a ``send``.
        """
        assert self.conns, "calibrate after the interface is open"
        null = _NullConn(self.args.ifname, self.conns[0].mac)
        answer = self.announcer._answer  # the per-batch step; no public seam runs it alone
        owns, owns_packed, mac = self.announcer.owns, self.announcer.owns_packed, null.mac
        costs = {}
        for name, text in frames.items():
            frame = bytes.fromhex(text)
            batch = [frame] * conn.BATCH

            def reference(frame: bytes = frame) -> None:
                responder.handle(frame, ifname=null.ifname, mac=mac, owns=owns)

            def fast(frame: bytes = frame) -> None:
                fastpath.decide(frame, ifname=null.ifname, mac=mac.octets, owns=owns_packed)

            def whole(frame: bytes = frame) -> None:
                answer(null, [frame])

            def batched(batch: list[bytes] = batch) -> None:
                answer(null, batch)

            costs[name] = {
                "reference": _best(reference, count),
                "fast": _best(fast, count),
                "total": _best(whole, count),
                "in batch": _best(batched, count // len(batch)) / len(batch),
            }
        costs["reference"] = {"loop_ms": min(_reference_loop() for _ in range(REPEATS)) * 1000}
        return costs

    async def cmd_breakdown(self, frame: str, count: int) -> dict[str, float]:
        """CPU µs of each step ``Announcer._answer`` takes for one answered request ``frame``.

        The steps are timed one at a time through the public fast path and metrics API, in
        the order the responder runs them, so they add up to about ``calibrate``'s total.
        """
        data = bytes.fromhex(frame)
        ifname, mac = self.args.ifname, self.conns[0].mac
        owns_packed = self.announcer.owns_packed
        decided = fastpath.decide(data, ifname=ifname, mac=mac.octets, owns=owns_packed)
        assert decided is not None and decided.target is not None
        target = decided.target
        steps: dict[str, Any] = {
            "fastpath.decide": lambda: fastpath.decide(
                data, ifname=ifname, mac=mac.octets, owns=owns_packed
            ),
            "of which Announcer.owns_packed": lambda: owns_packed(target, ifname),
            "frames(...).inc() (once a batch)": lambda: metrics.frames(ifname, "answered").inc(),
            "metrics.answered() (once a batch)": lambda: metrics.answered([target], []),
        }
        return {name: _best(step, count) for name, step in steps.items()}

    async def cmd_profile(self, action: str, path: str | None = None) -> dict[str, Any]:
        if action == "start":
            self.profile = cProfile.Profile()
            self.profile.enable()
        else:
            assert self.profile is not None and path is not None
            self.profile.disable()
            self.profile.dump_stats(path)
            self.profile = None
        return {}

    async def cmd_snapshot(self, name: str) -> dict[str, Any]:
        gc.collect()
        self.snapshots[name] = tracemalloc.take_snapshot()
        return {"traced_kb": tracemalloc.get_traced_memory()[0] // 1024}

    async def cmd_snapdiff(self, old: str, new: str, top: int) -> dict[str, Any]:
        diff = self.snapshots[new].compare_to(self.snapshots[old], "lineno")
        lines = [[str(stat.traceback[0]), stat.size_diff, stat.count_diff] for stat in diff[:top]]
        return {"top": lines, "total": sum(stat.size_diff for stat in diff)}


async def _main(args: argparse.Namespace) -> None:
    child = _Child(args)
    if args.imports == "speaker":
        # The real ``porterlb speaker`` loads and builds its Kubernetes client before it
        # learns of any IP: part of the baseline RSS.
        child.client = _speaker_client()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)  # an assign of 10,000 IPs is ~200 KB
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    async with asyncio.TaskGroup() as group:
        running = group.create_task(child.announcer.run(), name="bench/speaker/l2")
        lag = group.create_task(child.watch_lag(), name="bench/lag")
        try:
            await child.serve(reader, sys.stdout)
        finally:
            running.cancel()
            lag.cancel()


class Speaker:
    """The parent's handle on a ``_speaker_proc`` child; ``close`` ends it."""

    def __init__(self, netns: str, *, ifname: str, imports: str, trace: bool, log: Path) -> None:
        argv = [sys.executable]
        if trace:
            argv += ["-X", "tracemalloc=1"]
        argv += ["-m", "bench._speaker_proc", "--netns", netns, "--ifname", ifname]
        argv += ["--imports", imports]
        self._log = log.open("ab")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
            preexec_fn=_die_with_parent,
        )
        self.pid: int = self._read()["pid"]
        self.log = log

    def call(self, cmd: str, **arguments: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"cmd": cmd, **arguments}) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(5)
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"speaker exited with {self._proc.returncode}:\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"speaker: {answer['error']}")
        return answer

    def rss_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) from /proc, in KiB."""
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines()
        )
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def cpu_s(self) -> float:
        """User + system CPU seconds so far, from /proc/PID/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        try:
            if self._proc.poll() is None and self._proc.stdin is not None:
                try:
                    self._proc.stdin.write('{"cmd": "quit"}\n')
                    self._proc.stdin.close()
                except BrokenPipeError:
                    pass
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        finally:
            self._log.close()


def _best(step: Callable[[], object], count: int) -> float:
    """CPU µs per call of ``step``: the best of ``REPEATS`` runs of ``count // REPEATS`` calls.

    The minimum, as ``timeit`` advises: noise from a shared host only ever adds time.
    """
    runs = []
    for _ in range(REPEATS):
        started = time.process_time()
        for _ in range(count // REPEATS):
            step()
        runs.append(time.process_time() - started)
    return min(runs) / (count // REPEATS) * 1e6


def _reference_loop() -> float:
    """CPU seconds of a fixed pure-Python loop: how fast this machine runs Python right now.

    One million integer additions in a function take ~0.03 s on a current desktop CPU with
    CPython 3.11; the ratio scales the per-frame figures to other machines, roughly.
    """
    started = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i
    assert total
    return time.process_time() - started


def _speaker_client() -> Any:
    """A client built as ``porterlb speaker`` builds its own (``kube_client.connect``, its
    transport and TLS context included), for a server it never reaches."""
    import tempfile

    import porterlb.speaker.agent  # noqa: F401  (the rest of the speaker's imports)
    from porterlb.kube import client as kube_client

    with tempfile.TemporaryDirectory(prefix="plb-bench-") as directory:
        kubeconfig = Path(directory) / "config"
        kubeconfig.write_text(
            json.dumps(
                {
                    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                    "users": [{"name": "u", "user": {"token": "never-sent"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        return kube_client.connect(kubeconfig, via="httpx2")


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True)
    parser.add_argument("--ifname", default="eth0")
    parser.add_argument("--imports", choices=("l2", "speaker"), default="speaker")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
