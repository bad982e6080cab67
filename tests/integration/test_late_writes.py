"""A write an old leader sent just before it stepped down cannot land after a newer one.

Every manager write carries the resourceVersion its decision was read from
(:mod:`porterlb.kube.writers`). Here the old leader read the Service and the Eip before a new
leader (a running manager) served them; its writes, prepared from those older versions and
arriving late, are refused with Conflict and change nothing.
"""

from __future__ import annotations

import pytest
from lightkube.resources.core_v1 import Service

from porterlb import errors
from porterlb.api import wellknown
from porterlb.kube import reflector, resources, writers
from tests.integration import objects
from tests.integration.conftest import eip_object, running_manager
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_an_old_leaders_writes_from_older_versions_are_refused(
    client, namespace, net, eips, nodes
):
    pool = f"{namespace}-a"
    eips.append(pool)
    await client.create(eip_object(pool, f"{net}.0/24", namespaces=[namespace]))
    node = await nodes(f"{namespace}-n1")
    await client.create(objects.service("web", namespace))
    await objects.set_endpoints(client, "web", namespace)
    # What the old leader's caches held when it decided.
    old_service = reflector.version(await objects.raw(client, Service, "web", namespace))
    old_eip = reflector.version(await objects.raw(client, resources.Eip, pool))

    async with running_manager(client):
        await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))

        async def served():
            svc = await objects.raw(client, Service, "web", namespace)
            used = ((await objects.raw(client, resources.Eip, pool)).get("status") or {}).get(
                "used"
            )
            announced = (svc["metadata"].get("annotations") or {}).get(wellknown.ANNOUNCED_BY)
            return announced == node and used == {f"{net}.1": f"{namespace}/web"}

        await eventually(served, what="web announced and counted by the new leader")
    before = await objects.raw(client, Service, "web", namespace)
    eip_before = await objects.raw(client, resources.Eip, pool)

    with pytest.raises(errors.Conflict, match=f"Service {namespace}/web: status"):
        await writers.write_service(
            client,
            namespace,
            "web",
            resource_version=old_service,
            claim=(pool,),
            ingress=[f"{net}.9"],
        )
    with pytest.raises(errors.Conflict, match=f"Service {namespace}/web: status"):
        await writers.set_announcing_node(
            client, namespace, "web", "another-node", resource_version=old_service
        )
    with pytest.raises(errors.Conflict, match=f'Eip "{pool}": status'):
        await writers.set_eip_status(
            client,
            pool,
            {"used": {f"{net}.1": None, f"{net}.9": f"{namespace}/web"}},
            resource_version=old_eip,
        )

    after = await objects.raw(client, Service, "web", namespace)
    assert reflector.version(after) == reflector.version(before)
    assert await objects.ingress(client, "web", namespace) == (f"{net}.1",)
    assert after["metadata"]["annotations"][wellknown.ANNOUNCED_BY] == node
    eip_after = await objects.raw(client, resources.Eip, pool)
    assert eip_after["status"] == eip_before["status"]
