"""The router's forwarding record: which MAC each frame to an IP went to, and which
connection a SYN opened."""

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.lab import forwarding, traffic

OLD, NEW = "02:70:6c:00:01:01", "02:70:6c:00:01:03"
IP = "198.18.0.200"
ROUTER = bytes.fromhex("02706c000001")


def _tcp(source_port: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", source_port, 80, 1, 0, 5 << 4, flags, 512, 0, 0)


def _ipv4(dst: str, protocol: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(payload), 0, 0, 64, protocol, 0,
        ipaddress.IPv4Address("198.51.100.2").packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return header + payload


def _ipv6(dst: str, protocol: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!IHBB16s16s",
        6 << 28, len(payload), protocol, 64,
        ipaddress.IPv6Address("2001:db8::2").packed, ipaddress.IPv6Address(dst).packed,
    )  # fmt: skip
    return header + payload


def _frame(mac: str, ethertype: int, packet: bytes) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) + ROUTER + struct.pack("!H", ethertype) + packet


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            _frame(OLD, 0x0800, _ipv4(IP, 6, _tcp(40000, forwarding.SYN))),
            (ipaddress.ip_address(IP), OLD, 40000),
            id="an-ipv4-syn-names-its-client-port",
        ),
        pytest.param(
            _frame(NEW, 0x0800, _ipv4(IP, 6, _tcp(40000, forwarding.ACK))),
            (ipaddress.ip_address(IP), NEW, 0),
            id="a-later-segment-opens-nothing",
        ),
        pytest.param(
            _frame(NEW, 0x0800, _ipv4(IP, 6, _tcp(40000, forwarding.SYN | forwarding.ACK))),
            (ipaddress.ip_address(IP), NEW, 0),
            id="a-syn-ack-opens-nothing",
        ),
        pytest.param(
            _frame(OLD, 0x0800, _ipv4(IP, 17, b"\x00" * 8)),
            (ipaddress.ip_address(IP), OLD, 0),
            id="udp-counts-for-the-mac",
        ),
        pytest.param(
            _frame(OLD, 0x86DD, _ipv6("2001:db8::c8", 6, _tcp(41000, forwarding.SYN))),
            (ipaddress.ip_address("2001:db8::c8"), OLD, 41000),
            id="an-ipv6-syn",
        ),
        pytest.param(_frame(OLD, 0x0806, b"\x00" * 28), None, id="arp-is-no-traffic"),
        pytest.param(_frame(OLD, 0x0800, b"\x45"), None, id="a-truncated-frame"),
    ],
)
def test_a_frame_tells_where_it_went_and_what_it_opened(data, expected):
    assert forwarding.parse_frame(data) == expected


def frames(*rows):
    """(at, mac, port) rows of frames to IP."""
    return [forwarding.Frame(at, IP, mac, port) for at, mac, port in rows]


def test_the_hops_are_the_changes_of_mac_in_order():
    seen = frames((1.0, OLD, 0), (1.2, OLD, 5), (1.1, OLD, 4), (1.3, NEW, 0), (1.4, NEW, 6))
    seen.append(forwarding.Frame(1.5, "198.18.0.201", OLD, 0))  # another IP's
    assert [(h.at, h.mac) for h in forwarding.hops(seen, IP)] == [(1.0, OLD), (1.3, NEW)]


def test_a_flip_back_to_the_old_mac_is_a_hop_of_its_own():
    seen = frames((1.0, OLD, 0), (1.3, NEW, 0), (1.35, OLD, 7), (1.4, NEW, 0))
    assert [h.mac for h in forwarding.hops(seen, IP)] == [OLD, NEW, OLD, NEW]


@given(st.lists(st.tuples(st.floats(0, 100), st.sampled_from([OLD, NEW]), st.just(0))))
def test_the_hops_are_every_frame_less_the_repeats(rows):
    found = forwarding.hops(frames(*rows), IP)
    in_order = [mac for _, mac, _ in sorted(rows, key=lambda row: row[0])]  # ties: as read
    assert [h.mac for h in found] == [
        mac for n, mac in enumerate(in_order) if n == 0 or in_order[n - 1] != mac
    ]


def test_a_request_is_opened_through_the_mac_of_its_first_syn_after_it_was_sent():
    reused = traffic.Request(2.0, "", "reset", 5000)  # port 5000 served an earlier request
    earlier = traffic.Request(1.0, "w1", "", 5000)
    unseen = traffic.Request(2.1, "", "connect-timeout", 5002)
    unknown = traffic.Request(2.2, "", "refused", 0)
    seen = frames((1.001, OLD, 5000), (2.002, NEW, 5000), (2.2, NEW, 0))
    via = forwarding.opened_via(seen, IP, [reused, earlier, unseen, unknown])
    assert via == {earlier: seen[0], reused: seen[1]}
