"""The one place porterlb builds its Kubernetes client.

lightkube's async client (httpx2 underneath) is the client; objects cross into the rest of
porterlb as plain dicts, so only ``kube/`` knows lightkube's types. Its requests go out over
aiohttp (:mod:`porterlb.kube.transport`), with the TLS context lightkube builds from the
same kubeconfig. In a pod (no kubeconfig) the configuration comes from the service account
(:class:`InCluster`), and its token is read again before it expires (:class:`TokenFile`).

The hot paths (the reflector's list and watch, the writers, the Event poster) skip lightkube's
models: they send and read JSON through :func:`http`, the very httpx2 client lightkube built
from the kubeconfig (same credentials, TLS and connection pool), the writes by :func:`send`,
which also skips httpx2's models where it can. Building a model for every
request and decoding every response into one took 55% of the manager's CPU in the issue-2
benchmark (13 ms per Service), for objects that porterlb reads as dicts anyway.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any, Final

import httpx2
import lightkube
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import Cluster, User
from lightkube.core.exceptions import ConfigError
from lightkube.core.resource import api_info

from porterlb.api import wellknown
from porterlb.kube import transport

REQUEST_TIMEOUT = httpx2.Timeout(10.0, connect=5.0)
"""Every non-watch request gives up after 10 s: a stuck request must not stall a worker."""

JSON = "application/json"

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where the kubelet mounts a pod's service-account ``token``, ``ca.crt`` and ``namespace``."""

TOKEN_REREAD: Final = 60.0
"""Seconds after which the token file is read again even if its mtime looks unchanged:
client-go's ``cachingTokenSource`` period. Bound tokens are refreshed by the kubelet at 80%
of their (default one hour) lifetime, so a minute is far inside the margin."""


class NoConfig(Exception):
    """Neither a kubeconfig nor an in-cluster service account: the message says which was
    looked for and what to do."""


@dataclasses.dataclass(frozen=True, slots=True)
class InCluster:
    """The in-cluster configuration's sources: the service-account directory and the API
    server's address, which the kubelet puts in every pod's environment."""

    directory: Path = SERVICE_ACCOUNT_DIR
    host: str | None = None
    port: str | None = None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], directory: Path = SERVICE_ACCOUNT_DIR
    ) -> InCluster:
        return cls(
            directory=directory,
            host=environ.get("KUBERNETES_SERVICE_HOST"),
            port=environ.get("KUBERNETES_SERVICE_PORT"),
        )

    def namespace(self) -> str | None:
        """The pod's namespace, as the service account's ``namespace`` file names it."""
        try:
            return (self.directory / "namespace").read_text().strip() or None
        except OSError:
            return None

    def config(self) -> SingleConfig:
        """Raises NoConfig naming what is missing."""
        token = self.directory / "token"
        if not self.host or not self.port or not token.is_file():
            missing = [
                *(["$KUBERNETES_SERVICE_HOST/PORT"] if not self.host or not self.port else []),
                *([str(token)] if not token.is_file() else []),
            ]
            raise NoConfig(
                f"no Kubernetes configuration: no --kubeconfig given and not in a pod"
                f" ({' and '.join(missing)} missing); pass --kubeconfig PATH"
            )
        host = f"[{self.host}]" if ":" in self.host else self.host
        config = KubeConfig.from_one(
            cluster=Cluster(
                server=f"https://{host}:{self.port}",
                certificate_auth=str(self.directory / "ca.crt"),
            ),
            user=User(token_file=str(token)),
            namespace=self.namespace(),
        ).get()
        assert config is not None  # from_one makes its one context the current one
        return config


def connect(
    kubeconfig: Path | None,
    *,
    timeout: httpx2.Timeout = REQUEST_TIMEOUT,
    in_cluster: InCluster | None = None,
    via: transport.Kind = "aiohttp",
) -> lightkube.AsyncClient:
    """A client from `kubeconfig`, or the in-cluster service account when it is None, whose
    requests go out `via` that transport.

    Raises NoConfig when there is neither, ConfigError when the kubeconfig is unusable.
    """
    with transport.without_http2():  # the TLS context loads httpcore2: not h2 with it
        config, tls = context(kubeconfig, in_cluster=in_cluster)
        client = lightkube.AsyncClient(
            config=config,
            field_manager=wellknown.FIELD_MANAGER,
            timeout=timeout,
            transport=transport.make(via, tls=tls),
        )
    if config.user is not None and config.user.token_file is not None:
        http(client).auth = TokenFile(Path(config.abs_file(config.user.token_file)))
    return client


def context(
    kubeconfig: Path | None, *, in_cluster: InCluster | None = None
) -> tuple[SingleConfig, ssl.SSLContext]:
    """The current context of `kubeconfig` (the service account's when it is None), and the
    TLS context for its cluster: its CA and any client certificate. Raises NoConfig when
    `kubeconfig` is None and this is no pod, ConfigError if the context names no user."""
    if kubeconfig is not None:
        single = KubeConfig.from_file(kubeconfig).get()
    else:
        single = (in_cluster or InCluster.from_environ(os.environ)).config()
    if single is None or single.user is None:
        raise ConfigError(f"{kubeconfig or 'service account'}: the current context names no user")
    return single, client_adapter.verify_cluster(single.cluster, single.user, single.abs_file)


def context_namespace(kubeconfig: Path) -> str | None:
    """The namespace the current context of `kubeconfig` names, if it names one."""
    config = KubeConfig.from_file(kubeconfig)
    current = config.contexts.get(config.current_context or "")
    return current.namespace if current is not None else None


class TokenFile(httpx2.Auth):
    """A bearer token read from a file, read again before it expires: when the file changes
    (the kubelet replaces it atomically, so its mtime moves), every :data:`TOKEN_REREAD`
    seconds in any case, and once more when the API server answers 401 anyway.

    lightkube's own token-file auth re-reads only on a 401, so every rotation would cost one
    refused request, and a watch opened with an expired token fails.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._bearer = ""
        self._mtime_ns = -1
        self._read_at = -TOKEN_REREAD

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = self._current()
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = self._read()
            yield request

    def header(self) -> str:
        """The Authorization header for the next request (re-read when due)."""
        return self._current()

    def _current(self) -> str:
        try:
            mtime_ns = self._path.stat().st_mtime_ns
        except OSError:
            mtime_ns = self._mtime_ns  # read below names the failure
        if mtime_ns != self._mtime_ns or self._clock() - self._read_at >= TOKEN_REREAD:
            return self._read()
        return self._bearer

    def _read(self) -> str:
        try:
            stat = self._path.stat()
            token = self._path.read_text().strip()
        except OSError as error:
            if self._bearer:
                return self._bearer  # mid-rotation: the last token may still be valid
            raise ConfigError(f"service-account token {self._path}: {error}") from error
        self._bearer = f"Bearer {token}"
        self._mtime_ns, self._read_at = stat.st_mtime_ns, self._clock()
        return self._bearer


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """A whole reply to a request sent by :func:`send`."""

    status_code: int
    reason_phrase: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


async def send(
    client: lightkube.AsyncClient,
    method: str,
    path: str,
    query: str,
    body: bytes,
    content_type: str,
) -> Reply:
    """Send a small JSON request for `path` (and `query`) to the API and read its whole reply.

    Raises httpx2.TransportError. The manager's writes (a status patch per Service, its
    Events) skip httpx2's request and response models when the client's transport can send
    on its own (:class:`porterlb.kube.transport.Sends`: aiohttp's) and its credentials are a
    header that needs no reply to compute: httpx2's layers above the transport were 13 % of
    the manager's CPU at 2,000 Services (bench.control_plane, sampled by py-spy). Any other
    client, and a request the API server answers 401 (a token file rotated), go through
    httpx2, whose auth flow knows what to do.
    """
    inner = http(client)
    base = str(inner.base_url).rstrip("/")
    target = f"{base}{path}?{query}" if query else f"{base}{path}"
    fast = _fast_path(inner)
    if fast is not None:
        sender, authorization = fast
        headers = {"Content-Type": content_type}
        if authorization is not None:
            headers["Authorization"] = authorization()
        status, reason, content = await sender.send(
            method, target, headers, body, REQUEST_TIMEOUT.read or 10.0
        )
        if status != 401:
            if status >= 400:
                transport.count(method, httpx2.URL(target), str(status))
            return Reply(status, reason, content)
    reply = await inner.request(
        method, httpx2.URL(target), content=body, headers={"Content-Type": content_type}
    )
    return Reply(reply.status_code, reply.reason_phrase, reply.content)


def _fast_path(
    inner: httpx2.AsyncClient,
) -> tuple[transport.Sends, Callable[[], str] | None] | None:
    """The transport under `inner` that sends on its own, and how to make the Authorization
    header (None: send none); None when the request must go through httpx2."""
    counted = inner._transport
    if not isinstance(counted, transport.Counted) or inner._mounts:
        return None
    sender = counted.inner
    if not isinstance(sender, transport.Sends):
        return None
    auth = inner.auth
    if auth is None:
        return sender, None
    if isinstance(auth, TokenFile):
        return sender, auth.header
    if isinstance(auth, client_adapter.BearerAuth):
        bearer = auth._bearer
        return sender, lambda: bearer
    if isinstance(auth, httpx2.BasicAuth):
        basic = auth._auth_header
        return sender, lambda: basic
    return None  # an exec plugin, or a flow not known here: httpx2 runs it


def http(client: lightkube.AsyncClient) -> httpx2.AsyncClient:
    """The httpx2 client under `client`: its base URL, credentials and connection pool.

    lightkube exposes no accessor; the attribute path is pinned by ``uv.lock`` and checked by
    every integration test, which all go through here.
    """
    inner: httpx2.AsyncClient = client._client._client
    return inner


def url(client: lightkube.AsyncClient, path: str, query: str = "") -> httpx2.URL:
    """The absolute URL of `path` (and `query`) under `client`'s base URL.

    For requests sent per Service: httpx2 parses a relative URL twice to join it to the base,
    and once more to add ``params``, in pure Python; a URL parsed once cuts its CPU per request
    from 0.24 to 0.15 ms (a PATCH through httpx2, transport aside).
    """
    base = str(http(client).base_url).rstrip("/")
    return httpx2.URL(f"{base}{path}?{query}" if query else f"{base}{path}")


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
