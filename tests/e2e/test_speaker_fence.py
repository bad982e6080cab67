"""The fence in real speaker processes: a speaker cut off from the control plane stops
answering before another node starts (docs/fencing.md), whatever the shape of the cut.

The cut of the API path is silent: the victim's speaker is restarted with a kubeconfig that
points at a TCP relay in this test (:class:`tests.integration.proxy.Proxy`) which, when
partitioned, keeps every connection open and drops every byte (no FIN, no RST), as a switch
that stops forwarding does; its watch stays "established" and delivers nothing. Heartbeat
cuts are nftables rules in the victim's namespace: pings dropped on the way in, pongs on the
way out, or both. The judge is the router: one broadcast ARP request at a time, and the set
of MACs that answer it; two MACs in one answer set is the failure the fence exists to
prevent. Each test places its Service on the victim by excluding the other nodes
(``node.kubernetes.io/exclude-from-external-load-balancers``) until it is placed, then moves
it away for a reason other than silence, or by cutting the victim's heartbeats. Needs root.

It stays on the process lab: the victim's speaker is restarted with a kubeconfig naming a
relay in the test's own process, which a speaker pod of the chart cannot be pointed at
without another release; the same cuts on the real-node lab, through ``lab fault``, are
``test_real_faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import pytest
import yaml
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from porterlb.api import reasons, wellknown
from porterlb.lab import credentials, lab, netns, plan
from porterlb.lab import processes as procs
from porterlb.liveness import udp
from tests.e2e import marks
from tests.e2e.conftest import IPAddress, SpeakerLab
from tests.integration.proxy import Proxy
from tests.waiting import eventually

pytestmark = marks.e2e("ip", "nft", control_plane=True)

OFFSETS: Final = {"stale-watch": 10, "released": 11, "ping-loss": 12, "pong-loss": 13}
OFFSETS_PARTITION: Final = 14
"""Each test's own pool IPs, so no router entry carries over."""

SAMPLE_WINDOW: Final = 0.5
"""Seconds one ARP request collects answers: a speaker answers within a millisecond, and two
answers to one request mean two answerers at that instant."""

FAULT_TABLE: Final = "porterlb_fence_test"


def _rule(match: str) -> str:
    """An nftables table that drops, on the way in, the heartbeats that `match`. Dropped on
    receipt, never on send: a dropped send fails with EPERM, which is not a silent cut."""
    return (
        f"table inet {FAULT_TABLE} {{\n"
        f"  chain input {{ type filter hook input priority -10; {match} drop; }}\n"
        "}\n"
    )


def _cuts(process_lab: SpeakerLab, node: plan.Node, kind: str) -> tuple[str, str]:
    """Where (namespace) and what (nftables table) cuts `kind` of `node`'s heartbeats:
    pings on their way into the node, pongs on their way into the managers' namespace."""
    port = udp.DEFAULT_PORT
    if kind == "ping-loss":
        return node.netns, _rule(f"udp dport {port}")
    return process_lab.plan.router_netns, _rule(f"ip saddr {node.ipv4.ip} udp sport {port}")


async def _metrics(process_lab: SpeakerLab, node: plan.Node) -> str:
    return await asyncio.to_thread(lab.scrape, process_lab.record, f"speaker/{node.name}")


@contextlib.asynccontextmanager
async def proxied_speaker(
    process_lab: SpeakerLab, node: plan.Node, scratch: Path
) -> AsyncIterator[Proxy]:
    """Node's speaker, restarted to reach the API server through a relay this test can
    partition silently; the lab's own speaker is back afterwards."""
    # The speaker's own credentials (its ServiceAccount, in porterlb's namespace), its API
    # traffic through the relay.
    kubeconfig = credentials.kubeconfig(process_lab.record.directory, "speaker")
    server = urlsplit(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"])
    # In the worker's namespace, as the lab runs speakers: their API traffic leaves the node.
    proxy = Proxy(
        server.hostname or "127.0.0.1",
        server.port or 443,
        listen_in=functools.partial(netns.call_in, node.netns),
    )
    await proxy.start()
    role = f"speaker/{node.name}"
    os.kill(process_lab.record.process(role).pid, signal.SIGKILL)
    await eventually(
        lambda: _dead(process_lab.record.process(role)), what=f"the lab's {role} to exit"
    )
    address = process_lab.record.metrics[role]
    argv = [
        *lab.NICE, *lab.PORTERLB, "speaker", "--node-name", node.name,
        "--kubeconfig", str(proxy.kubeconfig(kubeconfig, scratch / "proxied.kubeconfig")),
        "--metrics-addr", address, "--health-addr", "0",
    ]  # fmt: skip
    log = process_lab.record.directory / "logs" / f"fence-test-{node.name}.log"
    ours = procs.start(process_lab.plan.name, role, argv, log, namespace=node.netns)
    try:

        async def ready() -> bool:
            if not procs.alive(ours):
                raise AssertionError(f"the proxied speaker exited; see {log}")
            try:
                text = await _metrics(process_lab, node)
            except Exception:
                return False
            return bool(lab.ANSWERED_PING.search(text)) and "porterlb_speaker_fenced 0.0" in text

        await eventually(ready, what=f"the proxied speaker of {node.name} to answer pings")
        yield proxy
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(ours.pid, signal.SIGKILL)
        await eventually(lambda: _dead(ours), what="the proxied speaker to exit")
        await proxy.stop()
        process_lab.record = lab.restart(process_lab.record, role)


async def _dead(process: procs.Process) -> bool:
    return not procs.alive(process)


async def set_excluded(process_lab: SpeakerLab, nodes: Iterable[plan.Node], excluded: bool) -> None:
    for node in nodes:
        labels = {wellknown.EXCLUDE_FROM_LB: "true" if excluded else None}
        await process_lab.api.patch(
            Node, node.name, {"metadata": {"labels": labels}}, patch_type=PatchType.MERGE
        )


@contextlib.asynccontextmanager
async def cut_heartbeats(
    process_lab: SpeakerLab, node: plan.Node, *kinds: str
) -> AsyncIterator[None]:
    cuts = [_cuts(process_lab, node, kind) for kind in kinds]
    for where, table in cuts:
        await asyncio.to_thread(netns.run, where, ["nft", "-f", "-"], input=table)
    try:
        yield
    finally:
        for where, _ in cuts:
            await asyncio.to_thread(
                netns.run, where, ["nft", "delete", "table", "inet", FAULT_TABLE]
            )


async def placed_on(process_lab: SpeakerLab, victim: plan.Node, name: str) -> None:
    """Wait until Service `name` is announced from `victim` and the router hears only it."""
    assert (await process_lab.announcer(name)).name == victim.name


async def one_answerer_until(process_lab: SpeakerLab, ip: IPAddress, *, done) -> set[str]:
    """Ask the router's question again and again until ``done(answers)``; fail the moment
    two MACs answer one request."""

    async def sample() -> list[set[str]] | None:
        found = await process_lab.answers(ip, window=SAMPLE_WINDOW)
        owners = sorted(process_lab.mac_owner(mac) for mac in found)
        assert len(found) <= 1, f"two nodes answered for {ip} at once: {owners}"
        return [found] if done(found) else None  # a list: an empty set is an answer too

    [found] = await eventually(sample, what=f"the answers for {ip} to settle")
    return found


@contextlib.asynccontextmanager
async def on_victim(
    process_lab: SpeakerLab, victim: plan.Node, name: str, offset: int
) -> AsyncIterator[IPAddress]:
    """A Service placed on `victim` (the other nodes excluded until it is)."""
    others = [n for n in process_lab.plan.nodes if n.name != victim.name]
    await set_excluded(process_lab, others, True)
    try:
        async with process_lab.service(name, "ipv4", process_lab.pool_ip("ipv4", offset)) as ip:
            await placed_on(process_lab, victim, name)
            await process_lab.announced(victim, ip)
            await set_excluded(process_lab, others, False)
            assert await process_lab.answers(ip) == {str(victim.mac)}
            yield ip
    finally:
        await set_excluded(process_lab, process_lab.plan.nodes, False)


async def test_a_pinged_speaker_whose_watch_died_silently_lets_go_of_moved_and_released_ips(
    process_lab, tmp_path
):
    """Its pings keep arriving, so only the leader's must-see revision can tell it that an
    assignment it cannot see has changed: one IP is released (Service deleted), one moved."""
    victim = process_lab.plan.nodes[0]
    async with (
        proxied_speaker(process_lab, victim, tmp_path) as proxy,
        on_victim(process_lab, victim, "fence-moved", OFFSETS["stale-watch"]) as moved,
    ):
        released = process_lab.pool_ip("ipv4", OFFSETS["released"])
        others = [n for n in process_lab.plan.nodes if n.name != victim.name]
        await set_excluded(process_lab, others, True)
        async with process_lab.service("fence-released", "ipv4", released):
            await placed_on(process_lab, victim, "fence-released")
            await process_lab.announced(victim, released)
            await set_excluded(process_lab, others, False)
            proxy.forwarding = False  # the speaker's API path goes silent: no FIN, no RST
        # The Service is deleted: nobody may answer for its IP any more.
        await one_answerer_until(process_lab, released, done=lambda found: not found)
        # The other IP moves off the victim for a reason other than silence.
        await set_excluded(process_lab, [victim], True)
        found = await one_answerer_until(
            process_lab, moved, done=lambda found: bool(found) and found != {str(victim.mac)}
        )
        new = process_lab.mac_owner(next(iter(found)))
        assert await process_lab.answers(moved) == found, f"{moved} settled on {new}"
        assert await process_lab.answers(released) == set()
        conflicts = await process_lab.events(
            reasons.IP_CONFLICT, kind="Service", name="fence-moved"
        )
        assert conflicts == [], [event.message for event in conflicts]


@pytest.mark.parametrize(
    ("kinds", "offset"),
    [
        pytest.param(("ping-loss",), OFFSETS["ping-loss"], id="api-and-ping-loss"),
        pytest.param(("pong-loss",), OFFSETS["pong-loss"], id="api-and-pong-loss"),
        pytest.param(("ping-loss", "pong-loss"), OFFSETS_PARTITION, id="node-partition"),
    ],
)
async def test_a_speaker_cut_off_from_the_control_plane_stops_before_another_node_starts(
    process_lab, tmp_path, kinds, offset
):
    """Its API path goes silent and its heartbeats are cut (one way or both) while its LAN
    link stays up: the leader moves its IP for silence, and no ARP request is ever answered
    by two nodes; the IP ends on another node, and the victim stays quiet."""
    victim = process_lab.plan.nodes[1]
    name = f"fence-{'-'.join(kinds)}"
    async with (
        proxied_speaker(process_lab, victim, tmp_path) as proxy,
        on_victim(process_lab, victim, name, offset) as ip,
    ):
        proxy.forwarding = False
        async with cut_heartbeats(process_lab, victim, *kinds):
            found = await one_answerer_until(
                process_lab, ip, done=lambda found: bool(found) and found != {str(victim.mac)}
            )
            moved = [
                event.message
                for event in await process_lab.events(reasons.FAILOVER, kind="Service", name=name)
            ]
            assert any("stopped answering heartbeats" in message for message in moved), moved
            assert await process_lab.answers(ip) == found
