"""The writes the manager makes, each one small patch, each error mapped to porterlb's.

Services take strategic-merge patches, so adding or removing our finalizer never rewrites
somebody else's; Eips (a CRD, no strategic merge) take JSON merge patches carrying the
resourceVersion they were decided from, so a concurrent change is a :class:`Conflict`
instead of a lost update.

A Service is claimed (finalizer and pool label) and given its IP in *one* patch of its
``status`` subresource: a Service's status strategy resets only ``spec`` (kube-apiserver
``pkg/registry/core/service/strategy.go``), and Kubernetes' own cloud-provider Service
controller adds and removes its finalizer through ``/status`` the same way
(``k8s.io/cloud-provider/service/helpers.PatchService``). One write instead of two halves
what each Service costs the API server and the watchers, and the IP is never visible
without the finalizer that releases it. If a server ever ignored metadata there, the reply
shows it and the marks are written to the object itself at once.

Patches go out as raw JSON through the client's httpx2 client (:func:`client.http`); only
replies that say something (the claim's, an error's Status) are decoded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx2
import lightkube
import msgspec
from lightkube.core.resource import api_info
from lightkube.types import PatchType

from porterlb import errors
from porterlb.api import wellknown
from porterlb.kube import client as kube_client
from porterlb.kube import metrics, resources

Patch = Mapping[str, Any]


def status_message(reply: httpx2.Response) -> str:
    """The message of the API's Status in `reply`, or its HTTP reason when it has none."""
    try:
        message = msgspec.json.decode(reply.content).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or f"{reply.status_code} {reply.reason_phrase}")


def raise_for_reply(reply: httpx2.Response, what: str) -> None:
    """Map a failed reply to porterlb's errors; a 404 (gone meanwhile) is no error.

    Raises Conflict (409), InvalidSpec (another 4xx but 429: retrying will not help) or
    TransientError (429, 5xx).
    """
    code = reply.status_code
    if code < 400 or code == 404:
        return  # gone meanwhile: the watch will bring the deletion
    if code == 409:
        raise errors.Conflict(f"{what}: changed meanwhile")
    if 400 <= code < 500 and code != 429:
        raise errors.InvalidSpec(f"{what}: rejected: {status_message(reply)}")
    raise errors.TransientError(f"{what}: {status_message(reply)}")


async def _patch(
    client: lightkube.AsyncClient,
    resource: Any,
    name: str,
    patch: Patch,
    *,
    namespace: str | None,
    patch_type: PatchType,
    what: str,
) -> httpx2.Response:
    info = api_info(resource)
    metrics.API_REQUESTS.labels("patch", "/".join(filter(None, (info.plural, info.action)))).inc()
    try:
        reply = await kube_client.http(client).patch(
            kube_client.path(resource, namespace=namespace, name=name),
            content=msgspec.json.encode(patch),
            headers={"Content-Type": patch_type.value},
            params={"fieldManager": wellknown.FIELD_MANAGER},
        )
    except httpx2.TransportError as error:
        raise errors.TransientError(f"{what}: {error!r}") from error
    raise_for_reply(reply, what)
    return reply


def _marks(claim: str | None, unclaim: bool) -> dict[str, Any]:
    if claim is not None:
        return {
            "finalizers": [wellknown.SERVICE_FINALIZER],
            "labels": {wellknown.POOL_LABEL: claim},
        }
    if unclaim:
        return {
            "$deleteFromPrimitiveList/finalizers": [wellknown.SERVICE_FINALIZER],
            "labels": {wellknown.POOL_LABEL: None},
        }
    return {}


async def write_service(
    client: lightkube.AsyncClient,
    namespace: str,
    name: str,
    *,
    claim: str | None = None,
    unclaim: bool = False,
    ingress: Sequence[str] | None = None,
) -> None:
    """Claim (finalizer + pool label `claim`) or unclaim a Service and set its ingress IPs.

    One strategic-merge patch of ``status``; `ingress` None leaves the IPs, an empty list
    clears them. Raises Conflict, InvalidSpec or TransientError (see :func:`raise_for_reply`).
    """
    what = f"Service {namespace}/{name}"
    patch: dict[str, Any] = {}
    marks = _marks(claim, unclaim)
    if marks:
        patch["metadata"] = marks
    if ingress is not None:
        patch["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    if not patch:
        return
    reply = await _patch(
        client,
        resources.Service.Status,
        name,
        patch,
        namespace=namespace,
        patch_type=PatchType.STRATEGIC,
        what=f"{what}: status",
    )
    if marks and reply.status_code < 300 and not carries_marks(reply, claim):
        await _patch_service(client, namespace, name, {"metadata": marks}, "claim")


def carries_marks(reply: httpx2.Response, claim: str | None) -> bool:
    """Whether the Service in `reply` carries the marks of `claim` (None: carries none)."""
    meta = msgspec.json.decode(reply.content).get("metadata") or {}
    claimed = wellknown.SERVICE_FINALIZER in (meta.get("finalizers") or ())
    label = (meta.get("labels") or {}).get(wellknown.POOL_LABEL)
    return claimed and label == claim if claim is not None else not claimed and label is None


async def _patch_service(
    client: lightkube.AsyncClient, namespace: str, name: str, patch: Patch, what: str
) -> None:
    await _patch(
        client,
        resources.Service,
        name,
        patch,
        namespace=namespace,
        patch_type=PatchType.STRATEGIC,
        what=f"Service {namespace}/{name}: {what}",
    )


async def set_eip_status(
    client: lightkube.AsyncClient, name: str, status: Mapping[str, Any]
) -> None:
    """Replace the porterlb-owned fields of an Eip's status."""
    await _patch(
        client,
        resources.Eip.Status,
        name,
        {"status": status},
        namespace=None,
        patch_type=PatchType.MERGE,
        what=f'Eip "{name}": status',
    )


async def set_eip_finalizers(
    client: lightkube.AsyncClient, name: str, finalizers: Sequence[str], resource_version: str
) -> None:
    """Set an Eip's finalizers, failing with Conflict if it changed since `resource_version`."""
    patch = {"metadata": {"finalizers": list(finalizers), "resourceVersion": resource_version}}
    await _patch(
        client,
        resources.Eip,
        name,
        patch,
        namespace=None,
        patch_type=PatchType.MERGE,
        what=f'Eip "{name}": finalizers',
    )


async def set_announcing_node(
    client: lightkube.AsyncClient, namespace: str, name: str, node: str | None
) -> None:
    """Record on a Service which node announces its IP (None removes the record)."""
    patch = {"metadata": {"annotations": {wellknown.ANNOUNCED_BY: node}}}
    await _patch_service(client, namespace, name, patch, "announcing node")
