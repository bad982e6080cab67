"""The speaker's heartbeat endpoint: answers the managers' signed pings, feeds the fence.

Every manager replica pings every speaker (:mod:`porterlb.manager.liveness`); the speaker
answers each ping :class:`porterlb.liveness.guard.PingGuard` accepts with a signed pong and
counts it as a sign of life for its :class:`~porterlb.liveness.guard.Fence`. Anything else
that reaches the port (forged, stale, replayed, garbage) is counted by verdict and dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from porterlb.kube import secrets
from porterlb.liveness import guard, metrics, udp, wire


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Where the key is, which port to answer on, and the fence time."""

    secret_namespace: str
    secret_name: str = secrets.DEFAULT_NAME
    port: int = udp.DEFAULT_PORT
    address: str | None = None
    """The address to answer on; None: every address of the node."""
    fence_after: float = guard.DEFAULT_FENCE_AFTER


class Heartbeats:
    """Answers pings on the heartbeat port until cancelled; :meth:`run`."""

    def __init__(
        self,
        *,
        node: str,
        key: bytes,
        fence: guard.Fence,
        port: int = udp.DEFAULT_PORT,
        address: str | None = None,
        netns: str | None = None,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.key = key
        self.fence = fence
        self.port = port
        self.address = address
        self.netns = netns
        self.guard = guard.PingGuard(node=node)
        self.wall_clock_ns = wall_clock_ns
        """Pings carry the pinger's wall-clock send time; only a wall clock can judge it."""
        self._transport: asyncio.DatagramTransport | None = None

    async def run(self) -> None:
        self._transport = await udp.open_endpoint(
            port=self.port, host=self.address, netns=self.netns, on_datagram=self._received
        )
        try:
            await asyncio.Future()  # serve until cancelled
        finally:
            self._transport.close()

    def _received(self, data: bytes, sender: Any) -> None:
        ping = udp.decode(data, self.key, role="speaker", sender=sender)
        if ping is None:
            return
        verdict = self.guard.check(ping, self.wall_clock_ns())
        metrics.RECEIVED.labels("speaker", verdict.value).inc()
        if verdict is guard.Verdict.ANSWERED and self._transport is not None:
            self._transport.sendto(wire.encode(ping.answer(), self.key), sender)
            self.fence.sign_of_life(asyncio.get_running_loop().time())
