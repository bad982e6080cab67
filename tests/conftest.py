"""Setup shared by every test tier."""

import asyncio
import contextlib
import gc
import signal
import warnings
from collections.abc import Iterator
from types import FrameType

import pytest
from hypothesis import settings

settings.register_profile("porterlb", deadline=None)
settings.load_profile("porterlb")
"""No per-example deadline: on a loaded 2-core CI machine a 200 ms example is no bug (a lab
plan example took 258 ms once), and speed is measured by the benches, not asserted."""


def pytest_configure(config: pytest.Config) -> None:
    """Mark the main thread as having no event loop before any test runs.

    looptime asks the event-loop policy for the current loop before every test. Until
    pytest-asyncio has set one (a session that starts with sync tests), Python 3.11's policy
    answers by creating a loop that nothing closes, and its ResourceWarning fails whichever
    later test the garbage collector happens to run in (``filterwarnings = error``). With the
    loop explicitly set to None the policy raises instead, which looptime expects.

    SIGTERM (CI's timeout, ``kill``, a closed terminal's job control) is turned into
    KeyboardInterrupt, which pytest answers as it does Ctrl-C: it stops the run and then
    tears every fixture down. By default SIGTERM ends the interpreter at once, and a module's
    lab (namespaces, kubelets, cgroups) outlives the run.
    """
    asyncio.set_event_loop(None)
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def cancelled_connections_collected() -> Iterator[None]:
    """Let sockets abandoned by cancelled HTTP requests be collected without failing a test.

    Cancelling a client mid-request (a manager stopped at the end of a test, a renewal cut off
    by a partition) makes anyio's ``connect_tcp`` and httpcore leave that request's socket to
    the garbage collector, whose ResourceWarning would fail whichever test it happens in
    (``filterwarnings = error``). Wrap the cancellation in this, which also collects them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed", ResourceWarning)
        yield
        gc.collect()
