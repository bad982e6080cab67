"""The speaker's reports about its own kernel: once per group as it appears, counted at every
look, cleared after two looks without it. No API server: the Events are read off the poster's
queue, which nothing drains here."""

from __future__ import annotations

import ipaddress

import lightkube
import prometheus_client
import pytest

from porterlb import errors
from porterlb.api import reasons
from porterlb.api.keys import NodeName, PoolName
from porterlb.kube import events
from porterlb.l2 import strictarp
from porterlb.speaker import agent, kernelarp
from tests.unit.speaker.test_agent_moves import UNUSED

V4 = ipaddress.IPv4Address("198.18.0.200")
IPVS = strictarp.Finding("eth0", "kube-ipvs0", V4)
IPVS_2 = strictarp.Finding("eth0", "kube-ipvs0", V4 + 1)
ON_ETH1 = strictarp.Finding("eth1", "eth1", V4 + 2)


def gauge(interface: str, holder: str) -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(
        "porterlb_speaker_kernel_answers", {"interface": interface, "holder": holder}
    )


def drained(poster: events.Poster) -> list[events.Notice]:
    found = []
    while not poster.queue.empty():
        found.append(poster.queue.get_nowait())
    return found


# Consecutive looks on one Check: (findings, (type, reason, part of the message) of each
# Event, gauge of the kube-ipvs0 group afterwards).
WARNED = ("Warning", reasons.KERNEL_ANSWERS_ARP, "on eth0 for porterlb's 198.18.0.200")
STEPS = [
    ({IPVS}, [WARNED], 1),
    ({IPVS, IPVS_2}, [], 2),  # one more Service: counted, not reported again
    ({IPVS, IPVS_2, ON_ETH1}, [("Warning", reasons.KERNEL_ANSWERS_ARP, "configured on it")], 2),
    ({ON_ETH1}, [], 2),  # absent once: maybe a look during re-resolution
    ({IPVS, ON_ETH1}, [], 1),  # back: nothing to say
    ({ON_ETH1}, [], 1),
    (
        {ON_ETH1},
        [
            (
                "Normal",
                reasons.KERNEL_ANSWERS_ARP_CLEARED,
                "on eth0 for porterlb's IPs configured on kube-ipvs0",
            )
        ],
        0,
    ),
    ({ON_ETH1}, [], 0),
    ({IPVS}, [WARNED], 1),
]


def test_report_steps():
    poster = events.Poster(lightkube.AsyncClient(config=UNUSED), component="test")
    check = kernelarp.Check(node="w2", netns=None, poster=poster, pools=list, assigned=bool)
    for number, (found, expected, ipvs) in enumerate(STEPS):
        check.report(found, {"eth0": 0, "eth1": 1})
        posted = drained(poster)
        assert [(n.type, n.reason) for n in posted] == [e[:2] for e in expected], number
        for notice, (_, _, part) in zip(posted, expected, strict=True):
            assert notice.subject == events.Subject.node("w2"), number
            assert notice.message.startswith("node w2: "), number
            assert part in notice.message, (number, notice.message)
        assert gauge("eth0", "kube-ipvs0") == ipvs, f"step {number}"


def test_a_missing_interface_has_no_arp_ignore():
    found = kernelarp._arp_ignore(["lo", "plb-no-such-if"])
    assert set(found) == {"lo"}
    assert found["lo"] >= 0


async def test_no_pool_means_no_look():
    poster = events.Poster(lightkube.AsyncClient(config=UNUSED), component="test")
    check = kernelarp.Check(
        node="w2", netns="plb-never-created", poster=poster, pools=list, assigned=lambda ip: True
    )
    assert await check.look() == (frozenset(), {})


async def test_a_namespace_that_cannot_be_read_is_a_transient_error_naming_it():
    poster = events.Poster(lightkube.AsyncClient(config=UNUSED), component="test")
    check = kernelarp.Check(
        node="w2",
        netns="plb-never-created",
        poster=poster,
        pools=lambda: [strictarp.Pool(V4, V4 + 9, "eth0")],
        assigned=bool,
    )
    with pytest.raises(errors.TransientError, match="netns plb-never-created"):
        await check.look()


def test_speaker_pools_are_the_resolved_ones_with_their_ranges():
    speaker = agent.Speaker(lightkube.AsyncClient(config=UNUSED), node=NodeName("w2"))
    for name, spec in (("lan", "198.18.0.200-198.18.0.209"), ("v6", "2001:db8::200/125")):
        speaker.eips.cache[name] = {
            "metadata": {"name": name},
            "spec": {"address": spec, "protocol": "layer2", "interface": "eth0"},
        }
    speaker.links = {PoolName("lan"): "eth0", PoolName("v6"): None, PoolName("gone"): "eth0"}
    assert speaker._pools() == [strictarp.Pool(V4, V4 + 9, "eth0")]


def test_ips_assigned_to_any_node_count_and_released_ones_stop_counting():
    """The speaker sees only its own record: the Eips' ``status.used`` says which pool
    addresses are Services', announced here or on another node."""
    speaker = agent.Speaker(lightkube.AsyncClient(config=UNUSED), node=NodeName("w2"))
    used = {str(V4): "shop/web", str(V4 + 1): "shop/api"}
    speaker.eips.cache["lan"] = {"metadata": {"name": "lan"}, "status": {"used": used}}
    assert speaker._used(V4) and speaker._used(V4 + 1)
    assert not speaker._used(V4 + 2)
    speaker.eips.cache["lan"] = {"metadata": {"name": "lan"}, "status": {"used": {}}}
    assert not speaker._used(V4)
