"""A real-node lab's subnets stay out of the Service range, where kube-proxy rejects traffic."""

import itertools

import pytest

from porterlb import errors
from porterlb.lab import plan
from porterlb.lab.node import nodelab


def named(inside: bool) -> plan.Lab:
    """The first lab named ``lab-N`` whose LAN is (or is not) inside the Service range."""
    for n in itertools.count():
        layout = plan.build(f"lab-{n}", 2, ipv6=False)
        if layout.router_lan.ipv4.network.overlaps(nodelab.service_range()) is inside:
            return layout
    raise AssertionError("unreachable")


def test_a_lab_in_the_service_range_is_refused_naming_both():
    layout = named(inside=True)
    with pytest.raises(errors.InvalidSpec, match=f"{layout.router_lan.ipv4.network}.*198.19.128"):
        nodelab.check_addresses(layout)


def test_a_lab_below_the_service_range_is_accepted():
    nodelab.check_addresses(named(inside=False))


def test_only_the_last_quarter_of_the_address_indexes_is_refused():
    refused = set()
    for n in range(3000):
        layout = plan.build(f"lab-{n}", 2, ipv6=False)
        try:
            nodelab.check_addresses(layout)
        except errors.InvalidSpec:
            refused.add(layout.index)
    assert refused == set(range(192, 256))


def test_accepts_tells_the_names_apart_and_refuses_what_is_no_name():
    assert nodelab.accepts(named(inside=False).name)
    assert not nodelab.accepts(named(inside=True).name)
    with pytest.raises(errors.InvalidSpec, match="lab name"):
        nodelab.accepts("No_Name")
