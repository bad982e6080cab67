"""The names and the address plan of one namespace lab, derived from its name and worker count.

Pure (no I/O): :func:`build` turns ``("demo", 3)`` into every namespace, interface, MAC and
address the lab will have, so tests can check the plan without root and ``lab info`` can
compare the kernel against it. The topology::

    client eth0 ── cli0 router lan0 ── rt ┐
                                          br0 (in plb-NAME-lan) ── wK ── eth0 worker K

Addresses come only from the benchmarking block 198.18.0.0/15 (RFC 2544) and the documentation
prefix 2001:db8::/32 (RFC 3849). A lab's *index* (a hash of its name, 0..255) picks two /24s
(LAN ``198.18.0.0/15 + 2i``, client ``+ 2i + 1``: 256 labs fill the /15 exactly) and two /64s
(``2001:db8:i:1::/64`` LAN, ``2001:db8:i:2::/64`` client, i in hex). Hosts: router ``.1``/``::1``,
client ``.2``/``::2`` (client subnet), worker K ``.(10+K)`` and ``::(10+K)`` (the same digits read
as hex, so 198.18.4.11 pairs with 2001:db8:2:1::11), Eip pool ``.200-.250`` and
``::200-::fff``. MACs are fixed (``02:70:6c:<index>:<role>:<n>``) so a neighbour-table dump reads
at a glance.

Interface names never contain the lab name: every interface is created directly inside its
namespace (:mod:`porterlb.lab.network`), so ``eth0`` or ``w1`` cannot clash across labs and stay
far below IFNAMSIZ. Only namespace names carry the lab name. Two labs whose indices collide
would still work (nothing routes between labs), but their addresses would read alike in logs
and captures, so :func:`clashes` lets ``network.up`` refuse the second one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
from collections.abc import Iterable
from typing import Final

from porterlb import errors
from porterlb.api import keys
from porterlb.l2 import ethernet

NETNS_PREFIX: Final = "plb-"
"""Every lab namespace is ``plb-<lab>-<role>``; :func:`lab_of` inverts it."""

MAX_NAME_LEN: Final = 16
"""Not a kernel limit (interface names never contain the lab name): it keeps namespace and
node names short in ``ip netns`` listings and log lines."""

MAX_WORKERS: Final = 100
"""Worker K gets host part 10+K: .11-.110 and ::11-::110 stay below the pool (.200, ::200)."""

INDEX_COUNT: Final = 256
"""198.18.0.0/15 holds 512 /24s and each lab takes two."""

V4_BLOCK: Final = ipaddress.IPv4Network("198.18.0.0/15")
"""RFC 2544 §C.2.2 benchmarking range: never routed on the Internet."""

V6_BLOCK: Final = ipaddress.IPv6Network("2001:db8::/32")
"""RFC 3849 documentation prefix."""

POD_V4_BLOCK: Final = ipaddress.IPv4Network("198.19.0.0/17")
SERVICE_V4_BLOCK: Final = ipaddress.IPv4Network("198.19.128.0/17")
SPARE_V4_BLOCK: Final = ipaddress.IPv4Network("198.18.128.0/17")
"""A real-node lab's pod CIDRs and ClusterIPs: two quarters of 198.18.0.0/15, the Service one
being ``porterlb.lab.controlplane.SERVICE_CLUSTER_IP_RANGE``'s. The TEST-NETs (three /24s)
are too small for 100 nodes' pods. Every quarter also holds LANs (a lab's LAN and client
/24s sit in the quarter its index picks), and a lab's own must overlap neither: the real
kube-proxy drops traffic to any address of the Service range that is not a ClusterIP, node
IPs included. So a lab whose LAN is in one of the two takes the spare quarter instead
(:func:`pod_block`, :func:`service_block`). Labs never route to each other, so they all
share the blocks."""

POD_V6_BLOCK: Final = ipaddress.IPv6Network("2001:db8:fffe::/48")
"""A dual-stack real-node lab's IPv6 pod CIDRs: outside every lab's LAN and client /64s
(``2001:db8:0-ff:1-2::/64``, :func:`build`) and outside the IPv6 Service range
(``2001:db8:ffff:ffff::/112``, ``porterlb.lab.controlplane.SERVICE_CLUSTER_IP_RANGE``), so no
lab's addresses ever fall in it and every lab can share it."""

POD_V6_PREFIX: Final = 64
"""One /64 per node, kube-controller-manager's default ``--node-cidr-mask-size-ipv6``."""

POD_PREFIX: Final = 24
"""One /24 per node (254 pods), kube-controller-manager's default ``--node-cidr-mask-size``:
a quarter holds 128 of them, enough for :data:`MAX_WORKERS`."""

ROUTER_HOST: Final = 1
CLIENT_HOST: Final = 2
WORKER_HOST_BASE: Final = 10
"""Host parts: router .1 on both subnets, client .2 on its own, worker K at .(10+K)."""

POOL_V4_HOSTS: Final = (200, 250)
POOL_V6_HOSTS: Final = (0x200, 0xFFF)
"""The Eip pool's first and last host parts on the LAN: above every worker (at most .110 and
::110), so no interface ever holds a pool address. The IPv6 pool holds 3,584 addresses, so
``bench-failover --services 1000`` gives each Service one of its own (the IPv4 pool has 51)."""

PROBER_HOSTS: Final = tuple(range(180, 196))
"""Sender addresses of the overlap sampler's ARP requests (``porterlb.lab.sampler``): between
the workers (at most .110) and the pool, held by no interface, so that no kernel in the lab
keeps a neighbour entry for them and the replies reach only the sampler. Sixteen, used in
turn, so that a reply names the request it answers and may come up to 15 periods (300 ms at
20 ms) late on a loaded machine and still count as an answer."""

PROBER_MAC: Final = (0, 4)
"""Role and number of the sampler's MAC (router 0/1 and 0/2, client 0/3): a MAC no interface
has, so the router's kernel drops the replies addressed to it and its neighbour table, the
judge, is never updated by the sampler's questions."""

MAC_PREFIX: Final = (0x02, 0x70, 0x6C)
"""U/L bit set, I/G bit clear (IEEE 802 §8.2): locally administered unicast; 70:6c is "pl"."""

BRIDGE: Final = "br0"
ROUTER_LAN_IF: Final = "lan0"
ROUTER_CLIENT_IF: Final = "cli0"
HOST_IF: Final = "eth0"
ROUTER_PORT: Final = "rt"
"""The bridge port whose veth peer is the router's ``lan0``; a worker's is ``w<K>``."""

_NAME: Final = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_NETNS: Final = re.compile(rf"{NETNS_PREFIX}(?P<lab>.+)-(?P<role>lan|router|client|w[1-9][0-9]*)")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One addressed interface of the lab: where it lives and what it answers to."""

    netns: str
    ifname: str
    mac: ethernet.MacAddress
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Node(Endpoint):
    """A worker: the Kubernetes Node ``name`` whose ``eth0`` is on the LAN."""

    name: keys.NodeName


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Veth:
    """A veth pair created straight inside two namespaces; a ``None`` MAC is left to the kernel."""

    netns: str
    ifname: str
    mac: ethernet.MacAddress | None
    peer_netns: str
    peer_ifname: str
    peer_mac: ethernet.MacAddress | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Lab:
    """Everything a lab is made of; ``network.up`` creates it and ``network.inspect`` reads it."""

    name: str
    index: int
    ipv6: bool
    lan_netns: str
    lan_v4: ipaddress.IPv4Network
    client_v4: ipaddress.IPv4Network
    lan_v6: ipaddress.IPv6Network | None
    client_v6: ipaddress.IPv6Network | None
    pool_v4: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]
    pool_v6: tuple[ipaddress.IPv6Address, ipaddress.IPv6Address] | None
    router_lan: Endpoint
    router_client: Endpoint
    client: Endpoint
    nodes: tuple[Node, ...]

    @property
    def router_netns(self) -> str:
        return self.router_lan.netns

    def bridge_port(self, node: Node) -> str:
        """The LAN bridge's port for ``node``'s cable: ``w<K>`` for worker K."""
        return f"w{self.nodes.index(node) + 1}"

    def node(self, name: str) -> Node:
        """The worker called ``name``; KeyError if the lab has none."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"lab {self.name!r} has no worker {name!r}")

    @property
    def prober_mac(self) -> ethernet.MacAddress:
        """The source MAC of the overlap sampler's requests, sent from the router's LAN leg."""
        return _mac(self.index, *PROBER_MAC)

    @property
    def prober_ips(self) -> tuple[ipaddress.IPv4Address, ...]:
        """The sender addresses of the overlap sampler's requests, used in turn."""
        return tuple(self.lan_v4[host] for host in PROBER_HOSTS)

    @property
    def prober_ips_v6(self) -> tuple[ipaddress.IPv6Address, ...]:
        """The sampler's IPv6 sender addresses (host parts as hex, like the workers'); none
        without IPv6."""
        return tuple(
            found.ip for host in PROBER_HOSTS if (found := _host_v6(self.lan_v6, host)) is not None
        )

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the lab, in creation order."""
        fixed = (self.lan_netns, self.router_netns, self.client.netns)
        return fixed + tuple(node.netns for node in self.nodes)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return (self.router_lan, self.router_client, self.client, *self.nodes)

    @property
    def veths(self) -> tuple[Veth, ...]:
        """The router's LAN leg and each worker's ``eth0`` end on a bridge port; the client's
        ``eth0`` pairs with the router's ``cli0``."""
        bridged = [(self.router_lan, ROUTER_PORT)]
        bridged += [(node, self.bridge_port(node)) for node in self.nodes]
        pairs = [_veth(end, self.lan_netns, port, None) for end, port in bridged]
        pairs.append(_veth(self.router_client, self.client.netns, HOST_IF, self.client.mac))
        return tuple(pairs)


def build(name: str, workers: int, *, ipv6: bool = True) -> Lab:
    """The plan of lab ``name`` with ``workers`` nodes; raises InvalidSpec for a bad name/count."""
    check_name(name)
    if not 1 <= workers <= MAX_WORKERS:
        raise errors.InvalidSpec(f"lab {name!r}: {workers} workers, expected 1..{MAX_WORKERS}")
    index = index_of(name)
    lan = (_subnet_v4(index, 0), _subnet_v6(index, 1) if ipv6 else None)
    client = (_subnet_v4(index, 1), _subnet_v6(index, 2) if ipv6 else None)
    router = netns_name(name, "router")
    nodes = tuple(
        Node(
            name=keys.NodeName(f"{name}-w{k}"),
            netns=netns_name(name, f"w{k}"),
            ifname=HOST_IF,
            mac=_mac(index, 1, k),
            ipv4=_host_v4(lan[0], WORKER_HOST_BASE + k),
            ipv6=_host_v6(lan[1], WORKER_HOST_BASE + k),
        )
        for k in range(1, workers + 1)
    )
    return Lab(
        name=name,
        index=index,
        ipv6=ipv6,
        lan_netns=netns_name(name, "lan"),
        lan_v4=lan[0],
        client_v4=client[0],
        lan_v6=lan[1],
        client_v6=client[1],
        pool_v4=(lan[0][POOL_V4_HOSTS[0]], lan[0][POOL_V4_HOSTS[1]]),
        pool_v6=(lan[1][POOL_V6_HOSTS[0]], lan[1][POOL_V6_HOSTS[1]]) if lan[1] else None,
        router_lan=_endpoint(router, ROUTER_LAN_IF, _mac(index, 0, 1), lan, ROUTER_HOST),
        router_client=_endpoint(router, ROUTER_CLIENT_IF, _mac(index, 0, 2), client, ROUTER_HOST),
        client=_endpoint(
            netns_name(name, "client"), HOST_IF, _mac(index, 0, 3), client, CLIENT_HOST
        ),
        nodes=nodes,
    )


def pod_block(lab: Lab) -> ipaddress.IPv4Network:
    """Where ``lab``'s pod CIDRs come from: :data:`POD_V4_BLOCK` unless its LAN is there."""
    return SPARE_V4_BLOCK if lab.lan_v4.subnet_of(POD_V4_BLOCK) else POD_V4_BLOCK


def service_block(lab: Lab) -> ipaddress.IPv4Network:
    """``lab``'s IPv4 Service range: :data:`SERVICE_V4_BLOCK` unless its LAN is there."""
    return SPARE_V4_BLOCK if lab.lan_v4.subnet_of(SERVICE_V4_BLOCK) else SERVICE_V4_BLOCK


def pod_cidrs(lab: Lab) -> dict[keys.NodeName, ipaddress.IPv4Network]:
    """Each worker's pod CIDR, in worker order: the /24s of :func:`pod_block`, the first to
    worker 1."""
    cidrs = pod_block(lab).subnets(new_prefix=POD_PREFIX)
    return {node.name: net for node, net in zip(lab.nodes, cidrs, strict=False)}


def pod_cidrs_v6(lab: Lab) -> dict[keys.NodeName, ipaddress.IPv6Network]:
    """Each worker's IPv6 pod CIDR, in worker order, from :data:`POD_V6_BLOCK` (the first
    /64 to worker 1); none in a lab without IPv6."""
    if not lab.ipv6:
        return {}
    cidrs = POD_V6_BLOCK.subnets(new_prefix=POD_V6_PREFIX)
    return {node.name: net for node, net in zip(lab.nodes, cidrs, strict=False)}


def node_pod_cidrs(
    lab: Lab,
) -> dict[keys.NodeName, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    """Each worker's pod CIDRs, IPv4 first (the cluster's primary family), then IPv6 in a
    dual-stack lab: a Node's ``spec.podCIDRs``."""
    v6 = pod_cidrs_v6(lab)
    return {name: (v4, v6[name]) if name in v6 else (v4,) for name, v4 in pod_cidrs(lab).items()}


def check_name(name: str) -> None:
    """Raise InvalidSpec unless ``name`` is a short DNS label (it becomes part of Node names)."""
    if len(name) > MAX_NAME_LEN or not _NAME.fullmatch(name):
        raise errors.InvalidSpec(
            f"lab name {name!r}: expected 1..{MAX_NAME_LEN} characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )


def index_of(name: str) -> int:
    """The lab's address index: a stable hash of its name (Python's ``hash`` is salted)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % INDEX_COUNT


def clashes(name: str, running: Iterable[str]) -> tuple[str, ...]:
    """The other labs in ``running`` whose addresses would read like those of lab ``name``."""
    index = index_of(name)
    return tuple(
        sorted(other for other in set(running) if other != name and index_of(other) == index)
    )


def netns_name(lab: str, role: str) -> str:
    """``plb-<lab>-<role>``, role being ``lan``, ``router``, ``client`` or ``w<K>``."""
    return f"{NETNS_PREFIX}{lab}-{role}"


def parse_netns(netns: str) -> tuple[str, str] | None:
    """``(lab, role)`` of a lab namespace, or None if ``netns`` is not one.

    Roles contain no '-', so splitting at the last one is unambiguous: ``plb-a-w1-lan`` belongs
    to lab ``a-w1``, never to lab ``a``.
    """
    match = _NETNS.fullmatch(netns)
    if match is None or not _NAME.fullmatch(match["lab"]):
        return None
    return match["lab"], match["role"]


def lab_of(netns: str) -> str | None:
    """The lab a namespace belongs to, or None if it is not a lab namespace."""
    parsed = parse_netns(netns)
    return parsed[0] if parsed else None


def _veth(
    end: Endpoint, peer_netns: str, peer_ifname: str, peer_mac: ethernet.MacAddress | None
) -> Veth:
    return Veth(
        netns=end.netns,
        ifname=end.ifname,
        mac=end.mac,
        peer_netns=peer_netns,
        peer_ifname=peer_ifname,
        peer_mac=peer_mac,
    )


def _endpoint(
    netns: str,
    ifname: str,
    mac: ethernet.MacAddress,
    subnets: tuple[ipaddress.IPv4Network, ipaddress.IPv6Network | None],
    host: int,
) -> Endpoint:
    return Endpoint(
        netns=netns,
        ifname=ifname,
        mac=mac,
        ipv4=_host_v4(subnets[0], host),
        ipv6=_host_v6(subnets[1], host),
    )


def _subnet_v4(index: int, offset: int) -> ipaddress.IPv4Network:
    base = int(V4_BLOCK.network_address) + (2 * index + offset) * 256
    return ipaddress.IPv4Network((base, 24))


def _subnet_v6(index: int, subnet: int) -> ipaddress.IPv6Network:
    base = int(V6_BLOCK.network_address) + (index << 80) + (subnet << 64)
    return ipaddress.IPv6Network((base, 64))


def _host_v4(subnet: ipaddress.IPv4Network, host: int) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface((subnet[host], subnet.prefixlen))


def _host_v6(subnet: ipaddress.IPv6Network | None, host: int) -> ipaddress.IPv6Interface | None:
    """The IPv4 host part's decimal digits read as hex, so that ``.11`` pairs with ``::11``."""
    if subnet is None:
        return None
    return ipaddress.IPv6Interface((subnet[int(str(host), 16)], subnet.prefixlen))


def _mac(index: int, role: int, number: int) -> ethernet.MacAddress:
    return ethernet.MacAddress(bytes((*MAC_PREFIX, index, role, number)))
