"""A dual-stack Service on a dual-stack cluster: one node answers for both of its IPs (ARP
for the IPv4 one, NDP for the IPv6 one), the client reaches its pods over both families, and
when that node's speaker is killed (``lab fault --kind speaker-kill``: SIGKILL to its
container's processes) both move to one other node together. The router namespace's kernel
neighbour table is the judge. On the session's real-node lab (``conftest.py``); the killed
speaker's kubelet restarts it, and the test waits for that before it ends. Needs root.
"""

from __future__ import annotations

from functools import partial

from porterlb.api import wellknown
from porterlb.lab import benchlab, cluster
from tests.e2e import marks, reallab
from tests.waiting import eventually

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("ip", "nft", "curl")]

OFFSET = 21
"""The module's own pool IPs in the session's lab."""


async def test_both_ips_answered_by_one_node_and_moved_together(speaker_lab):
    name = "dual"
    ips = (speaker_lab.pool_ip("ipv4", OFFSET), speaker_lab.pool_ip("ipv6", OFFSET))
    requested = {wellknown.REQUESTED_IPS: ",".join(map(str, ips))}
    await benchlab.create_service(
        speaker_lab.api, speaker_lab.record, name, family="dual", annotations=requested
    )
    try:
        assert await cluster.wait_ingress(speaker_lab.api, name) == tuple(map(str, ips))
        old = await speaker_lab.announcer(name)
        for ip in ips:
            await speaker_lab.announced(old, ip)
            await speaker_lab.wait_entry(
                ip, mac=old.mac, poke=True, what=f"the router to resolve {ip} to {old.name}"
            )
            assert await speaker_lab.answers(ip) == {str(old.mac)}
            answer = await eventually(partial(speaker_lab.http, ip), what=f"HTTP to {ip}")
            assert answer == f"{old.name}\n"

        async with speaker_lab.fault("speaker-kill", old):
            new = await speaker_lab.announcer(name, other_than=old.name)
            for ip in ips:
                await speaker_lab.wait_entry(
                    ip, mac=new.mac, what=f"the router's entry for {ip} to move to {new.name}"
                )
                assert await speaker_lab.answers(ip) == {str(new.mac)}
                answer = await eventually(partial(speaker_lab.http, ip), what=f"HTTP to {ip} again")
                assert answer == f"{new.name}\n"
    finally:
        await cluster.delete_service(speaker_lab.api, name)
