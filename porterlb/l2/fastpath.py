"""The common frames' verdict straight from their bytes: the responder's hot path.

``responder.handle`` decodes every frame into frozen values and ``ipaddress`` objects before it
decides; that costs ~40 µs of CPython per ARP request, which caps a speaker at ~20,000 answers
a second (bench/l2_answers.py), while issue 3 asks for 50,000. ``decide`` reaches the same
verdict by comparing slices of the frame: the target IP stays packed bytes (the announcer
looks it up in a dict keyed by ``ip.packed``), the reply is a join of slices, and the ICMPv6
checksum is one big-integer remainder. It covers what a LAN actually sends, and every
ARP frame: well-formed ARP, IPv6 that is not ND, and neighbour solicitations without
options or with one source link-layer address option. Anything else (NAs, other options, a
bad checksum, truncation) returns ``None``, and the caller falls back to ``responder.handle``,
which stays the reference: tests/unit/l2/test_fastpath.py proves with Hypothesis that
whenever ``decide`` answers, its verdict, target, reply bytes and claim equal the reference's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Final, NamedTuple

from porterlb.l2 import arp, ethernet, ndp, responder

OwnsPacked = Callable[[bytes, str], responder.Ownership]
"""``responder.Owns`` keyed by ``ip.packed``: the announcer's ownership without address
objects."""

Verdict = responder.Verdict


class Fast(NamedTuple):
    """``responder.Outcome`` with the IPs packed: a tuple, as it is built for every frame."""

    verdict: responder.Verdict
    target: bytes | None
    """``Outcome.ip.packed``."""
    reply: bytes | None
    claim: tuple[bytes, bytes] | None
    """``(Outcome.claim.ip.packed, Outcome.claim.mac.octets)``."""


_ETHERTYPE_ARP: Final = ethernet.ETHERTYPE_ARP.to_bytes(2, "big")
_ETHERTYPE_IPV6: Final = ethernet.ETHERTYPE_IPV6.to_bytes(2, "big")
_BROADCAST: Final = ethernet.BROADCAST.octets
_ARP_FIXED: Final = bytes.fromhex("0001 0800 06 04")
"""htype Ethernet, ptype IPv4, hlen 6, plen 4: the only ARP ``arp.decode`` accepts."""
_ARP_REQUEST: Final = arp.REQUEST.to_bytes(2, "big")
_ARP_REPLY_HEAD: Final = _ETHERTYPE_ARP + _ARP_FIXED + arp.REPLY.to_bytes(2, "big")
_ARP_UNSPECIFIED: Final = arp.UNSPECIFIED.packed
_ARP_BROADCAST: Final = b"\xff" * 4
_ZERO_MAC: Final = ethernet.ZERO.octets
_ARP_END: Final = ethernet.HEADER_LEN + arp.PACKET_LEN
_ARP_PAD: Final = bytes(ethernet.MIN_FRAME_LEN - _ARP_END)

# Offsets in the Ethernet frame of an IPv6 ND packet (RFC 8200 §3, RFC 4861 §4.3).
_IP: Final = ethernet.HEADER_LEN
_PAYLOAD_LENGTH: Final = _IP + 4
_NEXT_HEADER: Final = _IP + 6
_HOP_LIMIT: Final = _IP + 7
_SRC: Final = _IP + 8
_DST: Final = _IP + 24
_ICMP: Final = _IP + ndp.IPV6_HEADER_LEN
_TARGET: Final = _ICMP + 8
_OPTION: Final = _TARGET + 16
_NS_LEN: Final = 24
"""An NS without options; with one Ethernet link-layer address option it is 32 bytes."""
_NS_LENGTHS: Final = (_NS_LEN, _NS_LEN + 8)
_SLLA: Final = bytes((ndp.OPTION_SOURCE_LLA, 1))
_UNSPECIFIED6: Final = ndp.UNSPECIFIED.packed
_SOLICITED_PREFIX: Final = ndp.solicited_node(ndp.UNSPECIFIED).packed[:13]
"""ff02::1:ff00:0/104: the group of a target is this plus its last three bytes."""
_GROUP_MAC_PREFIX: Final = ethernet.ipv6_multicast(ndp.solicited_node(ndp.UNSPECIFIED)).octets[:3]
_ALL_NODES: Final = ndp.ALL_NODES.packed
_LOOPBACK6: Final = ipaddress.IPv6Address("::1").packed
_V4_MAPPED: Final = ipaddress.IPv6Address("::ffff:0:0").packed[:12]
"""::ffff:0:0/96 (RFC 4291 §2.5.5.2)."""
_ALL_NODES_MAC: Final = ethernet.ipv6_multicast(ndp.ALL_NODES).octets
_NA_LEN: Final = 32
"""An NA with one Target link-layer address option (RFC 4861 §4.4, §4.6.1)."""
_NA_TYPE: Final = bytes((ndp.NEIGHBOR_ADVERTISEMENT, 0))
_NA_HEAD: Final = bytes.fromhex("60000000 0020") + bytes((ndp.NEXT_HEADER_ICMPV6, ndp.HOP_LIMIT))
"""Version 6, no traffic class or flow label, payload 32 bytes, ICMPv6, hop limit 255."""
_TLLA: Final = bytes((ndp.OPTION_TARGET_LLA, 1))
_SOLICITED_OVERRIDE: Final = 0x60
_OVERRIDE: Final = 0x20
"""NA flags S and O (RFC 4861 §4.4), as ``ndp.advertisement`` sets them."""
_PSEUDO_NEXT: Final = bytes((0, 0, 0, ndp.NEXT_HEADER_ICMPV6))
"""Three zero bytes and the next header: the pseudo-header's end (RFC 8200 §8.1)."""
_ONES: Final = 0xFFFF


def decide(frame: bytes, *, ifname: str, mac: bytes, owns: OwnsPacked) -> Fast | None:
    """``responder.handle(frame, ...)`` for the common frames, or None: decode it fully."""
    if len(frame) < ethernet.HEADER_LEN:
        return None
    if frame[6:12] == mac:
        return Fast(Verdict.FROM_SELF, None, None, None)
    ethertype = frame[12:14]
    if ethertype == _ETHERTYPE_ARP:
        return _arp(frame, ifname, mac, owns)
    if ethertype == _ETHERTYPE_IPV6:
        return _ndp(frame, ifname, mac, owns)
    return Fast(Verdict.NOT_A_REQUEST, None, None, None)


def _arp(frame: bytes, ifname: str, mac: bytes, owns: OwnsPacked) -> Fast | None:
    if len(frame) < _ARP_END or frame[14:20] != _ARP_FIXED:
        return None  # malformed: let the codec name the field
    sender_mac, sender_ip, target = frame[22:28], frame[28:32], frame[38:42]
    claim = None if sender_ip == _ARP_UNSPECIFIED else (sender_ip, sender_mac)
    if frame[20:22] != _ARP_REQUEST:
        return Fast(Verdict.NOT_A_REQUEST, target, None, claim)
    dst = frame[0:6]
    if dst != _BROADCAST and dst != mac:
        return Fast(Verdict.WRONG_DESTINATION, target, None, claim)
    if sender_mac[0] & 1 or sender_mac == _ZERO_MAC:
        return Fast(Verdict.BAD_SENDER_MAC, target, None, None)
    first = sender_ip[0]
    if (
        first & 0xF0 == 0xE0  # multicast
        or first == 127
        or (first == 0 and claim is not None)  # 0/8, but not a probe's 0.0.0.0
        or sender_ip == _ARP_BROADCAST
    ):
        return Fast(Verdict.BAD_SENDER_IP, target, None, None)
    verdict = _verdict(owns(target, ifname))
    if verdict is not Verdict.ANSWERED:
        return Fast(verdict, target, None, claim)
    reply = b"".join(
        (sender_mac, mac, _ARP_REPLY_HEAD, mac, target, sender_mac, sender_ip, _ARP_PAD)
    )
    return Fast(verdict, target, reply, claim)


def _ndp(frame: bytes, ifname: str, mac: bytes, owns: OwnsPacked) -> Fast | None:
    if len(frame) < _ICMP or frame[_IP] >> 4 != 6:
        return None  # malformed
    if frame[_NEXT_HEADER] != ndp.NEXT_HEADER_ICMPV6 or len(frame) == _ICMP:
        return Fast(Verdict.NOT_A_REQUEST, None, None, None)
    kind = frame[_ICMP]
    if kind != ndp.NEIGHBOR_SOLICITATION:
        if kind == ndp.NEIGHBOR_ADVERTISEMENT:
            return None  # a claim with options to parse: rare, and the codec's job
        return Fast(Verdict.NOT_A_REQUEST, None, None, None)
    length = int.from_bytes(frame[_PAYLOAD_LENGTH:_NEXT_HEADER], "big")
    end = _ICMP + length
    if end > len(frame) or length not in _NS_LENGTHS or frame[_ICMP + 1] != 0:
        return None  # truncated, other options, or a code that is not 0
    if length == _NS_LEN:
        source_mac = None
    elif frame[_OPTION : _OPTION + 2] == _SLLA:
        source_mac = frame[_OPTION + 2 : end]
    else:
        return None
    if _sum(frame[_SRC:_ICMP], length, frame[_ICMP:end]) != _ONES:
        return None  # a bad checksum is malformed
    src, dst, target = frame[_SRC:_DST], frame[_DST:_ICMP], frame[_TARGET:_OPTION]
    dad = src == _UNSPECIFIED6
    asker = source_mac or frame[6:12]
    claim = None if dad else (src, asker)
    if frame[_HOP_LIMIT] != ndp.HOP_LIMIT or target[0] == 0xFF:
        return Fast(Verdict.INVALID, target, None, claim)
    group = _SOLICITED_PREFIX + target[13:]
    if dad and (dst != group or source_mac is not None):
        return Fast(Verdict.INVALID, target, None, None)
    eth_dst = frame[0:6]
    multicast = dst == group and eth_dst == _GROUP_MAC_PREFIX + target[13:]
    unicast = dst == target and eth_dst == mac
    if not (multicast or unicast):
        return Fast(Verdict.WRONG_DESTINATION, target, None, claim)
    if not dad:
        if asker[0] & 1 or asker == _ZERO_MAC:
            return Fast(Verdict.BAD_SENDER_MAC, target, None, None)
        if src[0] == 0xFF or src == _LOOPBACK6 or src[:12] == _V4_MAPPED:
            return Fast(Verdict.BAD_SENDER_IP, target, None, None)
    verdict = _verdict(owns(target, ifname))
    if verdict is not Verdict.ANSWERED:
        return Fast(verdict, target, None, claim)
    if dad:
        # RFC 4861 §7.2.4: a solicitation from :: is answered to all-nodes, S clear.
        reply = _advertisement(mac, target, _ALL_NODES, _ALL_NODES_MAC, _OVERRIDE)
    else:
        # MetalLB #2920: NUD probes may omit the SLLA option; the Ethernet source is the asker.
        reply = _advertisement(mac, target, src, asker, _SOLICITED_OVERRIDE)
    return Fast(verdict, target, reply, claim)


def _advertisement(mac: bytes, target: bytes, dst: bytes, dst_mac: bytes, flags: int) -> bytes:
    """``ndp.advertisement(mac, target, dst=dst, dst_mac=dst_mac, ...)``, from slices."""
    body = bytes((flags, 0, 0, 0)) + target + _TLLA + mac
    total = _sum(target + dst, _NA_LEN, _NA_TYPE + b"\x00\x00" + body)  # checksum field 0
    checksum = (_ONES - total).to_bytes(2, "big")
    return b"".join(
        (dst_mac, mac, _ETHERTYPE_IPV6, _NA_HEAD, target, dst, _NA_TYPE, checksum, body)
    )


def _sum(addresses: bytes, length: int, message: bytes) -> int:
    """The RFC 1071 one's-complement sum, folded to 16 bits, of the ICMPv6 pseudo-header
    (``addresses`` is source and destination) and an even-length ``message``.

    The folded sum of 16-bit words is congruent to the whole byte string read as one
    big-endian integer modulo 0xFFFF (2**16 = 1 mod 0xFFFF), so one ``int.from_bytes`` and
    one remainder replace the word-by-word loop of ``ndp._checksum``. The pseudo-header's
    next header (58) makes the sum non-zero, and a non-zero sum folds to 1..0xFFFF.
    """
    whole = int.from_bytes(addresses + length.to_bytes(4, "big") + _PSEUDO_NEXT + message, "big")
    return (whole - 1) % _ONES + 1


def _verdict(ownership: responder.Ownership) -> responder.Verdict:
    if ownership is responder.Ownership.OURS:
        return Verdict.ANSWERED
    if ownership is responder.Ownership.ELSEWHERE:
        return Verdict.WRONG_INTERFACE
    return Verdict.NOT_OURS
