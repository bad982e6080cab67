"""Step tables: each scenario's rows run in order on one allocator.

A row either expects a value (compact: an assign returns the IP as text) or an error type and
its exact message; after every failing row the whole observable state must be unchanged.
"""

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from porterlb.api import address
from porterlb.api.keys import PoolName, ServiceKey, Slot
from porterlb.ipam import allocator, pool

Act = Callable[[allocator.Allocator], Any]
POOL_NAMES = [PoolName(name) for name in ("a", "b", "c", "lan", "v6")]


@dataclass(frozen=True)
class Step:
    act: Act
    want: Any = None
    error: type[Exception] | None = None
    message: str = ""


def fails(act: Act, error: type[Exception], message: str) -> Step:
    return Step(act, error=error, message=message)


def pools(*specs: str) -> Act:
    """``set_pools`` from ``name=address`` texts, oldest first; a trailing ``!`` disables."""
    items = [
        pool.Pool(PoolName(name), address.parse(text.rstrip("!")), text.endswith("!"))
        for name, _, text in (spec.partition("=") for spec in specs)
    ]

    def act(state: allocator.Allocator) -> tuple[dict[PoolName, str], dict[str, str]]:
        diff = state.set_pools(items)
        return dict(diff.rejected), {str(key): str(held.ip) for key, held in diff.orphaned.items()}

    return act


def slot(key: str) -> Slot:
    """The allocator keeps addresses by slot without reading its family: any one will do."""
    return Slot(ServiceKey(key), 4)


def assign(
    key: str, name: str, ip: str | None = None, *, family: int | None = None, share: str = ""
) -> Act:
    """``assign``; `share` is ``"key TCP/80 UDP/53"``, empty for no sharing."""
    sharing = None
    if share:
        sharing_key, *ports = share.split()
        pairs = (port.partition("/") for port in ports)
        sharing = allocator.Sharing(sharing_key, frozenset((p, int(n)) for p, _, n in pairs))
    request = allocator.Request(
        PoolName(name),
        ipaddress.ip_address(ip) if ip else None,
        family,  # type: ignore[arg-type]
        sharing,
    )
    return lambda state: str(state.assign(slot(key), request).ip)


def release(key: str) -> Act:
    def act(state: allocator.Allocator) -> str | None:
        freed = state.release(slot(key))
        return None if freed is None else str(freed)

    return act


def give_back(key: str) -> Act:
    """``release`` and ``hold`` what was released, as the manager gives an IP back."""

    def act(state: allocator.Allocator) -> bool | None:
        held = state.holding(slot(key))
        state.release(slot(key))
        return None if held is None else state.hold(slot(key), held)

    return act


def settle(key: str, ip: str) -> Act:
    return lambda state: state.settle(slot(key), ipaddress.ip_address(ip))


def pending(key: str) -> Act:
    return lambda state: sorted(map(str, state.pending(slot(key))))


def usage(name: str) -> Act:
    def act(state: allocator.Allocator) -> tuple[int, int, int]:
        counts = state.usage(PoolName(name))
        return counts.used, counts.size, counts.services

    return act


def owner(ip: str) -> Act:
    return lambda state: sorted(map(str, state.owner(ipaddress.ip_address(ip))))


def holding(key: str) -> Act:
    def act(state: allocator.Allocator) -> str | None:
        held = state.holding(slot(key))
        return None if held is None else f"{held.pool}:{held.ip}"

    return act


def snapshot(state: allocator.Allocator) -> dict[str, Any]:
    """Everything a caller can observe."""
    seen: dict[str, Any] = {"held": dict(state.allocations())}
    for name in POOL_NAMES:
        try:
            seen[name] = (state.usage(name), dict(state.assigned(name)))
        except allocator.PoolMissing as missing:
            seen[name] = str(missing)
    return seen


NO_DIFF: tuple[dict[PoolName, str], dict[str, str]] = ({}, {})
LAN = "lan=198.18.0.0/24"
A_IN_B = 'Eip "b" (198.18.0.10-198.18.0.20) overlaps Eip "a" (198.18.0.0/24)'

SCENARIOS = {
    "lowest-free-and-idempotence": [
        Step(pools(LAN), NO_DIFF),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        Step(assign("shop/web", "lan", "198.18.0.1"), "198.18.0.1"),
        Step(assign("shop/db", "lan"), "198.18.0.2"),
        Step(assign("shop/api", "lan"), "198.18.0.3"),
        Step(release("shop/web"), "198.18.0.1"),
        Step(release("shop/web"), None),
        Step(owner("198.18.0.1"), []),
        Step(usage("lan"), (2, 254, 2)),
        Step(assign("shop/new", "lan"), "198.18.0.1"),
        Step(release("shop/db"), "198.18.0.2"),
        Step(assign("shop/newer", "lan"), "198.18.0.2"),
        Step(assign("shop/newest", "lan"), "198.18.0.4"),
    ],
    "network-and-broadcast-never-handed-out": [
        Step(pools("lan=198.18.0.0/30"), NO_DIFF),
        fails(
            assign("shop/web", "lan", "198.18.0.0"),
            allocator.IPOutsidePool,
            'Service shop/web: 198.18.0.0 is the network address of pool "lan" (198.18.0.0/30)'
            " and is never handed out",
        ),
        fails(
            assign("shop/web", "lan", "198.18.0.3"),
            allocator.IPOutsidePool,
            'Service shop/web: 198.18.0.3 is the broadcast address of pool "lan"'
            " (198.18.0.0/30) and is never handed out",
        ),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        Step(assign("shop/db", "lan"), "198.18.0.2"),
        fails(
            assign("shop/api", "lan"),
            allocator.PoolFull,
            'Service shop/api: pool "lan" (198.18.0.0/30) has no free address',
        ),
        Step(usage("lan"), (2, 2, 2)),
    ],
    "slash-31-uses-both": [
        Step(pools("lan=198.18.0.0/31"), NO_DIFF),
        Step(assign("shop/web", "lan"), "198.18.0.0"),
        Step(assign("shop/db", "lan"), "198.18.0.1"),
        fails(assign("shop/api", "lan"), allocator.PoolFull, "has no free address"),
    ],
    "slash-32": [
        Step(pools("lan=198.18.0.7/32"), NO_DIFF),
        Step(usage("lan"), (0, 1, 0)),
        Step(assign("shop/web", "lan"), "198.18.0.7"),
        fails(
            assign("shop/db", "lan", "198.18.0.7"),
            allocator.IPInUse,
            'Service shop/db: 198.18.0.7 in pool "lan" is held by shop/web,'
            " which has no sharing key",
        ),
        fails(
            assign("shop/db", "lan"),
            allocator.PoolFull,
            'Service shop/db: pool "lan" (198.18.0.7/32) has no free address',
        ),
    ],
    "range-taken-literally": [
        Step(pools("lan=198.18.0.0-198.18.0.255"), NO_DIFF),
        Step(assign("shop/web", "lan"), "198.18.0.0"),
        Step(assign("shop/db", "lan", "198.18.0.255"), "198.18.0.255"),
        Step(usage("lan"), (2, 256, 2)),
    ],
    "slash-8": [
        Step(pools("lan=10.0.0.0/8"), NO_DIFF),
        Step(usage("lan"), (0, 2**24 - 2, 0)),
        Step(assign("shop/top", "lan", "10.255.255.254"), "10.255.255.254"),
        Step(assign("shop/web", "lan"), "10.0.0.1"),
        fails(assign("shop/db", "lan", "10.255.255.255"), allocator.IPOutsidePool, "broadcast"),
        Step(usage("lan"), (2, 2**24 - 2, 2)),
    ],
    "ipv6-64": [
        Step(pools("v6=2001:db8::/64"), NO_DIFF),
        Step(assign("shop/web", "v6"), "2001:db8::1"),
        fails(
            assign("shop/db", "v6", "2001:db8::"),
            allocator.IPOutsidePool,
            "Service shop/db: 2001:db8:: is the Subnet-Router anycast address of pool"
            ' "v6" (2001:db8::/64) and is never handed out',
        ),
        Step(
            assign("shop/db", "v6", "2001:db8::ffff:ffff:ffff:ffff"),
            "2001:db8::ffff:ffff:ffff:ffff",
        ),
        Step(assign("shop/api", "v6", family=6), "2001:db8::2"),
        Step(usage("v6"), (3, 2**64 - 1, 3)),
        fails(
            assign("shop/x", "v6", family=4),
            allocator.FamilyMismatch,
            'Service shop/x: wants IPv4 but pool "v6" (2001:db8::/64) is IPv6',
        ),
        fails(
            assign("shop/x", "v6", "198.18.0.1"),
            allocator.IPOutsidePool,
            'Service shop/x: 198.18.0.1 is outside pool "v6" (2001:db8::/64)',
        ),
    ],
    "ipv6-everything": [
        Step(pools("v6=::/0"), NO_DIFF),
        Step(usage("v6"), (0, 2**128 - 1, 0)),
        Step(assign("shop/web", "v6"), "::1"),
        Step(
            assign("shop/top", "v6", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ),
        Step(assign("shop/db", "v6"), "::2"),
        Step(owner("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["shop/top"]),
        Step(usage("v6"), (3, 2**128 - 1, 3)),
    ],
    "requested-ip-and-moves": [
        Step(pools(LAN, "b=198.18.1.0/30"), NO_DIFF),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        fails(
            assign("shop/web", "lan", "198.18.1.7"),
            allocator.IPOutsidePool,
            'Service shop/web: 198.18.1.7 is outside pool "lan" (198.18.0.0/24)',
        ),
        Step(assign("shop/web", "lan", "198.18.0.9"), "198.18.0.9"),
        Step(owner("198.18.0.1"), []),
        Step(assign("shop/db", "lan"), "198.18.0.1"),
        fails(
            assign("shop/db", "lan", "198.18.0.9"),
            allocator.IPInUse,
            'Service shop/db: 198.18.0.9 in pool "lan" is held by shop/web,'
            " which has no sharing key",
        ),
        Step(assign("shop/web", "b"), "198.18.1.1"),
        Step(owner("198.18.0.9"), []),
        Step(holding("shop/web"), "b:198.18.1.1"),
        Step(assign("shop/db", "b"), "198.18.1.2"),
        fails(assign("shop/api", "b"), allocator.PoolFull, 'pool "b" (198.18.1.0/30)'),
        fails(assign("shop/web", "lan", family=6), allocator.FamilyMismatch, "wants IPv6"),
        Step(usage("lan"), (0, 254, 0)),
        Step(usage("b"), (2, 2, 2)),
    ],
    "failed-move-keeps-the-old-address": [
        Step(pools(LAN, "b=198.18.1.1", "c=198.18.2.0/24!"), NO_DIFF),
        Step(assign("shop/db", "b"), "198.18.1.1"),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        fails(assign("shop/web", "b"), allocator.PoolFull, 'Service shop/web: pool "b"'),
        fails(
            assign("shop/web", "c"),
            allocator.PoolDisabled,
            'Service shop/web: pool "c" (198.18.2.0/24) is disabled and hands out no new address',
        ),
        fails(
            assign("shop/web", "nope"),
            allocator.PoolMissing,
            'Service shop/web: pool "nope" does not exist',
        ),
        fails(assign("shop/web", "lan", "198.18.0.0"), allocator.IPOutsidePool, "network"),
        Step(holding("shop/web"), "lan:198.18.0.1"),
    ],
    "overlap-rejects-the-newer-pool": [
        Step(
            pools("a=198.18.0.0/24", "b=198.18.0.10-198.18.0.20", "c=198.18.0.20-198.18.1.3"),
            (
                {
                    "b": A_IN_B,
                    "c": 'Eip "c" (198.18.0.20-198.18.1.3) overlaps Eip "a" (198.18.0.0/24)',
                },
                {},
            ),
        ),
        fails(
            assign("shop/web", "b"),
            allocator.PoolMissing,
            f'Service shop/web: pool "b" is rejected: {A_IN_B}',
        ),
        Step(assign("shop/web", "a", "198.18.0.15"), "198.18.0.15"),
        Step(
            pools("b=198.18.0.10-198.18.0.20", "c=198.18.0.21-198.18.1.3"),
            ({}, {"shop/web": "198.18.0.15"}),
        ),
        Step(assign("shop/web", "b"), "198.18.0.10"),
        Step(
            pools("a=198.18.0.0/24", "b=198.18.0.10-198.18.0.20", "v6=2001:db8::/64"),
            ({"b": A_IN_B}, {"shop/web": "198.18.0.10"}),
        ),
        Step(usage("v6"), (0, 2**64 - 1, 0)),
    ],
    "only-accepted-pools-count": [
        Step(
            pools("a=198.18.0.0/28", "b=198.18.0.8-198.18.0.20", "c=198.18.0.16/28"),
            ({"b": 'Eip "b" (198.18.0.8-198.18.0.20) overlaps Eip "a" (198.18.0.0/28)'}, {}),
        ),
        Step(assign("shop/web", "c"), "198.18.0.17"),
    ],
    "removed-and-shrunk-pools-orphan": [
        Step(pools(LAN, "b=198.18.1.0/24"), NO_DIFF),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        Step(assign("shop/db", "lan", "198.18.0.200"), "198.18.0.200"),
        Step(assign("shop/api", "b"), "198.18.1.1"),
        Step(
            pools("lan=198.18.0.0/25"), ({}, {"shop/db": "198.18.0.200", "shop/api": "198.18.1.1"})
        ),
        Step(holding("shop/web"), "lan:198.18.0.1"),
        Step(holding("shop/db"), None),
        Step(usage("lan"), (1, 126, 1)),
        fails(assign("shop/api", "b"), allocator.PoolMissing, 'pool "b" does not exist'),
        fails(assign("shop/db", "lan", "198.18.0.200"), allocator.IPOutsidePool, "outside"),
        Step(assign("shop/db", "lan"), "198.18.0.2"),
        Step(pools("lan=198.18.0.0/24"), NO_DIFF),
        Step(assign("shop/api", "lan"), "198.18.0.3"),
        Step(
            pools("lan=2001:db8::/64"),
            ({}, {"shop/web": "198.18.0.1", "shop/db": "198.18.0.2", "shop/api": "198.18.0.3"}),
        ),
        Step(assign("shop/web", "lan"), "2001:db8::1"),
    ],
    "disabled-keeps-but-hands-out-nothing": [
        Step(pools(LAN), NO_DIFF),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        Step(pools(LAN + "!"), NO_DIFF),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        fails(assign("shop/db", "lan"), allocator.PoolDisabled, "is disabled"),
        fails(assign("shop/web", "lan", "198.18.0.5"), allocator.PoolDisabled, "is disabled"),
        Step(usage("lan"), (1, 254, 1)),
        Step(release("shop/web"), "198.18.0.1"),
        fails(assign("shop/web", "lan"), allocator.PoolDisabled, "is disabled"),
        Step(pools(LAN), NO_DIFF),
        Step(assign("shop/db", "lan"), "198.18.0.1"),
    ],
    "sharing": [
        Step(pools(LAN), NO_DIFF),
        Step(assign("shop/web", "lan", share="k TCP/80"), "198.18.0.1"),
        Step(assign("shop/api", "lan", share="k TCP/443"), "198.18.0.1"),
        Step(assign("shop/db", "lan", share="k TCP/80"), "198.18.0.2"),
        Step(assign("shop/dns", "lan", share="other UDP/53"), "198.18.0.3"),
        Step(assign("shop/plain", "lan"), "198.18.0.4"),
        Step(owner("198.18.0.1"), ["shop/api", "shop/web"]),
        Step(usage("lan"), (4, 254, 5)),
        fails(
            assign("shop/x", "lan", "198.18.0.1"),
            allocator.IPInUse,
            'Service shop/x: 198.18.0.1 in pool "lan" is held by shop/web with sharing key "k",'
            " and shop/x has none",
        ),
        fails(
            assign("shop/x", "lan", "198.18.0.1", share="k2 TCP/22"),
            allocator.IPInUse,
            'Service shop/x: 198.18.0.1 in pool "lan" is held by shop/web with sharing key "k",'
            ' not "k2"',
        ),
        fails(
            assign("shop/x", "lan", "198.18.0.1", share="k TCP/22 TCP/443"),
            allocator.IPInUse,
            'Service shop/x: 198.18.0.1 in pool "lan" is held by shop/api, which also uses TCP/443',
        ),
        fails(
            assign("shop/x", "lan", "198.18.0.4", share="k TCP/22"),
            allocator.IPInUse,
            'Service shop/x: 198.18.0.4 in pool "lan" is held by shop/plain,'
            " which has no sharing key",
        ),
        Step(assign("shop/x", "lan", "198.18.0.1", share="k UDP/80"), "198.18.0.1"),
        Step(release("shop/web"), "198.18.0.1"),
        Step(owner("198.18.0.1"), ["shop/api", "shop/x"]),
        Step(release("shop/api"), "198.18.0.1"),
        Step(release("shop/x"), "198.18.0.1"),
        Step(owner("198.18.0.1"), []),
        Step(assign("shop/new", "lan"), "198.18.0.1"),
    ],
    "sharing-changes": [
        Step(pools(LAN), NO_DIFF),
        Step(assign("shop/web", "lan", share="k TCP/80"), "198.18.0.1"),
        Step(assign("shop/api", "lan", share="k TCP/443"), "198.18.0.1"),
        # api's ports now clash with web's: a requested IP fails, an unrequested one moves.
        fails(
            assign("shop/api", "lan", "198.18.0.1", share="k TCP/80"),
            allocator.IPInUse,
            "is held by shop/web, which also uses TCP/80",
        ),
        Step(assign("shop/api", "lan", share="k TCP/80"), "198.18.0.2"),
        Step(owner("198.18.0.1"), ["shop/web"]),
        # web, alone on .1, switches keys in place; .1 no longer takes key k.
        Step(assign("shop/web", "lan", share="k2 TCP/80"), "198.18.0.1"),
        Step(assign("shop/db", "lan", share="k UDP/53"), "198.18.0.2"),
        Step(assign("shop/dns", "lan", share="k2 UDP/53"), "198.18.0.1"),
        # dropping the key while sharing is a clash: dns moves to a free address.
        Step(assign("shop/dns", "lan"), "198.18.0.3"),
        Step(usage("lan"), (3, 254, 4)),
    ],
    "sharing-joins-before-a-lower-free-address": [
        Step(pools(LAN), NO_DIFF),
        Step(assign("shop/plain", "lan"), "198.18.0.1"),
        Step(assign("shop/web", "lan", share="k TCP/80"), "198.18.0.2"),
        Step(release("shop/plain"), "198.18.0.1"),
        Step(assign("shop/api", "lan", share="k TCP/443"), "198.18.0.2"),
        Step(assign("shop/db", "lan", share="k TCP/443"), "198.18.0.1"),
        Step(assign("shop/dns", "lan", share="k UDP/53"), "198.18.0.1"),
    ],
    "a-held-release-hands-the-address-to-nobody-until-settled": [
        Step(pools("lan=198.18.0.0/30"), NO_DIFF),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        Step(assign("shop/db", "lan"), "198.18.0.2"),
        Step(give_back("shop/web"), True),
        Step(holding("shop/web"), None),
        Step(pending("shop/web"), ["198.18.0.1"]),
        Step(owner("198.18.0.1"), ["shop/web"]),
        Step(usage("lan"), (2, 2, 1)),
        fails(
            assign("shop/api", "lan"),
            allocator.PoolFull,
            'Service shop/api: pool "lan" (198.18.0.0/30) has no free address',
        ),
        fails(
            assign("shop/api", "lan", "198.18.0.1"),
            allocator.IPInUse,
            'Service shop/api: 198.18.0.1 in pool "lan" is still shown by shop/web, whose'
            " release is being written, which has no sharing key",
        ),
        Step(settle("shop/db", "198.18.0.1"), False),
        Step(settle("shop/web", "198.18.0.1"), True),
        Step(settle("shop/web", "198.18.0.1"), False),
        Step(owner("198.18.0.1"), []),
        Step(assign("shop/api", "lan"), "198.18.0.1"),
        Step(usage("lan"), (2, 2, 2)),
    ],
    "a-moved-key-takes-its-held-address-back": [
        Step(pools(LAN), NO_DIFF),
        Step(assign("shop/web", "lan"), "198.18.0.1"),
        Step(assign("shop/web", "lan", "198.18.0.9"), "198.18.0.9"),
        Step(lambda state: state.hold(slot("shop/web"), _at("lan", "198.18.0.1")), True),
        Step(assign("shop/db", "lan"), "198.18.0.2"),
        Step(assign("shop/web", "lan", "198.18.0.1"), "198.18.0.1"),
        Step(pending("shop/web"), []),
        Step(owner("198.18.0.1"), ["shop/web"]),
        Step(usage("lan"), (2, 254, 2)),
        Step(lambda state: state.hold(slot("shop/web"), _at("lan", "198.18.0.1")), False),
    ],
    "a-held-shared-address-admits-only-who-could-share-with-it": [
        Step(pools(LAN), NO_DIFF),
        Step(assign("shop/web", "lan", share="k TCP/80"), "198.18.0.1"),
        Step(give_back("shop/web"), True),
        Step(assign("shop/api", "lan", share="k TCP/443"), "198.18.0.2"),
        fails(
            assign("shop/dns", "lan", "198.18.0.1", share="k TCP/80"),
            allocator.IPInUse,
            'Service shop/dns: 198.18.0.1 in pool "lan" is still shown by shop/web, whose'
            " release is being written, which also uses TCP/80",
        ),
        Step(assign("shop/dns", "lan", "198.18.0.1", share="k UDP/53"), "198.18.0.1"),
        Step(settle("shop/web", "198.18.0.1"), True),
        Step(owner("198.18.0.1"), ["shop/dns"]),
        Step(usage("lan"), (2, 254, 2)),
    ],
    "held-releases-follow-their-address-to-the-pool-now-holding-it": [
        Step(pools("a=198.18.0.0/29", "b=198.18.0.8/29"), NO_DIFF),
        Step(assign("shop/web", "a", "198.18.0.6"), "198.18.0.6"),
        Step(give_back("shop/web"), True),
        Step(pools("a=198.18.0.0/30", "b=198.18.0.4-198.18.0.15"), NO_DIFF),
        Step(usage("a"), (0, 2, 0)),
        Step(usage("b"), (1, 12, 0)),
        fails(assign("shop/db", "b", "198.18.0.6"), allocator.IPInUse, "still shown by"),
        Step(pools("a=198.18.0.0/30"), NO_DIFF),
        Step(pending("shop/web"), []),
        Step(lambda state: state.hold(slot("shop/web"), _at("a", "198.18.0.6")), False),
        Step(pools("a=198.18.0.0/29"), NO_DIFF),
        Step(assign("shop/db", "a"), "198.18.0.1"),
    ],
}


def _at(name: str, ip: str) -> allocator.Allocation:
    return allocator.Allocation(PoolName(name), ipaddress.ip_address(ip))


@pytest.mark.parametrize("steps", list(SCENARIOS.values()), ids=list(SCENARIOS))
def test_steps(steps: list[Step]):
    state = allocator.Allocator()
    for number, step in enumerate(steps, 1):
        if step.error is None:
            assert step.act(state) == step.want, f"step {number}"
            continue
        before = snapshot(state)
        with pytest.raises(step.error, match=re.escape(step.message)):
            step.act(state)
        assert snapshot(state) == before, f"step {number} changed the state"


def test_duplicate_pool_names_are_a_caller_bug():
    state = allocator.Allocator()
    with pytest.raises(ValueError, match=re.escape('Eip "a" (198.18.1.0/24) is listed twice')):
        pools("a=198.18.0.0/24", "a=198.18.1.0/24")(state)
    assert snapshot(state) == snapshot(allocator.Allocator())


def test_empty_sharing_key_is_a_caller_bug():
    with pytest.raises(ValueError, match="non-empty"):
        allocator.Sharing("")


def test_every_error_is_an_allocation_error():
    from porterlb import errors

    for error in (
        allocator.IPOutsidePool,
        allocator.IPInUse,
        allocator.PoolFull,
        allocator.PoolDisabled,
        allocator.PoolMissing,
        allocator.FamilyMismatch,
    ):
        assert issubclass(error, errors.AllocationError)
        assert issubclass(error, errors.InvalidSpec)


def test_assigned_lists_addresses_in_order():
    state = allocator.Allocator()
    pools(LAN)(state)
    for key, ip in (("shop/c", "198.18.0.9"), ("shop/a", "198.18.0.3"), ("shop/b", "198.18.0.5")):
        assign(key, "lan", ip)(state)
    assigned = state.assigned(PoolName("lan"))
    assert [str(ip) for ip in assigned] == ["198.18.0.3", "198.18.0.5", "198.18.0.9"]
    assert assigned[ipaddress.ip_address("198.18.0.5")] == {slot("shop/b")}
    with pytest.raises(allocator.PoolMissing, match=re.escape('pool "b" does not exist')):
        state.assigned(PoolName("b"))
