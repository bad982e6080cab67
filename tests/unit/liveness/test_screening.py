"""What a receiver does with a datagram before it trusts it: peek, screen, verify, and the
bounded log of what it refuses or fails to send."""

import contextlib
import logging
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from porterlb import errors
from porterlb.liveness import udp, wire

KEY, OTHER = bytes(range(32)), bytes(32)
PING = wire.Heartbeat(wire.Kind.PING, b"session!", 7, "w1")
PONG = PING.answer(session=b"speaker!", sequence=1, lease_ms=250)
SENDER = ("::ffff:198.18.0.2", 40000, 0, 0)


def only_pings_for_w1(kind, node, sender):
    if kind is not wire.Kind.PING:
        return "not_a_ping"
    return None if node == "w1" else "wrong_node"


def test_peek_reads_kind_and_node_without_the_key():
    assert wire.peek(wire.encode(PING, KEY)) == (wire.Kind.PING, "w1")


@given(st.binary(max_size=400))
def test_peek_raises_only_malformed(data):
    with contextlib.suppress(errors.MalformedFrame):
        wire.peek(data)


@pytest.mark.parametrize(
    ("data", "keys", "verdict"),
    [
        (wire.encode(PING, KEY), (KEY,), None),
        (wire.encode(PING, KEY), (OTHER, KEY), None),
        (wire.encode(PING, KEY), (OTHER,), "bad_signature"),
        (wire.encode(PING, KEY), (), "bad_signature"),
        (b"PLBH", (KEY,), "malformed"),
        (wire.encode(PONG, KEY), (KEY,), "not_a_ping"),
        (wire.encode(PONG, OTHER), (KEY,), "not_a_ping"),
        (
            wire.encode(wire.Heartbeat(wire.Kind.PING, b"session!", 7, "w2"), KEY),
            (KEY,),
            "wrong_node",
        ),
        (wire.encode(PING, KEY) + b"x", (KEY,), "malformed"),
    ],
    ids=[
        "signed",
        "signed-with-an-older-key",
        "other-key",
        "no-key",
        "garbage",
        "a-pong",
        "a-forged-pong-screened-before-its-hmac",
        "another-node",
        "trailing-bytes",
    ],
)
def test_verify(data, keys, verdict):
    signed = udp.verify(data, keys, sender=SENDER, screen=only_pings_for_w1)
    if verdict is None:
        assert signed == udp.Signed(PING, KEY)
    else:
        assert signed == verdict


@pytest.mark.parametrize(
    ("sender", "address"),
    [
        (("198.18.0.2", 1), "198.18.0.2"),
        (("::ffff:198.18.0.2", 1, 0, 0), "198.18.0.2"),
        (("2001:db8::2", 1, 0, 0), "2001:db8::2"),
        (("fe80::2%eth0", 1, 0, 2), "fe80::2"),
    ],
    ids=["ipv4", "ipv4-mapped", "ipv6", "scoped"],
)
def test_source(sender, address):
    assert udp.source(sender) == address


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_bounded_log_says_one_line_per_interval_per_cause_with_the_count(caplog):
    clock = Clock()
    logged = udp.BoundedLog(logging.getLogger("test.bounded"), logging.WARNING, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.bounded"):
        for clock.now in (0.0, 1.0, 2.0, 9.9):
            logged("EPERM", "send failed at %s", clock.now)
        logged("ENOBUFS", "queue full")
        clock.now = 10.0
        logged("EPERM", "send failed at %s", clock.now)
    assert [r.getMessage() for r in caplog.records] == [
        "send failed at 0.0",
        "queue full",
        "send failed at 10.0 (and 3 more like it in the last 10 s)",
    ]


def failures(role, name):
    labels = {"role": role, "errno": name}
    return REGISTRY.get_sample_value("porterlb_heartbeat_send_failures_total", labels) or 0.0


def test_a_send_the_kernel_refuses_is_counted_by_errno_and_not_raised(caplog):
    """A broadcast without SO_BROADCAST is one the kernel refuses (EACCES) to anyone."""
    before = failures("speaker", "EACCES")
    logged = udp.BoundedLog(logging.getLogger("test.send"), logging.WARNING)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(3):
            sent = udp.send(
                sock, b"pong", ("255.255.255.255", 9), role="speaker", what="a pong", logged=logged
            )
            assert not sent
    assert failures("speaker", "EACCES") == before + 3
    assert [r.getMessage() for r in caplog.records] == [
        "speaker: sending a pong to 255.255.255.255 failed: [Errno 13] Permission denied"
    ]
