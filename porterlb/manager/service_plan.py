"""What to do about one Service: the allocation decision, over plain data.

:func:`decide` reads a parsed Service (or None when it is gone), asks the allocator, and
returns a :class:`Plan`: which marks to write, which ingress to publish, which Events to
post. The only state it touches is the in-memory allocator, whose calls change nothing when
they fail, so a plan that is never written can be decided again safely.

Bad input never disturbs what works: a malformed annotation or a request that cannot be
met leaves a Service's current IP in place and reports why; only a Service whose pool
went away, or that stopped being ours, loses its IP.

A Service that leaves porterlb's class in any way (its type, the opt-in annotation, or, by way
of another type since the API server keeps the class immutable on a LoadBalancer, another
``loadBalancerClass``), deleting or not, loses our finalizer and pool label and gives its IP
back: a finalizer nobody removes leaves the Service Terminating forever, and its pool label
keeps its Eip from ever being deleted. A Service of another class that carries none of our
marks is never touched, and its ``status.loadBalancer`` is never ours to clear.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from porterlb import errors
from porterlb.api import reasons, wellknown
from porterlb.api import service as svc
from porterlb.api.eip import Eip
from porterlb.api.keys import PoolName, ServiceKey
from porterlb.ipam import allocator, selection
from porterlb.manager import metrics


@dataclass(frozen=True, slots=True)
class Report:
    """An Event to post on the Service."""

    warning: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The writes that bring one Service in line with the allocator."""

    claim: PoolName | None = None
    """Add our finalizer and this pool label."""
    unclaim: bool = False
    """Remove our finalizer and the pool label."""
    ingress: tuple[str, ...] | None = None
    """Publish these IPs in ``status.loadBalancer.ingress`` (None: leave it)."""
    reports: tuple[Report, ...] = ()
    freed: bool = False
    """An address went back to a pool: Services waiting for one may now get it."""
    pools: frozenset[PoolName] = field(default_factory=frozenset)
    """Pools whose usage changed (their Eip status needs refreshing)."""
    failure: str | None = field(default=None, compare=False)
    """Why no IP could be given, as the ``porterlb_allocation_failures_total`` label (a
    counter's concern, not a write: plans that write the same compare equal)."""


@dataclass(frozen=True, slots=True)
class Context:
    """Everything besides the Service that the decision reads."""

    alloc: allocator.Allocator
    eips: Collection[Eip]
    namespace_labels: Mapping[str, str]
    usable: frozenset[PoolName]
    """Pools the allocator accepted (layer2, valid, not overlapping, not deleting)."""
    lb_class: str
    """The ``spec.loadBalancerClass`` porterlb serves (``--lb-class``)."""


def decide(key: ServiceKey, service: svc.Service | None, ctx: Context) -> Plan:
    """The plan for the Service at `key` (None when it was deleted)."""
    if service is None:
        return _release(key, ctx, service=None)
    ownership = svc.ownership(service, ctx.lb_class)
    if service.deleting or ownership is not svc.Ownership.OURS:
        return _release(key, ctx, service=service, ownership=ownership)
    return _allocate(service, ctx)


def _ours_marked(service: svc.Service) -> bool:
    return (
        wellknown.SERVICE_FINALIZER in service.finalizers
        or service.label(wellknown.POOL_LABEL) is not None
    )


def _release(
    key: ServiceKey,
    ctx: Context,
    *,
    service: svc.Service | None,
    ownership: svc.Ownership | None = None,
) -> Plan:
    """Give back what `key` holds and take our marks off the Service (None: it is gone).

    The ingress is cleared only on a Service still in no other class, not being deleted and
    marked as ours: another class's controller owns the status of its Services.
    """
    held = ctx.alloc.holding(key)
    ctx.alloc.release(key)
    if service is None:
        return Plan(freed=held is not None, pools=_pools(held))
    marked = _ours_marked(service)
    reports: tuple[Report, ...] = ()
    if held is not None:
        why = "is being deleted" if service.deleting else "is no longer a porterlb LoadBalancer"
        reports = (
            Report(
                False,
                reasons.IP_RELEASED,
                f"Service {key}: released {held.ip} to pool "
                f'"{held.pool}" because the Service {why}',
            ),
        )
    theirs = ownership is svc.Ownership.OTHER_CLASS
    clear = () if service.ingress and marked and not service.deleting and not theirs else None
    return Plan(
        unclaim=marked,
        ingress=clear,
        reports=reports,
        freed=held is not None,
        pools=_pools(held),
    )


def _allocate(service: svc.Service, ctx: Context) -> Plan:
    before = ctx.alloc.holding(service.key)
    try:
        wanted = svc.wanted(service)
        if before is not None and _still_fits(before, wanted, ctx):
            pool = before.pool  # never move traffic because a better pool appeared
        else:
            pool = selection.choose(
                service,
                wanted,
                ctx.eips,
                usable=lambda eip: eip.name in ctx.usable,
                full=lambda name: _full(ctx.alloc, name),
                namespace_labels=ctx.namespace_labels,
            )
        sharing = (
            allocator.Sharing(key=wanted.sharing_key, ports=service.ports)
            if wanted.sharing_key
            else None
        )
        held = ctx.alloc.assign(
            service.key,
            allocator.Request(pool=pool, ip=wanted.ip, family=wanted.family, sharing=sharing),
        )
    except errors.InvalidSpec as failure:
        return _failed(service, before, failure)

    ip = str(held.ip)
    reports: tuple[Report, ...] = ()
    if service.ingress != (ip,):
        reports = (
            Report(
                False,
                reasons.IP_ALLOCATED,
                f'Service {service.key}: allocated {ip} from pool "{held.pool}"',
            ),
        )
    moved = before is not None and before.ip != held.ip
    return _recorded(
        service,
        held,
        reports=reports,
        freed=moved,
        pools=_pools(before) | _pools(held) if before != held else frozenset(),
    )


def _recorded(
    service: svc.Service,
    held: allocator.Allocation,
    *,
    reports: tuple[Report, ...],
    freed: bool = False,
    pools: frozenset[PoolName] = frozenset(),
) -> Plan:
    """The writes that make the Service show `held`: the claim of its pool and its IP."""
    ip = str(held.ip)
    needs_claim = (
        wellknown.SERVICE_FINALIZER not in service.finalizers
        or service.label(wellknown.POOL_LABEL) != held.pool
    )
    return Plan(
        claim=held.pool if needs_claim else None,
        ingress=(ip,) if service.ingress != (ip,) else None,
        reports=reports,
        freed=freed,
        pools=pools,
    )


def _still_fits(held: allocator.Allocation, wanted: svc.Wanted, ctx: Context) -> bool:
    """Whether the Service keeps the pool it draws from: it asks for nothing else.

    A Service stays where it is while its pool exists, even when disabled (a disabled pool
    keeps what it has), or when a pool bound to its namespace appears: moving an IP breaks
    every connection through it, so only an explicit request moves one.
    """
    return (
        held.pool in ctx.usable
        and wanted.pool in (None, held.pool)
        and wanted.ip in (None, held.ip)
        and wanted.family in (None, held.ip.version)
    )


def _failed(
    service: svc.Service, held: allocator.Allocation | None, failure: errors.InvalidSpec
) -> Plan:
    """A request that cannot be met: the Service keeps the IP it holds, recorded.

    Recorded, because the allocator may hold an IP the Service does not show: a write of it
    refused (a Conflict) just before the Service changed its request, or the status cleared
    by a round trip through another type. Kept in memory but never written, it would be
    counted in its Eip's status by no Service: a leak (bench.churn found it).
    """
    report = Report(True, reasons.ALLOCATION_FAILED, str(failure))
    label = metrics.failure_reason(failure)
    if held is not None:
        return replace(_recorded(service, held, reports=(report,)), failure=label)
    marked = _ours_marked(service)
    return Plan(
        unclaim=marked,
        ingress=() if service.ingress else None,
        reports=(report,),
        failure=label,
    )


def _full(alloc: allocator.Allocator, pool: PoolName) -> bool:
    usage = alloc.usage(pool)
    return usage.used >= usage.size


def _pools(held: allocator.Allocation | None) -> frozenset[PoolName]:
    return frozenset() if held is None else frozenset({held.pool})
