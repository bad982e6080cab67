"""Benchmark: the manager allocating IPs for 10,000 Services against the real API server.

    uv run python -m bench.control_plane [--services 10000] [--pools 10]
        [--cluster-ip-allocator ipaddress|bitmap] [--no-manager] [--manager-log PATH]

Starts a control plane, creates one namespace-bound /20 Eip per namespace, runs
``porterlb manager`` as its own process, creates the Services (64 requests in flight), and
waits on a watch until every Service has its IP. Prints the time to the last IP, the
manager's API requests per Service (its own counter, list/watch excluded), its peak RSS, and
the CPU time each process spent per Service: the machine has 2 cores, so CPU is what decides.
Targets (issue 2): all 10,000 within 60 s; manager RSS at most 150 MB.

``--cluster-ip-allocator bitmap`` runs kube-apiserver with the pre-1.33 ClusterIP allocator
(:data:`porterlb.lab.controlplane.LEGACY_CLUSTER_IP_ALLOCATOR`): the current one costs the API
server O(n) per Service created, which swamps what the manager costs at 10,000.
``--no-manager`` measures the creation of the Services alone. etcd and kube-apiserver run with
the lab's Go runtime settings (:data:`porterlb.lab.controlplane.GO_RUNTIME`), as everywhere.

The load generator shares the 2 cores with what it measures, so it is kept cheap: it sends
raw JSON over its own aiohttp session, with no httpx2 or lightkube above it (0.7 ms of CPU
per Service instead of 1.1 through the manager's client), and filters the watch on the bytes
``"ingress"`` before decoding; it still creates real Services through the API and sees their
IPs on a watch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx2
import msgspec

from porterlb.api import wellknown
from porterlb.kube import client as kube_client
from porterlb.kube import resources
from porterlb.lab import controlplane, crds

IN_FLIGHT = 64
"""Creations in flight: enough to keep both cores busy through the API server's latency."""

JSON_HEADERS = {"Content-Type": "application/json"}


def _service(name: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "annotations": {wellknown.LB_OPT_IN: "openelb"}},
            "spec": {
                "type": "LoadBalancer",
                "ports": [{"port": 80}],
                "selector": {"app": name},
                # 10,000 Services would exhaust the 2,768 node ports; the LB IP is measured.
                "allocateLoadBalancerNodePorts": False,
            },
        }
    ).encode()


def _proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(re.findall(r"^(\w+):\s+(.*)$", text, re.M))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _manager_requests(metrics_url: str) -> dict[str, float]:
    text = httpx2.get(metrics_url, timeout=5).text
    pattern = r'^porterlb_api_requests_total\{resource="([^"]+)",verb="([^"]+)"\} (\S+)$'
    found = re.findall(pattern, text, re.M)
    return {f"{verb} {resource}": float(value) for resource, verb, value in found}


@dataclass(frozen=True, slots=True)
class Result:
    created: float
    served: float | None
    cpu: dict[str, float]
    """Process name -> CPU seconds spent from the first creation to the last IP."""
    writes: dict[str, float]
    manager_rss: str


class CpuClock:
    """CPU seconds of named processes since construction."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: _cpu_seconds(pid) for name, pid in pids.items()}

    def read(self) -> dict[str, float]:
        return {name: _cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}


def _load_session(kubeconfig: Path) -> aiohttp.ClientSession:
    """The load generator's own connections, with the lab kubeconfig's token and CA."""
    config, tls = kube_client.context(kubeconfig)
    if config.user is None or config.user.token is None:
        raise SystemExit(f"{kubeconfig}: the load generator needs a user with a token")
    return aiohttp.ClientSession(
        base_url=config.cluster.server,
        headers={"Authorization": f"Bearer {config.user.token}", **JSON_HEADERS},
        connector=aiohttp.TCPConnector(ssl=tls, limit=IN_FLIGHT + 1),
        # The load generator waits as long as the API server needs: its latency is the result.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=120.0),
    )


async def _served(load: aiohttp.ClientSession, version: str, count: int) -> None:
    """Return once `count` Services have an ingress IP, watching from `version`."""
    served: set[str] = set()
    params = {"watch": "true", "resourceVersion": version}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=None)
    async with load.get("/api/v1/services", params=params, timeout=timeout) as response:
        response.raise_for_status()
        async for line in response.content:  # one event a line
            if b'"ingress"' not in line:
                continue
            meta = msgspec.json.decode(line)["object"]["metadata"]
            served.add(f"{meta['namespace']}/{meta['name']}")
            if len(served) >= count:
                return


async def _create_all(load: aiohttp.ClientSession, namespaces: list[str], count: int) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def create(index: int) -> None:
        namespace = namespaces[index % len(namespaces)]
        path = f"/api/v1/namespaces/{namespace}/services"
        async with gate, load.post(path, data=_service(f"svc-{index}")) as reply:
            await reply.read()  # read to the end: the connection goes back to the pool
            reply.raise_for_status()

    async with asyncio.TaskGroup() as group:
        for index in range(count):
            group.create_task(create(index))


async def run(
    services: int,
    pools: int,
    plane: controlplane.ControlPlane,
    *,
    manager: bool,
    manager_log: Path | None = None,
) -> Result:
    kubeconfig = plane.endpoints.kubeconfig
    async with kube_client.connect(kubeconfig) as client:
        http = kube_client.http(client)
        await crds.install(client)
        namespaces = [f"bench-{i}" for i in range(pools)]
        for i, namespace in enumerate(namespaces):
            body = {"metadata": {"name": namespace}}
            (await http.post("/api/v1/namespaces", json=body)).raise_for_status()
            eip = {
                "apiVersion": f"{resources.EIP_GROUP}/{resources.EIP_VERSION}",
                "kind": "Eip",
                "metadata": {"name": f"pool-{i}"},
                "spec": {
                    "address": f"198.18.{16 * i}.0/20",
                    "protocol": "layer2",
                    "namespaces": [namespace],
                },
            }
            reply = await http.post(kube_client.path(resources.Eip), json=eip)
            reply.raise_for_status()

        pids = {name: process.pid for name, process in plane.processes.items()}
        pids["bench"] = os.getpid()
        port = controlplane.free_port()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        process = None
        if manager:
            with (manager_log or Path(os.devnull)).open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "porterlb.cli", "manager"),
                    *("--kubeconfig", str(kubeconfig), "--metrics-addr", f"127.0.0.1:{port}"),
                    *("--health-addr", "0"),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            pids["manager"] = process.pid
        try:
            baseline: dict[str, float] = {}
            if process is not None:
                baseline = await _manager_ready(metrics_url)
            listing = await http.get("/api/v1/services", params={"limit": "1"})
            listing.raise_for_status()
            version = listing.json()["metadata"]["resourceVersion"]

            clock = CpuClock(pids)
            async with _load_session(kubeconfig) as load:
                watcher = asyncio.create_task(_served(load, version, services)) if manager else None
                start = time.monotonic()
                await _create_all(load, namespaces, services)
                created = time.monotonic() - start
                served = None
                if watcher is not None:
                    await watcher
                    served = time.monotonic() - start
            cpu = clock.read()
            rss = ""
            writes: dict[str, float] = {}
            if process is not None:
                rss = _proc_status(process.pid)["VmHWM"]
                after = _manager_requests(metrics_url)
                writes = {
                    key: after[key] - baseline.get(key, 0)
                    for key in after
                    if not key.startswith(("list", "watch"))
                }
        finally:
            if process is not None:
                process.terminate()
                await process.wait()
    return Result(created=created, served=served, cpu=cpu, writes=writes, manager_rss=rss)


async def _manager_ready(metrics_url: str) -> dict[str, float]:
    """Wait until the manager watches and has settled its Eip statuses; its counters then."""
    while True:
        try:
            if "watch" in " ".join(_manager_requests(metrics_url)):
                break
        except httpx2.HTTPError:
            pass
        await asyncio.sleep(0.2)  # polling another process's metrics: nothing to wait on
    await asyncio.sleep(2.0)  # let the manager settle its Eip statuses before the clock starts
    return _manager_requests(metrics_url)


def _table(services: int, pools: int, allocator: str, result: Result) -> Iterable[str]:
    per = {name: 1000 * seconds / services for name, seconds in result.cpu.items()}
    names = [n for n in ("manager", "kube-apiserver", "etcd", "bench") if n in per]
    served = f"{result.served:.1f} s" if result.served is not None else "-"
    writes = f"{sum(result.writes.values()) / services:.2f}" if result.writes else "-"
    yield (
        "| Services | pools | ClusterIP allocator | all created | all have an IP"
        " | manager API writes / Service | manager peak RSS | CPU ms / Service ("
        + ", ".join(names)
        + ") | load (1 min) |"
    )
    yield "|---|---|---|---|---|---|---|---|---|"
    yield (
        f"| {services} | {pools} | {allocator} | {result.created:.1f} s | {served} | {writes}"
        f" | {result.manager_rss or '-'} | "
        + " / ".join(f"{per[name]:.2f}" for name in names)
        + f" | {os.getloadavg()[0]:.1f} |"
    )
    yield ""
    for key, value in sorted(result.writes.items()):
        yield f"  {key}: {value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument(
        "--cluster-ip-allocator",
        choices=("ipaddress", "bitmap"),
        default="ipaddress",
        help="kube-apiserver's ClusterIP allocator (default: the pinned server's own)",
    )
    parser.add_argument("--no-manager", action="store_true", help="measure creation alone")
    parser.add_argument("--manager-log", type=Path, help="where the manager's log goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="porterlb-bench-") as scratch:
        plane = controlplane.ControlPlane(
            Path(scratch) / "cp",
            legacy_cluster_ip_allocator=args.cluster_ip_allocator == "bitmap",
        )
        with plane:
            result = asyncio.run(
                run(
                    args.services,
                    args.pools,
                    plane,
                    manager=not args.no_manager,
                    manager_log=args.manager_log,
                )
            )
    for line in _table(args.services, args.pools, args.cluster_ip_allocator, result):
        print(line)


if __name__ == "__main__":
    main()
