"""What the layer-2 benchmarks share: a bare namespace lab, the speaker under test, a table.

The packet benchmarks run on the lab's network alone (``porterlb.lab.network``): no API server,
no manager, no kube-proxy stand-in, so nothing but the speaker, the prober and the kernel uses
the CPUs during a measurement, and a run starts in a fraction of a second. The speaker is an
``Announcer`` fed by the bench (``bench._speaker_proc``), built exactly as ``porterlb speaker``
builds it. Everything a run creates is removed in ``finally``; SIGTERM and SIGHUP are turned
into KeyboardInterrupt so that the cleanup runs for them too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

from bench import _speaker_proc
from porterlb.lab import network, plan


def interruptible() -> None:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt, so ``finally`` blocks clean up."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


def run(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``; an interruption exits 130 after its cleanup ran."""
    interruptible()
    try:
        main()
    except KeyboardInterrupt as interrupt:
        print(f"interrupted ({str(interrupt) or 'SIGINT'}); everything the run made is removed")
        sys.exit(130)


def fresh_name(prefix: str) -> str:
    """A lab name no running lab uses and whose address index no running lab has."""
    running = network.running()
    return next(
        name
        for n in itertools.count()
        if (name := f"{prefix}{os.getpid() % 100000}-{n}") not in running
        and not plan.clashes(name, running)
    )


@contextlib.contextmanager
def bare_lab(prefix: str, workers: int) -> Iterator[plan.Lab]:
    """A lab network (IPv4 and IPv6) under a fresh name, removed on exit."""
    lab = plan.build(fresh_name(prefix), workers, ipv6=True)
    try:
        network.up(lab)
        yield lab
    finally:
        network.down(lab.name)


@contextlib.contextmanager
def speaker(
    node: plan.Node, *, imports: str = "speaker", trace: bool = False
) -> Iterator[_speaker_proc.Speaker]:
    """A speaker process serving ``node``'s interface; its stderr goes to a temporary log."""
    with tempfile.TemporaryDirectory(prefix="porterlb-bench-") as directory:
        log = Path(directory) / "speaker.log"
        running = _speaker_proc.Speaker(
            node.netns, ifname=node.ifname, imports=imports, trace=trace, log=log
        )
        try:
            yield running
        finally:
            running.close()


def pin(cpu: int | None) -> None:
    """Run this process on ``cpu`` alone (None: leave it to the scheduler)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


RT_PRIORITY = 10
"""SCHED_FIFO priority for ``--rt``: above every normal task, below the kernel's own RT
threads (which use 50 and up), so the speaker preempts other processes, not the kernel."""


def place(pid: int, *, cpu: int | None, rt: bool) -> None:
    """Put the speaker on ``cpu`` (None: anywhere) and, with ``rt``, above normal tasks.

    ``rt`` shields the measurement from other processes of a shared host: the speaker then
    behaves as if it had the core to itself. Threads it starts later inherit both.
    """
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})
    if rt:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))


@dataclasses.dataclass(frozen=True, slots=True)
class CpuTimes:
    """Busy (user, nice, system) and steal time of some CPUs, in seconds, from /proc/stat."""

    busy: float
    steal: float


def cpu_times(cpus: set[int]) -> CpuTimes:
    """What the CPUs in ``cpus`` have done since boot (proc(5): /proc/stat, in USER_HZ)."""
    busy = steal = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            user, nice, system, _idle, _iowait, _irq, _softirq, stolen = map(int, fields[:8])
            busy += user + nice + system
            steal += stolen
    tick = os.sysconf("SC_CLK_TCK")
    return CpuTimes(busy / tick, steal / tick)


class Interference:
    """How much of the speaker's CPUs others used while it was measured (a shared host).

    ``own`` is the speaker's CPU time and ``other`` the CPUs' user and system time minus the
    speaker's own, as fractions of the wall time; ``steal`` is time the hypervisor gave to
    other guests. Meaningful when the speaker has a CPU to itself (``--pin``); otherwise the
    prober counts as "other" too.
    """

    def __init__(self, speaker: _speaker_proc.Speaker, cpus: set[int]) -> None:
        self._speaker = speaker
        self._cpus = cpus
        self.other = self.steal = self.own = self.own_s = 0.0

    def __enter__(self) -> Interference:
        self._started = time.monotonic()
        self._times = cpu_times(self._cpus)
        self._own = self._speaker.cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._started
        times = cpu_times(self._cpus)
        own = self._speaker.cpu_s() - self._own
        self.own_s = own
        self.own = own / wall
        self.other = max(0.0, (times.busy - self._times.busy - own) / wall)
        self.steal = (times.steal - self._times.steal) / wall


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table; numbers right-aligned, None shown as '-'."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max(len(header[i]), *(len(row[i]) for row in cells)) if cells else len(header[i])
        for i in range(len(header))
    ]
    lines = ["  ".join(title.rjust(width) for title, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    for row in cells:
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
