"""``porterlb status`` and the manager's metrics, against the real API server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Service
from prometheus_client import REGISTRY

from porterlb.api import reasons
from porterlb.manager import liveness
from tests.integration import objects
from tests.integration.conftest import running_manager
from tests.integration.test_announcing import pool_with_service, wait_announced_by
from tests.integration.test_liveness import TIMING, answering, free_udp_port, key_of, node_at
from tests.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def status(*args: str) -> tuple[int, str, str]:
    """Run ``porterlb status ARGS`` as a user would; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "porterlb.cli",
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_shows_the_pool_and_the_service_with_its_node(
    client, control_plane, manager, namespace, net, eips, nodes
):
    names = {await nodes(f"{namespace}-a"), await nodes(f"{namespace}-b")}
    await pool_with_service(client, eips, namespace, net)
    node = await wait_announced_by(client, "web", namespace, names)
    await objects.wait_event(
        client,
        namespace,
        "web",
        reasons.NODE_ASSIGNED,
        f"Service {namespace}/web: {net}.1 is announced from node {node}",
    )
    kubeconfig = str(control_plane.kubeconfig)

    async def reported():
        code, out, err = await status("--kubeconfig", kubeconfig, "--json")
        assert code == 0, err
        found = json.loads(out)
        row = next(s for s in found["services"] if s["service"] == f"{namespace}/web")
        pool = next(p for p in found["pools"] if p["name"] == f"{namespace}-pool")
        return (row, pool) if pool["used"] == 1 and row["since"] else None

    row, pool = await eventually(reported, what="status to show the Service and its pool")
    assert (row["ips"], row["pool"], row["node"]) == ([f"{net}.1"], f"{namespace}-pool", node)
    assert row["mac"] is None  # no ConfigMap of MACs in this cluster
    assert row["lastFailover"] is None
    assert (pool["total"], pool["ready"]) == (256, True)

    code, out, _ = await status("--kubeconfig", kubeconfig)
    assert code == 0
    line = next(line for line in out.splitlines() if f"{namespace}/web" in line)
    assert f"{net}.1" in line and node in line


async def test_the_leading_manager_reports_its_pools_and_leadership(
    client, manager, namespace, net, eips, nodes
):
    await nodes(f"{namespace}-a")
    await pool_with_service(client, eips, namespace, net)
    pool = f"{namespace}-pool"

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels)

    def counted():
        return sample("porterlb_pool_addresses_in_use", pool=pool, family="ipv4") == 1

    async def counted_yet():
        return counted()

    await eventually(counted_yet, what="the pool's rows in the manager's metrics")
    assert sample("porterlb_pool_addresses", pool=pool, family="ipv4") == 254
    assert sample("porterlb_pool_services", pool=pool) == 1
    assert sample("porterlb_manager_leader") == 1
    assert sample("porterlb_watch_synced", resource="services") == 1

    before = sample(
        "porterlb_api_request_errors_total", verb="get", resource="services", code="404"
    )
    with pytest.raises(ApiError):
        await client.get(Service, "no-such-service", namespace=namespace)
    after = sample("porterlb_api_request_errors_total", verb="get", resource="services", code="404")
    assert (after or 0) - (before or 0) == 1


async def test_status_says_in_one_line_when_the_api_server_cannot_be_reached(tmp_path: Path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://127.0.0.1:9",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    code, out, err = await status("--kubeconfig", str(kubeconfig))
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("porterlb status: cannot reach the API server at https://127.0.0.1:9")


async def test_status_says_so_when_the_kubeconfig_is_missing(tmp_path: Path):
    code, _, err = await status("--kubeconfig", str(tmp_path / "absent"))
    assert code == 1
    assert err.startswith("porterlb status: no usable Kubernetes credentials in ")
    assert err.count("\n") == 1


async def test_a_failover_is_counted_timed_and_shown_by_status(
    client, control_plane, namespace, net, eips, nodes
):
    port = free_udp_port()
    settings = liveness.Settings(secret_namespace=namespace, port=port, timing=TIMING)
    names = {f"{namespace}-{n}": f"127.0.0.{40 + n}" for n in range(2)}
    for name, ip in names.items():
        await node_at(client, nodes, name, ip)

    def count(name):
        return REGISTRY.get_sample_value(name) or 0

    failovers = count("porterlb_failovers_total")
    timed = count("porterlb_failover_duration_seconds_count")
    async with running_manager(client, heartbeat=settings), contextlib.AsyncExitStack() as stack:
        key = await eventually(lambda: key_of(client, namespace), what="the heartbeat key")
        speakers = {}
        for name, ip in names.items():
            speakers[name] = await stack.enter_async_context(contextlib.AsyncExitStack())
            await speakers[name].enter_async_context(answering(name, ip, port, key))
        await pool_with_service(client, eips, namespace, net)
        first = await wait_announced_by(client, "web", namespace, set(names))
        await speakers[first].aclose()  # its speaker stops answering
        second = await wait_announced_by(client, "web", namespace, set(names) - {first})

        async def counted():
            return count("porterlb_failovers_total") > failovers

        await eventually(counted, what="the failover to be counted")
        assert count("porterlb_failover_duration_seconds_count") == timed + 1

        async def shown():
            code, out, err = await status("--kubeconfig", str(control_plane.kubeconfig), "--json")
            assert code == 0, err
            found = json.loads(out)
            row = next(s for s in found["services"] if s["service"] == f"{namespace}/web")
            return (row, found["nodes"]) if row["lastFailover"] else None

        row, reported = await eventually(shown, what="status to show the failover")
        moved = row["lastFailover"]
        assert (moved["from"], moved["to"], row["node"]) == (first, second, second)
        assert moved["detectedAfterSeconds"] is not None
        assert moved["recordedAfterSeconds"] is not None
        assert first in [n["node"] for n in reported]
