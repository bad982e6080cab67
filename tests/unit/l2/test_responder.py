import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.l2 import arp, ethernet, ndp, responder
from tests.unit.l2 import samples
from tests.unit.l2.samples import arp_request, na, ns

Verdict = responder.Verdict
ANNOUNCED = {samples.VIP4: "eth0", samples.VIP6: "eth0"}


def owns(ip, ifname):
    where = ANNOUNCED.get(ip)
    if where is None:
        return responder.Ownership.NONE
    return responder.Ownership.OURS if where == ifname else responder.Ownership.ELSEWHERE


def handle(frame, ifname="eth0"):
    return responder.handle(frame, ifname=ifname, mac=samples.OUR_MAC, owns=owns)


def echo_request():
    payload = bytearray(ethernet.decode(ns()).payload)
    payload[ndp.IPV6_HEADER_LEN] = 128
    return ethernet.encode(
        ethernet.Frame(samples.OUR_MAC, samples.ROUTER_MAC, ethernet.ETHERTYPE_IPV6, bytes(payload))
    )


def corrupt(frame, offset):
    data = bytearray(frame)
    data[offset] ^= 0xFF
    return bytes(data)


ipv4_udp = ethernet.encode(ethernet.Frame(samples.OUR_MAC, samples.ROUTER_MAC, 0x0800, bytes(46)))
group_of_other = ndp.solicited_node(samples.OTHER6)


@pytest.mark.parametrize(
    ("frame", "ifname", "verdict"),
    [
        pytest.param(arp_request(), "eth0", Verdict.ANSWERED, id="arp-broadcast"),
        pytest.param(arp_request(dst=samples.OUR_MAC), "eth0", Verdict.ANSWERED, id="arp-unicast"),
        pytest.param(
            arp_request(sender_ip=arp.UNSPECIFIED), "eth0", Verdict.ANSWERED, id="arp-probe"
        ),
        pytest.param(
            arp_request(dst=samples.PEER_MAC), "eth0", Verdict.WRONG_DESTINATION, id="arp-for-peer"
        ),
        pytest.param(arp_request(samples.OTHER4), "eth0", Verdict.NOT_OURS, id="arp-not-ours"),
        pytest.param(arp_request(), "eth1", Verdict.WRONG_INTERFACE, id="arp-wrong-interface"),
        pytest.param(
            arp_request(operation=arp.REPLY), "eth0", Verdict.NOT_A_REQUEST, id="arp-reply"
        ),
        pytest.param(arp_request(operation=3), "eth0", Verdict.NOT_A_REQUEST, id="rarp-request"),
        pytest.param(
            arp_request(src=samples.OUR_MAC), "eth0", Verdict.FROM_SELF, id="arp-from-self"
        ),
        pytest.param(arp_request()[:30], "eth0", Verdict.MALFORMED, id="arp-truncated"),
        pytest.param(corrupt(arp_request(), 15), "eth0", Verdict.MALFORMED, id="arp-htype"),
        pytest.param(b"\x01\x02\x03", "eth0", Verdict.MALFORMED, id="runt"),
        pytest.param(ipv4_udp, "eth0", Verdict.NOT_A_REQUEST, id="ipv4"),
        pytest.param(ns(), "eth0", Verdict.ANSWERED, id="ns-multicast"),
        pytest.param(ns(source_mac=None), "eth0", Verdict.ANSWERED, id="ns-multicast-no-slla"),
        pytest.param(ns(dst=samples.VIP6), "eth0", Verdict.ANSWERED, id="ns-unicast-nud"),
        pytest.param(
            ns(dst=samples.VIP6, source_mac=None), "eth0", Verdict.ANSWERED, id="ns-nud-no-slla"
        ),
        pytest.param(
            ns(src=ndp.UNSPECIFIED, source_mac=None), "eth0", Verdict.ANSWERED, id="ns-dad"
        ),
        pytest.param(
            ns(dst=samples.VIP6, eth_dst=samples.PEER_MAC),
            "eth0",
            Verdict.WRONG_DESTINATION,
            id="ns-unicast-for-peer",
        ),
        pytest.param(
            ns(dst=group_of_other), "eth0", Verdict.WRONG_DESTINATION, id="ns-wrong-group"
        ),
        pytest.param(
            ns(dst=ndp.ALL_NODES), "eth0", Verdict.WRONG_DESTINATION, id="ns-to-all-nodes"
        ),
        pytest.param(
            ns(eth_dst=samples.OUR_MAC), "eth0", Verdict.WRONG_DESTINATION, id="ns-group-ip-our-mac"
        ),
        pytest.param(ns(hop_limit=64), "eth0", Verdict.INVALID, id="ns-routed"),
        pytest.param(
            ns(ipaddress.IPv6Address("ff02::1")), "eth0", Verdict.INVALID, id="ns-multicast-target"
        ),
        pytest.param(ns(src=ndp.UNSPECIFIED), "eth0", Verdict.INVALID, id="ns-dad-with-slla"),
        pytest.param(
            ns(src=ndp.UNSPECIFIED, source_mac=None, dst=samples.VIP6),
            "eth0",
            Verdict.INVALID,
            id="ns-dad-unicast",
        ),
        pytest.param(ns(samples.OTHER6), "eth0", Verdict.NOT_OURS, id="ns-not-ours"),
        pytest.param(ns(), "eth1", Verdict.WRONG_INTERFACE, id="ns-wrong-interface"),
        pytest.param(ns(eth_src=samples.OUR_MAC), "eth0", Verdict.FROM_SELF, id="ns-from-self"),
        pytest.param(corrupt(ns(), 60), "eth0", Verdict.MALFORMED, id="ns-bad-checksum"),
        pytest.param(na(), "eth0", Verdict.NOT_A_REQUEST, id="na"),
        pytest.param(echo_request(), "eth0", Verdict.NOT_A_REQUEST, id="icmpv6-echo"),
    ],
)
def test_verdicts(frame, ifname, verdict):
    outcome = handle(frame, ifname)
    assert outcome.verdict is verdict
    assert (outcome.reply is not None) is (verdict is Verdict.ANSWERED)


GROUP_MAC = ethernet.MacAddress.parse("01:00:5e:00:00:01")
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


@pytest.mark.parametrize(
    ("frame", "verdict"),
    [
        pytest.param(arp_request(sender_mac=ethernet.BROADCAST), Verdict.BAD_SENDER_MAC,
                     id="arp-broadcast-sender-mac"),
        pytest.param(arp_request(sender_mac=GROUP_MAC), Verdict.BAD_SENDER_MAC,
                     id="arp-multicast-sender-mac"),
        pytest.param(arp_request(sender_mac=ethernet.ZERO), Verdict.BAD_SENDER_MAC,
                     id="arp-zero-sender-mac"),
        pytest.param(arp_request(sender_mac=GROUP_MAC, sender_ip=arp.UNSPECIFIED),
                     Verdict.BAD_SENDER_MAC, id="arp-probe-multicast-sender-mac"),
        pytest.param(arp_request(sender_ip=V4("255.255.255.255")), Verdict.BAD_SENDER_IP,
                     id="arp-broadcast-sender-ip"),
        pytest.param(arp_request(sender_ip=V4("224.0.0.1")), Verdict.BAD_SENDER_IP,
                     id="arp-multicast-sender-ip"),
        pytest.param(arp_request(sender_ip=V4("239.255.255.250")), Verdict.BAD_SENDER_IP,
                     id="arp-multicast-sender-ip-top"),
        pytest.param(arp_request(sender_ip=V4("127.0.0.1")), Verdict.BAD_SENDER_IP,
                     id="arp-loopback-sender-ip"),
        pytest.param(arp_request(sender_ip=V4("0.0.0.7")), Verdict.BAD_SENDER_IP,
                     id="arp-zero-net-sender-ip"),
        pytest.param(arp_request(sender_ip=arp.UNSPECIFIED), Verdict.ANSWERED,
                     id="arp-probe-is-fine"),
        pytest.param(arp_request(sender_ip=V4("240.0.0.1")), Verdict.ANSWERED,
                     id="arp-class-e-is-not-martian"),
        pytest.param(arp_request(src=GROUP_MAC), Verdict.ANSWERED,
                     id="arp-ethernet-source-is-not-the-asker"),
        pytest.param(ns(source_mac=GROUP_MAC), Verdict.BAD_SENDER_MAC,
                     id="ns-multicast-slla"),
        pytest.param(ns(source_mac=ethernet.BROADCAST), Verdict.BAD_SENDER_MAC,
                     id="ns-broadcast-slla"),
        pytest.param(ns(source_mac=None, eth_src=GROUP_MAC), Verdict.BAD_SENDER_MAC,
                     id="ns-multicast-ethernet-source-no-slla"),
        pytest.param(ns(source_mac=ethernet.ZERO), Verdict.BAD_SENDER_MAC, id="ns-zero-slla"),
        pytest.param(ns(src=V6("ff02::1")), Verdict.BAD_SENDER_IP, id="ns-multicast-source"),
        pytest.param(ns(src=V6("::1")), Verdict.BAD_SENDER_IP, id="ns-loopback-source"),
        pytest.param(ns(src=V6("::ffff:198.18.0.1")), Verdict.BAD_SENDER_IP,
                     id="ns-v4-mapped-source"),
        pytest.param(ns(src=ndp.UNSPECIFIED, source_mac=None, eth_src=GROUP_MAC),
                     Verdict.ANSWERED, id="ns-dad-answer-goes-to-all-nodes-anyway"),
        pytest.param(ns(src=samples.ROUTER_LL), Verdict.ANSWERED, id="ns-link-local-is-fine"),
    ],
)  # fmt: skip
def test_hostile_requests_are_refused_and_claim_nothing(frame, verdict):
    outcome = handle(frame)
    assert outcome.verdict is verdict
    assert (outcome.reply is not None) is (verdict is Verdict.ANSWERED)
    if verdict is not Verdict.ANSWERED:
        assert outcome.claim is None


def test_arp_reply_goes_to_the_asker():
    outcome = handle(arp_request(sender_mac=samples.PEER_MAC, src=samples.ROUTER_MAC))
    assert outcome.ip == samples.VIP4
    frame = ethernet.decode(outcome.reply)
    assert (frame.dst, frame.src) == (samples.PEER_MAC, samples.OUR_MAC)
    assert arp.decode(frame.payload) == arp.Packet(
        arp.REPLY, samples.OUR_MAC, samples.VIP4, samples.PEER_MAC, samples.ROUTER4
    )


@pytest.mark.parametrize(
    ("request_frame", "eth_dst", "dst", "solicited"),
    [
        pytest.param(
            ns(source_mac=samples.PEER_MAC), samples.PEER_MAC, samples.ROUTER6, True, id="to-slla"
        ),
        pytest.param(
            ns(dst=samples.VIP6, source_mac=None),
            samples.ROUTER_MAC,
            samples.ROUTER6,
            True,
            id="nud-without-slla-to-ethernet-source",
        ),
        pytest.param(
            ns(src=ndp.UNSPECIFIED, source_mac=None),
            ethernet.ipv6_multicast(ndp.ALL_NODES),
            ndp.ALL_NODES,
            False,
            id="dad-to-all-nodes",
        ),
    ],
)
def test_neighbor_advertisement(request_frame, eth_dst, dst, solicited):
    outcome = handle(request_frame)
    frame = ethernet.decode(outcome.reply)
    assert (frame.dst, frame.src) == (eth_dst, samples.OUR_MAC)
    assert ndp.decode(frame.payload) == ndp.Packet(
        samples.VIP6,
        dst,
        ndp.NeighborAdvertisement(
            samples.VIP6, samples.OUR_MAC, solicited=solicited, override=True
        ),
        hop_limit=255,
    )


@pytest.mark.parametrize(
    ("frame", "claim"),
    [
        pytest.param(arp_request(), (samples.ROUTER4, samples.ROUTER_MAC), id="arp-sender"),
        pytest.param(arp_request(sender_ip=arp.UNSPECIFIED), None, id="arp-probe-claims-nothing"),
        pytest.param(
            arp_request(samples.VIP4, sender_ip=samples.VIP4, sender_mac=samples.STRANGER_MAC),
            (samples.VIP4, samples.STRANGER_MAC),
            id="foreign-garp",
        ),
        pytest.param(na(), (samples.VIP6, samples.STRANGER_MAC), id="na-tlla"),
        pytest.param(na(mac=None), (samples.VIP6, samples.STRANGER_MAC), id="na-ethernet-source"),
        pytest.param(
            ns(samples.OTHER6, src=samples.VIP6, source_mac=samples.STRANGER_MAC),
            (samples.VIP6, samples.STRANGER_MAC),
            id="ns-source",
        ),
        pytest.param(ns(src=ndp.UNSPECIFIED, source_mac=None), None, id="dad-claims-nothing"),
        pytest.param(ns(eth_src=samples.OUR_MAC), None, id="self-claims-nothing"),
    ],
)
def test_claims(frame, claim):
    outcome = handle(frame)
    expected = None if claim is None else responder.Claim(*claim)
    assert outcome.claim == expected


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data):
    outcome = handle(data)
    assert (outcome.reply is not None) is (outcome.verdict is Verdict.ANSWERED)


@given(
    st.sampled_from([arp_request(), ns(), ns(dst=samples.VIP6), na()]),
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_mutated_frames_never_raise(frame, flips):
    data = bytearray(frame)
    for offset, value in flips:
        data[offset % len(data)] = value
    outcome = handle(bytes(data))
    assert (outcome.reply is not None) is (outcome.verdict is Verdict.ANSWERED)


group_macs = samples.macs.map(
    lambda mac: ethernet.MacAddress(bytes([mac.octets[0] | 1]) + mac.octets[1:])
)
martian4 = st.one_of(
    st.ip_addresses(network="224.0.0.0/4"),
    st.ip_addresses(network="127.0.0.0/8"),
    st.ip_addresses(network="0.0.0.0/8").filter(lambda ip: ip != arp.UNSPECIFIED),
    st.just(ipaddress.IPv4Address("255.255.255.255")),
)
martian6 = st.one_of(
    st.ip_addresses(network="ff00::/8"),
    st.just(ipaddress.IPv6Address("::1")),
    st.ip_addresses(network="::ffff:0:0/96"),
)


@given(sender_mac=group_macs | st.just(ethernet.ZERO), sender_ip=samples.ipv4s)
def test_no_arp_request_from_a_group_mac_is_answered(sender_mac, sender_ip):
    outcome = handle(arp_request(sender_mac=sender_mac, sender_ip=sender_ip))
    assert outcome.verdict is Verdict.BAD_SENDER_MAC
    assert outcome.reply is None and outcome.claim is None


@given(sender_ip=martian4)
def test_no_arp_request_from_a_martian_ip_is_answered(sender_ip):
    outcome = handle(arp_request(sender_ip=sender_ip))
    assert outcome.verdict is Verdict.BAD_SENDER_IP
    assert outcome.reply is None and outcome.claim is None


@given(src=martian6, source_mac=st.none() | samples.macs)
def test_no_ns_from_a_martian_source_is_answered(src, source_mac):
    asker_ok = source_mac is None or responder.unicast(source_mac)
    outcome = handle(ns(src=src, source_mac=source_mac))
    assert outcome.verdict is (Verdict.BAD_SENDER_IP if asker_ok else Verdict.BAD_SENDER_MAC)
    assert outcome.reply is None and outcome.claim is None
