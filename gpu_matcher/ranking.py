"""Ranking and ``distinct`` (MATCHING.md steps 4-5): the one place that orders candidates.

Works on host NumPy arrays of one *inter group* at a time: the exact search hands groups over in
descending ``inter`` and stops as soon as ``top`` results are kept.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np


def group_order(union: np.ndarray, length: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Order inside one inter group: key ``(union, -length, start)`` ascending."""
    return np.lexsort((start, -length, union))


@dataclass
class DistinctWalk:
    """Walks candidates in rank order, keeping those that overlap no kept one (or all, if not distinct)."""

    top: int
    distinct: bool = True
    kept: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    _starts: list[int] = field(default_factory=list)     # kept intervals, sorted by start
    _ends: list[int] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return len(self.kept) >= self.top

    def kept_intervals(self) -> tuple[np.ndarray, np.ndarray]:
        """Starts and ends (int64, sorted by start) of the kept results that later ones may not overlap:
        all of them with ``distinct``, none without."""
        return np.asarray(self._starts, dtype=np.int64), np.asarray(self._ends, dtype=np.int64)

    def _overlaps(self, a: int, b: int) -> bool:
        # Kept intervals are disjoint, so sorted by start they are sorted by end as well: of those
        # starting at or before b, only the last can reach a.
        i = bisect.bisect_right(self._starts, b)
        return i > 0 and self._ends[i - 1] >= a

    def feed(self, start: np.ndarray, end: np.ndarray, inter: np.ndarray, union: np.ndarray) -> None:
        """Feed one group, already in rank order."""
        if not self.distinct:
            room = self.top - len(self.kept)
            for a, b, i, u in zip(start[:room].tolist(), end[:room].tolist(),
                                  inter[:room].tolist(), union[:room].tolist()):
                self.kept.append((a, b, b - a + 1, i, u))
            return
        for a, b, i, u in zip(start.tolist(), end.tolist(), inter.tolist(), union.tolist()):
            if self.full:
                return
            if self._overlaps(a, b):
                continue
            self.kept.append((a, b, b - a + 1, i, u))
            j = bisect.bisect_left(self._starts, a)
            self._starts.insert(j, a)
            self._ends.insert(j, b)

