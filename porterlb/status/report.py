"""What ``porterlb status`` says, decided over plain objects: API dicts in, a report out.

Pure (no I/O, no clock: ``now`` comes in), so every case is a unit test. The report is a
dict with stable keys, printed as is by ``--json`` and as tables by :func:`lines`.

Everything comes from what the API records, since status runs anywhere with a kubeconfig
and cannot ask a manager: the Eips' status (usage, conditions), the Services' ingress, pool
label and ``porterlb.io/announced-by`` annotation, the Events the manager posts (when a
node took an IP over, the last failover, nodes that could not announce), the Nodes' Ready
condition, and the MACs the speakers publish in the ConfigMap ``porterlb-peers`` when there
is one. Events expire (one hour by default): "since" then falls back to when porterlb last
wrote the annotation (``managedFields``), and an older failover is unknown (``-``).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from porterlb.api import reasons, wellknown
from porterlb.api import service as svc

RECENT: Final = datetime.timedelta(minutes=10)
"""How far back a report of a node that could not announce still counts as news."""

_MOVED = re.compile(
    r"(?P<ip>\S+) moved from node (?P<old>\S+) to node (?P<new>\S+): (?P=old): (?P<why>.*)$"
)
"""A Failover Event's message (:mod:`porterlb.manager.announcing`)."""
_DETECTED = re.compile(r"found (\d+) ms after its last answer")
_RECORDED = re.compile(r"; recorded (\d+) ms after that was found$")
_NODE_REASON = re.compile(r"(?:^|; )(?P<node>[^:;\s]+): (?P<why>[^;]+)")
"""One ``node: why`` of a NoEligibleNode Event's message (``placement.eligibility.explain``)."""


def build(
    *,
    eips: Sequence[Mapping[str, Any]],
    services: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    nodes: Sequence[Mapping[str, Any]],
    macs: Mapping[str, str],
    now: datetime.datetime,
) -> dict[str, Any]:
    """The report: ``pools``, ``services`` and ``nodes`` (nodes that cannot announce)."""
    by_service: dict[str, list[Mapping[str, Any]]] = {}
    for event in sorted(events, key=_order):
        involved = event.get("involvedObject") or {}
        if involved.get("kind") == "Service":
            key = f"{involved.get('namespace')}/{involved.get('name')}"
            by_service.setdefault(key, []).append(event)
    ours = sorted((s for s in services if _is_ours(svc.parse(s))), key=_service_key)
    return {
        "pools": [_pool(eip) for eip in sorted(eips, key=_name)],
        "services": [_service(s, by_service.get(_service_key(s), []), macs) for s in ours],
        "nodes": _nodes(nodes, events, now),
    }


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _service_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _is_ours(service: svc.Service) -> bool:
    """porterlb's: it opts in (annotation or class), or porterlb has claimed it (pool label:
    also under a ``--lb-class`` of the cluster's choosing)."""
    return (
        svc.ownership(service, wellknown.LOAD_BALANCER_CLASS) is svc.Ownership.OURS
        or service.label(wellknown.POOL_LABEL) is not None
    )


def _pool(eip: Mapping[str, Any]) -> dict[str, Any]:
    spec, status = eip.get("spec") or {}, eip.get("status") or {}
    conditions = [
        {
            "type": c.get("type"),
            "status": c.get("status"),
            "reason": c.get("reason"),
            "message": c.get("message"),
        }
        for c in status.get("conditions") or ()
    ]
    ready = next((c["status"] for c in conditions if c["type"] == reasons.READY), None)
    return {
        "name": _name(eip),
        "address": spec.get("address"),
        "interface": spec.get("interface"),
        "disabled": bool(spec.get("disable")),
        "used": status.get("usage", 0),
        "total": status.get("poolSize"),
        "ready": ready == "True" if ready is not None else None,
        "conditions": conditions,
    }


def _service(
    service_obj: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    macs: Mapping[str, str],
) -> dict[str, Any]:
    service = svc.parse(service_obj)
    node = service.annotation(wellknown.ANNOUNCED_BY)
    latest = events[-1] if events else None
    problem = None
    if latest is not None and latest.get("type") == "Warning":
        problem = {"reason": latest.get("reason"), "message": latest.get("message")}
    return {
        "service": service.key,
        "ips": list(service.ingress),
        "pool": service.annotation(wellknown.POOLS) or service.label(wellknown.POOL_LABEL),
        "node": node,
        "mac": macs.get(node) if node else None,
        "since": _since(events, node) or (_annotated_at(service_obj) if node else None),
        "lastFailover": _last_failover(events),
        "problem": problem,
    }


def _since(events: Sequence[Mapping[str, Any]], node: str | None) -> str | None:
    """When `node` took the Service's IP: the latest Event that put it there."""
    if node is None:
        return None
    for event in reversed(events):
        reason, message = event.get("reason"), str(event.get("message") or "")
        if reason == reasons.NODE_ASSIGNED and message.endswith(f"from node {node}"):
            return _stamp(event)
        if reason == reasons.FAILOVER and f"to node {node}:" in message:
            return _stamp(event)
    return None


def _annotated_at(obj: Mapping[str, Any]) -> str | None:
    """When porterlb last wrote the fields holding the announced-by annotation (the
    Service's ``managedFields``): "since" once the Events that said it have expired."""
    found = None
    for entry in (obj.get("metadata") or {}).get("managedFields") or ():
        fields = entry.get("fieldsV1") or {}
        annotations = (fields.get("f:metadata") or {}).get("f:annotations") or {}
        if entry.get("manager") == wellknown.FIELD_MANAGER and (
            f"f:{wellknown.ANNOUNCED_BY}" in annotations
        ):
            found = max(found or "", str(entry.get("time") or "")) or None
    return found


def _last_failover(events: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    for event in reversed(events):
        if event.get("reason") != reasons.FAILOVER:
            continue
        message = str(event.get("message") or "")
        moved = _MOVED.search(message)
        if moved is None:
            return {"at": _stamp(event), "message": message}
        detected, recorded = _DETECTED.search(message), _RECORDED.search(message)
        return {
            "at": _stamp(event),
            "from": moved["old"],
            "to": moved["new"],
            "why": _RECORDED.sub("", moved["why"]),
            "detectedAfterSeconds": int(detected[1]) / 1000 if detected else None,
            "recordedAfterSeconds": int(recorded[1]) / 1000 if recorded else None,
        }
    return None


def _nodes(
    nodes: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """Nodes that may not announce: not Ready, excluded, or recently reported by the manager
    (a silent speaker, a missing interface), each with why and the source."""
    found: dict[str, dict[str, Any]] = {}
    for node in nodes:
        name = _name(node)
        labels = (node.get("metadata") or {}).get("labels") or {}
        conditions = (node.get("status") or {}).get("conditions") or ()
        ready: Mapping[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
        if ready.get("status") != "True":
            found[name] = _problem(name, "not Ready", "Node condition", None)
        elif wellknown.EXCLUDE_FROM_LB in labels:
            found[name] = _problem(name, f"labelled {wellknown.EXCLUDE_FROM_LB}", "Node", None)
    for event in sorted(events, key=_order):
        stamp = _event_time(event)
        if stamp is None or now - stamp > RECENT:
            continue
        placed = _placed_on(event)
        if placed is not None and found.get(placed, {}).get("at") is not None:
            del found[placed]  # given an IP since it was reported: it announces again
        for name, why in _speaker_reports(event):
            if name not in found or found[name]["at"] is not None:
                involved = event.get("involvedObject") or {}
                subject = f"{involved.get('namespace')}/{involved.get('name')}"
                source = f"{event.get('reason')} on {subject}"
                found[name] = _problem(name, why, source, _stamp(event))
    return [found[name] for name in sorted(found)]


def _problem(node: str, why: str, source: str, at: str | None) -> dict[str, Any]:
    return {"node": node, "why": why, "source": source, "at": at}


def _placed_on(event: Mapping[str, Any]) -> str | None:
    """The node an Event says an IP was just placed on (NodeAssigned, Failover)."""
    message = str(event.get("message") or "")
    if event.get("reason") == reasons.NODE_ASSIGNED:
        _, found, node = message.rpartition(" is announced from node ")
        return node if found else None
    moved = _MOVED.search(message) if event.get("reason") == reasons.FAILOVER else None
    return moved["new"] if moved else None


def _speaker_reports(event: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """(node, why) for each node an Event says cannot announce because of its speaker."""
    message = str(event.get("message") or "")
    if event.get("reason") == reasons.FAILOVER:
        moved = _MOVED.search(message)
        pairs = [(moved["old"], _RECORDED.sub("", moved["why"]))] if moved else []
    elif event.get("reason") == reasons.NO_ELIGIBLE_NODE:
        _, _, explained = message.partition(" is not announced: ")
        pairs = [(m["node"], m["why"]) for m in _NODE_REASON.finditer(explained)]
    else:
        pairs = []
    return [(node, why) for node, why in pairs if "speaker" in why or "interface" in why]


def _order(event: Mapping[str, Any]) -> tuple[datetime.datetime, int]:
    """Events oldest first; one without a time first of all. Event times have whole seconds,
    so within one second the order they were written in decides: etcd's revision, which is
    what a resourceVersion is on every API server porterlb runs with (best effort: the API
    calls it opaque, and an unparsable one sorts first)."""
    version = str((event.get("metadata") or {}).get("resourceVersion", ""))
    stamp = _event_time(event) or datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return stamp, int(version) if version.isdigit() else 0


def _event_time(event: Mapping[str, Any]) -> datetime.datetime | None:
    text = _stamp(event)
    if text is None:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _stamp(event: Mapping[str, Any]) -> str | None:
    meta = event.get("metadata") or {}
    value = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or meta.get("creationTimestamp")
    )
    return str(value) if value else None


# -- text -------------------------------------------------------------------------------------


def lines(report: Mapping[str, Any], *, now: datetime.datetime) -> list[str]:
    """The report as the tables a person reads."""
    out: list[str] = []
    pools = report["pools"]
    if not pools:
        out.append("No Eip (address pool) exists: no Service can get an IP until one is created.")
    else:
        out.append("POOLS")
        rows = [["NAME", "ADDRESS", "USED/TOTAL", "READY", "REASON", "MESSAGE"]]
        for pool in pools:
            ready = next((c for c in pool["conditions"] if c["type"] == reasons.READY), None)
            rows.append(
                [
                    pool["name"],
                    str(pool["address"] or "-"),
                    f"{pool['used']}/{_or_dash(pool['total'])}",
                    ("disabled " if pool["disabled"] else "")
                    + _or_dash(ready["status"] if ready else None),
                    _or_dash(ready["reason"] if ready else None),
                    _or_dash(ready["message"] if ready else None),
                ]
            )
        out += _table(rows)
    out.append("")
    services = report["services"]
    if not services:
        out.append("No Service uses porterlb.")
    else:
        out.append("SERVICES")
        rows = [["SERVICE", "IP", "POOL", "NODE", "MAC", "SINCE", "LAST FAILOVER"]]
        for service in services:
            rows.append(
                [
                    service["service"],
                    ",".join(service["ips"]) or "<pending>",
                    _or_dash(service["pool"]),
                    _or_dash(service["node"]),
                    _or_dash(service["mac"]),
                    _ago(service["since"], now),
                    _failover(service["lastFailover"], now),
                ]
            )
        out += _table(rows)
        for service in services:
            if service["problem"]:
                problem = service["problem"]
                out.append(f"  {service['service']}: {problem['reason']}: {problem['message']}")
    out.append("")
    nodes = report["nodes"]
    if not nodes:
        out.append("Every node may announce (none not Ready, excluded or recently reported).")
    else:
        out.append("NODES THAT MAY NOT ANNOUNCE")
        rows = [["NODE", "WHY", "SOURCE", "WHEN"]]
        for node in nodes:
            rows.append([node["node"], node["why"], node["source"], _ago(node["at"], now)])
        out += _table(rows)
    return out


def _or_dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _ago(stamp: str | None, now: datetime.datetime) -> str:
    if stamp is None:
        return "-"
    try:
        then = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{stamp} ({seconds // size}{unit} ago)"
    return f"{stamp} ({seconds}s ago)"


def _failover(failover: Mapping[str, Any] | None, now: datetime.datetime) -> str:
    """``w2 -> w1 <when>, 0.324 s (312 ms to detect + 12 ms to record)``."""
    if failover is None:
        return "-"
    if "from" not in failover:
        return _ago(failover["at"], now)
    text = f"{failover['from']} -> {failover['to']} {_ago(failover['at'], now)}"
    detected, recorded = failover["detectedAfterSeconds"], failover["recordedAfterSeconds"]
    if detected is not None and recorded is not None:
        text += (
            f", {detected + recorded:.3f} s ({detected * 1000:.0f} ms to detect"
            f" + {recorded * 1000:.0f} ms to record)"
        )
    elif detected is not None:
        text += f", detected {detected * 1000:.0f} ms after the last heartbeat answer"
    return text


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    cells = (zip(row, widths, strict=True) for row in rows)
    return ["  " + "  ".join(cell.ljust(width) for cell, width in row).rstrip() for row in cells]
