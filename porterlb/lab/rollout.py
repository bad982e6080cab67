"""``porterlb lab bench-rollout``: every speaker, then every manager, restarted under traffic.

A lab comes up with ``services`` Services, each with an IP of its own. The client sends a
request to every IP every :data:`INTERVAL` (one :class:`porterlb.lab.traffic.Traffic` stream
per IP) and the router's LAN leg asks who answers for every IP every 20 ms
(:mod:`porterlb.lab.sampler`), while Kubernetes rolls the lab on ``helm upgrade``
(:mod:`porterlb.lab.node.rolling`):

- ``steady``: nothing restarted for :data:`STEADY` seconds, the baseline;
- ``speakers``: a changed speaker value rolls the DaemonSet, one node at a time
  (``maxUnavailable: 1``): each speaker drains on SIGTERM (the leader moves its IPs first,
  docs/fencing.md) and exits, its new pod starts and gets Ready;
- ``managers``: a changed manager value rolls the Deployment: a new pod Ready, then an old one
  stopped (a stopping leader releases its Lease), twice.

Each phase's figures are pure (:func:`figures`) over the requests sent and the ARP samples
taken from its first SIGTERM to its last process ready: failed requests per IP (the target
is 0), the longest gap between two answered requests of one IP, how long two MACs answered
one IP (zero, or the drain broke the fence), the longest time no MAC answered one IP (the
switch itself), how many IPs changed node, and the longest stop (SIGTERM to exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final

import lightkube

from porterlb.kube import client as kube_client
from porterlb.lab import benchlab, cluster, failover, lab, netns, sampler, traffic
from porterlb.lab.node import rolling

PHASES: Final = ("steady", "speakers", "managers")

STEADY: Final = 10.0
"""Seconds of the ``steady`` phase, in which nothing is restarted: the baseline of what the
lab itself costs (a loaded machine fails a request now and then, with no help from porterlb),
against which the two rolling phases are read."""

INTERVAL: Final = 0.1
"""Seconds between two requests to one IP: the issue's ~100 ms, so that a gap as short as a
handover still meets a request or two."""

READY_LIMIT: Final = 60.0
"""Seconds the traffic may take to reach every IP once the Services are placed, on two loaded
cores."""

ROLLOUT_LIMIT: Final = 300.0
"""Seconds a ``helm upgrade`` may take to roll every pod of a role on real nodes: per pod a
drain (under a second; at most the chart's 10 s ``drainTimeout``), a start, and readiness
probes every 5 s after 5 s."""

SETTLE: Final = 2.0
"""Seconds of traffic before the first and after the last restart of a phase, counted in it:
an effect that shows late (a move recorded after the restart) is still seen."""


@dataclasses.dataclass(frozen=True, slots=True)
class Figures:
    """What one phase cost, over every IP (``--json`` prints these keys)."""

    phase: str
    restarts: int
    ips: int
    requests: int
    failed_requests: int
    """Over every IP."""
    failed_max_per_ip: int
    gap_max_ms: float
    """The longest time between two answered requests of one IP (sent at ``INTERVAL``)."""
    two_answer_ms: float
    """The longest total time two or more MACs answered one IP."""
    blackout_ms: float
    """The longest time no MAC answered one IP."""
    moved_ips: int
    """IPs answered by another MAC at the end of the phase than at its start."""
    longest_stop_s: float
    """The longest time from SIGTERM to the process's exit."""


def figures(
    phase: str,
    requests: Mapping[str, Sequence[traffic.Request]],
    samples: Sequence[sampler.Sample],
    *,
    start: float,
    end: float,
    stops: Sequence[float],
    period: float = sampler.PERIOD,
) -> Figures:
    """The figures of ``phase`` from each IP's ``requests`` and the ARP ``samples``, counting
    those sent in ``[start, end]``; ``stops`` are the seconds each SIGTERM took to end its
    process."""
    failed, gaps, sent = [], [], 0
    for found in requests.values():
        during = [r for r in found if start <= r.sent <= end]
        sent += len(during)
        failed.append(sum(1 for r in during if not r.node))
        answered = sorted(r.sent for r in during if r.node)
        gaps.append(max((b - a for a, b in itertools.pairwise(answered)), default=end - start))
    overlaps, moved = [], 0
    for one_ip in sampler.by_ip(s for s in samples if start <= s.at <= end).values():
        overlaps.append(sampler.overlap(one_ip, period=period))
        macs = [s.macs for s in sorted(one_ip, key=lambda s: s.at) if len(s.macs) == 1]
        moved += bool(macs) and macs[0] != macs[-1]
    return Figures(
        phase=phase,
        restarts=len(stops),
        ips=len(requests),
        requests=sent,
        failed_requests=sum(failed),
        failed_max_per_ip=max(failed, default=0),
        gap_max_ms=round(max(gaps, default=0.0) * 1000, 1),
        two_answer_ms=round(max((o.two_answer for o in overlaps), default=0.0) * 1000, 1),
        blackout_ms=round(max((o.blackout for o in overlaps), default=0.0) * 1000, 1),
        moved_ips=moved,
        longest_stop_s=round(max(stops, default=0.0), 2),
    )


def table(found: Sequence[Figures]) -> str:
    """The Markdown table ``bench-rollout`` prints."""
    lines = [
        "| phase | restarts | IPs | requests | failed | failed max/IP | max gap ms"
        " | two answers ms | blackout ms | IPs moved | longest stop s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {f.phase} | {f.restarts} | {f.ips} | {f.requests} | {f.failed_requests} |"
        f" {f.failed_max_per_ip} | {f.gap_max_ms} | {f.two_answer_ms} | {f.blackout_ms} |"
        f" {f.moved_ips} | {f.longest_stop_s} |"
        for f in found
    ]
    return "\n".join(lines)


def bench(
    *,
    services: int = 10,
    workers: int = 3,
    name: str = "bench-rollout",
    say: Callable[[str], None] = print,
) -> list[Figures]:
    """Bring a lab of real nodes up with ``services`` Services, roll its speakers, then its
    managers, under traffic; take the lab down; return each phase's figures."""
    say(f"bringing lab {name!r} up ({workers} workers, real nodes)...")
    record = benchlab.up(name, workers=workers, say=say)
    try:
        return asyncio.run(_measure(record, services, say=say))
    finally:
        benchlab.down(name)


async def _measure(record: lab.Record, count: int, *, say: Callable[[str], None]) -> list[Figures]:
    async with kube_client.connect(record.kubeconfig) as client:
        say(f"  creating {count} Services...")
        ips = await _services(client, record, count)
        roller = Roller(record)
        found = []
        with _streams(record, ips) as (flows, sampled):
            await roller.until(lambda: all(f.answered_by(0.0) for f in flows.values()), "traffic")
            for phase in PHASES:
                start = time.monotonic()
                await asyncio.sleep(SETTLE)  # traffic before the phase, part of its window
                stops = await roller.phase(phase)
                await asyncio.sleep(SETTLE)
                end = time.monotonic()
                requests = {ip: list(flow.requests) for ip, flow in flows.items()}
                phase_figures = figures(
                    phase, requests, list(sampled.samples), start=start, end=end, stops=stops
                )
                say(f"  {phase}: {phase_figures}")
                found.append(phase_figures)
        return found


async def _services(client: lightkube.AsyncClient, record: lab.Record, count: int) -> list[str]:
    """``count`` Services with an IPv4 address each, placed; their IPs."""
    ips: list[str] = []
    for n in range(count):
        await benchlab.create_service(client, record, f"roll-{n}")
    for n in range(count):
        ips += await cluster.wait_ingress(client, f"roll-{n}")
    faults = failover.FaultLab(record, client)
    for n in range(count):
        await faults.announcer(f"roll-{n}")
    return ips


@contextlib.contextmanager
def _streams(
    record: lab.Record, ips: Sequence[str]
) -> Iterator[tuple[dict[str, traffic.Traffic], sampler.Sampler]]:
    client_netns = record.plan.client.netns
    with contextlib.ExitStack() as stack:
        flows = {
            ip: stack.enter_context(
                traffic.Traffic(client_netns, ip, cluster.SERVICE_PORT, interval=INTERVAL)
            )
            for ip in ips
        }
        sampled = stack.enter_context(sampler.Sampler(record.plan, ips))
        yield flows, sampled


class Roller:
    """Rolls a lab's porterlb pods as ``helm upgrade`` does, one phase at a time."""

    def __init__(self, record: lab.Record) -> None:
        self.record = record
        self.upgrades = 0

    async def phase(self, phase: str) -> list[float]:
        """Roll what ``phase`` names (see :data:`PHASES`); the seconds each pod took to stop.
        Raises ValueError for another phase."""
        if phase == "steady":
            await asyncio.sleep(STEADY)  # the phase itself: nothing happens, on purpose
            return []
        if phase not in ("speakers", "managers"):
            raise ValueError(f"unknown phase {phase!r}; known: {', '.join(PHASES)}")
        self.upgrades += 1
        role: rolling.Role = "speaker" if phase == "speakers" else "manager"
        return await rolling.roll(self.record, role, f"bench-{self.upgrades}", within=ROLLOUT_LIMIT)

    async def until(
        self, condition: Callable[[], bool], what: str, *, limit: float = READY_LIMIT
    ) -> None:
        """Return once ``condition()`` (called in a thread); LabError after ``limit`` s."""
        deadline = time.monotonic() + limit
        while not await asyncio.to_thread(condition):
            if time.monotonic() > deadline:
                raise netns.LabError(f"lab {self.record.plan.name}: no {what} within {limit} s")
            await asyncio.sleep(traffic.INTERVAL * 5)
