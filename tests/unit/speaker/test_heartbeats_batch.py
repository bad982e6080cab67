"""The speaker's heartbeat endpoint reading a batch, over real loopback sockets: when it is
behind, pings from senders it has answered before come first, and forged ones from others
are shed before their HMAC, all but a budget that still lets a new manager be heard."""

import os
import socket

import pytest
from prometheus_client import REGISTRY

from porterlb.liveness import guard, wire
from porterlb.speaker import heartbeats

KEY, FORGER_KEY = bytes(range(32)), bytes(32)
NODE = "w1"
DEADLINE = 30.0
"""Seconds a pong may take to arrive (the loopback hands it over at once)."""


def received(verdict):
    labels = {"role": "speaker", "verdict": verdict}
    return REGISTRY.get_sample_value("porterlb_heartbeat_received_total", labels) or 0.0


@pytest.fixture
def sockets():
    made = []

    def make():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(DEADLINE)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close()


def ping(session, sequence, key=KEY):
    return wire.encode(wire.Heartbeat(wire.Kind.PING, session, sequence, NODE), key)


def test_behind_a_flood_trusted_and_budgeted_pings_are_answered_and_the_rest_shed(sockets):
    endpoint = heartbeats.Heartbeats(node=NODE, key=KEY, lease=guard.Lease(session=os.urandom(8)))
    listening, manager, newcomer, forger = sockets(), sockets(), sockets(), sockets()
    listening.setblocking(False)  # as udp.bind makes it
    # Room for a batch and more: twice net.core.rmem_max's default, some 500 small datagrams.
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    address = listening.getsockname()
    session = os.urandom(wire.SESSION_LEN)

    manager.sendto(ping(session, 1), address)
    endpoint.answer_batch(listening)
    assert wire.decode(manager.recv(wire.MAX_LEN), KEY).sequence == 1  # now a trusted sender

    forged = ping(os.urandom(wire.SESSION_LEN), 1, FORGER_KEY)
    shed, refused = received("shed"), received("bad_signature")
    newcomer.sendto(ping(os.urandom(wire.SESSION_LEN), 1), address)  # within the budget
    for n in range(heartbeats.BATCH + 20):
        if n == 150:
            manager.sendto(ping(session, 2), address)
        forger.sendto(forged, address)
    endpoint.answer_batch(listening)

    assert wire.decode(manager.recv(wire.MAX_LEN), KEY).sequence == 2
    assert wire.decode(newcomer.recv(wire.MAX_LEN), KEY).sequence == 1
    # A full batch: the newcomer and the next 15 forged pings got an HMAC; the others did not.
    assert received("bad_signature") - refused == heartbeats.UNTRUSTED_BUDGET - 1
    assert received("shed") - shed == heartbeats.BATCH - 2 - (heartbeats.UNTRUSTED_BUDGET - 1)

    endpoint.answer_batch(listening)  # the last 22, read in a batch not full: all checked
    assert received("bad_signature") - refused == heartbeats.UNTRUSTED_BUDGET - 1 + 22
