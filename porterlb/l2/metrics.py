"""Prometheus counters of the layer-2 data plane, in one place (MetalLB ``stats.go``).

The three per-IP counters keep OpenELB's and MetalLB's names (``requests_received``,
``responses_sent``, ``gratuitous_sent``, one increment per packet) under a ``porterlb_l2_``
prefix, so existing dashboards map over. ``frames`` counts every received frame by verdict, so
hostile or stray input is visible (STYLE §9). The IP label is bounded by the number of
assigned addresses.
"""

from __future__ import annotations

from typing import Final

import prometheus_client

REQUESTS_RECEIVED: Final = prometheus_client.Counter(
    "porterlb_l2_requests_received",
    "ARP requests and neighbour solicitations received for an announced IP.",
    ["ip"],
)
RESPONSES_SENT: Final = prometheus_client.Counter(
    "porterlb_l2_responses_sent",
    "ARP replies and neighbour advertisements sent in answer to a request.",
    ["ip"],
)
GRATUITOUS_SENT: Final = prometheus_client.Counter(
    "porterlb_l2_gratuitous_sent",
    "Gratuitous ARP frames and unsolicited neighbour advertisements sent.",
    ["ip"],
)
FRAMES: Final = prometheus_client.Counter(
    "porterlb_l2_frames",
    "Frames received, by the responder's verdict.",
    ["interface", "verdict"],
)
CONFLICTS: Final = prometheus_client.Counter(
    "porterlb_l2_conflicts",
    "Another MAC answered a probe for, or claimed, an IP porterlb announces.",
    ["ip", "interface"],
)
SOCKET_ERRORS: Final = prometheus_client.Counter(
    "porterlb_l2_socket_errors",
    "Failures to open, read, write or join a group on a packet socket.",
    ["interface"],
)
