"""Which IPs this node must announce, read from the manager's records: pure, no I/O.

A Service IP is this node's when the Service carries ``porterlb.io/announced-by: <this node>``,
publishes the IP in ``status.loadBalancer.ingress`` and names its pool in the pool label. The
speaker trusts the manager for everything else (ownership, allocation): it only reads.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from porterlb.api import address, wellknown
from porterlb.api import service as svc
from porterlb.api.keys import NodeName, PoolName

Assigned = tuple[tuple[address.IPAddress, PoolName], ...]


def read(obj: Mapping[str, Any], node: NodeName) -> Assigned:
    """The (IP, pool) pairs the Service object `obj` assigns to `node`; empty when none."""
    service = svc.parse(obj)
    pool = service.label(wellknown.POOL_LABEL)
    if service.annotation(wellknown.ANNOUNCED_BY) != node or pool is None or service.deleting:
        return ()
    found = []
    for text in service.ingress:
        try:
            found.append((ipaddress.ip_address(text), PoolName(pool)))
        except ValueError:
            continue  # the manager wrote it and reports bad input; the speaker only reads
    return tuple(found)
