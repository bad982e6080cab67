"""A kubelet for one lab node: its configuration, its kubeconfig and its cgroup root.

What each setting is for (all measured on this machine kind, kubelet v1.36.3):

- ``failCgroupV1: false``: kubelet 1.36 refuses a cgroup v1 host unless told this (the
  documented opt-out; the hosts this lab runs on are cgroup v1).
- ``cgroupDriver: cgroupfs`` (there is no systemd), ``failSwapOn: false``.
- ``cgroupRoot``: one per node (``/porterlb-NODE``), created beforehand in every
  hierarchy. Kubelets that share the default root each clean up the others' pods.
- ``--cert-dir``: one per node. It defaults to ``/var/lib/kubelet/pki`` whatever
  ``--root-dir`` says, so every kubelet would otherwise serve the same certificate.
- ``podLogsDir``, ``volumePluginDir``: under the node's directory, not the host's.
- Image garbage collection and disk eviction off: the node's root directory is on ``/run``
  (a tmpfs shared with the host), whose usage says nothing about this node.
- The API server is reached on the router's LAN address (:mod:`porterlb.lab.apiproxy`), so
  the kubeconfig names the server certificate's own name in ``tls-server-name``.
- Authentication: the lab admin's token, as every lab process has; the lab's API server runs
  RBAC only (no Node authorizer), so node credentials would buy nothing here yet.
- Its own API (logs, exec: what ``kubectl logs`` asks the API server for) takes client
  certificates of the lab's CA (``authentication.x509.clientCAFile``), which is what
  kube-apiserver presents (``porterlb.lab.controlplane``, ``kubelet_egress``); anonymous
  requests are refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from pathlib import Path
from typing import Any, Final

import yaml

from porterlb.lab import netns

CGROUP_FS: Final = Path("/sys/fs/cgroup")

TLS_SERVER_NAME: Final = "localhost"
"""A name the lab's API serving certificate covers (``porterlb.lab.certs``)."""

REMOVE_TIMEOUT: Final = 10.0
"""Seconds for SIGKILLed processes to leave their cgroups so they can be removed: they are
gone within milliseconds unless a process is stuck in the kernel (D state)."""


CGROUP_PREFIX: Final = "porterlb-"


def cgroup_root(node: str) -> str:
    """The cgroup path of ``node``'s pods, the same in every hierarchy (a lab's node names
    start with the lab's name, so no two labs share one)."""
    return f"/{CGROUP_PREFIX}{node}"


def hierarchies(cgroup_fs: Path = CGROUP_FS) -> list[Path]:
    """Every mounted cgroup hierarchy (v1 controllers, the named ``systemd`` and ``unified``)."""
    return sorted(path for path in cgroup_fs.iterdir() if path.is_dir() and not path.is_symlink())


def create_cgroup_root(root: str, cgroup_fs: Path = CGROUP_FS) -> None:
    """Create ``root`` in every hierarchy; cpuset gets its parent's CPUs and memory nodes, which
    a new cpuset cgroup lacks (no task could join it otherwise)."""
    for hierarchy in hierarchies(cgroup_fs):
        path = hierarchy / root.lstrip("/")
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


CPU_SHARES: Final = 10240
"""``cpu.shares`` of each node's cgroup root (the default is 1024): the weight of a task at
``nice -10`` (9548, ``sched_prio_to_weight``), rounded up. The lab runs porterlb's own
processes at that niceness (:data:`porterlb.lab.lab.NICE`) because a lab packs a cluster's
nodes onto a few shared cores, where a speaker starved for 300 ms misses three heartbeats;
pods cannot be niced, so their node's cgroup gets the same weight against the machine's
other tasks, as a real node's own cores would give it."""


def weigh_cgroup_root(root: str, cgroup_fs: Path = CGROUP_FS) -> None:
    """Give ``root`` :data:`CPU_SHARES` in the ``cpu`` hierarchy (created by
    :func:`create_cgroup_root`)."""
    (cgroup_fs / "cpu" / root.lstrip("/") / "cpu.shares").write_text(f"{CPU_SHARES}\n")


def kill_cgroup_root(root: str, cgroup_fs: Path = CGROUP_FS) -> None:
    """SIGKILL every process in ``root``'s cgroups, in every hierarchy, until none is left (a
    process forked meanwhile is caught by the next pass); the cgroups stay. What a node's
    power loss does to its pods' processes.

    Raises LabError naming the cgroup root whose processes outlive the deadline.
    """
    trees = [hierarchy / root.lstrip("/") for hierarchy in hierarchies(cgroup_fs)]

    def emptied() -> bool:
        found = [pid for tree in trees for cgroup in _walk(tree) for pid in _pids(cgroup)]
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not found

    netns.wait_until(emptied, timeout=REMOVE_TIMEOUT, what=f"the processes of cgroup {root}")


def remove_cgroup_root(root: str, cgroup_fs: Path = CGROUP_FS) -> None:
    """Kill every process left in ``root`` (pods' containers outlive their shims) in every
    hierarchy, then remove its cgroups, deepest first; no-op where it is absent.

    Raises LabError naming a cgroup that cannot be removed.
    """
    kill_cgroup_root(root, cgroup_fs)
    trees = [hierarchy / root.lstrip("/") for hierarchy in hierarchies(cgroup_fs)]
    remaining = [tree for tree in trees if tree.is_dir()]

    def emptied() -> bool:
        for tree in remaining:
            for cgroup in sorted(_walk(tree), key=lambda path: len(path.parts), reverse=True):
                with contextlib.suppress(FileNotFoundError, OSError):
                    cgroup.rmdir()
        remaining[:] = [tree for tree in remaining if tree.is_dir()]
        return not remaining

    try:
        netns.wait_until(emptied, timeout=REMOVE_TIMEOUT, what=f"cgroup {root}")
    except netns.LabError as error:
        raise netns.LabError(f"cannot remove cgroups {', '.join(map(str, remaining))}") from error


def _walk(tree: Path) -> list[Path]:
    if not tree.is_dir():
        return []
    return [tree, *(path for path in tree.rglob("*") if path.is_dir())]


def _pids(cgroup: Path) -> list[int]:
    try:
        return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]
    except (FileNotFoundError, OSError):
        return []


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """What one kubelet needs to know: who it is, where its files go, whom it talks to."""

    name: str
    ip: str
    """``--node-ip``: the worker's LAN address, both of them (comma-separated, IPv4 first) in
    a dual-stack lab, which the Node then lists as InternalIPs and pods as ``status.hostIPs``."""
    directory: Path
    cgroup_root: str
    runtime_socket: Path
    server: str
    token: str
    ca: Path

    @property
    def config(self) -> Path:
        return self.directory / "kubelet.yaml"

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.directory / "pod-logs"


def write(node: Node) -> None:
    """Write ``node``'s kubelet configuration and kubeconfig."""
    for sub in ("root", "certs", "pod-logs", "volume-plugins"):
        (node.directory / sub).mkdir(parents=True, exist_ok=True)
    node.config.write_text(yaml.safe_dump(configuration(node)))
    config = kubeconfig(server=node.server, ca=node.ca, token=node.token, user="kubelet")
    node.kubeconfig.write_text(yaml.safe_dump(config))
    node.kubeconfig.chmod(0o600)


def configuration(node: Node) -> dict[str, Any]:
    """The ``KubeletConfiguration`` of ``node`` (see the module docstring for each setting)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_root,
        "containerRuntimeEndpoint": f"unix://{node.runtime_socket}",
        "podLogsDir": str(node.pod_logs),
        "volumePluginDir": str(node.directory / "volume-plugins"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(node.ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi"},
        "resolvConf": "/etc/resolv.conf",
    }


def kubeconfig(*, server: str, ca: Path, token: str, user: str) -> dict[str, Any]:
    """A kubeconfig that reaches the lab's API server at ``server`` from a worker's namespace
    as ``user``, authenticated by ``token`` (the kubelet's, kube-proxy's)."""
    cluster = {"server": server, "certificate-authority": str(ca)}
    cluster["tls-server-name"] = TLS_SERVER_NAME
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}],
        "current-context": "lab",
    }


def argv(binary: Path, node: Node) -> list[str]:
    """The command that runs ``node``'s kubelet."""
    return [
        str(binary),
        f"--config={node.config}",
        f"--kubeconfig={node.kubeconfig}",
        f"--root-dir={node.directory / 'root'}",
        f"--cert-dir={node.directory / 'certs'}",
        f"--hostname-override={node.name}",
        f"--node-ip={node.ip}",
    ]
