"""``lab up`` / ``lab service`` / ``lab info`` / ``lab down``, end to end. Needs root.

One lab serves the module; the tests that crash, clash or tear down bring up labs of their
own beside it, which is also what shows that labs coexist. The speakers are started but not
relied on here: what they answer is the subject of the speaker's own e2e tests.

This is the process lab, still what ``lab up`` gives without ``--nodes real``, with its
kube-proxy stand-in and hand-made EndpointSlices; ``lab up --nodes real`` is tested by
``test_real_nodes`` (bare nodes), ``test_chart_lab`` (porterlb by its chart) and the
session lab of ``conftest.py`` (dual-stack).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from lightkube.resources.core_v1 import Node

from porterlb import errors
from porterlb.kube import client as kube_client
from porterlb.kube import resources
from porterlb.lab import cluster, credentials, kubeproxy, lab, netns, network, plan, processes
from tests.e2e import marks
from tests.waiting import eventually

pytestmark = marks.e2e("ip", "nft", "curl", control_plane=True)

CLI = [sys.executable, "-m", "porterlb.cli"]
SPEAKER = "speaker/"
"""Role prefix of the processes whose behaviour these tests do not depend on."""

_names = itertools.count()


def fresh_name(prefix: str) -> str:
    """A lab name that nothing running uses and whose address index no running lab has."""
    running = network.running()
    while True:
        name = f"{prefix}{os.getpid()}-{next(_names)}"
        if name not in running and not plan.clashes(name, running):
            return name


def in_pool(layout: plan.Lab, version: int, ip: str) -> bool:
    pool = layout.pool_v4 if version == 4 else layout.pool_v6
    assert pool is not None
    address = ipaddress.ip_address(ip)
    return address.version == version and int(pool[0]) <= int(address) <= int(pool[1])


def url(ip: str, port: int) -> str:
    return f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"


def table(node: plan.Node) -> str:
    return netns.run(node.netns, ["nft", "list", "table", "inet", kubeproxy.TABLE])


def infrastructure(record: lab.Record) -> list[processes.Process]:
    return [p for p in record.processes if not p.role.startswith(SPEAKER)]


def host_links() -> set[str]:
    return {link["ifname"] for link in json.loads(netns.run(None, ["ip", "-j", "link", "show"]))}


def mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (a zombie's is empty)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def assert_gone(name: str, record: lab.Record | None = None) -> None:
    """Nothing of lab ``name`` is left: namespace, process, state."""
    assert [ns for ns in netns.names() if plan.lab_of(ns) == name] == []
    assert processes.members(name) == {}
    assert mentioning(f"{lab.STATE_ROOT / name}/") == []
    assert not (lab.STATE_ROOT / name).exists()
    assert lab.info(name) is None
    if record is not None:
        assert [p.role for p in record.processes if processes.alive(p)] == []


@pytest.fixture(scope="module")
def running():
    name = fresh_name("e")
    try:
        yield lab.up(name, workers=2, ipv6=True)
    finally:
        lab.down(name)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(running):
    async with kube_client.connect(running.kubeconfig) as client:
        yield client


def test_info_describes_the_running_lab(running):
    described = lab.info(running.plan.name)
    assert described is not None
    assert network.inspect(running.plan.name) == running.plan
    assert Path(described["kubeconfig"]).is_file()
    assert described["router_netns"] == running.plan.router_netns
    assert described["client_netns"] == running.plan.client.netns
    assert [n["name"] for n in described["nodes"]] == [n.name for n in running.plan.nodes]
    assert [n["mac"] for n in described["nodes"]] == [str(n.mac) for n in running.plan.nodes]
    assert [e["name"] for e in described["eips"]] == [
        cluster.eip_name(running.plan, 4),
        cluster.eip_name(running.plan, 6),
    ]
    assert {p.role: processes.alive(p) for p in infrastructure(running)} == {
        p.role: True for p in infrastructure(running)
    }
    roles = {p["role"] for p in described["processes"]}
    assert {"control-plane", "manager/1", "manager/2", "kube-proxy"} <= roles
    assert {f"speaker/{n.name}" for n in running.plan.nodes} <= roles


def test_cli_info_json_has_the_documented_fields(running):
    out = subprocess.run(
        [*CLI, "lab", "info", "--name", running.plan.name, "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    described = json.loads(out)
    assert {"kubeconfig", "router_netns", "client_netns", "eip", "nodes"} <= described.keys()
    assert set(described["eip"]) >= {"name", "address"}
    for node in described["nodes"]:
        assert {"name", "netns", "interface", "ipv4", "ipv6", "mac"} <= node.keys()
        ipaddress.ip_address(node["ipv4"])
        ipaddress.ip_address(node["ipv6"])


async def test_nodes_are_registered_and_ready(running, api):
    nodes = {node.metadata.name: node async for node in api.list(Node)}
    assert sorted(nodes) == [n.name for n in running.plan.nodes]
    for worker in running.plan.nodes:
        status = nodes[worker.name].status
        assert [(c.type, c.status) for c in status.conditions] == [("Ready", "True")]
        internal = {a.address for a in status.addresses if a.type == "InternalIP"}
        assert worker.ipv6 is not None
        assert internal == {str(worker.ipv4.ip), str(worker.ipv6.ip)}


async def test_eips_hold_the_planned_pools(running, api):
    for pool in cluster.eips(running.plan):
        found = await api.get(resources.Eip, pool["metadata"]["name"])
        assert found.spec["address"] == pool["spec"]["address"]
        assert found.spec["interface"] == plan.HOST_IF
        assert (found.metadata.annotations or {}) == pool["metadata"]["annotations"]


@pytest.mark.parametrize(("family", "version"), [("ipv4", 4), ("ipv6", 6)])
async def test_a_sample_service_gets_a_pool_ip_that_every_worker_serves(
    running, api, family, version
):
    name = f"web-{family}"
    await cluster.create_service(api, running.plan, name, family=family)

    async def allocated():
        return await cluster.ingress(api, name)

    [ip] = await eventually(allocated, what=f"an IP for {name}")
    assert in_pool(running.plan, version, ip)

    for node in running.plan.nodes:

        async def forwarded(node=node):
            return f"daddr {ip} tcp dport {cluster.SERVICE_PORT} " in table(node)

        await eventually(forwarded, what=f"the DNAT rule for {ip} on {node.name}")
        answer = netns.run(
            node.netns, ["curl", "-sS", "-g", "--max-time", "5", url(ip, cluster.SERVICE_PORT)]
        )
        assert answer == f"{node.name}\n"  # its own backend, through the output hook

    await cluster.delete_service(api, name)
    for node in running.plan.nodes:

        async def withdrawn(node=node):
            return f"daddr {ip} " not in table(node)

        await eventually(withdrawn, what=f"the DNAT rule for {ip} to leave {node.name}")


def test_cli_service_prints_the_allocated_ip(running):
    done = subprocess.run(
        [*CLI, "lab", "service", "--name", running.plan.name, "cli-web", "--port", "8000"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key, ip = done.stdout.split()
    assert key == "default/cli-web"
    assert in_pool(running.plan, 4, ip)
    subprocess.run(
        [*CLI, "lab", "service", "--name", running.plan.name, "cli-web", "--delete"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def test_a_second_lab_coexists_and_goes_down_without_a_trace(running):
    links = host_links()
    name = fresh_name("c")
    other = lab.up(name, workers=1, ipv6=False)
    try:
        assert other.kubeconfig != running.kubeconfig
        assert not set(other.plan.namespaces) & set(running.plan.namespaces)
        assert lab.info(name) is not None
        assert lab.info(running.plan.name) is not None
    finally:
        lab.down(name)
    assert_gone(name, other)
    assert host_links() == links
    lab.down(name)  # absent: a no-op
    assert all(processes.alive(p) for p in infrastructure(running))
    assert network.inspect(running.plan.name) == running.plan


def test_a_failed_up_leaves_nothing_behind(running):
    """A name with the running lab's address index passes every check but network.up's, by
    which time the control plane is already starting."""
    name = next(
        candidate
        for n in itertools.count()
        if plan.index_of(candidate := f"x{os.getpid()}-{n}") == running.plan.index
    )
    with pytest.raises(errors.InvalidSpec, match=running.plan.name):
        lab.up(name, workers=1)
    assert_gone(name)
    assert all(processes.alive(p) for p in infrastructure(running))


def test_up_after_crashes_starts_afresh(running):
    """``lab up`` killed half way, then every process of a lab killed: ``lab up`` recovers."""
    name = fresh_name("k")
    state = lab.STATE_ROOT / name
    try:
        half = subprocess.Popen([*CLI, "lab", "up", "--name", name, "--workers", "1"])
        netns.wait_until(
            lambda: (state / "logs" / f"backend-{name}-w1.log").exists(),
            timeout=60,
            what="lab up to get half way",
        )
        half.send_signal(signal.SIGKILL)
        half.wait(timeout=10)
        assert processes.members(name)  # the control plane was left running

        first = lab.up(name, workers=1)
        assert all(processes.alive(p) for p in infrastructure(first))
        for pid in processes.members(name):  # kill -9 everything; namespaces stay
            os.kill(pid, signal.SIGKILL)
        for pids in netns.pids(first.plan.namespaces).values():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        netns.wait_until(
            lambda: not any(processes.alive(p) for p in first.processes),
            timeout=10,
            what="the killed processes to die",
        )

        second = lab.up(name, workers=1)
        assert all(processes.alive(p) for p in infrastructure(second))
        assert {p.pid for p in second.processes}.isdisjoint(p.pid for p in first.processes)
        assert network.inspect(name) == second.plan
    finally:
        lab.down(name)
    assert_gone(name)


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("role", ["manager", "speaker"])
async def test_porterlb_runs_as_its_service_account_not_as_an_admin(running, role):
    """Each role's processes use their kubeconfig, whose user is the chart's ServiceAccount."""
    kubeconfig = credentials.kubeconfig(running.directory, role)
    for process in running.processes:
        if process.role.startswith(f"{role}/"):
            # The speakers' copy names the API endpoint on the LAN; the token is the same.
            used = lab.kubeconfig_for(running.plan, running.directory, process.role)
            assert str(used) in command_line(process.pid), process.role
            assert (
                yaml.safe_load(used.read_text())["users"]
                == (yaml.safe_load(kubeconfig.read_text())["users"])
            )
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    async with kube_client.connect(kubeconfig) as client:
        reply = await kube_client.http(client).post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews", json=review
        )
    user = reply.json()["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:porterlb-system:porterlb-{role}"
    assert "system:masters" not in user["groups"]
