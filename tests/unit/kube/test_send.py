"""client.send, the manager's write path: over the aiohttp transport it skips httpx2's models,
over any other it goes through httpx2, and both send and receive alike (a real aiohttp server
on loopback)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from porterlb.kube import client as kube_client
from porterlb.kube import transport
from tests.unit.kube.test_transport import _echo, kind

__all__ = ["kind"]  # a fixture, used by name


def _kubeconfig(path: Path, server: str, user: dict[str, str]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """/echo, and /fresh, which answers 401 unless the token is "new"."""

    async def fresh(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer new":
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return await _echo(request)

    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_route("*", "/fresh", fresh)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_write_and_its_reply_cross_unchanged(kind: transport.Kind, server, tmp_path):
    config = _kubeconfig(tmp_path / "kubeconfig", server, {"token": "t"})
    async with kube_client.connect(config, via=kind) as client:
        reply = await kube_client.send(
            client, "PATCH", "/echo", "fieldManager=porterlb", b'{"k":1}', "application/json"
        )
    assert (reply.status_code, reply.reason_phrase) == (201, "Made")
    assert yaml.safe_load(reply.text) == {
        "method": "PATCH",
        "path": "/echo?fieldManager=porterlb",
        "type": "application/json",
        "authorization": "Bearer t",
        "body": '{"k":1}',
    }


async def test_a_refused_token_is_read_again_and_the_write_sent_again(
    kind: transport.Kind, server, tmp_path
):
    token = tmp_path / "token"
    token.write_text("old")
    config = _kubeconfig(tmp_path / "kubeconfig", server, {"tokenFile": str(token)})
    async with kube_client.connect(config, via=kind) as client:
        reply = await kube_client.send(client, "POST", "/echo", "", b"{}", "application/json")
        assert yaml.safe_load(reply.text)["authorization"] == "Bearer old"
        stat = token.stat()
        token.write_text("new")  # rotated, its mtime as before: only the 401 tells
        os.utime(token, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        reply = await kube_client.send(client, "POST", "/fresh", "", b"{}", "application/json")
    assert reply.status_code == 201
    assert yaml.safe_load(reply.text)["authorization"] == "Bearer new"
