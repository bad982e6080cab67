"""Who the lab's manager and speakers are to the API server: the chart's ServiceAccounts.

A cluster runs porterlb's roles with their ServiceAccounts' tokens under the chart's RBAC, so
the lab does too, never as ``system:masters``: at ``lab up``, :func:`install` applies the
chart's ServiceAccounts, ClusterRoles, Roles, bindings and heartbeat Secret
(:func:`porterlb.lab.chart.access_objects`) to the lab's API server, and :func:`issue` writes
one kubeconfig per role whose user is a TokenRequest token of that role's ServiceAccount. A
permission the chart lacks then fails in the lab as it would in a cluster.

:func:`kubeconfig` is the one place that says which kubeconfig a role runs with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

import lightkube
import yaml
from lightkube import codecs
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta

from porterlb import errors
from porterlb.kube import client as kube_client
from porterlb.kube import resources
from porterlb.lab import chart

Role = Literal["manager", "speaker"]

NAMESPACE: Final = chart.NAMESPACE
"""Where the lab's porterlb lives, as the static manifest puts it."""

FIELD_MANAGER: Final = "porterlb-lab"

TOKEN_SECONDS: Final = 7 * 24 * 3600
"""A week: longer than any lab lives (a kubelet would refresh an hourly token instead; the
lab writes the token once)."""

COMPONENT_LABEL: Final = "app.kubernetes.io/component"


def kubeconfig(directory: Path, role: Role) -> Path:
    """The kubeconfig the lab's processes of `role` run with (`directory`: the lab's state)."""
    return directory / "credentials" / f"{role}.kubeconfig"


async def grant(
    client: lightkube.AsyncClient, admin: Path, directory: Path, *, namespace: str = NAMESPACE
) -> None:
    """Create `namespace`, apply the chart's ServiceAccounts, RBAC and Secret into it, and
    write each role's kubeconfig (:func:`kubeconfig`): the cluster of the `admin` kubeconfig,
    the user a token of the role's ServiceAccount.

    Raises BinariesMissing without helm, InvalidSpec if the API refuses an object or a token.
    """
    objects = chart.access_objects(namespace)
    await install(client, objects, namespace=namespace)
    roles: tuple[Role, ...] = ("manager", "speaker")
    for role in roles:
        bearer = await token(client, service_account(objects, role), namespace=namespace)
        path = kubeconfig(directory, role)
        write(path, admin, bearer, user=f"porterlb-{role}", namespace=namespace)


async def install(
    client: lightkube.AsyncClient,
    objects: list[dict[str, Any]],
    *,
    namespace: str = NAMESPACE,
) -> None:
    """Create `namespace` and apply `objects` (server-side). Raises InvalidSpec."""
    try:
        await client.create(resources.Namespace(metadata=ObjectMeta(name=namespace)))
    except ApiError as error:
        if error.status.code != 409:
            raise errors.InvalidSpec(f"namespace {namespace}: {error.status.message}") from error
    for manifest in objects:
        what = f"{manifest['kind']} {manifest['metadata']['name']}"
        try:
            await client.apply(codecs.from_dict(manifest), field_manager=FIELD_MANAGER, force=True)
        except ApiError as error:
            raise errors.InvalidSpec(f"{what}: not applied: {error.status.message}") from error


def service_account(objects: list[dict[str, Any]], role: Role) -> str:
    """The name of `role`'s ServiceAccount among the chart's `objects`. Raises InvalidSpec."""
    for manifest in objects:
        labels = manifest["metadata"].get("labels") or {}
        if manifest["kind"] == "ServiceAccount" and labels.get(COMPONENT_LABEL) == role:
            return str(manifest["metadata"]["name"])
    raise errors.InvalidSpec(f"the chart renders no ServiceAccount for the {role}")


async def token(
    client: lightkube.AsyncClient,
    account: str,
    *,
    namespace: str = NAMESPACE,
    seconds: int = TOKEN_SECONDS,
) -> str:
    """A TokenRequest token of ServiceAccount `namespace/account`. Raises InvalidSpec."""
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds},
    }
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
    reply = await kube_client.http(client).post(path, json=request)
    if reply.status_code != 201:
        raise errors.InvalidSpec(
            f"ServiceAccount {namespace}/{account}: no token: {reply.status_code} {reply.text}"
        )
    return str(reply.json()["status"]["token"])


def write(path: Path, admin: Path, bearer: str, *, user: str, namespace: str) -> Path:
    """Write a kubeconfig at `path`: the current cluster of `admin`, authenticated by `bearer`,
    its context in `namespace` (what a pod's service account namespace file says)."""
    config: dict[str, Any] = yaml.safe_load(admin.read_text())
    current = {c["name"]: c["context"] for c in config["contexts"]}[config["current-context"]]
    cluster = {c["name"]: c for c in config["clusters"]}[current["cluster"]]
    written = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": bearer}}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": cluster["name"], "user": user, "namespace": namespace},
            }
        ],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(written))
    return path
