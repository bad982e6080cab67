"""The kube-proxy stand-in: DNAT of LoadBalancer IP:port to a backend, in one worker namespace.

porterlb only makes the router send a Service's traffic to one node's MAC; accepting it is
kube-proxy's job (the second hop). The node never owns the LoadBalancer IP (no address on any
interface, so its kernel never answers ARP/NDP for it), and this stand-in does what kube-proxy's
nftables mode does for a LoadBalancer ingress IP: a ``nat`` rule rewrites the destination on
the way in (``prerouting``) and for the node's own traffic (``output``), and conntrack rewrites
the replies back, so the client sees the LoadBalancer IP answer.

Every worker gets the rules for every LoadBalancer IP, like kube-proxy, so whichever node the
IP fails over to accepts its traffic at once.

The backend is the node's own LAN address, not loopback: DNAT from ``prerouting`` to
127.0.0.1 needs ``route_localnet=1`` (the kernel drops it as martian otherwise) and IPv6 has no
equivalent at all.

:func:`sync` replaces the whole ``inet porterlb_kubeproxy`` table in one ``nft -f`` transaction
(declare, delete, recreate: the usual idiom before nft 1.0.8's ``destroy``), so the ruleset is
never seen half-written, and an empty list leaves an empty table.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from typing import Final, Literal

from porterlb import errors
from porterlb.lab import netns

TABLE: Final = "porterlb_kubeproxy"
"""One table per worker namespace; ``inet`` holds both families."""

Protocol = Literal["TCP", "UDP", "SCTP"]
"""The Service port protocols Kubernetes allows (``core/v1`` ``Protocol``)."""

_NFT_L4: Final[dict[str, str]] = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}

DNAT_PRIORITY: Final = -100
"""``NF_IP_PRI_NAT_DST`` (``include/uapi/linux/netfilter_ipv4.h``), what nft calls ``dstnat``;
written as a number because nft 1.0.6 accepts the name only on the prerouting hook."""

_HOOKS: Final = ("prerouting", "output")
"""Traffic from the LAN, and the node's own traffic to a LoadBalancer IP; each hook's chain has
its name."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """Traffic for ``lb_ip:port/protocol`` goes to ``backend_ip:backend_port``."""

    lb_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    protocol: Protocol
    backend_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    backend_port: int

    def __post_init__(self) -> None:
        if self.lb_ip.version != self.backend_ip.version:
            raise errors.InvalidSpec(
                f"forward {self.lb_ip}:{self.port}/{self.protocol}: backend {self.backend_ip} "
                f"is IPv{self.backend_ip.version}, the LoadBalancer IP IPv{self.lb_ip.version}"
            )
        for name, port in (("port", self.port), ("backend_port", self.backend_port)):
            if not 1 <= port <= 65535:
                raise errors.InvalidSpec(
                    f"forward {self.lb_ip}:{self.port}/{self.protocol}: {name} {port} "
                    "is outside 1..65535"
                )


def render(forwards: Sequence[Forward]) -> str:
    """The ``nft -f`` script that makes the table hold exactly ``forwards``.

    Raises InvalidSpec if two forwards claim the same IP, port and protocol: only the first
    would ever match.
    """
    seen: dict[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, str], Forward] = {}
    for forward in forwards:
        key = (forward.lb_ip, forward.port, forward.protocol)
        if key in seen:
            raise errors.InvalidSpec(
                f"forward {forward.lb_ip}:{forward.port}/{forward.protocol}: claimed twice "
                f"(backends {seen[key].backend_ip} and {forward.backend_ip})"
            )
        seen[key] = forward
    rules = [f"\t\t{_rule(forward)}" for forward in forwards]
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    for hook in _HOOKS:
        lines.append(f"\tchain {hook} {{")
        lines.append(f"\t\ttype nat hook {hook} priority {DNAT_PRIORITY}; policy accept;")
        lines.extend(rules)
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def sync(namespace: str, forwards: Sequence[Forward]) -> None:
    """Make the worker in ``namespace`` forward exactly ``forwards``, atomically.

    Raises InvalidSpec for conflicting forwards, LabError if ``nft`` fails.
    """
    netns.run(namespace, ["nft", "-f", "-"], input=render(forwards))


def _rule(forward: Forward) -> str:
    family = "ip" if forward.lb_ip.version == 4 else "ip6"
    backend = str(forward.backend_ip) if family == "ip" else f"[{forward.backend_ip}]"
    return (
        f"{family} daddr {forward.lb_ip} {_NFT_L4[forward.protocol]} dport {forward.port} "
        f"dnat {family} to {backend}:{forward.backend_port}"
    )
