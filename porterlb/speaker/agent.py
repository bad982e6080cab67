"""The speaker: watches the manager's assignments for this node and drives the announcer.

Two reflectors feed one sync loop: this node's placement record (the NodePlacement named after
the node, watched by name: :mod:`porterlb.speaker.assignments`), so the speaker decodes no
Service event and a change costs it one small object however many Services exist, and the
Eips. The wanted set (IP -> interface) is handed to the announcer whole. Interfaces are
resolved per pool over netlink in the node's network namespace, cached, and resolved again
when the Eip changes and every :data:`RESOLVE_INTERVAL`. A pool whose interface this node
lacks gets a Warning Event ``InterfaceMissing`` naming node and interface, and nothing of it
is announced; an address conflict gets ``IPConflict`` on the Services using the IP, and another
node answering for one of them ``KernelAnswersARP``, as does this node's own kernel answering
for any Service IP (:mod:`.kernelarp`, on the Node).

With heartbeats on, the speaker answers the managers' pings (:mod:`.heartbeats`) and fences
itself (docs/fencing.md): the announcer asks :meth:`Speaker.may_answer` before every answer
and every gratuitous frame, on whichever thread sends it. It may answer while it holds a lease
that only acknowledged pongs extend and its Services watch, as applied to the announcer, has
reached the leader's must-see revision for this node (a revision of its record); an open
watch proves nothing. Without a lease it reads
the managers' election Lease itself (:data:`LEADER_READ_INTERVAL`): while no manager leads,
nobody can move its IPs and it keeps answering its last assignments, for at most the fence
time after the last read that said so.

**Draining** (:meth:`Speaker.drain`, on SIGTERM): the speaker says so in every pong, keeps
answering and keeping its lease while the leader hands its IPs to other nodes, and
:meth:`Speaker.run` returns once :func:`porterlb.liveness.drain.verdict` lets it: its IPs are
handed over, nobody would move them, or ``drain_timeout`` has passed.

An IP is probed before its first announcement only when its record entry says it is new to
the cluster (``probe``); one that moved here from another node is announced at once: porterlb
answered for it a moment ago, and a failover must not wait (the old node may even still answer
the probe; other speakers' MACs are never conflicts either, see ``set_peer_macs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any, Final

import httpx2
import lightkube
import msgspec

from porterlb import errors, health, logs
from porterlb.api import address, reasons
from porterlb.api import eip as eip_api
from porterlb.api.keys import NodeName, PoolName
from porterlb.kube import client as kube_client
from porterlb.kube import events, peers, reflector, resources, secrets
from porterlb.kube import metrics as kube_metrics
from porterlb.l2 import afpacket, announcer, conn, ethernet, interfaces, strictarp
from porterlb.liveness import drain, guard, wire
from porterlb.liveness import metrics as liveness_metrics
from porterlb.speaker import assignments, heartbeats, kernelarp, metrics

log = logging.getLogger(__name__)

RESOLVE_INTERVAL: Final = 10.0
"""Seconds between two interface resolutions of a pool: links come and go under a node."""

FENCE_CHECK: Final = 0.05
"""Seconds between two looks at the fence, for its metric and log line (the fence itself is
decided at every answer)."""

LEADER_READ_INTERVAL: Final = 0.5
"""Seconds between two reads of the election Lease while no lease is held: a quarter of the
default fence time, so a read showing no leader is renewed well before it runs out."""

LEADER_READ_TIMEOUT: Final = 1.0
"""Seconds one read of the election Lease may take: an answer later than this would be too
old to count anyway."""


class Speaker:
    """The node agent of one node; :meth:`run` until cancelled."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        *,
        node: NodeName,
        netns: str | None = None,
        config: announcer.Config | None = None,
        heartbeat: heartbeats.Settings | None = None,
        drain_timeout: float = drain.DEFAULT_TIMEOUT,
    ) -> None:
        self.client = client
        self.drain_timeout = drain_timeout
        self.draining = False
        """Set by :meth:`drain`; the heartbeat thread reads it for every pong."""
        self._drain = asyncio.Event()
        self.node = node
        self.netns = netns
        self.heartbeat = heartbeat
        self.lease: guard.Lease | None = None
        self.leader = guard.LeaderCheck(
            fresh_for=heartbeat.fence_after if heartbeat else guard.DEFAULT_FENCE_AFTER
        )
        self.fenced = heartbeat is not None
        """Whether :meth:`may_answer` said no at its last look (a start is fenced: no lease
        before the first acknowledgement)."""
        self.applied = 0
        """The revision of this node's record the announcer's wanted set reflects (see
        :meth:`_sync`)."""
        self.revoked = 0
        """The record's revision that took the latest IP from this node: a draining speaker
        stays until it has echoed it to the leader (the handshake's must-see revision)."""
        self._changes = 0
        """Changes of this node's records so far: a sync reflects those made before it."""
        self._syncing = False
        self.endpoint: heartbeats.Heartbeats | None = None
        self.poster = events.Poster(client, component="porterlb-speaker")
        self.record = reflector.Reflector(
            client,
            resources.NodePlacement,
            on_change=self._record_changed,
            name="placement",
            field_selector=f"metadata.name={node}",
            keep=assignments.slim,
        )
        self.eips = reflector.Reflector(
            client, resources.Eip, on_change=self._eip_changed, name="eips"
        )
        self.peers = (
            reflector.Reflector(
                client,
                resources.ConfigMap,
                on_change=self._peers_changed,
                name="peers",
                namespace=heartbeat.lease_namespace,
                field_selector=f"metadata.name={peers.NAME}",
            )
            if heartbeat is not None
            else None
        )
        self.announcer = announcer.Announcer(
            open_conn=self._open,
            on_conflict=self._conflict,
            on_node_answers=self._node_answers,
            config=config or announcer.Config(),
            watch_links=functools.partial(interfaces.watch_running, netns=netns),
            may_answer=self.may_answer,
        )
        self.mine: assignments.Assigned = {}
        """The IPs this node's record assigns to it, with their entries."""
        self.kernel = kernelarp.Check(
            node=node,
            netns=netns,
            poster=self.poster,
            pools=self._pools,
            assigned=self._used,
        )
        self.links: dict[PoolName, str | None] = {}
        """Pool -> interface name, or None when this node lacks it (reported)."""
        self._macs: dict[str, bytes] = {}
        """Interface name -> its MAC, for the pongs (peers' MACs are never conflicts)."""
        self._announced: set[address.IPAddress] = set()
        self._said: dict[PoolName, str] = {}
        self._dirty = asyncio.Event()
        self._readers: dict[str, afpacket.AfPacketConn] = {}
        """Interface -> its latest packet socket, for the stamps of their reader threads."""

    async def run(self) -> None:
        """Until cancelled, or until a drain (:meth:`drain`) is over."""
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self.poster.run(), name="speaker/events"),
                group.create_task(self.record.run(), name="speaker/watch/placement"),
                group.create_task(self.eips.run(), name="speaker/watch/eips"),
                group.create_task(self.announcer.run(), name="speaker/l2"),
                group.create_task(self._sync_loop(), name="speaker/sync"),
                group.create_task(self.kernel.run(), name="speaker/kernel-arp"),
            ]
            if self.peers is not None:
                tasks.append(group.create_task(self.peers.run(), name="speaker/watch/peers"))
            if self.heartbeat is not None:
                tasks.append(
                    group.create_task(self._heartbeats(self.heartbeat), name="speaker/heartbeats")
                )
            await self._drained()
            for task in tasks:
                task.cancel()

    def drain(self) -> None:
        """Start shutting down without moving traffic like a crash would (SIGTERM): say so in
        every pong, keep answering until the leader has handed the IPs over, then let
        :meth:`run` return. Asking again changes nothing."""
        if self.draining:
            return
        self.draining = True
        metrics.DRAINING.set(1)
        self._drain.set()

    def _is_draining(self) -> bool:
        return self.draining

    async def _drained(self) -> None:
        """Return once a drain asked for by :meth:`drain` may end."""
        await self._drain.wait()
        started = time.monotonic()
        log.info(
            "node %s: draining: asking the leader to move its IPs (at most %.1f s)",
            self.node,
            self.drain_timeout,
            extra=logs.fields(node=self.node),
        )
        while True:
            now = time.monotonic()
            holding = len(self.mine)
            why = drain.verdict(
                now=now,
                deadline=started + self.drain_timeout,
                heartbeats=self.heartbeat is not None,
                lease_held=self.lease is not None and self.lease.held(now),
                holding=holding,
                heard=self.endpoint is not None and self.endpoint.heard_draining(),
                confirmed=self.endpoint.confirmed if self.endpoint is not None else 0,
                revoked=self.revoked,
            )
            if why is not None:
                break
            await asyncio.sleep(FENCE_CHECK)
        log.log(
            logging.INFO if why is not drain.Exit.TIMED_OUT else logging.WARNING,
            "node %s: drained after %.3f s, %d IPs still assigned here: %s; stopping",
            self.node,
            now - started,
            holding,
            why.value,
            extra=logs.fields(node=self.node),
        )

    def may_answer(self) -> bool:
        """The fence (:func:`porterlb.liveness.guard.may_answer`); any thread may ask."""
        if self.heartbeat is None:
            return True  # no heartbeats: nothing to fence on (the manager moves nothing)
        lease = self.lease
        if lease is None:
            return False  # not started: nothing is announced before the key is read anyway
        return guard.may_answer(
            time.monotonic(), lease=lease, watched=self.applied, leader=self.leader
        )

    def _watched(self) -> int:
        return self.applied

    async def _heartbeats(self, settings: heartbeats.Settings) -> None:
        """Answer the managers' pings; watch the fence; read the Lease while none is held."""
        key = await secrets.heartbeat_key(
            self.client,
            namespace=settings.secret_namespace,
            name=settings.secret_name,
            create=False,
        )
        self.lease = lease = guard.Lease(
            length=settings.lease, session=os.urandom(wire.SESSION_LEN)
        )
        self.endpoint = endpoint = heartbeats.Heartbeats(
            node=self.node,
            key=key,
            lease=lease,
            watched=self._watched,
            draining=self._is_draining,
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
            group.create_task(self._fence_loop(lease), name="speaker/heartbeats/fence")
            group.create_task(self._leader_loop(settings), name="speaker/heartbeats/leader")

    async def _fence_loop(self, lease: guard.Lease) -> None:
        liveness_metrics.FENCED.set(int(self.fenced))
        while True:
            if self.may_answer() == self.fenced:
                self.fenced = not self.fenced
                liveness_metrics.FENCED.set(int(self.fenced))
                if self.fenced:
                    log.warning(
                        "node %s: fenced, answering for no IP (lease %s, watch at revision %d,"
                        " must see %d)",
                        self.node,
                        "held" if lease.held(time.monotonic()) else "lapsed",
                        self.applied,
                        lease.must_see,
                        extra=logs.fields(node=self.node),
                    )
                else:
                    log.info(
                        "node %s: no longer fenced", self.node, extra=logs.fields(node=self.node)
                    )
            await asyncio.sleep(FENCE_CHECK)

    async def _leader_loop(self, settings: heartbeats.Settings) -> None:
        """While no lease is held, read the election Lease every :data:`LEADER_READ_INTERVAL`
        (a fresh GET with a short timeout: the API's answer, not the watch's belief)."""
        assert self.lease is not None
        path = kube_client.path(
            resources.Lease, namespace=settings.lease_namespace, name=settings.lease_name
        )
        http = kube_client.http(self.client)
        while True:
            if not self.lease.held(time.monotonic()):
                sent = time.monotonic()
                try:
                    kube_metrics.API_REQUESTS.labels("get", "leases").inc()
                    reply = await http.get(path, timeout=LEADER_READ_TIMEOUT)
                except httpx2.HTTPError as error:
                    log.debug("node %s: reading Lease %s: %r", self.node, path, error)
                else:
                    understood, record = _lease_record(reply.status_code, reply.content)
                    if understood:
                        self.leader.read(record, sent=sent, received=time.monotonic())
                    else:
                        log.warning(
                            "node %s: reading Lease %s: %s %s",
                            self.node,
                            path,
                            reply.status_code,
                            reply.text[:200],
                        )
            await asyncio.sleep(LEADER_READ_INTERVAL)

    # -- inputs ----------------------------------------------------------------------------

    def _record_changed(self, key: str) -> None:
        obj = self.record.cache.get(key)
        found = assignments.kept(obj)
        if found != self.mine:
            if self.mine.keys() - found.keys():
                # The revision the leader's handshake asks this node to echo (its must-see).
                revision = reflector.object_revision(obj) if obj is not None else 0
                self.revoked = max(self.revoked, revision or self.record.last_event)
            self.mine = found
            self._changes += 1
            self._dirty.set()
        elif not self._dirty.is_set() and not self._syncing:
            # Nothing this node answers changed, and nothing is waiting to be applied: the
            # announcer reflects this revision already.
            self.applied = max(self.applied, self.record.revision)

    def _peers_changed(self, key: str) -> None:
        assert self.peers is not None
        self.announcer.set_peer_macs(peers.parse(self.peers.cache.get(key)))

    def _eip_changed(self, name: str) -> None:
        self.links.pop(PoolName(name), None)
        self._dirty.set()

    # -- the loop ---------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        await self.record.synced.wait()
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
        self._syncing = True
        try:
            await self._apply()
        finally:
            self._syncing = False
        await self._resolve_every_pool()

    async def _apply(self) -> None:
        wanted: dict[address.IPAddress, announcer.Announcement] = {}
        # A snapshot: resolving an interface awaits, and watch events change the record then
        # (each event is taken as it comes, so `mine` reflects the revision read here).
        revision, changes = self.record.revision, self._changes
        for ip, entry in list(self.mine.items()):
            ifname = await self._interface(entry.pool)
            if ifname is not None:
                # Probe before an IP is first announced in the cluster (RFC 5227).
                fresh = entry.probe and ip not in self._announced
                wanted[ip] = announcer.Announcement(ifname, probe=fresh)
        self.announcer.update(wanted)
        metrics.ANNOUNCED_IPS.set(len(wanted))
        # What changed meanwhile concerned no IP of this node: the current revision holds.
        current = self.record.revision if self._changes == changes else revision
        self.applied = max(self.applied, current)
        self._announced = set(wanted)

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
            in_use = {link for link in self.links.values() if link is not None}
            self.endpoint.macs = tuple(
                sorted({mac for name, mac in self._macs.items() if name in in_use})
            )

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
        if link.mac is not None:
            self._macs[link.name] = link.mac.octets
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
            ("placement record synced", self.record.synced.is_set()),
            ("eips synced", self.eips.synced.is_set()),
            (f"packet socket on {', '.join(unopened)}", not unopened),
        ]

    # -- the edges ---------------------------------------------------------------------------

    async def _open(self, ifname: str) -> conn.PacketConn:
        opened = await afpacket.AfPacketConn.open(ifname, netns=self.netns)
        self._readers[ifname] = opened
        return opened

    def _pools(self) -> list[strictarp.Pool]:
        """Every pool whose interface is resolved here, for :mod:`.kernelarp`."""
        found = []
        for name, link in list(self.links.items()):
            obj = self.eips.cache.get(name)
            if link is None or obj is None:
                continue
            pool = eip_api.parse(obj).addresses
            if pool is not None:
                found.append(strictarp.Pool(pool.first, pool.last, link))
        return found

    def _used(self, ip: address.IPAddress) -> bool:
        """Whether ``ip`` is some Service's, announced here or elsewhere (the Eips say so)."""
        return any(assignments.used(eip, ip) for eip in list(self.eips.cache.values()))

    def _announced_services(self, ip: address.IPAddress) -> list[tuple[str, events.Subject]]:
        """The Services (key, Event subject) this node's record names for ``ip``."""
        entry = self.mine.get(ip)
        return [(key, _service_subject(key)) for key in entry.services] if entry else []

    def _node_answers(
        self, ip: address.IPAddress, ifname: str, mac: ethernet.MacAddress, other: str
    ) -> None:
        for key, subject in self._announced_services(ip):
            message = strictarp.wire_message(
                key, ip, interface=ifname, node=self.node, other=other, mac=str(mac)
            )
            self.poster.emit(
                events.Notice(
                    subject=subject,
                    type="Warning",
                    reason=reasons.KERNEL_ANSWERS_ARP,
                    message=message,
                )
            )

    def _conflict(self, ip: address.IPAddress, ifname: str, mac: ethernet.MacAddress) -> None:
        for key, subject in self._announced_services(ip):
            self.poster.emit(
                events.Notice(
                    subject=subject,
                    type="Warning",
                    reason=reasons.IP_CONFLICT,
                    message=f"Service {key}: {ip} is in use by another host"
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


def _lease_record(status: int, content: bytes) -> tuple[bool, guard.LeaseRecord | None]:
    """What a GET of the election Lease answered: (True, its record, or None when there is
    no Lease: no manager ever ran), or (False, None) for an answer that says nothing."""
    if status == 404:
        return True, None
    if status != 200:
        return False, None
    spec: dict[str, Any] = msgspec.json.decode(content).get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    return True, guard.LeaseRecord(
        holder=spec.get("holderIdentity") or None,
        renewed=spec.get("renewTime"),
        duration=float(duration) if isinstance(duration, int | float) else math.inf,
    )


def _uid(obj: Mapping[str, object] | None) -> str:
    meta = (obj or {}).get("metadata")
    return str(meta.get("uid", "")) if isinstance(meta, dict) else ""


def _service_subject(key: str) -> events.Subject:
    """The Event subject of the Service `key` (``namespace/name``) as a record names it."""
    namespace, _, name = key.partition("/")
    return events.Subject(kind="Service", api_version="v1", name=name, namespace=namespace)
