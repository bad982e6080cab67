"""Whether a node may announce LoadBalancer IPs, and if not, why (for the Event)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from porterlb.api import wellknown
from porterlb.api.keys import NodeName
from porterlb.api.node import Node


def why_not(node: Node) -> str | None:
    """None when `node` may announce; otherwise the reason it may not, in a few words."""
    if node.deleting:
        return "being deleted"
    if not node.ready:
        return "not Ready"
    if node.excluded:
        return f"labelled {wellknown.EXCLUDE_FROM_LB}"
    return None


def eligible(nodes: Iterable[Node]) -> frozenset[NodeName]:
    """The names of the nodes that may announce."""
    return frozenset(node.name for node in nodes if why_not(node) is None)


def silent(since: float | None) -> str:
    """Why a node whose speaker stopped answering heartbeats may not announce; `since` is how
    long before it was found silent it last answered (None: it never did)."""
    if since is None:
        return "its speaker never answered heartbeats"
    return (
        "its speaker stopped answering heartbeats"
        f" (found {since * 1000:.0f} ms after its last answer)"
    )


def explain(
    nodes: Iterable[Node], silent_nodes: Mapping[NodeName, float | None] | None = None
) -> str:
    """Why no node may announce, naming each node: ``w1: not Ready; w2: labelled ...``."""
    quiet = silent_nodes or {}
    reasons: Mapping[NodeName, str | None] = {
        node.name: why_not(node) or (silent(quiet[node.name]) if node.name in quiet else None)
        for node in nodes
    }
    if not reasons:
        return "the cluster has no Node"
    return "; ".join(f"{name}: {reason}" for name, reason in sorted(reasons.items()) if reason)
