"""An httpx2 transport that sends over aiohttp: the manager's, with a C HTTP parser.

lightkube builds an httpx2 client, whose default transport (httpcore2 + h11 over anyio)
parses HTTP in Python: ~2 ms of CPU per request in the issue-2 benchmark, most of the
manager's cost per Service. aiohttp parses HTTP in C and pools connections cheaply, so the
manager gives lightkube this transport instead (:func:`porterlb.kube.transport.make`); only
the manager imports this module, and so aiohttp. Everything above the transport stays
httpx2's: the base URL, the credentials (a static token, a token file re-read when the API
answers 401, an exec plugin, basic auth), timeouts and response decoding. Only TLS moves
here: the context, with the cluster's CA and any client certificate, is built by lightkube
from the same kubeconfig (:func:`porterlb.kube.client.connect`).

aiohttp's errors are translated into httpx2's at this one boundary (:func:`_mapped`), so the
callers keep catching ``httpx2.TransportError`` (and :class:`porterlb.kube.transport.Counted`
counts them). Responses reach httpx2 as undecoded bytes (``auto_decompress=False``): httpx2
decodes them as it does for its own transport.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping

import aiohttp
import httpx2

CONNECTIONS = 100
"""Connections per client, aiohttp's default; requests beyond it wait for one to free."""


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """Sends httpx2 requests with one aiohttp session, opened on the first request."""

    def __init__(self, *, tls: ssl.SSLContext) -> None:
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Opened lazily: an aiohttp session belongs to the loop it is created in.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._tls, limit=CONNECTIONS),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request`; the response body streams. Raises httpx2.TransportError."""
        timeout = request.extensions.get("timeout") or {}
        body = await request.aread()
        with _mapped(request):
            reply = await self._open().request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                # httpx2's write timeout has no aiohttp counterpart: a request body here is
                # one small JSON document, and a server that stops reading stops answering.
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        return httpx2.Response(
            reply.status,
            headers=reply.raw_headers,
            stream=_Body(reply, request),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (reply.reason or "").encode(),
            },
        )

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, within: float
    ) -> tuple[int, str, bytes]:
        """Send one small request and read its whole reply: (status, reason, body).

        For the manager's writes (:func:`porterlb.kube.client.send`): no httpx2 request or
        response is built; `within` seconds before it gives up. Raises httpx2.TransportError.
        """
        with _mapped(None):
            async with self._open().request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=within),
            ) as reply:
                return reply.status, reply.reason or "", await reply.read()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx2.AsyncByteStream):
    """A response body as it arrives; closing it early drops the connection."""

    def __init__(self, reply: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._reply = reply
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped(self._request):
            async for chunk in self._reply.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # Back to the pool when read to the end, closed otherwise (aiohttp decides).
        self._reply.release()


@contextlib.contextmanager
def _mapped(request: httpx2.Request | None) -> Iterator[None]:
    """Raise aiohttp's errors as the httpx2 errors that name the same failure."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx2.ConnectTimeout(str(error), request=request) from error
    except (aiohttp.SocketTimeoutError, TimeoutError) as error:
        raise httpx2.ReadTimeout(str(error) or "read timed out", request=request) from error
    except aiohttp.ClientConnectorError as error:
        raise httpx2.ConnectError(str(error), request=request) from error
    except aiohttp.ClientError as error:
        raise httpx2.ReadError(str(error) or type(error).__name__, request=request) from error
