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
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import prometheus_client

from porterlb.kube import election, secrets
from porterlb.lab import commands as lab_commands
from porterlb.liveness import guard, tracker, udp


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
    election_flags = manager.add_argument_group("leader election")
    election_flags.add_argument(
        "--no-leader-elect",
        dest="leader_elect",
        action="store_false",
        help="act without a Lease (only ever run one replica so)",
    )
    election_flags.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease (default: $POD_NAMESPACE, else default)",
    )
    election_flags.add_argument(
        "--identity",
        default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        help="this replica's name in the Lease (default: $POD_NAME, else host-pid)",
    )
    defaults = election.Timing()
    for flag, default in (
        ("--lease-duration", defaults.lease_duration),
        ("--renew-deadline", defaults.renew_deadline),
        ("--retry-period", defaults.retry_period),
    ):
        election_flags.add_argument(flag, type=float, default=default, help="seconds")
    heartbeat_flags = manager.add_argument_group("heartbeats")
    _add_heartbeat_flags(heartbeat_flags)
    heartbeat_flags.add_argument(
        "--heartbeat-interval", type=float, default=tracker.DEFAULT_INTERVAL, help="seconds"
    )
    heartbeat_flags.add_argument(
        "--heartbeat-misses",
        type=int,
        default=tracker.DEFAULT_MISSES,
        help="unanswered pings in a row after which a speaker counts as dead",
    )
    heartbeat_flags.add_argument(
        "--heartbeat-netns", help="network namespace to ping from (the lab's router)"
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
    heartbeat_flags = speaker.add_argument_group("heartbeats")
    _add_heartbeat_flags(heartbeat_flags)
    heartbeat_flags.add_argument(
        "--fence-after",
        type=float,
        default=guard.DEFAULT_FENCE_AFTER,
        help="seconds a read of the managers' Lease showing no leader lets a speaker that"
        " hears no manager answer (keep below the manager's takeover settle, 2.5 s)",
    )
    heartbeat_flags.add_argument(
        "--lease-length",
        type=float,
        default=guard.DEFAULT_LEASE,
        help="seconds an acknowledged pong lets the speaker answer (docs/fencing.md)",
    )
    speaker.set_defaults(run=_run_speaker)

    lab_commands.add_parser_to(roles)
    return parser


def _add_heartbeat_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--no-heartbeats",
        dest="heartbeats",
        action="store_false",
        help="no UDP heartbeats: every speaker counts as alive, none fences itself",
    )
    group.add_argument(
        "--heartbeat-secret",
        default=f"{os.environ.get('POD_NAMESPACE', 'default')}/{secrets.DEFAULT_NAME}",
        help="NAMESPACE/NAME of the Secret holding the heartbeat key (default:"
        " $POD_NAMESPACE, else default, /%(default)s)",
    )
    group.add_argument("--heartbeat-port", type=int, default=udp.DEFAULT_PORT, help="UDP port")


def _secret(args: argparse.Namespace) -> tuple[str, str]:
    namespace, _, name = args.heartbeat_secret.rpartition("/")
    return namespace or os.environ.get("POD_NAMESPACE", "default"), name


def _serve_metrics(address: str) -> None:
    if address == "0":
        return
    # No `_created` series beside each counter: they double the scrape for no use.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    host, _, port = address.rpartition(":")
    prometheus_client.start_http_server(int(port), addr=host or "0.0.0.0")


def _run_manager(args: argparse.Namespace) -> int:
    from porterlb.kube import client as kube_client
    from porterlb.manager import controller, liveness

    _serve_metrics(args.metrics_addr)

    async def manage() -> None:
        async with kube_client.connect(args.kubeconfig) as client:
            elector = (
                election.Elector(
                    client,
                    namespace=args.lease_namespace,
                    identity=args.identity,
                    timing=election.Timing(
                        args.lease_duration, args.renew_deadline, args.retry_period
                    ),
                )
                if args.leader_elect
                else None
            )
            heartbeat = None
            if args.heartbeats:
                namespace, name = _secret(args)
                heartbeat = liveness.Settings(
                    secret_namespace=namespace,
                    secret_name=name,
                    port=args.heartbeat_port,
                    timing=tracker.Timing(args.heartbeat_interval, args.heartbeat_misses),
                    netns=args.heartbeat_netns,
                )
            manager = controller.Manager(
                client, workers=args.workers, elector=elector, heartbeat=heartbeat
            )
            await manager.run()

    _run_until_signalled(manage())
    return 0


def _run_speaker(args: argparse.Namespace) -> int:
    from porterlb.api.keys import NodeName
    from porterlb.kube import client as kube_client
    from porterlb.speaker import agent, heartbeats

    _serve_metrics(args.metrics_addr)

    async def speak() -> None:
        async with kube_client.connect(args.kubeconfig) as client:
            heartbeat = None
            if args.heartbeats:
                namespace, name = _secret(args)
                heartbeat = heartbeats.Settings(
                    secret_namespace=namespace,
                    secret_name=name,
                    port=args.heartbeat_port,
                    fence_after=args.fence_after,
                    lease=args.lease_length,
                )
            speaker = agent.Speaker(
                client, node=NodeName(args.node_name), netns=args.netns, heartbeat=heartbeat
            )
            await speaker.run()

    _run_until_signalled(speak())
    return 0


def _run_until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` until SIGTERM or SIGINT cancels it, so every finally-block runs in the loop
    (the manager releases its Lease there)."""

    async def supervise() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(supervise())


if __name__ == "__main__":
    sys.exit(main())
