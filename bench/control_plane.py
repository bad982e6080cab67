"""Benchmark: the manager allocating IPs for 10,000 Services against the real API server.

    uv run python -m bench.control_plane [--services 10000] [--pools 10]

Starts a control plane, creates one namespace-bound /20 Eip per namespace, runs
``porterlb manager`` as its own process, creates the Services (32 requests in flight), and
waits on a watch until every Service has its IP. Prints the time to the last IP, the
manager's API requests per Service (its own counter, list/watch excluded), and its peak RSS
and CPU time. Targets (issue 2): all 10,000 within 60 s; manager RSS at most 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from lightkube.models.core_v1 import ServicePort, ServiceSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Service

from porterlb.api import wellknown
from porterlb.kube import client as kube_client
from porterlb.kube import resources
from porterlb.lab import controlplane, crds

IN_FLIGHT = 32


def _service(name: str, namespace: str) -> Service:
    return Service(
        metadata=ObjectMeta(
            name=name, namespace=namespace, annotations={wellknown.LB_OPT_IN: "openelb"}
        ),
        spec=ServiceSpec(
            type="LoadBalancer",
            ports=[ServicePort(port=80)],
            selector={"app": name},
            # 10,000 Services would exhaust the 2,768 node ports; the LB IP is what is measured.
            allocateLoadBalancerNodePorts=False,
        ),
    )


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


async def run(services: int, pools: int, kubeconfig: Path) -> None:
    # The load generator waits as long as the API server needs: its latency is the result.
    async with kube_client.connect(kubeconfig, timeout=httpx2.Timeout(120.0)) as client:
        await crds.install(client)
        namespaces = [f"bench-{i}" for i in range(pools)]
        for i, namespace in enumerate(namespaces):
            await client.create(Namespace(metadata=ObjectMeta(name=namespace)))
            await client.create(
                resources.Eip(
                    metadata=ObjectMeta(name=f"pool-{i}"),
                    spec={
                        "address": f"198.18.{16 * i}.0/20",
                        "protocol": "layer2",
                        "namespaces": [namespace],
                    },
                )
            )

        port = controlplane.free_port()
        manager = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "porterlb.cli", "manager", "--kubeconfig", str(kubeconfig)),
            *("--metrics-addr", f"127.0.0.1:{port}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        try:
            while True:
                try:
                    if "watch" in " ".join(_manager_requests(metrics_url)):
                        break
                except httpx2.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            # Let the manager settle its Eip statuses before the clock starts.
            await asyncio.sleep(2.0)
            baseline = _manager_requests(metrics_url)
            cpu_before = _cpu_seconds(manager.pid)

            served: set[str] = set()
            done = asyncio.Event()

            async def watch() -> None:
                async for _, svc in client.watch(Service, namespace="*"):
                    lb = svc.status.loadBalancer if svc.status else None
                    if lb and lb.ingress and svc.metadata:
                        served.add(f"{svc.metadata.namespace}/{svc.metadata.name}")
                        if len(served) >= services:
                            done.set()
                            return

            watcher = asyncio.create_task(watch())
            start = time.monotonic()
            gate = asyncio.Semaphore(IN_FLIGHT)

            async def create(index: int) -> None:
                async with gate:
                    await client.create(_service(f"svc-{index}", namespaces[index % pools]))

            await asyncio.gather(*(create(i) for i in range(services)))
            created = time.monotonic() - start
            await done.wait()
            elapsed = time.monotonic() - start
            await watcher
            after = _manager_requests(metrics_url)
            status = _proc_status(manager.pid)
            cpu = _cpu_seconds(manager.pid) - cpu_before
        finally:
            manager.terminate()
            await manager.wait()

    writes = {
        key: after[key] - baseline.get(key, 0)
        for key in after
        if not key.startswith(("list", "watch"))
    }
    print(
        "| Services | pools | all created | all have an IP"
        " | manager API writes / Service | manager peak RSS | manager CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {services} | {pools} | {created:.1f} s | {elapsed:.1f} s |"
        f" {sum(writes.values()) / services:.2f} | {status['VmHWM']} | {cpu:.1f} s |"
    )
    print()
    for key, value in sorted(writes.items()):
        print(f"  {key}: {value:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--pools", type=int, default=10)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="porterlb-bench-") as scratch,
        controlplane.ControlPlane(Path(scratch) / "cp") as endpoints,
    ):
        asyncio.run(run(args.services, args.pools, endpoints.kubeconfig))


if __name__ == "__main__":
    main()
