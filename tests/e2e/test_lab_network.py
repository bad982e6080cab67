"""The namespace lab's network, end to end: routing through the router, the backend, the
kube-proxy stand-in, and a teardown that leaves nothing behind. Needs root."""

import ipaddress
import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest

from porterlb import errors
from porterlb.lab import backend, kubeproxy, netns, network, plan
from tests.e2e import marks

pytestmark = marks.e2e("ip", "nft", "ping", "curl")

BACKEND_PORT = 8080
LB_PORT = 80
EXIT_TIMEOUT = 10.0
"""Seconds for a killed process to be reaped."""

FAMILIES = [pytest.param(4, id="ipv4"), pytest.param(6, id="ipv6")]


def fresh_name(prefix: str) -> str:
    """A lab name used by nothing running whose address index no running lab has."""
    running = network.running()
    for n in itertools.count():
        name = f"{prefix}{os.getpid()}-{n}"
        if name not in running and not plan.clashes(name, running):
            return name
    raise AssertionError("unreachable")


def address(endpoint: plan.Endpoint, family: int) -> str:
    interface = endpoint.ipv4 if family == 4 else endpoint.ipv6
    assert interface is not None
    return str(interface.ip)


def pool_ip(lab: plan.Lab, family: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    pool = lab.pool_v4 if family == 4 else lab.pool_v6
    assert pool is not None
    return pool[0]


def url(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    host = f"[{ip}]" if ipaddress.ip_address(str(ip)).version == 6 else str(ip)
    return f"http://{host}:{port}/"


def curl(lab: plan.Lab, target: str) -> str:
    return netns.run(lab.client.netns, ["curl", "-sS", "-g", "--max-time", "5", target])


def router_neighbours(lab: plan.Lab) -> dict[str, str]:
    argv = ["ip", "-j", "-n", lab.router_netns, "neigh", "show", "dev", plan.ROUTER_LAN_IF]
    return {n["dst"]: n.get("lladdr", "") for n in json.loads(netns.run(None, argv))}


def host_links() -> set[str]:
    return {link["ifname"] for link in json.loads(netns.run(None, ["ip", "-j", "link", "show"]))}


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if text.encode() in cmdline.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    process.wait(timeout=EXIT_TIMEOUT)


@pytest.fixture(scope="module")
def lab():
    lab = plan.build(fresh_name("t"), 2, ipv6=True)
    try:
        network.up(lab)
        yield lab
    finally:
        network.down(lab.name)


@pytest.fixture(scope="module")
def backends(lab, tmp_path_factory):
    logs = tmp_path_factory.mktemp("backends")
    processes = []
    try:
        for node in lab.nodes:
            process = backend.spawn(node, BACKEND_PORT, logs / f"{node.name}.log")
            processes.append(process)
            backend.wait_ready(process, node, BACKEND_PORT)
        yield processes
    finally:
        for process in processes:
            stop(process)


@pytest.fixture(scope="module")
def forwards(lab, backends):
    """Every worker forwards the first two pool IPs of each family to its own backend."""
    for node in lab.nodes:
        rules = [
            kubeproxy.Forward(
                lb_ip=lb_ip,
                port=LB_PORT,
                protocol="TCP",
                backend_ip=ipaddress.ip_address(address(node, family)),
                backend_port=BACKEND_PORT,
            )
            for family in (4, 6)
            for lb_ip in (pool_ip(lab, family), pool_ip(lab, family) + 1)
        ]
        kubeproxy.sync(node.netns, rules)


def test_inspect_reads_back_the_plan(lab):
    assert network.inspect(lab.name) == lab
    assert lab.name in network.running()


@pytest.mark.parametrize(
    ("directory", "settings"),
    [
        pytest.param("ipv4/neigh/lan0", network.NEIGH_V4, id="neigh-v4"),
        pytest.param("ipv6/neigh/lan0", network.NEIGH_V6, id="neigh-v6"),
        pytest.param("ipv4/conf/lan0", network.IPV4_HOST, id="conf-v4"),
        pytest.param("ipv6/conf/lan0", network.IPV6_HOST, id="conf-v6"),
    ],
)
def test_router_lan_has_the_pinned_kernel_settings(lab, directory, settings):
    def read() -> dict[str, int]:
        base = Path("/proc/sys/net", directory)
        return {key: int((base / key).read_text()) for key in settings}

    assert netns.call_in(lab.router_netns, read) == settings


@pytest.mark.parametrize("family", FAMILIES)
def test_client_reaches_a_worker_through_the_router(lab, family):
    node = lab.nodes[1]
    netns.run(lab.client.netns, ["ping", "-c", "1", "-W", "5", address(node, family)])
    # The router resolved the worker on its LAN leg: the path went through the judge ...
    assert router_neighbours(lab)[address(node, family)] == str(node.mac)
    # ... and the worker answered through its default route, never straight to the client.
    worker = netns.run(None, ["ip", "-j", "-n", node.netns, "neigh", "show", "dev", "eth0"])
    assert address(lab.client, family) not in {n["dst"] for n in json.loads(worker)}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("number", [pytest.param(0, id="w1"), pytest.param(1, id="w2")])
def test_backend_answers_the_client_with_its_node_name(lab, backends, family, number):
    node = lab.nodes[number]
    assert curl(lab, url(address(node, family), BACKEND_PORT)) == f"{node.name}\n"


@pytest.mark.parametrize("family", FAMILIES)
def test_lb_ip_is_served_by_whichever_node_the_router_resolves_it_to(lab, forwards, family):
    lb_ip = pool_ip(lab, family)
    for node in lab.nodes:  # what the speaker's ARP/NDP answers do in the real lab
        netns.run(
            None,
            ["ip", "-n", lab.router_netns, "neigh", "replace", str(lb_ip), "lladdr",
             str(node.mac), "dev", plan.ROUTER_LAN_IF, "nud", "permanent"],
        )  # fmt: skip
        assert curl(lab, url(lb_ip, LB_PORT)) == f"{node.name}\n"


@pytest.mark.parametrize("family", FAMILIES)
def test_no_worker_kernel_answers_arp_or_ndp_for_an_lb_ip(lab, forwards, family):
    lb_ip = pool_ip(lab, family) + 1  # forwarded by every worker, announced by no one
    with pytest.raises(netns.LabError, match="exited with 1"):
        netns.run(lab.client.netns, ["ping", "-c", "1", "-W", "1", str(lb_ip)])
    assert router_neighbours(lab).get(str(lb_ip), "") == ""


def test_up_refuses_a_name_with_a_running_labs_address_index(lab):
    other = next(
        name for n in itertools.count() if plan.index_of(name := f"c{os.getpid()}-{n}") == lab.index
    )
    with pytest.raises(errors.InvalidSpec, match=lab.name):
        network.up(plan.build(other, 1))
    assert other not in network.running()


def test_up_again_replaces_a_crashed_lab(tmp_path):
    lab = plan.build(fresh_name("r"), 1, ipv6=False)
    try:
        network.up(lab)
        node = lab.nodes[0]
        leftover = backend.spawn(node, BACKEND_PORT, tmp_path / "backend.log", detached=True)
        backend.wait_ready(leftover, node, BACKEND_PORT)
        network.up(lab)
        assert leftover.wait(timeout=EXIT_TIMEOUT) is not None
        assert network.inspect(lab.name) == lab
    finally:
        network.down(lab.name)


def test_down_leaves_no_namespace_link_or_process(tmp_path):
    before = host_links()
    lab = plan.build(fresh_name("d"), 2, ipv6=False)
    try:
        network.up(lab)
        assert network.inspect(lab.name) == lab
        process = backend.spawn(lab.nodes[0], BACKEND_PORT, tmp_path / "b.log", detached=True)
        backend.wait_ready(process, lab.nodes[0], BACKEND_PORT)
        network.down(lab.name)
        process.wait(timeout=EXIT_TIMEOUT)
        assert [ns for ns in netns.names() if plan.lab_of(ns) == lab.name] == []
        assert network.inspect(lab.name) is None
        assert host_links() == before
        assert processes_mentioning(lab.name) == []
        network.down(lab.name)  # absent lab: a no-op
    finally:
        network.down(lab.name)
