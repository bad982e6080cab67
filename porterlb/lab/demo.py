"""The lab demo: a Service IP announced from one node, traffic flowing, that node failing.

``porterlb lab demo`` brings a lab of real nodes up (a kubelet, containerd and kube-proxy on
each of three workers, porterlb installed by ``helm install``, a backend Deployment with a pod
on every node: :mod:`porterlb.lab.benchlab`), creates a LoadBalancer Service in front of the
pods, and sends an HTTP request from the client namespace through the router every 100 ms,
printing which node's pod answered (``externalTrafficPolicy: Local``: the node that received
the request). Then it crashes the announcing node (fault kind ``crash``,
:mod:`porterlb.lab.faults`: its processes killed, its cable pulled). Nothing tells the API
server: the managers find the speaker silent after three missed heartbeats (~300 ms), the
leader moves the IP, the new node's speaker sends its gratuitous ARP burst, and the router's
neighbour entry and the answering node change. Three workers, so that the IP moves to one of
two others and the managers (two replicas, spread over nodes) most likely keep one leader
alive on a node that did not crash. The lab is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Final

import lightkube
from lightkube.resources.core_v1 import Pod

from porterlb.kube import client as kube_client
from porterlb.lab import benchlab, cluster, faults, lab, leaders, netns, plan
from porterlb.lab.node import release

INTERVAL: Final = 0.1
"""Seconds between two requests from the client."""

REQUEST_TIMEOUT: Final = 0.2
"""Seconds one request may take before it counts as failed."""

FAILOVER_LIMIT: Final = 60.0
"""Seconds the demo waits for traffic to resume before it gives up."""

WORKERS: Final = 3
"""Three real nodes fit two cores (about 1.2 GiB and 5 % of a core idle, README); the IP then
has two nodes to move to."""

_NODES: Final = "real nodes: kubelet, containerd and kube-proxy each, porterlb by its chart"


def run(
    name: str,
    *,
    workers: int = WORKERS,
    say: Callable[[str], None] = print,
) -> None:
    """Run the whole demo on a fresh lab called `name`, removed afterwards."""
    say(f"bringing lab {name!r} up ({workers} workers, {_NODES}, a real kube-apiserver + etcd)...")
    started = time.monotonic()
    record = benchlab.up(name, workers=workers, say=say)
    say(f"lab {name!r} up in {time.monotonic() - started:.0f} s")
    try:
        asyncio.run(_story(record, say))
    finally:
        say(f"removing lab {name!r}...")
        benchlab.down(name)


async def _story(record: lab.Record, say: Callable[[str], None]) -> None:
    layout = record.plan
    async with kube_client.connect(record.kubeconfig) as client:
        await benchlab.create_service(client, record, "web")
        (ip,) = await cluster.wait_ingress(client, "web")
        first = await _announcer(client, layout, other_than=None)
        say(f"Service default/web got {ip}; node {first.name} announces it")
        await _traffic(layout, ip, say, until=lambda node: node == first.name, limit=10.0)
        say(f"router neighbour entry: {_neighbour(layout, ip)}")
        say(await _leader(client, record, first.name))

        crash = await asyncio.to_thread(faults.for_record, record, "crash", first.name)
        say(f"crashing {first.name}: kubelet, containerd and every pod killed, cable pulled"
            " (the API server is not told)")  # fmt: skip
        crashed = time.monotonic()
        # The requests go on while the crash is injected (killing a node's processes takes
        # a while on a loaded machine), so the output shows the node's last answer too.
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(asyncio.to_thread(faults.inject, record, crash), name="demo/crash")
            answered, last_old = await _traffic(
                layout,
                ip,
                say,
                until=lambda node: node not in ("", first.name),
                limit=FAILOVER_LIMIT,
            )
        second = await _announcer(client, layout, other_than=first.name)
        gap = answered - max(last_old or crashed, crashed)
        say(
            f"traffic resumed from {second.name} {gap:.2f} s after {first.name}'s last answer"
            f" ({answered - crashed:.2f} s after the crash began; its speaker missed three"
            " heartbeats)"
        )
        say(f"router neighbour entry: {_neighbour(layout, ip)}")


async def _leader(client: lightkube.AsyncClient, record: lab.Record, announcer: str) -> str:
    """Where the leading manager's pod runs: with the announcer, the crash takes the leader
    too, and the standby waits for the Lease to expire (6 s) before it can move the IP."""
    leader = await leaders.holder(client, record)
    pod = await client.get(Pod, leader, namespace=release.NAMESPACE)
    node = pod.spec.nodeName if pod.spec else None
    if node == announcer:
        return (
            f"the leading manager, pod {leader}, runs on {node} too: the crash takes it along,"
            " and its standby leads once the Lease expires (6 s), moving IPs 2.5 s later"
        )
    return f"the leading manager, pod {leader}, runs on {node}"


async def _announcer(
    client: lightkube.AsyncClient, layout: plan.Lab, *, other_than: str | None
) -> plan.Node:
    """The worker the manager recorded for the Service, once it is not `other_than`."""
    while True:
        name = await cluster.announced_by(client, "web")
        if name and name != other_than:
            return layout.node(name)
        await asyncio.sleep(INTERVAL)


async def _traffic(
    layout: plan.Lab,
    ip: str,
    say: Callable[[str], None],
    *,
    until: Callable[[str], bool],
    limit: float,
) -> tuple[float, float | None]:
    """Request every INTERVAL, printing changes, until the answering node satisfies `until`;
    when one did, and when the last answer from a node that did not came (None if none)."""
    started = time.monotonic()
    last, other = None, None
    while time.monotonic() - started < limit:
        node = await asyncio.to_thread(netns.call_in, layout.client.netns, lambda: _get(ip))
        if node != last:
            say(f"  {time.monotonic() - started:6.2f} s  {node or 'no answer'}")
            last = node
        if until(node):
            return time.monotonic(), other
        if node:
            other = time.monotonic()
        await asyncio.sleep(INTERVAL)
    raise TimeoutError(f"traffic to {ip} did not resume within {limit:.0f} s")


def _get(ip: str) -> str:
    """The body of ``GET /`` from `ip`:80 (the answering node's name), or "" on failure."""
    try:
        with socket.create_connection((ip, cluster.SERVICE_PORT), timeout=REQUEST_TIMEOUT) as conn:
            conn.sendall(f"GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
            reply = b""
            while chunk := conn.recv(4096):
                reply += chunk
    except OSError:
        return ""
    return reply.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()


def _neighbour(layout: plan.Lab, ip: str) -> str:
    entries = json.loads(netns.run(layout.router_lan.netns, ["ip", "-j", "neigh", "show", ip]))
    if not entries:
        return "none"
    entry = entries[0]
    mac = entry.get("lladdr", "")
    owner = next((n.name for n in layout.nodes if str(n.mac) == mac), "unknown host")
    return f"{ip} lladdr {mac or '-'} ({owner}) {' '.join(entry.get('state', []))}"
