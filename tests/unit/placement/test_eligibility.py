from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.api import node as node_api
from porterlb.api import selector, wellknown
from porterlb.api.keys import NodeName, PoolName, ServiceKey
from porterlb.placement import eligibility


def node(name="w1", *, ready="True", labels=None, deleting=False):
    meta = {"name": name, "labels": labels or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return node_api.parse({"metadata": meta, "status": {"conditions": conditions}})


LAN = PoolName("lan")
RACK_A = eligibility.PoolRule(
    pool=LAN, selector=selector.parse({"matchLabels": {"rack": "a"}}, field="s")
)
BROKEN = eligibility.PoolRule(pool=LAN, invalid=True)
WEB = ServiceKey("shop/web")


def local(*nodes, service=WEB):
    return eligibility.Need(service=service, local=True, ready_nodes=frozenset(nodes))


@pytest.mark.parametrize(
    ("parsed", "pools", "needs", "reason"),
    [
        pytest.param(node(), (), (), None, id="fit"),
        pytest.param(node(ready="False"), (), (), "not Ready", id="not-ready"),
        pytest.param(node(ready="Unknown"), (), (), "not Ready", id="ready-unknown"),
        pytest.param(node(ready=None), (), (), "not Ready", id="no-ready-condition"),
        pytest.param(
            node(labels={wellknown.EXCLUDE_FROM_LB: ""}),
            (),
            (),
            f"labelled {wellknown.EXCLUDE_FROM_LB}",
            id="excluded",
        ),
        pytest.param(node(deleting=True), (), (), "being deleted", id="deleting"),
        pytest.param(node(labels={"rack": "a"}), (RACK_A,), (), None, id="selector-matches"),
        pytest.param(
            node(labels={"rack": "b"}),
            (RACK_A,),
            (),
            "labels do not match pool lan's nodeSelector",
            id="selector-does-not-match",
        ),
        pytest.param(
            node(labels={"rack": "a"}),
            (BROKEN,),
            (),
            "pool lan's nodeSelector is invalid",
            id="selector-invalid",
        ),
        pytest.param(node("w1"), (), (local("w1"),), None, id="local-endpoint-here"),
        pytest.param(
            node("w1"), (), (local("w2"),), "no ready endpoint of shop/web", id="local-elsewhere"
        ),
        pytest.param(
            node("w1"),
            (),
            (eligibility.Need(service=WEB, local=False, ready_nodes=frozenset({NodeName("w2")})),),
            None,
            id="cluster-policy-ignores-endpoints",
        ),
        pytest.param(
            node("w1"),
            (),
            (local("w1"), local("w2", service=ServiceKey("shop/api"))),
            "no ready endpoint of shop/api",
            id="every-sharing-service-counts",
        ),
        pytest.param(
            node("w1", ready="False", labels={"rack": "b"}),
            (RACK_A,),
            (local("w2"),),
            "not Ready",
            id="node-facts-first",
        ),
        pytest.param(
            node("w1", labels={"rack": "b"}),
            (RACK_A,),
            (local("w2"),),
            "labels do not match pool lan's nodeSelector",
            id="selector-before-endpoints",
        ),
    ],
)
def test_why_not(parsed, pools, needs, reason):
    assert eligibility.why_not(node=parsed, pools=pools, needs=needs) == reason


def test_eligible_names_only_the_eligible():
    nodes = [node("w1"), node("w2", ready="False"), node("w3")]
    assert eligibility.eligible(nodes) == {"w1", "w3"}


def test_eligible_for_a_shared_ip_is_the_intersection():
    nodes = [node(f"w{i}", labels={"rack": "a"}) for i in range(1, 5)]
    needs = [
        local("w1", "w2", "w3"),
        local("w2", "w3", "w4", service=ServiceKey("shop/api")),
        eligibility.Need(service=ServiceKey("shop/db"), local=False),
    ]
    assert eligibility.eligible(nodes, pools=[RACK_A], needs=needs) == {"w2", "w3"}


def test_explain_names_every_ineligible_node():
    nodes = [
        node("w2", ready="False"),
        node("w1", labels={wellknown.EXCLUDE_FROM_LB: "true"}),
        node("w3", labels={"rack": "a"}),
        node("w4", labels={"rack": "b"}),
    ]
    assert eligibility.explain(nodes, pools=[RACK_A], needs=[local("w4")]) == (
        f"w1: labelled {wellknown.EXCLUDE_FROM_LB}; w2: not Ready;"
        " w3: no ready endpoint of shop/web; w4: labels do not match pool lan's nodeSelector"
    )


def test_explain_an_empty_cluster():
    assert eligibility.explain([]) == "the cluster has no Node"


def test_parse_reads_a_bare_node():
    assert node_api.parse({"metadata": {"name": "w9"}}) == node_api.Node(
        name=NodeName("w9"), ready=False, excluded=False, deleting=False
    )


def test_parse_keeps_the_labels():
    assert node("w1", labels={"rack": "a"}).labels == {"rack": "a"}


NAMES = [NodeName(f"w{i}") for i in range(5)]
NODES = st.lists(
    st.builds(
        node,
        st.sampled_from(NAMES),
        ready=st.sampled_from(["True", "False", None]),
        labels=st.dictionaries(st.sampled_from(["rack", wellknown.EXCLUDE_FROM_LB]), st.just("a")),
        deleting=st.booleans(),
    ),
    unique_by=lambda n: n.name,
)
POOLS = st.lists(  # one rule per pool, as the manager keeps them
    st.sampled_from(
        [
            RACK_A,
            eligibility.PoolRule(pool=PoolName("old"), invalid=True),
            eligibility.PoolRule(pool=PoolName("dmz")),
        ]
    ),
    unique_by=lambda rule: rule.pool,
)
NEEDS = st.lists(  # one need per Service
    st.builds(
        eligibility.Need,
        service=st.sampled_from([ServiceKey("a/x"), ServiceKey("a/y"), ServiceKey("a/z")]),
        local=st.booleans(),
        ready_nodes=st.frozensets(st.sampled_from(NAMES)),
    ),
    unique_by=lambda need: need.service,
)


@given(NODES, POOLS, NEEDS, st.randoms())
def test_eligibility_ignores_input_order(nodes, pools, needs, random):
    eligible = eligibility.eligible(nodes, pools=pools, needs=needs)
    why = eligibility.explain(nodes, pools=pools, needs=needs)
    for items in (nodes, pools, needs):
        random.shuffle(items)
    assert eligibility.eligible(nodes, pools=pools, needs=needs) == eligible
    assert eligibility.explain(nodes, pools=pools, needs=needs) == why


@given(NODES, POOLS, NEEDS, st.integers(0, 3))
def test_more_services_on_an_ip_never_widen_its_eligible_nodes(nodes, pools, needs, cut):
    """The intersection: a Service sharing the IP can only take nodes away."""
    fewer = eligibility.eligible(nodes, pools=pools, needs=needs[:cut])
    assert eligibility.eligible(nodes, pools=pools, needs=needs) <= fewer


@given(NODES, POOLS, NEEDS)
def test_explain_names_exactly_the_ineligible_nodes(nodes, pools, needs):
    eligible = eligibility.eligible(nodes, pools=pools, needs=needs)
    why = eligibility.explain(nodes, pools=pools, needs=needs)
    named = {part.split(":")[0] for part in why.split("; ")} if nodes and why else set()
    assert named == {n.name for n in nodes} - eligible


@pytest.mark.parametrize(
    ("silent", "reason"),
    [
        pytest.param({}, None, id="answering"),
        pytest.param(
            {NodeName("w1"): 0.3125},
            "its speaker stopped answering heartbeats (found 312 ms after its last answer)",
            id="stopped",
        ),
        pytest.param({NodeName("w1"): None}, "its speaker never answered heartbeats", id="never"),
        pytest.param({NodeName("w2"): None}, None, id="another-node"),
    ],
)
def test_a_silent_speaker_makes_its_node_ineligible(silent, reason):
    assert eligibility.why_not(node=node(), silent=silent) == reason
    assert (NodeName("w1") in eligibility.eligible([node()], silent=silent)) is (reason is None)


def test_node_facts_come_before_silence():
    silent = {NodeName("w1"): None}
    assert eligibility.why_not(node=node(ready="False"), silent=silent) == "not Ready"


def test_a_node_lacking_the_pools_interface_is_ineligible_for_its_ips_only():
    lacking = {NodeName("w1"): frozenset({"lan"})}
    rule = eligibility.PoolRule(pool=LAN)
    other = eligibility.PoolRule(pool=PoolName("dmz"))
    assert eligibility.why_not(node=node(), pools=(rule,), lacking=lacking) == (
        "lacks the interface of pool lan"
    )
    assert eligibility.why_not(node=node(), pools=(other,), lacking=lacking) is None
    assert eligibility.eligible([node(), node("w2")], pools=(rule,), lacking=lacking) == {"w2"}


def test_a_draining_speaker_makes_its_node_ineligible_and_says_why():
    draining = {NodeName("w1")}
    reason = "its speaker is draining (shutting down, handing its IPs over)"
    assert eligibility.why_not(node=node(), draining=draining) == reason
    assert eligibility.eligible([node(), node("w2")], draining=draining) == {"w2"}
    assert eligibility.explain([node()], draining=draining) == f"w1: {reason}"
    silent = {NodeName("w1"): None}  # silence is the stronger news: the process is gone
    assert eligibility.why_not(node=node(), silent=silent, draining=draining) == (
        "its speaker never answered heartbeats"
    )
