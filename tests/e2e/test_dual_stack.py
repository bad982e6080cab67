"""A dual-stack Service in a dual-stack lab: one node answers for both of its IPs (ARP for
the IPv4 one, NDP for the IPv6 one), and when that node's speaker is killed both move to one
other node together. The router namespace's kernel neighbour table is the judge. The lab is
this module's own, since the test kills a speaker. Needs root.
"""

from __future__ import annotations

import os
import signal

from porterlb.api import wellknown
from porterlb.lab import cluster, lab
from tests.e2e import marks

pytestmark = marks.e2e("ip", "nft", "curl", control_plane=True)


async def test_both_ips_answered_by_one_node_and_moved_together(speaker_lab):
    name = "dual"
    ips = (speaker_lab.pool_ip("ipv4", 3), speaker_lab.pool_ip("ipv6", 3))
    requested = {wellknown.REQUESTED_IPS: ",".join(map(str, ips))}
    await cluster.create_service(
        speaker_lab.api, speaker_lab.plan, name, family="dual", annotations=requested
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

        role = f"speaker/{old.name}"
        os.kill(speaker_lab.record.process(role).pid, signal.SIGKILL)
        try:
            new = await speaker_lab.announcer(name, other_than=old.name)
            for ip in ips:
                await speaker_lab.wait_entry(
                    ip, mac=new.mac, what=f"the router's entry for {ip} to move to {new.name}"
                )
                assert await speaker_lab.answers(ip) == {str(new.mac)}
        finally:
            speaker_lab.record = lab.restart(speaker_lab.record, role)
    finally:
        await cluster.delete_service(speaker_lab.api, name)
