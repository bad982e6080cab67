"""``porterlb lab demo``, run as README tells a newcomer to run it, on real nodes.

The command brings its own lab up (three real nodes, porterlb by its chart, a backend pod per
node), crashes the node announcing the Service and removes the lab. What is judged is what it
prints (the IP moved to another node, whose pod answered; the router's neighbour entry names
that node) and what it leaves: nothing. Needs root, the node binaries, helm, buildah and
debootstrap.
"""

from __future__ import annotations

import re
import subprocess
import sys

from porterlb.lab.node import mountns, nodelab
from tests.e2e import reallab
from tests.e2e.conftest import fresh_name

pytestmark = reallab.CHART_MARKS

ANNOUNCED = re.compile(r"^Service default/web got (\S+); node (\S+) announces it$", re.M)
RESUMED = re.compile(r"^traffic resumed from (\S+) ([0-9.]+) s after the crash", re.M)
ENTRY = re.compile(r"^router neighbour entry: (\S+) lladdr \S+ \((\S+)\)", re.M)


def test_the_demo_moves_the_ip_off_the_crashed_node_and_leaves_nothing() -> None:
    host = mountns.host_values()
    name = fresh_name()
    argv = [sys.executable, "-m", "porterlb", "lab", "demo", "--name", name]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        left = reallab.leftovers(name)  # the demo removes its lab itself
    finally:
        nodelab.down(name)  # whatever it left, so that a failure leaks nothing either
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    [(ip, first)] = ANNOUNCED.findall(out)
    resumed = RESUMED.search(out)
    assert resumed is not None, out
    assert resumed.group(1) != first, out
    assert ENTRY.findall(out) == [(ip, first), (ip, resumed.group(1))], out
    assert "real nodes" in out
    assert left == []
    assert mountns.host_values() == host
