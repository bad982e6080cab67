"""The API server's own count of write requests, by resource: what a fault and its repair
cost the API server and every watcher, and how the lab's steady state compares.

The counts are kube-apiserver's ``apiserver_request_total`` (its ``/metrics``), so they include
every client's writes (porterlb's, the kubelets', the controller manager's), and a restart of
the API server sets them back (:func:`difference` returns None then).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Final

import httpx2
import yaml

from porterlb.lab import controlplane

STEADY_WINDOW: Final = 10.0
"""Seconds over which steady-state API writes are counted."""

STEADY_LIMIT: Final = 60.0
"""Seconds :func:`steady` waits at most for a second without writes before it counts."""

_WRITE_VERBS: Final = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")
_REQUESTS: Final = re.compile(
    r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M
)


def count(kubeconfig: Path) -> dict[str, float]:
    """kube-apiserver's count of write requests so far, by resource. Blocking."""
    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    text = httpx2.get(
        f"{server}/metrics", verify=controlplane.ssl_context(kubeconfig), timeout=5.0
    ).text
    found: dict[str, float] = {}
    for match in _REQUESTS.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        if labels.get("verb") in _WRITE_VERBS:
            resource = labels.get("resource", "")
            found[resource] = found.get(resource, 0.0) + float(match.group("value"))
    return found


def difference(before: dict[str, float], after: dict[str, float]) -> dict[str, int] | None:
    """The writes by resource between two counts, Leases apart; None if a counter went back
    (the API server restarted)."""
    if any(after.get(k, 0.0) < v for k, v in before.items()):
        return None
    found = {k: round(v - before.get(k, 0.0)) for k, v in after.items() if k != "leases"}
    return {k: v for k, v in sorted(found.items()) if v}


def other(before: dict[str, float], after: dict[str, float]) -> float:
    """The writes between two counts besides Lease renewals."""
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k != "leases")


async def steady(kubeconfig: Path) -> dict[str, float]:
    """API writes per second over :data:`STEADY_WINDOW`, Lease renewals apart, once the
    writes that follow a burst of changes (Events, Eip status) have drained."""
    deadline = time.monotonic() + STEADY_LIMIT
    before = await asyncio.to_thread(count, kubeconfig)
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)  # one sample of the write rate
        after = await asyncio.to_thread(count, kubeconfig)
        quiet = other(before, after) == 0
        before = after
        if quiet:
            break
    await asyncio.sleep(STEADY_WINDOW)  # the measurement window itself, not a wait
    after = await asyncio.to_thread(count, kubeconfig)
    leases = after.get("leases", 0.0) - before.get("leases", 0.0)
    return {
        "leases": leases / STEADY_WINDOW,
        "other": other(before, after) / STEADY_WINDOW,
    }
