"""The heartbeat socket and what both ends do with a datagram before trusting it.

Dual-stack (an IPv6 socket with ``IPV6_V6ONLY`` off) so one socket serves Nodes whose
InternalIP is IPv4 or IPv6; where IPv6 is disabled it falls back to IPv4 alone. The socket is
made by :func:`porterlb.l2.namespaces.call`, so in the lab it lives in the worker's (or the
router's) namespace while the process stays next to the API server.

Anyone on the LAN can send to the port, at line rate. :func:`verify` therefore looks at what
costs nothing first (length, magic, kind, the node named, the sender's address: the caller's
``screen``) and computes an HMAC only for a datagram that would be used if genuine. A
datagram refused, and a datagram the kernel would not send, is counted and logged at most
once per :data:`LOG_INTERVAL` per cause (:class:`BoundedLog`): never one line per datagram.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from porterlb import errors
from porterlb.l2 import namespaces
from porterlb.liveness import metrics, wire

DEFAULT_PORT: Final = 7473
"""The speakers' heartbeat port: next to MetalLB's 7472 (metrics) and 7946 (memberlist), and
free of both."""

RECEIVE_BUFFER: Final = 4 << 20
"""Bytes of datagrams the kernel may queue for the socket (it doubles the figure, for its
bookkeeping): a small datagram takes 832 bytes of it (its skb's truesize, measured), so some
10,000 of them: 100 ms of a 100,000/s flood while the reader is held up (a garbage
collection, the interpreter lock) before a genuine ping is dropped, and a queue the speaker
reads through in ~40 ms (``bench/heartbeat_flood.py``), within the half interval in which a
pong is due. Set with ``SO_RCVBUFFORCE`` where the process may (``CAP_NET_ADMIN``, as the
speaker has); elsewhere ``SO_RCVBUF`` is capped by ``net.core.rmem_max``, which porterlb
leaves alone."""

SO_RCVBUFFORCE: Final = 33
"""``include/uapi/asm-generic/socket.h``; Python's socket module does not name it."""

LOG_INTERVAL: Final = 10.0
"""Seconds between two log lines of one cause: a flood shows as one line (with its count)
per cause every 10 s, not one line per datagram."""

Screen = Callable[[wire.Kind, str, Any], str | None]
"""What a receiver refuses before any HMAC: given the kind and node name a datagram claims
and its sender, the verdict to count it under, or None to check its signature."""


@dataclasses.dataclass(frozen=True, slots=True)
class Signed:
    """A datagram whose tag matched one of the accepted keys."""

    heartbeat: wire.Heartbeat
    key: bytes
    """The key it was signed with: a speaker answers a ping with the same key, so the pinger
    accepts the pong whatever either of them knows yet of a key rotation."""


class BoundedLog:
    """Logs at most one line per interval per cause, saying how many were held back."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        *,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, cause: str, message: str, *args: object) -> None:
        """Log `message` % `args` unless a line of `cause` was logged within the interval."""
        if not self.logger.isEnabledFor(self.level):
            return
        now = self.clock()
        if now - self._last.get(cause, float("-inf")) < self.interval:
            self._held[cause] = self._held.get(cause, 0) + 1
            return
        self._last[cause] = now
        held = self._held.pop(cause, 0)
        if held:
            message += f" (and {held} more like it in the last {self.interval:.0f} s)"
        self.logger.log(self.level, message, *args)


async def bind(*, port: int, netns: str | None, host: str | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` (None: every address) and ``port`` in
    ``netns``, with a receive buffer of :data:`RECEIVE_BUFFER` where allowed. Raises OSError
    naming the address and namespace when it cannot be bound."""
    try:
        return await namespaces.call(netns, lambda: _bind(host, port))
    except OSError as error:
        where = f"netns {netns}" if netns else "the host namespace"
        raise OSError(
            error.errno, f"heartbeat UDP {host or '*'} port {port} in {where}: {error}"
        ) from error


def source(sender: Any) -> str:
    """The sender's IP address as :func:`porterlb.api.node.ip_addresses` writes it: an
    IPv4 sender on a dual-stack socket (``::ffff:a.b.c.d``) is IPv4, a scope is dropped."""
    host = str(sender[0])
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host.partition("%")[0]


def verify(data: bytes, keys: Sequence[bytes], *, sender: Any, screen: Screen) -> Signed | str:
    """The heartbeat in `data` with the key it is signed with, or the verdict it is refused
    under: ``malformed``, what `screen` says, or ``bad_signature`` (none of `keys` signed it)."""
    try:
        kind, node = wire.peek(data)
    except errors.MalformedFrame:
        return "malformed"
    refused = screen(kind, node, sender)
    if refused is not None:
        return refused
    for key in keys:
        try:
            return Signed(wire.decode(data, key), key)
        except wire.BadSignature:
            continue
        except errors.MalformedFrame:
            return "malformed"
    return "bad_signature"


def send(
    sock: socket.socket, data: bytes, address: Any, *, role: str, what: str, logged: BoundedLog
) -> bool:
    """Send `data`; False when the kernel refused (a firewall's EPERM, a full queue's ENOBUFS
    or EAGAIN, no route): counted by errno name and logged through `logged`, never raised,
    since the next heartbeat may well pass and a missing one is what liveness measures."""
    try:
        sock.sendto(data, address)
    except OSError as error:
        name = errno.errorcode.get(error.errno or 0, str(error.errno))
        metrics.SEND_FAILURES.labels(role, name).inc()
        logged(name, "%s: sending %s to %s failed: %s", role, what, address[0], error)
        return False
    return True


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
        _enlarge(sock)
        sock.setblocking(False)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _enlarge(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except PermissionError:  # no CAP_NET_ADMIN: as much as net.core.rmem_max allows
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


def destination(sock: socket.socket, ip: str, port: int) -> tuple[Any, ...]:
    """The sendto address of ``ip`` for this socket's family (IPv4 mapped into IPv6)."""
    if sock.family == socket.AF_INET6 and ":" not in ip:
        return (f"::ffff:{ip}", port, 0, 0)
    return (ip, port)
