"""What counts as a settled lab between two faults, and the API servers' write counts."""

import pytest
from lightkube.models.core_v1 import PodCondition, PodStatus
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from porterlb.lab import apiwrites, settle


def pod(name, *conditions, namespace="default"):
    status = PodStatus(conditions=[PodCondition(type=t, status=s) for t, s in conditions])
    return Pod(metadata=ObjectMeta(name=name, namespace=namespace), status=status)


def test_pods_without_a_true_ready_condition_are_named():
    pods = [
        pod("ready", ("PodScheduled", "True"), ("Ready", "True")),
        pod("starting", ("PodScheduled", "True"), ("Ready", "False")),
        pod("pending", ("PodScheduled", "True")),
        Pod(metadata=ObjectMeta(name="fresh", namespace="porterlb-system")),
    ]
    assert settle.unready(pods) == [
        "default/pending",
        "default/starting",
        "porterlb-system/fresh",
    ]


@pytest.mark.parametrize(
    ("before", "after", "busy"),
    [
        pytest.param(
            {"leases": 5.0, "events": 1.0, "endpointslices": 7.0},
            {"leases": 9.0, "events": 4.0, "endpointslices": 7.0},
            {},
            id="leases-and-events-are-background",
        ),
        pytest.param(
            {"endpointslices": 7.0},
            {"endpointslices": 19.0, "nodeplacements": 1.0},
            {"endpointslices": 12, "nodeplacements": 1},
            id="a-storm-and-a-placement",
        ),
    ],
)
def test_busy_names_the_resources_written_besides_the_background(before, after, busy):
    assert settle.busy(before, after) == busy


@pytest.mark.parametrize(
    ("before", "after", "writes"),
    [
        pytest.param(
            {"leases": 5.0, "services": 10.0},
            {"leases": 9.0, "services": 110.0, "events": 100.0},
            {"events": 100, "services": 100},
            id="leases-apart-by-resource",
        ),
        pytest.param({"services": 10.0}, {"services": 3.0}, None, id="counters-went-back"),
    ],
)
def test_a_runs_writes_are_the_difference_of_the_api_servers_counts(before, after, writes):
    assert apiwrites.difference(before, after) == writes
