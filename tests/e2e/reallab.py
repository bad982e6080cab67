"""What the real-node lab's e2e modules share: skip conditions, pod logs through the API,
the check that ``lab down`` left nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import lightkube
import pytest
from lightkube.core.exceptions import ApiError

from porterlb.lab import binaries, cluster, lab, netns, plan
from porterlb.lab import processes as procs
from porterlb.lab.node import images, mountns, nodelab, porterlb_image
from tests.e2e import marks

if TYPE_CHECKING:  # conftest imports this module
    from tests.e2e.conftest import IPAddress, SpeakerLab

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


LAB_TEST_LIMIT = 600
"""Seconds a test of such a module may take: the first to ask for a lab also pays for its
``lab up`` (over 4 min at a load of 40), which pytest-timeout counts as the test's."""

CHART_MARKS = [
    *marks.e2e(*nodelab.TOOLS, *porterlb_image.BUILD_TOOLS, control_plane=True),
    pytest.mark.timeout(LAB_TEST_LIMIT),
    pytest.mark.skipif(not READY, reason=SKIP_REASON),
    pytest.mark.skipif(not _helm_built(), reason="needs `porterlb lab build-tools` (helm)"),
]
"""The marks of a module whose lab installs porterlb by its chart: root, the node binaries,
helm, buildah and debootstrap, and the time a lab's setup needs."""


@contextlib.contextmanager
def checked(up: Callable[[str], lab.Record], name: str) -> Iterator[lab.Record]:
    """The lab ``up(name)`` brings up, for a module; then removed, and checked gone with the
    host's kernel tunables as they were."""
    host = mountns.host_values()
    try:
        yield up(name)
    finally:
        nodelab.down(name)
    assert leftovers(name) == []
    assert mountns.host_values() == host


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


async def answered_by_its_node(real_lab: SpeakerLab, service: str, ip: IPAddress) -> str | None:
    """The node answering for ``ip`` once exactly one does and it is the one the manager
    recorded for ``service``; None until then."""
    recorded = await cluster.announced_by(real_lab.api, service)
    found = await real_lab.answers(ip)
    if recorded is None or found != {str(real_lab.node(recorded).mac)}:
        return None
    return recorded


async def pod_log(client: lightkube.AsyncClient, pod: str, *, done: str) -> str | None:
    """Pod ``default/pod``'s log, read through the API server (which fetches it from the
    kubelet: ``kubectl logs``), once it holds ``done``; None before (or before it started)."""
    try:
        text = "".join([line async for line in client.log(pod, namespace="default")])
    except ApiError:
        return None
    return text if done in text else None
