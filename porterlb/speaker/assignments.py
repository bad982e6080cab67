"""Which IPs this node must announce, read from the manager's records: pure, no I/O.

A Service assigns its IPs to a node when it carries ``porterlb.io/announced-by: <node>``,
publishes the IPs in ``status.loadBalancer.ingress``, names its pool in the pool label (and,
for a dual-stack Service whose IPs come from two pools, the pool of each IP in
``porterlb.io/pools``) and is not being deleted. The speaker trusts the manager for
everything else (ownership, allocation): it only reads. Services sharing an IP each carry the
record, and the manager rewrites them one by one when the IP moves; while they disagree, no
node answers for the IP (:meth:`Records.contested`), so that two nodes never answer for it at
once.
"""

from __future__ import annotations

import collections
import ipaddress
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from porterlb.api import address, wellknown
from porterlb.api import service as svc
from porterlb.api.keys import NodeName, PoolName

Assigned = tuple[tuple[address.IPAddress, PoolName], ...]


def kept(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the speaker keeps of a Service object: a flat dict of what :func:`record` reads
    and what names the Service in an Event (``namespace``, ``name``, ``uid``, ``node``,
    ``pools``: the pool of each IP, ``deleting``, ``ingress``).

    A speaker caches every Service of the cluster, and the rest of each (spec, the other
    annotations and labels, managedFields, the nesting) is most of it: 10,000 Services served
    by porterlb, cached and recorded, took 46.8 MB of the speaker's memory whole, 8.6 MB so.
    Node and pool names repeat across Services, so each is kept once (interned).
    """
    service = svc.parse(obj)
    node = service.annotation(wellknown.ANNOUNCED_BY)
    return {
        "namespace": service.namespace,
        "name": service.name,
        "uid": service.uid,
        "node": sys.intern(node) if node else None,
        "pools": tuple(PoolName(sys.intern(pool)) for pool in svc.recorded_pools(service)),
        "deleting": service.deleting,
        "ingress": service.ingress,
    }


@dataclass(frozen=True, slots=True)
class Record:
    """The node a Service assigns its IPs to, and those (IP, pool) pairs."""

    node: NodeName
    assigned: Assigned


def record(service: Mapping[str, Any]) -> Record | None:
    """What `service` (as :func:`kept` keeps it) assigns, to which node; None when nothing."""
    node, pools = service.get("node"), service.get("pools")
    if not node or not pools or service.get("deleting"):
        return None
    found = []
    for text, pool in zip(service.get("ingress") or (), pools, strict=False):
        try:
            found.append((ipaddress.ip_address(text), pool))
        except ValueError:
            continue  # the manager wrote it and reports bad input; the speaker only reads
    return Record(NodeName(node), tuple(found)) if found else None


def read(service: Mapping[str, Any], node: NodeName) -> Assigned:
    """The (IP, pool) pairs `service` (as :func:`kept` keeps it) assigns to `node`; empty
    when none."""
    found = record(service)
    return found.assigned if found is not None and found.node == node else ()


class Records:
    """Every Service's record as this node's speaker needs it; each change costs O(1).

    ``mine`` holds, by Service key, what is assigned to ``node``. An IP is *contested* while
    another Service assigns it to another node: the manager is moving a shared IP and has
    rewritten only some of its Services.
    """

    def __init__(self, node: NodeName) -> None:
        self.node = node
        self.mine: dict[str, Assigned] = {}
        self._theirs: dict[str, tuple[address.IPAddress, ...]] = {}
        self._here: collections.Counter[address.IPAddress] = collections.Counter()
        self._elsewhere: collections.Counter[address.IPAddress] = collections.Counter()

    def update(self, key: str, service: Mapping[str, Any] | None) -> bool:
        """Take the Service `key` as it now is (as :func:`kept` keeps it; None: gone); True if
        an IP of this node was added, removed, contested or uncontested by the change."""
        found = record(service) if service is not None else None
        mine: Assigned = ()
        theirs: tuple[address.IPAddress, ...] = ()
        if found is not None and found.node == self.node:
            mine = found.assigned
        elif found is not None:
            theirs = tuple(ip for ip, _ in found.assigned)
        old_mine, old_theirs = self.mine.pop(key, ()), self._theirs.pop(key, ())
        if mine:
            self.mine[key] = mine
        if theirs:
            self._theirs[key] = theirs
        _count(self._here, [ip for ip, _ in old_mine], [ip for ip, _ in mine])
        _count(self._elsewhere, old_theirs, theirs)
        return old_mine != mine or any(ip in self._here for ip in {*old_theirs, *theirs})

    def contested(self, ip: address.IPAddress) -> bool:
        return ip in self._elsewhere

    def assigned(self, ip: address.IPAddress) -> bool:
        """True if some Service assigns ``ip`` to some node, this one or another."""
        return ip in self._here or ip in self._elsewhere


def _count(
    counter: collections.Counter[address.IPAddress],
    removed: Sequence[address.IPAddress],
    added: Sequence[address.IPAddress],
) -> None:
    counter.update(added)
    counter.subtract(removed)
    for ip in removed:
        if counter[ip] <= 0:
            del counter[ip]
