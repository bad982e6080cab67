"""porterlb installed in a real-node lab by its own chart: ``helm install``, ``helm upgrade``,
and what the release's pods are doing.

The lab runs the command a user runs (``helm install porterlb charts/porterlb -n
porterlb-system --create-namespace``, helm from ``porterlb lab build-tools``, the lab admin's
kubeconfig) with only the image set (:func:`values`): the one built from the Dockerfile and
imported into every node (:mod:`porterlb.lab.node.porterlb_image`), never pulled
(``pullPolicy=Never``). Pods reach the API as in any cluster, on the ``kubernetes``
Service's ClusterIP through each node's kube-proxy (:mod:`porterlb.lab.node.nodelab`).

Everything else is the chart's defaults, heartbeat and lease settings included: the lab
measures what users get. Each pod runs as its ServiceAccount, with the token the kubelet
mounts, under the chart's RBAC.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import httpx2
import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import DaemonSet, Deployment
from lightkube.resources.core_v1 import Node, Pod

from porterlb.kube import client as kube_client
from porterlb.lab import binaries, chart, netns
from porterlb.lab.node import porterlb_image

RELEASE: Final = chart.RELEASE
NAMESPACE: Final = chart.NAMESPACE

COMPONENT: Final = "app.kubernetes.io/component"
INSTANCE: Final = "app.kubernetes.io/instance"

MANAGER: Final = f"{RELEASE}-manager"
SPEAKER: Final = f"{RELEASE}-speaker"
"""The Deployment and the DaemonSet the chart names after the release (``porterlb.fullname``
is the release name when it holds the chart's)."""

READY_TIMEOUT: Final = 180.0
"""Seconds for every pod of the release to be Ready after ``helm install`` or ``upgrade``:
~15 s measured on an idle machine (the readiness probes start after 5 s and run every 5 s,
two managers and one speaker per node each import porterlb); minutes of margin for a
loaded 2-core CI host."""

POLL: Final = 0.5
"""Seconds between two reads of the workloads' status while waiting."""

Command = Literal["install", "upgrade"]


def values(image: porterlb_image.Image) -> dict[str, str]:
    """The ``--set`` values of the lab's release: its image, imported, never pulled."""
    return {
        "image.repository": image.repository,
        "image.tag": image.tag,
        "image.pullPolicy": "Never",
    }


def helm_argv(
    helm: Path, command: Command, kubeconfig: Path, settings: Mapping[str, str]
) -> list[str]:
    """The ``helm`` command that installs the release, or upgrades it keeping its values and
    changing ``settings``."""
    argv = [str(helm), command, RELEASE, str(chart.CHART)]
    argv += ["--namespace", NAMESPACE, "--kubeconfig", str(kubeconfig)]
    argv += ["--create-namespace"] if command == "install" else ["--reuse-values"]
    for name, value in settings.items():
        argv += ["--set", f"{name}={value}"]
    return argv


def helm(command: Command, kubeconfig: Path, settings: Mapping[str, str]) -> None:
    """Run ``helm install`` or ``helm upgrade``. Raises BinariesMissing without helm, LabError
    with helm's message if it fails."""
    argv = helm_argv(binaries.helm(), command, kubeconfig, settings)
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise netns.LabError(f"helm {command} {RELEASE}: {done.stderr.strip()}")


def wait_ready(kubeconfig: Path, workers: int, *, timeout: float = READY_TIMEOUT) -> None:
    """Return once the manager Deployment and the speaker DaemonSet (one pod per worker) are
    rolled out with every pod Ready, and the pods they replaced are gone. Raises LabError
    naming each pod that is not Ready, and why."""
    asyncio.run(_wait_ready(kubeconfig, workers, within=timeout))


def pods(kubeconfig: Path) -> list[dict[str, Any]]:
    """The release's pods as ``lab info`` shows them (:func:`describe_pod`), by name.

    Raises LabError when the API server does not answer.
    """
    return asyncio.run(_pods(kubeconfig))


def wait_speaker(
    kubeconfig: Path, node: str, *, since: str | None = None, timeout: float = READY_TIMEOUT
) -> None:
    """Return once ``node`` runs exactly one speaker pod, Ready and not being deleted (a
    deleted one is gone); with ``since`` (an API timestamp, ``2026-12-06T09:33:34Z``), once
    the Node is Ready too and the pod's containers all started at or after ``since`` (a
    status written before a crash still says Ready). Raises LabError naming the node's
    speaker pods after ``timeout``."""
    asyncio.run(_wait_speaker(kubeconfig, node, since=since, within=timeout))


def manager_replicas(kubeconfig: Path) -> int:
    """The manager Deployment's ``spec.replicas``. Raises LabError if there is none."""
    return asyncio.run(_manager_replicas(kubeconfig))


def scale_managers(kubeconfig: Path, replicas: int, *, timeout: float = READY_TIMEOUT) -> None:
    """Set the manager Deployment's replicas; with 0, return once no manager pod is left,
    else once the Deployment is rolled out with every pod Ready. Raises LabError after
    ``timeout``."""
    asyncio.run(_scale_managers(kubeconfig, replicas, within=timeout))


def delete_speaker_pod(kubeconfig: Path, node: str) -> str:
    """Delete the speaker pod on ``node`` (its DaemonSet makes another); return its name.

    Raises LabError if there is none.
    """
    return asyncio.run(_delete_speaker_pod(kubeconfig, node))


def describe_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """One pod (a Pod as a dict) in a line of ``lab info``: name, role, node, phase, Ready,
    restarts, the waiting reason of a container that does not run, and whether it is being
    deleted."""
    metadata, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
    containers = status.get("containerStatuses") or []
    waiting = [
        c["state"]["waiting"].get("reason", "")
        for c in containers
        if "waiting" in c.get("state", {})
    ]
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return {
        "name": metadata["name"],
        "role": metadata.get("labels", {}).get(COMPONENT),
        "node": spec.get("nodeName"),
        "phase": status.get("phase"),
        "ready": conditions.get("Ready") == "True",
        "restarts": sum(c.get("restartCount", 0) for c in containers),
        "waiting": ", ".join(filter(None, waiting)) or None,
        "terminating": metadata.get("deletionTimestamp") is not None,
        "started": _started(containers),
    }


def _started(containers: list[dict[str, Any]]) -> str | None:
    """When the last of ``containers`` (statuses) started running; None unless all run."""
    times = [c.get("state", {}).get("running", {}).get("startedAt") for c in containers]
    if not times or None in times:
        return None
    return max(str(time) for time in times)


def rolled_out(deployment: Mapping[str, Any], daemon_set: Mapping[str, Any], workers: int) -> bool:
    """Whether both workloads (as dicts) have seen their latest spec and run it Ready
    everywhere: ``replicas`` managers, one speaker on each of ``workers`` nodes."""

    def observed(workload: Mapping[str, Any]) -> bool:
        generation = workload["metadata"].get("generation")
        return bool(workload.get("status", {}).get("observedGeneration") == generation)

    replicas = deployment.get("spec", {}).get("replicas", 1)
    managers = deployment.get("status", {})
    speakers = daemon_set.get("status", {})
    return (
        observed(deployment)
        and observed(daemon_set)
        and managers.get("updatedReplicas") == replicas
        and managers.get("readyReplicas") == replicas
        and managers.get("replicas") == replicas
        and speakers.get("desiredNumberScheduled") == workers
        and speakers.get("updatedNumberScheduled") == workers
        and speakers.get("numberReady") == workers
        and speakers.get("numberAvailable") == workers
    )


async def _wait_ready(kubeconfig: Path, workers: int, *, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with kube_client.connect(kubeconfig) as client:
        while True:
            try:
                deployment = await client.get(Deployment, MANAGER, namespace=NAMESPACE)
                daemon_set = await client.get(DaemonSet, SPEAKER, namespace=NAMESPACE)
                if rolled_out(deployment.to_dict(), daemon_set.to_dict(), workers) and not any(
                    pod["terminating"] for pod in await _list(client)
                ):
                    return
            except ApiError as error:
                if error.status.code != 404:  # helm has not created it yet
                    raise
            if loop.time() >= deadline:
                found = await _list(client)
                detail = "; ".join(_line(pod) for pod in found) or "no pods"
                raise netns.LabError(
                    f"release {NAMESPACE}/{RELEASE}: not every pod Ready after {within:.0f} s:"
                    f" {detail}"
                )
            await asyncio.sleep(POLL)


async def _wait_speaker(kubeconfig: Path, node: str, *, since: str | None, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with kube_client.connect(kubeconfig) as client:
        while True:
            found = [p for p in await _list(client) if (p["role"], p["node"]) == ("speaker", node)]
            fresh = since is None or (
                await _node_ready(client, node)
                and all((p["started"] or "") >= since for p in found)
            )
            if len(found) == 1 and found[0]["ready"] and not found[0]["terminating"] and fresh:
                return
            if loop.time() >= deadline:
                detail = "; ".join(_line(pod) for pod in found) or "none"
                after = f" started since {since} on a Ready node" if since else ""
                raise netns.LabError(
                    f"node {node}: no single Ready speaker pod{after} after {within:.0f} s:"
                    f" {detail}"
                )
            await asyncio.sleep(POLL)


async def _node_ready(client: lightkube.AsyncClient, name: str) -> bool:
    node = await client.get(Node, name)
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


async def _manager_replicas(kubeconfig: Path) -> int:
    async with kube_client.connect(kubeconfig) as client:
        try:
            deployment = await client.get(Deployment, MANAGER, namespace=NAMESPACE)
        except ApiError as error:
            raise netns.LabError(f"Deployment {NAMESPACE}/{MANAGER}: {error}") from error
    return deployment.spec.replicas if deployment.spec and deployment.spec.replicas else 1


async def _scale_managers(kubeconfig: Path, replicas: int, *, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    patch = {"spec": {"replicas": replicas}}
    async with kube_client.connect(kubeconfig) as client:
        await client.patch(Deployment, MANAGER, patch, namespace=NAMESPACE)
        while True:
            deployment = (await client.get(Deployment, MANAGER, namespace=NAMESPACE)).to_dict()
            found = [p for p in await _list(client) if p["role"] == "manager"]
            if (not found) if replicas == 0 else _deployed(deployment, found):
                return
            if loop.time() >= deadline:
                detail = "; ".join(_line(pod) for pod in found) or "no pods"
                raise netns.LabError(
                    f"Deployment {NAMESPACE}/{MANAGER} not at {replicas} Ready replicas after"
                    f" {within:.0f} s: {detail}"
                )
            await asyncio.sleep(POLL)


def _deployed(deployment: Mapping[str, Any], pods: list[dict[str, Any]]) -> bool:
    """Whether the Deployment (as a dict) runs its replicas, each Ready, none terminating."""
    replicas = deployment.get("spec", {}).get("replicas", 1)
    status = deployment.get("status", {})
    observed = status.get("observedGeneration") == deployment["metadata"].get("generation")
    return (
        observed
        and status.get("readyReplicas") == replicas
        and len(pods) == replicas
        and all(p["ready"] and not p["terminating"] for p in pods)
    )


async def _pods(kubeconfig: Path) -> list[dict[str, Any]]:
    try:
        async with kube_client.connect(kubeconfig) as client:
            return await _list(client)
    except (ApiError, httpx2.HTTPError) as error:
        raise netns.LabError(f"cannot list the pods of {NAMESPACE}/{RELEASE}: {error}") from error


async def _list(client: lightkube.AsyncClient) -> list[dict[str, Any]]:
    found = client.list(Pod, namespace=NAMESPACE, labels={INSTANCE: RELEASE})
    described = [describe_pod(pod.to_dict()) async for pod in found]
    return sorted(described, key=lambda pod: str(pod["name"]))


async def _delete_speaker_pod(kubeconfig: Path, node: str) -> str:
    async with kube_client.connect(kubeconfig) as client:
        for pod in await _list(client):
            if pod["role"] == "speaker" and pod["node"] == node and not pod["terminating"]:
                await client.delete(Pod, pod["name"], namespace=NAMESPACE)
                return str(pod["name"])
    raise netns.LabError(
        f"no speaker pod on node {node} in {NAMESPACE}: is porterlb installed by the chart"
        " (lab up --nodes real --porterlb chart)?"
    )


def _line(pod: Mapping[str, Any]) -> str:
    state = "Ready" if pod["ready"] else str(pod["phase"])
    if pod["terminating"]:
        state += ", terminating"
    if pod["waiting"]:
        state += f" ({pod['waiting']})"
    return f"{pod['name']} on {pod['node'] or 'no node'}: {state}"
