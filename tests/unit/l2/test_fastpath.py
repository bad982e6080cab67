"""The fast path against the reference: whenever ``fastpath.decide`` answers, it says exactly
what ``responder.handle`` says (verdict, target, reply bytes, claim), for the frames the tables
of test_responder.py use, for their mutations, and for arbitrary bytes; and it does answer for
the frames a LAN sends most, so the property is not met by always falling back."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.l2 import arp, ethernet, fastpath, ndp, responder
from tests.unit.l2 import samples
from tests.unit.l2.samples import arp_request, na, ns

Verdict = responder.Verdict
ANNOUNCED = {samples.VIP4: "eth0", samples.VIP6: "eth0"}
IFNAMES = ("eth0", "eth1")
GROUP_MAC = ethernet.MacAddress.parse("01:00:5e:00:00:fb")


def owns(ip, ifname):
    where = ANNOUNCED.get(ip)
    if where is None:
        return responder.Ownership.NONE
    return responder.Ownership.OURS if where == ifname else responder.Ownership.ELSEWHERE


def owns_packed(packed, ifname):
    return owns(ipaddress.ip_address(packed), ifname)


def reference(frame, ifname="eth0"):
    """The reference outcome in the fast path's shape."""
    outcome = responder.handle(frame, ifname=ifname, mac=samples.OUR_MAC, owns=owns)
    claim = outcome.claim
    return fastpath.Fast(
        outcome.verdict,
        None if outcome.ip is None else outcome.ip.packed,
        outcome.reply,
        None if claim is None else (claim.ip.packed, claim.mac.octets),
    )


def fast(frame, ifname="eth0"):
    return fastpath.decide(frame, ifname=ifname, mac=samples.OUR_MAC.octets, owns=owns_packed)


def assert_agrees(frame, ifname="eth0"):
    decided = fast(frame, ifname)
    if decided is not None:
        assert decided == reference(frame, ifname)
    return decided


def group(target):
    return ndp.solicited_node(target)


HOT = [
    pytest.param(arp_request(), id="arp-broadcast"),
    pytest.param(arp_request(dst=samples.OUR_MAC), id="arp-unicast"),
    pytest.param(arp_request(sender_ip=arp.UNSPECIFIED), id="arp-probe"),
    pytest.param(arp_request(dst=samples.PEER_MAC), id="arp-for-peer"),
    pytest.param(arp_request(samples.OTHER4), id="arp-not-ours"),
    pytest.param(arp_request(operation=arp.REPLY), id="arp-reply"),
    pytest.param(
        arp_request(samples.VIP4, sender_ip=samples.VIP4, sender_mac=samples.STRANGER_MAC),
        id="foreign-garp",
    ),
    pytest.param(arp_request(src=samples.OUR_MAC), id="arp-from-self"),
    pytest.param(arp_request()[:42], id="arp-unpadded"),
    pytest.param(ns(), id="ns-multicast"),
    pytest.param(ns(source_mac=None), id="ns-multicast-no-slla"),
    pytest.param(ns(dst=samples.VIP6), id="ns-unicast-nud"),
    pytest.param(ns(dst=samples.VIP6, source_mac=None), id="ns-nud-no-slla"),
    pytest.param(ns(src=ndp.UNSPECIFIED, source_mac=None), id="ns-dad"),
    pytest.param(ns(src=ndp.UNSPECIFIED), id="ns-dad-with-slla"),
    pytest.param(ns(src=ndp.UNSPECIFIED, source_mac=None, dst=samples.VIP6), id="ns-dad-unicast"),
    pytest.param(ns(dst=samples.VIP6, eth_dst=samples.PEER_MAC), id="ns-unicast-for-peer"),
    pytest.param(ns(dst=group(samples.OTHER6)), id="ns-wrong-group"),
    pytest.param(ns(dst=ndp.ALL_NODES), id="ns-to-all-nodes"),
    pytest.param(ns(eth_dst=samples.OUR_MAC), id="ns-group-ip-our-mac"),
    pytest.param(ns(hop_limit=64), id="ns-routed"),
    pytest.param(ns(ipaddress.IPv6Address("ff02::1")), id="ns-multicast-target"),
    pytest.param(ns(samples.OTHER6), id="ns-not-ours"),
    pytest.param(ns(samples.OTHER6, src=samples.VIP6), id="ns-source-claims"),
    pytest.param(ns(eth_src=samples.OUR_MAC), id="ns-from-self"),
    *(
        pytest.param(frame, id=f"hostile-{name}")
        for name, frame in {
            "arp-broadcast-mac": arp_request(sender_mac=ethernet.BROADCAST),
            "arp-multicast-mac": arp_request(sender_mac=GROUP_MAC),
            "arp-zero-mac": arp_request(sender_mac=ethernet.ZERO),
            "arp-broadcast-ip": arp_request(sender_ip=ipaddress.IPv4Address("255.255.255.255")),
            "arp-multicast-ip": arp_request(sender_ip=ipaddress.IPv4Address("224.0.0.251")),
            "arp-loopback-ip": arp_request(sender_ip=ipaddress.IPv4Address("127.0.0.1")),
            "arp-zero-net-ip": arp_request(sender_ip=ipaddress.IPv4Address("0.1.2.3")),
            "ns-multicast-slla": ns(source_mac=GROUP_MAC),
            "ns-multicast-eth-src": ns(source_mac=None, eth_src=GROUP_MAC),
            "ns-multicast-src": ns(src=ipaddress.IPv6Address("ff02::1")),
            "ns-loopback-src": ns(src=ipaddress.IPv6Address("::1")),
            "ns-v4-mapped-src": ns(src=ipaddress.IPv6Address("::ffff:198.18.0.1")),
        }.items()
    ),
    pytest.param(
        ethernet.encode(ethernet.Frame(samples.OUR_MAC, samples.ROUTER_MAC, 0x0800, bytes(46))),
        id="ipv4",
    ),
]


@pytest.mark.parametrize("frame", HOT)
@pytest.mark.parametrize("ifname", IFNAMES)
def test_common_frames_take_the_fast_path_and_agree(frame, ifname):
    assert assert_agrees(frame, ifname) is not None


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(na(), id="na"),
        pytest.param(arp_request()[:30], id="arp-truncated"),
        pytest.param(b"\x01\x02\x03", id="runt"),
        pytest.param(ns()[:-1], id="ns-truncated"),
    ],
)
def test_rare_frames_fall_back(frame):
    assert fast(frame) is None


def test_bad_checksum_falls_back():
    frame = bytearray(ns())
    frame[60] ^= 0xFF
    assert fast(bytes(frame)) is None
    assert reference(bytes(frame)).verdict is Verdict.MALFORMED


@pytest.mark.parametrize("ifname", IFNAMES)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_agree(ifname, data):
    assert_agrees(data, ifname)


def seeds():
    return st.sampled_from([param.values[0] for param in HOT] + [na()])


@given(
    seeds(),
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), min_size=1, max_size=4),
    st.sampled_from(IFNAMES),
)
def test_mutated_frames_agree(frame, flips, ifname):
    data = bytearray(frame)
    for offset, value in flips:
        data[offset % len(data)] = value
    assert_agrees(bytes(data), ifname)


@given(seeds(), st.integers(0, 100), st.sampled_from(IFNAMES))
def test_truncated_and_padded_frames_agree(frame, cut, ifname):
    assert_agrees(frame[:cut], ifname)
    assert_agrees(frame + bytes(cut), ifname)


@given(
    target=st.sampled_from([samples.VIP6, samples.OTHER6]) | samples.ipv6s,
    src=st.sampled_from([samples.ROUTER6, ndp.UNSPECIFIED, ipaddress.IPv6Address("::1")])
    | samples.ipv6s,
    dst=st.sampled_from(["group", "target"]) | samples.ipv6s,
    source_mac=st.none() | st.just(ethernet.BROADCAST) | samples.macs,
    eth_src=samples.macs,
    eth_dst=st.sampled_from(["group", "ours"]) | samples.macs,
    hop_limit=st.sampled_from([255, 64]),
)
def test_solicitations_agree(target, src, dst, source_mac, eth_src, eth_dst, hop_limit):
    ip_dst = {"group": group(target), "target": target}.get(dst, dst)
    mac_dst = {"group": ethernet.ipv6_multicast(group(target)), "ours": samples.OUR_MAC}.get(
        eth_dst, eth_dst
    )
    frame = ns(
        target,
        src=src,
        dst=ip_dst,
        source_mac=source_mac,
        eth_src=eth_src,
        eth_dst=mac_dst,
        hop_limit=hop_limit,
    )
    assert assert_agrees(frame) is not None


@given(
    target=st.sampled_from([samples.VIP4, samples.OTHER4]) | samples.ipv4s,
    sender_ip=st.sampled_from(
        [samples.ROUTER4, arp.UNSPECIFIED, ipaddress.IPv4Address("255.255.255.255")]
    )
    | samples.ipv4s,
    sender_mac=st.sampled_from([ethernet.BROADCAST, ethernet.ZERO]) | samples.macs,
    dst=st.sampled_from([ethernet.BROADCAST, samples.OUR_MAC]) | samples.macs,
    operation=st.sampled_from([arp.REQUEST, arp.REPLY]) | st.integers(0, 0xFFFF),
)
def test_arp_requests_agree(target, sender_ip, sender_mac, dst, operation):
    frame = arp_request(
        target, sender_mac=sender_mac, sender_ip=sender_ip, dst=dst, operation=operation
    )
    assert assert_agrees(frame) is not None


@given(seeds(), st.integers(0, 0xFFFF), st.integers(0, 80))
def test_any_ipv6_payload_length_agrees(frame, length, cut):
    data = bytearray(frame)
    if len(data) > 19:
        data[18:20] = length.to_bytes(2, "big")
    assert_agrees(bytes(data[: len(data) - cut]))
