"""The pinger's side of liveness: which speakers answer, counted in missed pings.

Pure: rounds, pongs and the clock come in as values. A manager pings every speaker once per
round (every heartbeat interval) and, half an interval later, declares that round due: a
speaker that has not answered the last ``misses`` due rounds is silent. Counting in rounds,
not seconds, makes the rule independent of scheduling jitter, and the half-interval deadline
(a LAN answers in well under a millisecond) puts detection at ``misses`` intervals after the
fault, not ``misses + 1``. A pong counts only if it answers one of our own pings (our session,
a sequence number we sent) later than the last one that node answered, so a recorded pong
replayed by another host on the LAN proves nothing.

The tracker also keeps what the next ping to a node must carry: the speaker session and
number of the latest pong accepted from it (the acknowledgement that extends the speaker's
lease, :class:`porterlb.liveness.guard.Lease`), and what the pongs say: the lease length
(a silent node counts as silent only once that lease has surely run out:
:func:`porterlb.liveness.guard.safe_to_move_after`), the must-see revision it complied with,
whether its watch lags it, whether it drains, and its interfaces' MACs.

A node drains while the speaker process serving it says so (:data:`porterlb.liveness.wire.
DRAINING`); the flag belongs to that speaker session. Once another session answers without it
(the new speaker of a rolling update), the node is eligible again, whatever the old session
still says in its last pongs before it exits.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import Final

from porterlb.api.keys import NodeName
from porterlb.liveness import guard, wire

DEFAULT_INTERVAL: Final = 0.1
DEFAULT_MISSES: Final = 3
"""~100 ms x 3 misses: the ~300 ms detection of the failover budget (DESIGN.md)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    """How often to ping, and how many unanswered pings in a row make a speaker silent."""

    interval: float = DEFAULT_INTERVAL
    misses: int = DEFAULT_MISSES

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"heartbeat interval must be positive, got {self.interval}")
        if self.misses < 1:
            raise ValueError(f"heartbeat misses must be at least 1, got {self.misses}")


class Verdict(enum.Enum):
    """What became of a received heartbeat (a metric label)."""

    ACCEPTED = "accepted"
    NOT_A_PONG = "not_a_pong"
    OTHER_SESSION = "other_session"
    NEVER_SENT = "never_sent"
    REPLAYED = "replayed"


class Tracker:
    """Pings sent and pongs received, in; silent speakers, out."""

    def __init__(self, *, session: bytes, misses: int = DEFAULT_MISSES) -> None:
        self.session = session
        self.misses = misses
        self.sequence = 0
        """The latest round sent."""
        self.due = 0
        """The latest round whose answers were due."""
        self._answered: dict[NodeName, int] = {}
        """Node -> the latest round it answered (or the round due when it was first seen)."""
        self._heard_at: dict[NodeName, float] = {}
        self._latest_answered = 0
        """The latest round anyone answered."""
        self.lacking: dict[NodeName, frozenset[str]] = {}
        """Node -> the pools whose interface it lacks, as its latest pong said (none: absent)."""
        self._echo: dict[NodeName, tuple[bytes, int]] = {}
        self._lease: dict[NodeName, float] = {}
        self._confirmed: dict[NodeName, int] = {}
        self.stale: set[NodeName] = set()
        """Nodes whose latest pong said their watch lags the must-see revision."""
        self.macs: dict[NodeName, frozenset[bytes]] = {}
        """Node -> the MACs of its pool interfaces, as its latest pong said."""
        self.draining: set[NodeName] = set()
        """Nodes whose serving speaker session says it is shutting down."""
        self._serving: dict[NodeName, bytes] = {}
        """Node -> the speaker session of its latest pong that did not say draining, or of
        the draining pong that came first: the session whose word counts."""

    def next_round(self) -> int:
        """Start a round; return the sequence number its pings carry."""
        self.sequence += 1
        return self.sequence

    def close_round(self) -> None:
        """The answers to the latest round are due now; later ones still count."""
        self.due = self.sequence

    def received(self, pong: wire.Heartbeat, now: float) -> Verdict:
        """Take `pong` into account if it proves its node alive; say what became of it."""
        if pong.kind is not wire.Kind.PONG:
            return Verdict.NOT_A_PONG
        if pong.session != self.session:
            return Verdict.OTHER_SESSION
        if not 0 < pong.sequence <= self.sequence:
            return Verdict.NEVER_SENT
        node = NodeName(pong.node)
        if pong.sequence <= self._answered.get(node, 0):
            return Verdict.REPLAYED
        self._answered[node] = pong.sequence
        self._heard_at[node] = now
        self._echo[node] = (pong.speaker_session, pong.speaker_sequence)
        self._lease[node] = pong.lease_ms / 1000
        self._confirmed[node] = max(self._confirmed.get(node, 0), pong.must_see)
        if pong.flags & wire.STALE:
            self.stale.add(node)
        else:
            self.stale.discard(node)
        self._drains(node, pong)
        if pong.macs:
            self.macs[node] = frozenset(pong.macs)
        if pong.pools:
            self.lacking[node] = frozenset(pong.pools)
        else:
            self.lacking.pop(node, None)
        self._latest_answered = max(self._latest_answered, pong.sequence)
        return Verdict.ACCEPTED

    def _drains(self, node: NodeName, pong: wire.Heartbeat) -> None:
        """Count `node` draining while the session serving it says so: a draining pong from
        an older session, answering beside the new one, changes nothing."""
        serving = self._serving.setdefault(node, pong.speaker_session)
        if not pong.flags & wire.DRAINING:
            self._serving[node] = pong.speaker_session
            self.draining.discard(node)
        elif serving == pong.speaker_session:
            self.draining.add(node)

    @property
    def deaf(self) -> bool:
        """True when no node at all answered the last ``misses`` due rounds: the pinger cannot
        tell a dead cluster from its own broken network, so its silences prove nothing."""
        return self.due - self._latest_answered >= self.misses

    def echo(self, node: NodeName) -> tuple[bytes, int]:
        """The speaker session and number of the latest pong accepted from `node`, for the
        next ping to acknowledge (no session and 0: none yet)."""
        return self._echo.get(node, (wire.NO_SESSION, 0))

    def confirmed(self, node: NodeName) -> int:
        """The highest must-see revision `node` has echoed: its watch has reached it, or it
        answers no ARP until it does."""
        return self._confirmed.get(node, 0)

    def silent(self, nodes: Iterable[NodeName], now: float) -> dict[NodeName, float | None]:
        """Those of `nodes` that missed the last ``misses`` due rounds and whose lease has
        surely run out, with the seconds since they last answered (None: never). A node not
        seen before starts with a clean slate."""
        found: dict[NodeName, float | None] = {}
        for node in nodes:
            last = self._answered.setdefault(node, self.due)
            if self.due - last >= self.misses:
                heard = self._heard_at.get(node)
                if heard is None:
                    found[node] = None
                elif not (lease := self._lease.get(node, 0.0)) or now - heard >= (
                    guard.safe_to_move_after(lease)
                ):  # a pong declaring no lease (0 ms) holds none
                    found[node] = now - heard
        return found

    def forget(self, node: NodeName) -> None:
        """Drop what is known of `node` (its Node is gone)."""
        self._answered.pop(node, None)
        self._heard_at.pop(node, None)
        self.lacking.pop(node, None)
        self._echo.pop(node, None)
        self._lease.pop(node, None)
        self._confirmed.pop(node, None)
        self.stale.discard(node)
        self.macs.pop(node, None)
        self.draining.discard(node)
        self._serving.pop(node, None)
