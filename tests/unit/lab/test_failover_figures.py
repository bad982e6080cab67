"""The pure figures of ``lab bench-failover``: interruptions, overlaps and their summary."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.lab import failover_figures, sampler, traffic


def requests(*pairs):
    return [traffic.Request(sent, node) for sent, node in pairs]


def test_the_interruption_is_the_longest_gap_between_answered_requests():
    flow = requests(
        (0.00, "w1"), (0.01, "w1"), (0.02, ""), (0.03, "w1"), (0.35, "w2"), (0.36, "w2")
    )
    outage = traffic.outage(flow, fault=0.015)
    assert outage.interruption == pytest.approx(0.32)
    assert outage.failed == 1


def test_requests_failed_before_the_first_answer_are_not_the_faults():
    flow = requests((0.00, ""), (0.01, ""), (0.02, "w1"), (0.03, ""), (0.04, "w1"))
    assert traffic.outage(flow, fault=0.025).failed == 1


def test_a_request_answered_just_after_the_fault_does_not_hide_the_outage():
    flow = requests((0.0, "w1"), (0.1, "w1"), (0.5, "w2"))
    assert traffic.outage(flow, fault=0.05).interruption == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("flow", "side"),
    [
        (requests((0.2, "w2")), "before"),
        (requests((0.0, "w1"), (0.2, "")), "after"),
    ],
    ids=["nothing-before", "never-resumed"],
)
def test_no_answer_on_one_side_of_the_fault_is_an_error(flow, side):
    with pytest.raises(ValueError, match=f"no request sent {side} the fault was answered"):
        traffic.outage(flow, fault=0.1)


def outages(*milliseconds, failed=0):
    return [
        failover_figures.Figures(traffic.Outage(ms / 1000, failed), 0.0, 0.0) for ms in milliseconds
    ]


def test_summary_percentiles_are_nearest_rank():
    summary = failover_figures.summarize("worker-crash", outages(*range(100, 1100, 100), failed=2))
    assert summary == failover_figures.Summary(
        name="worker-crash",
        runs=10,
        p50_ms=500.0,
        p90_ms=900.0,
        p99_ms=1000.0,
        max_ms=1000.0,
        failed_requests=20,
        two_answer_ms=0.0,
        blackout_ms=0.0,
        first_ip_ms=None,
        last_ip_ms=None,
    )


@given(st.lists(st.floats(0, 10), min_size=1, max_size=50))
def test_summary_percentiles_are_ordered_and_taken_from_the_runs(seconds):
    summary = failover_figures.summarize(
        "x", [failover_figures.Figures(traffic.Outage(s, 0), 0.0, 0.0) for s in seconds]
    )
    assert summary.p50_ms <= summary.p90_ms <= summary.p99_ms <= summary.max_ms
    assert summary.max_ms == round(max(seconds) * 1000, 1)


def test_table_names_every_scenario_and_the_steady_state_writes():
    text = failover_figures.table(
        [failover_figures.summarize("leader-kill", outages(20, 30))], {"leases": 1.1, "other": 0.0}
    )
    assert "| leader-kill | 2 | 20.0 | 30.0 | 30.0 | 30.0 | 0 | - | - | - | - | 0.0 | 0.0 |" in text
    assert "steady state: 0.00 API writes/s besides 1.10 Lease writes/s" in text


def test_the_summary_keeps_the_largest_overlap_and_move_times_of_its_runs():
    runs = [
        failover_figures.Figures(traffic.Outage(0.2, 0), 0.04, 0.2, first_ip=0.25, last_ip=0.3),
        failover_figures.Figures(traffic.Outage(0.3, 0), 0.0, 0.35, first_ip=0.3, last_ip=0.38),
    ]
    summary = failover_figures.summarize("node-partition", runs)
    assert (summary.two_answer_ms, summary.blackout_ms) == (40.0, 350.0)
    assert (summary.first_ip_ms, summary.last_ip_ms) == (300.0, 380.0)


def test_the_summary_gives_percentiles_of_the_first_and_last_ip_and_the_most_writes():
    runs = [
        failover_figures.Figures(
            traffic.Outage(0.2, 0),
            0.0,
            0.0,
            first_ip=f,
            last_ip=last,
            writes={"services": w},
            silenced=silenced,
        )
        for f, last, w, silenced in [
            (0.25, 0.5, 101, 0.125),
            (0.3, 0.4, 99, 0.25),
            (0.2, 0.6, 100, 0.0),
        ]
    ]
    summary = failover_figures.summarize("worker-crash", runs)
    assert (summary.first_ip_p50_ms, summary.first_ip_p99_ms) == (250.0, 300.0)
    assert (summary.last_ip_p50_ms, summary.last_ip_p99_ms) == (500.0, 600.0)
    assert (summary.last_ip_after_silence_p50_ms, summary.last_ip_after_silence_p99_ms) == (
        375.0,
        600.0,
    )
    assert summary.failover_writes == 101
    text = failover_figures.table([summary], {})
    assert "| 250.0 / 300.0 | 500.0 / 600.0 | 375.0 / 600.0 | 101 |" in text


def test_a_run_whose_ip_never_moved_leaves_the_move_times_unknown():
    runs = [
        failover_figures.Figures(traffic.Outage(0.2, 0), 0.0, 0.0, first_ip=0.25, last_ip=0.3),
        failover_figures.Figures(traffic.Outage(0.3, 0), 0.0, 0.0),
    ]
    summary = failover_figures.summarize("pong-loss", runs)
    assert (summary.first_ip_ms, summary.last_ip_ms) == (None, None)
    assert (summary.last_ip_p50_ms, summary.last_ip_p99_ms) == (None, None)


OLD, NEW = "02:70:6c:00:01:01", "02:70:6c:00:01:02"


def samples(ip, *rows, period=0.02):
    """One sample per row, ``period`` apart from 1.0 s: each row the MACs that answered."""
    return [sampler.Sample(1.0 + n * period, ip, frozenset(macs)) for n, macs in enumerate(rows)]


def test_a_runs_figures_take_the_worst_ip_and_the_first_and_last_to_move():
    fast = samples("198.18.0.200", {OLD}, {OLD}, {NEW}, {NEW}, {NEW})
    slow = samples("198.18.0.201", {OLD}, {OLD, NEW}, {OLD, NEW}, set(), {NEW})
    found = failover_figures.figures(
        traffic.Outage(0.05, 1), fast + slow, fault=1.01, old_mac=OLD, moving=True
    )
    assert found.two_answer == pytest.approx(0.04)
    assert found.blackout == pytest.approx(0.02)
    assert found.first_ip == pytest.approx(0.03)
    assert found.last_ip == pytest.approx(0.07)
    assert found.silenced == pytest.approx(0.03)  # the slow IP's double sample at 1.04
    assert found.last_ip_after_silence == pytest.approx(0.04)


def test_a_fault_that_moves_nothing_has_no_move_times():
    stayed = samples("198.18.0.200", {OLD}, {OLD}, {OLD})
    found = failover_figures.figures(
        traffic.Outage(0.0, 0), stayed, fault=1.01, old_mac=OLD, moving=False
    )
    assert (found.first_ip, found.last_ip, found.two_answer) == (None, None, 0.0)
