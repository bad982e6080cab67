"""Per-IP eligibility against the real API server: node selectors, endpoints, eTP Local."""

from __future__ import annotations

import pytest
from lightkube.types import PatchType
from prometheus_client import REGISTRY

from porterlb.api import reasons, wellknown
from porterlb.kube import resources
from tests.integration import objects
from tests.integration.conftest import eip_object
from tests.integration.test_announcing import announced_by, served_service, wait_announced_by
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def metric(name: str) -> float:
    """A sample of the manager's metrics (the manager runs in this process)."""
    return REGISTRY.get_sample_value(name) or 0.0


async def make_pool(client, eips, namespace, net, **spec):
    name = f"{namespace}-pool"
    eips.append(name)
    await client.create(eip_object(name, f"{net}.0/24", namespaces=[namespace], **spec))
    return name


async def test_a_node_selector_restricts_placement_and_says_why(
    client, manager, namespace, net, eips, nodes
):
    rack_a = await nodes(f"{namespace}-a", labels={"rack": "a"})
    rack_b = await nodes(f"{namespace}-b", labels={"rack": "b"})
    pool = await make_pool(
        client, eips, namespace, net, nodeSelector={"matchLabels": {"rack": "a"}}
    )
    for name in ("s1", "s2", "s3"):
        await served_service(client, name, namespace)
        await wait_announced_by(client, name, namespace, {rack_a})

    selector = {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["c"]}]}
    patch = {"spec": {"nodeSelector": selector}}
    await client.patch(resources.Eip, pool, patch, patch_type=PatchType.MERGE)
    await objects.wait_event(
        client,
        namespace,
        "s1",
        reasons.NO_ELIGIBLE_NODE,
        f"Service {namespace}/s1: {net}.1 is not announced: "
        f"{rack_a}: labels do not match pool {pool}'s nodeSelector; "
        f"{rack_b}: labels do not match pool {pool}'s nodeSelector",
    )
    await wait_announced_by(client, "s1", namespace, None)


async def test_a_selector_change_moves_only_the_ips_whose_node_no_longer_matches(
    client, manager, namespace, net, eips, nodes
):
    a = await nodes(f"{namespace}-a", labels={"rack": "a"})
    b = await nodes(f"{namespace}-b", labels={"rack": "b"})
    c = await nodes(f"{namespace}-c", labels={"rack": "c"})
    in_racks = {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a", "b"]}]}
    pool = await make_pool(client, eips, namespace, net, nodeSelector=in_racks)
    names = [f"s{i}" for i in range(6)]
    before = {}
    for name in names:
        await served_service(client, name, namespace)
        before[name] = await wait_announced_by(client, name, namespace, {a, b})
    assert set(before.values()) == {a, b}  # spread, least loaded first

    moved = {"matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["a"]}]}
    await client.patch(
        resources.Eip, pool, {"spec": {"nodeSelector": moved}}, patch_type=PatchType.MERGE
    )
    for name in names:
        if before[name] == a:
            await wait_announced_by(client, name, namespace, {b, c})
    await manager.announcing.queue.idle()
    for name in names:
        if before[name] == b:
            assert await announced_by(client, name, namespace) == b


async def test_local_traffic_is_announced_where_a_ready_endpoint_runs_and_follows_it(
    client, manager, namespace, net, eips, nodes
):
    a, b = await nodes(f"{namespace}-a"), await nodes(f"{namespace}-b")
    await make_pool(client, eips, namespace, net)
    local = objects.service("web", namespace)
    assert local.spec is not None
    local.spec.externalTrafficPolicy = "Local"
    await client.create(local)
    await objects.set_endpoints(client, "web", namespace, ready=(b,), not_ready=(a,))
    await wait_announced_by(client, "web", namespace, {b})

    await objects.set_endpoints(client, "web", namespace, ready=(a,), not_ready=(b,))
    await wait_announced_by(client, "web", namespace, {a})


async def test_services_sharing_an_ip_go_to_a_node_that_suits_them_all(
    client, manager, namespace, net, eips, nodes
):
    a, b, c = [await nodes(f"{namespace}-{x}") for x in "abc"]
    await make_pool(client, eips, namespace, net)
    sharing = {wellknown.SHARING_KEY: "shop"}
    for name, port, ready in (("web", 80, (a, b)), ("api", 443, (b, c))):
        local = objects.service(name, namespace, annotations=sharing, ports=(("TCP", port),))
        assert local.spec is not None
        local.spec.externalTrafficPolicy = "Local"
        await client.create(local)
        await objects.set_endpoints(client, name, namespace, ready=ready)
        await objects.wait_ingress(client, name, namespace, (f"{net}.1",))
    await wait_announced_by(client, "web", namespace, {b})
    await wait_announced_by(client, "api", namespace, {b})


async def test_a_service_without_a_ready_endpoint_is_not_announced_and_says_so(
    client, manager, namespace, net, eips, nodes
):
    node = await nodes(f"{namespace}-a")
    manager.announcing.no_endpoint_hold = 0.5  # shortened: this test is about saying it
    await make_pool(client, eips, namespace, net)
    await client.create(objects.service("web", namespace))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    message = (
        f"Service {namespace}/web: {net}.1 is not announced: the Service has no ready endpoint"
    )
    await objects.wait_event(client, namespace, "web", reasons.NO_READY_ENDPOINT, message)
    assert await announced_by(client, "web", namespace) is None

    await objects.set_endpoints(client, "web", namespace, ready=(node,))
    await wait_announced_by(client, "web", namespace, {node})

    # Every endpoint turning unready withdraws the announcement.
    await objects.set_endpoints(client, "web", namespace, ready=(), not_ready=(node,))
    await wait_announced_by(client, "web", namespace, None)

    async def said_again():
        found = await objects.events(client, namespace, "web", reasons.NO_READY_ENDPOINT)
        return len(found) == 2 and found  # once each time it became news

    found = await eventually(said_again, what="a second NoReadyEndpoint event")
    assert [(event.type, event.message) for event in found] == [("Warning", message)] * 2


async def test_a_service_whose_endpoint_gets_ready_during_the_hold_gets_no_warning(
    client, manager, namespace, net, eips, nodes
):
    """A Service created with its pods: their readiness comes before the hold ends (an hour
    here, so that however slow the machine, it does) and withdraws the NoReadyEndpoint, as
    the manager's metrics show."""
    node = await nodes(f"{namespace}-a")
    manager.announcing.no_endpoint_hold = 3600.0
    withdrawn = metric("porterlb_events_withdrawn_total")
    await make_pool(client, eips, namespace, net)
    await client.create(objects.service("web", namespace))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))

    async def held() -> bool:
        return metric("porterlb_events_held") == 1

    await eventually(held, what="the NoReadyEndpoint Warning held")
    await objects.set_endpoints(client, "web", namespace, ready=(node,))
    await objects.wait_node_assigned(client, namespace, f"{net}.1", node)

    async def withdrawn_once() -> bool:
        # The withdrawal may come after the placement write: the two are separate tasks.
        return metric("porterlb_events_withdrawn_total") == withdrawn + 1

    await eventually(withdrawn_once, what="the held NoReadyEndpoint Warning withdrawn")
    assert metric("porterlb_events_held") == 0
    # One poster posts in order: a Warning sent without its hold would be there already.
    assert await objects.events(client, namespace, "web", reasons.NO_READY_ENDPOINT) == []


async def test_a_malformed_node_selector_is_reported_on_the_eip(
    client, manager, namespace, net, eips, nodes
):
    node = await nodes(f"{namespace}-a", labels={"rack": "a"})
    pool = await make_pool(
        client, eips, namespace, net, nodeSelector={"matchLabels": {"rack!": "a"}}
    )
    await served_service(client, "web", namespace)
    error = (
        f"Eip \"{pool}\": spec.nodeSelector.matchLabels: label key 'rack!' is not valid"
        " (an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.',"
        " beginning and ending with a letter or digit); no node announces its IPs until that"
        " is fixed"
    )

    async def condition():
        status = (await objects.raw(client, resources.Eip, pool)).get("status") or {}
        conditions = status.get("conditions") or []
        return conditions and conditions[0]["reason"] != reasons.POOL_READY and conditions[0]

    ready = await eventually(condition, what=f"Eip {pool} condition")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        reasons.INVALID_NODE_SELECTOR,
        error,
    )
    await objects.wait_event(client, "default", pool, reasons.INVALID_NODE_SELECTOR, error)
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.NO_ELIGIBLE_NODE,
        f"Service {namespace}/web: {net}.1 is not announced:"
        f" {node}: pool {pool}'s nodeSelector is invalid",
    )

    fixed = {"spec": {"nodeSelector": {"matchLabels": {"rack!": None, "rack": "a"}}}}
    await client.patch(resources.Eip, pool, fixed, patch_type=PatchType.MERGE)
    await wait_announced_by(client, "web", namespace, {node})
