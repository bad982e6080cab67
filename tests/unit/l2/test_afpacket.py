"""The socket's classic BPF program, run by a tiny interpreter: the filter is data, so its
logic is tested without root. The socket itself is tested in tests/e2e/test_l2_announcer.py."""

import ipaddress
import socket
import struct
import typing

import pytest

from porterlb.l2 import afpacket, ethernet, ndp
from tests.unit.l2 import samples
from tests.unit.l2.samples import arp_request, na, ns

LD_ABS = {0x20: 4, 0x28: 2, 0x30: 1}  # ld / ldh / ldb [k]: bytes loaded
JEQ_K, JSET_K, RET_K = 0x15, 0x45, 0x06
AD = (1 << 32) + afpacket.SKF_AD_OFF


def run_filter(frame: bytes, *, vlan_tci: int | None = None) -> int:
    """Classic BPF semantics for the opcodes FILTER uses; an out-of-bounds load drops.

    ``vlan_tci`` is the 802.1Q tag the kernel took out of the frame into metadata, if any
    (what the ancillary loads SKF_AD_VLAN_TAG_PRESENT and SKF_AD_VLAN_TAG read)."""
    ancillary = {
        AD + afpacket.SKF_AD_VLAN_TAG_PRESENT: int(vlan_tci is not None),
        AD + afpacket.SKF_AD_VLAN_TAG: vlan_tci or 0,
    }
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = afpacket.FILTER[pc]
        if code in LD_ABS and k >= AD:
            accumulator = ancillary[k]
            pc += 1
        elif code in LD_ABS:
            size = LD_ABS[code]
            if k + size > len(frame):
                return 0
            accumulator = int.from_bytes(frame[k : k + size], "big")
            pc += 1
        elif code == JEQ_K:
            pc += 1 + (jt if accumulator == k else jf)
        elif code == JSET_K:
            pc += 1 + (jt if accumulator & k else jf)
        elif code == RET_K:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc}")


def ipv6_frame(payload: bytes) -> bytes:
    return ethernet.encode(
        ethernet.Frame(samples.OUR_MAC, samples.ROUTER_MAC, ethernet.ETHERTYPE_IPV6, payload)
    )


def with_byte(frame: bytes, offset: int, value: int) -> bytes:
    return frame[:offset] + bytes([value]) + frame[offset + 1 :]


ICMP_TYPE_AT = ethernet.HEADER_LEN + ndp.IPV6_HEADER_LEN
NEXT_HEADER_AT = ethernet.HEADER_LEN + 6


@pytest.mark.parametrize(
    ("frame", "accepted"),
    [
        pytest.param(arp_request(), True, id="arp"),
        pytest.param(ns(), True, id="ns"),
        pytest.param(ns(dst=samples.VIP6, source_mac=None), True, id="nud"),
        pytest.param(na(), True, id="na"),
        pytest.param(with_byte(ns(), ICMP_TYPE_AT, 128), False, id="echo-request"),
        pytest.param(with_byte(ns(), ICMP_TYPE_AT, 134), False, id="router-advertisement"),
        pytest.param(with_byte(ns(), NEXT_HEADER_AT, 17), False, id="udp"),
        pytest.param(with_byte(ns(), NEXT_HEADER_AT, 0), False, id="hop-by-hop-header"),
        pytest.param(with_byte(arp_request(), 13, 0x00), False, id="ipv4"),
        pytest.param(ipv6_frame(b"\x60")[:20], False, id="runt-ipv6"),
        pytest.param(b"\x00" * 10, False, id="runt"),
    ],
)
def test_filter(frame, accepted):
    assert (run_filter(frame) > 0) is accepted


PRIORITY_5 = 5 << 13
"""A tag's priority code point sits above its VLAN ID (IEEE 802.1Q clause 9.6)."""


@pytest.mark.parametrize(
    ("frame", "vlan_tci", "accepted"),
    [
        pytest.param(arp_request(), 10, False, id="arp-vlan-10"),
        pytest.param(ns(), 10, False, id="ns-vlan-10"),
        pytest.param(na(), 10, False, id="na-vlan-10"),
        pytest.param(arp_request(), 4094, False, id="arp-vlan-4094"),
        pytest.param(arp_request(), PRIORITY_5 | 10, False, id="arp-vlan-10-with-priority"),
        pytest.param(arp_request(), 0, True, id="arp-priority-tag-only"),
        pytest.param(ns(), PRIORITY_5, True, id="ns-priority-tag-only"),
        pytest.param(arp_request(), None, True, id="arp-untagged"),
    ],
)
def test_filter_drops_frames_of_a_vlan(frame, vlan_tci, accepted):
    assert (run_filter(frame, vlan_tci=vlan_tci) > 0) is accepted


def test_filter_jumps_stay_inside_the_program():
    for pc, (code, jt, jf, _) in enumerate(afpacket.FILTER):
        if code in (JEQ_K, JSET_K):
            assert pc + 1 + max(jt, jf) < len(afpacket.FILTER)
    assert afpacket.FILTER[-1][0] == RET_K


class RecordingSocket:
    """Stands in for the AF_PACKET socket: records membership changes, as (add, MAC or None)."""

    def __init__(self):
        self.changes = []

    def setsockopt(self, level, option, value):
        assert level == afpacket.SOL_PACKET
        _, kind, _, address = struct.unpack("iHH8s", value)
        group = address[:6] if kind == afpacket.PACKET_MR_MULTICAST else None
        assert kind in (afpacket.PACKET_MR_MULTICAST, afpacket.PACKET_MR_ALLMULTI)
        self.changes.append((option == afpacket.PACKET_ADD_MEMBERSHIP, group))


def recording_conn():
    sock = RecordingSocket()
    fake = typing.cast(socket.socket, sock)
    return sock, afpacket.AfPacketConn(fake, ifname="eth0", ifindex=2, mac=samples.OUR_MAC)


def group_of(ip):
    return ethernet.ipv6_multicast(ndp.solicited_node(ip)).octets


def test_groups_are_refcounted():
    sock, packet_conn = recording_conn()
    same_group = ipaddress.IPv6Address(int(samples.VIP6) + (1 << 24))  # same low 24 bits
    packet_conn.join(samples.VIP6)
    packet_conn.join(same_group)
    packet_conn.leave(samples.VIP6)
    assert sock.changes == [(True, group_of(samples.VIP6))]
    packet_conn.leave(same_group)
    packet_conn.leave(same_group)  # nothing joined any more: ignored
    assert sock.changes[1:] == [(False, group_of(samples.VIP6))]


def test_many_groups_become_all_multicast_and_back():
    sock, packet_conn = recording_conn()
    ips = [samples.VIP6 + k for k in range(afpacket.MAX_GROUPS + 10)]
    for ip in ips:
        packet_conn.join(ip)
    one_by_one = [(True, group_of(ip)) for ip in ips[: afpacket.MAX_GROUPS]]
    assert sock.changes == [*one_by_one, (True, None)]
    sock.changes.clear()
    keep = afpacket.MAX_GROUPS // 2
    for ip in ips[keep:]:
        packet_conn.leave(ip)
    dropped = [(False, group_of(ip)) for ip in ips[keep : afpacket.MAX_GROUPS]]
    assert sock.changes == [*dropped, (False, None)]
    sock.changes.clear()
    packet_conn.leave(ips[0])
    assert sock.changes == [(False, group_of(ips[0]))]


def test_groups_wanted_under_all_multicast_are_joined_when_it_ends():
    sock, packet_conn = recording_conn()
    ips = [samples.VIP6 + k for k in range(afpacket.MAX_GROUPS + 1)]
    for ip in ips:
        packet_conn.join(ip)
    sock.changes.clear()
    for ip in ips[: afpacket.MAX_GROUPS // 2 + 1]:
        packet_conn.leave(ip)  # only the last IP's group was never joined one by one
    assert sock.changes[-2:] == [(True, group_of(ips[-1])), (False, None)]
