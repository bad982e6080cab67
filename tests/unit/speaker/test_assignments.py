from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from porterlb.api import service as svc
from porterlb.api import wellknown
from porterlb.api.keys import NodeName
from porterlb.speaker import assignments

W1 = NodeName("w1")


def service(*, node="w1", pool="lan", ingress=("198.18.2.200",), deleting=False, name="web"):
    """A Service as the speaker keeps it."""
    return assignments.kept(
        whole(node=node, pool=pool, ingress=ingress, deleting=deleting, name=name)
    )


def whole(*, node="w1", pool="lan", ingress=("198.18.2.200",), deleting=False, name="web"):
    """A Service object as the API sends it."""
    meta = {
        "namespace": "shop",
        "name": name,
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


def test_each_ip_of_a_dual_stack_service_with_its_own_pool():
    """``porterlb.io/pools`` names the pool of each IP; the label names only the first."""
    obj = whole(ingress=("2001:db8:1:1::200", "198.18.2.200"), pool="lan-v6")
    obj["metadata"]["annotations"][wellknown.POOLS] = "lan-v6,lan"
    found = assignments.read(assignments.kept(obj), W1)
    assert [(str(ip), pool) for ip, pool in found] == [
        ("2001:db8:1:1::200", "lan-v6"),
        ("198.18.2.200", "lan"),
    ]


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(service(node="w2"), id="another-node"),
        pytest.param(service(node=None), id="unassigned"),
        pytest.param(service(pool=None), id="unclaimed"),
        pytest.param(service(ingress=()), id="no-ip-yet"),
        pytest.param(service(deleting=True), id="deleting"),
        pytest.param(service(ingress=("not-an-ip",)), id="garbage-ingress"),
        pytest.param(assignments.kept({}), id="empty-object"),
    ],
)
def test_nothing_to_announce(obj):
    assert assignments.read(obj, W1) == ()


def shared(name, node, ip="198.18.2.200"):
    return service(node=node, ingress=(ip,), name=name)


def test_a_shared_ip_being_moved_is_contested_until_every_service_names_one_node():
    records = assignments.Records(W1)
    assert not records.update("shop/a", shared("a", "w2"))  # nothing of this node changed
    assert not records.update("shop/b", shared("b", "w2"))
    assert records.mine == {}
    assert records.update("shop/a", shared("a", "w1"))  # the manager moves the IP here
    ip = ipaddress.ip_address("198.18.2.200")
    assert records.mine == {"shop/a": ((ip, "lan"),)}
    assert records.contested(ip)
    assert records.update("shop/b", shared("b", "w1"))
    assert not records.contested(ip)
    assert records.update("shop/a", None)  # deleted
    assert records.mine == {"shop/b": ((ip, "lan"),)}


def test_an_ip_listed_twice_is_counted_and_forgotten_once():
    records = assignments.Records(W1)
    twice = service(node="w2", ingress=("198.18.2.200", "198.18.2.200"))
    records.update("shop/web", twice)
    assert records.contested(ipaddress.ip_address("198.18.2.200"))
    records.update("shop/web", None)
    assert not records.contested(ipaddress.ip_address("198.18.2.200"))


def test_another_service_on_another_node_contests_only_its_own_ip():
    records = assignments.Records(W1)
    records.update("shop/a", shared("a", "w1", "198.18.2.200"))
    assert not records.update("shop/b", shared("b", "w2", "198.18.2.201"))
    assert not records.contested(ipaddress.ip_address("198.18.2.200"))


changes = st.lists(
    st.tuples(
        st.sampled_from(["shop/a", "shop/b", "shop/c", "shop/d"]),
        st.one_of(
            st.none(),  # the Service is gone
            st.builds(
                lambda node, ips: service(node=node, ingress=tuple(sorted(ips))),
                st.sampled_from([None, "w1", "w2", "w3"]),
                st.sets(st.sampled_from(["198.18.2.200", "198.18.2.201", "2001:db8::200"])),
            ),
        ),
    ),
    max_size=40,
)


@hypothesis.given(changes)
def test_records_match_the_services_they_were_given(changes):
    records = assignments.Records(W1)
    objects: dict[str, dict[str, Any] | None] = {}
    for key, obj in changes:
        before = view(records)
        changed = records.update(key, obj)
        objects[key] = obj
        found = {k: assignments.record(o) for k, o in objects.items() if o is not None}
        mine = {k: f.assigned for k, f in found.items() if f is not None and f.node == W1}
        elsewhere = {
            ip for f in found.values() if f is not None and f.node != W1 for ip, _ in f.assigned
        }
        assert records.mine == mine
        assert all(records.contested(ip) == (ip in elsewhere) for ip in IPS)
        assert changed or view(records) == before


IPS = [ipaddress.ip_address(ip) for ip in ("198.18.2.200", "198.18.2.201", "2001:db8::200")]


def view(records):
    """What the speaker acts on: this node's records, and which of their IPs are contested."""
    here = {ip for pairs in records.mine.values() for ip, _ in pairs}
    return dict(records.mine), {ip for ip in here if records.contested(ip)}


full_services = st.builds(
    lambda node, pool, ips, deleting, extra: (
        {
            **whole(node=node, pool=pool, ingress=tuple(ips), deleting=deleting),
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "selector": extra},
        }
        | {"kind": "Service"}
    ),
    st.sampled_from([None, "", "w1", "w2"]),
    st.sampled_from([None, "", "lan", "wan"]),
    st.lists(st.sampled_from(["198.18.2.200", "2001:db8::200", "not-an-ip"]), max_size=3),
    st.booleans(),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


def record_of_whole(obj):
    """What a Service object assigns, read from all of it (what the speaker read before it
    kept only a few fields)."""
    service = svc.parse(obj)
    node = service.annotation(wellknown.ANNOUNCED_BY)
    pools = svc.recorded_pools(service)
    if not node or not pools or service.deleting:
        return None
    found = []
    for text, pool in zip(service.ingress, pools, strict=False):
        with contextlib.suppress(ValueError):
            found.append((ipaddress.ip_address(text), pool))
    return assignments.Record(NodeName(node), tuple(found)) if found else None


@hypothesis.given(full_services)
def test_what_the_speaker_keeps_of_a_service_assigns_what_the_whole_object_does(obj):
    obj["metadata"]["uid"] = "u-1"
    obj["metadata"]["managedFields"] = [{"manager": "porterlb"}]
    obj["metadata"]["annotations"]["other"] = "x"
    kept = assignments.kept(obj)
    assert assignments.record(kept) == record_of_whole(obj)
    whole_service = svc.parse(obj)
    assert (kept["namespace"], kept["name"], kept["uid"]) == (
        whole_service.namespace,
        whole_service.name,
        whole_service.uid,
    )
    assert kept["ingress"] == whole_service.ingress
