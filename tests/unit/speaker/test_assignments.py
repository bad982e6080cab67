from __future__ import annotations

import ipaddress

import pytest

from porterlb.api import wellknown
from porterlb.api.keys import NodeName
from porterlb.speaker import assignments

W1 = NodeName("w1")


def service(*, node="w1", pool="lan", ingress=("198.18.2.200",), deleting=False):
    meta = {
        "namespace": "shop",
        "name": "web",
        "annotations": {wellknown.ANNOUNCED_BY: node} if node else {},
        "labels": {wellknown.POOL_LABEL: pool} if pool else {},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    status = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return {"metadata": meta, "spec": {"type": "LoadBalancer"}, "status": status}


def test_an_ip_assigned_to_this_node():
    assert assignments.read(service(), W1) == ((ipaddress.ip_address("198.18.2.200"), "lan"),)


def test_both_ips_of_a_dual_stack_service():
    found = assignments.read(service(ingress=("198.18.2.200", "2001:db8:1:1::200")), W1)
    assert [str(ip) for ip, _ in found] == ["198.18.2.200", "2001:db8:1:1::200"]


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(service(node="w2"), id="another-node"),
        pytest.param(service(node=None), id="unassigned"),
        pytest.param(service(pool=None), id="unclaimed"),
        pytest.param(service(ingress=()), id="no-ip-yet"),
        pytest.param(service(deleting=True), id="deleting"),
        pytest.param(service(ingress=("not-an-ip",)), id="garbage-ingress"),
        pytest.param({}, id="empty-object"),
    ],
)
def test_nothing_to_announce(obj):
    assert assignments.read(obj, W1) == ()
