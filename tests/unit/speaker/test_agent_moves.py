"""An IP that moves to this node is announced without a probe, whenever its event arrives;
an IP new to the cluster is probed first.

The speaker's sync awaits (resolving a pool's interface); an IP that moved here while it
waited must not be probed by the next sync (+200 ms, and CONFLICT if the old node still
answered). No API server and no socket: the speaker is built on a client that is never used,
and its interface lookup is paused by a subclass (a seam, not a patch).
"""

from __future__ import annotations

import asyncio
import ipaddress

import lightkube
from lightkube.config.kubeconfig import KubeConfig

from porterlb.api.keys import NodeName, PoolName, ServiceKey
from porterlb.l2 import responder
from porterlb.placement import records
from porterlb.speaker import agent, assignments

UNUSED = KubeConfig.from_dict(
    {
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "never-sent"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
)


def entry(ip: str, *, probe: bool = False, pool: str = "lan") -> dict[str, object]:
    """One IP of a placement record as the API sends it."""
    item: dict[str, object] = {"ip": ip, "pool": pool, "services": [f"shop/{ip}"]}
    if probe:
        item["probe"] = True
    return item


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


def change(speaker: agent.Speaker, *ips: dict[str, object], version: int = 1) -> None:
    """This node's record now lists `ips` (written at `version`)."""
    node = speaker.node
    meta = {"name": node, "resourceVersion": str(version)}
    speaker.record.cache[node] = assignments.slim({"metadata": meta, "spec": {"ips": list(ips)}})
    speaker.record.revision = max(speaker.record.revision, version)  # as its watch keeps it
    speaker._record_changed(node)


async def test_an_ip_that_moves_in_while_a_sync_awaits_is_announced_without_a_probe():
    speaker = PausedSpeaker()
    new = entry("198.18.0.10", probe=True)
    change(speaker, new)
    syncing = asyncio.ensure_future(speaker._sync())
    await speaker.waiting.wait()
    change(speaker, new, entry("198.18.0.11"), version=2)  # moved here from w1 meanwhile
    speaker.go.set()
    await syncing
    await speaker._sync()
    moved = ipaddress.ip_address("198.18.0.11")
    assert speaker.announcer.owns(moved, "eth0") is responder.Ownership.OURS  # not probing
    fresh = ipaddress.ip_address("198.18.0.10")
    assert speaker.announcer.owns(fresh, "eth0") is responder.Ownership.NONE  # probing first


async def test_the_revision_that_takes_an_ip_away_is_the_one_to_echo():
    """A draining speaker stays until the leader has its echo of the record's revision that
    took its last IP; a write that only adds or keeps IPs is no revocation."""
    speaker = PausedSpeaker()
    speaker.go.set()
    change(speaker, entry("198.18.0.10"), entry("198.18.0.11"), version=5)
    change(speaker, entry("198.18.0.10"), entry("198.18.0.11"), entry("198.18.0.12"), version=7)
    assert speaker.revoked == 0
    change(speaker, entry("198.18.0.12"), version=9)
    await speaker._sync()
    assert speaker.revoked == 9
    assert speaker.applied >= 9
    assert set(map(str, speaker.mine)) == {"198.18.0.12"}


def test_a_record_that_does_not_parse_assigns_only_its_readable_ips():
    speaker = PausedSpeaker()
    change(speaker, entry("198.18.0.10"), entry("not-an-ip"), {"ip": "198.18.0.12"})
    assert speaker.mine == {
        ipaddress.ip_address("198.18.0.10"): records.Entry(
            PoolName("lan"), (ServiceKey("shop/198.18.0.10"),)
        )
    }
