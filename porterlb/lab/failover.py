"""``porterlb lab bench-failover``: faults injected into a live lab, the traffic they cost.

For each scenario a fresh lab comes up with one Service, and with ``--services N`` N - 1 more,
each with an IPv6 address of its own (the lab's IPv4 pool holds 51 addresses, its IPv6 pool
3,584), so that a node holds about N / workers IPs; then, ``runs`` times, the client sends its
request stream (:mod:`porterlb.lab.traffic`) to the first Service's IP and the router's LAN leg
asks who answers for every IP the announcing node holds (ARP, NDP), every 20 ms or slower so
that it asks at most :data:`SAMPLE_RATE` times a second (:mod:`porterlb.lab.sampler`), while one
fault is injected. The stream runs until traffic flows
again (or, for a fault that must move nothing, until the system has recovered), the fault is
held :data:`HOLD` seconds more, repaired, and the stream runs until traffic flows after the
repair too. A run's figures (counted by :mod:`porterlb.lab.failover_figures`):

- the interruption: the last answered request sent before the fault to the first answered one
  sent after it;
- ``first_ip`` and ``last_ip``: when the router first saw, after the fault, one of the node's
  IPs answered by another node, and the last of them (moving scenarios): with 100 IPs on the
  node, the last one is the figure that grows with the node's load;
- ``writes``: the API writes (Lease renewals apart) from the fault to the repair, by resource:
  what the failover cost the API server and every watcher (moving scenarios);
- ``two_answer``: how long two or more MACs answered one IP (the worst IP), from the fault
  to the end of the repair: issue 9's P2 asks for zero;
- ``blackout``: the longest time no MAC answered one IP.

Steady-state API writes are read from kube-apiserver's own ``apiserver_request_total`` before
any fault, split into Lease renewals and the rest; so are a run's ``writes``.

The scenarios: ``worker-crash`` (fault kind ``crash``), ``speaker-kill``, ``leader-kill`` (the
manager holding the Lease SIGKILLed: no IP may move), ``apiserver-restart`` (kube-apiserver
restarted: no IP may move), and the fault kinds of :mod:`porterlb.lab.faults` on the announcing
worker: ``heartbeat-partition``, ``ping-loss``, ``pong-loss`` and ``node-partition`` (the IP
must move), ``api-partition`` and ``managers-down`` (nobody can move it; it must stay).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import functools
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

import httpx2
import lightkube
from lightkube.resources.core_v1 import Service

from porterlb.api import wellknown
from porterlb.kube import client as kube_client
from porterlb.kube import resources
from porterlb.lab import (
    apiwrites,
    benchlab,
    cluster,
    controlplane_main,
    cpu,
    failover_figures,
    faults,
    handover,
    lab,
    leaders,
    netns,
    sampler,
    settle,
    traffic,
)
from porterlb.placement import records

KINDS: Final[dict[str, faults.Kind]] = {
    "worker-crash": "crash",
    "speaker-kill": "speaker-kill",
    "heartbeat-partition": "heartbeat-partition",
    "api-partition": "api-partition",
    "pong-loss": "pong-loss",
    "ping-loss": "ping-loss",
    "node-partition": "node-partition",
    "managers-down": "managers-down",
}
"""The scenarios that are a fault kind of ``porterlb lab fault``."""

SCENARIOS: Final = (
    "worker-crash",
    "speaker-kill",
    "leader-kill",
    "apiserver-restart",
    "heartbeat-partition",
    "api-partition",
    "pong-loss",
    "ping-loss",
    "node-partition",
    "managers-down",
)
MOVING: Final = frozenset(
    {"worker-crash", "speaker-kill", "heartbeat-partition", "pong-loss", "ping-loss",
     "node-partition"}
)  # fmt: skip
"""Scenarios after which the IP must move; in the others it must stay and no request fail."""

HOLD: Final = 3.0
"""Seconds a fault stays in place once traffic moved (or the system recovered) before it is
repaired: longer than the speaker's fence time (2 s, ``guard.DEFAULT_FENCE_AFTER``), so that
an old node that keeps answering past it shows in ``two_answer``."""

SERVICE: Final = "web"
SAMPLE_RATE: Final = 2500
"""Requests per second the sampler may send at most: every speaker reads every one of them (a
broadcast, or a multicast the lab's bridge floods), and at 20 ms for 100 IPs they would cost
ten speakers on two cores more than the failover measured."""
WARM_UP: Final = 20
"""Requests the announcing node must have answered before a fault: the stream is flowing."""

AFTERMATH: Final = 100
"""Requests sent after recovery before a run ends: a second of traffic at 100 per second."""

RECOVERY_LIMIT: Final = 60.0
"""Seconds a run may take to recover before the benchmark gives up (a lease expiry is 6 s)."""


def bench(
    runs: int,
    *,
    scenarios: Sequence[str] = SCENARIOS,
    workers: int = 3,
    services: int = 1,
    name: str = "bench-failover",
    say: Callable[[str], None] = print,
) -> tuple[list[failover_figures.Summary], dict[str, float]]:
    """Run every scenario ``runs`` times, each scenario in a fresh lab of real nodes with
    ``services`` Services (the extra ones IPv6, an address each: the IPv4 pool holds 51);
    return the summaries and the steady-state API writes per second (``leases``, ``other``),
    measured in the first lab."""
    summaries = []
    writes: dict[str, float] = {}
    for scenario in scenarios:
        say(f"{scenario}: bringing lab {name!r} up ({workers} workers, real nodes)...")
        record = benchlab.up(name, workers=workers, ipv6=services > 1, say=say)
        try:
            extra = services - 1
            outages, measured = asyncio.run(
                _measure(record, scenario, runs, measure=not writes, extra=extra, say=say)
            )
            writes = writes or measured
        finally:
            benchlab.down(name)
        summaries.append(failover_figures.summarize(scenario, outages))
    return summaries, writes


async def _measure(
    record: lab.Record,
    scenario: str,
    runs: int,
    *,
    measure: bool,
    extra: int,
    say: Callable[[str], None],
) -> tuple[list[failover_figures.Figures], dict[str, float]]:
    async with kube_client.connect(record.kubeconfig) as client:
        await benchlab.create_service(client, record, SERVICE)
        (ip,) = await cluster.wait_ingress(client, SERVICE)
        lab_faults = FaultLab(record, client)
        await lab_faults.announcer(SERVICE)
        if extra:
            say(f"  creating {extra} more Services, an address each...")
            await benchlab.create_idle(client, record, extra)
        writes = await apiwrites.steady(record.kubeconfig) if measure else {}
        found = []
        for number in range(1, runs + 1):
            waited = await settle.until_settled(
                client, record.kubeconfig, lab_name=record.plan.name
            )
            load = os.getloadavg()[0]
            say(f"  {scenario} run {number}/{runs}: lab settled in {waited:.1f} s, load {load:.1f}")
            victim = await lab_faults.announcer(SERVICE)
            if victim == await leaders.node_of(client, record, await lab_faults.leader()):
                say(
                    f"  {scenario} run {number}/{runs}: the leading manager runs on {victim}:"
                    " its crash waits for a new leader too (bench.leader_crash measures that)"
                )
            run = await lab_faults.run(scenario, SERVICE, ip, repair=True, prime=True)
            figures = run.figures
            say(
                f"  {scenario} run {number}/{runs}: {figures.outage.interruption * 1000:.0f} ms,"
                f" {figures.outage.failed} failed requests, {run.before} -> {run.after},"
                f" {len(run.ips)} IPs, first IP {_ms(figures.first_ip)},"
                f" last IP {_ms(figures.last_ip)}"
                f" ({_ms(figures.last_ip_after_silence)} after the node's last answer),"
                f" writes {figures.writes}, CPU s {run.cpu}"
                f" (as long before the fault: {run.cpu_before}),"
                f" two answers {figures.two_answer * 1000:.0f} ms,"
                f" blackout {figures.blackout * 1000:.0f} ms, load {os.getloadavg()[0]:.1f}"
            )
            if run.steps:
                say(
                    f"  injected in {run.injected * 1000:.0f} ms; {run.before} last answered at"
                    f" {_ms(figures.silenced)}; where each IP's move went, ms from the fault:"
                )
                say(handover.table(handover.breakdown(run.steps)))
            for line in run.unmoved:
                say(f"  {scenario} run {number}/{runs}: {line}")
            found.append(figures)
        return found, writes


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


async def _nothing() -> None:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """An injected fault: what to wait for after one that must move nothing, and its repair
    (which returns once the lab is whole again: every speaker answers the leader)."""

    recovered: Callable[[], Awaitable[None]] = _nothing
    repair: Callable[[], Awaitable[None]] = _nothing


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """One fault under traffic: its cost, and the announcing node before and after it."""

    scenario: str
    figures: failover_figures.Figures
    before: str
    after: str
    fault: Fault
    ips: tuple[str, ...] = ()
    """The IPs the announcing node held before the fault (sampled)."""
    cpu: dict[str, float] | None = None
    """CPU seconds by part of the lab from the fault to the repair (moving scenarios)."""
    cpu_before: dict[str, float] | None = None
    """The same over as long a time before the fault (traffic and sampler running): what the
    lab spends anyway."""
    failed_at: tuple[tuple[float, str], ...] = ()
    """When each failed request was sent, in seconds from the fault, and why it failed
    (:data:`porterlb.lab.traffic.FAILURES`; those counted in ``figures.outage.failed``): where
    and how a failure falls tells what caused it."""
    unanswered_at: tuple[float, ...] = ()
    """When the router's ARP/NDP probe for one of the IPs got no answer, in seconds from the
    fault: a request failing near one may have lacked the answer, one failing far from any
    was lost beyond the link (on the node)."""
    steps: tuple[handover.Step, ...] = ()
    """Each IP's move, clock by clock (moving scenarios)."""
    injected: float = 0.0
    """Seconds the injection took: the node may have died at any moment of it."""
    unmoved: tuple[str, ...] = ()
    """A line on each IP the sampler never saw answered by another node (moving scenarios):
    what it saw, where the IP is placed, the router's entry and the speakers' log lines."""

    @property
    def outage(self) -> traffic.Outage:
        return self.figures.outage


class FaultLab:
    """Injects the scenarios' faults into a running lab and repairs them."""

    def __init__(self, record: lab.Record, client: lightkube.AsyncClient) -> None:
        self.record = record
        """Kept current: a repair that restarts a process records its new pid."""
        self.client = client

    async def run(
        self,
        scenario: str,
        service: str,
        ip: str,
        *,
        repair: bool = False,
        prime: bool = False,
    ) -> Run:
        """Inject ``scenario`` on the node announcing ``service`` under a request stream to
        ``ip`` and the ARP sampler; hold it :data:`HOLD` seconds once traffic flows again (or
        the system recovered, for a fault that must move nothing). With ``repair`` the fault
        is repaired under traffic too, and the run returns once traffic flows after it;
        otherwise it returns with the fault in place: ``run.fault.repair()`` undoes it. A
        moving scenario's ``steps`` say where each IP's move took its time
        (:mod:`porterlb.lab.handover`); the router's kernel only switches the entries it
        holds, so with ``prime`` it resolves each of the node's IPs before the fault."""
        victim = await self.announcer(service)
        layout = self.record.plan
        ips = await self.ips_on(victim)
        period = max(sampler.PERIOD, len(ips) / SAMPLE_RATE)
        if prime:
            await self._prime(ips, victim)
        with (
            traffic.Traffic(layout.client.netns, ip, cluster.SERVICE_PORT) as flow,
            sampler.Sampler(layout, ips, period=period) as sampled,
            handover.Neighbours(layout) as neighbours,
        ):
            start, spent_before = time.monotonic(), cpu.spent(self.record.processes)
            try:
                await self._until(
                    lambda: flow.answered_by(start).count(victim) >= WARM_UP,
                    f"traffic via {victim}",
                )
            except netns.LabError as error:
                seen = collections.Counter(flow.answered_by(start))
                diagnosis = await self._diagnosis(service, ip)
                raise netns.LabError(f"{error}; answers: {dict(seen)}; {diagnosis}") from None
            written = await asyncio.to_thread(apiwrites.count, self.record.kubeconfig)
            spent = cpu.spent(self.record.processes)
            at = time.monotonic()
            fault = await self.inject(scenario, victim)
            injected = time.monotonic() - at
            if scenario in MOVING:
                try:
                    await self._until(
                        lambda: any(n not in ("", victim) for n in flow.answered_by(at)),
                        f"traffic to move off {victim}",
                    )
                except netns.LabError as error:
                    raise netns.LabError(f"{error}; {await self._diagnosis(service, ip)}") from None
            else:
                await fault.recovered()
            await asyncio.sleep(HOLD)  # the fault's duration: part of the scenario
            writes = used = before = None
            if scenario in MOVING:
                used = cpu.difference(spent, cpu.spent(self.record.processes))
                scale = (time.monotonic() - at) / max(at - start, 1e-3)
                before = {
                    k: round(v * scale, 3) for k, v in cpu.difference(spent_before, spent).items()
                }
                now = await asyncio.to_thread(apiwrites.count, self.record.kubeconfig)
                writes = apiwrites.difference(written, now)
            if repair:
                await fault.repair()
            recovered = time.monotonic()
            await self._until(
                lambda: len(flow.answered_by(recovered)) >= AFTERMATH, "traffic after recovery"
            )
        after = await self.announcer(service)
        found = failover_figures.figures(
            traffic.outage(flow.requests, at),
            sampled.samples,
            fault=at,
            old_mac=str(layout.node(victim).mac),
            moving=scenario in MOVING,
            period=period,
        )
        found = dataclasses.replace(found, writes=writes)
        answered = [r.sent for r in flow.requests if r.node]
        failed_at = tuple(
            (round(r.sent - at, 3), r.failure)
            for r in sorted(flow.requests, key=lambda r: r.sent)
            if not r.node and answered and r.sent > min(answered)
        )
        silent = tuple(round(s.at - at, 3) for s in sampled.samples if not s.macs)
        steps: tuple[handover.Step, ...] = ()
        unmoved: tuple[str, ...] = ()
        if scenario in MOVING:
            router = await asyncio.to_thread(handover.neighbour_rows, layout)
            unmoved = await self._unmoved(
                handover.unmoved(
                    sampled.samples, ips, fault=at, old_mac=str(layout.node(victim).mac)
                ),
                victim,
                neighbours,
                router,
                fault=at,
            )
            updates = await asyncio.to_thread(
                handover.speaker_updates, self.record.directory, neighbours.offset
            )
            macs = {str(node.mac): node.name for node in layout.nodes}
            steps = tuple(
                handover.steps(
                    sampled.samples,
                    neighbours.changes,
                    updates,
                    macs,
                    fault=at,
                    old_mac=str(layout.node(victim).mac),
                    held=handover.holding(router),
                )
            )
        return Run(
            scenario,
            found,
            victim,
            after,
            fault,
            tuple(ips),
            used,
            before,
            failed_at,
            silent,
            steps,
            injected,
            unmoved,
        )

    async def _unmoved(
        self,
        found: Sequence[handover.Unmoved],
        victim: str,
        neighbours: handover.Neighbours,
        router: Mapping[str, str],
        *,
        fault: float,
    ) -> tuple[str, ...]:
        """A line on each of ``found``: the IP's placement, router entry (its row of ``router``,
        the table :func:`porterlb.lab.handover.neighbour_rows` read) and speaker log lines now,
        so that a run in which an IP never moved explains itself."""
        if not found:
            return ()
        placed: dict[str, list[str]] = collections.defaultdict(list)
        async for obj in self.client.list(resources.NodePlacement):
            node = obj.metadata.name if obj.metadata else ""
            for ip in records.parse(obj.to_dict()):
                placed[ip].append(node)
        layout = self.record.plan
        names = {str(node.mac): node.name for node in layout.nodes}
        lines = []
        for one in found:
            switched = [
                dataclasses.replace(c, at=c.at - fault, mac=c.mac and names.get(c.mac, c.mac))
                for c in neighbours.changes
                if c.ip == one.ip and c.at >= fault
            ]
            logged = await asyncio.to_thread(
                handover.mentions, self.record.directory, one.ip, neighbours.offset, since=fault
            )
            line = handover.explain(
                one,
                old=victim,
                placed=placed[one.ip],
                router=router,
                switched=switched,
                nodes=names,
            )
            lines.append(f"{line}; speaker log: {' | '.join(logged[-4:]) or 'nothing'}")
        return tuple(lines)

    async def _prime(self, ips: Sequence[str], victim: str) -> None:
        """Until the router's kernel holds ``victim``'s MAC for each of ``ips``."""
        layout = self.record.plan
        mac = str(layout.node(victim).mac)
        await asyncio.to_thread(handover.prime, layout, ips)

        async def resolved() -> bool:
            held = await asyncio.to_thread(handover.entries, layout)
            return all(held.get(ip) == mac for ip in ips)

        await self._until_async(resolved, f"the router to resolve {len(ips)} IPs to {victim}")

    async def inject(self, scenario: str, victim: str) -> Fault:
        """Inject ``scenario`` on node ``victim``. Raises ValueError for an unknown one."""
        if scenario in KINDS:
            node = None if KINDS[scenario] == "managers-down" else victim
            fault = await asyncio.to_thread(faults.for_record, self.record, KINDS[scenario], node)
            applied = await asyncio.to_thread(faults.inject, self.record, fault)
            return Fault(repair=functools.partial(self._heal, applied))
        if scenario == "leader-kill":
            leader = await self.leader()
            killed = datetime.datetime.now(datetime.UTC)
            await leaders.kill(self.client, self.record, leader)
            return Fault(
                recovered=functools.partial(self._new_leader, since=killed),
                repair=functools.partial(self._restore, leader),
            )
        if scenario == "apiserver-restart":
            plane = self.record.process("control-plane")
            before = plane.log.read_text().count(controlplane_main.RESTARTED)
            os.kill(plane.pid, signal.SIGHUP)
            return Fault(recovered=functools.partial(self._apiserver_back, before))
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")

    async def ips_on(self, node: str) -> list[str]:
        """The Service IPs recorded on ``node``, IPv6 ones only in a lab with IPv6."""
        found = []
        ipv6 = self.record.plan.ipv6
        async for service in self.client.list(Service, namespace=lightkube.ALL_NS):
            annotations = (service.metadata.annotations if service.metadata else None) or {}
            balancer = service.status.loadBalancer if service.status else None
            if annotations.get(wellknown.ANNOUNCED_BY) == node and balancer:
                found += [
                    e.ip for e in balancer.ingress or () if e.ip and (ipv6 or ":" not in e.ip)
                ]
        return sorted(set(found))

    # -- repairs and recoveries --------------------------------------------------------------

    async def _heal(self, fault: faults.Plan) -> None:
        self.record = await asyncio.to_thread(faults.heal, self.record, fault)
        await self._all_answering()

    async def _restore(self, leader: str) -> None:
        self.record = await leaders.restore(self.record, leader)

    async def _new_leader(self, *, since: datetime.datetime) -> None:
        """Until a live manager leads: the Lease renewed after ``since``."""
        await self._until_async(
            functools.partial(leaders.renewed_since, self.client, since), "a new leader"
        )

    async def _apiserver_back(self, restarts: int) -> None:
        log = self.record.process("control-plane").log
        await self._until(
            lambda: log.read_text().count(controlplane_main.RESTARTED) > restarts,
            "kube-apiserver to restart",
        )

        async def leading() -> bool:
            return bool(await self.leader())

        await self._until_async(leading, "a leader after the restart")

    async def _all_answering(self) -> None:
        """Until the leader hears every speaker again."""

        async def answering() -> bool:
            leader = await self.leader()
            if not leader:
                return False
            try:
                text = await leaders.metrics(self.client, self.record, leader)
            except (httpx2.HTTPError, netns.LabError):  # a restarted leader not serving yet
                return False
            found = re.search(r"^porterlb_heartbeat_silent_nodes (\S+)$", text, re.M)
            return found is not None and float(found.group(1)) == 0

        await self._until_async(answering, "every speaker to answer heartbeats")

    # -- reading the lab ---------------------------------------------------------------------

    async def _diagnosis(self, service: str, ip: str) -> str:
        router = self.record.plan.router_lan.netns
        entry = netns.run(router, ["ip", "neigh", "show", ip]).strip() or "none"
        return f"Service {service} recorded on {await self._recorded(service)!r}; router: {entry}"

    async def announcer(self, service: str) -> str:
        """The node recorded for ``service``, once there is one."""

        async def recorded() -> bool:
            return bool(await self._recorded(service))

        await self._until_async(recorded, f"Service {service} to be placed")
        return await self._recorded(service)

    async def _recorded(self, name: str) -> str:
        return await cluster.announced_by(self.client, name) or ""

    async def leader(self) -> str:
        """The manager holding the Lease (``manager/N``, a pod's name on real nodes); ""
        when none or the API is away."""
        return await leaders.holder(self.client, self.record)

    async def _until(self, condition: Callable[[], bool], what: str) -> None:
        async def check() -> bool:
            return condition()

        await self._until_async(check, what)

    async def _until_async(self, condition: Callable[[], Awaitable[bool]], what: str) -> None:
        deadline = time.monotonic() + RECOVERY_LIMIT
        while not await condition():
            if time.monotonic() > deadline:
                name = self.record.plan.name
                raise netns.LabError(f"lab {name}: no {what} within {RECOVERY_LIMIT} s")
            await asyncio.sleep(traffic.INTERVAL)
