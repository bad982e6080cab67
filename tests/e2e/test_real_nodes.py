"""``lab up --nodes real``: real kubelets and containerd in the workers' namespaces. Needs root.

One test, start to end, because the lab is the expensive part (two kubelets, two containerd,
the controller manager and the scheduler) and each step needs the one before: the Nodes
become Ready and lose the not-ready taint, a hostNetwork pod scheduled onto one of them sees
that worker's interfaces and no other's (its log read through the API server, which reaches
the kubelet through the lab's egress proxy), and ``lab down`` leaves no process, namespace,
mount, cgroup or state behind, with the host's kernel tunables as they were throughout.

Skipped unless the node binaries are built (``porterlb lab build-control-plane --nodes``)
and Debian's containerd, runc and busybox-static are installed (``scripts/dev.sh test`` does
both).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from lightkube import codecs
from lightkube.resources.core_v1 import Node, Pod

from porterlb.kube import client as kube_client
from porterlb.lab.node import images, mountns, nodelab
from tests.e2e import marks, reallab
from tests.e2e.conftest import fresh_name
from tests.waiting import eventually

pytestmark = [
    *marks.e2e(*nodelab.TOOLS, control_plane=True),
    pytest.mark.skipif(not reallab.READY, reason=reallab.SKIP_REASON),
]

POD_DEADLINE = 120.0
"""Seconds for a pod to be scheduled, started and to log: ~3 s on an idle machine."""

DONE = "interfaces listed"


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


async def test_two_real_nodes_run_a_host_network_pod_and_leave_nothing() -> None:
    host = mountns.host_values()
    name = fresh_name()
    try:
        # up runs its own event loop for its API calls, so not on this one.
        record = await asyncio.to_thread(nodelab.up, name, workers=2)
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
            output = await eventually(
                lambda: reallab.pod_log(client, "interfaces", done=DONE),
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
    assert reallab.leftovers(name) == []
    assert mountns.host_values() == host
