"""The speaker's side of liveness: which pings to answer, and when to stop answering ARP.

Pure: pings and clocks come in as values. :class:`PingGuard` answers a ping only if it is
meant for this node, was sent recently by the pinger's wall clock (a recording replayed later
is refused; node clocks are NTP-synced, and the allowed skew says how far apart they may be),
and carries a sequence number its session has not used yet (a recording replayed at once is
refused). :class:`Fence` closes when the speaker has had neither a working API watch nor a
valid ping for the fence time: it can no longer know whether the leader moved its IPs, and the
leader, hearing no pongs, will have. Two nodes answering for one IP is the failure porterlb
exists to prevent, so a blind speaker goes quiet.
"""

from __future__ import annotations

import collections
import enum
from typing import Final

from porterlb.liveness import wire

MAX_SKEW: Final = 2.0
"""Seconds a ping's send time may differ from this node's clock. NTP keeps nodes within
milliseconds; 2 s tolerates a node whose clock is still settling while keeping a replay
window far shorter than any failure worth hiding."""

SESSIONS_KEPT: Final = 16
"""Pinger sessions remembered for replay checks: one per manager replica, plus restarts."""

DEFAULT_FENCE_AFTER: Final = 2.0
"""Seconds without API watch and without a valid ping before the speaker goes quiet: several
heartbeat detection windows (~0.3 s), so a restarting manager or API server never trips it
alone, and short enough that an isolated node stops soon after the leader has moved its IPs."""


class Verdict(enum.Enum):
    """What became of a received ping (a metric label)."""

    ANSWERED = "answered"
    NOT_A_PING = "not_a_ping"
    WRONG_NODE = "wrong_node"
    STALE = "stale"
    REPLAYED = "replayed"


class PingGuard:
    """Decides which pings a speaker answers."""

    def __init__(self, *, node: str, max_skew: float = MAX_SKEW) -> None:
        self.node = node
        self.max_skew_ns = int(max_skew * 1e9)
        self._latest: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        """Session -> the highest sequence answered, least recently used first."""

    def check(self, ping: wire.Heartbeat, now_ns: int) -> Verdict:
        """Whether to answer `ping`, received at `now_ns` (ns since the Unix epoch)."""
        if ping.kind is not wire.Kind.PING:
            return Verdict.NOT_A_PING
        if ping.node != self.node:
            return Verdict.WRONG_NODE
        if abs(now_ns - ping.sent_ns) > self.max_skew_ns:
            return Verdict.STALE
        if ping.sequence <= self._latest.get(ping.session, -1):
            return Verdict.REPLAYED
        self._latest[ping.session] = ping.sequence
        self._latest.move_to_end(ping.session)
        if len(self._latest) > SESSIONS_KEPT:
            self._latest.popitem(last=False)
        return Verdict.ANSWERED


class Fence:
    """Open while the speaker has heard the API or a manager within the fence time."""

    def __init__(self, *, after: float = DEFAULT_FENCE_AFTER, now: float) -> None:
        if not after > 0:
            raise ValueError(f"fence time must be positive, got {after}")
        self.after = after
        self._last_sign = now
        """A start counts as a sign of life: nothing is announced before the watch syncs."""

    def sign_of_life(self, now: float) -> None:
        """A valid ping arrived, or the API watch is established, at `now`."""
        self._last_sign = max(self._last_sign, now)

    def closed(self, now: float) -> bool:
        """True once no sign of life has come for the fence time."""
        return now - self._last_sign >= self.after
