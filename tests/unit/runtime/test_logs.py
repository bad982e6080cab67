import json
import logging
import sys

import pytest

from porterlb import logs


def record(**extra: str) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "porterlb.speaker", "levelname": "WARNING", "msg": "%s moved", "args": ("x",)}
    )
    made.__dict__.update(extra)
    return made


def test_json_is_one_object_per_line_with_the_fields_given():
    fields = logs.fields(ip="198.18.0.7", node="w1", pool="lan", service="shop/web")
    line = logs.JsonFormatter().format(record(**fields, unrelated="kept out"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry.pop("time").endswith("+00:00")
    assert entry == {
        "level": "warning",
        "logger": "porterlb.speaker",
        "msg": "x moved",
        "ip": "198.18.0.7",
        "node": "w1",
        "pool": "lan",
        "service": "shop/web",
    }


def test_a_traceback_stays_on_the_one_line():
    failed = record()
    try:
        raise ValueError("bad\nworse")
    except ValueError:
        failed.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(failed)
    assert "\n" not in line
    assert "ValueError: bad\nworse" in json.loads(line)["exc"]


def test_text_shows_the_same_fields_after_the_message():
    line = logs.TextFormatter().format(record(**logs.fields(interface="eth0", ip="2001:db8::1")))
    assert line.endswith("WARNING porterlb.speaker: x moved ip=2001:db8::1 interface=eth0")


@pytest.mark.parametrize(
    ("given", "want"),
    [
        pytest.param({}, {}, id="none"),
        pytest.param({"node": "w1", "pool": None}, {"node": "w1"}, id="none-left-out"),
    ],
)
def test_fields(given, want):
    assert logs.fields(**given) == want
