"""Run things inside the lab's network namespaces: commands and socket setup.

Three ways in, one per need:

- :func:`run` goes through ``ip netns exec``, which also gives the command a private ``/sys``
  for its namespace.
- :func:`nsenter_prefix` is the argv prefix of a long-lived process (a lab role started by
  :mod:`porterlb.lab.processes`, a measuring stream): ``nsenter`` execs in place, so the pid
  is the program's own, and it leaves the mount namespace and ``/sys`` alone.
- :func:`call_in` runs a callable in a fresh thread that ``setns(2)``-ed into the namespace and
  exits afterwards. ``setns`` changes only the calling thread, and a socket stays in the
  namespace it was created in, so a speaker living in the host namespace (next to the API
  server on loopback) can open its AF_PACKET and UDP sockets on a worker's ``eth0`` this way.
  The thread is never reused: a pooled thread (``asyncio.to_thread``) would stay in the
  namespace and leak it into unrelated work. Python 3.11 has no ``os.setns``, so libc's is
  called through ctypes; pyroute2's ``netns.setns`` is avoided because it *creates* a missing
  namespace by default, and its netns sockets come from a forked helper process per socket.

Everything else here (listing namespaces, the processes inside them, ending those processes)
reads ``/run/netns`` and ``/proc`` directly: one pass instead of an ``ip netns pids`` per
namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeVar

from porterlb import errors

T = TypeVar("T")

NETNS_DIR: Final = Path("/run/netns")
"""Where ``ip netns add`` bind-mounts named namespaces (iproute2 ``NETNS_RUN_DIR``)."""

CLONE_NEWNET: Final = 0x40000000
"""``include/uapi/linux/sched.h``: the namespace type argument of ``setns(2)``."""

COMMAND_TIMEOUT: Final = 30.0
"""Seconds for one ``ip``/``nft``/``ping`` command; each takes milliseconds, so hitting this
means the kernel or the tool is stuck and the lab should fail loudly."""

POLL_INTERVAL: Final = 0.02
"""Seconds between two checks of a condition in :func:`wait_until`: short next to the
~100 ms a process takes to exit or a server to bind."""

_libc: Final = ctypes.CDLL(None, use_errno=True)


class LabError(errors.PorterlbError):
    """The namespace lab could not be built, inspected or torn down; the message says where."""


def run(netns: str | None, argv: Sequence[str], *, input: str | None = None) -> str:
    """Run ``argv`` in ``netns`` (None: the caller's namespace); return stdout.

    Raises LabError naming the namespace, the command and its stderr when it fails.
    """
    full = list(argv) if netns is None else ["ip", "netns", "exec", netns, *argv]
    where = "the host namespace" if netns is None else f"netns {netns}"
    try:
        done = subprocess.run(
            full, input=input, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LabError(f"{where}: {' '.join(argv)!r} failed: {error}") from error
    if done.returncode != 0:
        raise LabError(
            f"{where}: {' '.join(argv)!r} exited with {done.returncode}: {done.stderr.strip()}"
        )
    return done.stdout


def nsenter_prefix(netns: str, *, mount_of: int | None = None) -> list[str]:
    """The argv prefix that runs a command in netns ``netns`` and, with ``mount_of``, in the
    mount namespace of that pid; the command's argv follows it."""
    mount = [] if mount_of is None else [f"--mount=/proc/{mount_of}/ns/mnt"]
    return ["nsenter", *mount, f"--net={NETNS_DIR / netns}", "--"]


def call_in(netns: str, fn: Callable[[], T]) -> T:
    """Return ``fn()`` as run by a new thread inside ``netns``; re-raise what it raises.

    Sockets ``fn`` creates stay in ``netns`` for their whole life. Raises LabError if the
    namespace cannot be entered.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def enter_and_call() -> None:
        try:
            _setns(netns)
            outcome.append(fn())
        except BaseException as error:  # handed to the calling thread below
            failure.append(error)

    thread = threading.Thread(target=enter_and_call, name=f"netns/{netns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def names() -> tuple[str, ...]:
    """The named network namespaces (``ip netns list``), sorted."""
    try:
        return tuple(sorted(entry.name for entry in NETNS_DIR.iterdir()))
    except FileNotFoundError:
        return ()


def pids(namespaces: Iterable[str]) -> dict[str, list[int]]:
    """The live processes whose main thread is in each namespace (``ip netns pids``).

    Zombies are left out: their ``/proc/PID/ns/net`` is gone, and they hold nothing.
    """
    identities: dict[tuple[int, int], str] = {}
    for netns in namespaces:
        with contextlib.suppress(FileNotFoundError):
            stat = (NETNS_DIR / netns).stat()
            identities[(stat.st_dev, stat.st_ino)] = netns
    found: dict[str, list[int]] = {netns: [] for netns in identities.values()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "ns" / "net").stat()
        except OSError:  # exited meanwhile, or a zombie
            continue
        owner = identities.get((stat.st_dev, stat.st_ino))
        if owner is not None:
            found[owner].append(int(entry.name))
    return found


def terminate(namespaces: Iterable[str], *, grace: float = 5.0) -> None:
    """End every process in ``namespaces``: SIGTERM, then SIGKILL after ``grace`` seconds.

    The caller's own pid is spared. Raises LabError if a process survives SIGKILL.
    """
    namespaces = tuple(namespaces)

    def remaining() -> list[int]:
        alive = pids(namespaces).values()
        return [pid for group in alive for pid in group if pid != os.getpid()]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        targets = remaining()
        if not targets:
            return
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(LabError):
            wait_until(lambda: not remaining(), timeout=wait, what="processes to exit")
    if survivors := remaining():
        raise LabError(f"processes {survivors} in {', '.join(namespaces)} survived SIGKILL")


@contextlib.contextmanager
def scratch(name: str) -> Iterator[str]:
    """A bare namespace ``name`` (only ``lo``, up) for a test or a bench, removed on exit with
    every process still in it. Raises LabError if it cannot be made."""
    run(None, ["ip", "netns", "add", name])
    try:
        run(name, ["ip", "link", "set", "lo", "up"])
        yield name
    finally:
        terminate([name])
        run(None, ["ip", "netns", "delete", name])


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return as soon as ``condition()`` holds; raise LabError naming ``what`` after ``timeout``."""
    deadline = clock() + timeout
    while not condition():
        if clock() >= deadline:
            raise LabError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def write_sysctls(netns: str, settings: Mapping[str, int]) -> None:
    """Write ``settings`` (``net.ipv4.ip_forward``-style keys) inside ``netns``, in order.

    Keys are split at every '.', so an interface name in a key must have none (no VLAN
    ``eth0.100``); the lab's never do.

    ``/proc/sys/net`` shows the namespace of the thread that opens it, so this costs one
    thread instead of one ``sysctl`` process. Raises LabError naming the key that failed.
    """

    def write_all() -> None:
        for key, value in settings.items():
            path = Path("/proc/sys", *key.split("."))
            try:
                path.write_text(f"{value}\n")
            except OSError as error:
                raise LabError(f"netns {netns}: cannot set {key}={value}: {error}") from error

    call_in(netns, write_all)


def _setns(netns: str) -> None:
    try:
        fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise LabError(f"netns {netns}: cannot open it: {error}") from error
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise LabError(f"netns {netns}: setns failed: {os.strerror(code)}")
    finally:
        os.close(fd)
