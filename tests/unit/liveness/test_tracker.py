import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.api.keys import NodeName
from porterlb.liveness import guard, tracker, wire

SESSION = b"session1"
W1, W2 = NodeName("w1"), NodeName("w2")


def pong(node: str, sequence: int, session: bytes = SESSION) -> wire.Heartbeat:
    return wire.Heartbeat(wire.Kind.PONG, session, sequence, node)


def rounds(t: tracker.Tracker, count: int, answering: set[str], now: float = 0.0) -> None:
    """`count` rounds, each answered by `answering` before it is due."""
    for _ in range(count):
        sequence = t.next_round()
        for node in answering:
            assert t.received(pong(node, sequence), now) is tracker.Verdict.ACCEPTED
        t.close_round()


def test_a_node_is_silent_after_misses_rounds_in_a_row():
    t = tracker.Tracker(session=SESSION, misses=3)
    t.silent([W1, W2], 0.0)
    rounds(t, 2, {"w1", "w2"}, now=1.0)
    rounds(t, 2, {"w1"})
    assert t.silent([W1, W2], 1.5) == {}
    rounds(t, 1, {"w1"})
    assert t.silent([W1, W2], 1.5) == {W2: 0.5}


def test_one_answer_resets_the_count():
    t = tracker.Tracker(session=SESSION, misses=2)
    t.silent([W1], 0.0)
    rounds(t, 1, set())
    rounds(t, 1, {"w1"})
    rounds(t, 1, set())
    assert t.silent([W1], 0.0) == {}


def test_a_node_never_heard_is_silent_with_no_last_answer():
    t = tracker.Tracker(session=SESSION, misses=2)
    t.silent([W1], 0.0)
    rounds(t, 2, set())
    assert t.silent([W1], 0.0) == {W1: None}


def test_a_node_first_seen_later_starts_with_a_clean_slate():
    t = tracker.Tracker(session=SESSION, misses=2)
    rounds(t, 5, set())
    assert t.silent([W1], 0.0) == {}
    rounds(t, 1, set())
    assert t.silent([W1], 0.0) == {}
    rounds(t, 1, set())
    assert t.silent([W1], 0.0) == {W1: None}


def test_a_late_answer_still_counts_for_its_own_round():
    t = tracker.Tracker(session=SESSION, misses=2)
    t.silent([W1], 0.0)
    first = t.next_round()
    t.close_round()
    rounds(t, 1, set())
    assert t.received(pong("w1", first), 0.0) is tracker.Verdict.ACCEPTED
    assert t.silent([W1], 0.0) == {}  # round 1 answered late: only round 2 is missed
    rounds(t, 1, set())
    assert t.silent([W1], 0.5) == {W1: 0.5}


def test_an_answer_revives_a_silent_node():
    t = tracker.Tracker(session=SESSION, misses=1)
    t.silent([W1], 0.0)
    rounds(t, 1, set())
    assert W1 in t.silent([W1], 0.0)
    rounds(t, 1, {"w1"})
    assert t.silent([W1], 0.0) == {}


@pytest.mark.parametrize(
    ("heartbeat", "verdict"),
    [
        (wire.Heartbeat(wire.Kind.PING, SESSION, 1, "w1"), tracker.Verdict.NOT_A_PONG),
        (pong("w1", 1, session=b"other!!!"), tracker.Verdict.OTHER_SESSION),
        (pong("w1", 3), tracker.Verdict.NEVER_SENT),
        (pong("w1", 0), tracker.Verdict.NEVER_SENT),
        (pong("w1", 1), tracker.Verdict.REPLAYED),
        (pong("w1", 2), tracker.Verdict.ACCEPTED),
    ],
    ids=["ping", "other-session", "future", "zero", "replayed", "newer"],
)
def test_which_pongs_count(heartbeat, verdict):
    t = tracker.Tracker(session=SESSION, misses=3)
    t.next_round()
    t.next_round()
    assert t.received(pong("w1", 1), 0.0) is tracker.Verdict.ACCEPTED
    assert t.received(heartbeat, 0.0) is verdict


def test_a_replayed_pong_does_not_keep_a_dead_node_alive():
    t = tracker.Tracker(session=SESSION, misses=2)
    t.silent([W1], 0.0)
    rounds(t, 1, {"w1"})
    recorded = pong("w1", 1)
    for _ in range(2):
        t.next_round()
        assert t.received(recorded, 0.0) is tracker.Verdict.REPLAYED
        t.close_round()
    assert W1 in t.silent([W1], 0.0)


def test_forget_drops_the_node():
    t = tracker.Tracker(session=SESSION, misses=1)
    t.silent([W1], 0.0)
    rounds(t, 1, set())
    t.forget(W1)
    assert t.silent([W1], 0.0) == {}


@given(st.lists(st.booleans(), max_size=30), st.integers(1, 5))
def test_silent_exactly_when_the_last_misses_rounds_went_unanswered(answers, misses):
    t = tracker.Tracker(session=SESSION, misses=misses)
    t.silent([W1], 0.0)
    for answered in answers:
        rounds(t, 1, {"w1"} if answered else set())
    expected = len(answers) >= misses and not any(answers[-misses:])
    assert (W1 in t.silent([W1], 0.0)) is expected


@pytest.mark.parametrize(
    ("interval", "misses", "message"),
    [(0, 3, "interval must be positive"), (0.1, 0, "misses must be at least 1")],
    ids=["interval", "misses"],
)
def test_timing_refuses_nonsense(interval, misses, message):
    with pytest.raises(ValueError, match=message):
        tracker.Timing(interval, misses)


def test_deaf_while_no_node_at_all_answered_the_last_misses_rounds():
    t = tracker.Tracker(session=SESSION, misses=2)
    assert not t.deaf
    rounds(t, 2, set())
    assert t.deaf
    rounds(t, 1, {"w1"})
    assert not t.deaf
    rounds(t, 1, set())
    assert not t.deaf
    rounds(t, 1, set())
    assert t.deaf


def test_the_latest_pong_says_which_pools_a_node_lacks():
    t = tracker.Tracker(session=SESSION, misses=3)
    first, second = t.next_round(), t.next_round()
    lacking = wire.Heartbeat(wire.Kind.PONG, SESSION, first, "w1", pools=("lan",))
    assert t.received(lacking, 0.0) is tracker.Verdict.ACCEPTED
    assert t.lacking == {W1: frozenset({"lan"})}
    assert t.received(pong("w1", second), 0.0) is tracker.Verdict.ACCEPTED
    assert t.lacking == {}


def answer(node: str, sequence: int, **fields) -> wire.Heartbeat:
    return wire.Heartbeat(wire.Kind.PONG, SESSION, sequence, node, **fields)


def test_a_node_counts_as_silent_only_once_its_lease_has_surely_run_out():
    t = tracker.Tracker(session=SESSION, misses=1)
    t.silent([W1], 0.0)
    first = t.next_round()
    t.received(answer("w1", first, lease_ms=500), 10.0)
    t.close_round()
    t.next_round()
    t.close_round()
    assert t.silent([W1], 10.3) == {}  # missed a round, but its lease may still hold
    later = 10.0 + guard.safe_to_move_after(0.5) + 1e-9
    assert t.silent([W1], later) == {W1: pytest.approx(guard.safe_to_move_after(0.5))}


def test_the_next_ping_acknowledges_the_latest_pong_accepted():
    t = tracker.Tracker(session=SESSION, misses=3)
    assert t.echo(W1) == (wire.NO_SESSION, 0)
    first, second = t.next_round(), t.next_round()
    t.received(answer("w1", second, speaker_session=b"speaker1", speaker_sequence=9), 0.0)
    late = answer("w1", first, speaker_session=b"speaker1", speaker_sequence=8)
    assert t.received(late, 0.0) is tracker.Verdict.REPLAYED
    assert t.echo(W1) == (b"speaker1", 9)


def test_pongs_say_the_revision_complied_with_staleness_and_macs():
    t = tracker.Tracker(session=SESSION, misses=3)
    first, second = t.next_round(), t.next_round()
    mac = bytes.fromhex("020000000001")
    t.received(answer("w1", first, must_see=7, flags=wire.STALE, macs=(mac,)), 0.0)
    assert (t.confirmed(W1), t.stale, t.macs) == (7, {W1}, {W1: frozenset({mac})})
    t.received(answer("w1", second, must_see=5), 0.0)
    assert (t.confirmed(W1), t.stale) == (7, set())
    t.forget(W1)
    assert (t.confirmed(W1), t.macs) == (0, {})


def test_a_node_drains_while_the_session_serving_it_says_so():
    t = tracker.Tracker(session=SESSION, misses=3)
    old, new = b"speaker1", b"speaker2"
    steps = [
        # (what happens: the pong's speaker session and whether it says draining, draining)
        ("the old speaker answers", old, False, False),
        ("the old speaker got SIGTERM", old, True, True),
        ("it keeps saying so", old, True, True),
        ("the new speaker answers: eligible again", new, False, False),
        ("the old one's last pongs change nothing", old, True, False),
        ("the new speaker gets SIGTERM in its turn", new, True, True),
    ]
    for what, session, draining, expected in steps:
        flags = wire.DRAINING if draining else 0
        t.received(answer("w1", t.next_round(), speaker_session=session, flags=flags), 0.0)
        assert (W1 in t.draining) is expected, what
    t.forget(W1)
    assert t.draining == set()


def test_a_speaker_draining_from_its_first_pong_drains_its_node():
    t = tracker.Tracker(session=SESSION, misses=3)
    t.received(answer("w1", t.next_round(), speaker_session=b"speaker1", flags=wire.DRAINING), 0)
    assert t.draining == {W1}
    assert t.stale == set()
