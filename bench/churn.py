"""Churn: random Service changes against the real API server, with leader kills between.

    uv run python -m bench.churn [--ops 10000] [--seed 1] [--phases 20] [--kills 10]

Starts a control plane and two ``porterlb manager`` processes electing a leader over a Lease,
then runs `ops` random operations on Services (seeded, so a failing run is replayed by its
seed): create, update, delete, class change (LoadBalancer -> NodePort, the OpenELB opt-in
annotation removed or added back, LoadBalancer -> NodePort -> LoadBalancer of another class,
and back into porterlb's class) and pool change (the Service's pool annotation). Every new
Service gets a ready endpoint, so placement records an announcing node for it too. The
operations run in phases; between phases the leader is killed with SIGKILL (no release of
its Lease, its requests in flight left to land or not) and a new replica started, and the
invariant checker reads the API until the state has converged, then every invariant holds:

- no IP is held by two Services unless both carry the same sharing key on disjoint ports;
- no IP leaks: each Eip's ``status.used`` and ``usage`` equal a recount from the Services;
- no Service that is not porterlb's carries our finalizer, pool label or announced-by
  record, and no Service hangs in Terminating;
- every porterlb Service with an IP has it from the pool its label names, is announced from
  an existing node, and one without an IP (or still in its old pool) asks for a full pool.

A phase that does not converge within its deadline fails with the violations last seen. The
integration test ``tests/integration/test_churn.py`` runs a few hundred operations in CI; this
module prints the full-size table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx2
import lightkube
import msgspec

from porterlb.api import wellknown
from porterlb.kube import client as kube_client
from porterlb.kube import election
from porterlb.lab import controlplane, crds

Variant = Literal["annotated", "classed", "node-port", "other-class", "plain"]
OURS: frozenset[Variant] = frozenset({"annotated", "classed"})
OTHER_CLASS = "example.com/other"

IN_FLIGHT = 16
"""Operations on distinct Services sent at once: the API server's latency is hidden, the
order of operations on one Service is kept."""

MANAGER_TIMING = ("--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.5")
"""Short leases so that a killed leader is replaced within seconds (production: 6/4/1 s)."""

POLL = 0.5
"""Seconds between two reads of the API while waiting for a phase to converge."""

TIMEOUT = httpx2.Timeout(60.0, connect=5.0)
"""The driver's and the checker's requests: the managers' 10 s limit (kube.client) was
exceeded on 2 cores shared with seven other loads, and a lost operation spoils the run."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    ops: int = 10_000
    seed: int = 1
    phases: int = 20
    kills: int = 10
    """Leader kills, spread evenly over the phase boundaries."""
    converge_within: float = 120.0
    """Seconds a phase may take to converge after its last operation."""


@dataclasses.dataclass(slots=True)
class _Svc:
    """The driver's model of one Service: what it last asked the API for."""

    name: str
    variant: Variant
    pool: str
    share: str | None
    port: int
    rev: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    body: Any = None
    content_type: str = "application/merge-patch+json"


@dataclasses.dataclass(frozen=True, slots=True)
class Op:
    kind: str
    name: str
    requests: tuple[Request, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Pool:
    name: str
    first: ipaddress.IPv4Address
    size: int

    @property
    def address(self) -> str:
        return f"{self.first}-{self.first + self.size - 1}"

    def __contains__(self, ip: str) -> bool:
        found = ipaddress.ip_address(ip)
        return isinstance(found, ipaddress.IPv4Address) and 0 <= int(found) - int(self.first) < (
            self.size
        )


@dataclasses.dataclass(slots=True)
class Phase:
    ops: int
    seconds: float
    converged: float
    killed: str | None
    holder_killed: bool
    """Whether the replica killed held the Lease (else none was recorded as holding it)."""
    leader_after: str | None


@dataclasses.dataclass(slots=True)
class Result:
    phases: list[Phase] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    transient_double: int = 0
    """Reads before convergence that saw one IP recorded on two Services: counted, never a
    failure. IPAM holds a released IP until its release has landed, so this is 0 (20 in a
    4,000-operation run before it did, when the next allocation could land first)."""
    services: int = 0
    holding: int = 0
    transitions: int = 0
    """Times the Lease changed hands: the kills, and renewals missed on a loaded machine."""


class Diverged(AssertionError):
    """A phase did not converge: the message lists the violations last seen."""


# -- the operations ------------------------------------------------------------------------------


class Driver:
    """Generates seeded operations from a model of the Services, and sends them."""

    def __init__(self, namespace: str, pools: Sequence[Pool], seed: int) -> None:
        self.namespace = namespace
        self.pools = pools
        self.random = random.Random(seed)
        self.live: dict[str, _Svc] = {}
        self.serial = 0

    def ops(self, count: int) -> list[Op]:
        return [self._next() for _ in range(count)]

    def _next(self) -> Op:
        weights = {"create": 25, "update": 20, "delete": 20, "class": 20, "pool": 15}
        if len(self.live) < 5:
            weights = {"create": 1}
        kind = self.random.choices(list(weights), list(weights.values()))[0]
        if kind == "create":
            return self._create()
        svc = self.live[self.random.choice(sorted(self.live))]
        if kind == "delete":
            del self.live[svc.name]
            return Op("delete", svc.name, (Request("DELETE", self._path(svc.name)),))
        if kind == "update":
            svc.rev += 1
            patch = {"metadata": {"labels": {"churn/rev": str(svc.rev)}}}
            return Op("update", svc.name, (Request("PATCH", self._path(svc.name), patch),))
        if kind == "pool":
            svc.pool = self.random.choice([p.name for p in self.pools if p.name != svc.pool])
            patch = {"metadata": {"annotations": {wellknown.POOL[0]: svc.pool}}}
            return Op("pool", svc.name, (Request("PATCH", self._path(svc.name), patch),))
        return self._change_class(svc)

    def _create(self) -> Op:
        self.serial += 1
        variants: list[Variant] = ["annotated", "classed", "other-class", "plain"]
        variant = self.random.choices(variants, [60, 20, 10, 10])[0]
        share = self.random.choice(["k0", "k1", "k2"]) if self.random.random() < 0.2 else None
        svc = _Svc(
            name=f"s{self.serial}",
            variant=variant,
            pool=self.random.choice(self.pools).name,
            share=share,
            port=1000 + self.serial,
        )
        self.live[svc.name] = svc
        base = f"/api/v1/namespaces/{self.namespace}"
        return Op(
            "create",
            svc.name,
            (
                Request("POST", f"{base}/services", self._service(svc), "application/json"),
                Request(
                    "POST",
                    f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices",
                    self._slice(svc.name),
                    "application/json",
                ),
            ),
        )

    def _change_class(self, svc: _Svc) -> Op:
        path = self._path(svc.name)
        node_port = Request("PATCH", path, {"spec": {"type": "NodePort"}})
        choices: dict[Variant, tuple[Request, ...]]
        if svc.variant == "annotated":
            choices = {
                "node-port": (node_port,),
                "plain": (
                    Request(
                        "PATCH", path, {"metadata": {"annotations": {wellknown.LB_OPT_IN: None}}}
                    ),
                ),
                "other-class": (node_port, self._to_lb(path, OTHER_CLASS)),
            }
        elif svc.variant == "classed":
            choices = {
                "node-port": (node_port,),
                "other-class": (node_port, self._to_lb(path, OTHER_CLASS)),
            }
        elif svc.variant == "node-port":
            choices = {
                "annotated": (self._to_lb(path, None),),
                "classed": (self._to_lb(path, wellknown.LOAD_BALANCER_CLASS),),
            }
        elif svc.variant == "other-class":
            choices = {"node-port": (node_port,)}
        else:
            choices = {
                "annotated": (
                    Request(
                        "PATCH",
                        path,
                        {"metadata": {"annotations": {wellknown.LB_OPT_IN: "openelb"}}},
                    ),
                )
            }
        svc.variant = self.random.choice(sorted(choices))
        return Op("class", svc.name, choices[svc.variant])

    def _to_lb(self, path: str, lb_class: str | None) -> Request:
        patch: dict[str, Any] = {"spec": {"type": "LoadBalancer"}}
        if lb_class is not None:
            patch["spec"]["loadBalancerClass"] = lb_class
        else:
            patch["metadata"] = {"annotations": {wellknown.LB_OPT_IN: "openelb"}}
        return Request("PATCH", path, patch)

    def _path(self, name: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/services/{name}"

    def _service(self, svc: _Svc) -> dict[str, Any]:
        annotations = {wellknown.POOL[0]: svc.pool}
        if svc.share:
            annotations[wellknown.SHARING_KEY] = svc.share
        spec: dict[str, Any] = {
            "type": "LoadBalancer",
            "ports": [{"name": "p", "port": svc.port, "protocol": "TCP"}],
            "selector": {"app": svc.name},
        }
        if svc.variant == "annotated":
            annotations[wellknown.LB_OPT_IN] = "openelb"
        elif svc.variant == "classed":
            spec["loadBalancerClass"] = wellknown.LOAD_BALANCER_CLASS
        elif svc.variant == "other-class":
            spec["loadBalancerClass"] = OTHER_CLASS
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc.name, "annotations": annotations},
            "spec": spec,
        }

    def _slice(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-churn",
                "labels": {wellknown.SERVICE_NAME_LABEL: name},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.250.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
        }


async def send(http: httpx2.AsyncClient, ops: Sequence[Op]) -> None:
    """Send `ops`, at most IN_FLIGHT at once, each Service's in the order given."""
    pending: dict[str, list[Op]] = defaultdict(list)
    order: list[str] = []
    for op in ops:
        if op.name not in pending:
            order.append(op.name)
        pending[op.name].append(op)
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(name: str) -> None:
        async with gate:
            for op in pending[name]:
                for request in op.requests:
                    await _request(http, request)

    async with asyncio.TaskGroup() as group:
        for name in order:
            group.create_task(one(name), name=f"churn/{name}")


async def _request(http: httpx2.AsyncClient, request: Request) -> None:
    reply = await http.request(
        request.method,
        request.path,
        content=None if request.body is None else msgspec.json.encode(request.body),
        headers={"Content-Type": request.content_type},
        timeout=TIMEOUT,
    )
    if reply.status_code >= 300 and reply.status_code != 404:
        raise RuntimeError(f"{request.method} {request.path}: {reply.status_code} {reply.text}")


# -- the invariants -------------------------------------------------------------------------------


def _ours(svc: dict[str, Any]) -> bool:
    spec = svc.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return False
    if spec.get("loadBalancerClass") is not None:
        return bool(spec["loadBalancerClass"] == wellknown.LOAD_BALANCER_CLASS)
    annotations = (svc.get("metadata") or {}).get("annotations") or {}
    return annotations.get(wellknown.LB_OPT_IN) in wellknown.LB_OPT_IN_VALUES


def _ingress(svc: dict[str, Any]) -> list[str]:
    lb = (svc.get("status") or {}).get("loadBalancer") or {}
    return [str(entry["ip"]) for entry in lb.get("ingress") or () if entry.get("ip")]


def _ports(svc: dict[str, Any]) -> set[tuple[str, int]]:
    return {
        (str(p.get("protocol") or "TCP"), int(p.get("port", 0)))
        for p in (svc.get("spec") or {}).get("ports") or ()
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    services: list[dict[str, Any]]
    eips: dict[str, dict[str, Any]]
    nodes: frozenset[str]


def double_holds(services: Iterable[dict[str, Any]]) -> list[str]:
    """IPs recorded on two Services that may not share them."""
    holders: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for svc in services:
        for ip in _ingress(svc):
            holders[ip].append(svc)
    found = []
    for ip, held in holders.items():
        if len(held) < 2:
            continue
        keys = {
            ((s["metadata"].get("annotations") or {}).get(wellknown.SHARING_KEY) or None)
            for s in held
        }
        ports = [_ports(s) for s in held]
        disjoint = sum(len(p) for p in ports) == len(set().union(*ports))
        if len(keys) != 1 or None in keys or not disjoint:
            names = ", ".join(sorted(s["metadata"]["name"] for s in held))
            found.append(f"{ip} held by {names} without one sharing key on disjoint ports")
    return found


def violations(snapshot: Snapshot, pools: Sequence[Pool]) -> list[str]:
    """Every invariant broken in `snapshot` (empty: converged and correct)."""
    found = double_holds(snapshot.services)
    by_name = {p.name: p for p in pools}
    recount: dict[str, dict[str, list[str]]] = {p.name: defaultdict(list) for p in pools}
    for svc in snapshot.services:
        meta = svc["metadata"]
        name = meta["name"]
        labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        finalized = wellknown.SERVICE_FINALIZER in (meta.get("finalizers") or ())
        label = labels.get(wellknown.POOL_LABEL)
        announced = annotations.get(wellknown.ANNOUNCED_BY)
        if meta.get("deletionTimestamp"):
            found.append(f"{name}: Terminating")
            continue
        if not _ours(svc):
            for what, there in (
                ("finalizer", finalized),
                ("pool label", label),
                ("record", announced),
            ):
                if there:
                    found.append(f"{name}: not porterlb's but carries our {what}")
            continue
        ingress = _ingress(svc)
        wanted = str(annotations.get(wellknown.POOL[0]))
        if not ingress:
            if not _full(by_name[wanted], snapshot):
                found.append(f"{name}: no IP although pool {wanted} has room")
            continue
        ip = ingress[0]
        pool = by_name.get(label or "")
        if pool is None or ip not in pool or not finalized:
            found.append(f"{name}: {ip} with pool label {label} and finalizer {finalized}")
            continue
        recount[pool.name][ip].append(f"{meta['namespace']}/{name}")
        if label != wanted and not _full(by_name[wanted], snapshot):
            found.append(f"{name}: still in pool {label} although pool {wanted} has room")
        if announced not in snapshot.nodes:
            found.append(f"{name}: {ip} announced by {announced!r}")
    for pool in pools:
        status = snapshot.eips.get(pool.name, {}).get("status") or {}
        expected = {ip: ";".join(sorted(h)) for ip, h in recount[pool.name].items()}
        used = status.get("used") or {}
        if used != expected or status.get("usage") != len(expected):
            differ = sorted(
                ip for ip in used.keys() | expected.keys() if used.get(ip) != expected.get(ip)
            )
            found.append(
                f"Eip {pool.name}: usage {status.get('usage')}, recount {len(expected)}; "
                + "; ".join(
                    f"{ip} recorded for {used.get(ip)}, held by {expected.get(ip)}"
                    f" ({_describe(snapshot, used.get(ip))})"
                    for ip in differ[:5]
                )
            )
    return found


def _describe(snapshot: Snapshot, holders: str | None) -> str:
    """What the API shows of the Services an Eip's status names."""
    shown = []
    for holder in (holders or "").split(";"):
        name = holder.partition("/")[2]
        found = [s for s in snapshot.services if s["metadata"]["name"] == name]
        if not found:
            shown.append(f"{name}: gone")
            continue
        svc = found[0]
        meta = svc["metadata"]
        shown.append(
            f"{name}: {svc['spec'].get('type')} class {svc['spec'].get('loadBalancerClass')}"
            f" ours {_ours(svc)} ingress {_ingress(svc)}"
            f" label {(meta.get('labels') or {}).get(wellknown.POOL_LABEL)}"
            f" finalizers {meta.get('finalizers')} rv {meta.get('resourceVersion')}"
        )
    return ", ".join(shown)


def _full(pool: Pool, snapshot: Snapshot) -> bool:
    taken = {ip for svc in snapshot.services for ip in _ingress(svc) if ip in pool}
    return len(taken) >= pool.size


async def read(http: httpx2.AsyncClient, namespace: str, eips: Sequence[str]) -> Snapshot:
    """The Services of `namespace`, the Eips named and the Nodes, as the API has them now."""
    services = msgspec.json.decode(
        (await http.get(f"/api/v1/namespaces/{namespace}/services", timeout=TIMEOUT)).content
    )["items"]
    listed = msgspec.json.decode(
        (await http.get("/apis/network.kubesphere.io/v1alpha2/eips", timeout=TIMEOUT)).content
    )["items"]
    nodes = msgspec.json.decode((await http.get("/api/v1/nodes", timeout=TIMEOUT)).content)["items"]
    return Snapshot(
        services=services,
        eips={e["metadata"]["name"]: e for e in listed if e["metadata"]["name"] in eips},
        nodes=frozenset(n["metadata"]["name"] for n in nodes),
    )


# -- the managers ---------------------------------------------------------------------------------


class Managers:
    """``porterlb manager`` processes electing over the Lease of one namespace."""

    def __init__(self, kubeconfig: Path, namespace: str, logs: Path) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.logs = logs
        self.running: dict[str, asyncio.subprocess.Process] = {}
        self.started = 0

    def argv(self, identity: str) -> list[str]:
        return [
            *(sys.executable, "-m", "porterlb.cli", "manager"),
            *("--kubeconfig", str(self.kubeconfig), "--identity", identity),
            *("--lease-namespace", self.namespace, *MANAGER_TIMING),
            *("--no-heartbeats", "--metrics-addr", "0", "--health-addr", "0", "--workers", "8"),
        ]

    async def start(self) -> str:
        self.started += 1
        identity = f"churn-manager-{self.started}"
        with (self.logs / f"{identity}.log").open("wb") as log:
            self.running[identity] = await asyncio.create_subprocess_exec(
                *self.argv(identity), stdout=log, stderr=log
            )
        return identity

    async def leader(self, http: httpx2.AsyncClient) -> str | None:
        reply = await http.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{election.LEASE_NAME}",
            timeout=TIMEOUT,
        )
        if reply.status_code != 200:
            return None
        holder = (msgspec.json.decode(reply.content).get("spec") or {}).get("holderIdentity")
        return str(holder) if holder else None

    async def kill_leader(self, http: httpx2.AsyncClient) -> tuple[str, bool]:
        """SIGKILL the replica holding the Lease (any, if none does) and start another; the
        replica killed and whether it held the Lease."""
        holder = await self.leader(http)
        victim = holder if holder in self.running else sorted(self.running)[0]
        process = self.running.pop(victim)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await self.start()
        return victim, victim == holder

    async def transitions(self, http: httpx2.AsyncClient) -> int:
        """How often the Lease changed hands (``spec.leaseTransitions``)."""
        reply = await http.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases/{election.LEASE_NAME}",
            timeout=TIMEOUT,
        )
        return int(
            (msgspec.json.decode(reply.content).get("spec") or {}).get("leaseTransitions", 0)
        )

    async def stop(self) -> None:
        for process in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in self.running.values():
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        self.running.clear()

    def tail(self, lines: int = 30) -> str:
        out = []
        for log in sorted(self.logs.glob("*.log")):
            out.append(f"--- {log.name}")
            out.extend(log.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)


# -- the run --------------------------------------------------------------------------------------


async def _setup(http: httpx2.AsyncClient, namespace: str, pools: Sequence[Pool]) -> list[str]:
    """The Eips, bound to `namespace`, and two Ready Nodes; the Nodes' names."""
    for pool in pools:
        eip = {
            "apiVersion": "network.kubesphere.io/v1alpha2",
            "kind": "Eip",
            "metadata": {"name": pool.name},
            "spec": {"address": pool.address, "protocol": "layer2", "namespaces": [namespace]},
        }
        await _request(
            http,
            Request("POST", "/apis/network.kubesphere.io/v1alpha2/eips", eip, "application/json"),
        )
    nodes = [f"{namespace}-a", f"{namespace}-b"]
    for node in nodes:
        await _request(
            http,
            Request(
                "POST",
                "/api/v1/nodes",
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}},
                "application/json",
            ),
        )
        ready = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Churn"}]}}
        await _request(http, Request("PATCH", f"/api/v1/nodes/{node}/status", ready))
    return nodes


async def _teardown(
    http: httpx2.AsyncClient,
    namespace: str,
    services: Sequence[str],
    pools: Sequence[Pool],
    nodes: Sequence[str],
) -> None:
    """Delete the Services and Eips while a manager still runs to let them go, then the Nodes."""
    path = f"/api/v1/namespaces/{namespace}/services"
    await send(
        http, [Op("delete", name, (Request("DELETE", f"{path}/{name}"),)) for name in services]
    )
    for pool in pools:
        await _request(
            http, Request("DELETE", f"/apis/network.kubesphere.io/v1alpha2/eips/{pool.name}")
        )
    for node in nodes:
        await _request(http, Request("DELETE", f"/api/v1/nodes/{node}"))


async def _converge(
    http: httpx2.AsyncClient,
    namespace: str,
    pools: Sequence[Pool],
    within: float,
    result: Result,
) -> float:
    """Read the API until no invariant is broken; the seconds it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    names = [p.name for p in pools]
    while True:
        snapshot = await read(http, namespace, names)
        broken = violations(snapshot, pools)
        if not broken:
            return loop.time() - start
        result.transient_double += bool(double_holds(snapshot.services))
        if loop.time() - start > within:
            shown = "\n  ".join(broken[:20])
            raise Diverged(
                f"not converged after {within:.0f} s; {len(broken)} violations:\n  {shown}"
            )
        await asyncio.sleep(POLL)  # polling the API: nothing to wait on


def pools_in(prefix: str, namespace: str, sizes: Sequence[int]) -> list[Pool]:
    """Pools of `sizes` addresses, one after another from `prefix` (an IPv4 address)."""
    first = ipaddress.IPv4Address(prefix)
    pools = []
    for index, size in enumerate(sizes):
        pools.append(Pool(name=f"{namespace}-p{index}", first=first, size=size))
        first += size
    return pools


async def run(
    client: lightkube.AsyncClient,
    kubeconfig: Path,
    settings: Settings,
    *,
    namespace: str,
    pools: Sequence[Pool],
    logs: Path,
) -> Result:
    """Run the churn in `namespace` with new `pools`; raises Diverged on a violation."""
    http = kube_client.http(client)
    nodes = await _setup(http, namespace, pools)
    managers = Managers(kubeconfig, namespace, logs)
    driver = Driver(namespace, pools, settings.seed)
    result = Result()
    boundaries = _kill_points(settings.phases, settings.kills)
    try:
        for _ in range(2):
            await managers.start()
        per_phase = _split(settings.ops, settings.phases)
        for index, count in enumerate(per_phase):
            ops = driver.ops(count)
            for op in ops:
                result.counts[op.kind] += 1
            started = time.monotonic()
            await send(http, ops)
            sent = time.monotonic() - started
            killed, holder_killed = (
                await managers.kill_leader(http) if index in boundaries else (None, False)
            )
            try:
                converged = await _converge(
                    http, namespace, pools, settings.converge_within, result
                )
            except Diverged as diverged:
                raise Diverged(f"phase {index + 1}: {diverged}\n{managers.tail()}") from None
            phase = Phase(
                count, sent, converged, killed, holder_killed, await managers.leader(http)
            )
            result.phases.append(phase)
            print(f"phase {index + 1}: {phase}", file=sys.stderr, flush=True)
        final = await read(http, namespace, [p.name for p in pools])
        result.services = len(final.services)
        result.holding = sum(bool(_ingress(s)) for s in final.services if _ours(s))
        result.transitions = await managers.transitions(http)
        names = [svc["metadata"]["name"] for svc in final.services]
        await _teardown(http, namespace, names, pools, nodes)
        await _wait_eips_gone(http, [p.name for p in pools], settings.converge_within)
    finally:
        await managers.stop()
    return result


async def _wait_eips_gone(http: httpx2.AsyncClient, names: Sequence[str], within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        listed = msgspec.json.decode(
            (await http.get("/apis/network.kubesphere.io/v1alpha2/eips", timeout=TIMEOUT)).content
        )["items"]
        if not {e["metadata"]["name"] for e in listed} & set(names):
            return
        await asyncio.sleep(POLL)  # polling the API: nothing to wait on
    raise Diverged(f"Eips {', '.join(names)} still there after {within:.0f} s")


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def _kill_points(phases: int, kills: int) -> frozenset[int]:
    """The phases after whose operations the leader is killed, spread evenly."""
    if kills <= 0:
        return frozenset()
    step = phases / kills
    return frozenset(min(phases - 1, int(step * index + step / 2)) for index in range(kills))


def table(settings: Settings, result: Result, elapsed: float) -> Iterator[str]:
    converged = [p.converged for p in result.phases]
    kills = sum(p.killed is not None for p in result.phases)
    of_holder = sum(p.holder_killed for p in result.phases)
    yield (
        "| ops | seed | phases | kills (of the Lease holder) | Lease transitions | ops/s sent"
        " | converged p50 / max | violations | transient double records"
        " | Services at end (holding an IP) | wall |"
    )
    yield "|---|---|---|---|---|---|---|---|---|---|---|"
    sent = sum(p.seconds for p in result.phases)
    yield (
        f"| {settings.ops} | {settings.seed} | {len(result.phases)} | {kills} ({of_holder})"
        f" | {result.transitions}"
        f" | {settings.ops / sent:.0f} | {statistics.median(converged):.1f} s /"
        f" {max(converged):.1f} s | 0 | {result.transient_double} | {result.services}"
        f" ({result.holding}) | {elapsed:.0f} s |"
    )
    yield ""
    yield "operations: " + ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()))


@contextlib.asynccontextmanager
async def _connected(kubeconfig: Path) -> AsyncIterator[lightkube.AsyncClient]:
    async with kube_client.connect(kubeconfig) as client:
        await crds.install(client)
        yield client


async def _main(settings: Settings, scratch: Path) -> None:
    plane = controlplane.ControlPlane(scratch / "cp")
    with plane:
        kubeconfig = plane.endpoints.kubeconfig
        async with _connected(kubeconfig) as client:
            logs = scratch / "logs"
            logs.mkdir()
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "churn"}}
            await _request(
                kube_client.http(client),
                Request("POST", "/api/v1/namespaces", namespace, "application/json"),
            )
            started = time.monotonic()
            result = await run(
                client,
                kubeconfig,
                settings,
                namespace="churn",
                pools=pools_in("198.18.0.1", "churn", (14, 126, 254, 510)),
                logs=logs,
            )
            for line in table(settings, result, time.monotonic() - started):
                print(line)
            print(f"load (1 min): {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Settings()
    parser.add_argument("--ops", type=int, default=defaults.ops)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--phases", type=int, default=defaults.phases)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    args = parser.parse_args()
    settings = Settings(ops=args.ops, seed=args.seed, phases=args.phases, kills=args.kills)
    with tempfile.TemporaryDirectory(prefix="porterlb-churn-") as scratch:
        asyncio.run(_main(settings, Path(scratch)))


if __name__ == "__main__":
    main()
