"""The speaker: watches the manager's assignments for this node and drives the announcer.

Two reflectors (Services, Eips) feed one sync loop. Each changed Service goes into
:class:`porterlb.speaker.assignments.Records`, so a change costs O(1) however many Services
exist; the wanted set (IP -> interface) is handed to the announcer whole. An IP that another
Service assigns to another node is left out: the manager is moving it. Interfaces are
resolved per pool over netlink in the node's network namespace, cached, and resolved again
when the Eip changes and every :data:`RESOLVE_INTERVAL`. A pool whose interface this node
lacks gets a Warning Event ``InterfaceMissing`` naming node and interface, and nothing of it
is announced; an address conflict gets ``IPConflict`` on the Services using the IP.

With heartbeats on, the speaker answers the managers' pings (:mod:`.heartbeats`) and fences
itself: after the fence time with neither an established API watch nor a valid ping it
announces nothing until one of them is back (:class:`porterlb.liveness.guard.Fence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Mapping
from typing import Final

import lightkube

from porterlb import errors, health, logs
from porterlb.api import address, reasons, wellknown
from porterlb.api import eip as eip_api
from porterlb.api import service as svc
from porterlb.api.keys import NodeName, PoolName
from porterlb.kube import events, reflector, resources, secrets
from porterlb.l2 import afpacket, announcer, conn, ethernet, interfaces
from porterlb.liveness import guard
from porterlb.liveness import metrics as liveness_metrics
from porterlb.speaker import assignments, heartbeats, metrics

log = logging.getLogger(__name__)

RESOLVE_INTERVAL: Final = 10.0
"""Seconds between two interface resolutions of a pool: links come and go under a node."""

FENCE_CHECK: Final = 0.05
"""Seconds between two looks at the fence: a small fraction of the fence time."""


class Speaker:
    """The node agent of one node; :meth:`run` until cancelled."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        *,
        node: NodeName,
        namespace: str,
        netns: str | None = None,
        config: announcer.Config | None = None,
        heartbeat: heartbeats.Settings | None = None,
    ) -> None:
        self.client = client
        self.node = node
        self.netns = netns
        self.heartbeat = heartbeat
        self.fence: guard.Fence | None = None
        self.fenced = False
        self.endpoint: heartbeats.Heartbeats | None = None
        self.poster = events.Poster(client, component="porterlb-speaker", namespace=namespace)
        self.services = reflector.Reflector(
            client, resources.Service, on_change=self._service_changed, name="services"
        )
        self.eips = reflector.Reflector(
            client, resources.Eip, on_change=self._eip_changed, name="eips"
        )
        self.announcer = announcer.Announcer(
            open_conn=self._open,
            on_conflict=self._conflict,
            config=config or announcer.Config(),
            watch_links=functools.partial(interfaces.watch_running, netns=netns),
        )
        self.records = assignments.Records(node)
        """Service key -> the (IP, pool) pairs it assigns to this node; only non-empty ones."""
        self.links: dict[PoolName, str | None] = {}
        """Pool -> interface name, or None when this node lacks it (reported)."""
        self._announced: set[address.IPAddress] = set()
        self._recorded: dict[str, str] = {}
        """Service key -> the announcing node last recorded on it, to tell a move from a start."""
        self._moved_in: set[address.IPAddress] = set()
        """IPs that moved here from another node since the last sync: announced without a
        probe, since porterlb itself answered for them a moment ago and a failover must not
        wait (the old node may even still answer the probe)."""
        self._said: dict[PoolName, str] = {}
        self._dirty = asyncio.Event()
        self._readers: dict[str, afpacket.AfPacketConn] = {}
        """Interface -> its latest packet socket, for the stamps of their reader threads."""

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.poster.run(), name="speaker/events")
            group.create_task(self.services.run(), name="speaker/watch/services")
            group.create_task(self.eips.run(), name="speaker/watch/eips")
            group.create_task(self.announcer.run(), name="speaker/l2")
            group.create_task(self._sync_loop(), name="speaker/sync")
            if self.heartbeat is not None:
                group.create_task(self._heartbeats(self.heartbeat), name="speaker/heartbeats")

    async def _heartbeats(self, settings: heartbeats.Settings) -> None:
        """Answer the managers' pings, and keep the fence shut while nothing is heard."""
        key = await secrets.heartbeat_key(
            self.client,
            namespace=settings.secret_namespace,
            name=settings.secret_name,
            create=False,
        )
        loop = asyncio.get_running_loop()
        self.fence = guard.Fence(after=settings.fence_after, now=loop.time())
        self.endpoint = endpoint = heartbeats.Heartbeats(
            node=self.node,
            key=key,
            fence=self.fence,
            port=settings.port,
            addresses=settings.addresses,
            netns=self.netns,
            rotation=settings.rotation,
        )
        metrics.HEARTBEAT_AGE.set_function(endpoint.age)
        async with asyncio.TaskGroup() as group:
            group.create_task(endpoint.run(), name="speaker/heartbeats/udp")
            group.create_task(
                secrets.follow(
                    self.client,
                    namespace=settings.secret_namespace,
                    name=settings.secret_name,
                    on_key=endpoint.rekey,
                ),
                name="speaker/heartbeats/key",
            )
            group.create_task(self._fence_loop(self.fence), name="speaker/heartbeats/fence")

    async def _fence_loop(self, fence: guard.Fence) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if self.services.watching.is_set():
                fence.sign_of_life(now)
            if fence.closed(now) != self.fenced:
                self.fenced = not self.fenced
                liveness_metrics.FENCED.set(int(self.fenced))
                if self.fenced:
                    log.warning(
                        "node %s: no API watch and no heartbeat for %.1f s: fenced, answering"
                        " for no IP until one is back",
                        self.node,
                        fence.after,
                        extra=logs.fields(node=self.node),
                    )
                else:
                    log.info(
                        "node %s: heard again, no longer fenced",
                        self.node,
                        extra=logs.fields(node=self.node),
                    )
                self._dirty.set()
            await asyncio.sleep(FENCE_CHECK)

    # -- inputs ----------------------------------------------------------------------------

    def _service_changed(self, key: str) -> None:
        obj = self.services.cache.get(key)
        node = svc.parse(obj).annotation(wellknown.ANNOUNCED_BY) if obj is not None else None
        before = self._recorded.pop(key, None)
        if node is not None:
            self._recorded[key] = node
        if self.records.update(key, obj):
            found = self.records.mine.get(key, ())
            if before is not None and before != self.node:
                self._moved_in.update(ip for ip, _ in found)
            self._dirty.set()

    def _eip_changed(self, name: str) -> None:
        self.links.pop(PoolName(name), None)
        self._dirty.set()

    # -- the loop ---------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        await self.services.synced.wait()
        await self.eips.synced.wait()
        while True:
            self._dirty.clear()
            await self._sync()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESOLVE_INTERVAL):
                    await self._dirty.wait()
                    continue
            self.links.clear()  # periodic: resolve every pool's interface again

    async def _sync(self) -> None:
        wanted: dict[address.IPAddress, announcer.Announcement] = {}
        # A snapshot: resolving an interface awaits, and watch events change the records then.
        for pairs in () if self.fenced else list(self.records.mine.values()):
            for ip, pool in pairs:
                if self.records.contested(ip):
                    continue  # being moved: its old node may still answer until it is done
                ifname = await self._interface(pool)
                if ifname is not None:
                    # Probe before an IP is first announced in the cluster (RFC 5227).
                    fresh = ip not in self._announced and ip not in self._moved_in
                    wanted[ip] = announcer.Announcement(ifname, probe=fresh)
        self.announcer.update(wanted)
        metrics.ANNOUNCED_IPS.set(len(wanted))
        self._announced = set(wanted)
        self._moved_in.clear()
        await self._resolve_every_pool()

    async def _resolve_every_pool(self) -> None:
        """Resolve the interface of every layer-2 pool, assigned here or not, so that the
        heartbeat answers name the pools this node lacks and the leader places none of their
        IPs here (each missing one is also reported once, as ``InterfaceMissing``)."""
        for name, obj in list(self.eips.cache.items()):
            # Resolved pools are cached until their Eip changes: parse only the others.
            if PoolName(name) not in self.links and eip_api.parse(obj).protocol == "layer2":
                await self._interface(PoolName(name))
        lacking = sorted(pool for pool, link in self.links.items() if link is None)
        if self.endpoint is not None:
            self.endpoint.lacking = tuple(lacking)

    async def _interface(self, pool: PoolName) -> str | None:
        if pool in self.links:
            return self.links[pool]
        obj = self.eips.cache.get(pool)
        eip = eip_api.parse(obj) if obj is not None else None
        if eip is None or eip.addresses is None:
            return None  # gone or invalid: the manager reports it and will release its IPs
        try:
            link = await interfaces.resolve(
                eip.interface,
                pool_first=eip.addresses.first,
                pool_last=eip.addresses.last,
                netns=self.netns,
            )
        except errors.InvalidSpec as missing:
            self._report(eip, f"node {self.node}: {missing}")
            self.links[pool] = None
            return None
        except errors.TransientError as failure:
            log.warning(
                "pool %s: %s; retrying in %.0f s",
                pool,
                failure,
                RESOLVE_INTERVAL,
                extra=logs.fields(pool=pool, node=self.node),
            )
            return None  # not cached: the next sync tries again
        self._said.pop(pool, None)
        self.links[pool] = link.name
        return link.name

    # -- health ------------------------------------------------------------------------------

    def beats(self) -> list[health.Beat]:
        """The answering threads: one reader per interface, one per heartbeat address."""
        beats = [health.Beat(f"reader of {name}", c.ran.last) for name, c in self._readers.items()]
        if self.endpoint is not None:
            beats += [health.Beat("heartbeat thread", s.last) for s in self.endpoint.threads_ran]
        return beats

    def conditions(self) -> list[tuple[str, bool]]:
        """Ready: both caches synced and a packet socket open on every interface in use.
        Fenced is ready too (see :mod:`porterlb.health`)."""
        unopened = self.announcer.unopened()
        return [
            ("services synced", self.services.synced.is_set()),
            ("eips synced", self.eips.synced.is_set()),
            (f"packet socket on {', '.join(unopened)}", not unopened),
        ]

    # -- the edges ---------------------------------------------------------------------------

    async def _open(self, ifname: str) -> conn.PacketConn:
        opened = await afpacket.AfPacketConn.open(ifname, netns=self.netns)
        self._readers[ifname] = opened
        return opened

    def _conflict(self, ip: address.IPAddress, ifname: str, mac: ethernet.MacAddress) -> None:
        for obj in self.services.cache.values():
            service = svc.parse(obj)
            if str(ip) not in service.ingress or not assignments.read(obj, self.node):
                continue
            self.poster.emit(
                events.Notice(
                    subject=events.Subject.service(service),
                    type="Warning",
                    reason=reasons.IP_CONFLICT,
                    message=f"Service {service.key}: {ip} is in use by another host"
                    f" (MAC {mac}) on {ifname} of node {self.node}",
                )
            )

    def _report(self, eip: eip_api.Eip, message: str) -> None:
        if self._said.get(eip.name) == message:
            return
        self._said[eip.name] = message
        log.warning(
            "%s", message, extra=logs.fields(node=self.node, pool=eip.name, interface=eip.interface)
        )
        self.poster.emit(
            events.Notice(
                subject=events.Subject.eip(eip.name, _uid(self.eips.cache.get(eip.name))),
                type="Warning",
                reason=reasons.INTERFACE_MISSING,
                message=message,
            )
        )


def _uid(obj: Mapping[str, object] | None) -> str:
    meta = (obj or {}).get("metadata")
    return str(meta.get("uid", "")) if isinstance(meta, dict) else ""
