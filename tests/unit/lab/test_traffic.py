"""The request stream's record of each request: who answered, or why it failed.

A failure's reason tells a rejection (fast: nothing listens, or a firewall rejects) from a
timeout (slow: nothing answers), which point at different parts of the path. The failures
are produced by real sockets on loopback: a closed port, a server that resets or closes.
"""

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.lab import traffic

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@given(
    sent=st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda f: round(f, 6)),
    said=st.one_of(
        st.tuples(st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True), st.just("")),
        st.tuples(st.just(""), st.sampled_from(traffic.FAILURES)),
    ),
    port=st.integers(min_value=0, max_value=65535),
)
def test_a_printed_request_reads_back_as_itself(sent, said, port):
    node, failure = said
    request = traffic.Request(sent, node, failure, port)
    assert traffic.parse(traffic.line(request) + "\n") == request


async def _serve(handle: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _names(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.0 200 OK\r\n\r\nw1\n")
    await writer.drain()
    writer.close()


async def _closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.close()


async def _resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    # SO_LINGER with a zero timeout: close() sends a RST instead of a FIN.
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    writer.transport.abort()


@pytest.mark.parametrize(
    ("handle", "expected"),
    [(_names, ("w1", "")), (_closes, ("", "empty")), (_resets, ("", "reset"))],
    ids=["answered", "closed-without-a-body", "reset"],
)
async def test_an_open_connection_gives_the_node_or_why_not(handle, expected):
    async for port in _serve(handle):
        node, failure, local = await traffic.answer("127.0.0.1", port)
        assert (node, failure) == expected
        assert local not in (0, port)  # the client's own end: it names the connection


async def test_a_closed_port_is_refused():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    # Nothing listens there now: the kernel answers the SYN with a RST.
    node, failure, _ = await traffic.answer("127.0.0.1", port)
    assert (node, failure) == ("", "refused")


def test_the_rejections_are_failures_a_host_answered():
    assert frozenset(traffic.FAILURES) >= traffic.REJECTED
    assert {"connect-timeout", "unreachable"}.isdisjoint(traffic.REJECTED)


async def test_the_kernel_decides_whether_a_late_seen_connection_was_opened_in_time():
    # The stream's timer can fire after the kernel opened the connection (its process held
    # off the CPU): then only an established handshake, answered within the time, counts.
    async for port in _serve(_names):
        with socket.create_connection(("127.0.0.1", port)) as opened:
            assert traffic.connected_in_time(opened, 0.9)
            assert not traffic.connected_in_time(opened, 0.0)  # its round trip took longer
        with socket.socket() as unopened:
            assert not traffic.connected_in_time(unopened, 0.9)
