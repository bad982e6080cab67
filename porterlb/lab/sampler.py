"""Who answers for each IP, every 20 ms: the overlap sampler of ``bench-failover`` and the soak.

A process of its own in the router's namespace (``python -m porterlb.lab.sampler``, started by
:class:`Sampler`) sends one broadcast ARP request per IPv4 address, and one neighbour
solicitation (to the solicited-node group) per IPv6 address, every :data:`PERIOD` from the
router's LAN leg and prints, per request, every MAC that answered it. It asks under an identity
of its own (:attr:`porterlb.lab.plan.Lab.prober_mac`, :attr:`~porterlb.lab.plan.Lab.prober_ips`,
:attr:`~porterlb.lab.plan.Lab.prober_ips_v6`), not the router's: a reply addressed to the
router would update the router's neighbour entry (Linux ``arp_process`` overrides an entry once
its ``locktime`` has passed), so asking as the router would let a second answerer steal the
traffic it is only meant to count. The sixteen sender addresses are used in turn, and an ARP
reply (an advertisement) names the requester's address, so a reply that arrives a few periods
late is still counted for the request it answers, never for a later one (which would turn a
clean handover into a false "two answers"), and a speaker slowed down by a loaded machine is
not taken for a silent one.

The figures are pure (:func:`overlap`, :func:`takeover`): a run of samples in which two or more
MACs answered lasts from its first sample to the first sample after it, and so does a run with
no answer; ``two_answer`` is the sum of the former, ``blackout`` the longest of the latter.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import Final

from porterlb import errors
from porterlb.l2 import arp, ethernet, ndp
from porterlb.lab import bpf, linestream, netns, plan

PERIOD: Final = 0.02
"""Seconds between two requests for one IP: issue 9 asks for at most 20 ms."""

ETH_P_ALL: Final = 0x0003
ETH_P_ARP: Final = 0x0806
"""include/uapi/linux/if_ether.h: every protocol (ARP and IPv6 on one socket), ARP alone."""

ANSWERS_ONLY: Final = (
    (0x28, 0, 0, 12),  # ldh [12]: the ethertype
    (0x15, 5, 0, ETH_P_ARP),  # ARP: accept
    (0x15, 0, 5, 0x86DD),  # not IPv6: drop
    (0x30, 0, 0, 20),  # ldb [20]: the IPv6 next header
    (0x15, 0, 3, 58),  # not ICMPv6: drop
    (0x30, 0, 0, 54),  # ldb [54]: the ICMPv6 type
    (0x15, 0, 1, ndp.NEIGHBOR_ADVERTISEMENT),
    (0x06, 0, 0, 0x40000),  # accept (the whole frame)
    (0x06, 0, 0, 0),  # drop
)
"""A classic BPF filter (linux/filter.h) that lets only ARP and neighbour advertisements reach
a socket bound to every protocol: the router's LAN leg also carries the speakers' API and
heartbeat traffic, which would otherwise queue in front of the answers (and, under load, make
them late or overflow the socket)."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Pending = tuple[float, dict[IPAddress, set[str]]] | None
"""One request round: when it went out, and the MACs that answered each target."""


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    at: float
    """``time.monotonic()`` when the request went out (one clock for every process)."""
    ip: str
    macs: frozenset[str]
    """The MACs that answered this request."""


@dataclasses.dataclass(frozen=True, slots=True)
class Overlap:
    two_answer: float
    """Seconds during which two or more MACs answered."""
    blackout: float
    """The longest stretch, in seconds, in which no MAC answered."""
    samples: int


def overlap(samples: Iterable[Sample], *, period: float = PERIOD) -> Overlap:
    """The figures of one IP's ``samples`` (any order). A run of alike samples lasts from its
    first sample to the next sample of another kind, or one ``period`` past its last."""
    ordered = sorted(samples, key=lambda s: s.at)
    doubles = [_span(run, ordered, period) for run in _runs(ordered, lambda s: len(s.macs) > 1)]
    return Overlap(
        sum(doubles, 0.0), max(silences(ordered, period=period), default=0.0), len(ordered)
    )


def silences(samples: Iterable[Sample], *, period: float = PERIOD) -> list[float]:
    """How long each stretch of one IP's ``samples`` with no answer lasted, in seconds."""
    ordered = sorted(samples, key=lambda s: s.at)
    return [_span(run, ordered, period) for run in _runs(ordered, lambda s: not s.macs)]


def takeover(samples: Iterable[Sample], *, since: float, old: str) -> float | None:
    """Seconds from ``since`` to the first sample answered, and not by MAC ``old``: when the
    IP had moved for the router. None if it never did."""
    moved = [s.at for s in samples if s.at >= since and s.macs and old not in s.macs]
    return min(moved) - since if moved else None


def by_ip(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    for sample in samples:
        found.setdefault(sample.ip, []).append(sample)
    return found


def _runs(ordered: Sequence[Sample], alike: Callable[[Sample], bool]) -> list[tuple[int, int]]:
    """(first, last) indexes of the maximal runs of samples for which ``alike`` holds."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for index, sample in enumerate(ordered):
        if alike(sample):
            start = index if start is None else start
        elif start is not None:
            runs.append((start, index - 1))
            start = None
    if start is not None:
        runs.append((start, len(ordered) - 1))
    return runs


def _span(run: tuple[int, int], ordered: Sequence[Sample], period: float) -> float:
    first, last = run
    end = ordered[last + 1].at if last + 1 < len(ordered) else ordered[last].at + period
    return end - ordered[first].at


class Sampler(linestream.LineStream):
    """Samples who answers for ``ips`` while the with-block runs; :attr:`samples` holds them.

    A process of its own (``nsenter`` into the router's namespace), like
    :class:`porterlb.lab.traffic.Traffic`: a thread of the caller shares its interpreter lock
    and misses its period on a busy machine. Its lines are read here by a thread.
    """

    def __init__(self, layout: plan.Lab, ips: Iterable[str], *, period: float = PERIOD) -> None:
        self.ips = tuple(ips)
        if not self.ips:
            raise errors.InvalidSpec(f"lab {layout.name}: the sampler needs at least one IP")
        sources = [arg for ip in layout.prober_ips for arg in ("--source", str(ip))]
        if any(ipaddress.ip_address(ip).version == 6 for ip in self.ips):
            if not layout.prober_ips_v6:
                raise errors.InvalidSpec(f"lab {layout.name}: IPv6 addresses to sample, no IPv6")
            sources += [arg for ip in layout.prober_ips_v6 for arg in ("--source6", str(ip))]
        argv = [
            *netns.nsenter_prefix(layout.router_netns),
            sys.executable, "-u", "-m", __name__,
            "--ifname", plan.ROUTER_LAN_IF, "--mac", str(layout.prober_mac), *sources,
            "--period", str(period), *self.ips,
        ]  # fmt: skip
        super().__init__(argv, name="sampler")
        self.period = period
        self.samples: list[Sample] = []

    def _line(self, line: str) -> None:
        at, ip, macs = line.split()
        found = frozenset() if macs == "-" else frozenset(macs.split(","))
        self.samples.append(Sample(float(at), ip, found))


def _sample(
    ifname: str,
    mac: ethernet.MacAddress,
    sources: Sequence[ipaddress.IPv4Address],
    sources6: Sequence[ipaddress.IPv6Address],
    targets: Sequence[IPAddress],
    period: float,
) -> None:
    """Ask for ``targets`` every ``period`` until SIGTERM; print one line per request once
    ``len(sources) - 1`` more periods have passed (the time a late reply has to arrive).
    ``sources6`` (as many as ``sources``, or none without IPv6 targets) ask for IPv6 ones."""
    stop: list[int] = []

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, stopping)
    open_samples: list[Pending] = [None] * len(sources)
    slots = {ip: n for n, ip in enumerate(sources)} | {ip: n for n, ip in enumerate(sources6)}
    protocol = ETH_P_ALL if sources6 else ETH_P_ARP
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(protocol)) as sock:
        if sources6:
            bpf.attach(sock, ANSWERS_ONLY)
        sock.bind((ifname, protocol))
        started = time.monotonic()
        tick = 0
        while not stop:
            slot = tick % len(sources)
            _collect(sock, mac, slots, open_samples, until=0.0, stop=stop)  # queued replies
            _print(open_samples[slot])
            now = time.monotonic()
            open_samples[slot] = (now, {target: set() for target in targets})
            for target in targets:
                sock.send(_request(mac, sources, sources6, slot, target))
            tick += 1
            if started + tick * period < now:  # starved for a whole period: skip, not burst
                started, tick = now, 1
            _collect(sock, mac, slots, open_samples, until=started + tick * period, stop=stop)
    for index in range(len(sources)):  # oldest first
        _print(open_samples[(tick + index) % len(sources)])


def _request(
    mac: ethernet.MacAddress,
    sources: Sequence[ipaddress.IPv4Address],
    sources6: Sequence[ipaddress.IPv6Address],
    slot: int,
    target: IPAddress,
) -> bytes:
    """A broadcast ARP request, or an NS to the target's solicited-node group, from ``slot``'s
    sender address (the answer is addressed to it: that is how it finds its request)."""
    if isinstance(target, ipaddress.IPv4Address):
        ask = arp.Packet(arp.REQUEST, mac, sources[slot], ethernet.ZERO, target)
        return arp.frame(ethernet.BROADCAST, ask)
    group = ndp.solicited_node(target)
    packet = ndp.Packet(sources6[slot], group, ndp.NeighborSolicitation(target, mac))
    return ndp.frame(ethernet.ipv6_multicast(group), mac, packet)


def _collect(
    sock: socket.socket,
    mac: ethernet.MacAddress,
    slots: dict[IPAddress, int],
    open_samples: list[Pending],
    *,
    until: float,
    stop: list[int],
) -> None:
    """Count the replies that arrive until ``until``, and those already queued."""
    while not stop:
        sock.settimeout(max(0.0, until - time.monotonic()))  # 0: only what is queued
        try:
            data = sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return
        reply = decode_answer(data, mac)
        if reply is None or reply[0] not in slots:
            continue
        asked, answered, by = reply
        pending = open_samples[slots[asked]]
        if pending is not None and answered in pending[1]:
            pending[1][answered].add(by)


def decode_answer(data: bytes, mac: ethernet.MacAddress) -> tuple[IPAddress, IPAddress, str] | None:
    """(the sender address asked from, the address answered for, the MAC answering) of an ARP
    reply or a neighbour advertisement addressed to ``mac``; None for any other frame."""
    try:
        frame = ethernet.decode(data)
        if frame.dst != mac:
            return None
        if frame.ethertype == ethernet.ETHERTYPE_ARP:
            packet = arp.decode(frame.payload)
            if packet.operation == arp.REPLY:
                return packet.target_ip, packet.sender_ip, str(packet.sender_mac)
        elif frame.ethertype == ethernet.ETHERTYPE_IPV6:
            if ndp.icmp_type(frame.payload) != ndp.NEIGHBOR_ADVERTISEMENT:
                return None
            found = ndp.decode(frame.payload)
            if isinstance(found.message, ndp.NeighborAdvertisement):
                by = found.message.target_mac or frame.src
                return found.dst, found.message.target, str(by)
    except errors.MalformedFrame:
        return None
    return None


def _print(pending: Pending) -> None:
    if pending is None:
        return
    at, answers = pending
    for ip, macs in answers.items():
        print(f"{at:.6f} {ip} {','.join(sorted(macs)) or '-'}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="who answers ARP/NDP for IPs, every PERIOD")
    parser.add_argument("--ifname", required=True)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--source", type=ipaddress.IPv4Address, action="append", required=True)
    parser.add_argument("--source6", type=ipaddress.IPv6Address, action="append", default=[])
    parser.add_argument("--period", type=float, default=PERIOD)
    parser.add_argument("targets", type=ipaddress.ip_address, nargs="+")
    args = parser.parse_args(argv)
    if args.source6 and len(args.source6) != len(args.source):
        parser.error("give as many --source6 as --source")
    if not args.source6 and any(t.version == 6 for t in args.targets):
        parser.error("IPv6 targets need --source6")
    mac = ethernet.MacAddress.parse(args.mac)
    _sample(args.ifname, mac, args.source, args.source6, args.targets, args.period)
    return 0


if __name__ == "__main__":
    sys.exit(main())
