"""Both transports under httpx2 (the manager's aiohttp, the speaker's httpx2), against a real
aiohttp server on loopback: each sends and receives alike, and fails and is counted alike."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator

import httpx2
import prometheus_client
import pytest
from aiohttp import web

from porterlb.kube import transport


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path_qs,
            "type": request.headers.get("Content-Type"),
            "authorization": request.headers.get("Authorization"),
            "body": body.decode(),
        },
        status=201,
        reason="Made",
        headers={"X-Seen": "yes"},
    )


async def _lines(request: web.Request) -> web.StreamResponse:
    reply = web.StreamResponse()
    await reply.prepare(request)
    for part in (b'{"a":1}\n{"b"', b":2}\n", b'{"c":3}\n'):
        await reply.write(part)
        await asyncio.sleep(0.01)
    return reply


async def _gzipped(request: web.Request) -> web.Response:
    return web.Response(body=gzip.compress(b"x" * 1000), headers={"Content-Encoding": "gzip"})


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1)
    return web.Response(text="late")


async def _gone(request: web.Request) -> web.Response:
    return web.json_response({"kind": "Status", "code": 404}, status=404)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/lines", _lines)
    app.router.add_get("/gzipped", _gzipped)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/api/v1/namespaces/shop/services/gone", _gone)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(params=["aiohttp", "httpx2"])
def kind(request: pytest.FixtureRequest) -> transport.Kind:
    chosen: transport.Kind = request.param
    return chosen


def _client(kind: transport.Kind, base: str, **kwargs) -> httpx2.AsyncClient:
    tls = ssl.create_default_context()
    return httpx2.AsyncClient(base_url=base, transport=transport.make(kind, tls=tls), **kwargs)


def _errors(code: str) -> float:
    labels = {"verb": "get", "resource": "services", "code": code}
    return (
        prometheus_client.REGISTRY.get_sample_value("porterlb_api_request_errors_total", labels)
        or 0.0
    )


async def test_a_request_and_its_reply_cross_unchanged(kind, server):
    async with _client(kind, server, headers={"Authorization": "Bearer t"}) as http:
        reply = await http.patch(
            "/echo",
            params={"fieldManager": "porterlb"},
            content=b'{"k":1}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
    assert (reply.status_code, reply.reason_phrase, reply.headers["X-Seen"]) == (201, "Made", "yes")
    assert reply.json() == {
        "method": "PATCH",
        "path": "/echo?fieldManager=porterlb",
        "type": "application/merge-patch+json",
        "authorization": "Bearer t",
        "body": '{"k":1}',
    }


async def test_a_body_streams_as_it_arrives(kind, server):
    async with _client(kind, server) as http, http.stream("GET", "/lines") as reply:
        received = b"".join([chunk async for chunk in reply.aiter_bytes()])
    assert received == b'{"a":1}\n{"b":2}\n{"c":3}\n'


async def test_httpx2_decodes_a_compressed_body(kind, server):
    async with _client(kind, server) as http:
        reply = await http.get("/gzipped")
    assert reply.content == b"x" * 1000


async def test_a_slow_reply_is_a_read_timeout(kind, server):
    async with _client(kind, server, timeout=httpx2.Timeout(5.0, read=0.1)) as http:
        with pytest.raises(httpx2.ReadTimeout):
            await http.get("/slow")


async def test_nothing_listening_is_a_connect_error(kind, server):
    async with _client(kind, server) as http:
        # Port 1 on loopback: nothing listens there without root, so it is refused at once.
        with pytest.raises(httpx2.ConnectError):
            await http.get("http://127.0.0.1:1/")


async def test_an_error_status_is_counted_by_its_code(kind, server):
    before = _errors("404")
    async with _client(kind, server) as http:
        reply = await http.get("/api/v1/namespaces/shop/services/gone")
    assert reply.status_code == 404
    assert _errors("404") == before + 1


async def test_no_answer_is_counted_as_transport(kind, server):
    before = _errors("transport")
    async with _client(kind, server) as http:
        with pytest.raises(httpx2.ConnectError):
            await http.get("http://127.0.0.1:1/api/v1/namespaces/shop/services/gone")
    assert _errors("transport") == before + 1
