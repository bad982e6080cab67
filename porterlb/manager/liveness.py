"""Which speakers are alive: every manager replica pings every speaker over signed UDP.

Each replica pings, not only the leader, so a replica that becomes leader already knows who
answers and moves nothing while it learns (a leader change moves no IP). Only the leader acts
on it: :mod:`porterlb.manager.announcing` reads :attr:`Liveness.silent` through its
``on_change`` callback. A round pings every Node at its first InternalIP; half an interval
later the round is due and :class:`porterlb.liveness.tracker.Tracker` says who missed
``misses`` rounds in a row. A pong counts only from one of its Node's addresses, checked
before its signature, so a forged pong costs a lookup, not an HMAC. While no speaker at all
answers, the fault is taken to be this manager's (its link, its namespace), and nothing
changes until one is heard again: that switches failover off cluster-wide, so it is a metric
(``porterlb_heartbeat_failover_suspended``) and a Warning Event ``FailoverSuspended``, not
only a log line. No field of a heartbeat is a wall-clock time (a manager whose clock is off
must not make every speaker refuse its pings and so switch failover off). No API request is
made: heartbeats cost the API server nothing.

Each ping to a node acknowledges the latest pong accepted from it (which extends the
speaker's answering lease) and carries that node's entry of :attr:`Liveness.must_see`, the
revision of the leader's latest revocation from the node's placement record;
:meth:`Liveness.confirmed` says which a node has complied with.
A speaker that says it drains (it got SIGTERM, :data:`porterlb.liveness.wire.DRAINING`) is
in :attr:`Liveness.draining` at once: the leader hands its IPs over while it still answers.
The argument is docs/fencing.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any, Final

from porterlb import logs
from porterlb.api import node as node_api
from porterlb.api import reasons
from porterlb.api.keys import NodeName
from porterlb.kube import events, reflector, secrets
from porterlb.liveness import keys, metrics, tracker, udp, wire

log = logging.getLogger(__name__)

DRAIN_BATCH: Final = 1024
"""Datagrams read per turn of the event loop: a flood faster than they are read would
otherwise keep the loop in the reader, and pings would stop. Ample for a round's pongs."""

STALE_GRACE: Final = 1.0
"""Seconds a speaker may say its watch lags before its IPs move: a watch event arrives within
milliseconds, so only a watch that is down (or a speaker far behind) lasts this long."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Where the key is, where the speakers answer, how often and how patiently to ping."""

    secret_namespace: str
    secret_name: str = secrets.DEFAULT_NAME
    port: int = udp.DEFAULT_PORT
    timing: tracker.Timing = dataclasses.field(default_factory=tracker.Timing)
    netns: str | None = None
    """The network namespace to ping from (the lab's router); None: this process's own."""
    rotation: keys.Rotation = dataclasses.field(default_factory=keys.Rotation)


class Liveness:
    """Pings the speakers of every Node and keeps :attr:`silent` current; :meth:`run`."""

    def __init__(
        self,
        *,
        nodes: reflector.Reflector,
        key: bytes,
        settings: Settings,
        on_change: Callable[[], None] = lambda: None,
        poster: events.Poster | None = None,
        subject: events.Subject | None = None,
    ) -> None:
        self.nodes = nodes
        self.keys = keys.Keyring(key, rotation=settings.rotation)
        """Replaced whole by :meth:`rekey`."""
        self.settings = settings
        self.on_change = on_change
        self.poster = poster
        self.subject = subject
        """What a ``FailoverSuspended`` Event is about (the election Lease); None: no Event."""
        self.must_see: dict[NodeName, int] = {}
        """Node -> the revision its speaker's watch of its placement record must have reached
        before it answers ARP: the leader's latest revocation from that record
        (:mod:`porterlb.manager.announcing` raises it; a speaker sees only its own record's
        revisions, so each node has its own)."""
        session = os.urandom(wire.SESSION_LEN)
        self.tracker = tracker.Tracker(session=session, misses=settings.timing.misses)
        self.silent: Mapping[NodeName, float | None] = {}
        """Node -> seconds since it last answered when it was found silent (None: never did)."""
        self.lacking: Mapping[NodeName, frozenset[str]] = {}
        """Node -> the pools whose interface its speaker says the node lacks."""
        self.stale: frozenset[NodeName] = frozenset()
        """Nodes whose speaker has said for :data:`STALE_GRACE` that its watch lags the
        must-see revision: fenced, so their IPs go elsewhere."""
        self.draining: frozenset[NodeName] = frozenset()
        """Nodes whose speaker says it is shutting down: their IPs go elsewhere."""
        self._stale_since: dict[NodeName, float] = {}
        self._targets: dict[NodeName, str | None] = {}
        self._addresses: dict[NodeName, frozenset[str]] = {}
        """Node -> every address of its Node: the only ones its pongs count from."""
        self._tally = metrics.Tally("manager")
        self._dropped = udp.BoundedLog(log, logging.DEBUG)
        self._unsent = udp.BoundedLog(log, logging.WARNING)
        self._deaf = False
        nodes.subscribe(self._node_changed)

    async def run(self) -> None:
        await self.nodes.synced.wait()
        for name in self.nodes.cache:
            self._node_changed(name)
        sock = await udp.bind(port=0, netns=self.settings.netns)
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._drain, sock)
        next_round = loop.time()
        try:
            while True:
                self._ping(sock)
                # Answers are due half an interval after the pings actually left: a round
                # sent late (this process was not scheduled) still gets its full half.
                await asyncio.sleep(self.settings.timing.interval / 2)
                # Every answer already here counts, however busy the loop was meanwhile.
                self._drain(sock)
                self.tracker.close_round()
                self._judge(loop.time())
                # Late rounds are skipped, never sent in a burst: a burst would close each
                # round before any answer could arrive and find every speaker silent.
                next_round = max(next_round + self.settings.timing.interval, loop.time())
                await asyncio.sleep(next_round - loop.time())
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()

    def rekey(self, key: bytes) -> None:
        """The heartbeat Secret now holds `key` (see :mod:`porterlb.liveness.keys`)."""
        self.keys = self.keys.rotated(key, asyncio.get_running_loop().time())

    def _node_changed(self, name: str) -> None:
        obj = self.nodes.cache.get(name)
        if obj is None:
            self._targets.pop(NodeName(name), None)
            self._addresses.pop(NodeName(name), None)
            self.tracker.forget(NodeName(name))
        else:
            self._targets[NodeName(name)] = node_api.internal_ip(obj)
            self._addresses[NodeName(name)] = node_api.ip_addresses(obj)

    def confirmed(self, node: NodeName) -> int:
        """The highest must-see revision `node`'s speaker has echoed (see the tracker)."""
        return self.tracker.confirmed(node)

    def _ping(self, sock: socket.socket) -> None:
        sequence = self.tracker.next_round()
        key = self.keys.signing(asyncio.get_running_loop().time())
        for node, ip in self._targets.items():
            if ip is None:
                continue  # never answers: found silent after `misses` rounds, and said so
            echo_session, echo_sequence = self.tracker.echo(node)
            ping = wire.Heartbeat(
                wire.Kind.PING,
                self.tracker.session,
                sequence,
                node,
                speaker_session=echo_session,
                speaker_sequence=echo_sequence,
                must_see=self.must_see.get(node, 0),
            )
            address = udp.destination(sock, ip, self.settings.port)
            # A refused send (a firewall, a full buffer) is counted; the missing pong says it.
            what = f"the ping to node {node}"
            if udp.send(
                sock,
                wire.encode(ping, key),
                address,
                role="manager",
                what=what,
                logged=self._unsent,
            ):
                metrics.PINGS_SENT.inc()

    def _drain(self, sock: socket.socket) -> None:
        """Read the pongs waiting in the socket, up to :data:`DRAIN_BATCH` (the loop would
        read one per iteration)."""
        now = asyncio.get_running_loop().time()
        accepted = self.keys.accepted(now)
        try:
            for _ in range(DRAIN_BATCH):
                try:
                    data, sender = sock.recvfrom(wire.MAX_LEN + 1)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as error:  # ICMP port unreachable from a dead speaker, queued
                    self._dropped("socket", "heartbeat socket: %s", error)
                    continue
                signed = udp.verify(data, accepted, sender=sender, screen=self._screen)
                if isinstance(signed, str):
                    self._tally.add(signed)
                    self._dropped(signed, "pong from %s dropped: %s", sender[0], signed)
                else:
                    self._tally.add(self.tracker.received(signed.heartbeat, now).value)
        finally:
            self._tally.flush()

    def _screen(self, kind: wire.Kind, node: str, sender: Any) -> str | None:
        """A pong counts only from an address of the Node it names."""
        if kind is not wire.Kind.PONG:
            return tracker.Verdict.NOT_A_PONG.value
        if udp.source(sender) not in self._addresses.get(NodeName(node), ()):
            return "unknown_sender"
        return None

    def _judge(self, now: float) -> None:
        for node in self.tracker.stale - self._stale_since.keys():
            self._stale_since[node] = now
        for node in self._stale_since.keys() - self.tracker.stale:
            del self._stale_since[node]
        stale = frozenset(n for n, t in self._stale_since.items() if now - t >= STALE_GRACE)
        metrics.STALE_NODES.set(len(stale))
        draining = frozenset(self.tracker.draining)
        metrics.DRAINING_NODES.set(len(draining))
        if self.tracker.lacking != self.lacking or stale != self.stale or draining != self.draining:
            for node in stale - self.stale:
                log.warning("node %s: speaker's API watch lags, it answers no ARP", node)
            for node in draining - self.draining:
                log.info("node %s: speaker drains, its IPs are handed over", node)
            self.lacking, self.stale, self.draining = dict(self.tracker.lacking), stale, draining
            self.on_change()
        found = self.tracker.silent(self._targets, now)
        if self.tracker.deaf:
            # No speaker answers at all: far likelier this manager's own network than the
            # whole cluster, and declaring every node dead would unannounce every IP. What
            # was decided before stands until some speaker is heard again.
            if not self._deaf and self._targets:
                self._suspend(True)
            self._deaf = True
            return
        if self._deaf:
            self._suspend(False)
        self._deaf = False
        if found.keys() == self.silent.keys():
            return
        for node in found.keys() - self.silent.keys():
            since = found[node]
            heard = f"last answered {since:.3f} s ago" if since is not None else "never answered"
            log.warning("node %s: speaker silent (%s)", node, heard, extra=logs.fields(node=node))
        for node in self.silent.keys() - found.keys():
            log.info("node %s: speaker answers again", node, extra=logs.fields(node=node))
        # A node still silent keeps the figure of when it was found so: its detection time.
        self.silent = {node: self.silent.get(node, since) for node, since in found.items()}
        metrics.SILENT_NODES.set(len(self.silent))
        self.on_change()

    def _suspend(self, suspended: bool) -> None:
        """Say that failover is switched off (no speaker answers this manager) or on again."""
        metrics.FAILOVER_SUSPENDED.set(int(suspended))
        if not suspended:
            log.info("speakers answer again: failover is on")
            return
        message = (
            f"no speaker of {len(self._targets)} nodes answers this manager's heartbeats:"
            " suspecting the manager's own network, so no IP moves for silence until one does"
        )
        log.warning("%s", message)
        if self.poster is not None and self.subject is not None:
            self.poster.emit(
                events.Notice(
                    subject=self.subject,
                    type="Warning",
                    reason=reasons.FAILOVER_SUSPENDED,
                    message=message,
                )
            )
