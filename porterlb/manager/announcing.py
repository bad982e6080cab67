"""The manager's placement loop: which node announces each Service IP, recorded in the API.

For every Service that holds an IP (ours, claimed, ``status.loadBalancer.ingress`` set) and
has a ready endpoint, the leader picks one node eligible for its IPs with
:mod:`porterlb.placement` and writes it in the Service annotation ``porterlb.io/announced-by``;
the speakers watch that annotation. IPs are placed in groups (:mod:`porterlb.placement.ledger`):
both IPs of a dual-stack Service, and every IP of Services sharing one, are announced from
one node and move together. Eligibility is per group: the Node's own facts, the node
selectors of the IPs' pools, and the ready endpoints of every Service using them that asks for
``externalTrafficPolicy: Local``. A Service with no ready endpoint at all is not announced
(``NoReadyEndpoint``); an IP no node may announce gets no annotation and a ``NoEligibleNode``
Warning naming each node and why; an IP that leaves a node no longer eligible gets a
``Failover`` Event naming both nodes and why (for a speaker that went silent: how long after
its last heartbeat answer it was found so). On start the recorded annotations are adopted, oldest
Service first, before anything is decided, so a restart or a new leader moves no IP.

Nodes, Eips and EndpointSlices are kept parsed as they change, leader or not. A Node or Eip
change that alters what placement reads, and a speaker going silent, answering again or
draining (:meth:`Announcing.follow`), goes through :meth:`Announcing._recheck`, which
requeues only the Services whose IP must move or could now be placed; an EndpointSlice change
requeues its own Service, and an IP that moves requeues its other users.

**Revocations** (docs/fencing.md). Taking an IP from a node whose speaker still answers
heartbeats is a handshake, so that its speaker has stopped before another starts, even if its
watch is dead: the leader first removes the record (``announced-by`` cleared), raises the
pingers' *must-see* revision to the version of that write once its own watch shows it, and
places the IP elsewhere only once the old node has echoed that revision (its watch has seen
the removal, or it answers no ARP until it has), or has gone silent with its lease run out.
A silent node's IPs move at once: its lease has run out by the time it counts as silent.
A new leader starts only :data:`TAKEOVER_SETTLE` after winning, and makes every speaker
reach the newest Service version it loaded before answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import lightkube

from porterlb import logs
from porterlb.api import eip as eip_api
from porterlb.api import endpoints as endpoints_api
from porterlb.api import node as node_api
from porterlb.api import reasons, wellknown
from porterlb.api import service as svc
from porterlb.api.keys import NodeName, PoolName, ServiceKey
from porterlb.kube import events, queueing, reflector, resources, writers
from porterlb.liveness import guard
from porterlb.manager import metrics
from porterlb.placement import eligibility, endpoints, ledger

log = logging.getLogger(__name__)

TAKEOVER_SETTLE: Final = guard.DEFAULT_FENCE_AFTER + 0.5
"""Seconds a new leader waits before placing anything. A speaker that hears no manager keeps
answering while its latest read of the election Lease, at most the fence time old, showed no
leader; it reads every 0.5 s, so within the fence time of winning, every such speaker has
seen the new holder or gone quiet. Keep ``--fence-after`` of the speakers below it."""

CONFIRM_RETRY: Final = 0.05
"""Seconds between two looks at whether a node has echoed a revocation: half a heartbeat
interval, so the handshake costs about one ping round."""


class Pinger(Protocol):
    """What placement reads of liveness (:class:`porterlb.manager.liveness.Liveness`)."""

    silent: eligibility.Silent
    lacking: eligibility.Lacking
    stale: frozenset[NodeName]
    draining: frozenset[NodeName]
    on_change: Callable[[], None]
    must_see: int

    def confirmed(self, node: NodeName) -> int: ...


@dataclass(frozen=True, slots=True)
class _Revoked:
    """An IP taken from `node`, whose speaker must reach `revision` before another answers
    (None: the revoking write's outcome is not known yet), by a write to Service `by`."""

    node: NodeName
    revision: int | None
    by: ServiceKey


@dataclass(frozen=True, slots=True)
class _Asks:
    """What a Service in the ledger asks of its IPs' node, read when it was last handled."""

    pools: frozenset[PoolName]
    local: bool


class Announcing:
    """The placement controller; it reads the Services and Eips caches IPAM keeps."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        *,
        services: reflector.Reflector,
        eips: reflector.Reflector,
        poster: events.Poster,
        lb_class: str,
        workers: int = 16,
        settle: float = 0.0,
    ) -> None:
        self.client = client
        self.lb_class = lb_class
        self.settle = settle
        """Seconds to wait after winning the lead (:data:`TAKEOVER_SETTLE` with an elector)."""
        self.services = services
        self.eips = eips
        self.poster = poster
        self.ledger = ledger.Ledger()
        self.loaded = False
        self.node_facts: dict[NodeName, node_api.Node] = {}
        self.pool_rules: dict[PoolName, eligibility.PoolRule] = {}
        self.endpoints = endpoints.Index()
        self.silent: eligibility.Silent = eligibility.NONE_SILENT
        self.lacking: eligibility.Lacking = eligibility.NONE_LACKING
        self.stale: frozenset[NodeName] = frozenset()
        self.draining: frozenset[NodeName] = frozenset()
        self.pinger: Pinger | None = None
        self._asks: dict[ServiceKey, _Asks] = {}
        self._said: dict[ServiceKey, str] = {}
        self._said_pool: dict[PoolName, str] = {}
        self._lost: dict[str, tuple[NodeName, float]] = {}
        """IP -> the node found unfit to announce it, and when (loop time): a failover to
        time. Dropped when a Service of the IP is next handled."""
        self._revoked: dict[str, _Revoked] = {}
        """IP -> the node it was taken from, until another may announce it."""
        self._recorded: dict[ServiceKey, tuple[tuple[str, ...], NodeName]] = {}
        """Service -> (IPs, node) as last recorded on it, for a Service that disappears."""
        self.queue = queueing.WorkQueue(self._handle, name="announcing", workers=workers)
        self.nodes = reflector.Reflector(
            client, resources.Node, on_change=self._node_changed, name="nodes"
        )
        self.slices = reflector.Reflector(
            client, resources.EndpointSlice, on_change=self._slice_changed, name="endpointslices"
        )
        services.subscribe(self._service_changed)
        eips.subscribe(self._eip_changed)

    async def watch(self) -> None:
        """Keep the Node and EndpointSlice caches current, leader or not."""
        async with asyncio.TaskGroup() as group:
            for source in (self.nodes, self.slices):
                group.create_task(source.run(), name=f"manager/watch/{source.name}")

    async def lead(self) -> None:
        """Adopt the recorded placements, then converge until cancelled."""
        await asyncio.sleep(self.settle)
        for source in (self.services, self.eips, self.nodes, self.slices):
            await source.synced.wait()
        self._load()
        try:
            await self.queue.run()
        finally:
            self.loaded = False

    def _load(self) -> None:
        self.ledger = ledger.Ledger()  # another leader may have placed IPs since
        self._asks = {}
        # What was said in Events stays, as in Ipam._reset: the same news is not said again.
        self._revoked = {}
        self._recorded = {}
        # What the previous leader revoked is not known here: every speaker must at least
        # have seen every Service version loaded now before it answers.
        self._require(self.services.last_event)
        parsed = sorted(map(svc.parse, self.services.cache.values()), key=lambda s: s.created)
        for service in parsed:
            ips = _announced_ips(service, self.lb_class)
            if ips:
                node = service.annotation(wellknown.ANNOUNCED_BY)
                self.ledger.adopt(service.key, ips, NodeName(node) if node else None)
                if node:
                    self._recorded[service.key] = (ips, NodeName(node))
        self.loaded = True
        for name in self.eips.cache:
            self._report_pool(PoolName(name))
        for key in self.services.cache:
            self.queue.add(key)

    # -- what placement reads, kept current -------------------------------------------------

    def follow(self, pinger: Pinger) -> None:
        """Count a node eligible only while its speaker answers `pinger`'s heartbeats."""
        self.pinger = pinger
        pinger.on_change = self._liveness_changed

    def _liveness_changed(self) -> None:
        assert self.pinger is not None
        before, self.silent = self.silent, dict(self.pinger.silent)
        changed = before.keys() ^ self.silent.keys()
        was_stale, self.stale = self.stale, self.pinger.stale
        changed |= was_stale ^ self.stale
        was_draining, self.draining = self.draining, self.pinger.draining
        changed |= was_draining ^ self.draining
        was, self.lacking = self.lacking, dict(self.pinger.lacking)
        changed |= {
            n for n in was.keys() | self.lacking.keys() if was.get(n) != self.lacking.get(n)
        }
        self._recheck(nodes=changed)

    def _service_changed(self, key: str) -> None:
        if self.loaded:
            self.queue.add(key)

    def _node_changed(self, name: str) -> None:
        obj = self.nodes.cache.get(name)
        fact = node_api.parse(obj) if obj is not None else None
        node = NodeName(name)
        if fact == self.node_facts.get(node):
            return  # a heartbeat or a status field placement does not read
        if fact is None:
            del self.node_facts[node]
        else:
            self.node_facts[node] = fact
        self._recheck(nodes={node})

    def _eip_changed(self, name: str) -> None:
        obj = self.eips.cache.get(name)
        pool = PoolName(name)
        rule = _rule(eip_api.parse(obj)) if obj is not None else None
        if rule == self.pool_rules.get(pool):
            return  # a status write, or a change of the addresses (IPAM's business)
        if rule is None:
            del self.pool_rules[pool]
        else:
            self.pool_rules[pool] = rule
        self._report_pool(pool)
        self._recheck(pools={pool})

    def _slice_changed(self, key: str) -> None:
        obj = self.slices.cache.get(key)
        changed = self.endpoints.update(key, endpoints_api.parse(obj) if obj is not None else None)
        if self.loaded:
            for service in changed:
                if service in self.services.cache:  # most slices serve no LoadBalancer
                    self.queue.add(service)

    def _recheck(
        self, *, nodes: Collection[NodeName] = (), pools: Collection[PoolName] = ()
    ) -> None:
        """Requeue the Services whose IP must move or may now be placed after a change.

        The one door for changes of eligibility (a Node, a pool's selector; a speaker's
        liveness): an IP on one of `nodes` or of one of `pools` is requeued only if its node
        is no longer eligible for it, an IP announced by no node only if some node now is.
        An IP never moves while its node stays eligible.
        """
        if not self.loaded:
            return
        candidates = {*self.ledger.ips_on(nodes), *self.ledger.unplaced()}
        if pools:
            candidates.update(
                ip
                for ip in self.ledger.ips()
                if any(
                    key in self._asks and not self._asks[key].pools.isdisjoint(pools)
                    for key in self.ledger.users_of(ip)
                )
            )
        for ip in candidates:
            node = self.ledger.node_of(ip)
            eligible = self._eligible_for(ip)
            if node is not None and node not in eligible and ip not in self._lost:
                self._lost[ip] = (node, asyncio.get_running_loop().time())
            if (node is None and eligible) or (node is not None and node not in eligible):
                for member in self.ledger.group(ip):
                    for key in self.ledger.users_of(member):
                        self.queue.add(key)

    # -- deciding one Service -----------------------------------------------------------------

    async def _handle(self, key: str) -> queueing.Outcome:
        service_key = ServiceKey(key)
        obj = self.services.cache.get(key)
        service = svc.parse(obj) if obj is not None else None
        ips = _announced_ips(service, self.lb_class) if service is not None else ()
        served = bool(ips) and self.endpoints.of(service_key).ready
        self.ledger.use(service_key, ips if served else ())
        self._asks.pop(service_key, None)
        if obj is None or service is None:
            self._said.pop(service_key, None)
            gone = self._recorded.pop(service_key, None)
            if gone is not None:  # its speaker stops once its watch has the deletion
                for ip in gone[0]:
                    self._revoke(ip, gone[1], self.services.last_event, service_key)
            self._revoke_unlearnt(service_key)
            return queueing.Done()
        node = None
        if ips and served:
            pools = frozenset(svc.recorded_pools(service))
            self._asks[service_key] = _Asks(pools=pools, local=service.local_traffic)
            node = self._place(service_key, ips[0])
        if ips and node is None:
            self._say(service, ips, None, served=served)
        recorded = service.annotation(wellknown.ANNOUNCED_BY)
        old = NodeName(recorded) if recorded else None
        seen = service.ingress
        for ip in seen:
            self._learn(ip, old, obj)
        if recorded == node:
            if node is not None:
                for ip in ips:
                    self._lost.pop(ip, None)  # it stayed, or its move is already recorded
            self._remember(service_key, service, node, obj)
            for ip in seen:
                self._settle(ip, node)
            return queueing.Done()
        moved_from = recorded
        revoking = None
        if old is not None and seen:
            # The IPs leave `old`: its speaker must let go before another answers. The write
            # below is the revocation; its revision is its reply's (or, if its outcome is not
            # known, learnt when it shows in the cache).
            for ip in seen:
                self._revoked[ip] = _Revoked(old, None, service_key)
            revoking = (seen, old)
            if node is not None and old not in self.silent:
                node = None  # remove the record first; place it once `old` has echoed
        elif node is not None:
            pending = [self._revoked[ip] for ip in ips if ip in self._revoked]
            elsewhere = [revoked for revoked in pending if revoked.node != node]
            if elsewhere:
                if not all(self._released(ip) for ip in ips):
                    return queueing.Retry(CONFIRM_RETRY)
                moved_from = elsewhere[0].node
        outcome = await queueing.attempt(self._record(service, node, obj, revoking))
        if not isinstance(outcome, queueing.Done):
            return outcome
        self._remember(service_key, service, node, obj)
        if ips and node is not None:
            took = self._count_failover(ips, moved_from)
            self._say(service, ips, node, moved_from=moved_from, took=took)
        if node is None and served and self.ledger.node_of(ips[0]) is not None:
            return queueing.Retry(CONFIRM_RETRY)  # released for a move: place it when echoed
        return outcome

    def _count_failover(self, ips: tuple[str, ...], moved_from: str | None) -> float | None:
        """Count the move of `ips` just recorded (one failover: they move together); the
        seconds since their node was found unfit."""
        found = [self._lost.pop(ip, None) for ip in ips]
        lost = next((entry for entry in found if entry is not None), None)
        if lost is None or lost[0] != moved_from:
            return None
        took = asyncio.get_running_loop().time() - lost[1]
        metrics.FAILOVERS.inc()
        metrics.FAILOVER_DURATION.observe(took)
        return took

    def _learn(self, ip: str, recorded: NodeName | None, obj: Mapping[str, Any]) -> None:
        """The revoking write of `ip` is in the cache once the Service no longer names the
        node it was taken from: its version is the revision every speaker must reach (one
        that exists, so the old node's echo means it has seen the write)."""
        pending = self._revoked.get(ip)
        if pending is not None and pending.revision is None and recorded != pending.node:
            self._revoke(ip, pending.node, reflector.object_revision(obj), pending.by)

    def _settle(self, ip: str, node: NodeName | None) -> None:
        """Forget the revocation of `ip` once it is placed again, on its old node or, the
        revision known, on another."""
        pending = self._revoked.get(ip)
        if pending is None or node is None:
            return
        if node == pending.node or pending.revision is not None:
            del self._revoked[ip]

    def _remember(
        self, key: ServiceKey, service: svc.Service, node: NodeName | None, obj: Mapping[str, Any]
    ) -> None:
        before = self._recorded.get(key)
        if node is not None and service.ingress:
            self._recorded[key] = (service.ingress, node)
        else:
            self._recorded.pop(key, None)
        if before is None:
            return
        kept = set(service.ingress) if node == before[1] else set()
        for ip in before[0]:
            if ip not in kept and ip not in self._revoked:
                # Taken off its node by a write not ours (IPAM's release of a Service that is
                # deleted or leaves the class): the version showing it gone is the revision
                # that node's speaker must reach before the IP is answered elsewhere.
                self._revoke(ip, before[1], reflector.object_revision(obj), key)

    def _revoke(self, ip: str, node: NodeName, revision: int, by: ServiceKey) -> None:
        """`ip` leaves `node`: every speaker must reach `revision` before it answers again."""
        self._revoked[ip] = _Revoked(node, revision, by)
        self._require(revision)

    def _revoke_unlearnt(self, gone: ServiceKey) -> None:
        """Service `gone` no longer exists: a revocation it wrote whose revision is not known
        can no longer be learnt from the cache, and its deletion, at or below the latest
        revision seen, revokes the IP as surely (its speaker stops at either)."""
        for ip, pending in list(self._revoked.items()):
            if pending.revision is None and pending.by == gone:
                self._revoke(ip, pending.node, self.services.last_event, gone)

    async def _record(
        self,
        service: svc.Service,
        node: NodeName | None,
        obj: Mapping[str, Any],
        revoking: tuple[Sequence[str], NodeName] | None,
    ) -> None:
        """Record `node` on `service`, read at `obj`'s version; when that takes IPs from a
        node (`revoking`), the written version is the revision its speaker must echo."""
        revision = await writers.set_announcing_node(
            self.client,
            service.namespace,
            service.name,
            node,
            resource_version=reflector.version(obj),
        )
        if revoking is not None:
            ips, old = revoking
            for ip in ips:
                self._revoke(ip, old, revision, service.key)

    def _require(self, revision: int) -> None:
        if self.pinger is not None:
            self.pinger.must_see = max(self.pinger.must_see, revision)

    def _released(self, ip: str) -> bool:
        """Whether `ip`'s last node has surely stopped answering for it: it echoed the
        revocation, or it is silent (its lease has run out), or there are no heartbeats."""
        pending = self._revoked.get(ip)
        if pending is None or self.pinger is None or pending.node in self.silent:
            return True
        return pending.revision is not None and (
            self.pinger.confirmed(pending.node) >= pending.revision
        )

    def _place(self, key: ServiceKey, ip: str) -> NodeName | None:
        """Choose (or keep) the node of the group of `ip`; when any IP of it moves, the
        group's other users follow."""
        group = self.ledger.group(ip)
        before = {member: self.ledger.node_of(member) for member in group}
        node = self.ledger.place(ip, self._eligible_for(ip))
        if any(was != node for was in before.values()):
            for member in group:
                for other in self.ledger.users_of(member) - {key}:
                    self.queue.add(other)
        return node

    def _facts(self, ip: str) -> tuple[list[eligibility.PoolRule], list[eligibility.Need]]:
        """What the Services using the group of `ip` ask of its node: their pools' rules and
        their needs (the group is announced from one node, so it must suit them all)."""
        rules: dict[PoolName, eligibility.PoolRule] = {}
        needs = []
        users = {user for member in self.ledger.group(ip) for user in self.ledger.users_of(member)}
        for user in users:
            asks = self._asks.get(user)
            if asks is None:
                continue  # adopted, not handled yet: it is queued and will say
            for pool in asks.pools & self.pool_rules.keys():
                rules[pool] = self.pool_rules[pool]
            ready_nodes = self.endpoints.of(user).ready_nodes
            needs.append(eligibility.Need(service=user, local=asks.local, ready_nodes=ready_nodes))
        return list(rules.values()), needs

    def _eligible_for(self, ip: str) -> frozenset[NodeName]:
        rules, needs = self._facts(ip)
        nodes = self.node_facts.values()
        return eligibility.eligible(
            nodes,
            pools=rules,
            needs=needs,
            silent=self.silent,
            lacking=self.lacking,
            stale=self.stale,
            draining=self.draining,
        )

    def _why_not(self, name: str, ip: str) -> str | None:
        """Why node `name` may not announce `ip` (None: it may)."""
        node = self.node_facts.get(NodeName(name))
        if node is None:
            return "its Node is gone"
        rules, needs = self._facts(ip)
        return eligibility.why_not(
            node=node,
            pools=rules,
            needs=needs,
            silent=self.silent,
            lacking=self.lacking,
            stale=self.stale,
            draining=self.draining,
        )

    # -- telling users ----------------------------------------------------------------------

    def _say(
        self,
        service: svc.Service,
        ips: tuple[str, ...],
        node: NodeName | None,
        *,
        served: bool = True,
        moved_from: str | None = None,
        took: float | None = None,
    ) -> None:
        gone = self._why_not(moved_from, ips[0]) if moved_from else None
        ip, be = " and ".join(ips), "is" if len(ips) == 1 else "are"
        if not served:
            reason = reasons.NO_READY_ENDPOINT
            message = f"{ip} {be} not announced: the Service has no ready endpoint"
        elif node is None:
            rules, needs = self._facts(ips[0])
            nodes = self.node_facts.values()
            why = eligibility.explain(
                nodes,
                pools=rules,
                needs=needs,
                silent=self.silent,
                lacking=self.lacking,
                stale=self.stale,
                draining=self.draining,
            )
            reason, message = reasons.NO_ELIGIBLE_NODE, f"{ip} {be} not announced: {why}"
        elif gone is not None:
            reason = reasons.FAILOVER
            message = f"{ip} moved from node {moved_from} to node {node}: {moved_from}: {gone}"
            if took is not None:
                message += f"; recorded {took * 1000:.0f} ms after that was found"
        else:
            reason, message = reasons.NODE_ASSIGNED, f"{ip} {be} announced from node {node}"
        message = f"Service {service.key}: {message}"
        if self._said.get(service.key) == message:
            return  # the same news again: say it once
        self._said[service.key] = message
        if reason in (reasons.FAILOVER, reasons.NO_ELIGIBLE_NODE):  # one line per Service
            log.log(
                logging.INFO if node is not None else logging.WARNING,
                "%s",
                message,
                extra=logs.fields(service=service.key, ip=",".join(ips), node=node),
            )
        self.poster.emit(
            events.Notice(
                subject=events.Subject.service(service),
                type="Normal" if node is not None else "Warning",
                reason=reason,
                message=message,
            )
        )

    def _report_pool(self, pool: PoolName) -> None:
        """A Warning on the Eip when its node selector stops parsing or says something new."""
        obj = self.eips.cache.get(pool)
        parsed = eip_api.parse(obj) if obj is not None else None
        layer2 = parsed is not None and parsed.protocol == "layer2"  # IPAM reports the others
        error = parsed.node_selector_error if parsed is not None and layer2 else None
        if not self.loaded or self._said_pool.get(pool) == error:
            return
        if error is None or obj is None:
            self._said_pool.pop(pool, None)
            return
        self._said_pool[pool] = error
        uid = str((obj.get("metadata") or {}).get("uid", ""))
        self.poster.emit(
            events.Notice(
                subject=events.Subject.eip(pool, uid),
                type="Warning",
                reason=reasons.INVALID_NODE_SELECTOR,
                message=error,
            )
        )


def _rule(parsed: eip_api.Eip) -> eligibility.PoolRule:
    return eligibility.PoolRule(
        pool=parsed.name,
        selector=parsed.node_selector,
        invalid=parsed.node_selector_error is not None,
    )


def _announced_ips(service: svc.Service, lb_class: str) -> tuple[str, ...]:
    """The IPs to announce for `service` (one per family): set only once IPAM has claimed and
    published them."""
    if (
        service.deleting
        or not service.ingress
        or svc.ownership(service, lb_class) is not svc.Ownership.OURS
        or service.label(wellknown.POOL_LABEL) is None
    ):
        return ()
    return service.ingress
