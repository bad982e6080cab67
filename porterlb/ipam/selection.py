"""Which pool a Service draws from: the OpenELB order, as a pure function.

1. the pool named by the ``eip.openelb.kubesphere.io/v1alpha2`` annotation; when it names
   one pool per family (``"lan-v4,lan-v6"``), the one of the family of the IP asked for;
2. the pool containing the requested IP;
3. pools bound to the Service's namespace (``namespaces`` / ``namespaceSelector``): pools
   with room first, then the lowest ``priority``, then the oldest;
4. the pool annotated ``eip.openelb.kubesphere.io/is-default-eip: "true"`` (the oldest if
   several are).
Unlike OpenELB, steps 3 and 4 skip pools of the wrong family for a single-stack Service, and
pools that are disabled, being deleted, not layer2, or rejected (overlap, bad address).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from porterlb import errors
from porterlb.api.eip import Eip
from porterlb.api.keys import PoolName
from porterlb.api.service import Service, Wanted


class NoPool(errors.AllocationError):
    """No pool fits the Service."""


def choose(
    service: Service,
    wanted: Wanted,
    eips: Collection[Eip],
    *,
    usable: Callable[[Eip], bool],
    full: Callable[[PoolName], bool],
    namespace_labels: Mapping[str, str],
) -> PoolName:
    """The pool `service` should draw from.

    `usable(eip)` says whether the allocator accepted the pool (layer2, valid, no overlap).
    Raises NoPool naming the Service and why nothing fits.
    """
    by_name = {eip.name: eip for eip in eips}
    if wanted.pools:
        return _named(service, wanted, by_name)
    if wanted.ip is not None:
        for eip in sorted(eips, key=lambda e: e.precedence):
            if eip.addresses is not None and eip.addresses.contains(wanted.ip) and usable(eip):
                return eip.name
        raise NoPool(f"Service {service.key}: no layer2 Eip contains the requested IP {wanted.ip}")

    candidates = [
        eip
        for eip in eips
        if usable(eip)
        and not eip.disabled
        and not eip.deleting
        and (
            wanted.family is None or eip.addresses is None or eip.addresses.family == wanted.family
        )
    ]
    bound = [e for e in candidates if e.selects_namespace(service.namespace, namespace_labels)]
    if bound:
        best = min(bound, key=lambda e: (full(e.name), e.priority, e.precedence))
        return best.name
    defaults = sorted((e for e in candidates if e.is_default), key=lambda e: e.precedence)
    if defaults:
        return defaults[0].name
    family = f" IPv{wanted.family}" if wanted.family else ""
    raise NoPool(
        f"Service {service.key}: no{family} Eip is bound to namespace {service.namespace}"
        " and no default Eip (annotation eip.openelb.kubesphere.io/is-default-eip) is usable"
    )


def _named(service: Service, wanted: Wanted, by_name: Mapping[PoolName, Eip]) -> PoolName:
    """The named pool for `wanted`: the only one named (the allocator checks its family), or
    the one of the wanted family among those named."""
    for name in wanted.pools:
        if name not in by_name:
            raise NoPool(f'Service {service.key}: Eip "{name}" does not exist')
    if len(wanted.pools) == 1:
        return wanted.pools[0]
    if wanted.family is None:
        return wanted.pools[0]
    families = {name: _family(by_name[name]) for name in wanted.pools}
    matching = [name for name in wanted.pools if families[name] == f"IPv{wanted.family}"]
    if len(matching) > 1:
        named = " and ".join(f'"{name}"' for name in matching)
        raise NoPool(
            f"Service {service.key}: the pool annotation names two IPv{wanted.family} Eips"
            f" ({named}); name one per IP family"
        )
    if not matching:
        named = ", ".join(f'"{name}" ({families[name]})' for name in wanted.pools)
        raise NoPool(
            f"Service {service.key}: the pool annotation names no IPv{wanted.family} Eip"
            f" (it names {named})"
        )
    return matching[0]


def _family(eip: Eip) -> str:
    return "invalid address" if eip.addresses is None else f"IPv{eip.addresses.family}"
