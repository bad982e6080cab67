"""The answer to one received frame: a pure decision on bytes, with a verdict for every frame.

``handle`` decodes an ARP or NDP frame, decides whether porterlb must answer it and builds the
reply; it never sends, so every branch runs in plain pytest. It does not know which IPs are
announced: it asks an injected ``owns(ip, ifname)`` (MetalLB's "should announce" seam), and the
announcer owns that state. Every frame ends in a ``Verdict`` that a counter is labelled by, so
hostile or stray input is visible and never raises. Frames that bind an IP to a MAC (ARP
senders, NS sources, NA targets) are reported as a ``Claim`` for conflict detection.

A request from a sender that no host can be is refused as Linux refuses it, each with its own
verdict: an ARP sender IP that ``ip_route_input`` calls a martian source (multicast,
broadcast, loopback, 0/8 other than a probe's 0.0.0.0; net/ipv4/route.c
``ip_route_input_slow``, reached from ``arp_process``), an NS source that ``ip6_rcv_core``
drops (multicast, loopback, IPv4-mapped; net/ipv6/ip6_input.c), and a sender MAC that is not
a unicast address (FreeBSD's ``in_arpinput`` logs "link address is broadcast" and drops it):
our reply is unicast to that MAC, so answering would turn one forged request into a frame
flooded to every port. A request refused so claims nothing either.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Callable
from typing import Final

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
    BAD_SENDER_MAC = "bad_sender_mac"
    """The asker's MAC, where the answer would go, is broadcast, multicast or all zeros."""
    BAD_SENDER_IP = "bad_sender_ip"
    """The asker's IP is one no host has: multicast, broadcast, loopback, 0/8 other than an
    ARP probe's 0.0.0.0, or IPv4-mapped (NS)."""


SUSPECT: Final = frozenset(
    (Verdict.MALFORMED, Verdict.INVALID, Verdict.BAD_SENDER_MAC, Verdict.BAD_SENDER_IP)
)
"""Verdicts on frames no host sends in good faith: worth a (rate-limited) log line, not only
a count."""

_ZERO_NET: Final = ipaddress.IPv4Network("0.0.0.0/8")
"""RFC 1122 §3.2.1.3 (a): "this network"; only 0.0.0.0 itself is a legitimate (probe) sender."""
_LIMITED_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")
"""RFC 919 §7."""


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
    if not unicast(packet.sender_mac):
        return Outcome(Verdict.BAD_SENDER_MAC, ip)
    if packet.sender_ip != arp.UNSPECIFIED and _martian4(packet.sender_ip):
        return Outcome(Verdict.BAD_SENDER_IP, ip)
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
    to_group = packet.dst == group and outer.dst == ethernet.ipv6_multicast(group)
    to_us = packet.dst == ip and outer.dst == mac
    if not (to_group or to_us):
        return Outcome(Verdict.WRONG_DESTINATION, ip, claim=claim)
    asker = message.source_mac or outer.src
    if not dad:
        if not unicast(asker):
            return Outcome(Verdict.BAD_SENDER_MAC, ip)
        if _martian6(packet.src):
            return Outcome(Verdict.BAD_SENDER_IP, ip)
    verdict = _ownership(owns(ip, ifname))
    if verdict is not Verdict.ANSWERED:
        return Outcome(verdict, ip, claim=claim)
    if dad:
        # RFC 4861 §7.2.4: a solicitation from :: is answered to all-nodes, S clear.
        reply = ndp.unsolicited(mac, ip)
    else:
        # MetalLB #2920: NUD probes may omit the SLLA option; the Ethernet source is the asker.
        reply = ndp.advertisement(mac, ip, dst=packet.src, dst_mac=asker, solicited=True)
    return Outcome(verdict, ip, reply, claim)


def unicast(mac: ethernet.MacAddress) -> bool:
    """True for a MAC one host can have: not a group address (I/G bit, IEEE 802 §8.2), not 0."""
    return not mac.octets[0] & 1 and mac != ethernet.ZERO


def _martian4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_multicast or ip.is_loopback or ip == _LIMITED_BROADCAST or ip in _ZERO_NET


def _martian6(ip: ipaddress.IPv6Address) -> bool:
    return ip.is_multicast or ip.is_loopback or ip.ipv4_mapped is not None


def _ownership(ownership: Ownership) -> Verdict:
    match ownership:
        case Ownership.OURS:
            return Verdict.ANSWERED
        case Ownership.ELSEWHERE:
            return Verdict.WRONG_INTERFACE
        case Ownership.NONE:
            return Verdict.NOT_OURS
