import pytest

from porterlb.liveness import drain

DEADLINE = 10.0


def verdict(**changed):
    facts = {
        "now": 1.0,
        "deadline": DEADLINE,
        "heartbeats": True,
        "lease_held": True,
        "holding": 2,
        "heard": True,
        "confirmed": 40,
        "revoked": 40,
    }
    return drain.verdict(**(facts | changed))


@pytest.mark.parametrize(
    ("changed", "exit"),
    [
        pytest.param({}, None, id="ips-still-here"),
        pytest.param({"holding": 0}, drain.Exit.HANDED_OVER, id="handed-over"),
        pytest.param({"holding": 0, "heard": False}, None, id="no-manager-heard-it-drains-yet"),
        pytest.param({"holding": 0, "confirmed": 39}, None, id="last-revocation-not-echoed-yet"),
        pytest.param(
            {"holding": 0, "confirmed": 0, "revoked": 0}, drain.Exit.HANDED_OVER, id="held-none"
        ),
        pytest.param({"heartbeats": False}, drain.Exit.NO_HEARTBEATS, id="no-heartbeats"),
        pytest.param({"lease_held": False}, drain.Exit.NO_MANAGER, id="no-manager"),
        pytest.param({"now": DEADLINE}, drain.Exit.TIMED_OUT, id="timed-out"),
        pytest.param({"now": DEADLINE - 0.001}, None, id="just-before-the-deadline"),
        pytest.param(
            {"heartbeats": False, "lease_held": False, "now": DEADLINE},
            drain.Exit.NO_HEARTBEATS,
            id="no-heartbeats-says-most",
        ),
    ],
)
def test_when_a_draining_speaker_may_stop(changed, exit):
    assert verdict(**changed) is exit
