"""The answer to one received frame: a pure decision on bytes, with a verdict for every frame.

``handle`` decodes an ARP or NDP frame, decides whether porterlb must answer it and builds the
reply; it never sends, so every branch runs in plain pytest. It does not know which IPs are
announced: it asks an injected ``owns(ip, ifname)`` (MetalLB's "should announce" seam), and the
announcer owns that state. Every frame ends in a ``Verdict`` that a counter is labelled by, so
hostile or stray input is visible and never raises. Frames that bind an IP to a MAC (ARP
senders, NS sources, NA targets) are reported as a ``Claim`` for conflict detection.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Callable

from porterlb import errors
from porterlb.l2 import arp, ethernet, ndp

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Ownership(enum.Enum):
    """What the announcer says about an IP on the interface a request arrived on."""

    OURS = "ours"
    """Announced on this interface: answer."""
    ELSEWHERE = "elsewhere"
    """Announced, but on another interface: answering here would pull traffic to the wrong
    link (MetalLB #894)."""
    NONE = "none"
    """Not announced by this node."""


Owns = Callable[[IPAddress, str], Ownership]


class Verdict(enum.Enum):
    """How a frame ended; a metric is labelled by the value."""

    ANSWERED = "answered"
    NOT_A_REQUEST = "not_a_request"
    """Not an ARP request or NS: a reply, an NA, another ICMPv6 type or EtherType."""
    WRONG_DESTINATION = "wrong_destination"
    """Addressed to another host (a unicast request for someone else, flooded to us)."""
    NOT_OURS = "not_ours"
    WRONG_INTERFACE = "wrong_interface"
    MALFORMED = "malformed"
    """Did not decode; see ``porterlb.errors.MalformedFrame``."""
    INVALID = "invalid"
    """Decoded, but breaks RFC 4861 §7.1.1 validation (hop limit, multicast target, DAD)."""
    FROM_SELF = "from_self"
    """Sent from our own MAC: never answer ourselves."""


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """Someone on the link says ``ip`` is at ``mac``."""

    ip: IPAddress
    mac: ethernet.MacAddress


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict on one frame, the IP it asked about, the reply to send, and any claim."""

    verdict: Verdict
    ip: IPAddress | None = None
    reply: bytes | None = None
    claim: Claim | None = None


def handle(frame: bytes, *, ifname: str, mac: ethernet.MacAddress, owns: Owns) -> Outcome:
    """Decide what to do with ``frame``, received on ``ifname`` whose MAC is ``mac``.

    Never raises: undecodable input yields ``Verdict.MALFORMED``.
    """
    try:
        outer = ethernet.decode(frame)
        if outer.src == mac:
            return Outcome(Verdict.FROM_SELF)
        if outer.ethertype == ethernet.ETHERTYPE_ARP:
            return _arp(outer, ifname, mac, owns)
        if outer.ethertype == ethernet.ETHERTYPE_IPV6:
            return _ndp(outer, ifname, mac, owns)
    except errors.MalformedFrame:
        return Outcome(Verdict.MALFORMED)
    return Outcome(Verdict.NOT_A_REQUEST)


def _arp(outer: ethernet.Frame, ifname: str, mac: ethernet.MacAddress, owns: Owns) -> Outcome:
    packet = arp.decode(outer.payload)
    claim: Claim | None = None
    if packet.sender_ip != arp.UNSPECIFIED:
        claim = Claim(packet.sender_ip, packet.sender_mac)
    ip = packet.target_ip
    if packet.operation != arp.REQUEST:
        return Outcome(Verdict.NOT_A_REQUEST, ip, claim=claim)
    if outer.dst not in (ethernet.BROADCAST, mac):
        return Outcome(Verdict.WRONG_DESTINATION, ip, claim=claim)
    verdict = _ownership(owns(ip, ifname))
    reply = arp.reply(packet, mac) if verdict is Verdict.ANSWERED else None
    return Outcome(verdict, ip, reply, claim)


def _ndp(outer: ethernet.Frame, ifname: str, mac: ethernet.MacAddress, owns: Owns) -> Outcome:
    if ndp.icmp_type(outer.payload) not in (ndp.NEIGHBOR_SOLICITATION, ndp.NEIGHBOR_ADVERTISEMENT):
        return Outcome(Verdict.NOT_A_REQUEST)
    packet = ndp.decode(outer.payload)
    message = packet.message
    claim: Claim | None
    if isinstance(message, ndp.NeighborAdvertisement):
        claim = Claim(message.target, message.target_mac or outer.src)
        return Outcome(Verdict.NOT_A_REQUEST, message.target, claim=claim)
    ip = message.target
    dad = packet.src == ndp.UNSPECIFIED
    claim = None if dad else Claim(packet.src, message.source_mac or outer.src)
    if packet.hop_limit != ndp.HOP_LIMIT or ip.is_multicast:
        return Outcome(Verdict.INVALID, ip, claim=claim)
    group = ndp.solicited_node(ip)
    if dad and (packet.dst != group or message.source_mac is not None):
        return Outcome(Verdict.INVALID, ip)
    multicast = packet.dst == group and outer.dst == ethernet.ipv6_multicast(group)
    unicast = packet.dst == ip and outer.dst == mac
    if not (multicast or unicast):
        return Outcome(Verdict.WRONG_DESTINATION, ip, claim=claim)
    verdict = _ownership(owns(ip, ifname))
    if verdict is not Verdict.ANSWERED:
        return Outcome(verdict, ip, claim=claim)
    if dad:
        # RFC 4861 §7.2.4: a solicitation from :: is answered to all-nodes, S clear.
        reply = ndp.unsolicited(mac, ip)
    else:
        # MetalLB #2920: NUD probes may omit the SLLA option; the Ethernet source is the asker.
        reply = ndp.advertisement(
            mac, ip, dst=packet.src, dst_mac=message.source_mac or outer.src, solicited=True
        )
    return Outcome(verdict, ip, reply, claim)


def _ownership(ownership: Ownership) -> Verdict:
    match ownership:
        case Ownership.OURS:
            return Verdict.ANSWERED
        case Ownership.ELSEWHERE:
            return Verdict.WRONG_INTERFACE
        case Ownership.NONE:
            return Verdict.NOT_OURS
