"""``MetaTrack``: one annotation track of a project, a value per step, read from disk when asked.

The loader (``gpu_matcher.project``) makes one per ``meta`` entry; genome tracks (intervals, bigWig) are
subclasses in ``gpu_matcher.genome.readers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np


@dataclass
class MetaTrack:
    """One annotation track: a value per step (or a (T, K) top-K block for ``wordvec``)."""

    name: str
    kind: str                      # discrete | scalar | wordvec
    dataset: h5py.Dataset
    labels: dict[int, str] | None = None
    weights: h5py.Dataset | None = None
    index: h5py.Dataset | None = None
    value_range: tuple[float, float] | None = None

    def values(self, start: int, stop: int) -> np.ndarray:
        """Values for steps ``[start, stop)``: ``(n,)``, or ``(n, K)`` ids for wordvec tracks."""
        if self.index is not None:
            rows = np.asarray(self.index[start:stop]).astype(np.int64)
            return _take_rows(self.dataset, rows)
        return np.asarray(self.dataset[start:stop])

    def weights_for(self, start: int, stop: int) -> np.ndarray | None:
        if self.weights is None:
            return None
        if self.index is not None:
            return _take_rows(self.weights, np.asarray(self.index[start:stop]).astype(np.int64))
        return np.asarray(self.weights[start:stop])

    def label(self, value: Any) -> str:
        if self.labels is None:
            return str(value)
        return self.labels.get(int(value), str(value))

    def distinct_values(self, chunk: int | None = None) -> np.ndarray:
        """The sorted values that occur in the track (a discrete track's labels when it has no dictionary),
        read in chunks of ``chunk`` steps (default ``overview.OVERVIEW_CHUNK``): never the whole timeline
        in memory at once."""
        from gpu_matcher.overview import OVERVIEW_CHUNK

        chunk = chunk or OVERVIEW_CHUNK
        n = len(self.index if self.index is not None else self.dataset)
        found = np.zeros(0, dtype=np.int64)
        for a in range(0, n, chunk):
            found = np.union1d(found, np.unique(np.asarray(self.values(a, min(n, a + chunk))).astype(np.int64)))
        return found

    def overview(self, start: int, stop: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin ``(min, max)`` of the values over steps ``[start, stop)`` (clipped to the timeline),
        read in chunks (``gpu_matcher.overview``); a wordvec track reduces its first column."""
        from gpu_matcher.overview import reduce_dense

        def read(a: int, b: int) -> np.ndarray:
            values = self.values(a, b)
            return values[:, 0] if values.ndim == 2 else values

        return reduce_dense(read, max(0, start), min(len(self.index if self.index is not None
                                                              else self.dataset), stop), bins)


def _take_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    if rows.size == 0:
        return np.zeros((0,) + dataset.shape[1:], dtype=dataset.dtype)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    block = np.asarray(dataset[lo:hi])
    return block[rows - lo]
