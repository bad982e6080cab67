"""A whole lab, up and down: network, control plane, Kubernetes objects and every process.

``lab up --name NAME`` builds, in this order, overlapping the slow parts:

1. the control plane: ``porterlb lab control-plane`` (etcd + kube-apiserver on loopback),
   started first because it takes longest, and waited for last;
2. the namespace network (:func:`porterlb.lab.network.up`) and one backend per worker, in
   the worker's namespace;
3. once the API is ready: the kube-proxy stand-in (``porterlb lab kube-proxy``), the CRDs,
   the manager and one ``porterlb speaker`` per worker (all in the host namespace, so they
   reach the API server on 127.0.0.1; a speaker opens its sockets in its worker's namespace),
   then the Nodes and the Eips (:mod:`porterlb.lab.cluster`);
4. it returns once the kube-proxy stand-in has written every worker's table.

Everything lives under the lab's state directory ``/run/porterlb/labs/NAME/`` (a tmpfs, like
``/run/netns``, so a reboot leaves no stale lab behind): ``lab.json`` (the record ``lab info``
reads), ``control-plane/`` (kubeconfig, certificates, etcd data), ``logs/ROLE.log`` and the
stand-in's ready file. The processes are detached and marked (:mod:`porterlb.lab.processes`),
so :func:`down` finds them all even after ``kill -9`` of any of them or of ``lab up`` itself.

**Infrastructure fails, the system under test warns.** If the network, the control plane, a
backend or the kube-proxy stand-in fails, :func:`up` removes everything it made and raises. If
the manager or a speaker (porterlb itself) has exited by the time the lab is ready, ``up``
logs a warning naming its log and ``lab info`` shows it dead: a lab whose speaker crashes is
the place to debug that speaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from porterlb.kube import client as kube_client
from porterlb.lab import backend, binaries, cluster, controlplane, crds, netns, network, plan
from porterlb.lab import processes as procs

log = logging.getLogger(__name__)

STATE_ROOT: Final = Path("/run/porterlb/labs")
"""One directory per lab; the root itself is left in place, as ``/run/netns`` is."""

RECORD: Final = "lab.json"

CONTROL_PLANE_READY: Final = "control plane ready:"
"""What ``porterlb lab control-plane`` prints once kube-apiserver answers ``/readyz``."""

BACKEND_READY: Final = "serving on"
"""What a backend prints once it listens (``porterlb.lab.backend``)."""

CONTROL_PLANE_TIMEOUT: Final = 2 * controlplane.START_TIMEOUT + 30.0
"""The control-plane process gives etcd and kube-apiserver ``START_TIMEOUT`` each, then exits
with the reason; waiting longer than that only covers its own start."""

READY_TIMEOUT: Final = 30.0
"""Seconds for the kube-proxy stand-in to start (~1 s of imports on 2 loaded cores), list and
write every table."""

PORTERLB: Final = (sys.executable, "-m", "porterlb.cli")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """A running lab: its plan, where its state is, and its processes."""

    plan: plan.Lab
    directory: Path
    processes: tuple[procs.Process, ...]
    manager_metrics: str
    speaker_metrics: Mapping[str, str]
    """Node name -> ``HOST:PORT`` of its speaker's metrics."""

    @property
    def kubeconfig(self) -> Path:
        return kubeconfig_of(self.directory)

    def process(self, role: str) -> procs.Process:
        """The process of ``role`` (``manager``, ``speaker/NODE``...); KeyError if none."""
        return next(p for p in self.processes if p.role == role)

    def to_json(self) -> dict[str, Any]:
        """What ``lab.json`` holds: what the plan alone does not say."""
        return {
            "name": self.plan.name,
            "workers": len(self.plan.nodes),
            "ipv6": self.plan.ipv6,
            "manager_metrics": self.manager_metrics,
            "speaker_metrics": dict(self.speaker_metrics),
            "processes": [process.to_dict() for process in self.processes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], directory: Path) -> Record:
        return cls(
            plan=plan.build(str(data["name"]), int(data["workers"]), ipv6=bool(data["ipv6"])),
            directory=directory,
            processes=tuple(procs.Process.from_dict(entry) for entry in data["processes"]),
            manager_metrics=str(data["manager_metrics"]),
            speaker_metrics={str(k): str(v) for k, v in data["speaker_metrics"].items()},
        )


def up(name: str, *, workers: int = 3, ipv6: bool = False, root: Path = STATE_ROOT) -> Record:
    """Bring lab ``name`` up, replacing the leftovers of an earlier one; return its record.

    Call it from synchronous code (it runs its own event loop for the API calls). Raises
    InvalidSpec for a bad name or worker count or an address clash with a running lab,
    BinariesMissing if the control plane is not built, LabError or ControlPlaneError if a
    step fails; nothing of the lab is left behind then.
    """
    layout = plan.build(name, workers, ipv6=ipv6)
    binaries.locate()
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
    pools = [
        {"name": pool["metadata"]["name"], "address": pool["spec"]["address"]}
        for pool in cluster.eips(lab)
    ]
    nodes = [
        {**_endpoint(node), "name": node.name, "speaker_metrics": record.speaker_metrics[node.name]}
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
        "manager_metrics": record.manager_metrics,
        "processes": [
            {"role": p.role, "pid": p.pid, "alive": alive(p), "log": str(p.log)}
            for p in record.processes
        ],
    }


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
    dead = [p["role"] for p in described["processes"] if not p["alive"]]
    if dead:
        lines.append(f"  exited: {', '.join(dead)} (logs in {described['state_dir']}/logs)")
    return "\n".join(lines)


def kubeconfig_of(directory: Path) -> Path:
    """Where the control plane of the lab in ``directory`` writes its kubeconfig."""
    return directory / "control-plane" / "kubeconfig"


def _up(lab: plan.Lab, directory: Path) -> Record:
    started = time.monotonic()
    logs = directory / "logs"
    logs.mkdir(parents=True)
    plane = procs.start(
        lab.name,
        "control-plane",
        [*PORTERLB, "lab", "control-plane", "--dir", str(directory / "control-plane")],
        logs / "control-plane.log",
    )
    network.up(lab)
    running = [plane]
    for node in lab.nodes:
        argv = [sys.executable, "-u", "-m", backend.MODULE, "--node", node.name,
                "--port", str(cluster.BACKEND_PORT)]  # fmt: skip
        log_path = logs / f"backend-{node.name}.log"
        role = f"backend/{node.name}"
        running.append(procs.start(lab.name, role, argv, log_path, namespace=node.netns))
    for process in running[1:]:
        _wait_logged(lab, process, BACKEND_READY, timeout=backend.READY_TIMEOUT)
    _wait_logged(lab, plane, CONTROL_PLANE_READY, timeout=CONTROL_PLANE_TIMEOUT)

    kubeconfig = kubeconfig_of(directory)
    manager_metrics = f"127.0.0.1:{controlplane.free_port()}"
    speaker_metrics: dict[str, str] = {
        node.name: f"127.0.0.1:{controlplane.free_port()}" for node in lab.nodes
    }
    ready_file = directory / "kube-proxy.ready"
    workers = [arg for node in lab.nodes for arg in ("--node", f"{node.name}={node.netns}")]
    proxy = procs.start(
        lab.name,
        "kube-proxy",
        [*PORTERLB, "lab", "kube-proxy", "--kubeconfig", str(kubeconfig),
         "--ready-file", str(ready_file), *workers],
        logs / "kube-proxy.log",
    )  # fmt: skip
    running.append(proxy)

    def start_porterlb() -> None:
        """The manager and the speakers: started once the CRDs exist, so they list Eips."""
        running.append(
            procs.start(
                lab.name,
                "manager",
                [*PORTERLB, "manager", "--kubeconfig", str(kubeconfig),
                 "--metrics-addr", manager_metrics],
                logs / "manager.log",
            )
        )  # fmt: skip
        for node in lab.nodes:
            argv = [*PORTERLB, "speaker", "--node-name", node.name, "--kubeconfig",
                    str(kubeconfig), "--netns", node.netns,
                    "--metrics-addr", speaker_metrics[node.name]]  # fmt: skip
            log_path = logs / f"speaker-{node.name}.log"
            running.append(procs.start(lab.name, f"speaker/{node.name}", argv, log_path))

    asyncio.run(_populate(lab, kubeconfig, start_porterlb))
    _wait(lab, proxy, ready_file.exists, timeout=READY_TIMEOUT)

    record = Record(
        plan=lab,
        directory=directory,
        processes=tuple(running),
        manager_metrics=manager_metrics,
        speaker_metrics=speaker_metrics,
    )
    scratch = directory / f".{RECORD}.tmp"
    scratch.write_text(json.dumps(record.to_json(), indent=2) + "\n")
    scratch.replace(directory / RECORD)
    for process in record.processes:
        if not procs.alive(process):
            log.warning(
                "lab %s: %s (pid %d) has exited; see %s%s",
                lab.name, process.role, process.pid, process.log, _tail(process.log),
            )  # fmt: skip
    log.info("lab %s: up in %.1f s", lab.name, time.monotonic() - started)
    return record


async def _populate(lab: plan.Lab, kubeconfig: Path, start_porterlb: Callable[[], None]) -> None:
    async with kube_client.connect(kubeconfig) as client:
        await crds.install(client)
        start_porterlb()
        await cluster.register_nodes(client, lab)
        await cluster.create_eips(client, lab)


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
                f"lab {lab.name!r}: {process.role} exited before it was ready{_tail(process.log)}"
            )
        return ready()

    try:
        netns.wait_until(check, timeout=timeout, what=f"{process.role} of lab {lab.name!r}")
    except netns.LabError as error:
        if procs.alive(process):
            raise netns.LabError(f"{error}{_tail(process.log)}") from error
        raise


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        if text:
            return ":\n" + "\n".join(text)
    return ""


def _endpoint(endpoint: plan.Endpoint) -> dict[str, Any]:
    return {
        "netns": endpoint.netns,
        "interface": endpoint.ifname,
        "ipv4": str(endpoint.ipv4.ip),
        "ipv6": str(endpoint.ipv6.ip) if endpoint.ipv6 else None,
        "mac": str(endpoint.mac),
    }
