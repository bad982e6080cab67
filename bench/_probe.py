"""The measuring end of the layer-2 benchmarks: an AF_PACKET prober in the router namespace.

It sends ARP requests or neighbour solicitations at a fixed rate from the router's LAN leg and
matches every answer to its request. The match is exact without touching the asker's IP: the
request's sender MAC (ARP sender hardware address, NS source link-layer option, and the
Ethernet source, so the bridge learns it on the router's port and unicasts the answer back)
carries a slot number ``02:62:65:00:HI:LO``, and every responder sends its answer to that MAC.
Varying the asker's IP instead would give the kernel under test one neighbour entry per
request and make it stop answering at ``gc_thresh3``. Slots repeat every ``SLOTS`` requests, so
an answer is credited to the latest request of its slot sent before the answer arrived.

Timestamps: a request is stamped with ``time.time_ns()`` just before its ``send()``; an answer
with the kernel's receive time (CLOCK_REALTIME, like ``time_ns``) in a TPACKET_V3 receive ring.
The ring is read only after the sending stops, so during a measurement the prober spends CPU on
sending alone: on a small machine the speaker under test competes with it for cores. On a
shared host other processes delay the sender too, and a late sender catches up in a burst that
queues at a slow responder; ``rt`` makes the sending loop alone SCHED_FIFO (``RT_PRIORITY``).
"""

from __future__ import annotations

import array
import bisect
import contextlib
import ctypes
import dataclasses
import ipaddress
import mmap
import os
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from typing import Final

from porterlb.l2 import arp, ethernet, ndp
from porterlb.lab import netns as lab_netns

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SLOTS: Final = 1 << 16
"""Distinct asker MACs: the bridge learns each once (65,536 FDB entries at most), and a slot
comes back after 65,536 requests: 1.3 s at 50,000/s, beyond ``GRACE``."""
MAC_PREFIX: Final = bytes((0x02, 0x62, 0x65, 0x00))
"""Locally administered unicast ("be" for bench); the lab's own MACs start 02:70:6c."""

GRACE: Final = 1.0
"""Seconds to wait for answers after the last request. An answer later than this is lost for
a router anyway: Linux resends an unanswered solicitation after ``retrans_time_ms`` = 1 s."""

# include/uapi/linux/if_packet.h and socket.h.
SOL_PACKET: Final = 263
PACKET_RX_RING: Final = 5
PACKET_STATISTICS: Final = 6
PACKET_VERSION: Final = 10
TPACKET_V3: Final = 2
TP_STATUS_USER: Final = 1
SO_ATTACH_FILTER: Final = 26
SO_TIMESTAMPNS: Final = 35
"""Turns on skb receive timestamps, so the ring's time is taken as the frame enters lan0."""

RING_BLOCK: Final = 1 << 18
RING_BLOCKS: Final = 512
"""128 MiB of ring. At ~150 bytes a frame it holds ~800,000 answers, a phase's worth at any
rate; and as a block is handed over when full or after ``RING_TIMEOUT_MS``, it also holds
51 s of a slow trickle."""
RING_TIMEOUT_MS: Final = 100

_JEQ: Final = 0x15
_RET: Final = 0x06
_LD_W: Final = 0x20
_LD_H: Final = 0x28
_LD_B: Final = 0x30
ANSWER_FILTER: Final = (
    # Accept frames to one of our MACs that are ARP, or ICMPv6 type 136 (NA); drop the rest.
    (_LD_W, 0, 0, 0),
    (_JEQ, 0, 8, int.from_bytes(MAC_PREFIX, "big")),
    (_LD_H, 0, 0, 12),
    (_JEQ, 5, 0, ethernet.ETHERTYPE_ARP),
    (_JEQ, 0, 5, ethernet.ETHERTYPE_IPV6),
    (_LD_B, 0, 0, 20),
    (_JEQ, 0, 3, ndp.NEXT_HEADER_ICMPV6),
    (_LD_B, 0, 0, 54),
    (_JEQ, 0, 1, ndp.NEIGHBOR_ADVERTISEMENT),
    (_RET, 0, 0, 0xFFFF),
    (_RET, 0, 0, 0),
)


def slot_mac(slot: int) -> ethernet.MacAddress:
    return ethernet.MacAddress(MAC_PREFIX + slot.to_bytes(2, "big"))


def requests(
    targets: Sequence[IPAddress],
    *,
    sender_v4: ipaddress.IPv4Address,
    sender_v6: ipaddress.IPv6Address | None,
    slots: int = SLOTS,
) -> list[bytes]:
    """One request frame per slot; slot ``s`` asks for ``targets[s % len(targets)]``.

    IPv4 targets get a broadcast ARP request, IPv6 ones a neighbour solicitation to the
    solicited-node group: how a router resolves an address it has no entry for.
    """
    frames = []
    for slot in range(slots):
        mac = slot_mac(slot)
        target = targets[slot % len(targets)]
        if isinstance(target, ipaddress.IPv4Address):
            packet = arp.Packet(arp.REQUEST, mac, sender_v4, ethernet.ZERO, target)
            frames.append(arp.frame(ethernet.BROADCAST, packet))
        else:
            assert sender_v6 is not None
            group = ndp.solicited_node(target)
            ns = ndp.Packet(sender_v6, group, ndp.NeighborSolicitation(target, mac))
            frames.append(ndp.frame(ethernet.ipv6_multicast(group), mac, ns))
    return frames


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    rx_ns: int
    slot: int
    ip: IPAddress
    src: bytes


@dataclasses.dataclass(slots=True)
class Phase:
    """The outcome of one run of requests at a fixed rate."""

    rate: float
    sent: int
    achieved: float
    """Requests per second the sender actually reached (first to last send)."""
    answered: int
    duplicates: int
    strays: int
    """Answers from another MAC or for another IP than asked: should be 0."""
    latencies_ns: array.array[int]
    ring_drops: int
    """Answers the prober's own ring dropped: the measurement, not the responder, failed."""
    late_p99_us: float = 0.0
    late_max_us: float = 0.0
    """How late requests left against the schedule: a late prober sends a burst to catch up,
    and the answers to a burst queue at a slow responder."""

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    def percentile(self, fraction: float) -> float | None:
        """Latency percentile in microseconds (nearest rank), None if nothing was answered."""
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return None
        rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
        return ordered[rank] / 1000


class Prober:
    """A sending socket and a receive ring on one interface of the namespace it was made in."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.rt = False
        """Send each phase's requests at SCHED_FIFO priority (the receive side stays normal)."""
        self._tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._setup(ifname)
        except BaseException:
            self._rx.close()
            self._tx.close()
            raise

    def _setup(self, ifname: str) -> None:
        self._tx.bind((ifname, 0))  # protocol 0: send only, nothing is queued for reading
        self._rx.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _filter(ANSWER_FILTER))
        self._rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._rx.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame_size = 2048
        request = struct.pack(
            "7I",
            RING_BLOCK,
            RING_BLOCKS,
            frame_size,
            RING_BLOCK // frame_size * RING_BLOCKS,
            RING_TIMEOUT_MS,
            0,
            0,
        )
        self._rx.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
        self._ring = mmap.mmap(
            self._rx.fileno(),
            RING_BLOCK * RING_BLOCKS,
            mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE,
        )
        self._block = 0
        self._rx.bind((ifname, 0x0003))  # ETH_P_ALL, after the filter: nothing slips in unfiltered

    @classmethod
    def open_in(cls, netns: str, ifname: str) -> Prober:
        return lab_netns.call_in(netns, lambda: cls(ifname))

    def close(self) -> None:
        self._ring.close()
        self._rx.close()
        self._tx.close()

    def blast(
        self, frames: Sequence[bytes], *, rate: float, count: int
    ) -> tuple[array.array[int], array.array[int]]:
        """Send ``count`` requests at ``rate``/s, request i being ``frames[i % len]``.

        Returns each request's send time (``time.time_ns``) and how late it went out against
        the schedule (ns). A late sender catches up at once rather than skipping, so the count
        is exact, but its requests then arrive in a burst; it sleeps through gaps over ``SPIN``
        (``SPIN_RT`` with ``rt``) and spins through shorter ones.
        """
        send = self._tx.send
        stamp = time.time_ns
        clock = time.perf_counter_ns
        sent = array.array("q", bytes(8 * count))
        late = array.array("q", bytes(8 * count))
        interval = 1e9 / rate
        modulo = len(frames)
        spin = SPIN_RT if self.rt else SPIN
        start = clock()
        i = 0
        while i < count:
            ahead = start + int(i * interval) - clock()
            if ahead > spin:
                time.sleep((ahead - spin + SPIN_MARGIN) / 1e9)
                continue
            if ahead > 0:
                continue
            sent[i] = stamp()
            send(frames[i % modulo])
            late[i] = -ahead
            i += 1
        return sent, late

    def drain(self) -> tuple[list[Answer], int]:
        """Every answer the ring holds, in arrival order, and the ring's drop count."""
        ring = self._ring
        answers: list[Answer] = []
        while True:
            base = self._block * RING_BLOCK
            status, count, first = struct.unpack_from("III", ring, base + 8)
            if not status & TP_STATUS_USER:
                break
            offset = base + first
            for _ in range(count):
                next_offset, sec, nsec, snaplen = struct.unpack_from("IIII", ring, offset)
                mac = struct.unpack_from("H", ring, offset + 24)[0]
                frame = ring[offset + mac : offset + mac + snaplen]
                answer = _parse(sec * 1_000_000_000 + nsec, frame)
                if answer is not None:
                    answers.append(answer)
                offset += next_offset
            struct.pack_into("I", ring, base + 8, 0)  # hand the block back to the kernel
            self._block = (self._block + 1) % RING_BLOCKS
        stats = self._rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        _, drops, _ = struct.unpack("III", stats)  # reading resets them
        return answers, drops

    def run(
        self,
        frames: Sequence[bytes],
        *,
        rate: float,
        seconds: float,
        responder: ethernet.MacAddress,
        targets: Sequence[IPAddress],
    ) -> Phase:
        """Ask at ``rate`` for ``seconds``, wait ``GRACE``, and match the answers."""
        self.drain()  # strays of an earlier phase
        count = max(1, int(rate * seconds))
        with _realtime(self.rt):
            sent, late = self.blast(frames, rate=rate, count=count)
        time.sleep(GRACE + RING_TIMEOUT_MS / 1000)
        answers, drops = self.drain()
        phase = match(
            sent,
            answers,
            rate=rate,
            responder=responder,
            targets=targets,
            modulo=len(frames),
            ring_drops=drops,
        )
        ordered = sorted(late)
        phase.late_p99_us = ordered[int(0.99 * (len(ordered) - 1))] / 1000
        phase.late_max_us = ordered[-1] / 1000
        return phase


SPIN: Final = 60_000
SPIN_RT: Final = 20_000
"""Nanoseconds to the next request below which the sender spins instead of sleeping. A normal
task may wake 50 µs late (timer slack, other tasks). A SCHED_FIFO one sleeps without slack and
must not spin through a whole phase: Linux throttles real-time tasks that use more than
``sched_rt_runtime_us`` (0.95 s a second), and a throttled prober stops for 50 ms, then sends
1,000 requests at once at 20,000/s."""
SPIN_MARGIN: Final = 10_000
"""Nanoseconds before the due time at which a sleep ends, to spin the rest."""

RT_PRIORITY: Final = 10
"""SCHED_FIFO priority of the sending loop with ``rt``: as ``bench._lab.RT_PRIORITY``, above
normal tasks and below the kernel's own RT threads. Linux's RT throttling
(``sched_rt_runtime_us``, 0.95 s a second by default) still leaves other tasks a share."""


@contextlib.contextmanager
def _realtime(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    try:
        yield
    finally:
        os.sched_setscheduler(0, before[0], before[1])


def match(
    sent: array.array[int],
    answers: Sequence[Answer],
    *,
    rate: float,
    responder: ethernet.MacAddress,
    targets: Sequence[IPAddress],
    modulo: int,
    ring_drops: int = 0,
) -> Phase:
    """Credit each answer to the latest request of its slot sent before it arrived."""
    answered = bytearray(len(sent))
    latencies = array.array("q")
    duplicates = strays = 0
    deadline = sent[-1] + int(GRACE * 1e9)
    for answer in answers:
        last = bisect.bisect_right(sent, answer.rx_ns) - 1
        if answer.src != responder.octets or last < 0 or answer.rx_ns > deadline:
            strays += 1
            continue
        request = last - (last - answer.slot) % modulo
        if request < 0 or targets[request % modulo % len(targets)] != answer.ip:
            strays += 1
            continue
        if answered[request]:
            duplicates += 1
            continue
        answered[request] = 1
        latencies.append(answer.rx_ns - sent[request])
    span = (sent[-1] - sent[0]) / 1e9
    return Phase(
        rate=rate,
        sent=len(sent),
        achieved=(len(sent) - 1) / span if span > 0 else float("nan"),
        answered=len(latencies),
        duplicates=duplicates,
        strays=strays,
        latencies_ns=latencies,
        ring_drops=ring_drops,
    )


def _parse(rx_ns: int, frame: bytes) -> Answer | None:
    if len(frame) < 42 or frame[:4] != MAC_PREFIX:
        return None
    slot = int.from_bytes(frame[4:6], "big")
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ethernet.ETHERTYPE_ARP:
        if int.from_bytes(frame[20:22], "big") != arp.REPLY:
            return None
        return Answer(rx_ns, slot, ipaddress.IPv4Address(frame[28:32]), frame[6:12])
    if len(frame) >= 78 and frame[54] == ndp.NEIGHBOR_ADVERTISEMENT:
        return Answer(rx_ns, slot, ipaddress.IPv6Address(frame[62:78]), frame[6:12])
    return None


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


_programs: list[ctypes.Array[_SockFilter]] = []
"""Keeps filter programs alive: the kernel copies them, but only during setsockopt."""


def _filter(program: Sequence[tuple[int, int, int, int]]) -> bytes:
    instructions = (_SockFilter * len(program))(*(_SockFilter(*insn) for insn in program))
    _programs.append(instructions)
    return bytes(_SockFprog(len(program), instructions))
