"""The leader's placement records in the API: one NodePlacement per node, written whole.

:mod:`porterlb.manager.announcing` changes the records it wants (:attr:`Placements.book`)
and asks :meth:`Placements.flush` for a node's record to be in the API. One write per node
carries every change made before it: while a write of a node's record is under way, the
changes that follow wait and go out together in the next. A failover of a node holding 100
IPs to 9 others is so about two writes per receiving node, where a record per Service was
100 writes, each decoded by every speaker.

Every write is a compare-and-swap on the version the leader last read or wrote
(:func:`porterlb.kube.writers.write_node_placement`). A write that loses (another writer: a
previous leader's late write) is sent again over the version read back: the leader's book is
the decision, and the watch brings what the other writer wrote to every reader anyway.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Final

import httpx2
import lightkube
import msgspec

from porterlb import errors
from porterlb.api.keys import NodeName
from porterlb.kube import client as kube_client
from porterlb.kube import metrics as kube_metrics
from porterlb.kube import reflector, resources, writers
from porterlb.placement import records

log = logging.getLogger(__name__)

CONFLICT_ATTEMPTS: Final = 3
"""Writes of one record before a Conflict is given back to the caller's queue."""


class Placements:
    """The records the leader wants (:attr:`book`) and the API's copy of each."""

    def __init__(
        self, client: lightkube.AsyncClient, *, on_foreign: Callable[[NodeName], None]
    ) -> None:
        self.client = client
        self.on_foreign = on_foreign
        """Called with a node whose record another writer changed (once loaded): the book
        will be written over it at the next flush."""
        self.cache = reflector.Reflector(
            client, resources.NodePlacement, on_change=self._changed, name="nodeplacements"
        )
        """Every node's record as the API has it, kept leader or not: a new leader adopts it."""
        self.book = records.Book()
        self._versions: dict[NodeName, str | None] = {}
        """Node -> the version its next write applies to (None: create the record)."""
        self._written: dict[NodeName, int] = {}
        """Node -> the book's generation the API holds."""
        self._revision: dict[NodeName, int] = {}
        """Node -> the resourceVersion of its record as last read or written."""
        self._locks: collections.defaultdict[NodeName, asyncio.Lock] = collections.defaultdict(
            asyncio.Lock
        )
        self._writing = 0
        self.quiet = asyncio.Event()
        """Set while no record write is under way: writes that may wait (the announced-by
        view) wait for it, so a failover's record writes never queue behind them."""
        self.quiet.set()

    def load(self) -> tuple[dict[NodeName, int], dict[str, NodeName]]:
        """Start the book from the records in the API (a new leader, before deciding); each
        node's record revision, and the IPs found in a second record with that record's node.

        An IP in two records was moved off a silent node by a leader that stopped before the
        old record was written without it: the newer record (the higher revision) holds it.
        """
        self.book = records.Book()
        self._versions, self._written, self._revision = {}, {}, {}
        doubled: dict[str, NodeName] = {}
        newest_first = sorted(
            self.cache.cache.items(), key=lambda item: -reflector.object_revision(item[1])
        )
        for name, obj in newest_first:
            node = NodeName(name)
            doubled.update(dict.fromkeys(self.book.adopt(node, records.parse(obj)), node))
            self._versions[node] = reflector.version(obj)
            self._written[node] = 0
            self._revision[node] = reflector.object_revision(obj)
        return dict(self._revision), doubled

    def _changed(self, name: str) -> None:
        node = NodeName(name)
        if node not in self._written or self._locks[node].locked():
            return  # not loaded, or a write under way: looked at once it is done
        obj = self.cache.cache.get(name)
        if obj is not None and reflector.object_revision(obj) <= self._revision.get(node, 0):
            return  # this leader's write, or an older one
        if obj is not None and records.parse(obj) == self.book.record(node):
            self._versions[node] = reflector.version(obj)
            return  # another writer, saying what the leader wants
        self._written[node] = -1
        self._versions[node] = reflector.version(obj) if obj is not None else None
        self.on_foreign(node)

    async def flush(self, node: NodeName) -> int:
        """Make the API's record of `node` carry every change the book made to it so far;
        the record's resourceVersion once it does (that of a write carrying them)."""
        wanted = self.book.generation[node]
        async with self._locks[node]:
            if self._written.get(node, -1) >= wanted:
                return self._revision[node]
            self._writing += 1
            self.quiet.clear()
            try:
                await self._write(node)
            finally:
                self._writing -= 1
                if not self._writing:
                    self.quiet.set()
            revision = self._revision[node]
        self._changed(node)  # what the watch brought while the write was under way
        return revision

    async def delete(self, node: NodeName) -> None:
        """Delete `node`'s record if the book holds no IP for it and the API's copy is the
        empty record this leader wrote or read (compare-and-swap on its version); else do
        nothing. Raises what :func:`porterlb.kube.writers.delete_node_placement` raises."""
        async with self._locks[node]:
            if self.book.record(node) or self._written.get(node, -1) < self.book.generation[node]:
                return  # IPs to write out first: the write that empties it queues it again
            version = self._versions.get(node)
            if version is None:
                return  # none in the API
            await writers.delete_node_placement(self.client, node, resource_version=version)
            self._versions[node] = None
            log.info("node %s: gone, its empty placement record deleted", node)

    async def _write(self, node: NodeName) -> None:
        """Write the book's record of `node` over the version last known, again over a newer
        one while another writer's version is in the way. Raises Conflict (still in the way)
        and what :func:`porterlb.kube.writers.write_node_placement` raises."""
        for attempt in range(CONFLICT_ATTEMPTS):
            generation = self.book.generation[node]
            spec = records.spec(self.book.record(node))
            try:
                version = await writers.write_node_placement(
                    self.client, node, spec, resource_version=self._versions.get(node)
                )
            except errors.Conflict:
                self._versions[node] = await self._read_version(node)
                if attempt + 1 == CONFLICT_ATTEMPTS:
                    raise
                continue
            self._versions[node] = version
            self._written[node] = generation
            self._revision[node] = int(version)
            return

    async def _read_version(self, node: NodeName) -> str | None:
        """The version of `node`'s record in the API now (None: there is none)."""
        path = kube_client.path(resources.NodePlacement, name=node)
        kube_metrics.API_REQUESTS.labels("get", "nodeplacements").inc()
        try:
            reply = await kube_client.http(self.client).get(kube_client.url(self.client, path))
        except httpx2.TransportError as error:
            raise errors.TransientError(f"NodePlacement {node}: {error!r}") from error
        if reply.status_code == 404:
            return None
        writers.raise_for_reply(reply, f"NodePlacement {node}")
        return reflector.version(msgspec.json.decode(reply.content))
