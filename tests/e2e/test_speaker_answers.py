"""The speaker in a running lab: who answers ARP and NDP for a Service IP, and who does not.

Everything here goes through the whole system: a Service is created in the real API server,
the manager allocates its IP and writes it into the announcing node's placement record
(shown on the Service in ``porterlb.io/announced-by``), and the speakers (the chart's
DaemonSet, one pod per node) answer or stay silent. The judges are the router's neighbour
table, raw replies counted on the router's LAN leg, and HTTP from the client to the Service's
pods (see ``conftest.py``). The session's real-node lab serves the module; each test makes its
own Services, each asking for a pool IP no other test uses. Needs root.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Iterator
from typing import Final

import pytest
import pytest_asyncio
from lightkube import codecs

from porterlb.api import reasons, wellknown
from porterlb.kube import resources
from porterlb.l2 import ethernet
from porterlb.lab import netns, network, plan
from tests.e2e import marks, reallab
from tests.e2e.conftest import IPAddress, SpeakerLab
from tests.waiting import DEADLINE, eventually

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("ip", "nft", "curl")]

FAMILIES: Final = [pytest.param("ipv4", id="ipv4"), pytest.param("ipv6", id="ipv6")]

# Pool offsets, one per test, so that no router entry carries over between tests.
RESOLVES: Final = 1
HTTP: Final = 2
NUD: Final = 3
DELETED: Final = 4
BUSY: Final = 5
CONFLICT: Final = 6
ONE_EACH: Final = (10, 11, 12, 13)
UNASSIGNED: Final = 40

FOREIGN_HOST: Final = 150
"""The conflicting host's LAN address (``.150``, ``::150``): between the workers and the pool."""

FOREIGN_MAC_ROLE: Final = 9
"""Its MAC is ``02:70:6c:<index>:09:01``: the lab's scheme, with a role no lab part uses."""

MISSING_INTERFACE: Final = "eth9"
STRAY_POOL_HOSTS: Final = (190, 191)
"""An extra pool on the LAN subnet, below the lab's own pool (``.200``) and above every worker,
so the router would resolve its IPs if anyone answered."""


class ForeignHost:
    """A host on the LAN that porterlb knows nothing of; its kernel answers for its addresses."""

    def __init__(self, lab: plan.Lab) -> None:
        self.netns = f"plbx-{lab.name}-foreign"
        self.mac = ethernet.MacAddress(bytes((0x02, 0x70, 0x6C, lab.index, FOREIGN_MAC_ROLE, 1)))
        self.lab = lab

    def up(self) -> None:
        lab = self.lab
        netns.run(None, ["ip", "netns", "add", self.netns])
        netns.run(None, ["ip", "link", "add", "fx0", "netns", lab.lan_netns, "type", "veth",
                         "peer", "name", plan.HOST_IF, "netns", self.netns,
                         "address", str(self.mac)])  # fmt: skip
        netns.run(lab.lan_netns, ["ip", "link", "set", "fx0", "master", plan.BRIDGE, "up"])
        settings = {
            f"net.ipv4.conf.{scope}.{key}": value
            for scope in ("all", "default", plan.HOST_IF)
            for key, value in network.IPV4_HOST.items()
        }
        settings |= {
            f"net.ipv6.conf.{scope}.{key}": value
            for scope in ("all", "default", plan.HOST_IF)
            for key, value in network.IPV6_HOST.items()
        }
        netns.write_sysctls(self.netns, settings)
        assert lab.lan_v6 is not None
        script = [
            "link set lo up",
            f"link set {plan.HOST_IF} up",
            f"address add {lab.lan_v4[FOREIGN_HOST]}/{lab.lan_v4.prefixlen} dev {plan.HOST_IF}",
            f"address add {lab.lan_v6[int(str(FOREIGN_HOST), 16)]}/{lab.lan_v6.prefixlen} "
            f"dev {plan.HOST_IF} nodad",
        ]
        netns.run(None, ["ip", "-n", self.netns, "-batch", "-"], input="\n".join(script) + "\n")

    def down(self) -> None:
        if self.netns in netns.names():
            netns.terminate([self.netns])
            netns.run(None, ["ip", "netns", "delete", self.netns])

    @contextlib.contextmanager
    def using(self, ip: IPAddress) -> Iterator[None]:
        """The host holds ``ip`` (its kernel answers ARP/NDP for it) for the duration."""
        prefix = f"{ip}/{ip.max_prefixlen}"
        extra = ["nodad"] if ip.version == 6 else []
        netns.run(self.netns, ["ip", "address", "add", prefix, "dev", plan.HOST_IF, *extra])
        try:
            yield
        finally:
            netns.run(self.netns, ["ip", "address", "del", prefix, "dev", plan.HOST_IF])


@pytest.fixture(scope="module")
def foreign(speaker_record) -> Iterator[ForeignHost]:
    host = ForeignHost(speaker_record.plan)
    host.down()
    try:
        host.up()
        yield host
    finally:
        host.down()


@pytest_asyncio.fixture(loop_scope="session")
async def stray_pool(speaker_lab: SpeakerLab) -> AsyncIterator[str]:
    """An extra Eip whose interface no node has; deleted afterwards."""
    lan = speaker_lab.plan.lan_v4
    name = f"{speaker_lab.plan.name}-{MISSING_INTERFACE}"
    first, last = (lan[host] for host in STRAY_POOL_HOSTS)
    manifest = {
        "apiVersion": f"{resources.EIP_GROUP}/{resources.EIP_VERSION}",
        "kind": "Eip",
        "metadata": {"name": name},
        "spec": {
            "address": f"{first}-{last}",
            "protocol": "layer2",
            "interface": MISSING_INTERFACE,
        },
    }
    await speaker_lab.api.create(codecs.from_dict(manifest))
    try:
        yield name
    finally:
        await speaker_lab.api.delete(resources.Eip, name)


@pytest.mark.parametrize("family", FAMILIES)
async def test_router_entry_holds_the_mac_of_the_announcing_node(speaker_lab, family):
    name = f"resolves-{family}"
    async with speaker_lab.service(name, family, speaker_lab.pool_ip(family, RESOLVES)) as ip:
        node = await speaker_lab.announcer(name)
        await speaker_lab.announced(node, ip)
        await speaker_lab.poke(ip)
        # REACHABLE: the answer was a reply unicast to the router (a gratuitous frame alone
        # could only update an entry, never create one: arp_accept=0, accept_untracked_na=0).
        found = await speaker_lab.wait_entry(ip, "REACHABLE", what=f"the router to resolve {ip}")
        assert speaker_lab.mac_owner(found["lladdr"]) == node.name


@pytest.mark.parametrize("family", FAMILIES)
async def test_http_from_the_client_is_answered_by_the_announcing_node(speaker_lab, family):
    name = f"http-{family}"
    async with speaker_lab.service(name, family, speaker_lab.pool_ip(family, HTTP)) as ip:
        node = await speaker_lab.announcer(name)
        await speaker_lab.announced(node, ip)
        # Retried only while it fails (the kube-proxy stand-in may still be writing the DNAT
        # rule); the first answer must come from the announcing node's backend.
        answer = await eventually(lambda: speaker_lab.http(ip), what=f"an HTTP answer from {ip}")
        assert answer == f"{node.name}\n"


@pytest.mark.parametrize("family", FAMILIES)
async def test_unicast_nud_probe_is_answered(speaker_lab, family):
    name = f"nud-{family}"
    async with speaker_lab.service(name, family, speaker_lab.pool_ip(family, NUD)) as ip:
        node = await speaker_lab.announcer(name)
        await speaker_lab.announced(node, ip)
        await speaker_lab.poke(ip)
        await speaker_lab.wait_entry(ip, "REACHABLE", what=f"the router to resolve {ip}")
        async with speaker_lab.watch_neighbours() as watch:
            await speaker_lab.neigh("change", ip, "nud", "stale")
            # Traffic to a STALE entry: DELAY, then (delay_first_probe_time, 5 s) unicast probes
            # to the MAC it has; answered -> REACHABLE, unanswered (3 probes) -> FAILED.
            await speaker_lab.poke(ip)
            seen: list[tuple[str, str | None]] = []
            async with asyncio.timeout(DEADLINE):
                while not seen or seen[-1][0] not in ("REACHABLE", "FAILED"):
                    seen.append(await watch.next(ip))
        states = [state for state, _ in seen if state != "DELAY"]  # not notified by every kernel
        assert states == ["STALE", "PROBE", "REACHABLE"], seen
        assert {mac for _, mac in seen} == {str(node.mac)}


@pytest.mark.parametrize("family", FAMILIES)
async def test_deleting_the_service_stops_every_answer(speaker_lab, family):
    name = f"deleted-{family}"
    async with speaker_lab.service(name, family, speaker_lab.pool_ip(family, DELETED)) as ip:
        node = await speaker_lab.announcer(name)
        await speaker_lab.announced(node, ip)
        assert await speaker_lab.answers(ip) == {str(node.mac)}
        await speaker_lab.wait_entry(ip, "REACHABLE", poke=True, what=f"the router to resolve {ip}")

    async def silent():
        return await speaker_lab.answers(ip) == set()

    await eventually(silent, what=f"every node to stop answering for {ip}")
    found = await speaker_lab.fresh_lookup(ip)
    assert "FAILED" in found["state"] and "lladdr" not in found, found


@pytest.mark.parametrize("family", FAMILIES)
async def test_unassigned_pool_ip_gets_no_answer(speaker_lab, family):
    name = f"busy-{family}"
    # The speakers have their sockets open and answer for another IP, just not this one.
    async with speaker_lab.service(name, family, speaker_lab.pool_ip(family, BUSY)) as busy:
        node = await speaker_lab.announcer(name)
        await speaker_lab.announced(node, busy)
        assert await speaker_lab.answers(busy) == {str(node.mac)}  # the control

        target = speaker_lab.pool_ip(family, UNASSIGNED)
        assert await speaker_lab.answers(target) == set()
        found = await speaker_lab.fresh_lookup(target)
        assert "FAILED" in found["state"] and "lladdr" not in found, found


@pytest.mark.parametrize("family", FAMILIES)
async def test_exactly_one_node_answers_for_each_ip(speaker_lab, family):
    async with contextlib.AsyncExitStack() as stack:
        placed: dict[IPAddress, str] = {}
        for offset in ONE_EACH:
            name = f"one-{offset}-{family}"
            ip = speaker_lab.pool_ip(family, offset)
            await stack.enter_async_context(speaker_lab.service(name, family, ip))
            placed[ip] = (await speaker_lab.announcer(name)).name
        for ip, node in placed.items():
            await speaker_lab.announced(speaker_lab.node(node), ip)
            answered = await speaker_lab.answers(ip)
            assert {speaker_lab.mac_owner(mac) for mac in answered} == {node}, (ip, answered)


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_host_already_using_the_ip_causes_ip_conflict_and_no_announcement(
    speaker_lab, foreign, family
):
    name = f"conflict-{family}"
    target = speaker_lab.pool_ip(family, CONFLICT)
    with foreign.using(target):
        async with speaker_lab.service(name, family, target) as ip:
            node = await speaker_lab.announcer(name)

            async def reported():
                return await speaker_lab.events(reasons.IP_CONFLICT, kind="Service", name=name)

            [event, *_] = await eventually(reported, what=f"an IPConflict Event on {name}")
            assert event.type == "Warning"
            for part in (str(ip), str(foreign.mac), node.name):
                assert part in event.message, (part, event.message)
            # The probe found the host before anything was announced, and nothing ever is.
            assert await speaker_lab.sample(node, "porterlb_l2_gratuitous_sent", ip) == 0
            assert await speaker_lab.answers(ip) == {str(foreign.mac)}
            found = await speaker_lab.fresh_lookup(ip)
            assert "REACHABLE" in found["state"], found
            assert found["lladdr"] == str(foreign.mac)


async def test_a_pool_whose_interface_a_node_lacks_is_reported(speaker_lab, stray_pool):
    """Every speaker reports the pool (an Event on the Eip) and names it in its heartbeat
    answers, so the leader places none of its IPs: no node has the interface."""
    name = "no-interface"
    pool = {wellknown.POOL[0]: stray_pool}
    async with speaker_lab.service(name, "ipv4", annotations=pool) as ip:
        assert ip in ipaddress.ip_network(speaker_lab.plan.lan_v4)

        async def reported():
            return await speaker_lab.events(reasons.INTERFACE_MISSING, kind="Eip", name=stray_pool)

        [event, *_] = await eventually(reported, what=f"an InterfaceMissing Event on {stray_pool}")
        assert event.type == "Warning"
        assert MISSING_INTERFACE in event.message, event.message

        async def unplaced():
            found = await speaker_lab.events(reasons.NO_ELIGIBLE_NODE, kind="Service", name=name)
            lacks = f"lacks the interface of pool {stray_pool}"
            return [
                e
                for e in found
                if all(f"{n.name}: {lacks}" in e.message for n in speaker_lab.plan.nodes)
            ]

        await eventually(unplaced, what=f"NoEligibleNode on {name} naming every node")
        assert await speaker_lab.answers(ip) == set()
        found = await speaker_lab.fresh_lookup(ip)
        assert "FAILED" in found["state"] and "lladdr" not in found, found
