"""The layer-2 data plane against a real router kernel: an Announcer over a real AfPacketConn.

The announcer runs in the test's event loop in the host namespace and opens its socket on
worker 1's ``eth0`` through afpacket's netns support, as the lab's speaker does. The judge is
the router namespace's neighbour table (``ip -j neigh``); traffic that makes the router
resolve an IP is one UDP datagram sent from inside the router namespace, so nothing but
iproute2 is needed. Every test uses its own pool IPs, so no router entry carries over. Needs
root.

It stays on the namespace network without a cluster: it tests one module (the Announcer)
inside the test's own process, which no kubelet, chart or API server takes part in; porterlb
as users run it answers on the real-node lab in ``test_speaker_answers``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import itertools
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import prometheus_client
import pytest

from porterlb import errors
from porterlb.l2 import afpacket, announcer, arp, ethernet, interfaces, ndp, responder
from porterlb.lab import netns, network, plan, sampler
from tests.e2e import marks
from tests.waiting import DEADLINE, eventually

pytestmark = marks.e2e("ip")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
FAMILIES = [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")]
DISCARD_PORT = 9
"""Where the router's poke datagrams go (RFC 863); nothing listens, nothing needs to."""


@dataclasses.dataclass
class Speaker:
    """One announcer on a worker's interface, with the conflicts it reported."""

    node: plan.Node
    announcer: announcer.Announcer
    conflicts: asyncio.Queue[tuple[IPAddress, str, ethernet.MacAddress]]

    def announce(self, *ips: IPAddress, probe: bool = False) -> None:
        """Make ``ips`` the whole announced set (none: release everything)."""
        self.announcer.update({ip: announcer.Announcement(self.node.ifname, probe) for ip in ips})

    async def announced(self, target: IPAddress) -> None:
        """Wait until the first gratuitous frame for ``target`` is out: the socket is open.

        Until then a router's request goes unanswered, and the gratuitous frame that follows
        makes its entry STALE rather than REACHABLE; a test of answers waits for this first.
        """

        async def sent() -> bool:
            return gratuitous_sent(target) > 0

        await eventually(sent, what=f"the first announcement of {target}")


def fresh_name() -> str:
    """A lab name no running lab uses and whose address index none has."""
    running = network.running()
    return next(
        name
        for n in itertools.count()
        if (name := f"l2-{os.getpid()}-{n}") not in running and not plan.clashes(name, running)
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[plan.Lab]:
    lab = plan.build(fresh_name(), 2, ipv6=True)
    try:
        network.up(lab)
        yield lab
    finally:
        network.down(lab.name)


@pytest.fixture
async def speaker(lab: plan.Lab) -> AsyncIterator[Speaker]:
    node = lab.nodes[0]
    conflicts: asyncio.Queue[tuple[IPAddress, str, ethernet.MacAddress]] = asyncio.Queue()
    running = Speaker(
        node,
        announcer.Announcer(
            open_conn=functools.partial(afpacket.AfPacketConn.open, netns=node.netns),
            on_conflict=lambda *report: conflicts.put_nowait(report),
            watch_links=functools.partial(interfaces.watch_running, netns=node.netns),
        ),
        conflicts,
    )
    task = asyncio.create_task(running.announcer.run(), name="test/speaker/l2")
    try:
        yield running
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # anything else is a failure of the announcer


def pool_ip(lab: plan.Lab, family: int, offset: int) -> IPAddress:
    pool = lab.pool_v4 if family == 4 else lab.pool_v6
    assert pool is not None
    return pool[0] + offset


async def ip(netns_name: str | None, command: str) -> str:
    """Run ``ip COMMAND`` off the event loop, which must stay free to answer ARP and NDP."""
    return await asyncio.to_thread(netns.run, netns_name, ["ip", *command.split()])


async def neigh(lab: plan.Lab, command: str, target: IPAddress, *options: str) -> str:
    """``ip neigh COMMAND TARGET dev lan0 OPTIONS`` in the router's namespace."""
    line = f"{command} {target} dev {plan.ROUTER_LAN_IF} {' '.join(options)}"
    return await ip(lab.router_netns, f"-j neigh {line}")


async def poke(lab: plan.Lab, target: IPAddress) -> None:
    """Send one UDP datagram from the router to ``target``: the router must resolve it."""

    def send() -> None:
        family = socket.AF_INET if target.version == 4 else socket.AF_INET6
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"poke", (str(target), DISCARD_PORT))

    await asyncio.to_thread(netns.call_in, lab.router_netns, send)


async def entry(lab: plan.Lab, target: IPAddress) -> dict[str, Any] | None:
    """The router's neighbour entry for ``target`` on its LAN leg, if it has one."""
    entries: list[dict[str, Any]] = json.loads(await neigh(lab, "show", target))
    return entries[0] if entries else None


async def set_state(lab: plan.Lab, target: IPAddress, state: str) -> None:
    await neigh(lab, "change", target, "nud", state)


async def wait_for_entry(
    lab: plan.Lab, target: IPAddress, *, state: str, mac: str | None = None, what: str
) -> dict[str, Any]:
    """Wait until the router's entry is in ``state`` (with ``mac``, if given)."""

    async def matches() -> dict[str, Any] | None:
        found = await entry(lab, target)
        if found and state in found["state"] and (mac is None or found.get("lladdr") == mac):
            return found
        return None

    return await eventually(matches, what=what)


def gratuitous_sent(target: IPAddress) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "porterlb_l2_gratuitous_sent_total", {"ip": str(target)}
    )
    return value or 0.0


@pytest.mark.parametrize("family", FAMILIES)
async def test_router_resolves_an_assigned_ip_to_the_worker(lab, speaker, family):
    target = pool_ip(lab, family, 0)
    speaker.announce(target)
    await speaker.announced(target)
    await poke(lab, target)
    # REACHABLE, not STALE: the answer was a reply unicast to the router (a broadcast reply
    # or a request would only make the entry STALE, net/ipv4/arp.c arp_process).
    await wait_for_entry(
        lab,
        target,
        state="REACHABLE",
        mac=str(speaker.node.mac),
        what=f"the router to resolve {target} to worker 1",
    )


@pytest.mark.parametrize("family", FAMILIES)
async def test_unicast_probe_is_answered(lab, speaker, family):
    target = pool_ip(lab, family, 1)
    speaker.announce(target)
    await speaker.announced(target)
    await poke(lab, target)
    await wait_for_entry(lab, target, state="REACHABLE", what=f"{target} to resolve")
    await set_state(lab, target, "stale")
    assert "STALE" in (await entry(lab, target) or {})["state"]
    await set_state(lab, target, "probe")  # the kernel now sends unicast probes to the MAC

    async def confirmed() -> dict[str, Any] | None:
        found = await entry(lab, target)
        assert found is not None and "FAILED" not in found["state"], found
        return found if "REACHABLE" in found["state"] else None

    found = await eventually(confirmed, what=f"a unicast probe for {target} to be answered")
    assert found["lladdr"] == str(speaker.node.mac)


@pytest.mark.parametrize("family", FAMILIES)
async def test_unassigned_pool_ip_is_not_answered(lab, speaker, family):
    speaker.announce(pool_ip(lab, family, 0))  # the speaker is busy, just not with this IP
    target = pool_ip(lab, family, 2)
    await poke(lab, target)
    found = await wait_for_entry(
        lab, target, state="FAILED", what=f"the router to give up on {target}"
    )
    assert "lladdr" not in found


@pytest.mark.parametrize("family", FAMILIES)
async def test_release_stops_answers(lab, speaker, family):
    target = pool_ip(lab, family, 3)
    speaker.announce(target)
    await speaker.announced(target)
    await poke(lab, target)
    await wait_for_entry(lab, target, state="REACHABLE", what=f"{target} to resolve")
    speaker.announce()
    await set_state(lab, target, "probe")
    await wait_for_entry(
        lab, target, state="FAILED", what=f"the router's probes for released {target} to fail"
    )
    await poke(lab, target)  # and a fresh resolution gets no answer either
    await wait_for_entry(lab, target, state="FAILED", what=f"{target} to stay unresolved")


@pytest.mark.parametrize("family", FAMILIES)
async def test_gratuitous_announcement_moves_an_existing_entry(lab, speaker, family):
    target = pool_ip(lab, family, 4)
    old = lab.nodes[1].mac
    await neigh(lab, "replace", target, "lladdr", str(old), "nud", "stale")
    # No traffic goes to the IP, so only the unsolicited announcement can move the entry
    # (arp_accept=0 and accept_untracked_na=0: it may update, never create).
    speaker.announce(target)
    await wait_for_entry(
        lab,
        target,
        state="STALE",
        mac=str(speaker.node.mac),
        what=f"the router's entry for {target} to move to worker 1",
    )
    assert gratuitous_sent(target) > 0


@pytest.mark.parametrize("family", FAMILIES)
async def test_probe_finds_a_foreign_host_and_nothing_is_announced(lab, speaker, family):
    target = pool_ip(lab, family, 5)
    foreign = lab.nodes[1]
    prefix = 32 if family == 4 else 128
    await ip(foreign.netns, f"address add {target}/{prefix} dev {foreign.ifname}")
    try:
        speaker.announce(target, probe=True)
        report = await asyncio.wait_for(speaker.conflicts.get(), timeout=10.0)
        assert report == (target, speaker.node.ifname, foreign.mac)
        assert speaker.announcer.owns(target, speaker.node.ifname) is responder.Ownership.NONE
        assert gratuitous_sent(target) == 0
        await poke(lab, target)  # only the foreign host's kernel answers
        await wait_for_entry(
            lab,
            target,
            state="REACHABLE",
            mac=str(foreign.mac),
            what=f"the router to resolve {target} to the foreign host",
        )
    finally:
        await ip(foreign.netns, f"address del {target}/{prefix} dev {foreign.ifname}")


@pytest.mark.parametrize(
    ("spec", "chosen"),
    [
        pytest.param("", "eth0", id="subnet-holding-the-pool"),
        pytest.param("eth0", "eth0", id="name"),
        pytest.param("can_reach:{router}", "eth0", id="can-reach"),
    ],
)
async def test_interface_is_resolved_in_the_workers_namespace(lab, spec, chosen):
    node = lab.nodes[0]
    spec = spec.format(router=lab.router_lan.ipv4.ip)
    first, last = lab.pool_v4
    link = await interfaces.resolve(spec, pool_first=first, pool_last=last, netns=node.netns)
    assert (link.name, link.mac) == (chosen, node.mac)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("eth9", 'interface "eth9" for pool .*: no such interface', id="missing"),
        pytest.param("can_reach:{own}", "is local", id="can-reach-own-address"),
    ],
)
async def test_lacking_interface_is_reported(lab, spec, message):
    node = lab.nodes[0]
    spec = spec.format(own=node.ipv4.ip)
    first, last = lab.pool_v4
    with pytest.raises(errors.InvalidSpec, match=message):
        await interfaces.resolve(spec, pool_first=first, pool_last=last, netns=node.netns)


async def test_opening_a_missing_interface_is_an_invalid_spec(lab):
    with pytest.raises(errors.InvalidSpec, match="interface eth9: cannot open"):
        await afpacket.AfPacketConn.open("eth9", netns=lab.nodes[0].netns)


VLAN_ID = 10
ETH_P_8021Q = 0x8100
"""IEEE 802.1Q tag protocol identifier (include/uapi/linux/if_ether.h)."""
ETH_P_ALL = 0x0003


def tagged(frame: bytes, vlan_id: int) -> bytes:
    """``frame`` with an 802.1Q tag for ``vlan_id`` after its MACs, as a VLAN device sends it."""
    return frame[:12] + struct.pack("!HH", ETH_P_8021Q, vlan_id) + frame[12:]


def request(lab: plan.Lab, target: IPAddress, asker: IPAddress) -> bytes:
    """A broadcast ARP request or multicast NS for ``target`` from the router's MAC, asked
    from ``asker``: the answer goes back to ``asker``, which tells the answers apart."""
    mac = lab.router_lan.mac
    if isinstance(target, ipaddress.IPv4Address):
        assert isinstance(asker, ipaddress.IPv4Address)
        return arp.frame(
            ethernet.BROADCAST, arp.Packet(arp.REQUEST, mac, asker, ethernet.ZERO, target)
        )
    assert isinstance(asker, ipaddress.IPv6Address)
    group = ndp.solicited_node(target)
    packet = ndp.Packet(asker, group, ndp.NeighborSolicitation(target, mac))
    return ndp.frame(ethernet.ipv6_multicast(group), mac, packet)


def answers_in_order(lab: plan.Lab, frames: list[bytes], last: IPAddress) -> list[IPAddress]:
    """Send ``frames`` from the router's LAN leg in order; the askers answered, in the order
    the answers came, until the answer to ``last`` (the deadline fails the test)."""

    def exchange() -> list[IPAddress]:
        seen: list[IPAddress] = []
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
            sock.bind((plan.ROUTER_LAN_IF, ETH_P_ALL))  # bound before the requests go out
            for frame in frames:
                sock.send(frame)
            deadline = time.monotonic() + DEADLINE
            while last not in seen:
                sock.settimeout(max(0.0, deadline - time.monotonic()))
                answer = sampler.decode_answer(sock.recv(65536), lab.router_lan.mac)
                if answer is not None:
                    seen.append(answer[0])  # the asker it answers
        return seen

    return netns.call_in(lab.router_netns, exchange)


@pytest.mark.parametrize("family", FAMILIES)
async def test_requests_from_a_vlan_are_not_answered(lab, speaker, family):
    """The router asks twice, first in VLAN 10, then untagged, from two addresses. The worker
    serves eth0 itself, not a VLAN on it: only the untagged request is answered. Requests are
    answered in the order they arrive, so an answer to the tagged one would come first.

    (A real VLAN device on the router would be the natural asker, but the kernels this runs on
    may lack the 8021q module; a tagged frame from a packet socket is what such a device
    sends, and the receiving kernel strips its tag into metadata all the same.)"""
    target = pool_ip(lab, family, 6)
    speaker.announce(target)
    await speaker.announced(target)
    router = lab.router_lan
    if family == 4:
        in_vlan, untagged = router.ipv4.ip + 100, router.ipv4.ip
    else:
        assert router.ipv6 is not None
        in_vlan, untagged = router.ipv6.ip + 0x100, router.ipv6.ip
    frames = [
        tagged(request(lab, target, in_vlan), VLAN_ID),
        request(lab, target, untagged),
    ]
    seen = await asyncio.to_thread(answers_in_order, lab, frames, untagged)
    assert seen == [untagged]


def full_burst(family: int) -> int:
    """Gratuitous frames of a whole burst: a request and a reply per round for IPv4."""
    return len(announcer.BURST) * (2 if family == 4 else 1)


@pytest.mark.parametrize("family", FAMILIES)
async def test_link_back_up_announces_afresh(lab, speaker, family):
    """While the worker's link is down the router's entry moves elsewhere (as a flush and a
    stray answer would leave it); when the link is up again the worker announces at once,
    without any request from the router."""
    target = pool_ip(lab, family, 7)
    worker = speaker.node
    speaker.announce(target)

    async def burst_over() -> bool:
        return gratuitous_sent(target) >= full_burst(family)

    await eventually(burst_over, what=f"the first burst for {target} to end")
    await ip(worker.netns, f"link set {worker.ifname} down")
    try:
        await neigh(lab, "replace", target, "lladdr", str(lab.nodes[1].mac), "nud", "stale")
    finally:
        await ip(worker.netns, f"link set {worker.ifname} up")
    await wait_for_entry(
        lab,
        target,
        state="STALE",
        mac=str(worker.mac),
        what=f"the router's entry for {target} to come back to worker 1",
    )
    assert gratuitous_sent(target) > full_burst(family)
