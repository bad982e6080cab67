"""A steady request stream from the lab's client to a Service IP, and what an outage cost it.

:class:`Traffic` opens a new TCP connection to ``IP:port`` every :data:`INTERVAL` from a
process inside the client namespace, sends ``GET /`` and records when it was sent and which
node's backend answered ("" for a failure). A request does not wait for the one before it, so
a stalled connection to a dead node never hides the moment traffic flows again. The
measurement is pure: :func:`outage` turns the records into the interruption (the longest
time between two answered requests, by send time: a fault's gap from the last request
answered before it to the first answered after it) and the number of failed requests, as
``lab bench-failover`` reports them. Taking the longest gap rather than the gap around the
instant the fault was injected makes the figure independent of how long the injection took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import itertools
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Final

from porterlb.lab import linestream, netns

INTERVAL: Final = 0.01
"""Seconds between two requests: 100 per second resolves an interruption to 10 ms."""

CONNECT_TIMEOUT: Final = 0.9
"""Seconds a connection may take to open: Linux retransmits a lost SYN after 1 s (RFC 6298
§2.1), so a request sent to a dead node fails here rather than succeed late on another and
hide the outage it fell into."""

ANSWER_TIMEOUT: Final = 5.0
"""Seconds an open connection may take to answer: generous, since a slow answer comes from a
live backend on a loaded machine (the lab's Python backends share two cores with everything
else), which is no failover's doing."""


FAILURES: Final = ("refused", "unreachable", "reset", "connect-timeout", "answer-timeout", "empty")
"""Why a request failed: the connection was refused (a RST to the SYN, or an ICMP port
unreachable: nothing listens, or a firewall rejects), the network was unreachable (an ICMP
error), reset once open, not opened within :data:`CONNECT_TIMEOUT` by the kernel's account
(:func:`connected_in_time`), not answered within
:data:`ANSWER_TIMEOUT`, or closed without a body. A fast failure (refused) and a slow one
(a timeout) point at different parts of the path."""

REJECTED: Final = frozenset({"refused", "reset", "empty"})
"""Failures after which a host answered the request's packets (a RST, an ICMP port
unreachable, a close): whatever switches traffic at layer 2 delivered them, and the node's
own rules or backend turned them away. The others (a timeout, an unreachable network) are
what a missing ARP or NDP answer looks like, among other causes."""


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    sent: float
    """``time.monotonic()`` when the connection was opened."""
    node: str
    """The node whose backend answered; "" when the request failed."""
    failure: str = ""
    """Why it failed (one of :data:`FAILURES`); "" when it was answered."""
    port: int = 0
    """The connection's local port, which names it among the frames the router forwards
    (:mod:`porterlb.lab.forwarding`); 0 when it is not known."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outage:
    interruption: float
    """Seconds from the last answered request sent before the fault to the first after it."""
    failed: int
    """Requests that got no answer, of those sent after the first answered one: before it the
    stream measures the IP's first announcement (the speaker probes for a conflict first),
    not a fault."""


def outage(requests: Sequence[Request], fault: float) -> Outage:
    """What the fault at ``fault`` cost ``requests``. Raises ValueError when no request was
    answered before the fault, or none after it (traffic never resumed)."""
    answered = sorted(r.sent for r in requests if r.node)
    if not any(sent <= fault for sent in answered) or not any(sent > fault for sent in answered):
        side = "before" if not any(sent <= fault for sent in answered) else "after"
        raise ValueError(f"no request sent {side} the fault was answered")
    longest = max(later - earlier for earlier, later in itertools.pairwise(answered))
    return Outage(longest, sum(1 for r in requests if not r.node and r.sent > answered[0]))


class Traffic(linestream.LineStream):
    """Requests every :data:`INTERVAL` while the with-block runs; :attr:`requests` holds them.

    The stream runs as a process of its own in the client namespace (``python -m
    porterlb.lab.traffic``), not as a thread of the caller: sharing the caller's interpreter
    lock with an API client and a test loop delayed requests by hundreds of milliseconds on a
    busy machine. It prints a line per finished request (CLOCK_MONOTONIC is one clock for
    every process), read here by a thread.
    """

    def __init__(self, client_netns: str, ip: str, port: int, *, interval: float = INTERVAL):
        argv = [
            *netns.nsenter_prefix(client_netns),
            *(sys.executable, "-u", "-m", __name__, ip, str(port), "--interval", str(interval)),
        ]
        super().__init__(argv, name=f"traffic/{ip}")
        self.requests: list[Request] = []

    def answered_by(self, since: float) -> list[str]:
        """The nodes that answered requests sent after ``since``, in order of sending."""
        return [r.node for r in sorted(self.requests, key=lambda r: r.sent) if r.sent > since]

    def _line(self, line: str) -> None:
        self.requests.append(parse(line))


async def _stream(ip: str, port: int, interval: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pending: set[asyncio.Task[None]] = set()
    next_at = time.monotonic()
    while not stop.is_set():
        task = asyncio.create_task(_request(ip, port, time.monotonic()))
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*pending)


_FAILED: Final = "!"
"""Prefixes a failure's reason in the stream's output, where a node's name goes otherwise."""


async def _request(ip: str, port: int, sent: float) -> None:
    print(line(Request(sent, *await answer(ip, port))), flush=True)


def line(request: Request) -> str:
    """``request`` as the stream prints it: the send time, the node or the failure, the
    local port."""
    return f"{request.sent:.6f} {request.node or _FAILED + request.failure} {request.port}"


def parse(text: str) -> Request:
    """A line the stream printed (:func:`line`), back into its request."""
    sent, said, port = text.split()
    if said.startswith(_FAILED):
        return Request(float(sent), "", said.removeprefix(_FAILED), int(port))
    return Request(float(sent), said, port=int(port))


async def answer(
    ip: str, port: int, *, connect_timeout: float = CONNECT_TIMEOUT
) -> tuple[str, str, int]:
    """One ``GET /`` to ``ip:port``: the node the backend named and "", or "" and why the
    request failed (one of :data:`FAILURES`); then the connection's local port (0 if none
    was bound)."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(connect_timeout):
            await asyncio.get_running_loop().sock_connect(sock, (ip, port))
    except TimeoutError:
        if not connected_in_time(sock, connect_timeout):
            return _failed(sock, "connect-timeout")
    except ConnectionRefusedError:
        return _failed(sock, "refused")
    except OSError:
        return _failed(sock, "unreachable")
    local = _local_port(sock)
    node, failure = await _exchange(sock, ip)
    return node, failure, local


def _failed(sock: socket.socket, why: str) -> tuple[str, str, int]:
    """Close ``sock``, whose connection did not open: "", ``why`` and its local port."""
    local = _local_port(sock)
    sock.close()
    return "", why, local


def _local_port(sock: socket.socket) -> int:
    """``sock``'s local port; 0 once the kernel has released it (a refused connection)."""
    try:
        return int(sock.getsockname()[1])
    except OSError:
        return 0


async def _exchange(sock: socket.socket, ip: str) -> tuple[str, str]:
    """``GET /`` over the open connection ``sock``: the node that answered, or why not."""
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            try:
                writer.write(f"GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
                reply = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return "", "answer-timeout"
    except OSError:
        return "", "reset"
    node = reply.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()
    return (node, "") if node else ("", "empty")


def connected_in_time(sock: socket.socket, within: float) -> bool:
    """Whether the kernel opened ``sock``'s connection, its first SYN answered in less than
    ``within`` seconds, although the stream's timer fired first.

    On a loaded host the stream's process can be held off the CPU past its timeout while the
    kernel completed the handshake in milliseconds: the timer and the socket's readiness are
    then seen in the same turn of the loop, and the timer wins. The kernel's own figures
    decide instead (``struct tcp_info``, linux/tcp.h): the connection is established, no SYN
    was retransmitted (a lost SYN answered late, maybe by another node, is the failure the
    timeout exists to catch), and the handshake's round trip, the first RTT sample, is under
    ``within``.
    """
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    state, rtt_us, retransmitted = (
        info[0],
        *struct.unpack_from("=I", info, _TCPI_RTT),
        *struct.unpack_from("=I", info, _TCPI_TOTAL_RETRANS),
    )
    return state == _TCP_ESTABLISHED and retransmitted == 0 and rtt_us < within * 1e6


_TCP_INFO_SIZE: Final = 104
"""Bytes of ``struct tcp_info`` up to and including ``tcpi_total_retrans``: the kernel only
ever appends fields, so these offsets hold on every kernel the lab runs on."""
_TCPI_RTT: Final = 68
"""Offset of ``tcpi_rtt`` (microseconds): 8 bytes of u8 fields, then 15 u32 before it."""
_TCPI_TOTAL_RETRANS: Final = 100
"""Offset of ``tcpi_total_retrans``: after ``tcpi_rcv_rtt`` and ``tcpi_rcv_space``."""
_TCP_ESTABLISHED: Final = 1
"""``TCP_ESTABLISHED`` of linux/tcp_states.h, as ``tcpi_state`` reports it."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="send GET / to IP:PORT every INTERVAL")
    parser.add_argument("ip")
    parser.add_argument("port", type=int)
    parser.add_argument("--interval", type=float, default=INTERVAL)
    args = parser.parse_args(argv)
    asyncio.run(_stream(args.ip, args.port, args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
