"""Releasing and re-placing an IP in a running lab: a node goes NotReady, another takes over.

On the session's real-node lab (``conftest.py``) the test plays the node lifecycle: it freezes
the announcing node's kubelet (SIGSTOP) and writes the Node's Ready condition to False through
the status subresource, as the node lifecycle controller would after its grace period. The
manager must move the IP (the nodes' placement records, and the ``porterlb.io/announced-by``
view) to another node, the new node's gratuitous ARP / unsolicited NA must move the router's
existing entry without the router asking, and the client's traffic must reach the new node.
The node is made Ready (and its kubelet thawed) again before the test ends. Needs root.
"""

from __future__ import annotations

from typing import Final

import pytest

from porterlb.api import reasons
from tests.e2e import marks, reallab
from tests.waiting import eventually

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("ip", "nft", "curl")]

FAMILIES: Final = [pytest.param("ipv4", id="ipv4"), pytest.param("ipv6", id="ipv6")]
OFFSETS: Final = {"ipv4": 22, "ipv6": 23}
"""Each test's own pool IP, so no router entry carries over."""


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_not_ready_node_hands_its_ip_to_another_node(speaker_lab, family):
    name = f"failover-{family}"
    async with speaker_lab.service(
        name, family, speaker_lab.pool_ip(family, OFFSETS[family])
    ) as ip:
        old = await speaker_lab.announcer(name)
        await speaker_lab.announced(old, ip)
        before = await eventually(lambda: speaker_lab.http(ip), what=f"an HTTP answer from {ip}")
        assert before == f"{old.name}\n"
        await speaker_lab.wait_entry(ip, mac=old.mac, what=f"the router to resolve {ip}")

        await speaker_lab.set_ready(old, False)
        try:
            new = await speaker_lab.announcer(name, other_than=old.name)
            # The test sends no traffic to the IP from here on: only the new node's unsolicited
            # announcement can move the entry, and it leaves it STALE (an answer the router
            # asked for would leave it REACHABLE). A packet the cluster routes to the IP
            # meanwhile turns STALE into DELAY, which a REACHABLE entry never becomes within
            # seconds: either shows the entry moved unasked.
            moved = await speaker_lab.wait_entry(
                ip, mac=new.mac, what=f"the router's entry for {ip} to move to {new.name}"
            )
            assert {"STALE", "DELAY"} & set(moved["state"]), moved
            after = await eventually(lambda: speaker_lab.http(ip), what=f"HTTP to {ip} again")
            assert after == f"{new.name}\n"
            assert await speaker_lab.answers(ip) == {str(new.mac)}
            conflicts = await speaker_lab.events(reasons.IP_CONFLICT, kind="Service", name=name)
            assert conflicts == [], [event.message for event in conflicts]
        finally:
            await speaker_lab.set_ready(old, True)
