"""Faults injected into a running lab, and healed: ``porterlb lab fault``.

Each kind is a pure :class:`Plan` (:func:`build`): the nftables table to add in the worker's
namespace, the processes to kill, the LAN cables to pull. :func:`inject` applies a plan and
:func:`heal` undoes exactly it (deletes the table, plugs the cables back, restarts what was
killed); both are thin. ``lab fault`` keeps the applied plans in the lab's state directory
(:data:`APPLIED`), so that ``--heal`` in a later command undoes what was applied, not what
today's code would apply.

The kinds (issue 9 §3), each on one worker unless said otherwise:

- ``crash``: the speaker SIGKILLed and the cable pulled (its LAN bridge port down: ``ip link set
  eth0 down`` inside the worker would also delete its default route, which the kernel does not
  restore when the link comes back); nothing tells the API server, as in ``lab demo``;
- ``speaker-kill``: the speaker SIGKILLed alone (the node and its link stay up);
- ``api-partition``: the worker's API traffic (to the router's LAN address, port 6443:
  :mod:`porterlb.lab.apiproxy`) dropped both ways, silently (``drop``, never ``reject``: no
  RST, no ICMP, as a cut cable or a dead switch port upstream would);
- ``heartbeat-partition``: UDP heartbeats dropped both ways;
- ``ping-loss``: the managers' pings dropped; pongs would pass;
- ``pong-loss``: pings arrive, the speaker's pongs are lost;
- ``node-partition``: API and heartbeats cut both ways, while the LAN (ARP, the client's
  traffic through the router) stays up: the node is cut off from the control plane only;
- ``managers-down``: every manager replica SIGKILLed (no worker);
- ``speaker-pod-delete``: in a lab where the chart installed porterlb, the worker's speaker
  pod deleted through the API, as ``kubectl delete pod`` does (SIGTERM, then its
  DaemonSet makes another); healing waits until the deleted pod is gone and the new one is
  Ready.

Every drop is silent for the sender, as a loss on the wire is: a packet is dropped where it
*arrives* (the API server's replies and the pings at the worker's input hook, the pongs at the
router's, where the managers' heartbeat socket lives), except the worker's own API requests,
dropped at its output hook, which TCP takes as a lost segment too (the SYN or segment is
retransmitted; ``connect`` and ``send`` see no error). A UDP datagram dropped at the sender's
output hook would fail its ``sendto`` with EPERM instead: a firewall's doing, not a partition.
The rules go in a table of their own per kind and worker (``porterlb_fault_<kind>`` in the
worker's namespace, ``porterlb_fault_<kind>_<worker>`` in the router's), at priority -10,
before the kube-proxy stand-in's table: a heal deletes its tables and nothing else, and two
kinds applied to one node heal independently. Every drop rule has a counter, so that a test
(or a person with ``nft list table``) sees which real packets a fault dropped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal, get_args

from porterlb import errors
from porterlb.lab import apiproxy, lab, netns, plan
from porterlb.lab import processes as procs
from porterlb.lab.node import release
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
    "node-partition": _API + _PINGS + _PONGS,
}
"""The traffic each partition kind drops in the worker's namespace."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Table:
    """One nftables table a fault adds."""

    netns: str
    name: str
    ruleset: str
    """``nft -f`` input that creates table ``inet NAME``."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one fault does to a lab; :func:`heal` undoes exactly this."""

    kind: Kind
    node: str | None
    """The worker it hits; None for ``managers-down``."""
    tables: tuple[Table, ...] = ()
    kill: tuple[str, ...] = ()
    """Roles SIGKILLed (``speaker/NODE``, ``manager/N``), restarted by the heal."""
    cables: tuple[str, ...] = ()
    """LAN bridge ports taken down, in the lab's LAN namespace."""
    pods: tuple[str, ...] = ()
    """Nodes whose speaker pod is deleted; their DaemonSet replaces it, the heal waits."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "node": self.node,
            "tables": [dataclasses.asdict(table) for table in self.tables],
            "kill": list(self.kill),
            "cables": list(self.cables),
            "pods": list(self.pods),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            kind=kind_of(data["kind"]),
            node=data["node"],
            tables=tuple(Table(**table) for table in data["tables"]),
            kill=tuple(data["kill"]),
            cables=tuple(data["cables"]),
            pods=tuple(data.get("pods", ())),
        )


def build(
    layout: plan.Lab,
    text: str,
    node: str | None,
    *,
    managers: Sequence[str],
    heartbeat_port: int = udp.DEFAULT_PORT,
) -> Plan:
    """The plan of fault ``text`` on worker ``node`` of ``layout``; ``managers`` are the lab's
    manager roles. Raises InvalidSpec for an unknown kind, a worker the lab lacks, or a node
    given to (or missing from) a kind that takes one."""
    kind = kind_of(text)
    if kind == "managers-down":
        if node is not None:
            raise errors.InvalidSpec("fault managers-down hits every manager: give no node")
        return Plan(kind="managers-down", node=None, kill=tuple(managers))
    if node is None:
        raise errors.InvalidSpec(f"fault {kind}: which node? (--node)")
    try:
        worker = layout.node(node)
    except KeyError as error:
        raise errors.InvalidSpec(f"fault {kind}: {error.args[0]}") from None
    speaker = f"speaker/{worker.name}"
    if kind == "crash":
        return Plan(kind="crash", node=node, kill=(speaker,), cables=(layout.bridge_port(worker),))
    if kind == "speaker-kill":
        return Plan(kind="speaker-kill", node=node, kill=(speaker,))
    if kind == "speaker-pod-delete":
        return Plan(kind="speaker-pod-delete", node=node, pods=(worker.name,))
    cuts = _CUTS[kind]  # every other kind is a partition
    table = TABLE_PREFIX + kind.replace("-", "_")
    tables = []
    for netns_, name, rules in (
        (worker.netns, table, _worker_rules(layout, cuts, heartbeat_port)),
        (layout.router_netns, f"{table}_{_suffix(layout, worker)}",
         _router_rules(worker, cuts, heartbeat_port)),
    ):  # fmt: skip
        if any(rules.values()):
            tables.append(Table(netns=netns_, name=name, ruleset=ruleset(name, rules)))
    return Plan(kind=kind, node=node, tables=tuple(tables))


def kind_of(text: str) -> Kind:
    """The fault kind spelled ``text``. Raises InvalidSpec for an unknown one."""
    for kind in KINDS:
        if kind == text:
            return kind
    raise errors.InvalidSpec(f"fault {text!r}: unknown kind; known: {', '.join(KINDS)}")


def _worker_rules(
    layout: plan.Lab, cuts: Sequence[str], heartbeat_port: int
) -> dict[str, list[str]]:
    """Hook -> the drop rules of ``cuts`` in the worker's namespace."""
    router = layout.router_lan.ipv4.ip
    rules: dict[str, list[str]] = {"input": [], "output": []}
    if "api" in cuts:
        rules["output"].append(f"ip daddr {router} tcp dport {apiproxy.PORT} counter drop")
        rules["input"].append(f"ip saddr {router} tcp sport {apiproxy.PORT} counter drop")
    if "pings" in cuts:  # a manager's ping comes to the speaker's heartbeat port
        rules["input"].append(f"udp dport {heartbeat_port} counter drop")
    return rules


def _router_rules(
    worker: plan.Node, cuts: Sequence[str], heartbeat_port: int
) -> dict[str, list[str]]:
    """Hook -> the drop rules of ``cuts`` in the router's namespace: the worker's pongs, which
    it sends from its heartbeat port, as they arrive."""
    rules: dict[str, list[str]] = {"input": []}
    if "pongs" in cuts:
        rules["input"].append(f"ip saddr {worker.ipv4.ip} udp sport {heartbeat_port} counter drop")
        if worker.ipv6 is not None:
            rules["input"].append(
                f"ip6 saddr {worker.ipv6.ip} udp sport {heartbeat_port} counter drop"
            )
    return rules


def _suffix(layout: plan.Lab, worker: plan.Node) -> str:
    """``w<K>``: the worker's part of a table name in the router's namespace."""
    return layout.bridge_port(worker)


def ruleset(table: str, rules: dict[str, list[str]]) -> str:
    """An ``nft -f`` script creating ``table`` (family inet) with a filter chain per hook."""
    lines = [f"table inet {table} {{"]
    for hook, hooked in rules.items():
        if hooked:
            lines.append(f"  chain {hook} {{")
            lines.append(f"    type filter hook {hook} priority {PRIORITY}; policy accept;")
            lines += [f"    {rule}" for rule in hooked]
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def managers(record: lab.Record) -> tuple[str, ...]:
    """The lab's manager roles."""
    return tuple(p.role for p in record.processes if p.role.startswith("manager/"))


def inject(record: lab.Record, fault: Plan) -> None:
    """Apply ``fault`` to the running lab. Raises LabError naming the step that failed."""
    for role in fault.kill:
        process = record.process(role)
        if procs.alive(process):
            os.kill(process.pid, signal.SIGKILL)
    for port in fault.cables:
        netns.run(record.plan.lan_netns, ["ip", "link", "set", port, "down"])
    for table in fault.tables:
        netns.run(table.netns, ["nft", "-f", "-"], input=table.ruleset)
    for node in fault.pods:
        release.delete_speaker_pod(record.kubeconfig, node)


def heal(record: lab.Record, fault: Plan) -> lab.Record:
    """Undo ``fault``: delete its table, plug its cables back, restart what it killed (once
    it has exited); return the updated record. Raises LabError naming the step that failed."""
    for table in fault.tables:
        netns.run(table.netns, ["nft", "delete", "table", "inet", table.name])
    for port in fault.cables:
        netns.run(record.plan.lan_netns, ["ip", "link", "set", port, "up"])
    for role in fault.kill:
        process = record.process(role)
        netns.wait_until(
            functools.partial(_exited, process),
            timeout=procs.STOP_GRACE,
            what=f"{role} of lab {record.plan.name} to exit",
        )
        record = lab.restart(record, role)
    for node in fault.pods:
        release.wait_speaker(record.kubeconfig, node)
    return record


def _exited(process: procs.Process) -> bool:
    return not procs.alive(process)


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
    fault = build(record.plan, kind, node, managers=managers(record))
    present = applied(record)
    if any((p.kind, p.node) == (fault.kind, fault.node) for p in present):
        raise errors.InvalidSpec(f"fault {kind} on {node or 'the managers'}: applied already")
    inject(record, fault)
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
