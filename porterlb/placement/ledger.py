"""The placements the leader has made: which node announces each IP, and who uses each IP.

One placement per *group*, not per Service or per IP: the IPs of one Service (both of a
dual-stack Service) are announced from one node, and so are Services sharing an IP. Both
join IPs into a group, transitively: Service A (IPv4 X, IPv6 Y) and Service B (IPv4 X,
IPv6 Z) put X, Y and Z on one node. :meth:`Ledger.place` places a whole group at once, so
that every IP of a group is on the group's node and no IP is ever on two nodes.

The ledger is plain in-memory state; the API holds the truth (the ``porterlb.io/announced-by``
annotation), and a new leader rebuilds the ledger from it with :meth:`Ledger.adopt` before
deciding anything.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Sequence

from porterlb.api.keys import NodeName, ServiceKey
from porterlb.placement import choice


class Ledger:
    def __init__(self) -> None:
        self._node_of: dict[str, NodeName] = {}
        self._users: dict[str, set[ServiceKey]] = collections.defaultdict(set)
        self._ips_of: dict[ServiceKey, tuple[str, ...]] = {}
        self._load: collections.Counter[NodeName] = collections.Counter()

    def adopt(self, key: ServiceKey, ips: Sequence[str], node: NodeName | None) -> None:
        """Record what the API says; the first recorded node of an IP wins (call oldest first)."""
        self.use(key, ips)
        if node is None:
            return
        for ip in ips:
            if ip not in self._node_of:
                self._set(ip, node)

    def use(self, key: ServiceKey, ips: Sequence[str]) -> None:
        """`key` now uses `ips` (empty: no IP); an IP nobody uses any more is forgotten."""
        old = self._ips_of.pop(key, ())
        for ip in old:
            if ip in ips:
                continue
            self._users[ip].discard(key)
            if not self._users[ip]:
                del self._users[ip]
                self._set(ip, None)
        if ips:
            self._ips_of[key] = tuple(ips)
            for ip in ips:
                self._users[ip].add(key)

    def group(self, ip: str) -> frozenset[str]:
        """The IPs that must be on one node with `ip`: those of the Services using it, and so
        on (empty for an IP nobody uses)."""
        if ip not in self._users:
            return frozenset()
        found, todo = {ip}, [ip]
        while todo:
            for user in self._users[todo.pop()]:
                for other in self._ips_of[user]:
                    if other not in found:
                        found.add(other)
                        todo.append(other)
        return frozenset(found)

    def place(self, ip: str, eligible: Collection[NodeName]) -> NodeName | None:
        """Choose (or keep) the node for the group of `ip` among `eligible` (the nodes that
        suit every IP of it), and record it for every IP of the group.

        The group stays where most of its IPs are, if that node is eligible: two groups that
        a new Service joins were placed apart, and the smaller moves. An IP no Service uses
        is never placed: nothing would ever unplace it.
        """
        group = self.group(ip)
        if not group:
            return None
        on = collections.Counter(self._node_of[i] for i in group if i in self._node_of)
        current = min(
            (node for node in on if node in eligible),
            key=lambda node: (-on[node], node),
            default=None,
        )
        node = choice.choose(min(group), current, eligible, self._load)
        for member in group:
            self._set(member, node)
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
