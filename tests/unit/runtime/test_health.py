import pytest

from porterlb import health

NOW = 1000.0


@pytest.mark.parametrize(
    ("beats", "want"),
    [
        pytest.param([], None, id="nothing-to-watch"),
        pytest.param([health.Beat("event loop", NOW - 1)], None, id="recent"),
        pytest.param([health.Beat("heartbeat thread", None)], None, id="not-started-is-not-stuck"),
        pytest.param(
            [health.Beat("event loop", NOW - 1), health.Beat("reader of eth0", NOW - 11)],
            "reader of eth0 has not run for 11.0 s",
            id="one-stuck-named",
        ),
        pytest.param(
            [health.Beat("a", NOW - 20), health.Beat("b", NOW - 30)],
            "a has not run for 20.0 s; b has not run for 30.0 s",
            id="every-stuck-named",
        ),
        pytest.param([health.Beat("a", NOW - 3, limit=2.0)], "a has not run for 3.0 s", id="limit"),
    ],
)
def test_live(beats, want):
    assert health.live(beats, NOW) == want


@pytest.mark.parametrize(
    ("conditions", "want"),
    [
        pytest.param([], None, id="nothing"),
        pytest.param([("services synced", True), ("eips synced", True)], None, id="all-hold"),
        pytest.param(
            [("services synced", False), ("eips synced", True), ("packet socket on eth0", False)],
            "not yet: services synced, packet socket on eth0",
            id="missing-named",
        ),
    ],
)
def test_ready(conditions, want):
    assert health.ready(conditions) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("127.0.0.1:50055", ("127.0.0.1", 50055), id="v4"),
        pytest.param(":50054", ("", 50054), id="every-address"),
        pytest.param("[2001:db8::7]:50053", ("2001:db8::7", 50053), id="v6"),
        pytest.param("0", None, id="disabled"),
    ],
)
def test_parse_address(text, want):
    assert health.parse_address(text) == want


@pytest.mark.parametrize("text", ["50054", "host:", "host:port", "h:70000", ""])
def test_a_bad_address_is_named(text):
    with pytest.raises(ValueError, match=repr(text)):
        health.parse_address(text)
