"""What the speaker's end-to-end tests share: a running lab, and the judges.

A module that asks for ``speaker_lab`` gets the session's real-node lab (``lab up --nodes
real --ipv6 --porterlb chart``: three kubelets with containerd and the real kube-proxy,
porterlb installed by its chart, dual-stack) and a :class:`SpeakerLab` around it; one lab
for every such module, since each test makes Services of its own names asking for pool IPs
no other test uses, and a test that disturbs the cluster (stops the managers, kills a
speaker, freezes a kubelet) restores it before it ends. The Services' backends are one
Deployment with a pod on every node (:mod:`porterlb.lab.node.backends`), their
EndpointSlices the controller manager's. A module that tests porterlb's processes outside a
cluster asks for ``process_lab`` instead: the process lab, its own.

The judges look only at what a LAN would show:

- the router namespace's kernel neighbour table (``ip -j neigh``), and its netlink neighbour
  notifications for the transitions a poll cannot see (PROBE lasts one round trip);
- raw ARP/NDP frames on the router's LAN leg: one request sent with an AF_PACKET socket
  opened inside the router namespace, and every reply addressed to the router counted;
- HTTP from the client namespace, through the router, answered by a backend that names its
  node.

Traffic that makes the router resolve an IP is one UDP datagram from inside the router
namespace (nothing listens; nothing needs to).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import ipaddress
import itertools
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final, Literal

import httpx2
import lightkube
import pytest
import pytest_asyncio
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType
from prometheus_client import parser

from porterlb.api import wellknown
from porterlb.kube import client as kube_client
from porterlb.kube import resources
from porterlb.l2 import ethernet
from porterlb.lab import arping, benchlab, cluster, faults, lab, netns, network, plan
from porterlb.lab.node import backends, nodelab, release
from tests.e2e import reallab
from tests.waiting import eventually

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Family = Literal["ipv4", "ipv6"]

WORKERS: Final = 3
"""Enough that "exactly one node answers" and "another node takes over" mean something."""

DISCARD_PORT: Final = 9
"""Where the router's poke datagrams go (RFC 863); nothing listens, nothing needs to."""

ANSWER_WINDOW: Final = 2.0
"""Seconds to collect replies to one request. A speaker answers within a millisecond; the
window is long so that a second, slower answerer (a bug) would be caught too, even on two
loaded cores. It bounds a receive, it synchronises nothing."""

HTTP_TIMEOUT: Final = 5
"""curl's --max-time, in seconds; ``eventually`` retries a request that failed."""

NETLINK_ROUTE: Final = 0
RTMGRP_NEIGH: Final = 0x4
"""include/uapi/linux/rtnetlink.h: the multicast group of neighbour changes (RTNLGRP_NEIGH=3)."""
RTM_NEWNEIGH: Final = 28
NDA_DST: Final = 1
NDA_LLADDR: Final = 2
NUD_STATES: Final = {
    0x01: "INCOMPLETE",
    0x02: "REACHABLE",
    0x04: "STALE",
    0x08: "DELAY",
    0x10: "PROBE",
    0x20: "FAILED",
    0x40: "NOARP",
    0x80: "PERMANENT",
}
"""include/uapi/linux/neighbour.h ``NUD_*``."""

_NLMSGHDR: Final = struct.Struct("=IHHII")
_NDMSG: Final = struct.Struct("=BxxxiHBB")
_RTATTR: Final = struct.Struct("=HH")

_names = itertools.count()


def fresh_name() -> str:
    """A lab name no running lab uses and whose address index none has."""
    running = network.running()
    while True:
        name = f"sp{os.getpid()}-{next(_names)}"
        if name not in running and not plan.clashes(name, running):
            return name


class NeighbourWatch:
    """The router's netlink neighbour notifications: every state an entry passes through.

    The socket joins the group before :func:`SpeakerLab.watch_neighbours` returns it, so no
    change made afterwards is missed.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending: list[tuple[IPAddress, str, str | None]] = []

    async def next(self, target: IPAddress) -> tuple[str, str | None]:
        """The next (state, lladdr) notified for ``target``; waits as long as it takes."""
        loop = asyncio.get_running_loop()
        while True:
            while self._pending:
                ip, state, mac = self._pending.pop(0)
                if ip == target:
                    return state, mac
            self._pending.extend(_neighbour_messages(await loop.sock_recv(self._sock, 65536)))


def _neighbour_messages(data: bytes) -> Iterator[tuple[IPAddress, str, str | None]]:
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        if kind == RTM_NEWNEIGH:
            body = data[offset + _NLMSGHDR.size : offset + length]
            _, _, state, _, _ = _NDMSG.unpack_from(body)
            attributes = _attributes(body[_NDMSG.size :])
            if NDA_DST in attributes:
                ip = ipaddress.ip_address(attributes[NDA_DST])
                lladdr = attributes.get(NDA_LLADDR)
                mac = str(ethernet.MacAddress(lladdr)) if lladdr and len(lladdr) == 6 else None
                yield ip, NUD_STATES.get(state, hex(state)), mac
        offset += (length + 3) & ~3


def _attributes(data: bytes) -> dict[int, bytes]:
    found = {}
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        found[kind] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


class SpeakerLab:
    """A running lab, its API client, and the ways the tests look at its network."""

    def __init__(self, record: lab.Record, api: lightkube.AsyncClient) -> None:
        self.record = record
        self.plan = record.plan
        self.api = api

    # -- the cluster ---------------------------------------------------------------------------

    def pool_ip(self, family: Family, offset: int) -> IPAddress:
        """The ``offset``-th address of the lab's pool of ``family``."""
        pool: tuple[IPAddress, IPAddress] | None
        pool = self.plan.pool_v4 if family == "ipv4" else self.plan.pool_v6
        assert pool is not None
        first, last = pool
        assert int(first) + offset <= int(last), f"offset {offset} is outside the pool {pool}"
        return first + offset

    def node(self, name: str) -> plan.Node:
        return self.plan.node(name)

    def mac_owner(self, mac: str) -> str:
        """The node whose MAC ``mac`` is, or ``mac`` itself if it is no node's."""
        return next((n.name for n in self.plan.nodes if str(n.mac) == mac), mac)

    @contextlib.asynccontextmanager
    async def service(
        self,
        name: str,
        family: Family,
        ip: IPAddress | None = None,
        *,
        annotations: dict[str, str] | None = None,
        port: int = cluster.SERVICE_PORT,
    ) -> AsyncIterator[IPAddress]:
        """A sample Service asking for ``ip`` (if given); yields its IP, deletes it after."""
        wanted = dict(annotations or {})
        if ip is not None:
            wanted[wellknown.REQUESTED_IP] = str(ip)
        if self.record.release:  # the Service's pods, made by the first Service
            await backends.start(self.api, self.plan)
        await benchlab.create_service(
            self.api, self.record, name, family=family, annotations=wanted, port=port
        )
        try:
            [found] = await cluster.wait_ingress(self.api, name)
            if ip is not None:
                assert found == str(ip), f"Service {name} got {found}, asked for {ip}"
            yield ipaddress.ip_address(found)
        finally:
            await cluster.delete_service(self.api, name)

    async def announcer(self, name: str, *, other_than: str | None = None) -> plan.Node:
        """The node named in Service ``name``'s announced-by annotation, once there is one
        (other than ``other_than``, if given)."""

        async def recorded() -> str | None:
            node = await cluster.announced_by(self.api, name)
            return node if node != other_than else None

        what = f"Service {name} to be placed" + (f" off {other_than}" if other_than else "")
        return self.node(await eventually(recorded, what=what))

    async def events(self, reason: str, *, kind: str, name: str) -> list[Event]:
        """Events with ``reason`` about object ``kind``/``name``; cluster-scoped objects' and
        the sample Services' Events both live in namespace ``default``."""
        return [
            event
            async for event in self.api.list(Event, namespace=cluster.NAMESPACE)
            if event.reason == reason
            and event.involvedObject.kind == kind
            and event.involvedObject.name == name
        ]

    async def set_ready(self, node: plan.Node, ready: bool) -> None:
        """Write the Node's Ready condition, as a kubelet (or its absence) would.

        On real nodes the node's kubelet is frozen (SIGSTOP) while it is not Ready, so that
        it does not report itself Ready again: the node looks like one whose kubelet stopped,
        with the condition the node lifecycle controller would write after its grace period.
        """
        if self.record.real_nodes and not ready:
            os.kill(self.record.process(f"kubelet/{node.name}").pid, signal.SIGSTOP)
        status = cluster.node_status(node, datetime.datetime.now(datetime.UTC))
        [condition] = status["status"]["conditions"]
        if not ready:
            condition.update(
                status="False", reason="KubeletNotReady", message="porterlb e2e: node failed"
            )
        try:
            # Strategic, merged by type: the kubelet's other conditions (MemoryPressure...)
            # and its addresses stay.
            await self.api.patch(
                resources.Node.Status,
                node.name,
                {"status": {"conditions": [condition]}},
                patch_type=PatchType.STRATEGIC,
            )
        except ApiError as error:
            raise AssertionError(f"Node {node.name}: {error.status.message}") from error
        finally:
            if self.record.real_nodes and ready:
                os.kill(self.record.process(f"kubelet/{node.name}").pid, signal.SIGCONT)

    async def status(self, *args: str) -> Any:
        """What ``porterlb status --json ARGS`` prints, run with the lab admin's kubeconfig."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "porterlb.cli", "status", "--kubeconfig",
            str(self.record.kubeconfig), "--json", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return json.loads(out)

    @contextlib.asynccontextmanager
    async def fault(self, kind: str, node: plan.Node | None = None) -> AsyncIterator[None]:
        """Fault ``kind`` of ``porterlb lab fault`` on ``node`` for the duration, healed after
        (on real nodes: until every porterlb pod is Ready again, so the next test finds the
        cluster as it was)."""
        where = node.name if node else None
        planned = await asyncio.to_thread(faults.for_record, self.record, kind, where)
        injected = await asyncio.to_thread(faults.inject, self.record, planned)
        try:
            yield
        finally:
            self.record = await asyncio.to_thread(faults.heal, self.record, injected)
            if self.record.release:
                admin, workers = self.record.kubeconfig, len(self.plan.nodes)
                await asyncio.to_thread(release.wait_ready, admin, workers)

    # -- the speakers ----------------------------------------------------------------------------

    async def scrape(self, node: plan.Node) -> str:
        """What ``node``'s speaker serves on ``/metrics``."""
        role = f"speaker/{node.name}"

        def scrape() -> str:
            if self.record.release:  # the chart's speaker: $HOST_IP:50053
                address = f"{node.ipv4.ip}:{lab.SPEAKER_METRICS_PORT}"
                return lab.metrics_text(address, namespace=node.netns, timeout=HTTP_TIMEOUT)
            try:
                return lab.scrape(self.record, role, timeout=HTTP_TIMEOUT)
            except httpx2.HTTPError as error:  # the speaker died: show why, from its log
                log = self.record.process(role).log
                tail = "".join(log.read_text(errors="replace").splitlines(True)[-40:])
                raise AssertionError(
                    f"speaker of {node.name} unreachable ({error}):\n{tail}"
                ) from error

        return await asyncio.to_thread(scrape)

    async def sample(self, node: plan.Node, metric: str, ip: IPAddress) -> float:
        """A per-IP counter of ``node``'s speaker, read from its metrics endpoint (0 if unset)."""
        text = await self.scrape(node)
        for family in parser.text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{metric}_total" and sample.labels.get("ip") == str(ip):
                    return float(sample.value)
        return 0.0

    async def announced(self, node: plan.Node, ip: IPAddress) -> None:
        """Wait until ``node``'s speaker has sent its first gratuitous frame for ``ip``.

        Until then the speaker may still be probing, and a router request goes unanswered.
        """

        async def sent() -> bool:
            return await self.sample(node, "porterlb_l2_gratuitous_sent", ip) > 0

        await eventually(sent, what=f"{node.name} to announce {ip}")

    # -- the router ----------------------------------------------------------------------------

    async def neigh(self, command: str, target: IPAddress, *options: str) -> str:
        """``ip -j neigh COMMAND TARGET dev lan0 OPTIONS`` in the router's namespace."""
        argv = ["ip", "-j", "neigh", command, str(target), "dev", plan.ROUTER_LAN_IF, *options]
        return await asyncio.to_thread(netns.run, self.plan.router_netns, argv)

    async def entry(self, target: IPAddress) -> dict[str, Any] | None:
        """The router's neighbour entry for ``target`` on its LAN leg, if it has one."""
        entries: list[dict[str, Any]] = json.loads(await self.neigh("show", target) or "[]")
        return entries[0] if entries else None

    async def poke(self, target: IPAddress) -> None:
        """Send one UDP datagram from the router to ``target``: the router must resolve it."""

        def send() -> None:
            family = socket.AF_INET if target.version == 4 else socket.AF_INET6
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"poke", (str(target), DISCARD_PORT))

        await asyncio.to_thread(netns.call_in, self.plan.router_netns, send)

    async def wait_entry(
        self,
        target: IPAddress,
        *states: str,
        what: str,
        mac: ethernet.MacAddress | None = None,
        poke: bool = False,
    ) -> dict[str, Any]:
        """Wait until the router's entry is in one of ``states`` (any, if none given) and
        holds ``mac`` (if given); ``poke`` whenever it has none or has given up, so that a
        resolution is always under way."""

        async def settled() -> dict[str, Any] | None:
            found = await self.entry(target)
            if (
                found
                and (not states or set(found["state"]) & set(states))
                and (mac is None or found.get("lladdr") == str(mac))
            ):
                return found
            if poke and (found is None or "FAILED" in found["state"]):
                await self.poke(target)
            return None

        return await eventually(settled, what=what)

    async def fresh_lookup(self, target: IPAddress) -> dict[str, Any]:
        """Forget the router's entry, make it resolve ``target`` afresh, return the outcome.

        The datagram makes the entry INCOMPLETE before ``sendto`` returns, so the first state
        after INCOMPLETE is this lookup's own result (an answer, or FAILED after the kernel's
        three solicitations, ~3 s).
        """
        if await self.entry(target) is not None:
            await self.neigh("del", target)
        await self.poke(target)

        async def done() -> dict[str, Any] | None:
            found = await self.entry(target)
            assert found is not None, f"the router dropped its entry for {target}"
            return None if "INCOMPLETE" in found["state"] else found

        return await eventually(done, what=f"the router's lookup of {target} to finish")

    @contextlib.asynccontextmanager
    async def watch_neighbours(self) -> AsyncIterator[NeighbourWatch]:
        """Subscribe to the router's neighbour notifications for the duration."""

        def subscribe() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            sock.bind((0, RTMGRP_NEIGH))
            sock.setblocking(False)
            return sock

        sock = await asyncio.to_thread(netns.call_in, self.plan.router_netns, subscribe)
        with sock:
            yield NeighbourWatch(sock)

    async def answers(self, target: IPAddress, *, window: float = ANSWER_WINDOW) -> set[str]:
        """Send one broadcast ARP request (IPv4) or one multicast neighbour solicitation (IPv6)
        for ``target`` from the router's LAN leg; return the MACs that answered the router
        within ``window`` seconds."""
        found = await asyncio.to_thread(arping.who_answers, self.plan, [target], window=window)
        return found[target]

    # -- the client ----------------------------------------------------------------------------

    async def http(self, target: IPAddress) -> str | None:
        """GET ``http://TARGET/`` from the client namespace; the body, or None if it failed."""
        host = f"[{target}]" if target.version == 6 else str(target)
        argv = ["curl", "-sS", "-g", "--max-time", str(HTTP_TIMEOUT), f"http://{host}/"]
        try:
            return await asyncio.to_thread(netns.run, self.plan.client.netns, argv)
        except netns.LabError:
            return None


def real_lab_fixtures(
    prefix: str, up: Callable[[str], lab.Record], *, scope: Literal["module", "session"] = "module"
) -> tuple[Any, Any]:
    """Fixtures ``PREFIX_record``, the real-node lab ``up`` brings up under a fresh name (for
    the module, or the session with ``scope``; afterwards nothing of it is left and the host's
    kernel tunables are as they were: :func:`reallab.checked`), and ``PREFIX_lab``, a
    :class:`SpeakerLab` on it (for the module). Bind both at module level under those names."""

    record_name = f"{prefix}_record"

    @pytest.fixture(scope=scope, name=record_name)
    def record() -> Iterator[lab.Record]:
        with reallab.checked(up, fresh_name()) as found:
            yield found

    async def speaker_lab(**record: lab.Record) -> AsyncIterator[SpeakerLab]:
        async with kube_client.connect(record[record_name].kubeconfig) as api:
            yield SpeakerLab(record[record_name], api)

    # The record is an argument (pytest reads the signature), not request.getfixturevalue(): a
    # fixture resolved from inside this one would run on the event loop, and lab up cannot.
    keyword = inspect.Parameter(record_name, inspect.Parameter.KEYWORD_ONLY)
    speaker_lab.__signature__ = inspect.Signature([keyword])  # type: ignore[attr-defined]
    connected = pytest_asyncio.fixture(
        speaker_lab, scope="module", loop_scope="session", name=f"{prefix}_lab"
    )
    return record, connected


speaker_record, speaker_lab = real_lab_fixtures(
    "speaker",
    lambda name: nodelab.up(name, workers=WORKERS, ipv6=True, porterlb="chart"),
    scope="session",
)
"""The session's real-node lab (its modules carry ``reallab.CHART_MARKS``) and its client."""


@pytest.fixture(scope="module")
def process_record() -> Iterator[lab.Record]:
    """A process lab of the module's own, for a module that tests porterlb's processes
    outside a cluster (its docstring says why)."""
    name = fresh_name()
    try:
        yield lab.up(name, workers=WORKERS, ipv6=True)
    finally:
        lab.down(name)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def process_lab(process_record: lab.Record) -> AsyncIterator[SpeakerLab]:
    async with kube_client.connect(process_record.kubeconfig) as api:
        yield SpeakerLab(process_record, api)
