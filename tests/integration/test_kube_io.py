"""The raw-JSON reflector and writers against the real API server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Service

from porterlb.api import wellknown
from porterlb.kube import reflector
from tests.conftest import cancelled_connections_collected
from tests.integration import objects
from tests.integration.conftest import eip_object
from tests.waiting import DEADLINE, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def _served_web(client, namespace, net, eips):
    """Service "web" served from a new pool bound to `namespace`; the pool's name."""
    pool = f"{namespace}-a"
    eips.append(pool)
    await client.create(eip_object(pool, f"{net}.0/24", namespaces=[namespace]))
    await client.create(objects.service("web", namespace))
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    return pool


async def test_the_claim_and_the_ip_arrive_in_one_status_write(
    client, manager, namespace, net, eips
):
    pool = await _served_web(client, namespace, net, eips)

    svc = await objects.raw(client, Service, "web", namespace)
    assert svc["metadata"]["labels"][wellknown.POOL_LABEL] == pool
    assert wellknown.SERVICE_FINALIZER in svc["metadata"]["finalizers"]
    # The test client creates with porterlb's field manager too: its entry has no subresource.
    owned = {
        entry.get("subresource"): entry["fieldsV1"]
        for entry in svc["metadata"]["managedFields"]
        if entry["manager"] == wellknown.FIELD_MANAGER
    }
    assert owned.keys() == {None, "status"}
    assert {"f:finalizers", "f:labels"} <= owned["status"]["f:metadata"].keys()
    assert "f:status" in owned["status"]
    assert {"f:finalizers", "f:labels"}.isdisjoint(owned[None]["f:metadata"])


async def test_a_claimed_service_is_deleted_once_its_finalizer_goes(
    client, manager, namespace, net, eips
):
    await _served_web(client, namespace, net, eips)
    await client.delete(Service, "web", namespace=namespace)

    async def gone():
        names = [s.metadata.name async for s in client.list(Service, namespace=namespace)]
        return "web" not in names

    await eventually(gone, what="the Service removed after its finalizer")


async def test_the_reflector_follows_adds_changes_and_deletions_without_managed_fields(
    client, namespace
):
    seen: list[str] = []
    mirror = reflector.Reflector(client, ConfigMap, on_change=seen.append, name="configmaps")
    task = asyncio.create_task(mirror.run(), name="test/reflector")
    key = f"{namespace}/settings"
    try:
        await asyncio.wait_for(mirror.watching.wait(), DEADLINE)
        await client.create(
            ConfigMap(metadata=ObjectMeta(name="settings", namespace=namespace), data={"a": "1"})
        )

        async def cached(value):
            obj = mirror.cache.get(key)
            return obj is not None and obj.get("data") == {"a": value} and obj

        obj = await eventually(lambda: cached("1"), what="the ConfigMap cached")
        assert "managedFields" not in obj["metadata"]
        assert mirror.synced.is_set() and mirror.watching.is_set()

        await client.patch(ConfigMap, "settings", {"data": {"a": "2"}}, namespace=namespace)
        await eventually(lambda: cached("2"), what="the change cached")
        await client.delete(ConfigMap, "settings", namespace=namespace)

        async def forgotten():
            return key not in mirror.cache

        await eventually(forgotten, what="the deletion applied")
        assert seen.count(key) >= 3
    finally:
        with cancelled_connections_collected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
