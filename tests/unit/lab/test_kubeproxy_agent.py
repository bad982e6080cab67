"""The stand-in's command-line parsing and its log phrases."""

import ipaddress
from typing import Any

import lightkube
import pytest
from lightkube.config.kubeconfig import KubeConfig

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


def test_a_service_change_of_metadata_alone_leaves_the_forwards_as_they_are():
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://192.0.2.1:6443"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    client = lightkube.AsyncClient(config=config)
    agent = kubeproxy_agent.Agent(client, {"demo-w1": "plb-demo-w1"})
    service = {
        "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.18.4.200"}]}},
    }
    steps: list[tuple[dict[str, Any], bool]] = [
        ({}, True),  # new
        ({"metadata": {"annotations": {"porterlb.io/announced-by": "demo-w2"}}}, False),
        ({"status": {"loadBalancer": {}}}, True),
        ({"metadata": {"labels": {"x": "y"}}}, False),
    ]
    for change, dirty in steps:
        service = {**service, **change}
        agent._dirty.clear()
        agent.services.cache["default/web"] = service
        agent._service_changed("default/web")
        assert agent._dirty.is_set() == dirty, change
    del agent.services.cache["default/web"]
    agent._service_changed("default/web")
    assert agent._dirty.is_set()
