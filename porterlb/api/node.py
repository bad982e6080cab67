"""A Node as placement sees it: its name, whether it is Ready, whether it opted out, its labels.

A Node whose Ready condition is missing or not ``True`` is not Ready, as the node lifecycle
controller treats it; the exclusion label counts whatever its value, as kube-controller-manager's
service controller reads ``node.kubernetes.io/exclude-from-external-load-balancers``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from porterlb.api import wellknown
from porterlb.api.keys import NodeName


@dataclass(frozen=True, slots=True)
class Node:
    name: NodeName
    ready: bool
    excluded: bool
    deleting: bool
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    """For the pools' node selectors (a copy; never changed)."""


def parse(obj: Mapping[str, Any]) -> Node:
    """Build a :class:`Node` from the API object (a dict as the API server sends it)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    conditions = (obj.get("status") or {}).get("conditions") or ()
    return Node(
        name=NodeName(str(meta.get("name", ""))),
        ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
        excluded=wellknown.EXCLUDE_FROM_LB in labels,
        deleting=meta.get("deletionTimestamp") is not None,
        labels={str(key): str(value) for key, value in labels.items()},
    )


def internal_ip(obj: Mapping[str, Any]) -> str | None:
    """The Node's first ``InternalIP`` (as the kubelet lists them), where its speaker answers
    heartbeats; None when it reports none."""
    for entry in (obj.get("status") or {}).get("addresses") or ():
        if entry.get("type") == "InternalIP" and entry.get("address"):
            return str(entry["address"])
    return None


def ip_addresses(obj: Mapping[str, Any]) -> frozenset[str]:
    """Every IP address in the Node's ``status.addresses`` (InternalIP, ExternalIP, IPv4 and
    IPv6; host names left out), written as :mod:`ipaddress` writes it: those its speaker may
    answer heartbeats from, since a reply leaves by whichever address the route picks."""
    found = set()
    for entry in (obj.get("status") or {}).get("addresses") or ():
        try:
            found.add(str(ipaddress.ip_address(str(entry.get("address", "")))))
        except ValueError:
            continue  # a Hostname or InternalDNS entry
    return frozenset(found)
