"""Benchmark: what porterlb installed by its chart on real lab nodes costs, in time and memory.

    .venv/bin/python -m bench.chart_lab [--workers 2] [--idle 20]

One real-node lab with porterlb installed by ``helm install`` (``porterlb lab up --nodes real``,
:mod:`porterlb.lab.node.nodelab`): the phases it reports with their times (the image build or
its cache hit, the import into every containerd, ``helm install`` and every pod Ready among
them); then, after ``--idle`` seconds with nothing to do, the resident memory (VmRSS from
``/proc``) of each manager and speaker process in its pod, found by its command line and by
the lab's cgroup root in ``/proc/PID/cgroup``. The lab is removed at the end, also after a
failure or an interruption.

To measure a cold build, remove the image archives from ``~/.cache/porterlb/images`` first
(and ``buildah rmi`` the images, for one without layer cache).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from bench import _lab
from porterlb.lab.node import kubelet, nodelab

PROC = Path("/proc")


def porterlb_processes(name: str) -> dict[int, str]:
    """PID -> role (manager, speaker) of porterlb's processes in the pods of lab ``name``."""
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cgroups = (entry / "cgroup").read_text()
        except OSError:  # gone meanwhile
            continue
        # The image's entrypoint script runs under its interpreter: python .../porterlb ROLE.
        words = [word.decode(errors="replace") for word in argv]
        role = next(
            (after for word, after in itertools.pairwise(words) if word.endswith("/porterlb")), None
        )
        lab_root = f"{kubelet.CGROUP_PREFIX}{name}-w"
        if role in ("manager", "speaker") and lab_root in cgroups:
            found[int(entry.name)] = str(role)
    return found


def rss_mib(pid: int) -> float:
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"pid {pid}: no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=nodelab.WORKERS)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds before measuring RSS")
    args = parser.parse_args()
    name = _lab.fresh_name("bchart")
    phases: list[str] = []
    started = time.monotonic()
    try:
        record = nodelab.up(name, workers=args.workers, porterlb="chart", report=phases.append)
        total = time.monotonic() - started
        time.sleep(args.idle)  # idle time to measure at, not synchronisation
        processes = porterlb_processes(name)
        rows = sorted((role, pid, rss_mib(pid)) for pid, role in processes.items())
    finally:
        nodelab.down(name)
    print(f"lab up --nodes real --porterlb chart, {args.workers} workers: {total:.1f} s")
    for line in phases:
        print(f"  {line.split(': ', 1)[1]}")
    print(f"\nidle RSS after {args.idle:.0f} s ({record.plan.name})")
    print(_lab.table(["role", "pid", "RSS MiB"], [[r, str(p), round(m, 1)] for r, p, m in rows]))


if __name__ == "__main__":
    _lab.run(main)
