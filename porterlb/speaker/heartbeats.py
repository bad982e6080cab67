"""The speaker's heartbeat endpoint: answers the managers' signed pings, feeds the lease.

Every manager replica pings every speaker (:mod:`porterlb.manager.liveness`); the speaker
answers each ping :class:`porterlb.liveness.guard.PingGuard` accepts with a signed, numbered
pong, and hands the ping to its :class:`~porterlb.liveness.guard.Lease`: the ping's
acknowledgement of an earlier pong extends the answering lease, and its must-see revision
fences the speaker until its watch has caught up (the pong says whether it has: ``STALE``).
The pong's send time is read before it is sent, so the lease never outlasts what the pinger
can compute from the time it received the pong. Anything else that reaches the port (forged,
replayed, garbage) is counted by verdict and dropped.

Pings are answered by a thread of their own, not by the event loop: a loop busy for a few
hundred milliseconds with a burst of Service changes (1,000 Services arriving at once on a
loaded node did that in the lab) would miss three pings and have its node taken for dead,
moving every IP it holds. The thread needs the interpreter lock only for microseconds, which
a busy loop yields every 5 ms (``sys.getswitchinterval``). It answers only while the loop
itself has run within :data:`LOOP_STALL_LIMIT`, so a wedged speaker still goes silent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from porterlb.kube import election, secrets
from porterlb.liveness import guard, metrics, udp, wire

LOOP_STALL_LIMIT: Final = 2.0
"""Seconds the event loop may go without running before pings go unanswered: longer than
any burst of work seen in the lab, as long as the fence time (a speaker whose loop stalls this
long cannot follow its assignments either)."""

LOOP_BEAT: Final = 0.1
"""Seconds between two marks of the loop's life."""

RECEIVE_TIMEOUT: Final = 0.2
"""Seconds the answering thread blocks in one receive before it looks at its stop flag."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Where the key is, which port to answer on, the lease and the fence time, and where
    the managers' election Lease is."""

    secret_namespace: str
    secret_name: str = secrets.DEFAULT_NAME
    port: int = udp.DEFAULT_PORT
    address: str | None = None
    """The address to answer on; None: every address of the node."""
    fence_after: float = guard.DEFAULT_FENCE_AFTER
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
        port: int = udp.DEFAULT_PORT,
        address: str | None = None,
        netns: str | None = None,
    ) -> None:
        self.key = key
        self.lease = lease
        self.watched = watched
        """The Services revision the speaker's announcer reflects."""
        self.port = port
        self.address = address
        self.netns = netns
        self.guard = guard.PingGuard(node=node)
        self._lease_ms = math.ceil(lease.length * 1000)
        self._loop_seen = time.monotonic()
        """When the event loop last ran (``time.monotonic``, the loop's own clock)."""
        self.lacking: tuple[str, ...] = ()
        """The pools whose interface this node lacks, named in every answer; the speaker's
        loop replaces the tuple whole, the answering thread only reads it."""
        self.macs: tuple[bytes, ...] = ()
        """The MACs of the node's pool interfaces, named in every answer (replaced whole)."""

    async def run(self) -> None:
        sock = await udp.bind(port=self.port, netns=self.netns, host=self.address)
        sock.settimeout(RECEIVE_TIMEOUT)
        stop = threading.Event()
        thread = threading.Thread(
            target=self._answer, args=(sock, stop), name="speaker/heartbeats", daemon=True
        )
        thread.start()
        try:
            while thread.is_alive():
                self._loop_seen = time.monotonic()
                await asyncio.sleep(LOOP_BEAT)
            raise RuntimeError("the heartbeat thread ended")  # it only ends when told to
        finally:
            stop.set()
            await asyncio.to_thread(thread.join)
            sock.close()

    def _answer(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                data, sender = sock.recvfrom(wire.MAX_LEN + 1)
            except TimeoutError:
                continue
            except OSError:
                if stop.is_set():
                    return
                raise
            self._received(sock, data, sender)

    def _received(self, sock: socket.socket, data: bytes, sender: Any) -> None:
        ping = udp.decode(data, self.key, role="speaker", sender=sender)
        if ping is None:
            return
        now = time.monotonic()
        if now - self._loop_seen > LOOP_STALL_LIMIT:
            metrics.RECEIVED.labels("speaker", "loop_stalled").inc()
            return
        verdict = self.guard.check(ping)
        metrics.RECEIVED.labels("speaker", verdict.value).inc()
        if verdict is guard.Verdict.ANSWERED:
            self._answer_ping(sock, ping, sender)

    def _answer_ping(self, sock: socket.socket, ping: wire.Heartbeat, sender: Any) -> None:
        lease = self.lease
        lease.ping(ping)  # its must-see revision first: the pong echoes it as complied with
        pong = ping.answer(
            session=lease.session,
            sequence=lease.pong(time.monotonic()),
            lease_ms=self._lease_ms,
            stale=self.watched() < lease.must_see,
            pools=self.lacking,
            macs=self.macs,
        )
        sock.sendto(wire.encode(pong, self.key), sender)
