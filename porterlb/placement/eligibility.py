"""Which nodes may announce one IP, and for each node that may not, why (for the Event).

Eligibility is per IP, not per node: a node must be fit (exists, Ready, not being deleted,
not excluded), match the node selector of the IP's pool, and, for each Service using the IP
with ``externalTrafficPolicy: Local``, run a ready endpoint of it; and its speaker must answer
the managers' heartbeats (``silent`` names the nodes whose speakers stopped), not be fenced
for a lagging API watch (``stale``, docs/fencing.md), not be shutting down (``draining``: its
speaker got SIGTERM and hands its IPs over), and have the
pool's interface (``lacking``, as the speakers report it in their answers). Services sharing an IP
are announced from one node, so that node must suit all of them: the facts of every user are
checked together (an intersection). :func:`why_not` takes each fact as a keyword argument
and answers with the first unmet one, so a new fact is one argument and one line.
"""

from __future__ import annotations

import types
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypedDict

from porterlb.api import selector, wellknown
from porterlb.api.keys import NodeName, PoolName, ServiceKey
from porterlb.api.node import Node

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.12

Silent = Mapping[NodeName, float | None]
"""Node -> seconds after its speaker's last heartbeat answer that it was found silent (None:
it never answered), as :mod:`porterlb.manager.liveness` reports it."""

NONE_SILENT: Final[Silent] = types.MappingProxyType({})

Lacking = Mapping[NodeName, frozenset[str]]
"""Node -> the pools whose interface its speaker reports the node lacks."""

NONE_LACKING: Final[Lacking] = types.MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PoolRule:
    """What a pool asks of the nodes announcing its IPs."""

    pool: PoolName
    selector: selector.LabelSelector | None = None
    """None: every node."""
    invalid: bool = False
    """The pool's selector does not parse: no node matches it (the Eip says why)."""


@dataclass(frozen=True, slots=True)
class Need:
    """What one Service using the IP asks of the announcing node."""

    service: ServiceKey
    local: bool
    """``externalTrafficPolicy: Local``: the node must run a ready endpoint."""
    ready_nodes: frozenset[NodeName] = frozenset()


def why_not(
    *,
    node: Node,
    pools: Collection[PoolRule] = (),
    needs: Collection[Need] = (),
    silent: Silent = NONE_SILENT,
    lacking: Lacking = NONE_LACKING,
    stale: Collection[NodeName] = frozenset(),
    draining: Collection[NodeName] = frozenset(),
) -> str | None:
    """None when `node` may announce an IP of `pools` used by `needs`; else why not, briefly."""
    if node.deleting:
        return "being deleted"
    if not node.ready:
        return "not Ready"
    if node.excluded:
        return f"labelled {wellknown.EXCLUDE_FROM_LB}"
    if node.name in silent:
        return speaker_silent(silent[node.name])
    if node.name in stale:
        return "its speaker's API watch lags the leader's revocations (it answers no ARP)"
    if node.name in draining:
        return "its speaker is draining (shutting down, handing its IPs over)"
    for rule in sorted(pools, key=lambda r: r.pool):
        if rule.pool in lacking.get(node.name, ()):
            return f"lacks the interface of pool {rule.pool}"
        if rule.invalid:
            return f"pool {rule.pool}'s nodeSelector is invalid"
        if rule.selector is not None and not rule.selector.matches(node.labels):
            return f"labels do not match pool {rule.pool}'s nodeSelector"
    for need in sorted(needs, key=lambda n: n.service):
        if need.local and node.name not in need.ready_nodes:
            return f"no ready endpoint of {need.service}"
    return None


def speaker_silent(since: float | None) -> str:
    """Why a node whose speaker stopped answering heartbeats may not announce; `since` is how
    long before it was found silent it last answered (None: it never did)."""
    if since is None:
        return "its speaker never answered heartbeats"
    return (
        "its speaker stopped answering heartbeats"
        f" (found {since * 1000:.0f} ms after its last answer)"
    )


class Facts(TypedDict, total=False):
    """What :func:`why_not` reads besides the node, as keyword arguments: a new fact is one
    argument there and one line here."""

    pools: Collection[PoolRule]
    needs: Collection[Need]
    silent: Silent
    lacking: Lacking
    stale: Collection[NodeName]
    draining: Collection[NodeName]


def verdicts(nodes: Iterable[Node], **facts: Unpack[Facts]) -> dict[NodeName, str | None]:
    """Every node's :func:`why_not` for one IP."""
    return {node.name: why_not(node=node, **facts) for node in nodes}


def eligible(nodes: Iterable[Node], **facts: Unpack[Facts]) -> frozenset[NodeName]:
    """The names of the nodes that may announce the IP."""
    found = verdicts(nodes, **facts)
    return frozenset(name for name, reason in found.items() if reason is None)


def explain(nodes: Iterable[Node], **facts: Unpack[Facts]) -> str:
    """Why no node may announce, naming each node: ``w1: not Ready; w2: labelled ...``."""
    found = verdicts(nodes, **facts)
    if not found:
        return "the cluster has no Node"
    return "; ".join(f"{name}: {reason}" for name, reason in sorted(found.items()) if reason)
