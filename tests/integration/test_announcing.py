"""The manager records one announcing node per Service IP, against the real API server."""

from __future__ import annotations

import lightkube
import pytest
from lightkube.resources.core_v1 import Node, Service
from lightkube.types import PatchType

from porterlb.api import reasons, wellknown
from tests.integration import objects
from tests.integration.conftest import eip_object, running_manager, set_node_ready
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def announced_by(client: lightkube.AsyncClient, name: str, namespace: str) -> str | None:
    svc = await objects.raw(client, Service, name, namespace)
    return ((svc.get("metadata") or {}).get("annotations") or {}).get(wellknown.ANNOUNCED_BY)


async def wait_announced_by(client, name, namespace, accept):
    """Wait until the annotation satisfies `accept` (a set of node names, or None for absent)."""

    async def probe():
        node = await announced_by(client, name, namespace)
        return (node in accept) if accept is not None else node is None

    await eventually(probe, what=f"{namespace}/{name} announced by one of {accept}")
    return await announced_by(client, name, namespace)


async def served_service(client, name, namespace, **service):
    """Create a Service with one ready endpoint: what placement needs to announce it."""
    await client.create(objects.service(name, namespace, **service))
    await objects.set_endpoints(client, name, namespace)


async def pool_with_service(client, eips, namespace, net, name="web", **service):
    eips.append(f"{namespace}-pool")
    await client.create(eip_object(f"{namespace}-pool", f"{net}.0/24", namespaces=[namespace]))
    await served_service(client, name, namespace, **service)
    await objects.wait_ingress(client, name, namespace, (f"{net}.1",))


async def test_a_service_ip_is_announced_by_one_ready_node_with_an_event(
    client, manager, namespace, net, eips, nodes
):
    ready = {await nodes(f"{namespace}-a"), await nodes(f"{namespace}-b")}
    await nodes(f"{namespace}-c", ready=False)
    await nodes(f"{namespace}-d", labels={wellknown.EXCLUDE_FROM_LB: "true"})
    await pool_with_service(client, eips, namespace, net)

    node = await wait_announced_by(client, "web", namespace, ready)
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.NODE_ASSIGNED,
        f"Service {namespace}/web: {net}.1 is announced from node {node}",
    )


async def test_no_eligible_node_leaves_the_ip_unannounced_and_says_why(
    client, manager, namespace, net, eips, nodes
):
    down = await nodes(f"{namespace}-a", ready=False)
    await pool_with_service(client, eips, namespace, net)

    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.NO_ELIGIBLE_NODE,
        f"Service {namespace}/web: {net}.1 is not announced: {down}: not Ready",
    )
    assert await announced_by(client, "web", namespace) is None

    await set_node_ready(client, down, True)
    await wait_announced_by(client, "web", namespace, {down})


async def test_the_ip_moves_when_its_node_becomes_ineligible_and_stays_when_it_returns(
    client, manager, namespace, net, eips, nodes
):
    names = {await nodes(f"{namespace}-a"), await nodes(f"{namespace}-b")}
    await pool_with_service(client, eips, namespace, net)
    first = await wait_announced_by(client, "web", namespace, names)
    assert first is not None
    (other,) = names - {first}

    await set_node_ready(client, first, False)
    await wait_announced_by(client, "web", namespace, {other})

    await set_node_ready(client, first, True)
    # Sticky: a node coming back takes nothing back. A second Service goes to the idle node.
    await served_service(client, "api", namespace)
    await wait_announced_by(client, "api", namespace, {first})
    assert await announced_by(client, "web", namespace) == other


async def test_the_exclusion_label_moves_the_ip_and_node_deletion_too(
    client, manager, namespace, net, eips, nodes
):
    names = {await nodes(f"{namespace}-a"), await nodes(f"{namespace}-b")}
    await pool_with_service(client, eips, namespace, net)
    first = await wait_announced_by(client, "web", namespace, names)
    assert first is not None
    (other,) = names - {first}

    patch = {"metadata": {"labels": {wellknown.EXCLUDE_FROM_LB: ""}}}
    await client.patch(Node, first, patch, patch_type=PatchType.MERGE)
    await wait_announced_by(client, "web", namespace, {other})

    await client.delete(Node, other)
    await wait_announced_by(client, "web", namespace, None)


async def test_services_sharing_an_ip_are_announced_from_one_node(
    client, manager, namespace, net, eips, nodes
):
    names = {await nodes(f"{namespace}-{i}") for i in range(4)}
    sharing = {wellknown.SHARING_KEY: "shop"}
    await pool_with_service(client, eips, namespace, net, annotations=sharing)
    await served_service(client, "api", namespace, annotations=sharing, ports=(("TCP", 443),))
    await objects.wait_ingress(client, "api", namespace, (f"{net}.1",))

    web = await wait_announced_by(client, "web", namespace, names)
    assert await wait_announced_by(client, "api", namespace, {web}) == web


async def test_a_released_ip_loses_its_record(client, manager, namespace, net, eips, nodes):
    names = {await nodes(f"{namespace}-a")}
    await pool_with_service(client, eips, namespace, net)
    await wait_announced_by(client, "web", namespace, names)

    patch = [{"op": "replace", "path": "/spec/type", "value": "ClusterIP"}]
    await client.patch(Service, "web", patch, namespace=namespace, patch_type=PatchType.JSON)
    await wait_announced_by(client, "web", namespace, None)


async def test_a_restarted_manager_moves_no_ip(client, namespace, net, eips, nodes):
    names = {await nodes(f"{namespace}-{i}") for i in range(3)}
    async with running_manager(client):
        await pool_with_service(client, eips, namespace, net)
        for i in range(6):
            await served_service(client, f"s{i}", namespace)
        before = {}
        for name in ("web", *(f"s{i}" for i in range(6))):
            before[name] = await wait_announced_by(client, name, namespace, names)
    assert len(set(before.values())) == 3  # spread, least loaded first

    # The new manager sees a node that would now be the least loaded; nothing moves to it.
    await nodes(f"{namespace}-new")
    async with running_manager(client) as manager:
        await served_service(client, "late", namespace)
        await wait_announced_by(client, "late", namespace, {f"{namespace}-new"})
        await manager.announcing.queue.idle()  # every adopted Service has been decided again
        for name, node in before.items():
            assert await announced_by(client, name, namespace) == node
