"""``porterlb status``: read what porterlb recorded in the API and print it.

Only reads (lists of Eips, Services, Nodes and Service Events, and one ConfigMap), with
whatever credentials the kubeconfig gives, as kubectl finds them: ``--kubeconfig``, else
``$KUBECONFIG``, else ``~/.kube/config``, else the in-cluster service account. What to say is
decided by :mod:`porterlb.status.report`; this module fetches and fails with one line that
names what is wrong (no credentials, API server unreachable, the Eip CRD missing).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any, Final

import httpx2
import msgspec
from lightkube.core.exceptions import ConfigError

from porterlb.kube import client as kube_client
from porterlb.kube import resources, writers
from porterlb.status import report

PEERS_CONFIGMAP: Final = "porterlb-peers"
"""The ConfigMap, in the manager's namespace, in which speakers may publish their MACs
(``data``: node name -> MAC). Read when it exists; without it, MACs show as ``-``."""

DEFAULT_NAMESPACE: Final = "porterlb-system"
"""Where the chart and ``deploy/porterlb.yaml`` install porterlb."""

PAGE: Final = 500


class StatusError(Exception):
    """Status cannot be shown; the message is the one line to print."""


class Forbidden(StatusError):
    """The credentials may not list that kind."""


def add_parser_to(roles: Any) -> None:
    """Add ``status`` to the subcommands of ``porterlb``."""
    status = roles.add_parser("status", help="show pools, Services and their nodes")
    status.add_argument(
        "--kubeconfig",
        type=Path,
        help="default: $KUBECONFIG, else ~/.kube/config, else the in-cluster service account",
    )
    status.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE", DEFAULT_NAMESPACE),
        help="porterlb's namespace, for the ConfigMap of MACs (default: %(default)s)",
    )
    status.add_argument("--json", action="store_true", help="one JSON document, stable keys")
    status.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        found = asyncio.run(fetch(kubeconfig_path(args.kubeconfig), namespace=args.namespace))
    except StatusError as error:
        print(f"porterlb status: {error}", file=sys.stderr)
        return 1
    now = datetime.datetime.now(datetime.UTC)
    built = report.build(now=now, **found)
    if args.json:
        print(json.dumps(built, indent=2, sort_keys=True))
    else:
        print("\n".join(report.lines(built, now=now)))
    return 0


def kubeconfig_path(given: Path | None) -> Path | None:
    """The kubeconfig kubectl would use; None: the in-cluster service account."""
    if given is not None:
        return given
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if env:
        return Path(env)
    default = Path.home() / ".kube" / "config"
    return default if default.exists() else None


async def fetch(kubeconfig: Path | None, *, namespace: str) -> dict[str, Any]:
    """Everything :func:`report.build` reads but the time. Raises StatusError."""
    try:
        client = kube_client.connect(kubeconfig, via="httpx2")
    except (ConfigError, OSError, KeyError, ValueError) as error:
        where = kubeconfig or "the in-cluster service account"
        raise StatusError(
            f"no usable Kubernetes credentials in {where}: {error}"
            " (give --kubeconfig PATH or set KUBECONFIG)"
        ) from error
    http = kube_client.http(client)
    server = str(http.base_url)
    try:
        eips = await _list(http, kube_client.path(resources.Eip), what="Eips")
        services = await _list(http, kube_client.path(resources.Service), what="Services")
        nodes = await _list(http, kube_client.path(resources.Node), what="Nodes")
        try:
            events = await _list(
                http,
                kube_client.path(resources.Event),
                what="Events",
                selector="involvedObject.kind=Service",
            )
        except Forbidden as forbidden:
            # The manager's own account may post Events but not list them: say what is
            # missing and show the rest (in-cluster, ``kubectl exec ... porterlb status``).
            print(f"porterlb status: {forbidden}; no since or last failover", file=sys.stderr)
            events = []
        macs = await _peers(http, f"/api/v1/namespaces/{namespace}/configmaps/{PEERS_CONFIGMAP}")
    except httpx2.TransportError as error:
        raise StatusError(f"cannot reach the API server at {server}: {error!r}") from error
    finally:
        await client.close()
    return {"eips": eips, "services": services, "nodes": nodes, "events": events, "macs": macs}


async def _list(
    http: httpx2.AsyncClient, path: str, *, what: str, selector: str | None = None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params = {"limit": str(PAGE)}
    if selector:
        params["fieldSelector"] = selector
    while True:
        reply = await http.get(path, params=params)
        if reply.status_code == 404 and what == "Eips":
            raise StatusError(
                "the Eip CRD (eips.network.kubesphere.io) is not installed: install porterlb"
                " (charts/porterlb or deploy/porterlb.yaml) first"
            )
        if reply.status_code != 200:
            message = writers.status_message(reply)
            failed = Forbidden if reply.status_code == 403 else StatusError
            raise failed(f"listing {what} at {path}: {reply.status_code} {message}")
        page = msgspec.json.decode(reply.content)
        items.extend(page.get("items") or ())
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items
        params["continue"] = token


async def _peers(http: httpx2.AsyncClient, path: str) -> dict[str, str]:
    """Node -> MAC from the peers ConfigMap; empty when it is absent or not readable."""
    reply = await http.get(path)
    if reply.status_code != 200:
        return {}
    data = msgspec.json.decode(reply.content).get("data") or {}
    return {str(node): str(mac) for node, mac in data.items()}
