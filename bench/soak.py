"""Soak: random faults and recoveries in a live lab, with every Service IP asked every 20 ms.

    uv run python -m bench.soak [--minutes 10] [--services 4] [--seed 1]

Brings a lab up (3 real nodes, porterlb installed by its chart with its 2 managers, a backend
pod per node: :mod:`porterlb.lab.benchlab`), creates the Services, then for the whole run
injects one fault at a time, every scenario of ``lab bench-failover`` once per round in a
random order (every kind of ``porterlb lab fault`` on a random worker, the leader's death, an
API-server restart; :class:`porterlb.lab.failover.FaultLab`), holds it a few seconds, repairs
it and lets the lab settle. Meanwhile the overlap sampler (:mod:`porterlb.lab.sampler`) sends,
every 20 ms, one broadcast ARP request per Service IP from the router's LAN leg and records the
MACs that answer. One fault at a time on three workers leaves an eligible node at every moment,
so the rules are: never two answers for one IP (issue 9's P2: the two-answer time must be 0);
never none for longer than the failover target (500 ms). The table gives both per IP, and the
faults injected.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Final

from porterlb.kube import client as kube_client
from porterlb.lab import benchlab, cluster, failover, lab, sampler

TARGET: Final = 0.5
"""Seconds without an answer that count as an outage: the failover target (issue 4)."""
FAULTS: Final = failover.SCENARIOS
HOLD: Final = (2.0, 8.0)
SETTLE: Final = (2.0, 5.0)
"""Seconds a fault is held, and the lab left alone after its repair (uniformly drawn)."""


async def _faults(record: lab.Record, minutes: float, rng: random.Random) -> dict[str, int]:
    done: dict[str, int] = dict.fromkeys(FAULTS, 0)
    async with kube_client.connect(record.kubeconfig) as client:
        faults = failover.FaultLab(record, client)
        end = time.monotonic() + minutes * 60
        order: list[str] = []
        while time.monotonic() < end:
            if not order:  # every fault once per round, in a random order
                order = rng.sample(FAULTS, len(FAULTS))
            scenario = order.pop()
            victim = rng.choice(record.plan.nodes).name
            fault = await faults.inject(scenario, victim)
            await fault.recovered()
            await asyncio.sleep(rng.uniform(*HOLD))  # the fault's duration: part of the plan
            await fault.repair()
            done[scenario] += 1
            await asyncio.sleep(rng.uniform(*SETTLE))
    return done


async def _services(record: lab.Record, count: int) -> list[str]:
    async with kube_client.connect(record.kubeconfig) as client:
        ips: list[str] = []
        for n in range(count):
            await benchlab.create_service(client, record, f"soak-{n}")
            (ip,) = await cluster.wait_ingress(client, f"soak-{n}")
            ips.append(ip)
        return ips


def table(samples: list[sampler.Sample]) -> str:
    """The Markdown table the soak prints: per IP, the two-answer time and the silences."""
    lines = [
        "| IP | samples | two answers ms | silences | longest silence ms | silences > 500 ms |",
        "|---|---|---|---|---|---|",
    ]
    for ip, found in sorted(sampler.by_ip(samples).items()):
        figures = sampler.overlap(found)
        quiet = sampler.silences(found)
        over = sum(1 for s in quiet if s > TARGET)
        lines.append(
            f"| {ip} | {figures.samples} | {figures.two_answer * 1000:.0f} | {len(quiet)} |"
            f" {figures.blackout * 1000:.0f} | {over} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--services", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", default="soak")
    args = parser.parse_args()
    record = benchlab.up(args.name, workers=3)
    try:
        ips = asyncio.run(_services(record, args.services))
        with sampler.Sampler(record.plan, ips) as sampled:
            done = asyncio.run(_faults(record, args.minutes, random.Random(args.seed)))
    finally:
        benchlab.down(args.name)
    print(f"faults injected and repaired: {', '.join(f'{k} {v}' for k, v in done.items())}")
    print()
    print(table(sampled.samples))


if __name__ == "__main__":
    main()
