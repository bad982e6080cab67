"""What each worker's kube-proxy stand-in forwards, from Services and EndpointSlices."""

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.lab import kubeproxy, kubeproxy_rules

W1, W2 = "demo-w1", "demo-w2"


def svc(
    name: str = "web",
    *ingress: str,
    namespace: str = "default",
    kind: str = "LoadBalancer",
    ports: list[dict[str, Any]] | None = None,
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": {
            "type": kind,
            "ports": ports if ports is not None else [{"name": "http", "port": 80}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}},
    }


def endpoint(address: str, node: str = W1, ready: bool | None = True) -> dict[str, Any]:
    found: dict[str, Any] = {"addresses": [address], "nodeName": node}
    if ready is not None:
        found["conditions"] = {"ready": ready}
    return found


def eps(
    service: str = "web",
    *endpoints: dict[str, Any],
    namespace: str = "default",
    address_type: str = "IPv4",
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{service}-{address_type.lower()}",
            "namespace": namespace,
            "labels": {kubeproxy_rules.SERVICE_NAME_LABEL: service},
        },
        "addressType": address_type,
        "endpoints": list(endpoints),
        "ports": ports if ports is not None else [{"name": "http", "port": 8080}],
    }


def fwd(lb: str, backend: str, port: int = 80, backend_port: int = 8080, protocol: str = "TCP"):
    return kubeproxy.Forward(
        lb_ip=ipaddress.ip_address(lb),
        port=port,
        protocol=protocol,  # type: ignore[arg-type]
        backend_ip=ipaddress.ip_address(backend),
        backend_port=backend_port,
    )


V4, V6 = "198.18.4.200", "2001:db8:2:1::200"
B1, B2 = "198.18.4.11", "198.18.4.12"
B1_6 = "2001:db8:2:1::11"

CASES = [
    pytest.param(
        [svc("web", V4)], [eps("web", endpoint(B1), endpoint(B2, W2))], [fwd(V4, B1)], id="local"
    ),
    pytest.param([svc("web")], [eps("web", endpoint(B1))], [], id="no-ingress-yet"),
    pytest.param([svc("web", V4, kind="ClusterIP")], [eps("web", endpoint(B1))], [], id="not-lb"),
    pytest.param([svc("web", V4)], [eps("web", endpoint(B2, W2))], [], id="only-remote"),
    pytest.param([svc("web", V4)], [eps("web", endpoint(B1, ready=False))], [], id="not-ready"),
    pytest.param(
        [svc("web", V4)], [eps("web", endpoint(B1, ready=None))], [fwd(V4, B1)], id="ready-unset"
    ),
    pytest.param([svc("web", V4)], [], [], id="no-slices"),
    pytest.param([svc("web", V4)], [eps("api", endpoint(B1))], [], id="slice-of-another-service"),
    pytest.param(
        [svc("web", V4)],
        [eps("web", endpoint(B1), namespace="other")],
        [],
        id="slice-in-another-namespace",
    ),
    pytest.param(
        [svc("web", V4)],
        [eps("web", endpoint(B1), ports=[{"name": "metrics", "port": 9090}])],
        [],
        id="port-name-mismatch",
    ),
    pytest.param(
        [svc("web", V4, ports=[{"name": "dns", "port": 53, "protocol": "UDP"}])],
        [eps("web", endpoint(B1), ports=[{"name": "dns", "port": 5353, "protocol": "UDP"}])],
        [fwd(V4, B1, 53, 5353, "UDP")],
        id="udp",
    ),
    pytest.param(
        [svc("web", V4, ports=[{"port": 80, "protocol": "UDP"}])],
        [eps("web", endpoint(B1), ports=[{"port": 8080, "protocol": "TCP"}])],
        [],
        id="protocol-mismatch",
    ),
    pytest.param(
        [svc("web", V4, ports=[{"port": 80}])],
        [eps("web", endpoint(B1), ports=[{"port": 8080}])],
        [fwd(V4, B1)],
        id="unnamed-port",
    ),
    pytest.param(
        [svc("web", V6)],
        [eps("web", endpoint(B1)), eps("web", endpoint(B1_6), address_type="IPv6")],
        [fwd(V6, B1_6)],
        id="ipv6-uses-the-ipv6-slice",
    ),
    pytest.param(
        [svc("web", V4, V6)],
        [eps("web", endpoint(B1)), eps("web", endpoint(B1_6), address_type="IPv6")],
        [fwd(V4, B1), fwd(V6, B1_6)],
        id="dual-stack",
    ),
    pytest.param([svc("web", V6)], [eps("web", endpoint(B1))], [], id="ipv6-without-ipv6-slice"),
    pytest.param(
        [svc("web", V4)],
        [eps("web", endpoint("198.18.4.99"), endpoint(B1))],
        [fwd(V4, B1)],
        id="lowest-local-address",
    ),
    pytest.param(
        [
            svc("young", V4, created="2026-01-02T00:00:00Z"),
            svc("old", V4, created="2026-01-01T00:00:00Z"),
        ],
        [eps("young", endpoint(B2)), eps("old", endpoint(B1))],
        [fwd(V4, B1)],
        id="older-service-wins-a-shared-port",
    ),
    pytest.param(
        [
            svc("a", V4, ports=[{"name": "http", "port": 80}]),
            svc("b", V4, ports=[{"name": "http", "port": 443}]),
        ],
        [eps("a", endpoint(B1)), eps("b", endpoint(B2))],
        [fwd(V4, B1, 80), fwd(V4, B2, 443)],
        id="shared-ip-disjoint-ports",
    ),
    pytest.param(
        [svc("web", "not-an-ip", V4)], [eps("web", endpoint(B1))], [fwd(V4, B1)], id="bad-ingress"
    ),
    pytest.param(
        [svc("web", V4, ports=[{"name": "http", "port": 0}])],
        [eps("web", endpoint(B1))],
        [],
        id="bad-port",
    ),
]


@pytest.mark.parametrize(("services", "slices", "expected"), CASES)
def test_forwards(services, slices, expected):
    assert kubeproxy_rules.forwards(services, slices, W1) == expected


@given(st.permutations(range(4)), st.permutations(range(4)))
def test_forwards_ignore_input_order(service_order, slice_order):
    services = [svc("web", V4, V6), svc("api", "198.18.4.201"), svc("dns"), svc("x", V4)]
    slices = [
        eps("web", endpoint(B1), endpoint(B2, W2)),
        eps("web", endpoint(B1_6), address_type="IPv6"),
        eps("api", endpoint("198.18.4.13"), endpoint(B1)),
        eps("x", endpoint(B2)),
    ]
    expected = kubeproxy_rules.forwards(services, slices, W1)
    shuffled = kubeproxy_rules.forwards(
        [services[i] for i in service_order], [slices[i] for i in slice_order], W1
    )
    assert shuffled == expected
    assert len(expected) == 3
