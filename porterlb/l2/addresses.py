"""Every address of every link of a node, read over raw rtnetlink, for ``speaker.kernelarp``.

kube-proxy in IPVS mode puts every ClusterIP and LoadBalancer IP on ``kube-ipvs0``, so a
node of a large cluster holds tens of thousands of addresses. pyroute2 (``interfaces``) turns
each netlink message into a dict of dicts: 10,000 addresses cost a second of CPU per dump
(``bench/kernel_check.py``), every 10 s. Here one dump of the links (for their names) and one
of the addresses are read on a plain socket made in the node's namespace, and only the few
bytes needed are unpacked (rtnetlink(7): ``ifaddrmsg``, ``IFA_LOCAL``/``IFA_ADDRESS``;
``ifinfomsg``, ``IFLA_IFNAME``). Read-only: the requests are dumps.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Iterator
from typing import Final, Protocol

from porterlb import errors
from porterlb.l2 import namespaces

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RTM_NEWLINK: Final = 16
RTM_GETLINK: Final = 18
RTM_NEWADDR: Final = 20
RTM_GETADDR: Final = 22
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLM_F_REQUEST: Final = 0x1
NLM_F_DUMP: Final = 0x300
IFA_ADDRESS: Final = 1
IFA_LOCAL: Final = 2
IFLA_IFNAME: Final = 3
"""include/uapi/linux/{netlink,rtnetlink,if_addr,if_link}.h."""

RECEIVE_SIZE: Final = 1 << 20
"""Bytes per receive: a dump part is at most a page or two, so one receive takes several."""

_HEADER: Final = struct.Struct("=IHHII")
_IFADDRMSG: Final = struct.Struct("=BBBBI")
_IFINFOMSG: Final = struct.Struct("=BxHiII")
_RTATTR: Final = struct.Struct("=HH")
_ERROR: Final = struct.Struct("=i")


class Socket(Protocol):
    """What a dump needs of the netlink socket (a seam for the parser's tests)."""

    def send(self, data: bytes, /) -> int: ...

    def recv(self, size: int, /) -> bytes: ...


async def read(*, netns: str | None = None) -> list[tuple[IPAddress, str]]:
    """Every (address, interface name) of the node; raises TransientError on failure."""
    try:
        sock = await namespaces.call(
            netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        )
        with sock:
            # A dump of 20,000 addresses takes tens of milliseconds: not on the loop's thread.
            return await asyncio.to_thread(_read, sock)
    except OSError as exc:
        where = "netlink" if netns is None else f"netlink in netns {netns}"
        raise errors.TransientError(f"{where}: cannot read addresses: {exc}") from exc


def _read(sock: socket.socket) -> list[tuple[IPAddress, str]]:
    sock.bind((0, 0))
    names = {}
    for body in _dump(sock, RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), seq=1):
        index = _IFINFOMSG.unpack_from(body)[2]
        name = _attributes(body, _IFINFOMSG.size).get(IFLA_IFNAME, b"")
        names[index] = name.split(b"\0", 1)[0].decode(errors="replace")
    found = []
    for body in _dump(sock, RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), seq=2):
        index = _IFADDRMSG.unpack_from(body)[4]
        attributes = _attributes(body, _IFADDRMSG.size)
        # IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on point-to-point links.
        packed = attributes.get(IFA_LOCAL) or attributes.get(IFA_ADDRESS)
        if packed is not None and len(packed) in (4, 16) and index in names:
            found.append((ipaddress.ip_address(packed), names[index]))
    return found


def _dump(sock: Socket, kind: int, payload: bytes, *, seq: int) -> Iterator[bytes]:
    """Send one dump request; yield the body of every message of its answer."""
    header = _HEADER.pack(_HEADER.size + len(payload), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    sock.send(header + payload)
    while True:
        data = sock.recv(RECEIVE_SIZE)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, message, _, _, _ = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                raise OSError(f"netlink message of length {length} in a dump")
            body = data[offset + _HEADER.size : offset + length]
            if message == NLMSG_DONE:
                return
            if message == NLMSG_ERROR:
                code = -_ERROR.unpack_from(body)[0]
                raise OSError(code, f"netlink dump {kind}: error {code}")
            if message in (RTM_NEWLINK, RTM_NEWADDR):
                yield body
            offset += (length + 3) & ~3


def _attributes(body: bytes, start: int) -> dict[int, bytes]:
    found = {}
    offset = start
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size:
            break
        found[kind & 0x3FFF] = body[offset + _RTATTR.size : offset + length]  # no NLA_F_ flags
        offset += (length + 3) & ~3
    return found
