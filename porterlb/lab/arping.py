"""Who answers for an IP: one broadcast ARP request or multicast neighbour solicitation from
the router's LAN leg, and every MAC that answers it, as the e2e tests and the soak count them.

"Exactly one node answers per IP" is checked this way rather than from the router's
neighbour table, which keeps one MAC whatever the number of answers. Several targets share
one socket and one listening window, so the soak can ask for every Service IP every 100 ms.
Only answers addressed to the router count: a gratuitous reply goes to broadcast.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import Final

from porterlb import errors
from porterlb.l2 import arp, ethernet, ndp
from porterlb.lab import netns, plan

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ETH_P_ARP: Final = 0x0806
ETH_P_IPV6: Final = 0x86DD
ETH_P_ALL: Final = 0x0003
"""include/uapi/linux/if_ether.h."""

PACKET_OUTGOING: Final = 4
"""include/uapi/linux/if_packet.h: the frame was sent by this host (our own request)."""


def who_answers(
    layout: plan.Lab, targets: Iterable[IPAddress], *, window: float
) -> dict[IPAddress, set[str]]:
    """Ask once for each of ``targets`` from the router; every target -> the MACs that
    answered the router within ``window`` seconds. Blocking: run it in a thread."""
    router = layout.router_lan
    wanted = list(targets)
    requests = [_request(router, target) for target in wanted]

    def exchange() -> dict[IPAddress, set[str]]:
        found: dict[IPAddress, set[str]] = {target: set() for target in wanted}
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
            sock.bind((plan.ROUTER_LAN_IF, ETH_P_ALL))  # bound before the requests go out
            for request in requests:
                sock.send(request)
            deadline = time.monotonic() + window
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, address = sock.recvfrom(65536)
                except TimeoutError:
                    break
                if address[2] == PACKET_OUTGOING:
                    continue
                answer = _answer(data, router.mac)
                if answer is not None and answer[0] in found:
                    found[answer[0]].add(answer[1])
        return found

    return netns.call_in(layout.router_netns, exchange)


def _request(router: plan.Endpoint, target: IPAddress) -> bytes:
    if isinstance(target, ipaddress.IPv4Address):
        ask = arp.Packet(arp.REQUEST, router.mac, router.ipv4.ip, ethernet.ZERO, target)
        return arp.frame(ethernet.BROADCAST, ask)
    if router.ipv6 is None:
        raise errors.InvalidSpec(f"cannot ask for {target}: the lab has no IPv6")
    group = ndp.solicited_node(target)
    packet = ndp.Packet(router.ipv6.ip, group, ndp.NeighborSolicitation(target, router.mac))
    return ndp.frame(ethernet.ipv6_multicast(group), router.mac, packet)


def _answer(data: bytes, router: ethernet.MacAddress) -> tuple[IPAddress, str] | None:
    """(target, the MAC the frame says it is at) if it is a reply addressed to the router."""
    try:
        frame = ethernet.decode(data)
        if frame.dst != router:
            return None
        if frame.ethertype == ETH_P_ARP:
            packet = arp.decode(frame.payload)
            if packet.operation == arp.REPLY:
                return packet.sender_ip, str(packet.sender_mac)
        elif (
            frame.ethertype == ETH_P_IPV6
            and ndp.icmp_type(frame.payload) == ndp.NEIGHBOR_ADVERTISEMENT
        ):
            message = ndp.decode(frame.payload).message
            if isinstance(message, ndp.NeighborAdvertisement):
                return message.target, str(message.target_mac or frame.src)
    except errors.MalformedFrame:
        pass
    return None
