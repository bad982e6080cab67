"""What the real-node lab's e2e modules share: skip conditions, pod logs through the API,
the check that ``lab down`` left nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightkube
from lightkube.core.exceptions import ApiError

from porterlb.lab import binaries, lab, netns, plan
from porterlb.lab import processes as procs
from porterlb.lab.node import images, nodelab, porterlb_image

BUILT = all((binaries.bin_dir() / name).is_file() for name in nodelab.BINARIES)
"""Whether ``porterlb lab build-control-plane --nodes`` has run (the modules skip otherwise)."""

READY = BUILT and images.BUSYBOX.is_file()
SKIP_REASON = (
    "needs `porterlb lab build-control-plane --nodes` and busybox-static"
    " (scripts/dev.sh test installs both)"
)


def _helm_built() -> bool:
    try:
        binaries.helm()
    except binaries.BinariesMissing:
        return False
    return True


CHART_READY = READY and _helm_built() and all(map(shutil.which, porterlb_image.BUILD_TOOLS))
"""Whether a real-node lab can also install porterlb by its chart (helm built, the image's
build tools installed)."""
CHART_SKIP_REASON = (
    "needs `porterlb lab build-control-plane --nodes`, `porterlb lab build-tools` (helm),"
    " busybox-static, buildah and debootstrap (scripts/dev.sh test installs them all)"
)


def leftovers(name: str) -> list[str]:
    """Whatever of lab ``name`` survives: namespaces, processes, cgroups, mounts, state."""
    found = [f"netns {ns}" for ns in netns.names() if plan.lab_of(ns) == name]
    found += [f"process {pid} ({role})" for pid, role in procs.members(name).items()]
    found += [f"cgroup {cgroup}" for cgroup in nodelab.cgroup_roots(name)]
    found += [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if name in line
    ]
    if (lab.STATE_ROOT / name).exists():
        found.append(f"state {lab.STATE_ROOT / name}")
    return found


async def pod_log(client: lightkube.AsyncClient, pod: str, *, done: str) -> str | None:
    """Pod ``default/pod``'s log, read through the API server (which fetches it from the
    kubelet: ``kubectl logs``), once it holds ``done``; None before (or before it started)."""
    try:
        text = "".join([line async for line in client.log(pod, namespace="default")])
    except ApiError:
        return None
    return text if done in text else None
