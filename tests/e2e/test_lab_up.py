"""``lab up`` / ``lab info`` / ``lab service`` / ``lab down``, end to end, as a user runs them:
``porterlb lab up`` gives the real-node lab (kubelets, containerd and the real kube-proxy,
porterlb installed by its chart). Needs root, the node binaries, helm, buildah and debootstrap.

The fields of ``lab info --json``, the Nodes, the Eips and ``lab service`` only read the
session's lab (``speaker_lab``, ``conftest.py``) or add a Service they delete, so they use it.
``lab up`` itself gets one lab of the module's own, in one test start to end because the lab
is the expensive part: a ``lab up`` killed half way, then ``lab up`` again with the same name,
which starts afresh beside the session's lab; ``lab info`` on it, a Service answered over
HTTP, and ``lab down``, which leaves no process, namespace, mount, cgroup or state behind.
Bare real nodes are ``test_real_nodes``; the chart's pods and ServiceAccounts,
``test_chart_lab``.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest
from lightkube.resources.core_v1 import Node

from porterlb.kube import resources
from porterlb.lab import cluster, lab, netns, network, plan
from porterlb.lab import processes as procs
from porterlb.lab.node import mountns, nodelab
from tests.e2e import marks, reallab
from tests.e2e.conftest import fresh_name

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("curl")]

CLI: Final = [sys.executable, "-m", "porterlb.cli"]

UP_LIMIT: Final = 900
"""Seconds for ``lab up`` of one real node with porterlb's chart: ~30 s on a quiet machine,
minutes on two cores shared by a loaded CI (the demo's three nodes took 6 min at load 30)."""

HALF_WAY: Final = 120.0
"""Seconds for the first ``lab up`` to start a containerd, where it is killed."""

ANSWER_LIMIT: Final = 60.0
"""Seconds for a new Service's IP to answer HTTP: its announcement, the router's lookup and
kube-proxy's rules, each well under a second on a quiet machine."""


def porterlb(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


def info(name: str) -> dict[str, Any]:
    """What ``porterlb lab info --name NAME --json`` prints."""
    done = porterlb("lab", "info", "--name", name, "--json")
    assert done.returncode == 0, done.stderr
    described: dict[str, Any] = json.loads(done.stdout)
    return described


def in_pool(layout: plan.Lab, version: int, ip: str) -> bool:
    pool = layout.pool_v4 if version == 4 else layout.pool_v6
    assert pool is not None
    address = ipaddress.ip_address(ip)
    return address.version == version and int(pool[0]) <= int(address) <= int(pool[1])


def first_answer(layout: plan.Lab, url: str) -> str:
    """The body of the first successful ``GET url`` from the lab's client namespace."""
    bodies: list[str] = []

    def answered() -> bool:
        try:
            bodies.append(netns.run(layout.client.netns, ["curl", "-sS", "-m", "5", url]))
        except netns.LabError:
            return False
        return True

    netns.wait_until(answered, timeout=ANSWER_LIMIT, what=f"an answer from {url}")
    return bodies[-1].strip()


def assert_nodes_run_their_processes(described: dict[str, Any], layout: plan.Lab) -> None:
    """Each node of ``lab info`` lists its kubelet, containerd and kube-proxy, alive, with the
    PID of a live process and a log that exists."""
    assert [n["name"] for n in described["nodes"]] == [n.name for n in layout.nodes]
    for node in described["nodes"]:
        assert set(node["processes"]) == set(nodelab.NODE_KINDS), node["name"]
        for kind, process in node["processes"].items():
            assert process["alive"], f"{kind} of {node['name']}"
            assert Path(f"/proc/{process['pid']}").exists(), f"{kind} of {node['name']}"
            assert Path(process["log"]).is_file(), f"{kind} of {node['name']}"


def test_info_json_has_the_documented_fields(speaker_lab):
    layout = speaker_lab.plan
    described = info(layout.name)
    assert {"kubeconfig", "router_netns", "client_netns", "eip", "eips", "nodes"} <= set(described)
    assert {"state_dir", "router", "client", "backend_port", "processes", "release"} <= set(
        described
    )
    assert Path(described["kubeconfig"]).is_file()
    assert described["router_netns"] == layout.router_netns
    assert described["client_netns"] == layout.client.netns
    assert described["backend_port"] == cluster.BACKEND_PORT
    assert described["release"] == speaker_lab.record.release
    assert set(described["eip"]) >= {"name", "address"}
    assert [e["name"] for e in described["eips"]] == [
        cluster.eip_name(layout, 4),
        cluster.eip_name(layout, 6),
    ]
    for node, planned in zip(described["nodes"], layout.nodes, strict=True):
        assert {"name", "netns", "interface", "ipv4", "ipv6", "mac", "processes"} <= set(node)
        assert (node["ipv4"], node["ipv6"]) == (str(planned.ipv4.ip), str(planned.ipv6.ip))
        assert node["mac"] == str(planned.mac)
    assert_nodes_run_their_processes(described, layout)
    pods = described["pods"]
    assert {pod["role"] for pod in pods} == {"manager", "speaker"}
    assert [pod["name"] for pod in pods if not pod["ready"]] == []
    assert sorted(pod["node"] for pod in pods if pod["role"] == "speaker") == [
        n.name for n in layout.nodes
    ]


async def test_nodes_are_registered_and_ready(speaker_lab):
    nodes = {node.metadata.name: node async for node in speaker_lab.api.list(Node)}
    assert sorted(nodes) == [n.name for n in speaker_lab.plan.nodes]
    for worker in speaker_lab.plan.nodes:
        status = nodes[worker.name].status
        assert ("Ready", "True") in [(c.type, c.status) for c in status.conditions]
        internal = {a.address for a in status.addresses if a.type == "InternalIP"}
        assert str(worker.ipv4.ip) in internal


async def test_eips_hold_the_planned_pools(speaker_lab):
    for pool in cluster.eips(speaker_lab.plan):
        found = await speaker_lab.api.get(resources.Eip, pool["metadata"]["name"])
        assert found.spec["address"] == pool["spec"]["address"]
        assert found.spec["interface"] == plan.HOST_IF
        assert (found.metadata.annotations or {}) == pool["metadata"]["annotations"]


def test_cli_service_prints_an_ip_that_a_node_answers_http_on(speaker_lab):
    name = speaker_lab.plan.name
    done = porterlb("lab", "service", "--name", name, "cli-web", "--port", "8000")
    try:
        assert done.returncode == 0, done.stderr
        key, ip = done.stdout.split()
        assert key == "default/cli-web"
        assert in_pool(speaker_lab.plan, 4, ip)
        answer = first_answer(speaker_lab.plan, f"http://{ip}:8000/")
        assert answer in {n.name for n in speaker_lab.plan.nodes}
    finally:
        deleted = porterlb("lab", "service", "--name", name, "cli-web", "--delete")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == "default/cli-web deleted"


def test_a_failed_up_leaves_nothing_behind(speaker_lab):
    """A name with the session lab's address index is refused, naming that lab."""
    index = speaker_lab.plan.index
    name = next(
        candidate
        for n in itertools.count()
        if plan.index_of(candidate := f"x{os.getpid()}-{n}") == index
    )
    done = porterlb("lab", "up", "--name", name, "--workers", "1", timeout=UP_LIMIT)
    assert done.returncode == 1
    assert speaker_lab.plan.name in done.stderr
    assert reallab.leftovers(name) == []
    assert network.inspect(speaker_lab.plan.name) == speaker_lab.plan  # it runs on


@pytest.mark.timeout(2 * UP_LIMIT)
def test_up_after_a_killed_up_gives_real_nodes_and_down_leaves_nothing(speaker_lab):
    host = mountns.host_values()
    name = fresh_name()
    state = lab.STATE_ROOT / name
    try:
        half = subprocess.Popen([*CLI, "lab", "up", "--name", name, "--workers", "1"])
        netns.wait_until(
            lambda: (state / "logs" / f"containerd-{name}-w1.log").exists(),
            timeout=HALF_WAY,
            what="lab up to get half way",
        )
        half.send_signal(signal.SIGKILL)
        half.wait(timeout=10)
        left = procs.members(name)
        assert left  # the control plane and containerd run on, orphaned

        done = porterlb("lab", "up", "--name", name, "--workers", "1", timeout=UP_LIMIT)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"lab {name} ready in " in done.stdout
        assert "real nodes" in done.stdout
        assert "porterlb by chart" in done.stdout
        assert set(procs.members(name)).isdisjoint(left)

        record = lab.load(name)
        assert record is not None
        assert not set(record.plan.namespaces) & set(speaker_lab.plan.namespaces)
        described = info(name)
        assert_nodes_run_their_processes(described, record.plan)
        assert [pod["name"] for pod in described["pods"] if not pod["ready"]] == []

        served = porterlb("lab", "service", "--name", name, "web", timeout=UP_LIMIT)
        assert served.returncode == 0, served.stderr
        _, ip = served.stdout.split()
        assert first_answer(record.plan, f"http://{ip}/") == record.plan.nodes[0].name

        down = porterlb("lab", "down", "--name", name, timeout=UP_LIMIT)
        assert down.returncode == 0, down.stderr
        assert reallab.leftovers(name) == []
        assert porterlb("lab", "info", "--name", name).returncode == 1
        assert info(speaker_lab.plan.name)["nodes"]  # the session lab is untouched
    finally:
        nodelab.down(name)
    assert reallab.leftovers(name) == []
    assert mountns.host_values() == host
