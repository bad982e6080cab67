"""Ready endpoints per Service, folded from its EndpointSlices as they change.

A Service has any number of slices (one per address family, more past 100 endpoints), and a
deleted slice can no longer say whose it was, so the index remembers each slice's summary
under the slice's key. :meth:`Index.update` answers which Services' summaries changed, so
the caller requeues exactly those (a slice rewritten with the same ready nodes changes
nothing: pod churn on one node does not reach placement).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from porterlb.api.endpoints import Slice
from porterlb.api.keys import NodeName, ServiceKey


@dataclass(frozen=True, slots=True)
class Endpoints:
    """A Service's endpoints as placement needs them."""

    ready: bool = False
    """Whether any endpoint is ready; a Service without is not announced at all."""
    ready_nodes: frozenset[NodeName] = frozenset()


NONE = Endpoints()


class Index:
    def __init__(self) -> None:
        self._slices: dict[str, Slice] = {}
        self._keys: dict[ServiceKey, set[str]] = collections.defaultdict(set)
        self._of: dict[ServiceKey, Endpoints] = {}

    def update(self, key: str, parsed: Slice | None) -> set[ServiceKey]:
        """Slice `key` is now `parsed` (None: deleted); the Services whose summary changed."""
        old = self._slices.pop(key, None)
        touched = set()
        if old is not None and old.service is not None:
            self._keys[old.service].discard(key)
            touched.add(old.service)
        if parsed is not None and parsed.service is not None:
            self._slices[key] = parsed
            self._keys[parsed.service].add(key)
            touched.add(parsed.service)
        return {service for service in touched if self._refold(service)}

    def of(self, service: ServiceKey) -> Endpoints:
        return self._of.get(service, NONE)

    def _refold(self, service: ServiceKey) -> bool:
        slices = [self._slices[key] for key in self._keys[service]]
        if not slices:
            del self._keys[service]
        summary = Endpoints(
            ready=any(s.ready for s in slices),
            ready_nodes=frozenset().union(*(s.ready_nodes for s in slices)),
        )
        before = self._of.pop(service, NONE)
        if summary != NONE:
            self._of[service] = summary
        return summary != before
