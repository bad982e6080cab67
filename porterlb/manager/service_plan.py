"""What to do about one Service: the allocation decision, over plain data.

:func:`decide` reads a parsed Service (or None when it is gone), asks the allocator, and
returns a :class:`Plan`: which marks to write, which ingress to publish, which Events to
post. The only state it touches is the in-memory allocator, whose calls change nothing when
they fail, so a plan that is never written can be decided again safely.

An IP taken off a Service that still exists (it leaves the class, is being deleted, moves
to another IP or stops asking for a family) is held, not freed (:meth:`Allocator.hold`): the
Service shows it until the write taking it off lands, and until then it goes to nobody who
could not share it with that Service. The manager settles the hold (see
:mod:`porterlb.manager.ipam`). Only a Service gone from the cache frees its IPs at once.

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

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from porterlb import errors
from porterlb.api import reasons, wellknown
from porterlb.api import service as svc
from porterlb.api.eip import Eip
from porterlb.api.keys import PoolName, ServiceKey, Slot
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

    claim: tuple[PoolName, ...] | None = None
    """Add our finalizer and mark the pool of each IP (the label, and ``porterlb.io/pools``
    when there are several)."""
    unclaim: bool = False
    """Remove our finalizer and the pool marks."""
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


FAMILIES: Final = (4, 6)
"""The families a Service may hold an IP of, one slot each, in the order they are looked up."""


def holdings(alloc: allocator.Allocator, key: ServiceKey) -> dict[int, allocator.Allocation]:
    """What the Service at `key` holds, by IP family."""
    found = {}
    for family in FAMILIES:
        held = alloc.holding(Slot(key, family))
        if held is not None:
            found[family] = held
    return found


def settle(
    alloc: allocator.Allocator, key: ServiceKey, *, shown: Collection[str]
) -> frozenset[PoolName]:
    """Lift the holds of `key` on IPs it no longer shows (`shown`: the ingress it does show);
    the pools of the addresses freed."""
    freed = set()
    for family in FAMILIES:
        slot = Slot(key, family)
        for ip, released in alloc.pending(slot).items():
            if str(ip) not in shown and alloc.settle(slot, ip):
                freed.add(released.pool)
    return frozenset(freed)


def ours_marked(service: svc.Service) -> bool:
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

    The ingress is cleared on a Service marked as ours and in no other class (another class's
    controller owns the status of its Services), being deleted or not: a Service being deleted
    outlives our finalizer as long as another finalizer keeps it, and an IP it still shows
    stays held (given to nobody) until it is gone. Kubernetes' own service controller clears
    the status of a LoadBalancer being deleted too. The clearing rides in the write that
    takes our marks off: it costs no request.
    """
    held = list(holdings(ctx.alloc, key).values())
    if service is None:
        for allocation in held:
            ctx.alloc.release(Slot(key, allocation.ip.version))
        settled = settle(ctx.alloc, key, shown=())
        return Plan(freed=bool(held or settled), pools=_pools(*held) | settled)
    for allocation in held:
        _give_back(ctx.alloc, key, allocation)
    marked = ours_marked(service)
    reports: tuple[Report, ...] = ()
    if held:
        why = "is being deleted" if service.deleting else "is no longer a porterlb LoadBalancer"
        reports = (
            Report(
                False,
                reasons.IP_RELEASED,
                f"Service {key}: released {_listed(held)} because the Service {why}",
            ),
        )
    theirs = ownership is svc.Ownership.OTHER_CLASS
    clear = () if service.ingress and marked and not theirs else None
    return Plan(
        unclaim=marked,
        ingress=clear,
        reports=reports,
        freed=bool(held),
        pools=_pools(*held),
    )


def _give_back(alloc: allocator.Allocator, key: ServiceKey, held: allocator.Allocation) -> None:
    """Release what `key` holds of the family of `held`, holding the IP until it is settled."""
    slot = Slot(key, held.ip.version)
    alloc.release(slot)
    alloc.hold(slot, held)


def _listed(held: Sequence[allocator.Allocation]) -> str:
    """``198.18.0.5 to pool "lan"`` (and so on for each IP)."""
    return " and ".join(f'{allocation.ip} to pool "{allocation.pool}"' for allocation in held)


def _allocate(service: svc.Service, ctx: Context) -> Plan:
    before = holdings(ctx.alloc, service.key)
    try:
        asks = svc.wanted(service)
    except errors.InvalidSpec as failure:
        return _failed(service, list(before.values()), failure)
    got: list[allocator.Allocation] = []
    assigned: list[allocator.Allocation] = []
    """Allocations the Service's request is met by (not those it keeps while it is not)."""
    taken: list[allocator.Allocation] = []
    """Allocations of a family the Service held none of before this decision."""
    missing: list[tuple[svc.Wanted, errors.InvalidSpec]] = []
    for wanted in asks:
        held = _held_for(wanted, before)
        try:
            allocation = _assign(service, wanted, held, ctx)
        except errors.InvalidSpec as failure:
            missing.append((wanted, failure))
            if held is not None:
                got.append(held)  # a request that cannot be met keeps what it has
            continue
        got.append(allocation)
        assigned.append(allocation)
        if held is None:
            taken.append(allocation)
        elif allocation.ip != held.ip:  # moved: the old IP is shown until the write lands
            ctx.alloc.hold(Slot(service.key, held.ip.version), held)
    if missing and svc.every_family(service) and len(asks) > 1:
        for allocation in taken:  # RequireDualStack: every family, or no new IP at all
            ctx.alloc.release(Slot(service.key, allocation.ip.version))
            got.remove(allocation)
            assigned.remove(allocation)
    unlisted = [
        allocation
        for family, allocation in before.items()
        if family not in {kept.ip.version for kept in got}
    ]
    dropped = [] if missing else unlisted
    if missing:
        got.extend(unlisted)  # a request that cannot be met moves nothing
    for allocation in dropped:  # a family the Service no longer asks for
        _give_back(ctx.alloc, service.key, allocation)
    reports = _news(service, got, assigned, dropped, missing, families=len(asks))
    changed = set(before.values()) ^ set(got)
    freed = any(allocation not in got for allocation in before.values())
    plan = replace(
        _recorded(service, got, reports=reports),
        freed=freed,
        pools=_pools(*changed),
    )
    if missing:
        plan = replace(plan, failure=metrics.failure_reason(missing[0][1]))
    if not got and missing:
        return replace(plan, unclaim=ours_marked(service), claim=None)
    return plan


def _held_for(
    wanted: svc.Wanted, before: Mapping[int, allocator.Allocation]
) -> allocator.Allocation | None:
    """What the Service holds of the family `wanted` asks for (of any, when it asks any)."""
    if wanted.family is not None:
        return before.get(wanted.family)
    return next(iter(before.values()), None)


def _assign(
    service: svc.Service,
    wanted: svc.Wanted,
    before: allocator.Allocation | None,
    ctx: Context,
) -> allocator.Allocation:
    """Give `service` the IP `wanted` describes, keeping `before` if it still fits."""
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
    # An IP of any family takes the pool's (4 for a pool that does not exist: that fails).
    family = wanted.family or ctx.alloc.family(pool) or 4
    sharing = (
        allocator.Sharing(key=wanted.sharing_key, ports=service.ports)
        if wanted.sharing_key
        else None
    )
    return ctx.alloc.assign(
        Slot(service.key, family),
        allocator.Request(pool=pool, ip=wanted.ip, family=wanted.family, sharing=sharing),
    )


def _news(
    service: svc.Service,
    got: Sequence[allocator.Allocation],
    assigned: Sequence[allocator.Allocation],
    dropped: Sequence[allocator.Allocation],
    missing: Sequence[tuple[svc.Wanted, errors.InvalidSpec]],
    *,
    families: int,
) -> tuple[Report, ...]:
    """The Events of an allocation: what was allocated, released, and could not be had."""
    reports = []
    new = [allocation for allocation in assigned if str(allocation.ip) not in service.ingress]
    ours = {str(allocation.ip) for allocation in (*got, *dropped)}
    if not new and not missing and not ours.issuperset(service.ingress):
        new = list(assigned)  # the Service shows IPs it never held: say again what it holds
    if new:
        allocated = " and ".join(f'{a.ip} from pool "{a.pool}"' for a in new)
        reports.append(
            Report(False, reasons.IP_ALLOCATED, f"Service {service.key}: allocated {allocated}")
        )
    if dropped:
        reports.append(
            Report(
                False,
                reasons.IP_RELEASED,
                f"Service {service.key}: released {_listed(dropped)} because the Service no"
                " longer asks for an IP of its family",
            )
        )
    if missing:
        message = _missing(service, missing, got) if families > 1 else str(missing[0][1])
        reports.append(Report(True, reasons.ALLOCATION_FAILED, message))
    return tuple(reports)


def _missing(
    service: svc.Service,
    missing: Sequence[tuple[svc.Wanted, errors.InvalidSpec]],
    got: Sequence[allocator.Allocation],
) -> str:
    """The AllocationFailed message of a dual-stack Service: which family is missing, under
    which policy, what it serves, and why."""
    prefix = f"Service {service.key}: "
    failures = "; ".join(str(failure).removeprefix(prefix) for _, failure in missing)
    lacking = " and ".join(svc.family_name(wanted.family) for wanted, _ in missing)
    policy = service.ip_family_policy or "a dual-stack policy"
    serving = " and ".join(str(allocation.ip) for allocation in got)
    if not got:
        return f"{prefix}{policy}: no {lacking} address, so no IP is allocated: {failures}"
    if svc.every_family(service):
        return f"{prefix}{policy}: no {lacking} address (it keeps {serving}): {failures}"
    return f"{prefix}{policy}: no {lacking} address, serving {serving} only: {failures}"


def _recorded(
    service: svc.Service,
    held: Sequence[allocator.Allocation],
    *,
    reports: tuple[Report, ...],
) -> Plan:
    """The writes that make the Service show `held`: the claim of its pools and its IPs."""
    ips = tuple(str(allocation.ip) for allocation in held)
    pools = tuple(allocation.pool for allocation in held)
    listed = ",".join(pools) if len(pools) > 1 else None
    needs_claim = bool(held) and (
        wellknown.SERVICE_FINALIZER not in service.finalizers
        or service.label(wellknown.POOL_LABEL) != pools[0]
        or service.annotation(wellknown.POOLS) != listed
    )
    return Plan(
        claim=pools if needs_claim else None,
        ingress=ips if service.ingress != ips else None,
        reports=reports,
    )


def _still_fits(held: allocator.Allocation, wanted: svc.Wanted, ctx: Context) -> bool:
    """Whether the Service keeps the pool it draws from: it asks for nothing else.

    A Service stays where it is while its pool exists, even when disabled (a disabled pool
    keeps what it has), or when a pool bound to its namespace appears: moving an IP breaks
    every connection through it, so only an explicit request moves one.
    """
    return (
        held.pool in ctx.usable
        and (not wanted.pools or held.pool in wanted.pools)
        and wanted.ip in (None, held.ip)
        and wanted.family in (None, held.ip.version)
    )


def _failed(
    service: svc.Service, held: Sequence[allocator.Allocation], failure: errors.InvalidSpec
) -> Plan:
    """A request that cannot be met: the Service keeps the IPs it holds, recorded.

    Recorded, because the allocator may hold an IP the Service does not show: a write of it
    refused (a Conflict) just before the Service changed its request, or the status cleared
    by a round trip through another type. Kept in memory but never written, it would be
    counted in its Eip's status by no Service: a leak (bench.churn found it).
    """
    report = Report(True, reasons.ALLOCATION_FAILED, str(failure))
    label = metrics.failure_reason(failure)
    if held:
        return replace(_recorded(service, held, reports=(report,)), failure=label)
    marked = ours_marked(service)
    return Plan(
        unclaim=marked,
        ingress=() if service.ingress else None,
        reports=(report,),
        failure=label,
    )


def _full(alloc: allocator.Allocator, pool: PoolName) -> bool:
    usage = alloc.usage(pool)
    return usage.used >= usage.size


def _pools(*held: allocator.Allocation) -> frozenset[PoolName]:
    return frozenset(allocation.pool for allocation in held)
