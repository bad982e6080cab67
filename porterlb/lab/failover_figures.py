"""What a ``bench-failover`` run cost, from its request stream and its ARP/NDP samples, and
the scenario summaries and table the bench prints. Pure: :mod:`porterlb.lab.failover` measures,
this module only counts."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from porterlb.lab import handover, sampler, traffic


@dataclasses.dataclass(frozen=True, slots=True)
class Figures:
    """What one run cost, in seconds."""

    outage: traffic.Outage
    two_answer: float
    """The longest time two or more MACs answered one of the node's IPs."""
    blackout: float
    """The longest time no MAC answered one of the node's IPs."""
    first_ip: float | None = None
    """From the fault to the first of the node's IPs answered by another node; None if the
    scenario moves nothing (or an IP never moved)."""
    last_ip: float | None = None
    """From the fault to the last of them."""
    writes: dict[str, int] | None = None
    """API writes from the fault to the repair by resource, Leases apart; None if the scenario
    moves nothing or the API server restarted (its counters did)."""
    silenced: float | None = None
    """From the fault to the old node's last answer for any of its IPs: when it died, within
    a sampling period (the injection of a crash took 3 s at a load of 44, and the node died
    1.7 s into it). None if the scenario moves nothing or it never answered after the fault."""

    @property
    def last_ip_after_silence(self) -> float | None:
        """From the old node's last answer to the last of its IPs answered by another node:
        the failover's own time, however long the injection took."""
        if self.last_ip is None or self.silenced is None:
            return None
        return self.last_ip - self.silenced


def figures(
    outage: traffic.Outage,
    samples: Sequence[sampler.Sample],
    *,
    fault: float,
    old_mac: str,
    moving: bool,
    period: float = sampler.PERIOD,
) -> Figures:
    """A run's figures from its request stream's ``outage`` and its ARP ``samples``, the
    fault injected at ``fault`` on the node whose MAC is ``old_mac``."""
    per_ip = sampler.by_ip(samples)
    overlaps = [sampler.overlap(found, period=period) for found in per_ip.values()]
    moves = [sampler.takeover(found, since=fault, old=old_mac) for found in per_ip.values()]
    moved = [m for m in moves if m is not None]
    every = moving and bool(moves) and len(moved) == len(moves)
    return Figures(
        outage=outage,
        two_answer=max((o.two_answer for o in overlaps), default=0.0),
        blackout=max((o.blackout for o in overlaps), default=0.0),
        first_ip=min(moved) if every else None,
        last_ip=max(moved) if every else None,
        silenced=handover.last_answer(samples, old_mac, since=fault) if moving else None,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """One scenario's runs, as the table and ``--json`` print them."""

    name: str
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    failed_requests: int
    two_answer_ms: float
    """The largest over the runs."""
    blackout_ms: float
    """The largest over the runs."""
    first_ip_ms: float | None
    """The largest over the runs; None when the scenario moves no IP."""
    last_ip_ms: float | None
    first_ip_p50_ms: float | None = None
    first_ip_p99_ms: float | None = None
    last_ip_p50_ms: float | None = None
    last_ip_p99_ms: float | None = None
    """Percentiles (nearest rank) over the runs; None when the scenario moves no IP."""
    failover_writes: int | None = None
    """The most API writes a run's failover made (Leases apart); None when no run moved."""
    last_ip_after_silence_p50_ms: float | None = None
    last_ip_after_silence_p99_ms: float | None = None
    """Percentiles of ``Figures.last_ip_after_silence``; None when the scenario moves no IP."""


def summarize(name: str, runs: Sequence[Figures]) -> Summary:
    """Percentiles (nearest rank) of the interruptions of ``runs``, in milliseconds, and the
    largest of their other figures."""
    ordered = sorted(run.outage.interruption * 1000 for run in runs)

    def largest(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return round(max(known) * 1000, 1) if known and len(known) == len(values) else None

    def moved(values: Sequence[float | None], p: int) -> float | None:
        known = [v * 1000 for v in values if v is not None]
        return _rank(sorted(known), p) if known and len(known) == len(values) else None

    firsts, lasts = [run.first_ip for run in runs], [run.last_ip for run in runs]
    after_silence = [run.last_ip_after_silence for run in runs]
    writes = [sum(run.writes.values()) for run in runs if run.writes is not None]
    return Summary(
        name=name,
        runs=len(ordered),
        p50_ms=_rank(ordered, 50),
        p90_ms=_rank(ordered, 90),
        p99_ms=_rank(ordered, 99),
        max_ms=round(ordered[-1], 1),
        failed_requests=sum(run.outage.failed for run in runs),
        two_answer_ms=round(max(run.two_answer for run in runs) * 1000, 1),
        blackout_ms=round(max(run.blackout for run in runs) * 1000, 1),
        first_ip_ms=largest(firsts),
        last_ip_ms=largest(lasts),
        first_ip_p50_ms=moved(firsts, 50),
        first_ip_p99_ms=moved(firsts, 99),
        last_ip_p50_ms=moved(lasts, 50),
        last_ip_p99_ms=moved(lasts, 99),
        failover_writes=max(writes) if writes else None,
        last_ip_after_silence_p50_ms=moved(after_silence, 50),
        last_ip_after_silence_p99_ms=moved(after_silence, 99),
    )


def _rank(ordered: Sequence[float], p: int) -> float:
    """The nearest-rank ``p``th percentile of the non-empty sorted ``ordered``, rounded."""
    return round(ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)], 1)


def table(summaries: Sequence[Summary], writes: dict[str, float]) -> str:
    """The Markdown table ``bench-failover`` prints."""
    lines = [
        "| scenario | runs | p50 ms | p90 ms | p99 ms | max ms | failed requests"
        " | first IP p50/p99 ms | last IP p50/p99 ms | last IP after the node's last answer"
        " p50/p99 ms | failover writes | two answers ms | blackout ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s.name} | {s.runs} | {s.p50_ms} | {s.p90_ms} | {s.p99_ms} | {s.max_ms} |"
        f" {s.failed_requests} | {_pair(s.first_ip_p50_ms, s.first_ip_p99_ms)} |"
        f" {_pair(s.last_ip_p50_ms, s.last_ip_p99_ms)} |"
        f" {_pair(s.last_ip_after_silence_p50_ms, s.last_ip_after_silence_p99_ms)} |"
        f" {_cell(s.failover_writes)} |"
        f" {s.two_answer_ms} | {s.blackout_ms} |"
        for s in summaries
    ]
    if writes:
        lines.append("")
        lines.append(
            f"steady state: {writes['other']:.2f} API writes/s besides {writes['leases']:.2f}"
            " Lease writes/s"
        )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else str(value)


def _pair(first: float | None, second: float | None) -> str:
    return "-" if first is None or second is None else f"{first} / {second}"
