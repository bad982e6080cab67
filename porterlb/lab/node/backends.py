"""The sample Services of the real-node lab's demo and benches, with real pods behind them.

One Deployment, :data:`DEPLOYMENT`, runs a backend pod on every node
(:func:`porterlb.lab.node.workloads.deployment`: it answers ``GET /`` with its node's name);
each sample Service selects it. The Services use ``externalTrafficPolicy: Local``: the node
the router sends a request to (the one announcing the IP) forwards it to its own pod, so the
answer names the node that received the traffic, as the process lab's backends do, and a
failover shows as another node's name. With ``Cluster`` the answer would name a random pod's
node, and a crashed node's pod would stay in the EndpointSlices until the node lifecycle
controller marks the node NotReady (its grace period is 40 s by default): a third of the
requests would fail for that long whatever porterlb did, which measures kube-proxy, not
porterlb.
"""

from __future__ import annotations

from typing import Final

import lightkube

from porterlb import errors
from porterlb.api.keys import ServiceKey
from porterlb.lab import cluster, plan
from porterlb.lab.node import workloads

DEPLOYMENT: Final = "backend"


async def start(client: lightkube.AsyncClient, layout: plan.Lab) -> None:
    """Create the backend Deployment, one pod per node, and wait until every pod is ready.

    Raises InvalidSpec if the API refuses it, TransientError if the pods are not ready in time.
    """
    manifest = workloads.deployment(DEPLOYMENT, replicas=len(layout.nodes))
    await workloads.create(client, [manifest])
    await workloads.wait_ready(client, DEPLOYMENT)


async def create_service(
    client: lightkube.AsyncClient, layout: plan.Lab, name: str, *, family: cluster.Family = "ipv4"
) -> ServiceKey:
    """Create sample Service ``default/name`` in front of the backends.

    Raises InvalidSpec if the Service exists already, the lab lacks the family, or the API
    refuses it.
    """
    manifest = workloads.service(layout, name, backends=DEPLOYMENT, policy="Local")
    if family != "ipv4":
        raise errors.InvalidSpec(
            f"Service {cluster.NAMESPACE}/{name}: family {family}: the real-node lab is IPv4"
        )
    await workloads.create(client, [manifest])
    return ServiceKey(f"{cluster.NAMESPACE}/{name}")
