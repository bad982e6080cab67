"""kube-controller-manager and kube-scheduler beside the lab's API server.

Without a controller manager a Node keeps the ``node.kubernetes.io/not-ready`` NoSchedule
taint the API server's admission puts on it (the node lifecycle controller removes it once
the kubelet reports Ready), and without a scheduler no pod gets a node. Both run in the host
namespace, like kube-apiserver, with the lab admin's kubeconfig (on loopback).

- ``--leader-elect=false``: one replica per lab.
- ``--secure-port=0``: they serve nothing. Several labs share the host namespace, so the
  default ports (10257, 10259) would clash, and nothing here scrapes them.
- The controller manager allocates no pod CIDRs (the lab sets each Node's from its plan
  before the kubelet registers, :mod:`porterlb.lab.node.podnet` says why) and signs no
  service-account tokens (pods get theirs by TokenRequest).
- ``--root-ca-file``: the CA it publishes in every namespace's ``kube-root-ca.crt``
  ConfigMap, the ``ca.crt`` of every pod's token volume, with which in-cluster clients
  verify the API server. Without it the controller manager publishes the CA data of its
  kubeconfig, which names a file, so the ConfigMap is empty and porterlb's pods fail with
  ``NO_CERTIFICATE_OR_CRL_FOUND``.
"""

from __future__ import annotations

from pathlib import Path


def controller_manager_argv(
    binary: Path, kubeconfig: Path, directory: Path, ca: Path, *, service_range: str
) -> list[str]:
    """The command that runs the lab's kube-controller-manager, publishing ``ca``; it writes
    only in ``directory`` (its FlexVolume plugin directory would otherwise be created under
    ``/usr/libexec``). ``service_range`` is kube-apiserver's ``--service-cluster-ip-range``
    (both families in a dual-stack lab), given to both as in any cluster."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--flex-volume-plugin-dir={directory / 'volume-plugins'}",
        f"--root-ca-file={ca}",
        "--leader-elect=false",
        "--secure-port=0",
        "--allocate-node-cidrs=false",
        f"--service-cluster-ip-range={service_range}",
        "--controllers=*,-serviceaccount-token,-nodeipam",
    ]


def scheduler_argv(binary: Path, kubeconfig: Path) -> list[str]:
    """The command that runs the lab's kube-scheduler."""
    return [str(binary), f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--secure-port=0"]
