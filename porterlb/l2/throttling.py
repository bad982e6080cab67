"""Bounded logging for what may happen thousands of times a second: at most one line per
interval per cause, carrying the count since the previous line.

A hostile host can send a forged or broken frame every microsecond, and a firewall rule or a
full transmit queue can make every send fail (EPERM, ENOBUFS): a log line each would cost more
CPU than answering and fill the node's disk. ``Throttle`` only counts and says when a line is
due; it does no I/O and reads no clock (the caller passes ``now``, its loop's time), so tests
step time by hand. The metrics count every occurrence, so what the log leaves out is not lost:
a cause that stops is reported with its count at its next occurrence, not on a timer.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

INTERVAL: Final = 30.0
"""Seconds between two lines about one cause: the cadence of conflict reports
(``conflicts.REPORT_INTERVAL``), so one incident reads alike in both."""


class Throttle(Generic[K]):
    """Counts occurrences by cause and lets a line through at most once per ``interval``.

    Safe to call from several threads (the reader threads and the event loop share one).
    """

    def __init__(self, interval: float = INTERVAL) -> None:
        if interval <= 0:
            raise ValueError(f"interval {interval} must be positive")
        self._interval = interval
        self._last: dict[K, float] = {}
        """Time of the last line, by cause."""
        self._pending: dict[K, int] = {}
        """Occurrences since the last line, by cause."""
        self._lock = threading.Lock()

    def count(self, cause: K, now: float, occurrences: int = 1) -> int | None:
        """Count ``occurrences`` of ``cause`` at ``now``; if a line is due, return how many
        happened since the previous one (these included) and start counting afresh, else None.
        """
        with self._lock:
            pending = self._pending.get(cause, 0) + occurrences
            last = self._last.get(cause)
            if last is not None and now - last < self._interval:
                self._pending[cause] = pending
                return None
            self._last[cause] = now
            self._pending.pop(cause, None)
            return pending

    def forget(self, cause: K) -> None:
        """Drop what is known of ``cause``: its next occurrence is logged at once."""
        with self._lock:
            self._last.pop(cause, None)
            self._pending.pop(cause, None)
