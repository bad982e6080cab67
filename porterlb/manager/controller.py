"""The manager: IP address management and placement, sharing one cache of Services.

Every replica watches all the time; only the one holding the Lease decides and writes
(:mod:`porterlb.kube.election`). Without an elector the manager leads unconditionally.
Every replica also pings the speakers (:mod:`porterlb.manager.liveness`), so a new leader
starts knowing which of them answer; without heartbeat settings every speaker counts as alive.
"""

from __future__ import annotations

import asyncio

import lightkube

from porterlb.api.keys import NodeName
from porterlb.kube import election, events, peers, secrets
from porterlb.manager import announcing, ipam, liveness


class Manager:
    """Everything ``porterlb manager`` runs; :meth:`run` until cancelled."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        *,
        workers: int = 16,
        elector: election.Elector | None = None,
        heartbeat: liveness.Settings | None = None,
    ) -> None:
        self.client = client
        self.elector = elector
        self.heartbeat = heartbeat
        self.pinger: liveness.Liveness | None = None
        self.ipam = ipam.Ipam(client, workers=workers)
        self.announcing = announcing.Announcing(
            client,
            services=self.ipam.services,
            eips=self.ipam.eips,
            poster=self.ipam.poster,
            workers=workers,
            # A leader that won a Lease waits until speakers answering for want of a leader
            # have seen it (docs/fencing.md); without an elector there is no Lease to see.
            settle=announcing.TAKEOVER_SETTLE if elector is not None else 0.0,
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.ipam.watch(), name="manager/ipam/watch")
            group.create_task(self.announcing.watch(), name="manager/announcing/watch")
            if self.heartbeat is not None:
                group.create_task(self._ping(self.heartbeat), name="manager/liveness")
            if self.elector is None:
                group.create_task(self._lead(), name="manager/lead")
            else:
                group.create_task(self.elector.run(self._lead), name="manager/election")

    async def _lead(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.ipam.lead(), name="manager/ipam/lead")
            group.create_task(self.announcing.lead(), name="manager/announcing/lead")
            if self.heartbeat is not None:
                group.create_task(
                    peers.publish(
                        self.client, namespace=self.heartbeat.secret_namespace, macs=self._macs
                    ),
                    name="manager/peers",
                )

    def _macs(self) -> dict[NodeName, frozenset[bytes]] | None:
        """The speakers' MACs as their pongs say (None until this replica pings)."""
        return dict(self.pinger.tracker.macs) if self.pinger is not None else None

    async def _ping(self, settings: liveness.Settings) -> None:
        key = await secrets.heartbeat_key(
            self.client,
            namespace=settings.secret_namespace,
            name=settings.secret_name,
            create=True,
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
        await pinger.run()
