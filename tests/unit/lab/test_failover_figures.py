"""The pure figures of ``lab bench-failover``: interruptions and their summary."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.lab import failover, traffic


def requests(*pairs):
    return [traffic.Request(sent, node) for sent, node in pairs]


def test_the_interruption_is_the_longest_gap_between_answered_requests():
    flow = requests(
        (0.00, "w1"), (0.01, "w1"), (0.02, ""), (0.03, "w1"), (0.35, "w2"), (0.36, "w2")
    )
    outage = traffic.outage(flow, fault=0.015)
    assert outage.interruption == pytest.approx(0.32)
    assert outage.failed == 1


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
    return [traffic.Outage(ms / 1000, failed) for ms in milliseconds]


def test_summary_percentiles_are_nearest_rank():
    summary = failover.summarize("worker-crash", outages(*range(100, 1100, 100), failed=2))
    assert summary == failover.Summary(
        name="worker-crash",
        runs=10,
        p50_ms=500.0,
        p90_ms=900.0,
        p99_ms=1000.0,
        max_ms=1000.0,
        failed_requests=20,
    )


@given(st.lists(st.floats(0, 10), min_size=1, max_size=50))
def test_summary_percentiles_are_ordered_and_taken_from_the_runs(seconds):
    summary = failover.summarize("x", [traffic.Outage(s, 0) for s in seconds])
    assert summary.p50_ms <= summary.p90_ms <= summary.p99_ms <= summary.max_ms
    assert summary.max_ms == round(max(seconds) * 1000, 1)


def test_table_names_every_scenario_and_the_steady_state_writes():
    text = failover.table(
        [failover.summarize("leader-kill", outages(20, 30))], {"leases": 1.1, "other": 0.0}
    )
    assert "| leader-kill | 2 | 20.0 | 30.0 | 30.0 | 30.0 | 0 |" in text
    assert "steady state: 0.00 API writes/s besides 1.10 Lease writes/s" in text
