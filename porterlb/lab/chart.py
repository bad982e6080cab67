"""porterlb's Helm chart rendered by a real ``helm``: the static manifest, the lab's RBAC, tests.

``charts/porterlb`` is the one source of every install object. ``deploy/porterlb.yaml`` is
``helm template`` of it with :data:`STATIC_VALUES` (run ``scripts/render-manifests.sh``; a
test fails when the two differ), and the lab applies the chart's ServiceAccounts, RBAC and
heartbeat Secret, rendered the same way, so that its manager and speakers run with exactly
the permissions a cluster grants them.

``python -m porterlb.lab.chart`` prints the static manifest.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from porterlb import errors
from porterlb.lab import binaries

ROOT: Final = Path(__file__).parents[2]
CHART: Final = ROOT / "charts" / "porterlb"
MANIFEST: Final = ROOT / "deploy" / "porterlb.yaml"

NAMESPACE: Final = "porterlb-system"
RELEASE: Final = "porterlb"

KUBE_VERSION: Final = "v1.36.3"
"""The cluster version ``helm template`` assumes (its default may predate the chart's
``kubeVersion``); the version of the lab's kube-apiserver (binaries.K8S_VERSION)."""

STATIC_VALUES: Final = {"namespace.create": "true", "heartbeat.secretCreatedBy": "manager"}
"""The static manifest renders its namespace, and leaves the heartbeat key to the manager: a
key rendered once would be the same in every cluster the manifest is applied to."""

HEADER: Final = (
    "# porterlb: `kubectl apply -f` this file to install porterlb in namespace"
    f" {NAMESPACE}.\n"
    "# Rendered from charts/porterlb by scripts/render-manifests.sh: edit the chart, not this"
    " file.\n"
)

ACCESS_KINDS: Final = frozenset(
    {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Secret"}
)
"""What the lab applies of the chart: who porterlb's processes are and what they may do."""


def template(
    values: Mapping[str, str] | None = None,
    *,
    namespace: str = NAMESPACE,
    release: str = RELEASE,
) -> str:
    """``helm template`` of the chart with ``--set`` `values`.

    Raises BinariesMissing if helm is not built, InvalidSpec with helm's message if it fails.
    """
    argv = [str(binaries.helm()), "template", release, str(CHART), "--namespace", namespace]
    argv += ["--kube-version", KUBE_VERSION]
    for key, value in (values or {}).items():
        argv += ["--set", f"{key}={value}"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise errors.InvalidSpec(f"helm template {CHART}: {done.stderr.strip()}")
    return done.stdout


def static_manifest() -> str:
    """What ``deploy/porterlb.yaml`` must hold."""
    return HEADER + template(STATIC_VALUES)


def documents(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML text (empty documents skipped)."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def access_objects(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The chart's ServiceAccounts, RBAC and heartbeat Secret, installed in `namespace`."""
    return [doc for doc in documents(template(namespace=namespace)) if doc["kind"] in ACCESS_KINDS]


if __name__ == "__main__":
    sys.stdout.write(static_manifest())
