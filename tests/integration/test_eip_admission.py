"""The Eip CRD rejects what can never work, at admission, with a precise message."""

from __future__ import annotations

import uuid
from typing import Any

import lightkube
import pytest
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from porterlb.kube import resources
from tests.integration.conftest import eip_object

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _name() -> str:
    return f"adm-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        pytest.param(
            "198.18.0.0/33",
            "address 198.18.0.0/33 is not an IP address, a CIDR or a range first-last",
            id="bad-prefix",
        ),
        pytest.param(
            "lan", "address lan is not an IP address, a CIDR or a range first-last", id="word"
        ),
        pytest.param(
            "198.18.0.1-",
            "address 198.18.0.1- is not an IP address, a CIDR or a range first-last",
            id="open-range",
        ),
        pytest.param(
            "198.18.0.300",
            "address 198.18.0.300 is not an IP address, a CIDR or a range first-last",
            id="octet",
        ),
        pytest.param(
            "198.18.0.9-198.18.0.1",
            "address 198.18.0.9-198.18.0.1: the range ends before it starts",
            id="reversed",
        ),
        pytest.param(
            "198.18.0.1-2001:db8::1",
            "address 198.18.0.1-2001:db8::1 mixes IPv4 and IPv6",
            id="mixed",
        ),
    ],
)
async def test_unparsable_addresses_are_rejected(
    client: lightkube.AsyncClient, address: str, message: str
) -> None:
    with pytest.raises(ApiError) as rejected:
        await client.create(eip_object(_name(), address))
    assert rejected.value.status.code == 422
    assert message in (rejected.value.status.message or "")


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("198.19.100.7", id="single-v4"),
        pytest.param("198.19.101.0/24", id="cidr-v4"),
        pytest.param("198.19.102.10-198.19.102.20", id="range-v4"),
        pytest.param("2001:db8:ff00::/64", id="cidr-v6"),
        pytest.param("2001:db8:ff01::1-2001:db8:ff01::ff", id="range-v6"),
    ],
)
async def test_valid_addresses_are_accepted(client: lightkube.AsyncClient, address: str) -> None:
    name = _name()
    created = await client.create(eip_object(name, address))
    assert created["spec"]["address"] == address
    await client.delete(resources.Eip, name)


async def test_protocol_must_be_known(client: lightkube.AsyncClient) -> None:
    with pytest.raises(ApiError) as rejected:
        await client.create(eip_object(_name(), "198.19.103.1", protocol="ospf"))
    assert rejected.value.status.code == 422
    assert 'spec.protocol: Unsupported value: "ospf"' in (rejected.value.status.message or "")


async def test_address_is_immutable(client: lightkube.AsyncClient) -> None:
    name = _name()
    await client.create(eip_object(name, "198.19.104.0/24"))
    with pytest.raises(ApiError) as rejected:
        await client.patch(
            resources.Eip,
            name,
            {"spec": {"address": "198.19.105.0/24"}},
            patch_type=PatchType.MERGE,
        )
    assert rejected.value.status.code == 422
    assert "address is immutable: create a new Eip to change a pool" in (
        rejected.value.status.message or ""
    )
    await client.delete(resources.Eip, name)


async def test_v1alpha1_is_served(client: lightkube.AsyncClient) -> None:
    name = _name()
    await client.create(eip_object(name, "198.19.106.0/24"))
    old = resources_v1alpha1()
    fetched = await client.get(old, name)
    assert fetched["apiVersion"] == "network.kubesphere.io/v1alpha1"
    assert fetched["spec"]["address"] == "198.19.106.0/24"
    await client.delete(resources.Eip, name)


def resources_v1alpha1() -> Any:
    from lightkube.generic_resource import create_global_resource

    return create_global_resource("network.kubesphere.io", "v1alpha1", "Eip", "eips")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        pytest.param(
            {"key": "rack", "operator": "In"},
            "operator In needs at least one value",
            id="in-without-values",
        ),
        pytest.param(
            {"key": "rack", "operator": "NotIn", "values": []},
            "operator NotIn needs at least one value",
            id="notin-empty-values",
        ),
        pytest.param(
            {"key": "gpu", "operator": "Exists", "values": ["1"]},
            "operator Exists takes no values",
            id="exists-with-values",
        ),
        pytest.param(
            {"key": "rack", "operator": "Gt", "values": ["1"]},
            'Unsupported value: "Gt"',
            id="unknown-operator",
        ),
    ],
)
async def test_malformed_node_selector_expressions_are_rejected(
    client: lightkube.AsyncClient, expression: dict[str, Any], message: str
) -> None:
    selector = {"matchExpressions": [expression]}
    with pytest.raises(ApiError) as rejected:
        await client.create(eip_object(_name(), "198.19.107.0/24", nodeSelector=selector))
    assert rejected.value.status.code == 422
    assert message in (rejected.value.status.message or "")


async def test_a_node_selector_is_accepted_in_both_versions(client: lightkube.AsyncClient) -> None:
    name = _name()
    selector = {
        "matchLabels": {"rack": "a"},
        "matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}],
    }
    await client.create(eip_object(name, "198.19.108.0/24", nodeSelector=selector))
    for resource in (resources.Eip, resources_v1alpha1()):
        fetched = await client.get(resource, name)
        assert fetched["spec"]["nodeSelector"] == selector
    await client.delete(resources.Eip, name)
