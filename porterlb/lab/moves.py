"""Which failed requests a move of an IP's traffic explains, judged by what the router did.

An IP's traffic moves when the router's neighbour entry changes MAC: from then on it forwards
every packet to the IP, those of connections already open included, to the new node. A
connection the router opened through the old node is then reset by the new one (it has no
conntrack entry for it): the cost of any layer-2 move of a live TCP connection, not a loss
porterlb could avoid. Any other failure is a real loss: a request whose SYN went to the node
the router kept it on, one whose SYN the router was not seen to forward (no node can have
opened it; a refused request, whose port the kernel released, is one too: a move never
refuses a SYN, both nodes forward the Service), and one broken by a flip (the router's entry
going back to a MAC it left moments before, as two nodes answering for one IP make it do).

The judgement is one pure function, :func:`judge`, over the router's frames
(:mod:`porterlb.lab.forwarding`) and the client's requests (:mod:`porterlb.lab.traffic`):
``tests/e2e/test_drain.py`` and ``lab bench-rollout`` both read a move through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Final, Literal

from porterlb.lab import forwarding, traffic

FLIP_WITHIN: Final = 3.0
"""Seconds within which the router's entry going back to the MAC it left is a flip. A node
an IP left (its speaker drained) is eligible again only once its new speaker pod is Ready,
which the chart's readiness probe says no sooner than 5 s after the pod starts; two nodes
answering one IP turn the entry over within a second."""

LIFETIME: Final = traffic.CONNECT_TIMEOUT + traffic.ANSWER_TIMEOUT
"""Seconds after it was sent that a request's connection can still be open: a switch later
than that cannot have broken it."""

Why = Literal["moved", "kept", "unseen", "flip"]
"""What a failed request is judged: ``moved``, its connection was opened through a node the
router switched away from during its life; the real losses: ``kept``, no switch during its
life after the router forwarded its SYN (the node it was opened through failed it);
``unseen``, the router was not seen to forward its SYN; ``flip``, the switch that broke it
was undone within :data:`FLIP_WITHIN` or undid another."""


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    request: traffic.Request
    why: Why
    syn_to: str
    """The MAC the router sent the request's SYN to; "" when it was not seen."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """One IP's traffic, as the router forwarded it."""

    hops: tuple[forwarding.Frame, ...]
    """The frames at which the router began sending the IP's traffic to another MAC (the
    first frame included): a clean move has one hop more than the IP has homes."""
    flips: int
    """Hops back to the MAC left less than :data:`FLIP_WITHIN` before."""
    failures: tuple[Failure, ...]
    """Every failed request, in order of sending."""

    @property
    def moved(self) -> list[Failure]:
        """The failed requests the move explains."""
        return [f for f in self.failures if f.why == "moved"]

    @property
    def lost(self) -> list[Failure]:
        """The real losses."""
        return [f for f in self.failures if f.why != "moved"]


def judge(
    frames: Sequence[forwarding.Frame],
    ip: str,
    requests: Sequence[traffic.Request],
    *,
    flip_within: float = FLIP_WITHIN,
    lifetime: float = LIFETIME,
) -> Verdict:
    """How the router moved ``ip``'s traffic (``frames``, as :class:`forwarding.Forwarding`
    recorded them) and why each failed one of ``requests`` failed."""
    hops = forwarding.hops(frames, ip)
    flipped = {
        n
        for n in range(2, len(hops))
        if hops[n].mac == hops[n - 2].mac and hops[n].at - hops[n - 1].at < flip_within
    }
    flapping = flipped | {n - 1 for n in flipped}
    via = forwarding.opened_via(frames, ip, requests)

    def why(request: traffic.Request) -> Why:
        syn = via.get(request)
        if syn is None:
            return "unseen"
        # The SYN itself is a frame, so the first hop after it is a switch away from its MAC.
        breaking = next(
            (n for n in range(1, len(hops)) if syn.at < hops[n].at <= request.sent + lifetime),
            None,
        )
        if breaking is None:
            return "kept"
        return "flip" if breaking in flapping else "moved"

    failed = sorted((r for r in requests if not r.node), key=lambda r: r.sent)
    return Verdict(
        hops=tuple(hops),
        flips=len(flipped),
        failures=tuple(Failure(r, why(r), via[r].mac if r in via else "") for r in failed),
    )
