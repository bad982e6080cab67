"""Setup shared by every test tier."""

import asyncio

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Mark the main thread as having no event loop before any test runs.

    looptime asks the event-loop policy for the current loop before every test. Until
    pytest-asyncio has set one (a session that starts with sync tests), Python 3.11's policy
    answers by creating a loop that nothing closes, and its ResourceWarning fails whichever
    later test the garbage collector happens to run in (``filterwarnings = error``). With the
    loop explicitly set to None the policy raises instead, which looptime expects.
    """
    asyncio.set_event_loop(None)
