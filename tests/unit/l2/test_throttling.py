"""The log throttle as a step table on a hand-stepped clock: one line per interval per cause,
each carrying the count since the previous one."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.l2 import throttling

INTERVAL = 30.0


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([("a", 0.0, 1, 1)], id="first-occurrence-is-logged-at-once"),
        pytest.param(
            [("a", 0.0, 1, 1), ("a", 1.0, 1, None), ("a", 29.9, 5, None), ("a", 30.0, 1, 7)],
            id="counted-meanwhile-and-reported-with-the-next-line",
        ),
        pytest.param(
            [("a", 0.0, 1, 1), ("b", 0.5, 1, 1), ("a", 1.0, 1, None), ("b", 2.0, 3, None)],
            id="causes-are-independent",
        ),
        pytest.param(
            [("a", 0.0, 64, 64), ("a", 100.0, 1, 1)],
            id="a-batch-counts-as-many-and-a-quiet-cause-starts-afresh",
        ),
        pytest.param(
            [("a", 0.0, 1, 1), ("a", 31.0, 1, 1), ("a", 45.0, 1, None), ("a", 61.0, 2, 3)],
            id="the-interval-runs-from-the-last-line",
        ),
    ],
)
def test_steps(steps):
    throttle = throttling.Throttle[str](INTERVAL)
    for cause, now, occurrences, logged in steps:
        assert throttle.count(cause, now, occurrences) == logged, (cause, now)


def test_forget_logs_the_next_occurrence_at_once():
    throttle = throttling.Throttle[str](INTERVAL)
    assert throttle.count("a", 0.0) == 1
    assert throttle.count("a", 1.0) is None
    throttle.forget("a")
    assert throttle.count("a", 2.0) == 1


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval 0"):
        throttling.Throttle[str](0)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 10), st.integers(1, 100))))
def test_lines_are_spaced_and_counts_add_up(events):
    """However occurrences come, lines per cause are at least an interval apart and their counts
    plus what is still pending add up to every occurrence."""
    throttle = throttling.Throttle[str](INTERVAL)
    now = 0.0
    lines: dict[str, list[float]] = {}
    logged: dict[str, int] = {}
    total: dict[str, int] = {}
    for cause, step, occurrences in events:
        now += step
        total[cause] = total.get(cause, 0) + occurrences
        if (count := throttle.count(cause, now, occurrences)) is not None:
            lines.setdefault(cause, []).append(now)
            logged[cause] = logged.get(cause, 0) + count
    for times in lines.values():
        assert all(b - a >= INTERVAL for a, b in itertools.pairwise(times))
    for cause, occurred in total.items():
        flushed = throttle.count(cause, now + INTERVAL * 2, 0) or 0
        assert logged.get(cause, 0) + flushed == occurred
