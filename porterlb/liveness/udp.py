"""The heartbeat socket: one UDP endpoint, opened inside the node's network namespace.

Dual-stack (an IPv6 socket with ``IPV6_V6ONLY`` off) so one socket serves Nodes whose
InternalIP is IPv4 or IPv6; where IPv6 is disabled it falls back to IPv4 alone. The socket is
made by :func:`porterlb.l2.namespaces.call`, so in the lab it lives in the worker's (or the
router's) namespace while the process stays next to the API server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Final

from porterlb import errors
from porterlb.l2 import namespaces
from porterlb.liveness import metrics, wire

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 7473
"""The speakers' heartbeat port: next to MetalLB's 7472 (metrics) and 7946 (memberlist), and
free of both."""

Receive = Callable[[bytes, Any], None]
"""Called with each datagram and the sender's address tuple."""


async def open_endpoint(
    *, port: int, netns: str | None, on_datagram: Receive, host: str | None = None
) -> asyncio.DatagramTransport:
    """A datagram transport bound to ``host`` (None: every address) and ``port`` (0: any) in
    ``netns``, feeding ``on_datagram``.

    Raises OSError naming the address and namespace when the socket cannot be bound.
    """
    try:
        sock = await namespaces.call(netns, lambda: _bind(host, port))
    except OSError as error:
        where = f"netns {netns}" if netns else "the host namespace"
        raise OSError(
            error.errno, f"heartbeat UDP {host or '*'} port {port} in {where}: {error}"
        ) from error
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Protocol(on_datagram), sock=sock
    )
    return transport


def decode(data: bytes, key: bytes, *, role: str, sender: Any) -> wire.Heartbeat | None:
    """The heartbeat in ``data``, or None (counted, and logged at debug) when it is malformed
    or not signed with ``key``: anyone on the LAN can send to the port."""
    try:
        return wire.decode(data, key)
    except (errors.MalformedFrame, wire.BadSignature) as bad:
        verdict = "malformed" if isinstance(bad, errors.MalformedFrame) else "bad_signature"
        log.debug("%s: heartbeat from %s dropped: %s", role, sender[0], bad)
        metrics.RECEIVED.labels(role, verdict).inc()
        return None


def _bind(host: str | None, port: int) -> socket.socket:
    if host is not None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        address: tuple[Any, ...] = (host, port)
    else:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError:  # IPv6 disabled in this kernel or namespace
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            address = ("0.0.0.0", port)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address = ("::", port)
    try:
        sock.setblocking(False)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def destination(transport: asyncio.DatagramTransport, ip: str, port: int) -> tuple[Any, ...]:
    """The sendto address of ``ip`` for this transport's family (IPv4 mapped into IPv6)."""
    if transport.get_extra_info("socket").family == socket.AF_INET6 and ":" not in ip:
        return (f"::ffff:{ip}", port, 0, 0)
    return (ip, port)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Receive) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a node whose speaker is down: the missing pong says it.
        pass
