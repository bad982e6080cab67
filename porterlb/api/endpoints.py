"""An EndpointSlice as placement sees it: whose Service, and where its ready endpoints run.

Read from ``discovery.k8s.io/v1``: the Service is the ``kubernetes.io/service-name`` label
(in the slice's namespace); an endpoint counts when ``conditions.ready`` is true or unset,
since the API documents an unset ``ready`` as "interpreted as true" (a terminating endpoint
is never ready). ``nodeName`` is where it runs; an endpoint without one still counts as
ready, it just places the Service's IP on no particular node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from porterlb.api import wellknown
from porterlb.api.keys import NodeName, ServiceKey


@dataclass(frozen=True, slots=True)
class Slice:
    service: ServiceKey | None
    """None for a slice that names no Service (it counts for nobody)."""
    ready: bool
    """Whether any endpoint of the slice is ready."""
    ready_nodes: frozenset[NodeName]
    """The nodes where a ready endpoint runs."""


def parse(obj: Mapping[str, Any]) -> Slice:
    """Build a :class:`Slice` from the API object (a dict as the API server sends it)."""
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(wellknown.SERVICE_NAME_LABEL)
    ready = [
        endpoint
        for endpoint in obj.get("endpoints") or ()
        if (endpoint.get("conditions") or {}).get("ready") is not False
    ]
    return Slice(
        service=ServiceKey(f"{meta.get('namespace', '')}/{name}") if name else None,
        ready=bool(ready),
        ready_nodes=frozenset(
            NodeName(str(endpoint["nodeName"])) for endpoint in ready if endpoint.get("nodeName")
        ),
    )
