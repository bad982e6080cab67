"""The transport under lightkube's httpx2 client, chosen by the role's load, and its counting.

The manager sends a request or two per Service it serves: it takes the aiohttp transport
(:mod:`porterlb.kube.aiohttp_transport`), whose C parser halves its CPU per request. A speaker
sends few (its watches, a Lease read while fencing, Events): it takes httpx2's own transport,
which the httpx2 client loads anyway, and so never imports aiohttp, ~9 MB of a speaker's RSS
(with yarl, multidict, attrs and the email package it brings; ``python -X importtime``), a
sixth of its memory budget (bench/speaker_scale.py). Either way proxies from the environment
are ignored, as the aiohttp transport always did: the client reaches the API server directly.

Neither speaks HTTP/2, yet httpcore2 (under httpx2's transport) imports its HTTP/2 connection
whenever ``h2`` is installed, as it is (lightkube requires ``httpx2[http2]``): h2, hpack and
hyperframe, twice (sync and async), ~3.5 MB of a speaker's RSS. A client is built within
:func:`without_http2` (:func:`porterlb.kube.client.connect`): ``h2`` does not load while
httpcore2 does, which httpcore2 takes as HTTP/2 not installed: a transport asking for it would
fail, and none here does.

:class:`Counted` wraps both, so every request that fails, whoever sent it, is counted
(``porterlb_api_request_errors_total``) by the same rule: an HTTP error by its status, no
answer at all as ``transport``.
"""

from __future__ import annotations

import contextlib
import ssl
import sys
from collections.abc import Iterator, Mapping
from typing import Literal, Protocol, runtime_checkable

import httpx2

from porterlb.kube import metrics

Kind = Literal["aiohttp", "httpx2"]

HTTP2 = "h2"
"""The package httpcore2 speaks HTTP/2 with (and loads hpack and hyperframe)."""


def make(kind: Kind, *, tls: ssl.SSLContext) -> httpx2.AsyncBaseTransport:
    """A counted transport of `kind` that trusts what `tls` trusts."""
    inner: httpx2.AsyncBaseTransport
    if kind == "aiohttp":
        # Here, not at the top: only a role that asks for aiohttp pays for its import.
        from porterlb.kube import aiohttp_transport

        inner = aiohttp_transport.AiohttpTransport(tls=tls)
    else:
        inner = httpx2.AsyncHTTPTransport(verify=tls, trust_env=False)
    return Counted(inner)


@runtime_checkable
class Sends(Protocol):
    """A transport that also sends a small request and reads its reply without httpx2's
    models (:meth:`porterlb.kube.aiohttp_transport.AiohttpTransport.send`)."""

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, within: float
    ) -> tuple[int, str, bytes]: ...


@contextlib.contextmanager
def without_http2() -> Iterator[None]:
    """Within the block, importing ``h2`` fails (``ImportError``), unless it is loaded already:
    build a client here, whose TLS context or transport first imports httpcore2 (module
    docstring). ``h2`` is importable again after it, for whatever else the process runs."""
    if HTTP2 in sys.modules:
        yield
        return
    sys.modules[HTTP2] = None  # type: ignore[assignment]  # the import system's "halted"
    try:
        yield
    finally:
        if sys.modules.get(HTTP2, ...) is None:
            del sys.modules[HTTP2]


class Counted(httpx2.AsyncBaseTransport):
    """Counts the requests `inner` fails to send or the API server answers with an error."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` through the inner transport. Raises httpx2.TransportError."""
        try:
            response = await self.inner.handle_async_request(request)
        except httpx2.TransportError:
            count(request.method, request.url, "transport")
            raise
        if response.status_code >= 400:
            count(request.method, request.url, str(response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def describe(method: str, url: httpx2.URL) -> tuple[str, str]:
    """The (verb, resource) of a request to the API, as the metrics label them:
    ``("patch", "services/status")``, ``("watch", "eips")``."""
    parts = url.path.strip("/").split("/")
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]  # /api/v1, /apis/GROUP/VERSION
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]  # a namespaced resource, not the Namespace itself
    resource = "/".join(rest[:1] + rest[2:3]) or "discovery"
    named = len(rest) > 1
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    if verb is None:
        watch = url.params.get("watch") in ("true", "1")
        verb = "get" if named else "watch" if watch else "list"
    return verb, resource


def count(method: str, url: httpx2.URL, code: str) -> None:
    """Count a request that failed with `code` (an HTTP status, or ``transport``)."""
    metrics.API_REQUEST_ERRORS.labels(*describe(method, url), code).inc()
