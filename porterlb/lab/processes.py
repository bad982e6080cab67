"""The processes of a lab that outlive the command that started them: start, find, stop.

``lab up`` returns while the lab keeps running, so every process it starts (the control
plane, the manager, the speakers, the kube-proxy stand-in, the backends in the workers'
namespaces) is *detached*, in a session of its own, so that neither the end of ``lab up`` nor
a Ctrl-C in its terminal reaches it, and carries the environment variables
``PORTERLB_LAB=<lab name>`` and ``PORTERLB_LAB_ROLE=<role>``. They are what :func:`members`
looks for in ``/proc/PID/environ``, so ``lab down`` finds every process of a lab with no
record at all: the children of a process (etcd and kube-apiserver under the control-plane
process) inherit them, a ``lab up`` killed before it wrote its record leaves nothing
unfindable, and a process that merely mentions the lab (a ``tail -f`` of one of its logs)
never matches.

Signals go through pidfds (``pidfd_open(2)``, Linux 5.3): a pid recycled between the
``/proc`` scan and the kill is never signalled, and exits are awaited by ``poll(2)`` on the
pidfds instead of re-scanning ``/proc``. A :class:`Process` record pairs the pid with the
process's start time, so ``lab info`` never reports a recycled pid as alive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from porterlb.lab import netns

log = logging.getLogger(__name__)

MARKER: Final = "PORTERLB_LAB"
"""The environment variable naming the lab a process belongs to."""

ROLE: Final = "PORTERLB_LAB_ROLE"
"""The environment variable naming its role (``control-plane``, ``manager``...); the
children of a process inherit both."""

STOP_GRACE: Final = 10.0
"""Seconds between SIGTERM and SIGKILL, as ``controlplane.STOP_GRACE``: kube-apiserver's
graceful shutdown (closing watches, draining requests) takes about a second."""

PF_KTHREAD: Final = 0x00200000
"""include/linux/sched.h: the ``flags`` bit (``/proc/PID/stat`` field 9) of a kernel thread,
whose environment is always empty."""

EXEC_RETRIES: Final = 50
EXEC_PAUSE: Final = 0.001
"""Reads of an empty environment of a user process, and seconds between them: an ``execve``
sets the new one up within microseconds, so 50 ms of retries cover a loaded machine."""

_PROC: Final = Path("/proc")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Process:
    """One process of a lab: ``role`` names it (``manager``, ``speaker/demo-w1``, ...)."""

    role: str
    pid: int
    started: int
    """Field 22 of ``/proc/PID/stat`` (clock ticks after boot): with the pid, an identity no
    later process shares."""
    log: Path

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "pid": self.pid, "started": self.started, "log": str(self.log)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Process:
        return cls(
            role=str(data["role"]),
            pid=int(data["pid"]),
            started=int(data["started"]),
            log=Path(data["log"]),
        )


def start(
    lab: str, role: str, argv: Sequence[str], log: Path, *, namespace: str | None = None
) -> Process:
    """Start ``argv`` detached and marked as a process of ``lab``, output appended to ``log``.

    With ``namespace`` it runs in that network namespace (``nsenter --net``, which execs in
    place: the pid is the program's own; unlike ``ip netns exec`` it leaves the mount
    namespace and ``/sys`` alone). It is spawned with ``posix_spawn``, not
    ``subprocess.Popen``: nothing here will ever wait for it, and a ``Popen`` dropped while
    its child runs warns (ResourceWarning).
    Raises LabError if the namespace is missing or the program cannot be started.
    """
    full = list(argv)
    if namespace is not None:
        if not (netns.NETNS_DIR / namespace).exists():
            raise netns.LabError(f"lab {lab}: netns {namespace} is missing, cannot start {role}")
        full = [*netns.nsenter_prefix(namespace), *full]
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **{MARKER: lab, ROLE: role})
    output = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        pid = os.posix_spawnp(
            full[0],
            full,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, output, 1),
                (os.POSIX_SPAWN_DUP2, output, 2),
            ],
            setsid=True,
        )
    except OSError as error:
        raise netns.LabError(f"lab {lab}: cannot start {role} ({full[0]}): {error}") from error
    finally:
        os.close(output)
    return Process(role=role, pid=pid, started=start_time(pid) or 0, log=log)


def start_time(pid: int) -> int | None:
    """When ``pid`` started (``/proc/PID/stat`` field 22); None if it is gone or a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(process: Process) -> bool:
    """Whether the recorded process still runs (not exited, not a zombie, pid not reused)."""
    return start_time(process.pid) == process.started


def members(lab: str) -> dict[int, str]:
    """pid -> role of the live processes marked as belonging to ``lab`` (never this one)."""
    found = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            environ = _environ(entry)
            if environ.get(MARKER) == lab:
                found[int(entry.name)] = environ.get(ROLE, "")
    return dict(sorted(found.items()))


def stop(
    lab: str, *, grace: float = STOP_GRACE, last: Collection[str] = ("control-plane",)
) -> None:
    """End every process of ``lab``: SIGTERM, then SIGKILL those left after ``grace`` seconds.

    SIGTERM goes only to the processes whose parent is not one of the lab's: a parent stops
    its children in its own order (the control-plane process stops kube-apiserver, then
    etcd; stopped together, each waits on the other for seconds). The processes whose role
    is in ``last`` go once all the others have, so kube-apiserver no longer has clients
    watching. Raises LabError naming the pids that survive SIGKILL.
    """
    found = members(lab)
    _end(lab, [pid for pid, role in found.items() if role not in last], grace)
    _end(lab, [pid for pid, role in found.items() if role in last], grace)


def kill(lab: str, roles: Collection[str]) -> list[int]:
    """SIGKILL every live process of ``lab`` whose role is in ``roles``, the children that
    inherited the role included (containerd's shims carry containerd's); return their pids.

    A crash, not a stop: nothing gets to clean up, as when a node loses power.
    """
    handles = _open(lab, running(lab, roles))
    try:
        for pidfd in handles.values():
            _signal(pidfd, signal.SIGKILL)
    finally:
        for pidfd in handles.values():
            os.close(pidfd)
    return sorted(handles)


def running(lab: str, roles: Collection[str]) -> list[int]:
    """The live processes of ``lab`` whose role is in ``roles``."""
    return [pid for pid, role in members(lab).items() if role in roles]


def _end(lab: str, pids: Iterable[int], grace: float) -> None:
    handles = _open(lab, pids)
    try:
        signalled: set[int] = set()
        deadline = time.monotonic() + grace
        while handles and (left := deadline - time.monotonic()) > 0:
            for pid, pidfd in handles.items():  # the roots, and the orphans of exited roots
                if pid not in signalled and _parent(pid) not in handles:
                    _signal(pidfd, signal.SIGTERM)
                    signalled.add(pid)
            _reap(handles, left)
        if handles:
            log.warning(
                "lab %s: still running %.0f s after SIGTERM, killing: %s",
                lab, grace, "; ".join(_describe(pid) for pid in sorted(handles)),
            )  # fmt: skip
            for pidfd in handles.values():
                _signal(pidfd, signal.SIGKILL)
            deadline = time.monotonic() + grace
            while handles and (left := deadline - time.monotonic()) > 0:
                _reap(handles, left)
        if handles:
            raise netns.LabError(f"lab {lab}: processes {sorted(handles)} survived SIGKILL")
    finally:
        for pidfd in handles.values():
            os.close(pidfd)


def _signal(pidfd: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # exited meanwhile
        signal.pidfd_send_signal(pidfd, sig)


def _parent(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[1]) if fields else None


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` from field 3 (the state) on; None if the process is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after
    # the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def _describe(pid: int) -> str:
    try:
        argv = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid} (gone)"
    return f"pid {pid} ({' '.join(part.decode(errors='replace') for part in argv[:4])})"


def _environ(entry: Path) -> dict[str, str]:
    """The environment ``/proc/PID`` started with; empty for a kernel thread, a zombie or a
    process gone meanwhile.

    A process in the middle of ``execve`` (``sh -c '...; exec prog'``, ``nsenter`` execing the
    program) shows an empty environment for a moment: the kernel has swapped in the new
    address space but not yet written the new environment into it. Such a read is retried,
    :data:`EXEC_RETRIES` times, so that a lab process is never missed for being busy execing.
    """
    for _ in range(EXEC_RETRIES):
        try:
            raw = (entry / "environ").read_bytes()
        except OSError:
            return {}
        fields = _stat(int(entry.name)) if not raw else None
        if raw or fields is None or fields[0] in ("Z", "X") or int(fields[6]) & PF_KTHREAD:
            break
        time.sleep(EXEC_PAUSE)
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def _open(lab: str, pids: Iterable[int]) -> dict[int, int]:
    """pid -> pidfd, for the pids that still carry the mark once pinned by their pidfd."""
    handles = {}
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        if _environ(_PROC / str(pid)).get(MARKER) == lab:  # not a pid reused before pidfd_open
            handles[pid] = pidfd
        else:
            os.close(pidfd)
    return handles


def _reap(handles: dict[int, int], timeout: float) -> None:
    """Wait up to ``timeout`` for one or more of ``handles`` to exit; drop those that did
    (closing their pidfds, reaping those that are our children)."""
    poller = select.poll()
    by_fd = {pidfd: pid for pid, pidfd in handles.items()}
    for pidfd in by_fd:
        poller.register(pidfd, select.POLLIN)
    for pidfd, _ in poller.poll(timeout * 1000):  # a pidfd is readable once its process exits
        pid = by_fd[pidfd]
        del handles[pid]
        os.close(pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
