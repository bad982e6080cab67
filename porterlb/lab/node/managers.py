"""The chart's managers in a real-node lab: which pod leads, its metrics, killing it.

A manager is a pod on the pod network here, not a lab process: its metrics are read at its
pod IP (the chart's ``manager.metricsPort``) from the router's namespace, which routes to
every worker's pod CIDR, as a Prometheus on the LAN would. ``leader-kill`` SIGKILLs the
processes of the leading pod's container, as a crash or the OOM killer would; the kubelet
then starts the container again in the same pod (``restartPolicy: Always``), with the same
``POD_NAME`` identity, as in any cluster. The processes are found through the kubelet's
cgroups (cgroupfs driver: ``ROOT/kubepods/[QOS/]pod<uid>/<container id>``), which needs no
CRI client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Final

import httpx2
import lightkube
from lightkube.resources.core_v1 import Pod

from porterlb.lab import netns, plan
from porterlb.lab.node import kubelet, release

METRICS_PORT: Final = 50052
"""The chart's ``manager.metricsPort`` default (charts/porterlb/values.yaml); the lab installs
with the chart's defaults."""

METRICS_TIMEOUT: Final = 2.0
"""Seconds for one metrics request: milliseconds when the pod runs, seconds on a starved
2-core host."""

CONTROLLER: Final = "pids"
"""The cgroup v1 hierarchy searched for a container's processes: every task is in it."""


async def pod(client: lightkube.AsyncClient, name: str) -> Pod:
    """The release's pod ``name``. Raises lightkube's ApiError (404) when it is gone."""
    return await client.get(Pod, name, namespace=release.NAMESPACE)


def container_cgroups(
    node: str, container_id: str, cgroup_fs: Path = kubelet.CGROUP_FS
) -> list[Path]:
    """The cgroups of container ``container_id`` (without ``containerd://``) on ``node``."""
    root = cgroup_fs / CONTROLLER / kubelet.cgroup_root(node).lstrip("/")
    if not root.is_dir():
        return []
    return sorted(path for path in root.rglob(container_id) if path.is_dir())


def kill_container(node: str, container_id: str, cgroup_fs: Path = kubelet.CGROUP_FS) -> int:
    """SIGKILL every process of container ``container_id`` on ``node``; how many there were.

    Raises LabError when the container has no cgroup there (it is not running).
    """
    cgroups = container_cgroups(node, container_id, cgroup_fs)
    if not cgroups:
        raise netns.LabError(f"node {node}: no cgroup for container {container_id[:12]}")
    killed = 0
    for cgroup in cgroups:
        for line in (cgroup / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line), signal.SIGKILL)
                killed += 1
    return killed


async def kill(client: lightkube.AsyncClient, name: str) -> None:
    """SIGKILL the running container of the release's pod ``name`` (the kubelet restarts it).

    Raises LabError when the pod runs no container.
    """
    found = await pod(client, name)
    node = found.spec.nodeName if found.spec else None
    statuses = (found.status.containerStatuses if found.status else None) or []
    running = [s.containerID for s in statuses if s.containerID and s.state and s.state.running]
    if node is None or not running:
        raise netns.LabError(f"pod {release.NAMESPACE}/{name}: no running container to kill")
    for container in running:
        kill_container(node, container.partition("://")[2])


async def metrics(client: lightkube.AsyncClient, layout: plan.Lab, name: str) -> str:
    """What manager pod ``name`` serves on ``/metrics``. Raises httpx2.HTTPError when it does
    not answer, LabError when it has no IP yet."""
    found = await pod(client, name)
    ip = found.status.podIP if found.status else None
    if not ip:
        raise netns.LabError(f"pod {release.NAMESPACE}/{name}: no IP yet")

    def get() -> str:
        url = f"http://{ip}:{METRICS_PORT}/metrics"
        return httpx2.get(url, timeout=METRICS_TIMEOUT).text

    return await asyncio.to_thread(netns.call_in, layout.router_netns, get)
