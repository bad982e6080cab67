"""Failover in a live lab under a steady request stream: the scenarios of ``bench-failover``.

Each test injects one fault into the node announcing its Service (or into the control plane)
while the client sends a request every 10 ms, checks where the IP went and what the router
and the traffic saw, then repairs the fault and checks that the repaired node gets nothing
back. The lab is this module's own: the tests kill and restart its processes. Needs root.
"""

from __future__ import annotations

from typing import Final

import pytest

from porterlb.api import reasons
from porterlb.lab import failover
from tests.e2e import marks
from tests.waiting import eventually

pytestmark = marks.e2e("ip", "nft", control_plane=True)

OFFSETS: Final = {
    "worker-crash": 3,
    "speaker-kill": 4,
    "heartbeat-partition": 5,
    "leader-kill": 6,
    "apiserver-restart": 7,
    "ping-loss": 8,
    "pong-loss": 9,
    "api-partition": 10,
    "managers-down": 11,
}
"""Each test's own pool IP, so no router entry carries over."""


@pytest.fixture(scope="module")
def faults(speaker_lab):
    """One for the module: it keeps the record current as repairs restart processes."""
    return failover.FaultLab(speaker_lab.record, speaker_lab.api)


@pytest.mark.parametrize(
    "scenario", ["worker-crash", "speaker-kill", "heartbeat-partition", "ping-loss", "pong-loss"]
)
async def test_a_failed_announcer_hands_its_ip_to_one_other_node_for_good(
    speaker_lab, faults, scenario
):
    name = scenario
    async with speaker_lab.service(
        name, "ipv4", speaker_lab.pool_ip("ipv4", OFFSETS[scenario])
    ) as ip:
        run = await faults.run(scenario, name, str(ip))
        try:
            assert run.after != run.before
            new = speaker_lab.node(run.after)
            await speaker_lab.wait_entry(
                ip, mac=new.mac, what=f"the router's entry for {ip} to move to {new.name}"
            )
            # A partitioned speaker still runs and still watches the API: it must have let go.
            # (node-partition, which cuts its API too, is the fence's test: issue 9 §4.)
            assert await speaker_lab.answers(ip) == {str(new.mac)}
            moved = [
                event.message
                for event in await speaker_lab.events(reasons.FAILOVER, kind="Service", name=name)
            ]
            assert any(
                f"moved from node {run.before} to node {run.after}: {run.before}: its speaker"
                " stopped answering heartbeats" in message
                for message in moved
            ), moved
        finally:
            await run.fault.repair()
        # The repaired node answers heartbeats again; the IP stays where it went.
        assert await faults.announcer(name) == run.after
        assert await speaker_lab.answers(ip) == {str(new.mac)}


@pytest.mark.parametrize(
    "scenario", ["leader-kill", "apiserver-restart", "api-partition", "managers-down"]
)
async def test_a_control_plane_fault_moves_no_ip_and_fails_no_request(
    speaker_lab, faults, scenario
):
    name = scenario
    async with speaker_lab.service(
        name, "ipv4", speaker_lab.pool_ip("ipv4", OFFSETS[scenario])
    ) as ip:
        leader = await faults.leader()
        run = await faults.run(scenario, name, str(ip))
        try:
            assert run.after == run.before
            assert run.outage.failed == 0
            # With every manager gone the speaker answers again once the API shows no leader
            # (docs/fencing.md, P4): wait for that, and never see another node answer.
            mac = str(speaker_lab.node(run.before).mac)

            async def only_it_answers() -> bool:
                found = await speaker_lab.answers(ip)
                assert found <= {mac}, f"{found} answer for {ip}"
                return set(found) == {mac}

            await eventually(only_it_answers, what=f"{run.before} alone to answer for {ip}")
            if scenario == "leader-kill":
                assert await faults.leader() not in ("", leader)
        finally:
            await run.fault.repair()
