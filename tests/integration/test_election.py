"""Leader election among three managers, against the real API server.

Each candidate records when it starts and stops leading (its ``lead`` coroutine runs and is
cancelled); the tests assert that those intervals never overlap, whatever the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import lightkube
import pytest
import pytest_asyncio

from porterlb.kube import client as kube_client
from porterlb.kube import election, metrics, resources
from porterlb.lab import controlplane
from tests.conftest import cancelled_connections_collected
from tests.integration.proxy import Proxy
from tests.waiting import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="session"),
    # Renewals cut off by a partition or an API-server restart abandon their sockets to the
    # garbage collector (see tests.conftest.cancelled_connections_collected); the candidates
    # fixture collects them before the module ends.
    pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning"),
]

FAST = election.Timing(lease_duration=3.0, renew_deadline=2.0, retry_period=0.25)


@dataclass
class Candidate:
    name: str
    elector: election.Elector
    proxy: Proxy
    task: asyncio.Task[None] | None = None
    terms: list[list[float]] = field(default_factory=list)
    """[start, end] of each time it led (end is inf while leading)."""
    kinds: list[election.Term] = field(default_factory=list)
    """What each term followed, as the elector said."""

    async def lead(self, term: election.Term) -> None:
        self.kinds.append(term)
        self.terms.append([time.monotonic(), float("inf")])
        try:
            await asyncio.Event().wait()
        finally:
            self.terms[-1][1] = time.monotonic()

    @property
    def leading(self) -> bool:
        return bool(self.terms) and self.terms[-1][1] == float("inf")


def overlaps(candidates: list[Candidate]) -> list[tuple[str, str]]:
    terms = sorted((start, end, c.name) for c in candidates for start, end in c.terms)
    return [(a[2], b[2]) for a, b in itertools.pairwise(terms) if b[0] < a[1]]


async def holder(client: lightkube.AsyncClient, namespace: str, name: str) -> str | None:
    lease = await client.get(resources.Lease, name, namespace=namespace)
    return lease.spec.holderIdentity if lease.spec else None


@pytest_asyncio.fixture(loop_scope="session")
async def candidates(
    control_plane: controlplane.Endpoints, namespace: str, tmp_path
) -> AsyncIterator[list[Candidate]]:
    """Three electors, each talking to the API server through its own partitionable proxy."""
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    lease = f"lease-{uuid.uuid4().hex[:6]}"
    made: list[Candidate] = []
    async with contextlib.AsyncExitStack() as stack:
        for index in range(3):
            proxy = Proxy(host, int(port))
            await proxy.start()
            stack.push_async_callback(proxy.stop)
            config = proxy.kubeconfig(control_plane.kubeconfig, tmp_path / f"kubeconfig-{index}")
            api = await stack.enter_async_context(kube_client.connect(config))
            name = f"manager-{index}"
            elector = election.Elector(
                api, namespace=namespace, identity=name, name=lease, timing=FAST
            )
            made.append(Candidate(name, elector, proxy))
        for candidate in made:
            candidate.task = asyncio.create_task(candidate.elector.run(candidate.lead))
        yield made
        with cancelled_connections_collected():
            for candidate in made:
                assert candidate.task is not None
                candidate.task.cancel()
            await asyncio.gather(*(c.task for c in made if c.task), return_exceptions=True)
            await stack.aclose()


async def the_leader(
    candidates: list[Candidate], among: list[Candidate] | None = None
) -> Candidate:
    async def one():
        leading = [c for c in candidates if c.leading]
        return leading[0] if len(leading) == 1 and leading[0] in (among or candidates) else None

    return await eventually(one, what="exactly one leader")


async def test_exactly_one_of_three_leads_and_it_holds_the_lease(client, candidates, namespace):
    leader = await the_leader(candidates)
    assert await holder(client, namespace, leader.elector.name) == leader.name
    assert [c.leading for c in candidates].count(True) == 1
    assert leader.elector.leading.is_set()


async def test_a_graceful_stop_releases_the_lease_for_a_successor(client, candidates, namespace):
    leader = await the_leader(candidates)
    assert leader.task is not None
    leader.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leader.task
    # The Lease says nobody or a successor holds it, never the stopped leader.
    assert await holder(client, namespace, leader.elector.name) != leader.name
    others = [c for c in candidates if c is not leader]
    successor = await the_leader(candidates, among=others)
    assert successor is not leader
    assert overlaps(candidates) == []


async def test_a_partitioned_leader_stops_before_another_starts(client, candidates, namespace):
    leader = await the_leader(candidates)
    leader.proxy.forwarding = False
    others = [c for c in candidates if c is not leader]
    successor = await the_leader(candidates, among=others)
    assert not leader.leading
    assert overlaps(candidates) == []

    leader.proxy.forwarding = True  # the partition heals: the old leader only follows

    async def follows():
        return leader.elector.observed_holder == successor.name

    await eventually(follows, what="the healed candidate reading the successor's Lease")
    assert not leader.leading
    assert successor.leading
    assert await holder(client, namespace, leader.elector.name) == successor.name


async def test_a_killed_leader_is_replaced_after_the_lease_expires(client, candidates, namespace):
    leader = await the_leader(candidates)
    # A crash: the process vanishes without releasing the Lease (here: its link goes dead and
    # its task is cancelled without reaching the API server).
    leader.proxy.forwarding = False
    assert leader.task is not None
    leader.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leader.task
    others = [c for c in candidates if c is not leader]
    successor = await the_leader(candidates, among=others)
    assert await holder(client, namespace, leader.elector.name) == successor.name
    assert overlaps(candidates) == []


async def test_an_api_server_restart_never_makes_two_leaders(plane, client, candidates, namespace):
    await the_leader(candidates)
    await asyncio.to_thread(plane.restart_apiserver)
    leader = await the_leader(candidates)
    assert await holder(client, namespace, leader.elector.name) == leader.name
    assert overlaps(candidates) == []


def lease_requests(verb: str) -> float:
    value: float = metrics.API_REQUESTS.labels(verb, "leases")._value.get()
    return value


async def test_a_renewal_is_one_write_and_an_outside_write_ends_the_term(client, namespace):
    """A leader renews by writing over the Lease it last wrote, without reading it first (one
    request instead of two on a loaded API server); a write by anyone else makes that
    renewal fail on the resourceVersion, and the leader reads the Lease and stops."""
    lease = f"lease-{uuid.uuid4().hex[:6]}"
    elector = election.Elector(
        client, namespace=namespace, identity="alone", name=lease, timing=FAST
    )
    terms: list[list[float]] = []

    async def lead(term: election.Term) -> None:
        terms.append([time.monotonic(), float("inf")])
        try:
            await asyncio.Event().wait()
        finally:
            terms[-1][1] = time.monotonic()

    task = asyncio.create_task(elector.run(lead))
    try:

        async def leading():
            return bool(terms) and terms[-1][1] == float("inf")

        await eventually(leading, what="the lone candidate leading")
        reads, writes = lease_requests("get"), lease_requests("update")

        async def renewed_thrice():
            return lease_requests("update") >= writes + 3

        await eventually(renewed_thrice, what="three renewals")
        assert lease_requests("get") == reads
        assert len(terms) == 1

        taken = await client.get(resources.Lease, lease, namespace=namespace)
        assert taken.spec is not None
        taken.spec.holderIdentity = "intruder"
        await client.replace(taken)

        async def ended():
            return terms[0][1] != float("inf")

        await eventually(ended, what="the term ending after an outside write")
        assert lease_requests("get") > reads
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def proxied_elector(
    control_plane: controlplane.Endpoints, namespace: str, tmp_path: Path, identity: str
) -> AsyncIterator[tuple[election.Elector, Proxy]]:
    """An elector of a Lease of its own (FAST timing), talking through a partitionable proxy."""
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    proxy = Proxy(host, int(port))
    await proxy.start()
    config = proxy.kubeconfig(control_plane.kubeconfig, tmp_path / f"kubeconfig-{identity}")
    try:
        async with kube_client.connect(config) as api:
            name = f"lease-{uuid.uuid4().hex[:6]}"
            yield (
                election.Elector(
                    api, namespace=namespace, identity=identity, name=name, timing=FAST
                ),
                proxy,
            )
    finally:
        await proxy.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def alone(
    control_plane: controlplane.Endpoints, namespace: str, tmp_path
) -> AsyncIterator[Candidate]:
    """One elector, through a partitionable proxy, counting the times it was told another
    may have held its Lease (``superseded``)."""
    async with proxied_elector(control_plane, namespace, tmp_path, "alone") as (elector, proxy):
        candidate = Candidate("alone", elector, proxy)
        elector.on_superseded = lambda: candidate.kinds.append(SUPERSEDED)
        candidate.task = asyncio.create_task(elector.run(candidate.lead))
        try:
            yield candidate
        finally:
            with cancelled_connections_collected():
                candidate.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await candidate.task


SUPERSEDED = election.Term(resumed=False, lapsed=False)
"""Stands in :attr:`Candidate.kinds` for a call of ``on_superseded``."""


async def missed_deadline(candidate: Candidate, *, hold: float = 0.0) -> None:
    """Cut the candidate off until its term ended (its renewals time out), and `hold` seconds
    more (the fault's duration); then heal."""
    await eventually(lambda: _leading(candidate), what=f"{candidate.name} leading")
    terms = len(candidate.terms)
    candidate.proxy.forwarding = False
    try:
        await eventually(
            lambda: _ended(candidate, terms), what=f"{candidate.name}'s renewals to time out"
        )
        ended = time.monotonic()

        async def held() -> bool:
            return time.monotonic() - ended >= hold

        await eventually(held, what=f"the partition held {hold} s")
    finally:
        candidate.proxy.forwarding = True


async def _leading(candidate: Candidate) -> bool:
    return candidate.leading


async def _ended(candidate: Candidate, terms: int) -> bool:
    return len(candidate.terms) == terms and not candidate.leading


async def test_a_leader_that_misses_its_renew_deadline_retakes_its_own_lease_and_resumes(
    client, alone, namespace
):
    await missed_deadline(alone)
    await eventually(lambda: _leading(alone), what="the candidate leading again")
    assert len(alone.terms) == 2
    assert alone.kinds[0] == election.Term(resumed=False, lapsed=True)
    assert alone.kinds[1].resumed
    assert SUPERSEDED not in alone.kinds
    lease = await client.get(resources.Lease, alone.elector.name, namespace=namespace)
    assert lease.spec is not None
    assert lease.spec.holderIdentity == "alone"
    assert lease.spec.leaseTransitions == 0  # as its first acquisition created it


async def test_a_lease_unrenewed_for_its_duration_lapses_even_when_retaken(client, alone):
    await missed_deadline(alone, hold=FAST.lease_duration)
    await eventually(lambda: _leading(alone), what="the candidate leading again")
    # A speaker may have read the Lease as expired meanwhile: the term resumes the state but
    # still waits the takeover settle (docs/fencing.md).
    assert alone.kinds[1] == election.Term(resumed=True, lapsed=True)


async def held_and_released(
    client: lightkube.AsyncClient, namespace: str, name: str, *, by: str
) -> None:
    """Another candidate `by` takes Lease `name` (one more transition), then releases it."""
    taken = await client.get(resources.Lease, name, namespace=namespace)
    assert taken.spec is not None
    taken.spec.holderIdentity = by
    taken.spec.leaseTransitions = (taken.spec.leaseTransitions or 0) + 1
    taken = await client.replace(taken)
    assert taken.spec is not None
    taken.spec.holderIdentity = None
    await client.replace(taken)


async def test_a_leader_whose_lease_another_held_meanwhile_starts_afresh(client, alone, namespace):
    name = alone.elector.name
    await eventually(lambda: _leading(alone), what="the candidate leading")
    alone.proxy.forwarding = False
    try:
        await eventually(lambda: _ended(alone, 1), what="the candidate's renewals to time out")
        await held_and_released(client, namespace, name, by="intruder")
    finally:
        alone.proxy.forwarding = True
    await eventually(lambda: _leading(alone), what="the candidate leading again")
    # Told before the new term began, so that it loads afresh; the term does not resume.
    assert alone.kinds[1:] == [SUPERSEDED, election.Term(resumed=False, lapsed=True)]
    lease = await client.get(resources.Lease, name, namespace=namespace)
    assert lease.spec is not None
    assert lease.spec.leaseTransitions == 2  # the intruder's and its own
