"""Metrics of porterlb's use of the Kubernetes API: what it costs the API server, what fails,
and whether each cache is current."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

API_REQUESTS: Final = Counter(
    "porterlb_api_requests",
    "Requests sent to the Kubernetes API server, by verb and resource.",
    ["verb", "resource"],
)
API_REQUEST_ERRORS: Final = Counter(
    "porterlb_api_request_errors",
    "Requests to the Kubernetes API server that failed, by verb, resource and HTTP status code"
    " (``transport`` when no answer came: refused, reset, timed out).",
    ["verb", "resource", "code"],
)
EVENTS_DROPPED: Final = Counter(
    "porterlb_events_dropped",
    "Events not posted because the queue of Events to post was full.",
)
EVENTS_WITHDRAWN: Final = Counter(
    "porterlb_events_withdrawn",
    "Held Events (news of a usually brief state) never posted: a later notice on the same"
    " object and topic said what replaced it before the hold ended.",
)
EVENTS_HELD: Final = Gauge(
    "porterlb_events_held",
    "Events held now: news of a usually brief state, posted only if it still stands when its"
    " hold ends.",
)
EVENTS_QUEUED: Final = Gauge(
    "porterlb_events_queued",
    "Events waiting to be posted: one poster posts them in order, so under a burst of Services"
    " they lag behind the writes they tell of.",
)
WATCH_SYNCED: Final = Gauge(
    "porterlb_watch_synced",
    "1 once the cache of the resource has been listed completely at least once.",
    ["resource"],
)
WATCH_ESTABLISHED: Final = Gauge(
    "porterlb_watch_established",
    "1 while a watch stream of the resource is open, 0 between a failure and the next one.",
    ["resource"],
)
