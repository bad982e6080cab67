"""kube-proxy in IPVS mode without strictARP, reproduced on a worker, seen and reported.

kube-proxy's IPVS mode adds every LoadBalancer IP to ``kube-ipvs0`` (a dummy link it leaves
down) on every node. Here one worker that does *not* announce the Service gets the same: a
``kube-ipvs0`` link, down, holding the IP as a /32, with ``arp_ignore`` left at 0 as
``strictARP: false`` leaves it. The judges are the router's (one ARP request, every MAC that
answers; the router's own neighbour table) and porterlb's reports: the worker's speaker sees
its own kernel (a Warning on the Node, a gauge), and the announcing speaker hears the worker
answer its audit probe (a Warning on the Service naming the worker). Then ``strictARP: true``
(``net.ipv4.conf.all.arp_ignore=1``, ``arp_announce=2``, written in the worker's namespace
only, as kube-proxy writes them on a node) makes the announcing node the only one to answer,
and the report clears. The same link holding an IPv6 Service IP changes nothing: the kernel
answers a solicitation only for addresses of the interface it arrived on.

This kernel may lack the dummy link type (``CONFIG_DUMMY``): an IFB link, another device
without ports, then stands in; for ARP only "a local address on another interface" matters.

On the session's real-node lab (``conftest.py``), whose kube-proxy runs in nftables mode and
so leaves the workers' ARP alone: the IPVS mode's footprint is made by hand, and removed
after.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

from prometheus_client import parser

from porterlb.api import reasons
from porterlb.l2 import conflicts
from porterlb.lab import netns, plan
from porterlb.speaker import kernelarp
from tests.e2e import marks, reallab
from tests.e2e.conftest import IPAddress, SpeakerLab
from tests.waiting import DEADLINE, eventually

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("ip", "nft", "curl")]

KUBE_IPVS: Final = "kube-ipvs0"
V4: Final = 26
V6: Final = 27
"""Pool offsets, used by no other module's tests in the session's lab."""

STRICT_ARP: Final = {"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2}
LAB_DEFAULT: Final = {"net.ipv4.conf.all.arp_ignore": 0, "net.ipv4.conf.all.arp_announce": 0}
"""What kube-proxy writes for strictARP (pkg/proxy/ipvs/proxier.go), and the lab's own values
(``network.IPV4_HOST``), put back afterwards."""

LOOK_DEADLINE: Final = DEADLINE + kernelarp.CLEAR_AFTER * kernelarp.CHECK_INTERVAL
"""A worker's speaker looks at its kernel every 10 s, and clears a report after two looks."""

WIRE_DEADLINE: Final = conflicts.AUDIT_INTERVAL + conflicts.PEER_GRACE + DEADLINE
"""The announcing speaker hears the worker only at its next audit round."""


@contextlib.contextmanager
def kube_ipvs(node: plan.Node, *ips: IPAddress) -> Iterator[None]:
    """What kube-proxy's IPVS mode does to ``node``: ``kube-ipvs0``, down, holding ``ips``;
    removed afterwards, with the strictARP sysctls put back to the lab's."""
    try:
        netns.run(node.netns, ["ip", "link", "add", KUBE_IPVS, "type", "dummy"])
    except netns.LabError:  # no CONFIG_DUMMY in this kernel: see the module docstring
        netns.run(node.netns, ["ip", "link", "add", KUBE_IPVS, "type", "ifb"])
    try:
        for ip in ips:
            prefix = f"{ip}/{ip.max_prefixlen}"
            extra = ["nodad"] if ip.version == 6 else []
            netns.run(node.netns, ["ip", "address", "add", prefix, "dev", KUBE_IPVS, *extra])
        yield
    finally:
        netns.run(node.netns, ["ip", "link", "del", KUBE_IPVS])
        netns.write_sysctls(node.netns, LAB_DEFAULT)


async def answered_by(speaker_lab: SpeakerLab, ip: IPAddress, *nodes: plan.Node) -> None:
    """Wait until one request from the router for ``ip`` is answered by exactly ``nodes``."""
    wanted = {str(node.mac) for node in nodes}

    async def exactly() -> bool:
        return await speaker_lab.answers(ip) == wanted

    names = " and ".join(node.name for node in nodes)
    await eventually(exactly, what=f"{ip} to be answered by exactly {names}")


async def gauge(speaker_lab: SpeakerLab, node: plan.Node, holder: str) -> float:
    """``porterlb_speaker_kernel_answers{interface="eth0", holder=...}`` of ``node``'s speaker
    (0 if unset)."""
    text = await speaker_lab.scrape(node)
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "porterlb_speaker_kernel_answers" and sample.labels == {
                "interface": plan.HOST_IF,
                "holder": holder,
            }:
                return float(sample.value)
    return 0.0


async def test_kube_proxy_ipvs_without_strictarp_is_seen_reported_and_fixed(speaker_lab):
    v4 = speaker_lab.pool_ip("ipv4", V4)
    v6 = speaker_lab.pool_ip("ipv6", V6)
    async with (
        speaker_lab.service("ipvs-v4", "ipv4", v4),
        speaker_lab.service("ipvs-v6", "ipv6", v6),
    ):
        node = await speaker_lab.announcer("ipvs-v4")
        node6 = await speaker_lab.announcer("ipvs-v6")
        # Waits on what the router sees, not on a speaker's counter: a speaker briefly fenced
        # on a loaded machine skips its burst, and answers again as soon as it is not.
        await answered_by(speaker_lab, v4, node)  # the control
        await answered_by(speaker_lab, v6, node6)
        other = next(n for n in speaker_lab.plan.nodes if n.name not in (node.name, node6.name))

        with kube_ipvs(other, v4, v6):
            # The failure: two nodes answer the router, and its table may hold either.
            await answered_by(speaker_lab, v4, node, other)

            async def wrong_node():
                found = await speaker_lab.fresh_lookup(v4)
                return found if found.get("lladdr") == str(other.mac) else None

            await eventually(wrong_node, what=f"the router to learn {v4} at {other.name}")
            # IPv6: the kernel answers no solicitation for an address on another link (it
            # would answer every one, as it does for IPv4 above).
            await answered_by(speaker_lab, v6, node6)

            # Reported by the worker itself, on its Node: the IPv4 IP only.
            async def node_warned():
                return await speaker_lab.events(
                    reasons.KERNEL_ANSWERS_ARP, kind="Node", name=other.name
                )

            [warning] = await eventually(
                node_warned, within=LOOK_DEADLINE, what=f"KernelAnswersARP on {other.name}"
            )
            assert warning.type == "Warning"
            for part in (f"node {other.name}:", f"on {plan.HOST_IF}", KUBE_IPVS, str(v4)):
                assert part in warning.message, (part, warning.message)
            assert str(v6) not in warning.message
            assert "strictARP: true" in warning.message
            assert await gauge(speaker_lab, other, KUBE_IPVS) == 1

            # ... and by the announcing speaker, which hears the worker answer its probe.
            async def service_warned():
                return await speaker_lab.events(
                    reasons.KERNEL_ANSWERS_ARP, kind="Service", name="ipvs-v4"
                )

            [wire, *_] = await eventually(
                service_warned, within=WIRE_DEADLINE, what="KernelAnswersARP on ipvs-v4"
            )
            for part in (f"node {other.name} (MAC {other.mac})", str(v4), f"node {node.name}"):
                assert part in wire.message, (part, wire.message)
            assert (
                await speaker_lab.events(reasons.IP_CONFLICT, kind="Service", name="ipvs-v4") == []
            )

            # strictARP: true on the worker; only the announcing node answers again.
            netns.write_sysctls(other.netns, STRICT_ARP)

            await answered_by(speaker_lab, v4, node)

            async def right_node():
                found = await speaker_lab.fresh_lookup(v4)
                assert found.get("lladdr") != str(other.mac), found
                return found if found.get("lladdr") == str(node.mac) else None

            for _ in range(3):  # each lookup ends at the announcing node, never at the other
                await eventually(right_node, what=f"the router to learn {v4} at {node.name}")

            async def cleared():
                return await speaker_lab.events(
                    reasons.KERNEL_ANSWERS_ARP_CLEARED, kind="Node", name=other.name
                )

            [fixed] = await eventually(
                cleared, within=LOOK_DEADLINE, what=f"KernelAnswersARPCleared on {other.name}"
            )
            assert fixed.type == "Normal" and KUBE_IPVS in fixed.message
            assert await gauge(speaker_lab, other, KUBE_IPVS) == 0
            # Once per condition: still one Warning on the Node.
            assert len(await node_warned()) == 1
