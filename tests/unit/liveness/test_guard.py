"""The speaker's fence: ping guard, lease, leader check, and the timing property they hold."""

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.api.keys import NodeName
from porterlb.liveness import guard, tracker, wire

SPEAKER = b"speaker1"
MANAGER = b"manager1"


def ping(
    sequence: int = 1,
    *,
    session: bytes = MANAGER,
    node: str = "w1",
    acks: int = 0,
    of: bytes = SPEAKER,
    must_see: int = 0,
) -> wire.Heartbeat:
    return wire.Heartbeat(
        wire.Kind.PING,
        session,
        sequence,
        node,
        speaker_session=of if acks else wire.NO_SESSION,
        speaker_sequence=acks,
        must_see=must_see,
    )


@pytest.mark.parametrize(
    ("heartbeat", "verdict"),
    [
        (ping(), guard.Verdict.ANSWERED),
        (ping().answer(session=SPEAKER, sequence=1, lease_ms=250), guard.Verdict.NOT_A_PING),
        (ping(node="w2"), guard.Verdict.WRONG_NODE),
    ],
    ids=["fresh", "pong", "other-node"],
)
def test_verdict(heartbeat, verdict):
    assert guard.PingGuard(node="w1").check(heartbeat) is verdict


def test_a_ping_from_a_pinger_whose_clock_is_far_off_is_answered():
    """No wall clock is read: version 1 refused pings sent more than 2 s off this node's
    clock, so one manager with a wrong clock found every node silent."""
    assert "max_skew" not in guard.PingGuard.__init__.__code__.co_varnames
    assert guard.PingGuard(node="w1").check(ping(2**63)) is guard.Verdict.ANSWERED


def test_replayed_sequence_numbers_are_refused_per_session():
    g = guard.PingGuard(node="w1")
    assert g.check(ping(5)) is guard.Verdict.ANSWERED
    assert g.check(ping(5)) is guard.Verdict.REPLAYED
    assert g.check(ping(4)) is guard.Verdict.REPLAYED
    assert g.check(ping(1, session=b"session2")) is guard.Verdict.ANSWERED
    assert g.check(ping(6)) is guard.Verdict.ANSWERED


def test_sessions_beyond_the_kept_ones_are_forgotten_oldest_first():
    g = guard.PingGuard(node="w1")
    for n in range(guard.SESSIONS_KEPT + 1):
        assert g.check(ping(9, session=n.to_bytes(8, "big"))) is guard.Verdict.ANSWERED
    # Session 0 was evicted, so its old sequence is accepted again (the tracker on the
    # pinger's side still refuses the pong: it answers a round already answered).
    assert g.check(ping(9, session=(0).to_bytes(8, "big"))) is guard.Verdict.ANSWERED
    assert g.check(ping(9, session=(5).to_bytes(8, "big"))) is guard.Verdict.REPLAYED


@given(st.lists(st.integers(0, 50), max_size=30))
def test_only_increasing_sequences_are_answered(sequences):
    g = guard.PingGuard(node="w1")
    answered = [s for s in sequences if g.check(ping(s)) is guard.Verdict.ANSWERED]
    assert answered == sorted(set(answered))


# -- the lease: step table ------------------------------------------------------------------


def test_the_lease_grows_only_from_acknowledged_pongs():
    lease = guard.Lease(length=0.25, session=SPEAKER)
    steps = [
        # (what happens, time, lease held at that time afterwards)
        ("start: no lease before any acknowledgement", 0.0, False),
        ("pong 1 sent", 0.0, False),
        ("a ping that acknowledges nothing", 0.05, False),
        ("pong 2 sent", 0.1, False),
        ("ping acknowledging pong 1 (sent at 0.0)", 0.1, True),
        ("ping acknowledging a pong never sent", 0.2, True),
        ("ping acknowledging pong 1 of an earlier run", 0.2, True),
        ("ping acknowledging pong 2 again", 0.2, True),
        ("no acknowledgement of anything later: lapsed at 0.35", 0.35, False),
    ]
    actions = [
        lambda now: None,
        lambda now: lease.pong(now),
        lambda now: lease.ping(ping(1)),
        lambda now: lease.pong(now),
        lambda now: lease.ping(ping(2, acks=1)),
        lambda now: lease.ping(ping(3, acks=99)),
        lambda now: lease.ping(ping(4, acks=1, of=b"previous")),
        lambda now: lease.ping(ping(5, acks=2)) or lease.ping(ping(6, acks=2)),
        lambda now: None,
    ]
    for (what, now, held), action in zip(steps, actions, strict=True):
        action(now)
        assert lease.held(now) is held, what
    assert lease.until == pytest.approx(0.35)  # pong 2 (sent at 0.1) + 0.25


def test_a_ping_raises_the_must_see_revision_never_lowers_it():
    lease = guard.Lease(length=0.25, session=SPEAKER)
    lease.ping(ping(1, must_see=40))
    lease.ping(ping(2, must_see=7))
    assert lease.must_see == 40


@pytest.mark.parametrize("length", [0.0, -1.0], ids=["zero", "negative"])
def test_a_lease_must_be_positive(length):
    with pytest.raises(ValueError, match="lease length must be positive"):
        guard.Lease(length=length, session=SPEAKER)


# -- the leader check: step table -----------------------------------------------------------

HELD = guard.LeaseRecord(holder="manager-1", renewed="2026-01-01T00:00:00Z", duration=6.0)
RENEWED = guard.LeaseRecord(holder="manager-1", renewed="2026-01-01T00:00:01Z", duration=6.0)
RELEASED = guard.LeaseRecord(holder=None, renewed="2026-01-01T00:00:02Z", duration=6.0)


@pytest.mark.parametrize(
    ("reads", "now", "no_leader"),
    [
        ([], 0.0, False),
        ([(None, 1.0)], 1.5, True),
        ([(RELEASED, 1.0)], 1.5, True),
        ([(RELEASED, 1.0)], 3.5, False),
        ([(HELD, 1.0)], 1.5, False),
        ([(HELD, 1.0), (HELD, 5.0)], 5.5, False),
        ([(HELD, 1.0), (HELD, 7.5)], 7.6, True),
        ([(HELD, 1.0), (RENEWED, 6.0), (RENEWED, 7.5)], 7.6, False),
        ([(HELD, 1.0), (HELD, 7.5), (RENEWED, 8.0)], 8.1, False),
        ([(None, 1.0), (HELD, 1.5)], 1.6, False),
    ],
    ids=[
        "never-read",
        "no-lease",
        "released",
        "read-too-old",
        "held",
        "unchanged-under-duration",
        "unchanged-past-duration",
        "renewed-since",
        "renewed-after-looking-dead",
        "a-leader-appeared",
    ],
)
def test_no_leader_only_from_recent_reads_showing_none(reads, now, no_leader):
    check = guard.LeaderCheck(fresh_for=2.0)
    for record, at in reads:
        check.read(record, sent=at, received=at + 0.01)
    assert check.no_leader(now) is no_leader


def test_the_fence_needs_the_watch_at_the_must_see_revision():
    lease = guard.Lease(length=1.0, session=SPEAKER)
    lease.pong(0.0)
    lease.ping(ping(1, acks=1, must_see=10))
    leader = guard.LeaderCheck()
    assert not guard.may_answer(0.5, lease=lease, watched=9, leader=leader)
    assert guard.may_answer(0.5, lease=lease, watched=10, leader=leader)
    assert not guard.may_answer(1.0, lease=lease, watched=10, leader=leader)
    leader.read(None, sent=1.0, received=1.01)
    assert guard.may_answer(1.5, lease=lease, watched=10, leader=leader)
    assert not guard.may_answer(1.5, lease=lease, watched=9, leader=leader)
    assert not guard.may_answer(3.5, lease=lease, watched=10, leader=leader)


# -- the property: the lease always ends before the manager may move -----------------------


@st.composite
def exchanges(draw):
    """A heartbeat exchange between one manager and one speaker, in real time: per round,
    whether the ping and the pong get through and how long each takes; clocks drifting."""
    interval = draw(st.floats(0.01, 1.0))
    length = draw(st.floats(0.01, 30.0))
    rounds = draw(
        st.lists(
            st.tuples(st.booleans(), st.floats(0.0, 2.0), st.booleans(), st.floats(0.0, 2.0)),
            min_size=1,
            max_size=30,
        )
    )
    drift = st.floats(-guard.MAX_DRIFT, guard.MAX_DRIFT)
    return interval, length, rounds, draw(drift), draw(drift), draw(st.floats(-1e6, 1e6))


@given(exchanges())
def test_the_speakers_lease_ends_before_the_manager_may_move_its_ips(exchange):
    """For any delays, losses and clock rates within bounds: the real time the speaker's
    lease ends is before the real time the manager's tracker first finds it silent."""
    interval, length, rounds, speaker_drift, manager_drift, offset = exchange

    def speaker_clock(real: float) -> float:
        return float(real * (1 + speaker_drift) + offset)

    def manager_clock(real: float) -> float:
        return float(real * (1 + manager_drift))

    lease = guard.Lease(length=length, session=SPEAKER)
    pinger = tracker.Tracker(session=MANAGER, misses=3)
    node = NodeName("w1")
    pinger.silent([node], 0.0)
    events: list[tuple[float, int, tuple[Any, ...]]] = []  # (real time, order, action)
    for n, (ping_arrives, ping_delay, pong_arrives, pong_delay) in enumerate(rounds):
        events.append(
            (n * interval, 0, ("ping", n + 1, ping_arrives, ping_delay, pong_arrives, pong_delay))
        )
    heard = None
    pending = sorted(events)
    while pending:
        real, _, action = pending.pop(0)
        if action[0] == "ping":
            _, sequence, ping_arrives, ping_delay, pong_arrives, pong_delay = action
            pinger.next_round()
            session, acked = pinger.echo(node)
            sent = wire.Heartbeat(
                wire.Kind.PING, MANAGER, sequence, "w1",
                speaker_session=session, speaker_sequence=acked,
            )  # fmt: skip
            if ping_arrives:
                pending.append(
                    (real + ping_delay, 1, ("deliver-ping", sent, pong_arrives, pong_delay))
                )
        elif action[0] == "deliver-ping":
            _, sent, pong_arrives, pong_delay = action
            lease.ping(sent)
            number = lease.pong(speaker_clock(real))
            pong = sent.answer(session=SPEAKER, sequence=number, lease_ms=math.ceil(length * 1000))
            if pong_arrives:
                pending.append((real + pong_delay, 2, ("deliver-pong", pong)))
        else:
            if pinger.received(action[1], manager_clock(real)) is tracker.Verdict.ACCEPTED:
                heard = real
        pending.sort(key=lambda e: (e[0], e[1]))
    if lease.until == -math.inf:
        return  # never acknowledged: the speaker never answered
    assert heard is not None  # an acknowledgement echoes a pong the manager accepted
    lease_end = (lease.until - offset) / (1 + speaker_drift)
    # The manager may move once the rounds are missed and this much of its clock has passed.
    wait = guard.safe_to_move_after(math.ceil(length * 1000) / 1000)
    may_move = (manager_clock(heard) + wait) / (1 + manager_drift)
    assert lease_end < may_move


def test_the_lease_keeps_the_latest_pong_acknowledged():
    lease = guard.Lease(length=0.25, session=SPEAKER)
    first, second = lease.pong(0.0), lease.pong(0.1)
    lease.ping(ping(1, acks=second))
    lease.ping(ping(2, acks=first))  # a late acknowledgement of an older pong
    lease.ping(ping(3, acks=99))  # never sent
    lease.ping(ping(4, acks=7, of=b"previous"))  # another run's
    assert lease.acknowledged == second
