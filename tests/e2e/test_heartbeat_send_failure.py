"""A pong the kernel refuses to send is counted and logged once, and the speaker's heartbeat
endpoint goes on answering: a real nftables rule drops its pongs in a namespace of our own,
so ``sendto`` fails with EPERM as it does under a host firewall. Needs root.

A bare module in a namespace of its own, no lab: the heartbeat endpoint runs in the test's
process so that its counter and its log line can be read there; a cluster adds nothing to
what a refused ``sendto`` does (the real-node lab's pong cuts are ``test_real_faults``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import REGISTRY

from porterlb.lab import netns
from porterlb.liveness import guard, udp, wire
from porterlb.speaker import heartbeats
from tests.e2e import marks
from tests.waiting import eventually

pytestmark = marks.e2e("ip", "nft")

KEY = bytes(range(32))
NODE = "w1"
LOOPBACK = "127.0.0.1"
TABLE = "plb_test_heartbeat"
DROP_PONGS = f"""table inet {TABLE} {{
    chain out {{
        type filter hook output priority 0; policy accept;
        udp sport {udp.DEFAULT_PORT} drop
    }}
}}
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    with netns.scratch(f"plbx-hbsend-{os.getpid()}") as name:
        yield name


@pytest.fixture
async def endpoint(namespace: str) -> AsyncIterator[asyncio.Task[None]]:
    answering = heartbeats.Heartbeats(
        node=NODE,
        key=KEY,
        lease=guard.Lease(session=os.urandom(8)),
        addresses=(LOOPBACK,),
        netns=namespace,
    )
    task = asyncio.create_task(answering.run(), name="test/heartbeats")
    yield task
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def failures(name: str) -> float:
    labels = {"role": "speaker", "errno": name}
    return REGISTRY.get_sample_value("porterlb_heartbeat_send_failures_total", labels) or 0.0


async def test_a_refused_pong_is_counted_logged_once_and_the_next_one_goes(
    namespace, endpoint, caplog
):
    loop = asyncio.get_running_loop()
    session = os.urandom(wire.SESSION_LEN)
    sequence = iter(range(1, 1000))
    with await udp.bind(port=0, netns=namespace, host=LOOPBACK) as pinger:

        async def ping() -> None:
            heartbeat = wire.Heartbeat(wire.Kind.PING, session, next(sequence), NODE)
            await loop.sock_sendto(
                pinger, wire.encode(heartbeat, KEY), (LOOPBACK, udp.DEFAULT_PORT)
            )

        async def answered() -> bool:
            await ping()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):  # then ping again: the endpoint may be binding
                    pong, _ = await loop.sock_recvfrom(pinger, wire.MAX_LEN)
                    return wire.decode(pong, KEY).kind is wire.Kind.PONG
            return False

        await eventually(answered, what="a pong before the firewall")
        before = failures("EPERM")
        netns.run(namespace, ["nft", "-f", "-"], input=DROP_PONGS)
        with caplog.at_level(logging.WARNING, logger=heartbeats.__name__):
            for _ in range(3):
                await ping()

            async def counted() -> bool:
                return failures("EPERM") >= before + 3

            await eventually(counted, what="three refused pongs counted as EPERM")
        assert not endpoint.done()
        lines = [r.getMessage() for r in caplog.records if r.name == heartbeats.__name__]
        assert len(lines) == 1, lines
        assert "speaker: sending a pong to 127.0.0.1 failed: [Errno 1]" in lines[0]

        netns.run(namespace, ["nft", "delete", "table", "inet", TABLE])
        await eventually(answered, what="a pong once the firewall lets it pass")
        assert not endpoint.done()
