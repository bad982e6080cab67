"""The processes of the release's containers on a real-node lab: what a fault SIGKILLs.

A container's processes carry no lab mark (runc gives them the pod spec's environment, not
the kubelet's), so they are found where the kubelet puts them: the cgroup
``<node's root>/kubepods/[<QoS class>/]pod<UID>/<container ID>`` (the ``cgroupfs`` driver),
the same path in every hierarchy; the pod's UID and its containers' IDs come from the API.
The pod's sandbox (pause) is not among the containers its status lists, so it is never hit:
the kubelet restarts a killed container in the same sandbox, as after any crash of its
process (``restartPolicy: Always``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from lightkube.resources.core_v1 import Pod

from porterlb.kube import client as kube_client
from porterlb.lab import netns
from porterlb.lab.node import kubelet, release

HIERARCHY: Final = "pids"
"""The hierarchy whose ``cgroup.procs`` is read (every hierarchy lists the same processes);
``pids`` is in every cgroup v1 host this lab runs on and holds nothing else."""


def kill(
    kubeconfig: Path,
    role: str,
    *,
    node: str | None = None,
    pod: str | None = None,
    cgroup_fs: Path = kubelet.CGROUP_FS,
) -> list[int]:
    """SIGKILL every process of the containers of the release's ``role`` pods (``speaker``,
    ``manager``), only those on ``node`` or only pod ``pod`` if given; return the pids.

    Raises LabError if no such pod has a running container process (nothing to kill is a
    mistake of the caller, not a fault injected).
    """
    found = asyncio.run(_pods(kubeconfig, role))
    chosen = [p for p in found if node in (None, _node(p)) and pod in (None, _name(p))]
    pids = [pid for p in chosen for pid in _pids(p, cgroup_fs)]
    if not pids:
        where = f" on {node}" if node else ""
        which = f" {pod}" if pod else ""
        raise netns.LabError(
            f"no running container process of {release.NAMESPACE} {role} pod{which}{where}"
            f" (pods: {', '.join(_name(p) for p in found) or 'none'})"
        )
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(pid, signal.SIGKILL)
    return pids


def cgroups(pod: Mapping[str, Any], cgroup_fs: Path = kubelet.CGROUP_FS) -> list[Path]:
    """The cgroups (in :data:`HIERARCHY`) of the containers of ``pod`` (a Pod as a dict)."""
    node = _node(pod)
    if node is None:
        return []
    root = cgroup_fs / HIERARCHY / kubelet.cgroup_root(node).lstrip("/") / "kubepods"
    uid = pod["metadata"]["uid"]
    found = []
    for status in pod.get("status", {}).get("containerStatuses") or []:
        container = (status.get("containerID") or "").partition("://")[2]
        if container:
            found += [*root.glob(f"pod{uid}/{container}"), *root.glob(f"*/pod{uid}/{container}")]
    return found


def _pids(pod: Mapping[str, Any], cgroup_fs: Path) -> list[int]:
    pids = []
    for cgroup in cgroups(pod, cgroup_fs):
        with contextlib.suppress(FileNotFoundError):
            pids += [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]
    return pids


def _node(pod: Mapping[str, Any]) -> str | None:
    node = pod.get("spec", {}).get("nodeName")
    return str(node) if node else None


def _name(pod: Mapping[str, Any]) -> str:
    return str(pod["metadata"]["name"])


async def _pods(kubeconfig: Path, role: str) -> list[dict[str, Any]]:
    async with kube_client.connect(kubeconfig) as client:
        found = client.list(
            Pod,
            namespace=release.NAMESPACE,
            labels={release.INSTANCE: release.RELEASE, release.COMPONENT: role},
        )
        return [pod.to_dict() async for pod in found]
