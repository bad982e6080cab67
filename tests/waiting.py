"""Waiting on a condition with a deadline: the only way tests wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE = 30.0
"""Seconds any awaited condition may take before a test fails (generous for 2 loaded cores)."""


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = DEADLINE, what: str = "condition"
) -> T:
    """Poll `probe` until it returns a truthy value; fail with `what` after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: T | None = None
    while loop.time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)  # polling interval, not synchronisation: the deadline decides
    raise AssertionError(f"timed out after {within:.0f} s waiting for {what}; last value: {last!r}")
