import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb import errors
from porterlb.api import address

ip = ipaddress.ip_address


V4_24 = "198.18.0.1-198.18.0.254"
V6_64 = "2001:db8::1-2001:db8::ffff:ffff:ffff:ffff"
V6_ALL = "::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


@pytest.mark.parametrize(
    ("text", "shown", "size", "usable"),
    [
        pytest.param("198.18.0.7", "198.18.0.7", 1, "198.18.0.7", id="ip"),
        pytest.param(" 198.18.0.7\n", "198.18.0.7", 1, "198.18.0.7", id="ip-padded"),
        pytest.param("198.18.0.0/24", "198.18.0.0/24", 256, V4_24, id="cidr-24"),
        pytest.param("198.18.0.0/30", "198.18.0.0/30", 4, "198.18.0.1-198.18.0.2", id="cidr-30"),
        pytest.param("198.18.0.0/31", "198.18.0.0/31", 2, "198.18.0.0-198.18.0.1", id="cidr-31"),
        pytest.param("198.18.0.7/32", "198.18.0.7/32", 1, "198.18.0.7", id="cidr-32"),
        pytest.param("10.0.0.0/8", "10.0.0.0/8", 2**24, "10.0.0.1-10.255.255.254", id="cidr-8"),
        pytest.param("0.0.0.0/0", "0.0.0.0/0", 2**32, "0.0.0.1-255.255.255.254", id="v4-all"),
        pytest.param("198.18.0.10-198.18.0.20", "198.18.0.10-198.18.0.20", 11, None, id="range"),
        pytest.param("198.18.0.10 - 198.18.0.20", "198.18.0.10-198.18.0.20", 11, None, id="spaced"),
        pytest.param("198.18.0.0-198.18.0.255", "198.18.0.0-198.18.0.255", 256, None, id="literal"),
        pytest.param("198.18.0.9-198.18.0.9", "198.18.0.9", 1, None, id="range-of-one"),
        pytest.param("2001:db8::5", "2001:db8::5", 1, None, id="v6-ip"),
        pytest.param(
            "2001:db8::/120", "2001:db8::/120", 256, "2001:db8::1-2001:db8::ff", id="v6-120"
        ),
        pytest.param("2001:db8::/64", "2001:db8::/64", 2**64, V6_64, id="v6-64"),
        pytest.param("2001:db8::/127", "2001:db8::/127", 2, "2001:db8::-2001:db8::1", id="v6-127"),
        pytest.param("2001:db8::/128", "2001:db8::/128", 1, "2001:db8::", id="v6-128"),
        pytest.param("::/0", "::/0", 2**128, V6_ALL, id="v6-all"),
        pytest.param(
            "2001:db8::1 - 2001:db8::ff", "2001:db8::1-2001:db8::ff", 255, None, id="v6-range"
        ),
    ],
)
def test_parse(text, shown, size, usable):
    """`usable` None means the whole range is usable: ranges are taken literally."""
    parsed = address.parse(text)
    assert str(parsed) == shown
    assert parsed.size == size == int(parsed.last) - int(parsed.first) + 1
    assert parsed.family == parsed.first.version == parsed.last.version
    assert str(parsed.usable) == (usable or str(parsed))
    assert address.parse(shown) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "address '': '' is not an IP address", id="empty"),
        pytest.param("lan", "address 'lan': 'lan' is not an IP address", id="word"),
        pytest.param(
            "198.18.0.256",
            "address '198.18.0.256': '198.18.0.256' is not an IP address",
            id="octet",
        ),
        pytest.param(
            "198.18.0.1-", "address '198.18.0.1-': '' is not an IP address", id="range-open"
        ),
        pytest.param(
            "198.18.0.1-198.18.0.2-198.18.0.3",
            "'198.18.0.2-198.18.0.3' is not an IP address",
            id="range-three",
        ),
        pytest.param(
            "198.18.0.1/24",
            "address '198.18.0.1/24' has host bits set: the network is 198.18.0.0/24",
            id="host-bits",
        ),
        pytest.param(
            "2001:db8::1/64", "has host bits set: the network is 2001:db8::/64", id="host-bits-v6"
        ),
        pytest.param(
            "198.18.0.0/33", "address '198.18.0.0/33': /33 is too long for IPv4", id="prefix-long"
        ),
        pytest.param("2001:db8::/129", "/129 is too long for IPv6", id="prefix-long-v6"),
        pytest.param(
            "198.18.0.0/255.255.255.0",
            "the prefix length '255.255.255.0' is not a number of bits",
            id="netmask",
        ),
        pytest.param(
            "198.18.0.0/", "the prefix length '' is not a number of bits", id="prefix-empty"
        ),
        pytest.param("lan/24", "'lan' is not an IP address", id="cidr-word"),
        pytest.param(
            "198.18.0.20-198.18.0.10",
            "address '198.18.0.20-198.18.0.10': the end 198.18.0.10 precedes the start 198.18.0.20",
            id="reversed",
        ),
        pytest.param(
            "198.18.0.1-2001:db8::1",
            "the start 198.18.0.1 is IPv4 but the end 2001:db8::1 is IPv6",
            id="mixed",
        ),
        pytest.param(
            "2001:db8::1-198.18.0.1",
            "the start 2001:db8::1 is IPv6 but the end 198.18.0.1 is IPv4",
            id="mixed-v6-first",
        ),
        pytest.param(
            "fe80::1%eth0",
            "address 'fe80::1%eth0': the zone %eth0 has no meaning for a pool",
            id="zone",
        ),
    ],
)
def test_parse_rejects(text, message):
    with pytest.raises(errors.InvalidSpec, match=re.escape(message)):
        address.parse(text)


@pytest.mark.parametrize(
    ("text", "candidate", "reason"),
    [
        pytest.param("198.18.0.0/24", "198.18.0.0", "the network address", id="network"),
        pytest.param("198.18.0.0/24", "198.18.0.255", "the broadcast address", id="broadcast"),
        pytest.param("198.18.0.0/24", "198.18.0.1", None, id="usable"),
        pytest.param("198.18.0.0/24", "198.18.1.0", None, id="outside"),
        pytest.param("198.18.0.0/31", "198.18.0.0", None, id="slash-31"),
        pytest.param("198.18.0.0-198.18.0.255", "198.18.0.0", None, id="range"),
        pytest.param(
            "2001:db8::/64", "2001:db8::", "the Subnet-Router anycast address", id="anycast"
        ),
        pytest.param("2001:db8::/64", "2001:db8::ffff:ffff:ffff:ffff", None, id="v6-last"),
        pytest.param("2001:db8::/127", "2001:db8::", None, id="slash-127"),
        pytest.param("198.18.0.0/24", "2001:db8::", None, id="other-family"),
    ],
)
def test_reserved(text, candidate, reason):
    assert address.parse(text).reserved(ip(candidate)) == reason


@pytest.mark.parametrize(
    ("one", "other", "overlaps"),
    [
        pytest.param("198.18.0.0/24", "198.18.0.10-198.18.0.20", True, id="inside"),
        pytest.param("198.18.0.0/24", "198.18.0.255-198.18.1.5", True, id="last-address"),
        pytest.param("198.18.0.0/24", "198.18.1.0/24", False, id="adjacent"),
        pytest.param("198.18.0.0/24", "2001:db8::/64", False, id="families"),
        pytest.param("::/0", "2001:db8::5", True, id="v6-all"),
        pytest.param("0.0.0.0/0", "2001:db8::5", False, id="v4-all-vs-v6"),
    ],
)
def test_overlaps(one, other, overlaps):
    first, second = address.parse(one), address.parse(other)
    assert first.overlaps(second) is overlaps
    assert second.overlaps(first) is overlaps


@pytest.mark.parametrize(
    ("first", "last", "prefixlen", "message"),
    [
        pytest.param(
            "198.18.0.2",
            "198.18.0.1",
            None,
            "the end 198.18.0.1 precedes the start 198.18.0.2",
            id="reversed",
        ),
        pytest.param(
            "198.18.0.1", "2001:db8::1", None, "is IPv4 but the end 2001:db8::1 is IPv6", id="mixed"
        ),
        pytest.param(
            "198.18.0.0",
            "198.18.0.127",
            24,
            "198.18.0.0-198.18.0.127 is not the CIDR /24",
            id="prefix",
        ),
    ],
)
def test_range_invariants(first, last, prefixlen, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        address.AddressRange(ip(first), ip(last), prefixlen)


networks = st.one_of(
    st.ip_addresses(v=4).flatmap(
        lambda a: st.integers(0, 32).map(lambda n: ipaddress.ip_network((a, n), strict=False))
    ),
    st.ip_addresses(v=6).flatmap(
        lambda a: st.integers(0, 128).map(lambda n: ipaddress.ip_network((a, n), strict=False))
    ),
)


RESERVED = {4: (31, 2), 6: (127, 1)}
"""Per family: the prefix length from which every address is usable, and how many are not below."""


@given(networks)
def test_cidr_matches_ipaddress(network):
    parsed = address.parse(str(network))
    assert (parsed.first, parsed.last) == (network.network_address, network.broadcast_address)
    assert parsed.size == network.num_addresses
    usable = parsed.usable
    assert parsed.contains(usable.first) and parsed.contains(usable.last)
    limit, reserved = RESERVED[network.version]
    assert parsed.size - usable.size == (reserved if network.prefixlen < limit else 0)
    assert all(parsed.reserved(edge) is None for edge in (usable.first, usable.last))


pairs = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
    st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)),
)


@given(pairs)
def test_range_round_trips(pair):
    first, last = sorted(pair)
    parsed = address.parse(f"{first} - {last}")
    assert parsed == address.AddressRange(first, last)
    assert parsed.usable == parsed
    assert address.parse(str(parsed)) == parsed
    assert parsed.contains(first) and parsed.contains(last)
    assert int(first) == 0 or not parsed.contains(first - 1)
    assert int(last) == 2**last.max_prefixlen - 1 or not parsed.contains(last + 1)
