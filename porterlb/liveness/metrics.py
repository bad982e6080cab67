"""Prometheus metrics of the heartbeats: every datagram by verdict, and the silent nodes.

Received datagrams are counted per batch (:class:`Tally`): an ``inc`` takes a lock and a
label lookup, about a microsecond, which a flood of forged datagrams would pay 100,000 times
a second.
"""

from __future__ import annotations

import collections
from typing import Final

import prometheus_client

PINGS_SENT: Final = prometheus_client.Counter(
    "porterlb_heartbeat_pings_sent", "Heartbeat pings sent to speakers."
)
RECEIVED: Final = prometheus_client.Counter(
    "porterlb_heartbeat_received",
    "Heartbeat datagrams received, by what became of them (malformed, bad_signature, shed,"
    " unknown_sender and wrong_node included: forged or stray traffic on the heartbeat port"
    " shows here).",
    ["role", "verdict"],
)
SEND_FAILURES: Final = prometheus_client.Counter(
    "porterlb_heartbeat_send_failures",
    "Heartbeat datagrams (pings, pongs) the kernel refused to send, by errno name (EPERM: a"
    " firewall; ENOBUFS, EAGAIN: a full queue).",
    ["role", "errno"],
)
SILENT_NODES: Final = prometheus_client.Gauge(
    "porterlb_heartbeat_silent_nodes",
    "Nodes whose speaker missed the last heartbeats, as this manager sees them.",
)
FAILOVER_SUSPENDED: Final = prometheus_client.Gauge(
    "porterlb_heartbeat_failover_suspended",
    "1 while no speaker answers this manager at all: it suspects its own network and moves"
    " no IP for silence (failover is off cluster-wide if this manager leads).",
)
STALE_NODES: Final = prometheus_client.Gauge(
    "porterlb_heartbeat_stale_nodes",
    "Nodes whose speaker says its Services watch lags the leader's latest revocation.",
)
DRAINING_NODES: Final = prometheus_client.Gauge(
    "porterlb_heartbeat_draining_nodes",
    "Nodes whose speaker says it is shutting down: their IPs are being handed over.",
)
FENCED: Final = prometheus_client.Gauge(
    "porterlb_speaker_fenced",
    "1 while the speaker answers no ARP/NDP: no acknowledged pong within its lease and no"
    " proof that no manager leads, or its Services watch lags the must-see revision.",
)


class Tally:
    """Verdicts of received datagrams, added to :data:`RECEIVED` by :meth:`flush`."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, verdict: str) -> None:
        self.counts[verdict] += 1

    def flush(self) -> None:
        for verdict, count in self.counts.items():
            RECEIVED.labels(self.role, verdict).inc(count)
        self.counts.clear()
