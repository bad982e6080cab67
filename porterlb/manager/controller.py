"""The manager: IP address management and placement, sharing one cache of Services."""

from __future__ import annotations

import asyncio

import lightkube

from porterlb.manager import announcing, ipam


class Manager:
    """Everything ``porterlb manager`` runs; :meth:`run` until cancelled."""

    def __init__(self, client: lightkube.AsyncClient, *, workers: int = 16) -> None:
        self.ipam = ipam.Ipam(client, workers=workers)
        self.announcing = announcing.Announcing(
            client, services=self.ipam.services, poster=self.ipam.poster, workers=workers
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.ipam.run(), name="manager/ipam")
            group.create_task(self.announcing.run(), name="manager/announcing")
