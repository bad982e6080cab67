"""Metrics of porterlb's use of the Kubernetes API: what it costs the API server."""

from __future__ import annotations

from prometheus_client import Counter

API_REQUESTS = Counter(
    "porterlb_api_requests",
    "Requests sent to the Kubernetes API server, by verb and resource.",
    ["verb", "resource"],
)
EVENTS_DROPPED = Counter(
    "porterlb_events_dropped",
    "Events not posted because the queue of Events to post was full.",
)
