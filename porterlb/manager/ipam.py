"""The manager's IP address management loop: Eips and Services in, IPs and statuses out.

Three reflectors (Services, Eips, Namespaces) feed two work queues. A Service key is decided
by :func:`porterlb.manager.service_plan.decide` and the plan is written; an Eip name gets
its finalizer and status. State lives in the API only: on start, the recorded allocations
(``status.loadBalancer.ingress`` + the pool label) are replayed oldest Service first before
anything new is handed out, so a restart keeps every IP, and a contradiction in the API
(two Services recorded with one IP and no shared sharing key) is settled in favour of the
older Service, with an Event on the younger.

No IP shows on two Services: an IP taken off a Service that still exists stays held in the
allocator (a pending release, :meth:`porterlb.ipam.allocator.Allocator.hold`) until the
write taking it off has returned success, or, when that write's outcome is unknown (it failed
in transit, or was never sent), until the watch cache shows the Service without it at a
revision later than the one the release was decided from (an earlier one may predate our own
write of the IP). A new leader holds, as it loads, the IPs that Services carrying our marks
still show but no longer hold: a release the old leader decided, or a Service that left
porterlb's class meanwhile. Before, an IP freed in memory went to the next Service at once,
and under churn its write could land before the release: bench.churn read one IP on two
Services 19 times in a run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import lightkube

from porterlb import errors, logs
from porterlb.api import address, reasons, wellknown
from porterlb.api import eip as eip_api
from porterlb.api import service as svc
from porterlb.api.keys import PoolName, ServiceKey, Slot
from porterlb.ipam import allocator, pool
from porterlb.kube import events, queueing, reflector, resources, writers
from porterlb.manager import metrics, pool_status, service_plan
from porterlb.manager.service_plan import FAMILIES

log = logging.getLogger(__name__)

WRITE_EXPECTATION = 5.0
"""Seconds a write is assumed to be on its way through the watch; after that, decide anew."""

REFERENCE_RECHECK = 0.5
"""Seconds before re-checking whether a deleted Eip is still referenced by a Service."""


class ServiceWriter(Protocol):
    """Writes a Service's plan, from the version of it the plan was decided from."""

    async def __call__(
        self,
        client: lightkube.AsyncClient,
        service: svc.Service,
        plan: service_plan.Plan,
        *,
        resource_version: str,
    ) -> None: ...


class Ipam:
    """The IPAM controller: run it with :meth:`run`."""

    def __init__(self, client: lightkube.AsyncClient, *, lb_class: str, workers: int = 16) -> None:
        self.client = client
        self.lb_class = lb_class
        self.poster = events.Poster(client, component="porterlb-manager")
        self.alloc = allocator.Allocator()
        self.write_service: ServiceWriter = _write
        """Every Service write goes through here: tests hold a write as a loaded machine would."""
        self.usable: frozenset[PoolName] = frozenset()
        self.problems: dict[PoolName, tuple[str, str]] = {}
        self._families: dict[PoolName, int] = {}
        self.loaded = False
        self._last_report: dict[ServiceKey, service_plan.Report] = {}
        self._last_problem: dict[PoolName, tuple[str, str]] = {}
        self._eips_parsed: list[eip_api.Eip] | None = None
        self._written: dict[
            ServiceKey, tuple[tuple[PoolName, ...] | None, tuple[str, ...] | None, float]
        ] = {}
        """Service -> the claim and ingress last written, and when (see _not_yet_seen)."""
        self._eip_written: dict[str, pool_status.Written] = {}
        """Eip -> its last status write."""
        self._pool_changed: dict[PoolName, float] = {}
        """Pool -> when an allocation or release in it was last decided."""
        self._pool_changes: dict[PoolName, int] = {}
        """Pool -> allocations and releases decided in it, in all: a count that only grows, so
        that one decided while a status write is on its way still paces the next write (a
        count reset once the write returned lost it, and the next write waited for the pace
        of a still pool)."""
        self._released_at: dict[ServiceKey, int] = {}
        """Service -> the revision of it the newest release still held was decided from."""
        self._unsure: dict[ServiceKey, int] = {}
        """Service -> the revision of it our last write was decided from, until the cache
        holds a later one: till then the API may show IPs the cache does not (the write landed
        unseen, or its outcome is unknown). Kept across terms: a write cut off by the end of
        a term may still land."""
        self._kept: set[ServiceKey] = set()
        """Services that keep an IP while asking for another one that could not be had (a
        full pool, a taken IP): like those holding nothing, they wait for an address to free."""
        self.service_queue = queueing.WorkQueue(
            self._handle_service, name="ipam/services", workers=workers
        )
        self.eip_queue = queueing.WorkQueue(self._handle_eip, name="ipam/eips", workers=2)
        self.services = reflector.Reflector(
            client, resources.Service, on_change=self.service_queue.add, name="services"
        )
        self.eips = reflector.Reflector(
            client, resources.Eip, on_change=self._eip_changed, name="eips"
        )
        self.namespaces = reflector.Reflector(
            client, resources.Namespace, on_change=self._namespace_changed, name="namespaces"
        )

    async def run(self) -> None:
        """Watch and lead: what a manager without leader election does."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.watch(), name="manager/ipam/watch")
            group.create_task(self.lead(), name="manager/ipam/lead")

    async def watch(self) -> None:
        """Keep the caches current, leader or not, so that a new leader starts at once."""
        async with asyncio.TaskGroup() as group:
            for source in (self.services, self.eips, self.namespaces):
                group.create_task(source.run(), name=f"manager/watch/{source.name}")

    async def lead(self, *, resume: bool = False) -> None:
        """Rebuild the allocator from the API, then converge until cancelled. With `resume`
        (this process led last, and nobody since) the state of the last term is kept: its
        queues hold what changed meanwhile and what that term left unfinished."""
        for source in (self.services, self.eips, self.namespaces):
            await source.synced.wait()
        if not (resume and self.loaded):
            self._reset()
            self._load()
        metrics.watch_pools(self._pool_usage)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.poster.run(), name="manager/events")
                group.create_task(self.service_queue.run(), name="manager/ipam/services")
                group.create_task(self.eip_queue.run(), name="manager/ipam/eips")
        finally:
            metrics.watch_pools(dict)

    def unload(self) -> None:
        """Stop following the caches (not leading): the next term loads afresh."""
        self.loaded = False

    def _pool_usage(self) -> dict[PoolName, tuple[int, allocator.PoolUsage]]:
        """Each served pool's family and usage, for a scrape (on the metrics server's thread:
        it reads only attributes the loop replaces whole, and O(1) usage figures)."""
        families = self._families
        usage = {}
        for name in self.usable & families.keys():
            try:
                usage[name] = (families[name], self.alloc.usage(name))
            except errors.AllocationError:
                continue  # removed since the pool list was read
        return usage

    def _reset(self) -> None:
        """Forget everything decided before: another leader may have decided since.

        What was last said in Events stays: news that changed meanwhile differs from it and is
        said, and the same news is not said again. A manager that lost the Lease to a slow API
        server and won it back re-posted an Event per Service each time (bench.control_plane
        on a loaded machine: 33 terms, 14 NoReadyEndpoint Events per Service, 10,804 dropped).
        The pace of the Eip status writes stays too: it decides when, never what, and each
        write applies only to the version it was decided from. Forgetting it wrote the whole
        status of every Eip whose usage had changed at the start of each term (up to 21 terms
        in one bench.control_plane run on a loaded machine).
        """
        self.alloc = allocator.Allocator()
        self.usable = frozenset()
        self.problems = {}
        self._eips_parsed = None
        self._written = {}
        self._released_at = {}
        self._kept = set()

    # -- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        self._set_pools()
        shown = [
            (service, obj)
            for service, obj in ((svc.parse(obj), obj) for obj in self.services.cache.values())
            if service.ingress
        ]
        recorded = [
            service
            for service, _ in shown
            if not service.deleting
            and svc.ownership(service, self.lb_class) is svc.Ownership.OURS
            and wellknown.SERVICE_FINALIZER in service.finalizers
        ]
        for service in sorted(recorded, key=lambda s: (s.created, s.key)):
            self._replay(service)
        replayed = {service.key for service in recorded}
        for service, obj in shown:
            if service.key not in replayed and service_plan.ours_marked(service):
                self._hold_shown(service, reflector.object_revision(obj))
        self.loaded = True
        for key in self.eips.cache:
            self.eip_queue.add(key)
        # A Service refused for a full pool last term waits for an address to free: one
        # freed by a release that landed as the term ended frees nothing in this term's
        # allocator, which never held it (bench.churn: ten Services left without an IP).
        self._requeue_pending()

    def _replay(self, service: svc.Service) -> None:
        try:
            ips = [ipaddress.ip_address(text) for text in service.ingress]
        except ValueError:
            return  # the normal reconcile reports it
        pools = svc.recorded_pools(service)
        sharing = _sharing(service)
        for index, ip in enumerate(ips):
            pool_name = pools[index] if index < len(pools) else self._pool_containing(ip)
            if pool_name is None:
                continue
            try:
                self.alloc.assign(
                    Slot(service.key, ip.version),
                    allocator.Request(pool=pool_name, ip=ip, family=None, sharing=sharing),
                )
            except errors.AllocationError as conflict:
                self._report(
                    service,
                    service_plan.Report(
                        True,
                        reasons.ALLOCATION_FAILED,
                        f"Service {service.key}: recorded IP {ip} cannot be kept ({conflict});"
                        " an older Service holds it, so this one gets another",
                    ),
                )

    def _hold_shown(self, service: svc.Service, revision: int) -> None:
        """Hold the IPs `service` shows, as of `revision`, whose release has not landed."""
        sharing = _sharing(service)
        for text in service.ingress:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            shown = allocator.Allocation(PoolName(""), ip, sharing)  # hold finds its pool
            if self.alloc.hold(Slot(service.key, ip.version), shown):
                self._released_at[service.key] = revision

    def _pool_containing(self, ip: address.IPAddress) -> PoolName | None:
        for parsed in self._parsed_eips():
            if parsed.name in self.usable and parsed.addresses and parsed.addresses.contains(ip):
                return parsed.name
        return None

    # -- pools -----------------------------------------------------------------------------

    def _parsed_eips(self) -> list[eip_api.Eip]:
        """Every Eip, parsed once per change of any Eip (every Service decision reads them)."""
        if self._eips_parsed is None:
            self._eips_parsed = [eip_api.parse(obj) for obj in self.eips.cache.values()]
        return self._eips_parsed

    def _set_pools(self) -> Iterable[ServiceKey]:
        problems: dict[PoolName, tuple[str, str]] = {}
        pools = []
        for parsed in sorted(self._parsed_eips(), key=lambda e: e.precedence):
            if parsed.protocol != "layer2":
                problems[parsed.name] = (
                    reasons.UNSUPPORTED_PROTOCOL,
                    f'Eip "{parsed.name}": protocol {parsed.protocol} is not served by porterlb'
                    " (only layer2); this Eip is left alone",
                )
            elif parsed.addresses is None:
                problems[parsed.name] = (reasons.POOL_INVALID, parsed.error or "invalid address")
            elif not parsed.deleting:
                pools.append(
                    pool.Pool(
                        name=parsed.name, addresses=parsed.addresses, disabled=parsed.disabled
                    )
                )
        diff = self.alloc.set_pools(pools)
        for slot, orphan in diff.orphaned.items():
            # Another pool may serve the address now; the Service shows it until rewritten.
            obj = self.services.cache.get(slot.service)
            if obj is None:
                continue
            shown = str(orphan.ip) in svc.parse(obj).ingress or slot.service in self._unsure
            if shown and self.alloc.hold(slot, orphan):
                self._released_at[slot.service] = reflector.object_revision(obj)
        for name, message in diff.rejected.items():
            problems[name] = (reasons.POOL_OVERLAP, message)
        self.problems = problems
        self.usable = frozenset(p.name for p in pools) - problems.keys()
        self._families = {p.name: p.addresses.family for p in pools}
        return {slot.service for slot in diff.orphaned}

    def _eip_changed(self, name: str) -> None:
        before, self._eips_parsed = self._eips_parsed, None
        self.eip_queue.add(name)
        if not self.loaded:
            return
        if before is not None and self._parsed_eips() == before:
            # Only a status changed (mostly our own writes): no pool moved, so nothing waits
            # on it. Requeueing every pending Service parses them all: at 10,000 Services and
            # ten Eip status writes a second that saturated the manager (bench.control_plane).
            return
        orphaned = set(self._set_pools())
        for key in orphaned:
            self.service_queue.add(key)
        self._requeue_pending()

    def _namespace_changed(self, name: str) -> None:
        if self.loaded:
            self._requeue_pending(namespace=name)

    def _requeue_pending(self, namespace: str | None = None) -> None:
        """Enqueue every Service of ours that holds no IP, or not the one it asks for (a pool
        may have room for it now)."""
        for key, obj in self.services.cache.items():
            if namespace is not None and not key.startswith(f"{namespace}/"):
                continue
            held = service_plan.holdings(self.alloc, ServiceKey(key))
            if (not held or key in self._kept) and _looks_ours(obj, self.lb_class):
                self.service_queue.add(key)

    # -- Services --------------------------------------------------------------------------

    async def _handle_service(self, key: str) -> queueing.Outcome:
        service_key = ServiceKey(key)
        obj = self.services.cache.get(key)
        service = None
        if obj is None:
            self._unsure.pop(service_key, None)
        else:
            service = svc.parse(obj)
            revision = reflector.object_revision(obj)
            if self._unsure.get(service_key, revision) < revision:
                del self._unsure[service_key]
            since = self._released_at.get(service_key)
            # Only a revision later than the release was decided from counts: an earlier one
            # may not show even our own write of the IP.
            if since is not None and revision > since:
                self._settle(service_key, service.ingress)
        pending = self._pending(service_key)
        namespace = key.partition("/")[0]
        labels = ((self.namespaces.cache.get(namespace) or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        plan = service_plan.decide(
            service_key,
            service,
            service_plan.Context(
                alloc=self.alloc,
                eips=self._parsed_eips(),
                namespace_labels=labels,
                usable=self.usable,
                lb_class=self.lb_class,
            ),
        )
        if service is not None and service_key not in self._unsure and self._pending(service_key):
            # Nothing of ours can make the Service show an IP the cache does not show on it
            # (a claim write refused meanwhile): such an IP needs no hold. Held, it would leak
            # (bench.churn: a Service turned NodePort before its IP was written).
            self._settle(service_key, service.ingress)
        after = self._pending(service_key)
        if obj is not None and not after <= pending:
            self._released_at[service_key] = reflector.object_revision(obj)
        elif not after:
            self._released_at.pop(service_key, None)
        if plan.failure is not None:
            metrics.ALLOCATION_FAILURES.labels(plan.failure).inc()
        for report in plan.reports:
            if service is not None:
                self._report(service, report)
        if service is None:
            self._last_report.pop(service_key, None)
        now = asyncio.get_running_loop().time()
        for name in plan.pools:
            self._pool_changed[name] = now
            self._pool_changes[name] = self._pool_changes.get(name, 0) + 1
            self.eip_queue.add(name)
        failed = any(r.reason == reasons.ALLOCATION_FAILED for r in plan.reports)
        if failed and service_plan.holdings(self.alloc, service_key):
            self._kept.add(service_key)
        else:
            self._kept.discard(service_key)
        if plan.freed:
            self._requeue_pending()
        if obj is None or service is None:
            self._written.pop(service_key, None)
            return queueing.Done()
        trimmed = self._not_yet_seen(service_key, plan)
        if trimmed.claim or trimmed.unclaim or trimmed.ingress is not None:
            self._unsure[service_key] = reflector.object_revision(obj)
        outcome = await queueing.attempt(
            self.write_service(
                self.client, service, trimmed, resource_version=reflector.version(obj)
            )
        )
        if not isinstance(outcome, queueing.Done):
            return outcome
        if trimmed.claim or trimmed.unclaim or trimmed.ingress is not None:
            # Written from the version read: the Service shows what was read, but the ingress.
            self._settle(
                service_key, service.ingress if trimmed.ingress is None else trimmed.ingress
            )
        if trimmed != plan:
            # Our own writes are still on their way; look again once they should have arrived,
            # in case somebody else undid them meanwhile.
            return queueing.Retry(after=WRITE_EXPECTATION)
        if plan.claim or plan.ingress is not None:
            now = asyncio.get_running_loop().time()
            self._written[service_key] = (plan.claim, plan.ingress, now)
        return outcome

    def _pending(self, key: ServiceKey) -> set[tuple[int, address.IPAddress]]:
        return {(family, ip) for family in FAMILIES for ip in self.alloc.pending(Slot(key, family))}

    def _settle(self, key: ServiceKey, shown: tuple[str, ...]) -> None:
        """Lift the holds of `key` on IPs the Service no longer shows (`shown` is what it
        does, as a write just made it or as a later revision in the cache says); Services
        waiting for an address get another chance."""
        freed = service_plan.settle(self.alloc, key, shown=shown)
        if not self._pending(key):
            self._released_at.pop(key, None)
        for name in freed:
            self.eip_queue.add(name)
        if freed:
            self._requeue_pending()

    def _not_yet_seen(self, key: ServiceKey, plan: service_plan.Plan) -> service_plan.Plan:
        """Drop the writes of `plan` made moments ago whose watch events have not arrived.

        An event already on its way when we wrote (another change to the Service) shows the
        Service without our write; deciding on it would write the same again (client-go's
        controllers keep "expectations" alike).
        """
        written = self._written.get(key)
        if written is None:
            return plan
        claim, ingress, at = written
        if asyncio.get_running_loop().time() - at > WRITE_EXPECTATION:
            del self._written[key]
            return plan
        return dataclasses.replace(
            plan,
            claim=None if plan.claim == claim else plan.claim,
            ingress=None if plan.ingress == ingress else plan.ingress,
        )

    def _report(self, service: svc.Service, report: service_plan.Report) -> None:
        if self._last_report.get(service.key) == report:
            return  # the same news again: say it once
        self._last_report[service.key] = report
        self.poster.emit(
            events.Notice(
                subject=events.Subject.service(service),
                type="Warning" if report.warning else "Normal",
                reason=report.reason,
                message=report.message,
            )
        )

    # -- Eips ------------------------------------------------------------------------------

    async def _handle_eip(self, name: str) -> queueing.Outcome:
        obj = self.eips.cache.get(name)
        if obj is None:
            return queueing.Done()
        parsed = eip_api.parse(obj)
        meta = obj.get("metadata") or {}
        try:
            if parsed.deleting:
                return await self._finish_deletion(parsed, meta)
            if parsed.protocol == "layer2" and wellknown.EIP_FINALIZER not in parsed.finalizers:
                await writers.set_eip_finalizers(
                    self.client,
                    name,
                    [*parsed.finalizers, wellknown.EIP_FINALIZER],
                    reflector.version(obj),
                )
                # The status is written from the version this write made, which the watch
                # brings with the Eip queued again: a status written from `obj` would be
                # refused as a Conflict.
                return queueing.Done()
            self._report_problem(parsed.name, str(meta.get("uid", "")))
            return await self._write_eip_status(parsed, obj)
        except errors.Conflict:
            return queueing.Retry(after=queueing.CONFLICT_RECHECK)
        except errors.TransientError as failure:
            log.warning("%s", failure, extra=logs.fields(pool=name))
            return queueing.Retry(after=failure.delay)

    def _report_problem(self, name: PoolName, uid: str) -> None:
        """A Warning Event when an Eip's problem appears or changes (the condition holds it)."""
        problem = self.problems.get(name)
        if problem is None:
            self._last_problem.pop(name, None)
            return
        if self._last_problem.get(name) == problem:
            return
        self._last_problem[name] = problem
        reason, message = problem
        self.poster.emit(
            events.Notice(
                subject=events.Subject.eip(name, uid),
                type="Warning",
                reason=reason,
                message=message,
            )
        )

    async def _write_eip_status(self, parsed: eip_api.Eip, obj: dict[str, Any]) -> queueing.Outcome:
        """Bring the Eip's status in line, by a patch of the version `obj` was read as.

        The patch deletes the ``used`` entries `obj` shows and the allocator does not, so it
        is right only for that version: a newer one (another leader's write) makes it a
        Conflict and the Eip is decided again from the newer status.
        """
        old = obj.get("status") or {}
        # Wait before computing: the status lists every used IP, O(used) to build.
        now = asyncio.get_running_loop().time()
        changes = self._pool_changes.get(parsed.name, 0)
        wait = pool_status.write_after(
            now,
            written=self._eip_written.get(parsed.name),
            changed=self._pool_changed.get(parsed.name),
            changes=changes,
        )
        if wait > 0:
            return queueing.Retry(after=wait)
        status = pool_status.desired(
            parsed, problem=self.problems.get(parsed.name), alloc=self.alloc, old=old
        )
        if not pool_status.changed(old, status):
            return queueing.Done()
        # Once still, each Eip waits as if it held every pool's entries: one write per Eip per
        # period, all of them together pool_status.WRITE_RATE entries a second.
        own = len(status.get("used") or ())
        last = self._eip_written.get(parsed.name)
        # The attempt paces the next one, but only a write that landed has shown the changes.
        sent = pool_status.Written(
            at=now,
            entries=max(own, self._used_everywhere()),
            own=own,
            counted=0 if last is None else last.counted,
        )
        self._eip_written[parsed.name] = sent
        await writers.set_eip_status(
            self.client, parsed.name, status, resource_version=reflector.version(obj)
        )
        self._eip_written[parsed.name] = dataclasses.replace(sent, counted=changes)
        return queueing.Done()

    def _used_everywhere(self) -> int:
        return sum(self.alloc.usage(name).used for name in self.usable)

    async def _finish_deletion(self, parsed: eip_api.Eip, meta: dict[str, Any]) -> queueing.Outcome:
        if wellknown.EIP_FINALIZER not in parsed.finalizers:
            return queueing.Done()
        # set_pools already released the pool's allocations; wait until no Service names it.
        referenced = any(_names_pool(obj, parsed.name) for obj in self.services.cache.values())
        if referenced:
            return queueing.Retry(after=REFERENCE_RECHECK)
        rest = [f for f in parsed.finalizers if f != wellknown.EIP_FINALIZER]
        await writers.set_eip_finalizers(
            self.client, parsed.name, rest, str(meta.get("resourceVersion", ""))
        )
        return queueing.Done()


def _sharing(service: svc.Service) -> allocator.Sharing | None:
    """The sharing of `service` as recorded; read alone, so that a malformed annotation
    elsewhere does not cost the Service its IPs."""
    sharing_key = service.annotation(wellknown.SHARING_KEY)
    return allocator.Sharing(key=sharing_key, ports=service.ports) if sharing_key else None


def _names_pool(obj: dict[str, Any], pool: PoolName) -> bool:
    """Whether the Service object `obj` is marked as holding an IP of `pool` (read raw: this
    runs over every Service while an Eip waits to be deleted)."""
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(wellknown.POOL_LABEL) == pool:
        return True
    listed = (meta.get("annotations") or {}).get(wellknown.POOLS) or ""
    return pool in listed.split(",")


def _looks_ours(obj: dict[str, Any], lb_class: str) -> bool:
    service = svc.parse(obj)
    return not service.deleting and svc.ownership(service, lb_class) is svc.Ownership.OURS


async def _write(
    client: lightkube.AsyncClient,
    service: svc.Service,
    plan: service_plan.Plan,
    *,
    resource_version: str,
) -> None:
    await writers.write_service(
        client,
        service.namespace,
        service.name,
        resource_version=resource_version,
        claim=plan.claim,
        unclaim=plan.unclaim,
        ingress=plan.ingress,
    )
