"""Prometheus counters of the layer-2 data plane, in one place (MetalLB ``stats.go``).

The three per-IP counters keep OpenELB's and MetalLB's names (``requests_received``,
``responses_sent``, ``gratuitous_sent``, one increment per packet) under a ``porterlb_l2_``
prefix, so existing dashboards map over. ``frames`` counts every received frame by verdict, so
hostile or stray input is visible (STYLE §9). The IP label is bounded by the number of
assigned addresses.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Final

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


# The per-frame path asks for the same label children again and again; ``labels()`` costs
# several microseconds each (a lock, a tuple, a dict lookup, and ``str(ip)`` for the key),
# a quarter of an ARP answer's CPU. The children live as long as the metric anyway.


@functools.cache
def frames(ifname: str, verdict: str) -> Any:
    """The ``FRAMES`` child for one interface and verdict (a handful per interface)."""
    return FRAMES.labels(ifname, verdict)


@functools.lru_cache(maxsize=65_536)
def answering(packed: bytes) -> tuple[Any, Any]:
    """The ``REQUESTS_RECEIVED`` and ``RESPONSES_SENT`` children of the IP ``packed``.

    Keyed by the packed address, which the responder's fast path has at hand and which
    hashes in C (an ``ipaddress`` object hashes ``hex()`` of itself, in Python, every time).
    """
    label = str(ipaddress.ip_address(packed))
    return REQUESTS_RECEIVED.labels(label), RESPONSES_SENT.labels(label)
