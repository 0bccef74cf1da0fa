"""The NumPy backend: key layouts as host arrays or memory maps; verification by gathered rows."""

from __future__ import annotations

import numpy as np

from gpu_matcher.backends.base import Capability, batches, pack_bits_rows, pack_rows, segment_reduce
from gpu_matcher.backends.search import LevelEvents, SearchBackend
from gpu_matcher.source import Layout, Source

#: Rows x cells gathered at once during verification (bounds the temporary memory to ~this many bytes).
GATHER_BUDGET = 1 << 25


class NumpyBackend(SearchBackend[Layout, LevelEvents]):
    """The search on the host: ``source.Layout`` (key arrays or memory maps) as the layout."""

    name = "numpy"
    xp = np
    capabilities = frozenset({Capability.PER_CELL_KEYS, Capability.STREAMING})

    def prepare(self, source: Source) -> Layout:
        return source.layout()

    def row_keys(self, layout: Layout, source: Source, start: int, stop: int) -> np.ndarray:
        return layout.keys_rows.block(start, stop)

    @staticmethod
    def _on_rows(layout, cells, key_threshold):
        """Each selected cell's on-row over all T, one at a time (one key, or one per cell:
        ``Capability.PER_CELL_KEYS``)."""
        cells = np.asarray(cells, dtype=np.int64)
        per_cell = np.ndim(key_threshold) > 0
        for i, c in enumerate(cells.tolist()):
            yield layout.keys_cells.rows_at_least(cells[i:i + 1], key_threshold[c] if per_cell
                                                  else key_threshold)[0]

    def on_columns(self, layout, cells, key_threshold):
        out = np.empty((len(cells), layout.keys_cells.shape[1]), dtype=bool)
        for i, row in enumerate(self._on_rows(layout, cells, key_threshold)):
            out[i] = row
        return out

    def selected_words(self, layout, cells, key_threshold):
        """The selected cells compared and packed one cell row at a time (no (k, T) array)."""
        return pack_rows(self._on_rows(layout, cells, key_threshold), len(cells), layout.keys_cells.shape[1])

    def active_counts(self, layout, key_threshold, start, end, margin_lo, margin_hi):
        D = layout.keys_rows.shape[1]
        out = np.zeros(start.size, dtype=np.int64)
        span = (margin_hi - margin_lo).astype(np.int64)
        for part in batches(span, max(1, GATHER_BUDGET // max(1, D))):
            s, e, lo, hi = start[part], end[part], margin_lo[part], margin_hi[part]
            # Windows [lo, hi) of all candidates, back to back, as packed on-bits over all D cells.
            bits = pack_bits_rows(layout.keys_rows.spans(lo, hi) >= key_threshold)
            first = np.cumsum(hi - lo) - (hi - lo)
            run0, run1 = first + (s - lo), first + (e + 1 - lo)
            active = segment_reduce(np.bitwise_and, bits, run0, run1)
            active &= ~segment_reduce(np.bitwise_or, bits, first, run0)
            active &= ~segment_reduce(np.bitwise_or, bits, run1, first + (hi - lo))
            out[part] = np.bitwise_count(active).sum(axis=1, dtype=np.int64)
        return out
