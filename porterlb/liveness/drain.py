"""When a draining speaker may exit: once its IPs are handed over, or once waiting is useless.

Pure: the speaker's view comes in as values. A speaker that gets SIGTERM says ``DRAINING`` in
every pong (:data:`porterlb.liveness.wire.DRAINING`), keeps answering ARP/NDP and keeping its
lease, and the leader hands its IPs to other nodes by the revocation handshake
(docs/fencing.md). The speaker leaves when nothing is left to hand over, a manager has heard
that it drains (so no new IP is placed on it as it leaves), and the leader has heard it echo
the revision of the last revocation (the handshake's must-see: a speaker gone before its echo
would make the leader wait for its silence, some 0.3 s more of no answer); at once when nobody would
move its IPs (no heartbeats, or no manager acknowledges its pongs: then its exit is what tells
the managers, as a crash would); and at the latest after the drain timeout, which the pod's
``terminationGracePeriodSeconds`` must exceed so that the kubelet's SIGKILL never comes first.
"""

from __future__ import annotations

import enum
from typing import Final

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds a drain may take: a handover costs about one heartbeat round and a write per IP
(well under a second in the lab, ``porterlb lab bench-rollout``), and a new leader places
nothing for its takeover settle (2.5 s) after winning; under the chart's
``terminationGracePeriodSeconds`` (15 s)."""


class Exit(enum.Enum):
    """Why a draining speaker stops (a log line)."""

    HANDED_OVER = "its IPs are handed over"
    NO_HEARTBEATS = "heartbeats are off, so no manager would move its IPs"
    NO_MANAGER = "no manager acknowledges its heartbeat answers"
    TIMED_OUT = "the drain timeout passed"


def verdict(
    *,
    now: float,
    deadline: float,
    heartbeats: bool,
    lease_held: bool,
    holding: int,
    heard: bool,
    confirmed: int = 0,
    revoked: int = 0,
) -> Exit | None:
    """Why the speaker may stop draining now (None: keep draining).

    `holding` counts the IPs its watch still assigns to its node, `heard` says whether a
    manager has acknowledged a pong that said it drains, `confirmed` is the highest must-see
    revision it echoed in an acknowledged pong, `revoked` the revision of the latest IP taken
    from it, `lease_held` whether acknowledged pongs still let it answer, `deadline` ends
    the drain (monotonic, as `now`).
    """
    if not heartbeats:
        return Exit.NO_HEARTBEATS
    if not lease_held:
        return Exit.NO_MANAGER
    if holding == 0 and heard and confirmed >= revoked:
        return Exit.HANDED_OVER
    if now >= deadline:
        return Exit.TIMED_OUT
    return None
