"""Metrics of porterlb's use of the Kubernetes API: what it costs the API server."""

from __future__ import annotations

from prometheus_client import Counter

API_REQUESTS = Counter(
    "porterlb_api_requests",
    "Requests sent to the Kubernetes API server, by verb and resource.",
    ["verb", "resource"],
)
