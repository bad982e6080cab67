import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.liveness import guard, wire

NOW = 1_700_000_000_000_000_000
SECOND = 1_000_000_000


def ping(sequence: int = 1, *, session: bytes = b"session1", node: str = "w1", sent: int = NOW):
    return wire.Heartbeat(wire.Kind.PING, session, sequence, sent, node)


@pytest.mark.parametrize(
    ("heartbeat", "verdict"),
    [
        (ping(), guard.Verdict.ANSWERED),
        (ping().answer(), guard.Verdict.NOT_A_PING),
        (ping(node="w2"), guard.Verdict.WRONG_NODE),
        (ping(sent=NOW - 3 * SECOND), guard.Verdict.STALE),
        (ping(sent=NOW + 3 * SECOND), guard.Verdict.STALE),
        (ping(sent=NOW - SECOND), guard.Verdict.ANSWERED),
    ],
    ids=["fresh", "pong", "other-node", "old", "from-the-future", "skewed-within-limit"],
)
def test_which_pings_are_answered(heartbeat, verdict):
    assert guard.PingGuard(node="w1").check(heartbeat, NOW) is verdict


def test_a_replayed_ping_is_refused_per_session():
    g = guard.PingGuard(node="w1")
    assert g.check(ping(5), NOW) is guard.Verdict.ANSWERED
    assert g.check(ping(5), NOW) is guard.Verdict.REPLAYED
    assert g.check(ping(4), NOW) is guard.Verdict.REPLAYED
    assert g.check(ping(1, session=b"session2"), NOW) is guard.Verdict.ANSWERED
    assert g.check(ping(6), NOW) is guard.Verdict.ANSWERED


def test_only_the_latest_sessions_are_remembered():
    g = guard.PingGuard(node="w1")
    for n in range(guard.SESSIONS_KEPT + 1):
        assert g.check(ping(9, session=n.to_bytes(8, "big")), NOW) is guard.Verdict.ANSWERED
    # The oldest session was forgotten, so its old sequence passes the replay check again;
    # the send-time check still bounds how old such a replay can be.
    assert g.check(ping(9, session=(0).to_bytes(8, "big")), NOW) is guard.Verdict.ANSWERED
    assert g.check(ping(9, session=(5).to_bytes(8, "big")), NOW) is guard.Verdict.REPLAYED


@given(st.lists(st.integers(0, 50), max_size=40))
def test_each_sequence_of_a_session_is_answered_at_most_once(sequences):
    g = guard.PingGuard(node="w1")
    answered = [s for s in sequences if g.check(ping(s), NOW) is guard.Verdict.ANSWERED]
    assert answered == sorted(set(answered))


def test_fence_closes_after_the_fence_time_without_a_sign_of_life():
    fence = guard.Fence(after=2.0, now=10.0)
    assert not fence.closed(11.9)
    assert fence.closed(12.0)
    fence.sign_of_life(12.5)
    assert not fence.closed(14.4)
    assert fence.closed(14.5)


def test_fence_ignores_an_older_sign_of_life():
    fence = guard.Fence(after=1.0, now=10.0)
    fence.sign_of_life(5.0)
    assert not fence.closed(10.5)


def test_fence_time_must_be_positive():
    with pytest.raises(ValueError, match="fence time must be positive, got 0"):
        guard.Fence(after=0, now=0.0)
