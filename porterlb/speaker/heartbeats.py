"""The speaker's heartbeat endpoint: answers the managers' signed pings, feeds the lease.

Every manager replica pings every speaker (:mod:`porterlb.manager.liveness`); the speaker
answers each ping :class:`porterlb.liveness.guard.PingGuard` accepts with a signed, numbered
pong, and hands the ping to its :class:`~porterlb.liveness.guard.Lease`: the ping's
acknowledgement of an earlier pong extends the answering lease, and its must-see revision
fences the speaker until its watch has caught up (the pong says whether it has: ``STALE``).
Once the speaker drains (SIGTERM), every pong says ``DRAINING``.
The pong's send time is read before it is sent, so the lease never outlasts what the pinger
can compute from the time it received the pong. Anything else that reaches the port (forged,
replayed, garbage) is counted by verdict and dropped; what is not a ping for this node is
dropped before its HMAC is computed, and a pong the kernel refuses to send (a firewall, a full
queue) is counted, never fatal.

Pings are answered by a thread of their own, not by the event loop: a loop busy for a few
hundred milliseconds with a burst of Service changes (1,000 Services arriving at once on a
loaded node did that in the lab) would miss three pings and have its node taken for dead,
moving every IP it holds. The thread needs the interpreter lock only for microseconds, which
a busy loop yields every 5 ms (``sys.getswitchinterval``). It answers only while the loop
itself has run within :data:`LOOP_STALL_LIMIT`, so a wedged speaker still goes silent. It
reads the socket in batches once woken (one ``poll``, then reads until it is empty), so a
flood of forged datagrams costs one system call each and the genuine pings queued among them
are answered within a batch.

The managers are pods: the speaker cannot tell their addresses from a Node's, so no sender is
refused for its address; only the key says a ping is genuine. But a sender whose ping was
answered is remembered (address and port: a manager pings from one socket while it runs), and
while the endpoint is behind (a batch read full), a ping from a sender not remembered gets an
HMAC only within :data:`UNTRUSTED_BUDGET`; the rest are shed, unread beyond their header. A
flood of forged pings then costs what garbage costs, and the managers already heard keep
being answered (``bench/heartbeat_flood.py`` has the figures).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from porterlb import health
from porterlb.kube import election, secrets
from porterlb.liveness import guard, keys, metrics, udp, wire

log = logging.getLogger(__name__)

LOOP_STALL_LIMIT: Final = 2.0
"""Seconds the event loop may go without running before pings go unanswered: longer than
any burst of work seen in the lab, as long as the fence time (a speaker whose loop stalls this
long cannot follow its assignments either)."""

LOOP_BEAT: Final = 0.1
"""Seconds between two marks of the loop's life."""

RECEIVE_TIMEOUT: Final = 0.2
"""Seconds the answering thread waits for a datagram before it looks at its stop flag."""

BATCH: Final = 256
"""Datagrams read per wake-up before they are handled; a batch read full means the endpoint
is behind."""

UNTRUSTED_BUDGET: Final = 16
"""HMACs a full batch spends on senders not yet answered: a sixteenth of it, so a flood costs
little more than reading it, and a manager that has just started (a new socket) is still
heard after some sixteen pings (1.6 s) while the flood lasts, far sooner once it stops."""

TRUSTED_KEPT: Final = guard.SESSIONS_KEPT
"""Answered senders remembered: one per manager replica, plus restarts, as the sessions."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Where the key is, which port to answer on, the lease and the fence time, and where
    the managers' election Lease is."""

    secret_namespace: str
    secret_name: str = secrets.DEFAULT_NAME
    port: int = udp.DEFAULT_PORT
    addresses: tuple[str, ...] = ()
    """The node's addresses to answer on (``--heartbeat-addr``); none: every address."""
    fence_after: float = guard.DEFAULT_FENCE_AFTER
    rotation: keys.Rotation = dataclasses.field(default_factory=keys.Rotation)
    lease: float = guard.DEFAULT_LEASE
    lease_namespace: str = ""
    """The managers' namespace (their election Lease); empty: the Secret's."""
    lease_name: str = election.LEASE_NAME

    def __post_init__(self) -> None:
        if not self.lease_namespace:
            object.__setattr__(self, "lease_namespace", self.secret_namespace)


class Heartbeats:
    """Answers pings on the heartbeat port until cancelled; :meth:`run`."""

    def __init__(
        self,
        *,
        node: str,
        key: bytes,
        lease: guard.Lease,
        watched: Callable[[], int] = lambda: 0,
        draining: Callable[[], bool] = lambda: False,
        port: int = udp.DEFAULT_PORT,
        addresses: tuple[str, ...] = (),
        netns: str | None = None,
        rotation: keys.Rotation | None = None,
    ) -> None:
        self.keys = keys.Keyring(key, rotation=rotation or keys.Rotation())
        """Replaced whole by :meth:`rekey`; the answering thread only reads it."""
        self.lease = lease
        self.watched = watched
        """The Services revision the speaker's announcer reflects."""
        self.draining = draining
        """Whether the speaker is shutting down (said in every pong from then on)."""
        self.first_draining_pong: int | None = None
        """The number of the first pong that said the speaker drains (None: none yet)."""
        self.confirmed = 0
        """The highest must-see revision echoed in a pong that a ping then acknowledged: the
        leader has heard that this speaker's watch reached it."""
        self._echoed: collections.OrderedDict[int, int] = collections.OrderedDict()
        """Pong number -> the must-see revision it echoed, for the latest pongs."""
        self.port = port
        self.addresses = addresses
        self.netns = netns
        self.guard = guard.PingGuard(node=node)
        self._checking = threading.Lock()
        """One answering thread per address: the guard's replay memory and the lease are
        taken by one at a time, so a ping sent to two addresses of the node is answered once."""
        self.threads_ran: list[health.Stamp] = []
        """When each answering thread last turned (every :data:`RECEIVE_TIMEOUT` at least)."""
        self._lease_ms = math.ceil(lease.length * 1000)
        self._loop_seen = time.monotonic()
        """When the event loop last ran (``time.monotonic``, the loop's own clock)."""
        self._answered = time.monotonic()
        """When a valid ping was last answered (at first: when this endpoint was made)."""
        self.lacking: tuple[str, ...] = ()
        """The pools whose interface this node lacks, named in every answer; the speaker's
        loop replaces the tuple whole, the answering thread only reads it."""
        self._tally = metrics.Tally("speaker")
        self._dropped = udp.BoundedLog(log, logging.DEBUG)
        self._unsent = udp.BoundedLog(log, logging.WARNING)
        self._trusted: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        """Senders (address, port) whose pings were answered, least recently first."""
        self._budget = 0
        """HMACs left for senders not trusted, in the batch being handled."""
        self.macs: tuple[bytes, ...] = ()
        """The MACs of the node's pool interfaces, named in every answer (replaced whole)."""

    def rekey(self, key: bytes) -> None:
        """The heartbeat Secret now holds `key` (see :mod:`porterlb.liveness.keys`)."""
        self.keys = self.keys.rotated(key, time.monotonic())

    async def run(self) -> None:
        socks: list[socket.socket] = []
        threads: list[threading.Thread] = []
        stop = threading.Event()
        try:
            for host in self.addresses or (None,):
                sock = await udp.bind(port=self.port, netns=self.netns, host=host)
                socks.append(sock)
                stamp = health.Stamp()
                self.threads_ran.append(stamp)
                thread = threading.Thread(
                    target=self._answer,
                    args=(sock, stop, stamp),
                    name=f"speaker/heartbeats/{host or 'any'}",
                    daemon=True,
                )
                threads.append(thread)
                thread.start()
            while all(thread.is_alive() for thread in threads):
                self._loop_seen = time.monotonic()
                await asyncio.sleep(LOOP_BEAT)
            raise RuntimeError("a heartbeat thread ended")  # they only end when told to
        finally:
            stop.set()
            for thread in threads:
                await asyncio.to_thread(thread.join)
            for sock in socks:
                sock.close()

    def _answer(self, sock: socket.socket, stop: threading.Event, ran: health.Stamp) -> None:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while not stop.is_set():
            ran.mark()
            if not poller.poll(RECEIVE_TIMEOUT * 1000):
                continue
            try:
                self.answer_batch(sock)
            except OSError:
                if stop.is_set():
                    return
                raise

    def answer_batch(self, sock: socket.socket) -> None:
        """Read up to :data:`BATCH` datagrams waiting in `sock` and answer the pings among
        them (the answering thread's step). Raises OSError when the socket fails."""
        batch = []
        with contextlib.suppress(BlockingIOError, InterruptedError):  # read it empty
            for _ in range(BATCH):
                batch.append(sock.recvfrom(wire.MAX_LEN + 1))
        self._budget = UNTRUSTED_BUDGET if len(batch) == BATCH else BATCH
        accepted = self.keys.accepted(time.monotonic())
        for data, sender in batch:
            self._received(sock, data, sender, accepted)
        self._tally.flush()

    def _received(
        self, sock: socket.socket, data: bytes, sender: Any, accepted: Sequence[bytes]
    ) -> None:
        signed = udp.verify(data, accepted, sender=sender, screen=self._screen)
        if isinstance(signed, str):
            self._tally.add(signed)
            self._dropped(signed, "datagram from %s dropped: %s", sender[0], signed)
            return
        ping = signed.heartbeat
        now = time.monotonic()
        if now - self._loop_seen > LOOP_STALL_LIMIT:
            self._tally.add("loop_stalled")
            return
        with self._checking:
            verdict = self.guard.check(ping)
            self._tally.add(verdict.value)
            if verdict is not guard.Verdict.ANSWERED:
                return
            self._answer_ping(sock, ping, sender, signed.key)
        self._answered = now
        self._trusted[sender[:2]] = None
        self._trusted.move_to_end(sender[:2])
        if len(self._trusted) > TRUSTED_KEPT:
            self._trusted.popitem(last=False)

    def _answer_ping(
        self, sock: socket.socket, ping: wire.Heartbeat, sender: Any, key: bytes
    ) -> None:
        lease = self.lease
        lease.ping(ping)  # its must-see revision first: the pong echoes it as complied with
        if ping.speaker_session == lease.session:
            echoed = self._echoed.get(ping.speaker_sequence, 0)
            self.confirmed = max(self.confirmed, echoed)
        draining = self.draining()
        sequence = lease.pong(time.monotonic())
        if draining and self.first_draining_pong is None:
            self.first_draining_pong = sequence
        self._echoed[sequence] = ping.must_see
        if len(self._echoed) > guard.PONGS_KEPT:
            self._echoed.popitem(last=False)
        pong = ping.answer(
            session=lease.session,
            sequence=sequence,
            lease_ms=self._lease_ms,
            stale=self.watched() < lease.must_see,
            draining=draining,
            pools=self.lacking,
            macs=self.macs,
        )
        udp.send(
            sock, wire.encode(pong, key), sender, role="speaker", what="a pong", logged=self._unsent
        )

    def _screen(self, kind: wire.Kind, node: str, sender: Any) -> str | None:
        """Only a ping for this node is worth an HMAC, and while behind, one from a sender
        answered before or within the budget."""
        if kind is not wire.Kind.PING:
            return guard.Verdict.NOT_A_PING.value
        if node != self.guard.node:
            return guard.Verdict.WRONG_NODE.value
        if sender[:2] not in self._trusted:
            if not self._budget:
                return "shed"
            self._budget -= 1
        return None

    def heard_draining(self) -> bool:
        """Whether a manager has acknowledged a pong that said the speaker drains."""
        first = self.first_draining_pong
        return first is not None and self.lease.acknowledged >= first

    def age(self) -> float:
        """Seconds since a valid ping was last answered (a metric, read on any thread)."""
        return time.monotonic() - self._answered
