"""bench-failover's breakdown: parsing the router's neighbour changes and the speakers' logs,
and the per-IP and per-family figures drawn from them."""

import datetime
import json

import pytest

from porterlb.lab import handover, sampler

OLD, NEW, OTHER = "02:70:6c:1d:01:01", "02:70:6c:1d:01:02", "02:70:6c:1d:01:03"
NODES = {OLD: "w1", NEW: "w2", OTHER: "w3"}


def wall(text):
    return datetime.datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("line", "ip", "mac"),
    [
        pytest.param(
            "[2026-12-06T17:13:24.447085] 198.18.58.13 dev lan0 lladdr 02:70:6c:1d:01:03"
            " REACHABLE ",
            "198.18.58.13",
            OTHER,
            id="reachable",
        ),
        pytest.param(
            "[2026-12-06T17:13:24.447085] 2001:db8:1d:1::203 dev lan0 lladdr"
            " 02:70:6c:1d:01:02 router STALE",
            "2001:db8:1d:1::203",
            NEW,
            id="v6-router-flag",
        ),
        pytest.param(
            "[2026-12-06T17:13:24.447085] 198.18.58.13 lladdr 02:70:6c:1d:01:03 STALE",
            "198.18.58.13",
            OTHER,
            id="filtered-by-device",
        ),
        pytest.param(
            "[2026-12-06T17:13:24.447085] Deleted 198.18.58.13 dev lan0 lladdr"
            " 02:70:6c:1d:01:03 STALE",
            "198.18.58.13",
            None,
            id="deleted",
        ),
        pytest.param(
            "[2026-12-06T17:13:24.447085] 198.18.58.13 dev lan0  INCOMPLETE",
            "198.18.58.13",
            None,
            id="incomplete",
        ),
        pytest.param(
            "[2026-12-06T17:13:24.447085] 198.18.58.13 dev lan0 lladdr 02:70:6c:1d:01:03 FAILED",
            "198.18.58.13",
            None,
            id="failed",
        ),
    ],
)
def test_a_neighbour_change_carries_its_ip_mac_and_monotonic_time(line, ip, mac):
    change = handover.parse_neighbour(line, offset=1000.0)
    assert change == handover.Change(wall("2026-12-06T17:13:24.447085") - 1000.0, ip, mac)


@pytest.mark.parametrize("line", ["", "garbage", "[2026-12-06T17:13:24.447085] 198.18.58.13"])
def test_other_monitor_lines_are_no_change(line):
    assert handover.parse_neighbour(line, offset=0.0) is None


def log_line(msg, time="2026-12-06T17:11:35.851+00:00"):
    record = {"time": time, "level": "info", "logger": "porterlb.l2.announcer", "msg": msg}
    return f"2026-12-06T17:11:35.851970605Z stderr F {json.dumps(record)}"


def test_an_update_line_gives_the_time_the_speaker_logged_it():
    line = log_line("announcing 12 more IP(s): 2001:db8:1d:1::203 and 11 more")
    at = handover.parse_update(line, offset=5.0)
    assert at == pytest.approx(wall("2026-12-06T17:11:35.851+00:00") - 5.0)


@pytest.mark.parametrize(
    "line",
    [
        log_line("no answer to the probe for 2001:db8:1d:1::203 on eth0"),
        log_line("stopped announcing 2001:db8:1d:1::203 on eth0"),
        "2026-12-06T17:11:35.851970605Z stderr F not json: announcing 1 more IP(s)",
        "short",
    ],
    ids=["probe", "stopped", "not-json", "short"],
)
def test_other_log_lines_are_no_update(line):
    assert handover.parse_update(line, offset=0.0) is None


def test_speaker_updates_are_read_per_node_from_the_kubelets_pod_logs(tmp_path):
    for node, times in {"w2": ["17:11:36.000", "17:11:35.000"], "w3": ["17:11:37.500"]}.items():
        logs = tmp_path / f"nodes/{node}/kubelet/pod-logs/porterlb-system_porterlb-speaker-x_u"
        (logs / "speaker").mkdir(parents=True)
        lines = [
            log_line("announcing 1 more IP(s): 198.18.0.9", f"2026-12-06T{t}+00:00") for t in times
        ]
        (logs / "speaker/0.log").write_text("\n".join([*lines, log_line("other")]) + "\n")
    found = handover.speaker_updates(tmp_path, offset=0.0)
    base = wall("2026-12-06T17:11:35+00:00")
    assert {node: [t - base for t in times] for node, times in found.items()} == {
        "w2": pytest.approx([0.0, 1.0]),
        "w3": pytest.approx([2.5]),
    }


def sample(at, ip, *macs):
    return sampler.Sample(at, ip, frozenset(macs))


V4, V6, V6B = "198.18.0.9", "2001:db8:1d:1::9", "2001:db8:1d:1::a"


def test_each_ip_is_timed_on_the_node_that_took_it_by_every_clock():
    samples = [
        sample(9.9, V4, OLD), sample(10.3, V4, NEW), sample(10.5, V4, NEW),
        sample(10.1, V6, OLD), sample(10.4, V6, OTHER),
        sample(10.2, V6B),  # a blackout: never answered by another node afterwards
    ]  # fmt: skip
    changes = [
        handover.Change(9.0, V4, NEW),  # before the fault: not this move
        handover.Change(10.25, V4, NEW),
        handover.Change(10.35, V6, None),
        handover.Change(10.6, V6, OTHER),
    ]
    updates = {"w2": [5.0, 10.2], "w3": [10.3]}
    held = {V4: NEW, V6: NEW}  # at the end of the run; V6 went to w3 (OTHER)
    found = handover.steps(samples, changes, updates, NODES, fault=10.0, old_mac=OLD, held=held)
    assert [rounded(step) for step in found] == [
        (V4, "w2", 0.2, 0.25, 0.3, True),
        (V6, "w3", 0.3, 0.6, 0.4, False),
        (V6B, "", None, None, None, False),
    ]


def rounded(value):
    """The fields of a Step or a Family, floats rounded to a microsecond."""
    return tuple(
        round(field, 6) if isinstance(field, float) else field
        for field in (getattr(value, name) for name in value.__slots__)
    )


def test_the_old_nodes_last_answer_is_its_last_sample_after_the_fault():
    samples = [sample(9.0, V4, OLD), sample(10.2, V4, OLD), sample(10.3, V6, OLD, NEW)]
    samples += [sample(10.5, V4, NEW), sample(10.4, V6, NEW)]
    assert handover.last_answer(samples, OLD, since=10.0) == pytest.approx(0.3)
    assert handover.last_answer(samples[:1], OLD, since=10.0) is None


def test_the_breakdown_gives_each_family_its_first_last_and_worst_lag():
    found = [
        handover.Step(V4, "w2", 0.2, 0.25, 0.3),
        handover.Step(V6, "w3", 0.3, 0.9, 0.4),
        handover.Step(V6B, "w2", 0.2, None, 0.7),
        handover.Step("2001:db8::1", "w2", 0.2, None, 0.5, held=True),  # the monitor missed it
    ]
    v4, v6 = handover.breakdown(found)
    assert rounded(v4) == ("IPv4", 1, (0.2, 0.2), (0.25, 0.25), (0.3, 0.3), 0.05, 0.1, 0, 0)
    assert rounded(v6) == ("IPv6", 3, (0.2, 0.3), (0.9, 0.9), (0.4, 0.7), 0.6, 0.5, 1, 1)
    text = handover.table([v4, v6])
    assert "| IPv6 | 3 | 200 / 300 | 900 / 900 | 400 / 700 | 600 | 500 | 1 | 1 |" in text


def test_a_family_without_ips_is_left_out():
    assert [f.family for f in handover.breakdown([handover.Step(V6, "", None, None, None)])] == [
        "IPv6"
    ]


def test_an_ip_never_answered_by_another_node_is_unmoved_with_what_the_sampler_saw():
    samples = [
        sample(9.9, V4, OLD), sample(10.2, V4, OLD), sample(10.3, V4), sample(10.4, V4),
        sample(10.1, V6, OLD), sample(10.3, V6, NEW),  # moved
        sample(10.2, V6B, OLD, OTHER), sample(10.5, V6B, OLD, OTHER),  # never alone
    ]  # fmt: skip
    found = handover.unmoved(samples, [V6B, V6, V4, "2001:db8::1"], fault=10.0, old_mac=OLD)
    assert [rounded(one) for one in found] == [
        (V4, 3, 1, 2, 0.4, 0.2, frozenset()),
        (V6B, 2, 2, 0, 0.5, 0.5, frozenset({OTHER})),
        ("2001:db8::1", 0, 0, 0, None, None, frozenset()),  # never probed
    ]


def test_an_unmoved_ip_is_explained_by_the_sampler_its_placement_and_the_router():
    found = handover.unmoved(
        [sample(10.2, V6B, OLD, OTHER), sample(10.5, V6B)], [V6B], fault=10.0, old_mac=OLD
    )
    line = handover.explain(
        found[0],
        old="w1",
        placed=["w3"],
        router={V6B: f"{V6B} lladdr {OLD} STALE"},
        switched=[handover.Change(0.25, V6B, "w3")],
        nodes=NODES,
    )
    assert line == (
        f"{V6B} never moved: 2 probes after the fault, 1 answered by w1, 1 by nobody; last probe"
        " at 500 ms, last answer at 200 ms; w3 answered only alongside w1; placed on w3 now;"
        f" router entry now: {V6B} lladdr {OLD} STALE; its changes after the fault: w3 at 250 ms"
    )
    never = handover.unmoved([], [V4], fault=10.0, old_mac=OLD)[0]
    assert handover.explain(never, old="w1", placed=[], router={}, switched=[], nodes=NODES) == (
        f"{V4} never moved: never probed after the fault; placed on no node now;"
        " router entry now: none; its changes after the fault: none"
    )


LISTING = (  # `ip neigh show dev lan0`: one read of the router's table, trailing blanks kept
    f"{V4} lladdr {OLD} STALE \n"
    "2001:db8:1d:1:0:0:0:a lladdr 02:70:6c:1d:01:02 router REACHABLE \n"
    "198.18.0.7 INCOMPLETE \n"
    "198.18.0.6 FAILED \n"
    f"198.18.0.5 lladdr {OTHER} FAILED \n"
    "\n"
)


def test_the_router_table_gives_each_ip_its_row_as_printed_whatever_its_state():
    assert handover.rows(LISTING) == {
        V4: f"{V4} lladdr {OLD} STALE",
        V6B: "2001:db8:1d:1:0:0:0:a lladdr 02:70:6c:1d:01:02 router REACHABLE",
        "198.18.0.7": "198.18.0.7 INCOMPLETE",
        "198.18.0.6": "198.18.0.6 FAILED",
        "198.18.0.5": f"198.18.0.5 lladdr {OTHER} FAILED",
    }
    assert handover.rows("") == {}


def test_only_the_rows_holding_a_mac_count_as_held():
    assert handover.holding(handover.rows(LISTING)) == {V4: OLD, V6B: NEW}


def test_an_unmoved_ips_router_entry_is_its_row_of_the_one_table_read():
    table = handover.rows(LISTING)
    found = handover.unmoved([], [V4, V6], fault=10.0, old_mac=OLD)
    lines = [
        handover.explain(one, old="w1", placed=[], router=table, switched=[], nodes=NODES)
        for one in found
    ]
    assert f"router entry now: {V4} lladdr {OLD} STALE;" in lines[0]
    assert "router entry now: none;" in lines[1]  # no row: the router never resolved it


def test_the_speaker_log_lines_naming_an_ip_after_the_fault_are_found_in_time_order(tmp_path):
    lines = {
        "w2": [
            log_line(f"announcing 1 more IP(s): {V6}", "2026-12-06T17:11:34.000+00:00"),  # before
            log_line(f"announcing 2 more IP(s): {V6}, {V6B}", "2026-12-06T17:11:37.000+00:00"),
        ],
        "w3": [
            log_line(f"stopped announcing {V6} on eth0", "2026-12-06T17:11:36.000+00:00"),
            log_line(f"stopped announcing {V6}0 on eth0", "2026-12-06T17:11:36.500+00:00"),
        ],
    }
    for node, text in lines.items():
        logs = tmp_path / f"nodes/{node}/kubelet/pod-logs/porterlb-system_porterlb-speaker-x_u"
        (logs / "speaker").mkdir(parents=True)
        (logs / "speaker/0.log").write_text("\n".join(text) + "\n")
    since = wall("2026-12-06T17:11:35+00:00")
    assert handover.mentions(tmp_path, V6, offset=0.0, since=since) == [
        f"w3: stopped announcing {V6} on eth0",
        f"w2: announcing 2 more IP(s): {V6}, {V6B}",
    ]
