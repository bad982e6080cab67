"""The lab's Helm release of porterlb: its values, its helm commands, how its pods read."""

from pathlib import Path

import pytest

from porterlb.lab import chart
from porterlb.lab.node import porterlb_image, release

IMAGE = porterlb_image.Image("localhost/porterlb", "0.1.0-abc", Path("/cache/x.oci.tar"))
ADMIN = Path("/run/porterlb/labs/demo/control-plane/kubeconfig")


def test_the_lab_sets_only_its_image_never_pulled():
    assert release.values(IMAGE) == {
        "image.repository": "localhost/porterlb",
        "image.tag": "0.1.0-abc",
        "image.pullPolicy": "Never",
    }


def test_install_creates_the_namespace_and_upgrade_keeps_the_values():
    install = release.helm_argv(Path("/h"), "install", ADMIN, {"a": "1"})
    assert install == [
        "/h", "install", "porterlb", str(chart.CHART), "--namespace", "porterlb-system",
        "--kubeconfig", str(ADMIN), "--create-namespace", "--set", "a=1",
    ]  # fmt: skip
    upgrade = release.helm_argv(Path("/h"), "upgrade", ADMIN, {"logLevel": "debug"})
    assert upgrade[1] == "upgrade"
    assert "--reuse-values" in upgrade
    assert "--create-namespace" not in upgrade
    assert upgrade[-2:] == ["--set", "logLevel=debug"]


def pod(**status):
    return {
        "metadata": {"name": "porterlb-speaker-x", "labels": {release.COMPONENT: "speaker"}},
        "spec": {"nodeName": "demo-w1"},
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "ready", "waiting", "restarts", "started"),
    [
        ({"phase": "Pending"}, False, None, 0, None),
        (
            {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"restartCount": 2, "state": {"running": {"startedAt": "2026-12-06T09:42:34Z"}}}
                ],
            },
            True,
            None,
            2,
            "2026-12-06T09:42:34Z",
        ),
        (
            {
                "phase": "Pending",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"restartCount": 0, "state": {"waiting": {"reason": "ErrImageNeverPull"}}}
                ],
            },
            False,
            "ErrImageNeverPull",
            0,
            None,
        ),
    ],
    ids=["unscheduled", "ready", "image-missing"],
)
def test_a_pod_reads_as_its_role_node_readiness_and_why_it_waits(
    status, ready, waiting, restarts, started
):
    assert release.describe_pod(pod(**status)) == {
        "name": "porterlb-speaker-x",
        "role": "speaker",
        "node": "demo-w1",
        "phase": status["phase"],
        "ready": ready,
        "restarts": restarts,
        "waiting": waiting,
        "terminating": False,
        "started": started,
    }


def test_a_pod_started_when_its_last_container_did_and_not_before_all_run():
    running = {"state": {"running": {"startedAt": "2026-12-06T09:42:34Z"}}}
    later = {"state": {"running": {"startedAt": "2026-12-06T09:42:40Z"}}}
    waiting = {"state": {"waiting": {"reason": "ContainerCreating"}}}
    assert release.describe_pod(pod(containerStatuses=[later, running]))["started"] == (
        "2026-12-06T09:42:40Z"
    )
    assert release.describe_pod(pod(containerStatuses=[running, waiting]))["started"] is None


def test_a_deleted_pod_reads_as_terminating():
    deleted = pod(phase="Running")
    deleted["metadata"]["deletionTimestamp"] = "2026-12-06T07:09:07Z"
    assert release.describe_pod(deleted)["terminating"] is True


def workloads(*, generation=2, observed=2, ready=2, updated=2, speakers_ready=2):
    deployment = {
        "metadata": {"generation": generation},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": observed,
            "replicas": 2,
            "updatedReplicas": updated,
            "readyReplicas": ready,
        },
    }
    daemon_set = {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "desiredNumberScheduled": 2,
            "updatedNumberScheduled": updated,
            "numberReady": speakers_ready,
            "numberAvailable": speakers_ready,
        },
    }
    return deployment, daemon_set


@pytest.mark.parametrize(
    ("changes", "done"),
    [
        ({}, True),
        ({"observed": 1}, False),
        ({"ready": 1}, False),
        ({"updated": 1}, False),
        ({"speakers_ready": 1}, False),
    ],
    ids=["rolled-out", "spec-not-seen", "manager-not-ready", "old-pods-left", "speaker-missing"],
)
def test_a_release_is_rolled_out_once_every_latest_pod_is_ready(changes, done):
    deployment, daemon_set = workloads(**changes)
    assert release.rolled_out(deployment, daemon_set, 2) is done


def test_a_speaker_short_of_the_workers_is_not_rolled_out():
    deployment, daemon_set = workloads()
    assert release.rolled_out(deployment, daemon_set, 3) is False
