"""What a match asks and answers, and the small definitions of ``../shared/MATCHING.md`` that every
implementation shares: the defaults, the length filter, margins clipped to a sequence.

One place for each, so the engine, the backends, the shard protocol and the statistics cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from gpu_matcher.threshold import Threshold

#: Matches returned by default (the app's match view, ``lstmvis match``).
DEFAULT_TOP = 50
#: The shortest run that is a match by default (MATCHING.md "Match").
DEFAULT_MIN_LENGTH = 2

#: A resolved threshold: one stored-dtype key for every cell, a ``(D,)`` array of keys (one per cell),
#: or None when nothing is on (``gpu_matcher.source.key_threshold``, ``Engine.resolve``).
Key = Union[np.integer, np.ndarray, None]


@dataclass(frozen=True)
class MatchQuery:
    """One match request in engine terms: cells resolved, the threshold spec and its resolved key(s)."""

    cells: tuple[int, ...]
    key_threshold: Key
    bounds: np.ndarray                 # sequence starts with T appended (host, int64)
    left: int = 0
    right: int = 0
    top: int = DEFAULT_TOP
    min_length: int = DEFAULT_MIN_LENGTH
    phrase_length: int = 0
    distinct: bool = True
    threshold: Threshold | None = None   # the spec the keys were resolved from (None: keys given as is)

    @property
    def per_cell(self) -> bool:
        """True when the query carries one key per cell (needs ``Capability.PER_CELL_KEYS``)."""
        return self.key_threshold is not None and np.ndim(self.key_threshold) > 0

    @property
    def answers_nothing(self) -> bool:
        """True when no match can exist: nothing is on, no cell, or ``top`` is 0."""
        return self.key_threshold is None or not self.cells or self.top <= 0

    def keeps_length(self, length):
        """The length filter (MATCHING.md): exactly ``phrase_length`` when it is set, else at least
        ``min_length``. Elementwise on any array module's arrays."""
        return (length == self.phrase_length) if self.phrase_length > 0 else (length >= self.min_length)


@dataclass(frozen=True)
class MatchRow:
    start: int
    end: int
    length: int
    inter: int
    union: int


def clip_margins(bounds: np.ndarray, start: np.ndarray, end: np.ndarray, left: int,
                 right: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows ``[lo, hi)`` around runs ``[start, end]``: ``left`` steps before and ``right`` after,
    clipped to the run's sequence (``bounds``: sequence starts with T appended). Margins never cross a
    sequence edge (MATCHING.md)."""
    bounds = np.asarray(bounds, dtype=np.int64)
    start, end = np.asarray(start, dtype=np.int64), np.asarray(end, dtype=np.int64)
    seq = np.searchsorted(bounds, start, side="right") - 1
    lo = np.maximum(start - int(left), bounds[seq])
    hi = np.minimum(end + 1 + int(right), bounds[seq + 1])
    return lo, hi
