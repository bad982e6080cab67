"""The real-node lab's pod network and the real kube-proxy, judged by real traffic. Needs root.

One lab per module (two workers, w1 and w2, with porterlb's manager and speakers as host
processes), because bringing it up is the expensive part. On it:

- a Deployment spread over both nodes: each pod's address is in its node's pod CIDR, and a
  pod on w1 reaches the pod on w2, both node IPs and the API server (through the
  ``kubernetes`` Service), with its ServiceAccount's token mounted, its output read through
  the API server (``kubectl logs``);
- a Deployment with one pod, on w2, behind two LoadBalancer Services: with ``Cluster``
  policy, w1's kube-proxy forwards a ClusterIP hit on w1, a NodePort hit on w1 from the
  client and the LoadBalancer IP (answered by porterlb's speaker) to the pod on w2; with
  ``Local`` policy, w1's health check nodePort reports no local endpoint, w2's one, porterlb
  announces the IP from w2 only, and the pod sees the client's own address (with ``Cluster``,
  a node's: kube-proxy masquerades);
- ``porterlb lab service`` on this lab, brought up without porterlb's chart: the backend
  Deployment and a Service in front of it, whose EndpointSlices are the controller manager's.

``lab down`` then leaves nothing (namespaces with their bridges, veths and nftables tables,
processes, cgroups, mounts, host-local's leases in the state directory), and the host's
kernel tunables and conntrack limits are as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lightkube import AsyncClient, codecs
from lightkube.resources.core_v1 import Node, Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from porterlb.api import keys
from porterlb.kube import client as kube_client
from porterlb.lab import cluster, lab, netns, plan
from porterlb.lab.node import hosted, images, mountns, nodelab, workloads
from tests.e2e import marks, reallab
from tests.e2e.conftest import fresh_name
from tests.e2e.test_lab_up import porterlb
from tests.waiting import eventually

pytestmark = [
    *marks.e2e(*nodelab.TOOLS, "curl", control_plane=True),
    pytest.mark.skipif(not reallab.READY, reason=reallab.SKIP_REASON),
]

DEADLINE = 120.0
"""Seconds for pods to start, kube-proxy to sync and porterlb to announce: seconds on an idle
machine, much more on a loaded 2-core CI host."""

HOST_SETTINGS = (
    "/proc/sys/net/netfilter/nf_conntrack_max",
    "/sys/module/nf_conntrack/parameters/hashsize",
)
"""Machine-wide conntrack limits kube-proxy would resize with its default configuration."""

DONE = "probes done"


def host_settings() -> dict[str, str]:
    values = {key: f"{value}" for key, value in mountns.host_values().items()}
    for path in HOST_SETTINGS:
        values[path] = Path(path).read_text().strip()
    return values


API_NOTICE = "Client sent an HTTP request to an HTTPS server"
"""What Go's HTTPS server (kube-apiserver) answers a plain HTTP request with: proof that a pod
reached it, without a TLS client (busybox's cannot agree on a cipher with it)."""


def prober(lab: plan.Lab, node: str, pod_ip: str, node_ips: list[str]) -> dict[str, Any]:
    """A pod on ``node`` that reaches ``pod_ip``'s backend, pings ``node_ips`` and reaches the
    API server through the ``kubernetes`` Service, retrying each a while, printing what
    answered."""
    api = nodelab.api_service_ip(lab)
    script = f"""
retry() {{ n=0; until "$@"; do n=$((n+1)); [ $n -ge 100 ] && return 1; sleep 0.2; done; }}
retry timeout 5 wget -q -O /tmp/body http://{pod_ip}:{cluster.BACKEND_PORT}/ \
  && echo "pod {pod_ip} says $(cat /tmp/body)"
for ip in {" ".join(node_ips)}; do
  retry ping -c 1 -W 2 $ip >/dev/null && echo "node $ip answers"
done
api() {{ printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc {api} 443 | grep -q "{API_NOTICE}"; }}
retry api && echo "api answers"
sa=/var/run/secrets/kubernetes.io/serviceaccount
[ -s $sa/token ] && echo "token mounted for $(cat $sa/namespace)"
echo {DONE}
exec sleep 3600
"""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "prober", "namespace": "default"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "probe",
                    "image": images.NAME,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/busybox", "sh", "-c", script],
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def record() -> Iterator[lab.Record]:
    before = host_settings()
    name = fresh_name()
    try:
        yield hosted.start(nodelab.up(name, workers=2))
        assert host_settings() == before
    finally:
        nodelab.down(name)
    assert reallab.leftovers(name) == []
    assert host_settings() == before


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def api(record: lab.Record) -> AsyncIterator[AsyncClient]:
    w2 = record.plan.nodes[1]
    async with kube_client.connect(record.kubeconfig) as client:
        await workloads.create(
            client,
            [
                workloads.deployment("spread", replicas=2),
                workloads.deployment("on-w2", replicas=1, nodes=[w2.name]),
                workloads.service(record.plan, "cluster", backends="on-w2", policy="Cluster"),
                workloads.service(record.plan, "local", backends="on-w2", policy="Local"),
            ],
        )
        await asyncio.gather(
            workloads.wait_ready(client, "spread"), workloads.wait_ready(client, "on-w2")
        )
        yield client


async def pods_of(client: AsyncClient, app: str) -> dict[keys.NodeName, Pod]:
    """Node name -> the running pod of Deployment ``app`` there."""
    pods = client.list(Pod, namespace="default", labels={workloads.APP_LABEL: app})
    return {
        keys.NodeName(pod.spec.nodeName): pod
        async for pod in pods
        if pod.spec and pod.spec.nodeName and pod.status and pod.status.podIP
    }


async def service(client: AsyncClient, name: str) -> Service:
    return await client.get(Service, name, namespace="default")


async def curl(namespace: str, url: str) -> str | None:
    """GET ``url`` from ``namespace``; the body, or None if it failed."""
    try:
        return await asyncio.to_thread(
            netns.run, namespace, ["curl", "-sS", "--max-time", "2", url]
        )
    except netns.LabError:
        return None


async def peer(namespace: str, ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address the pod behind ``ip`` saw a request from ``namespace`` come from (httpd
    listens on ``::`` and names an IPv4 peer ``[::ffff:A.B.C.D]``)."""
    body = await curl(namespace, f"http://{ip}{workloads.CLIENT_PATH}")
    assert body is not None, f"no answer from {ip}{workloads.CLIENT_PATH}"
    address = ipaddress.ip_address(body.strip().strip("[]"))
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


async def test_pods_get_addresses_from_their_nodes_pod_cidr(record, api):
    cidrs = plan.pod_cidrs(record.plan)
    pods = await pods_of(api, "spread")
    assert set(pods) == set(cidrs)
    for node, pod in pods.items():
        assert pod.status is not None and pod.status.podIP is not None
        assert ipaddress.ip_address(pod.status.podIP) in cidrs[node]
        # The Node keeps the CIDR the lab gave it before its kubelet registered.
        registered = await api.get(Node, node)
        assert registered.spec is not None
        assert registered.spec.podCIDR == str(cidrs[node])


async def test_a_pod_reaches_a_pod_on_another_node_the_node_ips_and_the_api(record, api):
    w1, w2 = record.plan.nodes
    pods = await pods_of(api, "spread")
    status = pods[w2.name].status
    assert status is not None and status.podIP is not None
    target = status.podIP
    node_ips = [str(node.ipv4.ip) for node in record.plan.nodes]
    await api.create(codecs.from_dict(prober(record.plan, w1.name, target, node_ips)))
    output = await eventually(
        lambda: reallab.pod_log(api, "prober", done=DONE),
        within=DEADLINE,
        what="the prober's log through the API server",
    )
    lines = output.splitlines()
    assert f"pod {target} says {w2.name}" in lines
    assert [f"node {ip} answers" for ip in node_ips] == [
        line for line in lines if line.startswith("node ")
    ]
    assert "api answers" in lines
    assert "token mounted for default" in lines


async def test_cluster_policy_forwards_from_node_a_to_the_pod_on_node_b(record, api):
    w1, w2 = record.plan.nodes
    found = await service(api, "cluster")
    assert found.spec is not None and found.spec.ports
    cluster_ip, node_port = found.spec.clusterIP, found.spec.ports[0].nodePort

    # A ClusterIP hit on w1 itself (w1's kube-proxy, its OUTPUT hook).
    body = await eventually(
        lambda: curl(w1.netns, f"http://{cluster_ip}:{cluster.SERVICE_PORT}/"),
        within=DEADLINE,
        what=f"ClusterIP {cluster_ip} from {w1.name}",
    )
    assert body.strip() == w2.name
    # A NodePort hit on w1 from the client, across the router.
    body = await eventually(
        lambda: curl(record.plan.client.netns, f"http://{w1.ipv4.ip}:{node_port}/"),
        within=DEADLINE,
        what=f"NodePort {node_port} on {w1.name} from the client",
    )
    assert body.strip() == w2.name
    # The LoadBalancer IP, answered by porterlb's speaker on whichever node it picked.
    (ip,) = await cluster.wait_ingress(api, "cluster", within=DEADLINE)
    body = await eventually(
        lambda: curl(record.plan.client.netns, f"http://{ip}/"),
        within=DEADLINE,
        what=f"LoadBalancer IP {ip} from the client",
    )
    assert body.strip() == w2.name
    # kube-proxy masquerades external traffic with Cluster policy: the pod sees an address
    # of the node that forwarded it, on the interface it left by (the LAN from w1, the pods'
    # bridge, whose address is its CIDR's first, on w2).
    seen = await peer(record.plan.client.netns, ip)
    nodes = {node.ipv4.ip for node in record.plan.nodes}
    bridges = {cidr[1] for cidr in plan.pod_cidrs(record.plan).values()}
    assert seen in nodes | bridges
    assert seen != record.plan.client.ipv4.ip


async def test_local_policy_serves_only_from_the_node_with_the_pod(record, api):
    w1, w2 = record.plan.nodes
    found = await service(api, "local")
    assert found.spec is not None
    health = found.spec.healthCheckNodePort
    assert health

    async def local_endpoints(node: plan.Node) -> dict[str, Any] | None:
        """What ``node``'s kube-proxy reports for the Service, once it knows it."""
        body = await curl(record.plan.client.netns, f"http://{node.ipv4.ip}:{health}/")
        with contextlib.suppress(ValueError, TypeError):
            report = json.loads(body or "")
            if isinstance(report, dict) and "localEndpoints" in report:
                return report
        return None

    async def counting_its_pod(node: plan.Node) -> dict[str, Any] | None:
        # kube-proxy serves the health check once it knows the Service, which can be before
        # it has read the EndpointSlice naming the pod: wait for the pod to show.
        report = await local_endpoints(node)
        return report if report and report["localEndpoints"] == 1 else None

    await eventually(
        lambda: counting_its_pod(w2),
        within=DEADLINE,
        what=f"{w2.name}'s health check counting its pod",
    )
    # The pod's EndpointSlice is published by now: w1's kube-proxy must not count it as local.
    w1_health = await eventually(
        lambda: local_endpoints(w1), within=DEADLINE, what=f"{w1.name}'s health check nodePort"
    )
    assert w1_health["localEndpoints"] == 0

    (ip,) = await cluster.wait_ingress(api, "local", within=DEADLINE)
    announcer = await eventually(
        lambda: cluster.announced_by(api, "local"),
        within=DEADLINE,
        what="the node announcing the Local Service",
    )
    assert announcer == w2.name
    body = await eventually(
        lambda: curl(record.plan.client.netns, f"http://{ip}/"),
        within=DEADLINE,
        what=f"LoadBalancer IP {ip} with Local policy from the client",
    )
    assert body.strip() == w2.name
    # No masquerading with Local policy: the pod sees the client itself.
    assert await peer(record.plan.client.netns, ip) == record.plan.client.ipv4.ip


async def test_lab_service_without_the_chart_fronts_backend_pods(record, api):
    """Not the process lab's hand-made EndpointSlices, which would name no pod here."""
    name = record.plan.name
    done = await asyncio.to_thread(
        porterlb, "lab", "service", "--name", name, "sample", timeout=2 * DEADLINE
    )
    assert done.returncode == 0, done.stderr
    key, ip = done.stdout.split()
    assert key == "default/sample"
    slices = api.list(
        EndpointSlice, namespace="default", labels={"kubernetes.io/service-name": "sample"}
    )
    managers = {
        (found.metadata.labels or {}).get("endpointslice.kubernetes.io/managed-by")
        async for found in slices
        if found.metadata is not None
    }
    assert managers == {"endpointslice-controller.k8s.io"}
    body = await eventually(
        lambda: curl(record.plan.client.netns, f"http://{ip}/"),
        within=DEADLINE,
        what=f"the sample Service's IP {ip} from the client",
    )
    assert body.strip() in {node.name for node in record.plan.nodes}
    deleted = await asyncio.to_thread(
        porterlb, "lab", "service", "--name", name, "sample", "--delete"
    )
    assert deleted.returncode == 0, deleted.stderr
