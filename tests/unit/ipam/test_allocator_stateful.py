"""The allocator against a naive model that enumerates small pools, under random operations.

The model states the rules the plainest way (scan every address, in order); the allocator
must agree with it on every outcome, and on every read after every step. Releases are
given back held or not, and held ones settled in any order, as the manager's release writes
land or fail: no address is ever in the hands of two holders that could not share it (a hold
counts as a holder), and none leaks (every used address has a holder).
"""

import ipaddress
from collections import defaultdict

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from porterlb.api import address
from porterlb.api.keys import PoolName, ServiceKey, Slot
from porterlb.ipam import allocator, pool

VARIANTS = {
    PoolName("a"): ("198.18.0.0/29", "198.18.0.0/30", "198.18.0.0/28"),
    PoolName("b"): ("198.18.0.4-198.18.0.9",),
    PoolName("c"): ("198.18.0.8/31", "198.18.0.9"),
    PoolName("v6"): ("2001:db8::/126", "2001:db8::1-2001:db8::2"),
}
"""Small pools that overlap in several ways, and shrink, grow or move between calls."""

NAMES = [*VARIANTS, PoolName("missing")]
KEYS = [Slot(ServiceKey(f"ns/s{i}"), 4) for i in range(6)]
PROBE = Slot(ServiceKey("probe/lowest-free"), 4)
IPS = [ipaddress.ip_address(f"198.18.0.{i}") for i in range(18)] + [
    ipaddress.ip_address(f"2001:db8::{i}") for i in range(5)
]
SHARINGS = [
    None,
    allocator.Sharing("k", frozenset({("TCP", 80)})),
    allocator.Sharing("k", frozenset({("TCP", 443)})),
    allocator.Sharing("k", frozenset({("TCP", 80), ("UDP", 53)})),
    allocator.Sharing("j", frozenset({("TCP", 80)})),
]

Expected = allocator.Allocation | type[Exception]

pool_choices = st.lists(
    st.tuples(
        st.sampled_from(list(VARIANTS)), st.integers(0, 2), st.sampled_from([False] * 3 + [True])
    ),
    unique_by=lambda choice: choice[0],
    max_size=len(VARIANTS),
)
"""Which pools, in which precedence order, each in which variant, disabled or not."""


def addresses_of(spec: pool.Pool) -> list[address.IPAddress]:
    usable = spec.usable
    return [type(usable.first)(n) for n in range(int(usable.first), int(usable.last) + 1)]


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.allocator = allocator.Allocator()
        self.pools: dict[PoolName, pool.Pool] = {}
        self.held: dict[Slot, allocator.Allocation] = {}
        self.pending: dict[Slot, dict[address.IPAddress, allocator.Allocation]] = {}

    # The model.

    def pending_at(self, ip: address.IPAddress) -> dict[Slot, allocator.Allocation]:
        return {key: mine[ip] for key, mine in self.pending.items() if ip in mine}

    def hands(self, ip: address.IPAddress) -> list[tuple[Slot, allocator.Allocation]]:
        """Every holder of `ip`, held or held back."""
        return [*self.holders(ip).items(), *self.pending_at(ip).items()]

    def holders(self, ip: address.IPAddress) -> dict[Slot, allocator.Allocation]:
        return {key: held for key, held in self.held.items() if held.ip == ip}

    def fits(self, key: Slot, ip: address.IPAddress, sharing: allocator.Sharing | None) -> bool:
        for other, held in self.hands(ip):
            if other == key:
                continue
            if sharing is None or held.sharing is None or held.sharing.key != sharing.key:
                return False
            if sharing.ports & held.sharing.ports:
                return False
        return True

    def expect(self, key: Slot, request: allocator.Request) -> Expected:
        spec = self.pools.get(request.pool)
        if spec is None:
            return allocator.PoolMissing
        if request.family not in (None, spec.addresses.family):
            return allocator.FamilyMismatch
        held = self.held.get(key)
        if (
            held is not None
            and held.pool == spec.name
            and request.ip in (None, held.ip)
            and self.fits(key, held.ip, request.sharing)
        ):
            return allocator.Allocation(held.pool, held.ip, request.sharing)
        if spec.disabled:
            return allocator.PoolDisabled
        if request.ip is not None:
            if not spec.usable.contains(request.ip):
                return allocator.IPOutsidePool
            if not self.fits(key, request.ip, request.sharing):
                return allocator.IPInUse
            return allocator.Allocation(spec.name, request.ip, request.sharing)
        candidates = addresses_of(spec)
        if request.sharing is not None:
            for ip in candidates:
                group = [h.sharing for h in self.holders(ip).values()]
                joinable = any(s is not None and s.key == request.sharing.key for s in group)
                if joinable and self.fits(key, ip, request.sharing):
                    return allocator.Allocation(spec.name, ip, request.sharing)
        for ip in candidates:
            if not self.hands(ip):
                return allocator.Allocation(spec.name, ip, request.sharing)
        return allocator.PoolFull

    def snapshot(self) -> dict[str, object]:
        seen: dict[str, object] = {
            "held": dict(self.allocator.allocations()),
            "pending": {key: dict(self.allocator.pending(key)) for key in KEYS},
        }
        for name in NAMES:
            try:
                seen[name] = (self.allocator.usage(name), self.allocator.assigned(name))
            except allocator.PoolMissing as missing:
                seen[name] = str(missing)
        return seen

    # The operations.

    @initialize(chosen=pool_choices.filter(bool))
    def start(self, chosen: list[tuple[PoolName, int, bool]]) -> None:
        self.set_pools(chosen)

    @rule(chosen=pool_choices)
    def set_pools(self, chosen: list[tuple[PoolName, int, bool]]) -> None:
        specs = [
            pool.Pool(name, address.parse(VARIANTS[name][i % len(VARIANTS[name])]), disabled)
            for name, i, disabled in chosen
        ]
        accepted: dict[PoolName, pool.Pool] = {}
        for spec in specs:
            if not any(spec.addresses.overlaps(o.addresses) for o in accepted.values()):
                accepted[spec.name] = spec
        orphaned = {
            key: held
            for key, held in self.held.items()
            if held.pool not in accepted or not accepted[held.pool].usable.contains(held.ip)
        }
        diff = self.allocator.set_pools(specs)
        assert set(diff.rejected) == {spec.name for spec in specs} - set(accepted)
        assert dict(diff.orphaned) == orphaned
        self.pools = accepted
        self.held = {key: held for key, held in self.held.items() if key not in orphaned}
        moved: dict[Slot, dict[address.IPAddress, allocator.Allocation]] = {}
        for key, mine in self.pending.items():
            for ip, released in mine.items():
                covering = [spec for spec in accepted.values() if spec.usable.contains(ip)]
                if covering:
                    kept = allocator.Allocation(covering[0].name, ip, released.sharing)
                    moved.setdefault(key, {})[ip] = kept
        self.pending = moved

    @rule(
        data=st.data(),
        key=st.sampled_from(KEYS),
        family=st.sampled_from([None, None, 4, 6]),
        sharing=st.sampled_from(SHARINGS),
    )
    def assign(self, data, key, family, sharing) -> None:
        name = self.draw_pool(data)
        spec = self.pools.get(name)
        near = st.sampled_from(addresses_of(spec)) if spec else st.nothing()
        ip = data.draw(st.none() | near | st.sampled_from(IPS))
        self.check_assign(key, allocator.Request(name, ip, family, sharing))

    @rule(data=st.data(), key=st.sampled_from(KEYS), sharing=st.sampled_from(SHARINGS))
    def assign_any_address(self, data, key, sharing) -> None:
        """Unrequested assignments again, so that pools fill up and sharing groups form."""
        self.check_assign(key, allocator.Request(self.draw_pool(data), sharing=sharing))

    def draw_pool(self, data: st.DataObject) -> PoolName:
        """Mostly an accepted pool, sometimes any name (rejected, removed or unknown)."""
        accepted = st.sampled_from(sorted(self.pools)) if self.pools else st.nothing()
        return data.draw(accepted | accepted | st.sampled_from(NAMES))

    def check_assign(self, key: Slot, request: allocator.Request) -> None:
        expected = self.expect(key, request)
        if isinstance(expected, allocator.Allocation):
            assert self.allocator.assign(key, request) == expected
            self.held[key] = expected
            self.forget(key, expected.ip)  # taken back
            return
        before = self.snapshot()
        with pytest.raises(expected):
            self.allocator.assign(key, request)
        assert self.snapshot() == before

    @rule(key=st.sampled_from(KEYS))
    def release(self, key: Slot) -> None:
        held = self.held.pop(key, None)
        assert self.allocator.release(key) == (None if held is None else held.ip)
        if held is not None and not self.hands(held.ip):
            assert self.allocator.owner(held.ip) == frozenset()

    @rule(key=st.sampled_from(KEYS))
    def give_back(self, key: Slot) -> None:
        """A release held until its write lands, as the manager releases."""
        held = self.held.pop(key, None)
        assert self.allocator.release(key) == (None if held is None else held.ip)
        if held is not None:
            assert self.allocator.hold(key, held)
            self.pending.setdefault(key, {})[held.ip] = held

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), key=st.sampled_from(KEYS), sharing=st.sampled_from(SHARINGS))
    def ask_for_a_held_address(self, data, key, sharing) -> None:
        """Another Service (or the one giving it back) asks for an address still held."""
        released = data.draw(st.sampled_from(self.all_pending()))[1]
        self.check_assign(key, allocator.Request(released.pool, released.ip, sharing=sharing))

    @rule(data=st.data(), key=st.sampled_from(KEYS))
    def settle(self, data: st.DataObject, key: Slot) -> None:
        """A release write lands (or the cache shows it did), in any order."""
        mine = sorted(self.pending.get(key, ()), key=lambda ip: (ip.version, ip))
        ip = data.draw((st.sampled_from(mine) if mine else st.nothing()) | st.sampled_from(IPS))
        assert self.allocator.settle(key, ip) == (ip in self.pending.get(key, {}))
        self.forget(key, ip)

    def forget(self, key: Slot, ip: address.IPAddress) -> None:
        mine = self.pending.get(key, {})
        mine.pop(ip, None)
        if not mine:
            self.pending.pop(key, None)

    @precondition(lambda self: any(not spec.disabled for spec in self.pools.values()))
    @rule(data=st.data())
    def lowest_free_is_handed_out(self, data: st.DataObject) -> None:
        """A fresh, unshared Service gets the lowest address nobody holds, released or not."""
        enabled = sorted(name for name, spec in self.pools.items() if not spec.disabled)
        name = data.draw(st.sampled_from(enabled))
        request = allocator.Request(name)
        expected = self.expect(PROBE, request)
        if isinstance(expected, allocator.Allocation):
            assert self.allocator.assign(PROBE, request) == expected
            assert self.allocator.release(PROBE) == expected.ip
        else:
            with pytest.raises(expected):
                self.allocator.assign(PROBE, request)

    # What must hold after every step.

    @invariant()
    def reads_match_the_model(self) -> None:
        assert dict(self.allocator.allocations()) == self.held
        for key in KEYS:
            assert set(self.allocator.pending(key)) == set(self.pending.get(key, ()))
        for name, spec in self.pools.items():
            groups: dict[address.IPAddress, set[Slot]] = defaultdict(set)
            for key, held in self.held.items():
                if held.pool == name:
                    groups[held.ip].add(key)
            services = sum(len(keys) for keys in groups.values())
            for key, mine in self.pending.items():
                for ip, released in mine.items():
                    if released.pool == name:
                        groups[ip].add(key)
            assert self.allocator.usage(name) == allocator.PoolUsage(
                len(groups), spec.usable.size, services
            )
            assert self.allocator.assigned(name) == {ip: frozenset(k) for ip, k in groups.items()}
        for ip in IPS:
            assert self.allocator.owner(ip) == {key for key, _ in self.hands(ip)}

    @invariant()
    def addresses_are_shared_only_by_consent(self) -> None:
        for key, held in [*self.held.items(), *self.all_pending()]:
            assert self.pools[held.pool].usable.contains(held.ip)
            for other, theirs in self.hands(held.ip):
                if other == key:
                    continue
                assert held.sharing is not None and theirs.sharing is not None
                assert held.sharing.key == theirs.sharing.key
                assert not held.sharing.ports & theirs.sharing.ports

    def all_pending(self) -> list[tuple[Slot, allocator.Allocation]]:
        return [(key, released) for key, mine in self.pending.items() for released in mine.values()]


TestAllocator = AllocatorMachine.TestCase
