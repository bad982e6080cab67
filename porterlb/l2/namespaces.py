"""Running socket setup inside another network namespace, for speakers that serve one.

A socket belongs for its whole life to the network namespace of the thread that created it,
and setns(2) moves only the calling thread. In the lab a speaker lives in the host namespace
(next to the API server on loopback) and serves a worker's ``eth0``, so its AF_PACKET and
netlink sockets are made by a short-lived thread that enters the worker's namespace and ends
with the call: a pooled thread would stay there and leak the namespace into unrelated work. On
a real node the namespace is None and the call runs in the loop's thread. Python 3.11 has no
``os.setns``, so libc's is called through ctypes; pyroute2's own netns support is avoided
because it forks a helper process per socket and creates a missing namespace by default.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

NETNS_DIR: Final = "/run/netns"
"""Where ``ip netns add`` mounts named namespaces (iproute2 ip-netns(8))."""

CLONE_NEWNET: Final = 0x40000000
"""include/uapi/linux/sched.h: the namespace type passed to setns(2)."""


async def call(netns: str | None, fn: Callable[[], T]) -> T:
    """Return ``fn()`` run inside ``netns`` (a name in /run/netns, or a path), or here if None.

    Raises OSError if the namespace cannot be entered, and whatever ``fn`` raises.
    """
    if netns is None:
        return fn()
    with concurrent.futures.ThreadPoolExecutor(1, f"netns-{os.path.basename(netns)}") as thread:
        # A dedicated thread, never the loop's shared pool: it ends inside another namespace.
        return await asyncio.get_running_loop().run_in_executor(thread, _enter_and_call, netns, fn)


def _enter_and_call(netns: str, fn: Callable[[], T]) -> T:
    path = netns if netns.startswith("/") else os.path.join(NETNS_DIR, netns)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"cannot enter network namespace {path}: {os.strerror(code)}")
    finally:
        os.close(fd)
    return fn()
