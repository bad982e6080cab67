from __future__ import annotations

import pytest

from porterlb.api import node as node_api
from porterlb.api import wellknown
from porterlb.api.keys import NodeName
from porterlb.placement import eligibility


def node(name="w1", *, ready="True", labels=None, deleting=False):
    meta = {"name": name, "labels": labels or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return node_api.parse({"metadata": meta, "status": {"conditions": conditions}})


@pytest.mark.parametrize(
    ("parsed", "reason"),
    [
        (node(), None),
        (node(ready="False"), "not Ready"),
        (node(ready="Unknown"), "not Ready"),
        (node(ready=None), "not Ready"),
        (node(labels={wellknown.EXCLUDE_FROM_LB: ""}), f"labelled {wellknown.EXCLUDE_FROM_LB}"),
        (node(deleting=True), "being deleted"),
    ],
)
def test_why_not(parsed, reason):
    assert eligibility.why_not(parsed) == reason


def test_eligible_names_only_the_eligible():
    nodes = [node("w1"), node("w2", ready="False"), node("w3")]
    assert eligibility.eligible(nodes) == {"w1", "w3"}


def test_explain_names_every_ineligible_node():
    nodes = [node("w2", ready="False"), node("w1", labels={wellknown.EXCLUDE_FROM_LB: "true"})]
    assert eligibility.explain(nodes) == (
        f"w1: labelled {wellknown.EXCLUDE_FROM_LB}; w2: not Ready"
    )


def test_explain_an_empty_cluster():
    assert eligibility.explain([]) == "the cluster has no Node"


def test_parse_reads_a_bare_node():
    assert node_api.parse({"metadata": {"name": "w9"}}) == node_api.Node(
        name=NodeName("w9"), ready=False, excluded=False, deleting=False
    )
