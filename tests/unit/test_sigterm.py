"""SIGTERM to a pytest run tears its fixtures down (``tests/conftest.py``), so a killed e2e
run leaves no lab behind.

A pytest of its own, with the suite's conftest as its only plugin, runs a test that holds a
module fixture and waits for a signal; the fixture writes a marker when it is set up and
another when its finalizer runs. The judge is the marker after SIGTERM, and pytest's exit
status for an interrupted run.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import eventually

HOLDER = """
import os
import pathlib
import signal

import pytest

MARKER = pathlib.Path(os.environ["MARKER"])


@pytest.fixture(scope="module")
def held():
    MARKER.write_text("set up")
    yield
    MARKER.write_text("torn down")


def test_waits_for_a_signal(held):
    signal.pause()
"""


ROOT = Path(__file__).resolve().parents[2]

START_DEADLINE = 180.0
"""Seconds for the inner pytest to start and set its fixture up: importing pytest and the
suite's conftest took over 30 s (the default deadline) at a load average of 48 on 2 cores,
where starting ``uv run pytest`` took nearly two minutes."""


async def test_sigterm_runs_the_fixture_finalizers(tmp_path: Path) -> None:
    (tmp_path / "test_holder.py").write_text(HOLDER)
    marker = tmp_path / "marker"
    argv = ["-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q"]
    argv += ["-c", str(ROOT / "pyproject.toml"), str(tmp_path / "test_holder.py")]
    run = await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=ROOT, env={"MARKER": str(marker)}, stdout=subprocess.PIPE
    )
    try:

        async def set_up() -> bool:
            assert run.returncode is None, "pytest ended before the signal"
            return marker.exists() and marker.read_text() == "set up"

        await eventually(set_up, within=START_DEADLINE, what="the fixture to be set up")
        run.terminate()
        async with asyncio.timeout(60):
            output, _ = await run.communicate()
    finally:
        if run.returncode is None:
            run.kill()
            await run.wait()
    assert marker.read_text() == "torn down", output.decode()
    assert run.returncode == pytest.ExitCode.INTERRUPTED, output.decode()
