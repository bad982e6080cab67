from __future__ import annotations

import pytest

from porterlb.api import endpoints, wellknown
from porterlb.api.keys import NodeName, ServiceKey


def endpoint_slice(*endpoint_list, service="web", namespace="shop"):
    labels = {wellknown.SERVICE_NAME_LABEL: service} if service else {}
    return {
        "metadata": {"name": f"{service}-abc", "namespace": namespace, "labels": labels},
        "addressType": "IPv4",
        "endpoints": list(endpoint_list),
    }


def endpoint(node=None, **conditions):
    found = {"addresses": ["10.0.0.1"], "conditions": conditions}
    if node is not None:
        found["nodeName"] = node
    return found


@pytest.mark.parametrize(
    ("obj", "ready", "nodes"),
    [
        pytest.param(endpoint_slice(), False, set(), id="no-endpoints"),
        pytest.param(endpoint_slice(endpoint("w1", ready=True)), True, {"w1"}, id="ready"),
        pytest.param(endpoint_slice(endpoint("w1", ready=False)), False, set(), id="not-ready"),
        pytest.param(endpoint_slice(endpoint("w1")), True, {"w1"}, id="ready-unset-means-ready"),
        pytest.param(
            endpoint_slice(endpoint("w1", ready=None)), True, {"w1"}, id="ready-null-means-ready"
        ),
        pytest.param(
            endpoint_slice({"addresses": ["10.0.0.1"], "nodeName": "w1"}),
            True,
            {"w1"},
            id="no-conditions",
        ),
        pytest.param(
            endpoint_slice(endpoint("w1", ready=False, terminating=True)),
            False,
            set(),
            id="terminating",
        ),
        pytest.param(endpoint_slice(endpoint(ready=True)), True, set(), id="ready-without-node"),
        pytest.param(
            endpoint_slice(endpoint("w1", ready=True), endpoint("w2", ready=False), endpoint("w3")),
            True,
            {"w1", "w3"},
            id="mixed",
        ),
    ],
)
def test_parse(obj, ready, nodes):
    parsed = endpoints.parse(obj)
    assert parsed.service == ServiceKey("shop/web")
    assert parsed.ready is ready
    assert parsed.ready_nodes == {NodeName(n) for n in nodes}


def test_a_slice_without_the_service_label_belongs_to_nobody():
    assert endpoints.parse(endpoint_slice(endpoint("w1"), service=None)).service is None


def test_parse_a_bare_object():
    assert endpoints.parse({}) == endpoints.Slice(
        service=None, ready=False, ready_nodes=frozenset()
    )
