import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb import errors
from porterlb.l2 import ethernet, ndp
from tests.unit.l2 import samples

# NS from 2001:db8::1 for 2001:db8::100 to its solicited-node group, SLLA 02:00:00:00:00:01.
# Checksum by hand (RFC 1071), 16-bit words:
#   pseudo-header: src 2001+0db8+0001 = 2dba; dst ff02+0001+ff00+0100 = 1ff03;
#                  length 0020 + next header 003a = 005a
#   ICMPv6: 8700; target 2001+0db8+0100 = 2eb9; option 0101+0200+0001 = 0302
#   sum = 2e5d2 -> fold e5d2 + 2 = e5d4 -> complement = 1a2b
GOLDEN_NS = bytes.fromhex(
    "60000000 0020 3a ff"  # version 6, payload 32 bytes, ICMPv6, hop limit 255
    "20010db8000000000000000000000001"  # src 2001:db8::1
    "ff0200000000000000000001ff000100"  # dst ff02::1:ff00:100
    "87 00 1a2b 00000000"  # NS, code 0, checksum, reserved
    "20010db8000000000000000000000100"  # target 2001:db8::100
    "01 01 020000000001"  # Source Link-Layer Address option
)
GOLDEN_PACKET = ndp.Packet(
    ipaddress.IPv6Address("2001:db8::1"),
    ipaddress.IPv6Address("ff02::1:ff00:100"),
    ndp.NeighborSolicitation(ipaddress.IPv6Address("2001:db8::100"), samples.OUR_MAC),
)

optional_macs = st.none() | samples.macs
messages = st.builds(ndp.NeighborSolicitation, target=samples.ipv6s, source_mac=optional_macs) | (
    st.builds(
        ndp.NeighborAdvertisement,
        target=samples.ipv6s,
        target_mac=optional_macs,
        router=st.booleans(),
        solicited=st.booleans(),
        override=st.booleans(),
    )
)
packets = st.builds(
    ndp.Packet,
    src=samples.ipv6s,
    dst=samples.ipv6s,
    message=messages,
    hop_limit=st.integers(0, 255),
)


def checksum(data: bytes) -> int:
    """An independent RFC 1071 checksum for building test packets."""
    data += bytes(len(data) % 2)
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return 0xFFFF - total


def with_message(icmp: bytes, *, next_header: int = 58, hop_limit: int = 255) -> bytes:
    """An IPv6 packet from GOLDEN's addresses around ``icmp``, its checksum recomputed."""
    src, dst = GOLDEN_NS[8:24], GOLDEN_NS[24:40]
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + bytes(2) + icmp[4:]
    icmp = icmp[:2] + checksum(pseudo + icmp).to_bytes(2, "big") + icmp[4:]
    return struct.pack("!IHBB", 6 << 28, len(icmp), next_header, hop_limit) + src + dst + icmp


def with_options(options: bytes) -> bytes:
    return with_message(GOLDEN_NS[40:64] + options)


def test_golden_ns_decodes():
    assert ndp.decode(GOLDEN_NS) == GOLDEN_PACKET


def test_golden_ns_encodes():
    assert ndp.encode(GOLDEN_PACKET) == GOLDEN_NS


def test_decode_ignores_ethernet_padding():
    assert ndp.decode(GOLDEN_NS + bytes(6)) == GOLDEN_PACKET


@given(packets)
def test_round_trip(packet):
    assert ndp.decode(ndp.encode(packet)) == packet


@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_malformed(data):
    with contextlib.suppress(errors.MalformedFrame):
        ndp.decode(data)


@given(
    packets.map(ndp.encode),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    st.integers(0, 200),
)
def test_corrupted_packets_raise_only_malformed(data, flips, cut):
    corrupted = bytearray(data[:cut])
    for offset, value in flips:
        if offset < len(corrupted):
            corrupted[offset] = value
    with contextlib.suppress(errors.MalformedFrame):
        ndp.decode(bytes(corrupted))


@pytest.mark.parametrize("length", range(len(GOLDEN_NS)))
def test_truncated_at_every_offset(length):
    with pytest.raises(errors.MalformedFrame):
        ndp.decode(GOLDEN_NS[:length])


@pytest.mark.parametrize(
    ("data", "field"),
    [
        pytest.param(b"\x40" + GOLDEN_NS[1:], "ip version", id="ipv4-version"),
        pytest.param(GOLDEN_NS[:6] + b"\x11" + GOLDEN_NS[7:], "next header", id="udp"),
        pytest.param(GOLDEN_NS[:6] + b"\x00" + GOLDEN_NS[7:], "next header", id="hop-by-hop"),
        pytest.param(GOLDEN_NS[:4] + b"\x00\x21" + GOLDEN_NS[6:], "payload length", id="long"),
        pytest.param(GOLDEN_NS[:4] + b"\x00\x10" + GOLDEN_NS[6:], "icmpv6 length", id="short"),
        pytest.param(with_message(b"\x80" + GOLDEN_NS[41:]), "icmpv6 type", id="echo-request"),
        pytest.param(
            with_message(GOLDEN_NS[40:41] + b"\x01" + GOLDEN_NS[42:]), "icmpv6 code", id="code-1"
        ),
        pytest.param(
            GOLDEN_NS[:42] + b"\x1a\x2c" + GOLDEN_NS[44:], "icmpv6 checksum", id="bad-checksum"
        ),
        pytest.param(GOLDEN_NS[:-1] + b"\x02", "icmpv6 checksum", id="mac-changed"),
        pytest.param(with_options(b"\x01\x00" + bytes(6)), "option length", id="zero-length"),
        pytest.param(with_options(b"\x01\x02" + bytes(6)), "option", id="past-the-end"),
        pytest.param(with_options(b"\x01\x02" + bytes(14)), "option length", id="lla-16-bytes"),
        pytest.param(with_options(b"\x0e"), "option", id="half-an-option-header"),
    ],
)
def test_malformed(data, field):
    with pytest.raises(errors.MalformedFrame) as caught:
        ndp.decode(data)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("options", "source_mac"),
    [
        pytest.param(b"", None, id="none"),
        pytest.param(
            b"\x0e\x02" + bytes(14) + b"\x01\x01" + samples.PEER_MAC.octets,
            samples.PEER_MAC,
            id="unknown-skipped",
        ),
        pytest.param(b"\x02\x01" + samples.STRANGER_MAC.octets, None, id="tlla-ignored-in-ns"),
        pytest.param(
            b"\x01\x01" + samples.PEER_MAC.octets + b"\x01\x01" + samples.OUR_MAC.octets,
            samples.PEER_MAC,
            id="first-slla-wins",
        ),
    ],
)
def test_options(options, source_mac):
    packet = ndp.decode(with_options(options))
    assert packet.message == ndp.NeighborSolicitation(GOLDEN_PACKET.message.target, source_mac)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        pytest.param(GOLDEN_NS, ndp.NEIGHBOR_SOLICITATION, id="ns"),
        pytest.param(with_message(b"\x80" + GOLDEN_NS[41:]), 128, id="echo-request"),
        pytest.param(GOLDEN_NS[:6] + b"\x11" + GOLDEN_NS[7:], None, id="udp"),
        pytest.param(GOLDEN_NS[:4] + b"\x00\x00" + GOLDEN_NS[6:40], None, id="empty-payload"),
    ],
)
def test_icmp_type(data, kind):
    assert ndp.icmp_type(data) == kind


@pytest.mark.parametrize(
    ("ip", "group"),
    [
        pytest.param("2001:db8::100", "ff02::1:ff00:100", id="short"),
        pytest.param("2001:db8::abcd:ef12:3456", "ff02::1:ff12:3456", id="low-24-bits"),
    ],
)
def test_solicited_node(ip, group):
    assert ndp.solicited_node(ipaddress.IPv6Address(ip)) == ipaddress.IPv6Address(group)


def test_unsolicited_advertisement():
    frame = ethernet.decode(ndp.unsolicited(samples.OUR_MAC, samples.VIP6))
    assert (str(frame.dst), frame.src) == ("33:33:00:00:00:01", samples.OUR_MAC)
    assert ndp.decode(frame.payload) == ndp.Packet(
        samples.VIP6,
        ndp.ALL_NODES,
        ndp.NeighborAdvertisement(samples.VIP6, samples.OUR_MAC, solicited=False, override=True),
    )


def test_dad_probe():
    frame = ethernet.decode(ndp.dad_probe(samples.OUR_MAC, samples.VIP6))
    group = ndp.solicited_node(samples.VIP6)
    assert frame.dst == ethernet.ipv6_multicast(group)
    assert ndp.decode(frame.payload) == ndp.Packet(
        ndp.UNSPECIFIED, group, ndp.NeighborSolicitation(samples.VIP6)
    )
