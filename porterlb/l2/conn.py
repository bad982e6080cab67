"""The one socket seam of layer 2: ``PacketConn``, and ``MemoryPacketConn`` for tests and labs.

The announcer and responders talk to an interface only through this Protocol, so GARP bursts,
probes and answers run in plain pytest on virtual time (the httpx ``MockTransport`` and
MetalLB ``arp_test.go`` pattern). ``porterlb.l2.afpacket.AfPacketConn`` is the real one.
``MemoryPacketConn`` records what was sent with the loop time, lets a test inject frames (or a
receive error), and can be wired to another one like two ends of a cable. Frames are read
one at a time (``recv``) or in batches of what is queued (``recv_batch``), as the responder
does.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Protocol

from porterlb import errors
from porterlb.l2 import ethernet


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

    async def recv(self) -> bytes:
        """The next received frame; raises TransientError if the socket fails."""
        ...

    async def recv_batch(self, limit: int) -> list[bytes]:
        """The next received frames, 1 to ``limit`` of them: those already queued, or else the
        first to arrive. Raises TransientError if the socket fails before any frame.

        One wakeup for many frames: under load the responder's cost per frame is its own
        work, not the event loop's.
        """
        ...

    async def send(self, frame: bytes) -> None:
        """Transmit one frame; raises TransientError if the socket fails."""
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
        self._error: errors.PorterlbError | None = None
        """An injected error met while a batch was being gathered: raised next."""

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
        """Make ``frame`` the next thing ``recv`` returns (after those already injected)."""
        self._inbox.put_nowait(frame)

    def inject_error(self, error: errors.PorterlbError) -> None:
        """Make ``recv`` raise ``error`` once, after the frames already injected."""
        self._inbox.put_nowait(error)

    async def next_sent(self) -> bytes:
        """Wait for the next frame sent on this conn (each frame is returned once)."""
        return await self._outbox.get()

    async def recv(self) -> bytes:
        return (await self.recv_batch(1))[0]

    async def recv_batch(self, limit: int) -> list[bytes]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        item = await self._inbox.get()
        if isinstance(item, errors.PorterlbError):
            raise item
        frames = [item]
        while len(frames) < limit and not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, errors.PorterlbError):
                self._error = item
                break
            frames.append(item)
        return frames

    async def send(self, frame: bytes) -> None:
        if self.closed:
            raise errors.TransientError(f"interface {self._ifname}: connection is closed")
        self.sent.append(Sent(asyncio.get_running_loop().time(), frame))
        self._outbox.put_nowait(frame)
        for peer in self._peers:
            peer.inject(frame)

    def join(self, ip: ipaddress.IPv6Address) -> None:
        self.groups[ip] += 1

    def leave(self, ip: ipaddress.IPv6Address) -> None:
        self.groups[ip] -= 1
        if self.groups[ip] <= 0:
            del self.groups[ip]

    def close(self) -> None:
        self.closed = True
