"""What a real-node lab costs: ``lab up --nodes real`` time, cold then warm, and idle CPU/RSS.

Run as root, after ``porterlb lab build-control-plane --nodes``::

    nice .venv/bin/python -m bench.real_nodes --workers 3 --seconds 30

It brings a lab up twice under one name (the first run pays for cold page caches and the
image archive's first write; the second finds both warm), then leaves the second one idle
(no pod but the kubelets' own: none) and samples every one of its processes for
``--seconds``: those marked as the lab's (:mod:`porterlb.lab.processes`: control plane,
containerd, kubelet, kube-proxy, controllers, proxies; containerd's shims inherit the mark)
and whatever runs in the kubelets' cgroups. CPU is ``utime + stime`` from ``/proc/PID/stat``
over the window, as a percentage of one core; RSS is ``VmRSS`` at the end. The lab is
removed in ``finally``.
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from collections.abc import Iterable
from pathlib import Path

from bench import _lab
from porterlb.lab import processes as procs
from porterlb.lab.node import kubelet, nodelab

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pod_pids(name: str) -> dict[int, str]:
    """pid -> "pods" for every process in the kubelets' cgroup roots (any hierarchy)."""
    found: dict[int, str] = {}
    for hierarchy in kubelet.hierarchies():
        for root in nodelab.cgroup_roots(name):
            for listing in (hierarchy / root.lstrip("/")).rglob("cgroup.procs"):
                for line in listing.read_text().split():
                    found[int(line)] = "pods"
    return found


def _kind(role: str) -> str:
    """``kubelet/lab-w1`` -> ``kubelet``: one row per kind, summed over nodes."""
    return role.partition("/")[0] or "(shim)"


def sample(name: str, seconds: float) -> list[tuple[str, int, float, float]]:
    """(kind, processes, % of one core, RSS MiB) per kind of lab ``name``'s processes."""
    pids = {**procs.members(name), **_pod_pids(name)}
    start = {pid: _cpu_ticks(pid) for pid in pids}
    began = time.monotonic()
    time.sleep(seconds)  # the measurement window itself, not a synchronisation
    elapsed = time.monotonic() - began
    rows: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for pid, role in pids.items():
        before, after = start[pid], _cpu_ticks(pid)
        if before is None or after is None:
            continue
        row = rows[_kind(role)]
        row[0] += 1
        row[1] += (after - before) / TICKS / elapsed * 100
        row[2] += _rss_kib(pid) / 1024
    return sorted(
        ((kind, int(n), cpu, rss) for kind, (n, cpu, rss) in rows.items()), key=lambda r: -r[3]
    )


def table(ups: Iterable[tuple[str, float]], rows: list[tuple[str, int, float, float]]) -> str:
    lines = ["lab up --nodes real", *(f"  {what:<6} {seconds:6.1f} s" for what, seconds in ups)]
    lines += ["", f"{'idle':<24} {'procs':>5} {'% core':>7} {'RSS MiB':>8}"]
    lines += [f"{kind:<24} {n:>5} {cpu:>7.1f} {rss:>8.0f}" for kind, n, cpu, rss in rows]
    total = (sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows))
    lines.append(f"{'total':<24} {total[0]:>5} {total[1]:>7.1f} {total[2]:>8.0f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    name = _lab.fresh_name("rnb")
    ups = []
    try:
        for what in ("cold", "warm"):
            began = time.monotonic()
            nodelab.up(name, workers=args.workers, report=lambda line: None)
            ups.append((what, time.monotonic() - began))
            if what == "cold":
                nodelab.down(name)
        print(table(ups, sample(name, args.seconds)))
    finally:
        nodelab.down(name)


if __name__ == "__main__":
    _lab.run(main)
