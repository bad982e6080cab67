"""A Service that leaves porterlb's class gives everything back, deleting or not.

Every way out is tried against the real API server: the type changed to NodePort, the
OpenELB opt-in annotation removed, and (since the API server keeps ``loadBalancerClass``
immutable on a LoadBalancer) LoadBalancer -> NodePort -> LoadBalancer of another class. Each
ends with no finalizer, no pool label, no announced-by record and the IP back in its pool;
a Service deleted after it left (or while leaving) disappears instead of hanging in
Terminating, and its Eip can then be deleted.
"""

from __future__ import annotations

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType

from porterlb.api import wellknown
from porterlb.kube import resources
from tests.integration import objects
from tests.integration.conftest import eip_object, running_manager
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

OTHER_CLASS = "example.com/other"


def _meta(svc):
    return svc.get("metadata") or {}


async def _served(client, name, namespace, ip, node, pool):
    """Wait until `name` holds `ip`, claimed by us, announced from `node` and counted in the
    status of `pool`'s Eip: a later wait for that status to empty then judges a release, not a
    status that had not counted the IP yet (its writes are paced)."""
    await objects.wait_ingress(client, name, namespace, (ip,))

    async def announced():
        meta = _meta(await objects.raw(client, Service, name, namespace))
        return (meta.get("annotations") or {}).get(wellknown.ANNOUNCED_BY) == node

    await eventually(announced, what=f"{namespace}/{name} announced by {node}")

    async def counted():
        status = (await objects.raw(client, resources.Eip, pool)).get("status") or {}
        return status.get("used") == {ip: f"{namespace}/{name}"}

    await eventually(counted, what=f'Eip "{pool}" status counting {ip} for {namespace}/{name}')


def _marks(svc) -> dict[str, object]:
    """What of ours a Service still carries (empty: nothing)."""
    meta = _meta(svc)
    found: dict[str, object] = {}
    if wellknown.SERVICE_FINALIZER in (meta.get("finalizers") or ()):
        found["finalizer"] = True
    if wellknown.POOL_LABEL in (meta.get("labels") or {}):
        found["label"] = meta["labels"][wellknown.POOL_LABEL]
    if wellknown.ANNOUNCED_BY in (meta.get("annotations") or {}):
        found["announced-by"] = meta["annotations"][wellknown.ANNOUNCED_BY]
    return found


async def _wait_unmarked(client, name, namespace):
    """Wait until the Service carries nothing of ours; return it."""

    async def clean():
        svc = await objects.raw(client, Service, name, namespace)
        return not _marks(svc) and svc

    return await eventually(clean, what=f"{namespace}/{name} without our marks")


async def _wait_gone(client, name, namespace):
    async def gone():
        try:
            await client.get(Service, name, namespace=namespace)
        except ApiError as error:
            return error.status.code == 404
        return False

    await eventually(gone, what=f"{namespace}/{name} deleted")


async def _wait_pool_empty(client, pool):
    async def empty():
        status = (await objects.raw(client, resources.Eip, pool)).get("status") or {}
        return not status.get("used") and status.get("usage") == 0

    await eventually(empty, what=f'Eip "{pool}" status without any used IP')


async def _to_node_port(client, name, namespace):
    await client.patch(
        Service,
        name,
        [{"op": "replace", "path": "/spec/type", "value": "NodePort"}],
        namespace=namespace,
        patch_type=PatchType.JSON,
    )


async def _to_other_class(client, name, namespace):
    """LoadBalancer -> NodePort -> LoadBalancer of another class, as fast as the API allows."""
    await _to_node_port(client, name, namespace)
    await client.patch(
        Service,
        name,
        {"spec": {"type": "LoadBalancer", "loadBalancerClass": OTHER_CLASS}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )


async def _drop_opt_in(client, name, namespace):
    await client.patch(
        Service,
        name,
        {"metadata": {"annotations": {wellknown.LB_OPT_IN: None}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )


LEAVE = {
    "node-port": _to_node_port,
    "other-class": _to_other_class,
    "opt-in-removed": _drop_opt_in,
}


async def _setup(client, namespace, net, eips, nodes):
    pool = f"{namespace}-a"
    eips.append(pool)
    await client.create(eip_object(pool, f"{net}.0/24", namespaces=[namespace]))
    node = await nodes(f"{namespace}-n1")
    await client.create(objects.service("web", namespace))
    await objects.set_endpoints(client, "web", namespace)
    return pool, node


@pytest.mark.parametrize("how", LEAVE)
async def test_leaving_gives_back_ip_finalizer_label_and_record(
    client, manager, namespace, net, eips, nodes, how
):
    pool, node = await _setup(client, namespace, net, eips, nodes)
    await _served(client, "web", namespace, f"{net}.1", node, pool)

    await LEAVE[how](client, "web", namespace)

    left = await _wait_unmarked(client, "web", namespace)
    ingress = ((left.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    assert not ingress
    await _wait_pool_empty(client, pool)
    # The IP is free again: the next Service of the namespace gets it.
    await client.create(objects.service("next", namespace))
    await objects.wait_ingress(client, "next", namespace, (f"{net}.1",))


async def test_a_service_of_another_class_keeps_the_status_its_controller_wrote(
    client, manager, namespace, net, eips, nodes
):
    pool, node = await _setup(client, namespace, net, eips, nodes)
    await _served(client, "web", namespace, f"{net}.1", node, pool)
    await _to_other_class(client, "web", namespace)
    theirs = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}]}}}
    await client.patch(
        Service.Status, "web", theirs, namespace=namespace, patch_type=PatchType.MERGE
    )
    await _wait_unmarked(client, "web", namespace)
    await _wait_pool_empty(client, pool)
    assert await objects.ingress(client, "web", namespace) == ("192.0.2.10",)


@pytest.mark.parametrize("how", LEAVE)
async def test_deleted_after_leaving_while_no_manager_ran_is_let_go(
    client, namespace, net, eips, nodes, how
):
    """The manager starts to find a Service not ours any more, Terminating on our finalizer."""
    pool, node = await _setup(client, namespace, net, eips, nodes)
    async with running_manager(client):
        await _served(client, "web", namespace, f"{net}.1", node, pool)
    await LEAVE[how](client, "web", namespace)
    await client.delete(Service, "web", namespace=namespace)
    await client.delete(resources.Eip, pool)  # waits for the label to go
    held = await objects.raw(client, Service, "web", namespace)
    assert _meta(held).get("deletionTimestamp") and _marks(held).get("finalizer")

    async with running_manager(client):
        await _wait_gone(client, "web", namespace)

        async def eip_gone():
            return not [e async for e in client.list(resources.Eip) if e.metadata.name == pool]

        await eventually(eip_gone, what=f'Eip "{pool}" deleted')


@pytest.mark.parametrize("how", LEAVE)
async def test_leaving_while_deleting_is_let_go(client, manager, namespace, net, eips, nodes, how):
    """Deleted first (another finalizer keeps it), then taken out of the class."""
    pool, node = await _setup(client, namespace, net, eips, nodes)
    async with objects.kept_terminating(client, "web", namespace) as other:
        await _served(client, "web", namespace, f"{net}.1", node, pool)
        await client.delete(Service, "web", namespace=namespace)
        await LEAVE[how](client, "web", namespace)
        left = await _wait_unmarked(client, "web", namespace)
        assert _meta(left)["finalizers"] == [other]
        # Still there (the other finalizer keeps it), it shows the IP no more: else the IP
        # would stay held, given to nobody, for as long as that finalizer stays.
        assert not ((left.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        await _wait_pool_empty(client, pool)


async def test_an_eip_is_deleted_once_its_service_left_the_class(
    client, manager, namespace, net, eips, nodes
):
    pool, node = await _setup(client, namespace, net, eips, nodes)
    await _served(client, "web", namespace, f"{net}.1", node, pool)
    await _to_other_class(client, "web", namespace)
    await client.delete(resources.Eip, pool)

    async def eip_gone():
        return not [e async for e in client.list(resources.Eip) if e.metadata.name == pool]

    await eventually(eip_gone, what=f'Eip "{pool}" deleted')
    # The Eip waits only for the pool marks; the announcing record goes on its own (it was
    # still there when read at once, under a CPU hog).
    await _wait_unmarked(client, "web", namespace)
