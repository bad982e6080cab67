"""AfPacketConn's reader thread over a datagram socketpair: the thread, its batches, its end.

The socket's kind does not matter to ``serve`` (it polls, drains with ``recv`` and sends),
so one end of an AF_UNIX datagram pair stands in for the AF_PACKET socket and the other end
is the wire. The real socket is tested in tests/e2e/test_l2_announcer.py.
"""

import asyncio
import errno
import queue
import socket
import threading
import typing

import pytest

from porterlb import errors
from porterlb.l2 import afpacket, conn
from tests import waiting
from tests.unit.l2 import samples

DEADLINE = 5.0


class Wire:
    """A conn on one end of a socketpair; ``peer`` is the other end, the rest of the link."""

    def __init__(self, wrap: typing.Callable[[socket.socket], object] = lambda sock: sock) -> None:
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        self.peer.settimeout(DEADLINE)
        self.sock = ours
        self.inner = wrap(ours)
        self.conn = afpacket.AfPacketConn(
            typing.cast(socket.socket, self.inner), ifname="eth0", ifindex=2, mac=samples.OUR_MAC
        )
        self.batches: queue.Queue[tuple[str, list[bytes]]] = queue.Queue()

    def answer(self, frames: list[bytes]) -> None:
        """Record the batch and the thread it came on; reply to each frame."""
        self.batches.put((threading.current_thread().name, frames))
        for frame in frames:
            self.conn.transmit(b"re:" + frame)

    async def next_batch(self) -> tuple[str, list[bytes]]:
        return await asyncio.to_thread(self.batches.get, timeout=DEADLINE)

    async def heard(self) -> bytes:
        return await asyncio.to_thread(self.peer.recv, 100)


@pytest.fixture
def wires():
    """Makes Wires, and closes both ends of each at the end of the test."""
    made: list[Wire] = []

    def make(*args):
        made.append(Wire(*args))
        return made[-1]

    yield make
    for wire in made:
        wire.conn.close()
        wire.peer.close()


def readers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("porterlb/l2/")]


async def wait_for(condition: typing.Callable[[], bool]) -> None:
    async def probe() -> bool:
        return condition()

    await waiting.eventually(probe, within=DEADLINE, what="the reader thread")


async def test_answers_come_on_a_reader_thread_in_batches_and_replies_go_out(wires):
    wire = wires()
    frames = [b"%d" % n for n in range(conn.BATCH + 1)]
    for frame in frames:
        wire.peer.send(frame)
    serving = asyncio.ensure_future(wire.conn.serve(wire.answer))
    first, second = await wire.next_batch(), await wire.next_batch()
    assert first == ("porterlb/l2/eth0", frames[: conn.BATCH])
    assert second == ("porterlb/l2/eth0", frames[conn.BATCH :])
    assert [await wire.heard() for _ in frames] == [b"re:" + frame for frame in frames]
    wire.peer.send(b"later")
    assert await wire.next_batch() == ("porterlb/l2/eth0", [b"later"])
    wire.conn.close()
    await serving


async def test_close_ends_serve_and_the_reader_closes_the_socket_last(wires):
    wire = wires()
    serving = asyncio.ensure_future(wire.conn.serve(wire.answer))
    await wait_for(lambda: bool(readers()))
    wire.conn.close()
    wire.conn.close()
    async with asyncio.timeout(DEADLINE):
        assert await serving is None
    await wait_for(lambda: wire.sock.fileno() == -1)
    await wait_for(lambda: readers() == [])  # the thread ends just after closing the socket
    with pytest.raises(errors.TransientError, match="eth0: connection is closed"):
        await wire.conn.send(b"frame")


async def test_cancelled_serve_ends_its_thread_and_leaves_the_socket_to_close(wires):
    wire = wires()
    serving = asyncio.ensure_future(wire.conn.serve(wire.answer))
    await wait_for(lambda: bool(readers()))
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    await wait_for(lambda: readers() == [])
    assert wire.sock.fileno() != -1
    wire.conn.close()
    assert wire.sock.fileno() == -1


async def test_serve_on_a_closed_conn_returns_at_once(wires):
    wire = wires()
    wire.conn.close()
    assert await wire.conn.serve(wire.answer) is None
    await wait_for(lambda: readers() == [])  # the thread ends just after closing the socket


class FailingSocket:
    """The socketpair end, whose second ``recv`` fails as a vanished interface does."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.reads = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, size: int) -> bytes:
        self.reads += 1
        if self.reads == 2:
            raise OSError(errno.ENETDOWN, "Network is down")
        return self._sock.recv(size)

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()


async def test_a_receive_error_ends_serve_after_the_frames_before_it(wires):
    wire = wires(FailingSocket)
    wire.peer.send(b"one")
    wire.peer.send(b"two")
    with pytest.raises(errors.TransientError, match="eth0: receive failed: Network is down"):
        async with asyncio.timeout(DEADLINE):
            await wire.conn.serve(wire.answer)
    assert wire.batches.get_nowait() == ("porterlb/l2/eth0", [b"one"])
    assert wire.inner.reads == 2
    wire.conn.close()
    assert wire.sock.fileno() == -1
