"""Soak: random faults and recoveries in a live lab, with every Service IP asked every 100 ms.

    uv run python -m bench.soak [--minutes 10] [--services 4] [--seed 1]

Brings a lab up (3 workers, 2 managers), creates the Services, then for the whole run injects
one fault at a time on a random worker or the leader (``worker-crash`` and its return,
``speaker-kill`` and its restart, ``leader-kill`` and its restart, ``heartbeat-partition``
and its healing; :class:`porterlb.lab.failover.FaultLab`), holds it a few seconds, repairs
it and lets the lab settle. Meanwhile a checker sends, every 100 ms, one broadcast ARP request
per Service IP from the router and counts the MACs that answer
(:func:`porterlb.lab.arping.who_answers`). One fault at a time on three workers leaves an
eligible node at every moment, so the rules are: never two answers for one IP; never none
for longer than the failover target (500 ms). The table counts both.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import random
import threading
import time
from typing import Final

from porterlb.kube import client as kube_client
from porterlb.lab import arping, cluster, failover, lab, plan

CHECK_EVERY: Final = 0.1
WINDOW: Final = 0.05
"""Seconds the checker listens after its requests: a speaker answers within a millisecond."""
TARGET: Final = 0.5
"""Seconds without an answer that count as an outage: the failover target (issue 4)."""
FAULTS: Final = ("worker-crash", "speaker-kill", "leader-kill", "heartbeat-partition")
HOLD: Final = (2.0, 8.0)
SETTLE: Final = (2.0, 5.0)
"""Seconds a fault is held, and the lab left alone after its repair (uniformly drawn)."""


@dataclasses.dataclass
class Tally:
    checks: int = 0
    doubles: int = 0
    """Checks in which two or more MACs answered for one IP."""
    silences: list[float] = dataclasses.field(default_factory=list)
    """Lengths of the stretches in which no MAC answered, in seconds."""


class Checker:
    """Asks for every IP every :data:`CHECK_EVERY` in a thread until stopped."""

    def __init__(self, layout: plan.Lab, ips: list[arping.IPAddress]) -> None:
        self.layout = layout
        self.tallies: dict[arping.IPAddress, Tally] = {ip: Tally() for ip in ips}
        self._quiet_since: dict[arping.IPAddress, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak/checker", daemon=True)

    def __enter__(self) -> Checker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            found = arping.who_answers(self.layout, self.tallies, window=WINDOW)
            for ip, macs in found.items():
                tally = self.tallies[ip]
                tally.checks += 1
                tally.doubles += len(macs) > 1
                if not macs:
                    self._quiet_since.setdefault(ip, started)
                elif ip in self._quiet_since:
                    tally.silences.append(started - self._quiet_since.pop(ip))
            self._stop.wait(max(0.0, started + CHECK_EVERY - time.monotonic()))


async def _faults(record: lab.Record, minutes: float, rng: random.Random) -> dict[str, int]:
    done: dict[str, int] = dict.fromkeys(FAULTS, 0)
    async with kube_client.connect(record.kubeconfig) as client:
        faults = failover.FaultLab(record, client)
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            scenario = rng.choice(FAULTS)
            victim = rng.choice(record.plan.nodes).name
            fault = await faults.inject(scenario, victim)
            await fault.recovered()
            await asyncio.sleep(rng.uniform(*HOLD))  # the fault's duration: part of the plan
            await fault.repair()
            done[scenario] += 1
            await asyncio.sleep(rng.uniform(*SETTLE))
    return done


async def _services(record: lab.Record, count: int) -> list[arping.IPAddress]:
    async with kube_client.connect(record.kubeconfig) as client:
        ips: list[arping.IPAddress] = []
        for n in range(count):
            await cluster.create_service(client, record.plan, f"soak-{n}")
            (ip,) = await cluster.wait_ingress(client, f"soak-{n}")
            ips.append(ipaddress.IPv4Address(ip))
        return ips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--services", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", default="soak")
    args = parser.parse_args()
    record = lab.up(args.name, workers=3, ipv6=False)
    try:
        ips = asyncio.run(_services(record, args.services))
        with Checker(record.plan, ips) as checker:
            done = asyncio.run(_faults(record, args.minutes, random.Random(args.seed)))
    finally:
        lab.down(args.name)
    print(f"faults injected and repaired: {', '.join(f'{k} {v}' for k, v in done.items())}")
    print()
    print("| IP | checks | two or more answers | silences | longest silence | silences > 500 ms |")
    print("|---|---|---|---|---|---|")
    for ip, tally in checker.tallies.items():
        longest = max(tally.silences, default=0.0)
        over = sum(1 for s in tally.silences if s > TARGET)
        print(
            f"| {ip} | {tally.checks} | {tally.doubles} | {len(tally.silences)} |"
            f" {longest * 1000:.0f} ms | {over} |"
        )


if __name__ == "__main__":
    main()
