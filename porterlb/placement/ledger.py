"""The placements the leader has made: which node announces each IP, and who uses each IP.

One placement per IP, not per Service: Services sharing an IP are announced from one node by
construction. The ledger is plain in-memory state; the API holds the truth (the
``porterlb.io/announced-by`` annotation), and a new leader rebuilds the ledger from it with
:meth:`Ledger.adopt` before deciding anything.
"""

from __future__ import annotations

import collections
from collections.abc import Collection

from porterlb.api.keys import NodeName, ServiceKey
from porterlb.placement import choice


class Ledger:
    def __init__(self) -> None:
        self._node_of: dict[str, NodeName] = {}
        self._users: dict[str, set[ServiceKey]] = collections.defaultdict(set)
        self._ip_of: dict[ServiceKey, str] = {}
        self._load: collections.Counter[NodeName] = collections.Counter()

    def adopt(self, key: ServiceKey, ip: str, node: NodeName | None) -> None:
        """Record what the API says; the first recorded node of an IP wins (call oldest first)."""
        self.use(key, ip)
        if node is not None and ip not in self._node_of:
            self._set(ip, node)

    def use(self, key: ServiceKey, ip: str | None) -> None:
        """`key` now uses `ip` (None: no IP); an IP nobody uses any more is forgotten."""
        old = self._ip_of.pop(key, None)
        if old is not None and old != ip:
            self._users[old].discard(key)
            if not self._users[old]:
                del self._users[old]
                self._set(old, None)
        if ip is not None:
            self._ip_of[key] = ip
            self._users[ip].add(key)

    def place(self, ip: str, eligible: Collection[NodeName]) -> NodeName | None:
        """Choose (or keep) the node for `ip` among `eligible`, and record it.

        An IP no Service uses is never placed: nothing would ever unplace it.
        """
        if ip not in self._users:
            return None
        node = choice.choose(ip, self._node_of.get(ip), eligible, self._load)
        self._set(ip, node)
        return node

    def node_of(self, ip: str) -> NodeName | None:
        return self._node_of.get(ip)

    def users_of(self, ip: str) -> frozenset[ServiceKey]:
        """The Services using `ip` (none for an IP nobody uses)."""
        return frozenset(self._users.get(ip, ()))

    def ips(self) -> list[str]:
        """Every IP in use, placed or not."""
        return list(self._users)

    def ips_on(self, nodes: Collection[NodeName]) -> list[str]:
        """The IPs placed on any of `nodes`."""
        return [ip for ip, node in self._node_of.items() if node in nodes]

    def unplaced(self) -> list[str]:
        """The IPs in use that no node announces."""
        return [ip for ip in self._users if ip not in self._node_of]

    def load(self) -> dict[NodeName, int]:
        """IPs announced per node (nodes announcing none are absent)."""
        return {node: count for node, count in self._load.items() if count}

    def _set(self, ip: str, node: NodeName | None) -> None:
        old = self._node_of.pop(ip, None)
        if old is not None:
            self._load[old] -= 1
        if node is not None:
            self._node_of[ip] = node
            self._load[node] += 1
