import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from porterlb import errors
from porterlb.lab import controlplane, plan

IFNAME_MAX = 15
"""IFNAMSIZ (16, include/uapi/linux/if.h) minus the terminating NUL."""

names = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?\Z")
workers = st.integers(min_value=1, max_value=plan.MAX_WORKERS)


def addresses(lab: plan.Lab) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Every planned interface address of the lab."""
    return [a for e in lab.endpoints for a in (e.ipv4, e.ipv6) if a is not None]


DEMO = plan.build("demo", 2)


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        pytest.param(DEMO.index, 32, id="index"),
        pytest.param(str(DEMO.lan_v4), "198.18.64.0/24", id="lan-v4"),
        pytest.param(str(DEMO.client_v4), "198.18.65.0/24", id="client-v4"),
        pytest.param(str(DEMO.lan_v6), "2001:db8:20:1::/64", id="lan-v6"),
        pytest.param(str(DEMO.client_v6), "2001:db8:20:2::/64", id="client-v6"),
        pytest.param(
            [str(ip) for ip in DEMO.pool_v4], ["198.18.64.200", "198.18.64.250"], id="pool-v4"
        ),
        pytest.param(
            [str(ip) for ip in DEMO.pool_v6 or ()],
            ["2001:db8:20:1::200", "2001:db8:20:1::fff"],
            id="pool-v6",
        ),
        pytest.param(
            (DEMO.router_lan.netns, DEMO.router_lan.ifname, str(DEMO.router_lan.ipv4)),
            ("plb-demo-router", "lan0", "198.18.64.1/24"),
            id="router-lan",
        ),
        pytest.param(
            (DEMO.router_client.ifname, str(DEMO.router_client.ipv6)),
            ("cli0", "2001:db8:20:2::1/64"),
            id="router-client",
        ),
        pytest.param(
            (DEMO.client.netns, str(DEMO.client.ipv4), str(DEMO.client.ipv6)),
            ("plb-demo-client", "198.18.65.2/24", "2001:db8:20:2::2/64"),
            id="client",
        ),
        pytest.param(
            [(n.name, n.netns, n.ifname, str(n.ipv4), str(n.ipv6), str(n.mac)) for n in DEMO.nodes],
            [
                (
                    "demo-w1",
                    "plb-demo-w1",
                    "eth0",
                    "198.18.64.11/24",
                    "2001:db8:20:1::11/64",
                    "02:70:6c:20:01:01",
                ),
                (
                    "demo-w2",
                    "plb-demo-w2",
                    "eth0",
                    "198.18.64.12/24",
                    "2001:db8:20:1::12/64",
                    "02:70:6c:20:01:02",
                ),
            ],
            id="nodes",
        ),
        pytest.param(
            DEMO.namespaces,
            ("plb-demo-lan", "plb-demo-router", "plb-demo-client", "plb-demo-w1", "plb-demo-w2"),
            id="namespaces",
        ),
        pytest.param(
            [(v.netns, v.ifname, v.peer_netns, v.peer_ifname) for v in DEMO.veths],
            [
                ("plb-demo-router", "lan0", "plb-demo-lan", "rt"),
                ("plb-demo-w1", "eth0", "plb-demo-lan", "w1"),
                ("plb-demo-w2", "eth0", "plb-demo-lan", "w2"),
                ("plb-demo-router", "cli0", "plb-demo-client", "eth0"),
            ],
            id="veths",
        ),
    ],
)
def test_demo_plan(actual, expected):
    assert actual == expected


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("-a", id="leading-dash"),
        pytest.param("a-", id="trailing-dash"),
        pytest.param("Demo", id="upper-case"),
        pytest.param("a_b", id="underscore"),
        pytest.param("a.b", id="dot"),
        pytest.param("a" * (plan.MAX_NAME_LEN + 1), id="too-long"),
    ],
)
def test_bad_names_are_refused(name):
    with pytest.raises(errors.InvalidSpec, match="lab name"):
        plan.build(name, 1)


@pytest.mark.parametrize(
    ("count", "ok"),
    [
        pytest.param(0, False, id="none"),
        pytest.param(1, True, id="one"),
        pytest.param(plan.MAX_WORKERS, True, id="max"),
        pytest.param(plan.MAX_WORKERS + 1, False, id="too-many"),
    ],
)
def test_worker_count_bounds(count, ok):
    if ok:
        assert len(plan.build("demo", count).nodes) == count
    else:
        with pytest.raises(errors.InvalidSpec, match=f"{count} workers"):
            plan.build("demo", count)


@pytest.mark.parametrize(
    ("netns", "parsed"),
    [
        pytest.param("plb-demo-lan", ("demo", "lan"), id="lan"),
        pytest.param("plb-demo-router", ("demo", "router"), id="router"),
        pytest.param("plb-demo-client", ("demo", "client"), id="client"),
        pytest.param("plb-demo-w12", ("demo", "w12"), id="worker"),
        pytest.param("plb-a-w1-lan", ("a-w1", "lan"), id="dashed-lab-is-not-lab-a"),
        pytest.param("plb-demo-w0", None, id="worker-zero"),
        pytest.param("plb-demo-x", None, id="unknown-role"),
        pytest.param("plb--lan", None, id="empty-lab"),
        pytest.param("other-demo-lan", None, id="foreign"),
    ],
)
def test_parse_netns(netns, parsed):
    assert plan.parse_netns(netns) == parsed
    assert plan.lab_of(netns) == (parsed[0] if parsed else None)


@given(name=names, count=workers, ipv6=st.booleans())
def test_interface_names_fit_and_are_unique_per_namespace(name, count, ipv6):
    lab = plan.build(name, count, ipv6=ipv6)
    per_netns = [(lab.lan_netns, plan.BRIDGE)]
    for veth in lab.veths:
        per_netns += [(veth.netns, veth.ifname), (veth.peer_netns, veth.peer_ifname)]
    assert all(len(ifname) <= IFNAME_MAX for _, ifname in per_netns)
    assert len(set(per_netns)) == len(per_netns)
    assert {netns for netns, _ in per_netns} == set(lab.namespaces)


@given(name=names, count=workers, ipv6=st.booleans())
def test_namespaces_and_nodes_are_named_after_the_lab(name, count, ipv6):
    lab = plan.build(name, count, ipv6=ipv6)
    assert len(set(lab.namespaces)) == len(lab.namespaces)
    assert all(plan.lab_of(netns) == name for netns in lab.namespaces)
    assert [node.name for node in lab.nodes] == [f"{name}-w{k}" for k in range(1, count + 1)]
    assert all(len(node.name) <= 63 for node in lab.nodes)  # DNS-1123 label (Node names)


@given(name=names, count=workers, ipv6=st.booleans())
def test_addresses_stay_in_the_documentation_ranges(name, count, ipv6):
    lab = plan.build(name, count, ipv6=ipv6)
    assert lab.lan_v4.subnet_of(plan.V4_BLOCK)
    assert lab.client_v4.subnet_of(plan.V4_BLOCK)
    assert (lab.lan_v6 is not None) == (lab.client_v6 is not None) == ipv6
    if lab.lan_v6 is not None and lab.client_v6 is not None:
        assert lab.lan_v6.subnet_of(plan.V6_BLOCK)
        assert lab.client_v6.subnet_of(plan.V6_BLOCK)
    for endpoint in (lab.router_lan, *lab.nodes):
        assert endpoint.ipv4.network == lab.lan_v4
        assert endpoint.ipv6 is None or endpoint.ipv6.network == lab.lan_v6
    for endpoint in (lab.router_client, lab.client):
        assert endpoint.ipv4.network == lab.client_v4
        assert endpoint.ipv6 is None or endpoint.ipv6.network == lab.client_v6
    hosts = [a.ip for a in addresses(lab)]
    assert len(set(hosts)) == len(hosts)
    assert all(
        a.ip not in (a.network.network_address, a.network.broadcast_address) for a in addresses(lab)
    )


@given(name=names, count=workers, ipv6=st.booleans())
def test_pool_is_on_the_lan_and_used_by_no_interface(name, count, ipv6):
    lab = plan.build(name, count, ipv6=ipv6)
    hosts = {a.ip for a in addresses(lab)}
    first, last = lab.pool_v4
    assert lab.lan_v4.network_address < first < last < lab.lan_v4.broadcast_address
    assert not [host for host in hosts if host.version == 4 and first <= host <= last]
    assert (lab.pool_v6 is not None) == ipv6
    if lab.pool_v6 is not None and lab.lan_v6 is not None:
        first6, last6 = lab.pool_v6
        assert first6 in lab.lan_v6 and last6 in lab.lan_v6 and first6 < last6
        assert not [host for host in hosts if host.version == 6 and first6 <= host <= last6]


@given(name=names, count=workers)
def test_macs_are_unique_locally_administered_unicast(name, count):
    lab = plan.build(name, count)
    macs = [endpoint.mac for endpoint in lab.endpoints]
    assert len(set(macs)) == len(macs)
    assert all(mac.octets[0] & 0b11 == 0b10 for mac in macs)


@given(a=names, b=names, ipv6=st.booleans())
def test_two_labs_never_share_a_name_and_share_subnets_only_when_flagged(a, b, ipv6):
    if a == b:
        return
    lab_a, lab_b = plan.build(a, 3, ipv6=ipv6), plan.build(b, 3, ipv6=ipv6)
    assert not set(lab_a.namespaces) & set(lab_b.namespaces)
    assert not {n.name for n in lab_a.nodes} & {n.name for n in lab_b.nodes}
    same_index = lab_a.index == lab_b.index
    assert plan.clashes(a, [a, b]) == ((b,) if same_index else ())
    subnets_a = [lab_a.lan_v4, lab_a.client_v4, lab_a.lan_v6, lab_a.client_v6]
    subnets_b = [lab_b.lan_v4, lab_b.client_v4, lab_b.lan_v6, lab_b.client_v6]
    overlap = any(
        sa is not None and sb is not None and sa.version == sb.version and sa.overlaps(sb)
        for sa in subnets_a
        for sb in subnets_b
    )
    assert overlap == same_index


def test_every_index_gets_its_own_subnets_inside_the_blocks():
    # One name per index (found by hashing), then all 256 plans side by side.
    by_index: dict[int, str] = {}
    candidate = 0
    while len(by_index) < plan.INDEX_COUNT:
        name = f"n{candidate}"
        by_index.setdefault(plan.index_of(name), name)
        candidate += 1
    labs = [plan.build(name, 1) for name in by_index.values()]
    v4 = [s for lab in labs for s in (lab.lan_v4, lab.client_v4)]
    v6 = [s for lab in labs for s in (lab.lan_v6, lab.client_v6)]
    assert len(set(v4)) == len(v4) == 2 * plan.INDEX_COUNT
    assert len(set(v6)) == len(v6)
    assert sum(s.num_addresses for s in v4) == plan.V4_BLOCK.num_addresses
    assert all(s.subnet_of(plan.V6_BLOCK) for s in v6 if s is not None)


@pytest.mark.parametrize(
    ("name", "pods", "services"),
    [
        pytest.param("demo", ["198.19.0.0/24", "198.19.1.0/24"], "198.19.128.0/17", id="low"),
        # lab252 (index 128) has its LAN and client at 198.19.0.0/24 and 198.19.1.0/24.
        pytest.param("lab252", ["198.18.128.0/24", "198.18.129.0/24"], "198.19.128.0/17", id="pod"),
        # sp1143-0 (index 227) has its LAN at 198.19.198.0/24, in the Service quarter.
        pytest.param("sp1143-0", ["198.19.0.0/24", "198.19.1.0/24"], "198.18.128.0/17", id="svc"),
    ],
)
def test_pod_cidrs_and_service_range(name, pods, services):
    lab = plan.build(name, 2)
    assert [str(net) for net in plan.pod_cidrs(lab).values()] == pods
    assert str(plan.service_block(lab)) == services


def test_the_usual_service_range_is_the_control_planes():
    assert str(plan.SERVICE_V4_BLOCK) == controlplane.SERVICE_CLUSTER_IP_RANGE.split(",")[0]


# No deadline: an example takes milliseconds, but a loaded 2-core CI host stalls some.
@settings(deadline=None)
@given(name=names, count=workers)
def test_pods_services_and_the_lab_network_never_overlap(name, count):
    lab = plan.build(name, count, ipv6=True)
    cidrs = plan.pod_cidrs(lab)
    assert list(cidrs) == [node.name for node in lab.nodes]
    services = plan.service_block(lab)
    for net in cidrs.values():
        assert net.prefixlen == plan.POD_PREFIX
        assert net.subnet_of(plan.V4_BLOCK)
        for other in (lab.lan_v4, lab.client_v4, services):
            assert not net.overlaps(other)
    for own in (lab.lan_v4, lab.client_v4):
        assert not own.overlaps(services)
    assert services.subnet_of(plan.V4_BLOCK)
    assert len(set(cidrs.values())) == count
    v6 = plan.pod_cidrs_v6(lab)
    assert list(v6) == [node.name for node in lab.nodes]
    assert len(set(v6.values())) == count
    services_v6 = ipaddress.ip_network(controlplane.SERVICE_CLUSTER_IP_RANGE.split(",")[1])
    for net6 in v6.values():
        assert net6.prefixlen == plan.POD_V6_PREFIX
        assert net6.subnet_of(plan.V6_BLOCK)
        assert not net6.overlaps(services_v6)
    # Every lab's LAN and client subnets sit in the first /40 (the index is the third
    # group, 0-ff), not only this one's: labs share the block.
    lab_subnets = ipaddress.IPv6Network("2001:db8::/40")
    assert lab.lan_v6 is not None and lab.lan_v6.subnet_of(lab_subnets)
    assert lab.client_v6 is not None and lab.client_v6.subnet_of(lab_subnets)
    assert not plan.POD_V6_BLOCK.overlaps(lab_subnets)
    both = plan.node_pod_cidrs(lab)
    assert all(both[n] == (plan.pod_cidrs(lab)[n], v6[n]) for n in both)


def test_an_ipv4_lab_has_no_ipv6_pod_cidrs():
    lab = plan.build("demo", 2, ipv6=False)
    assert plan.pod_cidrs_v6(lab) == {}
    assert all(len(cidrs) == 1 for cidrs in plan.node_pod_cidrs(lab).values())
