"""The argv prefix every long-lived lab process enters its network namespace with, and the
lab's measuring streams that run behind it."""

import pytest

from porterlb.lab import forwarding, handover, netns, plan, sampler, traffic

LAB = plan.build("demo", 2, ipv6=True)
IP = "198.18.0.9"


@pytest.mark.parametrize(
    ("mount_of", "expected"),
    [
        pytest.param(None, ["nsenter", "--net=/run/netns/plb-demo-router", "--"], id="net"),
        pytest.param(
            42,
            ["nsenter", "--mount=/proc/42/ns/mnt", "--net=/run/netns/plb-demo-router", "--"],
            id="net-and-mount",
        ),
    ],
)
def test_the_prefix_enters_the_named_namespace_and_ends_nsenters_options(mount_of, expected):
    assert netns.nsenter_prefix("plb-demo-router", mount_of=mount_of) == expected


@pytest.mark.parametrize(
    ("stream", "where"),
    [
        pytest.param(lambda: sampler.Sampler(LAB, [IP]), LAB.router_netns, id="sampler"),
        pytest.param(lambda: forwarding.Forwarding(LAB, [IP]), LAB.router_netns, id="forwarding"),
        pytest.param(lambda: handover.Neighbours(LAB), LAB.router_netns, id="neighbours"),
        pytest.param(lambda: traffic.Traffic(LAB.client.netns, IP, 80), LAB.client.netns,
                     id="traffic"),
    ],
)  # fmt: skip
def test_each_measuring_stream_runs_in_its_namespace_behind_the_prefix(stream, where):
    prefix = netns.nsenter_prefix(where)
    assert stream().argv[: len(prefix)] == prefix
