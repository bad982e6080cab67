"""Prometheus metrics of the heartbeats: every datagram by verdict, and the silent nodes."""

from __future__ import annotations

from typing import Final

import prometheus_client

PINGS_SENT: Final = prometheus_client.Counter(
    "porterlb_heartbeat_pings_sent", "Heartbeat pings sent to speakers."
)
RECEIVED: Final = prometheus_client.Counter(
    "porterlb_heartbeat_received",
    "Heartbeat datagrams received, by what became of them (malformed and bad_signature"
    " included: forged or stray traffic on the heartbeat port shows here).",
    ["role", "verdict"],
)
SILENT_NODES: Final = prometheus_client.Gauge(
    "porterlb_heartbeat_silent_nodes",
    "Nodes whose speaker missed the last heartbeats, as this manager sees them.",
)
FENCED: Final = prometheus_client.Gauge(
    "porterlb_speaker_fenced",
    "1 while the speaker has stopped answering because it heard neither the API nor a manager.",
)
