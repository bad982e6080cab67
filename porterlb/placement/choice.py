"""Choosing the node that announces an IP: sticky, then least loaded, ties broken by hash.

Sticky because moving an IP breaks the connections through it: an IP stays on its node while
that node is eligible, and nothing is ever rebalanced. A new or orphaned IP goes to the
eligible node announcing the fewest IPs; among equals, rendezvous hashing of (IP, node) picks
one, so the choice is spread, reproducible, and independent of the order nodes are listed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping

from porterlb.api.keys import NodeName


def choose(
    ip: str,
    current: NodeName | None,
    eligible: Collection[NodeName],
    load: Mapping[NodeName, int],
) -> NodeName | None:
    """The node to announce `ip` from; None when no node is eligible."""
    if current is not None and current in eligible:
        return current
    if not eligible:
        return None
    return min(eligible, key=lambda node: (load.get(node, 0), _rank(ip, node)))


def _rank(ip: str, node: NodeName) -> bytes:
    return hashlib.blake2b(f"{ip}\0{node}".encode(), digest_size=8).digest()
