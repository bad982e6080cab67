"""The fault plans of ``porterlb lab fault``: what each kind drops, kills and unplugs."""

import dataclasses

import pytest

from porterlb import errors
from porterlb.lab import apiproxy, faults, plan
from porterlb.lab.node import nodelab

LAB = plan.build("demo", 3, ipv6=True)
MANAGERS = ("manager/1", "manager/2")
ROUTER = str(LAB.router_lan.ipv4.ip)
W2 = LAB.nodes[1]
assert W2.ipv6 is not None


def build(kind, node="demo-w2"):
    return faults.build(LAB, kind, node, managers=MANAGERS)


def build_real(kind, node="demo-w2", replicas=2):
    return faults.build(LAB, kind, node, nodes="real", replicas=replicas)


def rules(fault, netns):
    """The rule lines of ``fault``'s inet table in ``netns``, by hook."""
    found: dict[str | None, list[str]] = {}
    for table in fault.tables:
        if (table.netns, table.family) != (netns, "inet"):
            continue
        hook = None
        for line in table.ruleset.splitlines():
            line = line.strip()
            if line.startswith("type filter hook"):
                hook = line.split()[3]
            elif line.endswith("counter drop"):
                found.setdefault(hook, []).append(line)
    return found


API_OUT = f"ip daddr {ROUTER} tcp dport {apiproxy.PORT} counter drop"
API_IN = f"ip saddr {ROUTER} tcp sport {apiproxy.PORT} counter drop"
PINGS = "udp dport 7473 counter drop"
PONGS = [
    f"ip saddr {W2.ipv4.ip} udp sport 7473 counter drop",
    f"ip6 saddr {W2.ipv6.ip} udp sport 7473 counter drop",
]


@pytest.mark.parametrize(
    ("kind", "worker", "router"),
    [
        ("api-partition", {"input": [API_IN], "output": [API_OUT]}, {}),
        ("heartbeat-partition", {"input": [PINGS]}, {"input": PONGS}),
        ("ping-loss", {"input": [PINGS]}, {}),
        ("pong-loss", {}, {"input": PONGS}),
        ("node-partition", {"input": [API_IN, PINGS], "output": [API_OUT]}, {"input": PONGS}),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_partition_drops_exactly_its_traffic_where_it_arrives(kind, worker, router):
    fault = build(kind)
    assert rules(fault, W2.netns) == worker
    assert rules(fault, LAB.router_netns) == router
    assert (fault.kill, fault.cables) == ((), ())


@pytest.mark.parametrize("kind", ["api-partition", "heartbeat-partition", "node-partition"])
def test_a_partition_is_silent_and_leaves_the_lan_up(kind):
    for table in build(kind).tables:
        assert "reject" not in table.ruleset
        assert "arp" not in table.ruleset  # ARP and the client's traffic pass
        assert "policy accept" in table.ruleset


def test_each_kind_and_worker_has_tables_of_its_own():
    names = [
        (table.netns, table.name)
        for kind in ("api-partition", "heartbeat-partition", "pong-loss", "node-partition")
        for node in ("demo-w1", "demo-w2")
        for table in build(kind, node).tables
    ]
    assert len(names) == len(set(names))
    assert all(name.startswith(faults.TABLE_PREFIX) for _, name in names)


def test_the_ruleset_is_one_nft_table_with_a_chain_per_hook():
    assert faults.ruleset("porterlb_fault_x", {"input": ["udp dport 1 drop"], "output": []}) == (
        "table inet porterlb_fault_x {\n"
        "  chain input {\n"
        "    type filter hook input priority -10; policy accept;\n"
        "    udp dport 1 drop\n"
        "  }\n"
        "}\n"
    )


def test_a_crash_kills_the_speaker_and_pulls_the_cable():
    fault = build("crash")
    assert fault.kill == ("speaker/demo-w2",)
    assert fault.cables == ("w2",)
    assert fault.tables == ()


def test_a_speaker_kill_kills_the_speaker_alone():
    assert build("speaker-kill") == faults.Plan(
        kind="speaker-kill", node="demo-w2", kill=("speaker/demo-w2",)
    )


def test_managers_down_kills_every_manager_and_no_node():
    assert build("managers-down", None) == faults.Plan(
        kind="managers-down", node=None, kill=MANAGERS
    )


@pytest.mark.parametrize(
    ("kind", "node", "message"),
    [
        ("flood", "demo-w1", "unknown kind"),
        ("crash", None, "which node"),
        ("api-partition", "demo-w9", "no worker 'demo-w9'"),
        ("managers-down", "demo-w1", "give no node"),
    ],
    ids=["unknown-kind", "no-node", "unknown-node", "node-for-managers"],
)
def test_a_bad_fault_is_refused_naming_what_is_wrong(kind, node, message):
    with pytest.raises(errors.InvalidSpec, match=message):
        build(kind, node)


@pytest.mark.parametrize("kind", faults.KINDS)
@pytest.mark.parametrize("nodes", ["process", "real"])
def test_a_plan_survives_the_applied_faults_file(kind, nodes):
    node = None if kind == "managers-down" else "demo-w3"
    fault = faults.build(LAB, kind, node, managers=MANAGERS, nodes=nodes, replicas=3)
    fault = dataclasses.replace(fault, at="2026-12-06T09:42:14Z")
    assert faults.Plan.from_json(fault.to_json()) == fault


def test_a_speaker_pod_delete_deletes_the_pod_and_nothing_else():
    assert build("speaker-pod-delete") == faults.Plan(
        kind="speaker-pod-delete", node="demo-w2", pods=("demo-w2",)
    )


def test_a_plan_recorded_before_pod_faults_existed_still_reads():
    data = build("speaker-kill").to_json()
    for key in ("pods", "cgroups", "containers", "replicas", "ready", "at"):
        del data[key]
    assert faults.Plan.from_json(data) == build("speaker-kill")


# -- on a real-node lab -------------------------------------------------------------------


def test_a_real_crash_kills_the_node_its_runtime_and_pods_pulls_the_cable_and_awaits_it():
    assert build_real("crash") == faults.Plan(
        kind="crash",
        node="demo-w2",
        kill=("containerd/demo-w2", "kubelet/demo-w2", "kube-proxy/demo-w2"),
        cgroups=("/porterlb-demo-w2",),
        cables=("w2",),
        ready=("demo-w2",),
    )


def test_a_real_speaker_kill_kills_its_container_and_awaits_the_kubelet_restarting_it():
    assert build_real("speaker-kill") == faults.Plan(
        kind="speaker-kill", node="demo-w2", containers=("speaker/demo-w2",), ready=("demo-w2",)
    )


def test_real_managers_down_kills_every_manager_container_and_restores_the_replicas():
    assert build_real("managers-down", None, replicas=3) == faults.Plan(
        kind="managers-down", node=None, containers=("manager",), replicas=3
    )
    with pytest.raises(errors.InvalidSpec, match="replicas to restore"):
        build_real("managers-down", None, replicas=None)


SERVICE = str(nodelab.api_service_ip(LAB))
SPEAKER_API = f"ct original ip daddr {SERVICE} counter drop"


@pytest.mark.parametrize(
    ("kind", "worker", "pongs"),
    [
        ("api-partition", {"input": [SPEAKER_API], "output": [SPEAKER_API]}, False),
        ("heartbeat-partition", {"input": [PINGS]}, True),
        ("ping-loss", {"input": [PINGS]}, False),
        ("pong-loss", {}, True),
        ("node-partition", {"input": [API_IN, PINGS], "output": [API_OUT]}, True),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_real_partition_drops_the_speakers_traffic_and_pongs_where_managers_get_them(
    kind, worker, pongs
):
    fault = build_real(kind)
    assert rules(fault, W2.netns).get("input", []) == worker.get("input", [])
    assert rules(fault, W2.netns).get("output", []) == worker.get("output", [])
    bridged = {t.netns: t for t in fault.tables if t.family == "bridge"}
    # every worker may run a manager pod: each drops the victim's pongs into its pod bridge
    assert sorted(bridged) == (sorted(n.netns for n in LAB.nodes) if pongs else [])
    for table in bridged.values():
        assert table.name == f"porterlb_fault_{kind.replace('-', '_')}_w2"
        assert table.ruleset.startswith(f"table bridge {table.name} {{")
        assert "type filter hook output priority -10" in table.ruleset
        assert [line.strip() for line in table.ruleset.splitlines() if "drop" in line] == PONGS
    assert LAB.router_netns not in {t.netns for t in fault.tables}
    assert (fault.kill, fault.cables, fault.containers) == ((), (), ())


def test_real_tables_of_each_kind_and_worker_are_their_own():
    names = [
        (table.netns, table.family, table.name)
        for kind in ("api-partition", "heartbeat-partition", "pong-loss", "node-partition")
        for node in ("demo-w1", "demo-w2")
        for table in build_real(kind, node).tables
    ]
    assert len(names) == len(set(names))
