from __future__ import annotations

import collections

from hypothesis import given
from hypothesis import strategies as st

from porterlb.api.keys import NodeName
from porterlb.placement import choice

NODES = st.frozensets(st.sampled_from([NodeName(f"w{i}") for i in range(6)]))
IPS = st.ip_addresses(v=4).map(str)
LOADS = st.dictionaries(st.sampled_from([NodeName(f"w{i}") for i in range(6)]), st.integers(0, 9))


def test_no_eligible_node_means_no_announcement():
    assert choice.choose("198.18.0.1", NodeName("w1"), frozenset(), {}) is None


def test_current_node_stays_while_eligible_even_when_busiest():
    load = {NodeName("w1"): 50, NodeName("w2"): 0}
    assert (
        choice.choose("198.18.0.1", NodeName("w1"), {NodeName("w1"), NodeName("w2")}, load) == "w1"
    )


def test_current_node_that_left_is_replaced_by_the_least_loaded():
    load = {NodeName("w2"): 3, NodeName("w3"): 1}
    assert (
        choice.choose("198.18.0.1", NodeName("w1"), {NodeName("w2"), NodeName("w3")}, load) == "w3"
    )


def test_ties_spread_across_nodes():
    nodes = frozenset(NodeName(f"w{i}") for i in range(3))
    picks = collections.Counter(
        choice.choose(f"198.18.0.{host}", None, nodes, {}) for host in range(1, 255)
    )
    assert set(picks) == nodes
    assert min(picks.values()) > 40  # rendezvous hashing: roughly 85 each, never a pile-up


@given(IPS, NODES, LOADS, st.none() | st.sampled_from([NodeName(f"w{i}") for i in range(6)]))
def test_choice_is_eligible_sticky_and_order_independent(ip, eligible, load, current):
    chosen = choice.choose(ip, current, eligible, load)
    if not eligible:
        assert chosen is None
        return
    assert chosen in eligible
    if current in eligible:
        assert chosen == current
    else:
        assert load.get(chosen, 0) == min(load.get(node, 0) for node in eligible)
    assert choice.choose(ip, current, sorted(eligible, reverse=True), load) == chosen
