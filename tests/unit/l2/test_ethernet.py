import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb import errors
from porterlb.l2 import ethernet
from tests.unit.l2 import samples


@pytest.mark.parametrize(
    ("text", "octets"),
    [
        pytest.param("02:00:00:00:00:01", b"\x02\x00\x00\x00\x00\x01", id="colons"),
        pytest.param("AA-BB-CC-DD-EE-FF", b"\xaa\xbb\xcc\xdd\xee\xff", id="dashes-upper"),
    ],
)
def test_mac_parse_and_str(text, octets):
    mac = ethernet.MacAddress.parse(text)
    assert mac.octets == octets
    assert str(mac) == text.lower().replace("-", ":")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("02:00:00:00:00", id="five-octets"),
        pytest.param("02:00:00:00:00:001", id="three-digits"),
        pytest.param("zz:00:00:00:00:01", id="not-hex"),
    ],
)
def test_mac_parse_rejects(text):
    with pytest.raises(ValueError):
        ethernet.MacAddress.parse(text)


def test_mac_needs_six_octets():
    with pytest.raises(ValueError, match="6 octets"):
        ethernet.MacAddress(b"\x00" * 5)


@pytest.mark.parametrize(
    ("group", "mac"),
    [
        pytest.param("ff02::1", "33:33:00:00:00:01", id="all-nodes"),
        pytest.param("ff02::1:ff00:100", "33:33:ff:00:01:00", id="solicited-node"),
    ],
)
def test_ipv6_multicast(group, mac):
    assert str(ethernet.ipv6_multicast(ipaddress.IPv6Address(group))) == mac


def test_encode_pads_to_minimum():
    frame = ethernet.Frame(ethernet.BROADCAST, samples.OUR_MAC, 0x0806, b"abc")
    data = ethernet.encode(frame)
    assert len(data) == ethernet.MIN_FRAME_LEN
    assert data == ethernet.BROADCAST.octets + samples.OUR_MAC.octets + b"\x08\x06abc" + bytes(43)


@given(
    dst=samples.macs,
    src=samples.macs,
    ethertype=st.integers(0, 0xFFFF),
    payload=st.binary(min_size=46, max_size=1500),
)
def test_round_trip(dst, src, ethertype, payload):
    frame = ethernet.Frame(dst, src, ethertype, payload)
    assert ethernet.decode(ethernet.encode(frame)) == frame


@given(st.binary(max_size=80))
def test_arbitrary_bytes_raise_only_malformed(data):
    try:
        frame = ethernet.decode(data)
    except errors.MalformedFrame:
        assert len(data) < ethernet.HEADER_LEN
    else:
        assert ethernet.encode(frame)[: len(data)] == data


@pytest.mark.parametrize("length", range(ethernet.HEADER_LEN))
def test_decode_truncated(length):
    with pytest.raises(errors.MalformedFrame) as caught:
        ethernet.decode(bytes(length))
    assert caught.value.offset == length
