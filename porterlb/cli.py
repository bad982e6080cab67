"""``porterlb``: one command, one subcommand per role.

porterlb manager [--kubeconfig PATH]      IP address management and placement
porterlb speaker --node-name NODE         answer ARP/NDP for this node's Service IPs
porterlb status [--json]                  pools, Services, their nodes, as recorded in the API
porterlb lab ...                          the real control plane and the namespace lab

The roles import nothing of the lab: ``lab`` is listed, but its parser and code (and the
``porterlb[lab]`` extra's dependencies) are imported only when the command line asks for it.
Flags with a node-specific default read the Downward API's environment (``POD_NAMESPACE``,
``NODE_NAME``, ``HOST_IP``, ``HOST_IPS``), so a pod spec needs no arguments for them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.metadata
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightkube
from lightkube.core.exceptions import ConfigError

import porterlb.metrics  # noqa: F401  (porterlb_build_info, for every role)
from porterlb import health, logs
from porterlb.api import wellknown
from porterlb.kube import client as kube_client
from porterlb.kube import election, secrets, transport
from porterlb.l2 import conflicts
from porterlb.liveness import drain, guard, tracker, udp
from porterlb.status import command as status_command

log = logging.getLogger("porterlb")

ROLES = ("manager", "speaker")


class Usage(Exception):
    """A start-up problem the operator fixes with a flag or the pod spec: one line, exit 2."""


def version() -> str:
    """porterlb's installed version (its package metadata)."""
    return importlib.metadata.version("porterlb")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    if args.role in ROLES:
        level: logs.Level = "debug" if args.verbose else args.log_level
        logs.configure(level=level, fmt=args.log_format)
    else:
        logs.configure(level="debug" if args.verbose else "info")
    try:
        return run(args)
    except Usage as problem:
        print(f"porterlb {args.role}: error: {problem}", file=sys.stderr)
        return 2


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="porterlb", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"porterlb {version()}")
    roles = parser.add_subparsers(required=True, metavar="COMMAND", dest="role")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,  # keep a -v given before the role
        help="debug logging (as --log-level debug)",
    )
    common.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one object per line, with service, ip, node, pool, interface fields",
    )
    common.add_argument("--kubeconfig", type=Path, help="default: in-cluster service account")
    _manager_parser(roles, common)
    _speaker_parser(roles, common)
    status_command.add_parser_to(roles)
    if _role(argv) == "lab":
        # By name, so that no import of the lab appears in what the roles load (and the
        # import contract holds): its commands exist only in a ``porterlb[lab]`` install.
        try:
            lab_commands = importlib.import_module("porterlb.lab.commands")
        except ImportError as missing:
            parser.error(f"lab: {missing}; install porterlb[lab] from a clone of the repository")
        lab_commands.add_parser_to(roles)
    else:
        roles.add_parser("lab", help="the real control plane and namespace lab (porterlb[lab])")
    return parser


def _role(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` names: its first word that is no option (the top-level options
    take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _manager_parser(roles: Any, common: argparse.ArgumentParser) -> None:
    manager = roles.add_parser(
        "manager", parents=[common], help="run the manager: IP address management and placement"
    )
    manager.add_argument(
        "--lb-class",
        default=wellknown.LOAD_BALANCER_CLASS,
        help="the spec.loadBalancerClass served (default %(default)s)",
    )
    manager.add_argument("--workers", type=int, default=16, help="Services IPAM reconciles at once")
    manager.add_argument(
        "--metrics-addr",
        default=":50052",
        help="HOST:PORT for Prometheus metrics (OpenELB's controller port); 0 disables",
    )
    manager.add_argument(
        "--health-addr",
        default=":50054",
        help="HOST:PORT for /healthz and /readyz (default %(default)s: the pod IP, for the"
        " kubelet); 0 disables",
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
        help="namespace of the Lease (default: $POD_NAMESPACE, else the service account's)",
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
        "--no-create-heartbeat-secret",
        dest="create_heartbeat_secret",
        action="store_false",
        help="only read the heartbeat Secret (made by the chart), never create it",
    )
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


def _speaker_parser(roles: Any, common: argparse.ArgumentParser) -> None:
    env = os.environ
    node_ips = host_ips(env)
    speaker = roles.add_parser(
        "speaker", parents=[common], help="answer ARP/NDP for this node's Service IPs"
    )
    speaker.add_argument(
        "--node-name",
        default=env.get("NODE_NAME"),
        required="NODE_NAME" not in env,
        help="this node's Node name (default: $NODE_NAME, set from the downward API)",
    )
    speaker.add_argument(
        "--netns", help="network namespace holding the node's interfaces (the lab's workers)"
    )
    speaker.add_argument(
        "--metrics-addr",
        default=f"{_host_port(node_ips[0], 50053)}" if node_ips else "127.0.0.1:50053",
        help="HOST:PORT for Prometheus metrics (default: $HOST_IP, else loopback); 0 disables",
    )
    speaker.add_argument(
        "--health-addr",
        default="127.0.0.1:50055",
        help="HOST:PORT for /healthz and /readyz (default %(default)s: hostNetwork, the kubelet"
        " probes the node's loopback); 0 disables",
    )
    speaker.add_argument(
        "--audit-interval",
        type=_seconds_or_off,
        default=conflicts.AUDIT_INTERVAL,
        help="seconds between two rounds of ARP probes/DAD for every IP this node announces,"
        " which another node's kernel or a host using the IP answers (default %(default)s;"
        " at most 200 probes a second); 0 disables",
    )
    heartbeat_flags = speaker.add_argument_group("heartbeats")
    _add_heartbeat_flags(heartbeat_flags)
    heartbeat_flags.add_argument(
        "--heartbeat-addr",
        default=",".join(node_ips),
        help="comma-separated node addresses to answer heartbeats on (default: $HOST_IPS, else"
        " $HOST_IP, else every address)",
    )
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
    speaker.add_argument(
        "--drain-timeout",
        type=float,
        default=drain.DEFAULT_TIMEOUT,
        help="on SIGTERM, seconds at most to wait for the leader to move this node's IPs before"
        " exiting (keep below the pod's terminationGracePeriodSeconds); a second signal exits"
        " at once",
    )
    speaker.set_defaults(run=_run_speaker)


def _seconds_or_off(text: str) -> float:
    """A number of seconds, 0 meaning off."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds >= 0 (0: off)")
    return value


def _add_heartbeat_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--no-heartbeats",
        dest="heartbeats",
        action="store_false",
        help="no UDP heartbeats: every speaker counts as alive, none fences itself",
    )
    group.add_argument(
        "--heartbeat-secret",
        help=f"[NAMESPACE/]NAME of the Secret holding the heartbeat key (default: the pod's"
        f" namespace/{secrets.DEFAULT_NAME})",
    )
    group.add_argument("--heartbeat-port", type=int, default=udp.DEFAULT_PORT, help="UDP port")


def host_ips(env: Mapping[str, str]) -> list[str]:
    """The node's addresses from the Downward API: ``HOST_IPS`` (``status.hostIPs``, comma
    separated, both families on a dual-stack node), else ``HOST_IP``; none when unset."""
    listed = env.get("HOST_IPS") or env.get("HOST_IP") or ""
    return [ip.strip() for ip in listed.split(",") if ip.strip()]


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address(flag: str, text: str) -> tuple[str, int] | None:
    try:
        return health.parse_address(text)
    except ValueError as bad:
        raise Usage(f"{flag}: {bad}") from None


def _own_namespace(kubeconfig: Path | None) -> str:
    """The pod's namespace: ``$POD_NAMESPACE``, else the service account's, else (outside a
    cluster) the kubeconfig context's. Never ``default`` by accident."""
    found = os.environ.get("POD_NAMESPACE") or kube_client.InCluster().namespace()
    if not found and kubeconfig is not None:
        found = kube_client.context_namespace(kubeconfig)
    if not found:
        raise Usage(
            "no namespace for the Lease, the heartbeat Secret and Events: set $POD_NAMESPACE,"
            " run in a pod, or name one in the kubeconfig's context"
        )
    return found


def _secret(args: argparse.Namespace, namespace: str) -> tuple[str, str]:
    namespace_given, _, name = (args.heartbeat_secret or secrets.DEFAULT_NAME).rpartition("/")
    return namespace_given or namespace, name


def _serve_metrics(address: tuple[str, int] | None) -> None:
    import prometheus_client

    if address is None:
        return
    # No `_created` series beside each counter: they double the scrape for no use.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    host, port = address
    try:
        prometheus_client.start_http_server(port, addr=host or "::")
    except OSError as error:
        if host:
            raise Usage(f"--metrics-addr: cannot serve on {host}:{port}: {error}") from None
        prometheus_client.start_http_server(port, addr="0.0.0.0")  # no IPv6 on this host


def _started(args: argparse.Namespace, **resolved: object) -> None:
    """The start-up line: version, and every setting as it will be used."""
    settings = {k: v for k, v in vars(args).items() if k not in ("run", "role", "verbose")}
    settings.update(resolved)
    shown = " ".join(f"{key}={value}" for key, value in sorted(settings.items()))
    log.info("porterlb %s %s starting: %s", version(), args.role, shown)


def _run_manager(args: argparse.Namespace) -> int:
    from porterlb.manager import controller, liveness

    metrics_at = _address("--metrics-addr", args.metrics_addr)
    health_at = _address("--health-addr", args.health_addr)
    client = _connect(args.kubeconfig, via="aiohttp")
    namespace = _own_namespace(args.kubeconfig)
    lease_namespace = args.lease_namespace or namespace
    secret_namespace, secret_name = _secret(args, namespace)
    lease = f"{lease_namespace}/{election.LEASE_NAME}"
    secret = f"{secret_namespace}/{secret_name}"
    _started(args, namespace=namespace, lease=lease, heartbeat_secret=secret)
    _serve_metrics(metrics_at)

    async def manage() -> None:
        async with client:
            elector = (
                election.Elector(
                    client,
                    namespace=lease_namespace,
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
                heartbeat = liveness.Settings(
                    secret_namespace=secret_namespace,
                    secret_name=secret_name,
                    port=args.heartbeat_port,
                    timing=tracker.Timing(args.heartbeat_interval, args.heartbeat_misses),
                    netns=args.heartbeat_netns,
                )
            manager = controller.Manager(
                client,
                lb_class=args.lb_class,
                workers=args.workers,
                elector=elector,
                heartbeat=heartbeat,
                create_secret=args.create_heartbeat_secret,
            )
            async with asyncio.TaskGroup() as group:
                if health_at is not None:
                    group.create_task(health.serve(health_at, manager), name="manager/health")
                group.create_task(manager.run(), name="manager")

    _run_until_signalled(manage())
    return 0


def _run_speaker(args: argparse.Namespace) -> int:
    from porterlb.api.keys import NodeName
    from porterlb.l2 import announcer
    from porterlb.speaker import agent, heartbeats

    if not args.drain_timeout >= 0:
        raise Usage(f"--drain-timeout must be 0 or more seconds, got {args.drain_timeout}")
    metrics_at = _address("--metrics-addr", args.metrics_addr)
    health_at = _address("--health-addr", args.health_addr)
    addresses = tuple(a.strip() for a in args.heartbeat_addr.split(",") if a.strip())
    client = _connect(args.kubeconfig, via="httpx2")  # few requests: aiohttp is not worth its RSS
    namespace = _own_namespace(args.kubeconfig)
    secret_namespace, secret_name = _secret(args, namespace)
    _started(args, namespace=namespace, heartbeat_secret=f"{secret_namespace}/{secret_name}")
    _serve_metrics(metrics_at)
    graceful: list[Callable[[], None]] = []

    async def speak() -> None:
        async with client:
            heartbeat = None
            if args.heartbeats:
                heartbeat = heartbeats.Settings(
                    secret_namespace=secret_namespace,
                    secret_name=secret_name,
                    port=args.heartbeat_port,
                    addresses=addresses,
                    fence_after=args.fence_after,
                    lease=args.lease_length,
                )
            speaker = agent.Speaker(
                client,
                node=NodeName(args.node_name),
                netns=args.netns,
                heartbeat=heartbeat,
                drain_timeout=args.drain_timeout,
                config=announcer.Config(audit_interval=args.audit_interval or None),
            )
            graceful.append(speaker.drain)
            async with asyncio.TaskGroup() as group:
                serving = None
                if health_at is not None:
                    serving = group.create_task(
                        health.serve(health_at, speaker), name="speaker/health"
                    )
                await speaker.run()  # returns once drained
                if serving is not None:
                    serving.cancel()

    _run_until_signalled(speak(), graceful=graceful)
    return 0


def _connect(kubeconfig: Path | None, *, via: transport.Kind) -> lightkube.AsyncClient:
    """The role's API client; Usage when there is no configuration to build it from."""
    try:
        return kube_client.connect(kubeconfig, via=via)
    except (kube_client.NoConfig, ConfigError, OSError) as problem:
        raise Usage(str(problem)) from None


def _run_until_signalled(
    main: Coroutine[Any, Any, None], *, graceful: Sequence[Callable[[], None]] = ()
) -> None:
    """Run `main` until it returns or SIGTERM or SIGINT cancels it, so every finally-block
    runs in the loop (the manager releases its Lease there). With `graceful` (filled in by
    `main` once it can stop gracefully: the speaker's drain), the first signal calls it instead,
    and only a second one cancels."""

    async def supervise() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        signalled: list[int] = []

        def stop(signum: int) -> None:
            signalled.append(signum)
            if len(signalled) == 1 and graceful:
                log.info(
                    "%s: stopping gracefully; another signal stops at once",
                    signal.Signals(signum).name,
                )
                for begin in graceful:
                    begin()
            else:
                task.cancel()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(supervise())


if __name__ == "__main__":
    sys.exit(main())
