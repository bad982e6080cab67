"""What ``porterlb status`` says when it cannot read: one line naming what is wrong."""

from __future__ import annotations

import json

import httpx2
import pytest

from porterlb.status import command

EIPS = "/apis/network.kubesphere.io/v1alpha2/eips"


def api(routes):
    """An API that answers `routes` (path -> (status, body)) and 404 elsewhere."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        status, body = routes.get(request.url.path, (404, {"message": "not found"}))
        return httpx2.Response(status, content=json.dumps(body).encode())

    return httpx2.AsyncClient(transport=httpx2.MockTransport(answer), base_url="https://api")


async def test_a_missing_eip_crd_is_named():
    async with api({}) as http:
        with pytest.raises(
            command.StatusError,
            match=r"the Eip CRD \(eips.network.kubesphere.io\) is not installed",
        ):
            await command._list(http, EIPS, what="Eips")


async def test_a_refusal_names_the_list_and_the_api_message():
    refused = (403, {"message": 'services is forbidden: User "u" cannot list resource "services"'})
    async with api({"/api/v1/services": refused}) as http:
        with pytest.raises(command.Forbidden) as failed:  # Events may be skipped so
            await command._list(http, "/api/v1/services", what="Services")
    assert str(failed.value) == (
        'listing Services at /api/v1/services: 403 services is forbidden: User "u" cannot list'
        ' resource "services"'
    )


async def test_pages_are_followed():
    pages = iter([{"items": [{"a": 1}], "metadata": {"continue": "next"}}, {"items": [{"b": 2}]}])

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=json.dumps(next(pages)).encode())

    transport = httpx2.MockTransport(answer)
    async with httpx2.AsyncClient(transport=transport, base_url="https://api") as http:
        assert await command._list(http, EIPS, what="Eips") == [{"a": 1}, {"b": 2}]


async def test_absent_or_unreadable_peers_mean_no_macs():
    async with api({}) as http:
        assert await command._peers(http, "/api/v1/namespaces/x/configmaps/porterlb-peers") == {}
    found = (200, {"data": {"w1": "02:00:00:00:00:01"}})
    async with api({"/cm": found}) as http:
        assert await command._peers(http, "/cm") == {"w1": "02:00:00:00:00:01"}
