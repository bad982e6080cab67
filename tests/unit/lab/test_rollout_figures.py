"""The pure figures of ``lab bench-rollout``: per phase, over every IP."""

import pytest

from porterlb.lab import forwarding, rollout, sampler, traffic

W1, W2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
NODES = {W1: "w1", W2: "w2"}


def requests(*pairs):
    return [traffic.Request(sent, node) for sent, node in pairs]


def sample(at, ip, *macs):
    return sampler.Sample(at, ip, frozenset(macs))


def frame(at, ip, mac, port=0):
    return forwarding.Frame(at, ip, mac, port)


def test_a_clean_handover_counts_no_failure_and_no_overlap():
    flows = {
        "198.18.0.10": requests((1.0, "w1"), (1.1, "w1"), (1.2, "w2"), (1.3, "w2")),
        "198.18.0.11": requests((1.0, "w2"), (1.1, "w2"), (1.2, "w2"), (1.3, "w2")),
    }
    samples = [
        sample(1.00, "198.18.0.10", W1),
        sample(1.02, "198.18.0.10", W1),
        sample(1.04, "198.18.0.10"),  # the switch: nobody for 20 ms
        sample(1.06, "198.18.0.10", W2),
        sample(1.00, "198.18.0.11", W2),
        sample(1.06, "198.18.0.11", W2),
    ]
    frames = [
        frame(1.0, "198.18.0.10", W1),
        frame(1.15, "198.18.0.10", W2),
        frame(1.0, "198.18.0.11", W2),
    ]
    found = rollout.figures(
        "speakers", flows, samples, frames, start=1.0, end=1.3, stops=[0.4, 0.6], nodes=NODES
    )
    assert found == rollout.Figures(
        phase="speakers",
        restarts=2,
        ips=2,
        requests=8,
        failed_requests=0,
        failed_max_per_ip=0,
        gap_max_ms=100.0,
        two_answer_ms=0.0,
        blackout_ms=20.0,
        moved_ips=1,
        longest_stop_s=0.6,
        moved_requests=0,
        lost_requests=0,
        flips=0,
        per_ip=(
            rollout.IpFigures("198.18.0.10", 4, 0, 0, 0, {}, ("w1", "w2"), 0),
            rollout.IpFigures("198.18.0.11", 4, 0, 0, 0, {}, ("w2",), 0),
        ),
    )


def test_failures_overlaps_and_gaps_are_counted_per_ip_within_the_phase():
    flows = {
        "198.18.0.10": requests(
            (0.5, ""),  # before the phase: not counted
            (1.0, "w1"),
            (1.1, ""),
            (1.2, ""),
            (1.5, "w2"),
        ),
        "198.18.0.11": requests((1.0, "w2"), (1.1, ""), (1.2, "w2")),
    }
    samples = [
        sample(1.00, "198.18.0.10", W1),
        sample(1.02, "198.18.0.10", W1, W2),
        sample(1.04, "198.18.0.10", W1, W2),
        sample(1.06, "198.18.0.10", W2),
        sample(2.50, "198.18.0.10", W1, W2),  # after the phase: not counted
    ]
    found = rollout.figures(
        "managers", flows, samples, [], start=1.0, end=2.0, stops=[1.0], nodes=NODES
    )
    assert (found.failed_requests, found.failed_max_per_ip) == (3, 2)
    assert found.requests == 7
    assert found.gap_max_ms == pytest.approx(500.0)
    assert found.two_answer_ms == pytest.approx(40.0)
    assert found.moved_ips == 1


def test_an_ip_never_answered_in_the_phase_has_the_whole_phase_as_its_gap():
    flows = {"198.18.0.10": requests((1.0, ""), (1.5, ""))}
    found = rollout.figures("speakers", flows, [], [], start=1.0, end=3.0, stops=[], nodes=NODES)
    assert (found.gap_max_ms, found.failed_requests, found.moved_ips) == (2000.0, 2, 0)


def test_the_router_decides_which_failures_the_move_explains():
    ip = "198.18.0.10"
    flows = {
        ip: [
            traffic.Request(1.0, "w1", "", 1),
            traffic.Request(1.1, "", "reset", 2),  # opened through w1, moved at 1.15
            traffic.Request(1.12, "", "reset", 3),  # sent before the switch, opened after it
            traffic.Request(1.2, "w2", "", 4),
        ]
    }
    frames = [
        frame(1.0, ip, W1, 1),
        frame(1.11, ip, W1, 2),
        frame(1.15, ip, W2),
        frame(1.16, ip, W2, 3),
        frame(1.2, ip, W2, 4),
        frame(2.5, ip, W1),  # after the phase: not counted
    ]
    found = rollout.figures(
        "speakers", flows, [], frames, start=1.0, end=2.0, stops=[0.5], nodes={W1: "w1"}
    )
    assert (found.failed_requests, found.moved_requests, found.lost_requests) == (2, 1, 1)
    assert found.per_ip == (rollout.IpFigures(ip, 4, 2, 1, 1, {"kept": 1}, ("w1", W2), 0),)


def test_a_flip_counts_against_the_phase():
    ip = "198.18.0.10"
    flows = {ip: requests((1.0, "w1"), (1.3, "w2"), (1.6, "w1"))}
    frames = [frame(1.0, ip, W1), frame(1.3, ip, W2), frame(1.6, ip, W1)]
    found = rollout.figures(
        "managers", flows, [], frames, start=1.0, end=2.0, stops=[], nodes=NODES
    )
    assert (found.flips, found.per_ip[0].hops) == (1, ("w1", "w2", "w1"))


def test_the_tables_have_a_row_per_phase_then_one_per_phase_and_ip():
    flows = {"198.18.0.10": requests((1.0, "w1"), (1.1, ""))}
    frames = [frame(1.0, "198.18.0.10", W1)]
    rows = [
        rollout.figures(p, flows, [], frames, start=1.0, end=1.1, stops=[0.2], nodes=NODES)
        for p in rollout.PHASES
    ]
    lines = rollout.table(rows).splitlines()
    assert len(lines) == 2 + len(rollout.PHASES) + 1 + 2 + len(rollout.PHASES)
    assert lines[2].startswith("| steady | 1 | 1 | 2 | 1 | 0 | 1 | 1 |")
    assert lines[-1] == "| managers | 198.18.0.10 | 2 | 1 | 0 | 1 | unseen 1 | w1 | 0 |"
