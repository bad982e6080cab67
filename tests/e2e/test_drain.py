"""A speaker given SIGTERM drains: its IP moves to another node before it exits, by itself.

The lab is this module's own (the test stops and restarts a speaker). While the client sends
requests to the Service IP and the router's LAN leg samples who answers it every 20 ms, the
announcing node's speaker gets SIGTERM. The judges: the IP ends on another node (recorded and
answered there), the sampler never saw two MACs answer one ARP request, no request failed once
the new node answered (one open at the instant the router switches may break), the old process
exited by itself (no second signal), and the Service's ``Failover`` Event names the drain. The
restarted speaker makes its node eligible again. Needs root.

It keeps the process lab (``process_lab``) for now: it signals the speaker process itself,
reads its log file and restarts it as ``lab up`` started it. On real nodes a drain is a
speaker pod's deletion (its kubelet sends the SIGTERM), which ``test_chart_lab`` (a helm
upgrade rolling every speaker) and ``lab bench-rollout`` put under traffic.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx2

from porterlb.api import reasons
from porterlb.lab import cluster, failover, lab, rollout, sampler, traffic
from porterlb.lab import processes as procs
from tests.e2e import marks
from tests.waiting import eventually

pytestmark = marks.e2e("ip", "nft", "nsenter", control_plane=True)

SERVICE = "drained"


async def test_a_speaker_given_sigterm_hands_its_ip_over_and_exits(process_lab):
    async with process_lab.service(SERVICE, "ipv4") as ip:
        old = await process_lab.announcer(SERVICE)
        await process_lab.announced(old, ip)
        record = lab.load(process_lab.plan.name)
        assert record is not None
        role = f"speaker/{old.name}"
        process = record.process(role)
        with (
            traffic.Traffic(process_lab.plan.client.netns, str(ip), cluster.SERVICE_PORT) as flow,
            sampler.Sampler(process_lab.plan, [str(ip)]) as sampled,
        ):
            await eventually(
                lambda: _answered(flow, old.name), what=f"traffic to {ip} via {old.name}"
            )
            stopped = time.monotonic()
            os.kill(process.pid, signal.SIGTERM)
            new = await process_lab.announcer(SERVICE, other_than=old.name)
            await eventually(
                lambda: _exited(process), what=f"the speaker of {old.name} to exit by itself"
            )
            await eventually(
                lambda: _answered(flow, new.name, since=stopped),
                what=f"traffic to {ip} via {new.name}",
            )
            settled = time.monotonic()
            await eventually(
                lambda: _answered(flow, new.name, since=settled), what="traffic after the move"
            )
        # A connection open at the instant the router switches can break (its next packets
        # reach the new node, which has no state for it); a new one never fails, and none
        # fails once the new node answers.
        switched = min(r.sent for r in flow.requests if r.node == new.name)
        late = [r for r in flow.requests if not r.node and r.sent >= switched]
        assert late == [], f"requests failed after {new.name} answered: {late}"
        doubles = [s for s in sampled.samples if len(s.macs) > 1]
        assert doubles == [], f"two MACs answered one ARP request: {doubles[:3]}"
        assert await process_lab.answers(ip) == {str(new.mac)}
        moves = await process_lab.events(reasons.FAILOVER, kind="Service", name=SERVICE)
        assert any(
            f"moved from node {old.name} to node {new.name}" in (e.message or "")
            and "its speaker is draining" in (e.message or "")
            for e in moves
        ), [e.message for e in moves]
        assert "drained after" in process.log.read_text()

    # The node is eligible again once a new speaker process answers without draining.
    roller = rollout.Roller(record, process_lab.api)
    roller.record = lab.restart(record, role)
    await roller.until(lambda: lab.ready(roller.record, role), f"{role} to be ready")
    await eventually(lambda: _draining_nodes(roller.record, process_lab), what="no node draining")


async def _answered(flow: traffic.Traffic, node: str, *, since: float = 0.0) -> bool:
    return node in flow.answered_by(since)


async def _exited(process: procs.Process) -> bool:
    return not procs.alive(process)


async def _draining_nodes(record: lab.Record, process_lab) -> bool:
    """Whether the leader counts no node as draining."""
    leader = await failover.FaultLab(record, process_lab.api).leader()
    try:
        text = await asyncio.to_thread(lab.scrape, record, leader) if leader else ""
    except httpx2.HTTPError:
        return False
    found = re.search(r"^porterlb_heartbeat_draining_nodes (\S+)$", text, re.M)
    return found is not None and float(found.group(1)) == 0
