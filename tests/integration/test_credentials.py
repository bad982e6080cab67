"""Every kind of credential porterlb is given reaches the real API server through its client.

The lab's kubeconfig carries a static token; these tests write kubeconfigs with the admin's
client certificate, and with a token file and CA file as a Pod's service account has them
(lightkube reads ``/var/run/secrets/kubernetes.io/serviceaccount`` into the same fields).
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
import yaml
from lightkube.resources.core_v1 import Namespace

from porterlb.kube import client as kube_client
from porterlb.lab import controlplane

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def _kubeconfig(path: Path, endpoints: controlplane.Endpoints, user: dict[str, str]) -> Path:
    state = endpoints.kubeconfig.parent / "state"
    cluster = {"server": endpoints.server, "certificate-authority": str(state / "ca.crt")}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "me"}}],
        "current-context": "lab",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _token(endpoints: controlplane.Endpoints) -> str:
    users = yaml.safe_load(endpoints.kubeconfig.read_text())["users"]
    return str(users[0]["user"]["token"])


async def _status(kubeconfig: Path) -> tuple[int, int]:
    """The status of a raw GET and whether lightkube's own call works, with `kubeconfig`."""
    async with kube_client.connect(kubeconfig) as api:
        raw = await kube_client.http(api).get("/api/v1/namespaces/default")
        if raw.status_code != 200:
            return raw.status_code, 0
        namespace = await api.get(Namespace, "default")
        return raw.status_code, int(namespace.metadata is not None)


async def test_a_client_certificate(control_plane, tmp_path):
    state = control_plane.kubeconfig.parent / "state"
    user = {"client-certificate": str(state / "admin.crt"), "client-key": str(state / "admin.key")}
    assert await _status(_kubeconfig(tmp_path / "config", control_plane, user)) == (200, 1)


async def test_a_token_file_is_read_again_once_rotated(control_plane, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("stale")
    kubeconfig = _kubeconfig(tmp_path / "config", control_plane, {"tokenFile": str(token_file)})
    async with kube_client.connect(kubeconfig) as api:
        http = kube_client.http(api)
        assert (await http.get("/api/v1/namespaces/default")).status_code == 401
        token_file.write_text(_token(control_plane))  # the kubelet rotates the token
        assert (await http.get("/api/v1/namespaces/default")).status_code == 200


async def test_a_wrong_certificate_authority_is_refused(control_plane, tmp_path):
    state = control_plane.kubeconfig.parent / "state"
    kubeconfig = _kubeconfig(tmp_path / "config", control_plane, {"token": _token(control_plane)})
    config = yaml.safe_load(kubeconfig.read_text())
    # The admin's certificate is no CA: the server's certificate does not chain to it.
    config["clusters"][0]["cluster"]["certificate-authority"] = str(state / "admin.crt")
    kubeconfig.write_text(yaml.safe_dump(config))
    async with kube_client.connect(kubeconfig) as api:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await kube_client.http(api).get("/api/v1/namespaces/default")
