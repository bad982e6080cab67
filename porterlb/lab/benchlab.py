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
from collections.abc import Callable, Mapping

import lightkube

from porterlb.api.keys import ServiceKey
from porterlb.kube import client as kube_client
from porterlb.lab import cluster, lab
from porterlb.lab.node import backends, nodelab, workloads


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
    pods on real nodes (:func:`porterlb.lab.node.backends.start` must have run); on the process
    lab, with the EndpointSlices the manager needs to place it (:mod:`porterlb.lab.cluster`).
    Raises InvalidSpec if the API refuses it or the lab lacks the family."""
    if not record.release:
        return await cluster.create_service(
            client, record.plan, name, family=family, port=port, annotations=annotations
        )
    manifest = backends.service(
        record.plan, name, family=family, port=port, annotations=annotations
    )
    await workloads.create(client, [manifest])
    return ServiceKey(f"{cluster.NAMESPACE}/{name}")


async def _backends(record: lab.Record) -> None:
    async with kube_client.connect(record.kubeconfig) as client:
        await backends.start(client, record.plan)
