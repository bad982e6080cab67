"""The verb and resource each API request is counted under (``porterlb_api_request_errors``)."""

import httpx2
import pytest

from porterlb.kube import transport


@pytest.mark.parametrize(
    ("method", "url", "expected"),
    [
        pytest.param("GET", "/api/v1/services?limit=500", ("list", "services"), id="list-all"),
        pytest.param("GET", "/api/v1/services?watch=true", ("watch", "services"), id="watch-all"),
        pytest.param(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases/porterlb-manager",
            ("get", "leases"),
            id="get-namespaced",
        ),
        pytest.param(
            "PATCH",
            "/api/v1/namespaces/shop/services/web/status",
            ("patch", "services/status"),
            id="patch-subresource",
        ),
        pytest.param(
            "PATCH",
            "/apis/network.kubesphere.io/v1alpha2/eips/lan/status",
            ("patch", "eips/status"),
            id="cluster-scoped-subresource",
        ),
        pytest.param("POST", "/api/v1/namespaces/ns/events", ("create", "events"), id="create"),
        pytest.param("PUT", "/api/v1/namespaces/ns/secrets/k", ("update", "secrets"), id="update"),
        pytest.param("GET", "/api/v1/namespaces/shop", ("get", "namespaces"), id="a-namespace"),
        pytest.param("GET", "/api/v1/namespaces", ("list", "namespaces"), id="namespaces"),
        pytest.param("GET", "/version", ("list", "discovery"), id="discovery"),
    ],
)
def test_describe(method, url, expected):
    assert transport.describe(method, httpx2.URL(f"https://api.example:6443{url}")) == expected
