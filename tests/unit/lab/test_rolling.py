"""The pure part of watching a ``helm upgrade`` roll: when each old pod stopped."""

import pytest

from porterlb.lab.node import rolling


def pod(name, *, terminating=False):
    return {"name": name, "terminating": terminating}


def test_a_stop_runs_from_the_first_list_showing_it_terminating_to_the_first_without_it():
    stops = rolling.Stops(since=10.0)
    old = {"a", "b"}
    stops.see(old, [pod("a"), pod("b")], 10.5)
    stops.see(old, [pod("a", terminating=True), pod("b"), pod("c")], 11.0)
    stops.see(old, [pod("a", terminating=True), pod("b"), pod("c")], 12.0)
    stops.see(old, [pod("b", terminating=True), pod("c")], 13.5)
    assert stops.gone == {"a": 13.5}
    stops.see(old, [pod("c"), pod("d")], 14.0)
    assert stops.gone == {"a": 13.5, "b": 14.0}
    assert sorted(stops.seconds()) == pytest.approx([0.5, 2.5])


def test_a_pod_gone_before_it_was_seen_terminating_stopped_since_the_upgrade():
    stops = rolling.Stops(since=10.0)
    stops.see({"a"}, [pod("new")], 10.75)
    assert stops.seconds() == pytest.approx([0.75])


def test_new_pods_are_never_counted():
    stops = rolling.Stops(since=0.0)
    stops.see({"a"}, [pod("a"), pod("new", terminating=True)], 1.0)
    assert stops.terminating == {}
    assert stops.gone == {}
