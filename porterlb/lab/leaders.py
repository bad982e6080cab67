"""The managers' leader in either lab: who holds the Lease, its metrics, its death and return.

On the process lab a manager is the lab process ``manager/N`` (Lease identity
``manager-N``); killing it leaves it dead until the repair starts it again. On real nodes
it is a pod of the chart's Deployment (Lease identity: the pod's name): killing it SIGKILLs
its container's processes (:func:`porterlb.lab.node.containers.kill`), as a crash or the OOM
killer would; the kubelet starts the container again by itself, in the same pod, and the
repair only waits until the release is whole. A live leader is one that renewed the Lease
after a moment: the restarted container of a killed leader keeps its pod's name, and may lead
again under it. Its metrics are read at its pod IP from the router's namespace, which routes
to every worker's pod CIDR, as a Prometheus on the LAN would.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
from typing import Final

import httpx2
import lightkube
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from porterlb.kube import election
from porterlb.lab import credentials, lab, netns
from porterlb.lab.node import containers, release

METRICS_PORT: Final = 50052
"""The chart's ``manager.metricsPort`` default (charts/porterlb/values.yaml); the lab installs
with the chart's defaults."""

METRICS_TIMEOUT: Final = 2.0
"""Seconds for one metrics request: milliseconds when the pod runs, seconds on a starved
2-core host."""


async def _lease(client: lightkube.AsyncClient) -> Lease | None:
    try:
        return await client.get(Lease, election.LEASE_NAME, namespace=credentials.NAMESPACE)
    except (lightkube.ApiError, httpx2.HTTPError):
        return None


async def holder(client: lightkube.AsyncClient, record: lab.Record) -> str:
    """The leading manager (``manager/N``, or its pod's name on real nodes); "" when none
    leads or the API is away."""
    lease = await _lease(client)
    found = (lease.spec.holderIdentity if lease and lease.spec else None) or ""
    if record.release or not found:
        return found
    return found.replace("manager-", "manager/", 1)


async def renewed_since(client: lightkube.AsyncClient, moment: datetime.datetime) -> bool:
    """Whether some manager holds the Lease and renewed it after ``moment`` (UTC)."""
    lease = await _lease(client)
    spec = lease.spec if lease else None
    if spec is None or not spec.holderIdentity or spec.renewTime is None:
        return False
    renewed: datetime.datetime = spec.renewTime
    return renewed > moment


async def kill(client: lightkube.AsyncClient, record: lab.Record, leader: str) -> None:
    """SIGKILL manager ``leader``: its process, or its pod's container. Raises LabError when
    it runs nothing to kill, KeyError for a role the process lab lacks."""
    if record.release:
        await asyncio.to_thread(containers.kill, record.kubeconfig, "manager", pod=leader)
    else:
        os.kill(record.process(leader).pid, signal.SIGKILL)


async def restore(record: lab.Record, leader: str) -> lab.Record:
    """After :func:`kill`: start manager ``leader`` again on the process lab; on real nodes,
    wait until the kubelet has and every pod of the release is Ready. The updated record.
    Raises LabError when it does not come back."""
    if not record.release:
        return lab.restart(record, leader)
    await asyncio.to_thread(release.wait_ready, record.kubeconfig, len(record.plan.nodes))
    return record


async def node_of(client: lightkube.AsyncClient, record: lab.Record, leader: str) -> str:
    """The node manager ``leader``'s pod runs on; "" on the process lab, or when it is gone."""
    if not record.release or not leader:
        return ""
    try:
        pod = await client.get(Pod, leader, namespace=release.NAMESPACE)
    except (lightkube.ApiError, httpx2.HTTPError):
        return ""
    return (pod.spec.nodeName if pod.spec else None) or ""


async def metrics(client: lightkube.AsyncClient, record: lab.Record, leader: str) -> str:
    """What manager ``leader`` serves on ``/metrics``. Raises httpx2.HTTPError when it does
    not answer, LabError when its pod has no IP yet."""
    if not record.release:
        return await asyncio.to_thread(lab.scrape, record, leader)
    pod = await client.get(Pod, leader, namespace=release.NAMESPACE)
    ip = pod.status.podIP if pod.status else None
    if not ip:
        raise netns.LabError(f"pod {release.NAMESPACE}/{leader}: no IP yet")

    def get() -> str:
        url = f"http://{ip}:{METRICS_PORT}/metrics"
        return httpx2.get(url, timeout=METRICS_TIMEOUT).text

    return await asyncio.to_thread(netns.call_in, record.plan.router_netns, get)
