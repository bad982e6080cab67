"""``lab up --nodes real``: real kubelets and containerd in the workers' namespaces. Needs root.

One test, start to end, because the lab is the expensive part (two kubelets, two containerd,
the controller manager and the scheduler) and each step needs the one before: the Nodes
become Ready and lose the not-ready taint, a hostNetwork pod scheduled onto one of them sees
that worker's interfaces and no other's, and ``lab down`` leaves no process, namespace,
mount, cgroup or state behind, with the host's kernel tunables as they were throughout.

Skipped unless the node binaries are built (``porterlb lab build-control-plane --nodes``)
and Debian's containerd, runc and busybox-static are installed (``scripts/dev.sh test`` does
both).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.core_v1 import Node, Pod

from porterlb.kube import client as kube_client
from porterlb.lab import binaries, lab, netns, network, plan
from porterlb.lab import processes as procs
from porterlb.lab.node import images, mountns, nodelab
from tests.e2e import marks
from tests.waiting import eventually

pytestmark = [
    *marks.e2e(*nodelab.TOOLS, control_plane=True),
    pytest.mark.skipif(
        not all((binaries.bin_dir() / name).is_file() for name in nodelab.BINARIES)
        or not images.BUSYBOX.is_file(),
        reason="needs `porterlb lab build-control-plane --nodes` and busybox-static"
        " (scripts/dev.sh test installs both)",
    ),
]

POD_DEADLINE = 120.0
"""Seconds for a pod to be scheduled, started and to log: ~3 s on an idle machine."""

DONE = "interfaces listed"


def fresh_name() -> str:
    running = network.running()
    for n in range(1000):
        name = f"rn{os.getpid() % 10000}-{n}"
        if name not in running and not plan.clashes(name, running):
            return name
    raise AssertionError("no free lab name")


def host_network_pod(node: str) -> dict[str, Any]:
    script = f"ip -o -4 addr show; echo {DONE}; exec sleep 3600"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "interfaces", "namespace": "default"},
        "spec": {
            "hostNetwork": True,
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "ip",
                    "image": images.NAME,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/busybox", "sh", "-c", script],
                }
            ],
        },
    }


def pod_log(pod_logs: Path) -> str:
    """The container's log as the kubelet wrote it (the API server cannot reach the kubelet's
    port inside the worker's namespace, so ``kubectl logs`` is for later)."""
    return "".join(path.read_text() for path in pod_logs.glob("default_interfaces_*/ip/*.log"))


def leftovers(name: str) -> list[str]:
    found = [f"netns {ns}" for ns in netns.names() if plan.lab_of(ns) == name]
    found += [f"process {pid} ({role})" for pid, role in procs.members(name).items()]
    found += [f"cgroup {cgroup}" for cgroup in nodelab.cgroup_roots(name)]
    found += [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if name in line
    ]
    if (lab.STATE_ROOT / name).exists():
        found.append(f"state {lab.STATE_ROOT / name}")
    return found


async def test_two_real_nodes_run_a_host_network_pod_and_leave_nothing() -> None:
    host = mountns.host_values()
    name = fresh_name()
    try:
        record = nodelab.up(name, workers=2)
        assert mountns.host_values() == host
        first, second = record.plan.nodes
        async with kube_client.connect(record.kubeconfig) as client:
            nodes = [node async for node in client.list(Node)]
            assert {node.metadata.name for node in nodes if node.metadata} == {
                first.name,
                second.name,
            }
            taints = [t.key for node in nodes if node.spec for t in node.spec.taints or []]
            assert nodelab.NOT_READY_TAINT not in taints

            await client.create(codecs.from_dict(host_network_pod(first.name)))
            logs = record.directory / "nodes" / first.name / "kubelet" / "pod-logs"

            async def listed() -> str | None:
                text = pod_log(logs)
                return text if DONE in text else None

            output = await eventually(
                listed,
                within=POD_DEADLINE,
                what=f"the hostNetwork pod's output on {first.name}",
            )
            pod = await client.get(Pod, "interfaces", namespace="default")
            assert pod.spec is not None
            assert pod.spec.nodeName == first.name
        seen = {
            ipaddress.ip_interface(word).ip
            for line in output.splitlines()
            for word in line.split()
            if "/" in word and word[0].isdigit()
        }
        assert seen == {ipaddress.ip_address("127.0.0.1"), first.ipv4.ip}
        assert second.ipv4.ip not in seen
        assert mountns.host_values() == host
    finally:
        nodelab.down(name)
    assert leftovers(name) == []
    assert mountns.host_values() == host
