"""The lab a demo or a bench runs on: real nodes with porterlb installed by its chart, and a
backend Deployment with a pod on every node.

porterlb runs as the chart's pods, kubelets and the real kube-proxy run on every worker
(:mod:`porterlb.lab.node.nodelab`), and the sample Services front the Deployment's pods
(:mod:`porterlb.lab.node.backends`), whose EndpointSlices are the controller manager's. The
process lab (:mod:`porterlb.lab.lab`) carries no traffic, so nothing here runs on it but
:func:`create_service`, which the e2e tests share between both labs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import httpx2
import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Service

from porterlb import errors
from porterlb.api import wellknown
from porterlb.api.keys import ServiceKey
from porterlb.kube import client as kube_client
from porterlb.lab import cluster, lab, netns
from porterlb.lab.node import backends, nodelab, workloads

CREATE_ATTEMPTS: Final = 6
"""Tries to create one sample Service before its error is given back. A bench creating 999
idle Services on a machine loaded to 30-45 saw the API server time out single creates (10 s);
each later try waits longer (:data:`CREATE_BACKOFF`), so the API gets the time it needs."""

CREATE_BACKOFF: Final = 1.0
"""Seconds before the second try; doubled for each further one (1 + 2 + 4 + 8 + 16 s)."""

BUSY: Final = frozenset({429, 500, 503, 504})
"""API replies that say "not now" (throttled, overloaded, timed out in etcd): worth a retry."""

IDLE_BATCH: Final = 50
"""Idle Services created before waiting for porterlb to place them. Each one costs the API
server more than its create (the EndpointSlice, IPAM's status, the placement record, the
announced-by view, an Event, and every kube-proxy reading them): 999 created 16 at a time
without a pause left a backlog that timed creates out for over 30 s (load 30-45)."""

IDLE_IN_FLIGHT: Final = 8
"""Creates of one batch in flight at once."""

PLACE_PATIENCE: Final = 180.0
"""Seconds a batch may go without one more Service placed before the bench gives up."""

PLACED_POLL: Final = 1.0
"""Seconds between two counts of the placed Services (a list of up to 1,000 Services)."""


def up(
    name: str,
    *,
    workers: int,
    ipv6: bool = False,
    say: Callable[[str], None] = print,
) -> lab.Record:
    """Bring lab ``name`` up on real nodes, porterlb and the backends included; its record.

    Raises InvalidSpec (a bad name or count), LabError, BinariesMissing or ControlPlaneError
    as :func:`porterlb.lab.node.nodelab.up` does; nothing of the lab is left then.
    """
    record = nodelab.up(name, workers=workers, ipv6=ipv6, porterlb="chart", report=say)
    try:
        asyncio.run(_backends(record))
    except BaseException:
        nodelab.down(name)
        raise
    say(f"lab {name}: backend Deployment ready, a pod on each of {workers} nodes")
    return record


def down(name: str) -> None:
    """Remove lab ``name``."""
    nodelab.down(name)


async def create_service(
    client: lightkube.AsyncClient,
    record: lab.Record,
    name: str,
    *,
    family: cluster.Family = "ipv4",
    port: int = cluster.SERVICE_PORT,
    annotations: Mapping[str, str] | None = None,
) -> ServiceKey:
    """Create sample Service ``default/name`` with ``annotations``: in front of the backend
    pods on real nodes, porterlb installed by the chart or not
    (:func:`porterlb.lab.node.backends.start` must have run); on the process lab, with the
    EndpointSlices the manager needs to place it (:mod:`porterlb.lab.cluster`). Tries again
    while the API is too busy to answer (:data:`CREATE_ATTEMPTS`). Raises InvalidSpec if the
    API refuses it or the lab lacks the family, TransientError naming the Service if the API
    stays too busy."""
    if not record.real_nodes:
        layout = record.plan

        async def create() -> None:
            await cluster.create_service(
                client, layout, name, family=family, port=port, annotations=annotations
            )

        async def undo() -> None:  # a create that timed out may have landed, slices or not
            await cluster.delete_service(client, name)

    else:
        manifest = backends.service(
            record.plan, name, family=family, port=port, annotations=annotations
        )

        async def create() -> None:
            await workloads.create(client, [manifest])

        undo = _nothing  # server-side apply: a second apply of the same Service is harmless
    await _patiently(create, undo, f"Service {cluster.NAMESPACE}/{name}")
    return ServiceKey(f"{cluster.NAMESPACE}/{name}")


async def create_idle(client: lightkube.AsyncClient, record: lab.Record, count: int) -> None:
    """``count`` more Services ``idle-N`` (IPv6 in a lab with IPv6), :data:`IDLE_BATCH` at a
    time; each batch is placed (``porterlb.io/announced-by`` set) before the next is created.
    Raises what :func:`create_service` raises, LabError naming the counts if porterlb stops
    placing them."""
    gate = asyncio.Semaphore(IDLE_IN_FLIGHT)
    family: cluster.Family = "ipv6" if record.plan.pool_v6 is not None else "ipv4"

    async def create(n: int) -> None:
        async with gate:
            await create_service(client, record, f"idle-{n}", family=family)

    for start in range(0, count, IDLE_BATCH):
        batch = range(start, min(start + IDLE_BATCH, count))
        await asyncio.gather(*(create(n) for n in batch))
        await _placed(client, record, batch.stop + 1)  # the benchmark's own Service too


async def _placed(client: lightkube.AsyncClient, record: lab.Record, wanted: int) -> None:
    """Return once ``wanted`` Services of the sample namespace are placed."""
    loop = asyncio.get_running_loop()
    best, since = -1, loop.time()
    while True:
        try:
            placed = await _count_placed(client)
        except httpx2.TransportError:  # a list the loaded API server did not answer in time
            placed = best
        if placed >= wanted:
            return
        if placed > best:
            best, since = placed, loop.time()
        elif loop.time() - since > PLACE_PATIENCE:
            raise netns.LabError(
                f"lab {record.plan.name}: {best} of {wanted} Services placed, none more in "
                f"{PLACE_PATIENCE:.0f} s"
            )
        await asyncio.sleep(PLACED_POLL)


async def _count_placed(client: lightkube.AsyncClient) -> int:
    placed = 0
    async for service in client.list(Service, namespace=cluster.NAMESPACE):
        annotations = (service.metadata.annotations if service.metadata else None) or {}
        placed += wellknown.ANNOUNCED_BY in annotations
    return placed


async def _patiently(
    create: Callable[[], Awaitable[None]], undo: Callable[[], Awaitable[None]], what: str
) -> None:
    """Run `create`, and `undo` then `create` again while the API is too busy to answer."""
    delay = CREATE_BACKOFF
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            await create()
            return
        except errors.InvalidSpec as refused:
            cause = refused.__cause__
            if not isinstance(cause, ApiError) or cause.status.code not in BUSY:
                raise
            failure: Exception = refused
        except httpx2.TransportError as lost:  # a timeout, or a connection the API dropped
            failure = lost
        if attempt == CREATE_ATTEMPTS:
            raise errors.TransientError(
                f"{what}: not created after {attempt} tries, the API server is too busy: "
                f"{failure!r}"
            ) from failure
        await asyncio.sleep(delay)
        delay *= 2
        await undo()


async def _nothing() -> None:
    pass


async def _backends(record: lab.Record) -> None:
    async with kube_client.connect(record.kubeconfig) as client:
        await backends.start(client, record.plan)
