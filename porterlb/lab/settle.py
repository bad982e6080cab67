"""Waiting, between two faults of a bench, until the last one's repair has settled.

A healed node brings its pods back, and the controller manager and every kube-proxy then
rewrite and re-read the EndpointSlices of every Service whose backend runs there: with 1,000
Services, 400-700 writes that went on for seconds after the repair returned, so that the next
fault's failover competed with them for the API server, the watchers and the CPU. A run is a
clean failover only if it starts once that is over, which the bench can observe: every pod is
Ready, and :data:`QUIET` seconds pass in which the API server took no write besides the ones a
quiet lab makes anyway (:data:`BACKGROUND`: Lease renewals, Events). Placement changes are
writes (NodePlacements, Services), so none is pending then either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import httpx2
import lightkube
from lightkube.resources.core_v1 import Pod

from porterlb.lab import apiwrites, netns

QUIET: Final = 2.0
"""Seconds without a write (besides :data:`BACKGROUND`) that count as settled: twice the
1 s sample in which the bench looks for its first lab's steady state (``apiwrites.steady``)."""

LIMIT: Final = 300.0
"""Seconds the lab may take to settle before the bench gives up: a heal under load 45 wrote
for over a minute."""

UNCOUNTED: Final = {"(the API server's /metrics did not answer)": 1}
"""What :func:`until_settled` reports for a window it could not count."""

BACKGROUND: Final = frozenset({"leases", "events"})
"""Resources written in a settled lab too: node and leader Leases, and Events, which report
what happened and change nothing that a failover reads."""


def unready(pods: Iterable[Pod]) -> list[str]:
    """``namespace/name`` of the ``pods`` not Ready (running, with every container ready)."""
    found = []
    for pod in pods:
        conditions = (pod.status.conditions if pod.status else None) or ()
        if not any(c.type == "Ready" and c.status == "True" for c in conditions):
            meta = pod.metadata
            found.append(f"{meta.namespace}/{meta.name}" if meta else "?")
    return sorted(found)


def busy(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """The resources written between two counts, :data:`BACKGROUND` apart, with how often."""
    found = {k: round(v - before.get(k, 0.0)) for k, v in after.items() if k not in BACKGROUND}
    return {k: v for k, v in sorted(found.items()) if v > 0}


async def until_settled(
    client: lightkube.AsyncClient,
    kubeconfig: Path,
    *,
    lab_name: str,
    quiet: float = QUIET,
    limit: float = LIMIT,
) -> float:
    """Until every pod is Ready and ``quiet`` seconds pass without a write besides
    :data:`BACKGROUND`; the seconds that took. Raises LabError naming the pods not Ready
    or the resources still written when ``limit`` seconds have passed."""
    started = time.monotonic()
    deadline = started + limit
    before = await _count(kubeconfig)
    while True:
        await asyncio.sleep(quiet)  # the window the writes are counted over
        after = await _count(kubeconfig)
        written = UNCOUNTED if before is None or after is None else busy(before, after)
        waiting = unready([pod async for pod in client.list(Pod, namespace=lightkube.ALL_NS)])
        if not written and not waiting:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise netns.LabError(
                f"lab {lab_name}: not settled within {limit:.0f} s after the repair:"
                f" {_describe(written, waiting)}"
            )
        before = after


async def _count(kubeconfig: Path) -> dict[str, float] | None:
    """The API server's write counts; None when its ``/metrics`` does not answer in time (a
    loaded API server: a window that could not be counted is no quiet one)."""
    try:
        return await asyncio.to_thread(apiwrites.count, kubeconfig)
    except httpx2.HTTPError:
        return None


def _describe(written: dict[str, int], waiting: list[str]) -> str:
    parts = []
    if waiting:
        parts.append(f"pods not Ready: {', '.join(waiting)}")
    if written:
        writes = ", ".join(f"{k} {v}" for k, v in written.items())
        parts.append(f"writes in the last window: {writes}")
    return "; ".join(parts)
