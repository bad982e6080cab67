"""A speaker pod deleted, as a rolling update deletes it, drains: its IP moves to another node
before the speaker exits, by itself.

On the session's real-node lab (``conftest.py``). While the client sends requests to the
Service IP and the router's LAN leg samples who answers it every 20 ms, the announcing node's
speaker pod is deleted, so its kubelet sends the speaker SIGTERM. The judges: the IP ends on
another node (recorded and answered there), the sampler never saw two MACs answer one ARP
request, the router sent the IP's traffic to the old node and then to the new one, never
back, no request failed but one the router opened through the old node (it breaks when the
router switches: its next packets reach the new node, which has no state for it), the
speaker's own log (followed through the API server while it runs) says it drained (an exit
forced by SIGKILL at the end of the grace period would end the log without it), and the
Service's ``Failover`` Event names the drain. The DaemonSet's new pod makes the node eligible
again: the leader counts no node as draining. Needs root.

Which node a request went to is the router's decision at the instant it forwards the
request's SYN (:mod:`porterlb.lab.forwarding` reads it there, the request's port names it),
not the order the client sent requests in: on a loaded machine a SYN can wait in one CPU's
backlog while a later one passes on the other, so a request sent after one the new node
answered may still have been opened through the old node (judged by send order, CI once
failed a reset sent so). A request whose SYN the router was not seen to send was opened
through no node: its failure is a real loss. :func:`porterlb.lab.moves.judge` says which
failures the move explains, as ``lab bench-rollout`` counts them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence

import httpx2

from porterlb.api import reasons
from porterlb.lab import cluster, forwarding, leaders, moves, netns, plan, sampler, traffic
from porterlb.lab.node import release
from tests.e2e import marks, reallab
from tests.waiting import eventually

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("ip", "nft", "nsenter")]

SERVICE = "drained"
OFFSET = 25
"""The module's own pool IP in the session's lab."""


async def test_a_deleted_speaker_pod_hands_its_ip_over_and_exits(speaker_lab):
    admin = speaker_lab.record.kubeconfig
    async with speaker_lab.service(SERVICE, "ipv4", speaker_lab.pool_ip("ipv4", OFFSET)) as ip:
        old = await speaker_lab.announcer(SERVICE)
        await speaker_lab.announced(old, ip)
        [pod] = [
            p["name"]
            for p in await asyncio.to_thread(release.pods, admin)
            if p["role"] == "speaker" and p["node"] == old.name
        ]
        lines: list[str] = []
        logged = asyncio.create_task(_follow(speaker_lab, pod, lines), name="test/speaker-log")
        try:
            with (
                forwarding.Forwarding(speaker_lab.plan, [str(ip)]) as router,
                traffic.Traffic(
                    speaker_lab.plan.client.netns, str(ip), cluster.SERVICE_PORT
                ) as flow,
                sampler.Sampler(speaker_lab.plan, [str(ip)]) as sampled,
            ):
                await eventually(
                    lambda: _answered(flow, old.name), what=f"traffic to {ip} via {old.name}"
                )
                stopped = time.monotonic()
                await asyncio.to_thread(release.delete_speaker_pod, admin, old.name)
                new = await speaker_lab.announcer(SERVICE, other_than=old.name)
                async with asyncio.timeout(release.READY_TIMEOUT):
                    await logged  # the log ends when the speaker exits
                await eventually(
                    lambda: _answered(flow, new.name, since=stopped),
                    what=f"traffic to {ip} via {new.name}",
                )
                settled = time.monotonic()
                await eventually(
                    lambda: _answered(flow, new.name, since=settled),
                    what="traffic after the move",
                )
        finally:
            logged.cancel()
        verdict = moves.judge(router.frames, str(ip), flow.requests)
        hops = verdict.hops
        assert [h.mac for h in hops] == [str(old.mac), str(new.mac)], _hops(hops, old, new)
        assert verdict.lost == [], _late(verdict.lost, hops[1].at, sampled.samples, new)
        doubles = [s for s in sampled.samples if len(s.macs) > 1]
        assert doubles == [], f"two MACs answered one ARP request: {doubles[:3]}"
        assert await speaker_lab.answers(ip) == {str(new.mac)}
        assert any("drained after" in line for line in lines), lines[-20:]
        failovers = await speaker_lab.events(reasons.FAILOVER, kind="Service", name=SERVICE)
        assert any(
            f"moved from node {old.name} to node {new.name}" in (e.message or "")
            and "its speaker is draining" in (e.message or "")
            for e in failovers
        ), [e.message for e in failovers]

    await asyncio.to_thread(release.wait_speaker, admin, old.name)
    await eventually(lambda: _none_draining(speaker_lab), what="no node draining")


async def _none_draining(speaker_lab) -> bool:
    """Whether the leader counts no node as draining (its metrics at its pod IP)."""
    leader = await leaders.holder(speaker_lab.api, speaker_lab.record)
    try:
        text = await leaders.metrics(speaker_lab.api, speaker_lab.record, leader) if leader else ""
    except (httpx2.HTTPError, netns.LabError):
        return False
    found = re.search(r"^porterlb_heartbeat_draining_nodes (\S+)$", text, re.M)
    return found is not None and float(found.group(1)) == 0


async def _follow(speaker_lab, pod: str, lines: list[str]) -> None:
    """Append pod ``pod``'s log lines to ``lines`` until its container exits."""
    async for line in speaker_lab.api.log(pod, namespace=release.NAMESPACE, follow=True):
        lines.append(line)


def _hops(hops: Sequence[forwarding.Frame], old: plan.Node, new: plan.Node) -> str:
    start = hops[0].at if hops else 0.0
    said = ", ".join(f"{h.mac} at {h.at - start:+.3f} s" for h in hops)
    return f"the router sent the traffic to {said} ({old.name} is {old.mac}, {new.name} {new.mac})"


def _late(
    late: list[moves.Failure],
    switched: float,
    samples: list[sampler.Sample],
    new: plan.Node,
) -> str:
    """What a reader needs of requests that failed though the move does not explain them:
    when each was sent relative to the router's switch, its port, where its SYN went, the
    verdict, and who answered the sampler around it."""
    lines = [f"requests failed that the move to {new.name} ({new.mac}) does not explain:"]
    for failure in late:
        request = failure.request
        near = [
            f"{s.at - switched:+.3f}:{','.join(sorted(s.macs)) or '-'}"
            for s in samples
            if abs(s.at - request.sent) < 0.1
        ]
        lines.append(
            f"  sent {request.sent - switched:+.3f} s, {request.failure}, port {request.port},"
            f" SYN to {failure.syn_to or 'unseen'}, {failure.why}; sampler: {' '.join(near)}"
        )
    return "\n".join(lines)


async def _answered(flow: traffic.Traffic, node: str, *, since: float = 0.0) -> bool:
    return node in flow.answered_by(since)
