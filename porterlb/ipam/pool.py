"""An address pool, and the index of which of its addresses are in use.

:class:`Pool` is the allocator's view of one Eip. :class:`UsedAddresses` records the used
addresses of one pool as integers, grouped into maximal runs of consecutive addresses. The
design goal is that nothing ever enumerates a pool: a /8 or an IPv6 /64 costs what is used,
not what is free.

- Runs are kept in two dicts (start to end, end to start) plus a sorted list of the starts.
  Taking an address merges it with the run ending just below it and the run starting just
  above it: two dict probes, and a sorted-list update only when a run appears or goes.
- The lowest free address is found in O(1): every used address lies inside the pool, so if
  the pool's first usable address is used, a run starts there, and the address after that
  run is free (runs are maximal). Otherwise the first usable address itself is free.
- Releasing the first or last address of a run is two dict probes plus, for a first
  address, a sorted-list update. Releasing one inside a run splits it, after finding it
  with one bisection of the starts: O(log r) for r runs. Memory is O(r), and r is at most
  the number of used addresses.

A sequential fill is one run; the worst case (every other address used) is one run per
address. ``bench/allocator.py`` measures both ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from sortedcontainers import SortedList

from porterlb.api import address
from porterlb.api.keys import PoolName


@dataclass(frozen=True, slots=True)
class Pool:
    """One Eip as the allocator sees it; ``disabled`` pools hand out nothing new."""

    name: PoolName
    addresses: address.AddressRange
    disabled: bool = False

    @property
    def usable(self) -> address.AddressRange:
        """The addresses that may be handed out (``addresses`` minus reserved ones)."""
        return self.addresses.usable

    def __str__(self) -> str:
        return f'Eip "{self.name}" ({self.addresses})'


class UsedAddresses:
    """The used addresses of one pool, as integers grouped into maximal runs.

    The caller must ``add`` only free addresses and ``remove`` only used ones: the allocator
    checks its holder map first. ``remove`` of an address outside every run raises KeyError;
    ``add`` of a used address is not detected.
    """

    __slots__ = ("_count", "_end_of", "_start_of", "_starts")

    def __init__(self) -> None:
        self._end_of: dict[int, int] = {}
        self._start_of: dict[int, int] = {}
        self._starts = SortedList()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def lowest_free(self, lo: int, hi: int) -> int | None:
        """The lowest free address in ``lo..hi``, when every used address lies in that span."""
        end = self._end_of.get(lo)
        if end is None:
            return lo
        return end + 1 if end < hi else None

    def add(self, n: int) -> None:
        """Mark the free address `n` as used."""
        start = self._start_of.pop(n - 1, None)
        end = self._end_of.pop(n + 1, None)
        if end is not None:
            self._starts.remove(n + 1)
        else:
            end = n
        if start is None:
            start = n
            self._starts.add(n)
        self._end_of[start] = end
        self._start_of[end] = start
        self._count += 1

    def remove(self, n: int) -> None:
        """Mark the used address `n` as free again."""
        end = self._end_of.pop(n, None)
        if end is not None:  # n starts its run: no search needed
            self._starts.remove(n)
            if end == n:
                del self._start_of[n]
            else:
                self._open(n + 1, end)
        elif (start := self._start_of.pop(n, None)) is not None:  # n ends its run
            self._close(start, n - 1)
        else:  # n is inside a run, or unused: find the run that starts last at or before n
            start = next(self._starts.irange(maximum=n, reverse=True), None)
            if start is None or self._end_of[start] < n:
                raise KeyError(n)
            end = self._end_of[start]
            self._close(start, n - 1)
            self._open(n + 1, end)
        self._count -= 1

    def _open(self, start: int, end: int) -> None:
        """Record the new run ``start..end``."""
        self._starts.add(start)
        self._end_of[start] = end
        self._start_of[end] = start

    def _close(self, start: int, end: int) -> None:
        """Move the end of the run beginning at `start` to `end`."""
        self._end_of[start] = end
        self._start_of[end] = start

    def runs(self) -> list[tuple[int, int]]:
        """The runs ``(start, end)`` in ascending order, for tests and debugging."""
        return [(start, self._end_of[start]) for start in self._starts]
