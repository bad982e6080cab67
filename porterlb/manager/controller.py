"""The manager: IP address management and placement, sharing one cache of Services.

Every replica watches all the time; only the one holding the Lease decides and writes
(:mod:`porterlb.kube.election`). Without an elector the manager leads unconditionally.
Every replica also pings the speakers (:mod:`porterlb.manager.liveness`), so a new leader
starts knowing which of them answer; without heartbeat settings every speaker counts as alive.

A term that ends leaves IPAM's and placement's state loaded but idle: their queues stop, so
nothing is written, while the watches keep queueing what changes. A term that resumes (the
replica retook its own Lease: :class:`porterlb.kube.election.Term`) runs the queues again
from there, with no reload and no takeover settle unless the Lease lapsed; any other term
starts afresh from the API, and so does nothing of the kept state outlive another replica's
term (:meth:`Manager._superseded`).
"""

from __future__ import annotations

import asyncio

import lightkube

from porterlb import health
from porterlb.api import wellknown
from porterlb.api.keys import NodeName
from porterlb.kube import election, events, peers, secrets
from porterlb.manager import announcing, ipam, liveness, metrics


class Manager:
    """Everything ``porterlb manager`` runs; :meth:`run` until cancelled."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        *,
        lb_class: str = wellknown.LOAD_BALANCER_CLASS,
        workers: int = 16,
        elector: election.Elector | None = None,
        heartbeat: liveness.Settings | None = None,
        create_secret: bool = True,
    ) -> None:
        self.client = client
        self.elector = elector
        self.heartbeat = heartbeat
        self.create_secret = create_secret
        self.pinger: liveness.Liveness | None = None
        self.ipam = ipam.Ipam(client, lb_class=lb_class, workers=workers)
        self.announcing = announcing.Announcing(
            client,
            services=self.ipam.services,
            eips=self.ipam.eips,
            poster=self.ipam.poster,
            lb_class=lb_class,
        )
        if elector is not None:
            elector.on_superseded = self._superseded

    def beats(self) -> list[health.Beat]:
        """No thread of its own: the event loop's beat, kept by the health server, is all."""
        return []

    def conditions(self) -> list[tuple[str, bool]]:
        """Ready once every watch cache has synced (a replica that is not the leader too)."""
        sources = (
            self.ipam.services,
            self.ipam.eips,
            self.ipam.namespaces,
            self.announcing.nodes,
            self.announcing.slices,
        )
        return [(f"{source.name} synced", source.synced.is_set()) for source in sources]

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.ipam.watch(), name="manager/ipam/watch")
            group.create_task(self.announcing.watch(), name="manager/announcing/watch")
            if self.heartbeat is not None:
                group.create_task(self._ping(self.heartbeat), name="manager/liveness")
            if self.elector is None:
                group.create_task(self._lead(election.UNELECTED), name="manager/lead")
            else:
                group.create_task(self.elector.run(self._lead), name="manager/election")

    async def _lead(self, term: election.Term) -> None:
        metrics.LEADER.set(1)
        metrics.LEADER_TRANSITIONS.inc()
        if term.resumed:
            metrics.TERMS_RESUMED.inc()
        # A leader that won a Lease waits until speakers answering for want of a leader have
        # seen it (docs/fencing.md); none can be when it retook its own before it lapsed.
        settle = announcing.TAKEOVER_SETTLE if term.lapsed else 0.0
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.ipam.lead(resume=term.resumed), name="manager/ipam/lead")
                group.create_task(
                    self.announcing.lead(resume=term.resumed, settle=settle),
                    name="manager/announcing/lead",
                )
                if self.heartbeat is not None:
                    group.create_task(
                        peers.publish(
                            self.client,
                            namespace=self.heartbeat.secret_namespace,
                            macs=self._macs,
                        ),
                        name="manager/peers",
                    )
        finally:
            metrics.LEADER.set(0)

    def _superseded(self) -> None:
        """Another replica may have led since this one did: its next term loads afresh, and
        until then nothing of the kept state follows the watches."""
        self.ipam.unload()
        self.announcing.unload()

    def _macs(self) -> dict[NodeName, frozenset[bytes]] | None:
        """The speakers' MACs as their pongs say (None until this replica pings)."""
        return dict(self.pinger.tracker.macs) if self.pinger is not None else None

    async def _ping(self, settings: liveness.Settings) -> None:
        key = await secrets.heartbeat_key(
            self.client,
            namespace=settings.secret_namespace,
            name=settings.secret_name,
            create=self.create_secret,
        )
        subject = None
        if self.elector is not None:
            subject = events.Subject(
                kind="Lease",
                api_version="coordination.k8s.io/v1",
                name=self.elector.name,
                namespace=self.elector.namespace,
            )
        self.pinger = pinger = liveness.Liveness(
            nodes=self.announcing.nodes,
            key=key,
            settings=settings,
            poster=self.ipam.poster,
            subject=subject,
        )
        self.announcing.follow(pinger)
        async with asyncio.TaskGroup() as group:
            group.create_task(pinger.run(), name="manager/liveness/ping")
            group.create_task(
                secrets.follow(
                    self.client,
                    namespace=settings.secret_namespace,
                    name=settings.secret_name,
                    on_key=pinger.rekey,
                ),
                name="manager/liveness/key",
            )
