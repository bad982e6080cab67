"""The speaker's heartbeat endpoint: answers the managers' signed pings, feeds the fence.

Every manager replica pings every speaker (:mod:`porterlb.manager.liveness`); the speaker
answers each ping :class:`porterlb.liveness.guard.PingGuard` accepts with a signed pong and
counts it as a sign of life for its :class:`~porterlb.liveness.guard.Fence`. Anything else
that reaches the port (forged, stale, replayed, garbage) is counted by verdict and dropped.

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
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from porterlb import health
from porterlb.kube import secrets
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
    """Where the key is, which port to answer on, and the fence time."""

    secret_namespace: str
    secret_name: str = secrets.DEFAULT_NAME
    port: int = udp.DEFAULT_PORT
    addresses: tuple[str, ...] = ()
    """The node's addresses to answer on (``--heartbeat-addr``); none: every address."""
    fence_after: float = guard.DEFAULT_FENCE_AFTER


class Heartbeats:
    """Answers pings on the heartbeat port until cancelled; :meth:`run`."""

    def __init__(
        self,
        *,
        node: str,
        key: bytes,
        fence: guard.Fence,
        port: int = udp.DEFAULT_PORT,
        addresses: tuple[str, ...] = (),
        netns: str | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.key = key
        self.fence = fence
        self.port = port
        self.addresses = addresses
        self.netns = netns
        self.guard = guard.PingGuard(node=node)
        self._checking = threading.Lock()
        """One answering thread per address: the guard's replay memory is checked by one at
        a time, so a ping sent to two addresses of the node is answered once."""
        self.threads_ran: list[health.Stamp] = []
        """When each answering thread last turned (every :data:`RECEIVE_TIMEOUT` at least)."""
        self.wall_clock_ns = wall_clock_ns
        """Pings carry the pinger's wall-clock send time; only a wall clock can judge it."""
        self._loop_seen = time.monotonic()
        """When the event loop last ran (``time.monotonic``, the loop's own clock)."""
        self._answered = time.monotonic()
        """When a valid ping was last answered (at first: when this endpoint was made)."""
        self.lacking: tuple[str, ...] = ()
        """The pools whose interface this node lacks, named in every answer; the speaker's
        loop replaces the tuple whole, the answering thread only reads it."""

    async def run(self) -> None:
        socks: list[socket.socket] = []
        threads: list[threading.Thread] = []
        stop = threading.Event()
        try:
            for host in self.addresses or (None,):
                sock = await udp.bind(port=self.port, netns=self.netns, host=host)
                socks.append(sock)
                sock.settimeout(RECEIVE_TIMEOUT)
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
        while not stop.is_set():
            ran.mark()
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
        with self._checking:
            verdict = self.guard.check(ping, self.wall_clock_ns())
        metrics.RECEIVED.labels("speaker", verdict.value).inc()
        if verdict is guard.Verdict.ANSWERED:
            sock.sendto(wire.encode(ping.answer(self.lacking), self.key), sender)
            self._answered = now
            self.fence.sign_of_life(now)

    def age(self) -> float:
        """Seconds since a valid ping was last answered (a metric, read on any thread)."""
        return time.monotonic() - self._answered
