"""The lab's own mount namespace, in which every containerd and kubelet of a lab runs.

**Why one namespace of its own.** A kubelet sets six kernel tunables at start
(``setupKernelTunables`` in ``pkg/kubelet/cm/container_manager_linux.go``, v1.36.3), among them
``kernel.panic=10``, ``kernel.panic_on_oops=1`` and ``vm.overcommit_memory=1``: all
machine-wide, and with the first two any kernel oops reboots the machine the lab shares with
everything else. In this namespace each of those ``/proc/sys`` files is covered by a bind mount
of an ordinary file that already holds the value the kubelet wants, so the kubelet reads it,
has nothing to change, and neither the kernel nor the file is ever written. (Covers holding the
host's values were written by every kubelet of the lab, and a kubelet reading a cover while
another had truncated it and not yet written it read ``""`` and exited: "Failed to start
ContainerManager: strconv.Atoi: parsing "": invalid syntax", seen under load.) The namespace is
also what containerd and the kubelet must share anyway: the volumes the kubelet mounts for a
pod must be visible to the runtime that starts its containers (``ip netns exec`` would give
each command a mount namespace of its own, and remount ``/sys`` so ``/sys/fs/cgroup`` is
empty). Its propagation is private, so nothing mounted in it (overlay snapshots, pod volumes)
shows on the host, and all of it goes with the namespace when its last process ends.

**Who holds it.** A marked lab process (``unshare --mount`` running ``sleep infinity`` once
the covers are in place), so ``lab down`` ends it like any other; the other processes join it
with ``nsenter --mount=/proc/PID/ns/mnt --net=/run/netns/WORKER``, which execs in place.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from porterlb.lab import netns

KUBELET_WANTS: Final = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
"""Every tunable the kubelet's ``setupKernelTunables`` writes, with the value it writes
(``component-helpers/node/util/sysctl``, kubelet v1.36.3)."""

COVERED: Final = tuple(KUBELET_WANTS)

HIDDEN: Final = ("/run/containerd", "/var/log/containers", "/var/lib/kubelet", "/var/lib/cni")
"""Host paths containerd and the kubelet write to whatever their configuration says (shim
sockets under ``/run/containerd/s``, log links in ``/var/log/containers``, the device
manager's ``/var/lib/kubelet/device-plugins/kubelet.sock``, the CNI library's cache of
results in ``/var/lib/cni/results``): each gets a tmpfs of the
namespace's own, so nothing lands on the host and labs do not meet there. The empty
directories are created on the host if missing (a mount needs its mount point). The
kubelets of one lab share these; they use no device plugins."""

READY: Final = "covered"
"""What the holder prints once every cover is mounted."""

PROC_SYS: Final = Path("/proc/sys")


def host_values(proc_sys: Path = PROC_SYS) -> dict[str, str]:
    """The current value of each covered tunable, as ``/proc/sys`` shows it here."""
    return {key: (proc_sys / key).read_text().strip() for key in COVERED}


def holder_argv(directory: Path) -> list[str]:
    """The command that makes the namespace, covers the tunables and then holds it.

    The covers are files in ``directory`` holding the values the kubelet wants.
    """
    directory.mkdir(parents=True, exist_ok=True)
    script = ["set -e"]
    for key, value in KUBELET_WANTS.items():
        cover = directory / key.replace("/", ".")
        cover.write_text(f"{value}\n")
        script.append(f"mount --bind {shlex.quote(str(cover))} {PROC_SYS / key}")
    for path in HIDDEN:
        script.append(f"mkdir -p {path}; mount -t tmpfs -o mode=0755 tmpfs {path}")
    script += [f"echo {READY}", "exec sleep infinity"]
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "; ".join(script)]


def enter_argv(holder: int, namespace: str) -> list[str]:
    """The prefix that runs a command in the holder's mount namespace and in netns ``namespace``.

    The command runs only if every tunable is covered where it lands: a shell checks
    ``/proc/self/mountinfo`` first and then execs it in place (the pid stays the command's).
    So a holder pid reused by some other process (a later restart of a kubelet, with the
    holder gone) can never put a kubelet in the host's mount namespace.
    """
    checks = " ".join(f"/proc/sys/{key}" for key in COVERED)
    guard = (
        f'for point in {checks}; do grep -q " $point " /proc/self/mountinfo'
        ' || { echo "refusing to start: $point is not covered" >&2; exit 1; }; done; exec "$@"'
    )
    return [*netns.nsenter_prefix(namespace, mount_of=holder), "sh", "-c", guard, "guard"]


def check_host(expected: Mapping[str, str], proc_sys: Path = PROC_SYS) -> None:
    """Raise LabError naming every covered tunable whose host value is not ``expected``."""
    changed = {key: value for key, value in host_values(proc_sys).items() if value != expected[key]}
    if changed:
        detail = ", ".join(f"{key}={value} (was {expected[key]})" for key, value in changed.items())
        raise netns.LabError(f"host kernel tunables changed: {detail}")


def check_covered(holder: int) -> None:
    """Raise LabError unless every covered tunable is a mount point in ``holder``'s namespace.

    The guard that runs before any kubelet can: a kubelet started without the covers would
    change the host's values.
    """
    mountinfo = Path(f"/proc/{holder}/mountinfo").read_text().splitlines()
    points = {line.split()[4] for line in mountinfo}
    missing = [key for key in COVERED if str(PROC_SYS / key) not in points]
    if missing:
        raise netns.LabError(f"mount namespace of pid {holder}: {', '.join(missing)} not covered")
