"""Which failed requests a move of an IP's traffic explains, judged by the router's frames."""

import random

from hypothesis import given
from hypothesis import strategies as st

from porterlb.lab import forwarding, moves, traffic

OLD, NEW, THIRD = "02:70:6c:00:01:01", "02:70:6c:00:01:03", "02:70:6c:00:01:04"
IP = "198.18.0.200"


def frames(*rows):
    """(at, mac, port) rows of frames to IP."""
    return [forwarding.Frame(at, IP, mac, port) for at, mac, port in rows]


def verdicts(found: moves.Verdict) -> dict[int, str]:
    """Each failed request's verdict by its port."""
    return {f.request.port: f.why for f in found.failures}


def test_only_a_connection_the_router_opened_through_the_old_node_is_moved_by_the_switch():
    at_the_switch = traffic.Request(1.97, "", "reset", 1)  # opened through the old, then moved
    through_the_new = traffic.Request(1.9, "", "reset", 2)  # sent before, opened after
    unseen_before = traffic.Request(1.95, "", "connect-timeout", 3)  # no node opened it
    unseen_after = traffic.Request(2.01, "", "connect-timeout", 4)
    answered = traffic.Request(2.3, "w3", "", 5)
    seen = frames(
        (1.0, OLD, 0), (1.98, OLD, 1), (2.0, NEW, 0), (2.02, NEW, 2), (2.31, NEW, 5)
    )  # fmt: skip
    requests = [at_the_switch, through_the_new, unseen_before, unseen_after, answered]
    found = moves.judge(seen, IP, requests)
    assert [h.mac for h in found.hops] == [OLD, NEW]
    assert found.flips == 0
    assert verdicts(found) == {1: "moved", 2: "kept", 3: "unseen", 4: "unseen"}
    assert [f.request for f in found.moved] == [at_the_switch]
    assert [f.request for f in found.lost] == [through_the_new, unseen_before, unseen_after]
    assert {f.request.port: f.syn_to for f in found.failures} == {1: OLD, 2: NEW, 3: "", 4: ""}


def test_a_failure_with_no_switch_is_a_real_loss():
    seen = frames((1.0, OLD, 1), (1.1, OLD, 0))
    requests = [traffic.Request(1.0, "", "reset", 1), traffic.Request(1.5, "", "refused", 0)]
    found = moves.judge(seen, IP, requests)
    assert verdicts(found) == {1: "kept", 0: "unseen"}
    assert found.moved == []


def test_no_frame_forwarded_at_all_is_a_real_loss():
    found = moves.judge([], IP, [traffic.Request(1.0, "", "connect-timeout", 7)])
    assert (found.hops, verdicts(found)) == ((), {7: "unseen"})


def test_a_switch_after_the_connection_can_no_longer_be_open_explains_nothing():
    opened = 1.0
    seen = frames((opened, OLD, 1), (opened + moves.LIFETIME + 0.5, NEW, 0))
    found = moves.judge(seen, IP, [traffic.Request(opened, "", "answer-timeout", 1)])
    assert verdicts(found) == {1: "kept"}


def test_a_flip_back_breaks_connections_for_real():
    seen = frames(
        (1.0, OLD, 0), (1.1, OLD, 1), (1.2, NEW, 0), (1.3, NEW, 2), (1.4, OLD, 0), (1.5, OLD, 3)
    )  # fmt: skip
    requests = [traffic.Request(at, "", "reset", port) for at, port in ((1.1, 1), (1.3, 2))]
    found = moves.judge(seen, IP, requests)
    assert [h.mac for h in found.hops] == [OLD, NEW, OLD]
    assert found.flips == 1
    assert verdicts(found) == {1: "flip", 2: "flip"}


def test_two_macs_interleaved_count_a_flip_per_return():
    seen = frames((1.0, OLD, 0), (1.2, NEW, 0), (1.4, OLD, 0), (1.6, NEW, 0), (1.8, OLD, 0))
    assert moves.judge(seen, IP, []).flips == 3


def test_coming_back_after_the_node_was_replaced_is_two_moves_not_a_flip():
    back = 1.2 + moves.FLIP_WITHIN + 5.0  # the node's new speaker got Ready meanwhile
    seen = frames((1.0, OLD, 0), (1.1, OLD, 1), (1.2, NEW, 0), (back - 0.1, NEW, 2), (back, OLD, 0))
    requests = [traffic.Request(1.1, "", "reset", 1), traffic.Request(back - 0.1, "", "reset", 2)]
    found = moves.judge(seen, IP, requests)
    assert found.flips == 0
    assert verdicts(found) == {1: "moved", 2: "moved"}


def test_a_move_to_a_third_node_is_no_flip():
    seen = frames((1.0, OLD, 0), (1.2, NEW, 0), (1.4, THIRD, 0))
    assert moves.judge(seen, IP, []).flips == 0


def test_another_ips_frames_do_not_count():
    seen = [*frames((1.0, OLD, 1)), forwarding.Frame(1.2, "198.18.0.201", NEW, 0)]
    found = moves.judge(seen, IP, [traffic.Request(1.0, "", "reset", 1)])
    assert (len(found.hops), verdicts(found)) == (1, {1: "kept"})


_rows = st.lists(
    st.tuples(st.floats(0, 20), st.sampled_from([OLD, NEW, THIRD]), st.integers(0, 5)),
    max_size=30,
    unique_by=lambda row: row[0],  # the record's times are distinct: a tie has no order
)
_requests = st.lists(
    st.builds(
        traffic.Request,
        st.floats(0, 20),
        st.sampled_from(["", "w1"]),
        st.sampled_from(["", "reset"]),
        st.integers(0, 5),
    ),
    max_size=20,
    unique=True,
)


@given(_rows, _requests, st.randoms())
def test_every_failed_request_gets_one_verdict_whatever_order_the_frames_came_in(
    rows, requests, shuffle: random.Random
):
    seen = frames(*rows)
    found = moves.judge(seen, IP, requests)
    failed = sorted((r for r in requests if not r.node), key=lambda r: r.sent)
    assert [f.request for f in found.failures] == failed
    assert len(found.moved) + len(found.lost) == len(failed)
    assert all(f.syn_to for f in found.moved)  # no node opened a connection the router never saw
    shuffle.shuffle(seen)
    assert moves.judge(seen, IP, requests).failures == found.failures


@given(_rows, _requests)
def test_nothing_is_moved_where_the_router_never_switched(rows, requests):
    one_mac = [(at, OLD, port) for at, _, port in rows]
    found = moves.judge(frames(*one_mac), IP, requests)
    assert found.flips == 0
    assert found.moved == []
