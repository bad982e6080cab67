"""Kubernetes Events, posted by one task so that no decision ever waits on the API.

Callers :meth:`Poster.emit` (never blocks); the poster drains the queue in order. When the
queue is full the event is dropped and counted (``porterlb_events_dropped_total``, and one log
line as dropping starts and one as it ends, not one per Event: 10,000 Services arriving at
once overflowed it with 7,462 lines): an Event is a notice, the condition or status carries
the truth. Messages are cut to the API's 1 KiB note limit.

A notice may be *held* (:meth:`Poster.emit` with ``hold``): news of a state that is usually
brief, posted only if it still stands when the hold ends. Any later notice on the same subject
and topic withdraws it: the state it told of is over, and the later notice says what replaced
it. A Service created with its Deployment gets its IP before its pods are ready; telling of
that moment cost every such Service a Warning that was over seconds later, and the API server
an Event (about 1 ms of its CPU each, bench.control_plane).
Events are posted as raw JSON by :func:`porterlb.kube.client.send`: no model is built for a
request or its reply.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
import lightkube
import msgspec

from porterlb.api import service as svc
from porterlb.kube import client as kube_client
from porterlb.kube import metrics, resources

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
MESSAGE_LIMIT = 1024
"""events.k8s.io caps ``note`` at 1 KiB; core/v1 accepts more, but kubectl shows one line."""

CLUSTER_EVENTS_NAMESPACE = "default"
"""Where Events about cluster-scoped objects (Eips, Nodes) go. Not the pod's namespace:
kube-apiserver refuses an Event whose involved object has no namespace unless the Event is in
``default`` (core/v1; ``kube-system`` too for events.k8s.io), with 422 "does not match
event.namespace" (``pkg/apis/core/validation/events.go``). ``kubectl describe`` finds them."""


@dataclass(frozen=True, slots=True)
class Subject:
    """The object an Event is about."""

    kind: str
    api_version: str
    name: str
    namespace: str | None = None
    uid: str | None = None

    @classmethod
    def service(cls, service: svc.Service) -> Subject:
        return cls(
            kind="Service",
            api_version="v1",
            name=service.name,
            namespace=service.namespace,
            uid=service.uid,
        )

    @classmethod
    def eip(cls, name: str, uid: str) -> Subject:
        return cls(kind="Eip", api_version="network.kubesphere.io/v1alpha2", name=name, uid=uid)

    @classmethod
    def node(cls, name: str) -> Subject:
        """A Node, by name only: the speaker reads no Node (``kubectl describe node`` matches
        Events by name)."""
        return cls(kind="Node", api_version="v1", name=name)


@dataclass(frozen=True, slots=True)
class Notice:
    subject: Subject
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    topic: str = ""
    """What the news is about (placement, allocation): a later notice on the same subject and
    topic withdraws a held one."""


class Poster:
    """A queue of Events and the task that posts them."""

    def __init__(self, client: lightkube.AsyncClient, *, component: str) -> None:
        self.client = client
        self.component = component
        self.queue: asyncio.Queue[Notice] = asyncio.Queue(QUEUE_SIZE)
        self._dropping = 0
        """Events dropped since the queue was last found with room."""
        self._held: dict[tuple[Subject, str], asyncio.TimerHandle] = {}
        """(subject, topic) -> the timer that queues its held notice."""
        metrics.EVENTS_QUEUED.set_function(self.queue.qsize)
        metrics.EVENTS_HELD.set_function(self._held.__len__)

    def emit(self, notice: Notice, *, hold: float = 0.0) -> None:
        """Queue `notice`; returns at once, dropping it if the queue is full.

        With `hold` (seconds), queue it only then, unless a later notice on the same subject
        and topic withdraws it first. Every notice withdraws the one held on its subject and
        topic.
        """
        key = (notice.subject, notice.topic)
        held = self._held.pop(key, None)
        if held is not None:
            held.cancel()
            metrics.EVENTS_WITHDRAWN.inc()
        if hold > 0:
            loop = asyncio.get_running_loop()
            self._held[key] = loop.call_later(hold, self._release, key, notice)
            return
        self._queue(notice)

    def _release(self, key: tuple[Subject, str], notice: Notice) -> None:
        """The hold of `notice` ended with nothing withdrawing it: it goes out."""
        del self._held[key]
        self._queue(notice)

    def _queue(self, notice: Notice) -> None:
        try:
            self.queue.put_nowait(notice)
        except asyncio.QueueFull:
            if not self._dropping:
                log.warning(
                    "event queue full (%d waiting): dropping Events until it has room, from %s %s",
                    QUEUE_SIZE,
                    notice.reason,
                    notice.message,
                )
            self._dropping += 1
            metrics.EVENTS_DROPPED.inc()
            return
        if self._dropping:
            log.warning("event queue has room again: %d Events were dropped", self._dropping)
            self._dropping = 0

    async def run(self) -> None:
        """Post queued Events forever; an API failure loses that one Event, logged."""
        while True:
            notice = await self.queue.get()
            metrics.API_REQUESTS.labels("create", "event").inc()
            event = self._event(notice)
            path = kube_client.path(resources.Event, namespace=event["metadata"]["namespace"])
            try:
                reply = await kube_client.send(
                    self.client, "POST", path, "", msgspec.json.encode(event), kube_client.JSON
                )
            except httpx2.TransportError as error:
                log.warning("could not post event %s: %r", notice.reason, error)
                continue
            if reply.status_code >= 300:
                log.warning(
                    "could not post event %s: %s %s",
                    notice.reason,
                    reply.status_code,
                    reply.text[:200],
                )

    def _event(self, notice: Notice) -> dict[str, Any]:
        """The core/v1 Event for `notice`, as the API takes it."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        subject = notice.subject
        namespace = subject.namespace or CLUSTER_EVENTS_NAMESPACE
        involved = {"kind": subject.kind, "apiVersion": subject.api_version, "name": subject.name}
        if subject.namespace is not None:
            involved["namespace"] = subject.namespace
        if subject.uid is not None:
            involved["uid"] = subject.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{subject.name}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": involved,
            "type": notice.type,
            "reason": notice.reason,
            "message": notice.message[:MESSAGE_LIMIT],
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
