"""An IP that moves to this node is announced without a probe, whenever its event arrives.

The speaker's sync awaits (resolving a pool's interface); an IP that moved here while it
waited used to lose its "moved in" mark when that sync ended, so the next sync probed it
(+200 ms, and CONFLICT if the old node still answered). No API server and no socket: the
speaker is built on a client that is never used, and its interface lookup is paused by a
subclass (a seam, not a patch).
"""

from __future__ import annotations

import asyncio
import ipaddress

import lightkube
from lightkube.config.kubeconfig import KubeConfig

from porterlb.api import wellknown
from porterlb.api.keys import NodeName, PoolName
from porterlb.l2 import responder
from porterlb.speaker import agent, assignments

UNUSED = KubeConfig.from_dict(
    {
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "never-sent"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
)


def service(name: str, node: str, ip: str) -> dict[str, object]:
    meta = {
        "namespace": "shop",
        "name": name,
        "annotations": {wellknown.ANNOUNCED_BY: node},
        "labels": {wellknown.POOL_LABEL: "lan"},
    }
    status = {"loadBalancer": {"ingress": [{"ip": ip}]}}
    return {"metadata": meta, "spec": {"type": "LoadBalancer"}, "status": status}


class PausedSpeaker(agent.Speaker):
    """Its interface lookup waits for :attr:`go`, so a test can act while a sync awaits."""

    def __init__(self) -> None:
        super().__init__(lightkube.AsyncClient(config=UNUSED), node=NodeName("w2"))
        self.waiting = asyncio.Event()
        self.go = asyncio.Event()

    async def _interface(self, pool: PoolName) -> str | None:
        self.waiting.set()
        await self.go.wait()
        return "eth0"


def change(speaker: agent.Speaker, obj: dict[str, object]) -> None:
    key = f"shop/{obj['metadata']['name']}"  # type: ignore[index]
    speaker.services.cache[key] = assignments.kept(obj)
    speaker._service_changed(key)


async def test_an_ip_that_moves_in_while_a_sync_awaits_is_announced_without_a_probe():
    speaker = PausedSpeaker()
    change(speaker, service("web", "w2", "198.18.0.10"))
    change(speaker, service("api", "w1", "198.18.0.11"))
    syncing = asyncio.ensure_future(speaker._sync())
    await speaker.waiting.wait()
    change(speaker, service("api", "w2", "198.18.0.11"))  # moved here from w1 meanwhile
    speaker.go.set()
    await syncing
    await speaker._sync()
    moved = ipaddress.ip_address("198.18.0.11")
    assert speaker.announcer.owns(moved, "eth0") is responder.Ownership.OURS  # not probing
    fresh = ipaddress.ip_address("198.18.0.10")
    assert speaker.announcer.owns(fresh, "eth0") is responder.Ownership.NONE  # probing first


async def test_an_ip_moved_by_handshake_is_announced_without_a_probe():
    """A handshake clears the old node's record before it writes the new one (a drain, a
    node gone NotReady): the IP still comes from a peer, and a probe would only add 200 ms
    to the switch."""
    speaker = PausedSpeaker()
    speaker.go.set()
    change(speaker, service("web", "w2", "198.18.0.10"))
    change(speaker, service("api", "w1", "198.18.0.11"))
    await speaker._sync()
    cleared = service("api", "w1", "198.18.0.11")
    del cleared["metadata"]["annotations"][wellknown.ANNOUNCED_BY]  # type: ignore[index]
    change(speaker, cleared)
    await speaker._sync()
    change(speaker, service("api", "w2", "198.18.0.11"))
    await speaker._sync()
    moved = ipaddress.ip_address("198.18.0.11")
    assert speaker.announcer.owns(moved, "eth0") is responder.Ownership.OURS  # not probing
