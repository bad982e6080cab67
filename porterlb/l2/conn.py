"""The one socket seam of layer 2: ``PacketConn``, and ``MemoryPacketConn`` for tests and labs.

The announcer and responders talk to an interface only through this Protocol, so GARP bursts,
probes and answers run in plain pytest on virtual time (the httpx ``MockTransport`` and
MetalLB ``arp_test.go`` pattern). ``porterlb.l2.afpacket.AfPacketConn`` is the real one.
``MemoryPacketConn`` records what was sent with the loop time, lets a test inject frames (or a
receive error), and can be wired to another one like two ends of a cable.

Received frames are not awaited one by one: ``serve`` hands each batch of them to a plain
function that decides and replies at once with ``transmit``. The real conn calls it from a
reader thread of its own, so an answer costs a ``poll``, a ``recv`` and a ``send`` and never
waits for the event loop (a busy loop, or its own wakeup and task switch, was most of an
answer's latency: bench/l2_answers.py); the memory conn calls it on the loop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from porterlb import errors
from porterlb.l2 import ethernet

Answer = Callable[[list[bytes]], None]
"""Decides on a batch of received frames and replies to them with ``PacketConn.transmit``.

It may run on another thread than the event loop's (``AfPacketConn`` calls it from its reader
thread), so it must only read the loop's state and hand anything else to the loop."""


class PacketConn(Protocol):
    """Whole Ethernet frames in and out of one interface."""

    @property
    def ifname(self) -> str:
        """The interface name, for logs, metrics and ``owns(ip, ifname)``."""
        ...

    @property
    def mac(self) -> ethernet.MacAddress:
        """The interface's MAC: the source of every frame we send."""
        ...

    async def serve(self, answer: Answer) -> None:
        """Call ``answer`` with the received frames, 1 to ``BATCH`` at a time (those queued
        together), until the conn is closed (returns) or its socket fails (raises
        TransientError, once the frames before the failure were answered). Call it once.
        """
        ...

    def transmit(self, frame: bytes) -> None:
        """Transmit one frame now, from any thread; raises TransientError if the socket fails
        or has no room (an answer is worth no wait: the asker asks again)."""
        ...

    async def send(self, frame: bytes) -> None:
        """Transmit one frame, waiting for room if need be; raises TransientError if the
        socket fails. For the loop's own sends: bursts and probes."""
        ...

    def join(self, ip: ipaddress.IPv6Address) -> None:
        """Receive frames sent to the solicited-node group of ``ip`` (refcounted)."""
        ...

    def leave(self, ip: ipaddress.IPv6Address) -> None:
        """Undo one ``join(ip)``."""
        ...

    def close(self) -> None:
        """Release the socket; idempotent."""
        ...


OpenConn = Callable[[str], Awaitable[PacketConn]]
"""Opens a PacketConn on the named interface; raises a ``porterlb.errors.PorterlbError``."""

BATCH: Final = 64
"""Most frames handed to an ``Answer`` at once: the counters are updated once a batch."""


@dataclasses.dataclass(frozen=True, slots=True)
class Sent:
    """A frame a MemoryPacketConn sent, and the loop time it was sent at."""

    at: float
    frame: bytes


class MemoryPacketConn:
    """An in-memory PacketConn: ``inject`` frames in, read ``sent`` or ``next_sent`` out."""

    def __init__(self, ifname: str, mac: ethernet.MacAddress) -> None:
        self._ifname = ifname
        self._mac = mac
        self._inbox: asyncio.Queue[bytes | errors.PorterlbError] = asyncio.Queue()
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._peers: list[MemoryPacketConn] = []
        self.sent: list[Sent] = []
        """Every frame sent, in order, with its loop time."""
        self.groups: collections.Counter[ipaddress.IPv6Address] = collections.Counter()
        """Current ``join`` counts; released groups are removed."""
        self.closed = False

    @property
    def ifname(self) -> str:
        return self._ifname

    @property
    def mac(self) -> ethernet.MacAddress:
        return self._mac

    def connect(self, other: MemoryPacketConn) -> None:
        """Wire two conns together: from now on each receives what the other sends."""
        self._peers.append(other)
        other._peers.append(self)

    def inject(self, frame: bytes) -> None:
        """Queue ``frame`` for ``serve`` (after those already injected)."""
        self._inbox.put_nowait(frame)

    def inject_error(self, error: errors.PorterlbError) -> None:
        """Make ``serve`` raise ``error``, after answering the frames already injected."""
        self._inbox.put_nowait(error)

    async def next_sent(self) -> bytes:
        """Wait for the next frame sent on this conn (each frame is returned once)."""
        return await self._outbox.get()

    async def serve(self, answer: Answer) -> None:
        """Answers on the loop; an injected error ends it, after the frames before it."""
        while not self.closed:
            frames: list[bytes] = []
            item = await self._inbox.get()
            while not isinstance(item, errors.PorterlbError):
                frames.append(item)
                if len(frames) == BATCH or self._inbox.empty():
                    break
                item = self._inbox.get_nowait()
            if frames:
                answer(frames)
            if isinstance(item, errors.PorterlbError):
                raise item
            await asyncio.sleep(0)  # a flood must not keep the loop from other tasks

    def transmit(self, frame: bytes) -> None:
        if self.closed:
            raise errors.TransientError(f"interface {self._ifname}: connection is closed")
        self.sent.append(Sent(asyncio.get_running_loop().time(), frame))
        self._outbox.put_nowait(frame)
        for peer in self._peers:
            peer.inject(frame)

    async def send(self, frame: bytes) -> None:
        self.transmit(frame)

    def join(self, ip: ipaddress.IPv6Address) -> None:
        self.groups[ip] += 1

    def leave(self, ip: ipaddress.IPv6Address) -> None:
        self.groups[ip] -= 1
        if self.groups[ip] <= 0:
            del self.groups[ip]

    def close(self) -> None:
        self.closed = True
