import asyncio

import pytest

from porterlb import errors
from porterlb.l2 import conn
from tests.unit.l2 import samples


async def test_inject_then_recv_in_order():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    packet_conn.inject(b"one")
    packet_conn.inject(b"two")
    assert [await packet_conn.recv(), await packet_conn.recv()] == [b"one", b"two"]


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
    await a.send(b"from a")
    await b.send(b"from b")
    assert (await b.recv(), await a.recv()) == (b"from a", b"from b")


async def test_send_after_close_fails():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    packet_conn.close()
    packet_conn.close()
    with pytest.raises(errors.TransientError, match="eth0"):
        await packet_conn.send(b"frame")


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


async def test_injected_error_is_raised_once_in_order():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    packet_conn.inject(b"before")
    packet_conn.inject_error(errors.TransientError("interface eth0: receive failed"))
    packet_conn.inject(b"after")
    assert await packet_conn.recv() == b"before"
    with pytest.raises(errors.TransientError, match="receive failed"):
        await packet_conn.recv()
    assert await packet_conn.recv() == b"after"


async def test_recv_batch_takes_what_is_queued_up_to_the_limit():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    for frame in (b"one", b"two", b"three"):
        packet_conn.inject(frame)
    assert await packet_conn.recv_batch(2) == [b"one", b"two"]
    assert await packet_conn.recv_batch(2) == [b"three"]


async def test_recv_batch_waits_for_the_first_frame():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    batch = asyncio.ensure_future(packet_conn.recv_batch(8))
    await asyncio.sleep(0)
    assert not batch.done()
    packet_conn.inject(b"late")
    assert await batch == [b"late"]


async def test_error_in_a_batch_ends_it_and_is_raised_next():
    packet_conn = conn.MemoryPacketConn("eth0", samples.OUR_MAC)
    packet_conn.inject(b"before")
    packet_conn.inject_error(errors.TransientError("interface eth0: receive failed"))
    packet_conn.inject(b"after")
    assert await packet_conn.recv_batch(8) == [b"before"]
    with pytest.raises(errors.TransientError, match="receive failed"):
        await packet_conn.recv_batch(8)
    assert await packet_conn.recv_batch(8) == [b"after"]
