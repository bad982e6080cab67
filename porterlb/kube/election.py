"""Leader election over a ``coordination.k8s.io/v1`` Lease: exactly one manager acts.

The algorithm is client-go's ``leaderelection`` (the one every controller-manager uses):

- A candidate takes the Lease when it is free (no holder) or when the holder has not renewed
  it for ``lease_duration`` *as measured by the candidate's own monotonic clock* since it
  last saw the record change; timestamps written by another host are never compared with
  ours, so clock skew between nodes cannot elect two leaders.
- Every write is a replace carrying the ``resourceVersion`` it was decided from, so two
  candidates racing for a free Lease cannot both win: the API server refuses the second.
- The leader renews every ``retry_period``. When it has not renewed successfully for
  ``renew_deadline`` (< ``lease_duration``) it stops leading at once: the leading task is
  cancelled before any other candidate may take the Lease, so two leaders never act at once.
- On a graceful stop the leader releases the Lease (holder cleared), so a successor takes over
  at its next attempt instead of waiting out the duration.
- A leader that missed its renew deadline and then retakes its own record (the Lease still
  names it, with the ``leaseTransitions`` of its own last write: nobody else held it in
  between) *resumes* (:class:`Term`): nothing but this process can have decided anything
  since, so the caller may keep what it decided. Under load a manager did this 7 to 55 times
  in one run of ``bench.control_plane``, each time deciding every Service anew.
- A candidate waiting for a holder's Lease to expire tries again the moment it does, not at
  its next retry period: up to one retry period (1 s) off a takeover after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import httpx2
import lightkube
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta

from porterlb.kube import metrics, resources

log = logging.getLogger(__name__)

LEASE_NAME: Final = "porterlb-manager"

EXPIRY_MARGIN: Final = 0.01
"""Seconds past a Lease's expiry (by our clock) before an attempt to take it: the expiry
check is strict, and the clock's read granularity is far below this."""


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    """Election durations in seconds (client-go's are 15/10/2; porterlb's data plane survives a
    leader change untouched, so these only bound how long no one acts on new events)."""

    lease_duration: float = 6.0
    renew_deadline: float = 4.0
    retry_period: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                f"need 0 < retry period ({self.retry_period}) < renew deadline"
                f" ({self.renew_deadline}) < lease duration ({self.lease_duration})"
            )


@dataclasses.dataclass(frozen=True, slots=True)
class Term:
    """What a term of leadership follows; ``lead`` is given it when the term starts."""

    resumed: bool
    """This candidate held the Lease last and nobody else has held it since (the Lease still
    names it, with the ``leaseTransitions`` of its last write): whatever this process decided
    before still stands, and no other leader can have written anything in between."""
    lapsed: bool
    """A reader may have seen the Lease as expired before the write that began this term (a
    speaker may be answering its last assignments for want of a leader: docs/fencing.md):
    true whenever the term does not resume, and when it does but the Lease went unrenewed for
    its duration or longer."""


UNELECTED: Final = Term(resumed=False, lapsed=False)
"""The one term of a manager run without leader election: no Lease, nothing to lapse."""


class _Lost(Exception):
    """Another candidate holds the Lease we were renewing."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Written:
    """Our latest write of the Lease the API server confirmed: the transitions count it
    carried, and when it was sent (our monotonic clock; the record changed no earlier)."""

    transitions: int
    sent: float


@dataclasses.dataclass(frozen=True, slots=True)
class _Seen:
    """The Lease record as last observed, and when (our monotonic clock)."""

    holder: str | None
    renewed: datetime.datetime | None
    at: float


class Elector:
    """Campaign for the Lease and run ``lead`` while holding it. Use :meth:`run`."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        *,
        namespace: str,
        identity: str,
        name: str = LEASE_NAME,
        timing: Timing | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.identity = identity
        self.name = name
        self.timing = timing or Timing()
        self.leading = asyncio.Event()
        """Set while this candidate leads; cleared before another can possibly lead."""
        self._seen: _Seen | None = None
        self._last_attempt = 0.0
        self._holding = False
        """Whether our last successful write made us the holder (to release on a stop)."""
        self._mine: _Written | None = None
        """Our latest confirmed write, while nobody else may have held the Lease since."""
        self._superseded = False
        """Another candidate may have held the Lease since our last term: tell
        :attr:`on_superseded` once not leading."""
        self._term = UNELECTED
        """What the term our latest acquiring write began follows."""
        self.on_superseded: Callable[[], None] | None = None
        """Called (never while leading) once another candidate may have held the Lease since
        this one last did: what the caller kept for a resumption will not be used."""
        self._held: resources.Lease | None = None
        """The Lease as our last successful write left it. A renewal writes over it at once
        (its resourceVersion refuses the write if anyone wrote since): one request where a
        read and a write took two, each seconds long on a loaded API server. With both, the
        manager missed its renew deadline and retook its own Lease 7 times while 3,000
        Services arrived (bench.control_plane), each time deciding everything anew."""

    @property
    def observed_holder(self) -> str | None:
        """The Lease holder as this candidate last read or wrote it (None: none seen)."""
        return self._seen.holder if self._seen else None

    async def run(self, lead: Callable[[Term], Coroutine[Any, Any, None]]) -> None:
        """Campaign forever; run ``lead(term)`` (cancelled on loss) each time the Lease is won."""
        try:
            while True:
                await self._lead(lead, await self._acquire())
        finally:
            if self._holding:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timing.renew_deadline):
                        await self._release()

    async def _acquire(self) -> float:
        """Wait until we hold the Lease; return when the winning attempt started."""
        while True:
            started = time.monotonic()
            if await self._try(renewing=False):
                break
            self._tell_superseded()
            await asyncio.sleep(self._next_attempt())
        self._tell_superseded()  # before a term that starts afresh, not at its end
        if self._term.resumed:
            log.info(
                "%s: retook its own Lease %s/%s (nobody held it in between): leading on from"
                " where it left off%s",
                self.identity,
                self.namespace,
                self.name,
                " after the Lease lapsed" if self._term.lapsed else "",
            )
        else:
            log.info(
                "%s: became the leader (Lease %s/%s)", self.identity, self.namespace, self.name
            )
        return started

    def _next_attempt(self) -> float:
        seen = self._seen
        if seen is None or seen.holder in (None, self.identity):
            return self.timing.retry_period
        return next_attempt(seen.at, time.monotonic(), self.timing)

    def _tell_superseded(self) -> None:
        if self._superseded and not self.leading.is_set():
            self._superseded = False
            if self.on_superseded is not None:
                self.on_superseded()

    async def _lead(
        self, lead: Callable[[Term], Coroutine[Any, Any, None]], renewed: float
    ) -> None:
        """Run ``lead(term)`` while renewals succeed; `renewed` is when the last one was sent.

        Times are taken when a request is *sent*: the API server cannot have applied it
        earlier, so stopping at send time + renew deadline is always before any other
        candidate can see the Lease as expired (observation + lease duration).
        """
        self.leading.set()
        self._holding = True
        task = asyncio.create_task(lead(self._term), name="manager/leading")
        try:
            while not await self._renewal(task, renewed + self.timing.renew_deadline):
                renewed = self._last_attempt
            self._holding = task.done()  # lost unless the leading task ended by itself
        finally:
            self.leading.clear()
            await cancel_and_wait(task)
            self._tell_superseded()
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def _renewal(self, task: asyncio.Task[None], deadline: float) -> bool:
        """Wait a retry period, then renew before `deadline`; True means stop leading."""
        await asyncio.wait({task}, timeout=self.timing.retry_period)
        if task.done():
            return True
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                while True:
                    self._last_attempt = time.monotonic()
                    if await self._try(renewing=True):
                        return False
                    await asyncio.sleep(self.timing.retry_period / 4)
        except _Lost as lost:
            log.error("%s: %s; stopping to lead", self.identity, lost)
        except TimeoutError:
            log.error(
                "%s: could not renew the Lease within %.1f s; stopping to lead",
                self.identity,
                self.timing.renew_deadline,
            )
        return True

    async def _try(self, *, renewing: bool) -> bool:
        """One acquire-or-renew attempt; True when we hold the Lease afterwards."""
        now = _now()
        held, self._held = self._held, None
        if renewing and held is not None and held.spec is not None:
            spec = self._spec(
                now,
                acquired=held.spec.acquireTime or now,
                transitions=held.spec.leaseTransitions or 0,
            )
            if await self._write(held, spec):
                return True
            # Written by someone else since (or the write failed): read it, as below.
        try:
            metrics.API_REQUESTS.labels("get", "leases").inc()
            lease = await self.client.get(resources.Lease, self.name, namespace=self.namespace)
        except ApiError as error:
            if error.status.code != 404:
                log.warning("%s: reading the Lease failed: %s", self.identity, error)
                return False
            self._supersede()  # gone: who held it meanwhile is not known
            return await self._won(None, self._spec(now, acquired=now, transitions=0), None)
        except (httpx2.TransportError, OSError) as error:
            log.warning("%s: reading the Lease failed: %r", self.identity, error)
            return False

        spec = lease.spec or LeaseSpec()
        self._observe(spec)
        holder = spec.holderIdentity or None
        mine = holder == self.identity
        transitions = spec.leaseTransitions or 0
        if not mine or self._mine is None or self._mine.transitions != transitions:
            self._supersede()
        if renewing and not mine:
            raise _Lost(f"the Lease is now held by {holder or 'nobody'}")
        if holder is not None and not mine and not self._expired():
            return False
        acquired = spec.acquireTime if mine and spec.acquireTime else now
        spec = self._spec(now, acquired=acquired, transitions=transitions + (0 if mine else 1))
        if renewing:
            return await self._write(lease, spec)
        return await self._won(lease, spec, self._mine)

    async def _won(
        self, lease: resources.Lease | None, spec: LeaseSpec, last: _Written | None
    ) -> bool:
        """Acquire by writing `spec`; `last` is our own confirmed write that the Lease still
        shows unchanged in holder and transitions (None: another may have held it since)."""
        if not await self._write(lease, spec):
            return False
        # No reader saw the Lease as expired if it changed less than its duration before
        # now: every read answered before our write shows a record written after `last` was
        # sent (docs/fencing.md, *A leader that retakes its own Lease*).
        lapsed = last is None or time.monotonic() - last.sent >= self._duration_seconds()
        self._term = Term(resumed=last is not None, lapsed=lapsed)
        return True

    def _supersede(self) -> None:
        """Another candidate may have held the Lease since our last write: no resumption."""
        if self._mine is not None:
            self._mine = None
            self._superseded = True

    def _observe(self, spec: LeaseSpec) -> None:
        seen = self._seen
        if seen is None or (seen.holder, seen.renewed) != (spec.holderIdentity, spec.renewTime):
            self._seen = _Seen(spec.holderIdentity, spec.renewTime, time.monotonic())

    def _expired(self) -> bool:
        assert self._seen is not None
        return time.monotonic() > self._seen.at + self.timing.lease_duration

    def _spec(
        self, now: datetime.datetime, *, acquired: datetime.datetime, transitions: int
    ) -> LeaseSpec:
        return LeaseSpec(
            holderIdentity=self.identity,
            leaseDurationSeconds=self._duration_seconds(),
            acquireTime=acquired,
            renewTime=now,
            leaseTransitions=transitions,
        )

    def _duration_seconds(self) -> int:
        """The duration our writes give the Lease (whole seconds, as the API keeps it)."""
        return max(1, round(self.timing.lease_duration))

    async def _write(self, lease: resources.Lease | None, spec: LeaseSpec) -> bool:
        sent = time.monotonic()
        try:
            if lease is None:
                metrics.API_REQUESTS.labels("create", "leases").inc()
                meta = ObjectMeta(name=self.name, namespace=self.namespace)
                written = await self.client.create(resources.Lease(metadata=meta, spec=spec))
            else:
                metrics.API_REQUESTS.labels("update", "leases").inc()
                written = await self.client.replace(
                    resources.Lease(metadata=lease.metadata, spec=spec)
                )
        except ApiError as error:
            if error.status.code not in (409, 404):
                log.warning("%s: writing the Lease failed: %s", self.identity, error)
            return False  # lost a race (409) or it vanished (404): decide again next round
        except (httpx2.TransportError, OSError) as error:
            log.warning("%s: writing the Lease failed: %r", self.identity, error)
            return False
        self._seen = _Seen(spec.holderIdentity, spec.renewTime, time.monotonic())
        self._held = written
        self._mine = _Written(spec.leaseTransitions or 0, sent)
        return True

    async def _release(self) -> None:
        """Clear the holder so a successor need not wait out the Lease (graceful stop only)."""
        try:
            lease = await self.client.get(resources.Lease, self.name, namespace=self.namespace)
            spec = lease.spec or LeaseSpec()
            if spec.holderIdentity != self.identity:
                return
            metrics.API_REQUESTS.labels("update", "leases").inc()
            released = LeaseSpec(
                holderIdentity=None,
                leaseDurationSeconds=spec.leaseDurationSeconds,
                acquireTime=spec.acquireTime,
                renewTime=_now(),
                leaseTransitions=spec.leaseTransitions,
            )
            await self.client.replace(resources.Lease(metadata=lease.metadata, spec=released))
            log.info("%s: released the Lease", self.identity)
        except (ApiError, httpx2.TransportError, OSError) as error:
            log.warning("%s: could not release the Lease: %r", self.identity, error)


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for its end, without swallowing a cancellation of our own.

    A ``suppress(CancelledError)`` around ``await task`` would also swallow the caller's
    cancellation when it lands there (the manager stopping just as a term ends): the
    elector then campaigned on instead of returning, and its stop waited forever.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


def next_attempt(seen_at: float, now: float, timing: Timing) -> float:
    """Seconds from `now` until a candidate tries again to take a Lease another holds, last
    seen changing at `seen_at` (monotonic): a retry period, or less when the Lease expires
    sooner, so that a takeover after a crash waits for no retry tick."""
    expiry = seen_at + timing.lease_duration - now
    return min(timing.retry_period, max(0.0, expiry) + EXPIRY_MARGIN)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
