"""The heartbeat datagram: a signed ping from a manager and the speaker's signed pong.

Sans-I/O: bytes in, a frozen :class:`Heartbeat` out, and back. Every datagram carries an
HMAC-SHA256 tag over all bytes before it, keyed with the cluster's heartbeat Secret, so no
host on the LAN can forge one. Replay is judged by the receivers
(:mod:`porterlb.liveness.tracker`, :mod:`porterlb.liveness.guard`) from per-session sequence
numbers alone: no field is a wall-clock time, so a node whose clock is off is judged like any
other (version 1 carried the pinger's wall clock, and a skewed clock on either side made every
ping "stale"). Layout (network byte order)::

    0  magic "PLBH"    4  version   5  kind   6  node-name length   7  pool count
    8  MAC count       9  flags    10  lease (u16, ms; a pong's)
    12 session (8 bytes, random per manager process)   20 sequence (u64, the ping round)
    28 speaker session (8 bytes, random per speaker process)
    36 speaker sequence (u64)   44 must-see revision (u64)
    52 node name (UTF-8, 1..253 bytes: a DNS subdomain, the Node name's limit)
    .. pool count times: length (1 byte), pool name (UTF-8, 1..253 bytes)
    .. MAC count times: 6 bytes
    .. HMAC-SHA256 tag (32 bytes) over everything before it

A pong echoes the ping's session, sequence and must-see revision, and carries the speaker's
own session and a fresh sequence number of its own; the next ping to that node echoes the
latest pong its pinger accepted (speaker session and sequence). That echo is the
acknowledgement from which the speaker extends its answering lease
(:class:`porterlb.liveness.guard.Lease`): it proves the path works both ways. The must-see
revision is the Services resourceVersion the speaker's watch must have reached before it may
answer ARP (the leader's latest revocation); the pong echoes it once the speaker complies.
A pong also names the pools whose interface the node lacks (at most :data:`MAX_POOLS`), the
MAC addresses of its interfaces (so peers are never taken for conflicting hosts), its lease
length, and in ``flags`` whether its watch lags the must-see revision (:data:`STALE`) and
whether the speaker is shutting down (:data:`DRAINING`: its IPs are to be handed over).
The design argument is docs/fencing.md.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import struct
from typing import Any, Final

from porterlb import errors

MAGIC: Final = b"PLBH"
VERSION: Final = 2
"""2: wall-clock send time replaced by the speaker's session and sequence (acknowledgements),
the must-see revision, lease length, flags and MACs."""

HEADER: Final = struct.Struct("!4sBBBBBBH8sQ8sQQ")
"""magic, version, kind, node-name length, pool count, MAC count, flags, lease (ms),
session, sequence, speaker session, speaker sequence, must-see revision."""

TAG_LEN: Final = hashlib.sha256().digest_size
SESSION_LEN: Final = 8
NO_SESSION: Final = bytes(SESSION_LEN)
"""The speaker session of a ping that acknowledges nothing yet."""
MAX_NODE_NAME: Final = 253
"""A Node name is a DNS subdomain (RFC 1123): at most 253 characters."""

MIN_KEY_LEN: Final = 16
"""RFC 2104 §3: a key shorter than the hash output (32 bytes) weakens HMAC; 16 is the floor
that still rules out a typo'd or empty Secret."""

MAX_POOLS: Final = 16
"""Pools a pong may name: a node lacking the interface of more is misconfigured anyway, and
16 names keep the datagram within a few kilobytes."""

MAX_MACS: Final = 16
"""Interface MACs a pong may carry: the interfaces of the pools a node serves."""

MAC_LEN: Final = 6
MAX_LEASE_MS: Final = 0xFFFF

STALE: Final = 0x01
"""Pong flag: the speaker's watch has not reached the must-see revision; it answers no ARP."""

DRAINING: Final = 0x02
"""Pong flag: the speaker is shutting down (SIGTERM). It still answers for its IPs, and asks
the leader to move them; the flag belongs to this speaker session only (docs/fencing.md)."""

MAX_LEN: Final = (
    HEADER.size + MAX_NODE_NAME + MAX_POOLS * (1 + MAX_NODE_NAME) + MAX_MACS * MAC_LEN + TAG_LEN
)


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
    """The manager's session: the pinger's, echoed by its pong."""
    sequence: int
    """The ping round, echoed by its pong."""
    node: str
    """The speaker's Node: the one pinged, or the one answering."""
    speaker_session: bytes = NO_SESSION
    """A pong's: the speaker's own session. A ping's: that of the pong it acknowledges."""
    speaker_sequence: int = 0
    """A pong's: its own number. A ping's: that of the pong it acknowledges (0: none)."""
    must_see: int = 0
    """A ping's: the Services revision the speaker's watch must have reached before it answers
    ARP (0: none). A pong's: the same, echoed once the speaker complies."""
    lease_ms: int = 0
    """A pong's: the speaker's answering lease, in ms, for the pinger's safe-to-move wait."""
    flags: int = 0
    """A pong's: :data:`STALE` while the speaker's watch lags the must-see revision,
    :data:`DRAINING` once it is shutting down."""
    pools: tuple[str, ...] = ()
    """A pong's pools whose interface the node lacks; a ping names none."""
    macs: tuple[bytes, ...] = ()
    """A pong's: the MACs of the node's pool interfaces (6 bytes each)."""

    def answer(
        self,
        *,
        session: bytes,
        sequence: int,
        lease_ms: int,
        stale: bool = False,
        draining: bool = False,
        pools: tuple[str, ...] = (),
        macs: tuple[bytes, ...] = (),
    ) -> Heartbeat:
        """The pong to this ping from the speaker session `session`, numbered `sequence`,
        naming `pools` and `macs` (at most :data:`MAX_POOLS` and :data:`MAX_MACS` are sent)."""
        return dataclasses.replace(
            self,
            kind=Kind.PONG,
            speaker_session=session,
            speaker_sequence=sequence,
            lease_ms=min(lease_ms, MAX_LEASE_MS),
            flags=(STALE if stale else 0) | (DRAINING if draining else 0),
            pools=pools[:MAX_POOLS],
            macs=macs[:MAX_MACS],
        )


def encode(heartbeat: Heartbeat, key: bytes) -> bytes:
    """The signed datagram for `heartbeat`. Raises ValueError for a value that cannot be sent."""
    name = heartbeat.node.encode()
    if not 1 <= len(name) <= MAX_NODE_NAME:
        raise ValueError(f"node name {heartbeat.node!r}: must be 1..{MAX_NODE_NAME} bytes")
    for what, session in (
        ("session", heartbeat.session),
        ("speaker session", heartbeat.speaker_session),
    ):
        if len(session) != SESSION_LEN:
            raise ValueError(f"{what} must be {SESSION_LEN} bytes, got {len(session)}")
    if len(heartbeat.pools) > MAX_POOLS:
        raise ValueError(f"{len(heartbeat.pools)} pools: at most {MAX_POOLS} fit")
    if len(heartbeat.macs) > MAX_MACS or any(len(mac) != MAC_LEN for mac in heartbeat.macs):
        raise ValueError(f"MACs {heartbeat.macs!r}: at most {MAX_MACS} of {MAC_LEN} bytes")
    body = HEADER.pack(
        MAGIC,
        VERSION,
        heartbeat.kind,
        len(name),
        len(heartbeat.pools),
        len(heartbeat.macs),
        heartbeat.flags,
        heartbeat.lease_ms,
        heartbeat.session,
        heartbeat.sequence,
        heartbeat.speaker_session,
        heartbeat.speaker_sequence,
        heartbeat.must_see,
    )
    body += name
    for pool in heartbeat.pools:
        encoded = pool.encode()
        if not 1 <= len(encoded) <= MAX_NODE_NAME:
            raise ValueError(f"pool name {pool!r}: must be 1..{MAX_NODE_NAME} bytes")
        body += bytes((len(encoded),)) + encoded
    body += b"".join(heartbeat.macs)
    return body + _tag(body, key)


def decode(data: bytes, key: bytes) -> Heartbeat:
    """The heartbeat in `data`, checked against `key`.

    Raises MalformedFrame (naming field and offset) for bytes that are not a heartbeat, and
    BadSignature for a well-formed datagram not signed with `key`.
    """
    (
        _, _, kind, name_len, pool_count, mac_count, flags, lease_ms,
        session, sequence, speaker_session, speaker_sequence, must_see,
    ) = _header(data)  # fmt: skip
    body_len = len(data) - TAG_LEN
    if pool_count > MAX_POOLS:
        raise errors.MalformedFrame(
            f"{pool_count} pools: at most {MAX_POOLS}", field="pool count", offset=7
        )
    if mac_count > MAX_MACS:
        raise errors.MalformedFrame(
            f"{mac_count} MACs: at most {MAX_MACS}", field="MAC count", offset=8
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
    macs_end = offset + mac_count * MAC_LEN
    if macs_end > body_len:
        raise errors.MalformedFrame(
            f"{mac_count} MACs run past the tag", field="MAC count", offset=8
        )
    if macs_end != body_len:
        raise errors.MalformedFrame(
            f"{body_len - macs_end} bytes between the last field and the tag",
            field="length",
            offset=macs_end,
        )
    if not hmac.compare_digest(data[body_len:], _tag(data[:body_len], key)):
        raise BadSignature(f"{Kind(kind).name.lower()} tag does not match: forged or damaged")
    names = [_text(data, start, end) for start, end in bounds]
    macs = tuple(data[at : at + MAC_LEN] for at in range(offset, macs_end, MAC_LEN))
    return Heartbeat(
        Kind(kind),
        session,
        sequence,
        names[0],
        speaker_session,
        speaker_sequence,
        must_see,
        lease_ms,
        flags,
        tuple(names[1:]),
        macs,
    )


def peek(data: bytes) -> tuple[Kind, str]:
    """The kind and node name `data` claims, read without checking its tag: a receiver
    screens out what it would refuse anyway (a ping for another node, a pong from an address
    not the node's) before paying for the HMAC. Raises MalformedFrame as :func:`decode`."""
    kind, name_len = _header(data)[2:4]
    return Kind(kind), _text(data, HEADER.size, HEADER.size + name_len)


def _header(data: bytes) -> tuple[Any, ...]:
    """The fixed header of `data`, with magic, version, kind and node name length checked."""
    if len(data) < HEADER.size + 1 + TAG_LEN:
        raise errors.MalformedFrame(
            f"heartbeat of {len(data)} bytes is shorter than the smallest one",
            field="length",
            offset=len(data),
        )
    header: tuple[Any, ...] = HEADER.unpack_from(data)
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
