"""Prometheus metrics of the speaker's own state (the layer-2 counters are in
:mod:`porterlb.l2.metrics`, the heartbeat datagrams and the fence in
:mod:`porterlb.liveness.metrics`)."""

from __future__ import annotations

from typing import Final

import prometheus_client

ANNOUNCED_IPS: Final = prometheus_client.Gauge(
    "porterlb_speaker_announced_ips",
    "Service IPs this speaker answers ARP/NDP for (0 while fenced).",
)
HEARTBEAT_AGE: Final = prometheus_client.Gauge(
    "porterlb_speaker_heartbeat_age_seconds",
    "Seconds since this speaker last answered a valid heartbeat ping from a manager (since it"
    " started, before the first).",
)
DRAINING: Final = prometheus_client.Gauge(
    "porterlb_speaker_draining",
    "1 once the speaker is shutting down (SIGTERM) and waits for its IPs to be handed over.",
)
KERNEL_ANSWERS: Final = prometheus_client.Gauge(
    "porterlb_speaker_kernel_answers",
    "porterlb Service IPs this node's kernel answers ARP/NDP for on a pool interface besides the"
    " speaker, by that interface and the one holding the IPs (kube-ipvs0: kube-proxy in IPVS"
    " mode without strictARP); 0 when fixed.",
    ["interface", "holder"],
)
