"""What an Eip's status should say: usage as OpenELB reports it, plus a Ready condition.

``firstIP``, ``lastIP`` and ``poolSize`` describe the pool as written (a /24 has 256
addresses, as in OpenELB), while ``occupied`` compares usage with what porterlb actually
hands out (a /24 without its network and broadcast addresses: 254). A pool whose node
selector does not parse keeps its usage (its IPs stay allocated) but is not Ready: no node
announces its IPs until the selector is fixed.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from porterlb.api import reasons
from porterlb.api.eip import Eip
from porterlb.ipam import allocator

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
