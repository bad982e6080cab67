"""Address conflict detection: the probe sent before a first announcement, and the rules for
calling a claim on the wire a conflict.

Two nodes, or a node and a forgotten static host, answering for one IP send traffic to
whichever MAC a router heard last. porterlb looks before it leaps: before the *first*
announcement of an IP (never on failover, which must not wait) the announcer sends an RFC 5227
ARP probe or an RFC 4862 DAD solicitation and listens briefly; while it announces, any ARP or
NA that binds the IP to a foreign MAC is a conflict too. Answers from other porterlb speakers
(``peer_macs``, by node) are not conflicts: during a failover the old node may still speak for
a moment. Past :data:`PEER_GRACE`, though, no speaker of another node answers for an IP this
node announces (the fence silences it sooner), so a claim from another node's MAC is that
node's *kernel*: kube-proxy in IPVS mode without strictARP (:mod:`porterlb.l2.strictarp`).
Everything here is pure; the announcer owns the state and the clock, and reports through
injected callbacks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Final

from porterlb.l2 import arp, ethernet, ndp, responder

PROBE_TIMEOUT: Final = 0.2
"""Seconds to wait for an answer to a probe. A host on the same segment answers ARP or NS in
well under a millisecond; 200 ms also covers a busy host or switch while keeping a new
Service's first announcement quick. It is shorter than RFC 5227's 1-2 s PROBE_WAIT and RFC
4861's 1 s RetransTimer on purpose: this is a guard against obvious mistakes, not a
guarantee, and passive detection keeps watching afterwards."""

PEER_GRACE: Final = 10.0
"""Seconds after an IP is handed to this node during which another node's claim on it is the
old (or a lagging) speaker letting go, not a fault. A speaker that lost an IP stops answering
once the manager's record reaches it, and a cut-off one within its fence time (2 s by
default, ``--fence-after``; docs/fencing.md); five times that leaves room for a loaded node."""

AUDIT_INTERVAL: Final = 30.0
"""Seconds between two rounds of probes for every IP this node announces. Another node's
kernel answers the router by unicast, which this node never sees: only its answer to a probe
of ours shows it. A probe (sender 0.0.0.0, RFC 5227 §2.1.1; DAD for IPv6) updates no
neighbour cache, so a round disturbs nothing; every 30 s finds a misconfigured node within a
minute of a change."""

AUDIT_RATE: Final = 200.0
"""Most probes per second a round sends, so 10,000 IPs make 200 broadcasts a second for
50 s, not a burst of 10,000 at once that a router or switch policing the ARP it receives
might drop along with real requests."""

REPORT_INTERVAL: Final = 30.0
"""Seconds between two reports of a continuing conflict on one IP, so a host that keeps
answering does not flood the manager with Events."""


def probe(mac: ethernet.MacAddress, ip: responder.IPAddress) -> bytes:
    """The probe frame for ``ip``: an ARP probe (IPv4) or a DAD neighbour solicitation (IPv6)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return arp.probe(mac, ip)
    return ndp.dad_probe(mac, ip)


class Watch:
    """Decides which claims are conflicts, and when a continuing one is reported again."""

    def __init__(
        self,
        *,
        peer_macs: Mapping[ethernet.MacAddress, str] | None = None,
        report_interval: float,
    ) -> None:
        self._peer_macs = dict(peer_macs or {})
        self._report_interval = report_interval
        self._last_report: dict[responder.IPAddress, float] = {}

    def set_peer_macs(self, macs: Mapping[ethernet.MacAddress, str]) -> None:
        """Replace the MACs of the porterlb speakers, each with its node's name."""
        self._peer_macs = dict(macs)

    def is_foreign(self, claim: responder.Claim, own_mac: ethernet.MacAddress) -> bool:
        """True if ``claim`` binds its IP to a MAC that is neither ours nor a peer speaker's."""
        return claim.mac != own_mac and claim.mac not in self._peer_macs

    def node_of(self, claim: responder.Claim, own_mac: ethernet.MacAddress) -> str | None:
        """The node whose MAC ``claim`` comes from, if it is another porterlb node's."""
        return None if claim.mac == own_mac else self._peer_macs.get(claim.mac)

    def should_report(self, ip: responder.IPAddress, now: float) -> bool:
        """True, and remembered, if no conflict on ``ip`` was reported in the last interval."""
        last = self._last_report.get(ip)
        if last is not None and now - last < self._report_interval:
            return False
        self._last_report[ip] = now
        return True

    def forget(self, ip: responder.IPAddress) -> None:
        """Drop the report history of a released IP, so a new placement reports at once."""
        self._last_report.pop(ip, None)


def settling(created: float | None, now: float, grace: float = PEER_GRACE) -> bool:
    """True while an IP handed to this node at ``created`` (None: not yet seen by the loop)
    may still be answered for by another node's speaker (:data:`PEER_GRACE`)."""
    return created is None or now - created < grace
