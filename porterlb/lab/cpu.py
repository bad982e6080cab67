"""CPU seconds spent by each part of a lab: where a failover's time goes on a shared machine.

On two cores shared by a dozen processes, a failover that needs 100 API writes is as fast as
the CPU those writes cost everywhere: the API server and etcd that apply them, every watcher
that decodes them, the leader that makes them. :func:`spent` reads ``utime + stime`` of each
lab process and of its descendants (kube-apiserver and etcd run under the control-plane
process) from ``/proc``; :func:`difference` groups two readings by part (``control-plane``,
``managers``, ``speakers``, ``api-proxy``, ``kube-proxy``, ``other``). Pure but for the
reading; a process gone between two readings counts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from porterlb.lab import processes as procs

TICKS: Final = os.sysconf("SC_CLK_TCK")
"""Clock ticks per second, the unit of ``/proc/PID/stat`` times (proc(5))."""

PROC: Final = Path("/proc")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of ``pid``; None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command may hold spaces and ")"
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def spent(lab_processes: Iterable[procs.Process]) -> dict[int, tuple[str, float]]:
    """Every lab process and descendant now: pid -> (the lab role it runs under, CPU s)."""
    stats = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    roles = {process.pid: process.role for process in lab_processes}
    found: dict[int, tuple[str, float]] = {}
    for pid, (_, seconds) in stats.items():
        ancestor, hops = pid, 0
        while ancestor not in roles and ancestor in stats and hops < 64:
            ancestor, hops = stats[ancestor][0], hops + 1
        if ancestor in roles:
            found[pid] = (roles[ancestor], seconds)
    return found


def part(role: str) -> str:
    """The part of the lab a role belongs to."""
    for prefix, name in (("manager", "managers"), ("speaker", "speakers")):
        if role.startswith(prefix):
            return name
    return role if role in ("control-plane", "api-proxy", "kube-proxy") else "other"


def difference(
    before: Mapping[int, tuple[str, float]], after: Mapping[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds by part between two readings, largest first, to the millisecond."""
    totals: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        earlier = before.get(pid)
        used = seconds - earlier[1] if earlier is not None else seconds
        totals[part(role)] = totals.get(part(role), 0.0) + max(0.0, used)
    return {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
