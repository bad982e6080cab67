import contextlib
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb import errors
from porterlb.l2 import arp, ethernet
from tests.unit.l2 import samples

# who-has 198.18.0.1 tell 198.18.0.2, from 02:00:00:00:00:02, broadcast, padded to 60 bytes.
GOLDEN_REQUEST = bytes.fromhex(
    "ffffffffffff 020000000002 0806"  # Ethernet: dst, src, EtherType ARP
    "0001 0800 06 04 0001"  # Ethernet, IPv4, hlen 6, plen 4, request
    "020000000002 c6120002"  # sender 02:00:00:00:00:02 / 198.18.0.2
    "000000000000 c6120001"  # target unknown / 198.18.0.1
) + bytes(18)

packets = st.builds(
    arp.Packet,
    operation=st.integers(0, 0xFFFF),
    sender_mac=samples.macs,
    sender_ip=samples.ipv4s,
    target_mac=samples.macs,
    target_ip=samples.ipv4s,
)


def test_golden_request_decodes():
    frame = ethernet.decode(GOLDEN_REQUEST)
    assert frame.ethertype == ethernet.ETHERTYPE_ARP
    assert arp.decode(frame.payload) == arp.Packet(
        arp.REQUEST,
        ethernet.MacAddress.parse("02:00:00:00:00:02"),
        ipaddress.IPv4Address("198.18.0.2"),
        ethernet.ZERO,
        ipaddress.IPv4Address("198.18.0.1"),
    )


def test_golden_request_encodes():
    packet = arp.Packet(
        arp.REQUEST,
        samples.PEER_MAC,
        ipaddress.IPv4Address("198.18.0.2"),
        ethernet.ZERO,
        ipaddress.IPv4Address("198.18.0.1"),
    )
    assert arp.frame(ethernet.BROADCAST, packet) == GOLDEN_REQUEST


@given(packets)
def test_round_trip(packet):
    assert arp.decode(arp.encode(packet)) == packet


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_malformed(data):
    with contextlib.suppress(errors.MalformedFrame):
        arp.decode(data)


@pytest.mark.parametrize("length", range(arp.PACKET_LEN))
def test_truncated_at_every_offset(length):
    with pytest.raises(errors.MalformedFrame) as caught:
        arp.decode(arp.encode(arp.decode(ethernet.decode(GOLDEN_REQUEST).payload))[:length])
    assert caught.value.offset == length


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [
        pytest.param(0, b"\x00\x06", "htype", id="ieee802-hardware"),
        pytest.param(2, b"\x86\xdd", "ptype", id="ipv6-protocol"),
        pytest.param(4, b"\x08", "hlen", id="long-hardware-address"),
        pytest.param(5, b"\x10", "plen", id="long-protocol-address"),
    ],
)
def test_unsupported_fixed_fields(offset, value, field):
    payload = bytearray(ethernet.decode(GOLDEN_REQUEST).payload)
    payload[offset : offset + len(value)] = value
    with pytest.raises(errors.MalformedFrame) as caught:
        arp.decode(bytes(payload))
    assert (caught.value.field, caught.value.offset) == (field, offset)


def test_reply_is_unicast_to_the_asker():
    request = arp.Packet(
        arp.REQUEST, samples.ROUTER_MAC, samples.ROUTER4, ethernet.ZERO, samples.VIP4
    )
    frame = ethernet.decode(arp.reply(request, samples.OUR_MAC))
    assert (frame.dst, frame.src) == (samples.ROUTER_MAC, samples.OUR_MAC)
    assert arp.decode(frame.payload) == arp.Packet(
        arp.REPLY, samples.OUR_MAC, samples.VIP4, samples.ROUTER_MAC, samples.ROUTER4
    )


def test_gratuitous_request_and_reply():
    request, reply = (ethernet.decode(f) for f in arp.gratuitous(samples.OUR_MAC, samples.VIP4))
    assert request.dst == reply.dst == ethernet.BROADCAST
    assert arp.decode(request.payload) == arp.Packet(
        arp.REQUEST, samples.OUR_MAC, samples.VIP4, ethernet.ZERO, samples.VIP4
    )
    assert arp.decode(reply.payload) == arp.Packet(
        arp.REPLY, samples.OUR_MAC, samples.VIP4, samples.OUR_MAC, samples.VIP4
    )


def test_probe_has_unspecified_sender():
    frame = ethernet.decode(arp.probe(samples.OUR_MAC, samples.VIP4))
    assert frame.dst == ethernet.BROADCAST
    assert arp.decode(frame.payload) == arp.Packet(
        arp.REQUEST, samples.OUR_MAC, arp.UNSPECIFIED, ethernet.ZERO, samples.VIP4
    )
