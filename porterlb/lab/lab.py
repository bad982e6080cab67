"""The process lab: porterlb's processes on the namespace network, with a real control plane
and no cluster around them; and the lab record both labs share.

``porterlb lab up`` gives the real-node lab (:mod:`porterlb.lab.node.nodelab`: kubelets,
containerd, the real kube-proxy, porterlb installed by its chart). This lab,
``lab up --nodes process``, is what the e2e tests of porterlb's *processes* need, and only
that: ``tests/e2e/test_speaker_fence.py`` restarts a speaker with a kubeconfig naming a relay
in the test's own process and cuts it silently, which a speaker pod of the chart cannot be
pointed at. It carries no traffic: no backends, no kube-proxy; its tests judge the ARP/NDP
answers in the router's neighbour table, never HTTP.

:func:`up` builds, in this order, overlapping the slow parts:

1. the control plane (:mod:`porterlb.lab.controlplane_main`: etcd + kube-apiserver on
   loopback), started first because it takes longest, and waited for last;
2. the namespace network (:func:`porterlb.lab.network.up`);
3. once the API is ready: the API endpoint on the LAN (:mod:`porterlb.lab.apiproxy`: the
   router's LAN address, port 6443, forwarded to kube-apiserver on the host's loopback), the
   chart's ServiceAccounts and RBAC (:mod:`porterlb.lab.credentials`: porterlb runs with its
   ServiceAccounts' tokens, never as ``system:masters``), the managers (:data:`MANAGERS`
   replicas electing a leader, in the host namespace, reaching the API server on 127.0.0.1
   and pinging the speakers from the router's namespace, which sits on the LAN as a
   control-plane node would) and one ``porterlb speaker`` per worker, *inside* the worker's
   namespace (``nsenter --net``; not ``ip netns exec``, which also remounts ``/sys``), whose
   API traffic crosses the worker's ``eth0`` and the router as it would on a real node, so
   that ``porterlb lab fault`` can cut it; and while they start, the CRDs, the Nodes and the
   Eips (:mod:`porterlb.lab.cluster`, which also writes a sample Service's EndpointSlices
   here: the manager places an IP only on a node with a ready endpoint);
4. it returns once the managers and the speakers serve their metrics (a manager on a
   loopback port of its own, a speaker on its worker's address, port
   :data:`SPEAKER_METRICS_PORT`, as on a node).

Everything lives under the lab's state directory ``/run/porterlb/labs/NAME/`` (a tmpfs, like
``/run/netns``, so a reboot leaves no stale lab behind): ``lab.json`` (the record ``lab info``
reads, for either lab), ``control-plane/`` (kubeconfig, certificates, etcd data) and
``logs/ROLE.log``. The processes are detached and marked (:mod:`porterlb.lab.processes`), so
:func:`down` finds them all even after ``kill -9`` of any of them or of ``lab up`` itself.

**Infrastructure fails, the system under test warns.** If the network, the control plane or
the API endpoint fails, :func:`up` removes everything it made and raises. If the manager or a
speaker (porterlb itself) has exited by the time the lab is ready, ``up`` logs a warning
naming its log and ``lab info`` shows it dead: a lab whose speaker crashes is the place to
debug that speaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import shutil
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import httpx2
import yaml

from porterlb.kube import client as kube_client
from porterlb.kube import secrets
from porterlb.lab import (
    apiproxy,
    binaries,
    cluster,
    controlplane,
    controlplane_main,
    crds,
    credentials,
    netns,
    network,
    plan,
)
from porterlb.lab import processes as procs

log = logging.getLogger(__name__)

STATE_ROOT: Final = Path("/run/porterlb/labs")
"""One directory per lab; the root itself is left in place, as ``/run/netns`` is."""

RECORD: Final = "lab.json"

CONTROL_PLANE_TIMEOUT: Final = 2 * controlplane.START_TIMEOUT + 30.0
"""The control-plane process gives etcd and kube-apiserver ``START_TIMEOUT`` each, then exits
with the reason; waiting longer than that only covers its own start."""

READY_TIMEOUT: Final = 30.0
"""Seconds for a lab process to be ready (~1 s of imports on 2 loaded cores, then a connection
or a heartbeat)."""

CONNECT_TIMEOUT: Final = 0.5
"""Seconds for one probe of a metrics port on loopback: it accepts or refuses at once."""

PYTHON: Final = (sys.executable, "-u", "-m")
"""How lab processes start: this interpreter (the venv's), unbuffered so logs are current."""

PORTERLB: Final = (*PYTHON, "porterlb.cli")
"""porterlb's own roles run as they would in a cluster: ``porterlb manager``, ``porterlb
speaker``."""

NICE: Final = ("nice", "-n", "-10")
"""porterlb's processes run before the rest of the lab: a lab packs a cluster's nodes onto a
few shared cores, where a speaker starved for 300 ms by a neighbour's startup misses three
heartbeats and is taken for dead; on a real node it has a core of its own (and a DaemonSet's
priority class). ``nice`` execs in place, so the recorded pid is porterlb's own."""

ANSWERED_PING: Final = re.compile(
    r'^porterlb_heartbeat_received_total\{role="speaker",verdict="answered"\} [1-9]', re.M
)
"""A speaker's metrics once it has answered a heartbeat: its node is eligible from then on."""

SPEAKER_METRICS_PORT: Final = 50053
"""The speaker's metrics port in a cluster (its ``--metrics-addr`` default, ``$HOST_IP:50053``):
each speaker has its worker's namespace to itself, so the port never clashes."""

MANAGERS: Final = 2
"""Manager replicas: two, as a Deployment with leader election would run, so that killing
the leader is something the lab can show."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """A running lab: its plan, where its state is, and its processes."""

    plan: plan.Lab
    directory: Path
    processes: tuple[procs.Process, ...]
    metrics: Mapping[str, str]
    """Role (``manager/N``, ``speaker/NODE``) -> ``HOST:PORT`` of its Prometheus metrics."""
    release: str | None = None
    """The Helm release porterlb runs as, when its chart installed it (a real-node lab)."""

    @property
    def kubeconfig(self) -> Path:
        return kubeconfig_of(self.directory)

    @property
    def real_nodes(self) -> bool:
        """Whether its workers are real nodes (they run kubelets), porterlb installed or not."""
        return any(process.role.startswith("kubelet/") for process in self.processes)

    def metrics_netns(self, role: str) -> str | None:
        """The namespace ``role``'s metrics address is in: a speaker's worker's, else None
        (the host's)."""
        return metrics_netns(self.plan, role)

    def process(self, role: str) -> procs.Process:
        """The process of ``role`` (``manager/1``, ``speaker/NODE``...); KeyError if none."""
        return {process.role: process for process in self.processes}[role]

    def to_json(self) -> dict[str, Any]:
        """What ``lab.json`` holds: what the plan alone does not say."""
        return {
            "name": self.plan.name,
            "workers": len(self.plan.nodes),
            "ipv6": self.plan.ipv6,
            "metrics": dict(self.metrics),
            "processes": [process.to_dict() for process in self.processes],
            **({"release": self.release} if self.release else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], directory: Path) -> Record:
        return cls(
            plan=plan.build(str(data["name"]), int(data["workers"]), ipv6=bool(data["ipv6"])),
            directory=directory,
            processes=tuple(procs.Process.from_dict(entry) for entry in data["processes"]),
            metrics={str(role): str(address) for role, address in data["metrics"].items()},
            release=data.get("release"),
        )


def up(name: str, *, workers: int = 3, ipv6: bool = False, root: Path = STATE_ROOT) -> Record:
    """Bring lab ``name`` up, replacing the leftovers of an earlier one; return its record.

    Call it from synchronous code (it runs its own event loop for the API calls). Raises
    InvalidSpec for a bad name or worker count or an address clash with a running lab,
    BinariesMissing if the control plane or helm is not built, LabError or ControlPlaneError if a
    step fails; nothing of the lab is left behind then.
    """
    layout = plan.build(name, workers, ipv6=ipv6)
    binaries.locate()
    binaries.helm()  # renders the chart's RBAC (porterlb.lab.credentials)
    down(name, root=root)
    try:
        return _up(layout, root / name)
    except BaseException:
        try:
            down(name, root=root)
        except Exception:  # the original failure is the one to report
            log.exception("lab %s: cleaning up after a failed up failed too", name)
        raise


def down(name: str, *, root: Path = STATE_ROOT) -> None:
    """Stop every process of lab ``name``, remove its namespaces and its state; no-op if absent.

    Raises InvalidSpec for a bad name, LabError if something survives.
    """
    plan.check_name(name)
    procs.stop(name)
    network.down(name)
    directory = root / name
    try:
        shutil.rmtree(directory)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise netns.LabError(f"lab {name!r}: cannot remove {directory}: {error}") from error


def load(name: str, *, root: Path = STATE_ROOT) -> Record | None:
    """The record of lab ``name``; None if there is no such lab.

    Raises LabError if the lab's directory exists without a record: ``lab up`` is still
    running, or was killed half way (``lab down`` or ``lab up`` clears that).
    """
    plan.check_name(name)
    directory = root / name
    try:
        data = json.loads((directory / RECORD).read_text())
    except FileNotFoundError:
        if directory.exists():
            raise netns.LabError(
                f"lab {name!r} is not up: {directory} has no {RECORD} (lab up is running, or "
                "died half way: run lab down)"
            ) from None
        return None
    return Record.from_json(data, directory)


def info(name: str, *, root: Path = STATE_ROOT) -> dict[str, Any] | None:
    """What ``lab info --json`` prints; None if there is no such lab.

    Raises LabError if the lab is half built or its network is not as planned.
    """
    record = load(name, root=root)
    if record is None:
        return None
    if network.inspect(name) is None:
        raise netns.LabError(f"lab {name!r}: recorded in {record.directory}, but no namespace")
    return describe(record, alive=procs.alive)


def describe(record: Record, *, alive: Callable[[procs.Process], bool]) -> dict[str, Any]:
    """The ``lab info`` object of ``record``; ``alive`` says which processes still run."""
    lab = record.plan
    pools = _pools(lab)
    nodes = [
        {
            **_endpoint(node),
            "name": node.name,
            "metrics": record.metrics.get(f"speaker/{node.name}"),
            "metrics_netns": node.netns,
            # What runs for this node, by kind (kubelet, containerd, kube-proxy on real
            # nodes; speaker on the process lab): the processes whose role is KIND/NODE.
            "processes": {
                p.role.partition("/")[0]: {"pid": p.pid, "alive": alive(p), "log": str(p.log)}
                for p in record.processes
                if p.role.partition("/")[2] == node.name
            },
        }
        for node in lab.nodes
    ]
    return {
        "name": lab.name,
        "state_dir": str(record.directory),
        "kubeconfig": str(record.kubeconfig),
        "router_netns": lab.router_netns,
        "client_netns": lab.client.netns,
        "router": _endpoint(lab.router_lan),
        "client": _endpoint(lab.client),
        "eip": pools[0],
        "eips": pools,
        "nodes": nodes,
        "backend_port": cluster.BACKEND_PORT,
        "manager_metrics": [
            address
            for role, address in sorted(record.metrics.items())
            if role.startswith("manager/")
        ],
        "processes": [
            {"role": p.role, "pid": p.pid, "alive": alive(p), "log": str(p.log)}
            for p in record.processes
        ],
        "release": record.release,
    }


def headline(record: Record, *, elapsed: float) -> str:
    """The one line ``lab up`` prints when the lab is ready."""
    pools = ", ".join(f"{pool['name']} {pool['address']}" for pool in _pools(record.plan))
    workers = len(record.plan.nodes)
    return (
        f"lab {record.plan.name} ready in {elapsed:.1f} s: {workers} worker"
        f"{'s' if workers > 1 else ''}, "
        f"Eip {pools}, kubeconfig {record.kubeconfig}"
    )


def summary(described: Mapping[str, Any]) -> str:
    """``lab info`` for people: what to point kubectl, curl and ip at."""
    pools = ", ".join(f"{pool['name']} {pool['address']}" for pool in described["eips"])
    lines = [
        f"lab {described['name']}: kubeconfig {described['kubeconfig']}",
        f"  Eips: {pools}",
        f"  router: netns {described['router_netns']}; client: netns {described['client_netns']}",
    ]
    lines += [
        f"  node {node['name']}: netns {node['netns']} {node['interface']} {node['mac']} "
        f"{' '.join(filter(None, (node['ipv4'], node['ipv6'])))}"
        for node in described["nodes"]
    ]
    lines += [
        f"  pod {pod['name']} ({pod['role']}) on {pod['node']}: "
        f"{'Ready' if pod['ready'] else pod['phase']}, {pod['restarts']} restarts"
        for pod in described.get("pods", [])
    ]
    dead = [p["role"] for p in described["processes"] if not p["alive"]]
    if dead:
        lines.append(f"  exited: {', '.join(dead)} (logs in {described['state_dir']}/logs)")
    return "\n".join(lines)


def kubeconfig_of(directory: Path) -> Path:
    """Where the control plane of the lab in ``directory`` writes its kubeconfig."""
    return directory / "control-plane" / "kubeconfig"


def kubeconfig_for(lab: plan.Lab, directory: Path, role: str) -> Path:
    """The kubeconfig ``role`` (``manager/N``, ``speaker/NODE``) runs with: the one place a
    role's credentials and API endpoint are chosen.

    Each runs as its ServiceAccount under the chart's RBAC (:mod:`porterlb.lab.credentials`).
    A manager talks to kube-apiserver on the host's loopback; a speaker, inside its worker's
    namespace, on the router's LAN address (:func:`api_endpoint`).
    """
    if not role.startswith("speaker/"):
        return credentials.kubeconfig(directory, "manager")
    config = yaml.safe_load(credentials.kubeconfig(directory, "speaker").read_text())
    for cluster_entry in config["clusters"]:
        cluster_entry["cluster"]["server"] = api_endpoint(lab)
    path = directory / "kubeconfigs" / "speaker"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def api_endpoint(lab: plan.Lab) -> str:
    """Where the lab's namespaces reach kube-apiserver: the router's LAN address."""
    return f"https://{lab.router_lan.ipv4.ip}:{apiproxy.PORT}"


def metrics_netns(lab: plan.Lab, role: str) -> str | None:
    """The namespace ``role``'s metrics address is in: a speaker's worker's, else None."""
    kind, _, which = role.partition("/")
    return lab.node(which).netns if kind == "speaker" else None


def scrape(record: Record, role: str, *, timeout: float = CONNECT_TIMEOUT) -> str:
    """What ``role`` serves on ``/metrics``. Raises httpx2.HTTPError when it does not answer
    within ``timeout`` seconds."""
    return metrics_text(record.metrics[role], namespace=record.metrics_netns(role), timeout=timeout)


def _up(lab: plan.Lab, directory: Path) -> Record:
    logs = directory / "logs"
    logs.mkdir(parents=True)
    plane_argv = [*PYTHON, controlplane_main.__name__, str(directory / "control-plane")]
    plane_argv += ["--serving-ip", str(lab.router_lan.ipv4.ip)]
    plane = _start(lab, "control-plane", plane_argv, logs)
    network.up(lab)
    _wait_logged(lab, plane, controlplane_main.READY, timeout=CONTROL_PLANE_TIMEOUT)

    kubeconfig = kubeconfig_of(directory)
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    endpoint = f"{lab.router_lan.ipv4.ip}:{apiproxy.PORT}"
    proxy_argv = [*PYTHON, apiproxy.__name__, "--netns", lab.router_netns,
                  "--listen", endpoint, "--upstream", server.removeprefix("https://")]  # fmt: skip
    api_proxy = _start(lab, "api-proxy", proxy_argv, logs)
    _wait_logged(lab, api_proxy, apiproxy.READY, timeout=READY_TIMEOUT)
    asyncio.run(grant(kubeconfig, directory))
    # Started before the CRDs exist, so that their imports overlap the install: a list of
    # Eips that fails with 404 is retried after 0.2 s by the manager's reflector.
    roles = start_porterlb(lab, directory)
    asyncio.run(_populate(lab, kubeconfig))
    await_porterlb(lab, roles)
    record = Record(
        plan=lab,
        directory=directory,
        processes=(plane, api_proxy, *roles),
        metrics={process.role: address for process, address in roles.items()},
    )
    save(record)
    return record


async def grant(kubeconfig: Path, directory: Path) -> None:
    """Install the chart's ServiceAccounts, RBAC and heartbeat Secret; write each role's
    kubeconfig (:mod:`porterlb.lab.credentials`)."""
    async with kube_client.connect(kubeconfig) as client:
        await credentials.grant(client, kubeconfig, directory)


async def _populate(lab: plan.Lab, kubeconfig: Path) -> None:
    async with kube_client.connect(kubeconfig) as client:
        await crds.install(client)
        await asyncio.gather(cluster.register_nodes(client, lab), cluster.create_eips(client, lab))


def _start(
    lab: plan.Lab, role: str, argv: list[str], logs: Path, *, namespace: str | None = None
) -> procs.Process:
    log_path = logs / f"{role.replace('/', '-')}.log"
    return procs.start(lab.name, role, argv, log_path, namespace=namespace)


def start_porterlb(lab: plan.Lab, directory: Path) -> dict[procs.Process, str]:
    """The managers, each serving metrics on a loopback port of its own (several labs share
    the host namespace), and one speaker per worker, serving them on its worker's address;
    process -> metrics address."""
    started = {}
    for n in range(1, MANAGERS + 1):
        address = f"127.0.0.1:{controlplane.free_port()}"
        started[_start_role(lab, directory, f"manager/{n}", address)] = address
    for node in lab.nodes:
        address = f"{node.ipv4.ip}:{SPEAKER_METRICS_PORT}"
        started[_start_role(lab, directory, f"speaker/{node.name}", address)] = address
    return started


def _start_role(lab: plan.Lab, directory: Path, role: str, metrics: str) -> procs.Process:
    kind, _, which = role.partition("/")
    if kind == "manager":
        command = ["manager", "--identity", f"manager-{which}"]
        command += ["--heartbeat-netns", lab.router_netns]
        command += ["--lease-namespace", credentials.NAMESPACE]
    else:
        command = ["speaker", "--node-name", which]
    command += ["--heartbeat-secret", f"{credentials.NAMESPACE}/{secrets.DEFAULT_NAME}"]
    command += ["--kubeconfig", str(kubeconfig_for(lab, directory, role))]
    command += ["--metrics-addr", metrics]
    command += ["--health-addr", "0"]  # several labs and roles share the host's ports
    argv = [*NICE, *PORTERLB, *command]
    return _start(lab, role, argv, directory / "logs", namespace=metrics_netns(lab, role))


def restart(record: Record, role: str) -> Record:
    """Start ``role`` (``manager/N`` or ``speaker/NODE``) again, after it was killed, serving
    metrics where it did; return the updated record (also written to ``lab.json``).

    Raises KeyError for a role the lab does not have, LabError if it cannot start.
    """
    old = record.process(role)
    if procs.alive(old):
        raise netns.LabError(f"lab {record.plan.name!r}: {role} (pid {old.pid}) still runs")
    return replaced(record, _start_role(record.plan, record.directory, role, record.metrics[role]))


def replaced(record: Record, fresh: procs.Process) -> Record:
    """``record`` with ``fresh`` in place of the process of its role, saved to ``lab.json``."""
    processes = tuple(fresh if p.role == fresh.role else p for p in record.processes)
    updated = dataclasses.replace(record, processes=processes)
    save(updated)
    return updated


def save(record: Record) -> None:
    """Write ``record`` to the lab's ``lab.json`` (atomically: ``lab info`` may be reading)."""
    scratch = record.directory / f".{RECORD}.tmp"
    scratch.write_text(json.dumps(record.to_json(), indent=2) + "\n")
    scratch.replace(record.directory / RECORD)


def await_porterlb(lab: plan.Lab, roles: Mapping[procs.Process, str]) -> None:
    """Wait until each of porterlb's processes is ready (a manager serves its metrics; a
    speaker has answered a manager's heartbeat, so no IP is placed on a node whose speaker is
    still starting) or has exited; warn about those that exited or never got ready."""
    pending = dict(roles)

    def settled() -> bool:
        for process, address in list(pending.items()):
            if not procs.alive(process) or _ready(lab, process.role, address):
                del pending[process]
        return not pending

    with contextlib.suppress(netns.LabError):
        netns.wait_until(settled, timeout=READY_TIMEOUT, what="porterlb's processes")
    for process in roles:
        if not procs.alive(process) or process in pending:
            state = "is not ready" if process in pending else "has exited"
            log.warning(
                "lab %s: %s (pid %d) %s; see %s%s",
                lab.name, process.role, process.pid, state, process.log, tail(process.log),
            )  # fmt: skip


def ready(record: Record, role: str) -> bool:
    """Whether ``role`` of the lab is ready: a manager serves its metrics, a speaker has
    answered a manager's heartbeat (so its node is eligible)."""
    return _ready(record.plan, role, record.metrics[role])


def _ready(lab: plan.Lab, role: str, address: str) -> bool:
    if not role.startswith("speaker/"):
        return _serving(address)
    try:
        text = metrics_text(address, namespace=metrics_netns(lab, role))
    except httpx2.HTTPError:
        return False
    return ANSWERED_PING.search(text) is not None


def metrics_text(
    address: str, *, namespace: str | None = None, timeout: float = CONNECT_TIMEOUT
) -> str:
    """What a porterlb process serves on ``/metrics`` at ``HOST:PORT``, in network namespace
    ``namespace`` (None: the host's). Raises httpx2.HTTPError when it does not answer within
    ``timeout`` seconds."""

    def get() -> str:
        return httpx2.get(f"http://{address}/metrics", timeout=timeout).text

    return get() if namespace is None else netns.call_in(namespace, get)


def _serving(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with (
        contextlib.suppress(OSError),
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT),
    ):
        return True
    return False


def _wait_logged(lab: plan.Lab, process: procs.Process, line: str, *, timeout: float) -> None:
    """Return once ``process`` has logged ``line``; raise LabError if it exits first."""
    _wait(lab, process, lambda: line in process.log.read_text(errors="replace"), timeout=timeout)


def _wait(
    lab: plan.Lab, process: procs.Process, ready: Callable[[], bool], *, timeout: float
) -> None:
    """Return once ``ready()``; raise LabError, with ``process``'s log tail, if it exits first
    or ``timeout`` passes."""

    def check() -> bool:
        if not procs.alive(process):
            raise netns.LabError(
                f"lab {lab.name!r}: {process.role} exited before it was ready{tail(process.log)}"
            )
        return ready()

    try:
        netns.wait_until(check, timeout=timeout, what=f"{process.role} of lab {lab.name!r}")
    except netns.LabError as error:
        if procs.alive(process):
            raise netns.LabError(f"{error}{tail(process.log)}") from error
        raise


def tail(path: Path, lines: int = 20) -> str:
    """``":\n"`` and the last ``lines`` lines of the log at ``path``, for an error message; ""
    if it is empty or unreadable."""
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        if text:
            return ":\n" + "\n".join(text)
    return ""


def _pools(lab: plan.Lab) -> list[dict[str, str]]:
    return [
        {"name": pool["metadata"]["name"], "address": pool["spec"]["address"]}
        for pool in cluster.eips(lab)
    ]


def _endpoint(endpoint: plan.Endpoint) -> dict[str, Any]:
    return {
        "netns": endpoint.netns,
        "interface": endpoint.ifname,
        "ipv4": str(endpoint.ipv4.ip),
        "ipv6": str(endpoint.ipv6.ip) if endpoint.ipv6 else None,
        "mac": str(endpoint.mac),
    }
