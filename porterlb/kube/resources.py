"""The resource classes porterlb reads and writes, in one place."""

from __future__ import annotations

from typing import Any

from lightkube.generic_resource import create_global_resource
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Event, Namespace, Node, Service
from lightkube.resources.discovery_v1 import EndpointSlice

EIP_GROUP = "network.kubesphere.io"
EIP_VERSION = "v1alpha2"

Eip: Any = create_global_resource(EIP_GROUP, EIP_VERSION, "Eip", "eips")

PLACEMENT_GROUP = "porterlb.io"
PLACEMENT_VERSION = "v1alpha1"

NodePlacement: Any = create_global_resource(
    PLACEMENT_GROUP, PLACEMENT_VERSION, "NodePlacement", "nodeplacements"
)
"""One node's placement record (:mod:`porterlb.placement.records`), named after the node."""

__all__ = [
    "ConfigMap",
    "Eip",
    "EndpointSlice",
    "Event",
    "Lease",
    "Namespace",
    "Node",
    "NodePlacement",
    "Service",
]
