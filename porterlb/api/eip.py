"""The Eip pool as porterlb sees it: parsed once from the API object, then plain data.

Parsing never raises: an Eip whose address does not parse (possible only if it was created
before the CRD's CEL rules, or through v1alpha1 of an older CRD) becomes an Eip with
``error`` set, so the manager can put the message in a condition instead of crashing. A
malformed ``spec.nodeSelector`` sets ``node_selector_error`` instead: the pool still holds
its addresses, but no node may announce them until the selector is fixed (an unreadable
selector matches nothing, as Kubernetes controllers treat one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from porterlb import errors
from porterlb.api import address, selector, wellknown
from porterlb.api.keys import PoolName

Protocol = Literal["layer2", "bgp", "vip"]


@dataclass(frozen=True, slots=True)
class Eip:
    """One address pool (``eips.network.kubesphere.io``), the fields porterlb acts on."""

    name: PoolName
    created: str
    """``metadata.creationTimestamp`` (RFC 3339, so it sorts); ties break on the name."""
    generation: int
    address_text: str
    addresses: address.AddressRange | None
    error: str | None
    protocol: Protocol
    interface: str
    disabled: bool
    priority: int
    namespaces: frozenset[str]
    namespace_selector: tuple[tuple[str, str], ...]
    is_default: bool
    deleting: bool
    finalizers: tuple[str, ...]
    node_selector: selector.LabelSelector | None = None
    """Which nodes may announce this pool's IPs (``spec.nodeSelector``); None: every node."""
    node_selector_error: str | None = None
    """Why ``spec.nodeSelector`` does not parse; then no node may announce this pool's IPs."""

    @property
    def precedence(self) -> tuple[str, str]:
        """Older pools win overlaps; equal timestamps fall back to the name (stable)."""
        return (self.created, self.name)

    def selects_namespace(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Whether this pool is bound to `namespace` by name or by its labels."""
        if namespace in self.namespaces:
            return True
        return bool(self.namespace_selector) and all(
            labels.get(key) == value for key, value in self.namespace_selector
        )


def parse(obj: Mapping[str, Any]) -> Eip:
    """Build an :class:`Eip` from the API object (a dict as the API server sends it)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    text = str(spec.get("address", ""))
    try:
        addresses: address.AddressRange | None = address.parse(text)
        error = None
    except errors.InvalidSpec as invalid:
        addresses, error = None, f'Eip "{meta.get("name", "")}": {invalid}'
    node_selector, node_selector_error = _node_selector(meta, spec)
    return Eip(
        name=PoolName(meta.get("name", "")),
        created=str(meta.get("creationTimestamp", "")),
        generation=int(meta.get("generation", 0)),
        address_text=text,
        addresses=addresses,
        error=error,
        protocol=spec.get("protocol") or "bgp",
        interface=str(spec.get("interface", "")),
        disabled=bool(spec.get("disable", False)),
        priority=int(spec.get("priority", 0)),
        namespaces=frozenset(spec.get("namespaces") or ()),
        namespace_selector=tuple(sorted((spec.get("namespaceSelector") or {}).items())),
        is_default=(meta.get("annotations") or {}).get(wellknown.DEFAULT_POOL) == "true",
        deleting=meta.get("deletionTimestamp") is not None,
        finalizers=tuple(meta.get("finalizers") or ()),
        node_selector=node_selector,
        node_selector_error=node_selector_error,
    )


def _node_selector(
    meta: Mapping[str, Any], spec: Mapping[str, Any]
) -> tuple[selector.LabelSelector | None, str | None]:
    if spec.get("nodeSelector") is None:
        return None, None
    try:
        return selector.parse(spec["nodeSelector"], field="spec.nodeSelector"), None
    except errors.InvalidSpec as invalid:
        name = meta.get("name", "")
        return None, f'Eip "{name}": {invalid}; no node announces its IPs until that is fixed'
