"""The namespace network both labs stand on, end to end: routing through the router, the
router's pinned kernel settings, and a teardown that leaves nothing behind. Needs root.

It stays on the bare network without a cluster: it tests :mod:`porterlb.lab.network` itself,
which the real-node lab builds on (kube-proxy's forwarding there is ``test_pod_network``).
"""

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest

from porterlb import errors
from porterlb.lab import netns, network, plan
from tests.e2e import marks

pytestmark = marks.e2e("ip", "ping")

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


def squatter(node: plan.Node) -> subprocess.Popen[bytes]:
    """A detached process in ``node``'s namespace whose command line names the namespace, as a
    lab process's does; returned once it is in the namespace."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", node.netns, "sh", "-c", f"sleep 300; : {node.netns}"],
        start_new_session=True,
    )
    netns.wait_until(
        lambda: process.pid in netns.pids([node.netns]).get(node.netns, []),
        timeout=EXIT_TIMEOUT,
        what=f"a process in {node.netns}",
    )
    return process


@pytest.fixture(scope="module")
def lab():
    lab = plan.build(fresh_name("t"), 2, ipv6=True)
    try:
        network.up(lab)
        yield lab
    finally:
        network.down(lab.name)


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


def test_up_refuses_a_name_with_a_running_labs_address_index(lab):
    other = next(
        name for n in itertools.count() if plan.index_of(name := f"c{os.getpid()}-{n}") == lab.index
    )
    with pytest.raises(errors.InvalidSpec, match=lab.name):
        network.up(plan.build(other, 1))
    assert other not in network.running()


def test_up_again_replaces_a_crashed_lab():
    lab = plan.build(fresh_name("r"), 1, ipv6=False)
    try:
        network.up(lab)
        leftover = squatter(lab.nodes[0])
        network.up(lab)
        assert leftover.wait(timeout=EXIT_TIMEOUT) is not None
        assert network.inspect(lab.name) == lab
    finally:
        network.down(lab.name)


def test_down_leaves_no_namespace_link_or_process():
    before = host_links()
    lab = plan.build(fresh_name("d"), 2, ipv6=False)
    try:
        network.up(lab)
        assert network.inspect(lab.name) == lab
        process = squatter(lab.nodes[0])
        network.down(lab.name)
        process.wait(timeout=EXIT_TIMEOUT)
        assert [ns for ns in netns.names() if plan.lab_of(ns) == lab.name] == []
        assert network.inspect(lab.name) is None
        assert host_links() == before
        assert processes_mentioning(lab.name) == []
        network.down(lab.name)  # absent lab: a no-op
    finally:
        network.down(lab.name)
