"""A lab whose workers are real Kubernetes nodes: ``porterlb lab up --nodes real``.

Groundwork for the real-cluster lab, beside the default one (which stays as it is until the
chart installs porterlb here). :func:`up` builds, in order:

1. the control plane process (reaching the kubelets through :mod:`.egress`), the namespace
   network, as the default lab does, and the pod routes and forwarding (:mod:`.podnet`);
2. the lab's mount namespace with the kernel tunables covered (:mod:`.mountns`), and
   checks that every cover is in place before any kubelet can run;
3. one containerd per worker, in its netns and the lab's mount namespace, with the worker's
   bridge + host-local CNI configuration, each importing the lab image (:mod:`.images`) once
   its socket is up;
4. once the API is ready: its endpoint on the router's LAN address
   (:mod:`porterlb.lab.apiproxy`), the CONNECT proxy kube-apiserver reaches kubelets
   through, kube-controller-manager and kube-scheduler beside the API server; the Nodes,
   created with their pod CIDRs, the ``kubernetes`` Service's EndpointSlice (the API
   endpoint on the LAN, for pods) and kube-proxy's credentials; then one kubelet per
   worker, each with a cgroup root of its own, and one real kube-proxy per worker
   (:mod:`.proxy`), both in the worker's netns and the lab's mount namespace;
5. once every Node is Ready without the not-ready taint, every kube-proxy reports healthy
   and the ``default`` ServiceAccount exists (pods are admitted with their ServiceAccount's
   token), with ``porterlb="chart"``: porterlb installed by its own chart (:mod:`.release`;
   ``helm install``, every pod Ready) from the image built from the Dockerfile
   (:mod:`.porterlb_image`, built before anything else starts and imported into each
   containerd beside the lab image), then the lab's Eips;
6. it checks that the host's kernel tunables are what they were before it began.

Without ``porterlb``, no porterlb process, backend, Eip or Service is created: what runs on
the nodes is for the caller (:mod:`.workloads`, :mod:`.hosted`). Everything is a marked lab
process (:mod:`porterlb.lab.processes`), so :func:`down` finds it all without a record: it
stops the processes, kills whatever the pods left in the kubelets' cgroup roots and removes
those, then removes the network (with the pods' bridges, veths and kube-proxy's nftables
tables, which live in the workers' namespaces) and the state directory (with host-local's
leases, and each containerd's root with the images imported into it). The mount namespace,
with every overlay and pod volume mounted in it, ends with its last process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import shutil
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, Literal

import httpx2
import yaml

from porterlb.kube import client as kube_client
from porterlb.lab import (
    apiproxy,
    binaries,
    cluster,
    controlplane,
    controlplane_main,
    credentials,
    lab,
    netns,
    network,
    plan,
)
from porterlb.lab import processes as procs
from porterlb.lab.node import (
    controllers,
    egress,
    images,
    kubelet,
    mountns,
    podnet,
    porterlb_image,
    proxy,
    release,
    runtime,
)

log = logging.getLogger(__name__)

WORKERS: Final = 2
"""Default node count: three kubelets fit this 2-core machine (~3 % of a core and ~400 MiB
idle, shared/reference/real-cluster measurements), but two leave room for the rest."""

BINARIES: Final = (*binaries.CONTROL_PLANE, *binaries.NODES)

TOOLS: Final = ("containerd", "runc", "ctr", "nsenter", "unshare", "nft")
"""Programs from Debian's containerd, runc, util-linux and nftables this lab runs."""

START_TIMEOUT: Final = 30.0
"""Seconds for the mount namespace, a containerd socket or the API endpoint to appear: each
takes well under a second unless the machine is starved."""

NODES_TIMEOUT: Final = 120.0
"""Seconds for every Node to be Ready and untainted after its kubelet starts: 1.4-2.2 s each
measured on this machine kind when idle; minutes of margin for a loaded CI host."""

NOT_READY_TAINT: Final = "node.kubernetes.io/not-ready"

DEFAULT_ACCOUNT: Final = "/api/v1/namespaces/default/serviceaccounts/default"

HEALTH_TIMEOUT: Final = 5.0
"""Seconds for one kube-proxy health request: it answers in milliseconds, but a loaded 2-core
host can hold a Go process off the CPU for a second and more."""

Report = Callable[[str], None]

Install = Literal["chart"] | None
"""How porterlb gets onto the nodes: by its chart, or not at all."""


def up(
    name: str,
    *,
    workers: int = WORKERS,
    ipv6: bool = False,
    porterlb: Install = None,
    root: Path = lab.STATE_ROOT,
    report: Report = log.info,
) -> lab.Record:
    """Bring lab ``name`` up with real nodes, replacing an earlier one; return its record.

    ``ipv6`` makes the LAN and the cluster dual-stack (:mod:`.podnet`). ``porterlb="chart"``
    installs porterlb with its chart, building its image first if the cache lacks it. Call it
    from synchronous code (it runs its own event loop for the API calls). ``report`` gets one
    line per phase with its time. Raises InvalidSpec for a bad name or count,
    BinariesMissing, LabError (a missing program, a step that failed or timed out, a host
    tunable that changed) or ControlPlaneError; nothing of the lab is left then.
    """
    layout = plan.build(name, workers, ipv6=ipv6)
    bins = binaries.locate(BINARIES)
    # buildah and debootstrap are both the program and the Debian package.
    extra = porterlb_image.BUILD_TOOLS if porterlb else ()
    missing = [tool for tool in (*TOOLS, *extra) if shutil.which(tool) is None]
    if missing or not images.BUSYBOX.is_file():
        raise netns.LabError(
            f"lab {name!r}: {', '.join(missing) or images.BUSYBOX} missing: install Debian's "
            f"{' '.join((*runtime.PACKAGES, *extra))} (scripts/dev.sh test installs them)"
        )
    image = None
    if porterlb == "chart":
        binaries.helm()
        started = time.monotonic()
        image, built = porterlb_image.ensure(report=report)
        state = "built" if built else "cached"
        report(
            f"lab {name}: porterlb image {image.tag} {state} in {time.monotonic() - started:.1f} s"
        )
    host = mountns.host_values()
    down(name, root=root)
    try:
        record = _up(layout, root / name, bins, image, report)
        mountns.check_host(host)
        return record
    except BaseException:
        try:
            down(name, root=root)
        except Exception:  # the original failure is the one to report
            log.exception("lab %s: cleaning up after a failed up failed too", name)
        raise


def down(name: str, *, root: Path = lab.STATE_ROOT) -> None:
    """Remove lab ``name``, real nodes and all (processes, cgroups, namespaces, state).

    Works on a default lab too, where there are no cgroups to remove. Raises InvalidSpec for a
    bad name, LabError if something survives.
    """
    plan.check_name(name)
    procs.stop(name)
    for cgroup in cgroup_roots(name):
        kubelet.remove_cgroup_root(cgroup)
    lab.down(name, root=root)


def cgroup_roots(name: str, cgroup_fs: Path = kubelet.CGROUP_FS) -> list[str]:
    """The kubelet cgroup roots of lab ``name`` present in any hierarchy."""
    # Worker K of lab NAME is the Node NAME-wK (porterlb.lab.plan.build).
    pattern = re.compile(re.escape(f"{kubelet.CGROUP_PREFIX}{name}-w") + "[0-9]+")
    return sorted(
        {
            f"/{path.name}"
            for hierarchy in kubelet.hierarchies(cgroup_fs)
            for path in hierarchy.iterdir()
            if path.is_dir() and pattern.fullmatch(path.name)
        }
    )


def _up(
    layout: plan.Lab,
    directory: Path,
    bins: Path,
    image: porterlb_image.Image | None,
    report: Report,
) -> lab.Record:
    phase = [time.monotonic()]

    def done(what: str) -> None:
        now = time.monotonic()
        report(f"lab {layout.name}: {what} in {now - phase[0]:.1f} s")
        phase[0] = now

    logs = directory / "logs"
    logs.mkdir(parents=True)

    def start(role: str, argv: list[str]) -> procs.Process:
        return procs.start(layout.name, role, argv, logs / f"{role.replace('/', '-')}.log")

    router = str(layout.router_lan.ipv4.ip)
    egress_socket = directory / "kubelet-egress.sock"
    plane_argv = [*lab.PYTHON, controlplane_main.__name__, str(directory / "control-plane")]
    plane_argv += ["--serving-ip", router, "--serving-ip", str(api_service_ip(layout))]
    plane_argv += ["--kubelet-egress", str(egress_socket)]
    plane_argv += ["--service-range", service_range(layout)]
    plane = start("control-plane", plane_argv)
    network.up(layout)
    podnet.up(layout)
    holder = start("mount-namespace", mountns.holder_argv(directory / "sysctl-covers"))
    _wait_logged(holder, mountns.READY, START_TIMEOUT)
    mountns.check_covered(holder.pid)
    done("network and mount namespace")

    cidrs = plan.node_pod_cidrs(layout)
    runtimes = {node.name: runtime_paths(directory, node.name) for node in layout.nodes}
    containerds = []
    for node in layout.nodes:
        paths = runtimes[node.name]
        paths.make(podnet.cni_config(cidrs[node.name], paths.ipam))
        role = f"containerd/{node.name}"
        containerds.append(start(role, node_argv(layout, directory, role, holder.pid, bins)))
    archive = images.write(directory / "image.tar")
    for process, paths in zip(containerds, runtimes.values(), strict=True):
        _wait(process, paths.socket.exists, START_TIMEOUT)
        netns.run(None, runtime.import_argv(paths, archive))
    done(f"{len(containerds)} containerd, image imported")
    if image is not None:
        imports = porterlb_image.Imports.start(
            [runtime.import_argv(paths, image.archive) for paths in runtimes.values()]
        )

    _wait_logged(plane, controlplane_main.READY, lab.CONTROL_PLANE_TIMEOUT)
    admin = lab.kubeconfig_of(directory)
    server, token, ca = _admin(admin)
    upstream = server.removeprefix("https://")
    api_proxy = start(
        "apiproxy",
        [*lab.PYTHON, apiproxy.__name__, "--netns", layout.router_netns,
         "--listen", f"{router}:{apiproxy.PORT}", "--upstream", upstream],
    )  # fmt: skip
    kubelet_egress = start(
        "kubelet-egress",
        [*lab.PYTHON, egress.__name__, "--socket", str(egress_socket),
         "--netns", layout.router_netns],
    )  # fmt: skip
    kcm = start(
        "kube-controller-manager",
        controllers.controller_manager_argv(
            bins / "kube-controller-manager",
            admin,
            directory / "controller-manager",
            ca,
            service_range=service_range(layout),
        ),
    )
    scheduler = start("kube-scheduler", controllers.scheduler_argv(bins / "kube-scheduler", admin))
    endpoint = api_endpoint(layout)
    proxy_kubeconfig = directory / PROXY_KUBECONFIG
    asyncio.run(_prepare(layout, admin, proxy_kubeconfig, endpoint, ca))
    _wait_logged(api_proxy, apiproxy.READY, START_TIMEOUT)
    _wait_logged(kubelet_egress, egress.READY, START_TIMEOUT)
    done("control plane")

    kubelets: list[procs.Process] = []
    proxies: list[procs.Process] = []
    for node in layout.nodes:
        cgroup = kubelet.cgroup_root(node.name)
        kubelet.create_cgroup_root(cgroup)
        kubelet.weigh_cgroup_root(cgroup)
        kubelet.write(_kubelet_node(layout, directory, node, token, ca))
        for kind, started in (("kubelet", kubelets), ("kube-proxy", proxies)):
            role = f"{kind}/{node.name}"
            started.append(start(role, node_argv(layout, directory, role, holder.pid, bins)))
    context = controlplane.ssl_context(admin)

    pending: list[str] = []

    def ready() -> bool:
        for process in (*kubelets, *proxies, *containerds, kcm, scheduler, api_proxy):
            _check_alive(process)
        names = [node.name for node in layout.nodes]
        pending[:] = [] if _nodes_ready(server, token, context, names) else ["Nodes Ready"]
        for node in layout.nodes:
            if (problem := _proxy_health(node)) is not None:
                pending.append(f"kube-proxy/{node.name} healthy ({problem})")
        # Pods are admitted only once their ServiceAccount exists (the controller manager
        # creates it): a pod created right after up must not be refused.
        if _get(server, token, context, DEFAULT_ACCOUNT) is None:
            pending.append("ServiceAccount default/default")
        return not pending

    try:
        netns.wait_until(ready, timeout=NODES_TIMEOUT, what=f"the Nodes of lab {layout.name!r}")
    except netns.LabError as error:
        unhealthy = [p.log for p in proxies if any(w.startswith(p.role) for w in pending)]
        detail = f"; {unhealthy[0]}{lab.tail(unhealthy[0])}" if unhealthy else ""
        raise netns.LabError(f"{error}; still waiting for {', '.join(pending)}{detail}") from error
    done(f"{len(kubelets)} nodes Ready, kube-proxy healthy")
    if image is not None:
        took = imports.wait()
        done(f"porterlb image imported into {len(runtimes)} containerd ({took:.1f} s from start)")
        release.helm("install", admin, release.values(image))
        done(f"helm install {release.RELEASE}")
        release.wait_ready(admin, len(layout.nodes))
        done("porterlb's pods Ready")
        asyncio.run(_create_eips(admin, layout))
        done("Eips created")
    record = lab.Record(
        plan=layout,
        directory=directory,
        processes=(
            plane, holder, *containerds, api_proxy, kubelet_egress, kcm, scheduler,
            *kubelets, *proxies,
        ),
        metrics={},
        release=release.RELEASE if image is not None else None,
    )  # fmt: skip
    lab.save(record)
    return record


NODE_KINDS: Final = ("containerd", "kubelet", "kube-proxy")
"""What runs on each worker as a lab process (role ``KIND/NODE``), in start order."""

PROXY_KUBECONFIG: Final = Path("kube-proxy") / "kubeconfig"
"""kube-proxy's kubeconfig, under the lab's directory (every node's shares it)."""


def runtime_paths(directory: Path, node: str) -> runtime.Paths:
    """The containerd directories of worker ``node`` of the lab in ``directory``."""
    return runtime.Paths(directory / "nodes" / node / "containerd")


def api_endpoint(layout: plan.Lab) -> str:
    """Where the nodes reach the API server: the router's LAN address (:mod:`.apiproxy`)."""
    return f"https://{layout.router_lan.ipv4.ip}:{apiproxy.PORT}"


def _kubelet_node(
    layout: plan.Lab, directory: Path, node: plan.Node, token: str, ca: Path
) -> kubelet.Node:
    return kubelet.Node(
        name=node.name,
        ip=",".join(str(a.ip) for a in (node.ipv4, node.ipv6) if a is not None),
        directory=directory / "nodes" / node.name / "kubelet",
        cgroup_root=kubelet.cgroup_root(node.name),
        runtime_socket=runtime_paths(directory, node.name).socket,
        server=api_endpoint(layout),
        token=token,
        ca=ca,
    )


def node_argv(layout: plan.Lab, directory: Path, role: str, holder: int, bins: Path) -> list[str]:
    """The command of node role ``role`` (``KIND/NODE``, KIND in :data:`NODE_KINDS`) of the lab
    in ``directory``, in the mount namespace ``holder`` holds and the worker's netns: what
    :func:`up` starts, and :func:`restart` starts again. Raises KeyError for another role."""
    kind, _, name = role.partition("/")
    node = layout.node(name)
    enter = mountns.enter_argv(holder, node.netns)
    if kind == "containerd":
        return [*enter, *runtime.argv(runtime_paths(directory, name))]
    if kind == "kubelet":
        _, token, ca = _admin(lab.kubeconfig_of(directory))
        config = _kubelet_node(layout, directory, node, token, ca)
        return [*enter, *kubelet.argv(bins / "kubelet", config)]
    if kind == "kube-proxy":
        state = directory / "nodes" / name / "kube-proxy"
        kubeconfig = directory / PROXY_KUBECONFIG
        return [*enter, *proxy.argv(bins / "kube-proxy", state, node=name, kubeconfig=kubeconfig)]
    raise KeyError(f"lab {layout.name}: {role!r} is not a node role ({', '.join(NODE_KINDS)})")


def restart(record: lab.Record, role: str) -> lab.Record:
    """Start node role ``role`` (``containerd/NODE``, ``kubelet/NODE``, ``kube-proxy/NODE``)
    again once every process of that role has exited (a crash SIGKILLed them), as :func:`up`
    started it; a containerd is waited for until it listens. Return the updated record (also
    written to ``lab.json``).

    Raises KeyError for another role, LabError if the role still runs, the lab's mount
    namespace is gone or the process does not start.
    """
    name = record.plan.name
    if procs.running(name, (role,)):
        raise netns.LabError(f"lab {name!r}: {role} still runs")
    holder = record.process("mount-namespace")
    if not procs.alive(holder):
        raise netns.LabError(f"lab {name!r}: its mount namespace (pid {holder.pid}) is gone")
    bins = binaries.locate(BINARIES)
    argv = node_argv(record.plan, record.directory, role, holder.pid, bins)
    socket = runtime_paths(record.directory, role.partition("/")[2]).socket
    if role.startswith("containerd/"):
        socket.unlink(missing_ok=True)  # left by the killed one: its reappearance says ready
    fresh = procs.start(name, role, argv, record.process(role).log)
    if role.startswith("containerd/"):
        _wait(fresh, socket.exists, START_TIMEOUT)
    return lab.replaced(record, fresh)


def service_range(layout: plan.Lab) -> str:
    """kube-apiserver's ``--service-cluster-ip-range`` for ``layout``: the usual IPv6 range,
    and an IPv4 range the lab's LAN is not in (:func:`porterlb.lab.plan.service_block`)."""
    v6 = controlplane.SERVICE_CLUSTER_IP_RANGE.split(",")[1]
    return f"{plan.service_block(layout)},{v6}"


def api_service_ip(layout: plan.Lab) -> ipaddress.IPv4Address:
    """The ClusterIP of the ``kubernetes`` Service: kube-apiserver gives it the first address
    of the (primary) Service range, and pods reach the API there."""
    return plan.service_block(layout)[1]


def api_endpoint_slice(layout: plan.Lab) -> dict[str, Any]:
    """The ``kubernetes`` Service's EndpointSlice: the API endpoint on the router's LAN
    address. kube-apiserver would publish its own address, but it listens on the host's
    loopback (``--endpoint-reconciler-type=none``), which no pod can reach."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "lab.porterlb.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [str(layout.router_lan.ipv4.ip)], "conditions": {"ready": True}}
        ],
        "ports": [{"name": "https", "port": apiproxy.PORT, "protocol": "TCP"}],
    }


async def _prepare(
    layout: plan.Lab, admin: Path, proxy_kubeconfig: Path, endpoint: str, ca: Path
) -> None:
    """What must exist before the kubelets and kube-proxies start: the Nodes with their pod
    CIDRs, the API's EndpointSlice, kube-proxy's credentials."""
    async with kube_client.connect(admin) as client:
        nodes = [podnet.node(layout, node) for node in layout.nodes]
        await credentials.install(client, [*nodes, api_endpoint_slice(layout)], namespace="default")
        await proxy.grant(client, proxy_kubeconfig, server=endpoint, ca=ca)


def _proxy_health(node: plan.Node) -> str | None:
    """None once ``node``'s kube-proxy answers 200 on its health port (its rules are synced),
    else what it answered instead."""

    def get() -> httpx2.Response:
        url = f"http://{node.ipv4.ip}:{proxy.HEALTH_PORT}/healthz"
        return httpx2.get(url, timeout=HEALTH_TIMEOUT)

    try:
        reply = netns.call_in(node.netns, get)
    except httpx2.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    return None if reply.status_code == 200 else f"{reply.status_code} {reply.text}"


def headline(record: lab.Record, *, elapsed: float) -> str:
    """The one line ``lab up --nodes real`` prints when the lab is ready."""
    nodes = ", ".join(f"{node.name} {node.ipv4.ip}" for node in record.plan.nodes)
    installed = ""
    if record.release:
        pools = ", ".join(f"{pool['metadata']['name']} {pool['spec']['address']}"
                          for pool in cluster.eips(record.plan))  # fmt: skip
        installed = f"porterlb by chart (release {record.release}), Eip {pools}, "
    return (
        f"lab {record.plan.name} ready in {elapsed:.1f} s: real nodes {nodes}, {installed}"
        f"kubeconfig {record.kubeconfig}"
    )


async def _create_eips(kubeconfig: Path, layout: plan.Lab) -> None:
    async with kube_client.connect(kubeconfig) as client:
        await cluster.create_eips(client, layout)


def _admin(kubeconfig: Path) -> tuple[str, str, Path]:
    """The server, the token and the CA file of the lab admin's kubeconfig."""
    config: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    return (
        cluster["server"],
        config["users"][0]["user"]["token"],
        Path(cluster["certificate-authority"]),
    )


def _get(server: str, token: str, context: ssl.SSLContext, path: str) -> Any:
    """The object at ``path`` of the API, or None if it cannot be read (yet)."""
    try:
        reply = httpx2.get(
            f"{server}{path}",
            headers={"Authorization": f"Bearer {token}"},
            verify=context,
            timeout=5.0,
        )
    except httpx2.HTTPError:
        return None
    return reply.json() if reply.status_code == 200 else None


def _nodes_ready(server: str, token: str, context: ssl.SSLContext, names: Iterable[str]) -> bool:
    """Whether every Node in ``names`` is Ready and without the not-ready taint."""
    found = _get(server, token, context, "/api/v1/nodes")
    if found is None:
        return False
    nodes = {item["metadata"]["name"]: item for item in found["items"]}
    for name in names:
        node = nodes.get(name)
        if node is None:
            return False
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        taints = {t["key"] for t in node.get("spec", {}).get("taints", [])}
        if conditions.get("Ready") != "True" or NOT_READY_TAINT in taints:
            return False
    return True


def _check_alive(process: procs.Process) -> None:
    if not procs.alive(process):
        # The tail, not only the path: a failed up removes the lab and its logs with it.
        raise netns.LabError(
            f"{process.role} exited before the lab was ready; see {process.log}"
            f"{lab.tail(process.log)}"
        )


def _wait(process: procs.Process, ready: Callable[[], bool], timeout: float) -> None:
    def check() -> bool:
        _check_alive(process)
        return ready()

    netns.wait_until(check, timeout=timeout, what=process.role)


def _wait_logged(process: procs.Process, line: str, timeout: float) -> None:
    _wait(process, lambda: line in process.log.read_text(errors="replace"), timeout)
