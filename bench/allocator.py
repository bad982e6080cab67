"""Allocator throughput and memory: a million allocations, then their releases, per pool.

Run ``uv run python -m bench.allocator`` (``--ops N`` for another count). Each row runs in a
fresh interpreter (``spawn``) so that its peak-RSS growth belongs to it alone; the keys are
built before the baseline is taken, so the figure is the allocator's own state. Allocation
always takes the lowest free address, so it fills one run; the release order is either
ascending (the run shrinks from its start) or shuffled with a fixed seed, which splits the
run into up to half a million pieces midway: the worst case for ``pool.UsedAddresses``.

The /8 is 10.0.0.0/8: no namespace or packet is involved, and no documentation range is
that large.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import random
import resource
import time
from dataclasses import dataclass

from porterlb.api import address
from porterlb.api.keys import PoolName, ServiceKey, Slot
from porterlb.ipam import allocator, pool

ROWS = (
    ("10.0.0.0/8", "ascending"),
    ("10.0.0.0/8", "shuffled"),
    ("2001:db8::/64", "ascending"),
    ("2001:db8::/64", "shuffled"),
)
SEED = 2
"""Any fixed seed: the shuffle only has to be the same on every run."""


@dataclass(frozen=True, slots=True)
class Result:
    cidr: str
    order: str
    ops: int
    allocate_per_s: float
    release_per_s: float
    peak_rss_mib: float


def run(cidr: str, order: str, ops: int) -> Result:
    """Allocate `ops` addresses in `cidr`, then release them in `order`; time both."""
    name = PoolName("bench")
    state = allocator.Allocator()
    state.set_pools([pool.Pool(name, address.parse(cidr))])
    family = address.parse(cidr).family
    keys = [Slot(ServiceKey(f"bench/svc-{i}"), family) for i in range(ops)]
    releases = list(keys)
    if order == "shuffled":
        random.Random(SEED).shuffle(releases)
    request = allocator.Request(name)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for key in keys:
        state.assign(key, request)
    allocated = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for key in releases:
        state.release(key)
    released = time.perf_counter()
    if state.usage(name).used != 0:
        raise AssertionError("the bench left addresses in use")
    return Result(
        cidr=cidr,
        order=order,
        ops=ops,
        allocate_per_s=ops / (allocated - started),
        release_per_s=ops / (released - allocated),
        peak_rss_mib=(peak - baseline) / 1024,  # ru_maxrss is in KiB on Linux
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1_000_000)
    ops: int = parser.parse_args().ops
    print(f"{'pool':<16}{'release':<11}{'ops':>10}{'alloc/s':>12}{'release/s':>12}{'RSS MiB':>10}")
    context = multiprocessing.get_context("spawn")
    for cidr, order in ROWS:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as fresh:
            result = fresh.submit(run, cidr, order, ops).result()
        print(
            f"{result.cidr:<16}{result.order:<11}{result.ops:>10,}"
            f"{result.allocate_per_s:>12,.0f}{result.release_per_s:>12,.0f}"
            f"{result.peak_rss_mib:>10.0f}"
        )


if __name__ == "__main__":
    main()
