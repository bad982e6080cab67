"""The chart and the static manifest against the real API server, and the RBAC they grant.

Every object passes a server-side dry-run apply; the chart installs for real with the real
helm (and an upgrade keeps the heartbeat key); the CRDs become Established; and tokens of
the chart's ServiceAccounts (TokenRequest) can do what each role does and nothing it must
not: the speaker reads no Service and no other Secret, and writes no Service and no placement
record, the manager writes no Service spec and creates no Secret.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lightkube
import pytest
import pytest_asyncio
from lightkube import codecs
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Secret

from porterlb.kube import client as kube_client
from porterlb.lab import binaries, chart, crds, credentials
from tests.integration import monitoring

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

EVERYTHING = {
    "prometheus.podMonitor.enabled": "true",
    "prometheus.prometheusRule.enabled": "true",
    "prometheus.metricsServices": "true",
}


async def _dry_run(client: lightkube.AsyncClient, manifest: dict[str, Any]) -> None:
    """A server-side apply of `manifest` with dryRun=All; fails the test naming the object."""
    meta = manifest["metadata"]
    what = f"{manifest['kind']} {meta.get('namespace', '')}/{meta['name']}"
    try:
        await client.apply(
            codecs.from_dict(manifest), field_manager="porterlb-test", force=True, dry_run=True
        )
    except ApiError as error:
        pytest.fail(f"{what}: refused by the API server: {error.status.message}")


@pytest_asyncio.fixture(loop_scope="session")
async def monitoring_crds(client: lightkube.AsyncClient) -> None:
    await monitoring.install(client)


async def test_every_object_of_the_static_manifest_passes_a_dry_run_apply(client):
    objects = chart.documents(chart.MANIFEST.read_text())
    (namespace,) = [d for d in objects if d["kind"] == "Namespace"]
    # A dry run creates nothing, so the objects in the namespace need it for real.
    with contextlib.suppress(ApiError):
        await client.create(Namespace(metadata=ObjectMeta(name=namespace["metadata"]["name"])))
    for manifest in objects:
        await _dry_run(client, manifest)


async def test_every_object_of_the_chart_passes_a_dry_run_apply(client, namespace, monitoring_crds):
    values = {**EVERYTHING, "namespace.create": "true"}
    objects = chart.documents(chart.template(values, namespace=namespace))
    assert {"PodMonitor", "PrometheusRule", "Service", "Secret"} <= {d["kind"] for d in objects}
    for manifest in objects:
        await _dry_run(client, manifest)


async def test_the_crds_of_the_chart_become_established(client):
    documents = chart.documents(chart.MANIFEST.read_text())
    versions = {}
    for crd in (d for d in documents if d["kind"] == "CustomResourceDefinition"):
        await client.apply(codecs.from_dict(crd), field_manager="porterlb-test", force=True)
        await crds.established(client, crd["metadata"]["name"])
        stored = await client.get(CustomResourceDefinition, crd["metadata"]["name"])
        versions[crd["metadata"]["name"]] = stored.spec.versions[0].name
    assert versions == {
        "eips.network.kubesphere.io": "v1alpha2",
        "nodeplacements.porterlb.io": "v1alpha1",
    }


def _helm(kubeconfig: Path, namespace: str, *args: str) -> None:
    argv = [str(binaries.helm()), *args, "--kubeconfig", str(kubeconfig), "--namespace", namespace]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest_asyncio.fixture(loop_scope="session")
async def installed(
    client: lightkube.AsyncClient, control_plane, namespace: str, monitoring_crds
) -> AsyncIterator[str]:
    """The chart installed by helm into `namespace` (its CRD already is, by the session)."""
    sets = [arg for key, value in EVERYTHING.items() for arg in ("--set", f"{key}={value}")]
    install = ["upgrade", "--install", "porterlb", str(chart.CHART), "--set", "crds.enabled=false"]
    _helm(control_plane.kubeconfig, namespace, *install, *sets)
    yield namespace
    _helm(control_plane.kubeconfig, namespace, "uninstall", "porterlb")


async def _key(client: lightkube.AsyncClient, namespace: str) -> bytes:
    secret = await client.get(Secret, "porterlb-heartbeat", namespace=namespace)
    return base64.b64decode((secret.data or {})["key"])


async def test_helm_installs_the_chart_and_an_upgrade_keeps_the_heartbeat_key(
    client, control_plane, installed
):
    key = await _key(client, installed)
    assert len(key) >= 32
    upgrade = ["upgrade", "porterlb", str(chart.CHART), "--reuse-values", "--set", "logLevel=debug"]
    _helm(control_plane.kubeconfig, installed, *upgrade)
    assert await _key(client, installed) == key


@contextlib.asynccontextmanager
async def _as(
    client: lightkube.AsyncClient, control_plane, namespace: str, role: credentials.Role, tmp: Path
) -> AsyncIterator[lightkube.AsyncClient]:
    """A client with a TokenRequest token of `role`'s ServiceAccount in `namespace`."""
    account = f"porterlb-{role}"
    bearer = await credentials.token(client, account, namespace=namespace, seconds=600)
    path = credentials.write(
        tmp / f"{role}.kubeconfig",
        control_plane.kubeconfig,
        bearer,
        user=account,
        namespace=namespace,
    )
    async with kube_client.connect(path) as api:
        yield api


async def _status(api: lightkube.AsyncClient, method: str, path: str, **kwargs: Any) -> int:
    reply = await kube_client.http(api).request(method, path, **kwargs)
    return reply.status_code


MERGE = {"Content-Type": "application/merge-patch+json"}


async def test_the_speaker_reads_its_secret_and_placement_records_and_nothing_more(
    client, control_plane, installed, tmp_path
):
    other = Secret(metadata=ObjectMeta(name="not-porterlbs"), stringData={"password": "x"})
    await client.create(other, namespace=installed)
    async with _as(client, control_plane, installed, "speaker", tmp_path) as api:
        secrets = f"/api/v1/namespaces/{installed}/secrets"
        assert await _status(api, "GET", f"{secrets}/porterlb-heartbeat") == 200
        assert await _status(api, "GET", f"{secrets}/not-porterlbs") == 403
        assert await _status(api, "GET", secrets) == 403
        assert await _status(api, "GET", "/api/v1/secrets") == 403
        assert await _status(api, "GET", "/api/v1/services") == 403
        assert await _status(api, "GET", "/apis/network.kubesphere.io/v1alpha2/eips") == 200
        records = "/apis/porterlb.io/v1alpha1/nodeplacements"
        assert await _status(api, "GET", f"{records}?fieldSelector=metadata.name%3Dw1") == 200
        assert await _status(api, "PATCH", f"{records}/w1", json={}, headers=MERGE) == 403
        record = {
            "apiVersion": "porterlb.io/v1alpha1",
            "kind": "NodePlacement",
            "metadata": {"name": "w1"},
        }
        assert await _status(api, "POST", records, json=record) == 403
        service = f"/api/v1/namespaces/{installed}/services/any"
        for path in (service, f"{service}/status"):
            assert await _status(api, "PATCH", path, json={}, headers=MERGE) == 403
        body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "any"}}
        assert (
            await _status(api, "POST", f"/api/v1/namespaces/{installed}/services", json=body) == 403
        )
        lease = f"/apis/coordination.k8s.io/v1/namespaces/{installed}/leases/porterlb-manager"
        assert await _status(api, "PUT", lease, json={}) == 403


async def test_the_manager_writes_service_status_but_no_spec_and_creates_no_secret(
    client, control_plane, installed, tmp_path
):
    async with _as(client, control_plane, installed, "manager", tmp_path) as api:
        service = f"/api/v1/namespaces/{installed}/services/any"
        assert await _status(api, "PATCH", service, json={}, headers=MERGE) == 403
        # Allowed, but there is no such Service: 404, not 403.
        assert await _status(api, "PATCH", f"{service}/status", json={}, headers=MERGE) == 404
        secrets = f"/api/v1/namespaces/{installed}/secrets"
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "porterlb-heartbeat-2"}}
        assert await _status(api, "POST", secrets, json=body) == 403
        assert await _status(api, "GET", f"{secrets}/porterlb-heartbeat") == 200
        assert await _status(api, "GET", "/api/v1/secrets") == 403
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{installed}/leases"
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "porterlb-manager"},
        }
        assert await _status(api, "POST", leases, json=lease) == 201
        assert await _status(api, "GET", f"{leases}/porterlb-manager") == 200
        assert await _status(api, "GET", f"{leases}/someone-elses") == 403
        assert (
            await _status(
                api,
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/default/leases/porterlb-manager",
            )
            == 403
        )
