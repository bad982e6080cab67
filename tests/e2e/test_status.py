"""``porterlb status`` against the lab: the node it names is the one that answers on the wire.

The session's real-node lab (``conftest.py``), porterlb installed by its chart, run with the
lab admin's kubeconfig as an operator would; a Service gets an IP and a node; status must
name that node, and the MAC the router's LAN leg hears answering for the IP: the one its
speaker reported in its pongs and the leader published in the ConfigMap ``porterlb-peers``.
Needs root.
"""

from __future__ import annotations

from porterlb.lab import cluster, credentials
from tests.e2e import marks, reallab
from tests.waiting import eventually

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("ip", "nft", "curl")]


async def test_status_names_the_node_and_mac_that_answer_for_the_ip(speaker_lab):
    ip = speaker_lab.pool_ip("ipv4", 7)
    async with speaker_lab.service("shown", "ipv4", ip):
        node = await speaker_lab.announcer("shown")
        await eventually(
            lambda: answered_by(speaker_lab, ip, str(node.mac)), what=f"{node.name} to answer"
        )

        async def shown():
            found = await speaker_lab.status("--namespace", credentials.NAMESPACE)
            row = next(s for s in found["services"] if s["service"] == f"{cluster.NAMESPACE}/shown")
            return row if row["since"] and row["mac"] else None

        row = await eventually(shown, what="status to show the Service with its node")
        assert row["ips"] == [str(ip)]
        assert (row["node"], row["mac"]) == (node.name, str(node.mac))
        # Announcing now: not among the nodes that may not announce, whatever the lab's start
        # (speakers not answering yet) reported.
        assert node.name not in [n["node"] for n in (await speaker_lab.status())["nodes"]]


async def answered_by(speaker_lab, ip, mac):
    return await speaker_lab.answers(ip) == {mac}
