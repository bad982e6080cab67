"""The writes the manager makes, each one small patch, each error mapped to porterlb's.

Services take strategic-merge patches, so adding or removing our finalizer never rewrites
somebody else's; Eips (a CRD, no strategic merge) take JSON merge patches carrying the
resourceVersion they were decided from, so a concurrent change is a :class:`Conflict`
instead of a lost update.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx2
import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import api_info
from lightkube.types import PatchType

from porterlb import errors
from porterlb.api import wellknown
from porterlb.kube import metrics, resources

Patch = Mapping[str, Any]


async def _patch(
    client: lightkube.AsyncClient,
    resource: Any,
    name: str,
    patch: Patch,
    *,
    namespace: str | None,
    patch_type: PatchType,
    what: str,
) -> None:
    info = api_info(resource)
    metrics.API_REQUESTS.labels("patch", "/".join(filter(None, (info.plural, info.action)))).inc()
    try:
        await client.patch(resource, name, patch, namespace=namespace, patch_type=patch_type)
    except ApiError as error:
        code = error.status.code
        if code == 404:
            return  # gone meanwhile: the watch will bring the deletion
        if code == 409:
            raise errors.Conflict(f"{what}: changed meanwhile") from error
        if code is not None and 400 <= code < 500 and code != 429:
            raise errors.InvalidSpec(f"{what}: rejected: {error.status.message}") from error
        raise errors.TransientError(f"{what}: {error.status.message}") from error
    except httpx2.TransportError as error:
        raise errors.TransientError(f"{what}: {error!r}") from error


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


async def claim_service(
    client: lightkube.AsyncClient, namespace: str, name: str, pool: str
) -> None:
    """Add our finalizer and the pool label to a Service."""
    patch = {
        "metadata": {
            "finalizers": [wellknown.SERVICE_FINALIZER],
            "labels": {wellknown.POOL_LABEL: pool},
        }
    }
    await _patch_service(client, namespace, name, patch, "claim")


async def unclaim_service(client: lightkube.AsyncClient, namespace: str, name: str) -> None:
    """Remove our finalizer and the pool label from a Service."""
    patch = {
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": [wellknown.SERVICE_FINALIZER],
            "labels": {wellknown.POOL_LABEL: None},
        }
    }
    await _patch_service(client, namespace, name, patch, "unclaim")


async def set_ingress(
    client: lightkube.AsyncClient, namespace: str, name: str, ips: Sequence[str]
) -> None:
    """Write ``status.loadBalancer.ingress`` (an empty list clears it)."""
    patch = {"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}
    await _patch(
        client,
        resources.Service.Status,
        name,
        patch,
        namespace=namespace,
        patch_type=PatchType.MERGE,
        what=f"Service {namespace}/{name}: status",
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
