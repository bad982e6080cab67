"""A work queue of object keys: each key runs in order, different keys run in parallel.

Handlers follow STYLE §10: fetch from the cache, decide, write, and return an
:data:`Outcome`. A key added while it is being handled is handled once more afterwards
(never twice at once), and a key added many times while waiting is handled once: the
handler always reads the newest state, so coalescing loses nothing. A key whose handling is
cancelled (the queue stopped) waits for the next :meth:`WorkQueue.run`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from porterlb import errors

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Done:
    """Converged; nothing to do until the object changes."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Try this key again after `after` seconds (a transient failure or a lost race)."""

    after: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The input cannot work; it has been reported. Wait for the object to change."""

    reason: str


Outcome = Done | Retry | GiveUp
Handler = Callable[[str], Awaitable[Outcome]]

CONFLICT_RECHECK = 1.0
"""Seconds before deciding again a key whose write lost to a newer version (a Conflict).

Writes carry the resourceVersion they were decided from (:mod:`porterlb.kube.writers`), so a
Conflict means the cache is behind: the newer version's watch event requeues the key as soon
as the cache holds it, and that is what deciding again must wait for. Retrying at once would
decide from the same stale copy and be refused again, a loop of refused writes for as long as
the watch lags; this retry is only the safety net should that event never come."""


async def attempt(write: Awaitable[object]) -> Outcome:
    """Await `write` and turn porterlb's error classes into the handler's outcome."""
    try:
        await write
    except errors.PorterlbError as failure:
        return failed(failure)
    return Done()


def failed(failure: errors.PorterlbError) -> Outcome:
    """The handler's outcome after `failure`; raises it again if it is of no known class."""
    if isinstance(failure, errors.Conflict):
        return Retry(after=CONFLICT_RECHECK)
    if isinstance(failure, errors.TransientError):
        log.warning("%s", failure)
        return Retry(after=failure.delay)
    if isinstance(failure, errors.InvalidSpec):
        log.error("%s", failure)
        return GiveUp(str(failure))
    raise failure


class WorkQueue:
    """Keys waiting to be handled by at most `workers` concurrent handler calls."""

    def __init__(self, handler: Handler, *, name: str, workers: int) -> None:
        self.handler = handler
        self.name = name
        self.workers = workers
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        self._waiting: set[str] = set()
        self._running: set[str] = set()
        self._dirty: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, key: str) -> None:
        """Ask for `key` to be handled; cheap and idempotent."""
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._idle.clear()
            self._ready.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key)

    @property
    def depth(self) -> int:
        """Keys waiting or being handled."""
        return len(self._waiting) + len(self._running)

    async def idle(self) -> None:
        """Return once no key is waiting or being handled."""
        await self._idle.wait()

    async def run(self) -> None:
        """Run the workers forever inside one task group."""
        async with asyncio.TaskGroup() as group:
            for index in range(self.workers):
                group.create_task(self._work(), name=f"{self.name}/worker-{index}")

    async def _work(self) -> None:
        while True:
            key = await self._ready.get()
            self._waiting.discard(key)
            self._running.add(key)
            try:
                outcome = await self.handler(key)
            except asyncio.CancelledError:
                # The queue is stopping (a lost Lease) with this key unfinished: its write may
                # or may not have landed, so the next run must look at it again. Dropping it
                # left Services without an IP until they next changed (10,000 in the bench).
                self._running.discard(key)
                self.add(key)
                raise
            except Exception:
                log.exception("%s: handling %s failed; retrying in 1 s", self.name, key)
                outcome = Retry(after=1.0)
            finally:
                self._running.discard(key)
            if isinstance(outcome, Retry):
                self.add_after(key, outcome.after)
            if key in self._dirty:
                self._dirty.discard(key)
                self.add(key)
            if not self._waiting and not self._running:
                self._idle.set()
