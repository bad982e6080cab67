"""Benchmark: what one Service status write costs kube-apiserver and etcd, by its form.

    uv run python -m bench.status_write [--services 1000]

The manager's one write per Service (finalizer, pool label and ingress IP through
``services/status``, applying only to the resourceVersion it was decided from) costs the API
server about what the Service's creation does (issue 12), so its form matters. On a control
plane of its own, the bench creates `--services` Services for each form, then writes each
Service's claim and IP once in that form (64 requests in flight, like the manager's workers),
and reads the CPU time kube-apiserver and etcd spent per write from ``/proc``:

- ``strategic``: a strategic-merge patch (``$deleteFromPrimitiveList`` for the finalizer);
- ``merge``: a JSON merge patch (RFC 7386): the finalizers list whole, as read;
- ``json``: a JSON patch (RFC 6902) with a ``test`` of the resourceVersion;
- ``put``: the whole Service as read, changed, with its resourceVersion (an update);
- ``event``: a core/v1 Event about the Service instead, for comparison.

Every form carries the resourceVersion the write was decided from, so each is refused when
the Service changed since. CPU, not wall time, is the figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from bench import control_plane
from porterlb.api import wellknown
from porterlb.lab import controlplane

FORMS = ("strategic", "merge", "json", "put", "event")

IP_BASE = (198 << 24) | (18 << 16)
"""198.18.0.0: the benchmark range the IPs written come from."""


def _ip(index: int) -> str:
    value = IP_BASE + index
    return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))


def _ingress(index: int) -> dict[str, Any]:
    return {"loadBalancer": {"ingress": [{"ip": _ip(index)}]}}


def _request(form: str, obj: dict[str, Any], index: int) -> tuple[str, str, str, bytes]:
    """Method, path, content type and body of the write of `form` to Service `obj`."""
    meta = obj["metadata"]
    namespace, name, version = meta["namespace"], meta["name"], meta["resourceVersion"]
    path = f"/api/v1/namespaces/{namespace}/services/{name}/status"
    claim = {
        "labels": {wellknown.POOL_LABEL: "pool"},
        "resourceVersion": version,
    }
    body: Any
    if form == "strategic":
        body = {"metadata": {**claim, "finalizers": [wellknown.SERVICE_FINALIZER]}}
        body["status"] = _ingress(index)
        kind = "application/strategic-merge-patch+json"
    elif form == "merge":
        finalizers = [*meta.get("finalizers", ()), wellknown.SERVICE_FINALIZER]
        body = {"metadata": {**claim, "finalizers": finalizers}, "status": _ingress(index)}
        kind = "application/merge-patch+json"
    elif form == "json":
        body = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "add", "path": "/metadata/labels", "value": claim["labels"]},
            {"op": "add", "path": "/metadata/finalizers", "value": [wellknown.SERVICE_FINALIZER]},
            {"op": "add", "path": "/status/loadBalancer", "value": _ingress(index)["loadBalancer"]},
        ]
        kind = "application/json-patch+json"
    elif form == "put":
        finalizers = [*meta.get("finalizers", ()), wellknown.SERVICE_FINALIZER]
        labels = {**meta.get("labels", {}), **claim["labels"]}
        body = {
            **obj,
            "metadata": {**meta, "labels": labels, "finalizers": finalizers},
            "status": _ingress(index),
        }
        body["metadata"].pop("managedFields", None)
        kind = "application/json"
    else:
        event = {
            "metadata": {"name": f"{name}.bench", "namespace": namespace},
            "involvedObject": {"kind": "Service", "name": name, "namespace": namespace},
            "type": "Normal",
            "reason": "IPAllocated",
            "message": f'Service {namespace}/{name}: allocated {_ip(index)} from pool "pool"',
            "source": {"component": "porterlb-manager"},
            "count": 1,
        }
        return "POST", f"/api/v1/namespaces/{namespace}/events", "application/json", _json(event)
    return ("PUT" if form == "put" else "PATCH"), path, kind, _json(body)


def _json(body: Any) -> bytes:
    return msgspec.json.encode(body)


async def _gather(count: int, call: Callable[[int], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(control_plane.IN_FLIGHT)

    async def one(index: int) -> Any:
        async with gate:
            return await call(index)

    return await asyncio.gather(*(one(index) for index in range(count)))


async def _measure(plane: controlplane.ControlPlane, services: int) -> dict[str, dict[str, float]]:
    pids = {name: process.pid for name, process in plane.processes.items()}
    results = {}
    async with control_plane._load_session(plane.endpoints.kubeconfig) as load:
        created: dict[str, list[dict[str, Any]]] = {}
        for form in FORMS:
            namespace = f"writes-{form}"
            reply = await load.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
            reply.raise_for_status()

            async def create(index: int, namespace: str = namespace) -> dict[str, Any]:
                path = f"/api/v1/namespaces/{namespace}/services"
                body = control_plane._service(f"svc-{index}")
                async with load.post(path, data=body) as reply:
                    reply.raise_for_status()
                    obj: dict[str, Any] = msgspec.json.decode(await reply.read())
                    return obj

            created[form] = await _gather(services, create)
        for form in FORMS:
            objects = created[form]

            async def write(index: int, form: str = form, objects: Any = objects) -> None:
                method, path, kind, body = _request(form, objects[index], index)
                headers = {"Content-Type": kind}
                async with load.request(method, path, data=body, headers=headers) as reply:
                    text = await reply.read()
                    if reply.status >= 300:
                        raise RuntimeError(f"{form} {path}: {reply.status} {text[:300]!r}")

            clock = control_plane.CpuClock(pids)
            await _gather(services, write)
            results[form] = {name: 1000 * cpu / services for name, cpu in clock.read().items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="porterlb-bench-") as scratch:
        plane = controlplane.ControlPlane(Path(scratch) / "cp", legacy_cluster_ip_allocator=True)
        with plane:
            results = asyncio.run(_measure(plane, args.services))
    print(f"CPU ms per write, {args.services} Services per form (kube-apiserver 1.36)")
    print("| form | kube-apiserver | etcd | both |")
    print("|---|---|---|---|")
    for form, cpu in results.items():
        apiserver, etcd = cpu["kube-apiserver"], cpu["etcd"]
        print(f"| {form} | {apiserver:.2f} | {etcd:.2f} | {apiserver + etcd:.2f} |")
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
