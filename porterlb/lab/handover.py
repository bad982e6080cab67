"""Where a failover's time goes, IP by IP: ``bench-failover``'s breakdown.

Three clocks see an IP move. The receiving speaker logs ``announcing N more IP(s)`` the moment
its announcer takes the IPs (from then on it answers for them and its gratuitous ARP / NA go
out); the router's kernel switches its neighbour entry to the new MAC when one of those
reaches it (``ip -ts monitor neigh``, :class:`Neighbours`); the sampler
(:mod:`porterlb.lab.sampler`) sees the new MAC answer its probe. The kernel only updates an
entry it holds, and a router holds one for an IP it has sent to: :func:`prime` makes the
router's kernel resolve every IP of the failing node before the fault, as a router that
forwarded traffic to each Service would have, with one datagram whose hop limit is 1 (the
node drops it at once, no backend sees it, nothing loops).

The figures are pure (:func:`steps`, :func:`breakdown`): per IP, seconds from the fault to
its speaker's update, to the kernel's switch and to the sampler's first answer; per family,
the first and last of each and the worst lag of the kernel and the sampler behind the update.
Every process reads ``CLOCK_MONOTONIC``, but the speakers' log lines and ``ip -ts`` carry wall
time, turned into monotonic time with one offset read when the stream starts.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from porterlb.lab import linestream, netns, plan, sampler

ANNOUNCING: Final = "announcing "
"""How the announcer's line about an update that brought IPs begins (``Announcer.update``)."""

SPEAKER_LOGS: Final = "nodes/*/kubelet/pod-logs/*_porterlb-speaker-*/*/*.log"
"""The speakers' container logs under a real-node lab's directory (the kubelet's
``podLogsDir``, :mod:`porterlb.lab.node.kubelet`)."""

DISCARD_PORT: Final = 9
"""RFC 863: the priming datagram's port, were it ever delivered."""

_NEIGH: Final = re.compile(
    r"^\[(?P<at>[^\]]+)\]\s+(?P<deleted>Deleted )?(?P<ip>\S+)(?: dev \S+)?"
    r"(?: lladdr (?P<mac>[0-9a-f:]{17}))?(?: router)?(?: proxy)?(?P<states>(?: [A-Z]+)+)$"
)


def wall_offset() -> float:
    """Wall-clock time minus monotonic time, now: subtract it from a wall time."""
    return time.time() - time.monotonic()


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One change of a router neighbour entry."""

    at: float
    """Monotonic time of the change."""
    ip: str
    mac: str | None
    """None when the entry lost its address (deleted, INCOMPLETE, FAILED)."""


def parse_neighbour(line: str, offset: float) -> Change | None:
    """The change an ``ip -ts monitor neigh`` line reports, or None for another line."""
    found = _NEIGH.match(" ".join(line.split()))
    if found is None:
        return None
    at = datetime.datetime.fromisoformat(found["at"]).timestamp() - offset
    mac = None if found["deleted"] or "FAILED" in found["states"] else found["mac"]
    return Change(at, str(ipaddress.ip_address(found["ip"])), mac)


def parse_update(line: str, offset: float) -> float | None:
    """Monotonic time of a speaker's ``announcing`` line in its container log (CRI format:
    ``TIME STREAM TAG {json}``), None for any other line."""
    if ANNOUNCING not in line:
        return None
    found = _record(line, offset)
    if found is None or not found[1].startswith(ANNOUNCING):
        return None
    return found[0]


def _record(line: str, offset: float) -> tuple[float, str] | None:
    """(monotonic time, message) of a speaker's container log line, None for another line."""
    parts = line.split(" ", 3)
    if len(parts) < 4:
        return None
    try:
        record = json.loads(parts[3])
        at = datetime.datetime.fromisoformat(record["time"]).timestamp() - offset
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return at, str(record.get("msg", ""))


def speaker_updates(directory: Path, offset: float) -> dict[str, list[float]]:
    """Each node's speaker updates that brought IPs, in monotonic time, from the container
    logs of lab ``directory`` (a restarted speaker's old logs included)."""
    found: dict[str, list[float]] = {}
    for path in directory.glob(SPEAKER_LOGS):
        node = path.relative_to(directory).parts[1]
        times = [t for line in _lines(path) if (t := parse_update(line, offset)) is not None]
        found.setdefault(node, []).extend(times)
    return {node: sorted(times) for node, times in found.items()}


def mentions(directory: Path, ip: str, offset: float, *, since: float) -> list[str]:
    """The speakers' log lines after ``since`` (monotonic) that name ``ip``, as
    ``node: message``, from the container logs of lab ``directory``, in time order."""
    named = re.compile(re.escape(ip) + r"(?![0-9A-Fa-f:.])")
    found = []
    for path in directory.glob(SPEAKER_LOGS):
        node = path.relative_to(directory).parts[1]
        for line in _lines(path):
            record = _record(line, offset) if named.search(line) else None
            if record is not None and record[0] >= since:
                found.append((record[0], f"{node}: {record[1]}"))
    return [text for _, text in sorted(found)]


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:  # rotated, or its pod removed, meanwhile
        return []


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One IP's move, in seconds from the fault; None where that clock never saw it."""

    ip: str
    node: str
    """The node that took it ("" if none did)."""
    update: float | None
    """Its speaker's first update after the fault."""
    kernel: float | None
    """The router's entry first holding the node's MAC."""
    answered: float | None
    """The sampler's first probe the node answered."""
    held: bool = False
    """The router's entry held the node's MAC at the end of the run: with ``kernel`` None, the
    monitor missed the switch (a netlink notification lost), the kernel did not."""


def steps(
    samples: Iterable[sampler.Sample],
    changes: Iterable[Change],
    updates: Mapping[str, Sequence[float]],
    nodes: Mapping[str, str],
    *,
    fault: float,
    old_mac: str,
    held: Mapping[str, str] | None = None,
) -> list[Step]:
    """Each sampled IP's :class:`Step`: the node is the first MAC other than ``old_mac`` that
    answered the sampler after ``fault``; ``nodes`` maps MACs to node names; ``held`` is the
    router's entries (IP -> MAC) at the end of the run."""
    found = []
    moved_changes = [c for c in changes if c.at >= fault and c.mac is not None]
    for ip, ip_samples in sorted(sampler.by_ip(samples).items()):
        after = sorted(
            (s for s in ip_samples if s.at >= fault and s.macs and old_mac not in s.macs),
            key=lambda s: s.at,
        )
        if not after:
            found.append(Step(ip, "", None, None, None))
            continue
        mac = min(after[0].macs)
        node = nodes.get(mac, mac)
        update = next((t for t in updates.get(node, ()) if t >= fault), None)
        kernel = next((c.at for c in moved_changes if c.ip == ip and c.mac == mac), None)
        found.append(
            Step(
                ip,
                node,
                _since(update, fault),
                _since(kernel, fault),
                after[0].at - fault,
                held=(held or {}).get(ip) == mac,
            )
        )
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class Unmoved:
    """An IP the sampler never saw answered by another node after the fault, and what it saw
    instead (seconds from the fault): whether the IP stayed with the old node, went silent, or
    was never asked about at all tells a lost announcement from a lost probe."""

    ip: str
    asked: int
    """Probes sent for it after the fault."""
    by_old: int
    """Of those, answered by the old node."""
    silent: int
    """Of those, answered by nobody."""
    last_asked: float | None
    last_answered: float | None
    """The last probe anyone answered."""
    alongside: frozenset[str] = frozenset()
    """MACs that answered only together with the old node's (two answers, never one)."""


def unmoved(
    samples: Iterable[sampler.Sample], ips: Iterable[str], *, fault: float, old_mac: str
) -> list[Unmoved]:
    """Each of ``ips`` that no MAC but ``old_mac`` answered after ``fault``, in order."""
    per_ip = sampler.by_ip(samples)
    found = []
    for ip in sorted(ips):
        after = [s for s in per_ip.get(ip, ()) if s.at >= fault]
        if any(s.macs and old_mac not in s.macs for s in after):
            continue
        answered = [s.at - fault for s in after if s.macs]
        found.append(
            Unmoved(
                ip,
                asked=len(after),
                by_old=len(answered),
                silent=len(after) - len(answered),
                last_asked=max((s.at - fault for s in after), default=None),
                last_answered=max(answered, default=None),
                alongside=frozenset(m for s in after for m in s.macs) - {old_mac},
            )
        )
    return found


def explain(
    found: Unmoved,
    *,
    old: str,
    placed: Sequence[str],
    router: Mapping[str, str],
    switched: Sequence[Change],
    nodes: Mapping[str, str],
) -> str:
    """One line on an IP that never moved: what the sampler saw, the nodes whose
    NodePlacement holds it now (``placed``), its row of the router's table now (``router``,
    :func:`rows`; none without one) and the changes of that entry since the fault
    (``switched``, seconds from the fault, MACs by node name); ``nodes`` maps MACs to node
    names."""
    if not found.asked:
        seen = "never probed after the fault"
    else:
        seen = (
            f"{found.asked} probes after the fault, {found.by_old} answered by {old},"
            f" {found.silent} by nobody; last probe at {_ms(found.last_asked)} ms, last answer"
            f" at {_ms(found.last_answered)} ms"
        )
    if found.alongside:
        others = ", ".join(sorted(nodes.get(mac, mac) for mac in found.alongside))
        seen += f"; {others} answered only alongside {old}"
    changes = ", ".join(f"{c.mac or 'none'} at {_ms(c.at)} ms" for c in switched) or "none"
    where = ", ".join(placed) or "no node"
    return (
        f"{found.ip} never moved: {seen}; placed on {where} now; router entry now:"
        f" {router.get(found.ip) or 'none'}; its changes after the fault: {changes}"
    )


def last_answer(samples: Iterable[sampler.Sample], mac: str, *, since: float) -> float | None:
    """Seconds from ``since`` to the last sample ``mac`` answered (for any IP): the last sign
    of life of a node that fails, so the moment the failover could start from. None if it
    answered none after ``since``."""
    answered = [s.at for s in samples if s.at >= since and mac in s.macs]
    return max(answered) - since if answered else None


def _since(at: float | None, fault: float) -> float | None:
    return None if at is None else at - fault


@dataclasses.dataclass(frozen=True, slots=True)
class Family:
    """One address family's IPs of a run, in seconds from the fault (None: unseen)."""

    family: str
    ips: int
    update: tuple[float, float] | None
    """The first and the last speaker update."""
    kernel: tuple[float, float] | None
    """The first and the last IP switched in the router's kernel."""
    answered: tuple[float, float] | None
    """The first and the last IP answered to the sampler by its new node."""
    kernel_lag: float | None
    """The largest kernel switch after its IP's speaker update."""
    answer_lag: float | None
    """The largest sampler answer after its IP's speaker update."""
    unswitched: int
    """IPs whose kernel entry never showed the new MAC, not even at the end of the run."""
    unseen: int = 0
    """IPs whose switch the monitor never reported although the entry held the new MAC at
    the end of the run: the monitor's misses, not the kernel's."""


def breakdown(found: Sequence[Step]) -> list[Family]:
    """:class:`Family` figures of ``found``, IPv4 first; families without IPs are left out."""
    families = []
    for name, version in (("IPv4", 4), ("IPv6", 6)):
        mine = [s for s in found if ipaddress.ip_address(s.ip).version == version]
        if not mine:
            continue
        families.append(
            Family(
                family=name,
                ips=len(mine),
                update=_span(s.update for s in mine),
                kernel=_span(s.kernel for s in mine),
                answered=_span(s.answered for s in mine),
                kernel_lag=_worst((s.kernel, s.update) for s in mine),
                answer_lag=_worst((s.answered, s.update) for s in mine),
                unswitched=sum(1 for s in mine if s.kernel is None and not s.held),
                unseen=sum(1 for s in mine if s.kernel is None and s.held),
            )
        )
    return families


def _span(values: Iterable[float | None]) -> tuple[float, float] | None:
    known = [v for v in values if v is not None]
    return (min(known), max(known)) if known else None


def _worst(pairs: Iterable[tuple[float | None, float | None]]) -> float | None:
    lags = [late - early for late, early in pairs if late is not None and early is not None]
    return max(lags) if lags else None


def table(families: Sequence[Family]) -> str:
    """The Markdown table of a run's breakdown, in milliseconds from the fault."""
    lines = [
        "| family | IPs | speaker update first/last | kernel switched first/last"
        " | sampler answered first/last | kernel after update, worst | answer after update,"
        " worst | never switched | switch unseen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {f.family} | {f.ips} | {_pair(f.update)} | {_pair(f.kernel)} | {_pair(f.answered)}"
        f" | {_ms(f.kernel_lag)} | {_ms(f.answer_lag)} | {f.unswitched} | {f.unseen} |"
        for f in families
    ]
    return "\n".join(lines)


def _pair(span: tuple[float, float] | None) -> str:
    return "-" if span is None else f"{_ms(span[0])} / {_ms(span[1])}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


class Neighbours(linestream.LineStream):
    """The router's neighbour entry changes on its LAN leg while the with-block runs."""

    def __init__(self, layout: plan.Lab) -> None:
        argv = [
            *netns.nsenter_prefix(layout.router_netns),
            "ip", "-ts", "monitor", "neigh", "dev", plan.ROUTER_LAN_IF,
        ]  # fmt: skip
        super().__init__(argv, name="neighbours")
        self.offset = wall_offset()
        self.changes: list[Change] = []

    def _line(self, line: str) -> None:
        change = parse_neighbour(line, self.offset)
        if change is not None:
            self.changes.append(change)


def prime(layout: plan.Lab, ips: Iterable[str]) -> None:
    """Have the router's kernel resolve each of ``ips``: one UDP datagram each from the
    router, with a hop limit of 1. Blocking: run it in a thread."""

    def send() -> None:
        for ip in ips:
            address = ipaddress.ip_address(ip)
            family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                if address.version == 4:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 1)
                sock.sendto(b"", (ip, DISCARD_PORT))

    netns.call_in(layout.router_netns, send)


def entries(layout: plan.Lab) -> dict[str, str]:
    """The router's neighbour entries on its LAN leg that hold a MAC: IP -> MAC."""
    return holding(neighbour_rows(layout))


def neighbour_rows(layout: plan.Lab) -> dict[str, str]:
    """The router's whole neighbour table on its LAN leg, read once: IP -> its raw row."""
    return rows(netns.run(layout.router_netns, ["ip", "neigh", "show", "dev", plan.ROUTER_LAN_IF]))


def rows(text: str) -> dict[str, str]:
    """The rows of an ``ip neigh show dev IF`` listing by IP (normalised): each row as printed
    (``IP lladdr MAC STATE``, ``IP FAILED``), whatever its state."""
    found = {}
    for line in text.splitlines():
        if fields := line.split():
            found[str(ipaddress.ip_address(fields[0]))] = line.strip()
    return found


def holding(table: Mapping[str, str]) -> dict[str, str]:
    """IP -> MAC of the ``table`` rows (:func:`rows`) that hold one (a FAILED row holds none)."""
    found = {}
    for ip, row in table.items():
        fields = row.split()
        if "lladdr" in fields and "FAILED" not in fields:
            found[ip] = fields[fields.index("lladdr") + 1]
    return found
