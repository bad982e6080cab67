"""Benchmark: what one look of the speaker at its own kernel costs (``speaker.kernelarp``).

    .venv/bin/python -m bench.kernel_check [--sizes 0,1000,10000] [--repeat 5]

Needs root (a network namespace). In a throwaway namespace, ``kube-ipvs0`` (a dummy link, or
an IFB one where the kernel has no dummy type) holds N Service IPs of a pool and N other
addresses (ClusterIPs, as kube-proxy's IPVS mode adds them too), all in 198.18.0.0/15, and
``eth0`` (one end of a veth pair) is the pool's interface with ``arp_ignore`` 0. Each row is
the look the speaker runs every 10 s: a raw netlink dump of every link and address
(:mod:`porterlb.l2.addresses`; pyroute2 took 1.2 s of CPU for 10,000 addresses), the
``arp_ignore`` reads, and :func:`porterlb.l2.strictarp.find`, with every pool IP assigned.

Columns: addresses on kube-ipvs0; IPs the look found (all the pool's); the median and the
largest wall time of ``--repeat`` looks; the CPU the looks took, per look (this process).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import statistics
import time

from bench import _lab
from porterlb.kube import events
from porterlb.l2 import strictarp
from porterlb.lab import netns
from porterlb.speaker import kernelarp

POOL_FIRST = ipaddress.IPv4Address("198.18.64.0")
OTHER_FIRST = ipaddress.IPv4Address("198.19.64.0")
"""Service IPs from here, other addresses from 198.19.64.0: at most 16,384 each."""
MAX_SIZE = 16_384
HEADER = ("addresses", "found", "median ms", "max ms", "CPU ms/look")


def _populate(namespace: str, size: int) -> None:
    try:
        netns.run(namespace, ["ip", "link", "add", "kube-ipvs0", "type", "dummy"])
    except netns.LabError:
        netns.run(namespace, ["ip", "link", "add", "kube-ipvs0", "type", "ifb"])
    netns.run(namespace, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
    netns.run(namespace, ["ip", "link", "set", "eth0", "up"])
    netns.write_sysctls(namespace, {"net.ipv4.conf.all.arp_ignore": 0})
    lines = [f"address add {POOL_FIRST + n}/32 dev kube-ipvs0" for n in range(size)]
    lines += [f"address add {OTHER_FIRST + n}/32 dev kube-ipvs0" for n in range(size)]
    if lines:
        netns.run(namespace, ["ip", "-batch", "-"], input="\n".join(lines) + "\n")


async def _row(namespace: str, size: int, repeat: int) -> tuple[object, ...]:
    check = kernelarp.Check(
        node="bench",
        netns=namespace,
        poster=events.Poster(None, component="bench"),  # type: ignore[arg-type]  # never posts
        pools=lambda: [strictarp.Pool(POOL_FIRST, POOL_FIRST + MAX_SIZE - 1, "eth0")],
        assigned=lambda ip: True,
    )
    walls = []
    found: frozenset[strictarp.Finding] = frozenset()
    cpu = time.process_time()
    for _ in range(repeat):
        start = time.perf_counter()
        found, _ = await check.look()
        walls.append((time.perf_counter() - start) * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000 / repeat
    return (2 * size, len(found), statistics.median(walls), max(walls), cpu_ms)


def _bench(args: argparse.Namespace) -> None:
    rows = []
    for size in (min(int(text), MAX_SIZE) for text in args.sizes.split(",")):
        with netns.scratch(f"plbx-kcheck-{os.getpid()}") as namespace:
            _populate(namespace, size)
            rows.append(asyncio.run(_row(namespace, size, args.repeat)))
        print(_lab.table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(_lab.table(HEADER, rows))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,100,1000,10000", help="Service IPs per row")
    parser.add_argument("--repeat", type=int, default=5, help="looks per row")
    _lab.run(lambda: _bench(parser.parse_args()))


if __name__ == "__main__":
    main()
