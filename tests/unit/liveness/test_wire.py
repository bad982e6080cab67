import contextlib
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb import errors
from porterlb.liveness import wire

KEY = bytes(range(32))
PING = wire.Heartbeat(
    wire.Kind.PING, b"session!", 7, "w1", speaker_session=b"speaker!", speaker_sequence=3,
    must_see=1234,
)  # fmt: skip
MAC = bytes.fromhex("020000000001")

heartbeats = st.builds(
    wire.Heartbeat,
    kind=st.sampled_from(wire.Kind),
    session=st.binary(min_size=8, max_size=8),
    sequence=st.integers(0, 2**64 - 1),
    node=st.text(min_size=1, max_size=60).filter(lambda n: len(n.encode()) <= 253),
    speaker_session=st.binary(min_size=8, max_size=8),
    speaker_sequence=st.integers(0, 2**64 - 1),
    must_see=st.integers(0, 2**64 - 1),
    lease_ms=st.integers(0, wire.MAX_LEASE_MS),
    flags=st.integers(0, 255),
    pools=st.lists(st.text(min_size=1, max_size=20), max_size=wire.MAX_POOLS).map(tuple),
    macs=st.lists(st.binary(min_size=6, max_size=6), max_size=wire.MAX_MACS).map(tuple),
)


def test_golden_ping():
    data = wire.encode(PING, KEY)
    body = (
        b"PLBH" + bytes([2, 1, 2, 0, 0, 0]) + (0).to_bytes(2, "big") + b"session!"
        + (7).to_bytes(8, "big") + b"speaker!" + (3).to_bytes(8, "big")
        + (1234).to_bytes(8, "big") + b"w1"
    )  # fmt: skip
    assert data == body + hmac.digest(KEY, body, hashlib.sha256)


def test_no_field_is_a_wall_clock_time():
    """Version 1 carried the pinger's wall clock: a skewed clock made every ping stale."""
    assert "sent_ns" not in wire.Heartbeat.__dataclass_fields__


@given(heartbeats)
def test_round_trip(heartbeat):
    assert wire.decode(wire.encode(heartbeat, KEY), KEY) == heartbeat


def answer(**fields):
    return PING.answer(session=b"mine!!!!", sequence=11, lease_ms=250, **fields)


def test_answer_is_a_pong_echoing_the_ping_and_numbered_by_the_speaker():
    pong = answer(stale=True, macs=(MAC,))
    assert pong.kind is wire.Kind.PONG
    echoed = (pong.session, pong.sequence, pong.must_see, pong.node)
    assert echoed == (b"session!", 7, 1234, "w1")
    own = (pong.speaker_session, pong.speaker_sequence, pong.lease_ms, pong.flags, pong.macs)
    assert own == (b"mine!!!!", 11, 250, wire.STALE, (MAC,))
    assert wire.decode(wire.encode(pong, KEY), KEY) == pong


def test_another_key_is_a_bad_signature():
    with pytest.raises(wire.BadSignature, match="ping tag does not match"):
        wire.decode(wire.encode(PING, KEY), bytes(32))


@pytest.mark.parametrize("offset", range(len(wire.encode(PING, KEY))), ids=lambda o: f"byte{o}")
def test_any_flipped_bit_is_refused(offset):
    data = bytearray(wire.encode(PING, KEY))
    data[offset] ^= 0x01
    with pytest.raises((errors.MalformedFrame, wire.BadSignature)):
        wire.decode(bytes(data), KEY)


def _patched(offset: int, value: int) -> bytes:
    data = bytearray(wire.encode(PING, KEY))
    data[offset] = value
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (b"", "length", "heartbeat of 0 bytes is shorter than the smallest one"),
        (wire.encode(PING, KEY)[:64], "length", "heartbeat of 64 bytes is shorter"),
        (b"XLBH" + wire.encode(PING, KEY)[4:], "magic", "magic b'XLBH' is not b'PLBH'"),
        (_patched(4, 1), "version", "version 1 is not 2"),
        (_patched(5, 3), "kind", "kind 3 is neither ping nor pong"),
        (_patched(6, 0), "node name length", "do not hold a 0-byte node name"),
        (_patched(6, 9), "node name length", "do not hold a 9-byte node name"),
        (wire.encode(PING, KEY) + b"x", "length", "1 bytes between the last field and the tag"),
        (_patched(7, 17), "pool count", "17 pools: at most 16"),
        (_patched(7, 1), "pool name", "a pool name runs past the tag, or is empty"),
        (_patched(8, 17), "MAC count", "17 MACs: at most 16"),
        (_patched(8, 1), "MAC count", "1 MACs run past the tag"),
    ],
    ids=[
        "empty",
        "truncated",
        "magic",
        "version",
        "kind",
        "no-name",
        "name-too-long",
        "trailing",
        "too-many-pools",
        "pool-past-the-tag",
        "too-many-macs",
        "mac-past-the-tag",
    ],
)
def test_malformed_names_the_field(data, field, message):
    with pytest.raises(errors.MalformedFrame, match=message) as raised:
        wire.decode(data, KEY)
    assert raised.value.field == field


def test_name_that_is_not_utf8_is_malformed_even_when_signed():
    body = bytearray(wire.encode(PING, KEY)[: -wire.TAG_LEN])
    body[-2:] = b"\xff\xfe"
    data = bytes(body) + hmac.digest(KEY, bytes(body), hashlib.sha256)
    with pytest.raises(errors.MalformedFrame, match="node name is not UTF-8"):
        wire.decode(data, KEY)


@given(st.binary(max_size=400))
def test_decode_raises_only_malformed_or_bad_signature(data):
    with contextlib.suppress(errors.MalformedFrame, wire.BadSignature):
        wire.decode(data, KEY)


@pytest.mark.parametrize(
    ("heartbeat", "message"),
    [
        (wire.Heartbeat(wire.Kind.PING, b"session!", 1, ""), "must be 1..253 bytes"),
        (wire.Heartbeat(wire.Kind.PING, b"session!", 1, "n" * 254), "must be 1..253 bytes"),
        (wire.Heartbeat(wire.Kind.PING, b"short", 1, "w1"), "session must be 8 bytes, got 5"),
        (wire.Heartbeat(wire.Kind.PONG, b"session!", 1, "w1", pools=("",)), "pool name ''"),
        (
            wire.Heartbeat(wire.Kind.PONG, b"session!", 1, "w1", pools=("p",) * 17),
            "17 pools: at most 16 fit",
        ),
        (wire.Heartbeat(wire.Kind.PONG, b"session!", 1, "w1", macs=(b"x",)), "MACs"),
        (
            wire.Heartbeat(wire.Kind.PONG, b"session!", 1, "w1", speaker_session=b"s"),
            "speaker session must be 8 bytes, got 1",
        ),
    ],
    ids=[
        "empty-name",
        "long-name",
        "short-session",
        "empty-pool",
        "too-many-pools",
        "short-mac",
        "short-speaker-session",
    ],
)
def test_encode_refuses_what_cannot_be_sent(heartbeat, message):
    with pytest.raises(ValueError, match=message):
        wire.encode(heartbeat, KEY)


def test_a_pong_names_the_pools_whose_interface_the_node_lacks():
    pong = answer(pools=("lan", "dmz"))
    assert wire.decode(wire.encode(pong, KEY), KEY).pools == ("lan", "dmz")


def test_a_pong_names_at_most_max_pools():
    pong = answer(pools=tuple(f"p{n}" for n in range(40)))
    assert len(wire.decode(wire.encode(pong, KEY), KEY).pools) == wire.MAX_POOLS


def test_a_pool_name_that_is_not_utf8_is_malformed_even_when_signed():
    body = wire.encode(answer(pools=("ab",)), KEY)[: -wire.TAG_LEN]
    body = body[:-2] + b"\xff\xfe"
    data = body + hmac.digest(KEY, body, hashlib.sha256)
    with pytest.raises(errors.MalformedFrame, match="pool name is not UTF-8"):
        wire.decode(data, KEY)


@pytest.mark.parametrize(
    ("stale", "draining", "flags"),
    [
        pytest.param(False, False, 0, id="neither"),
        pytest.param(True, False, wire.STALE, id="stale"),
        pytest.param(False, True, wire.DRAINING, id="draining"),
        pytest.param(True, True, wire.STALE | wire.DRAINING, id="both"),
    ],
)
def test_a_pong_says_stale_and_draining_in_its_flags(stale, draining, flags):
    pong = answer(stale=stale, draining=draining)
    assert pong.flags == flags
    assert wire.decode(wire.encode(pong, KEY), KEY).flags == flags
    assert wire.encode(pong, KEY)[9] == flags  # the flags byte of the layout
