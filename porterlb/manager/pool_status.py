"""What an Eip's status should say: usage as OpenELB reports it, plus a Ready condition.

``firstIP``, ``lastIP`` and ``poolSize`` describe the pool as written (a /24 has 256
addresses, as in OpenELB), while ``occupied`` compares usage with what porterlb actually
hands out (a /24 without its network and broadcast addresses: 254). A pool whose node
selector does not parse keeps its usage (its IPs stay allocated) but is not Ready: no node
announces its IPs until the selector is fixed.

:func:`write_after` paces the writes: ``used`` lists every IP of the pool, so each write costs
the API server in proportion to the pool's usage (and its managedFields track every entry).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from porterlb.api import reasons
from porterlb.api.eip import Eip
from porterlb.ipam import allocator

WRITE_INTERVAL = 1.0
"""Least seconds between two status writes of one Eip."""

WRITE_RATE = 500
"""``used`` entries the status writes of all Eips together may carry per second once a pool's
usage is still: a larger pool waits longer (1,000 IPs: 2 s; ten such pools: 20 s each) so that
the bytes sent stay linear in the number of Services, however many pools share them. A fixed
interval cost the API server O(n^2) bytes of validation and managedFields, 12% of its CPU at
2,000 Services in bench.control_plane; the same budget per Eip, 18% at 10,000 Services in ten
pools, where each write of a 1,000-entry status also goes to every watcher."""

CHANGE_ENTRIES = 4
"""``used`` entries a busy pool's status writes may carry per allocation or release: its
status is written again once the changes since the last write reach a quarter of the entries
that write carried, so the entries written while Services arrive stay under five per change,
however slowly they arrive. A budget per second instead (100 entries a second) made a slow
burst the dearest: with kube-apiserver's IPAddress allocator 3,000 Services took minutes to
create, and the Eip status writes cost the API server more than the Services' own status
writes (3.4 against 2.0 s of its CPU, bench.control_plane --apiserver-profile); at 500 a
second they had taken 12% of its CPU while 3,000 Services arrived with the bitmap one. A pool
whose usage has been still for QUIET seconds is written at WRITE_RATE, so the figures settle
soon after the Services do."""

QUIET = 2.0
"""Seconds without an allocation or release in a pool after which its usage counts as still."""

INT64_MAX = 2**63 - 1
"""``poolSize`` is an integer in the CRD; an IPv6 /64 does not fit (OpenELB overflows)."""


def condition(
    *, ready: bool, reason: str, message: str, old: Mapping[str, Any] | None, generation: int
) -> dict[str, Any]:
    """A Ready condition; its transition time moves only when its status does."""
    status = "True" if ready else "False"
    since = (old or {}).get("lastTransitionTime") if (old or {}).get("status") == status else None
    return {
        "type": reasons.READY,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since or _now(),
    }


def desired(
    eip: Eip,
    *,
    problem: tuple[str, str] | None,
    alloc: allocator.Allocator,
    old: Mapping[str, Any],
) -> dict[str, Any]:
    """The status for `eip`. `problem` is (reason, message) when the pool is not served."""
    old_ready = next(
        (c for c in old.get("conditions") or () if c.get("type") == reasons.READY), None
    )
    used: dict[str, str | None] = {ip: None for ip in old.get("used") or {}}  # null deletes
    status: dict[str, Any] = {}
    if problem is None and eip.addresses is not None:
        usage = alloc.usage(eip.name)
        for ip, holders in alloc.assigned(eip.name).items():
            used[str(ip)] = ";".join(sorted(str(holder) for holder in holders))
        size = eip.addresses.size
        status = {
            "usage": sum(1 for holder in used.values() if holder),
            "poolSize": min(size, INT64_MAX),
            "firstIP": str(eip.addresses.first),
            "lastIP": str(eip.addresses.last),
            "v4": eip.addresses.family == 4,
            "occupied": usage.used >= usage.size,
            "ready": eip.node_selector_error is None,
        }
        reason, message = (
            (
                reasons.POOL_READY,
                f'Eip "{eip.name}" ({eip.address_text}) serves {usage.size} addresses',
            )
            if eip.node_selector_error is None
            else (
                reasons.INVALID_NODE_SELECTOR,
                eip.node_selector_error,
            )
        )
        ready = condition(
            ready=eip.node_selector_error is None,
            reason=reason,
            message=message,
            old=old_ready,
            generation=eip.generation,
        )
    else:
        reason, message = problem or (reasons.POOL_INVALID, eip.error or "invalid address")
        status = {"usage": 0, "occupied": False, "ready": False}
        ready = condition(
            ready=False, reason=reason, message=message, old=old_ready, generation=eip.generation
        )
    status["used"] = used or None
    status["conditions"] = [ready]
    return status


def changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether writing `new` over `old` would change anything (nulls delete keys)."""
    for key, value in new.items():
        if key == "used":
            current = old.get("used") or {}
            wanted = {ip: holder for ip, holder in (value or {}).items() if holder is not None}
            if current != wanted:
                return True
        elif key == "conditions":
            if _strip(old.get("conditions")) != _strip(value):
                return True
        elif old.get(key) != value:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Written:
    """An Eip status write, as its successors are paced by."""

    at: float
    """When it was sent (the event loop's clock)."""
    entries: int
    """``used`` entries of all Eips together then: the still pace shares WRITE_RATE among them."""
    own: int
    """``used`` entries of this Eip's write."""
    counted: int
    """The pool's count of allocations and releases when the write was decided: those counted
    since, also while it was on its way, pace the next one."""


def write_after(
    now: float, *, written: Written | None, changed: float | None, changes: int
) -> float:
    """Seconds until an Eip's status may be written again (0: at once).

    `written` is its last write (None: never); `changed` is when the pool's usage last changed
    (None: not since the manager started) and `changes` how many allocations and releases
    the pool has counted in all (a count that only grows).
    """
    if written is None:
        return 0.0
    if (changes - written.counted) * CHANGE_ENTRIES >= written.own:
        return max(0.0, written.at + WRITE_INTERVAL - now)
    still = written.at + max(WRITE_INTERVAL, written.entries / WRITE_RATE)
    if changed is not None:
        still = max(still, changed + QUIET)
    return max(0.0, still - now)


def _strip(conditions: Any) -> list[tuple[Any, ...]]:
    return [
        (
            c.get("type"),
            c.get("status"),
            c.get("reason"),
            c.get("message"),
            c.get("observedGeneration"),
        )
        for c in conditions or ()
    ]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
