"""Workloads on a real-node lab: backends as a Deployment, a LoadBalancer Service in front.

The backends are pods of a Deployment on the pod network, and the Service's EndpointSlices
come from kube-controller-manager's EndpointSlice controller, as in any cluster. Each pod runs
``busybox httpd`` (the lab image, :mod:`porterlb.lab.node.images`) serving one file written at
start from the downward API: its node's name and a newline, so a client sees which node's pod
got the request; :data:`CLIENT_PATH` tells whom the pod saw asking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import lightkube
from lightkube.resources.apps_v1 import Deployment

from porterlb import errors
from porterlb.lab import cluster, credentials, plan
from porterlb.lab.node import images

Policy = Literal["Cluster", "Local"]

APP_LABEL: Final = "app.kubernetes.io/name"

CLIENT_PATH: Final = "/cgi-bin/client"
"""Answers with the address the request came from (CGI ``REMOTE_ADDR``): the client's own
with ``externalTrafficPolicy: Local``, a node's when kube-proxy masqueraded it."""

SERVE: Final = (
    'mkdir -p /tmp/www/cgi-bin && echo "$NODE_NAME" > /tmp/www/index.html'
    r""" && printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "$REMOTE_ADDR"\n'"""
    f" > /tmp/www{CLIENT_PATH} && chmod +x /tmp/www{CLIENT_PATH}"
    f" && exec /bin/busybox httpd -f -p {cluster.BACKEND_PORT} -h /tmp/www"
)
"""The container's shell command: write the page and the CGI script, then serve them in the
foreground."""

READY_TIMEOUT: Final = 120.0
"""Seconds for a Deployment's pods to be scheduled, started and ready: ~3 s each on an idle
machine (shared/reference measurements), much more on a loaded 2-core CI host."""

POLL: Final = 0.2
"""Seconds between two reads of a Deployment's status while waiting."""


def deployment(
    name: str,
    *,
    replicas: int,
    namespace: str = cluster.NAMESPACE,
    nodes: Sequence[str] = (),
) -> dict[str, Any]:
    """A Deployment of ``replicas`` backends spread one per node, on ``nodes`` only if given."""
    labels = {APP_LABEL: name}
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": labels},
            }
        ],
        "containers": [
            {
                "name": "httpd",
                "image": images.NAME,
                "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sh", "-c", SERVE],
                "env": [
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                ],
                "ports": [{"name": cluster.PORT_NAME, "containerPort": cluster.BACKEND_PORT}],
                "readinessProbe": {
                    "tcpSocket": {"port": cluster.BACKEND_PORT},
                    "periodSeconds": 1,
                },
            }
        ],
    }
    if nodes:
        term = {"key": "kubernetes.io/hostname", "operator": "In", "values": list(nodes)}
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [term]}]
                }
            }
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def service(
    lab: plan.Lab,
    name: str,
    *,
    backends: str,
    policy: Policy,
    namespace: str = cluster.NAMESPACE,
    port: int = cluster.SERVICE_PORT,
    family: cluster.Family = "ipv4",
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The lab's sample LoadBalancer Service (:func:`porterlb.lab.cluster.service`), selecting
    the pods of Deployment ``backends``, with ``externalTrafficPolicy`` ``policy``. Raises
    InvalidSpec if it asks for IPv6 in a lab without IPv6."""
    manifest = cluster.service(
        lab, name, namespace=namespace, port=port, family=family, annotations=annotations
    )
    manifest["spec"]["selector"] = {APP_LABEL: backends}
    manifest["spec"]["externalTrafficPolicy"] = policy
    return manifest


async def create(
    client: lightkube.AsyncClient,
    manifests: Sequence[dict[str, Any]],
    *,
    namespace: str = cluster.NAMESPACE,
) -> None:
    """Create ``namespace`` and apply ``manifests`` there. Raises InvalidSpec naming the object
    the API refuses."""
    await credentials.install(client, list(manifests), namespace=namespace)


async def wait_ready(
    client: lightkube.AsyncClient,
    name: str,
    *,
    namespace: str = cluster.NAMESPACE,
    within: float = READY_TIMEOUT,
) -> None:
    """Return once every replica of Deployment ``namespace/name`` is ready; TransientError
    naming the counts after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await client.get(Deployment, name, namespace=namespace)
        wanted = found.spec.replicas if found.spec and found.spec.replicas is not None else 1
        ready = (found.status.readyReplicas if found.status else None) or 0
        if ready == wanted:
            return
        if loop.time() >= deadline:
            raise errors.TransientError(
                f"Deployment {namespace}/{name}: {ready} of {wanted} replicas ready after "
                f"{within:.0f} s; see its pods' events"
            )
        await asyncio.sleep(POLL)
