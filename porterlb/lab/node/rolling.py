"""``helm upgrade`` rolling porterlb's pods, watched: which pods it replaced and how long each
took to stop.

``lab bench-rollout`` on real nodes changes one value per phase, as an operator changing a
setting does: a pod annotation of the speakers (:data:`SPEAKERS`), which rolls the DaemonSet
node by node (the chart's ``maxUnavailable: 1``; each speaker drains on SIGTERM, its
``terminationGracePeriodSeconds`` above its ``drainTimeout``), then one of the managers
(:data:`MANAGERS`), which rolls the Deployment (a new pod Ready before an old one stops; a
stopping leader releases its Lease). The kubelets stop and start the pods; the lab only
watches the release's pods (every :data:`POLL` seconds) until none of the old ones is left and
every new one is Ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from porterlb.lab import lab, netns
from porterlb.lab.node import release

Role = Literal["speaker", "manager"]

SPEAKERS: Final = "speaker.podAnnotations.rollout"
MANAGERS: Final = "manager.podAnnotations.rollout"
"""The values each phase changes: a pod annotation, which changes the pod template and
nothing else."""

SETTINGS: Final[dict[Role, str]] = {"speaker": SPEAKERS, "manager": MANAGERS}

POLL: Final = 0.25
"""Seconds between two lists of the release's pods: a stop is measured to this."""


@dataclasses.dataclass(slots=True)
class Stops:
    """When each old pod was first seen terminating, and when it was gone (monotonic)."""

    since: float
    """When the upgrade began: a pod gone before it was seen terminating stopped since then."""
    terminating: dict[str, float] = dataclasses.field(default_factory=dict)
    gone: dict[str, float] = dataclasses.field(default_factory=dict)

    def see(self, old: set[str], pods: Sequence[Mapping[str, Any]], now: float) -> None:
        """Record what one list of the release's ``pods`` at ``now`` shows of the ``old``."""
        present = {str(pod["name"]): pod for pod in pods}
        for name in old - self.gone.keys():
            pod = present.get(name)
            if pod is None:
                self.gone[name] = now
            elif pod["terminating"]:
                self.terminating.setdefault(name, now)

    def seconds(self) -> list[float]:
        """Each gone pod's stop: first seen terminating (or the upgrade) to gone."""
        return [end - self.terminating.get(name, self.since) for name, end in self.gone.items()]


async def roll(record: lab.Record, role: Role, value: str, *, within: float) -> list[float]:
    """Change ``role``'s rollout annotation to ``value`` by ``helm upgrade`` and watch the
    rollout; the seconds each replaced pod took to stop. Raises LabError if helm fails or the
    rollout takes longer than ``within`` seconds."""
    kubeconfig = record.kubeconfig
    old = {
        str(pod["name"])
        for pod in await asyncio.to_thread(release.pods, kubeconfig)
        if pod["role"] == role
    }
    stops = Stops(since=time.monotonic())
    await asyncio.to_thread(release.helm, "upgrade", kubeconfig, {SETTINGS[role]: value})
    deadline = stops.since + within
    while stops.gone.keys() != old:
        if time.monotonic() > deadline:
            left = ", ".join(sorted(old - stops.gone.keys()))
            raise netns.LabError(
                f"helm upgrade of the {role}s: {left} still there after {within} s"
            )
        stops.see(old, await asyncio.to_thread(release.pods, kubeconfig), time.monotonic())
        await asyncio.sleep(POLL)
    workers = len(record.plan.nodes)
    await asyncio.to_thread(release.wait_ready, kubeconfig, workers, timeout=within)
    return stops.seconds()
