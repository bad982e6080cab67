"""When a standby tries again to take a Lease another candidate holds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.kube import election

TIMING = election.Timing(lease_duration=6.0, renew_deadline=4.0, retry_period=1.0)


@pytest.mark.parametrize(
    ("seen_at", "now", "wait"),
    [
        pytest.param(0.0, 0.0, 1.0, id="just-renewed: a retry period"),
        pytest.param(0.0, 4.5, 1.0, id="expires-later-than-a-period"),
        pytest.param(0.0, 5.5, 0.5 + election.EXPIRY_MARGIN, id="expires-within-a-period"),
        pytest.param(0.0, 6.0, election.EXPIRY_MARGIN, id="expires-now"),
        pytest.param(0.0, 9.0, election.EXPIRY_MARGIN, id="expired-already"),
    ],
)
def test_the_next_attempt_comes_at_the_expiry_when_it_is_nearer(seen_at, now, wait):
    assert election.next_attempt(seen_at, now, TIMING) == pytest.approx(wait)


@given(
    seen_at=st.floats(min_value=0, max_value=1e6),
    elapsed=st.floats(min_value=0, max_value=100),
)
def test_an_attempt_never_comes_before_the_expiry_nor_later_than_a_retry_period(seen_at, elapsed):
    now = seen_at + elapsed
    wait = election.next_attempt(seen_at, now, TIMING)
    assert 0 < wait <= TIMING.retry_period
    expires = seen_at + TIMING.lease_duration
    assert now + wait > expires or wait == TIMING.retry_period
