"""Benchmark: porterlb's overhead on the API server creating 10,000 LoadBalancer Services.

    uv run python -m bench.control_plane [--services 10000] [--pools 10]
        [--allocators ipaddress,bitmap] [--runs alone,porterlb] [--json]
        [--manager-log PATH] [--manager-profile PATH] [--apiserver-profile DIR]
        [--manager-arg=ARG ...]

For each ClusterIP allocator it makes two runs, each on a control plane of its own: the API
server *alone* creating the Services (no porterlb: the time to the last creation), and *with
porterlb* (the manager running: the time until every Service has its IP, seen on a watch).
Their ratio is porterlb's overhead; target (issue 12): at most 15 %. On a machine others load
too, the wall times move with their load; the CPU overhead (all processes' CPU seconds with
porterlb over those of the API server alone: manager, kube-apiserver, etcd and the bench)
does much less. Each run creates one namespace-bound /20 Eip per namespace, then the
Services (64 requests in flight). The table also has the manager's API requests per Service
(its own counter, list/watch excluded; the floor is one status patch), its peak RSS (target:
at most 150 MB) and the CPU time each process spent per Service: the machine has 2 cores, so
CPU is what decides, and every CPU second the manager spends is one the API server does not
get. ``--manager-profile`` runs the manager under cProfile timed by its CPU clock
(:mod:`bench._cpu_profile`): slower, for finding where its time goes, not for the ratio.
``--apiserver-profile DIR`` serves kube-apiserver's pprof and saves CPU profiles of the
measured window in consecutive pieces (``DIR/<allocator>-<run>-<n>.pb.gz``, the last piece
cut short is lost); ``go tool pprof -top DIR/bitmap-porterlb-*`` merges them.

``--allocators bitmap`` runs kube-apiserver with the pre-1.33 ClusterIP allocator
(:data:`porterlb.lab.controlplane.LEGACY_CLUSTER_IP_ALLOCATOR`): the current one costs the API
server O(n) per Service created, which swamps what the manager costs at 10,000.
etcd and kube-apiserver run with the lab's Go runtime settings
(:data:`porterlb.lab.controlplane.GO_RUNTIME`), as everywhere.

The load generator shares the 2 cores with what it measures, so it is kept cheap: it sends
raw JSON over its own aiohttp session, with no httpx2 or lightkube above it (0.7 ms of CPU
per Service instead of 1.1 through the manager's client), and filters the watch on the bytes
``"ingress"`` before decoding; it still creates real Services through the API and sees their
IPs on a watch (opened in both runs, so that both pay for one watcher of the Services).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx2
import msgspec

from porterlb.api import wellknown
from porterlb.kube import client as kube_client
from porterlb.kube import resources
from porterlb.lab import controlplane, crds

PROFILE_PIECE = 10
"""Seconds of each kube-apiserver CPU profile piece: pprof profiles a fixed time, and the run
ends when it ends."""

IN_FLIGHT = 64
"""Creations in flight: enough to keep both cores busy through the API server's latency."""

JSON_HEADERS = {"Content-Type": "application/json"}

RETRIED = frozenset({429, 500, 503, 504})
"""Answers to a creation that are retried: on a machine loaded past the API server's 60 s
request timeout it answers 504 (the Service may exist all the same: a 409 then counts)."""
CREATE_ATTEMPTS = 5

OVERHEAD_TARGET = 0.15
"""Issue 12: porterlb adds at most 15 % to the time the API server alone takes."""
MANAGER_RSS_TARGET_MB = 150
"""Issues 2 and 12."""


def _service(name: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "annotations": {wellknown.LB_OPT_IN: "openelb"}},
            "spec": {
                "type": "LoadBalancer",
                "ports": [{"port": 80}],
                "selector": {"app": name},
                # 10,000 Services would exhaust the 2,768 node ports; the LB IP is measured.
                "allocateLoadBalancerNodePorts": False,
            },
        }
    ).encode()


def _proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(re.findall(r"^(\w+):\s+(.*)$", text, re.M))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _manager_counters(metrics_url: str) -> tuple[float, float, float, float]:
    """The manager's leader transitions, those that resumed its own term, dropped Events and
    Events still queued."""
    text = httpx2.get(metrics_url, timeout=5).text
    names = (
        "porterlb_leader_transitions_total",
        "porterlb_leader_terms_resumed_total",
        "porterlb_events_dropped_total",
        "porterlb_events_queued",
    )
    found = [re.search(rf"^{name} (\S+)$", text, re.M) for name in names]
    transitions, resumed, dropped, queued = (float(m[1]) if m else 0.0 for m in found)
    return transitions, resumed, dropped, queued


def _manager_requests(metrics_url: str) -> dict[str, float]:
    text = httpx2.get(metrics_url, timeout=5).text
    pattern = r'^porterlb_api_requests_total\{resource="([^"]+)",verb="([^"]+)"\} (\S+)$'
    found = re.findall(pattern, text, re.M)
    return {f"{verb} {resource}": float(value) for resource, verb, value in found}


@dataclass(frozen=True, slots=True)
class Result:
    allocator: str
    manager: bool
    services: int
    created: float
    """Seconds from the first creation to the last one answered."""
    served: float | None
    """Seconds from the first creation to the last IP (None: no manager ran)."""
    cpu: dict[str, float]
    """Process name -> CPU seconds spent from the first creation to the end."""
    writes: dict[str, float]
    """``verb resource`` -> the manager's API requests in that time (list/watch excluded)."""
    manager_rss_kb: int | None
    leader_terms: float = 0.0
    """Terms the manager led (more than one: it lost the Lease to a slow API server)."""
    terms_resumed: float = 0.0
    """Of those, the terms that retook its own Lease and led on with what it had decided."""
    events_dropped: float = 0.0
    events_queued: float = 0.0
    """Events still waiting to be posted when the last IP was seen: their cost to the API
    server (about half a status write each, bench.status_write) comes after the window."""

    @property
    def done(self) -> float:
        """Seconds until the run's goal: every Service created, or every one with an IP."""
        return self.served if self.served is not None else self.created


class CpuClock:
    """CPU seconds of named processes since construction."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: _cpu_seconds(pid) for name, pid in pids.items()}

    def read(self) -> dict[str, float]:
        return {name: _cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}


def _load_session(kubeconfig: Path) -> aiohttp.ClientSession:
    """The load generator's own connections, with the lab kubeconfig's token and CA."""
    config, tls = kube_client.context(kubeconfig)
    if config.user is None or config.user.token is None:
        raise SystemExit(f"{kubeconfig}: the load generator needs a user with a token")
    return aiohttp.ClientSession(
        base_url=config.cluster.server,
        headers={"Authorization": f"Bearer {config.user.token}", **JSON_HEADERS},
        connector=aiohttp.TCPConnector(ssl=tls, limit=IN_FLIGHT + 1),
        # The load generator waits as long as the API server needs: its latency is the result.
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=120.0),
    )


RESOURCE_VERSION = re.compile(rb'"resourceVersion":"(\d+)"')
"""The first resourceVersion of a watch line: its object's (metadata comes first)."""


async def _served(load: aiohttp.ClientSession, version: str, count: int) -> None:
    """Return once `count` Services have an ingress IP, watching from `version`.

    kube-apiserver ends a watch whose reader falls behind (the bench shares the cores with
    what it loads), so an ended stream is resumed from the last resourceVersion seen; taking
    its end for the last IP reported 2,000 Services served when 1,860 were.
    """
    served: set[str] = set()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=None)
    while True:
        params = {"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true"}
        async with load.get("/api/v1/services", params=params, timeout=timeout) as response:
            response.raise_for_status()
            async for line in response.content:  # one event a line
                if line.startswith(b'{"type":"ERROR"'):
                    raise RuntimeError(f"watch of Services failed: {line[:300]!r}")
                found = RESOURCE_VERSION.search(line)
                if found is not None:
                    version = found[1].decode()
                if b'"ingress"' not in line:
                    continue
                meta = msgspec.json.decode(line)["object"]["metadata"]
                served.add(f"{meta['namespace']}/{meta['name']}")
                if len(served) >= count:
                    return


async def _create_all(load: aiohttp.ClientSession, namespaces: list[str], count: int) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def create(index: int) -> None:
        namespace = namespaces[index % len(namespaces)]
        path = f"/api/v1/namespaces/{namespace}/services"
        for attempt in range(CREATE_ATTEMPTS):
            async with gate, load.post(path, data=_service(f"svc-{index}")) as reply:
                await reply.read()  # read to the end: the connection goes back to the pool
                if reply.status == 409 and attempt > 0:
                    return  # an earlier attempt that timed out created it after all
                if reply.status not in RETRIED or attempt == CREATE_ATTEMPTS - 1:
                    reply.raise_for_status()
                    return

    async with asyncio.TaskGroup() as group:
        for index in range(count):
            group.create_task(create(index))


async def _profile_apiserver(load: aiohttp.ClientSession, prefix: Path) -> None:
    """Save kube-apiserver CPU profiles of PROFILE_PIECE seconds each until cancelled."""
    await asyncio.to_thread(prefix.parent.mkdir, parents=True, exist_ok=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=None)
    for piece in itertools.count():
        params = {"seconds": str(PROFILE_PIECE)}
        async with load.get("/debug/pprof/profile", params=params, timeout=timeout) as reply:
            reply.raise_for_status()
            data = await reply.read()
        await asyncio.to_thread(Path(f"{prefix}-{piece}.pb.gz").write_bytes, data)


async def run(
    services: int,
    pools: int,
    plane: controlplane.ControlPlane,
    *,
    allocator: str,
    manager: bool,
    manager_log: Path | None = None,
    manager_profile: Path | None = None,
    apiserver_profile: Path | None = None,
    manager_args: Sequence[str] = (),
) -> Result:
    kubeconfig = plane.endpoints.kubeconfig
    async with kube_client.connect(kubeconfig) as client:
        http = kube_client.http(client)
        await crds.install(client)
        namespaces = [f"bench-{i}" for i in range(pools)]
        for i, namespace in enumerate(namespaces):
            body = {"metadata": {"name": namespace}}
            (await http.post("/api/v1/namespaces", json=body)).raise_for_status()
            eip = {
                "apiVersion": f"{resources.EIP_GROUP}/{resources.EIP_VERSION}",
                "kind": "Eip",
                "metadata": {"name": f"pool-{i}"},
                "spec": {
                    "address": f"198.18.{16 * i}.0/20",
                    "protocol": "layer2",
                    "namespaces": [namespace],
                },
            }
            reply = await http.post(kube_client.path(resources.Eip), json=eip)
            reply.raise_for_status()

        pids = {name: process.pid for name, process in plane.processes.items()}
        pids["bench"] = os.getpid()
        port = controlplane.free_port()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        process = None
        if manager:
            runner = (
                ("-m", "bench._cpu_profile", str(manager_profile)) if manager_profile else ("-m",)
            )
            with (manager_log or Path(os.devnull)).open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    *(sys.executable, *runner, "porterlb.cli", "manager"),
                    *("--kubeconfig", str(kubeconfig), "--metrics-addr", f"127.0.0.1:{port}"),
                    *("--health-addr", "0"),
                    *manager_args,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            pids["manager"] = process.pid
        try:
            baseline: dict[str, float] = {}
            if process is not None:
                baseline = await _manager_ready(metrics_url)
            listing = await http.get("/api/v1/services", params={"limit": "1"})
            listing.raise_for_status()
            version = listing.json()["metadata"]["resourceVersion"]

            clock = CpuClock(pids)
            async with _load_session(kubeconfig) as load:
                watcher = asyncio.create_task(_served(load, version, services))
                profiler = None
                if apiserver_profile is not None:
                    prefix = apiserver_profile / f"{allocator}-{'porterlb' if manager else 'alone'}"
                    profiler = asyncio.create_task(_profile_apiserver(load, prefix))
                start = time.monotonic()
                try:
                    await _create_all(load, namespaces, services)
                    created = time.monotonic() - start
                    served = None
                    if manager:
                        await watcher
                        served = time.monotonic() - start
                finally:
                    # No IP will come without a manager: the watcher only watched, as it does
                    # with one; after a failure neither it nor the profiler may outlive `load`.
                    for task in (watcher, profiler):
                        if task is not None and not task.done():
                            task.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await task
            cpu = clock.read()
            rss = None
            terms = resumed = dropped = queued = 0.0
            writes: dict[str, float] = {}
            if process is not None:
                rss = int(_proc_status(process.pid)["VmHWM"].split()[0])
                after = _manager_requests(metrics_url)
                terms, resumed, dropped, queued = _manager_counters(metrics_url)
                writes = {
                    key: after[key] - baseline.get(key, 0)
                    for key in after
                    if not key.startswith(("list", "watch"))
                }
        finally:
            if process is not None:
                process.terminate()
                await process.wait()
    return Result(
        allocator=allocator,
        manager=manager,
        services=services,
        created=created,
        served=served,
        cpu=cpu,
        writes=writes,
        manager_rss_kb=rss,
        leader_terms=terms,
        terms_resumed=resumed,
        events_dropped=dropped,
        events_queued=queued,
    )


async def _manager_ready(metrics_url: str) -> dict[str, float]:
    """Wait until the manager watches and has settled its Eip statuses; its counters then."""
    while True:
        try:
            if "watch" in " ".join(_manager_requests(metrics_url)):
                break
        except httpx2.HTTPError:
            pass
        await asyncio.sleep(0.2)  # polling another process's metrics: nothing to wait on
    await asyncio.sleep(2.0)  # let the manager settle its Eip statuses before the clock starts
    return _manager_requests(metrics_url)


PROCESSES = ("manager", "kube-apiserver", "etcd", "bench")


def _cpu_per_service(result: Result) -> str:
    per = {name: 1000 * seconds / result.services for name, seconds in result.cpu.items()}
    return " / ".join(f"{per[name]:.2f}" if name in per else "-" for name in PROCESSES)


def table(results: Sequence[Result]) -> Iterable[str]:
    """One row per allocator: the API server alone, with porterlb, and the ratio."""
    yield (
        "| ClusterIP allocator | Services | API server alone: all created | with porterlb:"
        " all have an IP | porterlb's overhead | CPU overhead | manager API writes / Service"
        " | manager peak RSS | CPU ms / Service alone (" + ", ".join(PROCESSES) + ")"
        " | CPU ms / Service with porterlb |"
    )
    yield "|---|---|---|---|---|---|---|---|---|---|"
    for allocator in dict.fromkeys(r.allocator for r in results):
        alone = next((r for r in results if r.allocator == allocator and not r.manager), None)
        ours = next((r for r in results if r.allocator == allocator and r.manager), None)
        some = ours or alone
        assert some is not None
        overhead = (
            f"{100 * (ours.done / alone.done - 1):+.0f} %"
            f" ({'met' if ours.done <= alone.done * (1 + OVERHEAD_TARGET) else 'MISSED'})"
            if ours is not None and alone is not None
            else "-"
        )
        writes = f"{sum(ours.writes.values()) / ours.services:.2f}" if ours is not None else "-"
        rss = "-"
        if ours is not None and ours.manager_rss_kb is not None:
            mb = ours.manager_rss_kb / 1024
            rss = f"{mb:.0f} MB ({'met' if mb <= MANAGER_RSS_TARGET_MB else 'MISSED'})"
        cpu = (
            f"{100 * (sum(ours.cpu.values()) / sum(alone.cpu.values()) - 1):+.0f} %"
            if ours is not None and alone is not None
            else "-"
        )
        yield (
            f"| {allocator} | {some.services}"
            f" | {f'{alone.done:.1f} s' if alone is not None else '-'}"
            f" | {f'{ours.done:.1f} s' if ours is not None else '-'}"
            f" | {overhead} | {cpu} | {writes} | {rss}"
            f" | {_cpu_per_service(alone) if alone is not None else '-'}"
            f" | {_cpu_per_service(ours) if ours is not None else '-'} |"
        )
    for allocator in dict.fromkeys(r.allocator for r in results):
        alone = next((r for r in results if r.allocator == allocator and not r.manager), None)
        ours = next((r for r in results if r.allocator == allocator and r.manager), None)
        if alone is not None and ours is not None:
            yield ""
            yield from verdict(alone, ours)
    for result in results:
        if result.writes:
            yield ""
            yield (
                f"manager API requests per Service ({result.allocator}; leader terms"
                f" {result.leader_terms:.0f}, {result.terms_resumed:.0f} of them resumed,"
                f" Events dropped {result.events_dropped:.0f},"
                f" still queued at the end {result.events_queued:.0f}):"
            )
            for key, value in sorted(result.writes.items()):
                yield f"  {key}: {value / result.services:.3f}"
    yield ""
    yield f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}"


SERVER = ("kube-apiserver", "etcd")


def verdict(alone: Result, ours: Result) -> Iterable[str]:
    """The target's verdict for one allocator and what stands in the way, measured: the CPU
    porterlb adds per Service (the manager's own, and what its writes and Events cost the API
    server and etcd) as a share of the CPU the API server alone spends per Service. On a
    machine whose cores are all busy, time follows CPU, so these shares add up to about the
    overhead in time; the manager's RSS beside them."""

    def per_service(result: Result, names: Iterable[str]) -> float:
        return 1000 * sum(result.cpu.get(name, 0.0) for name in names) / result.services

    base = per_service(alone, PROCESSES)
    ratio = ours.done / alone.done
    met = ratio <= 1 + OVERHEAD_TARGET
    yield (
        f"{ours.allocator}: with porterlb / alone = {ratio:.2f} (target at most"
        f" {1 + OVERHEAD_TARGET:.2f}): {'met' if met else 'MISSED'}"
    )
    manager = per_service(ours, ("manager",))
    server = per_service(ours, SERVER) - per_service(alone, SERVER)
    bench = per_service(ours, ("bench",)) - per_service(alone, ("bench",))
    yield (
        f"  CPU per Service, alone {base:.2f} ms (kube-apiserver, etcd and the bench);"
        " porterlb adds:"
    )
    for what, cost in (
        ("the manager's own CPU", manager),
        ("kube-apiserver + etcd serving its writes, Events and watches", server),
        ("the bench (the status updates it watches)", bench),
    ):
        yield f"    {what}: {cost:+.2f} ms ({100 * cost / base:+.0f} % of alone)"
    if ours.manager_rss_kb is not None:
        mb = ours.manager_rss_kb / 1024
        yield (
            f"  manager peak RSS at {ours.services} Services: {mb:.0f} MB (target at most"
            f" {MANAGER_RSS_TARGET_MB} MB: {'met' if mb <= MANAGER_RSS_TARGET_MB else 'MISSED'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument(
        "--allocators",
        default="ipaddress,bitmap",
        help="kube-apiserver's ClusterIP allocators to run, comma-separated"
        " (ipaddress: the pinned server's own; bitmap: the pre-1.33 one)",
    )
    parser.add_argument(
        "--runs",
        default="alone,porterlb",
        help="per allocator: alone (the API server creating the Services), porterlb (the"
        " manager giving them IPs), comma-separated",
    )
    parser.add_argument("--manager-log", type=Path, help="where the manager's log goes")
    parser.add_argument(
        "--manager-profile", type=Path, help="run the manager under cProfile, its stats here"
    )
    parser.add_argument(
        "--apiserver-profile",
        type=Path,
        help="save kube-apiserver CPU profiles of each run in this directory",
    )
    parser.add_argument(
        "--manager-arg",
        action="append",
        default=[],
        help="one more argument for the manager (repeat it: --manager-arg=--no-leader-elect"
        " profiles a Service's cost without the leader churn of a loaded machine)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    allocators = args.allocators.split(",")
    runs = args.runs.split(",")
    for name, allowed, chosen in (
        ("--allocators", ("ipaddress", "bitmap"), allocators),
        ("--runs", ("alone", "porterlb"), runs),
    ):
        if not set(chosen) <= set(allowed):
            parser.error(f"{name}: {','.join(chosen)}: each must be one of {', '.join(allowed)}")
    results = []
    for allocator in allocators:
        for mode in runs:
            results.append(_run_one(args, allocator=allocator, manager=mode == "porterlb"))
            print(f"  {allocator}, {mode}: {results[-1].done:.1f} s", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) | {"done": r.done} for r in results], indent=2))
    else:
        for line in table(results):
            print(line)


def _run_one(args: argparse.Namespace, *, allocator: str, manager: bool) -> Result:
    """One run on a control plane of its own: every run starts from an empty etcd."""
    with tempfile.TemporaryDirectory(prefix="porterlb-bench-") as scratch:
        plane = controlplane.ControlPlane(
            Path(scratch) / "cp",
            legacy_cluster_ip_allocator=allocator == "bitmap",
            profiling=args.apiserver_profile is not None,
        )
        with plane:
            return asyncio.run(
                run(
                    args.services,
                    args.pools,
                    plane,
                    allocator=allocator,
                    manager=manager,
                    manager_log=args.manager_log,
                    manager_profile=args.manager_profile,
                    apiserver_profile=args.apiserver_profile,
                    manager_args=args.manager_arg,
                )
            )


if __name__ == "__main__":
    main()
