"""The manager's placement loop: which node announces each Service IP, recorded in the API.

For every Service that holds an IP (ours, claimed, ``status.loadBalancer.ingress`` set) the
leader picks one eligible node with :mod:`porterlb.placement` and writes it in the Service
annotation ``porterlb.io/announced-by``; the speakers watch that annotation. A Service whose
IP no node may announce gets no annotation and a ``NoEligibleNode`` Warning naming each node
and why; an IP that leaves a node no longer eligible gets a ``Failover`` Event naming both
nodes and why (for a silent speaker: how long after its last heartbeat answer it was found).
On start the recorded annotations are adopted, oldest Service first, before anything
is decided, so a restart or a new leader moves no IP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

import lightkube

from porterlb.api import node as node_api
from porterlb.api import reasons, wellknown
from porterlb.api import service as svc
from porterlb.api.keys import NodeName, ServiceKey
from porterlb.kube import events, queueing, reflector, resources, writers
from porterlb.placement import eligibility, ledger

log = logging.getLogger(__name__)


class Pinger(Protocol):
    """What placement reads of liveness (:class:`porterlb.manager.liveness.Liveness`)."""

    silent: Mapping[NodeName, float | None]
    on_change: Callable[[], None]


class Announcing:
    """The placement controller; it reads the Services cache IPAM keeps. Run with :meth:`run`."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        *,
        services: reflector.Reflector,
        poster: events.Poster,
        workers: int = 16,
    ) -> None:
        self.client = client
        self.services = services
        self.poster = poster
        self.ledger = ledger.Ledger()
        self.eligible: frozenset[NodeName] = frozenset()
        self.pinger: Pinger | None = None
        self.loaded = False
        self._said: dict[ServiceKey, str] = {}
        self.queue = queueing.WorkQueue(self._handle, name="announcing", workers=workers)
        self.nodes = reflector.Reflector(
            client, resources.Node, on_change=self._node_changed, name="nodes"
        )
        services.subscribe(self._service_changed)

    async def watch(self) -> None:
        """Keep the Node cache current, leader or not."""
        await self.nodes.run()

    async def lead(self) -> None:
        """Adopt the recorded placements, then converge until cancelled."""
        await self.services.synced.wait()
        await self.nodes.synced.wait()
        self._load()
        try:
            await self.queue.run()
        finally:
            self.loaded = False

    def _load(self) -> None:
        self.ledger = ledger.Ledger()  # another leader may have placed IPs since
        self._said = {}
        self.eligible = self._eligible()
        parsed = sorted(map(svc.parse, self.services.cache.values()), key=lambda s: s.created)
        for service in parsed:
            ip = _announced_ip(service)
            if ip is not None:
                node = service.annotation(wellknown.ANNOUNCED_BY)
                self.ledger.adopt(service.key, ip, NodeName(node) if node else None)
        self.loaded = True
        for key in self.services.cache:
            self.queue.add(key)

    def follow(self, pinger: Pinger) -> None:
        """Count a node eligible only while its speaker answers `pinger`'s heartbeats."""
        self.pinger = pinger
        pinger.on_change = self._recheck

    def _silent(self) -> Mapping[NodeName, float | None]:
        return self.pinger.silent if self.pinger is not None else {}

    def _eligible(self) -> frozenset[NodeName]:
        nodes = eligibility.eligible(map(node_api.parse, self.nodes.cache.values()))
        return nodes - self._silent().keys()

    def _why_not(self, name: NodeName) -> str | None:
        obj = self.nodes.cache.get(name)
        if obj is None:
            return "its Node is gone"
        if (reason := eligibility.why_not(node_api.parse(obj))) is not None:
            return reason
        if name in (silent := self._silent()):
            return eligibility.silent(silent[name])
        return None

    def _service_changed(self, key: str) -> None:
        if self.loaded:
            self.queue.add(key)

    def _node_changed(self, name: str) -> None:
        self._recheck()

    def _recheck(self) -> None:
        if not self.loaded:
            return
        eligible = self._eligible()
        if eligible == self.eligible:
            return
        self.eligible = eligible
        for key in self.ledger.users_of_nodes_outside(eligible):
            self.queue.add(key)

    async def _handle(self, key: str) -> queueing.Outcome:
        obj = self.services.cache.get(key)
        service = svc.parse(obj) if obj is not None else None
        ip = _announced_ip(service) if service is not None else None
        self.ledger.use(ServiceKey(key), ip)
        if service is None:
            self._said.pop(ServiceKey(key), None)
            return queueing.Done()
        node = self.ledger.place(ip, self.eligible) if ip is not None else None
        recorded = service.annotation(wellknown.ANNOUNCED_BY)
        if ip is not None and node is None:
            self._say(service, ip, None)
        if recorded == node:
            return queueing.Done()
        outcome = await queueing.attempt(
            writers.set_announcing_node(self.client, service.namespace, service.name, node)
        )
        if isinstance(outcome, queueing.Done) and ip is not None and node is not None:
            self._say(service, ip, node, moved_from=recorded)
        return outcome

    def _say(
        self,
        service: svc.Service,
        ip: str,
        node: NodeName | None,
        *,
        moved_from: str | None = None,
    ) -> None:
        gone = self._why_not(NodeName(moved_from)) if moved_from else None
        if node is None:
            nodes = map(node_api.parse, self.nodes.cache.values())
            why = eligibility.explain(nodes, self._silent())
            reason, message = reasons.NO_ELIGIBLE_NODE, f"{ip} is not announced: {why}"
        elif gone is not None:
            reason = reasons.FAILOVER
            message = f"{ip} moved from node {moved_from} to node {node}: {moved_from}: {gone}"
        else:
            reason, message = reasons.NODE_ASSIGNED, f"{ip} is announced from node {node}"
        message = f"Service {service.key}: {message}"
        if self._said.get(service.key) == message:
            return  # the same news again: say it once
        self._said[service.key] = message
        self.poster.emit(
            events.Notice(
                subject=events.Subject.service(service),
                type="Warning" if node is None else "Normal",
                reason=reason,
                message=message,
            )
        )


def _announced_ip(service: svc.Service) -> str | None:
    """The IP to announce for `service`: set only once IPAM has claimed and published it."""
    if (
        service.deleting
        or not service.ingress
        or svc.ownership(service) is not svc.Ownership.OURS
        or service.label(wellknown.POOL_LABEL) is None
    ):
        return None
    return service.ingress[0]
