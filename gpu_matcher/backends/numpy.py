"""The NumPy backend: key layouts as host arrays or memory maps; the selected cells as cached bit rows
(``gpu_matcher.bitmatrix``); verification by gathered rows."""

from __future__ import annotations

import numpy as np

from gpu_matcher import bitmatrix
from gpu_matcher.backends.base import Capability, batches, pack_bits_rows, segment_reduce
from gpu_matcher.backends.search import LevelEvents, SearchBackend
from gpu_matcher.source import Layout, Source

#: Rows x cells gathered at once during verification (bounds the temporary memory to ~this many bytes).
GATHER_BUDGET = 1 << 25


class NumpyBackend(SearchBackend[Layout, LevelEvents]):
    """The search on the host: ``source.Layout`` (key arrays or memory maps) as the layout."""

    name = "numpy"
    xp = np
    capabilities = frozenset({Capability.PER_CELL_KEYS, Capability.STREAMING})

    bit_rows: bitmatrix.BitRowCache = bitmatrix.BIT_ROWS      # the process's cache, unless given one

    def __init__(self, bit_rows: bitmatrix.BitRowCache | None = None):
        if bit_rows is not None:
            self.bit_rows = bit_rows

    def prepare(self, source: Source) -> Layout:
        return source.layout()

    def row_keys(self, layout: Layout, source: Source, start: int, stop: int) -> np.ndarray:
        return layout.keys_rows.block(start, stop)

    def on_columns(self, layout, cells, key_threshold):
        store = layout.keys_cells
        return bitmatrix.unpack_bits(self.bit_rows.rows(store, cells, key_threshold).array(), store.shape[1])

    # --- the selected cells as bit rows (bitmatrix); base.Backend's (T, W) words are not made ------
    def selected_words(self, layout, cells, key_threshold):
        """The selected cells' cached bit rows (``bitmatrix.SelectedBits``), not per-step words."""
        store = layout.keys_cells
        return bitmatrix.SelectedBits.of(self.bit_rows.rows(store, cells, key_threshold), int(store.shape[1]))

    def step_counts(self, words):
        if isinstance(words, bitmatrix.SelectedBits):
            return bitmatrix.StepCounts(words)         # integers made only if read
        return super().step_counts(words)

    def match_levels(self, words, n, bounds):
        if isinstance(n, bitmatrix.StepCounts):
            return bitmatrix.level_bits(n, bounds)
        return super().match_levels(words, n, bounds)

    def level_runs(self, events, level, query):
        if not isinstance(events, bitmatrix.LevelBits):
            return super().level_runs(events, level, query)
        a, b = bitmatrix.level_runs_from_bits(events, level)
        keep = query.keeps_length(b - a + 1)
        return a[keep], b[keep]

    def inter_counts(self, words, a, b, lo, hi):
        if isinstance(words, bitmatrix.SelectedBits):
            return bitmatrix.window_counts(words.rows, a, b, lo, hi)
        return super().inter_counts(words, a, b, lo, hi)

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
