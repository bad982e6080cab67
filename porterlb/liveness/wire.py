"""The heartbeat datagram: a signed ping from a manager and the speaker's signed pong.

Sans-I/O: bytes in, a frozen :class:`Heartbeat` out, and back. Every datagram carries an
HMAC-SHA256 tag over all bytes before it, keyed with the cluster's heartbeat Secret, so no
host on the LAN can forge one. Replay and staleness are judged by the receivers
(:mod:`porterlb.liveness.tracker`, :mod:`porterlb.liveness.guard`): the codec gives them
the session, sequence number and send time they need. Layout (network byte order)::

    0  magic "PLBH"    4  version   5  kind   6  node-name length   7  pool count
    8  session (8 bytes, random per sender)
    16 sequence (u64)   24 sent, ns since the Unix epoch by the pinger's clock (u64)
    32 node name (UTF-8, 1..253 bytes: a DNS subdomain, the Node name's limit)
    .. pool count times: length (1 byte), pool name (UTF-8, 1..253 bytes)
    .. HMAC-SHA256 tag (32 bytes) over everything before it

A pong echoes the ping's session, sequence and send time, so the pinger matches it to what it
sent without keeping the speaker's clock in the picture, and names the pools whose interface
the node lacks (at most :data:`MAX_POOLS`), so the leader places none of their IPs there.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import struct
from typing import Final

from porterlb import errors

MAGIC: Final = b"PLBH"
VERSION: Final = 1

HEADER: Final = struct.Struct("!4sBBBB8sQQ")
"""magic, version, kind, node-name length, pool count, session, sequence, sent (ns)."""

TAG_LEN: Final = hashlib.sha256().digest_size
SESSION_LEN: Final = 8
MAX_NODE_NAME: Final = 253
"""A Node name is a DNS subdomain (RFC 1123): at most 253 characters."""

MIN_KEY_LEN: Final = 16
"""RFC 2104 §3: a key shorter than the hash output (32 bytes) weakens HMAC; 16 is the floor
that still rules out a typo'd or empty Secret."""

MAX_POOLS: Final = 16
"""Pools a pong may name: a node lacking the interface of more is misconfigured anyway, and
16 names keep the datagram within a few kilobytes."""

MAX_LEN: Final = HEADER.size + MAX_NODE_NAME + MAX_POOLS * (1 + MAX_NODE_NAME) + TAG_LEN


class Kind(enum.IntEnum):
    PING = 1
    PONG = 2


class BadSignature(errors.PorterlbError):
    """A datagram whose tag does not match its bytes under our key: forged or damaged."""


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    """One ping (manager to speaker) or pong (speaker to manager)."""

    kind: Kind
    session: bytes
    sequence: int
    sent_ns: int
    node: str
    """The speaker's Node: the one pinged, or the one answering."""
    pools: tuple[str, ...] = ()
    """A pong's pools whose interface the node lacks; a ping names none."""

    def answer(self, pools: tuple[str, ...] = ()) -> Heartbeat:
        """The pong to this ping, naming `pools` (at most :data:`MAX_POOLS` are sent)."""
        return dataclasses.replace(self, kind=Kind.PONG, pools=pools[:MAX_POOLS])


def encode(heartbeat: Heartbeat, key: bytes) -> bytes:
    """The signed datagram for `heartbeat`. Raises ValueError for a value that cannot be sent."""
    name = heartbeat.node.encode()
    if not 1 <= len(name) <= MAX_NODE_NAME:
        raise ValueError(f"node name {heartbeat.node!r}: must be 1..{MAX_NODE_NAME} bytes")
    if len(heartbeat.session) != SESSION_LEN:
        raise ValueError(f"session must be {SESSION_LEN} bytes, got {len(heartbeat.session)}")
    if len(heartbeat.pools) > MAX_POOLS:
        raise ValueError(f"{len(heartbeat.pools)} pools: at most {MAX_POOLS} fit")
    body = HEADER.pack(
        MAGIC,
        VERSION,
        heartbeat.kind,
        len(name),
        len(heartbeat.pools),
        heartbeat.session,
        heartbeat.sequence,
        heartbeat.sent_ns,
    )
    body += name
    for pool in heartbeat.pools:
        encoded = pool.encode()
        if not 1 <= len(encoded) <= MAX_NODE_NAME:
            raise ValueError(f"pool name {pool!r}: must be 1..{MAX_NODE_NAME} bytes")
        body += bytes((len(encoded),)) + encoded
    return body + _tag(body, key)


def decode(data: bytes, key: bytes) -> Heartbeat:
    """The heartbeat in `data`, checked against `key`.

    Raises MalformedFrame (naming field and offset) for bytes that are not a heartbeat, and
    BadSignature for a well-formed datagram not signed with `key`.
    """
    _, _, kind, name_len, pool_count, session, sequence, sent_ns = _header(data)
    body_len = len(data) - TAG_LEN
    if pool_count > MAX_POOLS:
        raise errors.MalformedFrame(
            f"{pool_count} pools: at most {MAX_POOLS}", field="pool count", offset=7
        )
    bounds = [(HEADER.size, HEADER.size + name_len)]
    offset = bounds[0][1]
    for _ in range(pool_count):
        length = data[offset] if offset < body_len else 0
        if length == 0 or offset + 1 + length > body_len:
            raise errors.MalformedFrame(
                "a pool name runs past the tag, or is empty", field="pool name", offset=offset
            )
        bounds.append((offset + 1, offset + 1 + length))
        offset += 1 + length
    if offset != body_len:
        raise errors.MalformedFrame(
            f"{body_len - offset} bytes between the last name and the tag",
            field="length",
            offset=offset,
        )
    if not hmac.compare_digest(data[body_len:], _tag(data[:body_len], key)):
        raise BadSignature(f"{Kind(kind).name.lower()} tag does not match: forged or damaged")
    names = [_text(data, start, end) for start, end in bounds]
    return Heartbeat(Kind(kind), session, sequence, sent_ns, names[0], tuple(names[1:]))


def peek(data: bytes) -> tuple[Kind, str]:
    """The kind and node name `data` claims, read without checking its tag: a receiver
    screens out what it would refuse anyway (a ping for another node, a pong from an address
    not the node's) before paying for the HMAC. Raises MalformedFrame as :func:`decode`."""
    kind, name_len = _header(data)[2:4]
    return Kind(kind), _text(data, HEADER.size, HEADER.size + name_len)


def _header(data: bytes) -> tuple[bytes, int, int, int, int, bytes, int, int]:
    """The fixed header of `data`, with magic, version, kind and node name length checked."""
    if len(data) < HEADER.size + 1 + TAG_LEN:
        raise errors.MalformedFrame(
            f"heartbeat of {len(data)} bytes is shorter than the smallest one",
            field="length",
            offset=len(data),
        )
    header: tuple[bytes, int, int, int, int, bytes, int, int] = HEADER.unpack_from(data)
    magic, version, kind, name_len = header[:4]
    if magic != MAGIC:
        raise errors.MalformedFrame(f"magic {magic!r} is not {MAGIC!r}", field="magic", offset=0)
    if version != VERSION:
        raise errors.MalformedFrame(
            f"version {version} is not {VERSION}", field="version", offset=4
        )
    if kind not in Kind.__members__.values():
        raise errors.MalformedFrame(f"kind {kind} is neither ping nor pong", field="kind", offset=5)
    if name_len == 0 or HEADER.size + name_len > len(data) - TAG_LEN:
        raise errors.MalformedFrame(
            f"{len(data)} bytes do not hold a {name_len}-byte node name and the tag",
            field="node name length",
            offset=6,
        )
    return header


def _text(data: bytes, start: int, end: int) -> str:
    try:
        return data[start:end].decode()
    except UnicodeDecodeError as error:
        field = "node name" if start == HEADER.size else "pool name"
        raise errors.MalformedFrame(
            f"{field} is not UTF-8: {error.reason}", field=field, offset=start
        ) from None


def _tag(body: bytes, key: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")
