"""The allocator: which Service holds which address of which pool.

Synchronous state over plain data (STYLE.md 5): pools and slots (a Service and one IP family:
a dual-stack Service holds two) in, an
:class:`Allocation` or an :class:`~porterlb.errors.AllocationError` out; no I/O, no clock, no
logging. A call that raises has changed nothing: every check runs before the first write.
On startup the manager replays the recorded assignments (``Request.ip`` set) before it
allocates anything new, so a restart moves no address.

Rules, and where they differ from OpenELB (``pkg/controllers/ipam/ipam.go``):

- Pools arrive in precedence order (oldest first). A pool overlapping an earlier accepted
  one is rejected and allocates nothing; the earlier one keeps working. Only accepted pools
  count, so a pool that overlaps nothing but a rejected pool is accepted.
- A pool that disappears, shrinks, changes family or becomes rejected releases the
  allocations that no longer fit (:attr:`PoolDiff.orphaned`). A disabled pool keeps what it
  has and hands out nothing new.
- With no IP requested, the lowest free usable address is taken (OpenELB scans from
  ``firstIP`` too, but porterlb never hands out a CIDR's network or broadcast address: see
  :mod:`porterlb.api.address`).
- ``assign`` is idempotent: a key whose address still satisfies the request keeps it. A
  changed request moves the key: the new address is taken first and the old one released
  only then, so a failed move keeps the old address.
- A released address can be *held* (:meth:`Allocator.hold`): it stays taken, by a pending
  release of the key that gave it back, until :meth:`Allocator.settle` lifts the hold. The
  manager holds what it releases until the write taking the IP off the Service has landed:
  released in memory at once, the IP went to another Service whose write could land first,
  and the API showed one IP on two Services (bench.churn counted 19 such reads in a run). A
  hold counts as a holder everywhere (clashes, ``owner``, ``assigned``, ``usage().used``)
  except that it never joins a sharing group, and the key that holds it takes it back freely.
- Sharing: OpenELB shares a requested IP silently, with no check at all. porterlb follows
  MetalLB: two Services share an address only if both carry the same non-empty sharing key
  and their (protocol, port) sets are disjoint. With no IP requested, a sharing Service
  first joins the lowest address of the pool already used under its sharing key with no
  port clash, and only then takes a free one. MetalLB instead takes whichever of the two
  comes first in the pool, which can split a sharing group over two addresses when a lower
  one is freed; joining keeps the group on one address and spends none. (MetalLB's
  "backend key", equal selectors for ``externalTrafficPolicy: Local``, is not checked:
  porterlb places per IP, see STYLE.md 6.)

Cost: ``assign`` and ``release`` are O(log r) for r runs of consecutive used addresses
(:class:`porterlb.ipam.pool.UsedAddresses`); joining a sharing group is O(m log m) for the m
addresses used under that sharing key. ``set_pools`` is O(p log p) for p pools, plus the
used addresses of the pools that changed. Memory is proportional to what is used.
"""

from __future__ import annotations

import ipaddress
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from sortedcontainers import SortedList

from porterlb import errors
from porterlb.api import address
from porterlb.api.keys import PoolName, Slot
from porterlb.ipam import pool

Port: TypeAlias = tuple[str, int]
"""(protocol, port) as in a Service's ``spec.ports``: ``("TCP", 80)``."""


@dataclass(frozen=True, slots=True)
class Sharing:
    """A Service's consent to share its address with others of the same non-empty key."""

    key: str
    ports: frozenset[Port] = frozenset()

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a sharing key is non-empty; pass sharing=None not to share")


@dataclass(frozen=True, slots=True)
class Request:
    """What a Service asks for: a pool, and optionally one IP, a family and sharing."""

    pool: PoolName
    ip: address.IPAddress | None = None
    family: address.Family | None = None
    sharing: Sharing | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    """The address a Service holds, the pool it came from, and how it shares it."""

    pool: PoolName
    ip: address.IPAddress
    sharing: Sharing | None = None


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """``used`` distinct addresses out of ``size`` usable ones, held by ``services`` keys."""

    used: int
    size: int
    services: int


@dataclass(frozen=True, slots=True)
class PoolDiff:
    """What :meth:`Allocator.set_pools` did beyond storing the pools.

    ``rejected`` lists every pool this call refused, with the message to report on its Eip;
    ``orphaned`` the allocations it released because their pool no longer holds them.
    """

    rejected: Mapping[PoolName, str] = field(default_factory=dict)
    orphaned: Mapping[Slot, Allocation] = field(default_factory=dict)


class IPOutsidePool(errors.AllocationError):
    """The requested IP is not a usable address of the pool."""


class IPInUse(errors.AllocationError):
    """The requested IP is held by a Service it cannot be shared with."""


class PoolFull(errors.AllocationError):
    """No usable address of the pool is free, and no sharing group can take the Service."""


class PoolDisabled(errors.AllocationError):
    """The pool is disabled: it keeps its allocations but hands out nothing new."""


class PoolMissing(errors.AllocationError):
    """The pool does not exist, or was rejected for overlapping an older one."""


class FamilyMismatch(errors.AllocationError):
    """The Service asks for one IP family and the pool is of the other."""


class _PoolState:
    """One accepted pool and its occupancy; the integers are the addresses' values.

    An address is in ``used`` while it has holders or pending releases (or both).
    """

    __slots__ = (
        "by_sharing",
        "hi",
        "holders",
        "lo",
        "make",
        "pending",
        "services",
        "spec",
        "used",
    )

    def __init__(self, spec: pool.Pool) -> None:
        self.used = pool.UsedAddresses()
        self.holders: dict[int, tuple[Slot, ...]] = {}
        self.pending: dict[int, dict[Slot, Sharing | None]] = {}
        self.by_sharing: dict[str, set[int]] = {}
        self.services = 0
        self.make: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address] = (
            ipaddress.IPv4Address if spec.addresses.family == 4 else ipaddress.IPv6Address
        )
        self.retarget(spec)

    def retarget(self, spec: pool.Pool) -> None:
        """Adopt a new spec of the same family whose usable range holds every used address."""
        self.spec = spec
        self.lo, self.hi = int(spec.usable.first), int(spec.usable.last)


class Allocator:
    """Every pool, and the one address each Service key holds."""

    def __init__(self) -> None:
        self._states: dict[PoolName, _PoolState] = {}
        self._rejected: dict[PoolName, str] = {}
        self._held: dict[Slot, Allocation] = {}
        self._pending: dict[Slot, dict[address.IPAddress, Allocation]] = {}
        """Key -> the addresses it gave back that are still held (see :meth:`hold`)."""

    def set_pools(self, pools: Sequence[pool.Pool]) -> PoolDiff:
        """Replace the pools, given oldest first; see :class:`PoolDiff` for the outcome.

        Raises ValueError if two pools carry the same name (a caller bug: names are unique).
        """
        accepted: dict[PoolName, pool.Pool] = {}
        rejected: dict[PoolName, str] = {}
        claimed = SortedList()  # (version, first, last, name) of accepted pools, disjoint
        for spec in pools:
            if spec.name in accepted or spec.name in rejected:
                raise ValueError(f"{spec} is listed twice")
            earlier = _overlapping(claimed, spec.addresses)
            if earlier is not None:
                rejected[spec.name] = f"{spec} overlaps {accepted[earlier]}"
                continue
            accepted[spec.name] = spec
            span = spec.addresses
            claimed.add((span.family, int(span.first), int(span.last), spec.name))
        orphaned = {
            key: self._held[key]
            for name, state in self._states.items()
            for key in _misfits(state, accepted.get(name))
        }
        for key, held in orphaned.items():
            self._drop(key, held)
        # Pending releases a pool no longer holds go to the pool now holding their address,
        # if any: the Service still shows it, whichever pool it belongs to now.
        moved = [
            (key, self._pending[key][address_])
            for name, state in self._states.items()
            for key, address_ in _pending_misfits(state, accepted.get(name))
        ]
        for key, released in moved:
            self._unhold(key, released)
        states: dict[PoolName, _PoolState] = {}
        for name, spec in accepted.items():
            state = self._states.get(name)
            if state is None or state.spec.addresses.family != spec.addresses.family:
                state = _PoolState(spec)
            else:
                state.retarget(spec)
            states[name] = state
        self._states, self._rejected = states, rejected
        for key, released in moved:
            self.hold(key, released)
        return PoolDiff(rejected=rejected, orphaned=orphaned)

    def assign(self, key: Slot, request: Request) -> Allocation:
        """Give `key` an address satisfying `request`, keeping the one it has if it does.

        Raises PoolMissing, FamilyMismatch, PoolDisabled, IPOutsidePool, IPInUse or PoolFull
        (all AllocationError), having changed nothing.
        """
        state = self._states.get(request.pool)
        if state is None:
            raise PoolMissing(f"Service {key}: {self._missing(request.pool)}")
        spec = state.spec
        if request.family is not None and request.family != spec.addresses.family:
            raise FamilyMismatch(
                f"Service {key}: wants IPv{request.family}"
                f" but {_describe(spec)} is IPv{spec.addresses.family}"
            )
        held = self._held.get(key)
        if held is not None and held.pool == spec.name and request.ip in (None, held.ip):
            n = int(held.ip)
            if self._clash(state, n, key, request.sharing) is None:
                if held.sharing == request.sharing:
                    return held
                self._drop(key, held)
                return self._take(key, state, n, request.sharing)
        if spec.disabled:
            raise PoolDisabled(
                f"Service {key}: {_describe(spec)} is disabled and hands out no new address"
            )
        n = self._pick(key, request, state)
        if held is not None:
            self._drop(key, held)
        return self._take(key, state, n, request.sharing)

    def release(self, key: Slot) -> address.IPAddress | None:
        """Free the address `key` holds and return it; None if it held none."""
        held = self._held.get(key)
        if held is None:
            return None
        self._drop(key, held)
        return held.ip

    def hold(self, key: Slot, released: Allocation) -> bool:
        """Keep the address of `released`, which `key` gave back, taken until :meth:`settle`.

        While held, the address is handed to nobody who could not share it with `released`,
        and `key` may take it back. Nothing is held (False) when no accepted pool serves the
        address, or when `key` holds it anyway.
        """
        state = self._covering(released.ip)
        if state is None:
            return False
        n = int(released.ip)
        if key in state.holders.get(n, ()):
            return False
        pending = state.pending.get(n)
        if pending is None:
            if n not in state.holders:
                state.used.add(n)
            pending = state.pending[n] = {}
        pending[key] = released.sharing
        kept = Allocation(state.spec.name, released.ip, released.sharing)
        self._pending.setdefault(key, {})[released.ip] = kept
        return True

    def settle(self, key: Slot, ip: address.IPAddress) -> bool:
        """Lift the hold `key` has on `ip`; whether there was one (idempotent).

        The address is free again unless somebody else holds it.
        """
        released = self._pending.get(key, {}).get(ip)
        if released is None:
            return False
        self._unhold(key, released)
        return True

    def pending(self, key: Slot) -> Mapping[address.IPAddress, Allocation]:
        """The addresses `key` gave back that are still held, with the pool holding each."""
        return dict(self._pending.get(key, {}))

    def holding(self, key: Slot) -> Allocation | None:
        """The allocation `key` holds, if any."""
        return self._held.get(key)

    def allocations(self) -> Mapping[Slot, Allocation]:
        """Every allocation, as a read-only live view."""
        return types.MappingProxyType(self._held)

    def owner(self, ip: address.IPAddress) -> frozenset[Slot]:
        """The keys holding `ip`, or holding it back: empty when it is free or in no pool."""
        state = self._covering(ip)
        if state is None:
            return frozenset()
        n = int(ip)
        return frozenset((*state.holders.get(n, ()), *state.pending.get(n, ())))

    def family(self, name: PoolName) -> address.Family | None:
        """The IP family of pool `name`; None for an unknown or rejected one."""
        state = self._states.get(name)
        return None if state is None else state.spec.addresses.family

    def usage(self, name: PoolName) -> PoolUsage:
        """How much of pool `name` is used. Raises PoolMissing for an unknown or rejected one."""
        state = self._state(name)
        return PoolUsage(len(state.used), state.hi - state.lo + 1, state.services)

    def assigned(self, name: PoolName) -> Mapping[address.IPAddress, frozenset[Slot]]:
        """Each used address of pool `name`, ascending, with its holders (Eip status.used).

        Raises PoolMissing for an unknown or rejected pool.
        """
        state = self._state(name)
        holders: dict[int, tuple[Slot, ...]] = state.holders
        if state.pending:
            holders = dict(holders)
            for n, pending in state.pending.items():
                holders[n] = (*holders.get(n, ()), *pending)
        return {state.make(n): frozenset(keys) for n, keys in sorted(holders.items())}

    def _covering(self, ip: address.IPAddress) -> _PoolState | None:
        """The accepted pool whose usable addresses include `ip`, if any."""
        n = int(ip)
        for state in self._states.values():
            if state.spec.addresses.family == ip.version and state.lo <= n <= state.hi:
                return state
        return None

    def _state(self, name: PoolName) -> _PoolState:
        state = self._states.get(name)
        if state is None:
            raise PoolMissing(self._missing(name))
        return state

    def _missing(self, name: PoolName) -> str:
        why = self._rejected.get(name)
        if why is None:
            return f'pool "{name}" does not exist'
        return f'pool "{name}" is rejected: {why}'

    def _pick(self, key: Slot, request: Request, state: _PoolState) -> int:
        """The address to take for `request`; raises if there is none."""
        spec = state.spec
        if request.ip is not None:
            why = spec.addresses.reserved(request.ip)
            if why is not None:
                raise IPOutsidePool(
                    f"Service {key}: {request.ip} is {why} of {_describe(spec)}"
                    " and is never handed out"
                )
            if not spec.usable.contains(request.ip):
                raise IPOutsidePool(f"Service {key}: {request.ip} is outside {_describe(spec)}")
            n = int(request.ip)
            clash = self._clash(state, n, key, request.sharing)
            if clash is not None:
                raise IPInUse(f'Service {key}: {request.ip} in pool "{spec.name}" {clash}')
            return n
        if request.sharing is not None:
            for n in sorted(state.by_sharing.get(request.sharing.key, ())):
                if self._clash(state, n, key, request.sharing) is None:
                    return n
        free = state.used.lowest_free(state.lo, state.hi)
        if free is None:
            raise PoolFull(f"Service {key}: {_describe(spec)} has no free address")
        return free

    def _clash(self, state: _PoolState, n: int, key: Slot, sharing: Sharing | None) -> str | None:
        """Why `key` with `sharing` cannot hold address `n` beside its holders and those
        holding it back; None if it can."""
        for other in state.holders.get(n, ()):
            if other != key:
                why = _refusal(other, self._held[other].sharing, key, sharing)
                if why is not None:
                    return f"is held by {other}{why}"
        for other, theirs in state.pending.get(n, {}).items():
            if other != key:
                why = _refusal(other, theirs, key, sharing)
                if why is not None:
                    return f"is still shown by {other}, whose release is being written{why}"
        return None

    def _take(self, key: Slot, state: _PoolState, n: int, sharing: Sharing | None) -> Allocation:
        mine = self._pending.get(key)
        if mine is not None and (released := mine.get(state.make(n))) is not None:
            self._unhold(key, released)  # taken back: the allocation keeps it now
        holders = state.holders.get(n)
        if holders is None:
            if n not in state.pending:
                state.used.add(n)
            state.holders[n] = (key,)
        else:
            state.holders[n] = (*holders, key)
        if sharing is not None:
            state.by_sharing.setdefault(sharing.key, set()).add(n)
        state.services += 1
        allocation = Allocation(state.spec.name, state.make(n), sharing)
        self._held[key] = allocation
        return allocation

    def _drop(self, key: Slot, held: Allocation) -> None:
        state = self._states[held.pool]
        n = int(held.ip)
        holders = state.holders[n]
        if len(holders) > 1:
            state.holders[n] = tuple(other for other in holders if other != key)
        else:
            del state.holders[n]
            if n not in state.pending:
                state.used.remove(n)
            if held.sharing is not None:
                group = state.by_sharing[held.sharing.key]
                group.discard(n)
                if not group:
                    del state.by_sharing[held.sharing.key]
        state.services -= 1
        del self._held[key]

    def _unhold(self, key: Slot, released: Allocation) -> None:
        state = self._states[released.pool]
        n = int(released.ip)
        pending = state.pending[n]
        del pending[key]
        if not pending:
            del state.pending[n]
            if n not in state.holders:
                state.used.remove(n)
        mine = self._pending[key]
        del mine[released.ip]
        if not mine:
            del self._pending[key]


def _refusal(other: Slot, theirs: Sharing | None, key: Slot, sharing: Sharing | None) -> str | None:
    """Why `key` with `sharing` cannot share an address with `other` and `theirs`, as the end
    of a sentence naming `other`; None if it can."""
    if theirs is None:
        return ", which has no sharing key"
    if sharing is None:
        return f' with sharing key "{theirs.key}", and {key} has none'
    if theirs.key != sharing.key:
        return f' with sharing key "{theirs.key}", not "{sharing.key}"'
    common = sharing.ports & theirs.ports
    if common:
        protocol, port = min(common)
        return f", which also uses {protocol}/{port}"
    return None


def _describe(spec: pool.Pool) -> str:
    return f'pool "{spec.name}" ({spec.addresses})'


def _overlapping(claimed: SortedList, span: address.AddressRange) -> PoolName | None:
    """The accepted pool `span` overlaps, if any: the one starting last at or before its end.

    Accepted ranges are disjoint, so their ends ascend with their starts: if that one ends
    before `span` starts, every earlier one does too.
    """
    index = claimed.bisect_right((span.family, int(span.last) + 1)) - 1
    if index < 0:
        return None
    version, _, last, name = claimed[index]
    if version != span.family or last < int(span.first):
        return None
    return PoolName(name)


def _misfits(state: _PoolState, spec: pool.Pool | None) -> list[Slot]:
    """The keys holding an address of `state` that `spec`, its replacement, does not hold."""
    kept = _kept(state, spec)
    if kept is None:
        return []
    return [key for n, keys in state.holders.items() if n not in kept for key in keys]


def _pending_misfits(
    state: _PoolState, spec: pool.Pool | None
) -> list[tuple[Slot, address.IPAddress]]:
    """The pending releases of `state` that `spec`, its replacement, does not hold."""
    kept = _kept(state, spec)
    if kept is None:
        return []
    return [
        (key, state.make(n))
        for n, pending in state.pending.items()
        if n not in kept
        for key in pending
    ]


def _kept(state: _PoolState, spec: pool.Pool | None) -> range | None:
    """The addresses of `state` that `spec`, its replacement, still holds (None: all)."""
    if spec is not None and spec.usable == state.spec.usable:
        return None
    if spec is None or spec.addresses.family != state.spec.addresses.family:
        return range(0)
    return range(int(spec.usable.first), int(spec.usable.last) + 1)
