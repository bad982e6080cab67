"""The processes of a lab that outlive the command that started them: start, find, stop.

``lab up`` returns while the lab keeps running, so every process it starts in the host
namespace (the control plane, the manager, the speakers, the kube-proxy stand-in) is
*detached*, in a session of its own, so that neither the end of ``lab up`` nor a Ctrl-C in
its terminal reaches it, and carries the environment variable ``PORTERLB_LAB=<lab name>``.
The variable is what :func:`members` looks for in ``/proc/PID/environ``, so ``lab down``
finds every process of a lab with no record at all: the children of a process (etcd and
kube-apiserver under the control-plane process) inherit it, a ``lab up`` killed before it
wrote its record leaves nothing unfindable, and a process that merely mentions the lab (a
``tail -f`` of one of its logs) never matches. Processes inside a worker's namespace (the
backends) need no mark: ``network.down`` ends everything in a lab's namespaces.

Signals go through pidfds (``pidfd_open(2)``, Linux 5.3): a pid recycled between the
``/proc`` scan and the kill is never signalled, and exits are awaited by ``poll(2)`` on the
pidfds instead of re-scanning ``/proc``. A :class:`Process` record pairs the pid with the
process's start time, so ``lab info`` never reports a recycled pid as alive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from porterlb.lab import netns

MARKER: Final = "PORTERLB_LAB"
"""The environment variable naming the lab a process belongs to."""

STOP_GRACE: Final = 10.0
"""Seconds between SIGTERM and SIGKILL, as ``controlplane.STOP_GRACE``: kube-apiserver's
graceful shutdown (closing watches, draining requests) takes about a second."""

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

    With ``namespace`` it runs there (``ip netns exec``, which execs in place: the pid is the
    program's own). It is spawned with ``posix_spawn``, not ``subprocess.Popen``: nothing here
    will ever wait for it, and a ``Popen`` dropped while its child runs warns (ResourceWarning).
    Raises LabError if the namespace is missing or the program cannot be started.
    """
    full = list(argv)
    if namespace is not None:
        if not (netns.NETNS_DIR / namespace).exists():
            raise netns.LabError(f"lab {lab}: netns {namespace} is missing, cannot start {role}")
        full = ["ip", "netns", "exec", namespace, *full]
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **{MARKER: lab})
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
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after
    # the last ')'. What follows starts at field 3, the state.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(process: Process) -> bool:
    """Whether the recorded process still runs (not exited, not a zombie, pid not reused)."""
    return start_time(process.pid) == process.started


def members(lab: str) -> list[int]:
    """The pids of the live processes marked as belonging to ``lab`` (never this one)."""
    wanted = f"{MARKER}={lab}".encode()
    found = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and _marked(entry, wanted):
            found.append(int(entry.name))
    return sorted(found)


def stop(lab: str, *, grace: float = STOP_GRACE) -> None:
    """End every process of ``lab``: SIGTERM, then SIGKILL those left after ``grace`` seconds.

    Raises LabError naming the pids that survive SIGKILL.
    """
    handles = _open(lab, members(lab))
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pidfd in handles.values():
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, sig)
            _await_exits(handles, grace)
            if not handles:
                return
        raise netns.LabError(f"lab {lab}: processes {sorted(handles)} survived SIGKILL")
    finally:
        for pidfd in handles.values():
            os.close(pidfd)


def _marked(entry: Path, wanted: bytes) -> bool:
    try:
        environ = (entry / "environ").read_bytes()
    except OSError:  # exited meanwhile, or a kernel thread
        return False
    return wanted in environ.split(b"\0")


def _open(lab: str, pids: Iterable[int]) -> dict[int, int]:
    """pid -> pidfd, for the pids that still carry the mark once pinned by their pidfd."""
    wanted = f"{MARKER}={lab}".encode()
    handles = {}
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        if _marked(_PROC / str(pid), wanted):  # the pid was not reused before pidfd_open
            handles[pid] = pidfd
        else:
            os.close(pidfd)
    return handles


def _await_exits(handles: dict[int, int], timeout: float) -> None:
    """Drop from ``handles`` (closing their pidfds) each process that exits within ``timeout``."""
    poller = select.poll()
    for pidfd in handles.values():
        poller.register(pidfd, select.POLLIN)
    by_fd = {pidfd: pid for pid, pidfd in handles.items()}
    deadline = time.monotonic() + timeout
    while handles and (left := deadline - time.monotonic()) > 0:
        for pidfd, _ in poller.poll(left * 1000):  # a pidfd is readable once its process exits
            poller.unregister(pidfd)
            pid = by_fd[pidfd]
            del handles[pid]
            os.close(pidfd)
            with contextlib.suppress(ChildProcessError):  # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
