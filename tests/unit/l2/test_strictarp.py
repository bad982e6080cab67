import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.l2 import strictarp

V4 = ipaddress.IPv4Address("198.18.0.200")
V6 = ipaddress.IPv6Address("2001:db8::200")
POOLS = (
    strictarp.Pool(V4, V4 + 9, "eth0"),
    strictarp.Pool(V6, V6 + 9, "eth0"),
)


@pytest.mark.parametrize(
    ("ip", "holder", "arp_ignore", "answers"),
    [
        # kube-proxy IPVS: the IP on kube-ipvs0, the request on eth0.
        pytest.param(V4, "kube-ipvs0", 0, True, id="ipvs-strictarp-false"),
        pytest.param(V4, "kube-ipvs0", 1, False, id="ipvs-strictarp-true"),
        pytest.param(V4, "kube-ipvs0", 2, False, id="ipvs-ignore-2"),
        pytest.param(V4, "kube-ipvs0", 3, True, id="ipvs-ignore-3-global-scope"),
        pytest.param(V4, "kube-ipvs0", 5, True, id="ipvs-reserved-value-answers"),
        pytest.param(V4, "kube-ipvs0", 8, False, id="ipvs-ignore-8-never"),
        # The IP configured on the pool interface itself.
        pytest.param(V4, "eth0", 0, True, id="on-eth0-ignore-0"),
        pytest.param(V4, "eth0", 1, True, id="on-eth0-ignore-1"),
        pytest.param(V4, "eth0", 2, True, id="on-eth0-ignore-2"),
        pytest.param(V4, "eth0", 8, False, id="on-eth0-ignore-8"),
        # IPv6: strict lookup of the NS target on the incoming interface; arp_ignore is moot.
        pytest.param(V6, "kube-ipvs0", 0, False, id="ipv6-ipvs"),
        pytest.param(V6, "eth0", 8, True, id="ipv6-on-eth0"),
    ],
)
def test_answers(ip, holder, arp_ignore, answers):
    assert strictarp.answers(ip, holder=holder, interface="eth0", arp_ignore=arp_ignore) is answers


def test_find_keeps_assigned_pool_ips_the_kernel_answers_for():
    addresses: list[tuple[strictarp.IPAddress, str]] = [
        (V4, "kube-ipvs0"),  # found
        (V4 + 1, "kube-ipvs0"),  # in the pool, assigned to no Service
        (ipaddress.IPv4Address("10.96.0.1"), "kube-ipvs0"),  # a ClusterIP: no pool's
        (ipaddress.IPv4Address("198.18.0.3"), "eth0"),  # the node's own address
        (V6, "kube-ipvs0"),  # IPv6: not answered on eth0
        (V6 + 2, "eth0"),  # found
    ]
    assigned = {V4, V6, V6 + 2}
    found = strictarp.find(
        addresses, pools=POOLS, arp_ignore={"eth0": 0}, assigned=assigned.__contains__
    )
    assert found == {
        strictarp.Finding("eth0", "kube-ipvs0", V4),
        strictarp.Finding("eth0", "eth0", V6 + 2),
    }


def test_find_skips_ipv4_on_an_interface_without_arp_ignore():
    """No conf/<interface> entry: gone, or no IPv4 on it; nothing to say about IPv4 there."""
    found = strictarp.find(
        [(V4, "kube-ipvs0"), (V6, "eth0")], pools=POOLS, arp_ignore={}, assigned=lambda ip: True
    )
    assert found == {strictarp.Finding("eth0", "eth0", V6)}


addresses = st.lists(
    st.tuples(
        st.integers(0, 20).map(lambda n: V4 - 5 + n),
        st.sampled_from(["eth0", "kube-ipvs0", "lo"]),
    ),
    max_size=30,
)


@given(addresses, st.sampled_from([0, 1, 2, 3, 8]), st.randoms(use_true_random=False))
def test_find_ignores_input_order_and_only_reports_pool_ips(pairs, ignore, rng):
    def run(items):
        return strictarp.find(
            items, pools=POOLS, arp_ignore={"eth0": ignore}, assigned=lambda ip: True
        )

    shuffled = list(pairs)
    rng.shuffle(shuffled)
    found = run(pairs)
    assert run(shuffled) == found
    assert all(POOLS[0].holds(f.ip) and (f.ip, f.holder) in pairs for f in found)


def test_by_group_and_the_message_name_node_interface_holder_and_a_few_ips():
    findings = [strictarp.Finding("eth0", "kube-ipvs0", V4 + n) for n in (7, 0, 3, 1, 2, 4, 5)]
    [(group, ordered)] = strictarp.by_group(findings).items()
    assert group == ("eth0", "kube-ipvs0")
    assert [f.ip for f in ordered] == [V4 + n for n in (0, 1, 2, 3, 4, 5, 7)]
    text = strictarp.message("w2", ordered, 0)
    for part in ("node w2", "on eth0", "on kube-ipvs0", "198.18.0.200, ", "and 2 more"):
        assert part in text, (part, text)
    assert "arp_ignore in force on eth0 is 0" in text
    assert "strictARP: true (arp_ignore=1, arp_announce=2)" in text
    assert "198.18.0.205" not in text  # only the first MAX_LISTED


def test_message_for_an_ip_on_the_pool_interface_says_to_remove_it():
    text = strictarp.message("w2", [strictarp.Finding("eth0", "eth0", V6)], None)
    assert f"for porterlb's {V6}, configured on it" in text
    assert text.endswith("remove them from eth0")
    assert "kube-proxy" not in text


def test_wire_message_names_both_nodes_the_mac_and_the_fix():
    text = strictarp.wire_message(
        "default/web", V4, interface="eth0", node="w1", other="w2", mac="02:00:00:00:00:02"
    )
    assert text.startswith("Service default/web: node w2 (MAC 02:00:00:00:00:02) also answers")
    assert "which node w1 announces on eth0" in text
    assert text.endswith("on w2")
