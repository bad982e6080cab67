"""Benchmark: speaker RSS and CPU with 10,000 assigned IPs, idle and under ARP/NDP load.

    .venv/bin/python -m bench.speaker_scale [--ips 10000] [--rows v4,v6,mixed]
        [--idle 10] [--load-rate 10000] [--load-seconds 10] [--trace] [--pin | --no-pin] [--rt]
        [--no-caches]

A bare lab network with one worker; porterlb's announcer runs as its own process serving the
worker's ``eth0`` (``bench._speaker_proc``, with the imports of ``porterlb speaker`` so that
its baseline RSS is the real one). Before its IPs, the process is given what a real speaker
holds of the cluster (``--no-caches`` leaves it out): its placement record, listing every IP
with its Service as kube-apiserver sends it (``caches MB`` is what it adds). Each row starts
a fresh speaker and assigns ``--ips`` addresses at once:

- ``v4``: from the /18 of 198.18.0.0/15 holding the lab's LAN (the lab's own two /24s
  skipped); the router gets an on-link route for the /18, so it would resolve them on its LAN;
- ``v6``: ``::1:0`` onwards in the lab's LAN /64 (2001:db8::/32), already on-link;
- ``mixed``: half of each.

Then it measures, with the prober of ``bench.l2_answers`` in the router namespace asking for
all the IPs in turn: answers *during the gratuitous bursts* (a node taking over every IP at
once, as in a failover), RSS and CPU over an idle period once the bursts are over, and RSS,
CPU and answers under a steady load. RSS is VmRSS from /proc, sampled every 0.25 s; it
includes ~0.2 MB of the bench's own instrumentation. The router's kernel is also made to
resolve the first and last IP (a UDP datagram to each), to show they are on-link and
answered. The phase table has the speaker's socket drops, gen2 GC pauses, the event loop's
longest stall (``lag max ms``) and the share of its CPU other processes took (``other %``,
as in ``bench.l2_answers``; ``--pin`` and ``--rt`` work as there). ``--trace`` then repeats
each row in a speaker under tracemalloc (tracing doubles the memory, so it is not measured)
and lists what the assignment and the bursts left allocated, by source line.

Target (issue 12): RSS at most 60 MB with 10,000 IPs on the node.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from bench import _lab, _probe, _speaker_proc
from porterlb.lab import netns, plan

RSS_TARGET_MB = 60.0
"""Issue 12 (issue 3 had 80 MB, without the watch caches)."""
SAMPLE_INTERVAL = 0.25
BURST_LOAD_SECONDS = 6.0
"""Covers the whole default burst (announcer.BURST ends at 4.4 s) plus the time it runs late."""


class Sampler(threading.Thread):
    """Samples a process's VmRSS until stopped; ``peak`` is the largest sample in KiB."""

    def __init__(self, speaker: _speaker_proc.Speaker) -> None:
        super().__init__(name="bench/rss", daemon=True)
        self._speaker = speaker
        self._done = threading.Event()
        self.peak = 0

    def run(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL):
            self.peak = max(self.peak, self._speaker.rss_kb()[0])

    def __enter__(self) -> Sampler:
        self.peak = self._speaker.rss_kb()[0]
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join()
        self.peak = max(self.peak, self._speaker.rss_kb()[0])


@dataclasses.dataclass(slots=True)
class Row:
    name: str
    ips: int
    baseline_mb: float = 0.0
    caches_mb: float = 0.0
    update_ms: float = 0.0
    burst_end_s: float = 0.0
    gratuitous: int = 0
    gratuitous_expected: int = 0
    burst_cpu_s: float = 0.0
    burst_peak_mb: float = 0.0
    burst_load: _probe.Phase | None = None
    settled_mb: float = 0.0
    idle_peak_mb: float = 0.0
    idle_cpu_s: float = 0.0
    load: _probe.Phase | None = None
    load_peak_mb: float = 0.0
    load_cpu_s: float = 0.0
    load_stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    idle_stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    burst_stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    trace: dict[str, Any] | None = None
    resolved: str = ""
    burst_other: float = 0.0
    load_other: float = 0.0
    """Share of the speaker's CPU other processes used (see _lab.Interference)."""


def addresses(lab: plan.Lab, row: str, count: int) -> list[_probe.IPAddress]:
    """``count`` addresses for ``row``: v4, v6, or alternately one of each ("mixed")."""
    if row == "v4":
        return list(_v4(lab, count))
    if row == "v6":
        return list(_v6(lab, count))
    v4, v6 = _v4(lab, count - count // 2), _v6(lab, count // 2)
    mixed: list[_probe.IPAddress] = []
    for pair in zip(v4, v6, strict=False):
        mixed.extend(pair)
    mixed.extend(v4[len(v6) :])
    return mixed


def supernet(lab: plan.Lab) -> ipaddress.IPv4Network:
    """The /18 holding the lab's LAN: 16,384 addresses, all inside 198.18.0.0/15."""
    network = lab.lan_v4.supernet(new_prefix=18)
    assert network.subnet_of(plan.V4_BLOCK)
    return network


def _v4(lab: plan.Lab, count: int) -> list[ipaddress.IPv4Address]:
    skip = (lab.lan_v4, lab.client_v4)
    found = []
    for ip in supernet(lab).hosts():
        if not any(ip in subnet for subnet in skip):
            found.append(ip)
            if len(found) == count:
                return found
    raise ValueError(f"the /18 has fewer than {count} usable addresses")


def _v6(lab: plan.Lab, count: int) -> list[ipaddress.IPv6Address]:
    assert lab.lan_v6 is not None
    first = lab.lan_v6[0x10000]
    return [first + k for k in range(count)]


def resolve_check(lab: plan.Lab, ips: Sequence[_probe.IPAddress]) -> str:
    """Poke the first and last IP from the router; report whom its kernel resolved them to."""
    picks = [ips[0], ips[-1]]

    def poke() -> None:
        for ip in picks:
            family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"bench", (str(ip), 9))

    netns.call_in(lab.router_netns, poke)
    time.sleep(0.3)
    found = []
    for ip in picks:
        line = netns.run(lab.router_netns, ["ip", "neigh", "show", str(ip)]).strip()
        found.append(line or f"{ip}: no entry")
    return "; ".join(found)


def measure_row(
    lab: plan.Lab,
    prober: _probe.Prober,
    name: str,
    *,
    count: int,
    idle: float,
    load_rate: int,
    load_seconds: float,
    pinned: bool,
    rt: bool,
    trace: bool,
    caches: bool,
) -> Row:
    node = lab.nodes[0]
    ips = addresses(lab, name, count)
    v6 = lab.router_lan.ipv6.ip if lab.router_lan.ipv6 else None
    frames = _probe.requests(ips, sender_v4=lab.router_lan.ipv4.ip, sender_v6=v6)
    row = Row(name, len(ips))
    row.gratuitous_expected = sum(2 if ip.version == 4 else 1 for ip in ips) * 6
    with _lab.speaker(node, trace=trace) as speaker:
        _lab.place(speaker.pid, cpu=1 if pinned else None, rt=rt)
        if trace:
            speaker.call("snapshot", name="before")
        row.baseline_mb = speaker.rss_kb()[0] / 1024
        if caches:
            speaker.call("services", ips=[str(ip) for ip in ips], node=node.name)
            row.caches_mb = speaker.rss_kb()[0] / 1024 - row.baseline_mb
        cpus = {1} if pinned else set(os.sched_getaffinity(speaker.pid))
        cpu = speaker.cpu_s()
        with Sampler(speaker) as burst, _lab.Interference(speaker, cpus) as others:
            row.update_ms = 1000 * speaker.call("assign", ips=[str(ip) for ip in ips])["update_s"]
            row.burst_load = prober.run(
                frames,
                rate=load_rate,
                seconds=BURST_LOAD_SECONDS,
                responder=node.mac,
                targets=ips,
            )
            settled = speaker.call("settle", quiet=0.5, at_least=5.0, limit=300.0)
        row.burst_cpu_s = speaker.cpu_s() - cpu
        row.burst_other = others.other
        row.burst_peak_mb = burst.peak / 1024
        row.burst_end_s = settled["last_gratuitous_s"]
        row.gratuitous = settled["gratuitous"]
        if trace:
            speaker.call("snapshot", name="after")
            row.trace = speaker.call("snapdiff", old="before", new="after", top=12)
            return row
        row.settled_mb = speaker.rss_kb()[0] / 1024
        row.burst_stats = speaker.call("stats")
        row.resolved = resolve_check(lab, ips)
        cpu = speaker.cpu_s()
        with Sampler(speaker) as quiet:
            time.sleep(idle)
        row.idle_cpu_s = speaker.cpu_s() - cpu
        row.idle_peak_mb = quiet.peak / 1024
        row.idle_stats = speaker.call("stats")
        cpu = speaker.cpu_s()
        with Sampler(speaker) as busy, _lab.Interference(speaker, cpus) as others:
            row.load = prober.run(
                frames, rate=load_rate, seconds=load_seconds, responder=node.mac, targets=ips
            )
        row.load_other = others.other
        row.load_cpu_s = speaker.cpu_s() - cpu
        row.load_peak_mb = busy.peak / 1024
        row.load_stats = speaker.call("stats")
    return row


def report(rows: Sequence[Row], *, idle: float, load_rate: int) -> str:
    header = [
        "row",
        "IPs",
        "base MB",
        "caches MB",
        "update ms",
        "GARP sent",
        "of",
        "bursts end s",
        "burst CPU s",
        "burst peak MB",
        "settled MB",
        f"idle {idle:.0f}s peak MB",
        "idle CPU s",
        "load peak MB",
        "load CPU s",
    ]
    lines = [
        [
            row.name,
            row.ips,
            row.baseline_mb,
            row.caches_mb,
            row.update_ms,
            row.gratuitous,
            row.gratuitous_expected,
            row.burst_end_s,
            row.burst_cpu_s,
            row.burst_peak_mb,
            row.settled_mb,
            row.idle_peak_mb,
            row.idle_cpu_s,
            row.load_peak_mb,
            row.load_cpu_s,
        ]
        for row in rows
    ]
    out = [_lab.table(header, lines), ""]
    header = [
        "row",
        "phase",
        "rate/s",
        "sent/s",
        "requests",
        "answered",
        "lost",
        "loss %",
        "p50 µs",
        "p99 µs",
        "max µs",
        "svc p50 µs",
        "svc p99 µs",
        "sock drops",
        "gen2 GCs",
        "gen2 max ms",
        "lag max ms",
        "CPU µs/frame",
        "other %",
    ]
    lines = []
    for row in rows:
        for label, phase, stats, other, cpu in (
            ("during bursts", row.burst_load, row.burst_stats, row.burst_other, None),
            ("steady", row.load, row.load_stats, row.load_other, row.load_cpu_s),
        ):
            if phase is None:
                continue
            gen2 = (stats or {}).get("gc", {}).get("2")
            lines.append(
                [
                    row.name,
                    label,
                    load_rate,
                    phase.achieved,
                    phase.sent,
                    phase.answered,
                    phase.lost,
                    100 * phase.lost / phase.sent,
                    phase.percentile(0.5),
                    phase.percentile(0.99),
                    phase.percentile(1.0),
                    stats["service_us"]["p50"] if stats else None,
                    stats["service_us"]["p99"] if stats else None,
                    stats["socket_drops"] if stats else None,
                    gen2[0] if gen2 else (0 if stats else None),
                    1000 * gen2[2] if gen2 else None,
                    stats["loop_lag_max_ms"] if stats else None,
                    cpu / stats["frames"] * 1e6 if cpu and stats and stats["frames"] else None,
                    100 * other,
                ]
            )
    out.append(_lab.table(header, lines))
    for row in rows:
        peak = max(row.burst_peak_mb, row.idle_peak_mb, row.load_peak_mb)
        if row.trace is None:
            verdict = "met" if peak <= RSS_TARGET_MB else "MISSED"
            out.append(
                f"{row.name}: peak RSS {peak:.1f} MB with {row.ips:,} IPs "
                f"(+{peak - row.baseline_mb:.1f} MB over the {row.baseline_mb:.1f} MB baseline): "
                f"target <= {RSS_TARGET_MB:.0f} MB {verdict}; "
                f"{row.load_stats.get('gc_objects', 0):,} objects tracked by the GC"
            )
            out.append(f"  router neighbour entries: {row.resolved}")
    return "\n".join(out)


def trace_report(rows: Sequence[Row]) -> str:
    out = []
    for row in rows:
        if row.trace is None:
            continue
        total = row.trace["total"] / 1024 / 1024
        out.append(
            f"\n{row.name}: tracemalloc, what assigning {row.ips:,} IPs and their bursts left "
            f"allocated ({total:.1f} MiB in all; top sites):"
        )
        lines = [
            [where, size / 1024 / 1024, size / row.ips, count]
            for where, size, count in row.trace["top"]
        ]
        out.append(_lab.table(["site", "MiB", "bytes/IP", "blocks"], lines))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ips", type=int, default=10_000)
    parser.add_argument("--rows", default="v4,v6,mixed")
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--load-rate", type=int, default=10_000)
    parser.add_argument("--load-seconds", type=float, default=10.0)
    parser.add_argument("--trace", action="store_true", help="also a tracemalloc run per row")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--rt",
        action="store_true",
        help="run the speaker SCHED_FIFO, so other processes of a shared host cannot delay it",
    )
    parser.add_argument(
        "--caches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give the speaker its placement record, every IP in it (default: yes)",
    )
    args = parser.parse_args()
    names = args.rows.split(",")
    pinned = args.pin and len(os.sched_getaffinity(0)) >= 2
    print(
        f"CPUs {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, pinned {pinned}, "
        f"speaker SCHED_FIFO {args.rt}"
    )
    _lab.pin(0 if pinned else None)
    rows: list[Row] = []
    with _lab.bare_lab("sps", 1) as lab:
        route = str(supernet(lab))
        netns.run(lab.router_netns, ["ip", "route", "add", route, "dev", plan.ROUTER_LAN_IF])
        print(f"lab {lab.name}: router route {route} on-link; v6 in {lab.lan_v6}")
        prober = _probe.Prober.open_in(lab.router_netns, plan.ROUTER_LAN_IF)
        try:
            for trace in (False, True) if args.trace else (False,):
                for name in names:
                    row = measure_row(
                        lab,
                        prober,
                        name,
                        count=args.ips,
                        idle=args.idle,
                        load_rate=args.load_rate,
                        load_seconds=args.load_seconds,
                        pinned=pinned,
                        rt=args.rt,
                        trace=trace,
                        caches=args.caches,
                    )
                    rows.append(row)
                    print(f"  {name}{' (tracemalloc)' if trace else ''} done", flush=True)
        finally:
            prober.close()
    measured = [row for row in rows if row.trace is None]
    print()
    print(report(measured, idle=args.idle, load_rate=args.load_rate))
    print(trace_report(rows))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    _lab.run(main)
