"""Faults injected into a running lab, and healed: ``porterlb lab fault``.

Each kind is a pure :class:`Plan` (:func:`build`): the nftables tables to add, the processes
and containers to kill, the LAN cables to pull. :func:`inject` applies a plan and :func:`heal`
undoes exactly it (deletes the tables, plugs the cables back, restarts what was killed, waits
for what the kubelet restarts); both are thin. ``lab fault`` keeps the applied plans in the
lab's state directory (:data:`APPLIED`), so that ``--heal`` in a later command undoes what
was applied, not what today's code would apply.

The kinds (issue 9 §3), each on one worker unless said otherwise, mean the same in both labs:
the process lab (porterlb as host processes: managers in the router's namespace, a speaker
per worker's namespace) and the real-node lab (``lab up --nodes real``: a kubelet,
containerd and kube-proxy per worker, porterlb installed by its chart, the speakers
host-network pods, the managers pods on the workers' pod network):

- ``crash``: the node dies and its cable is pulled (its LAN bridge port down: ``ip link set
  eth0 down`` inside the worker would also delete its default route, which the kernel does
  not restore when the link comes back); nothing tells the API server, as in ``lab demo``.
  On the process lab the speaker is SIGKILLed; on a real node the kubelet, containerd with
  its shims, kube-proxy (a DaemonSet pod on most clusters, so gone with the node) and every
  process in the node's cgroup root (its pods: the speaker, and a manager if one runs there)
  are. The heal plugs the cable, starts them again as ``lab up`` did, and on a real node
  waits until the Node is Ready and its speaker pod runs Ready in containers started since
  the crash (the pod's status said Ready all along);
- ``speaker-kill``: the speaker SIGKILLed alone (the node and its link stay up). On a real
  node its container's processes are (:mod:`porterlb.lab.node.containers`): the kubelet
  restarts the container, and the heal waits for that;
- ``api-partition``: the speaker's API traffic dropped both ways, silently (``drop``, never
  ``reject``: no RST, no ICMP, as a cut cable or a dead switch port upstream would). On the
  process lab that is the worker's traffic to the API endpoint (the router's LAN address,
  port 6443: :mod:`porterlb.lab.apiproxy`). On a real node the speaker pod reaches the API
  at the ``kubernetes`` Service's ClusterIP, which kube-proxy DNATs to that endpoint in the
  output hook's ``nat`` chain (priority -100), before this drop; the kubelet and kube-proxy
  reach the endpoint directly and must keep it (the Node stays Ready), so the rules match
  the connections whose *original* destination is the ClusterIP (``ct original``), which
  conntrack knows in both directions;
- ``heartbeat-partition``: UDP heartbeats dropped both ways;
- ``ping-loss``: the managers' pings dropped; pongs would pass;
- ``pong-loss``: pings arrive, the speaker's pongs are lost;
- ``node-partition``: API and heartbeats cut both ways, while the LAN (ARP, the client's
  traffic through the router) stays up: the node is cut off from the control plane only.
  On a real node that is every API connection of the node (kubelet, kube-proxy and the
  speaker, whose traffic has the endpoint as destination after the DNAT); the manager pods
  running on it keep theirs (they are forwarded, not the node's own), as on the process lab,
  where the managers sit on the control-plane side;
- ``managers-down``: every manager replica down until healed (no worker). On the process
  lab each is SIGKILLed. On a real lab the kubelet would restart a killed container at
  once, so the manager Deployment is also scaled to 0 (after the kill: no manager gets
  SIGTERM first and hands its Lease over, as a crash would not), and the heal scales it
  back to its recorded replicas and waits for them Ready. It is what an outage of the
  control plane's add-on looks like to the nodes: the Lease expires, no pings come, and
  nothing restarts until an operator acts. SIGSTOP would not stay down (the liveness probe
  fails, the kubelet kills and restarts the container);
- ``speaker-pod-delete``: in a lab where the chart installed porterlb, the worker's speaker
  pod deleted through the API, as ``kubectl delete pod`` does (SIGTERM, then its
  DaemonSet makes another); healing waits until the deleted pod is gone and the new one is
  Ready.

Every drop is silent for the sender, as a loss on the wire is: a packet is dropped where it
*arrives* (the API server's replies and the pings at the worker's input hook), except the
worker's own API requests, dropped at its output hook, which TCP takes as a lost segment too
(the SYN or segment is retransmitted; ``connect`` and ``send`` see no error). A UDP datagram
dropped at the sender's IP output or postrouting hook would fail its ``sendto`` with EPERM
instead: a firewall's doing, not a partition. So pongs are dropped where the managers get
them: on the process lab at the router's input hook (its heartbeat socket is there); on a
real lab at every worker's *bridge* output hook, which every packet the worker hands to its
pod bridge ``cni0`` crosses, routed from the LAN (a manager on another worker) or sent by the
speaker itself (a manager on the same worker), and whose drop the bridge's transmit swallows.

The rules go in a table of their own per kind and worker (``porterlb_fault_<kind>`` in the
victim's namespace, ``porterlb_fault_<kind>_<worker>`` in the router's or, family
``bridge``, in every worker's), at priority -10, before the kube-proxy's tables at priority
0: a heal deletes its tables and nothing else, and two kinds applied to one node heal
independently. Every drop rule has a counter, so that a test (or a person with ``nft list
table``) sees which real packets a fault dropped.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, get_args

from porterlb import errors
from porterlb.lab import apiproxy, lab, netns, plan
from porterlb.lab import processes as procs
from porterlb.lab.node import containers, kubelet, nodelab, release
from porterlb.liveness import udp

Kind = Literal[
    "crash",
    "speaker-kill",
    "api-partition",
    "heartbeat-partition",
    "ping-loss",
    "pong-loss",
    "node-partition",
    "managers-down",
    "speaker-pod-delete",
]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

Nodes = Literal["process", "real"]
"""Which lab a plan is for: porterlb as host processes, or real nodes (``--nodes``)."""

APPLIED: Final = "faults.json"
"""In the lab's state directory: the plans applied and not yet healed."""

TABLE_PREFIX: Final = "porterlb_fault_"

PRIORITY: Final = -10
"""Before the filter hooks' usual priority 0 (nftables' ``filter``), so no other table of the
lab accepts a packet first."""

_API: Final = ("api",)
_PINGS: Final = ("pings",)
_PONGS: Final = ("pongs",)
_CUTS: Final[dict[Kind, tuple[str, ...]]] = {
    "api-partition": _API,
    "heartbeat-partition": _PINGS + _PONGS,
    "ping-loss": _PINGS,
    "pong-loss": _PONGS,
    "node-partition": ("node-api", *_PINGS, *_PONGS),
}
"""The traffic each partition kind drops: ``api`` the speaker's API traffic, ``node-api``
all of the node's own."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    """One nftables table a fault adds."""

    netns: str
    name: str
    ruleset: str
    """``nft -f`` input that creates table ``FAMILY NAME``."""
    family: str = "inet"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one fault does to a lab; :func:`heal` undoes exactly this."""

    kind: Kind
    node: str | None
    """The worker it hits; None for ``managers-down``."""
    tables: tuple[Table, ...] = ()
    kill: tuple[str, ...] = ()
    """Roles whose processes are SIGKILLed (``speaker/NODE``, ``manager/N``; on real nodes
    ``containerd/NODE``, ``kubelet/NODE``, ``kube-proxy/NODE``), restarted by the heal in
    this order."""
    cgroups: tuple[str, ...] = ()
    """Cgroup roots of real nodes whose every process (the node's pods) is SIGKILLed."""
    containers: tuple[str, ...] = ()
    """Release pods whose containers' processes are SIGKILLed: ``speaker/NODE`` or
    ``manager`` (every manager pod); the kubelet restarts them."""
    cables: tuple[str, ...] = ()
    """LAN bridge ports taken down, in the lab's LAN namespace."""
    pods: tuple[str, ...] = ()
    """Nodes whose speaker pod is deleted; their DaemonSet replaces it, the heal waits."""
    replicas: int | None = None
    """The manager Deployment's replicas: scaled to 0 by the fault, back to this by the heal."""
    ready: tuple[str, ...] = ()
    """Real nodes the heal waits for: Node Ready, speaker pod Ready in containers started at
    or after :attr:`at`."""
    at: str | None = None
    """When :func:`inject` applied it (API time format, to the second); None before."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "node": self.node,
            "tables": [dataclasses.asdict(table) for table in self.tables],
            "kill": list(self.kill),
            "cgroups": list(self.cgroups),
            "containers": list(self.containers),
            "cables": list(self.cables),
            "pods": list(self.pods),
            "replicas": self.replicas,
            "ready": list(self.ready),
            "at": self.at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            kind=kind_of(data["kind"]),
            node=data["node"],
            tables=tuple(Table(**table) for table in data["tables"]),
            kill=tuple(data["kill"]),
            cgroups=tuple(data.get("cgroups", ())),
            containers=tuple(data.get("containers", ())),
            cables=tuple(data["cables"]),
            pods=tuple(data.get("pods", ())),
            replicas=data.get("replicas"),
            ready=tuple(data.get("ready", ())),
            at=data.get("at"),
        )


def build(
    layout: plan.Lab,
    text: str,
    node: str | None,
    *,
    managers: Sequence[str] = (),
    nodes: Nodes = "process",
    replicas: int | None = None,
    heartbeat_port: int = udp.DEFAULT_PORT,
) -> Plan:
    """The plan of fault ``text`` on worker ``node`` of ``layout``, a lab of ``nodes``;
    ``managers`` are a process lab's manager roles, ``replicas`` a real lab's manager
    Deployment's. Raises InvalidSpec for an unknown kind, a worker the lab lacks, a node
    given to (or missing from) a kind that takes one, or managers-down on a real lab
    without ``replicas``."""
    kind = kind_of(text)
    real = nodes == "real"
    if kind == "managers-down":
        if node is not None:
            raise errors.InvalidSpec("fault managers-down hits every manager: give no node")
        if not real:
            return Plan(kind="managers-down", node=None, kill=tuple(managers))
        if replicas is None:
            raise errors.InvalidSpec("fault managers-down: the manager replicas to restore?")
        return Plan(kind="managers-down", node=None, containers=("manager",), replicas=replicas)
    if node is None:
        raise errors.InvalidSpec(f"fault {kind}: which node? (--node)")
    try:
        worker = layout.node(node)
    except KeyError as error:
        raise errors.InvalidSpec(f"fault {kind}: {error.args[0]}") from None
    speaker = f"speaker/{worker.name}"
    cable = (layout.bridge_port(worker),)
    if kind == "crash" and real:
        return Plan(
            kind="crash",
            node=node,
            kill=tuple(f"{role}/{worker.name}" for role in nodelab.NODE_KINDS),
            cgroups=(kubelet.cgroup_root(worker.name),),
            cables=cable,
            ready=(worker.name,),
        )
    if kind == "crash":
        return Plan(kind="crash", node=node, kill=(speaker,), cables=cable)
    if kind == "speaker-kill" and real:
        return Plan(kind="speaker-kill", node=node, containers=(speaker,), ready=(worker.name,))
    if kind == "speaker-kill":
        return Plan(kind="speaker-kill", node=node, kill=(speaker,))
    if kind == "speaker-pod-delete":
        return Plan(kind="speaker-pod-delete", node=node, pods=(worker.name,))
    return Plan(kind=kind, node=node, tables=_tables(layout, kind, worker, real, heartbeat_port))


def kind_of(text: str) -> Kind:
    """The fault kind spelled ``text``. Raises InvalidSpec for an unknown one."""
    for kind in KINDS:
        if kind == text:
            return kind
    raise errors.InvalidSpec(f"fault {text!r}: unknown kind; known: {', '.join(KINDS)}")


def _tables(
    layout: plan.Lab, kind: Kind, worker: plan.Node, real: bool, heartbeat_port: int
) -> tuple[Table, ...]:
    """The tables of partition ``kind`` (see the module docstring for where each drop is)."""
    cuts = _CUTS[kind]
    table = TABLE_PREFIX + kind.replace("-", "_")
    named = f"{table}_{layout.bridge_port(worker)}"
    pongs = _pongs(worker, heartbeat_port) if "pongs" in cuts else []
    found = [(worker.netns, table, "inet", _worker_rules(layout, cuts, heartbeat_port, real))]
    if real:
        found += [(other.netns, named, "bridge", {"output": pongs}) for other in layout.nodes]
    else:
        found.append((layout.router_netns, named, "inet", {"input": pongs}))
    return tuple(
        Table(netns=netns_, name=name, family=family, ruleset=ruleset(name, rules, family))
        for netns_, name, family, rules in found
        if any(rules.values())
    )


def _worker_rules(
    layout: plan.Lab, cuts: Sequence[str], heartbeat_port: int, real: bool
) -> dict[str, list[str]]:
    """Hook -> the drop rules of ``cuts`` in the worker's namespace."""
    router = layout.router_lan.ipv4.ip
    rules: dict[str, list[str]] = {"input": [], "output": []}
    if "node-api" in cuts or ("api" in cuts and not real):
        rules["output"].append(f"ip daddr {router} tcp dport {apiproxy.PORT} counter drop")
        rules["input"].append(f"ip saddr {router} tcp sport {apiproxy.PORT} counter drop")
    elif "api" in cuts:  # the speaker pod's: to the ClusterIP, whatever kube-proxy made of it
        service = nodelab.api_service_ip(layout)
        rules["output"].append(f"ct original ip daddr {service} counter drop")
        rules["input"].append(f"ct original ip daddr {service} counter drop")
    if "pings" in cuts:  # a manager's ping comes to the speaker's heartbeat port
        rules["input"].append(f"udp dport {heartbeat_port} counter drop")
    return rules


def _pongs(worker: plan.Node, heartbeat_port: int) -> list[str]:
    """The drop rules of the worker's pongs, which it sends from its heartbeat port."""
    rules = [f"ip saddr {worker.ipv4.ip} udp sport {heartbeat_port} counter drop"]
    if worker.ipv6 is not None:
        rules.append(f"ip6 saddr {worker.ipv6.ip} udp sport {heartbeat_port} counter drop")
    return rules


def ruleset(table: str, rules: dict[str, list[str]], family: str = "inet") -> str:
    """An ``nft -f`` script creating ``table`` of ``family`` with a filter chain per hook."""
    lines = [f"table {family} {table} {{"]
    for hook, hooked in rules.items():
        if hooked:
            lines.append(f"  chain {hook} {{")
            lines.append(f"    type filter hook {hook} priority {PRIORITY}; policy accept;")
            lines += [f"    {rule}" for rule in hooked]
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def managers(record: lab.Record) -> tuple[str, ...]:
    """The lab's manager roles (none on a real lab: its managers are pods)."""
    return tuple(p.role for p in record.processes if p.role.startswith("manager/"))


def for_record(record: lab.Record, kind: str, node: str | None) -> Plan:
    """The plan of fault ``kind`` on ``node`` of the running lab ``record``, whichever lab it
    is (:func:`build`); on a real lab, managers-down reads the replicas to restore. Raises
    InvalidSpec as :func:`build` does, LabError if the API cannot be read."""
    nodes: Nodes = "real" if record.real_nodes else "process"
    replicas = None
    if nodes == "real" and kind == "managers-down":
        replicas = release.manager_replicas(record.kubeconfig)
    return build(record.plan, kind, node, managers=managers(record), nodes=nodes, replicas=replicas)


def inject(record: lab.Record, fault: Plan) -> Plan:
    """Apply ``fault`` to the running lab; return it stamped with the time (:attr:`Plan.at`),
    which is the plan to heal. Raises LabError naming the step that failed."""
    at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    procs.kill(record.plan.name, fault.kill)
    for root in fault.cgroups:
        kubelet.kill_cgroup_root(root)
    for target in fault.containers:
        role, _, node = target.partition("/")
        containers.kill(record.kubeconfig, role, node=node or None)
    if fault.replicas is not None:
        release.scale_managers(record.kubeconfig, 0)
    for port in fault.cables:
        netns.run(record.plan.lan_netns, ["ip", "link", "set", port, "down"])
    for table in fault.tables:
        netns.run(table.netns, ["nft", "-f", "-"], input=table.ruleset)
    for node in fault.pods:
        release.delete_speaker_pod(record.kubeconfig, node)
    return dataclasses.replace(fault, at=at)


def heal(record: lab.Record, fault: Plan) -> lab.Record:
    """Undo ``fault`` (as :func:`inject` returned it): delete its tables, plug its cables
    back, restart what it killed (once it has exited), wait for what the kubelet restarts;
    return the updated record. Raises LabError naming the step that failed, or before any
    step for a plan that waits for restarted containers but lacks the time it was applied."""
    if fault.ready and fault.at is None:
        raise netns.LabError(f"fault {fault.kind}: heal the plan inject returned (it has .at)")
    for table in fault.tables:
        netns.run(table.netns, ["nft", "delete", "table", table.family, table.name])
    for port in fault.cables:
        netns.run(record.plan.lan_netns, ["ip", "link", "set", port, "up"])
    name = record.plan.name
    for role in fault.kill:
        netns.wait_until(
            functools.partial(_exited, name, role),
            timeout=procs.STOP_GRACE,
            what=f"{role} of lab {name} to exit",
        )
        if role.partition("/")[0] in nodelab.NODE_KINDS:
            record = nodelab.restart(record, role)
        else:
            record = lab.restart(record, role)
    if fault.replicas is not None:
        release.scale_managers(record.kubeconfig, fault.replicas)
    for node in fault.ready:
        release.wait_speaker(record.kubeconfig, node, since=fault.at)
    for node in fault.pods:
        release.wait_speaker(record.kubeconfig, node)
    return record


def _exited(lab_name: str, role: str) -> bool:
    return not procs.running(lab_name, (role,))


def tables(namespace: str) -> list[str]:
    """The fault tables in ``namespace`` (``nft list tables``): none once every fault healed."""
    listing = netns.run(namespace, ["nft", "list", "tables"]).split("\n")
    return [line.split()[-1] for line in listing if TABLE_PREFIX in line]


# -- lab fault: the applied plans, kept beside the lab's record ------------------------------


def applied(record: lab.Record) -> list[Plan]:
    """The faults applied to the lab and not yet healed."""
    try:
        data = json.loads((record.directory / APPLIED).read_text())
    except FileNotFoundError:
        return []
    return [Plan.from_json(entry) for entry in data]


def apply_recorded(record: lab.Record, kind: str, node: str | None) -> Plan:
    """``lab fault``: build, inject and record fault ``kind`` on ``node``. Raises InvalidSpec if
    it is applied already or invalid, LabError if a step fails."""
    fault = for_record(record, kind, node)
    present = applied(record)
    if any((p.kind, p.node) == (fault.kind, fault.node) for p in present):
        raise errors.InvalidSpec(f"fault {kind} on {node or 'the managers'}: applied already")
    fault = inject(record, fault)
    _write(record.directory, [*present, fault])
    return fault


def heal_recorded(record: lab.Record, kind: str, node: str | None) -> Plan:
    """``lab fault --heal``: undo the recorded fault ``kind`` on ``node``. Raises InvalidSpec
    if no such fault is applied, LabError if a step fails."""
    present = applied(record)
    found = [p for p in present if (p.kind, p.node) == (kind, node)]
    if not found:
        raise errors.InvalidSpec(
            f"fault {kind} on {node or 'the managers'}: not applied (applied: "
            f"{', '.join(f'{p.kind} on {p.node}' for p in present) or 'none'})"
        )
    heal(record, found[0])
    _write(record.directory, [p for p in present if p is not found[0]])
    return found[0]


def _write(directory: Path, plans: Sequence[Plan]) -> None:
    scratch = directory / f".{APPLIED}.tmp"
    scratch.write_text(json.dumps([p.to_json() for p in plans], indent=2) + "\n")
    scratch.replace(directory / APPLIED)
