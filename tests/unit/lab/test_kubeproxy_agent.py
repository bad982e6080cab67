"""The stand-in's command-line parsing and its log phrases."""

import ipaddress

import pytest

from porterlb import errors
from porterlb.lab import kubeproxy, kubeproxy_agent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("demo-w1=plb-demo-w1", ("demo-w1", "plb-demo-w1"), id="plain"),
        pytest.param("a=b=c", ("a", "b=c"), id="first-equals-splits"),
    ],
)
def test_parse_node(text, expected):
    assert kubeproxy_agent.parse_node(text) == expected


@pytest.mark.parametrize("text", ["demo-w1", "=plb-demo-w1", "demo-w1=", ""])
def test_parse_node_refuses(text):
    with pytest.raises(errors.InvalidSpec, match="NODE_NAME=NETNS"):
        kubeproxy_agent.parse_node(text)


def test_describe_brackets_ipv6():
    forward = kubeproxy.Forward(
        lb_ip=ipaddress.ip_address("2001:db8::200"),
        port=80,
        protocol="TCP",
        backend_ip=ipaddress.ip_address("2001:db8::11"),
        backend_port=8080,
    )
    assert kubeproxy_agent.describe([]) == "no forwards"
    assert kubeproxy_agent.describe([forward]) == (
        "1 forwards: [2001:db8::200]:80/TCP -> [2001:db8::11]:8080"
    )
