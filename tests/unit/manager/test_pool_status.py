"""`porterlb.manager.pool_status`: the Eip status porterlb writes, and when it is worth writing.

The status is written as a JSON merge patch (RFC 7386: a null deletes a key), so the tests
apply ``desired`` to the old status the same way and check that deciding again from the
result changes nothing.
"""

import datetime
import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.api import eip, reasons
from porterlb.api.keys import PoolName, ServiceKey, Slot
from porterlb.ipam import allocator, pool
from porterlb.manager import pool_status

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
LONG_AGO = "2020-01-01T00:00:00Z"


def make_eip(name: str, address: str, *, generation: int = 1) -> eip.Eip:
    return eip.parse(
        {
            "metadata": {"name": name, "generation": generation},
            "spec": {"address": address, "protocol": "layer2"},
        }
    )


def loaded(*eips: eip.Eip, holders: dict[str, str] | None = None) -> allocator.Allocator:
    """An allocator holding `eips`; `holders` maps ``ns/name`` to ``pool:ip``."""
    alloc = allocator.Allocator()
    alloc.set_pools([pool.Pool(e.name, e.addresses) for e in eips if e.addresses is not None])
    for port, (key, where) in enumerate((holders or {}).items(), start=1):
        name, _, ip = where.partition(":")
        sharing = allocator.Sharing("k", frozenset({("TCP", port)}))
        alloc.assign(
            Slot(ServiceKey(key), ipaddress.ip_address(ip).version),
            allocator.Request(PoolName(name), ipaddress.ip_address(ip), sharing=sharing),
        )
    return alloc


def merge(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch."""
    out = dict(old)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            current = out.get(key)
            out[key] = merge(current if isinstance(current, dict) else {}, value)
        else:
            out[key] = value
    return out


def split(status: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The status without its condition, and the condition without its timestamp."""
    [condition] = status["conditions"]
    rest = {k: v for k, v in status.items() if k != "conditions"}
    bare = {k: v for k, v in condition.items() if k != "lastTransitionTime"}
    return rest, bare


def assert_recent(stamp: str) -> None:
    assert TIMESTAMP.fullmatch(stamp), stamp
    when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    age = datetime.datetime.now(datetime.UTC) - when
    assert datetime.timedelta(seconds=-1) <= age <= datetime.timedelta(seconds=60), stamp


def ready(message: str, generation: int = 1) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True",
        "reason": reasons.POOL_READY,
        "message": message,
        "observedGeneration": generation,
    }


# -- desired: a served pool ------------------------------------------------------------------


def test_served_pool_reports_usage_as_openelb():
    lan = make_eip("lan", "198.18.0.0/24", generation=4)
    alloc = loaded(
        lan,
        holders={
            "shop/a": "lan:198.18.0.1",
            "shop/c": "lan:198.18.0.2",
            "blog/b": "lan:198.18.0.2",
        },
    )
    status = pool_status.desired(lan, problem=None, alloc=alloc, old={})
    rest, condition = split(status)
    assert rest == {
        "usage": 2,
        "poolSize": 256,
        "firstIP": "198.18.0.0",
        "lastIP": "198.18.0.255",
        "v4": True,
        "occupied": False,
        "ready": True,
        "used": {"198.18.0.1": "shop/a", "198.18.0.2": "blog/b;shop/c"},
    }
    assert condition == ready('Eip "lan" (198.18.0.0/24) serves 254 addresses', generation=4)
    assert_recent(status["conditions"][0]["lastTransitionTime"])


@pytest.mark.parametrize(
    ("address", "size", "first", "last", "v4", "serves"),
    [
        pytest.param("198.18.0.7", 1, "198.18.0.7", "198.18.0.7", True, 1, id="single-ip"),
        pytest.param("198.18.0.0/31", 2, "198.18.0.0", "198.18.0.1", True, 2, id="v4-31"),
        pytest.param("198.18.0.0/30", 4, "198.18.0.0", "198.18.0.3", True, 2, id="v4-30"),
        pytest.param(
            "198.18.0.10-198.18.0.20", 11, "198.18.0.10", "198.18.0.20", True, 11, id="range"
        ),
        pytest.param("10.0.0.0/8", 2**24, "10.0.0.0", "10.255.255.255", True, 2**24 - 2, id="/8"),
        pytest.param("0.0.0.0/0", 2**32, "0.0.0.0", "255.255.255.255", True, 2**32 - 2, id="v4-0"),
        pytest.param("2001:db8::/120", 256, "2001:db8::", "2001:db8::ff", False, 255, id="v6-120"),
        pytest.param(
            "2001:db8::/66",
            2**62,
            "2001:db8::",
            "2001:db8::3fff:ffff:ffff:ffff",
            False,
            2**62 - 1,
            id="v6-66-fits",
        ),
        pytest.param(
            "2001:db8::/65",
            2**63 - 1,
            "2001:db8::",
            "2001:db8::7fff:ffff:ffff:ffff",
            False,
            2**63 - 1,
            id="v6-65-capped",
        ),
        pytest.param(
            "2001:db8::/64",
            2**63 - 1,
            "2001:db8::",
            "2001:db8::ffff:ffff:ffff:ffff",
            False,
            2**64 - 1,
            id="v6-64-capped",
        ),
        pytest.param(
            "::/0",
            2**63 - 1,
            "::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            False,
            2**128 - 1,
            id="v6-all-capped",
        ),
    ],
)
def test_served_pool_shape(address, size, first, last, v4, serves):
    lan = make_eip("lan", address)
    status = pool_status.desired(lan, problem=None, alloc=loaded(lan), old={})
    rest, condition = split(status)
    assert rest == {
        "usage": 0,
        "poolSize": size,
        "firstIP": first,
        "lastIP": last,
        "v4": v4,
        "occupied": False,
        "ready": True,
        "used": None,
    }
    assert rest["poolSize"] <= pool_status.INT64_MAX == 2**63 - 1
    assert condition["message"] == f'Eip "lan" ({address}) serves {serves} addresses'


@pytest.mark.parametrize(
    ("address", "holders", "occupied"),
    [
        pytest.param("198.18.0.7/32", {"s/a": "lan:198.18.0.7"}, True, id="one-of-one"),
        pytest.param(
            "198.18.0.0/30",
            {"s/a": "lan:198.18.0.1", "s/b": "lan:198.18.0.2"},
            True,
            id="usable-full-though-poolsize-is-4",
        ),
        pytest.param("198.18.0.0/30", {"s/a": "lan:198.18.0.1"}, False, id="one-of-two"),
        pytest.param(
            "198.18.0.1-198.18.0.2",
            {"s/a": "lan:198.18.0.1", "s/b": "lan:198.18.0.1"},
            False,
            id="shared-counts-once",
        ),
        pytest.param(
            "198.18.0.1-198.18.0.2",
            {"s/a": "lan:198.18.0.1", "s/b": "lan:198.18.0.2"},
            True,
            id="range-full",
        ),
    ],
)
def test_occupied_compares_with_what_is_handed_out(address, holders, occupied):
    lan = make_eip("lan", address)
    status = pool_status.desired(lan, problem=None, alloc=loaded(lan, holders=holders), old={})
    assert status["occupied"] is occupied
    assert status["usage"] == len(set(holders.values()))


def test_used_addresses_no_longer_held_are_deleted():
    lan = make_eip("lan", "198.18.0.0/24")
    alloc = loaded(lan, holders={"shop/a": "lan:198.18.0.1"})
    old = {"used": {"198.18.0.1": "shop/old", "198.18.0.9": "shop/gone"}, "usage": 2}
    status = pool_status.desired(lan, problem=None, alloc=alloc, old=old)
    assert status["used"] == {"198.18.0.1": "shop/a", "198.18.0.9": None}
    assert status["usage"] == 1
    assert merge(old, status)["used"] == {"198.18.0.1": "shop/a"}


def test_used_addresses_of_other_pools_stay_apart():
    lan, big = make_eip("lan", "198.18.0.0/24"), make_eip("big", "198.18.1.0/24")
    alloc = loaded(lan, big, holders={"s/a": "lan:198.18.0.1", "s/b": "big:198.18.1.1"})
    assert pool_status.desired(lan, problem=None, alloc=alloc, old={})["used"] == {
        "198.18.0.1": "s/a"
    }
    assert pool_status.desired(big, problem=None, alloc=alloc, old={})["used"] == {
        "198.18.1.1": "s/b"
    }


# -- desired: a pool that is not served ------------------------------------------------------

OVERLAP = (reasons.POOL_OVERLAP, 'Eip "late" (198.18.0.0/25) overlaps Eip "lan" (198.18.0.0/24)')
UNSUPPORTED = (reasons.UNSUPPORTED_PROTOCOL, 'Eip "late": protocol bgp is not served')


@pytest.mark.parametrize(
    ("address", "problem", "reason", "message"),
    [
        pytest.param("198.18.0.0/25", OVERLAP, *OVERLAP, id="overlap"),
        pytest.param("198.18.0.0/25", UNSUPPORTED, *UNSUPPORTED, id="unsupported"),
        pytest.param(
            "198.18.0.1/24",
            None,
            reasons.POOL_INVALID,
            "Eip \"late\": address '198.18.0.1/24' has host bits set: the network is 198.18.0.0/24",
            id="invalid-address",
        ),
        pytest.param(
            "nonsense",
            (reasons.POOL_INVALID, "given"),
            reasons.POOL_INVALID,
            "given",
            id="problem-wins-over-error",
        ),
    ],
)
def test_pool_not_served(address, problem, reason, message):
    late = make_eip("late", address, generation=3)
    old = {"used": {"198.18.0.1": "shop/a"}, "usage": 1, "occupied": True, "ready": True}
    status = pool_status.desired(late, problem=problem, alloc=allocator.Allocator(), old=old)
    rest, condition = split(status)
    assert rest == {
        "usage": 0,
        "occupied": False,
        "ready": False,
        "used": {"198.18.0.1": None},
    }
    assert condition == {
        "type": "Ready",
        "status": "False",
        "reason": reason,
        "message": message,
        "observedGeneration": 3,
    }
    assert_recent(status["conditions"][0]["lastTransitionTime"])
    assert merge(old, status)["used"] == {}


def test_pool_not_served_with_nothing_used():
    late = make_eip("late", "198.18.0.0/25")
    status = pool_status.desired(late, problem=OVERLAP, alloc=allocator.Allocator(), old={})
    assert status["used"] is None


# -- the Ready condition's transition time ---------------------------------------------------


def old_condition(status: str, reason: str = reasons.POOL_READY) -> dict[str, Any]:
    return {
        "conditions": [
            {"type": "Other", "status": "True", "lastTransitionTime": "1999-01-01T00:00:00Z"},
            {
                "type": "Ready",
                "status": status,
                "reason": reason,
                "message": "before",
                "observedGeneration": 1,
                "lastTransitionTime": LONG_AGO,
            },
        ]
    }


@pytest.mark.parametrize(
    ("old", "problem", "kept"),
    [
        pytest.param(old_condition("True"), None, True, id="ready-stays-ready"),
        pytest.param(old_condition("False", "PoolOverlap"), OVERLAP, True, id="stays-unready"),
        pytest.param(
            old_condition("False", "PoolOverlap"), UNSUPPORTED, True, id="reason-changes-only"
        ),
        pytest.param(old_condition("False"), None, False, id="becomes-ready"),
        pytest.param(old_condition("True"), OVERLAP, False, id="becomes-unready"),
        pytest.param({}, None, False, id="first-status"),
        pytest.param(
            {"conditions": [{"type": "Ready", "status": "True"}]},
            None,
            False,
            id="old-without-time",
        ),
    ],
)
def test_transition_time_moves_only_with_the_status(old, problem, kept):
    lan = make_eip("lan", "198.18.0.0/24")
    status = pool_status.desired(lan, problem=problem, alloc=loaded(lan), old=old)
    [condition] = status["conditions"]  # the unrelated condition is not carried over
    if kept:
        assert condition["lastTransitionTime"] == LONG_AGO
    else:
        assert condition["lastTransitionTime"] != LONG_AGO
        assert_recent(condition["lastTransitionTime"])


@pytest.mark.parametrize(
    ("ready_", "old", "since"),
    [
        pytest.param(True, None, None, id="no-old"),
        pytest.param(True, {"status": "True", "lastTransitionTime": LONG_AGO}, LONG_AGO, id="same"),
        pytest.param(False, {"status": "True", "lastTransitionTime": LONG_AGO}, None, id="flip"),
        pytest.param(
            False, {"status": "False", "lastTransitionTime": LONG_AGO}, LONG_AGO, id="same-false"
        ),
    ],
)
def test_condition(ready_, old, since):
    got = pool_status.condition(ready=ready_, reason="R", message="m", old=old, generation=7)
    assert {k: v for k, v in got.items() if k != "lastTransitionTime"} == {
        "type": "Ready",
        "status": "True" if ready_ else "False",
        "reason": "R",
        "message": "m",
        "observedGeneration": 7,
    }
    if since is None:
        assert_recent(got["lastTransitionTime"])
    else:
        assert got["lastTransitionTime"] == since


# -- changed ---------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "usage": 1,
    "poolSize": 256,
    "firstIP": "198.18.0.0",
    "used": {"198.18.0.1": "shop/a"},
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "PoolReady",
            "message": "m",
            "observedGeneration": 1,
            "lastTransitionTime": LONG_AGO,
        }
    ],
}


def with_condition(**fields: Any) -> list[dict[str, Any]]:
    return [{**BASE["conditions"][0], **fields}]


@pytest.mark.parametrize(
    ("new", "want"),
    [
        pytest.param(BASE, False, id="same"),
        pytest.param({}, False, id="empty-patch"),
        pytest.param({"usage": 1}, False, id="subset"),
        pytest.param({"usage": 2}, True, id="usage"),
        pytest.param({"poolSize": 255}, True, id="pool-size"),
        pytest.param({"v4": True}, True, id="new-key"),
        pytest.param({"firstIP": None}, True, id="null-deletes-present-key"),
        pytest.param({"lastIP": None}, False, id="null-of-absent-key"),
        pytest.param(
            {"conditions": with_condition(lastTransitionTime="2030-01-01T00:00:00Z")},
            False,
            id="condition-time-ignored",
        ),
        pytest.param({"conditions": with_condition(status="False")}, True, id="condition-status"),
        pytest.param({"conditions": with_condition(reason="X")}, True, id="condition-reason"),
        pytest.param({"conditions": with_condition(message="n")}, True, id="condition-message"),
        pytest.param(
            {"conditions": with_condition(observedGeneration=2)}, True, id="condition-generation"
        ),
        pytest.param({"conditions": []}, True, id="condition-removed"),
        pytest.param(
            {"conditions": [*with_condition(), {"type": "Other"}]}, True, id="condition-added"
        ),
        pytest.param({"used": {"198.18.0.1": "shop/a"}}, False, id="used-same"),
        pytest.param(
            {"used": {"198.18.0.1": "shop/a", "198.18.0.2": None}},
            False,
            id="used-null-of-absent-ip",
        ),
        pytest.param({"used": {"198.18.0.1": "shop/b"}}, True, id="used-other-holder"),
        pytest.param(
            {"used": {"198.18.0.1": "shop/a", "198.18.0.2": "shop/b"}}, True, id="used-added"
        ),
        pytest.param({"used": {"198.18.0.1": None}}, True, id="used-deleted"),
        pytest.param({"used": None}, True, id="used-all-deleted"),
    ],
)
def test_changed(new, want):
    assert pool_status.changed(BASE, new) is want


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        pytest.param({}, {"used": None}, False, id="no-used-either-way"),
        pytest.param({"used": {}}, {"used": None}, False, id="empty-used"),
        pytest.param({}, {"conditions": []}, False, id="no-conditions-either-way"),
        pytest.param({}, {"conditions": BASE["conditions"]}, True, id="first-condition"),
    ],
)
def test_changed_from_empty(old, new, want):
    assert pool_status.changed(old, new) is want


# -- convergence -----------------------------------------------------------------------------

IPS = [f"198.18.0.{i}" for i in range(1, 7)]
KEYS = ["shop/a", "shop/bb", "blog/ccc", "blog/dddd"]


@given(
    holders=st.dictionaries(st.sampled_from(KEYS), st.sampled_from(IPS), max_size=4),
    stale=st.dictionaries(st.sampled_from([*IPS, "198.18.0.9"]), st.sampled_from(KEYS)),
    problem=st.sampled_from([None, OVERLAP, UNSUPPORTED]),
    generation=st.integers(1, 5),
)
def test_writing_desired_converges(holders, stale, problem, generation):
    """After one write of ``desired``, deciding again finds nothing to change."""
    lan = make_eip("lan", "198.18.0.0/29", generation=generation)
    alloc = loaded(lan, holders={k: f"lan:{ip}" for k, ip in holders.items()})
    old: dict[str, Any] = {"used": stale, "usage": len(stale), "poolSize": 99}
    first = pool_status.desired(lan, problem=problem, alloc=alloc, old=old)
    written = merge(old, first)
    again = pool_status.desired(lan, problem=problem, alloc=alloc, old=written)
    assert not pool_status.changed(written, again)
    assert again["conditions"] == first["conditions"]  # the transition time stays put
    if problem is None:
        by_ip: dict[str, list[str]] = {}
        for key, ip in holders.items():
            by_ip.setdefault(ip, []).append(key)
        assert (written.get("used") or {}) == {ip: ";".join(sorted(k)) for ip, k in by_ip.items()}
        assert written["usage"] == len(by_ip)
    else:
        assert not written.get("used")
        assert written["usage"] == 0


def test_a_pool_with_a_malformed_node_selector_keeps_its_usage_but_is_not_ready():
    lan = eip.parse(
        {
            "metadata": {"name": "lan", "generation": 2},
            "spec": {
                "address": "198.18.0.0/24",
                "protocol": "layer2",
                "nodeSelector": {"matchLabels": {"bad key": "a"}},
            },
        }
    )
    alloc = loaded(lan, holders={"shop/a": "lan:198.18.0.1"})
    status = pool_status.desired(lan, problem=None, alloc=alloc, old={})
    rest, condition = split(status)
    assert rest["usage"] == 1
    assert rest["used"] == {"198.18.0.1": "shop/a"}
    assert rest["ready"] is False
    assert condition == {
        "type": "Ready",
        "status": "False",
        "reason": reasons.INVALID_NODE_SELECTOR,
        "message": lan.node_selector_error,
        "observedGeneration": 2,
    }


# -- pacing of the writes -----------------------------------------------------------------


def written(
    at: float, entries: int, own: int | None = None, counted: int = 0
) -> pool_status.Written:
    own = entries if own is None else own
    return pool_status.Written(at=at, entries=entries, own=own, counted=counted)


@pytest.mark.parametrize(
    ("now", "last", "changed", "changes", "want"),
    [
        pytest.param(5.0, None, 4.9, 1, 0.0, id="never written: at once"),
        pytest.param(100.0, written(99.5, 10), 99.9, 3, 0.5, id="busy small pool: 1 s apart"),
        pytest.param(100.0, written(95.0, 1000), 100.0, 250, 0.0, id="busy: a quarter changed"),
        pytest.param(100.0, written(95.0, 1000), 100.0, 249, 2.0, id="busy: again once still"),
        pytest.param(100.0, written(99.0, 1000), 99.5, 10, 1.5, id="still: 2 s after the change"),
        pytest.param(100.0, written(99.0, 1000), 90.0, 10, 1.0, id="still long since: 500/s"),
        pytest.param(100.0, written(99.0, 1000), None, 0, 1.0, id="unchanged since start: 500/s"),
        pytest.param(
            100.0, written(95.0, 10_000, own=1000), 99.9, 10, 15.0, id="all Eips share 500/s"
        ),
        pytest.param(
            100.0, written(99.5, 4, counted=7), 99.9, 8, 0.5, id="changed while being written"
        ),
        pytest.param(100.0, written(99.5, 4, counted=8), 99.9, 8, 1.9, id="seen by the last write"),
    ],
)
def test_write_after(now, last, changed, changes, want):
    wait = pool_status.write_after(now, written=last, changed=changed, changes=changes)
    assert wait == pytest.approx(want)


@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=200),
)
def test_a_busy_pool_writes_at_most_five_entries_per_change(sizes):
    """However the allocations are spread in time, while the pool keeps changing (never still)
    the entries its writes carry stay under CHANGE_ENTRIES + 1 per change (plus the first)."""
    now, used, total, changes = 0.0, 0, 0, 0
    last: pool_status.Written | None = None
    for step in sizes:  # `step` allocations, then the Eip is looked at
        now += 0.5
        used += step
        changes += step
        if pool_status.write_after(now, written=last, changed=now, changes=changes) == 0:
            total += used
            last = pool_status.Written(at=now, entries=used, own=used, counted=changes)
    first = sizes[0]
    assert total <= (pool_status.CHANGE_ENTRIES + 1) * used + first
