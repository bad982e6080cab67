"""The heartbeat socket: one UDP socket, opened inside the node's network namespace.

Dual-stack (an IPv6 socket with ``IPV6_V6ONLY`` off) so one socket serves Nodes whose
InternalIP is IPv4 or IPv6; where IPv6 is disabled it falls back to IPv4 alone. The socket is
made by :func:`porterlb.l2.namespaces.call`, so in the lab it lives in the worker's (or the
router's) namespace while the process stays next to the API server.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Final

from porterlb import errors
from porterlb.l2 import namespaces
from porterlb.liveness import metrics, wire

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 7473
"""The speakers' heartbeat port: next to MetalLB's 7472 (metrics) and 7946 (memberlist), and
free of both."""


async def bind(*, port: int, netns: str | None, host: str | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` (None: every address) and ``port`` in
    ``netns``. Raises OSError naming the address and namespace when it cannot be bound."""
    try:
        return await namespaces.call(netns, lambda: _bind(host, port))
    except OSError as error:
        where = f"netns {netns}" if netns else "the host namespace"
        raise OSError(
            error.errno, f"heartbeat UDP {host or '*'} port {port} in {where}: {error}"
        ) from error


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


def destination(sock: socket.socket, ip: str, port: int) -> tuple[Any, ...]:
    """The sendto address of ``ip`` for this socket's family (IPv4 mapped into IPv6)."""
    if sock.family == socket.AF_INET6 and ":" not in ip:
        return (f"::ffff:{ip}", port, 0, 0)
    return (ip, port)
