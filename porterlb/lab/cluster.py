"""The Kubernetes objects of a lab: its Eips and its sample Services; on the process lab, the
Nodes and EndpointSlices too.

Both labs get the same Eips (:func:`eips`) and sample Services (:func:`service`: opted in with
the OpenELB annotation, ``externalTrafficPolicy: Local``, so an answer names the node that
received the traffic). On real nodes the kubelets register the Nodes and the EndpointSlice
controller writes the slices of the backend Deployment (:mod:`porterlb.lab.node.backends`).
The process lab (:mod:`porterlb.lab.lab`) has no kubelet, no controller manager and no data
path, so this module writes what the manager reads there: one Node per worker with its
addresses and a ``Ready=True`` condition (through the ``status`` subresource, as a kubelet
does; nothing ever turns it NotReady), and for each sample Service one EndpointSlice per
family listing every worker (``nodeName`` set, ready), so that every worker is eligible under
``Local``. Nothing serves those endpoints: the process lab's tests judge ARP/NDP answers, not
traffic.

The pure builders (:func:`node`, :func:`eips`, :func:`service`, :func:`endpoint_slices`) return
the objects as dicts, for unit tests; the ``async`` functions write them.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any, Final, Literal

import lightkube
from lightkube import codecs
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from porterlb import errors
from porterlb.api import wellknown
from porterlb.api.keys import ServiceKey
from porterlb.kube import resources
from porterlb.lab import plan

BACKEND_PORT: Final = 8080
"""Where the sample Services' backends listen: the backend pods on real nodes."""

SERVICE_PORT: Final = 80
PORT_NAME: Final = "http"
NAMESPACE: Final = "default"

LAB_LABEL: Final = "lab.porterlb.io/name"
"""On every object a lab creates: which lab made it."""

MANAGED_BY_LABEL: Final = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY: Final = "lab.porterlb.io"
"""``endpointslice.kubernetes.io/managed-by`` of the lab's slices: not the EndpointSlice
controller's value, which would claim them for a controller-manager that is not there."""

INGRESS_TIMEOUT: Final = 30.0
"""Seconds ``lab service`` waits for the manager to allocate an IP: it takes milliseconds
once the manager runs, but the manager may still be starting right after ``lab up``."""

INGRESS_POLL: Final = 0.05
"""Seconds between two reads of the Service while waiting for its IP."""

Family = Literal["ipv4", "ipv6", "dual"]
"""What a sample Service asks for: one IPv4 address, one IPv6 address, or both families."""

_IP_FAMILIES: Final[dict[str, list[str]]] = {
    "ipv4": ["IPv4"],
    "ipv6": ["IPv6"],
    "dual": ["IPv4", "IPv6"],
}


def eip_name(lab: plan.Lab, version: Literal[4, 6]) -> str:
    """``lab-NAME`` for the IPv4 pool, ``lab-NAME-v6`` for the IPv6 one."""
    return f"lab-{lab.name}" if version == 4 else f"lab-{lab.name}-v6"


def eips(lab: plan.Lab) -> list[dict[str, Any]]:
    """The lab's pools: its IPv4 pool range, then its IPv6 one if any, each the default Eip
    of its family (so that a dual-stack Service gets one IP of each).

    Both are layer2 on the workers' LAN interface, named explicitly so that the speakers need
    not guess it.
    """
    pools: list[tuple[Literal[4, 6], str]] = [(4, _range(lab.pool_v4))]
    if lab.pool_v6 is not None:
        pools.append((6, _range(lab.pool_v6)))
    return [
        {
            "apiVersion": f"{resources.EIP_GROUP}/{resources.EIP_VERSION}",
            "kind": "Eip",
            "metadata": {
                "name": eip_name(lab, version),
                "labels": {LAB_LABEL: lab.name},
                "annotations": {wellknown.DEFAULT_POOL: "true"},
            },
            "spec": {"address": address, "protocol": "layer2", "interface": plan.HOST_IF},
        }
        for version, address in pools
    ]


def node(lab: plan.Lab, worker: plan.Node) -> dict[str, Any]:
    """The Node object of ``worker``, without status (the API ignores status on create)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": worker.name,
            "labels": {
                LAB_LABEL: lab.name,
                "kubernetes.io/hostname": worker.name,
                "kubernetes.io/os": "linux",
            },
        },
    }


def node_status(worker: plan.Node, now: datetime.datetime) -> dict[str, Any]:
    """The status a kubelet would report: InternalIPs, hostname and ``Ready=True``."""
    addresses = [{"type": "InternalIP", "address": str(worker.ipv4.ip)}]
    if worker.ipv6 is not None:
        addresses.append({"type": "InternalIP", "address": str(worker.ipv6.ip)})
    addresses.append({"type": "Hostname", "address": worker.name})
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "porterlb lab: no kubelet runs here; lab up marks the node Ready",
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
    }
    return {"status": {"addresses": addresses, "conditions": [ready]}}


def service(
    lab: plan.Lab,
    name: str,
    *,
    namespace: str = NAMESPACE,
    port: int = SERVICE_PORT,
    family: Family = "ipv4",
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A LoadBalancer Service opted in to porterlb; an IPv6-only one names the IPv6 Eip.

    Raises InvalidSpec if it asks for IPv6 in a lab without IPv6.
    """
    _check_family(lab, f"Service {namespace}/{name}", family)
    wanted = {wellknown.LB_OPT_IN: "openelb"}
    if family == "ipv6":  # named as OpenELB users name a pool (the default would do too)
        wanted[wellknown.POOL[0]] = eip_name(lab, 6)
    wanted.update(annotations or {})
    families = _IP_FAMILIES[family]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LAB_LABEL: lab.name},
            "annotations": wanted,
        },
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "ipFamilyPolicy": "RequireDualStack" if len(families) > 1 else "SingleStack",
            "ipFamilies": families,
            "ports": [
                {"name": PORT_NAME, "port": port, "targetPort": BACKEND_PORT, "protocol": "TCP"}
            ],
        },
    }


def endpoint_slices(
    lab: plan.Lab,
    name: str,
    *,
    namespace: str = NAMESPACE,
    family: Family = "ipv4",
    owner_uid: str | None = None,
) -> list[dict[str, Any]]:
    """One EndpointSlice per address family of Service ``name`` on the process lab: every
    worker, at its LAN address, ready.

    Raises InvalidSpec if it asks for IPv6 in a lab without IPv6.
    """
    _check_family(lab, f"EndpointSlices of {namespace}/{name}", family)
    slices = []
    for address_type in _IP_FAMILIES[family]:
        endpoints = [
            {
                "addresses": [_address(w, address_type)],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": w.name,
            }
            for w in lab.nodes
        ]
        meta: dict[str, Any] = {
            "name": f"{name}-lab-{address_type.lower()}",
            "namespace": namespace,
            "labels": {
                wellknown.SERVICE_NAME_LABEL: name,
                MANAGED_BY_LABEL: MANAGED_BY,
                LAB_LABEL: lab.name,
            },
        }
        if owner_uid is not None:
            meta["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Service", "name": name, "uid": owner_uid}
            ]
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": meta,
                "addressType": address_type,
                "endpoints": endpoints,
                "ports": [{"name": PORT_NAME, "port": BACKEND_PORT, "protocol": "TCP"}],
            }
        )
    return slices


async def register_nodes(client: lightkube.AsyncClient, lab: plan.Lab) -> None:
    """Create every worker's Node and mark it Ready. Raises InvalidSpec if the API refuses."""
    for worker in lab.nodes:
        await create(client, node(lab, worker), f"Node {worker.name}")
        now = datetime.datetime.now(datetime.UTC)
        try:
            await client.patch(
                resources.Node.Status,
                worker.name,
                node_status(worker, now),
                patch_type=PatchType.MERGE,
            )
        except ApiError as error:
            raise errors.InvalidSpec(
                f"Node {worker.name}: status rejected: {error.status.message}"
            ) from error


async def create_eips(client: lightkube.AsyncClient, lab: plan.Lab) -> None:
    """Create the lab's Eips. Raises InvalidSpec if the API refuses one."""
    for pool in eips(lab):
        await create(client, pool, f"Eip {pool['metadata']['name']}")


async def create_service(
    client: lightkube.AsyncClient,
    lab: plan.Lab,
    name: str,
    *,
    namespace: str = NAMESPACE,
    port: int = SERVICE_PORT,
    family: Family = "ipv4",
    annotations: Mapping[str, str] | None = None,
) -> ServiceKey:
    """Create sample Service ``namespace/name`` and its EndpointSlices (and the namespace), on
    the process lab.

    Raises InvalidSpec if the Service exists already or the API refuses it.
    """
    await _ensure_namespace(client, namespace)
    manifest = service(
        lab, name, namespace=namespace, port=port, family=family, annotations=annotations
    )
    created = await create(client, manifest, f"Service {namespace}/{name}")
    uid = created.metadata.uid if created.metadata else None
    for endpoint_slice in endpoint_slices(
        lab, name, namespace=namespace, family=family, owner_uid=uid
    ):
        what = f"EndpointSlice {namespace}/{endpoint_slice['metadata']['name']}"
        await create(client, endpoint_slice, what)
    return ServiceKey(f"{namespace}/{name}")


async def delete_service(
    client: lightkube.AsyncClient, name: str, *, namespace: str = NAMESPACE
) -> None:
    """Delete a sample Service and the EndpointSlices the lab wrote for it; what is already
    gone is fine.

    No garbage collector runs in the process lab, so its slices are deleted here, not by owner.
    On real nodes the EndpointSlice controller's go with the Service, and only with it: they
    carry the Service's labels, the lab's among them, but deleting one first makes the
    controller write it again, and the leader, which saw the Service lose its endpoints and
    take them back, announced the IP of a Service being deleted from another node for a moment.
    """
    slices = client.list(
        EndpointSlice,
        namespace=namespace,
        labels={wellknown.SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
    )
    async for endpoint_slice in slices:
        assert endpoint_slice.metadata is not None and endpoint_slice.metadata.name
        await _delete(client, EndpointSlice, endpoint_slice.metadata.name, namespace)
    await _delete(client, resources.Service, name, namespace)


async def ingress(
    client: lightkube.AsyncClient, name: str, *, namespace: str = NAMESPACE
) -> tuple[str, ...]:
    """The ``status.loadBalancer.ingress`` IPs of a Service (empty until one is allocated)."""
    found = await client.get(resources.Service, name, namespace=namespace)
    balancer = found.status.loadBalancer if found.status else None
    return tuple(entry.ip for entry in (balancer.ingress or ()) if entry.ip) if balancer else ()


async def announced_by(
    client: lightkube.AsyncClient, name: str, *, namespace: str = NAMESPACE
) -> str | None:
    """The node the manager recorded for a Service (``porterlb.io/announced-by``), if any."""
    found = await client.get(resources.Service, name, namespace=namespace)
    annotations = (found.metadata.annotations if found.metadata else None) or {}
    return annotations.get(wellknown.ANNOUNCED_BY) or None


async def wait_ingress(
    client: lightkube.AsyncClient,
    name: str,
    *,
    namespace: str = NAMESPACE,
    within: float = INGRESS_TIMEOUT,
) -> tuple[str, ...]:
    """The ingress IPs of a Service once it has any; TransientError after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (found := await ingress(client, name, namespace=namespace)):
        if loop.time() >= deadline:
            raise errors.TransientError(
                f"Service {namespace}/{name}: no IP after {within:.0f} s; is the manager "
                "running (lab info), and does its log say why?"
            )
        await asyncio.sleep(INGRESS_POLL)
    return found


async def create(client: lightkube.AsyncClient, manifest: dict[str, Any], what: str) -> Any:
    """Create the object ``manifest`` describes; return it. Raises InvalidSpec naming ``what``
    if the API refuses it (it exists already, or is invalid)."""
    try:
        return await client.create(codecs.from_dict(manifest))
    except ApiError as error:
        raise errors.InvalidSpec(f"{what}: not created: {error.status.message}") from error


async def _delete(client: lightkube.AsyncClient, kind: Any, name: str, namespace: str) -> None:
    try:
        await client.delete(kind, name, namespace=namespace)
    except ApiError as error:
        if error.status.code != 404:
            raise errors.InvalidSpec(
                f"{kind.__name__} {namespace}/{name}: not deleted: {error.status.message}"
            ) from error


async def _ensure_namespace(client: lightkube.AsyncClient, namespace: str) -> None:
    try:
        await client.create(resources.Namespace(metadata=ObjectMeta(name=namespace)))
    except ApiError as error:
        if error.status.code != 409:
            raise errors.InvalidSpec(
                f"namespace {namespace}: not created: {error.status.message}"
            ) from error


def _check_family(lab: plan.Lab, what: str, family: Family) -> None:
    if family != "ipv4" and lab.pool_v6 is None:
        raise errors.InvalidSpec(
            f"{what}: family {family} needs IPv6, and lab {lab.name!r} was brought up "
            "without --ipv6"
        )


def _address(worker: plan.Node, address_type: str) -> str:
    interface = worker.ipv4 if address_type == "IPv4" else worker.ipv6
    assert interface is not None, "_check_family let IPv6 through in an IPv4-only lab"
    return str(interface.ip)


def _range(pool: tuple[Any, Any]) -> str:
    return f"{pool[0]}-{pool[1]}"
