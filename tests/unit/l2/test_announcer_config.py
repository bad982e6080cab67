"""The announcer's timing constants and their validation (plain functions, no loop)."""

import pytest

from porterlb.l2 import announcer


def test_burst_starts_at_once_and_outlasts_the_arp_locktime():
    locktime = 1.0  # net.ipv4.neigh.default.locktime: 100 jiffies
    assert announcer.BURST[0] == 0.0
    # However recently the old node last updated the router (at most one locktime ago, as it
    # died), a later round arrives after the lock has expired.
    for last_update in (-locktime + step / 100 for step in range(101)):
        assert any(offset > last_update + locktime for offset in announcer.BURST)
    assert 4.0 <= announcer.BURST[-1] <= 6.0  # "for about 5 s"


def test_config_rejects_bad_burst():
    with pytest.raises(ValueError, match="burst"):
        announcer.Config(burst=(1.0, 0.5))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"audit_interval": 0}, "audit interval 0 must be positive", id="interval"),
        pytest.param({"audit_rate": -1}, "audit rate -1 must be positive", id="rate"),
    ],
)
def test_config_rejects_bad_audit_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        announcer.Config(**settings)
