"""The placement records (one NodePlacement per node) against the real API server.

A failover writes each receiving node's record once or twice, not once per IP nor once per
round of handlers; a new leader
adopts the records as they are, keeps an IP found in two of them in the newer one and clears
the older; a record changed by another writer is written back as the leader decided; the
record of a deleted Node is deleted, empty, once its IPs have left it.
"""

from __future__ import annotations

import asyncio
import contextlib

import lightkube
import pytest
from lightkube.resources.core_v1 import Node

from porterlb.kube import reflector, resources
from porterlb.placement import records
from tests.integration import objects
from tests.integration.conftest import running_manager, set_node_ready
from tests.integration.test_announcing import (
    announced_by,
    pool_with_service,
    served_service,
    wait_announced_by,
)
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MOVED = 40
QUIET_WITHIN = 30.0
"""Seconds the leader's queues may take to drain once every IP has moved."""


async def revision_of(client: lightkube.AsyncClient, node: str) -> int:
    return reflector.object_revision(await objects.raw(client, resources.NodePlacement, node))


async def record_of(client: lightkube.AsyncClient, node: str) -> dict[str, records.Entry]:
    with contextlib.suppress(lightkube.ApiError):
        return records.parse(await objects.raw(client, resources.NodePlacement, node))
    return {}


async def wait_record(client, node: str, ips: set[str]) -> None:
    async def probe() -> bool:
        return set(await record_of(client, node)) == ips

    await eventually(probe, what=f"the record of {node} to list {sorted(ips)}")


async def test_a_failover_writes_the_receiving_nodes_record_once_or_twice_not_once_per_ip(
    client, manager, namespace, net, eips, nodes
):
    old = await nodes(f"{namespace}-old")
    await pool_with_service(client, eips, namespace, net)
    for n in range(1, MOVED):
        await served_service(client, f"s{n}", namespace)
    ips = {f"{net}.{n}" for n in range(1, MOVED + 1)}
    await wait_record(client, old, ips)
    new = await nodes(f"{namespace}-new")  # nothing moves to it while `old` stays eligible
    # Nothing in hand when the node fails: a Service being handled then would be handled
    # again after, and its move could take one more write.
    await asyncio.wait_for(manager.announcing.queue.idle(), QUIET_WITHIN)

    writes: list[int] = []

    async def count() -> None:
        # Every version of the new node's record, from its creation on: each is one write.
        selector = {"metadata.name": new}
        async for _, obj in client.watch(resources.NodePlacement, fields=selector):
            writes.append(reflector.object_revision(obj.to_dict()))

    watching = asyncio.create_task(count(), name="test/watch-record")
    try:
        await set_node_ready(client, old, False)
        await wait_record(client, new, ips)
        await wait_record(client, old, set())
    finally:
        watching.cancel()
    # Every requeued Service is decided before the first write, which so carries them all
    # (a second write: a Service its watch requeued just then). Sixteen handlers at a time
    # took three rounds of writes here.
    assert 1 <= len(set(writes)) <= 2
    for name in ("web", *(f"s{n}" for n in range(1, MOVED))):
        await wait_announced_by(client, name, namespace, {new})
    # Settled, the leader writes no record again (its own writes, seen in its watch, are not
    # taken for another writer's).
    settled = [await revision_of(client, node) for node in (old, new)]
    await asyncio.wait_for(manager.announcing.queue.idle(), QUIET_WITHIN)
    await asyncio.wait_for(manager.announcing.view.idle(), QUIET_WITHIN)
    assert [await revision_of(client, node) for node in (old, new)] == settled


async def test_a_new_leader_keeps_an_ip_in_two_records_in_the_newer_and_clears_the_older(
    client, namespace, net, eips, nodes
):
    first, second = await nodes(f"{namespace}-a"), await nodes(f"{namespace}-b")
    async with running_manager(client):
        await pool_with_service(client, eips, namespace, net)
        placed = await wait_announced_by(client, "web", namespace, {first, second})
        await wait_record(client, placed, {f"{net}.1"})
    other = second if placed == first else first
    # A leader that moved the IP off a silent node and stopped before it cleared the old
    # record: the IP is in both, the newer record is the other node's.
    entry = {"ip": f"{net}.1", "pool": f"{namespace}-pool", "services": [f"{namespace}/web"]}
    record = resources.NodePlacement(metadata={"name": other}, spec={"ips": [entry]})
    await client.apply(record, field_manager="porterlb-test", force=True)
    async with running_manager(client):
        await wait_record(client, placed, set())
        await wait_record(client, other, {f"{net}.1"})
        await wait_announced_by(client, "web", namespace, {other})


async def test_a_record_changed_by_another_writer_is_written_back(
    client, manager, namespace, net, eips, nodes
):
    node = await nodes(f"{namespace}-a")
    await pool_with_service(client, eips, namespace, net)
    await wait_record(client, node, {f"{net}.1"})
    emptied: dict[str, object] = {"spec": {"ips": []}}
    await client.patch(
        resources.NodePlacement, node, emptied, patch_type=lightkube.types.PatchType.MERGE
    )
    await wait_record(client, node, {f"{net}.1"})
    assert await announced_by(client, "web", namespace) == node


async def record_gone(client: lightkube.AsyncClient, node: str) -> bool:
    try:
        await objects.raw(client, resources.NodePlacement, node)
    except lightkube.ApiError as error:
        return error.status.code == 404
    return False


async def test_a_deleted_nodes_record_is_deleted_once_its_ips_have_moved(
    client, manager, namespace, net, eips, nodes
):
    names = {await nodes(f"{namespace}-a"), await nodes(f"{namespace}-b")}
    await pool_with_service(client, eips, namespace, net)
    first = await wait_announced_by(client, "web", namespace, names)
    (other,) = names - {first}
    await wait_record(client, first, {f"{net}.1"})

    seen: list[tuple[str, dict[str, records.Entry]]] = []

    async def follow() -> None:
        # Every version of the deleted Node's record from now on, and how it ends.
        selector = {"metadata.name": first}
        async for kind, obj in client.watch(resources.NodePlacement, fields=selector):
            seen.append((kind, records.parse(obj.to_dict())))

    watching = asyncio.create_task(follow(), name="test/watch-record")
    try:
        await client.delete(Node, first)
        await wait_record(client, other, {f"{net}.1"})
        await eventually(
            lambda: record_gone(client, first), what=f"the record of deleted Node {first} gone"
        )

        async def deletion_seen() -> bool:
            return any(kind == "DELETED" for kind, _ in seen)

        await eventually(deletion_seen, what="its deletion in the watch")
    finally:
        watching.cancel()
    # Deleted as the empty record the leader wrote: its IP had left it first.
    deleted = next(n for n, (kind, _) in enumerate(seen) if kind == "DELETED")
    assert deleted >= 1 and seen[deleted - 1][1] == {} and seen[deleted][1] == {}
    assert (await record_of(client, other))[f"{net}.1"].probe is False  # moved, not new
    await wait_announced_by(client, "web", namespace, {other})


async def test_a_node_deleted_while_no_manager_led_loses_its_record_to_the_next_leader(
    client, namespace, net, eips, nodes
):
    only = await nodes(f"{namespace}-a")
    async with running_manager(client):
        await pool_with_service(client, eips, namespace, net)
        await wait_record(client, only, {f"{net}.1"})
    await client.delete(Node, only)
    async with running_manager(client):
        await eventually(
            lambda: record_gone(client, only), what=f"the record of deleted Node {only} gone"
        )
        await wait_announced_by(client, "web", namespace, None)
    assert await record_gone(client, only)
