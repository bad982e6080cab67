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

Which failed requests a rollout is to blame for is judged by what the router did, not by when
the client sent them (a SYN can leave the client's namespace a few hundred milliseconds after
it was sent on a starved machine): :class:`porterlb.lab.forwarding.Forwarding` records where
the router sends each IP's frames, and :func:`porterlb.lab.moves.judge` sorts each failed
request into a moved connection (opened through the node the router then switched away from:
the cost of any layer-2 move of a live connection) or a real loss. Each IP's row
(:class:`IpFigures`) names the nodes its traffic went to, in order. The figures are taken
once the traffic has stopped, so that a request still open at the end of its phase counts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final

import lightkube

from porterlb.kube import client as kube_client
from porterlb.lab import (
    benchlab,
    cluster,
    failover,
    forwarding,
    lab,
    moves,
    netns,
    sampler,
    traffic,
)
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
class IpFigures:
    """What one phase cost one IP, judged by what the router forwarded."""

    ip: str
    requests: int
    failed: int
    moved: int
    """Failed requests whose connection the router moved to another node (expected)."""
    lost: int
    """Failed requests the move does not explain: the real losses (the target is 0)."""
    lost_why: dict[str, int]
    """The real losses by verdict (:data:`porterlb.lab.moves.Why`): ``kept``, ``unseen``,
    ``flip``."""
    hops: tuple[str, ...]
    """The nodes (or MACs the lab does not know) the router sent the IP's traffic to, in
    order: one when it stayed, one more per switch."""
    flips: int
    """Switches back to the node left less than :data:`porterlb.lab.moves.FLIP_WITHIN`
    before: two nodes answered the IP in turn."""


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
    moved_requests: int
    """Of the failed requests, those whose connection the router moved (over every IP)."""
    lost_requests: int
    """Of the failed requests, the real losses (over every IP; the target is 0)."""
    flips: int
    """Over every IP (see :attr:`IpFigures.flips`)."""
    per_ip: tuple[IpFigures, ...]


def figures(
    phase: str,
    requests: Mapping[str, Sequence[traffic.Request]],
    samples: Sequence[sampler.Sample],
    frames: Sequence[forwarding.Frame],
    *,
    start: float,
    end: float,
    stops: Sequence[float],
    nodes: Mapping[str, str],
    period: float = sampler.PERIOD,
) -> Figures:
    """The figures of ``phase`` from each IP's ``requests``, the ARP ``samples`` and the
    router's ``frames``, counting those of ``[start, end]``; ``stops`` are the seconds each
    SIGTERM took to end its process; ``nodes`` names the node of each MAC."""
    gaps, per_ip = [], []
    forwarded = [f for f in frames if start <= f.at <= end]
    for ip, found in requests.items():
        during = [r for r in found if start <= r.sent <= end]
        answered = sorted(r.sent for r in during if r.node)
        gaps.append(max((b - a for a, b in itertools.pairwise(answered)), default=end - start))
        verdict = moves.judge(forwarded, ip, during)
        per_ip.append(_ip_figures(ip, len(during), verdict, nodes))
    overlaps, moved = [], 0
    for one_ip in sampler.by_ip(s for s in samples if start <= s.at <= end).values():
        overlaps.append(sampler.overlap(one_ip, period=period))
        macs = [s.macs for s in sorted(one_ip, key=lambda s: s.at) if len(s.macs) == 1]
        moved += bool(macs) and macs[0] != macs[-1]
    return Figures(
        phase=phase,
        restarts=len(stops),
        ips=len(requests),
        requests=sum(row.requests for row in per_ip),
        failed_requests=sum(row.failed for row in per_ip),
        failed_max_per_ip=max((row.failed for row in per_ip), default=0),
        gap_max_ms=round(max(gaps, default=0.0) * 1000, 1),
        two_answer_ms=round(max((o.two_answer for o in overlaps), default=0.0) * 1000, 1),
        blackout_ms=round(max((o.blackout for o in overlaps), default=0.0) * 1000, 1),
        moved_ips=moved,
        longest_stop_s=round(max(stops, default=0.0), 2),
        moved_requests=sum(row.moved for row in per_ip),
        lost_requests=sum(row.lost for row in per_ip),
        flips=sum(row.flips for row in per_ip),
        per_ip=tuple(per_ip),
    )


def _ip_figures(ip: str, sent: int, verdict: moves.Verdict, nodes: Mapping[str, str]) -> IpFigures:
    return IpFigures(
        ip=ip,
        requests=sent,
        failed=len(verdict.failures),
        moved=len(verdict.moved),
        lost=len(verdict.lost),
        lost_why=dict(collections.Counter(f.why for f in verdict.lost)),
        hops=tuple(nodes.get(hop.mac, hop.mac) for hop in verdict.hops),
        flips=verdict.flips,
    )


def _why(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{why} {n}" for why, n in sorted(counts.items())) or "-"


def table(found: Sequence[Figures]) -> str:
    """The Markdown tables ``bench-rollout`` prints: one row per phase, then one per phase
    and IP."""
    lines = [
        "| phase | restarts | IPs | requests | failed | moved | lost | failed max/IP"
        " | max gap ms | two answers ms | blackout ms | IPs moved | flips | longest stop s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {f.phase} | {f.restarts} | {f.ips} | {f.requests} | {f.failed_requests} |"
        f" {f.moved_requests} | {f.lost_requests} | {f.failed_max_per_ip} | {f.gap_max_ms} |"
        f" {f.two_answer_ms} | {f.blackout_ms} | {f.moved_ips} | {f.flips} |"
        f" {f.longest_stop_s} |"
        for f in found
    ]
    lines += [
        "",
        "| phase | IP | requests | failed | moved | lost | lost why | MAC hops | flips |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {f.phase} | {row.ip} | {row.requests} | {row.failed} | {row.moved} | {row.lost} |"
        f" {_why(row.lost_why)} | {' > '.join(row.hops) or '-'} | {row.flips} |"
        for f in found
        for row in f.per_ip
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
        windows = []
        with _streams(record, ips) as (flows, sampled, router):
            await roller.until(lambda: all(f.answered_by(0.0) for f in flows.values()), "traffic")
            for phase in PHASES:
                start = time.monotonic()
                await asyncio.sleep(SETTLE)  # traffic before the phase, part of its window
                stops = await roller.phase(phase)
                await asyncio.sleep(SETTLE)
                windows.append((phase, start, time.monotonic(), stops))
                say(f"  {phase}: {len(stops)} restarts")
        # The streams have stopped: every request sent in a window has its answer by now.
        requests = {ip: list(flow.requests) for ip, flow in flows.items()}
        nodes = {str(node.mac): node.name for node in record.plan.nodes}
        found = []
        for phase, start, end, stops in windows:
            window = figures(
                phase,
                requests,
                sampled.samples,
                router.frames,
                start=start,
                end=end,
                stops=stops,
                nodes=nodes,
            )
            found.append(window)
            say(
                f"  {phase}: {window.failed_requests} failed, {window.moved_requests} of them"
                f" moved connections, {window.lost_requests} lost"
            )
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
) -> Iterator[tuple[dict[str, traffic.Traffic], sampler.Sampler, forwarding.Forwarding]]:
    client_netns = record.plan.client.netns
    with contextlib.ExitStack() as stack:
        # First: the record then holds every request's SYN.
        router = stack.enter_context(forwarding.Forwarding(record.plan, ips))
        flows = {
            ip: stack.enter_context(
                traffic.Traffic(client_netns, ip, cluster.SERVICE_PORT, interval=INTERVAL)
            )
            for ip in ips
        }
        sampled = stack.enter_context(sampler.Sampler(record.plan, ips))
        yield flows, sampled, router


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
