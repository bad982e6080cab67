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


class _Lost(Exception):
    """Another candidate holds the Lease we were renewing."""


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

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign forever; run ``lead()`` (cancelled on loss) each time the Lease is won."""
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
            await asyncio.sleep(self.timing.retry_period)
        log.info("%s: became the leader (Lease %s/%s)", self.identity, self.namespace, self.name)
        return started

    async def _lead(self, lead: Callable[[], Coroutine[Any, Any, None]], renewed: float) -> None:
        """Run ``lead()`` while renewals succeed; `renewed` is when the last one was sent.

        Times are taken when a request is *sent*: the API server cannot have applied it
        earlier, so stopping at send time + renew deadline is always before any other
        candidate can see the Lease as expired (observation + lease duration).
        """
        self.leading.set()
        self._holding = True
        task = asyncio.create_task(lead(), name="manager/leading")
        try:
            while not await self._renewal(task, renewed + self.timing.renew_deadline):
                renewed = self._last_attempt
            self._holding = task.done()  # lost unless the leading task ended by itself
        finally:
            self.leading.clear()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
            return await self._write(None, self._spec(now, acquired=now, transitions=0))
        except (httpx2.TransportError, OSError) as error:
            log.warning("%s: reading the Lease failed: %r", self.identity, error)
            return False

        spec = lease.spec or LeaseSpec()
        self._observe(spec)
        holder = spec.holderIdentity or None
        if renewing and holder != self.identity:
            raise _Lost(f"the Lease is now held by {holder or 'nobody'}")
        if holder is not None and holder != self.identity and not self._expired():
            return False
        mine = holder == self.identity
        transitions = (spec.leaseTransitions or 0) + (0 if mine else 1)
        acquired = spec.acquireTime if mine and spec.acquireTime else now
        return await self._write(lease, self._spec(now, acquired=acquired, transitions=transitions))

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
            leaseDurationSeconds=max(1, round(self.timing.lease_duration)),
            acquireTime=acquired,
            renewTime=now,
            leaseTransitions=transitions,
        )

    async def _write(self, lease: resources.Lease | None, spec: LeaseSpec) -> bool:
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


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
