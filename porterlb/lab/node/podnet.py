"""The real-node lab's pod network: a bridge per worker, routed between workers over the LAN.

Each worker's containerd calls Debian's ``containernetworking-plugins`` (``/usr/lib/cni``):
``bridge`` puts every pod's veth on ``cni0`` in the worker's namespace, which is the pods'
gateway (the CIDR's first address), and ``host-local`` hands out the worker's pod CIDR
(:func:`porterlb.lab.plan.pod_cidrs`), its state in the node's directory rather than the
host's ``/var/lib/cni``. No overlay: every worker, and the router, has a route to each other
worker's pod CIDR via that worker's LAN address, so a pod's address is seen unchanged on the
LAN, as on a flat bare-metal network (Calico without encapsulation, kube-router).

**Who picks the CIDRs.** The lab, from the plan, not kube-controller-manager's node IPAM
(``--allocate-node-cidrs``): the IPAM controller hands CIDRs out in the order Nodes register,
which varies from run to run, and the routes, the CNI configurations and ``lab info`` would
have to wait for and read back its choice. From the plan they are known before any kubelet
starts: :func:`node` pre-creates each Node with ``spec.podCIDR`` set (immutable once set, and
what kube-proxy's ``detectLocalMode: NodeCIDR`` reads), and the kubelet, finding its Node
registered, keeps it.

**Dual-stack** (``lab up --nodes real --ipv6``). Each worker also gets an IPv6 pod CIDR, a
/64 of :data:`porterlb.lab.plan.POD_V6_BLOCK` (2001:db8:fffe::/48, which no lab LAN, client
subnet or Service range overlaps), routed like the IPv4 one via the worker's IPv6 LAN address.
host-local hands every pod one address of each family, the Node lists both CIDRs (IPv4
first, the cluster's primary family), and each pod's IPv6 default route is its bridge.

**Kernel settings.** A worker forwards IPv4, and IPv6 in a dual-stack lab (it routes its
pods' traffic; the bridge plugin would turn it on anyway) and keeps ``rp_filter=1``: every
pod path is symmetric, since both ends have a route to the other's pod CIDR.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from porterlb.lab import netns, plan

BRIDGE: Final = "cni0"
"""The bridge of the pods in each worker's namespace (the name flannel and the CNI examples
use)."""

NETWORK: Final = "lab-pods"
"""The CNI network name (host-local keeps its leases under it)."""

CNI_VERSION: Final = "1.0.0"
"""Spoken by containernetworking-plugins 1.1.1 (Debian 12) and containerd 1.6's go-cni."""


DEFAULT_ROUTES: Final = {4: "0.0.0.0/0", 6: "::/0"}


def cni_config(
    cidrs: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network], state: Path
) -> dict[str, Any]:
    """The conflist of a worker whose pods get one address from each of ``cidrs`` (one per
    family: dual-stack pods with both); host-local writes its leases under ``state``.

    ``hairpinMode``: a pod that reaches a Service IP whose endpoint is itself gets its own
    packets back through its bridge port. No ``portmap`` plugin: no lab pod uses a
    ``hostPort``, and the plugin would write iptables chains on every pod's removal.
    """
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(cidr)}] for cidr in cidrs],
                    "routes": [{"dst": DEFAULT_ROUTES[cidr.version]} for cidr in cidrs],
                    "dataDir": str(state),
                },
            },
        ],
    }


def routes(lab: plan.Lab) -> dict[str, list[str]]:
    """``ip -batch`` lines per namespace: each worker and the router reach every other
    worker's pod CIDRs via that worker's LAN address of the same family."""
    cidrs = plan.node_pod_cidrs(lab)
    scripts: dict[str, list[str]] = {lab.router_netns: []}
    for node in lab.nodes:
        scripts[node.netns] = []
    for node in lab.nodes:
        for cidr in cidrs[node.name]:
            address = node.ipv4 if cidr.version == 4 else node.ipv6
            assert address is not None, f"{node.name}: an IPv6 pod CIDR in a lab without IPv6"
            via = address.ip
            for other in lab.nodes:
                if other is not node:
                    scripts[other.netns].append(f"route add {cidr} via {via} dev {node.ifname}")
            scripts[lab.router_netns].append(f"route add {cidr} via {via} dev {plan.ROUTER_LAN_IF}")
    return scripts


SYSCTLS: Final = {"net.ipv4.ip_forward": 1}
SYSCTLS_V6: Final = {"net.ipv6.conf.all.forwarding": 1}
"""What each worker needs beyond the default lab's settings (see the module docstring)."""


def up(lab: plan.Lab) -> None:
    """Turn forwarding on in the workers and add the pod routes. Raises LabError."""
    for node in lab.nodes:
        netns.write_sysctls(node.netns, {**SYSCTLS, **(SYSCTLS_V6 if lab.ipv6 else {})})
    for namespace, lines in routes(lab).items():
        if lines:
            netns.run(None, ["ip", "-n", namespace, "-batch", "-"], input="\n".join(lines) + "\n")


def node(lab: plan.Lab, worker: plan.Node) -> dict[str, Any]:
    """The Node of ``worker`` as the lab creates it before its kubelet: its pod CIDRs set
    (IPv4 first, the primary family)."""
    cidrs = [str(cidr) for cidr in plan.node_pod_cidrs(lab)[worker.name]]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": worker.name, "labels": {"kubernetes.io/hostname": worker.name}},
        "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
    }
