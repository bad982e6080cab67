"""Dual-stack Services against the real (dual-stack) API server: one IP per family, in the
order of ``spec.ipFamilies``, from one pool per family, announced from one node."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType

from porterlb.api import reasons, wellknown
from porterlb.kube import resources
from tests.integration import objects
from tests.integration.conftest import eip_object, running_manager, set_node_ready, v6
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def pools(client, eips, namespace, net, *, ipv6: bool = True) -> tuple[str, str]:
    """An IPv4 and (unless told otherwise) an IPv6 pool bound to `namespace`."""
    v4_pool, v6_pool = f"{namespace}-v4", f"{namespace}-v6"
    eips.append(v4_pool)
    await client.create(eip_object(v4_pool, f"{net}.0/24", namespaces=[namespace]))
    if ipv6:
        eips.append(v6_pool)
        await client.create(eip_object(v6_pool, f"{v6(net)}/120", namespaces=[namespace]))
    return v4_pool, v6_pool


async def used(client, pool: str) -> dict[str, str]:
    eip = await objects.raw(client, resources.Eip, pool)
    return dict((eip.get("status") or {}).get("used") or {})


def no_v6(namespace: str) -> str:
    return (
        f"no IPv6 Eip is bound to namespace {namespace} and no default Eip"
        " (annotation eip.openelb.kubesphere.io/is-default-eip) is usable"
    )


async def web_event(client, namespace: str, reason: str, message: str) -> None:
    await objects.wait_event(client, namespace, "web", reason, message)


async def meta(client, name: str, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = (await objects.raw(client, Service, name, namespace))["metadata"]
    return found


async def test_one_ip_per_family_in_ip_families_order_each_from_its_pool(
    client, manager, namespace, net, eips
):
    v4_pool, v6_pool = await pools(client, eips, namespace, net)
    await client.create(
        objects.service(
            "web", namespace, dual_stack="RequireDualStack", ip_families=("IPv6", "IPv4")
        )
    )
    both = (f"{v6(net)}1", f"{net}.1")
    await objects.wait_ingress(client, "web", namespace, both)
    marks = await meta(client, "web", namespace)
    assert marks["labels"][wellknown.POOL_LABEL] == v6_pool
    assert marks["annotations"][wellknown.POOLS] == f"{v6_pool},{v4_pool}"
    await web_event(
        client,
        namespace,
        reasons.IP_ALLOCATED,
        f'Service {namespace}/web: allocated {both[0]} from pool "{v6_pool}"'
        f' and {both[1]} from pool "{v4_pool}"',
    )

    async def counted():
        return await used(client, v4_pool) == {both[1]: f"{namespace}/web"} and await used(
            client, v6_pool
        ) == {both[0]: f"{namespace}/web"}

    await eventually(counted, what="each Eip's status counting its own IP")

    await client.delete(Service, "web", namespace=namespace)

    async def freed():
        return await used(client, v4_pool) == {} and await used(client, v6_pool) == {}

    await eventually(freed, what="both IPs back in their pools after the delete")
    await client.create(objects.service("next", namespace, dual_stack="RequireDualStack"))
    await objects.wait_ingress(client, "next", namespace, (f"{net}.1", f"{v6(net)}1"))


async def test_require_dual_stack_without_an_ipv6_pool_fails_and_names_what_is_missing(
    client, manager, namespace, net, eips
):
    v4_pool, v6_pool = await pools(client, eips, namespace, net, ipv6=False)
    await client.create(objects.service("web", namespace, dual_stack="RequireDualStack"))
    nothing = f"Service {namespace}/web: RequireDualStack: no IPv6 address, so no IP is allocated"
    await web_event(client, namespace, reasons.ALLOCATION_FAILED, f"{nothing}: {no_v6(namespace)}")
    assert await objects.ingress(client, "web", namespace) == ()
    assert await used(client, v4_pool) == {}, "no IPv4 address is held for it meanwhile"

    eips.append(v6_pool)
    await client.create(eip_object(v6_pool, f"{v6(net)}/120", namespaces=[namespace]))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1", f"{v6(net)}1"))


async def test_prefer_dual_stack_takes_the_family_it_can_get_with_a_warning(
    client, manager, namespace, net, eips
):
    await pools(client, eips, namespace, net, ipv6=False)
    await client.create(objects.service("web", namespace, dual_stack="PreferDualStack"))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    serving = f"Service {namespace}/web: PreferDualStack: no IPv6 address, serving {net}.1 only"
    await web_event(client, namespace, reasons.ALLOCATION_FAILED, f"{serving}: {no_v6(namespace)}")
    # Only the Events that say it: one decided before the manager saw the pool says another.
    said = await objects.events(client, namespace, "web", reasons.ALLOCATION_FAILED)
    types = {event.type for event in said if (event.message or "").startswith(serving)}
    assert types == {"Warning"}


async def test_a_policy_change_adds_or_releases_the_second_ip_and_keeps_the_first(
    client, manager, namespace, net, eips
):
    _, v6_pool = await pools(client, eips, namespace, net)
    await client.create(objects.service("web", namespace, ip_family="IPv4"))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))

    dual = {"spec": {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4", "IPv6"]}}
    await client.patch(Service, "web", dual, namespace=namespace, patch_type=PatchType.MERGE)
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1", f"{v6(net)}1"))

    async def counted():
        return await used(client, v6_pool) == {f"{v6(net)}1": f"{namespace}/web"}

    # Else the wait for the release below could pass on a status that never counted the IP.
    await eventually(counted, what="the IPv6 address counted in its Eip's status")

    single = {"spec": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}}
    await client.patch(Service, "web", single, namespace=namespace, patch_type=PatchType.MERGE)
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    gave_back = f'Service {namespace}/web: released {v6(net)}1 to pool "{v6_pool}"'
    why = "because the Service no longer asks for an IP of its family"
    await web_event(client, namespace, reasons.IP_RELEASED, f"{gave_back} {why}")
    assert wellknown.POOLS not in ((await meta(client, "web", namespace)).get("annotations") or {})

    async def released():
        return await used(client, v6_pool) == {}

    await eventually(released, what="the IPv6 address back in its pool")


async def test_requested_ips_per_family_and_named_pools_per_family(
    client, manager, namespace, net, eips
):
    v4_pool, v6_pool = await pools(client, eips, namespace, net)
    wanted = {
        wellknown.POOL[0]: f"{v6_pool},{v4_pool}",
        wellknown.REQUESTED_IPS: f"{v6(net)}9, {net}.9",
    }
    await client.create(
        objects.service("web", namespace, annotations=wanted, dual_stack="RequireDualStack")
    )
    await objects.wait_ingress(client, "web", namespace, (f"{net}.9", f"{v6(net)}9"))

    wrong = {"metadata": {"annotations": {wellknown.REQUESTED_IPS: f"{net}.9,{net}.10"}}}
    await client.patch(Service, "web", wrong, namespace=namespace, patch_type=PatchType.MERGE)
    await web_event(
        client,
        namespace,
        reasons.ALLOCATION_FAILED,
        f"Service {namespace}/web: annotation {wellknown.REQUESTED_IPS} '{net}.9,{net}.10'"
        " lists more than one IP per family",
    )
    assert await objects.ingress(client, "web", namespace) == (f"{net}.9", f"{v6(net)}9")


async def test_sharing_per_family_and_both_ips_on_one_node_moving_together(
    client, manager, namespace, net, eips, nodes
):
    """A (v4 X, v6 Y) and B (v4 X, v6 Z) share X: X, Y and Z are announced from one node."""
    first, second = await nodes(f"{namespace}-a"), await nodes(f"{namespace}-b")
    v4_pool, _ = await pools(client, eips, namespace, net)
    share = {wellknown.SHARING_KEY: "front"}
    for name, port, six in (("a", 80, 1), ("b", 443, 2)):
        requested = {**share, wellknown.REQUESTED_IPS: f"{net}.5,{v6(net)}{six}"}
        await client.create(
            objects.service(
                name,
                namespace,
                annotations=requested,
                ports=(("TCP", port),),
                dual_stack="RequireDualStack",
            )
        )
        await objects.set_endpoints(client, name, namespace)
    await objects.wait_ingress(client, "a", namespace, (f"{net}.5", f"{v6(net)}1"))
    await objects.wait_ingress(client, "b", namespace, (f"{net}.5", f"{v6(net)}2"))

    async def one_node():
        found = {
            (await meta(client, name, namespace)).get("annotations", {}).get(wellknown.ANNOUNCED_BY)
            for name in ("a", "b")
        }
        return len(found) == 1 and None not in found and found.pop()

    node = await eventually(one_node, what="a and b announced from one node")
    other = second if node == first else first
    await set_node_ready(client, node, False)

    async def moved():
        return await one_node() == other

    await eventually(moved, what=f"a and b moved together to {other}")

    async def shared():
        return await used(client, v4_pool) == {f"{net}.5": f"{namespace}/a;{namespace}/b"}

    await eventually(shared, what="the shared IPv4 address counted once, for both")


async def test_a_restarted_manager_keeps_both_ips_and_their_node(
    client, namespace, net, eips, nodes
):
    await nodes(f"{namespace}-a")
    await nodes(f"{namespace}-b")
    await pools(client, eips, namespace, net)
    both = (f"{net}.1", f"{v6(net)}1")
    async with running_manager(client):
        await client.create(objects.service("web", namespace, dual_stack="RequireDualStack"))
        await objects.set_endpoints(client, "web", namespace)
        await objects.wait_ingress(client, "web", namespace, both)

        async def announced():
            return (
                (await meta(client, "web", namespace))
                .get("annotations", {})
                .get(wellknown.ANNOUNCED_BY)
            )

        node = await eventually(announced, what="web announced")
        before = await objects.raw(client, Service, "web", namespace)
    async with running_manager(client):
        await client.create(objects.service("late", namespace, dual_stack="RequireDualStack"))
        await objects.set_endpoints(client, "late", namespace)
        await objects.wait_ingress(client, "late", namespace, (f"{net}.2", f"{v6(net)}2"))

        async def late_announced():
            annotations = (await meta(client, "late", namespace)).get("annotations", {})
            return wellknown.ANNOUNCED_BY in annotations

        await eventually(late_announced, what="the new manager placing what it found")
        after = await objects.raw(client, Service, "web", namespace)
        assert await objects.ingress(client, "web", namespace) == both
        assert await announced() == node
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_deleting_the_ipv6_eip_releases_the_ipv6_address_and_keeps_the_ipv4_one(
    client, manager, namespace, net, eips
):
    v4_pool, v6_pool = await pools(client, eips, namespace, net)
    await client.create(objects.service("web", namespace, dual_stack="RequireDualStack"))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1", f"{v6(net)}1"))

    await client.delete(resources.Eip, v6_pool)
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    kept = f"Service {namespace}/web: RequireDualStack: no IPv6 address (it keeps {net}.1)"
    await web_event(client, namespace, reasons.ALLOCATION_FAILED, f"{kept}: {no_v6(namespace)}")
    marks = await meta(client, "web", namespace)
    assert marks["labels"][wellknown.POOL_LABEL] == v4_pool
    assert wellknown.POOLS not in (marks.get("annotations") or {})

    async def gone():
        return v6_pool not in {eip.metadata.name async for eip in client.list(resources.Eip)}

    await eventually(gone, what=f"Eip {v6_pool} deleted once no Service names it")
