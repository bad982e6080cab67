"""The manager hands out IPs from Eips to Services, against the real API server."""

from __future__ import annotations

import ipaddress

import lightkube
import pytest
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType

from porterlb.api import reasons, wellknown
from porterlb.kube import resources
from tests.integration import objects
from tests.integration.conftest import eip_object, running_manager, v6
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def make_pool(
    client: lightkube.AsyncClient, eips: list[str], name: str, address: str, namespace: str, **spec
) -> None:
    eips.append(name)
    await client.create(eip_object(name, address, namespaces=[namespace], **spec))


async def eip_status(client, name):
    return (await objects.raw(client, resources.Eip, name)).get("status") or {}


async def test_allocates_lowest_usable_address_with_label_finalizer_event_and_eip_status(
    client, manager, namespace, net, eips
):
    pool = f"{namespace}-a"
    await make_pool(client, eips, pool, f"{net}.0/24", namespace)
    await client.create(objects.service("web", namespace))

    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))  # .0 is the network address
    svc = await objects.raw(client, Service, "web", namespace)
    assert svc["metadata"]["labels"][wellknown.POOL_LABEL] == pool
    assert wellknown.SERVICE_FINALIZER in svc["metadata"]["finalizers"]
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.IP_ALLOCATED,
        f'Service {namespace}/web: allocated {net}.1 from pool "{pool}"',
    )

    async def status_shows_use():
        status = await eip_status(client, pool)
        return status.get("used") == {f"{net}.1": f"{namespace}/web"} and status

    status = await eventually(status_shows_use, what="Eip status.used")
    assert status["usage"] == 1
    assert status["poolSize"] == 256
    assert (status["firstIP"], status["lastIP"]) == (f"{net}.0", f"{net}.255")
    assert status["v4"] is True and status["occupied"] is False and status["ready"] is True
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "PoolReady")
    assert ready["message"] == f'Eip "{pool}" ({net}.0/24) serves 254 addresses'
    eip = await objects.raw(client, resources.Eip, pool)
    assert wellknown.EIP_FINALIZER in eip["metadata"]["finalizers"]


async def test_load_balancer_class_selects_porterlb_and_other_classes_are_never_touched(
    client, manager, namespace, net, eips
):
    await make_pool(client, eips, f"{namespace}-a", f"{net}.10-{net}.20", namespace)
    await client.create(
        objects.service(
            "ours", namespace, opt_in=False, load_balancer_class=wellknown.LOAD_BALANCER_CLASS
        )
    )
    await client.create(
        objects.service("theirs", namespace, opt_in=True, load_balancer_class="example.com/other")
    )
    await client.create(objects.service("plain", namespace, opt_in=False))
    await objects.wait_ingress(client, "ours", namespace, (f"{net}.10",))
    # A later Service in the same namespace proves the manager has seen the earlier ones.
    await client.create(objects.service("later", namespace))
    await objects.wait_ingress(client, "later", namespace, (f"{net}.11",))
    for untouched in ("theirs", "plain"):
        svc = await objects.raw(client, Service, untouched, namespace)
        assert await objects.ingress(client, untouched, namespace) == ()
        assert wellknown.SERVICE_FINALIZER not in (svc["metadata"].get("finalizers") or [])
        # The API server's own controllers may post about them (its ClusterIP repair loop did
        # once on a loaded host); porterlb posts nothing.
        ours = [
            event
            for event in await objects.events(client, namespace, untouched)
            if (event.reportingComponent or "").startswith("porterlb")
            or (event.source is not None and (event.source.component or "").startswith("porterlb"))
        ]
        assert ours == []


@pytest.mark.parametrize(
    ("how", "annotation"),
    [
        pytest.param("spec", None, id="spec.loadBalancerIP"),
        pytest.param("annotation", wellknown.REQUESTED_IP, id="openelb-annotation"),
    ],
)
async def test_requested_ip_is_honoured(client, manager, namespace, net, eips, how, annotation):
    await make_pool(client, eips, f"{namespace}-a", f"{net}.0/24", namespace)
    wanted = f"{net}.77"
    if annotation:
        await client.create(objects.service("web", namespace, annotations={annotation: wanted}))
    else:
        await client.create(objects.service("web", namespace, load_balancer_ip=wanted))
    await objects.wait_ingress(client, "web", namespace, (wanted,))


async def test_requested_ip_outside_every_pool_fails_with_reason(
    client, manager, namespace, net, eips
):
    await make_pool(client, eips, f"{namespace}-a", f"{net}.0/25", namespace)
    await client.create(objects.service("web", namespace, load_balancer_ip=f"{net}.200"))
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.ALLOCATION_FAILED,
        f"Service {namespace}/web: no layer2 Eip contains the requested IP {net}.200",
    )
    assert await objects.ingress(client, "web", namespace) == ()


async def test_requested_ip_outside_the_named_pool_fails(client, manager, namespace, net, eips):
    pool = f"{namespace}-a"
    await make_pool(client, eips, pool, f"{net}.0/25", namespace)
    await client.create(
        objects.service(
            "web",
            namespace,
            load_balancer_ip=f"{net}.200",
            annotations={wellknown.POOL[0]: pool},
        )
    )
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.ALLOCATION_FAILED,
        f'Service {namespace}/web: {net}.200 is outside pool "{pool}" ({net}.0/25)',
    )


async def test_requested_ip_taken_names_the_holder(client, manager, namespace, net, eips):
    pool = f"{namespace}-a"
    await make_pool(client, eips, pool, f"{net}.0/24", namespace)
    await client.create(objects.service("first", namespace, load_balancer_ip=f"{net}.5"))
    await objects.wait_ingress(client, "first", namespace, (f"{net}.5",))
    await client.create(objects.service("second", namespace, load_balancer_ip=f"{net}.5"))
    await objects.wait_event(
        client,
        namespace,
        "second",
        reasons.ALLOCATION_FAILED,
        f'Service {namespace}/second: {net}.5 in pool "{pool}" is held by {namespace}/first,'
        " which has no sharing key",
    )
    assert await objects.ingress(client, "second", namespace) == ()
    assert await objects.ingress(client, "first", namespace) == (f"{net}.5",)


async def test_full_pool_fails_then_a_release_serves_the_waiting_service(
    client, manager, namespace, net, eips
):
    pool = f"{namespace}-a"
    await make_pool(client, eips, pool, f"{net}.1", namespace)
    await client.create(objects.service("first", namespace))
    await objects.wait_ingress(client, "first", namespace, (f"{net}.1",))
    await client.create(objects.service("second", namespace))
    await objects.wait_event(
        client,
        namespace,
        "second",
        reasons.ALLOCATION_FAILED,
        f'Service {namespace}/second: pool "{pool}" ({net}.1) has no free address',
    )

    async def occupied():
        return (await eip_status(client, pool)).get("occupied") is True

    await eventually(occupied, what="Eip occupied")
    await client.delete(Service, "first", namespace=namespace)
    await objects.wait_ingress(client, "second", namespace, (f"{net}.1",))
    await objects.wait_event(
        client,
        namespace,
        "first",
        reasons.IP_RELEASED,
        f'Service {namespace}/first: released {net}.1 to pool "{pool}"'
        " because the Service is being deleted",
    )


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        pytest.param(
            {wellknown.PROTOCOL[0]: "bgp"},
            "Service {ns}/web: annotation protocol.openelb.kubesphere.io/v1alpha1 is 'bgp';"
            " porterlb serves only layer2",
            id="protocol-bgp",
        ),
        pytest.param(
            {wellknown.REQUESTED_IP: "198.18.0.999"},
            "Service {ns}/web: annotation eip.openelb.kubesphere.io/v1alpha1 '198.18.0.999'"
            " is not an IP address",
            id="malformed-ip",
        ),
        pytest.param(
            {wellknown.POOL[0]: "no-such-pool"},
            'Service {ns}/web: Eip "no-such-pool" does not exist',
            id="missing-pool",
        ),
    ],
)
async def test_bad_annotations_are_reported(
    client, manager, namespace, net, eips, annotations, message
):
    await make_pool(client, eips, f"{namespace}-a", f"{net}.0/24", namespace)
    await client.create(objects.service("web", namespace, annotations=annotations))
    await objects.wait_event(
        client, namespace, "web", reasons.ALLOCATION_FAILED, message.format(ns=namespace)
    )
    assert await objects.ingress(client, "web", namespace) == ()


async def test_bad_annotation_on_a_served_service_keeps_its_ip(
    client, manager, namespace, net, eips
):
    await make_pool(client, eips, f"{namespace}-a", f"{net}.0/24", namespace)
    await client.create(objects.service("web", namespace))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    await client.patch(
        Service,
        "web",
        {"metadata": {"annotations": {wellknown.REQUESTED_IP: "nonsense"}}},
        namespace=namespace,
    )
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.ALLOCATION_FAILED,
        f"Service {namespace}/web: annotation eip.openelb.kubesphere.io/v1alpha1 'nonsense'"
        " is not an IP address",
    )
    assert await objects.ingress(client, "web", namespace) == (f"{net}.1",)


async def test_sharing_needs_the_same_key_and_disjoint_ports(client, manager, namespace, net, eips):
    pool = f"{namespace}-a"
    await make_pool(client, eips, pool, f"{net}.0/24", namespace)
    key = {wellknown.SHARING_KEY: "shop"}
    ip = f"{net}.9"
    await client.create(objects.service("http", namespace, load_balancer_ip=ip, annotations=key))
    await objects.wait_ingress(client, "http", namespace, (ip,))
    await client.create(
        objects.service(
            "dns", namespace, load_balancer_ip=ip, annotations=key, ports=(("UDP", 53),)
        )
    )
    await objects.wait_ingress(client, "dns", namespace, (ip,))
    await client.create(objects.service("clash", namespace, load_balancer_ip=ip, annotations=key))
    await objects.wait_event(
        client,
        namespace,
        "clash",
        reasons.ALLOCATION_FAILED,
        f'Service {namespace}/clash: {ip} in pool "{pool}" is held by {namespace}/http,'
        " which also uses TCP/80",
    )

    async def shared_in_status():
        return (await eip_status(client, pool)).get("used") == {
            ip: f"{namespace}/dns;{namespace}/http"
        }

    await eventually(shared_in_status, what="shared IP in Eip status")


async def test_type_change_releases_the_ip(client, manager, namespace, net, eips):
    await make_pool(client, eips, f"{namespace}-a", f"{net}.0/24", namespace)
    await client.create(objects.service("web", namespace))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    await client.patch(
        Service,
        "web",
        [{"op": "replace", "path": "/spec/type", "value": "ClusterIP"}],
        namespace=namespace,
        patch_type=PatchType.JSON,
    )

    async def released():
        svc = await objects.raw(client, Service, "web", namespace)
        return wellknown.SERVICE_FINALIZER not in (
            svc["metadata"].get("finalizers") or []
        ) and wellknown.POOL_LABEL not in (svc["metadata"].get("labels") or {})

    await eventually(released, what="finalizer and label removed")
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.IP_RELEASED,
        f'Service {namespace}/web: released {net}.1 to pool "{namespace}-a" because the Service'
        " is no longer a porterlb LoadBalancer",
    )


async def test_ipv6_pool_serves_an_ipv6_service(client, manager, namespace, net, eips):
    prefix = v6(net)
    await make_pool(client, eips, f"{namespace}-v6", f"{prefix}/64", namespace)
    await client.create(objects.service("web", namespace, ip_family="IPv6"))
    # The all-zero address is the Subnet-Router anycast address: never handed out.
    await objects.wait_ingress(client, "web", namespace, (f"{prefix}1",))


async def test_overlapping_eip_is_not_ready_and_older_keeps_working(
    client, manager, namespace, net, eips
):
    older, later = f"{namespace}-a", f"{namespace}-b"
    await make_pool(client, eips, older, f"{net}.0/24", namespace)
    await client.create(objects.service("web", namespace))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    await make_pool(client, eips, later, f"{net}.100-{net}.110", namespace)

    async def later_rejected():
        conditions = (await eip_status(client, later)).get("conditions") or []
        return conditions and conditions[0]["status"] == "False" and conditions[0]

    ready = await eventually(later_rejected, what="overlap condition")
    assert ready["reason"] == reasons.POOL_OVERLAP
    message = f'Eip "{later}" ({net}.100-{net}.110) overlaps Eip "{older}" ({net}.0/24)'
    assert ready["message"] == message
    # Events about cluster-scoped objects go to the default namespace, where kubectl looks.
    await objects.wait_event(client, "default", later, reasons.POOL_OVERLAP, message)
    await client.create(objects.service("next", namespace))
    await objects.wait_ingress(client, "next", namespace, (f"{net}.2",))
    conditions = (await eip_status(client, older))["conditions"]
    assert conditions[0]["status"] == "True"


async def test_non_layer2_eip_is_left_alone(client, manager, net, eips):
    name = f"bgp-{net.replace('.', '-')}"
    eips.append(name)
    await client.create(eip_object(name, f"{net}.0/24", protocol="bgp"))

    async def unsupported():
        conditions = (await eip_status(client, name)).get("conditions") or []
        return conditions and conditions[0]

    ready = await eventually(unsupported, what="unsupported condition")
    assert (ready["status"], ready["reason"]) == ("False", reasons.UNSUPPORTED_PROTOCOL)
    assert ready["message"] == (
        f'Eip "{name}": protocol bgp is not served by porterlb (only layer2);'
        " this Eip is left alone"
    )
    eip = await objects.raw(client, resources.Eip, name)
    assert wellknown.EIP_FINALIZER not in (eip["metadata"].get("finalizers") or [])


async def test_deleting_an_eip_moves_services_to_another_pool_then_drops_its_finalizer(
    client, manager, namespace, net, eips
):
    first, second = f"{namespace}-a", f"{namespace}-b"
    await make_pool(client, eips, first, f"{net}.0/25", namespace, priority=1)
    await make_pool(client, eips, second, f"{net}.128/25", namespace, priority=2)
    await client.create(objects.service("web", namespace))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    await client.delete(resources.Eip, first)
    await objects.wait_ingress(client, "web", namespace, (f"{net}.129",))

    async def gone():
        return not [e async for e in client.list(resources.Eip) if e["metadata"]["name"] == first]

    await eventually(gone, what=f"Eip {first} deleted")
    svc = await objects.raw(client, Service, "web", namespace)
    assert svc["metadata"]["labels"][wellknown.POOL_LABEL] == second


async def test_deleting_the_only_eip_clears_the_service(client, manager, namespace, net, eips):
    pool = f"{namespace}-a"
    await make_pool(client, eips, pool, f"{net}.0/24", namespace)
    await client.create(objects.service("web", namespace))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    await client.delete(resources.Eip, pool)
    await objects.wait_ingress(client, "web", namespace, ())
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.ALLOCATION_FAILED,
        f"Service {namespace}/web: no IPv4 Eip is bound to namespace {namespace} and no default Eip"
        " (annotation eip.openelb.kubesphere.io/is-default-eip) is usable",
    )


async def test_default_pool_serves_unbound_namespaces(client, manager, namespace, net, eips):
    name = f"{namespace}-default"
    eips.append(name)
    await client.create(
        eip_object(name, f"{net}.0/24", annotations={wellknown.DEFAULT_POOL: "true"})
    )
    await client.create(objects.service("web", namespace))

    async def served_from_default():
        found = await objects.ingress(client, "web", namespace)
        # Services left pending by earlier tests may take the lowest addresses first.
        return found and ipaddress.ip_address(found[0]) in ipaddress.ip_network(f"{net}.0/24")

    await eventually(served_from_default, what="an IP from the default pool")
    await client.delete(resources.Eip, name)
    await objects.wait_ingress(client, "web", namespace, ())


async def test_restart_keeps_every_ip(client, namespace, net, eips):
    await make_pool(client, eips, f"{namespace}-a", f"{net}.0/24", namespace)
    async with running_manager(client):
        for name, ip in (("a", f"{net}.50"), ("b", None), ("c", None)):
            await client.create(objects.service(name, namespace, load_balancer_ip=ip))
        await objects.wait_ingress(client, "c", namespace, (f"{net}.2",))
        await objects.wait_ingress(client, "b", namespace, (f"{net}.1",))
    # While no manager runs, the pinned IP of "a" is dropped from its spec: a restarted
    # manager must still keep .50 for it, since the recorded allocation is what counts.
    await client.patch(Service, "a", {"spec": {"loadBalancerIP": None}}, namespace=namespace)
    await client.create(objects.service("d", namespace))
    async with running_manager(client):
        await objects.wait_ingress(client, "d", namespace, (f"{net}.3",))
        assert await objects.ingress(client, "a", namespace) == (f"{net}.50",)
        assert await objects.ingress(client, "b", namespace) == (f"{net}.1",)
        assert await objects.ingress(client, "c", namespace) == (f"{net}.2",)


async def test_contradictory_records_are_settled_for_the_older_service(
    client, namespace, net, eips
):
    pool = f"{namespace}-a"
    await make_pool(client, eips, pool, f"{net}.0/24", namespace)
    async with running_manager(client):
        await client.create(objects.service("older", namespace))
        await objects.wait_ingress(client, "older", namespace, (f"{net}.1",))
        await client.create(objects.service("younger", namespace))
        await objects.wait_ingress(client, "younger", namespace, (f"{net}.2",))
    # Corrupt the record while no manager runs: the younger claims the older's IP.
    await client.patch(
        Service.Status,
        "younger",
        {"status": {"loadBalancer": {"ingress": [{"ip": f"{net}.1"}]}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    async with running_manager(client):
        await objects.wait_event(
            client,
            namespace,
            "younger",
            reasons.ALLOCATION_FAILED,
            f"Service {namespace}/younger: recorded IP {net}.1 cannot be kept (Service"
            f' {namespace}/younger: {net}.1 in pool "{pool}" is held by {namespace}/older,'
            " which has no sharing key); an older Service holds it, so this one gets another",
        )
        await objects.wait_ingress(client, "younger", namespace, (f"{net}.2",))
        assert await objects.ingress(client, "older", namespace) == (f"{net}.1",)


async def test_a_service_kept_in_its_old_pool_moves_once_the_pool_it_asks_for_has_room(
    client, manager, namespace, net, eips
):
    old, wanted = f"{namespace}-a", f"{namespace}-b"
    await make_pool(client, eips, old, f"{net}.1-{net}.10", namespace)
    await make_pool(client, eips, wanted, f"{net}.20", namespace)
    await client.create(
        objects.service("holder", namespace, annotations={wellknown.POOL[0]: wanted})
    )
    await objects.wait_ingress(client, "holder", namespace, (f"{net}.20",))
    await client.create(objects.service("web", namespace, annotations={wellknown.POOL[0]: old}))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    await client.patch(
        Service,
        "web",
        {"metadata": {"annotations": {wellknown.POOL[0]: wanted}}},
        namespace=namespace,
    )
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.ALLOCATION_FAILED,
        f'Service {namespace}/web: pool "{wanted}" ({net}.20) has no free address',
    )
    assert await objects.ingress(client, "web", namespace) == (f"{net}.1",)
    await client.delete(Service, "holder", namespace=namespace)
    await objects.wait_ingress(client, "web", namespace, (f"{net}.20",))
