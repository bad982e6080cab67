"""A rolling update of the managers: the leader given SIGTERM hands the Lease over at once.

Two ``porterlb manager`` processes, as a Deployment runs them, against the real API server,
with a Lease duration far longer than the test's deadlines: a standby that waited out the
Lease of a leader that just stopped could not lead before the test gives up. The leader gets
SIGTERM, releases the Lease (holder cleared) and exits by itself, and the standby takes it at
its next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final

import lightkube
import pytest
import pytest_asyncio
from lightkube.core.exceptions import ApiError

from porterlb.kube import election, resources
from porterlb.lab import controlplane
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

LEASE_DURATION: Final = 600
"""Seconds: ten times the longest wait below, so only a release explains a prompt takeover."""


class Manager:
    """One ``porterlb manager`` process and its log."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    def said(self, text: str) -> bool:
        return text in self.log.read_text()


@pytest_asyncio.fixture(loop_scope="session")
async def start_manager(
    control_plane: controlplane.Endpoints, namespace: str, tmp_path: Path
) -> AsyncIterator[Callable[[str], Awaitable[Manager]]]:
    """Starts ``porterlb manager --identity NAME`` processes; kills those left at the end."""
    started: list[Manager] = []

    async def start(identity: str) -> Manager:
        log = tmp_path / f"{identity}.log"
        argv = [
            *(sys.executable, "-m", "porterlb.cli", "manager"),
            *("--kubeconfig", str(control_plane.kubeconfig), "--identity", identity),
            *("--lease-namespace", namespace, "--no-heartbeats"),
            *("--metrics-addr", "0", "--health-addr", "0"),
            *("--lease-duration", str(LEASE_DURATION), "--renew-deadline", "30"),
            *("--retry-period", "0.5"),
        ]
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "POD_NAMESPACE": namespace},
            )
        started.append(Manager(process, log))
        return started[-1]

    yield start
    for manager in started:
        if manager.process.returncode is None:
            manager.process.kill()
            await manager.process.wait()


async def _holder(client: lightkube.AsyncClient, namespace: str) -> str | None:
    try:
        lease = await client.get(resources.Lease, election.LEASE_NAME, namespace=namespace)
    except ApiError:
        return None
    return (lease.spec.holderIdentity if lease.spec else None) or None


async def test_a_leader_given_sigterm_releases_the_lease_and_the_standby_leads(
    client, namespace, start_manager
):
    first = await start_manager("manager-a")
    await eventually(
        lambda: _holds(client, namespace, "manager-a"), what="manager-a to lead", within=60
    )
    second = await start_manager("manager-b")
    await eventually(lambda: _said(second, "starting"), what="manager-b to start", within=60)

    first.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(first.process.wait(), timeout=30)
    assert code == 0, first.log.read_text()[-2000:]
    assert first.said("manager-a: released the Lease"), first.log.read_text()[-2000:]
    # Within a deadline far below the Lease duration: the release, not an expiry.
    await eventually(
        lambda: _holds(client, namespace, "manager-b"), what="manager-b to take the Lease"
    )
    assert second.process.returncode is None
    lease = await client.get(resources.Lease, election.LEASE_NAME, namespace=namespace)
    assert lease.spec is not None and lease.spec.leaseTransitions == 1


async def _holds(client: lightkube.AsyncClient, namespace: str, identity: str) -> bool:
    return await _holder(client, namespace) == identity


async def _said(manager: Manager, text: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return manager.said(text)
    return False
