"""Whether a node's own kernel answers ARP or NDP for porterlb's IPs: pure rules, no I/O.

kube-proxy in IPVS mode binds every LoadBalancer IP to the dummy link ``kube-ipvs0`` of every
node (kept down: the kernel installs the ``local`` route of an address whatever the link's
state). Linux answers an ARP request for any local address on whichever interface the request
arrives, unless ``arp_ignore`` says otherwise, so with kube-proxy's ``strictARP: false`` every
node's kernel answers for every Service IP from its own MAC, besides the porterlb speaker that
announces it: the router learns whichever answer came last. ``strictARP: true`` sets
``net.ipv4.conf.all.arp_ignore=1`` (answer only for addresses on the incoming interface) and
``arp_announce=2`` (never use such an address as the sender of the node's own requests).

The rules follow ``arp_ignore()`` and ``arp_process()`` in net/ipv4/arp.c (and ip-sysctl.rst).
The value in force on an interface is the larger of ``conf/all`` and ``conf/<interface>``
(``IN_DEV_ARP_IGNORE``):

- 0, and the reserved 4-7 and above 8: answer for every local address;
- 1: only for addresses on the incoming interface; 2: the same, if the asker is in the
  address's subnet (counted as answering: porterlb cannot know the asker);
- 3: every address but those of scope host (kube-proxy's are scope global, so answering);
- 8: never.

IPv6 has no such setting because it needs none: ``ndisc_recv_ns`` (net/ipv6/ndisc.c) looks
the target up with ``ipv6_get_ifaddr(..., dev, strict=1)``, so the kernel answers a
solicitation only for an address on the interface it arrived on (or one it proxies with
``proxy_ndp`` or holds as anycast). An IPv6 Service IP on ``kube-ipvs0`` is never answered on
the pool interface; one configured on the pool interface itself is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ON_INCOMING: Final = frozenset({1, 2})
"""``arp_ignore`` values that answer only for addresses on the incoming interface."""

NEVER: Final = 8
"""The ``arp_ignore`` value that answers no request at all."""

STRICT_ARP: Final = "set kube-proxy's strictARP: true (arp_ignore=1, arp_announce=2)"
"""The fix, as the Events and log lines say it."""

MAX_LISTED: Final = 5
"""IPs named in one message; the rest are counted (10,000 Services make one line, not 10,000)."""


@dataclass(frozen=True, slots=True)
class Pool:
    """The addresses of one porterlb pool and the interface this node announces them on."""

    first: IPAddress
    last: IPAddress
    interface: str

    def holds(self, ip: IPAddress) -> bool:
        return ip.version == self.first.version and int(self.first) <= int(ip) <= int(self.last)


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """The kernel answers for porterlb's ``ip`` on the pool ``interface``, because the
    address is configured on ``holder`` (``kube-ipvs0``, or the pool interface itself)."""

    interface: str
    holder: str
    ip: IPAddress

    @property
    def group(self) -> tuple[str, str]:
        """What one report is about: the pool interface and the interface holding the IPs."""
        return self.interface, self.holder


def answers(ip: IPAddress, *, holder: str, interface: str, arp_ignore: int) -> bool:
    """True if the kernel answers, on ``interface``, a request for ``ip`` configured on
    ``holder``, under the ``arp_ignore`` in force on ``interface`` (unused for IPv6)."""
    if ip.version == 6:
        return holder == interface
    if arp_ignore == NEVER:
        return False
    return holder == interface or arp_ignore not in ON_INCOMING


def find(
    addresses: Iterable[tuple[IPAddress, str]],
    *,
    pools: Sequence[Pool],
    arp_ignore: Mapping[str, int],
    assigned: Callable[[IPAddress], bool],
) -> frozenset[Finding]:
    """Every (pool interface, holder, IP) the kernel answers for besides porterlb.

    ``addresses`` are the node's (address, interface) pairs; an address counts when it lies in
    a pool and porterlb assigned it to a Service (``assigned``). ``arp_ignore`` maps each pool
    interface to the value in force there; an interface missing from it (gone, or without
    IPv4) is skipped for IPv4.
    """
    found = set()
    for ip, holder in addresses:
        for pool in pools:
            if not pool.holds(ip) or not assigned(ip):
                continue
            ignore = arp_ignore.get(pool.interface)
            if ip.version == 4 and ignore is None:
                continue
            if answers(ip, holder=holder, interface=pool.interface, arp_ignore=ignore or 0):
                found.add(Finding(pool.interface, holder, ip))
    return frozenset(found)


def by_group(findings: Iterable[Finding]) -> dict[tuple[str, str], list[Finding]]:
    """``findings`` by :attr:`Finding.group`, each list sorted by IP."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for finding in sorted(findings, key=lambda f: (f.group, f.ip.version, int(f.ip))):
        groups.setdefault(finding.group, []).append(finding)
    return groups


def message(node: str, findings: Sequence[Finding], arp_ignore: int | None) -> str:
    """The Warning about one group of ``findings`` on ``node``: what, why, and the fix."""
    interface, holder = findings[0].group
    listed = ", ".join(str(f.ip) for f in findings[:MAX_LISTED])
    more = len(findings) - MAX_LISTED
    ips = f"{listed} and {more} more" if more > 0 else listed
    where = "on it" if holder == interface else f"on {holder}"
    if findings[0].ip.version == 6:
        why = "IPv6 answers for an address on the incoming interface"
    else:
        why = f"arp_ignore in force on {interface} is {arp_ignore}"
    cause = " (kube-proxy in IPVS mode without strictARP)" if holder != interface else ""
    return (
        f"node {node}: the kernel answers ARP/NDP on {interface} for porterlb's {ips}, "
        f"configured {where}{cause}, besides the announcing speaker ({why}): the router may "
        f"send their traffic to this node; "
        + (STRICT_ARP if holder != interface else f"remove them from {interface}")
    )


def cleared(node: str, interface: str, holder: str) -> str:
    """The Normal Event saying one group is fixed."""
    return (
        f"node {node}: the kernel no longer answers ARP/NDP on {interface} for porterlb's IPs"
        f" configured on {holder}"
    )


def wire_message(
    service: str, ip: IPAddress, *, interface: str, node: str, other: str, mac: str
) -> str:
    """The Warning on a Service whose IP another node's MAC claims on the wire."""
    return (
        f"Service {service}: node {other} (MAC {mac}) also answers for {ip}, which node {node}"
        f" announces on {interface}: its kernel, most likely (kube-proxy in IPVS mode without"
        f" strictARP); {STRICT_ARP} on {other}"
    )
