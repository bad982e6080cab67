"""An IP taken off a Service goes to no other Service before the write taking it off lands.

The release write of the Service giving the IP back is held (the manager's write seam), as a
loaded machine holds it; meanwhile another Service asks the same one-address pool. Before
the fix the allocator freed the IP in memory at once and the newcomer's write landed first:
the API showed one IP on two Services (bench.churn read it 19 times in a run). Now the
newcomer is told the pool is full until the release has landed, whether its write returns
success, fails after landing (the cache then shows it), or fails before (the retry lands it),
and a new leader holds what a Service leaving the class still shows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType

from porterlb import errors
from porterlb.api import reasons, wellknown
from porterlb.api import service as svc
from porterlb.manager import ipam, service_plan
from tests.integration import objects
from tests.integration.conftest import eip_object, running_manager
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

LEAVE = {"metadata": {"annotations": {wellknown.LB_OPT_IN: None}}}
"""The OpenELB opt-in annotation removed: still a LoadBalancer, showing its IP until we
clear it (a type change would have the API server clear it at once)."""


class HeldRelease:
    """Wraps an Ipam's write seam: the release writes of one Service wait for :meth:`open`.

    `fail_first` makes the first release write fail with a TransientError, after sending
    it (``"after"``: its reply lost) or without (``"before"``: lost on the way). With `claim`
    the writes held are those claiming an IP instead.
    """

    def __init__(
        self,
        manager_ipam: ipam.Ipam,
        name: str,
        fail_first: str | None = None,
        claim: bool = False,
    ):
        self.ipam, self.name, self.fail_first, self.claim = manager_ipam, name, fail_first, claim
        self.write = manager_ipam.write_service
        self.reached, self.gate = asyncio.Event(), asyncio.Event()
        self.calls = 0

    async def __call__(self, client, service: svc.Service, plan: service_plan.Plan, **at) -> None:
        wanted = bool(plan.claim) if self.claim else plan.unclaim or plan.ingress == ()
        if service.name != self.name or not wanted:
            return await self.write(client, service, plan, **at)
        self.calls += 1
        if self.calls == 1 and self.fail_first is not None:
            if self.fail_first == "after":
                await self.write(client, service, plan, **at)
            self.reached.set()
            raise errors.TransientError(f"Service {service.key}: the test lost this write")
        self.reached.set()
        await self.gate.wait()
        return await self.write(client, service, plan, **at)

    def open(self) -> None:
        self.gate.set()

    async def entered(self) -> bool:
        return self.reached.is_set()


@contextlib.asynccontextmanager
async def held(manager_ipam: ipam.Ipam, name: str, **options) -> AsyncIterator[HeldRelease]:
    seam = HeldRelease(manager_ipam, name, **options)
    manager_ipam.write_service = seam
    try:
        yield seam
    finally:
        seam.open()
        manager_ipam.write_service = seam.write


async def one_address_pool(client, eips, namespace: str, ip: str) -> None:
    pool = f"{namespace}-one"
    eips.append(pool)
    await client.create(eip_object(pool, ip, namespaces=[namespace]))


async def showing(client, namespace: str, ip: str) -> list[str]:
    """The Services of `namespace` whose status shows `ip`, read in one list."""
    found = []
    async for obj in client.list(Service, namespace=namespace):
        lb = obj.status.loadBalancer if obj.status else None
        if any(entry.ip == ip for entry in ((lb.ingress if lb else None) or ())):
            found.append(obj.metadata.name)
    return sorted(found)


async def decided(client, namespace: str, name: str, ip: str) -> None:
    """Wait until the manager has decided `name`: it got `ip`, or was told the pool is full."""

    async def probe() -> bool:
        if await objects.ingress(client, name, namespace):
            return True
        return bool(await objects.events(client, namespace, name, reasons.ALLOCATION_FAILED))

    await eventually(probe, what=f"{namespace}/{name} given {ip} or refused")


async def handed_over(client, namespace: str, ip: str) -> None:
    """The release lands and the waiting Service gets the IP: nothing leaked."""
    await objects.wait_ingress(client, "new", namespace, (ip,))
    assert await showing(client, namespace, ip) == ["new"]


async def test_a_released_ip_waits_for_its_release_write(client, namespace, net, eips):
    ip = f"{net}.7"
    await one_address_pool(client, eips, namespace, ip)
    async with running_manager(client) as manager:
        await client.create(objects.service("old", namespace))
        await objects.wait_ingress(client, "old", namespace, (ip,))
        async with held(manager.ipam, "old") as seam:
            await client.patch(
                Service, "old", LEAVE, namespace=namespace, patch_type=PatchType.MERGE
            )
            await eventually(seam.entered, what="the release of old written")
            await client.create(objects.service("new", namespace))
            await decided(client, namespace, "new", ip)
            assert await showing(client, namespace, ip) == ["old"]
        await handed_over(client, namespace, ip)


async def test_a_service_another_finalizer_keeps_terminating_gives_its_ip_back(
    client, namespace, net, eips
):
    """Deleted while another finalizer keeps it, a Service shows its IP no more once its
    release is written, and the IP goes to the next Service then, not once the Service is
    gone: the release cleared no ingress of a Service being deleted, so the IP stayed held,
    given to nobody, for as long as the other finalizer stayed."""
    ip = f"{net}.7"
    await one_address_pool(client, eips, namespace, ip)
    async with running_manager(client) as manager:
        await client.create(objects.service("old", namespace))
        await objects.wait_ingress(client, "old", namespace, (ip,))
        async with objects.kept_terminating(client, "old", namespace) as other:
            async with held(manager.ipam, "old") as seam:
                await client.delete(Service, "old", namespace=namespace)
                await eventually(seam.entered, what="the release of old written")
                await client.create(objects.service("new", namespace))
                await decided(client, namespace, "new", ip)
                assert await showing(client, namespace, ip) == ["old"]
            await handed_over(client, namespace, ip)
            old = await objects.raw(client, Service, "old", namespace)
            assert old["metadata"].get("deletionTimestamp")
            assert old["metadata"]["finalizers"] == [other]


@pytest.mark.parametrize("lost", ["before", "after"])
async def test_a_release_write_that_failed_holds_until_the_service_shows_it_landed(
    client, namespace, net, eips, lost
):
    """Lost before landing, the IP stays held until the retry lands; lost after (the reply
    never came back), until the cache shows the Service without it."""
    ip = f"{net}.7"
    await one_address_pool(client, eips, namespace, ip)
    async with running_manager(client) as manager:
        await client.create(objects.service("old", namespace))
        await objects.wait_ingress(client, "old", namespace, (ip,))
        async with held(manager.ipam, "old", fail_first=lost) as seam:
            await client.patch(
                Service, "old", LEAVE, namespace=namespace, patch_type=PatchType.MERGE
            )
            await eventually(seam.entered, what="the release of old written and lost")
            await client.create(objects.service("new", namespace))
            if lost == "before":
                await decided(client, namespace, "new", ip)
                assert await showing(client, namespace, ip) == ["old"]
                seam.open()
            await handed_over(client, namespace, ip)
        assert seam.calls == (2 if lost == "before" else 1)


async def test_a_new_leader_holds_what_a_service_leaving_the_class_still_shows(
    client, namespace, net, eips
):
    ip = f"{net}.7"
    await one_address_pool(client, eips, namespace, ip)
    async with running_manager(client):
        await client.create(objects.service("old", namespace))
        await objects.wait_ingress(client, "old", namespace, (ip,))
    # No leader while old leaves and new arrives: the next one finds both in its cache.
    await client.patch(Service, "old", LEAVE, namespace=namespace, patch_type=PatchType.MERGE)
    await client.create(objects.service("new", namespace))
    async with running_manager(client) as manager, held(manager.ipam, "old") as seam:
        await eventually(seam.entered, what="the release of old written")
        await decided(client, namespace, "new", ip)
        assert await showing(client, namespace, ip) == ["old"]
        seam.open()
        await handed_over(client, namespace, ip)


async def test_an_ip_whose_claim_was_refused_is_not_held(client, namespace, net, eips):
    """A Service that turns NodePort while the write giving it its IP is on its way: the
    write is refused (Conflict), so the Service never shows the IP, and the IP goes back at
    once. Held until the Service showed it no more, it leaked (bench.churn)."""
    ip = f"{net}.7"
    await one_address_pool(client, eips, namespace, ip)
    async with running_manager(client) as manager:
        async with held(manager.ipam, "old", claim=True) as seam:
            await client.create(objects.service("old", namespace))
            await eventually(seam.entered, what="the claim of old written")
            away = {"spec": {"type": "NodePort"}}
            await client.patch(
                Service, "old", away, namespace=namespace, patch_type=PatchType.MERGE
            )
        await client.create(objects.service("new", namespace))
        await handed_over(client, namespace, ip)
        assert await objects.ingress(client, "old", namespace) == ()
