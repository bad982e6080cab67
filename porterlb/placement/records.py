"""The placement records: for each node, the IPs its speaker answers for (pure, no I/O).

The leader keeps one record per node, the ``spec`` of the NodePlacement object named after
the node (``porterlb.io/v1alpha1``): each IP with its pool (which says on which interface to
answer) and the Services using it. An IP is in at most one node's record as the leader wants
them (:class:`Book`); while a move is under way the API may still show it in the old node's
record too, which is why the leader writes the old node's record first and waits for its
speaker's echo before it writes the new one (docs/fencing.md).
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from porterlb.api.keys import NodeName, PoolName, ServiceKey


@dataclass(frozen=True, slots=True)
class Entry:
    """One IP of a record."""

    pool: PoolName
    services: tuple[ServiceKey, ...]
    """The Services using the IP, sorted."""
    probe: bool = False
    """The IP is new to the cluster: its speaker probes it before announcing it."""


Record = Mapping[str, Entry]
"""IP -> its entry: one node's record."""


def spec(record: Record) -> dict[str, Any]:
    """The NodePlacement ``spec`` of `record`, its IPs sorted (a write says the same thing the
    same way)."""
    ips = []
    for ip in sorted(record):
        entry = record[ip]
        item: dict[str, Any] = {"ip": ip, "pool": entry.pool, "services": list(entry.services)}
        if entry.probe:
            item["probe"] = True
        ips.append(item)
    return {"ips": ips}


def parse(obj: Mapping[str, Any] | None) -> dict[str, Entry]:
    """The record a NodePlacement object holds (none when it is gone); malformed items are
    skipped: the manager wrote them and reports bad input, readers only read."""
    return dict(entries(items(obj)))


def items(obj: Mapping[str, Any] | None) -> list[Any]:
    """The items of a NodePlacement object's ``spec.ips`` as the API sends them (none when it
    is gone or they are no list)."""
    found = ((obj or {}).get("spec") or {}).get("ips")
    return found if isinstance(found, list) else []


def entries(raw: Iterable[Any]) -> Iterator[tuple[str, Entry]]:
    """Each well-formed item of `raw` (a record's ``spec.ips``) as (IP, its entry), in order;
    malformed ones are skipped, as :func:`parse` does."""
    for item in raw:
        if not isinstance(item, dict):
            continue
        ip, pool = item.get("ip"), item.get("pool")
        if not isinstance(ip, str) or not isinstance(pool, str) or not ip or not pool:
            continue
        services = tuple(ServiceKey(str(key)) for key in item.get("services") or ())
        # Interned: a few pools serve many IPs, and each decoded item has its own copy.
        yield ip, Entry(PoolName(sys.intern(pool)), services, probe=item.get("probe") is True)


class Book:
    """The records the leader wants, by node; every change costs O(1) per IP.

    Each node's :attr:`generation` counts its changes, so a writer can tell whether a write
    it made carries a given change.
    """

    def __init__(self) -> None:
        self._records: dict[NodeName, dict[str, Entry]] = collections.defaultdict(dict)
        self._node_of: dict[str, NodeName] = {}
        self._ips_of: dict[ServiceKey, set[str]] = collections.defaultdict(set)
        self.generation: collections.Counter[NodeName] = collections.Counter()

    def adopt(self, node: NodeName, record: Record) -> list[str]:
        """Take what `node`'s record in the API says (a new leader, before deciding: newest
        record first); the IPs another record already holds, which stay there: the leader that
        wrote both moved them and had yet to clear this one, which so has changes to write."""
        held = [ip for ip in record if ip in self._node_of]
        for ip, entry in record.items():
            if ip not in self._node_of:
                self.put(ip, node, entry)
        self.generation[node] = len(held)
        return held

    def put(self, ip: str, node: NodeName, entry: Entry) -> None:
        """`ip` is in `node`'s record as `entry` (out of any other record)."""
        if self._node_of.get(ip) == node and self._records[node].get(ip) == entry:
            return
        self.drop(ip)
        self._records[node][ip] = entry
        self._node_of[ip] = node
        for service in entry.services:
            self._ips_of[service].add(ip)
        self.generation[node] += 1

    def drop(self, ip: str) -> NodeName | None:
        """Take `ip` out of its record; the node it was on (None: none)."""
        node = self._node_of.pop(ip, None)
        if node is None:
            return None
        entry = self._records[node].pop(ip)
        for service in entry.services:
            self._ips_of[service].discard(ip)
            if not self._ips_of[service]:
                del self._ips_of[service]
        self.generation[node] += 1
        return node

    def node_of(self, ip: str) -> NodeName | None:
        return self._node_of.get(ip)

    def entry(self, ip: str) -> Entry | None:
        node = self._node_of.get(ip)
        return self._records[node][ip] if node is not None else None

    def ips_of(self, service: ServiceKey) -> frozenset[str]:
        """The IPs whose entries name `service`."""
        return frozenset(self._ips_of.get(service, ()))

    def record(self, node: NodeName) -> dict[str, Entry]:
        """A copy of `node`'s record."""
        return dict(self._records.get(node, {}))

    def nodes(self) -> Iterable[NodeName]:
        """The nodes with a record (maybe an empty one)."""
        return list(self._records)
