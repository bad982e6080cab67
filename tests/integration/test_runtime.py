"""The roles as pods run them, against the real API server: in-cluster configuration from a
service-account directory (a TokenRequest token, the CA and the namespace file, as the kubelet
mounts them), the token read again once rotated, and the health endpoints turning ready once
the watch caches have synced."""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import lightkube
import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount

from porterlb import health
from porterlb.api.keys import NodeName
from porterlb.kube import client as kube_client
from porterlb.lab import controlplane
from porterlb.manager import controller
from porterlb.speaker import agent
from tests import waiting
from tests.conftest import cancelled_connections_collected

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def _token(client: lightkube.AsyncClient, namespace: str, account: str) -> str:
    """A bound token of ServiceAccount `namespace/account` (TokenRequest, as the kubelet asks)."""
    await client.create(ServiceAccount(metadata=ObjectMeta(name=account, namespace=namespace)))
    reply = await kube_client.http(client).post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    reply.raise_for_status()
    return str(reply.json()["status"]["token"])


def _in_cluster(endpoints: controlplane.Endpoints, directory: Path) -> kube_client.InCluster:
    server = urllib.parse.urlsplit(endpoints.server)
    return kube_client.InCluster(directory=directory, host=server.hostname, port=str(server.port))


async def _whoami(client: lightkube.AsyncClient) -> str:
    reply = await kube_client.http(client).post(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    reply.raise_for_status()
    return str(reply.json()["status"]["userInfo"]["username"])


def _write_token(directory: Path, token: str, mtime_ns: int) -> None:
    """Replace the token file as the kubelet does (a new file, so a new mtime)."""
    scratch = directory / ".token"
    scratch.write_text(token)
    os.utime(scratch, ns=(mtime_ns, mtime_ns))
    scratch.replace(directory / "token")


async def test_in_cluster_config_follows_the_rotated_token(
    client, control_plane, namespace, tmp_path
):
    state = control_plane.kubeconfig.parent / "state"
    (tmp_path / "ca.crt").write_bytes((state / "ca.crt").read_bytes())
    (tmp_path / "namespace").write_text(namespace)
    _write_token(tmp_path, await _token(client, namespace, "first"), 10**18)
    second = await _token(client, namespace, "second")
    in_cluster = _in_cluster(control_plane, tmp_path)
    assert in_cluster.namespace() == namespace

    async with kube_client.connect(None, in_cluster=in_cluster) as pod:
        assert await _whoami(pod) == f"system:serviceaccount:{namespace}:first"
        _write_token(tmp_path, second, 10**18 + 1)
        # Read before it is sent: no request is refused with the old token first.
        assert await _whoami(pod) == f"system:serviceaccount:{namespace}:second"


async def _probe(port: int, path: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.read().decode()

    return await asyncio.to_thread(get)


@contextlib.asynccontextmanager
async def _serving(role: controller.Manager | agent.Speaker) -> AsyncIterator[int]:
    """The role's health endpoints on a free loopback port (the role itself not running)."""
    port = controlplane.free_port()
    task = asyncio.create_task(health.serve(("127.0.0.1", port), role), name="test/health")
    try:
        await waiting.eventually(lambda: _answers(port), what=f"the health server on port {port}")
        yield port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _answers(port: int) -> bool:
    try:
        await _probe(port, "/healthz")
    except OSError:
        return False
    return True


async def _ready_after_sync(role: controller.Manager | agent.Speaker, *, synced: str) -> None:
    async with _serving(role) as port:
        status, reason = await _probe(port, "/readyz")
        assert (status, reason.startswith("not yet:"), synced in reason) == (503, True, True)
        assert await _probe(port, "/healthz") == (200, "ok\n")
        running = asyncio.create_task(role.run(), name="test/role")
        try:

            async def ready() -> bool:
                return await _probe(port, "/readyz") == (200, "ok\n")

            await waiting.eventually(ready, what="/readyz answering 200 after the caches synced")
            assert await _probe(port, "/healthz") == (200, "ok\n")
        finally:
            with cancelled_connections_collected():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running


async def test_a_manager_is_ready_once_its_caches_synced(client, namespace):
    manager = controller.Manager(client)
    await _ready_after_sync(manager, synced="services synced")


async def test_a_speaker_is_ready_once_its_caches_synced(client, namespace):
    speaker = agent.Speaker(client, node=NodeName("health-node"))
    await _ready_after_sync(speaker, synced="placement record synced")
