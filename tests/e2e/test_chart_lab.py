"""porterlb installed on real nodes by its own chart, then operated as a cluster operator would.

One lab for the module (``lab up --nodes real --porterlb chart``): two kubelets, the image
built from the Dockerfile and imported into each node's containerd, ``helm install`` of
``charts/porterlb``. What is judged is what a cluster and a LAN show: the pods the real
scheduler placed and the kubelets run, each as its ServiceAccount under the chart's RBAC; the
router namespace's view of who answers ARP for a Service's IP; and what ``helm upgrade`` and a
deleted speaker pod do to both. The lab's removal is checked too: no process, namespace,
mount, cgroup or state (the containerd roots holding the image are in the state) survives it.

Skipped unless the node binaries, helm, buildah and debootstrap are there
(``scripts/dev.sh test`` installs them all).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from lightkube.resources.core_v1 import Pod

from porterlb.lab import faults, leaders
from porterlb.lab.node import nodelab, release
from tests.e2e import reallab
from tests.e2e.conftest import SpeakerLab, real_lab_fixtures
from tests.waiting import eventually

pytestmark = reallab.CHART_MARKS

ROLLOUT = release.READY_TIMEOUT
"""Seconds for a rolling update of the speakers or a replaced pod to be Ready."""

WORKERS = 2


chart_record, chart_lab = real_lab_fixtures(
    "chart", lambda name: nodelab.up(name, workers=WORKERS, porterlb="chart")
)


async def release_pods(chart_lab: SpeakerLab, role: str) -> list[Pod]:
    found = chart_lab.api.list(
        Pod,
        namespace=release.NAMESPACE,
        labels={release.INSTANCE: release.RELEASE, release.COMPONENT: role},
    )
    return [pod async for pod in found]


def uid(pod: Pod) -> str:
    assert pod.metadata is not None and pod.metadata.uid
    return pod.metadata.uid


async def test_the_chart_runs_managers_and_a_speaker_per_node_as_its_service_accounts(
    chart_lab: SpeakerLab,
) -> None:
    workers = {str(node.name): str(node.ipv4.ip) for node in chart_lab.plan.nodes}
    speakers = await release_pods(chart_lab, "speaker")
    managers = await release_pods(chart_lab, "manager")
    assert sorted(str(pod.spec.nodeName) for pod in speakers if pod.spec) == sorted(workers)
    assert len(managers) == 2
    for pod in (*speakers, *managers):
        assert pod.spec is not None and pod.status is not None
        assert pod.spec.nodeName in workers
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        assert conditions.get("PodScheduled") == "True"
        assert conditions.get("Ready") == "True", pod.status
        role = "speaker" if pod in speakers else "manager"
        assert pod.spec.serviceAccountName == f"{release.RELEASE}-{role}"
    for pod in speakers:  # host network: its node's own address, answering on its eth0
        assert pod.spec is not None and pod.status is not None
        assert pod.spec.hostNetwork
        assert pod.status.podIP == workers[str(pod.spec.nodeName)]
    # A manager is Ready once its caches are synced, which can come before either replica has
    # won the election on a loaded machine: wait for a holder, then judge who it is.
    holder = await eventually(
        lambda: leaders.holder(chart_lab.api, chart_lab.record), what="a manager holding the Lease"
    )
    assert holder in {pod.metadata.name for pod in managers if pod.metadata}


async def test_lab_info_lists_the_releases_pods(chart_lab: SpeakerLab) -> None:
    argv = [sys.executable, "-m", "porterlb", "lab", "info", "--name", chart_lab.plan.name]
    done = await asyncio.to_thread(
        subprocess.run, [*argv, "--json"], capture_output=True, text=True, check=True
    )
    described = json.loads(done.stdout)
    assert described["release"] == release.RELEASE
    pods = {(pod["role"], pod["node"]) for pod in described["pods"] if pod["ready"]}
    assert {("speaker", node.name) for node in chart_lab.plan.nodes} <= pods
    assert sum(1 for pod in described["pods"] if pod["role"] == "manager") == 2


async def test_a_service_gets_an_ip_that_its_nodes_speaker_pod_answers_for(
    chart_lab: SpeakerLab,
) -> None:
    async with chart_lab.service("web", "ipv4") as ip:
        node = await eventually(
            lambda: reallab.answered_by_its_node(chart_lab, "web", ip),
            what=f"exactly the recorded node to answer for {ip}",
        )
        assert node in {n.name for n in chart_lab.plan.nodes}


async def test_a_helm_upgrade_rolls_every_speaker_and_one_node_answers_after(
    chart_lab: SpeakerLab,
) -> None:
    admin = chart_lab.record.kubeconfig
    async with chart_lab.service("rolled", "ipv4") as ip:
        await eventually(
            lambda: reallab.answered_by_its_node(chart_lab, "rolled", ip), what=f"{ip} answered"
        )
        before = {uid(pod) for pod in await release_pods(chart_lab, "speaker")}
        await asyncio.to_thread(release.helm, "upgrade", admin, {"speaker.netAdmin": "true"})
        await asyncio.to_thread(release.wait_ready, admin, WORKERS, timeout=ROLLOUT)
        after = await release_pods(chart_lab, "speaker")
        assert len(after) == WORKERS
        assert not before & {uid(pod) for pod in after}, "a speaker pod was not replaced"
        for pod in after:
            assert pod.spec is not None
            (container,) = pod.spec.containers
            assert container.securityContext is not None
            assert container.securityContext.capabilities is not None
            assert "NET_ADMIN" in (container.securityContext.capabilities.add or [])
        await eventually(
            lambda: reallab.answered_by_its_node(chart_lab, "rolled", ip),
            what=f"exactly one node, the recorded one, to answer for {ip} after the rollout",
        )


async def test_a_deleted_speaker_pod_comes_back_and_the_ip_is_answered_again(
    chart_lab: SpeakerLab,
) -> None:
    record = chart_lab.record
    async with chart_lab.service("deleted", "ipv4") as ip:
        node = await eventually(
            lambda: reallab.answered_by_its_node(chart_lab, "deleted", ip), what=f"{ip} answered"
        )
        (old,) = [
            pod
            for pod in await release_pods(chart_lab, "speaker")
            if pod.spec and pod.spec.nodeName == node
        ]
        await asyncio.to_thread(faults.apply_recorded, record, "speaker-pod-delete", node)
        await asyncio.to_thread(faults.heal_recorded, record, "speaker-pod-delete", node)
        (new,) = [
            pod
            for pod in await release_pods(chart_lab, "speaker")
            if pod.spec and pod.spec.nodeName == node
        ]
        assert uid(new) != uid(old)
        assert faults.applied(record) == []
        await eventually(
            lambda: reallab.answered_by_its_node(chart_lab, "deleted", ip),
            what=f"exactly one node, the recorded one, to answer for {ip} again",
        )
