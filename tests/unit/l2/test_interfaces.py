import ipaddress

import pytest

from porterlb import errors
from porterlb.l2 import ethernet, interfaces

FIRST = ipaddress.ip_address("198.18.0.10")
LAST = ipaddress.ip_address("198.18.0.20")


def mac(n):
    return ethernet.MacAddress(bytes([2, 0, 0, 0, 0, n]))


def link(index, name, *addresses, **flags):
    return interfaces.Link(
        name=name,
        index=index,
        mac=flags.pop("mac", mac(index)),
        addresses=tuple(ipaddress.ip_interface(a) for a in addresses),
        **flags,
    )


LO = link(1, "lo", "127.0.0.1/8", "::1/128", loopback=True, mac=None)
ETH0 = link(2, "eth0", "198.18.0.2/24", "2001:db8::2/64")
ETH1 = link(3, "eth1", "198.19.0.2/24")
BOND = link(4, "bond0", "198.19.1.2/24")
SLAVE = link(5, "eth2", master=4, slave_kind="bond")
BRIDGE = link(6, "br0", "198.19.2.2/24")
PORT = link(7, "eth3", master=6, slave_kind="bridge")
DOWN = link(8, "eth4", "198.19.3.2/24", up=False)
NOARP = link(9, "wg0", "198.19.4.2/24", noarp=True, mac=None)
NESTED_PORT = link(10, "eth5", master=5)  # a port of a port: follow to the top
LINKS = (LO, ETH0, ETH1, BOND, SLAVE, BRIDGE, PORT, DOWN, NOARP, NESTED_PORT)

ROUTES = {
    ipaddress.ip_address("198.18.0.1"): 2,
    ipaddress.ip_address("198.19.2.1"): 7,
    ipaddress.ip_address("198.18.0.2"): 1,
    ipaddress.ip_address("198.19.3.1"): 8,
}


@pytest.mark.parametrize(
    ("spec", "first", "last", "chosen"),
    [
        pytest.param("eth0", FIRST, LAST, ETH0, id="name"),
        pytest.param("eth1", FIRST, LAST, ETH1, id="name-outside-subnet-is-trusted"),
        pytest.param("eth2", FIRST, LAST, BOND, id="bond-slave-to-master"),
        pytest.param("eth3", FIRST, LAST, BRIDGE, id="bridge-port-to-master"),
        pytest.param("eth5", FIRST, LAST, BOND, id="nested-port-to-top"),
        pytest.param("can_reach:198.18.0.1", FIRST, LAST, ETH0, id="can-reach"),
        pytest.param("can_reach:198.19.2.1", FIRST, LAST, BRIDGE, id="can-reach-via-port"),
        pytest.param("", FIRST, LAST, ETH0, id="auto"),
        pytest.param(
            "",
            ipaddress.ip_address("2001:db8::10"),
            ipaddress.ip_address("2001:db8::20"),
            ETH0,
            id="auto-ipv6",
        ),
        pytest.param(
            "",
            ipaddress.ip_address("198.19.2.10"),
            ipaddress.ip_address("198.19.2.20"),
            BRIDGE,
            id="auto-bridge",
        ),
    ],
)
def test_select(spec, first, last, chosen):
    assert (
        interfaces.select(spec, pool_first=first, pool_last=last, links=LINKS, route=ROUTES.get)
        == chosen
    )


@pytest.mark.parametrize(
    ("spec", "first", "last", "message"),
    [
        pytest.param(
            "eth9",
            FIRST,
            LAST,
            'interface "eth9" for pool 198.18.0.10-198.18.0.20: no such interface',
            id="missing",
        ),
        pytest.param("lo", FIRST, LAST, "lo is a loopback interface", id="loopback"),
        pytest.param("eth4", FIRST, LAST, "eth4 is down", id="down"),
        pytest.param("wg0", FIRST, LAST, "wg0 has NOARP set", id="noarp"),
        pytest.param("can_reach:198.18.0.2", FIRST, LAST, "198.18.0.2 is local", id="reach-lo"),
        pytest.param("can_reach:198.19.3.1", FIRST, LAST, "eth4 is down", id="reach-down"),
        pytest.param(
            "can_reach:203.0.113.1", FIRST, LAST, "no route to 203.0.113.1", id="no-route"
        ),
        pytest.param("can_reach:eth0", FIRST, LAST, "'eth0' is not an IP address", id="not-ip"),
        pytest.param(
            "",
            ipaddress.ip_address("198.19.3.10"),
            ipaddress.ip_address("198.19.3.20"),
            "pool 198.19.3.10-198.19.3.20: no interface",
            id="auto-only-down",
        ),
        pytest.param(
            "",
            ipaddress.ip_address("198.18.0.250"),
            ipaddress.ip_address("198.18.1.5"),
            "no interface",
            id="auto-straddles",
        ),
        pytest.param(
            "",
            ipaddress.ip_address("198.19.4.10"),
            ipaddress.ip_address("198.19.4.20"),
            "no interface",
            id="auto-noarp",
        ),
    ],
)
def test_select_rejects(spec, first, last, message):
    with pytest.raises(errors.InvalidSpec, match=message):
        interfaces.select(spec, pool_first=first, pool_last=last, links=LINKS, route=ROUTES.get)


def test_can_reach_without_route_lookup():
    with pytest.raises(errors.InvalidSpec, match="no route"):
        interfaces.select("can_reach:198.18.0.1", pool_first=FIRST, pool_last=LAST, links=LINKS)


def test_auto_picks_the_lowest_index_when_two_links_hold_the_pool():
    twin = link(11, "eth6", "198.18.0.3/24")
    chosen = interfaces.select("", pool_first=FIRST, pool_last=LAST, links=(twin, ETH0))
    assert chosen == ETH0
