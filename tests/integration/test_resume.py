"""A manager that retakes its own Lease leads on where it left off; one that another replica
may have succeeded starts afresh.

The manager's elector talks to the API server through a partitionable proxy (its watches and
writes do not): cut off, its renewals time out and its term ends; healed, it retakes the
Lease. Under load this happened 7 to 55 times in one bench.control_plane run, and each term
decided every Service anew. Now a term that resumes keeps IPAM's allocator and placement's
ledger and book, decides no Service it had already decided, and writes nothing; a term after
another holder loads everything from the API again (docs/fencing.md, *A leader that retakes
its own Lease*).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lightkube
import pytest
import pytest_asyncio
from lightkube.resources.core_v1 import Service

from porterlb.api import service as svc
from porterlb.api import wellknown
from porterlb.kube import resources
from porterlb.lab import controlplane
from porterlb.manager import controller, ipam, metrics, service_plan
from tests.integration import objects
from tests.integration.conftest import running_manager
from tests.integration.proxy import Proxy
from tests.integration.test_announcing import pool_with_service, served_service, wait_announced_by
from tests.integration.test_election import held_and_released, proxied_elector
from tests.waiting import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning"),  # as in test_election
]


class Decisions:
    """Wraps an Ipam's write seam: the Services IPAM decided (each decision ends in a call)."""

    def __init__(self, manager_ipam: ipam.Ipam) -> None:
        self.write = manager_ipam.write_service
        self.names: list[str] = []
        manager_ipam.write_service = self

    async def __call__(self, client, service: svc.Service, plan: service_plan.Plan, **at) -> None:
        self.names.append(service.name)
        await self.write(client, service, plan, **at)


@contextlib.asynccontextmanager
async def elected_manager(
    control_plane: controlplane.Endpoints,
    client: lightkube.AsyncClient,
    namespace: str,
    tmp_path: Path,
) -> AsyncIterator[tuple[controller.Manager, Proxy]]:
    """A manager leading by a Lease of its own, its elector behind a proxy."""
    async with (
        proxied_elector(control_plane, namespace, tmp_path, "resumer") as (elector, proxy),
        running_manager(client, elector=elector) as manager,
    ):
        yield manager, proxy


def counter(metric: Any) -> float:
    value: float = metric._value.get()
    return value


async def leading(manager: controller.Manager) -> bool:
    assert manager.elector is not None
    return manager.elector.leading.is_set()


async def settled(manager: controller.Manager, names: list[str], namespace: str) -> bool:
    """Every Service shown placed in the manager's own cache, and its queues idle."""
    cache = manager.ipam.services.cache
    for name in names:
        obj = cache.get(f"{namespace}/{name}") or {}
        if wellknown.ANNOUNCED_BY not in ((obj.get("metadata") or {}).get("annotations") or {}):
            return False
    queues = (manager.ipam.service_queue, manager.announcing.queue, manager.announcing.view)
    return all(queue.depth == 0 for queue in queues)


async def versions(client: lightkube.AsyncClient, namespace: str, node: str) -> dict[str, str]:
    """The resourceVersion of every Service of `namespace` and of `node`'s placement record."""
    found = {}
    async for service in client.list(Service, namespace=namespace):
        assert service.metadata is not None and service.metadata.resourceVersion is not None
        found[str(service.metadata.name)] = service.metadata.resourceVersion
    record = await objects.raw(client, resources.NodePlacement, node)
    found[f"record/{node}"] = str(record["metadata"]["resourceVersion"])
    return found


@contextlib.asynccontextmanager
async def cut_off(manager: controller.Manager, proxy: Proxy) -> AsyncIterator[None]:
    """The elector cut off from the API server until its term has ended and the block ran."""
    proxy.forwarding = False
    try:

        async def ended() -> bool:
            return not await leading(manager)

        await eventually(ended, what="the manager's renewals to time out")
        yield
    finally:
        proxy.forwarding = True


@pytest_asyncio.fixture(loop_scope="session")
async def placed(
    control_plane, client, namespace, net, eips, nodes, tmp_path
) -> AsyncIterator[tuple[controller.Manager, Proxy, str]]:
    """An elected manager that placed two Services on a node, and is idle."""
    node = await nodes(f"{namespace}-n")
    async with elected_manager(control_plane, client, namespace, tmp_path) as (manager, proxy):
        await pool_with_service(client, eips, namespace, net)
        await served_service(client, "second", namespace)
        for name in ("web", "second"):
            await wait_announced_by(client, name, namespace, {node})
        await eventually(
            lambda: settled(manager, ["web", "second"], namespace), what="the manager idle"
        )
        yield manager, proxy, node


async def test_a_leader_that_retakes_its_own_lease_decides_and_writes_nothing_again(
    client, namespace, net, placed
):
    manager, proxy, node = placed
    before = await versions(client, namespace, node)
    state = (manager.ipam.alloc, manager.announcing.ledger, manager.announcing.placements.book)
    resumed = counter(metrics.TERMS_RESUMED)
    decisions = Decisions(manager.ipam)

    async with cut_off(manager, proxy):
        pass
    await eventually(lambda: leading(manager), what="the manager leading again")

    assert counter(metrics.TERMS_RESUMED) == resumed + 1
    kept = (manager.ipam.alloc, manager.announcing.ledger, manager.announcing.placements.book)
    assert all(now is then for now, then in zip(kept, state, strict=True))
    await eventually(lambda: settled(manager, ["web", "second"], namespace), what="idle")
    assert decisions.names == []  # nothing decided again
    assert await versions(client, namespace, node) == before  # nothing written
    # The resumed term goes on deciding: a new Service gets the next IP, on the node.
    await served_service(client, "third", namespace)
    await objects.wait_ingress(client, "third", namespace, (f"{net}.3",))
    await wait_announced_by(client, "third", namespace, {node})
    assert set(decisions.names) == {"third"}


async def test_a_leader_whose_lease_another_held_meanwhile_decides_everything_anew(
    client, namespace, net, placed
):
    manager, proxy, node = placed
    assert manager.elector is not None
    name = manager.elector.name
    allocator = manager.ipam.alloc
    resumed = counter(metrics.TERMS_RESUMED)
    decisions = Decisions(manager.ipam)

    async with cut_off(manager, proxy):
        await held_and_released(client, namespace, name, by="another")

    async def decided_again() -> bool:
        return {"web", "second"} <= set(decisions.names)

    await eventually(decided_again, what="every Service decided in the new term")
    assert counter(metrics.TERMS_RESUMED) == resumed
    assert manager.ipam.alloc is not allocator  # loaded afresh from the API
    # Loaded from the API, nothing moved: every IP kept, on its node.
    await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))
    await objects.wait_ingress(client, "second", namespace, (f"{net}.2",))
    for service in ("web", "second"):
        await wait_announced_by(client, service, namespace, {node})
