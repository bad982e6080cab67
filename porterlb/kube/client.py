"""The one place porterlb builds its Kubernetes client.

lightkube's async client (httpx2 underneath) is the client; objects cross into the rest of
porterlb as plain dicts, so only ``kube/`` knows lightkube's types. Its requests go out over
aiohttp (:mod:`porterlb.kube.transport`), with the TLS context lightkube builds from the
same kubeconfig.

The hot paths (the reflector's list and watch, the writers, the Event poster) skip lightkube's
models: they send and read JSON through :func:`http`, the very httpx2 client lightkube built
from the kubeconfig (same credentials, TLS and connection pool). Building a model for every
request and decoding every response into one took 55% of the manager's CPU in the issue-2
benchmark (13 ms per Service), for objects that porterlb reads as dicts anyway.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx2
import lightkube
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError
from lightkube.core.resource import api_info

from porterlb.api import wellknown
from porterlb.kube import transport

REQUEST_TIMEOUT = httpx2.Timeout(10.0, connect=5.0)
"""Every non-watch request gives up after 10 s: a stuck request must not stall a worker."""

JSON = "application/json"


def connect(
    kubeconfig: Path | None, *, timeout: httpx2.Timeout = REQUEST_TIMEOUT
) -> lightkube.AsyncClient:
    """A client from `kubeconfig`, or the in-cluster service account when it is None."""
    config, tls = context(kubeconfig)
    return lightkube.AsyncClient(
        config=config,
        field_manager=wellknown.FIELD_MANAGER,
        timeout=timeout,
        transport=transport.AiohttpTransport(tls=tls),
    )


def context(kubeconfig: Path | None) -> tuple[SingleConfig, ssl.SSLContext]:
    """The current context of `kubeconfig` (the service account's when it is None), and the
    TLS context for its cluster: its CA and any client certificate. Raises ConfigError if the
    context names no user."""
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_service_account()
    single = config.get()
    if single is None or single.user is None:
        raise ConfigError(f"{kubeconfig or 'service account'}: the current context names no user")
    return single, client_adapter.verify_cluster(single.cluster, single.user, single.abs_file)


def http(client: lightkube.AsyncClient) -> httpx2.AsyncClient:
    """The httpx2 client under `client`: its base URL, credentials and connection pool.

    lightkube exposes no accessor; the attribute path is pinned by ``uv.lock`` and checked by
    every integration test, which all go through here.
    """
    inner: httpx2.AsyncClient = client._client._client
    return inner


def path(resource: Any, *, namespace: str | None = None, name: str | None = None) -> str:
    """The URL path of `resource` (a lightkube class, maybe a ``.Status`` subresource).

    With `name`, the object (or its subresource); without, the collection, across all
    namespaces when `namespace` is None and the kind is namespaced.
    """
    info = api_info(resource)
    group, version = info.resource.group, info.resource.version
    parts = [f"/apis/{group}/{version}" if group else f"/api/{version}"]
    if namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(info.plural)
    if name is not None:
        parts.append(name)
        if info.action:
            parts.append(info.action)
    return "/".join(parts)
