"""The lab a demo or a bench runs on: real nodes with porterlb installed by its chart, by
default, or the process lab (``--nodes process``), kept for comparison.

On real nodes (:mod:`porterlb.lab.node.nodelab`) porterlb runs as the chart's pods, kubelets
and the real kube-proxy run on every worker, and the sample Services front a Deployment's
pods (:mod:`porterlb.lab.node.backends`). On the process lab porterlb, the backends and a
kube-proxy stand-in are host processes (:mod:`porterlb.lab.lab`). Both give a
:class:`porterlb.lab.lab.Record`; ``record.release`` tells them apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Final, Literal, get_args

import lightkube

from porterlb.api.keys import ServiceKey
from porterlb.kube import client as kube_client
from porterlb.lab import cluster, lab
from porterlb.lab.node import backends, nodelab, workloads

Nodes = Literal["real", "process"]
NODES: Final[tuple[Nodes, ...]] = get_args(Nodes)


def up(
    name: str,
    *,
    workers: int,
    nodes: Nodes = "real",
    ipv6: bool = False,
    say: Callable[[str], None] = print,
) -> lab.Record:
    """Bring lab ``name`` up on ``nodes``, with the backends on real nodes; its record.

    Raises InvalidSpec (a bad name or count), LabError, BinariesMissing or
    ControlPlaneError as :func:`porterlb.lab.node.nodelab.up` and :func:`porterlb.lab.lab.up`
    do; nothing of the lab is left then.
    """
    if nodes == "process":
        return lab.up(name, workers=workers, ipv6=ipv6)
    record = nodelab.up(name, workers=workers, ipv6=ipv6, porterlb="chart", report=say)
    try:
        asyncio.run(_backends(record))
    except BaseException:
        nodelab.down(name)
        raise
    say(f"lab {name}: backend Deployment ready, a pod on each of {workers} nodes")
    return record


def down(name: str) -> None:
    """Remove lab ``name``, whichever nodes it has."""
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
    pods on real nodes (:func:`porterlb.lab.node.backends.start` must have run), of every
    worker's backend process on the process lab. Raises InvalidSpec if the API refuses it or
    the lab lacks the family."""
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
