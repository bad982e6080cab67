"""A shared IP being moved: no node answers for it while its Services disagree, never two.

The manager moves an IP that several Services share by rewriting ``porterlb.io/announced-by``
on each of them, one at a time. Here the test writes those records itself, with both manager
replicas stopped so that nothing else writes, and the router's LAN leg asks who answers at
each step: the old node until the first rewrite, nobody in between, the new node once every
Service names it. On the session's real-node lab (``conftest.py``): the managers are stopped
(``lab fault --kind managers-down``: killed, their Deployment scaled to 0) and started again
after. Needs root.
"""

from __future__ import annotations

from porterlb.api import wellknown
from porterlb.kube import writers
from porterlb.lab import cluster
from tests.e2e import marks, reallab
from tests.waiting import eventually

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("ip", "nft", "curl")]

OFFSET = 20
"""The module's own pool IP in the session's lab."""


async def test_a_shared_ip_is_answered_by_no_node_while_its_services_disagree(speaker_lab):
    sharing = {wellknown.SHARING_KEY: "web"}
    ip = speaker_lab.pool_ip("ipv4", OFFSET)
    async with (
        speaker_lab.service("shared-a", "ipv4", ip, annotations=sharing),
        speaker_lab.service("shared-b", "ipv4", ip, annotations=sharing, port=8080),
    ):
        old = await speaker_lab.announcer("shared-a")
        assert await speaker_lab.announcer("shared-b") == old
        new = next(node for node in speaker_lab.plan.nodes if node != old)

        async def answered_by(*nodes):
            return await speaker_lab.answers(ip) == {str(node.mac) for node in nodes}

        await eventually(lambda: answered_by(old), what=f"{old.name} to answer for {ip}")
        async with speaker_lab.fault("managers-down"):
            await move(speaker_lab, "shared-b", new.name)
            await eventually(answered_by, what=f"no node to answer for {ip}")
            await move(speaker_lab, "shared-a", new.name)
            await eventually(lambda: answered_by(new), what=f"{new.name} to answer for {ip}")


async def move(speaker_lab, service, node):
    await writers.set_announcing_node(
        speaker_lab.api, cluster.NAMESPACE, service, node, resource_version=None
    )
