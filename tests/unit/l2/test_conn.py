import asyncio

import pytest

from porterlb import errors
from porterlb.l2 import conn
from tests.unit.l2 import samples


class Served:
    """``serve`` running in a task, its batches queued as they come."""

    def __init__(self, packet_conn):
        self.batches: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self.task = asyncio.ensure_future(packet_conn.serve(self.batches.put_nowait))

    async def next(self):
        return await asyncio.wait_for(self.batches.get(), 5)


async def test_serve_hands_over_what_is_queued_in_order_in_batches():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    frames = [b"%d" % n for n in range(conn.BATCH + 3)]
    for frame in frames:
        packet_conn.inject(frame)
    served = Served(packet_conn)
    assert await served.next() == frames[: conn.BATCH]
    assert await served.next() == frames[conn.BATCH :]
    served.task.cancel()


async def test_send_is_recorded_with_loop_time():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    before = asyncio.get_running_loop().time()
    await packet_conn.send(b"frame")
    assert await packet_conn.next_sent() == b"frame"
    assert [s.frame for s in packet_conn.sent] == [b"frame"]
    assert packet_conn.sent[0].at >= before


async def test_connected_conns_hear_each_other():
    a = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    b = conn.MemoryPacketConn("eth0", samples.PEER_MAC)
    a.connect(b)
    heard_by_a, heard_by_b = Served(a), Served(b)
    await a.send(b"from a")
    b.transmit(b"from b")
    assert (await heard_by_b.next(), await heard_by_a.next()) == ([b"from a"], [b"from b"])
    heard_by_a.task.cancel()
    heard_by_b.task.cancel()


async def test_send_after_close_fails():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    packet_conn.close()
    packet_conn.close()
    with pytest.raises(errors.TransientError, match="eth0"):
        await packet_conn.send(b"frame")
    with pytest.raises(errors.TransientError, match="eth0"):
        packet_conn.transmit(b"frame")


def test_groups_are_counted():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    packet_conn.join(samples.VIP6)
    packet_conn.join(samples.VIP6)
    packet_conn.leave(samples.VIP6)
    assert packet_conn.groups == {samples.VIP6: 1}
    packet_conn.leave(samples.VIP6)
    assert packet_conn.groups == {}


def test_memory_conn_is_a_packet_conn():
    packet_conn: conn.PacketConn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    assert (packet_conn.ifname, packet_conn.mac) == ("eth0", samples.OUR_MAC)


async def test_injected_error_ends_serve_after_the_frames_before_it():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    packet_conn.inject(b"before")
    packet_conn.inject_error(errors.TransientError("interface eth0: receive failed"))
    packet_conn.inject(b"after")
    served = Served(packet_conn)
    with pytest.raises(errors.TransientError, match="receive failed"):
        await served.task
    assert served.batches.get_nowait() == [b"before"]
    assert served.batches.empty()
    again = Served(packet_conn)  # as after reopening: the rest is still queued
    assert await again.next() == [b"after"]
    again.task.cancel()


async def test_serve_waits_for_the_first_frame():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    served = Served(packet_conn)
    await asyncio.sleep(0)
    assert served.batches.empty()
    packet_conn.inject(b"late")
    assert await served.next() == [b"late"]
    served.task.cancel()
