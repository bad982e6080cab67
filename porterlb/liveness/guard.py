"""The speaker's side of liveness: which pings to answer, and when it may answer ARP at all.

Pure: pings, revisions and clock readings come in as values. The argument these classes
implement is docs/fencing.md; in short:

- :class:`PingGuard` answers a ping only if it is meant for this node and carries a sequence
  number its session has not used yet. No wall clock is read: a node or a manager whose clock
  is seconds off is judged like any other (``MAX_SKEW`` in version 1 refused every ping of a
  skewed pinger, so a manager with a wrong clock found every node silent).
- :class:`Lease` is the speaker's right to answer. Only a ping that acknowledges one of the
  speaker's recent pongs extends it, to the time (the speaker's monotonic clock) that pong
  was *sent* plus the lease length: the acknowledged pong reached a manager, so the managers
  heard the node no earlier than that, and the leader moves a silent node's IPs only after
  :func:`safe_to_move_after` has passed since it last *received* a pong.
- A ping also carries a *must-see* revision: the Services resourceVersion of the leader's
  latest revocation (an IP taken from a node). The speaker answers only while its Services
  watch has reached it, so a speaker whose watch died silently, however well it is pinged,
  stops answering as soon as an assignment it cannot see changes.
- :class:`LeaderCheck`: when no ping extends the lease, the speaker reads the managers'
  election Lease itself. If no manager leads (none holds it, or the record has stood still for
  longer than its lease duration by this speaker's own observation), nobody can move its IPs,
  and it keeps answering its last assignments while such a read is at most ``fresh_for`` old.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
from typing import Final

from porterlb.liveness import wire

SESSIONS_KEPT: Final = 16
"""Pinger sessions remembered for replay checks: one per manager replica, plus restarts."""

DEFAULT_FENCE_AFTER: Final = 2.0
"""Seconds a read of the election Lease showing no live leader stays good for answering
without pings (and the longest the API may then be unreachable before the speaker goes
quiet): several heartbeat detection windows (~0.3 s), and under the manager's takeover settle
time (:data:`porterlb.manager.announcing.TAKEOVER_SETTLE`), which must stay above it."""

DEFAULT_LEASE: Final = 0.25
"""Seconds an acknowledged pong lets the speaker answer, from when it was sent. A pong of
round n is acknowledged by the ping of round n+1, one heartbeat interval (0.1 s) later, and
extends the lease past the next acknowledgement only if the lease exceeds two intervals;
0.25 s leaves 50 ms for jitter and stays under the 0.3 s detection time (3 misses x 0.1 s),
so the leader never waits for it after finding a node silent."""

MAX_DRIFT: Final = 500e-6
"""The largest rate error of a Linux monotonic clock against another: the kernel clamps an
NTP frequency correction to 500 ppm (``MAXFREQ``, kernel/time/ntp.c), and crystals are
specified within 100 ppm."""

MOVE_MARGIN: Final = 0.01
"""Seconds added to a lease before a node's IPs may move: scheduling between reading the
clock and sending a pong, and the clocks' read granularity, both far below it."""

PONGS_KEPT: Final = 64
"""Pong send times remembered: an acknowledgement names one of the last few rounds, of
every manager replica; 64 covers 30 rounds of two replicas."""


def safe_to_move_after(lease: float) -> float:
    """Seconds after the last pong a manager received from a node before that node's lease
    (of `lease` seconds by the node's clock) has surely run out by the manager's clock.

    The lease lasts at most ``lease / (1 - MAX_DRIFT)`` of real time (a slow speaker clock),
    and the manager's clock counts that span as up to ``1 + MAX_DRIFT`` times as long."""
    return lease * (1 + MAX_DRIFT) / (1 - MAX_DRIFT) + MOVE_MARGIN


class Verdict(enum.Enum):
    """What became of a received ping (a metric label)."""

    ANSWERED = "answered"
    NOT_A_PING = "not_a_ping"
    WRONG_NODE = "wrong_node"
    REPLAYED = "replayed"


class PingGuard:
    """Decides which pings a speaker answers."""

    def __init__(self, *, node: str) -> None:
        self.node = node
        self._latest: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        """Session -> the highest sequence answered, least recently used first."""

    def check(self, ping: wire.Heartbeat) -> Verdict:
        """Whether to answer `ping`."""
        if ping.kind is not wire.Kind.PING:
            return Verdict.NOT_A_PING
        if ping.node != self.node:
            return Verdict.WRONG_NODE
        if ping.sequence <= self._latest.get(ping.session, -1):
            return Verdict.REPLAYED
        self._latest[ping.session] = ping.sequence
        self._latest.move_to_end(ping.session)
        if len(self._latest) > SESSIONS_KEPT:
            self._latest.popitem(last=False)
        return Verdict.ANSWERED


class Lease:
    """The speaker's right to answer, extended only by acknowledged pongs.

    One writer (the heartbeat thread) and many readers (the ARP reader threads); the readers
    read :attr:`until` and :attr:`must_see`, each a single attribute load.
    """

    def __init__(self, *, length: float = DEFAULT_LEASE, session: bytes) -> None:
        if not length > 0:
            raise ValueError(f"lease length must be positive, got {length}")
        self.length = length
        self.session = session
        self.sequence = 0
        """The latest pong's number."""
        self.until = -math.inf
        """Monotonic time the lease ends; none is held before the first acknowledgement."""
        self.must_see = 0
        """The highest must-see revision any accepted ping carried."""
        self.acknowledged = 0
        """The number of the latest of this session's pongs a ping acknowledged."""
        self._sent: collections.OrderedDict[int, float] = collections.OrderedDict()

    def pong(self, now: float) -> int:
        """Number a pong about to be sent; `now` is read before it is sent."""
        self.sequence += 1
        self._sent[self.sequence] = now
        if len(self._sent) > PONGS_KEPT:
            self._sent.popitem(last=False)
        return self.sequence

    def ping(self, ping: wire.Heartbeat) -> bool:
        """Take an accepted ping's must-see revision and acknowledgement; True when it
        extended the lease."""
        self.must_see = max(self.must_see, ping.must_see)
        if ping.speaker_session != self.session:
            return False  # acknowledges a pong of an earlier run of this speaker, or none
        sent = self._sent.get(ping.speaker_sequence)
        if sent is not None:
            self.acknowledged = max(self.acknowledged, ping.speaker_sequence)
        if sent is None or sent + self.length <= self.until:
            return False
        self.until = sent + self.length
        return True

    def held(self, now: float) -> bool:
        return now < self.until


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The election Lease as read: holder, the renew time as written (compared only for
    change, never with a clock), and its duration in seconds."""

    holder: str | None
    renewed: str | None
    duration: float


class LeaderCheck:
    """Whether a manager may lead, from this speaker's own reads of the election Lease."""

    def __init__(self, *, fresh_for: float = DEFAULT_FENCE_AFTER) -> None:
        if not fresh_for > 0:
            raise ValueError(f"fence time must be positive, got {fresh_for}")
        self.fresh_for = fresh_for
        self._record: LeaseRecord | None = None
        self._since = -math.inf
        """When the current record was first seen (receive time): written no later."""
        self._last_read: float | None = None
        """Send time of the latest successful read."""
        self._leaderless = False
        """What the latest successful read showed."""

    def read(self, record: LeaseRecord | None, *, sent: float, received: float) -> None:
        """A read sent at `sent` answered at `received` with `record` (None: no Lease)."""
        if record != self._record or self._last_read is None:
            self._record, self._since = record, received
        self._last_read = sent
        if record is None or record.holder is None:
            self._leaderless = True
        else:
            # The holder stops leading within its renew deadline (< duration) of its last
            # renewal, which it wrote before we first saw it; a renewal or a new holder since
            # would have changed what this read returned.
            self._leaderless = sent >= self._since + safe_to_move_after(record.duration)

    def no_leader(self, now: float) -> bool:
        """True while a recent read showed that no manager leads."""
        last = self._last_read
        return last is not None and self._leaderless and now - last < self.fresh_for


def may_answer(now: float, *, lease: Lease, watched: int, leader: LeaderCheck) -> bool:
    """The fence: whether the speaker may answer ARP/NDP at `now` (monotonic), its Services
    watch having reached revision `watched`."""
    if watched < lease.must_see:
        return False
    return lease.held(now) or leader.no_leader(now)
