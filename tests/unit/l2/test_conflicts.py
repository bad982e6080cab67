import pytest

from porterlb.l2 import arp, conflicts, ethernet, ndp, responder
from tests.unit.l2 import samples


@pytest.mark.parametrize(
    ("ip", "frame"),
    [
        pytest.param(samples.VIP4, arp.probe(samples.OUR_MAC, samples.VIP4), id="arp-probe"),
        pytest.param(samples.VIP6, ndp.dad_probe(samples.OUR_MAC, samples.VIP6), id="dad"),
    ],
)
def test_probe_by_family(ip, frame):
    assert conflicts.probe(samples.OUR_MAC, ip) == frame


@pytest.mark.parametrize(
    ("mac", "foreign"),
    [
        pytest.param(samples.STRANGER_MAC, True, id="stranger"),
        pytest.param(samples.OUR_MAC, False, id="ourselves"),
        pytest.param(samples.PEER_MAC, False, id="peer-speaker"),
    ],
)
def test_is_foreign(mac, foreign):
    watch = conflicts.Watch(peer_macs={samples.PEER_MAC: "w2"}, report_interval=30.0)
    claim = responder.Claim(samples.VIP4, mac)
    assert watch.is_foreign(claim, samples.OUR_MAC) is foreign


def test_peer_macs_are_replaced():
    watch = conflicts.Watch(peer_macs={samples.PEER_MAC: "w2"}, report_interval=30.0)
    watch.set_peer_macs({samples.STRANGER_MAC: "w3"})
    assert watch.is_foreign(responder.Claim(samples.VIP4, samples.PEER_MAC), samples.OUR_MAC)
    assert not watch.is_foreign(
        responder.Claim(samples.VIP4, samples.STRANGER_MAC), samples.OUR_MAC
    )


@pytest.mark.parametrize(
    ("mac", "node"),
    [
        pytest.param(samples.PEER_MAC, "w2", id="peer-node"),
        pytest.param(samples.OUR_MAC, None, id="ourselves"),
        pytest.param(samples.STRANGER_MAC, None, id="stranger"),
    ],
)
def test_node_of(mac, node):
    watch = conflicts.Watch(
        peer_macs={samples.PEER_MAC: "w2", samples.OUR_MAC: "w1"}, report_interval=30.0
    )
    assert watch.node_of(responder.Claim(samples.VIP4, mac), samples.OUR_MAC) == node


@pytest.mark.parametrize(
    ("created", "now", "settling"),
    [
        pytest.param(None, 100.0, True, id="not-seen-yet"),
        pytest.param(100.0, 100.0, True, id="just-handed-over"),
        pytest.param(100.0, 109.9, True, id="within-the-grace"),
        pytest.param(100.0, 110.0, False, id="grace-over"),
    ],
)
def test_settling(created, now, settling):
    assert conflicts.settling(created, now, grace=10.0) is settling


# Steps on one Watch with a 30 s interval: (action, ip, time, expected should_report).
STEPS: list[tuple[str, responder.IPAddress, float, bool | None]] = [
    ("report", samples.VIP4, 100.0, True),
    ("report", samples.VIP4, 110.0, False),
    ("report", samples.VIP6, 110.0, True),
    ("report", samples.VIP4, 129.9, False),
    ("report", samples.VIP4, 130.0, True),
    ("forget", samples.VIP4, 131.0, None),
    ("report", samples.VIP4, 131.0, True),
    ("report", samples.VIP6, 139.0, False),
]


def test_report_rate_limit_steps():
    watch = conflicts.Watch(report_interval=30.0)
    for number, (action, ip, now, expected) in enumerate(STEPS):
        if action == "forget":
            watch.forget(ip)
        else:
            assert watch.should_report(ip, now) is expected, f"step {number}"


def test_mac_of_claim_compares_by_value():
    same = ethernet.MacAddress(bytes(samples.OUR_MAC.octets))
    watch = conflicts.Watch(report_interval=1.0)
    assert not watch.is_foreign(responder.Claim(samples.VIP4, same), samples.OUR_MAC)
