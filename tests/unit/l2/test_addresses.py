"""The raw rtnetlink reader against pyroute2's, on this process's own namespace (a dump is
read-only and needs no privilege), and its parser on hand-made messages."""

import ipaddress
import socket
import struct

import pytest

from porterlb import errors
from porterlb.l2 import addresses, interfaces
from tests import waiting


async def test_reads_what_pyroute2_reads():
    async def same():
        # Two dumps, one after the other: retried if the namespace changed in between.
        links = await interfaces.read_links()
        expected = {(a.ip, link.name) for link in links for a in link.addresses}
        return expected if set(await addresses.read()) == expected else None

    found = await waiting.eventually(same, what="both readers to read the same addresses")
    assert (ipaddress.IPv4Address("127.0.0.1"), "lo") in found


async def test_a_namespace_that_does_not_exist_is_a_transient_error():
    with pytest.raises(errors.TransientError, match="netns plb-no-such-namespace"):
        await addresses.read(netns="plb-no-such-namespace")


class Replies:
    """Stands in for the netlink socket: takes the request, returns canned receives."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.sent: list[bytes] = []

    def send(self, data: bytes, /) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int, /) -> bytes:
        return self.chunks.pop(0)


def message(kind: int, body: bytes) -> bytes:
    padded = body + bytes(-len(body) % 4)
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + padded


def attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(value), kind) + value + bytes(-len(value) % 4)


def test_dump_yields_every_part_until_done_and_parses_attributes():
    ifa = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, 7)
    local = attribute(addresses.IFA_LOCAL, ipaddress.IPv4Address("198.18.0.9").packed)
    peer = attribute(addresses.IFA_ADDRESS, ipaddress.IPv4Address("198.18.0.1").packed)
    first = message(addresses.RTM_NEWADDR, ifa + peer + local)
    sock = Replies(first + first, message(addresses.NLMSG_DONE, b"\0\0\0\0"))
    bodies = list(addresses._dump(sock, addresses.RTM_GETADDR, ifa, seq=2))
    assert len(bodies) == 2
    found = addresses._attributes(bodies[0], 8)
    assert found[addresses.IFA_LOCAL] == bytes((198, 18, 0, 9))
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", sock.sent[0])
    assert (length, kind, flags, seq) == (24, addresses.RTM_GETADDR, 0x301, 2)


def test_an_error_ends_the_dump_naming_the_code():
    sock = Replies(message(addresses.NLMSG_ERROR, struct.pack("=i", -1) + bytes(16)))
    with pytest.raises(OSError, match="error 1"):
        list(addresses._dump(sock, addresses.RTM_GETLINK, b"", seq=1))


def test_a_truncated_message_is_an_error_not_a_loop():
    sock = Replies(struct.pack("=IHHII", 8, addresses.RTM_NEWADDR, 2, 1, 0))
    with pytest.raises(OSError, match="length 8"):
        list(addresses._dump(sock, addresses.RTM_GETADDR, b"", seq=1))
