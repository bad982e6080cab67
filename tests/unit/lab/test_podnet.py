"""The real-node lab's pod network, kube-proxy configuration, kubelet egress and workloads:
the pure parts (configurations, routes, manifests, the CONNECT request parser)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from porterlb.lab import certs, cluster, controlplane, plan
from porterlb.lab.node import egress, nodelab, podnet, proxy, workloads

LAB = plan.build("demo", 3, ipv6=False)


def test_the_cni_configuration_is_a_bridge_with_host_local_leases_in_the_nodes_directory(
    tmp_path: Path,
) -> None:
    config = podnet.cni_config([ipaddress.IPv4Network("198.19.1.0/24")], tmp_path / "ipam")
    bridge = config["plugins"][0]
    assert (bridge["type"], bridge["bridge"], bridge["isGateway"]) == ("bridge", "cni0", True)
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "198.19.1.0/24"}]]
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")


def test_every_worker_and_the_router_route_each_other_workers_pod_cidr_via_its_lan_address():
    w1, w2, w3 = LAB.nodes
    routes = podnet.routes(LAB)
    assert routes[w1.netns] == [
        f"route add 198.19.1.0/24 via {w2.ipv4.ip} dev eth0",
        f"route add 198.19.2.0/24 via {w3.ipv4.ip} dev eth0",
    ]
    assert routes[LAB.router_netns] == [
        f"route add 198.19.{k}.0/24 via {node.ipv4.ip} dev lan0" for k, node in enumerate(LAB.nodes)
    ]


# No deadline: an example takes milliseconds, but a loaded 2-core CI host stalls some.
@settings(deadline=None)
@given(count=st.integers(min_value=1, max_value=plan.MAX_WORKERS))
def test_no_worker_routes_its_own_pod_cidr_and_every_other_one_once(count):
    lab = plan.build("demo", count, ipv6=False)
    cidrs = plan.pod_cidrs(lab)
    routes = podnet.routes(lab)
    for node in lab.nodes:
        routed = [line.split()[2] for line in routes[node.netns]]
        assert sorted(routed) == sorted(str(cidrs[n.name]) for n in lab.nodes if n is not node)
    assert len(routes[lab.router_netns]) == count


def test_the_node_is_created_with_its_pod_cidr():
    manifest = podnet.node(LAB, LAB.nodes[1])
    assert manifest["metadata"]["name"] == "demo-w2"
    assert manifest["spec"] == {"podCIDR": "198.19.1.0/24", "podCIDRs": ["198.19.1.0/24"]}


def test_kube_proxy_changes_no_conntrack_setting_and_knows_its_node(tmp_path: Path):
    command = proxy.argv(
        Path("/bin/kube-proxy"), tmp_path, node="demo-w1", kubeconfig=tmp_path / "kubeconfig"
    )
    assert command == ["/bin/kube-proxy", f"--config={tmp_path / 'kube-proxy.yaml'}"]
    config = yaml.safe_load((tmp_path / "kube-proxy.yaml").read_text())
    assert config["hostnameOverride"] == "demo-w1"
    assert config["mode"] == "nftables"
    assert config["detectLocalMode"] == "NodeCIDR"
    assert config["clientConnection"]["kubeconfig"] == str(tmp_path / "kubeconfig")
    # 0 is "leave it": with kube-proxy's defaults it would resize the host's conntrack table.
    assert set(config["conntrack"].values()) == {0, "0s"}
    assert config["oomScoreAdj"] == 0


def test_kube_proxy_is_bound_to_the_node_proxier_role():
    account, binding = proxy.access_objects()
    assert (account["kind"], account["metadata"]["namespace"]) == ("ServiceAccount", "kube-system")
    assert binding["roleRef"]["name"] == "system:node-proxier"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "kube-system"}
    ]


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(
            b"CONNECT 198.18.0.11:10250 HTTP/1.1\r\nHost: x\r\n\r\n",
            ("198.18.0.11", 10250),
            id="v4",
        ),
        pytest.param(
            b"CONNECT [2001:db8::11]:10250 HTTP/1.1\r\n\r\n", ("2001:db8::11", 10250), id="v6"
        ),
    ],
)
def test_a_connect_request_names_its_target(head, expected):
    assert egress.target(head) == expected


@pytest.mark.parametrize(
    ("head", "message"),
    [
        pytest.param(
            b"GET / HTTP/1.1\r\n\r\n", "not a CONNECT request: 'GET / HTTP/1.1'", id="get"
        ),
        pytest.param(
            b"CONNECT node-1:10250 HTTP/1.1\r\n\r\n", "'node-1:10250': expected IP:PORT", id="name"
        ),
        pytest.param(b"CONNECT 198.18.0.11 HTTP/1.1\r\n\r\n", "expected IP:PORT", id="no-port"),
        pytest.param(b"CONNECT 198.18.0.11:0 HTTP/1.1\r\n\r\n", "port out of range", id="port-0"),
        pytest.param(b"CONNECT 198.18.0.11:1\r\n\r\n", "not a CONNECT request", id="no-version"),
    ],
)
def test_other_requests_are_refused_with_the_reason(head, message):
    with pytest.raises(egress.BadRequest, match=message.replace("(", r"\(")):
        egress.target(head)


def test_the_api_server_reaches_kubelets_through_the_egress_proxy_by_internal_ip(tmp_path: Path):
    bundle = certs.write(tmp_path)
    flags = controlplane.kubelet_flags(tmp_path, bundle, tmp_path / "egress.sock")
    assert "--kubelet-preferred-address-types=InternalIP" in flags
    assert f"--kubelet-client-certificate={tmp_path / 'admin.crt'}" in flags
    config = yaml.safe_load((tmp_path / "egress-selector.yaml").read_text())
    (selection,) = config["egressSelections"]
    assert selection["name"] == "cluster"
    assert selection["connection"] == {
        "proxyProtocol": "HTTPConnect",
        "transport": {"uds": {"udsName": str(tmp_path / "egress.sock")}},
    }


def test_pods_reach_the_api_at_the_first_service_ip_backed_by_the_routers_endpoint():
    assert str(nodelab.api_service_ip(LAB)) == "198.19.128.1"
    assert nodelab.service_range(LAB) == "198.19.128.0/17,2001:db8:ffff:ffff::/112"
    ((endpoint,),) = [[e["addresses"][0] for e in nodelab.api_endpoint_slice(LAB)["endpoints"]]]
    assert endpoint == str(LAB.router_lan.ipv4.ip)


def test_the_backends_spread_over_the_named_nodes_and_serve_their_nodes_name():
    manifest = workloads.deployment("web", replicas=2, nodes=["demo-w2", "demo-w3"])
    spec = manifest["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["env"][0]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert f"-p {cluster.BACKEND_PORT}" in container["command"][-1]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["demo-w2", "demo-w3"]
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert "affinity" not in workloads.deployment("web", replicas=1)["spec"]["template"]["spec"]


@pytest.mark.parametrize("policy", ["Cluster", "Local"])
def test_the_service_selects_the_backends_with_the_policy_asked(policy):
    manifest = workloads.service(LAB, "web", backends="web-pods", policy=policy)
    assert manifest["spec"]["selector"] == {workloads.APP_LABEL: "web-pods"}
    assert manifest["spec"]["externalTrafficPolicy"] == policy
    assert manifest["spec"]["type"] == "LoadBalancer"


DUAL = plan.build("demo", 2, ipv6=True)


def test_a_dual_stack_worker_gets_both_families_in_its_cni_node_and_routes(tmp_path: Path):
    w1, w2 = DUAL.nodes
    v4, v6 = plan.node_pod_cidrs(DUAL)[w2.name]
    config = podnet.cni_config([v4, v6], tmp_path)
    ipam = config["plugins"][0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": str(v4)}], [{"subnet": str(v6)}]]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert podnet.node(DUAL, w2)["spec"] == {"podCIDR": str(v4), "podCIDRs": [str(v4), str(v6)]}
    assert w2.ipv6 is not None
    assert podnet.routes(DUAL)[w1.netns] == [
        f"route add {v4} via {w2.ipv4.ip} dev eth0",
        f"route add {v6} via {w2.ipv6.ip} dev eth0",
    ]
    assert f"route add {v6} via {w2.ipv6.ip} dev lan0" in podnet.routes(DUAL)[DUAL.router_netns]
