"""Every error porterlb raises, sorted by what the caller should do next.

    PorterlbError
    ├── InvalidSpec        user input is wrong: report it (condition, Warning Event), never retry
    │   └── AllocationError    an IP cannot be handed out (see porterlb.ipam.allocator)
    ├── Conflict           someone else changed the object first: re-read and retry now
    ├── TransientError     the API or the network hiccuped: retry after `delay` seconds
    └── MalformedFrame     a frame on the wire does not parse (see porterlb.l2)

Library exceptions (httpx, lightkube, OSError) are wrapped with ``raise ... from`` only at the
``kube/`` and socket boundaries, so the rest of the code sees only these classes. Messages name
the object and the value, e.g. ``Service shop/web: 198.18.1.7 is outside pool "lan"``.
"""

from __future__ import annotations


class PorterlbError(Exception):
    """Base of every porterlb error."""


class InvalidSpec(PorterlbError):
    """User input that can never work as written; retrying will not help."""


class AllocationError(InvalidSpec):
    """An address cannot be handed out; the message says why, naming pool and IP."""


class Conflict(PorterlbError):
    """An optimistic-concurrency write lost the race; re-read and decide again."""


class TransientError(PorterlbError):
    """A passing failure of the API server or the network."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class MalformedFrame(PorterlbError):
    """Bytes that do not decode: names the field and the byte offset where decoding stopped."""

    def __init__(self, message: str, *, field: str, offset: int) -> None:
        super().__init__(f"{message} (field {field!r} at offset {offset})")
        self.field = field
        self.offset = offset
