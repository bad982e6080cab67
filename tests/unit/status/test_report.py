"""porterlb status: what it says about pools, Services and nodes, from API objects."""

from __future__ import annotations

import datetime
import json

import pytest

from porterlb.api import reasons, wellknown
from porterlb.status import report

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def at(seconds_ago: int) -> str:
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def eip(name="lan", address="198.18.0.0/24", usage=1, size=256, ready="True"):
    return {
        "metadata": {"name": name},
        "spec": {"address": address, "protocol": "layer2", "interface": "eth0"},
        "status": {
            "usage": usage,
            "poolSize": size,
            "conditions": [
                {"type": "Ready", "status": ready, "reason": "PoolReady", "message": "ok"}
            ],
        },
    }


def service(name="web", ip="198.18.0.1", node="w1", pool="lan", opted_in=True):
    annotations = {wellknown.LB_OPT_IN: "openelb"} if opted_in else {}
    if node:
        annotations[wellknown.ANNOUNCED_BY] = node
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "annotations": annotations,
            "labels": {wellknown.POOL_LABEL: pool} if pool else {},
        },
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": ip}] if ip else []}},
    }


def event(reason, message, seconds_ago, name="web", kind="Service", type_="Normal"):
    return {
        "involvedObject": {"kind": kind, "namespace": "shop", "name": name},
        "reason": reason,
        "message": message,
        "type": type_,
        "lastTimestamp": at(seconds_ago),
    }


def node(name, ready="True", labels=None):
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "status": {"conditions": [{"type": "Ready", "status": ready}]},
    }


FAILOVER = (
    "Service shop/web: 198.18.0.1 moved from node w2 to node w1: w2: its speaker stopped"
    " answering heartbeats (found 312 ms after its last answer); recorded 12 ms after that"
    " was found"
)


def build(eips=(), services=(), events=(), nodes=(), macs=None):
    return report.build(
        eips=list(eips),
        services=list(services),
        events=list(events),
        nodes=list(nodes),
        macs=macs or {},
        now=NOW,
    )


def test_nothing_to_show_says_so():
    built = build()
    assert built == {"pools": [], "services": [], "nodes": []}
    text = "\n".join(report.lines(built, now=NOW))
    assert "No Eip (address pool) exists" in text
    assert "No Service uses porterlb." in text
    assert "Every node may announce" in text


def test_a_pool_shows_used_of_total_and_its_condition():
    built = build(eips=[eip(usage=3, size=256)])
    [pool] = built["pools"]
    assert (pool["name"], pool["used"], pool["total"], pool["ready"]) == ("lan", 3, 256, True)
    assert pool["conditions"][0]["reason"] == reasons.POOL_READY
    assert any("3/256" in line and "PoolReady" in line for line in report.lines(built, now=NOW))


def test_a_service_shows_ip_pool_node_mac_since_and_last_failover():
    built = build(
        services=[service()],
        events=[
            event(reasons.IP_ALLOCATED, "Service shop/web: allocated 198.18.0.1", 600),
            event(
                reasons.NODE_ASSIGNED, "Service shop/web: 198.18.0.1 is announced from node w2", 590
            ),
            event(reasons.FAILOVER, FAILOVER, 120),
        ],
        macs={"w1": "02:00:00:00:00:01"},
    )
    [row] = built["services"]
    assert row == {
        "service": "shop/web",
        "ips": ["198.18.0.1"],
        "pool": "lan",
        "node": "w1",
        "mac": "02:00:00:00:00:01",
        "since": at(120),
        "lastFailover": {
            "at": at(120),
            "from": "w2",
            "to": "w1",
            "why": "its speaker stopped answering heartbeats (found 312 ms after its last answer)",
            "detectedAfterSeconds": 0.312,
            "recordedAfterSeconds": 0.012,
        },
        "problem": None,
    }
    text = "\n".join(report.lines(built, now=NOW))
    assert "w2 -> w1" in text and "0.324 s (312 ms to detect + 12 ms to record)" in text
    assert "(2m ago)" in text


def test_since_is_the_event_that_put_the_current_node_there():
    built = build(
        services=[service(node="w2")],
        events=[
            event(
                reasons.NODE_ASSIGNED, "Service shop/web: 198.18.0.1 is announced from node w2", 300
            ),
            event(
                reasons.NODE_ASSIGNED, "Service shop/web: 198.18.0.1 is announced from node w1", 200
            ),
        ],
    )
    # The annotation says w2; the later Event about w1 is not what put w2 there.
    assert built["services"][0]["since"] == at(300)


@pytest.mark.parametrize(
    ("obj", "shown"),
    [
        pytest.param(service(), True, id="opted-in"),
        pytest.param(service(opted_in=False, node=None), True, id="claimed-under-another-class"),
        pytest.param(service(opted_in=False, node=None, pool=None), False, id="not-ours"),
    ],
)
def test_only_porterlb_services_are_listed(obj, shown):
    assert bool(build(services=[obj])["services"]) is shown


def test_unknown_mac_and_pending_ip_show_dashes():
    built = build(services=[service(ip=None, node=None)])
    [row] = built["services"]
    assert (row["ips"], row["node"], row["mac"], row["since"]) == ([], None, None, None)
    line = next(line for line in report.lines(built, now=NOW) if "shop/web" in line)
    assert "<pending>" in line and " - " in line


def test_a_warning_as_latest_event_is_the_services_problem():
    message = "Service shop/web: 198.18.0.1 is not announced: w1: not Ready; w2: not Ready"
    built = build(
        services=[service(node=None)],
        events=[event(reasons.NO_ELIGIBLE_NODE, message, 30, type_="Warning")],
    )
    assert built["services"][0]["problem"] == {
        "reason": reasons.NO_ELIGIBLE_NODE,
        "message": message,
    }


def test_nodes_not_ready_excluded_or_recently_reported_silent():
    silent = (
        "Service shop/api: 198.18.0.2 is not announced: w3: its speaker never answered heartbeats;"
        " w4: lacks the interface of pool lan; w5: labels do not match pool lan's nodeSelector"
    )
    built = build(
        nodes=[
            node("w1"),
            node("w2", ready="Unknown"),
            node("w6", labels={wellknown.EXCLUDE_FROM_LB: ""}),
        ],
        events=[
            event(reasons.NO_ELIGIBLE_NODE, silent, 60, name="api", type_="Warning"),
            event(reasons.FAILOVER, FAILOVER.replace("w2", "w7"), 3600),  # too old to count
        ],
    )
    assert [(n["node"], n["why"]) for n in built["nodes"]] == [
        ("w2", "not Ready"),
        ("w3", "its speaker never answered heartbeats"),
        ("w4", "lacks the interface of pool lan"),
        ("w6", f"labelled {wellknown.EXCLUDE_FROM_LB}"),
    ]
    assert built["nodes"][1]["source"] == f"{reasons.NO_ELIGIBLE_NODE} on shop/api"


def test_the_json_report_round_trips_with_stable_keys():
    built = build(eips=[eip()], services=[service()], events=[event(reasons.FAILOVER, FAILOVER, 5)])
    assert json.loads(json.dumps(built)) == built
    assert set(built) == {"pools", "services", "nodes"}
    assert set(built["services"][0]) == {
        "service",
        "ips",
        "pool",
        "node",
        "mac",
        "since",
        "lastFailover",
        "problem",
    }
    assert set(built["pools"][0]) == {
        "name",
        "address",
        "interface",
        "disabled",
        "used",
        "total",
        "ready",
        "conditions",
    }


def test_a_node_given_an_ip_after_it_was_reported_is_no_longer_listed():
    never = (
        "Service shop/web: 198.18.0.1 is not announced: w1: its speaker never answered heartbeats"
    )
    built = build(
        events=[
            event(reasons.NO_ELIGIBLE_NODE, never, 60, type_="Warning"),
            event(
                reasons.NODE_ASSIGNED, "Service shop/web: 198.18.0.1 is announced from node w1", 50
            ),
        ],
    )
    assert built["nodes"] == []


def test_events_of_one_second_are_ordered_by_when_they_were_written():
    assigned = event(
        reasons.NODE_ASSIGNED, "Service shop/web: 198.18.0.1 is announced from node w2", 5
    )
    moved = event(reasons.FAILOVER, FAILOVER, 5)
    assigned["metadata"], moved["metadata"] = {"resourceVersion": "99"}, {"resourceVersion": "100"}
    built = build(services=[service()], events=[moved, assigned])
    assert [n["node"] for n in built["nodes"]] == ["w2"]
    assert built["services"][0]["lastFailover"]["from"] == "w2"


def test_since_falls_back_to_when_porterlb_wrote_the_annotation():
    obj = service()
    obj["metadata"]["managedFields"] = [
        {
            "manager": wellknown.FIELD_MANAGER,
            "time": at(7200),
            "fieldsV1": {"f:metadata": {"f:annotations": {f"f:{wellknown.ANNOUNCED_BY}": {}}}},
        },
        {"manager": "kubectl", "time": at(10), "fieldsV1": {"f:spec": {}}},
    ]
    assert build(services=[obj])["services"][0]["since"] == at(7200)
