"""Where the router sends each IP's traffic: the MAC of every frame it forwards to the IP.

A client's request follows the router's neighbour entry at the instant the router forwards its
packets, not at the instant the client sent it: on a loaded machine a packet can wait in one
CPU's backlog while a later one, and the new node's gratuitous ARP, pass on another. So which
node a connection was opened through is read here, from the router itself. A process of its
own in the router's namespace (``python -m porterlb.lab.forwarding``, started by
:class:`Forwarding`) reads the frames the router's LAN leg sends (a packet socket sees them as
``PACKET_OUTGOING``; a filter passes only those, cut to their headers) and prints a line for
each frame to an IP asked about that goes to another MAC than the IP's previous frame, and for
each frame that opens a connection (a SYN), with the client's port: the port names the request
(:attr:`porterlb.lab.traffic.Request.port`).

The record is read by pure functions (:func:`hops`, :func:`opened_via`): the router's hops for
one IP are the MACs its frames went to, in order (a move that never flips back has exactly
two), and a request was opened through the MAC of its SYN. :mod:`porterlb.lab.moves` judges
which failed requests a move explains.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Final, Self

from porterlb import errors
from porterlb.l2 import afpacket, ethernet
from porterlb.lab import bpf, linestream, netns, plan, traffic

ETH_P_ALL: Final = 0x0003
PACKET_OUTGOING: Final = 4
"""include/uapi/linux/if_ether.h, include/uapi/linux/if_packet.h."""

HEADERS: Final = 96
"""Bytes kept of a frame: Ethernet, IPv6 and the TCP header's ports and flags fit."""

OUTGOING_ONLY: Final[Sequence[bpf.Instruction]] = (
    (0x20, 0, 0, 0xFFFFF004),  # ld the packet type (SKF_AD_OFF + SKF_AD_PKTTYPE)
    (0x15, 0, 1, PACKET_OUTGOING),
    (0x06, 0, 0, HEADERS),  # accept the headers
    (0x06, 0, 0, 0),  # drop
)
"""Frames the router sends, cut to :data:`HEADERS`: those it receives, the nodes' heartbeats
and answers among them, never queue in front."""

ETHERTYPE_IPV4: Final = 0x0800
TCP: Final = 6
SYN: Final = 0x02
ACK: Final = 0x10

READY: Final = "ready"
"""What the process prints once it reads the router's frames."""

READY_TIMEOUT: Final = 60.0
"""Seconds the process may take to start: an interpreter and its imports, on two loaded
cores."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    at: float
    """``time.monotonic()`` when the process read it: no earlier than the router sent it."""
    ip: str
    mac: str
    """Where the router sent it."""
    port: int
    """The client's port of a connection's first SYN; 0 for any other frame (a ``move``)."""


def parse_frame(data: bytes) -> tuple[IPAddress, str, int] | None:
    """(destination IP, destination MAC, client port if it opens a TCP connection else 0) of
    an IPv4 or IPv6 frame; None for any other."""
    if len(data) < ethernet.HEADER_LEN + 20:
        return None
    ethertype = struct.unpack_from("!H", data, 12)[0]
    mac = str(ethernet.MacAddress(data[:6]))
    offset = ethernet.HEADER_LEN
    if ethertype == ETHERTYPE_IPV4:
        ip: IPAddress = ipaddress.IPv4Address(data[offset + 16 : offset + 20])
        protocol, transport = data[offset + 9], offset + (data[offset] & 0x0F) * 4
    elif ethertype == ethernet.ETHERTYPE_IPV6 and len(data) >= offset + 40:
        ip = ipaddress.IPv6Address(data[offset + 24 : offset + 40])
        protocol, transport = data[offset + 6], offset + 40
    else:
        return None
    if protocol != TCP or len(data) < transport + 14:
        return ip, mac, 0
    flags = data[transport + 13]
    opens = flags & SYN and not flags & ACK
    return ip, mac, struct.unpack_from("!H", data, transport)[0] if opens else 0


def hops(frames: Iterable[Frame], ip: str) -> list[Frame]:
    """The frames at which the router began sending ``ip``'s traffic to another MAC (the
    first frame included), in order."""
    found: list[Frame] = []
    for frame in sorted(frames, key=lambda f: f.at):
        if frame.ip == ip and (not found or found[-1].mac != frame.mac):
            found.append(frame)
    return found


def opened_via(
    frames: Iterable[Frame], ip: str, requests: Iterable[traffic.Request]
) -> dict[traffic.Request, Frame]:
    """The frame of each request's first SYN, which names the MAC the router sent it to
    (requests whose SYN it did not see, or whose port is unknown, are absent): the first SYN
    to ``ip`` from the request's port read no earlier than the request was sent."""
    syns: dict[int, list[Frame]] = {}
    for frame in sorted(frames, key=lambda f: f.at):
        if frame.ip == ip and frame.port:
            syns.setdefault(frame.port, []).append(frame)
    found: dict[traffic.Request, Frame] = {}
    for request in requests:
        seen = next((f for f in syns.get(request.port, ()) if f.at >= request.sent), None)
        if request.port and seen is not None:
            found[request] = seen
    return found


class Forwarding(linestream.LineStream):
    """Records where the router sends ``ips``' traffic while the with-block runs;
    :attr:`frames` holds it. A process of its own, like :class:`porterlb.lab.sampler.Sampler`;
    entering the block returns once it reads the router's frames (a Python process takes
    seconds to start on a loaded machine, and a record that missed the first hop would judge
    nothing). Raises LabError if it does not within :data:`READY_TIMEOUT`.
    """

    def __init__(self, layout: plan.Lab, ips: Iterable[str]) -> None:
        self.ips = tuple(ips)
        if not self.ips:
            raise errors.InvalidSpec(f"lab {layout.name}: no IP to follow the traffic of")
        argv = [
            *netns.nsenter_prefix(layout.router_netns),
            sys.executable, "-u", "-m", __name__, "--ifname", plan.ROUTER_LAN_IF, *self.ips,
        ]  # fmt: skip
        super().__init__(argv, name="forwarding")
        self.lab = layout.name
        self.frames: list[Frame] = []
        self._ready = threading.Event()

    def __enter__(self) -> Self:
        super().__enter__()
        if not self._ready.wait(READY_TIMEOUT):
            self.__exit__(None, None, None)
            raise netns.LabError(
                f"lab {self.lab}: the router's forwarding record did not start within"
                f" {READY_TIMEOUT:.0f} s"
            )
        return self

    def _line(self, line: str) -> None:
        if line.strip() == READY:
            self._ready.set()
            return
        at, ip, mac, port = line.split()
        self.frames.append(Frame(float(at), ip, mac, int(port)))


def _follow(ifname: str, targets: Sequence[IPAddress]) -> None:
    """Print the ``move`` and ``syn`` frames to ``targets`` the router sends out of
    ``ifname`` until SIGTERM."""
    stop: list[int] = []

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, stopping)
    last: dict[IPAddress, str] = {}
    wanted = set(targets)
    # Protocol 0 until bound: a socket opened for every protocol would queue frames of every
    # interface, unfiltered, until the filter and the bind below.
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
        bpf.attach(sock, OUTGOING_ONLY)
        # Room for seconds of frames: a SYN dropped while this process waits for a CPU would
        # judge its request a real loss (porterlb.lab.moves). Root, so past rmem_max.
        sock.setsockopt(socket.SOL_SOCKET, afpacket.SO_RCVBUFFORCE, afpacket.RCVBUF)
        sock.bind((ifname, ETH_P_ALL))
        sock.settimeout(0.2)  # to see SIGTERM
        print(READY, flush=True)
        while not stop:
            try:
                data = sock.recv(HEADERS)
            except TimeoutError:
                continue
            at = time.monotonic()
            found = parse_frame(data)
            if found is None or found[0] not in wanted:
                continue
            ip, mac, port = found
            if last.get(ip) != mac or port:
                last[ip] = mac
                print(f"{at:.6f} {ip} {mac} {port}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print where the router sends IPs' traffic")
    parser.add_argument("--ifname", required=True)
    parser.add_argument("targets", type=ipaddress.ip_address, nargs="+")
    args = parser.parse_args(argv)
    _follow(args.ifname, args.targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
