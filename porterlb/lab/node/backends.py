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

The pods run a dozen lines of asyncio (:data:`SERVER`, in the Deployment's command) with
porterlb's own image as the Python runtime, not the lab image's ``busybox httpd``: httpd
listens with a backlog of 9 (hard-coded), and the benches' 100 connections a second overflow
it whenever a loaded 2-core host holds the pod off the CPU for 90 ms; the kernel then drops
the SYN (``TcpExtListenOverflows`` counted them, one for each failed request) and the client
retries only after a second. The script listens with a backlog of 1024.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import lightkube
from lightkube.resources.apps_v1 import Deployment

from porterlb import errors
from porterlb.lab import cluster, plan
from porterlb.lab.node import release, workloads

DEPLOYMENT: Final = "backend"

SERVER: Final = f"""
import asyncio, os
body = (os.environ["NODE_NAME"] + "\\n").encode()
reply = b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body)
async def serve(reader, writer):
    try:
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(reply + body)
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(serve, port={cluster.BACKEND_PORT}, backlog=1024)
    await server.serve_forever()
asyncio.run(main())
"""
"""The backend: ``GET /`` (any request) answered with the node's name and a newline."""


async def start(client: lightkube.AsyncClient, layout: plan.Lab, *, release: bool = True) -> None:
    """Create the backend Deployment, one pod per node, and wait until every pod is ready.

    With `release` (porterlb's chart runs on the lab) the pods run :data:`SERVER` in
    porterlb's image; without, there is no such image on the nodes, and they run the lab
    image's ``busybox httpd`` (the same answer; its backlog is enough for a sample Service,
    not for the benches). Raises InvalidSpec if the API refuses it, TransientError if the pods
    are not ready in time.
    """
    manifest = workloads.deployment(DEPLOYMENT, replicas=len(layout.nodes))
    if release:
        (container,) = manifest["spec"]["template"]["spec"]["containers"]
        container["image"] = await _porterlb_image(client)
        container["command"] = ["python3", "-c", SERVER]
    await workloads.create(client, [manifest])
    await workloads.wait_ready(client, DEPLOYMENT)


def service(
    layout: plan.Lab,
    name: str,
    *,
    family: cluster.Family = "ipv4",
    port: int = cluster.SERVICE_PORT,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Sample Service ``default/name`` of ``family`` on ``port`` in front of the backends,
    with ``annotations`` besides the opt-in. Raises InvalidSpec for IPv6 in a lab without."""
    return workloads.service(
        layout, name, backends=DEPLOYMENT, policy="Local", family=family, port=port,
        annotations=annotations,
    )  # fmt: skip


async def _porterlb_image(client: lightkube.AsyncClient) -> str:
    """The image the release runs (imported into every node, never pulled)."""
    found = await client.get(Deployment, release.MANAGER, namespace=release.NAMESPACE)
    assert found.spec is not None and found.spec.template.spec is not None
    image = found.spec.template.spec.containers[0].image
    if not image:
        raise errors.InvalidSpec(f"Deployment {release.NAMESPACE}/{release.MANAGER}: no image")
    return image
