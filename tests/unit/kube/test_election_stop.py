"""The end of a term: the leading task is cancelled and waited for, and a cancellation of
the elector itself arriving meanwhile is kept, not swallowed (the manager would campaign on
instead of stopping)."""

from __future__ import annotations

import asyncio

import pytest

from porterlb.kube import election


async def blocked() -> None:
    await asyncio.Event().wait()


async def test_the_leading_task_is_cancelled_and_over_when_it_returns() -> None:
    leading = asyncio.create_task(blocked())
    await asyncio.sleep(0)
    await election.cancel_and_wait(leading)
    assert leading.cancelled()


async def test_a_cancellation_landing_after_the_task_ended_is_kept() -> None:
    """The race that hung an integration test: the leading task has ended, the elector has
    not yet resumed, and the elector is cancelled in between."""
    leading = asyncio.create_task(blocked())
    await asyncio.sleep(0)
    went_on: list[bool] = []

    async def elector() -> None:
        await election.cancel_and_wait(leading)
        went_on.append(True)

    stopping = asyncio.create_task(elector())
    await asyncio.sleep(0)  # the elector cancels the leading task and waits for it
    await asyncio.sleep(0)  # the leading task ends; the elector's wake-up is queued
    assert leading.cancelled() and not stopping.done()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert went_on == []


async def test_a_cancellation_landing_while_the_task_cleans_up_is_kept() -> None:
    cleaning = asyncio.Event()

    async def leading_with_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await asyncio.sleep(3600)

    leading = asyncio.create_task(leading_with_cleanup())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(election.cancel_and_wait(leading))
    await cleaning.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert leading.done()
