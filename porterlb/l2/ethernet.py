"""Ethernet II framing and MAC addresses: the outermost layer of every frame porterlb reads.

A pure codec (bytes in, frozen values out, no sockets): ARP and NDP ride in Ethernet II frames,
and the responder needs the source and destination MACs to decide who asked and whom to
answer. No 802.1Q tag is ever in these bytes: Linux moves a frame's tag into packet
metadata before an AF_PACKET socket sees it, so a frame of VLAN 10 read on the parent
interface looks untagged here. ``porterlb.l2.afpacket.FILTER`` reads that metadata and drops
tagged frames before they reach Python; a VLAN is served on its own interface, where its
frames arrive untagged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from typing import Final

from porterlb import errors

HEADER_LEN: Final = 14
"""Destination MAC, source MAC, EtherType (IEEE 802.3 clause 3.2)."""

MIN_FRAME_LEN: Final = 60
"""The 64-byte minimum frame of IEEE 802.3 clause 4.4.2 without its 4-byte FCS; shorter frames
are padded with zeros, as most NIC drivers would do (veth does not)."""

ETHERTYPE_ARP: Final = 0x0806
"""IEEE EtherType registry, RFC 826."""

ETHERTYPE_IPV6: Final = 0x86DD
"""IEEE EtherType registry, RFC 2464 §3."""

_HEADER: Final = struct.Struct("!6s6sH")


@dataclasses.dataclass(frozen=True, slots=True)
class MacAddress:
    """A 48-bit IEEE 802 MAC address; ``str()`` gives the usual ``aa:bb:cc:dd:ee:ff``."""

    octets: bytes

    def __post_init__(self) -> None:
        if len(self.octets) != 6:
            raise ValueError(f"a MAC address has 6 octets, got {len(self.octets)}")

    def __str__(self) -> str:
        return ":".join(f"{octet:02x}" for octet in self.octets)

    @classmethod
    def parse(cls, text: str) -> MacAddress:
        """Parse ``aa:bb:cc:dd:ee:ff`` (or with dashes); raises ValueError if it is not one."""
        parts = text.replace("-", ":").split(":")
        if len(parts) != 6 or not all(len(part) == 2 for part in parts):
            raise ValueError(f"{text!r} is not a MAC address like aa:bb:cc:dd:ee:ff")
        return cls(bytes(int(part, 16) for part in parts))


BROADCAST: Final = MacAddress(b"\xff" * 6)
ZERO: Final = MacAddress(b"\x00" * 6)
"""The unknown target hardware address of an ARP request (RFC 5227 §2.1.1)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """An Ethernet II frame; ``payload`` may carry trailing padding from the wire."""

    dst: MacAddress
    src: MacAddress
    ethertype: int
    payload: bytes


def decode(data: bytes) -> Frame:
    """Split a frame into its header fields and payload; raises MalformedFrame if truncated."""
    if len(data) < HEADER_LEN:
        raise errors.MalformedFrame(
            f"Ethernet header needs {HEADER_LEN} bytes, got {len(data)}",
            field="ethernet header",
            offset=len(data),
        )
    dst, src, ethertype = _HEADER.unpack_from(data)
    return Frame(MacAddress(dst), MacAddress(src), ethertype, bytes(data[HEADER_LEN:]))


def encode(frame: Frame) -> bytes:
    """Serialise a frame, zero-padded to the IEEE 802.3 minimum length."""
    data = _HEADER.pack(frame.dst.octets, frame.src.octets, frame.ethertype) + frame.payload
    return data.ljust(MIN_FRAME_LEN, b"\x00")


def ipv6_multicast(ip: ipaddress.IPv6Address) -> MacAddress:
    """The MAC an IPv6 multicast group maps to: 33:33 + its last 32 bits (RFC 2464 §7)."""
    return MacAddress(b"\x33\x33" + ip.packed[12:])
