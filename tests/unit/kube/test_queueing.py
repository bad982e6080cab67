"""The work queue keeps a key that a stopped run left unfinished."""

from __future__ import annotations

import asyncio
import contextlib

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
