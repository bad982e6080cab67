"""``porterlb lab fault`` on the chart-installed real-node lab: each kind does what it says.

One lab for the module (``lab up --nodes real --porterlb chart``, two workers); the faults are
applied to it in turn, each healed before the next. The judges are the real parts: the
router namespace's kernel resolving a Service's IP (its neighbour entry after a fresh lookup)
and a sampler asking who answers every 20 ms (never two MACs at once), the fault rules' own
counters (which real packets they dropped), TCP connections from the worker (a silent drop
times out), the speakers' and the leader's metrics, and the pods and processes the kubelets
and containerd run. After each heal no fault table is left in any namespace of the lab;
after ``lab down`` nothing of it is (``reallab.leftovers``) and the host's kernel tunables
are as they were.

What stays on the process lab (``test_faults.py``): the sampler's own checks (they need no
real node) and the CLI's refusals, which do not depend on the lab. Skipped unless the node
binaries, helm, buildah and debootstrap are there (``scripts/dev.sh test`` installs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import httpx2
import pytest
import pytest_asyncio
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Pod

from porterlb.lab import faults, lab, netns, plan, sampler
from porterlb.lab import processes as procs
from porterlb.lab.node import containers, kubelet, nodelab, release
from tests.e2e import faultprobes as probes
from tests.e2e import marks, reallab
from tests.e2e.conftest import IPAddress, SpeakerLab, real_lab_fixtures
from tests.waiting import eventually

pytestmark = [*reallab.CHART_MARKS, *marks.e2e("ping")]

WORKERS: Final = 2

HTTP_TIMEOUT: Final = 5.0
"""Seconds one metrics scrape may take on two loaded cores."""

SPEAKER_METRICS: Final = 50053
MANAGER_METRICS: Final = 50052
"""The chart's default metrics ports (``speaker.metricsPort``, ``manager.metricsPort``)."""

ANSWERED: Final = r'porterlb_heartbeat_received_total\{role="speaker",verdict="answered"\}'
SEND_FAILURES: Final = re.compile(r"^porterlb_heartbeat_send_failures_total\{.*\} (\S+)$", re.M)


real_record, real_lab = real_lab_fixtures(
    "real", lambda name: nodelab.up(name, workers=WORKERS, porterlb="chart")
)


def current(real_lab: SpeakerLab) -> lab.Record:
    """The lab's record as ``lab.json`` has it now: a heal that restarts a process records it."""
    record = lab.load(real_lab.plan.name)
    assert record is not None
    return record


# -- what the tests look at ------------------------------------------------------------------


def api_by_service(layout: plan.Lab, node: plan.Node) -> str:
    """A connection to the API as the speaker pod makes it: the ``kubernetes`` ClusterIP."""
    return probes.connection(node, str(nodelab.api_service_ip(layout)), 443)


def metrics(layout: plan.Lab, address: str, port: int) -> str | None:
    """The metrics page at ``address:port``, fetched from the router's namespace (which routes
    to the nodes and to every pod CIDR); None if it does not answer."""

    def get() -> str:
        return httpx2.get(f"http://{address}:{port}/metrics", timeout=HTTP_TIMEOUT).text

    try:
        return netns.call_in(layout.router_netns, get)
    except httpx2.HTTPError:
        return None


def value(text: str | None, pattern: str) -> float | None:
    """The value of the first line of ``text`` matching ``pattern``; 0 if none; None without
    a page."""
    if text is None:
        return None
    found = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def pods(real_lab: SpeakerLab) -> list[dict[str, Any]]:
    """The release's pods as ``lab info`` describes them."""
    return await asyncio.to_thread(release.pods, real_lab.record.kubeconfig)


async def speaker_metrics(layout: plan.Lab, node: plan.Node) -> str | None:
    return await asyncio.to_thread(metrics, layout, str(node.ipv4.ip), SPEAKER_METRICS)


async def answered(layout: plan.Lab, node: plan.Node) -> float:
    """How many pings ``node``'s speaker pod has answered."""
    found = value(await speaker_metrics(layout, node), ANSWERED)
    assert found is not None, f"the speaker pod of {node.name} serves no metrics"
    return found


async def leader_pod(real_lab: SpeakerLab) -> Pod | None:
    """The manager pod holding the Lease, if one does and runs with an address."""
    lease = await real_lab.api.get(Lease, "porterlb-manager", namespace=release.NAMESPACE)
    holder = lease.spec.holderIdentity if lease.spec else None
    async for pod in real_lab.api.list(
        Pod, namespace=release.NAMESPACE, labels={release.COMPONENT: "manager"}
    ):
        if pod.metadata and pod.metadata.name == holder and pod.status and pod.status.podIP:
            return pod
    return None


async def silent_nodes(real_lab: SpeakerLab) -> float | None:
    """The leader's count of nodes whose speaker does not answer; None without a leader."""
    pod = await leader_pod(real_lab)
    if pod is None or pod.status is None or pod.status.podIP is None:
        return None
    page = await asyncio.to_thread(metrics, real_lab.plan, pod.status.podIP, MANAGER_METRICS)
    return value(page, "porterlb_heartbeat_silent_nodes")


async def resolved_to(real_lab: SpeakerLab, ip: IPAddress, node: plan.Node) -> bool:
    """Whether the router's kernel, resolving ``ip`` afresh, learns ``node``'s MAC."""
    entry = await real_lab.fresh_lookup(ip)
    return entry.get("lladdr") == str(node.mac)


async def whole(real_lab: SpeakerLab, fault: str) -> None:
    """After ``fault`` healed: no fault table or record left, every lab process alive, every
    speaker answering the leader."""
    record = current(real_lab)
    assert probes.leftover(record.plan) == {}
    assert faults.applied(record) == []
    assert all(procs.alive(p) for p in record.processes), fault

    async def answering() -> bool:
        return await silent_nodes(real_lab) == 0

    await eventually(answering, what=f"every speaker to answer the leader after {fault}")


_services = itertools.count()


@pytest_asyncio.fixture(loop_scope="session")
async def placed(real_lab: SpeakerLab) -> AsyncIterator[tuple[IPAddress, plan.Node, plan.Node]]:
    """A Service's IP, answered by exactly its recorded node; that node and the other. Each
    test's Service has a name of its own (the previous one may still be going away)."""
    name = f"faulted-{next(_services)}"
    async with real_lab.service(name, "ipv4") as ip:
        node = await eventually(
            lambda: reallab.answered_by_its_node(real_lab, name, ip),
            what=f"exactly the recorded node to answer for {ip}",
        )
        victim = real_lab.node(node)
        [other] = [n for n in real_lab.plan.nodes if n is not victim]
        yield ip, victim, other


async def leader_node(real_lab: SpeakerLab) -> str | None:
    pod = await leader_pod(real_lab)
    return pod.spec.nodeName if pod and pod.spec else None


@contextlib.asynccontextmanager
async def sampled(real_lab: SpeakerLab, ip: IPAddress) -> AsyncIterator[sampler.Sampler]:
    """Who answers for ``ip`` every 20 ms, from the router, while the block runs: never two
    MACs at once."""
    with sampler.Sampler(real_lab.plan, [str(ip)]) as sampling:
        yield sampling
    assert sampler.overlap(sampling.samples).two_answer == 0.0


async def moved(
    real_lab: SpeakerLab,
    sampling: sampler.Sampler,
    fault: str,
    placed: tuple[IPAddress, plan.Node, plan.Node],
    *,
    since: float,
    leader: str | None,
) -> None:
    """Wait until the router's kernel resolves the IP to the other node; print how long after
    ``since`` the sampler first heard only the other node (the failover the test saw)."""
    ip, victim, other = placed
    await eventually(
        lambda: resolved_to(real_lab, ip, other),
        what=f"{fault}: the router to resolve {ip} to {other.name} instead of {victim.name}",
    )

    async def heard() -> list[float]:  # the sampler's lines may trail the kernel's lookup
        took = sampler.takeover(sampling.samples, since=since, old=str(victim.mac))
        return [] if took is None else [took]

    [took] = await eventually(heard, what=f"{fault}: the sampler to hear {other.name} for {ip}")
    print(f"{fault} on {victim.name} (leader on {leader}): {ip} moved in {took:.3f} s")


# -- the kinds -------------------------------------------------------------------------------


def fault_cli(name: str, kind: str, node: str | None, *extra: str) -> str:
    """``porterlb lab fault`` as a user runs it; its output line."""
    argv = [sys.executable, "-m", "porterlb.cli", "lab", "fault", "--name", name, "--kind", kind]
    argv += ["--node", node] if node else []
    done = subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_a_crash_kills_the_node_and_its_pods_pulls_its_cable_and_the_ip_moves(
    real_lab: SpeakerLab, placed: tuple[IPAddress, plan.Node, plan.Node]
) -> None:
    ip, victim, _ = placed
    layout = real_lab.plan
    roles = [f"{kind}/{victim.name}" for kind in nodelab.NODE_KINDS]
    pods_before = {p["name"]: p for p in await pods(real_lab)}
    leader = await leader_node(real_lab)
    async with sampled(real_lab, ip) as sampling:
        since = time.monotonic()
        await asyncio.to_thread(faults.apply_recorded, current(real_lab), "crash", victim.name)
        assert procs.running(layout.name, roles) == []  # shims included: they carry the role
        assert kubelet.cgroup_root(victim.name) in nodelab.cgroup_roots(layout.name)
        pods_left = [
            path
            for path in (kubelet.CGROUP_FS / containers.HIERARCHY).glob(
                f"{kubelet.cgroup_root(victim.name).lstrip('/')}/**/cgroup.procs"
            )
            if path.read_text().strip()
        ]
        assert pods_left == []
        with pytest.raises(netns.LabError):
            probes.ping_router(victim, layout)
        await moved(real_lab, sampling, "crash", placed, since=since, leader=leader)
        healed = await asyncio.to_thread(fault_cli, layout.name, "crash", victim.name, "--heal")
        assert healed == f"lab {layout.name}: crash on node {victim.name} healed"
    assert procs.running(layout.name, roles) != []
    probes.ping_router(victim, layout)
    # The heal waits for the Node and its speaker pod; the node's other pods (a manager, a
    # backend) come back on their own, each in its own time (a killed container's restart
    # backoff included).
    victims = {name: pod for name, pod in pods_before.items() if pod["node"] == victim.name}

    async def restarted() -> bool:
        after = {p["name"]: p for p in await pods(real_lab)}
        return all(
            after[name]["ready"] and after[name]["started"] > pod["started"]
            for name, pod in victims.items()
        )

    await eventually(
        restarted, within=180, what=f"the pods of {victim.name} Ready in new containers"
    )
    await whole(real_lab, "crash")


async def test_a_speaker_kill_kills_its_container_and_the_kubelet_restarts_it(
    real_lab: SpeakerLab, placed: tuple[IPAddress, plan.Node, plan.Node]
) -> None:
    ip, victim, _ = placed
    record = current(real_lab)
    [before] = [p for p in await pods(real_lab) if p["node"] == victim.name
                and p["role"] == "speaker"]  # fmt: skip
    leader = await leader_node(real_lab)
    async with sampled(real_lab, ip) as sampling:
        since = time.monotonic()
        fault = await asyncio.to_thread(faults.apply_recorded, record, "speaker-kill", victim.name)
        await moved(real_lab, sampling, "speaker-kill", placed, since=since, leader=leader)
        await asyncio.to_thread(faults.heal_recorded, current(real_lab), fault.kind, victim.name)
    [after] = [p for p in await pods(real_lab) if p["node"] == victim.name
               and p["role"] == "speaker"]  # fmt: skip
    assert after["name"] == before["name"]  # the same pod: its container restarted
    assert after["restarts"] == before["restarts"] + 1
    assert after["ready"]
    await whole(real_lab, fault.kind)


async def test_an_api_partition_cuts_the_speakers_api_silently_and_nothing_moves(
    real_lab: SpeakerLab, placed: tuple[IPAddress, plan.Node, plan.Node]
) -> None:
    ip, victim, other = placed
    record = current(real_lab)
    layout = record.plan
    assert api_by_service(layout, victim) == "connected"
    fault = await asyncio.to_thread(faults.apply_recorded, record, "api-partition", victim.name)
    try:
        assert api_by_service(layout, victim) == "timed out"  # no RST, no ICMP
        assert probes.api_endpoint(victim, layout) == "connected"  # the kubelet's path stays
        assert api_by_service(layout, other) == "connected"
        probes.ping_router(victim, layout)  # the LAN and the router are up
        [table] = fault.tables
        assert any(packets > 0 for packets in probes.dropped(table).values())
        before = await answered(layout, victim)

        async def pinged() -> bool:  # heartbeats still flow both ways
            return await answered(layout, victim) > before

        await eventually(pinged, what=f"{victim.name} to answer pings under an API partition")
        assert await silent_nodes(real_lab) == 0
        assert await resolved_to(real_lab, ip, victim)  # no failover: nothing to fail over
    finally:
        await asyncio.to_thread(faults.heal_recorded, current(real_lab), fault.kind, victim.name)
    assert api_by_service(layout, victim) == "connected"
    await whole(real_lab, fault.kind)


@pytest.mark.parametrize("kind", list(probes.HEARTBEAT_KINDS))
async def test_a_heartbeat_cut_drops_its_direction_silently_and_the_ip_moves(
    real_lab: SpeakerLab, placed: tuple[IPAddress, plan.Node, plan.Node], kind: str
) -> None:
    ip, victim, _ = placed
    pings_cut, pongs_cut = probes.HEARTBEAT_KINDS[kind]
    record = current(real_lab)
    layout = record.plan
    leader = await leader_node(real_lab)
    async with sampled(real_lab, ip) as sampling:
        since = time.monotonic()
        fault = await asyncio.to_thread(faults.apply_recorded, record, kind, victim.name)
        try:
            inet = [t for t in fault.tables if t.family == "inet"]
            bridged = [t for t in fault.tables if t.family == "bridge"]
            assert bool(inet) == (pings_cut or kind == "node-partition")
            assert bool(bridged) == pongs_cut
            before = await answered(layout, victim)

            async def counted() -> bool:
                """The managers' real pings dropped at the victim, or its real pongs at a
                pod bridge; and when pings get through, the speaker answers them."""
                udp = [n for t in fault.tables for r, n in probes.dropped(t).items() if "udp" in r]
                seen = any(packets > 0 for packets in udp)
                if pongs_cut and not pings_cut:
                    seen = seen and await answered(layout, victim) > before
                return seen

            await eventually(counted, what=f"{kind}: heartbeats dropped in the planned direction")
            await moved(real_lab, sampling, kind, placed, since=since, leader=leader)
            probes.ping_router(victim, layout)  # the LAN stays up
            expected = "timed out" if kind == "node-partition" else "connected"
            assert probes.api_endpoint(victim, layout) == expected
            # the speaker's pongs were lost, never refused (EPERM) by its own kernel
            page = await speaker_metrics(layout, victim)
            assert page is not None
            assert [float(v) for v in SEND_FAILURES.findall(page) if float(v)] == []
        finally:
            await asyncio.to_thread(faults.heal_recorded, current(real_lab), kind, victim.name)
    await whole(real_lab, fault.kind)


async def test_managers_down_keeps_every_manager_down_until_healed(real_lab: SpeakerLab) -> None:
    record = current(real_lab)
    replicas = await asyncio.to_thread(release.manager_replicas, record.kubeconfig)
    fault = await asyncio.to_thread(faults.apply_recorded, record, "managers-down", None)
    try:
        assert fault.replicas == replicas
        assert [p for p in await pods(real_lab) if p["role"] == "manager"] == []
        speakers = [p for p in await pods(real_lab) if p["role"] == "speaker"]
        assert len(speakers) == WORKERS
        assert all(p["ready"] for p in speakers)
        assert await leader_pod(real_lab) is None
    finally:
        await asyncio.to_thread(faults.heal_recorded, current(real_lab), "managers-down", None)
    managers = [p for p in await pods(real_lab) if p["role"] == "manager"]
    assert len(managers) == replicas
    assert all(p["ready"] for p in managers)
    await eventually(lambda: leader_pod(real_lab), what="a leader after managers-down healed")
    await whole(real_lab, fault.kind)


async def test_the_leader_pods_process_killed_the_kubelet_restarts_it_and_a_manager_leads(
    real_lab: SpeakerLab,
) -> None:
    """What ``lab bench-failover``'s leader-kill does on real nodes: SIGKILL the processes of
    the leader pod's container (:func:`containers.kill`). The kubelet restarts it, and a
    manager renews the Lease again: which one is not the test's business (the restarted one,
    under the same pod name, is the holder it finds in the Lease)."""
    leader = await leader_pod(real_lab)
    assert leader is not None and leader.metadata is not None and leader.metadata.name
    name = leader.metadata.name
    [before] = [p for p in await pods(real_lab) if p["name"] == name]
    kubeconfig = real_lab.record.kubeconfig
    pids = await asyncio.to_thread(containers.kill, kubeconfig, "manager", pod=name)
    assert pids
    killed = datetime.datetime.now(datetime.UTC)  # the killed process renews nothing after

    async def restarted() -> bool:
        [now] = [p for p in await pods(real_lab) if p["name"] == name]
        return bool(now["restarts"] > before["restarts"] and now["ready"])

    await eventually(restarted, what=f"the kubelet to restart the container of {name}")

    async def renewed() -> bool:
        lease = await real_lab.api.get(Lease, "porterlb-manager", namespace=release.NAMESPACE)
        when = lease.spec.renewTime if lease.spec else None
        return when is not None and when >= killed and await leader_pod(real_lab) is not None

    await eventually(renewed, what="a live manager to renew the Lease after the leader died")
    await whole(real_lab, "leader-kill")
