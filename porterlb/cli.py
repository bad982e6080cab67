"""``porterlb``: one command, one subcommand per role.

porterlb manager [--kubeconfig PATH]      IP address management and placement
porterlb speaker --node-name NODE         answer ARP/NDP for this node's Service IPs
porterlb lab build-control-plane          build kube-apiserver + etcd into the cache
porterlb lab control-plane --dir DIR      run a real control plane until interrupted
porterlb lab up --name NAME               bring a namespace lab up (lab down, info, service)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import prometheus_client

from porterlb import errors
from porterlb.api.keys import NodeName
from porterlb.kube import client as kube_client
from porterlb.lab import binaries, cluster, controlplane, kubeproxy_agent
from porterlb.lab import lab as namespace_lab
from porterlb.manager import controller
from porterlb.speaker import agent


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request otherwise
    code: int = args.run(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="porterlb", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    roles = parser.add_subparsers(required=True, metavar="COMMAND")

    manager = roles.add_parser(
        "manager", help="run the manager: IP address management and placement"
    )
    manager.add_argument("--kubeconfig", type=Path, help="default: in-cluster service account")
    manager.add_argument("--workers", type=int, default=16, help="Services reconciled at once")
    manager.add_argument(
        "--metrics-addr",
        default=":50052",
        help="HOST:PORT for Prometheus metrics (OpenELB's controller port); 0 disables",
    )
    manager.set_defaults(run=_run_manager)

    speaker = roles.add_parser("speaker", help="answer ARP/NDP for this node's Service IPs")
    speaker.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        required="NODE_NAME" not in os.environ,
        help="this node's Node name (default: $NODE_NAME, set from the downward API)",
    )
    speaker.add_argument("--kubeconfig", type=Path, help="default: in-cluster service account")
    speaker.add_argument(
        "--netns", help="network namespace holding the node's interfaces (the lab's workers)"
    )
    speaker.add_argument("--metrics-addr", default=":50053", help="HOST:PORT; 0 disables")
    speaker.set_defaults(run=_run_speaker)

    lab = roles.add_parser("lab", help="the real control plane and namespace lab")
    lab_commands = lab.add_subparsers(required=True, metavar="LAB_COMMAND")
    build = lab_commands.add_parser("build-control-plane", help="build kube-apiserver and etcd")
    build.set_defaults(run=_run_build)
    plane = lab_commands.add_parser("control-plane", help="run etcd + kube-apiserver on loopback")
    plane.add_argument("--dir", type=Path, help="where to write kubeconfig (default: a temp dir)")
    plane.set_defaults(run=_run_control_plane)

    up = lab_commands.add_parser("up", help="bring a namespace lab up (replacing a crashed one)")
    up.add_argument("--name", required=True, help="the lab's name (a short DNS label)")
    up.add_argument("--workers", type=int, default=3, help="worker nodes (default 3)")
    up.add_argument("--ipv6", action="store_true", help="dual-stack LAN and an IPv6 Eip too")
    up.set_defaults(run=_run_lab_up)
    down = lab_commands.add_parser("down", help="stop and remove everything of a lab")
    down.add_argument("--name", required=True)
    down.set_defaults(run=_run_lab_down)
    info = lab_commands.add_parser("info", help="describe a running lab")
    info.add_argument("--name", required=True)
    info.add_argument("--json", action="store_true", help="one JSON object (for scripts)")
    info.set_defaults(run=_run_lab_info)
    service = lab_commands.add_parser(
        "service", help="create (or delete) a sample LoadBalancer Service served by every worker"
    )
    service.add_argument("--name", required=True, help="the lab")
    service.add_argument("service", metavar="SERVICE", help="the Service's name")
    service.add_argument("--namespace", default=cluster.NAMESPACE)
    service.add_argument("--port", type=int, default=cluster.SERVICE_PORT)
    family = service.add_mutually_exclusive_group()
    family.add_argument("--ipv6", dest="family", action="store_const", const="ipv6")
    family.add_argument("--dual-stack", dest="family", action="store_const", const="dual")
    service.set_defaults(family="ipv4")
    service.add_argument("--delete", action="store_true", help="delete it and its slices")
    service.add_argument("--no-wait", action="store_true", help="do not wait for its IP")
    service.set_defaults(run=_run_lab_service)
    proxy = lab_commands.add_parser(
        "kube-proxy", help="(started by lab up) the kube-proxy stand-in of every worker"
    )
    proxy.add_argument("--kubeconfig", type=Path, required=True)
    proxy.add_argument(
        "--node",
        dest="nodes",
        action="append",
        required=True,
        type=_lab_node,
        metavar="NODE=NETNS",
        help="a worker: its Node name and network namespace (repeat per worker)",
    )
    proxy.add_argument("--ready-file", type=Path, help="created after the first full sync")
    proxy.set_defaults(run=_run_lab_kube_proxy)
    return parser


def _serve_metrics(address: str) -> None:
    if address == "0":
        return
    # No `_created` series beside each counter: they double the scrape for no use.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    host, _, port = address.rpartition(":")
    prometheus_client.start_http_server(int(port), addr=host or "0.0.0.0")


def _run_manager(args: argparse.Namespace) -> int:
    _serve_metrics(args.metrics_addr)

    async def manage() -> None:
        async with kube_client.connect(args.kubeconfig) as client:
            await controller.Manager(client, workers=args.workers).run()

    with _SignalScope():
        asyncio.run(manage())
    return 0


def _run_speaker(args: argparse.Namespace) -> int:
    _serve_metrics(args.metrics_addr)

    async def speak() -> None:
        async with kube_client.connect(args.kubeconfig) as client:
            await agent.Speaker(client, node=NodeName(args.node_name), netns=args.netns).run()

    with _SignalScope():
        asyncio.run(speak())
    return 0


def _run_build(args: argparse.Namespace) -> int:
    print(binaries.build())
    return 0


def _run_control_plane(args: argparse.Namespace) -> int:
    scratch = None if args.dir else tempfile.TemporaryDirectory(prefix="porterlb-cp-")
    directory = args.dir or Path(scratch.name) / "control-plane"  # type: ignore[union-attr]
    try:
        with _SignalScope(), controlplane.ControlPlane(directory) as endpoints:
            print(
                f"{namespace_lab.CONTROL_PLANE_READY} {endpoints.server} "
                f"kubeconfig={endpoints.kubeconfig}",
                flush=True,
            )
            signal.pause()
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


_LAB_ERRORS = (
    errors.PorterlbError,
    binaries.BinariesMissing,
    controlplane.ControlPlaneError,
)
"""What a lab command reports in one line instead of a traceback: each message names what
failed and, for a process, ends with its log tail."""


def _run_lab_up(args: argparse.Namespace) -> int:
    try:
        with _SignalScope():
            started = time.monotonic()
            record = namespace_lab.up(args.name, workers=args.workers, ipv6=args.ipv6)
            print(namespace_lab.headline(record, elapsed=time.monotonic() - started))
            return 0
    except _LAB_ERRORS as error:
        print(f"porterlb lab up: {error}", file=sys.stderr)
    return 1  # failed, or interrupted (everything was cleaned up)


def _run_lab_down(args: argparse.Namespace) -> int:
    try:
        namespace_lab.down(args.name)
    except _LAB_ERRORS as error:
        print(f"porterlb lab down: {error}", file=sys.stderr)
        return 1
    return 0


def _run_lab_info(args: argparse.Namespace) -> int:
    try:
        described = namespace_lab.info(args.name)
    except _LAB_ERRORS as error:
        print(f"porterlb lab info: {error}", file=sys.stderr)
        return 1
    if described is None:
        print(f"porterlb lab info: no lab named {args.name!r}", file=sys.stderr)
        return 1
    print(json.dumps(described, indent=2) if args.json else namespace_lab.summary(described))
    return 0


def _run_lab_service(args: argparse.Namespace) -> int:
    async def apply(record: namespace_lab.Record) -> str:
        async with kube_client.connect(record.kubeconfig) as client:
            if args.delete:
                await cluster.delete_service(client, args.service, namespace=args.namespace)
                return f"{args.namespace}/{args.service} deleted"
            key = await cluster.create_service(
                client,
                record.plan,
                args.service,
                namespace=args.namespace,
                port=args.port,
                family=args.family,
            )
            if args.no_wait:
                return key
            found = await cluster.wait_ingress(client, args.service, namespace=args.namespace)
            return f"{key} {' '.join(found)}"

    try:
        record = namespace_lab.load(args.name)
        if record is None:
            raise errors.InvalidSpec(f"no lab named {args.name!r}")
        print(asyncio.run(apply(record)))
    except _LAB_ERRORS as error:
        print(f"porterlb lab service: {error}", file=sys.stderr)
        return 1
    return 0


def _lab_node(text: str) -> tuple[str, str]:
    try:
        return kubeproxy_agent.parse_node(text)
    except errors.InvalidSpec as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run_lab_kube_proxy(args: argparse.Namespace) -> int:
    async def proxy() -> None:
        async with kube_client.connect(args.kubeconfig) as client:
            await kubeproxy_agent.Agent(client, dict(args.nodes), ready_file=args.ready_file).run()

    with _SignalScope():
        asyncio.run(proxy())
    return 0


class _Stop(Exception):
    """SIGTERM, turned into an exception so that every with-block cleans up."""


class _SignalScope:
    """Turn SIGTERM into an exception for the duration of a with-block; exit quietly on it."""

    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, kind: object, error: object, tb: object) -> bool:
        signal.signal(signal.SIGTERM, self._old)
        return isinstance(error, (_Stop, KeyboardInterrupt))

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise _Stop()


if __name__ == "__main__":
    sys.exit(main())
