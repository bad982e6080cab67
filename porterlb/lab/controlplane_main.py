"""A control plane as a process of its own, until SIGTERM: ``porterlb lab control-plane``.

SIGHUP restarts kube-apiserver alone (etcd keeps every object): the lab's failover benchmark
uses it to show that an API-server restart moves no IP.

``lab up`` starts it as ``python -m porterlb.lab.controlplane_main DIR`` rather than through
the ``porterlb`` command: this module imports the control-plane harness and nothing else
(~0.6 s of CPU, where importing every role of the CLI costs ~2 s), and etcd cannot start
before the import is done. The CLI's ``lab control-plane`` runs the same :func:`serve`.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final, NoReturn

from porterlb.lab import controlplane

READY: Final = "control plane ready:"
"""The start of the line printed once kube-apiserver answers ``/readyz``; ``lab up`` waits
for it in the log."""

RESTARTED: Final = "kube-apiserver restarted:"
"""The start of the line printed each time a SIGHUP-ed kube-apiserver answers again."""


def serve(
    directory: Path,
    *,
    serving_ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    kubelet_egress: Path | None = None,
    service_range: str = controlplane.SERVICE_CLUSTER_IP_RANGE,
) -> None:
    """Run etcd + kube-apiserver in ``directory``, print :data:`READY`, wait for SIGTERM.

    The serving certificate covers ``serving_ips`` besides loopback; kube-apiserver reaches
    kubelets through the proxy on unix socket ``kubelet_egress``, if given (a lab of real
    nodes: :class:`porterlb.lab.controlplane.ControlPlane`); ClusterIPs come from
    ``service_range``.

    SIGTERM (and Ctrl-C) stop both processes and remove their files before this returns or
    raises. Raises ControlPlaneError if the control plane does not start.
    """
    restarts: list[int] = []
    previous = signal.signal(signal.SIGTERM, _exit)
    previous_hup = signal.signal(signal.SIGHUP, lambda signum, frame: restarts.append(signum))
    try:
        plane = controlplane.ControlPlane(
            directory,
            serving_ips=serving_ips,
            kubelet_egress=kubelet_egress,
            service_range=service_range,
        )
        with plane as endpoints:
            print(f"{READY} {endpoints.server} kubeconfig={endpoints.kubeconfig}", flush=True)
            while True:
                signal.pause()
                while restarts:
                    restarts.pop()
                    plane.restart_apiserver()
                    print(f"{RESTARTED} {endpoints.server}", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where the kubeconfig and state go")
    parser.add_argument(
        "--serving-ip",
        type=ipaddress.ip_address,
        action="append",
        default=[],
        help="an address the serving certificate covers besides loopback (repeatable)",
    )
    parser.add_argument(
        "--kubelet-egress",
        type=Path,
        help="unix socket of the HTTP CONNECT proxy that reaches the kubelets (real nodes)",
    )
    parser.add_argument(
        "--service-range",
        default=controlplane.SERVICE_CLUSTER_IP_RANGE,
        help="kube-apiserver's --service-cluster-ip-range",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: serve has cleaned up
        serve(
            args.directory,
            serving_ips=args.serving_ip,
            kubelet_egress=args.kubelet_egress,
            service_range=args.service_range,
        )
    return 0


def _exit(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
