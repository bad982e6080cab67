"""A crash of the node that runs the leading manager, on real nodes: how long traffic stops.

Run as root, after ``porterlb lab build-control-plane --nodes``::

    nice .venv/bin/python -m bench.leader_crash --runs 3

``porterlb lab bench-failover --scenario worker-crash`` crashes the node announcing its
Service, wherever the leader runs; this one crashes the leader's node, and measures a Service
announced there. It brings a real-node lab up (the chart's defaults: two manager replicas on
three workers), creates Services until one is announced from the node of the manager holding
the Lease, and crashes that node under the Service's request stream with
:class:`porterlb.lab.failover.FaultLab` (the fault of ``worker-crash``), repairs it, and
again for each run. The standby leads once the Lease expires, waits its takeover settle, finds
the crashed speaker silent and moves its IPs (docs/fencing.md, *Each fault*). The table is
``bench-failover``'s. The lab is removed in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio

import lightkube
from lightkube.resources.core_v1 import Pod

from bench import _lab
from porterlb.kube import client as kube_client
from porterlb.lab import benchlab, cluster, failover, failover_figures, lab, leaders
from porterlb.lab.node import release

SCENARIO = "leader-node-crash"
SERVICES_LIMIT = 12
"""Services created at most while looking for one on the leader's node (3 workers)."""


async def _leader_node(client: lightkube.AsyncClient, record: lab.Record) -> tuple[str, str]:
    """The leading manager's pod and its node, once one leads."""
    while True:
        leader = await leaders.holder(client, record)
        if leader:
            pod = await client.get(Pod, leader, namespace=release.NAMESPACE)
            if pod.spec and pod.spec.nodeName:
                return leader, pod.spec.nodeName
        await asyncio.sleep(0.5)


async def _service_on(
    faults: failover.FaultLab, record: lab.Record, node: str, made: list[str]
) -> tuple[str, str]:
    """A Service announced from ``node`` and its IP, adding to the Services ``made`` until
    one is."""
    client = faults.client
    while True:
        for name in made:
            if await cluster.announced_by(client, name) == node:
                (ip,) = await cluster.wait_ingress(client, name)
                return name, ip
        if len(made) == SERVICES_LIMIT:
            raise SystemExit(f"none of {len(made)} Services announced from {node}")
        made.append(f"web-{len(made)}")
        await benchlab.create_service(client, record, made[-1])
        await faults.announcer(made[-1])


async def _measure(record: lab.Record, runs: int) -> list[failover_figures.Figures]:
    found = []
    made: list[str] = []
    async with kube_client.connect(record.kubeconfig) as client:
        faults = failover.FaultLab(record, client)
        for number in range(1, runs + 1):
            leader, node = await _leader_node(client, record)
            service, ip = await _service_on(faults, record, node, made)
            run = await faults.run("worker-crash", service, ip, repair=True)
            figures = run.figures
            print(
                f"  {SCENARIO} run {number}/{runs}: leader {leader} on {node},"
                f" {figures.outage.interruption * 1000:.0f} ms, {figures.outage.failed} failed"
                f" requests, {run.before} -> {run.after}, first IP {figures.first_ip},"
                f" two answers {figures.two_answer * 1000:.0f} ms",
                flush=True,
            )
            found.append(figures)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    name = _lab.fresh_name("elc")
    record = benchlab.up(name, workers=args.workers)
    try:
        outages = asyncio.run(_measure(record, args.runs))
    finally:
        benchlab.down(name)
    print(failover_figures.table([failover_figures.summarize(SCENARIO, outages)], {}))


if __name__ == "__main__":
    _lab.run(main)
