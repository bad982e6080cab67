"""Prometheus counters of the layer-2 data plane, in one place (MetalLB ``stats.go``).

The three per-IP counters keep OpenELB's and MetalLB's names (``requests_received``,
``responses_sent``, ``gratuitous_sent``, one increment per packet) under a ``porterlb_l2_``
prefix, so existing dashboards map over. ``frames`` counts every received frame by verdict, so
hostile or stray input is visible (STYLE §9). A row with an IP label exists only while this
node announces the IP: ``track`` adds it, ``forget`` drops it when the IP is released, moved
or fenced, so a scrape never shows an IP the node gave up (and the label stays bounded by
the IPs announced now, not by every IP ever announced). A count that arrives for an IP no
longer tracked (an answer decided just before the release) is dropped with it.

The per-IP counts are plain ints in one table, exposed by a collector, not
``prometheus_client.Counter`` children: a child is a Counter object with a lock and a creation
timestamp, ~530 bytes, and three of them per IP were ~16 MiB of a speaker's ~27 MiB at 10,000
IPs (bench/speaker_scale.py --trace); a row of the table is a list of a label and three ints.
Counting is an integer addition: requests and responses on the interface's answering thread,
gratuitous frames on the event loop's (each column has one writer). A scrape, on the HTTP
server's thread, reads a copy of the table (``dict.copy`` runs under the GIL in one piece).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator, Sequence
from typing import Any, Final

import prometheus_client
from prometheus_client import metrics_core, registry

FRAMES: Final = prometheus_client.Counter(
    "porterlb_l2_frames",
    "Frames received, by the responder's verdict.",
    ["interface", "verdict"],
)
CONFLICTS: Final = prometheus_client.Counter(
    "porterlb_l2_conflicts",
    "Another MAC answered a probe for, or claimed, an IP porterlb announces.",
    ["ip", "interface"],
)
NODE_ANSWERS: Final = prometheus_client.Counter(
    "porterlb_l2_node_answers",
    "Claims from another cluster node's MAC on an IP this speaker announces, past the grace"
    " of a move (one per audit round while it lasts): that node's kernel answers for it"
    " (kube-proxy in IPVS mode without strictARP).",
    ["interface", "node"],
)
SOCKET_ERRORS: Final = prometheus_client.Counter(
    "porterlb_l2_socket_errors",
    "Failures to open, read, write or join a group on a packet socket.",
    ["interface"],
)
SEND_FAILURES: Final = prometheus_client.Counter(
    "porterlb_l2_send_failures",
    "Frames (answers, gratuitous frames, probes) the packet socket refused to send, by errno "
    "name (ENOBUFS: transmit queue full; EPERM: a firewall; ENETDOWN: link down).",
    ["interface", "reason"],
)

_LABEL, _RECEIVED, _RESPONDED, _GRATUITOUS = range(4)
_per_ip: dict[bytes, list[Any]] = {}
"""``ip.packed`` -> [label, requests received, responses sent, gratuitous frames sent]."""


class _PerIp(registry.Collector):
    """One per-IP counter family, read from the shared table."""

    def __init__(self, name: str, documentation: str, column: int) -> None:
        self._name = name
        self._documentation = documentation
        self._column = column
        prometheus_client.REGISTRY.register(self)

    def describe(self) -> Iterator[metrics_core.Metric]:
        yield metrics_core.CounterMetricFamily(self._name, self._documentation, labels=["ip"])

    def collect(self) -> Iterator[metrics_core.Metric]:
        family = metrics_core.CounterMetricFamily(self._name, self._documentation, labels=["ip"])
        column = self._column
        for row in _per_ip.copy().values():
            if row[column]:
                family.add_metric([row[_LABEL]], row[column])
        yield family


REQUESTS_RECEIVED: Final = _PerIp(
    "porterlb_l2_requests_received",
    "ARP requests and neighbour solicitations received for an announced IP.",
    _RECEIVED,
)
RESPONSES_SENT: Final = _PerIp(
    "porterlb_l2_responses_sent",
    "ARP replies and neighbour advertisements sent in answer to a request.",
    _RESPONDED,
)
GRATUITOUS_SENT: Final = _PerIp(
    "porterlb_l2_gratuitous_sent",
    "Gratuitous ARP frames and unsolicited neighbour advertisements sent.",
    _GRATUITOUS,
)


def track(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, packed: bytes) -> None:
    """Start the per-IP rows of ``ip``, which this node now announces (idempotent); `packed`
    is ``ip.packed``, the caller's own key, kept rather than made again (``packed`` makes a new
    bytes object each time: 33 to 49 bytes an IP)."""
    _per_ip.setdefault(packed, [str(ip), 0, 0, 0])


def forget(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, ifname: str) -> None:
    """Drop every row labelled with ``ip`` (announced on ``ifname`` until now)."""
    _per_ip.pop(ip.packed, None)
    CONFLICTS.remove(str(ip), ifname)


def answered(sent: Sequence[bytes], unsent: Sequence[bytes]) -> None:
    """Count a batch's requests for announced IPs, by packed IP: each answered request whose
    answer was ``sent``, and each whose answer failed to go (``unsent``)."""
    for packed in set(sent):
        if row := _per_ip.get(packed):
            count = sent.count(packed)
            row[_RECEIVED] += count
            row[_RESPONDED] += count
    for packed in set(unsent):
        if row := _per_ip.get(packed):
            row[_RECEIVED] += unsent.count(packed)


def gratuitous(packed: bytes) -> None:
    """Count one gratuitous frame sent for the IP ``packed``."""
    if row := _per_ip.get(packed):
        row[_GRATUITOUS] += 1


def send_failed(ifname: str, reason: str) -> None:
    """Count one frame the socket of ``ifname`` refused to send, by errno name."""
    SOCKET_ERRORS.labels(ifname).inc()
    SEND_FAILURES.labels(ifname, reason).inc()


# The per-frame path asks for the same label children again and again; ``labels()`` costs
# several microseconds each (a lock, a tuple, a dict lookup), so the few children of
# ``FRAMES`` are cached. They live as long as the metric anyway.


@functools.cache
def frames(ifname: str, verdict: str) -> Any:
    """The ``FRAMES`` child for one interface and verdict (a handful per interface)."""
    return FRAMES.labels(ifname, verdict)
