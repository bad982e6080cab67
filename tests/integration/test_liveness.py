"""Heartbeats decide which nodes may announce, against the real API server.

The manager pings over real UDP on loopback: each test Node reports an InternalIP in
127.0.0.0/8 and a speaker heartbeat endpoint (the speaker's own class) answers on it. A node
whose endpoint stops loses its IP with a ``Failover`` Event; a node whose endpoint never
answered, or answers with another key, never gets one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator, Callable

import lightkube
import pytest
from lightkube.resources.core_v1 import Node, Service
from lightkube.types import PatchType

from porterlb.api import reasons
from porterlb.kube import election, reflector, resources, secrets
from porterlb.liveness import guard, keys, tracker
from porterlb.liveness import metrics as liveness_metrics
from porterlb.manager import liveness
from porterlb.placement import records
from porterlb.speaker import heartbeats
from tests.integration import objects
from tests.integration.conftest import running_manager, set_node_ready
from tests.integration.test_announcing import announced_by, pool_with_service, wait_announced_by
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TIMING = tracker.Timing(interval=0.05, misses=3)
CAUGHT_UP = 2**62
"""The watch revision of a speaker endpoint whose watch is never behind."""
SILENT = r"its speaker stopped answering heartbeats \(found \d+ ms after its last answer\)"
RECORDED = r"recorded \d+ ms after that was found"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_udp_port()


@pytest.fixture
async def pinging_manager(client, namespace, port):
    settings = liveness.Settings(secret_namespace=namespace, port=port, timing=TIMING)
    async with running_manager(client, heartbeat=settings) as manager:
        yield manager


async def node_at(client, nodes, name: str, ip: str) -> str:
    await nodes(name)
    status = {"status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
    await client.patch(Node.Status, name, status, patch_type=PatchType.MERGE)
    return name


@contextlib.asynccontextmanager
async def answering(
    node: str,
    ip: str,
    port: int,
    key: bytes,
    *,
    lacking: tuple[str, ...] = (),
    secret: tuple[lightkube.AsyncClient, str] | None = None,
    rotation: keys.Rotation | None = None,
    watched: Callable[[], int] = lambda: CAUGHT_UP,
) -> AsyncIterator[heartbeats.Heartbeats]:
    """A speaker's heartbeat endpoint for `node` on `ip`:`port` while the block runs,
    saying it lacks the interfaces of `lacking`, its watch at revision `watched()`; with
    `secret` (client, namespace) it follows the heartbeat Secret as the speaker does."""
    lease = guard.Lease(session=os.urandom(8))
    endpoint = heartbeats.Heartbeats(
        node=node,
        key=key,
        lease=lease,
        watched=watched,
        port=port,
        addresses=(ip,),
        rotation=rotation,
    )
    endpoint.lacking = lacking
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(endpoint.run(), name=f"test/heartbeats/{node}")]
        if secret is not None:
            client, namespace = secret
            follow = secrets.follow(
                client, namespace=namespace, name=secrets.DEFAULT_NAME, on_key=endpoint.rekey
            )
            tasks.append(group.create_task(follow, name=f"test/heartbeats/{node}/key"))
        try:
            yield endpoint
        finally:
            for task in tasks:
                task.cancel()


async def key_of(client, namespace: str) -> bytes:
    """The heartbeat key the manager created."""
    return await secrets.heartbeat_key(
        client, namespace=namespace, name=secrets.DEFAULT_NAME, create=False
    )


async def wait_silent(manager, node: str, silent: bool) -> None:
    async def probe():
        pinger = manager.announcing.pinger
        return pinger is not None and (node in pinger.silent) is silent

    await eventually(probe, what=f"node {node} {'silent' if silent else 'answering'}")


async def wait_not_announced(client, namespace: str, net: str, why: str) -> None:
    """Wait for the NoEligibleNode Event of Service ``web`` that gives ``why``."""
    message = f"Service {namespace}/web: {net}.1 is not announced: {why}"
    await objects.wait_event(client, namespace, "web", reasons.NO_ELIGIBLE_NODE, message)


async def test_a_silent_speaker_loses_its_ip_with_a_failover_event_and_no_ip_returns(
    client, pinging_manager, namespace, net, eips, nodes, port
):
    names = {f"{namespace}-{n}": f"127.0.0.{20 + n}" for n in range(3)}
    for name, ip in names.items():
        await node_at(client, nodes, name, ip)
    key = await key_of(client, namespace)
    async with contextlib.AsyncExitStack() as stack:
        for name, ip in names.items():
            await stack.enter_async_context(answering(name, ip, port, key))
        await pool_with_service(client, eips, namespace, net)
        first = await wait_announced_by(client, "web", namespace, set(names))

    async with contextlib.AsyncExitStack() as stack:
        for name, ip in names.items():
            if name != first:
                await stack.enter_async_context(answering(name, ip, port, key))
        second = await wait_announced_by(client, "web", namespace, set(names) - {first})
        message = rf"Service {namespace}/web: {re.escape(net)}\.1 moved from node {first}"
        await objects.wait_event(
            client,
            namespace,
            "web",
            reasons.FAILOVER,
            re.compile(rf"{message} to node {second}: {first}: {SILENT}; {RECORDED}"),
        )

        async with answering(first, names[first], port, key):
            await wait_silent(pinging_manager, first, False)
            assert await announced_by(client, "web", namespace) == second


async def test_a_node_whose_speaker_never_answered_or_has_another_key_gets_no_ip(
    client, pinging_manager, namespace, net, eips, nodes, port
):
    mute = await node_at(client, nodes, f"{namespace}-mute", "127.0.0.30")
    forger = await node_at(client, nodes, f"{namespace}-forger", "127.0.0.31")
    # One speaker answers (on a node not Ready), or the manager would blame its own network.
    good = await node_at(client, nodes, f"{namespace}-good", "127.0.0.32")
    await set_node_ready(client, good, False)
    key = await key_of(client, namespace)
    async with (
        answering(forger, "127.0.0.31", port, os.urandom(32)),
        answering(good, "127.0.0.32", port, key),
    ):
        await pool_with_service(client, eips, namespace, net)
        never = "its speaker never answered heartbeats"
        why = f"{forger}: {never}; {good}: not Ready; {mute}: {never}"
        await wait_not_announced(client, namespace, net, why)
        assert await announced_by(client, "web", namespace) is None

    async with answering(mute, "127.0.0.30", port, key):
        await wait_announced_by(client, "web", namespace, {mute})


async def test_when_no_speaker_answers_the_manager_blames_itself_and_keeps_every_node(
    client, pinging_manager, namespace, net, eips, nodes, port
):
    first = await node_at(client, nodes, f"{namespace}-a", "127.0.0.40")
    second = await node_at(client, nodes, f"{namespace}-b", "127.0.0.41")
    await pool_with_service(client, eips, namespace, net)
    node = await wait_announced_by(client, "web", namespace, {first, second})
    pinger = pinging_manager.announcing.pinger
    due = pinger.tracker.due

    async def rounds_passed():
        return pinger.tracker.due >= due + 2 * TIMING.misses

    await eventually(rounds_passed, what="the silent rounds to be counted")
    assert pinger.silent == {}
    assert await announced_by(client, "web", namespace) == node


async def test_a_leader_that_hears_no_speaker_says_failover_is_off_in_an_event_and_a_metric(
    client, namespace, nodes, port
):
    """Failover off cluster-wide is not only a log line (issue 9, clock skew): a Warning
    ``FailoverSuspended`` on the election Lease, and a gauge at 1."""
    await node_at(client, nodes, f"{namespace}-a", "127.0.0.45")
    settings = liveness.Settings(secret_namespace=namespace, port=port, timing=TIMING)
    elector = election.Elector(client, namespace=namespace, identity=f"{namespace}-manager")
    async with running_manager(client, heartbeat=settings, elector=elector):
        message = re.compile(
            r"no speaker of \d+ nodes answers this manager's heartbeats: suspecting the"
            r" manager's own network, so no IP moves for silence until one does"
        )
        await objects.wait_event(
            client, namespace, election.LEASE_NAME, reasons.FAILOVER_SUSPENDED, message
        )
        assert liveness_metrics.FAILOVER_SUSPENDED._value.get() == 1


async def test_a_move_away_from_a_node_that_answers_waits_for_its_echo_of_the_revocation(
    client, pinging_manager, namespace, net, eips, nodes, port
):
    """The node whose IP moves still answers heartbeats, but its watch lags (revision 0):
    it echoes the revocation as fenced (``STALE``), and only then does another node get the
    IP; a node that keeps lagging is not eligible."""
    names = {f"{namespace}-{n}": f"127.0.0.{50 + n}" for n in range(2)}
    lagging = dict.fromkeys(names, False)
    for name, ip in names.items():
        await node_at(client, nodes, name, ip)
    key = await key_of(client, namespace)
    async with contextlib.AsyncExitStack() as stack:
        for name, ip in names.items():

            def watched(name: str = name) -> int:
                return 0 if lagging[name] else CAUGHT_UP

            await stack.enter_async_context(answering(name, ip, port, key, watched=watched))
        await pool_with_service(client, eips, namespace, net)
        first = await wait_announced_by(client, "web", namespace, set(names))
        pinger = pinging_manager.announcing.pinger
        lagging[first] = True
        await set_node_ready(client, first, False)
        second = await wait_announced_by(client, "web", namespace, set(names) - {first})
        assert pinger.must_see[first] > 0
        assert pinger.confirmed(first) >= pinger.must_see[first]
        message = rf"Service {namespace}/web: {re.escape(net)}\.1 moved from node {first}"
        await objects.wait_event(
            client,
            namespace,
            "web",
            reasons.FAILOVER,
            re.compile(rf"{message} to node {second}: {first}: not Ready; {RECORDED}"),
        )

        async def stale() -> bool:
            return bool(pinger.stale == {first})

        await eventually(stale, what=f"node {first} to count as stale")
        await set_node_ready(client, first, True)
        await set_node_ready(client, second, False)
        reasons_by_node = {
            first: "its speaker's API watch lags the leader's revocations (it answers no ARP)",
            second: "not Ready",
        }
        # NoEligibleNode names the nodes in name order, whichever got the IP first.
        why = "; ".join(f"{node}: {reasons_by_node[node]}" for node in sorted(reasons_by_node))
        await wait_not_announced(client, namespace, net, why)


@contextlib.asynccontextmanager
async def turns_held(announcing, key: str) -> AsyncIterator[None]:
    """Hold the leader's turns for Service `key` until the block ends: on a loaded machine the
    leader can be that late, and what has happened meanwhile is all it sees."""
    handle, release = announcing.queue.handler, asyncio.Event()

    async def held(turn: str) -> object:
        if turn == key:
            await release.wait()
        return await handle(turn)

    announcing.queue.handler = held
    try:
        yield
    finally:
        release.set()
        announcing.queue.handler = handle
    await announcing.queue.idle()


async def record_without(client, node: str, ip: str) -> int:
    """The revision of `node`'s placement record once it no longer lists `ip`."""

    async def probe() -> int:
        obj = await objects.raw(client, resources.NodePlacement, node)
        return 0 if ip in records.parse(obj) else reflector.object_revision(obj)

    return await eventually(probe, what=f"{ip} out of the record of {node}")


async def test_a_service_deleted_before_the_leader_handles_it_still_fences_its_node(
    client, pinging_manager, namespace, net, eips, nodes, port
):
    """The leader's cache may hold the deletion of a Service before the leader has handled
    anything of its going (its EndpointSlice first, then the Service): its IP must still
    leave its node's record, and that node's speaker must reach the record without it."""
    node = await node_at(client, nodes, f"{namespace}-0", "127.0.0.60")
    key = await key_of(client, namespace)
    announcing = pinging_manager.announcing
    async with answering(node, "127.0.0.60", port, key):
        await pool_with_service(client, eips, namespace, net)
        await wait_announced_by(client, "web", namespace, {node})
        async with turns_held(announcing, f"{namespace}/web"):
            await objects.delete_endpoints(client, "web", namespace)
            await client.delete(Service, "web", namespace=namespace)

            async def gone() -> bool:
                return f"{namespace}/web" not in announcing.services.cache

            await eventually(gone, what="the deletion in the leader's cache")
        written = await record_without(client, node, f"{net}.1")
        assert announcing.pinger is not None
        assert announcing.pinger.must_see[node] >= written


async def test_a_release_written_by_ipam_is_a_revocation_the_old_node_must_reach(
    client, pinging_manager, namespace, net, eips, nodes, port
):
    """A Service that leaves porterlb's class loses its IP in IPAM's write, not in
    placement's: the leader, seeing the IP already gone, must still take it out of the
    record of the node that announced it and require that version of its speaker."""
    node = await node_at(client, nodes, f"{namespace}-0", "127.0.0.61")
    key = await key_of(client, namespace)
    announcing = pinging_manager.announcing
    async with answering(node, "127.0.0.61", port, key):
        await pool_with_service(client, eips, namespace, net)
        await wait_announced_by(client, "web", namespace, {node})
        placed = reflector.object_revision(await objects.raw(client, resources.NodePlacement, node))
        async with turns_held(announcing, f"{namespace}/web"):
            leave = {"spec": {"type": "ClusterIP"}}
            await client.patch(
                Service, "web", leave, namespace=namespace, patch_type=PatchType.MERGE
            )
            await objects.wait_ingress(client, "web", namespace, ())
            released = reflector.object_revision(
                await objects.raw(client, Service, "web", namespace)
            )

            async def seen() -> bool:
                obj = announcing.services.cache.get(f"{namespace}/web") or {}
                return reflector.object_revision(obj) >= released

            await eventually(seen, what="the release in the leader's cache")
        written = await record_without(client, node, f"{net}.1")
        assert announcing.pinger is not None
        assert announcing.pinger.must_see[node] >= written > placed
        await wait_announced_by(client, "web", namespace, None)


async def test_no_ip_goes_to_a_node_whose_speaker_lacks_the_pools_interface(
    client, pinging_manager, namespace, net, eips, nodes, port
):
    without = await node_at(client, nodes, f"{namespace}-without", "127.0.0.50")
    key = await key_of(client, namespace)
    pool = f"{namespace}-pool"
    async with answering(without, "127.0.0.50", port, key, lacking=(pool,)):
        await pool_with_service(client, eips, namespace, net)
        why = f"{without}: lacks the interface of pool {pool}"
        await wait_not_announced(client, namespace, net, why)
        with_it = await node_at(client, nodes, f"{namespace}-with", "127.0.0.51")
        async with answering(with_it, "127.0.0.51", port, key):
            await wait_announced_by(client, "web", namespace, {with_it})
