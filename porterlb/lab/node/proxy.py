"""The real kube-proxy on each real-node lab worker: its configuration and its credentials.

kube-proxy (built beside the kubelet, v1.36.3) runs in its worker's network namespace and in
the lab's mount namespace (:mod:`porterlb.lab.node.mountns`), like the kubelet. What each
setting is for:

- ``mode: nftables``: Debian 12's ``nft`` 1.0.6 and this kernel have everything it needs
  (nft >= 1.0.1, kernel >= 5.13), and its rules live in one ``ip kube-proxy`` table of the
  worker's namespace, gone with it. iptables mode would work too (iptables-nft 1.8.9);
  nftables is kube-proxy's newer mode, and the one without a shared ``xtables.lock``.
- ``conntrack``: every field 0, which kube-proxy reads as "leave it". ``nf_conntrack_max``
  (from ``maxPerCore``) and the conntrack hash size are machine-wide: with the defaults
  every lab's kube-proxy would resize the host's table. The timeouts are per namespace,
  but the lab keeps the kernel's own, as it does for every other setting.
- ``oomScoreAdj: 0``: the default, -999, needs ``CAP_SYS_RESOURCE``, which root lacks here
  (kube-proxy would only log the refusal; 0 asks for nothing).
- ``detectLocalMode: NodeCIDR``: traffic from this node's pod CIDR (``Node.spec.podCIDR``,
  :mod:`porterlb.lab.node.podnet`) is local; nothing cluster-wide to configure.
- ``nftables.masqueradeAll``: without ``br_netfilter`` (a module: loading it would change
  every bridge on the machine), a reply from a pod to another pod on the same bridge is
  bridged, never un-DNATed, and a pod reaching a ClusterIP served on its own node would get
  the answer from the wrong address. Masquerading ClusterIP traffic makes the reply routed.
  External traffic (NodePort, LoadBalancer) is masqueraded as kube-proxy always does, and
  not at all with ``externalTrafficPolicy: Local``.
- Metrics on the worker's loopback, health on ``0.0.0.0:10256`` (the health check of
  ``Local`` Services listens on their ``healthCheckNodePort``): each worker's namespace has
  its own ports.

Credentials: the ServiceAccount ``kube-system/kube-proxy`` bound to the API server's own
``system:node-proxier`` ClusterRole, as kubeadm does, with a TokenRequest token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import lightkube
import yaml

from porterlb.lab import credentials
from porterlb.lab.node import kubelet

NAMESPACE: Final = "kube-system"
ACCOUNT: Final = "kube-proxy"
CLUSTER_ROLE: Final = "system:node-proxier"
"""Bootstrapped by kube-apiserver: read Services, EndpointSlices and Nodes, write Events."""

HEALTH_PORT: Final = 10256
"""kube-proxy's own ``/healthz`` port (its default): 200 once its rules are synced."""


def access_objects() -> list[dict[str, Any]]:
    """kube-proxy's ServiceAccount and its binding to :data:`CLUSTER_ROLE`."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": ACCOUNT, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "porterlb-lab:kube-proxy"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": CLUSTER_ROLE,
            },
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}],
        },
    ]


async def grant(client: lightkube.AsyncClient, path: Path, *, server: str, ca: Path) -> None:
    """Apply :func:`access_objects` and write kube-proxy's kubeconfig at ``path``: ``server``
    as a worker reaches it, a token of its ServiceAccount. Raises InvalidSpec."""
    await credentials.install(client, access_objects(), namespace=NAMESPACE)
    token = await credentials.token(client, ACCOUNT, namespace=NAMESPACE)
    _write_kubeconfig(path, kubelet.kubeconfig(server=server, ca=ca, token=token, user=ACCOUNT))


def _write_kubeconfig(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config))


def configuration(node: str, kubeconfig: Path) -> dict[str, Any]:
    """The ``KubeProxyConfiguration`` of ``node``'s kube-proxy, which reaches the API with
    ``kubeconfig`` (see the module docstring for each setting)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node,
        "mode": "nftables",
        "detectLocalMode": "NodeCIDR",
        "nftables": {"masqueradeAll": True},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "oomScoreAdj": 0,
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": f"0.0.0.0:{HEALTH_PORT}",
    }


def argv(binary: Path, directory: Path, *, node: str, kubeconfig: Path) -> list[str]:
    """Write ``node``'s kube-proxy configuration in ``directory``; return the command that
    runs it."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "kube-proxy.yaml"
    config.write_text(yaml.safe_dump(configuration(node, kubeconfig)))
    return [str(binary), f"--config={config}"]
