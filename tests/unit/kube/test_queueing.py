"""The work queue keeps a key that a stopped run left unfinished; write errors map to outcomes."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from porterlb import errors
from porterlb.kube import queueing


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_key_cancelled_mid_handling_is_handled_by_the_next_run():
    handled: list[str] = []
    blocked = asyncio.Event()

    async def handler(key: str) -> queueing.Outcome:
        handled.append(key)
        if len(handled) == 1:
            blocked.set()
            await asyncio.Event().wait()  # stands for a write when the Lease is lost
        return queueing.Done()

    queue = queueing.WorkQueue(handler, name="test", workers=1)
    queue.add("shop/web")
    first = asyncio.create_task(queue.run(), name="test/first-run")
    await blocked.wait()
    await _stop(first)
    assert queue.depth == 1

    second = asyncio.create_task(queue.run(), name="test/second-run")
    await queue.idle()
    await _stop(second)
    assert handled == ["shop/web", "shop/web"]
    assert queue.depth == 0


async def _raise(error: Exception | None) -> None:
    if error is not None:
        raise error


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        pytest.param(None, queueing.Done(), id="written"),
        # Refused against a stale copy: the watch brings the newer one and requeues the key.
        pytest.param(
            errors.Conflict("x"), queueing.Retry(after=queueing.CONFLICT_RECHECK), id="conflict"
        ),
        pytest.param(errors.TransientError("x", delay=3.0), queueing.Retry(after=3.0), id="5xx"),
        pytest.param(errors.InvalidSpec("x"), queueing.GiveUp("x"), id="rejected"),
    ],
)
async def test_write_errors_become_outcomes(error, outcome):
    assert await queueing.attempt(_raise(error)) == outcome
