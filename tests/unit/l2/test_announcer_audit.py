"""The announcer's audit: probes of its announced IPs, and who it hears answer them.

Another node's kernel (kube-proxy in IPVS mode without strictARP) answers the router by
unicast, which the announcing speaker never sees; it answers a probe of ours too. Virtual time
(looptime), frames injected into a MemoryPacketConn as the other node's kernel would send them.
"""

import asyncio
import ipaddress

import pytest

from porterlb.l2 import announcer, arp, conflicts, responder
from tests.unit.l2 import samples
from tests.unit.l2.samples import arp_request, na
from tests.unit.l2.test_announcer import QUIET, Node, announce, frames, now, running

pytestmark = [pytest.mark.looptime, pytest.mark.asyncio(loop_scope="function")]

AUDIT = 30.0
GRACE = conflicts.PEER_GRACE
PEERS = {samples.PEER_MAC: "w2"}


def kernel_reply(ip=samples.VIP4, mac=samples.PEER_MAC):
    """What Linux sends to a probe for a local address (``arp_process``, sip == 0): a reply
    to the prober's MAC, from the incoming interface's MAC, target IP 0.0.0.0."""
    return arp_request(
        ipaddress.IPv4Address("0.0.0.0"),
        sender_mac=mac,
        sender_ip=ip,
        dst=samples.OUR_MAC,
        operation=arp.REPLY,
    )


def audited(*, rate=conflicts.AUDIT_RATE, may_answer=lambda: True, peers=PEERS):
    config = announcer.Config(burst=(0.0,), audit_interval=AUDIT, audit_rate=rate)
    return Node(config=config, peer_macs=peers, may_answer=may_answer)


def probes(packet_conn, ip=samples.VIP4):
    return [s.at for s in packet_conn.sent if s.frame == conflicts.probe(samples.OUR_MAC, ip)]


async def test_an_announced_ip_is_probed_again_every_interval():
    node = audited()
    eth0 = node.conn("eth0")
    async with running(node):
        start = now()
        announce(node, samples.VIP4)
        await frames(eth0, 2)  # the burst's one round: request and reply
        assert await frames(eth0, 2) == [conflicts.probe(samples.OUR_MAC, samples.VIP4)] * 2
    assert [round(at - start) for at in probes(eth0)] == [AUDIT, 2 * AUDIT]
    assert node.conflicts.empty() and node.node_answers.empty()


async def test_another_nodes_kernel_answering_the_audit_is_reported_and_the_ip_kept():
    node = audited()
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)
        await eth0.next_sent()  # the audit's probe
        eth0.inject(kernel_reply())
        report = await asyncio.wait_for(node.node_answers.get(), QUIET)
        assert node.announcer.owns(samples.VIP4, "eth0") is responder.Ownership.OURS
        assert node.conflicts.empty()
    assert report == (samples.VIP4, "eth0", samples.PEER_MAC, "w2")


async def test_a_node_that_keeps_answering_is_reported_once_and_again_once_it_restarts():
    node = audited()
    eth0 = node.conn("eth0")
    probe = conflicts.probe(samples.OUR_MAC, samples.VIP4)
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)
        for answered in (True, True, True, False, True):  # one audit round each
            assert await eth0.next_sent() == probe
            if answered:
                eth0.inject(kernel_reply())
        await asyncio.sleep(AUDIT / 2)  # the last answer is handled
    assert [await node.node_answers.get() for _ in range(node.node_answers.qsize())] == [
        (samples.VIP4, "eth0", samples.PEER_MAC, "w2"),  # the first round's answer
        (samples.VIP4, "eth0", samples.PEER_MAC, "w2"),  # the fifth's, after a silent one
    ]


async def test_another_nodes_claim_within_the_grace_is_a_speaker_letting_go():
    node = audited()
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP4)  # moved here: no probe
        start = now()
        await frames(eth0, 2)
        eth0.inject(kernel_reply())  # the old speaker, still answering
        await asyncio.sleep(GRACE - 0.5)
        eth0.inject(kernel_reply())
        await asyncio.sleep(1.0)  # virtual time: the grace is over
        assert node.node_answers.empty()
        eth0.inject(kernel_reply())
        await asyncio.wait_for(node.node_answers.get(), QUIET)
    assert now() - start >= GRACE


async def test_a_stranger_answering_the_audit_is_an_ip_conflict():
    node = audited()
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP6)
        await eth0.next_sent()
        assert await eth0.next_sent() == conflicts.probe(samples.OUR_MAC, samples.VIP6)
        eth0.inject(na(samples.VIP6, mac=samples.STRANGER_MAC, eth_src=samples.STRANGER_MAC))
        report = await asyncio.wait_for(node.conflicts.get(), QUIET)
    assert report == (samples.VIP6, "eth0", samples.STRANGER_MAC)
    assert node.node_answers.empty()


async def test_without_the_peers_a_nodes_kernel_is_an_ip_conflict():
    """No peers ConfigMap (heartbeats off): porterlb cannot tell a node from a host."""
    node = audited(peers=None)
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 3)
        eth0.inject(kernel_reply())
        report = await asyncio.wait_for(node.conflicts.get(), QUIET)
    assert report == (samples.VIP4, "eth0", samples.PEER_MAC)


async def test_an_ip_still_in_its_grace_is_not_probed_yet():
    node = audited()
    eth0 = node.conn("eth0")
    async with running(node):
        start = now()
        announce(node, samples.VIP4)
        await asyncio.sleep(AUDIT - GRACE / 2)
        node.announcer.update(
            {ip: announcer.Announcement("eth0") for ip in (samples.VIP4, samples.OTHER4)}
        )
        await asyncio.sleep(AUDIT * 1.5)
    assert [round(at - start) for at in probes(eth0)] == [AUDIT, 2 * AUDIT]
    assert [round(at - start) for at in probes(eth0, samples.OTHER4)] == [2 * AUDIT]


async def test_a_round_keeps_to_its_rate():
    node = audited(rate=announcer.YIELD_EVERY)  # one batch of probes a second
    eth0 = node.conn("eth0")
    ips = [samples.VIP4 + n for n in range(announcer.YIELD_EVERY * 2 + 2)]
    async with running(node):
        start = now()
        node.announcer.update({ip: announcer.Announcement("eth0") for ip in ips})
        await asyncio.sleep(AUDIT + 5)
    sent = sorted(
        round(s.at - start - AUDIT, 3)
        for s in eth0.sent
        if any(s.frame == conflicts.probe(samples.OUR_MAC, ip) for ip in ips)
    )
    batch = announcer.YIELD_EVERY
    assert sent == [0.0] * batch + [1.0] * batch + [2.0] * 2


async def test_a_fenced_speaker_sends_no_probe():
    fenced = False
    node = audited(may_answer=lambda: not fenced)
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)
        fenced = True
        await asyncio.sleep(AUDIT * 3)
        assert probes(eth0) == []
        fenced = False
        await eth0.next_sent()
    assert len(probes(eth0)) == 1
