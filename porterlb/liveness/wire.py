"""The heartbeat datagram: a signed ping from a manager and the speaker's signed pong.

Sans-I/O: bytes in, a frozen :class:`Heartbeat` out, and back. Every datagram carries an
HMAC-SHA256 tag over all bytes before it, keyed with the cluster's heartbeat Secret, so no
host on the LAN can forge one. Replay and staleness are judged by the receivers
(:mod:`porterlb.liveness.tracker`, :mod:`porterlb.liveness.guard`): the codec gives them
the session, sequence number and send time they need. Layout (network byte order)::

    0  magic "PLBH"    4  version   5  kind   6  node-name length   7  reserved (0)
    8  session (8 bytes, random per sender)
    16 sequence (u64)   24 sent, ns since the Unix epoch by the pinger's clock (u64)
    32 node name (UTF-8, 1..253 bytes: a DNS subdomain, the Node name's limit)
    .. HMAC-SHA256 tag (32 bytes) over everything before it

A pong echoes the ping's session, sequence and send time, so the pinger matches it to what it
sent without keeping the speaker's clock in the picture.
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

HEADER: Final = struct.Struct("!4sBBBx8sQQ")
"""magic, version, kind, node-name length, reserved, session, sequence, sent (ns)."""

TAG_LEN: Final = hashlib.sha256().digest_size
SESSION_LEN: Final = 8
MAX_NODE_NAME: Final = 253
"""A Node name is a DNS subdomain (RFC 1123): at most 253 characters."""

MIN_KEY_LEN: Final = 16
"""RFC 2104 §3: a key shorter than the hash output (32 bytes) weakens HMAC; 16 is the floor
that still rules out a typo'd or empty Secret."""

MAX_LEN: Final = HEADER.size + MAX_NODE_NAME + TAG_LEN


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

    def answer(self) -> Heartbeat:
        """The pong to this ping."""
        return dataclasses.replace(self, kind=Kind.PONG)


def encode(heartbeat: Heartbeat, key: bytes) -> bytes:
    """The signed datagram for `heartbeat`. Raises ValueError for a value that cannot be sent."""
    name = heartbeat.node.encode()
    if not 1 <= len(name) <= MAX_NODE_NAME:
        raise ValueError(f"node name {heartbeat.node!r}: must be 1..{MAX_NODE_NAME} bytes")
    if len(heartbeat.session) != SESSION_LEN:
        raise ValueError(f"session must be {SESSION_LEN} bytes, got {len(heartbeat.session)}")
    body = HEADER.pack(
        MAGIC,
        VERSION,
        heartbeat.kind,
        len(name),
        heartbeat.session,
        heartbeat.sequence,
        heartbeat.sent_ns,
    )
    body += name
    return body + _tag(body, key)


def decode(data: bytes, key: bytes) -> Heartbeat:
    """The heartbeat in `data`, checked against `key`.

    Raises MalformedFrame (naming field and offset) for bytes that are not a heartbeat, and
    BadSignature for a well-formed datagram not signed with `key`.
    """
    if len(data) < HEADER.size + 1 + TAG_LEN:
        raise errors.MalformedFrame(
            f"heartbeat of {len(data)} bytes is shorter than the smallest one",
            field="length",
            offset=len(data),
        )
    magic, version, kind, name_len, session, sequence, sent_ns = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise errors.MalformedFrame(f"magic {magic!r} is not {MAGIC!r}", field="magic", offset=0)
    if version != VERSION:
        raise errors.MalformedFrame(
            f"version {version} is not {VERSION}", field="version", offset=4
        )
    if kind not in Kind.__members__.values():
        raise errors.MalformedFrame(f"kind {kind} is neither ping nor pong", field="kind", offset=5)
    end = HEADER.size + name_len
    if name_len == 0 or len(data) != end + TAG_LEN:
        raise errors.MalformedFrame(
            f"{len(data)} bytes do not hold a {name_len}-byte node name and the tag",
            field="node name length",
            offset=6,
        )
    if not hmac.compare_digest(data[end:], _tag(data[:end], key)):
        raise BadSignature(f"{Kind(kind).name.lower()} tag does not match: forged or damaged")
    try:
        node = data[HEADER.size : end].decode()
    except UnicodeDecodeError as error:
        raise errors.MalformedFrame(
            f"node name is not UTF-8: {error.reason}", field="node name", offset=HEADER.size
        ) from None
    return Heartbeat(Kind(kind), session, sequence, sent_ns, node)


def _tag(body: bytes, key: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")
