"""Prometheus metrics of the manager: what users alert on (pools filling up, no leader,
failovers, allocations that fail), in one place (MetalLB ``stats.go``).

Pool figures are read from the allocator when Prometheus scrapes, not kept in gauges that
every allocation would have to update: :class:`Pools` is a collector over a callable that the
leading manager sets (:func:`watch_pools`). A replica that does not lead reports no pool rows,
so ``max by (pool)`` over the replicas is the leader's figure. The scrape runs on the HTTP
server's thread; it reads only ``PoolUsage`` values and a copy of the pool list, each taken
in one piece under the GIL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final

import prometheus_client
from prometheus_client import metrics_core, registry

from porterlb.api.keys import PoolName
from porterlb.ipam import allocator, selection

ALLOCATION_FAILURES: Final = prometheus_client.Counter(
    "porterlb_allocation_failures",
    "Decisions that could not give a Service the IP it asks for, by reason (pool_full,"
    " ip_in_use, no_pool, pool_missing, pool_disabled, family_mismatch, ip_outside_pool,"
    " invalid_spec).",
    ["reason"],
)
LEADER: Final = prometheus_client.Gauge(
    "porterlb_manager_leader", "1 while this manager replica leads (acts and writes), else 0."
)
LEADER_TRANSITIONS: Final = prometheus_client.Counter(
    "porterlb_leader_transitions",
    "Times this replica became the leader; summed over the replicas, the leader changes.",
)
TERMS_RESUMED: Final = prometheus_client.Counter(
    "porterlb_leader_terms_resumed",
    "Terms this replica began by retaking its own Lease (a renewal came too late, nobody held"
    " it in between): it led on with what it had decided, reloading and re-deciding nothing.",
)
FAILOVERS: Final = prometheus_client.Counter(
    "porterlb_failovers",
    "Service IPs moved off a node that may no longer announce them (speaker silent, Node not"
    " Ready, gone or excluded, pool selector changed).",
)
FAILOVER_DURATION: Final = prometheus_client.Histogram(
    "porterlb_failover_duration_seconds",
    "Seconds from the manager learning that an IP's node may no longer announce it to the new"
    " node being recorded on the Service.",
    # Around the failover budget: ~30 ms to record a move, seconds under heavy load.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
POOL_FAILURES: Final[Mapping[type[Exception], str]] = {
    allocator.PoolFull: "pool_full",
    allocator.IPInUse: "ip_in_use",
    allocator.PoolMissing: "pool_missing",
    allocator.PoolDisabled: "pool_disabled",
    allocator.FamilyMismatch: "family_mismatch",
    allocator.IPOutsidePool: "ip_outside_pool",
    selection.NoPool: "no_pool",
}
"""The ``reason`` label of each allocator error; any other InvalidSpec is ``invalid_spec``."""


def failure_reason(error: Exception) -> str:
    """The ``reason`` label for a failed allocation."""
    return POOL_FAILURES.get(type(error), "invalid_spec")


PoolReader = Callable[[], Mapping[PoolName, tuple[int, allocator.PoolUsage]]]
"""Pool -> (address family, usage) of every pool the allocator serves."""


class Pools(registry.Collector):
    """``porterlb_pool_*``: each served pool's size, used addresses and Services."""

    def __init__(self) -> None:
        self.read: PoolReader = dict
        prometheus_client.REGISTRY.register(self)

    def describe(self) -> Iterator[metrics_core.Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[metrics_core.Metric]:
        size, used, services = self._families()
        for pool, (family, usage) in self.read().items():
            labels = [pool, f"ipv{family}"]
            size.add_metric(labels, usage.size)
            used.add_metric(labels, usage.used)
            services.add_metric([pool], usage.services)
        yield from (size, used, services)

    @staticmethod
    def _families() -> tuple[metrics_core.GaugeMetricFamily, ...]:
        return (
            metrics_core.GaugeMetricFamily(
                "porterlb_pool_addresses",
                "Addresses the pool hands out (a CIDR's network and broadcast excluded).",
                labels=["pool", "family"],
            ),
            metrics_core.GaugeMetricFamily(
                "porterlb_pool_addresses_in_use",
                "Addresses of the pool held by at least one Service.",
                labels=["pool", "family"],
            ),
            metrics_core.GaugeMetricFamily(
                "porterlb_pool_services",
                "Services holding an address of the pool.",
                labels=["pool"],
            ),
        )


POOLS: Final = Pools()


def watch_pools(read: PoolReader) -> None:
    """Report the pools `read` returns at each scrape (``dict``: none, when not leading)."""
    POOLS.read = read
