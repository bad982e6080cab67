"""Which interface answers for a pool: a pure choice over links, and a thin netlink reader.

An Eip's ``spec.interface`` (OpenELB syntax) is an interface name, ``can_reach:<ip>`` (the link
the route to that IP leaves by, never ``lo``), or, as a porterlb extension, empty: the link
whose subnet holds the whole pool. ``select`` decides over plain ``Link`` values, so every rule
is a table test. It never picks a link that cannot answer: one that is down, a loopback, has
NOARP set, or is a bond slave or bridge port; a named port is followed to its master, the
link that actually carries the node's traffic (MetalLB #316). An explicit name or route is
trusted even if its subnets do not hold the pool (unlike OpenELB's check): the router, not the
node, must consider the VIP on-link. ``read_links``, ``route_index`` and ``resolve`` fetch the
facts with pyroute2 (:mod:`porterlb.l2.netlink`) over a netlink socket made in the node's
namespace (``porterlb.l2.namespaces``) and are the only I/O here, with ``watch_running``, which
follows links going down and up (a pulled cable, a switch reboot, ``ip link set down``):
gratuitous frames sent while a link was down reached nobody, so the announcer repeats them
when it is back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

from porterlb import errors
from porterlb.l2 import ethernet, namespaces, netlink

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

CAN_REACH: Final = "can_reach:"
"""OpenELB's prefix for "the interface of the route to this IP" (pkg/speaker/utils.go)."""

IFF_UP: Final = 0x1
IFF_LOOPBACK: Final = 0x8
IFF_RUNNING: Final = 0x40
IFF_NOARP: Final = 0x80
"""include/uapi/linux/if.h. IFF_RUNNING is the operational state as ``ip link`` shows it: up
and with carrier (``dev_get_flags`` sets it from ``netif_oper_up``, net/core/dev.c)."""

RTMGRP_LINK: Final = 0x1
"""include/uapi/linux/rtnetlink.h: the multicast group of RTM_NEWLINK/RTM_DELLINK."""


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    """What porterlb needs to know about one network interface."""

    name: str
    index: int
    mac: ethernet.MacAddress | None
    up: bool = True
    noarp: bool = False
    loopback: bool = False
    master: int | None = None
    """Index of the bond or bridge this link is enslaved to."""
    slave_kind: str | None = None
    """``bond`` or ``bridge`` for an enslaved link (IFLA_INFO_SLAVE_KIND)."""
    addresses: tuple[IPInterface, ...] = ()


Route = Callable[[IPAddress], int | None]
"""The index of the link the route to an IP leaves by, or None if there is no route."""


def select(
    spec: str,
    *,
    pool_first: IPAddress,
    pool_last: IPAddress,
    links: Sequence[Link],
    route: Route | None = None,
) -> Link:
    """The link that answers for the pool ``pool_first``-``pool_last`` under ``spec``.

    Raises InvalidSpec, naming the interface spec and the pool, when no link fits.
    """
    pool = f"{pool_first}-{pool_last}"
    by_index = {link.index: link for link in links}
    if not spec:
        for link in sorted(links, key=lambda link: link.index):
            if _problem(link) is None and _holds(link, pool_first, pool_last):
                return link
        raise errors.InvalidSpec(
            f"pool {pool}: no interface that is up, answers ARP and is not a bond or bridge "
            f"port has a subnet containing the pool; set spec.interface"
        )
    where = f'interface "{spec}" for pool {pool}'
    if spec.startswith(CAN_REACH):
        link = _reaching(spec.removeprefix(CAN_REACH), by_index, route, where)
    else:
        named = [link for link in links if link.name == spec]
        if not named:
            raise errors.InvalidSpec(f"{where}: no such interface")
        link = named[0]
    link = _master_of(link, by_index)
    problem = _problem(link)
    if problem is not None:
        raise errors.InvalidSpec(f"{where}: {link.name} {problem}")
    return link


async def read_links(*, netns: str | None = None) -> tuple[Link, ...]:
    """Every link with its addresses, via netlink; raises TransientError on failure."""
    try:
        async with _netlink(netns) as ipr:
            raw_links = [message async for message in await ipr.link("dump")]
            raw_addrs = [message async for message in await ipr.addr("dump")]
    except (OSError, netlink.NetlinkError) as exc:
        raise errors.TransientError(f"{_where(netns)}: cannot read links: {exc}") from exc
    addresses: dict[int, list[IPInterface]] = {}
    for message in raw_addrs:
        # IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on point-to-point links.
        cidr = f"{message.get('local') or message.get('address')}/{message['prefixlen']}"
        addresses.setdefault(message["index"], []).append(ipaddress.ip_interface(cidr))
    return tuple(_link(message, addresses.get(message["index"], [])) for message in raw_links)


async def route_index(ip: IPAddress, *, netns: str | None = None) -> int | None:
    """The index of the link the route to ``ip`` leaves by, or None if there is none."""
    try:
        async with _netlink(netns) as ipr:
            routes = await ipr.route("get", dst=str(ip))
    except netlink.NetlinkError:
        return None  # ENETUNREACH and friends: no route
    except OSError as exc:
        raise errors.TransientError(
            f"{_where(netns)}: cannot look up the route to {ip}: {exc}"
        ) from exc
    for message in routes:
        index = message.get("oif")
        if index is not None:
            return int(index)
    return None


async def resolve(
    spec: str, *, pool_first: IPAddress, pool_last: IPAddress, netns: str | None = None
) -> Link:
    """Read the links (and the route, for ``can_reach:``) and ``select`` one.

    Raises InvalidSpec if none fits, TransientError if netlink fails.
    """
    links = await read_links(netns=netns)
    route: Route | None = None
    if spec.startswith(CAN_REACH):
        try:
            target = ipaddress.ip_address(spec.removeprefix(CAN_REACH))
        except ValueError:
            pass  # select names the bad address
        else:
            index = await route_index(target, netns=netns)
            route = {target: index}.get
    return select(spec, pool_first=pool_first, pool_last=pool_last, links=links, route=route)


async def watch_running(*, netns: str | None = None) -> AsyncIterator[tuple[str, bool]]:
    """Yield ``(name, running)`` for every link now, then again on every change of a link.

    ``running`` is up with carrier (IFF_UP and IFF_RUNNING). A change that leaves it as it was
    (an address, an MTU) is yielded too; the caller compares. Raises TransientError when
    netlink fails (including events lost to a full socket buffer: ENOBUFS), so the caller
    starts again from a fresh dump.
    """
    try:
        async with _netlink(netns, groups=RTMGRP_LINK) as ipr:
            for message in [message async for message in await ipr.link("dump")]:
                yield _running(message)
            while True:
                async for message in ipr.get():
                    if message.get("event") == "RTM_NEWLINK":
                        yield _running(message)
    except (OSError, netlink.NetlinkError) as exc:
        raise errors.TransientError(f"{_where(netns)}: cannot follow links: {exc}") from exc


def _running(message: Any) -> tuple[str, bool]:
    flags = message["flags"]
    return message.get("ifname"), bool(flags & IFF_UP and flags & IFF_RUNNING)


@contextlib.asynccontextmanager
async def _netlink(netns: str | None, *, groups: int = 0) -> AsyncIterator[netlink.AsyncIPRoute]:
    """An rtnetlink client whose socket lives in ``netns``, a member of the multicast
    ``groups``; raises OSError if it cannot."""
    sock = await namespaces.call(
        netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    )
    fd = sock.detach()
    try:
        ipr = netlink.AsyncIPRoute(fileno=fd, groups=groups)
    except BaseException:
        os.close(fd)
        raise
    async with ipr:
        if groups:
            await ipr.bind(groups=groups)
        yield ipr


def _where(netns: str | None) -> str:
    return "netlink" if netns is None else f"netlink in netns {netns}"


def _reaching(text: str, by_index: dict[int, Link], route: Route | None, where: str) -> Link:
    try:
        target = ipaddress.ip_address(text)
    except ValueError:
        raise errors.InvalidSpec(f"{where}: {text!r} is not an IP address") from None
    index = route(target) if route is not None else None
    link = by_index.get(index) if index is not None else None
    if link is None:
        raise errors.InvalidSpec(f"{where}: no route to {target}")
    if link.loopback:
        raise errors.InvalidSpec(f"{where}: {target} is local (reached through {link.name})")
    return link


def _master_of(link: Link, by_index: dict[int, Link]) -> Link:
    seen = {link.index}
    while link.master is not None and link.master in by_index and link.master not in seen:
        link = by_index[link.master]
        seen.add(link.index)
    return link


def _problem(link: Link) -> str | None:
    if link.loopback:
        return "is a loopback interface"
    if not link.up:
        return "is down"
    if link.noarp:
        return "has NOARP set"
    if link.master is not None:
        return f"is a {link.slave_kind or 'bond or bridge'} port"
    if link.mac is None:
        return "has no Ethernet MAC address"
    return None


def _holds(link: Link, first: IPAddress, last: IPAddress) -> bool:
    return any(first in address.network and last in address.network for address in link.addresses)


def _link(message: Any, addresses: list[IPInterface]) -> Link:
    flags = message["flags"]
    address = message.get("address")
    mac = None
    if address and flags & IFF_LOOPBACK == 0:
        try:
            mac = ethernet.MacAddress.parse(address)
        except ValueError:
            mac = None  # not Ethernet (e.g. a tunnel)
    return Link(
        name=message.get("ifname"),
        index=message["index"],
        mac=mac,
        up=bool(flags & IFF_UP),
        noarp=bool(flags & IFF_NOARP),
        loopback=bool(flags & IFF_LOOPBACK),
        master=message.get("master"),
        slave_kind=message.get(("linkinfo", "slave_kind")),
        addresses=tuple(addresses),
    )
