"""The MACs of every porterlb speaker, published for the speakers in one ConfigMap.

During a failover the old node may still answer for an IP for a moment (or answer the new
node's probe): another porterlb speaker answering is not an address conflict, a foreign
host is. Speakers report the MACs of their pool interfaces in their pongs
(:mod:`porterlb.liveness.wire`); the leader writes the set, by node, into the ConfigMap
:data:`NAME` in its own namespace, only when it changes, and every speaker watches that one
object by name (:func:`parse` reads it). Least privilege: the leader needs ``get``/``patch``
(server-side apply) of that ConfigMap, the speakers ``list``/``watch`` of it; nothing else
learns or writes MACs, and no Node object is touched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import httpx2
import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta

from porterlb.api.keys import NodeName
from porterlb.kube import metrics, resources
from porterlb.l2 import ethernet

log = logging.getLogger(__name__)

NAME: Final = "porterlb-peers"

CHECK_INTERVAL: Final = 1.0
"""Seconds between two looks at the MACs the pongs reported: a node's interfaces change
rarely, and a peer unknown for a second only means a conflict Event that says "porterlb"."""

RETRY_DELAY: Final = 5.0
"""Seconds before writing again after a failed write."""


def data(macs: Mapping[NodeName, frozenset[bytes]]) -> dict[str, str]:
    """The ConfigMap's data: node -> its MACs, space-separated, sorted."""
    return {
        node: " ".join(sorted(str(ethernet.MacAddress(mac)) for mac in node_macs))
        for node, node_macs in sorted(macs.items())
        if node_macs
    }


def parse(obj: Mapping[str, Any] | None) -> dict[ethernet.MacAddress, NodeName]:
    """Every MAC the ConfigMap `obj` names, with its node (none if it is gone); malformed
    entries skipped."""
    found = {}
    for node, text in ((obj or {}).get("data") or {}).items():
        for word in str(text).split():
            try:
                found[ethernet.MacAddress.parse(word)] = NodeName(str(node))
            except ValueError:
                continue
    return found


async def publish(
    client: lightkube.AsyncClient,
    *,
    namespace: str,
    macs: Callable[[], Mapping[NodeName, frozenset[bytes]] | None],
) -> None:
    """Keep the ConfigMap equal to `macs()` while leading (None: not known yet, so nothing is
    written); writes only on a change."""
    written: dict[str, str] | None = None
    while True:
        known = macs()
        wanted = data(known) if known is not None else written
        if wanted != written and wanted is not None:
            config = resources.ConfigMap(
                metadata=ObjectMeta(name=NAME, namespace=namespace), data=wanted
            )
            try:
                metrics.API_REQUESTS.labels("apply", "configmaps").inc()
                await client.apply(config, force=True)
            except (ApiError, httpx2.TransportError, OSError) as error:
                log.warning("ConfigMap %s/%s: %s; retrying", namespace, NAME, error)
                await asyncio.sleep(RETRY_DELAY)
                continue
            written = wanted
        await asyncio.sleep(CHECK_INTERVAL)
