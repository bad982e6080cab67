"""Building and reading the Kubernetes objects integration tests use."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import ServicePort, ServiceSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from porterlb.api import reasons, wellknown
from tests.waiting import eventually

OPT_IN = {wellknown.LB_OPT_IN: "openelb"}


def service(
    name: str,
    namespace: str,
    *,
    annotations: dict[str, str] | None = None,
    opt_in: bool = True,
    load_balancer_class: str | None = None,
    load_balancer_ip: str | None = None,
    ports: tuple[tuple[str, int], ...] = (("TCP", 80),),
    ip_family: str | None = None,
    dual_stack: str | None = None,
    ip_families: tuple[str, ...] = ("IPv4", "IPv6"),
) -> Service:
    """A LoadBalancer Service (opted in to porterlb by the OpenELB annotation by default);
    `dual_stack` is its ``ipFamilyPolicy`` (``PreferDualStack``, ``RequireDualStack``), with
    `ip_families` in that order."""
    wanted = {**(OPT_IN if opt_in else {}), **(annotations or {})}
    families = list(ip_families) if dual_stack else [ip_family] if ip_family else None
    policy = dual_stack or ("SingleStack" if ip_family else None)
    return Service(
        metadata=ObjectMeta(name=name, namespace=namespace, annotations=wanted or None),
        spec=ServiceSpec(
            type="LoadBalancer",
            loadBalancerClass=load_balancer_class,
            loadBalancerIP=load_balancer_ip,
            ports=[
                ServicePort(name=f"p{port}-{proto.lower()}", protocol=proto, port=port)
                for proto, port in ports
            ],
            selector={"app": name},
            ipFamilies=families,
            ipFamilyPolicy=policy,
        ),
    )


def endpoint_slice(
    service: str,
    namespace: str,
    *,
    ready: tuple[str | None, ...] = (None,),
    not_ready: tuple[str | None, ...] = (),
) -> dict[str, Any]:
    """The EndpointSlice of `service`: one endpoint per node named (None: no ``nodeName``).

    No controller-manager runs in these tests, so tests write what the EndpointSlice
    controller would. By default one ready endpoint on no particular node: enough for an
    ``externalTrafficPolicy: Cluster`` Service to be announced.
    """
    endpoints = [
        {
            "addresses": [f"10.250.0.{index}"],
            "conditions": {"ready": is_ready},
            **({"nodeName": node} if node else {}),
        }
        for index, (node, is_ready) in enumerate(
            [(n, True) for n in ready] + [(n, False) for n in not_ready], start=1
        )
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-test",
            "namespace": namespace,
            "labels": {wellknown.SERVICE_NAME_LABEL: service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


async def set_endpoints(
    client: lightkube.AsyncClient,
    service: str,
    namespace: str,
    *,
    ready: tuple[str | None, ...] = (None,),
    not_ready: tuple[str | None, ...] = (),
) -> None:
    """Create or replace the EndpointSlice of `service` (see :func:`endpoint_slice`)."""
    wanted = endpoint_slice(service, namespace, ready=ready, not_ready=not_ready)
    endpoint_slice_ = cast(EndpointSlice, EndpointSlice.from_dict(wanted))
    await client.apply(endpoint_slice_, field_manager="tests", force=True)


async def delete_endpoints(client: lightkube.AsyncClient, service: str, namespace: str) -> None:
    await client.delete(EndpointSlice, f"{service}-test", namespace=namespace)


OTHER_FINALIZER = "example.com/hold"
"""Another controller's finalizer: it keeps a deleted Service Terminating after ours is gone."""


@contextlib.asynccontextmanager
async def kept_terminating(
    client: lightkube.AsyncClient, name: str, namespace: str
) -> AsyncIterator[str]:
    """Give Service `name` :data:`OTHER_FINALIZER` for the with-block, so that once deleted it
    stays Terminating; at the end its finalizers are removed and it goes."""
    keep = {"metadata": {"finalizers": [OTHER_FINALIZER]}}
    await client.patch(Service, name, keep, namespace=namespace, patch_type=PatchType.STRATEGIC)
    try:
        yield OTHER_FINALIZER
    finally:
        with contextlib.suppress(ApiError):
            await client.patch(
                Service,
                name,
                [{"op": "remove", "path": "/metadata/finalizers"}],
                namespace=namespace,
                patch_type=PatchType.JSON,
            )


async def ingress(client: lightkube.AsyncClient, name: str, namespace: str) -> tuple[str, ...]:
    """The IPs in a Service's ``status.loadBalancer.ingress``."""
    current = await client.get(Service, name, namespace=namespace)
    lb = current.status.loadBalancer if current.status else None
    return tuple(entry.ip for entry in (lb.ingress if lb and lb.ingress else ()) if entry.ip)


async def raw(
    client: lightkube.AsyncClient, resource: Any, name: str, namespace: str | None = None
) -> dict[str, Any]:
    """An object as a dict."""
    obj = await client.get(resource, name, namespace=namespace)
    return dict(obj) if isinstance(obj, dict) else obj.to_dict()


async def events(
    client: lightkube.AsyncClient, namespace: str, name: str, reason: str | None = None
) -> list[Event]:
    """Events about the object `name` in `namespace` (optionally with one reason)."""
    return [
        event
        async for event in client.list(Event, namespace=namespace)
        if event.involvedObject.name == name and (reason is None or event.reason == reason)
    ]


def messages(found: list[Event]) -> list[str]:
    return [event.message or "" for event in found]


async def wait_ingress(client, name, namespace, expected):
    async def probe():
        return await ingress(client, name, namespace) == expected

    await eventually(probe, what=f"{namespace}/{name} ingress {expected}")


async def wait_event(client, namespace, name, reason, message):
    """Wait for an Event with `reason` and `message` (a string, or a pattern to fullmatch)."""
    seen: list[str] = []

    async def probe():
        seen[:] = messages(await events(client, namespace, name, reason))
        if isinstance(message, re.Pattern):
            return any(message.fullmatch(m) for m in seen)
        return message in seen

    try:
        await eventually(probe, what=f"{reason} event {message!r} on {name}")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}; {reason} events seen: {seen}") from None


async def wait_node_assigned(client, namespace, ip, node):
    """Wait for the NodeAssigned Event of Service `web` announcing `ip` from `node`."""
    message = f"Service {namespace}/web: {ip} is announced from node {node}"
    await wait_event(client, namespace, "web", reasons.NODE_ASSIGNED, message)
