"""List, then watch, one kind of object into a local cache.

Why our own loop instead of lightkube's watch: lightkube restarts a watch that answered
410 Gone *without* a resourceVersion, which replays every object as ADDED but never reports
the ones deleted during the gap. Here any watch failure goes back to a full list, and the
new list is diffed against the cache, so deletions are never missed. A watch the server
ends at its timeout is resumed from the last resourceVersion seen (bookmarks keep it
fresh), as client-go's reflector does. Every change calls each ``on_change(key)`` with the
object's key; the caller reads the cache (fetch, then decide).

Objects are read as raw JSON through the client's httpx2 client (:func:`client.http`) and
cached as dicts without ``metadata.managedFields``, which porterlb never reads and which is
about half of a Service's bytes: decoding into lightkube models and back to dicts was most
of the manager's CPU in the issue-2 benchmark. msgspec decodes them: twice as fast as the
json module, and it shares the strings of repeated keys, so a cached Service takes 3.9 KB
instead of 5.8 KB (18 MB of the manager's RSS at 10,000 Services).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any

import httpx2
import lightkube
import msgspec

from porterlb.kube import client as kube_client
from porterlb.kube import metrics

log = logging.getLogger(__name__)

WATCH_TIMEOUT = 300
"""Server-side watch timeout in seconds (5 minutes, as client-go's reflector uses)."""

WATCH_SILENCE = WATCH_TIMEOUT + 30
"""Seconds without a byte after which a watch counts as dead: the server ends every watch
after WATCH_TIMEOUT and sends bookmarks meanwhile, so silence past it is a lost connection."""

LIST_PAGE = 500
"""Objects per list request, as client-go's pager asks for."""

RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Back-off between failed lists, in seconds; the last one repeats."""


class WatchFailed(Exception):
    """The API answered a list or watch with an error (410 Gone included): list again."""


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` for a namespaced object, ``name`` for a cluster-scoped one."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def version(obj: Mapping[str, Any]) -> str:
    """The ``metadata.resourceVersion`` of a cached object: what a decision was read from."""
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` without what no part of porterlb reads (``metadata.managedFields``)."""
    meta = obj.get("metadata")
    if meta:
        meta.pop("managedFields", None)
    return obj


class Reflector:
    """A cache of one resource kind, kept current by list + watch."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        resource: Any,
        *,
        on_change: Callable[[str], None],
        name: str,
        namespace: str | None = None,
        field_selector: str | None = None,
        keep: Callable[[dict[str, Any]], dict[str, Any]] = slim,
    ) -> None:
        """`namespace` None: a namespaced kind is listed and watched across all namespaces.
        `field_selector` (``metadata.name=NAME``) narrows it to one object, which RBAC can
        then grant by name. `keep` is what the cache holds of each object (by default all
        but ``managedFields``): a reader of a few fields keeps only those."""
        self.client = client
        self.resource = resource
        self._keep = keep
        self._listeners = [on_change]
        self.name = name
        self.cache: dict[str, dict[str, Any]] = {}
        self._path = kube_client.path(resource, namespace=namespace)
        self._selector = {"fieldSelector": field_selector} if field_selector else {}
        self.synced = asyncio.Event()
        self.watching = asyncio.Event()
        """Set while a watch stream is established (it proves nothing about freshness: a
        silently cut stream stays "established" for minutes)."""
        metrics.WATCH_SYNCED.labels(name).set(0)
        metrics.WATCH_ESTABLISHED.labels(name).set(0)
        self.revision = 0
        """The resourceVersion the cache is known to reflect everything up to: the latest
        list's, event's or bookmark's (kube-apiserver's are etcd revisions: integers that
        grow across all kinds; 0 until the first list). The speaker's fence compares it with
        the leader's must-see revision (docs/fencing.md)."""
        self.last_event = 0
        """The highest resourceVersion of an object listed or an event received: a revision
        every other watcher of this kind also receives (a list's or bookmark's may not be)."""

    def subscribe(self, on_change: Callable[[str], None]) -> None:
        """Also call `on_change` with the key of every changed object."""
        self._listeners.append(on_change)

    def _changed(self, key: str) -> None:
        for listener in self._listeners:
            listener(key)

    async def run(self) -> None:
        """Keep the cache current forever; only cancellation ends it."""
        failures = 0
        while True:
            try:
                version = await self._list()
                failures = 0
                while True:
                    version = await self._watch(version)
            except (WatchFailed, httpx2.HTTPError, OSError, ValueError) as error:
                self.watching.clear()
                metrics.WATCH_ESTABLISHED.labels(self.name).set(0)
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning(
                    "%s: list/watch failed, relisting in %.1f s: %s", self.name, delay, error
                )
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        http = kube_client.http(self.client)
        fresh: dict[str, dict[str, Any]] = {}
        params = {"limit": str(LIST_PAGE), **self._selector}
        newest = 0
        while True:
            metrics.API_REQUESTS.labels("list", self.name).inc()
            reply = await http.get(self._path, params=params)
            if reply.status_code != 200:
                raise WatchFailed(f"list: {reply.status_code} {reply.text[:200]}")
            page = msgspec.json.decode(reply.content)
            for item in page.get("items") or ():
                newest = max(newest, object_revision(item))
                fresh[object_key(item)] = self._keep(item)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            params = {"limit": str(LIST_PAGE), "continue": meta["continue"], **self._selector}
        old, self.cache = self.cache, fresh
        version = str(meta.get("resourceVersion", ""))
        self._seen(version, newest)
        for key in old.keys() | fresh.keys():
            if old.get(key) != fresh.get(key):
                self._changed(key)
        self.synced.set()
        metrics.WATCH_SYNCED.labels(self.name).set(1)
        return version

    def _seen(self, version: str | None, event: int) -> None:
        self.revision = max(self.revision, _number(version))
        self.last_event = max(self.last_event, event)

    async def _watch(self, version: str) -> str:
        """Apply one watch stream from `version`; the last resourceVersion seen when it ends."""
        metrics.API_REQUESTS.labels("watch", self.name).inc()
        params = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT),
            **self._selector,
        }
        timeout = httpx2.Timeout(kube_client.REQUEST_TIMEOUT.connect, read=WATCH_SILENCE)
        # `async with` closes the stream (and its HTTP response) at once when cancelled, not
        # at garbage collection, which would leave the connection to a client already closed.
        async with kube_client.http(self.client).stream(
            "GET", self._path, params=params, timeout=timeout
        ) as reply:
            if reply.status_code != 200:
                await reply.aread()
                raise WatchFailed(f"watch: {reply.status_code} {reply.text[:200]}")
            self.watching.set()
            metrics.WATCH_ESTABLISHED.labels(self.name).set(1)
            async for line in lines(reply.aiter_bytes()):
                version = self.receive(line) or version
        return version

    def receive(self, line: bytes) -> str | None:
        """Apply one watch event, a line as the API server sends it; its resourceVersion.

        Raises WatchFailed for an ERROR event, ValueError for a line that is not JSON."""
        event = msgspec.json.decode(line)
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            raise WatchFailed(f"watch: {obj.get('code')} {obj.get('message')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self._seen(version, 0)
            return version
        self._seen(version, _number(version))
        key = object_key(obj)
        if kind == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = self._keep(obj)
        self._changed(key)
        return version


def _number(version: str | None) -> int:
    """A resourceVersion as the integer kube-apiserver makes it (0 if it is not one)."""
    return int(version) if version and version.isdigit() else 0


def object_revision(obj: Mapping[str, Any]) -> int:
    """An object's resourceVersion as the etcd revision kube-apiserver makes it (0: not one)."""
    return _number((obj.get("metadata") or {}).get("resourceVersion"))


async def lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The non-empty lines of a byte stream cut anywhere (a watch sends one event a line)."""
    pending = bytearray()
    async for chunk in chunks:
        if b"\n" not in chunk:
            pending += chunk
            continue
        first, *lines, rest = chunk.split(b"\n")
        pending += first
        for line in (bytes(pending), *lines):
            if line.strip():
                yield line
        pending = bytearray(rest)
    if pending.strip():
        yield bytes(pending)
