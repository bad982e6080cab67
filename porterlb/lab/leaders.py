"""The managers' leader in either lab: who holds the Lease, its metrics, its death and return.

On the process lab a manager is the lab process ``manager/N`` (Lease identity
``manager-N``); killing it leaves it dead until the repair starts it again. On real nodes
it is a pod of the chart's Deployment (Lease identity: the pod's name,
:mod:`porterlb.lab.node.managers`); the kubelet starts a killed container again by itself
and the repair only waits until the release is whole. A live leader is one that renewed the
Lease after a moment: the restarted container of a killed leader keeps its pod's name, and
may lead again under it.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal

import httpx2
import lightkube
from lightkube.resources.coordination_v1 import Lease

from porterlb.kube import election
from porterlb.lab import credentials, lab
from porterlb.lab.node import managers, release


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
    it runs nothing to kill."""
    if record.release:
        await managers.kill(client, leader)
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


async def metrics(client: lightkube.AsyncClient, record: lab.Record, leader: str) -> str:
    """What manager ``leader`` serves on ``/metrics``. Raises httpx2.HTTPError when it does
    not answer, LabError when its pod has no IP yet."""
    if record.release:
        return await managers.metrics(client, record.plan, leader)
    return await asyncio.to_thread(lab.scrape, record, leader)
