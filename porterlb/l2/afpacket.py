"""``AfPacketConn``: the real PacketConn, and the only module that opens an AF_PACKET socket.

One SOCK_RAW socket per interface, bound to it with ETH_P_ALL, carries both ARP and NDP: at the
link layer porterlb also sees unicast NUD probes for addresses no interface holds, which a raw
ICMPv6 socket never does (MetalLB #2920). A classic BPF filter is attached before the socket is
bound, so only untagged ARP and bare ICMPv6 NS/NA ever reach Python (not frames of a VLAN
on top of the interface, see ``FILTER``), and ``PACKET_IGNORE_OUTGOING``
hides our own transmissions. Solicited-node groups are joined with ``PACKET_ADD_MEMBERSHIP``,
refcounted because several VIPs share a group; past ``MAX_GROUPS`` the socket asks for all
multicast instead. The socket's OSErrors are wrapped here, with the interface name in the
message.

Received frames are answered on a reader thread of the conn's own (``serve``): it waits in
``poll`` on the socket (and on an eventfd that ``close`` signals), drains what is queued with
``recv``, and hands the batch to the answer function, which replies with ``transmit``: a plain
``send`` on the same thread. Awaiting each frame on the event
loop cost a wakeup, a future and a task switch per frame, ~3/4 of the speaker's CPU per frame
at 20,000 requests a second, and made every answer wait for whatever else the loop was doing
(bench/l2_answers.py). The thread holds the GIL only while it decides. ``send`` (the loop's
bursts and probes) writes at once and waits for room only when the socket says it has none.
The receive buffer is raised to ``RCVBUF`` so that a pause of the speaker (a GC pass, a burst
round, a preempted CPU) queues requests instead of dropping them.

While the reader runs, it owns the socket's end: ``close`` stops the loop's use at once and
signals the thread, which closes the socket after its last ``recv``, so that no thread ever
reads a descriptor number that was closed and reused.

An AF_PACKET socket belongs to the network namespace it was created in, so ``open(netns=...)``
sets it up through ``porterlb.l2.namespaces``: the lab runs speakers in the host namespace that
serve a worker's interface.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import errno
import functools
import ipaddress
import os
import select
import socket
import struct
import threading
from typing import Final

from porterlb import errors, health
from porterlb.l2 import conn, ethernet, namespaces, ndp

# Constants Python 3.11's socket module lacks.
SOL_PACKET: Final = 263
"""include/linux/socket.h."""
PACKET_ADD_MEMBERSHIP: Final = 1
PACKET_DROP_MEMBERSHIP: Final = 2
PACKET_MR_MULTICAST: Final = 0
PACKET_MR_ALLMULTI: Final = 2
PACKET_IGNORE_OUTGOING: Final = 23
"""include/uapi/linux/if_packet.h (PACKET_IGNORE_OUTGOING since Linux 4.20)."""
SO_ATTACH_FILTER: Final = 26
"""include/uapi/asm-generic/socket.h."""
ETH_P_ALL: Final = 0x0003
"""include/uapi/linux/if_ether.h: every protocol; the BPF filter narrows it."""
ARPHRD_ETHER: Final = 1
"""include/uapi/linux/if_arp.h: the only link type the codecs speak."""

SO_RCVBUFFORCE: Final = 33
"""include/uapi/asm-generic/socket.h: SO_RCVBUF past ``net.core.rmem_max``, with CAP_NET_ADMIN."""

READER_BEAT: Final = 1000
"""Milliseconds a reader thread waits in ``poll`` before it wakes anyway, so that its
liveness stamp stays fresh on a quiet link: one wake-up a second, no cost per frame."""

RECV_SIZE: Final = 2048
"""Bytes read per frame. ARP and ND frames are under 100 bytes; a longer one is cut, and a cut
NS fails its length check as malformed. ``recv`` of a fresh 2 KiB buffer costs less than
``recv_into`` a reused one and copying the frame out of it (0.9 vs 1.9 µs per frame), and a
9 KiB one (jumbo frames) more (1.3 µs)."""

MAX_GROUPS: Final = 1024
"""Solicited-node groups joined one by one; past this the socket asks for all multicast
instead, and back under half of it joins them one by one again. The kernel keeps a socket's
and a device's groups in lists, so joining 10,000 took 0.87 s in which the speaker's loop
stood still (bench/speaker_scale.py, v6 row, "lag max ms"); NICs' multicast filters hold far
fewer (hundreds to a few thousand) and their drivers fall back to all-multicast anyway. The
solicitations for other hosts this lets in cost a fast-path verdict each."""

RCVBUF: Final = 4 << 20
"""Bytes of receive buffer asked for (the kernel doubles it for its bookkeeping). A queued
60-byte frame costs ~1 KiB of it (skb truesize), so 4 MiB hold ~4,000-8,000 requests: over
80 ms at 50,000/s, issue 3's lossless target, where the default ``rmem_default`` of 208 KiB
held ~4 ms (bench/l2_answers.py counted socket drops with it). Without CAP_NET_ADMIN the
plain SO_RCVBUF is capped at ``net.core.rmem_max``."""

# Classic BPF opcodes (include/uapi/linux/bpf_common.h): class | size | mode (| op | source).
_LD_ABS: Final = 0x00 | 0x00 | 0x20
_LDH_ABS: Final = 0x00 | 0x08 | 0x20
_LDB_ABS: Final = 0x00 | 0x10 | 0x20
_JEQ_K: Final = 0x05 | 0x10 | 0x00
_JSET_K: Final = 0x05 | 0x40 | 0x00
_RET_K: Final = 0x06 | 0x00

SKF_AD_OFF: Final = -0x1000
SKF_AD_VLAN_TAG: Final = 44
SKF_AD_VLAN_TAG_PRESENT: Final = 48
"""include/uapi/linux/filter.h: loads at SKF_AD_OFF + n read the frame's metadata, not its
bytes; these give the 802.1Q tag the kernel took out of the frame, and whether there was one."""

VLAN_VID_MASK: Final = 0x0FFF
"""The VLAN ID bits of a tag control information (IEEE 802.1Q clause 9.6)."""

_ETHERTYPE_AT: Final = 12
_NEXT_HEADER_AT: Final = ethernet.HEADER_LEN + 6
_ICMP_TYPE_AT: Final = ethernet.HEADER_LEN + ndp.IPV6_HEADER_LEN
_AD: Final = 1 << 32
"""Offsets are unsigned 32-bit in ``struct sock_filter``: SKF_AD_OFF + n wraps to this + that."""

FILTER: Final[tuple[tuple[int, int, int, int], ...]] = (
    # (code, jump if true, jump if false, k); jumps count instructions after the next one.
    (_LD_ABS, 0, 0, _AD + SKF_AD_OFF + SKF_AD_VLAN_TAG_PRESENT),
    (_JEQ_K, 2, 0, 0),  # untagged -> the EtherType
    (_LD_ABS, 0, 0, _AD + SKF_AD_OFF + SKF_AD_VLAN_TAG),
    (_JSET_K, 9, 0, VLAN_VID_MASK),  # -> drop; VLAN ID 0 (priority tag only) is untagged
    (_LDH_ABS, 0, 0, _ETHERTYPE_AT),
    (_JEQ_K, 6, 0, ethernet.ETHERTYPE_ARP),  # -> accept
    (_JEQ_K, 0, 6, ethernet.ETHERTYPE_IPV6),  # -> drop
    (_LDB_ABS, 0, 0, _NEXT_HEADER_AT),
    (_JEQ_K, 0, 4, ndp.NEXT_HEADER_ICMPV6),  # -> drop (extension headers too)
    (_LDB_ABS, 0, 0, _ICMP_TYPE_AT),
    (_JEQ_K, 1, 0, ndp.NEIGHBOR_SOLICITATION),  # -> accept
    (_JEQ_K, 0, 1, ndp.NEIGHBOR_ADVERTISEMENT),  # -> drop
    (_RET_K, 0, 0, 0x40000),  # accept: up to 256 KiB of the frame
    (_RET_K, 0, 0, 0),  # drop
)
"""Accept untagged ARP, and untagged IPv6 whose next header is ICMPv6 with type NS or NA; drop
everything else. ARP replies and NAs pass too: they are how another host claims an IP
(conflict detection).

A frame of VLAN 10 reaches a packet socket on the parent interface too, with its tag moved
into metadata (``skb_vlan_untag``, before the taps in ``__netif_receive_skb_core``,
net/core/dev.c), so its bytes look untagged. It is not addressed to this interface's subnet:
answering would bind the IP to our MAC in a VLAN we do not serve, with an untagged reply the
asker may never see, and its claims are another broadcast domain's business. The kernel
itself marks such a frame PACKET_OTHERHOST when no VLAN device takes it, and handles a
priority tag (VLAN ID 0) as untagged; the filter does the same. A pool on a VLAN is served
on the VLAN's own interface, where frames arrive untagged."""


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


class AfPacketConn:
    """A PacketConn over an AF_PACKET socket bound to one interface; build it with ``open``."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        ifname: str,
        ifindex: int,
        mac: ethernet.MacAddress,
    ) -> None:
        self._sock = sock
        self._ifname = ifname
        self._ifindex = ifindex
        self._mac = mac
        self._groups: collections.Counter[ethernet.MacAddress] = collections.Counter()
        """Joins wanted, by group MAC."""
        self._joined: set[ethernet.MacAddress] = set()
        """Groups the socket holds a membership of."""
        self._allmulti = False
        """The socket asked for every multicast frame: more than MAX_GROUPS were wanted."""
        self._closed = False
        """No more use from the loop; the socket itself may still be the reader's."""
        self._lock = threading.Lock()
        """Guards who closes the socket: ``close`` or the reader thread as it ends."""
        self._stop: int | None = None
        """An eventfd, while a reader thread runs: written to wake it out of ``poll`` to end."""
        self.ran = health.Stamp()
        """When the reader thread last woke (at least every :data:`READER_BEAT` ms); None
        while no reader runs. The liveness probe reads it."""

    @classmethod
    async def open(cls, ifname: str, *, netns: str | None = None) -> AfPacketConn:
        """Open a socket on ``ifname``, in the named namespace (or path) ``netns`` if given.

        Raises InvalidSpec if the interface does not exist or is not Ethernet, and
        TransientError for any other OSError (e.g. missing CAP_NET_RAW).
        """
        try:
            return await namespaces.call(netns, functools.partial(_open, ifname))
        except OSError as exc:
            raise _wrap(ifname, "cannot open an AF_PACKET socket", exc) from exc

    @property
    def ifname(self) -> str:
        return self._ifname

    @property
    def mac(self) -> ethernet.MacAddress:
        return self._mac

    async def serve(self, answer: conn.Answer) -> None:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._closed:
                return
            if self._stop is not None:
                raise RuntimeError(f"interface {self._ifname}: already served")
            self._stop = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        thread = threading.Thread(
            target=self._read,
            args=(answer, loop, ended),
            name=f"porterlb/l2/{self._ifname}",
            daemon=True,
        )
        thread.start()
        try:
            await ended
        finally:
            self._stop_reading()  # if cancelled: the thread must not outlive its caller

    def _read(
        self, answer: conn.Answer, loop: asyncio.AbstractEventLoop, ended: asyncio.Future[None]
    ) -> None:
        """The reader thread: answer every batch until stopped or failing; report to ``ended``."""
        outcome: BaseException | None = None
        try:
            self._answer_until_stopped(answer)
        except BaseException as exc:  # re-raised by ``serve``, on the loop
            outcome = exc
        finally:
            self._reader_ended()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, ended, outcome)

    def _answer_until_stopped(self, answer: conn.Answer) -> None:
        stop, batch = self._stop, conn.BATCH
        assert stop is not None
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(stop, select.POLLIN)
        recv = self._sock.recv
        while True:
            ready = poller.poll(READER_BEAT)
            self.ran.mark()
            if any(fd == stop for fd, _ in ready):
                return
            frames: list[bytes] = []
            try:
                for _ in range(batch):
                    frames.append(recv(RECV_SIZE))
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                if frames:
                    answer(frames)
                raise _wrap(self._ifname, "receive failed", exc) from exc
            if frames:
                answer(frames)
            if len(frames) == batch:
                # More are likely queued: let the loop's thread have the CPU and the GIL first,
                # or a flood would keep it from its watches and fencing (under SCHED_FIFO on
                # one CPU, nothing else would preempt this thread at all).
                os.sched_yield()

    def _reader_ended(self) -> None:
        self.ran.last = None
        with self._lock:
            if self._stop is not None:
                os.close(self._stop)
                self._stop = None
            closed = self._closed
        if closed:
            self._sock.close()

    def transmit(self, frame: bytes) -> None:
        try:
            self._sock.send(frame)
        except OSError as exc:
            raise _wrap(self._ifname, "send failed", exc) from exc

    async def send(self, frame: bytes) -> None:
        if self._closed:
            raise errors.TransientError(f"interface {self._ifname}: connection is closed")
        try:
            try:
                self._sock.send(frame)
            except (BlockingIOError, InterruptedError):
                await asyncio.get_running_loop().sock_sendall(self._sock, frame)
        except OSError as exc:
            raise _wrap(self._ifname, "send failed", exc) from exc

    def join(self, ip: ipaddress.IPv6Address) -> None:
        group = ethernet.ipv6_multicast(ndp.solicited_node(ip))
        self._groups[group] += 1
        if self._groups[group] > 1 or self._allmulti:
            return
        if len(self._groups) > MAX_GROUPS:
            self._membership(PACKET_ADD_MEMBERSHIP, None)
            self._allmulti = True
        else:
            self._membership(PACKET_ADD_MEMBERSHIP, group)
            self._joined.add(group)

    def leave(self, ip: ipaddress.IPv6Address) -> None:
        group = ethernet.ipv6_multicast(ndp.solicited_node(ip))
        if self._groups[group] == 0:
            return
        self._groups[group] -= 1
        if self._groups[group] == 0:
            del self._groups[group]
            if group in self._joined:
                self._joined.discard(group)
                self._membership(PACKET_DROP_MEMBERSHIP, group)
        if self._allmulti and len(self._groups) <= MAX_GROUPS // 2:
            for wanted in list(self._groups):
                if wanted not in self._joined:
                    self._membership(PACKET_ADD_MEMBERSHIP, wanted)
                    self._joined.add(wanted)
            self._membership(PACKET_DROP_MEMBERSHIP, None)
            self._allmulti = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            reading = self._stop is not None
        if reading:
            self._stop_reading()  # and the reader thread closes the socket as it ends
        else:
            self._sock.close()  # no reader can start any more: ``serve`` sees ``_closed``

    def _stop_reading(self) -> None:
        """Wake the reader thread to end; under the lock, since the thread closes the eventfd."""
        with self._lock:
            if self._stop is not None:
                os.eventfd_write(self._stop, 1)

    def _membership(self, option: int, group: ethernet.MacAddress | None) -> None:
        """Add or drop one group, or all-multicast reception if ``group`` is None."""
        # struct packet_mreq {int mr_ifindex; unsigned short mr_type, mr_alen;
        #                     unsigned char mr_address[8];} (include/uapi/linux/if_packet.h)
        if group is None:
            mreq = struct.pack("iHH8s", self._ifindex, PACKET_MR_ALLMULTI, 0, b"")
        else:
            mreq = struct.pack("iHH8s", self._ifindex, PACKET_MR_MULTICAST, 6, group.octets)
        try:
            self._sock.setsockopt(SOL_PACKET, option, mreq)
        except OSError as exc:
            what = "all-multicast reception" if group is None else f"membership of {group}"
            raise _wrap(self._ifname, f"cannot change {what}", exc) from exc


def _open(ifname: str) -> AfPacketConn:
    program = (_SockFilter * len(FILTER))(*(_SockFilter(*insn) for insn in FILTER))
    fprog = _SockFprog(len(FILTER), program)
    # Protocol 0 receives nothing until bind(), so no frame slips in before the filter.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        _grow_receive_buffer(sock)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
        ifindex = socket.if_nametoindex(ifname)
        _, _, _, hatype, address = sock.getsockname()
        if hatype != ARPHRD_ETHER or len(address) != 6:
            raise OSError(errno.EPROTONOSUPPORT, f"link type {hatype} is not Ethernet")
    except BaseException:
        sock.close()
        raise
    mac = ethernet.MacAddress(address)
    return AfPacketConn(sock, ifname=ifname, ifindex=ifindex, mac=mac)


def _grow_receive_buffer(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)


def _wrap(ifname: str, action: str, exc: OSError) -> errors.PorterlbError:
    message = f"interface {ifname}: {action}: {exc.strerror or exc}"
    if exc.errno in (errno.ENODEV, errno.ENXIO, errno.EPROTONOSUPPORT):
        return errors.InvalidSpec(message)
    return errors.TransientError(message)


def _settle(ended: asyncio.Future[None], outcome: BaseException | None) -> None:
    if ended.done():
        return
    if outcome is None:
        ended.set_result(None)
    else:
        ended.set_exception(outcome)
