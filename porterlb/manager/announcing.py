"""The manager's placement loop: which node announces each Service IP, recorded in the API.

For every Service that holds an IP (ours, claimed, ``status.loadBalancer.ingress`` set) and
has a ready endpoint, the leader picks one node eligible for its IPs with
:mod:`porterlb.placement` and writes the IP into that node's placement record, the
NodePlacement named after the node (:mod:`porterlb.manager.placements`); each speaker watches
its own record. IPs are placed in groups (:mod:`porterlb.placement.ledger`): both IPs of a
dual-stack Service, and every IP of Services sharing one, are announced from one node and move
together. Eligibility is per group: the Node's own facts, the node selectors of the IPs'
pools, and the ready endpoints of every Service using them that asks for
``externalTrafficPolicy: Local``. A Service with no ready endpoint at all is not announced
(``NoReadyEndpoint``); an IP no node may announce is in no record and gets a
``NoEligibleNode`` Warning naming each node and why; an IP that leaves a node no longer
eligible gets a ``Failover`` Event naming both nodes and why (for a speaker that went silent:
how long after its last heartbeat answer it was found so). The Service annotation
``porterlb.io/announced-by`` shows the node to kubectl and ``porterlb status``: a view written
after the record, by a queue of its own, off a failover's path. On start the records are
adopted (a Service none names: its annotation, as an older porterlb wrote it), oldest Service
first, before anything is decided, so a restart or a new leader moves no IP.

Nodes, Eips and EndpointSlices are kept parsed as they change, leader or not. A Node or Eip
change that alters what placement reads, and a speaker going silent, answering again or
draining (:meth:`Announcing.follow`), goes through :meth:`Announcing._recheck`, which
requeues only the Services whose IP must move or could now be placed; an EndpointSlice change
requeues its own Service, and an IP that moves requeues its other users. The record of a
Node that is deleted is deleted too, once its IPs have left it (:meth:`Announcing._forget`).

**Revocations** (docs/fencing.md). Taking an IP from a node whose speaker still answers
heartbeats is a handshake, so that its speaker has stopped before another starts, even if its
watch is dead: the leader first writes the old node's record without the IP, raises that
node's *must-see* revision to the version of that write, and writes the IP into another
record only once the old node has echoed that revision (its watch has seen the removal, or it
answers no ARP until it has), or has gone silent with its lease run out. A silent node's IPs
move at once (its lease has run out by the time it counts as silent): the old and the new
records are written together. A new leader starts only :data:`TAKEOVER_SETTLE` after
winning, and makes every speaker reach the version of its record the leader loaded before
answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import lightkube

from porterlb import errors, logs
from porterlb.api import eip as eip_api
from porterlb.api import endpoints as endpoints_api
from porterlb.api import node as node_api
from porterlb.api import reasons, wellknown
from porterlb.api import service as svc
from porterlb.api.keys import NodeName, PoolName, ServiceKey
from porterlb.kube import events, queueing, reflector, resources, writers
from porterlb.liveness import guard
from porterlb.manager import metrics, placements
from porterlb.placement import eligibility, endpoints, ledger, records

log = logging.getLogger(__name__)

TAKEOVER_SETTLE: Final = guard.DEFAULT_FENCE_AFTER + 0.5
"""Seconds a new leader waits before placing anything. A speaker that hears no manager keeps
answering while its latest read of the election Lease, at most the fence time old, showed no
leader; it reads every 0.5 s, so within the fence time of winning, every such speaker has
seen the new holder or gone quiet. Keep ``--fence-after`` of the speakers below it. A leader
that retakes its own Lease before it could look expired skips it (docs/fencing.md)."""

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
    must_see: dict[NodeName, int]

    def confirmed(self, node: NodeName) -> int: ...


@dataclass(frozen=True, slots=True)
class _Revoked:
    """An IP taken from `node`, whose speaker must reach `revision` of its record before
    another answers (None: the revoking write's outcome is not known yet)."""

    node: NodeName
    revision: int | None


@dataclass(frozen=True, slots=True)
class _Asks:
    """What a Service in the ledger asks of its IPs' node, read when it was last handled."""

    pools: frozenset[PoolName]
    local: bool


DECIDERS: Final = 256
"""Services placement handles at once. A handler decides without an await, then waits for
the records it changed to be written (:meth:`porterlb.manager.placements.Placements.flush`),
and one write of a record carries every change made before it started: so every Service a
failover requeues is decided before the first write, and each record is written once. With
16 handlers, 40 IPs leaving a node took 6 writes of the receiving record (the integration
test), and 100 on real nodes were recorded over 1.1-13.5 s with 31 writes, against 0.15-1.1 s
and 10 writes now (docs/fencing.md). Handlers wait on writes the API sees once per record,
whatever their number, so only their memory (a task each) bounds it."""

NO_ENDPOINT_HOLD: Final = 10.0
"""Seconds a Service's want of a ready endpoint must last before it is told (``NoReadyEndpoint``
is held, :meth:`porterlb.kube.events.Poster.emit`): a Service created with its Deployment
gets its IP before its pods are ready, and a Warning for those seconds told nothing but cost
an Event per Service (bench.control_plane)."""

PLACEMENT_TOPIC: Final = "placement"
"""The topic of the Events this loop posts: each one replaces a held one of the Service."""

VIEW_WORKERS: Final = 2
"""Annotation writes in flight: the view may lag a failover, the records must not."""


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
        workers: int = DECIDERS,
    ) -> None:
        self.client = client
        self.lb_class = lb_class
        self.no_endpoint_hold = NO_ENDPOINT_HOLD
        self.services = services
        self.eips = eips
        self.poster = poster
        self.ledger = ledger.Ledger()
        self.placements = placements.Placements(client, on_foreign=self._record_changed)
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
        self._pool_of: dict[str, PoolName] = {}
        """IP -> its pool, as the Services using it last said."""
        self._said: dict[ServiceKey, str] = {}
        self._said_pool: dict[PoolName, str] = {}
        self._lost: dict[str, tuple[NodeName, float]] = {}
        """IP -> the node found unfit to announce it, and when (loop time): a failover to
        time. Dropped when a Service of the IP is next handled."""
        self._revoked: dict[str, _Revoked] = {}
        """IP -> the node it was taken from, until another may announce it."""
        self.queue = queueing.WorkQueue(self._handle, name="announcing", workers=workers)
        self.view = queueing.WorkQueue(self._show, name="announced-by", workers=VIEW_WORKERS)
        self.gone = queueing.WorkQueue(self._forget, name="gone-nodes", workers=1)
        """Nodes whose Node object is gone: their records are deleted once empty."""
        self.nodes = reflector.Reflector(
            client, resources.Node, on_change=self._node_changed, name="nodes"
        )
        self.slices = reflector.Reflector(
            client, resources.EndpointSlice, on_change=self._slice_changed, name="endpointslices"
        )
        services.subscribe(self._service_changed)
        eips.subscribe(self._eip_changed)

    async def watch(self) -> None:
        """Keep the Node, EndpointSlice and placement record caches current, leader or not."""
        async with asyncio.TaskGroup() as group:
            for source in (self.nodes, self.slices, self.placements.cache):
                group.create_task(source.run(), name=f"manager/watch/{source.name}")

    async def lead(self, *, resume: bool = False, settle: float = 0.0) -> None:
        """Wait `settle` seconds (:data:`TAKEOVER_SETTLE` after winning a Lease), adopt the
        recorded placements, then converge until cancelled. With `resume` (this process led
        last, and nobody since) the ledger, the book and the pending revocations of the last
        term are kept, and its queues go on with what changed meanwhile."""
        await asyncio.sleep(settle)
        for source in (self.services, self.eips, self.nodes, self.slices, self.placements.cache):
            await source.synced.wait()
        if not (resume and self.loaded):
            self._load()
        async with asyncio.TaskGroup() as group:
            group.create_task(self.queue.run(), name="manager/announcing/queue")
            group.create_task(self.view.run(), name="manager/announcing/view")
            group.create_task(self.gone.run(), name="manager/announcing/gone")

    def unload(self) -> None:
        """Stop following the changes (not leading): the next term loads afresh."""
        self.loaded = False

    def _load(self) -> None:
        self.ledger = ledger.Ledger()  # another leader may have placed IPs since
        self._asks = {}
        # What was said in Events stays, as in Ipam._reset: the same news is not said again.
        self._revoked = {}
        # What the previous leader revoked is not known here: every speaker must at least
        # have seen its record as loaded now before it answers.
        revisions, doubled = self.placements.load()
        for node, revision in revisions.items():
            self._require(node, revision)
        for ip, node in doubled.items():  # its other record is written without it first
            self._revoked[ip] = _Revoked(node, None)
        book = self.placements.book
        parsed = sorted(map(svc.parse, self.services.cache.values()), key=lambda s: s.created)
        for service in parsed:
            ips = _announced_ips(service, self.lb_class)
            if ips:
                recorded = service.annotation(wellknown.ANNOUNCED_BY)
                placed = book.node_of(ips[0]) or (NodeName(recorded) if recorded else None)
                self.ledger.adopt(service.key, ips, placed)
        self.loaded = True
        for name in self.eips.cache:
            self._report_pool(PoolName(name))
        for key in self.services.cache:
            self.queue.add(key)
        for name in self.placements.cache.cache:  # Nodes deleted while no leader was there
            if NodeName(name) not in self.node_facts:
                self.gone.add(name)
        for node in book.nodes():  # Services gone while no leader was there
            for entry in book.record(node).values():
                for key in entry.services:
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

    def _record_changed(self, node: NodeName) -> None:
        """Another writer changed `node`'s record: its Services are written back as decided."""
        if not self.loaded:
            return
        named = records.parse(self.placements.cache.cache.get(node)).values()
        for entry in (*self.placements.book.record(node).values(), *named):
            for key in entry.services:
                self.queue.add(key)

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
            if self.loaded:
                self.gone.add(name)
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
        if service is None:
            self._said.pop(service_key, None)
        node = None
        if service is not None and ips and served:
            pools = svc.recorded_pools(service)
            self._pool_of.update(zip(ips, pools, strict=False))
            self._asks[service_key] = _Asks(pools=frozenset(pools), local=service.local_traffic)
            node = self._place(service_key, ips[0])
        if service is not None and ips and node is None:
            self._say(service, ips, None, served=served)
        book = self.placements.book
        first = ips[0] if ips else None
        was = book.node_of(first) if first is not None else None
        entry = book.entry(first) if first is not None else None
        users = entry.services if entry is not None else ()
        pending = self._revoked.get(first) if first is not None else None
        touched = sorted({*ips, *book.ips_of(service_key)})
        try:
            waiting = await self._converge(touched)
        except errors.PorterlbError as failure:
            return queueing.failed(failure)
        if service is not None:
            self.view.add(key)
        now = book.node_of(first) if first is not None else None
        if service is not None and ips and now is not None:
            if now != was or service_key not in users:
                moved_from = was if was not in (None, now) else None
                if moved_from is None and pending is not None and pending.node != now:
                    moved_from = pending.node
                took = self._count_failover(ips, moved_from)
                self._say(service, ips, now, moved_from=moved_from, took=took)
            else:
                for ip in ips:
                    self._lost.pop(ip, None)  # it stayed, or its move is already recorded
        return queueing.Retry(CONFIRM_RETRY) if waiting else queueing.Done()

    async def _converge(self, ips: Sequence[str]) -> bool:
        """Bring the records of `ips` to where the ledger puts them: out of the record of a
        node that no longer announces them first (a revocation), into the new node's once the
        old one has let go (docs/fencing.md); one write per node touched, at once. True while
        an IP waits for its old node's echo."""
        book = self.placements.book
        for ip in ips:
            have = book.node_of(ip)
            if have is not None and have != self.ledger.node_of(ip):
                book.drop(ip)
                self._revoked[ip] = _Revoked(have, None)
        unknown = {
            pending.node
            for pending in map(self._revoked.get, ips)
            if pending is not None and pending.revision is None
        }
        arriving: set[NodeName] = set()
        waiting = False
        for ip in ips:
            node = self.ledger.node_of(ip)
            pending = self._revoked.get(ip)
            if node is None:
                continue
            if pending is not None and pending.node != node and not self._released(ip):
                waiting = True
                continue  # placed once the old node has echoed, or gone silent
            held = book.entry(ip) if book.node_of(ip) == node else None
            new = held.probe if held is not None else pending is None and book.node_of(ip) is None
            entry = self._entry(ip, new=new)
            if book.node_of(ip) != node or book.entry(ip) != entry:
                book.put(ip, node, entry)
                arriving.add(node)
        kept = {node for node in map(book.node_of, ips) if node is not None}
        written = await self._flush(unknown | arriving | kept)
        for ip in ips:
            pending = self._revoked.get(ip)
            if pending is None:
                continue
            if pending.revision is None and pending.node in written:
                self._revoke(ip, pending.node, written[pending.node])
            node = book.node_of(ip)
            if node == pending.node or (node is not None and self._released(ip)):
                del self._revoked[ip]  # back on its node, or the old node let go
        return waiting

    async def _flush(self, nodes: Collection[NodeName]) -> dict[NodeName, int]:
        """Write the records of `nodes` at once; node -> its record's revision."""
        unique = sorted(set(nodes))
        revisions = await asyncio.gather(*(self.placements.flush(node) for node in unique))
        for node in unique:
            if node not in self.node_facts:  # its Node is gone: maybe its record is empty now
                self.gone.add(node)
        return dict(zip(unique, revisions, strict=True))

    async def _forget(self, name: str) -> queueing.Outcome:
        """Delete the record of node `name` if its Node is gone and no IP is left in it.

        A deleted Node is not eligible, so its IPs leave its record first, each by the
        handshake or the silence rule (docs/fencing.md); the record is deleted only as the
        empty version this leader wrote, so its speaker, should it still run, has nothing
        more to stop answering for.
        """
        if NodeName(name) in self.node_facts:
            return queueing.Done()  # it came back
        return await queueing.attempt(self.placements.delete(NodeName(name)))

    def _entry(self, ip: str, *, new: bool) -> records.Entry:
        """The record entry of `ip`: its pool, the Services using it; `new`: no node had it."""
        users = tuple(sorted(self.ledger.users_of(ip)))
        return records.Entry(self._pool_of.get(ip, PoolName("")), users, probe=new)

    async def _show(self, key: str) -> queueing.Outcome:
        """Write the view of Service `key`: the node whose record holds its first IP, in its
        ``porterlb.io/announced-by`` annotation (for kubectl and ``porterlb status``), once no
        record write is under way (a failover's records go first)."""
        await self.placements.quiet.wait()
        obj = self.services.cache.get(key)
        if obj is None:
            return queueing.Done()
        service = svc.parse(obj)
        ips = _announced_ips(service, self.lb_class)
        node = self.placements.book.node_of(ips[0]) if ips else None
        if service.annotation(wellknown.ANNOUNCED_BY) == node:
            return queueing.Done()
        return await queueing.attempt(
            writers.set_announcing_node(
                self.client,
                service.namespace,
                service.name,
                node,
                resource_version=reflector.version(obj),
            )
        )

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

    def _revoke(self, ip: str, node: NodeName, revision: int) -> None:
        """`ip` left `node`'s record at `revision`: that node's speaker must reach it before
        another node answers for `ip`."""
        self._revoked[ip] = _Revoked(node, revision)
        self._require(node, revision)

    def _require(self, node: NodeName, revision: int) -> None:
        if self.pinger is not None:
            self.pinger.must_see[node] = max(self.pinger.must_see.get(node, 0), revision)

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
                topic=PLACEMENT_TOPIC,
            ),
            hold=self.no_endpoint_hold if reason == reasons.NO_READY_ENDPOINT else 0.0,
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
