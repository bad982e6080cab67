"""Addresses and frame builders shared by the layer-2 unit tests (documentation ranges only)."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from porterlb.l2 import arp, ethernet, ndp

OUR_MAC = ethernet.MacAddress.parse("02:00:00:00:00:01")
ROUTER_MAC = ethernet.MacAddress.parse("02:00:00:00:00:fe")
PEER_MAC = ethernet.MacAddress.parse("02:00:00:00:00:02")
STRANGER_MAC = ethernet.MacAddress.parse("02:00:00:00:00:66")

VIP4 = ipaddress.IPv4Address("198.18.0.100")
OTHER4 = ipaddress.IPv4Address("198.18.0.101")
ROUTER4 = ipaddress.IPv4Address("198.18.0.1")
VIP6 = ipaddress.IPv6Address("2001:db8::100")
OTHER6 = ipaddress.IPv6Address("2001:db8::101")
ROUTER6 = ipaddress.IPv6Address("2001:db8::1")
ROUTER_LL = ipaddress.IPv6Address("fe80::fe")


def arp_request(
    target: ipaddress.IPv4Address = VIP4,
    *,
    sender_mac: ethernet.MacAddress = ROUTER_MAC,
    sender_ip: ipaddress.IPv4Address = ROUTER4,
    dst: ethernet.MacAddress = ethernet.BROADCAST,
    src: ethernet.MacAddress | None = None,
    operation: int = arp.REQUEST,
) -> bytes:
    packet = arp.Packet(operation, sender_mac, sender_ip, ethernet.ZERO, target)
    frame = ethernet.Frame(dst, src or sender_mac, ethernet.ETHERTYPE_ARP, arp.encode(packet))
    return ethernet.encode(frame)


def ns(
    target: ipaddress.IPv6Address = VIP6,
    *,
    src: ipaddress.IPv6Address = ROUTER6,
    dst: ipaddress.IPv6Address | None = None,
    source_mac: ethernet.MacAddress | None = ROUTER_MAC,
    eth_src: ethernet.MacAddress = ROUTER_MAC,
    eth_dst: ethernet.MacAddress | None = None,
    hop_limit: int = 255,
) -> bytes:
    """An NS; by default multicast to the target's solicited-node group, with an SLLA."""
    dst = dst if dst is not None else ndp.solicited_node(target)
    if eth_dst is None:
        eth_dst = ethernet.ipv6_multicast(dst) if dst.is_multicast else OUR_MAC
    packet = ndp.Packet(src, dst, ndp.NeighborSolicitation(target, source_mac), hop_limit)
    return ndp.frame(eth_dst, eth_src, packet)


def na(
    target: ipaddress.IPv6Address = VIP6,
    *,
    mac: ethernet.MacAddress | None = STRANGER_MAC,
    eth_src: ethernet.MacAddress = STRANGER_MAC,
) -> bytes:
    message = ndp.NeighborAdvertisement(target, mac, override=True)
    packet = ndp.Packet(target, ndp.ALL_NODES, message)
    return ndp.frame(ethernet.ipv6_multicast(ndp.ALL_NODES), eth_src, packet)


macs = st.binary(min_size=6, max_size=6).map(ethernet.MacAddress)
ipv4s = st.ip_addresses(v=4)
ipv6s = st.ip_addresses(v=6)
