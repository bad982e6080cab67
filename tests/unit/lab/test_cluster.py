"""The lab's Kubernetes objects as built, before any API server sees them."""

import datetime

import pytest

from porterlb import errors
from porterlb.api import wellknown
from porterlb.lab import cluster, plan

DUAL = plan.build("demo", 2, ipv6=True)
V4ONLY = plan.build("demo", 2, ipv6=False)


def test_eips_of_a_dual_stack_lab_cover_the_planned_pools():
    v4, v6 = cluster.eips(DUAL)
    assert v4["metadata"]["name"] == "lab-demo"
    assert v4["spec"] == {
        "address": "198.18.64.200-198.18.64.250",
        "protocol": "layer2",
        "interface": "eth0",
    }
    assert v4["metadata"]["annotations"] == {wellknown.DEFAULT_POOL: "true"}
    assert v6["metadata"]["name"] == "lab-demo-v6"
    assert v6["spec"]["address"] == "2001:db8:20:1::200-2001:db8:20:1::fff"
    assert v6["metadata"]["annotations"] == {wellknown.DEFAULT_POOL: "true"}, "one per family"


def test_an_ipv4_lab_has_one_eip():
    assert [pool["metadata"]["name"] for pool in cluster.eips(V4ONLY)] == ["lab-demo"]


def test_node_status_is_ready_with_both_internal_ips():
    worker = DUAL.nodes[0]
    now = datetime.datetime(2026, 11, 27, 20, 0, 1, tzinfo=datetime.UTC)
    status = cluster.node_status(worker, now)["status"]
    assert status["addresses"] == [
        {"type": "InternalIP", "address": "198.18.64.11"},
        {"type": "InternalIP", "address": "2001:db8:20:1::11"},
        {"type": "Hostname", "address": "demo-w1"},
    ]
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"]) == ("Ready", "True")
    assert ready["lastTransitionTime"] == "2026-11-27T20:00:01Z"
    assert cluster.node(DUAL, worker)["metadata"]["name"] == "demo-w1"


@pytest.mark.parametrize(
    ("family", "families", "policy", "pool"),
    [
        pytest.param("ipv4", ["IPv4"], "SingleStack", None, id="ipv4"),
        pytest.param("ipv6", ["IPv6"], "SingleStack", "lab-demo-v6", id="ipv6"),
        pytest.param("dual", ["IPv4", "IPv6"], "RequireDualStack", None, id="dual"),
    ],
)
def test_service_asks_for_its_family(family, families, policy, pool):
    manifest = cluster.service(DUAL, "web", family=family, port=8000)
    annotations = manifest["metadata"]["annotations"]
    assert annotations[wellknown.LB_OPT_IN] == "openelb"
    assert annotations.get(wellknown.POOL[0]) == pool
    assert manifest["spec"]["type"] == "LoadBalancer"
    assert manifest["spec"]["ipFamilies"] == families
    assert manifest["spec"]["ipFamilyPolicy"] == policy
    assert manifest["spec"]["ports"][0]["port"] == 8000


def test_extra_annotations_are_kept():
    manifest = cluster.service(DUAL, "web", annotations={wellknown.SHARING_KEY: "k"})
    assert manifest["metadata"]["annotations"][wellknown.SHARING_KEY] == "k"


@pytest.mark.parametrize("family", ["ipv6", "dual"])
def test_ipv6_in_an_ipv4_lab_is_refused(family):
    with pytest.raises(errors.InvalidSpec, match="--ipv6"):
        cluster.service(V4ONLY, "web", family=family)
    with pytest.raises(errors.InvalidSpec, match="--ipv6"):
        cluster.endpoint_slices(V4ONLY, "web", family=family)


def test_endpoint_slices_list_every_worker_with_its_node():
    v4, v6 = cluster.endpoint_slices(DUAL, "web", family="dual", owner_uid="u-1")
    assert [(v4["addressType"], v6["addressType"])] == [("IPv4", "IPv6")]
    assert [(e["nodeName"], e["addresses"]) for e in v6["endpoints"]] == [
        ("demo-w1", ["2001:db8:20:1::11"]),
        ("demo-w2", ["2001:db8:20:1::12"]),
    ]
    assert v4["metadata"]["labels"][wellknown.SERVICE_NAME_LABEL] == "web"
    assert v4["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert v4["metadata"]["name"] != v6["metadata"]["name"]
