"""Where a lab's CPU went between two readings: grouped by part, new processes counted whole."""

import os
from pathlib import Path

from porterlb.lab import cpu, processes


def test_the_difference_groups_roles_by_part_and_counts_a_new_process_whole():
    before = {1: ("control-plane", 10.0), 2: ("manager/1", 4.0), 3: ("speaker/w1", 1.0)}
    after = {
        1: ("control-plane", 11.5),
        2: ("manager/1", 4.25),
        3: ("speaker/w1", 1.5),
        4: ("speaker/w2", 0.25),  # restarted meanwhile
        5: ("backend/w1", 0.125),
    }
    assert cpu.difference(before, after) == {
        "control-plane": 1.5,
        "speakers": 0.75,
        "managers": 0.25,
        "other": 0.125,
    }


def test_this_process_is_found_under_its_role_with_the_cpu_it_spent():
    me = processes.Process(role="kube-proxy", pid=os.getpid(), started=0, log=Path("/dev/null"))
    found = cpu.spent([me])
    role, seconds = found[os.getpid()]
    assert role == "kube-proxy"
    assert seconds > 0
