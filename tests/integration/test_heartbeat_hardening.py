"""Heartbeats under hostile or changing conditions, against the real API server: a pong sent
from an address not its Node's, and a key rotated while the manager and speakers run."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time

import pytest
from lightkube.resources.core_v1 import Node, Secret
from lightkube.types import PatchType
from prometheus_client import REGISTRY

from porterlb.api import reasons
from porterlb.kube import secrets
from porterlb.liveness import keys, wire
from porterlb.manager import controller, liveness
from tests.integration import objects
from tests.integration.conftest import running_manager, set_node_ready
from tests.integration.test_announcing import announced_by, pool_with_service, wait_announced_by
from tests.integration.test_liveness import TIMING, answering, key_of, node_at, wait_silent
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

ROTATION = keys.Rotation(adopt_after=3.0, grace=6.0)
"""Short enough for a test, long enough for a watch event to reach everyone on loaded cores."""


def received(role: str, verdict: str) -> float:
    labels = {"role": role, "verdict": verdict}
    return REGISTRY.get_sample_value("porterlb_heartbeat_received_total", labels) or 0.0


def pinger_of(manager: controller.Manager) -> liveness.Liveness:
    pinger = manager.announcing.pinger
    assert isinstance(pinger, liveness.Liveness)
    return pinger


def udp_socket(ip: str, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((ip, port))
    return sock


async def test_a_pong_counts_only_from_an_address_of_its_node(
    client, namespace, net, eips, nodes, unused_udp_port
):
    """A speaker stand-in for node Y answers every ping with a correctly signed pong, sent
    from an address that is not Y's: Y stays silent. From Y's IPv6 address (another entry of
    its status.addresses, on the manager's dual-stack socket), it is heard."""
    port = unused_udp_port
    settings = liveness.Settings(secret_namespace=namespace, port=port, timing=TIMING)
    async with running_manager(client, heartbeat=settings) as manager:
        node = await node_at(client, nodes, f"{namespace}-y", "127.0.0.60")
        addresses = [
            {"type": "InternalIP", "address": "127.0.0.60"},
            {"type": "InternalIP", "address": "::1"},
        ]
        await client.patch(
            Node.Status, node, {"status": {"addresses": addresses}}, patch_type=PatchType.MERGE
        )
        # One speaker answers (on a node not Ready), or the manager would blame its own network.
        good = await node_at(client, nodes, f"{namespace}-good", "127.0.0.61")
        await set_node_ready(client, good, False)
        key = await key_of(client, namespace)
        loop = asyncio.get_running_loop()
        with (
            udp_socket("127.0.0.60", port) as pinged,
            udp_socket("127.0.0.62") as elsewhere,
            udp_socket("::1") as own_ipv6,
        ):
            reply_from = elsewhere

            async def stand_in():
                while True:
                    data, pinger = await loop.sock_recvfrom(pinged, wire.MAX_LEN)
                    answered = wire.decode(data, key)
                    pong = wire.encode(
                        answered.answer(
                            session=b"stand-in", sequence=answered.sequence, lease_ms=250
                        ),
                        key,
                    )
                    target = ("::1" if reply_from is own_ipv6 else "127.0.0.1", pinger[1])
                    await loop.sock_sendto(reply_from, pong, target)

            async with (
                answering(good, "127.0.0.61", port, key),
                asyncio.TaskGroup() as group,
            ):
                task = group.create_task(stand_in(), name="test/stand-in")
                before = received("manager", "unknown_sender")
                await wait_silent(manager, node, True)

                async def refused():
                    return received("manager", "unknown_sender") >= before + TIMING.misses

                await eventually(refused, what="pongs from 127.0.0.62 refused")
                assert pinger_of(manager).silent == {node: None}  # never answered

                reply_from = own_ipv6
                await wait_silent(manager, node, False)
                task.cancel()


async def test_a_rotated_key_is_taken_up_while_running_and_moves_no_ip(
    client, namespace, net, eips, nodes, unused_udp_port
):
    port = unused_udp_port
    settings = liveness.Settings(
        secret_namespace=namespace, port=port, timing=TIMING, rotation=ROTATION
    )
    async with running_manager(client, heartbeat=settings) as manager:
        names = {f"{namespace}-{n}": f"127.0.0.{70 + n}" for n in range(3)}
        for name, ip in names.items():
            await node_at(client, nodes, name, ip)
        old = await key_of(client, namespace)
        async with contextlib.AsyncExitStack() as stack:
            endpoints = [
                await stack.enter_async_context(
                    answering(name, ip, port, old, secret=(client, namespace), rotation=ROTATION)
                )
                for name, ip in names.items()
            ]
            await pool_with_service(client, eips, namespace, net)
            first = await wait_announced_by(client, "web", namespace, set(names))
            pinger = pinger_of(manager)
            rings = lambda: [pinger.keys, *(endpoint.keys for endpoint in endpoints)]  # noqa: E731

            new = os.urandom(secrets.KEY_LEN)
            data = {"data": {secrets.FIELD: base64.b64encode(new).decode()}}
            await client.patch(Secret, secrets.DEFAULT_NAME, data, namespace=namespace)

            async def learned():
                return all(ring.key == new for ring in rings())

            await eventually(learned, what="the manager and every speaker to learn the new key")

            async def old_refused():
                now = time.monotonic()  # the clock of both the loop and the speakers' threads
                return all(ring.accepted(now) == (new,) for ring in rings())

            await eventually(old_refused, what="the grace to end everywhere")
            due = pinger.tracker.due

            async def rounds_passed():
                return pinger.tracker.due >= due + 2 * TIMING.misses

            await eventually(rounds_passed, what="rounds signed with the new key alone")
            assert pinger.silent == {}
            assert await announced_by(client, "web", namespace) == first
            assert await objects.events(client, namespace, "web", reasons.FAILOVER) == []

            # A ping signed with the old key is refused now; the same ping with the new key is
            # answered, with the new key.
            target = endpoints[0]
            ping = wire.Heartbeat(wire.Kind.PING, os.urandom(8), 1, target.guard.node)
            loop = asyncio.get_running_loop()
            with udp_socket("127.0.0.1") as sock:
                before = received("speaker", "bad_signature")
                await loop.sock_sendto(
                    sock, wire.encode(ping, old), (names[target.guard.node], port)
                )

                async def refused():
                    return received("speaker", "bad_signature") > before

                await eventually(refused, what="the ping signed with the old key refused")
                await loop.sock_sendto(
                    sock, wire.encode(ping, new), (names[target.guard.node], port)
                )
                async with asyncio.timeout(30):
                    pong, _ = await loop.sock_recvfrom(sock, wire.MAX_LEN)
                answer = wire.decode(pong, new)
                assert (answer.kind, answer.session, answer.sequence) == (
                    wire.Kind.PONG,
                    ping.session,
                    ping.sequence,
                )
