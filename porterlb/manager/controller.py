"""The manager: IP address management and placement, sharing one cache of Services.

Every replica watches all the time; only the one holding the Lease decides and writes
(:mod:`porterlb.kube.election`). Without an elector the manager leads unconditionally.
"""

from __future__ import annotations

import asyncio

import lightkube

from porterlb.kube import election
from porterlb.manager import announcing, ipam


class Manager:
    """Everything ``porterlb manager`` runs; :meth:`run` until cancelled."""

    def __init__(
        self,
        client: lightkube.AsyncClient,
        *,
        workers: int = 16,
        elector: election.Elector | None = None,
    ) -> None:
        self.elector = elector
        self.ipam = ipam.Ipam(client, workers=workers)
        self.announcing = announcing.Announcing(
            client,
            services=self.ipam.services,
            eips=self.ipam.eips,
            poster=self.ipam.poster,
            workers=workers,
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.ipam.watch(), name="manager/ipam/watch")
            group.create_task(self.announcing.watch(), name="manager/announcing/watch")
            if self.elector is None:
                group.create_task(self._lead(), name="manager/lead")
            else:
                group.create_task(self.elector.run(self._lead), name="manager/election")

    async def _lead(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.ipam.lead(), name="manager/ipam/lead")
            group.create_task(self.announcing.lead(), name="manager/announcing/lead")
