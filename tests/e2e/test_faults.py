"""``porterlb lab fault``: each kind, applied to a live lab, does what it says and heals clean.

The judges are real traffic: a TCP connection from the worker to the lab's API endpoint (a
silent drop times out; a refusal would be an RST), ``ping`` to the router over the LAN, the
fault rules' own counters (which real heartbeats they dropped), the speaker's count of pings
it answered, and the leader's count of silent nodes. After each heal no fault table is left in
any of the lab's namespaces. The lab is this module's own: the faults kill and restart its
processes. Needs root.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from typing import Final

import httpx2
import pytest

from porterlb.lab import failover, faults, lab, netns, plan, sampler
from porterlb.lab import processes as procs
from tests.e2e import faultprobes as probes
from tests.e2e import marks
from tests.waiting import eventually

pytestmark = marks.e2e("ip", "nft", "nsenter", "ping", control_plane=True)

SCRAPE_TIMEOUT: Final = 5.0
"""Seconds one metrics scrape may take on two loaded cores."""

SAMPLES: Final = 25
"""Samples per IP the sampler test waits for: half a second at 20 ms."""


def fresh(process_lab) -> lab.Record:
    """The lab's record as ``lab.json`` has it now: a heal that restarts a process records it."""
    record = lab.load(process_lab.plan.name)
    assert record is not None
    return record


async def metric(record: lab.Record, role: str, pattern: str) -> float | None:
    """The value of the first line of ``role``'s metrics matching ``pattern``; None if it does
    not serve them (yet)."""
    try:
        text = await asyncio.to_thread(lab.scrape, record, role, timeout=SCRAPE_TIMEOUT)
    except httpx2.HTTPError:
        return None
    found = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def silent_nodes(process_lab, record: lab.Record) -> float | None:
    """The leader's count of nodes whose speaker does not answer; None without a leader."""
    leader = await failover.FaultLab(record, process_lab.api).leader()
    if not leader:
        return None
    return await metric(record, leader, "porterlb_heartbeat_silent_nodes")


async def answered_pings(record: lab.Record, node: plan.Node) -> float:
    pattern = r'porterlb_heartbeat_received_total\{role="speaker",verdict="answered"\}'
    found = await metric(record, f"speaker/{node.name}", pattern)
    assert found is not None, f"the speaker of {node.name} serves no metrics"
    return found


async def healed(process_lab, fault: faults.Plan) -> None:
    """Heal ``fault`` as ``lab fault --heal`` does; then nothing of it is left and every
    speaker answers the leader again."""
    faults.heal_recorded(fresh(process_lab), fault.kind, fault.node)
    record = fresh(process_lab)
    assert probes.leftover(record.plan) == {}
    assert faults.applied(record) == []
    assert all(procs.alive(p) for p in record.processes)

    async def whole() -> bool:
        return await silent_nodes(process_lab, record) == 0

    await eventually(whole, what="every speaker to answer the leader after the heal")


async def test_an_api_partition_cuts_the_api_silently_and_nothing_else(process_lab):
    record = fresh(process_lab)
    victim, other = record.plan.nodes[0], record.plan.nodes[1]
    assert probes.api_endpoint(victim, record.plan) == "connected"
    fault = faults.apply_recorded(record, "api-partition", victim.name)
    try:
        assert probes.api_endpoint(victim, record.plan) == "timed out"  # no RST, no ICMP
        assert probes.api_endpoint(other, record.plan) == "connected"
        probes.ping_router(victim, record.plan)  # the LAN and the router are up
        [table] = fault.tables
        assert any(packets > 0 for packets in probes.dropped(table).values())
        before = await answered_pings(record, victim)

        async def pinged() -> bool:  # heartbeats still flow both ways
            return await answered_pings(record, victim) > before

        await eventually(pinged, what=f"{victim.name} to answer pings under an API partition")
        assert await silent_nodes(process_lab, record) == 0
    finally:
        await healed(process_lab, fault)
    assert probes.api_endpoint(victim, record.plan) == "connected"


@pytest.mark.parametrize("kind", list(probes.HEARTBEAT_KINDS))
async def test_a_heartbeat_cut_drops_exactly_its_direction(process_lab, kind):
    pings_cut, pongs_cut = probes.HEARTBEAT_KINDS[kind]
    record = fresh(process_lab)
    victim = record.plan.nodes[1]
    fault = faults.apply_recorded(record, kind, victim.name)
    try:
        tables = {table.netns: table for table in fault.tables}
        assert (victim.netns in tables, record.plan.router_netns in tables) == (
            pings_cut,
            pongs_cut,
        )
        before = await answered_pings(record, victim)

        async def counted() -> bool:
            """The managers' real pings dropped at the worker, or its real pongs at the
            router; and when pings get through, the speaker answers them."""
            rules = {
                rule: packets
                for table in fault.tables
                for rule, packets in probes.dropped(table).items()
                if "udp" in rule
            }
            seen = any(packets > 0 for packets in rules.values())
            if pongs_cut and not pings_cut:
                seen = seen and await answered_pings(record, victim) > before
            return seen

        await eventually(counted, what=f"{kind}: heartbeats dropped in the planned direction")

        async def silent() -> bool:
            return (await silent_nodes(process_lab, record) or 0) >= 1

        await eventually(silent, what=f"{kind}: the leader to find {victim.name} silent")
        probes.ping_router(victim, record.plan)  # the LAN stays up
        expected = "timed out" if kind == "node-partition" else "connected"
        assert probes.api_endpoint(victim, record.plan) == expected
    finally:
        await healed(process_lab, fault)


def bridge_port_up(layout: plan.Lab, node: plan.Node) -> bool:
    """Whether ``node``'s cable is plugged: its LAN bridge port is administratively up."""
    argv = ["ip", "-j", "link", "show", layout.bridge_port(node)]
    [port] = json.loads(netns.run(layout.lan_netns, argv))
    return "UP" in port["flags"]


async def test_a_crash_kills_the_speaker_and_pulls_the_cable_until_healed(process_lab):
    record = fresh(process_lab)
    victim = record.plan.nodes[2]
    speaker = record.process(f"speaker/{victim.name}")
    fault = faults.apply_recorded(record, "crash", victim.name)
    try:
        netns.wait_until(
            lambda: not procs.alive(speaker),
            timeout=procs.STOP_GRACE,
            what=f"the speaker of {victim.name} to die",
        )
        assert not bridge_port_up(record.plan, victim)
        with pytest.raises(netns.LabError):
            probes.ping_router(victim, record.plan)
    finally:
        await healed(process_lab, fault)
    assert bridge_port_up(record.plan, victim)
    assert fresh(process_lab).process(f"speaker/{victim.name}").pid != speaker.pid
    probes.ping_router(victim, record.plan)


async def test_managers_down_kills_every_manager_until_healed(process_lab):
    record = fresh(process_lab)
    managers = [p for p in record.processes if p.role.startswith("manager/")]
    assert len(managers) == lab.MANAGERS
    fault = faults.apply_recorded(record, "managers-down", None)
    try:
        netns.wait_until(
            lambda: not any(procs.alive(p) for p in managers),
            timeout=procs.STOP_GRACE,
            what="every manager to die",
        )
        speakers = [fresh(process_lab).process(f"speaker/{n.name}") for n in record.plan.nodes]
        assert all(procs.alive(p) for p in speakers)
    finally:
        await healed(process_lab, fault)
    assert await failover.FaultLab(fresh(process_lab), process_lab.api).leader()


def test_the_cli_applies_heals_and_refuses_a_fault_not_applied(process_lab):
    name = process_lab.plan.name
    node = process_lab.plan.nodes[0]
    command = [sys.executable, "-m", "porterlb.cli", "lab", "fault", "--name", name]
    command += ["--node", node.name, "--kind", "ping-loss"]

    def porterlb(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=60, check=False
        )

    applied = porterlb()
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.strip() == f"lab {name}: ping-loss on node {node.name} applied"
    assert probes.leftover(process_lab.plan) == {node.netns: ["porterlb_fault_ping_loss"]}
    again = porterlb()
    assert again.returncode == 1
    assert "applied already" in again.stderr
    healed_ = porterlb("--heal")
    assert healed_.returncode == 0, healed_.stderr
    assert probes.leftover(process_lab.plan) == {}
    twice = porterlb("--heal")
    assert twice.returncode == 1
    assert "not applied" in twice.stderr


@pytest.mark.parametrize("family", ["ipv4", "ipv6"], ids=["arp", "ndp"])
async def test_the_sampler_hears_the_announcer_alone_and_nobody_for_a_free_ip(process_lab, family):
    name = f"sampled-{family}"  # the other family's Service may still be going away
    async with process_lab.service(name, family, process_lab.pool_ip(family, 20)) as ip:
        node = await process_lab.announcer(name)
        await process_lab.announced(node, ip)
        free = str(process_lab.pool_ip(family, 21))
        with sampler.Sampler(process_lab.plan, [str(ip), free]) as sampled:

            async def enough() -> bool:
                return len(sampled.samples) >= 2 * SAMPLES

            await eventually(enough, what=f"{SAMPLES} samples of {ip} and {free}")
        found = sampler.by_ip(sampled.samples)
    assert {s.macs for s in found[str(ip)]} == {frozenset({str(node.mac)})}
    assert {s.macs for s in found[free]} == {frozenset()}
    assert sampler.overlap(found[str(ip)]).two_answer == 0.0
