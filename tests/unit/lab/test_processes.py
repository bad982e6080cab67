"""Detached, marked processes: found by their mark alone, stopped however they behave.

These start real (tiny) processes; they need no root and no namespace.
"""

import itertools
import os
import shutil
import sys

import pytest

from porterlb.lab import netns, processes

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs sh")

_labs = itertools.count()


@pytest.fixture
def name():
    """A lab name no other test (or test run) marks processes with."""
    lab = f"u{os.getpid()}-{next(_labs)}"
    yield lab
    processes.stop(lab, grace=1.0)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def test_a_started_process_is_alive_marked_and_logs(name, tmp_path):
    log = tmp_path / "logs" / "echo.log"
    process = processes.start(name, "echo", sh("echo hello; exec sleep 60"), log)
    assert processes.alive(process)
    # `sh` execs `sleep`: during that execve its environ reads empty, so wait, don't assume.
    netns.wait_until(
        lambda: processes.members(name) == {process.pid: "echo"}, timeout=10, what="the mark"
    )
    netns.wait_until(lambda: log.read_text() == "hello\n", timeout=10, what="the echo")
    assert os.getsid(process.pid) == process.pid  # detached: a session of its own


def test_stop_ends_children_that_inherit_the_mark(name, tmp_path):
    parent = processes.start(name, "parent", sh("sleep 60 & sleep 60 & wait"), tmp_path / "p.log")
    netns.wait_until(lambda: len(processes.members(name)) == 3, timeout=10, what="the two children")
    processes.stop(name)
    assert processes.members(name) == {}
    assert not processes.alive(parent)


def test_the_control_plane_stops_after_everything_else(name, tmp_path):
    order = tmp_path / "order"
    for role in ("control-plane", "manager"):  # started in the wrong order on purpose
        script = (
            f"trap 'echo {role} >> {order}; exit 0' TERM; echo up; while :; do sleep 0.05; done"
        )
        processes.start(name, role, sh(script), tmp_path / f"{role}.log")
    netns.wait_until(
        lambda: all(
            (tmp_path / f"{r}.log").read_text() == "up\n" for r in ("control-plane", "manager")
        ),
        timeout=10,
        what="both traps",
    )
    processes.stop(name)
    assert order.read_text().split() == ["manager", "control-plane"]


def test_stop_kills_what_ignores_sigterm(name, tmp_path):
    stubborn = processes.start(
        name, "stubborn", sh("trap '' TERM; echo trapped; while :; do sleep 1; done"),
        tmp_path / "s.log",
    )  # fmt: skip
    netns.wait_until(
        lambda: (tmp_path / "s.log").read_text() == "trapped\n", timeout=10, what="the trap"
    )
    processes.stop(name, grace=0.2)
    assert not processes.alive(stubborn)


def test_an_unmarked_process_mentioning_the_lab_is_spared(name, tmp_path):
    bystander = processes.start(
        f"{name}-other", "tail", sh(f": {name}; exec sleep 60"), tmp_path / "b.log"
    )
    processes.stop(name)
    assert processes.alive(bystander)
    processes.stop(f"{name}-other")
    assert not processes.alive(bystander)


def test_a_reused_pid_is_not_the_recorded_process(name, tmp_path):
    process = processes.start(name, "short", [sys.executable, "-c", "pass"], tmp_path / "x.log")
    stale = processes.Process(
        role="old", pid=process.pid, started=process.started - 1, log=process.log
    )
    assert not processes.alive(stale)


def test_start_refuses_a_missing_namespace(name, tmp_path):
    with pytest.raises(netns.LabError, match="is missing"):
        processes.start(name, "x", ["true"], tmp_path / "x.log", namespace=f"plb-{name}-none")


def test_start_reports_a_missing_program(name, tmp_path):
    with pytest.raises(netns.LabError, match="cannot start x"):
        processes.start(name, "x", ["/nonexistent/program"], tmp_path / "x.log")
