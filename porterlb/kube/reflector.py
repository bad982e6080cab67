"""List, then watch, one kind of object into a local cache.

Why our own loop around lightkube's watch: lightkube restarts a watch that answered
410 Gone *without* a resourceVersion, which replays every object as ADDED but never reports
the ones deleted during the gap. Here any watch failure goes back to a full list, and the
new list is diffed against the cache, so deletions are never missed. Every change calls
each ``on_change(key)`` with the object's key; the caller reads the cache (fetch, then decide).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx2
import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource

from porterlb.kube import metrics

ALL_NAMESPACES = "*"

log = logging.getLogger(__name__)

WATCH_TIMEOUT = 300
"""Server-side watch timeout in seconds (5 minutes, as client-go's reflector uses)."""

RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Back-off between failed lists, in seconds; the last one repeats."""


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` for a namespaced object, ``name`` for a cluster-scoped one."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def _as_dict(obj: Any) -> dict[str, Any]:
    return dict(obj) if isinstance(obj, dict) else obj.to_dict()


class Reflector:
    """A cache of one resource kind, kept current by list + watch."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        resource: Any,
        *,
        on_change: Callable[[str], None],
        name: str,
    ) -> None:
        self.client = client
        self.resource = resource
        self._listeners = [on_change]
        self.name = name
        self.cache: dict[str, dict[str, Any]] = {}
        # lightkube lists a namespaced kind in the kubeconfig's namespace unless told "*".
        namespaced = issubclass(resource, NamespacedResource)
        self._namespace = ALL_NAMESPACES if namespaced else None
        self.synced = asyncio.Event()
        self.watching = asyncio.Event()
        """Set while a watch stream is established; the speaker's fence reads it."""

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
                await self._watch(version)
            except (ApiError, httpx2.TransportError, OSError) as error:
                self.watching.clear()
                delay = RETRY_DELAYS[min(failures, len(RETRY_DELAYS) - 1)]
                failures += 1
                log.warning(
                    "%s: list/watch failed, relisting in %.1f s: %s", self.name, delay, error
                )
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        metrics.API_REQUESTS.labels("list", self.name).inc()
        listing = self.client.list(self.resource, namespace=self._namespace)
        fresh = {}
        async for obj in listing:
            item = _as_dict(obj)
            fresh[object_key(item)] = item
        old, self.cache = self.cache, fresh
        for key in old.keys() | fresh.keys():
            if old.get(key) != fresh.get(key):
                self._changed(key)
        self.synced.set()
        return str(listing.resourceVersion)

    async def _watch(self, version: str) -> None:
        metrics.API_REQUESTS.labels("watch", self.name).inc()
        stream = self.client.watch(
            self.resource,
            namespace=self._namespace,
            resource_version=version,
            server_timeout=WATCH_TIMEOUT,
        )
        # Close the stream (and its HTTP response) at once when cancelled, not at garbage
        # collection, which would leave the connection to a client already closed.
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            self.watching.set()
            async for kind, obj in stream:
                item = _as_dict(obj)
                key = object_key(item)
                if kind == "DELETED":
                    self.cache.pop(key, None)
                else:
                    self.cache[key] = item
                self._changed(key)
