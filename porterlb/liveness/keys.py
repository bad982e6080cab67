"""The heartbeat keyring: which key signs, and which keys a datagram may be signed with.

Pure: keys and the receiver's monotonic clock come in as values. Every manager and speaker
follows the Secret and learns a new key at its own moment, so a key is rotated in two steps,
with no instant at which one party signs with a key another one refuses:

- a party accepts a new key the moment it learns it, and keeps accepting the old one for
  :attr:`Rotation.grace`;
- a pinger signs with the new key only :attr:`Rotation.adopt_after` later, by which time
  every speaker has learned it too; a speaker answers each ping with the key that ping was
  signed with, so its pong is accepted by the pinger whatever either knows of the rotation.

A speaker that learned the key up to ``adopt_after`` after a pinger, and a pinger that learned
it up to ``grace - adopt_after`` after a speaker, both go on being heard: no ping is refused,
no node is found silent, and no IP moves. Every time is the receiver's own clock, never a
sender's, so a node whose clock is off changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Final

ADOPT_AFTER: Final = 10.0
"""Seconds between learning a key and signing pings with it: twice the longest relist
back-off of a watch (5 s, :data:`porterlb.kube.reflector.RETRY_DELAYS`), so a speaker whose
Secret watch broke just before the rotation has listed the Secret again, even after one failed
attempt, before any ping needs the new key; five fence times (2 s), so a rotation is never
the cause of a fence."""

GRACE: Final = 2 * ADOPT_AFTER
"""Seconds the old key is still accepted after the new one was learned: ``adopt_after`` for
the speakers to learn it, and as long again for a pinger that learned it late and still signs
with the old key until its own ``adopt_after`` has passed."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rotation:
    """How long a rotation takes: when pings switch to the new key, when the old one goes."""

    adopt_after: float = ADOPT_AFTER
    grace: float = GRACE

    def __post_init__(self) -> None:
        if not 0 <= self.adopt_after <= self.grace:
            raise ValueError(
                f"key rotation: need 0 <= adopt_after ({self.adopt_after}) <= grace ({self.grace})"
            )


@dataclasses.dataclass(frozen=True, slots=True)
class Retired:
    """A key replaced by a newer one, accepted until ``until``."""

    key: bytes
    until: float


@dataclasses.dataclass(frozen=True, slots=True)
class Keyring:
    """The newest key, when it was learned, and the retired keys still accepted.

    Immutable: a new key makes a new keyring, which its owner swaps in whole, so a thread
    reading the attribute always sees a consistent one.
    """

    key: bytes
    learned: float = float("-inf")
    """When :attr:`key` was learned, by the receiver's monotonic clock (-inf: at start, it
    replaced nothing and signs at once)."""
    retired: tuple[Retired, ...] = ()
    """Newest first."""
    rotation: Rotation = dataclasses.field(default_factory=Rotation)

    def rotated(self, key: bytes, now: float) -> Keyring:
        """This keyring once `key` was learned at `now` (the same keyring if it is no news)."""
        if key == self.key:
            return self
        kept = tuple(old for old in self.retired if old.until > now and old.key != key)
        retired = (Retired(self.key, now + self.rotation.grace), *kept)
        return Keyring(key, now, retired, self.rotation)

    def accepted(self, now: float) -> tuple[bytes, ...]:
        """The keys a datagram received at `now` may be signed with, newest first."""
        return (self.key, *(old.key for old in self.retired if now < old.until))

    def signing(self, now: float) -> bytes:
        """The key to sign a ping sent at `now` with: the newest once it has been known for
        ``adopt_after``, the one it replaced before."""
        if self.retired and now < self.learned + self.rotation.adopt_after:
            return self.retired[0].key
        return self.key
