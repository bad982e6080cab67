"""IPv6 Neighbor Discovery (RFC 4861): the NS/NA codec and the frames porterlb sends.

A pure codec over the payload of an Ethernet frame: the IPv6 header, then an ICMPv6 Neighbor
Solicitation or Advertisement with its options. It is read at the link layer on purpose: a
raw ICMPv6 socket never sees a router's unicast NUD probe for an address the node does not
own (MetalLB #2920). Decoding checks every length before reading and verifies the ICMPv6
checksum; semantic checks (hop limit 255, multicast targets, DAD rules) are the responder's,
so it can give them a verdict instead of an exception. Extension headers are not parsed:
RFC 4861 messages carry none in practice, and the socket's filter drops them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from typing import Final

from porterlb import errors
from porterlb.l2 import ethernet

IPV6_HEADER_LEN: Final = 40
"""RFC 8200 §3."""

NEXT_HEADER_ICMPV6: Final = 58
"""IANA protocol number of ICMPv6 (RFC 4443 §1)."""

NEIGHBOR_SOLICITATION: Final = 135
NEIGHBOR_ADVERTISEMENT: Final = 136
"""ICMPv6 types (RFC 4861 §4.3, §4.4)."""

HOP_LIMIT: Final = 255
"""Every ND message is sent with, and must arrive with, hop limit 255 (RFC 4861 §7.1.1)."""

OPTION_SOURCE_LLA: Final = 1
OPTION_TARGET_LLA: Final = 2
"""Link-layer address option types (RFC 4861 §4.6.1)."""

ALL_NODES: Final = ipaddress.IPv6Address("ff02::1")
"""Link-local all-nodes group (RFC 4291 §2.7.1)."""

UNSPECIFIED: Final = ipaddress.IPv6Address("::")
"""Source of a Duplicate Address Detection probe (RFC 4862 §5.4.2)."""

_MESSAGE_LEN: Final = 24
"""type, code, checksum, 4 bytes of flags/reserved, 16-byte target (RFC 4861 §4.3, §4.4)."""

_SOLICITED_NODE: Final = int(ipaddress.IPv6Address("ff02::1:ff00:0"))
"""Solicited-node prefix ff02::1:ff00:0/104 (RFC 4291 §2.7.1)."""

_ROUTER: Final = 0x80
_SOLICITED: Final = 0x40
_OVERRIDE: Final = 0x20
"""NA flag bits R, S, O in the first byte after the checksum (RFC 4861 §4.4)."""

_IPV6: Final = struct.Struct("!IHBB16s16s")
_ICMP: Final = struct.Struct("!BBHB3x16s")


@dataclasses.dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    """An NS; ``source_mac`` is its Source Link-Layer Address option, if it carries one."""

    target: ipaddress.IPv6Address
    source_mac: ethernet.MacAddress | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class NeighborAdvertisement:
    """An NA; ``target_mac`` is its Target Link-Layer Address option, if it carries one."""

    target: ipaddress.IPv6Address
    target_mac: ethernet.MacAddress | None = None
    router: bool = False
    solicited: bool = False
    override: bool = False


Message = NeighborSolicitation | NeighborAdvertisement


@dataclasses.dataclass(frozen=True, slots=True)
class Packet:
    """An IPv6 packet carrying one ND message (traffic class and flow label are always 0)."""

    src: ipaddress.IPv6Address
    dst: ipaddress.IPv6Address
    message: Message
    hop_limit: int = HOP_LIMIT


def solicited_node(ip: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    """The solicited-node multicast group of ``ip`` (RFC 4291 §2.7.1)."""
    return ipaddress.IPv6Address(_SOLICITED_NODE | (int(ip) & 0xFFFFFF))


def icmp_type(payload: bytes) -> int | None:
    """The ICMPv6 type of an IPv6 packet, or None if it carries no bare ICMPv6 message.

    Lets the responder tell "not Neighbor Discovery" from "broken". Raises MalformedFrame if the
    IPv6 header is truncated or its version is not 6.
    """
    _, next_header, _, _, _ = _ipv6_header(payload)
    if next_header != NEXT_HEADER_ICMPV6 or len(payload) <= IPV6_HEADER_LEN:
        return None
    return payload[IPV6_HEADER_LEN]


def decode(payload: bytes) -> Packet:
    """Decode an IPv6 packet holding an NS or NA (trailing Ethernet padding is ignored).

    Raises MalformedFrame on truncation, another next header or ICMPv6 type, a non-zero code, a
    bad checksum, or a bad option.
    """
    payload_length, next_header, hop_limit, src, dst = _ipv6_header(payload)
    if next_header != NEXT_HEADER_ICMPV6:
        raise _malformed(f"next header is {next_header}, not ICMPv6", "next header", 6)
    end = IPV6_HEADER_LEN + payload_length
    if end > len(payload):
        raise _malformed(
            f"payload length {payload_length} runs past the {len(payload)}-byte packet",
            "payload length",
            4,
        )
    message = payload[IPV6_HEADER_LEN:end]
    if len(message) < _MESSAGE_LEN:
        raise _malformed(
            f"ND message needs {_MESSAGE_LEN} bytes, got {len(message)}", "icmpv6 length", end
        )
    kind, code, _, flags, target_bytes = _ICMP.unpack_from(message)
    if kind not in (NEIGHBOR_SOLICITATION, NEIGHBOR_ADVERTISEMENT):
        raise _malformed(f"ICMPv6 type {kind} is not NS or NA", "icmpv6 type", IPV6_HEADER_LEN)
    if code != 0:
        raise _malformed(f"ICMPv6 code is {code}, not 0", "icmpv6 code", IPV6_HEADER_LEN + 1)
    if _checksum(src, dst, message) != 0:
        raise _malformed("ICMPv6 checksum does not match", "icmpv6 checksum", IPV6_HEADER_LEN + 2)
    target = ipaddress.IPv6Address(target_bytes)
    options = _options(message, IPV6_HEADER_LEN)
    decoded: Message
    if kind == NEIGHBOR_SOLICITATION:
        decoded = NeighborSolicitation(target, options.get(OPTION_SOURCE_LLA))
    else:
        decoded = NeighborAdvertisement(
            target,
            options.get(OPTION_TARGET_LLA),
            router=bool(flags & _ROUTER),
            solicited=bool(flags & _SOLICITED),
            override=bool(flags & _OVERRIDE),
        )
    return Packet(src, dst, decoded, hop_limit)


def encode(packet: Packet) -> bytes:
    """Serialise an IPv6 packet with its ND message, computing the ICMPv6 checksum."""
    match packet.message:
        case NeighborSolicitation(target=target, source_mac=mac):
            kind, flags, option = NEIGHBOR_SOLICITATION, 0, OPTION_SOURCE_LLA
        case NeighborAdvertisement(target=target, target_mac=mac) as na:
            kind, option = NEIGHBOR_ADVERTISEMENT, OPTION_TARGET_LLA
            flags = (
                (_ROUTER if na.router else 0)
                | (_SOLICITED if na.solicited else 0)
                | (_OVERRIDE if na.override else 0)
            )
    body = _ICMP.pack(kind, 0, 0, flags, target.packed)
    if mac is not None:
        body += bytes((option, 1)) + mac.octets
    checksum = _checksum(packet.src, packet.dst, body)
    body = body[:2] + checksum.to_bytes(2, "big") + body[4:]
    header = _IPV6.pack(
        6 << 28,
        len(body),
        NEXT_HEADER_ICMPV6,
        packet.hop_limit,
        packet.src.packed,
        packet.dst.packed,
    )
    return header + body


def frame(dst: ethernet.MacAddress, src: ethernet.MacAddress, packet: Packet) -> bytes:
    """Wrap an ND packet in an Ethernet frame."""
    return ethernet.encode(ethernet.Frame(dst, src, ethernet.ETHERTYPE_IPV6, encode(packet)))


def advertisement(
    mac: ethernet.MacAddress,
    target: ipaddress.IPv6Address,
    *,
    dst: ipaddress.IPv6Address,
    dst_mac: ethernet.MacAddress,
    solicited: bool,
) -> bytes:
    """An NA frame saying ``target`` is at ``mac``, with Override set and a Target LLA option.

    Its IPv6 source is the target itself: porterlb answers for an address no interface holds,
    and receivers do not check an NA's source (RFC 4861 §7.1.2 has no rule for it).
    """
    na = NeighborAdvertisement(target, mac, solicited=solicited, override=True)
    return frame(dst_mac, mac, Packet(target, dst, na))


def unsolicited(mac: ethernet.MacAddress, target: ipaddress.IPv6Address) -> bytes:
    """An unsolicited NA to all nodes, S clear and O set (RFC 4861 §7.2.6)."""
    return advertisement(
        mac, target, dst=ALL_NODES, dst_mac=ethernet.ipv6_multicast(ALL_NODES), solicited=False
    )


def dad_probe(mac: ethernet.MacAddress, target: ipaddress.IPv6Address) -> bytes:
    """A Duplicate Address Detection NS for ``target``: source ::, no SLLA (RFC 4862 §5.4.2)."""
    group = solicited_node(target)
    packet = Packet(UNSPECIFIED, group, NeighborSolicitation(target))
    return frame(ethernet.ipv6_multicast(group), mac, packet)


def _ipv6_header(
    payload: bytes,
) -> tuple[int, int, int, ipaddress.IPv6Address, ipaddress.IPv6Address]:
    if len(payload) < IPV6_HEADER_LEN:
        raise _malformed(
            f"IPv6 header needs {IPV6_HEADER_LEN} bytes, got {len(payload)}",
            "ipv6 header",
            len(payload),
        )
    first_word, payload_length, next_header, hop_limit, src, dst = _IPV6.unpack_from(payload)
    if first_word >> 28 != 6:
        raise _malformed(f"IP version is {first_word >> 28}, not 6", "ip version", 0)
    return (
        payload_length,
        next_header,
        hop_limit,
        ipaddress.IPv6Address(src),
        ipaddress.IPv6Address(dst),
    )


def _options(message: bytes, base: int) -> dict[int, ethernet.MacAddress]:
    """The first link-layer address option of each type; unknown options are skipped."""
    found: dict[int, ethernet.MacAddress] = {}
    offset = _MESSAGE_LEN
    while offset < len(message):
        if offset + 2 > len(message):
            raise _malformed("option header is truncated", "option", base + offset)
        kind, units = message[offset], message[offset + 1]
        if units == 0:
            # RFC 4861 §4.6: "Nodes MUST silently discard an ND packet that contains an option
            # with length zero."
            raise _malformed("option length is zero", "option length", base + offset + 1)
        end = offset + units * 8
        if end > len(message):
            raise _malformed(
                f"option of {units * 8} bytes runs past the message", "option", base + offset
            )
        if kind in (OPTION_SOURCE_LLA, OPTION_TARGET_LLA):
            if units != 1:
                raise _malformed(
                    f"link-layer address option is {units * 8} bytes, Ethernet's is 8",
                    "option length",
                    base + offset + 1,
                )
            found.setdefault(kind, ethernet.MacAddress(message[offset + 2 : end]))
        offset = end
    return found


def _checksum(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, message: bytes) -> int:
    """The Internet checksum (RFC 1071) over the IPv6 pseudo-header and the ICMPv6 message.

    RFC 4443 §2.3 and RFC 8200 §8.1: source, destination, 32-bit upper-layer length, three zero
    bytes, next header. Over a message that already holds its checksum, the result is 0.
    """
    data = src.packed + dst.packed + struct.pack("!I3xB", len(message), NEXT_HEADER_ICMPV6)
    data += message + b"\x00" * (len(message) % 2)
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _malformed(message: str, field: str, offset: int) -> errors.MalformedFrame:
    return errors.MalformedFrame(message, field=field, offset=offset)
