"""ARP for Ethernet and IPv4 (RFC 826): the packet codec and the frames porterlb sends.

A pure codec: bytes in, a frozen ``Packet`` out, no sockets, so every branch is tested without
root. Only the one combination a LAN uses is accepted (hardware type Ethernet, protocol
IPv4, 6- and 4-byte addresses); anything else raises ``MalformedFrame`` naming the field and
offset, since porterlb could neither answer it nor learn from it. The operation is kept as a
plain int: RARP and InARP codes are well-formed, just not requests we answer.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from typing import Final

from porterlb import errors
from porterlb.l2 import ethernet

PACKET_LEN: Final = 28
"""htype, ptype, hlen, plen, op, then two (MAC, IPv4) pairs (RFC 826 "Packet format")."""

HTYPE_ETHERNET: Final = 1
"""ar$hrd for Ethernet (IANA ARP hardware types)."""

PTYPE_IPV4: Final = 0x0800
"""ar$pro: the IPv4 EtherType (RFC 826)."""

REQUEST: Final = 1
REPLY: Final = 2
"""ar$op values (RFC 826; IANA ARP operation codes)."""

UNSPECIFIED: Final = ipaddress.IPv4Address(0)
"""The sender address of an ARP probe (RFC 5227 §2.1.1)."""

_PACKET: Final = struct.Struct("!HHBBH6s4s6s4s")
_FIXED: Final = (
    # (field, offset, expected value, what it means)
    ("htype", 0, HTYPE_ETHERNET, "Ethernet"),
    ("ptype", 2, PTYPE_IPV4, "IPv4"),
    ("hlen", 4, 6, "6-byte MAC addresses"),
    ("plen", 5, 4, "4-byte IPv4 addresses"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Packet:
    """An Ethernet/IPv4 ARP packet."""

    operation: int
    sender_mac: ethernet.MacAddress
    sender_ip: ipaddress.IPv4Address
    target_mac: ethernet.MacAddress
    target_ip: ipaddress.IPv4Address


def decode(payload: bytes) -> Packet:
    """Decode the payload of an ARP frame (trailing padding is ignored).

    Raises MalformedFrame if it is truncated or is not Ethernet/IPv4 ARP.
    """
    if len(payload) < PACKET_LEN:
        raise errors.MalformedFrame(
            f"ARP packet needs {PACKET_LEN} bytes, got {len(payload)}",
            field="arp packet",
            offset=len(payload),
        )
    fields = _PACKET.unpack_from(payload)
    for (name, offset, expected, meaning), value in zip(_FIXED, fields, strict=False):
        if value != expected:
            raise errors.MalformedFrame(
                f"ARP {name} is {value:#x}, only {expected:#x} ({meaning}) is supported",
                field=name,
                offset=offset,
            )
    operation, sender_mac, sender_ip, target_mac, target_ip = fields[4:]
    return Packet(
        operation=operation,
        sender_mac=ethernet.MacAddress(sender_mac),
        sender_ip=ipaddress.IPv4Address(sender_ip),
        target_mac=ethernet.MacAddress(target_mac),
        target_ip=ipaddress.IPv4Address(target_ip),
    )


def encode(packet: Packet) -> bytes:
    """Serialise an ARP packet (28 bytes, without the Ethernet header)."""
    return _PACKET.pack(
        HTYPE_ETHERNET,
        PTYPE_IPV4,
        6,
        4,
        packet.operation,
        packet.sender_mac.octets,
        packet.sender_ip.packed,
        packet.target_mac.octets,
        packet.target_ip.packed,
    )


def frame(dst: ethernet.MacAddress, packet: Packet) -> bytes:
    """Wrap an ARP packet in an Ethernet frame from its sender's MAC."""
    return ethernet.encode(
        ethernet.Frame(dst, packet.sender_mac, ethernet.ETHERTYPE_ARP, encode(packet))
    )


def reply(request: Packet, mac: ethernet.MacAddress) -> bytes:
    """The unicast reply frame telling the asker that ``request.target_ip`` is at ``mac``."""
    answer = Packet(REPLY, mac, request.target_ip, request.sender_mac, request.sender_ip)
    return frame(request.sender_mac, answer)


def gratuitous(mac: ethernet.MacAddress, ip: ipaddress.IPv4Address) -> tuple[bytes, bytes]:
    """A gratuitous ARP request and reply (sender = target = ``ip``), both broadcast.

    Both kinds are sent because receivers differ in which one they honour (RFC 5227 §3 prefers
    requests; some routers only update on replies). This is MetalLB's choice too (issue #172).
    The reply's target MAC is ``mac`` as well (RFC 2002 §4.6): Linux treats a reply as
    gratuitous, and lets it override an entry within ``locktime``, only then (``arp_is_garp``
    in net/ipv4/arp.c).
    """
    return (
        frame(ethernet.BROADCAST, Packet(REQUEST, mac, ip, ethernet.ZERO, ip)),
        frame(ethernet.BROADCAST, Packet(REPLY, mac, ip, mac, ip)),
    )


def probe(mac: ethernet.MacAddress, ip: ipaddress.IPv4Address) -> bytes:
    """An ARP probe for ``ip`` (sender IP 0.0.0.0, RFC 5227 §2.1.1), broadcast."""
    return frame(ethernet.BROADCAST, Packet(REQUEST, mac, UNSPECIFIED, ethernet.ZERO, ip))
