"""``porterlb lab ...``: the control plane and the namespace lab, from the command line.

Heavy modules (lightkube, pyroute2, the lab itself) are imported by each command when it runs,
so that ``porterlb manager`` and ``porterlb speaker`` start without paying for them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from porterlb import errors
from porterlb.lab import binaries, controlplane, controlplane_main

if TYPE_CHECKING:  # imported where used: each command loads only what it needs
    import lightkube

    from porterlb.lab import cluster, lab


def add_parser_to(roles: Any) -> None:
    """Add ``lab`` and its commands to the top-level subparsers `roles`."""
    lab = roles.add_parser("lab", help="the real control plane and namespace lab")
    lab_commands = lab.add_subparsers(required=True, metavar="LAB_COMMAND")
    build = lab_commands.add_parser("build-control-plane", help="build kube-apiserver and etcd")
    build.add_argument(
        "--nodes",
        action="store_true",
        help="also the kubelet, kube-proxy, kube-controller-manager and kube-scheduler",
    )
    build.set_defaults(run=_run_build)
    tools = lab_commands.add_parser("build-tools", help="build helm, fetch promtool (dev tools)")
    tools.set_defaults(run=_run_build_tools)
    plane = lab_commands.add_parser("control-plane", help="run etcd + kube-apiserver on loopback")
    plane.add_argument("--dir", type=Path, help="where to write kubeconfig (default: a temp dir)")
    plane.set_defaults(run=_run_control_plane)

    up = lab_commands.add_parser("up", help="bring a namespace lab up (replacing a crashed one)")
    up.add_argument("--name", required=True, help="the lab's name (a short DNS label)")
    up.add_argument("--workers", type=int, help="worker nodes (default 2; 3 with --nodes process)")
    up.add_argument("--ipv6", action="store_true", help="dual-stack LAN and an IPv6 Eip too")
    up.add_argument(
        "--nodes",
        choices=("real", "process"),
        default="real",
        help="real: containerd, a kubelet and kube-proxy per worker on a routed pod network"
        " (default); process: porterlb's managers and speakers as host processes with no"
        " kubelet, kube-proxy or backend (no traffic: for tests of porterlb's processes)",
    )
    up.add_argument(
        "--porterlb",
        choices=("chart", "none"),
        default="chart",
        help="with --nodes real: chart: porterlb's image built from the Dockerfile (cached) and"
        " installed by `helm install`, then the Eips (default); none: bare nodes",
    )
    up.set_defaults(run=_run_lab_up)
    down = lab_commands.add_parser("down", help="stop and remove everything of a lab")
    down.add_argument("--name", required=True)
    down.set_defaults(run=_run_lab_down)
    info = lab_commands.add_parser("info", help="describe a running lab")
    info.add_argument("--name", required=True)
    info.add_argument("--json", action="store_true", help="one JSON object (for scripts)")
    info.set_defaults(run=_run_lab_info)
    demo = lab_commands.add_parser(
        "demo", help="a lab, a Service, traffic, and a node crash with the IP moving live"
    )
    demo.add_argument("--name", default="demo", help="the lab's name (default demo)")
    demo.add_argument("--workers", type=int, default=3)
    demo.set_defaults(run=_run_lab_demo)
    fault = lab_commands.add_parser(
        "fault", help="inject a fault into a running lab (or heal it: --heal)"
    )
    fault.add_argument("--name", required=True, help="the lab")
    fault.add_argument("--node", help="the worker it hits (every kind but managers-down)")
    fault.add_argument(
        "--kind",
        required=True,
        help="crash, speaker-kill, api-partition, heartbeat-partition, ping-loss, pong-loss,"
        " node-partition, managers-down, speaker-pod-delete (a lab installed by the chart)",
    )
    fault.add_argument("--heal", action="store_true", help="undo what the fault applied")
    fault.set_defaults(run=_run_lab_fault)
    failover = lab_commands.add_parser(
        "bench-failover", help="inject faults into fresh labs; print the traffic interruptions"
    )
    failover.add_argument("--runs", type=int, default=5, help="runs per scenario (default 5)")
    failover.add_argument("--json", action="store_true", help="one JSON object (for scripts)")
    failover.add_argument(
        "--scenario",
        action="append",
        dest="scenarios",
        help="run only this one (repeatable): worker-crash, speaker-kill, leader-kill,"
        " apiserver-restart, heartbeat-partition, api-partition, pong-loss, ping-loss,"
        " node-partition, managers-down",
    )
    failover.add_argument("--workers", type=int, default=3)
    failover.add_argument(
        "--services",
        type=int,
        default=1,
        help="Services in each lab, the extra ones IPv6 with an address each, so that the failed"
        " node holds about SERVICES/WORKERS IPs (issue 12: 1000 on 10 workers)",
    )
    failover.add_argument("--name", default="bench-failover", help="the labs' name")
    failover.set_defaults(run=_run_bench_failover)
    rollout = lab_commands.add_parser(
        "bench-rollout",
        help="roll every speaker, then every manager, under traffic; print what it cost",
    )
    rollout.add_argument("--services", type=int, default=10, help="Services, one IP each")
    rollout.add_argument("--workers", type=int, default=3)
    rollout.add_argument("--json", action="store_true", help="one JSON document")
    rollout.add_argument("--name", default="bench-rollout", help="the lab's name")
    rollout.set_defaults(run=_run_bench_rollout)
    service = lab_commands.add_parser(
        "service", help="create (or delete) a sample LoadBalancer Service served by every worker"
    )
    service.add_argument("--name", required=True, help="the lab")
    service.add_argument("service", metavar="SERVICE", help="the Service's name")
    service.add_argument("--namespace", help="default: default")
    service.add_argument("--port", type=int, help="default: 80")
    family = service.add_mutually_exclusive_group()
    family.add_argument("--ipv6", dest="family", action="store_const", const="ipv6")
    family.add_argument("--dual-stack", dest="family", action="store_const", const="dual")
    service.set_defaults(family="ipv4")
    service.add_argument("--delete", action="store_true", help="delete it and its slices")
    service.add_argument("--no-wait", action="store_true", help="do not wait for its IP")
    service.set_defaults(run=_run_lab_service)


def _run_build(args: argparse.Namespace) -> int:
    names = (*binaries.CONTROL_PLANE, *binaries.NODES) if args.nodes else binaries.CONTROL_PLANE
    try:
        print(binaries.build(names))
    except binaries.BuildFailed as failed:
        print(f"porterlb lab build-control-plane: {failed}", file=sys.stderr)
        return 1
    return 0


def _run_build_tools(args: argparse.Namespace) -> int:
    for path in binaries.build_tools():
        print(path)
    return 0


def _run_control_plane(args: argparse.Namespace) -> int:
    scratch = None if args.dir else tempfile.TemporaryDirectory(prefix="porterlb-cp-")
    directory = args.dir or Path(scratch.name) / "control-plane"  # type: ignore[union-attr]
    try:
        controlplane_main.serve(directory)  # until SIGTERM (SystemExit) or Ctrl-C
    except KeyboardInterrupt:
        pass
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
    from porterlb.lab import lab as namespace_lab

    try:
        with SignalScope():
            started = time.monotonic()
            if args.nodes == "real":
                print(_real_nodes_up(args, started))
                return 0
            workers = 3 if args.workers is None else args.workers
            record = namespace_lab.up(args.name, workers=workers, ipv6=args.ipv6)
            print(namespace_lab.headline(record, elapsed=time.monotonic() - started))
            return 0
    except _LAB_ERRORS as error:
        print(f"porterlb lab up: {error}", file=sys.stderr)
    return 1  # failed, or interrupted (everything was cleaned up)


def _real_nodes_up(args: argparse.Namespace, started: float) -> str:
    """Bring up a lab of real nodes; its headline. Phases are reported on stderr."""
    from porterlb.lab.node import nodelab

    workers = nodelab.WORKERS if args.workers is None else args.workers
    record = nodelab.up(
        args.name,
        workers=workers,
        ipv6=args.ipv6,
        porterlb="chart" if args.porterlb == "chart" else None,
        report=lambda line: print(line, file=sys.stderr, flush=True),
    )
    return nodelab.headline(record, elapsed=time.monotonic() - started)


def _run_lab_down(args: argparse.Namespace) -> int:
    from porterlb.lab.node import nodelab

    try:
        nodelab.down(args.name)
    except _LAB_ERRORS as error:
        print(f"porterlb lab down: {error}", file=sys.stderr)
        return 1
    return 0


def _run_lab_info(args: argparse.Namespace) -> int:
    from porterlb.lab import lab as namespace_lab
    from porterlb.lab.node import release

    try:
        described = namespace_lab.info(args.name)
        if described is not None and described["release"]:
            described["pods"] = release.pods(Path(described["kubeconfig"]))
    except _LAB_ERRORS as error:
        print(f"porterlb lab info: {error}", file=sys.stderr)
        return 1
    if described is None:
        print(f"porterlb lab info: no lab named {args.name!r}", file=sys.stderr)
        return 1
    print(json.dumps(described, indent=2) if args.json else namespace_lab.summary(described))
    return 0


def _run_lab_demo(args: argparse.Namespace) -> int:
    from porterlb.lab import demo

    try:
        with SignalScope():
            demo.run(
                args.name,
                workers=args.workers,
                say=lambda line: print(line, flush=True),
            )
            return 0
    except (*_LAB_ERRORS, TimeoutError) as error:
        print(f"porterlb lab demo: {error}", file=sys.stderr)
    return 1


def _run_lab_fault(args: argparse.Namespace) -> int:
    from porterlb.lab import faults
    from porterlb.lab import lab as namespace_lab

    try:
        record = namespace_lab.load(args.name)
        if record is None:
            raise errors.InvalidSpec(f"no lab named {args.name!r}")
        if args.heal:
            done = faults.heal_recorded(record, args.kind, args.node)
        else:
            done = faults.apply_recorded(record, args.kind, args.node)
    except _LAB_ERRORS as error:
        print(f"porterlb lab fault: {error}", file=sys.stderr)
        return 1
    where = f"node {done.node}" if done.node else "the managers"
    print(f"lab {args.name}: {done.kind} on {where} {'healed' if args.heal else 'applied'}")
    return 0


def _run_bench_failover(args: argparse.Namespace) -> int:
    from porterlb.lab import failover, failover_figures

    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    try:
        with SignalScope():
            summaries, writes = failover.bench(
                args.runs,
                scenarios=args.scenarios or failover.SCENARIOS,
                workers=args.workers,
                services=args.services,
                name=args.name,
                say=progress,
            )
            if args.json:
                scenarios = [dataclasses.asdict(summary) for summary in summaries]
                document = {"scenarios": scenarios, "api_writes_per_s": writes["other"]}
                print(json.dumps(document | {"lease_writes_per_s": writes["leases"]}, indent=2))
            else:
                print(failover_figures.table(summaries, writes))
            return 0
    except (*_LAB_ERRORS, ValueError) as error:
        print(f"porterlb lab bench-failover: {error}", file=sys.stderr)
    return 1


def _run_bench_rollout(args: argparse.Namespace) -> int:
    from porterlb.lab import rollout

    progress = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    try:
        with SignalScope():
            found = rollout.bench(
                services=args.services,
                workers=args.workers,
                name=args.name,
                say=progress,
            )
    except _LAB_ERRORS as error:
        print(f"porterlb lab bench-rollout: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"phases": [dataclasses.asdict(f) for f in found]}, indent=2))
    else:
        print(rollout.table(found))
    return 0


def _run_lab_service(args: argparse.Namespace) -> int:
    from porterlb.kube import client as kube_client
    from porterlb.lab import cluster
    from porterlb.lab import lab as namespace_lab

    options = {
        key: value
        for key, value in (("namespace", args.namespace), ("port", args.port))
        if value is not None
    }
    namespace = options.get("namespace", cluster.NAMESPACE)

    async def apply(record: namespace_lab.Record) -> str:
        async with kube_client.connect(record.kubeconfig) as client:
            if args.delete:
                await cluster.delete_service(client, args.service, namespace=namespace)
                return f"{namespace}/{args.service} deleted"
            if record.real_nodes:
                key = await _real_service(client, record, args.service, args.family, options)
            else:
                key = await cluster.create_service(
                    client, record.plan, args.service, family=args.family, **options
                )
            if args.no_wait:
                return key
            found = await cluster.wait_ingress(client, args.service, namespace=namespace)
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


async def _real_service(
    client: lightkube.AsyncClient,
    record: lab.Record,
    name: str,
    family: cluster.Family,
    options: dict[str, Any],
) -> str:
    """``lab service`` on real nodes: the backend Deployment (made if missing, a pod per node;
    its EndpointSlices are the controller manager's), then the Service in front of it; also
    on a lab brought up with ``--porterlb none``, where the hand-made EndpointSlices of the
    process lab would name backends that do not exist."""
    from porterlb.lab import benchlab, cluster
    from porterlb.lab.node import backends

    namespace = options.get("namespace", cluster.NAMESPACE)
    if namespace != cluster.NAMESPACE:
        raise errors.InvalidSpec(
            f"Service {namespace}/{name}: the real-node lab's backends run in namespace "
            f"{cluster.NAMESPACE} only"
        )
    await backends.start(client, record.plan, release=record.release is not None)
    port = options.get("port", cluster.SERVICE_PORT)
    return await benchlab.create_service(client, record, name, family=family, port=port)


class Stop(Exception):
    """SIGTERM, turned into an exception so that every with-block cleans up."""


class SignalScope:
    """Turn SIGTERM into an exception for the duration of a with-block; exit quietly on it."""

    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGTERM, self._raise)

    def __exit__(self, kind: object, error: object, tb: object) -> bool:
        signal.signal(signal.SIGTERM, self._old)
        return isinstance(error, (Stop, KeyboardInterrupt))

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise Stop()
