"""The manager's writes to Services need nothing but ``patch`` on ``services/status``.

A ServiceAccount's token (from a TokenRequest, as a Pod gets it) bound to exactly these
rules on Services: ``get``/``list``/``watch`` on ``services`` and ``patch`` on
``services/status``. With it, every Service write of the manager lands (claim, IP, announcing
node, release), while a patch of the Service itself is refused, which proves the token is
as narrow as it says. A second test runs the whole manager with that token (plus what it
reads and writes besides Services) and watches it serve a Service and let it go.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import lightkube
import pytest
import pytest_asyncio
import yaml
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.core_v1 import Service, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import (
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
)
from lightkube.types import PatchType

from porterlb.api import wellknown
from porterlb.kube import client as kube_client
from porterlb.kube import reflector, resources, writers
from porterlb.lab import controlplane
from porterlb.placement import records
from tests.integration import objects
from tests.integration.conftest import eip_object, running_manager
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SERVICE_RULES = [
    PolicyRule(apiGroups=[""], resources=["services"], verbs=["get", "list", "watch"]),
    PolicyRule(apiGroups=[""], resources=["services/status"], verbs=["patch"]),
]
"""All the manager may do to Services."""

OTHER_RULES = [
    PolicyRule(
        apiGroups=["network.kubesphere.io"], resources=["eips"], verbs=["list", "watch", "patch"]
    ),
    PolicyRule(apiGroups=["network.kubesphere.io"], resources=["eips/status"], verbs=["patch"]),
    PolicyRule(apiGroups=[""], resources=["namespaces", "nodes"], verbs=["list", "watch"]),
    PolicyRule(
        apiGroups=["discovery.k8s.io"], resources=["endpointslices"], verbs=["list", "watch"]
    ),
    PolicyRule(apiGroups=[""], resources=["events"], verbs=["create"]),
    PolicyRule(
        apiGroups=["porterlb.io"],
        resources=["nodeplacements"],
        verbs=["get", "list", "watch", "create", "patch", "delete"],
    ),
]
"""What a manager without leader election or heartbeats touches besides Services."""


async def _token(client: lightkube.AsyncClient, namespace: str, account: str) -> str:
    """A token for `account` from a TokenRequest, as the kubelet gets one for a Pod."""
    await client.create(ServiceAccount(metadata=ObjectMeta(name=account, namespace=namespace)))
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    reply = await kube_client.http(client).post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", json=request
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["status"]["token"])


def _kubeconfig(path: Path, endpoints: controlplane.Endpoints, token: str) -> Path:
    ca = endpoints.kubeconfig.parent / "state" / "ca.crt"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "lab",
                "cluster": {"server": endpoints.server, "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": "manager", "user": {"token": token}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "manager"}}],
        "current-context": "lab",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def _as(
    client, control_plane, tmp_path, namespace, token_account
) -> AsyncIterator[lightkube.AsyncClient]:
    token = await _token(client, namespace, token_account)
    async with kube_client.connect(
        _kubeconfig(tmp_path / "kubeconfig", control_plane, token)
    ) as api:
        yield api


def _subject(namespace: str, account: str) -> Subject:
    return Subject(kind="ServiceAccount", name=account, namespace=namespace)


@pytest_asyncio.fixture(loop_scope="session")
async def cluster_role(client, namespace) -> AsyncIterator[str]:
    """A ClusterRole and binding for the ServiceAccount "manager" of the test's namespace."""
    name = f"porterlb-manager-{namespace}"
    await client.create(
        ClusterRole(metadata=ObjectMeta(name=name), rules=[*SERVICE_RULES, *OTHER_RULES])
    )
    await client.create(
        ClusterRoleBinding(
            metadata=ObjectMeta(name=name),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=name),
            subjects=[_subject(namespace, "manager")],
        )
    )
    yield name
    for kind in (ClusterRoleBinding, ClusterRole):
        with contextlib.suppress(ApiError):
            await client.delete(kind, name)


async def test_every_service_write_needs_only_patch_on_services_status(
    client, control_plane, namespace, net, tmp_path
):
    await client.create(
        Role(metadata=ObjectMeta(name="manager", namespace=namespace), rules=SERVICE_RULES)
    )
    await client.create(
        RoleBinding(
            metadata=ObjectMeta(name="manager", namespace=namespace),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name="manager"),
            subjects=[_subject(namespace, "manager")],
        )
    )
    await client.create(objects.service("web", namespace))
    async with _as(client, control_plane, tmp_path, namespace, "manager") as api:

        async def fresh():
            return await objects.raw(api, Service, "web", namespace)

        async def version():
            return reflector.version(await fresh())

        # The Role may take a moment to reach the authorizer's cache.
        await eventually(version, what="the Service readable with the manager's token")
        await writers.write_service(
            api,
            namespace,
            "web",
            resource_version=await version(),
            claim=("lan",),
            ingress=[f"{net}.1"],
        )
        await writers.set_announcing_node(
            api, namespace, "web", "node-a", resource_version=await version()
        )
        meta = (await fresh())["metadata"]
        assert wellknown.SERVICE_FINALIZER in meta["finalizers"]
        assert meta["labels"][wellknown.POOL_LABEL] == "lan"
        assert meta["annotations"][wellknown.ANNOUNCED_BY] == "node-a"
        assert await objects.ingress(api, "web", namespace) == (f"{net}.1",)

        await writers.set_announcing_node(
            api, namespace, "web", None, resource_version=await version()
        )
        await writers.write_service(
            api, namespace, "web", resource_version=await version(), unclaim=True, ingress=[]
        )
        meta = (await fresh())["metadata"]
        assert wellknown.SERVICE_FINALIZER not in (meta.get("finalizers") or ())
        assert wellknown.POOL_LABEL not in (meta.get("labels") or {})
        assert wellknown.ANNOUNCED_BY not in (meta.get("annotations") or {})
        assert await objects.ingress(api, "web", namespace) == ()

        with pytest.raises(ApiError) as refused:
            await api.patch(
                Service,
                "web",
                {"metadata": {"annotations": {wellknown.ANNOUNCED_BY: "node-a"}}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        assert refused.value.status.code == 403


async def test_the_manager_serves_and_releases_under_that_role(
    client, control_plane, namespace, net, eips, nodes, cluster_role, tmp_path
):
    pool = f"{namespace}-a"
    eips.append(pool)
    await client.create(eip_object(pool, f"{net}.0/24", namespaces=[namespace]))
    node = await nodes(f"{namespace}-n1")
    await client.create(objects.service("web", namespace))
    await objects.set_endpoints(client, "web", namespace)
    async with (
        _as(client, control_plane, tmp_path, namespace, "manager") as api,
        running_manager(api),
    ):
        await objects.wait_ingress(client, "web", namespace, (f"{net}.1",))

        async def announced():
            meta = (await objects.raw(client, Service, "web", namespace))["metadata"]
            return (meta.get("annotations") or {}).get(wellknown.ANNOUNCED_BY) == node

        await eventually(announced, what=f"web announced by {node}")
        record = await objects.raw(client, resources.NodePlacement, node)
        assert f"{net}.1" in records.parse(record)
        await client.patch(
            Service,
            "web",
            [{"op": "replace", "path": "/spec/type", "value": "NodePort"}],
            namespace=namespace,
            patch_type=PatchType.JSON,
        )

        async def released():
            meta = (await objects.raw(client, Service, "web", namespace))["metadata"]
            return (
                wellknown.SERVICE_FINALIZER not in (meta.get("finalizers") or ())
                and wellknown.POOL_LABEL not in (meta.get("labels") or {})
                and wellknown.ANNOUNCED_BY not in (meta.get("annotations") or {})
            )

        await eventually(released, what="web released")
