"""The NumPy backend: key layouts as host arrays or memory maps; the selected cells as cached bit rows
(``gpu_matcher.bitmatrix``); verification by gathered rows."""

from __future__ import annotations

import numpy as np

from gpu_matcher import bitmatrix
from gpu_matcher.backends.base import Capability, batches, pack_bits_rows, segment_reduce
from gpu_matcher.backends.search import LevelEvents, SearchBackend
from gpu_matcher.source import Layout, Source
from gpu_matcher.targets import as_mask

#: Rows x cells gathered at once during verification (bounds the temporary memory to ~this many bytes).
GATHER_BUDGET = 1 << 25
#: Bytes per block of the m-of-k scan (``level_histograms``: bounds its temporaries whatever T and D are).
BLOCK_BYTES = 16 << 20
#: Largest (T, k) table of per-cell levels held at once; beyond it the scan streams row-major blocks.
LEVELS_BYTES = 256 << 20


def level_dtype(J: int) -> np.dtype:
    """The per-cell level's dtype for ``J`` thresholds (a level is 0..J)."""
    return np.dtype(np.uint8 if J < 255 else np.uint16)


def key_levels(bounds_row: np.ndarray, keys: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = searchsorted(bounds_row, keys, side="right")``: how many of the non-decreasing bounds each
    key reaches. Keys of 16 bits or fewer (float16 sources) go through a table of all 2^16 keys (a
    gather instead of a binary search per key: the same integers, several times faster)."""
    if keys.dtype.itemsize <= 2:
        table = np.searchsorted(bounds_row, np.arange(1 << (8 * keys.dtype.itemsize)), side="right")
        np.take(table.astype(out.dtype), keys, out=out)
    else:
        out[:] = np.searchsorted(bounds_row, keys, side="right")


def cell_levels(keys: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """``(n, k)`` levels of ``(n, k)`` keys of the selected cells against ``bounds`` ``(k, J)``
    (``key_levels`` per cell)."""
    levels = np.empty(keys.shape, dtype=level_dtype(bounds.shape[1]))
    column = np.empty(keys.shape[0], dtype=levels.dtype)
    for i in range(keys.shape[1]):
        key_levels(bounds[i], np.ascontiguousarray(keys[:, i]), column)
        levels[:, i] = column
    return levels


class LevelHistogram:
    """``(k, 2, J + 1)`` int64, accumulated block by block: for each m (row k - m), how many steps
    (without / with the target) have their m-th highest level equal to l."""

    def __init__(self, k: int, J: int):
        self.k, self.J = int(k), int(J)
        self.flat = np.zeros(self.k * 2 * (self.J + 1), dtype=np.int64)
        self._offsets = (np.arange(self.k, dtype=np.int64) * 2 * (self.J + 1))[None, :]

    def add(self, levels: np.ndarray, inside: np.ndarray) -> None:
        index = np.sort(levels, axis=1).astype(np.int64)    # column k - m: the m-th highest level
        index += self._offsets
        index += np.asarray(inside, dtype=np.int64)[:, None] * (self.J + 1)
        self.flat += np.bincount(index.ravel(), minlength=self.flat.size)

    def add_blocks(self, levels: np.ndarray, inside: np.ndarray) -> None:
        """``add`` in blocks of ``BLOCK_BYTES`` (the sort's int64 temporaries)."""
        block = max(1, BLOCK_BYTES // (8 * max(1, self.k)))
        for a in range(0, levels.shape[0], block):
            self.add(levels[a:a + block], inside[a:a + block])

    @property
    def array(self) -> np.ndarray:
        return self.flat.reshape(self.k, 2, self.J + 1)


class NumpyBackend(SearchBackend[Layout, LevelEvents]):
    """The search on the host: ``source.Layout`` (key arrays or memory maps) as the layout."""

    name = "numpy"
    xp = np
    capabilities = frozenset({Capability.PER_CELL_KEYS, Capability.STREAMING, Capability.CORPUS_SCANS,
                              Capability.LEVEL_HISTOGRAMS, Capability.COUNT_OVERVIEW})

    bit_rows: bitmatrix.BitRowCache = bitmatrix.BIT_ROWS      # the process's cache, unless given one

    def __init__(self, bit_rows: bitmatrix.BitRowCache | None = None):
        if bit_rows is not None:
            self.bit_rows = bit_rows

    def prepare(self, source: Source) -> Layout:
        return source.layout()

    def row_keys(self, layout: Layout, source: Source, start: int, stop: int) -> np.ndarray:
        return layout.keys_rows.block(start, stop)

    def layout_shape(self, layout: Layout) -> tuple[int, int]:
        D, T = layout.keys_cells.shape
        return int(T), int(D)

    # --- the statistics' corpus scans: one cell row of the cell-major keys at a time (no D x T temporaries;
    # not the bit-row cache, which a scan over all D cells would flush) -------------------------------
    def _cell_rows(self, layout: Layout, cells):
        store = layout.keys_cells
        for j, c in enumerate(np.asarray(cells, dtype=np.int64).tolist()):
            yield j, c, store.take(np.array([c]))[0]

    def threshold_levels(self, layout, cells, keys):
        T, _D = self.layout_shape(layout)
        if np.all(keys == keys[:, :1]):
            # One key per threshold (scale none): searchsorted is monotone, so one search of the least key.
            least = None
            for _j, _c, row in self._cell_rows(layout, cells):
                least = row if least is None else np.minimum(least, row, out=least)
            levels = np.empty(0 if least is None else least.size, dtype=np.int32)
            if least is not None:
                key_levels(keys[:, 0], least, levels)
            return levels
        levels = np.full(T, keys.shape[0], dtype=np.int32)
        found = np.empty(T, dtype=np.int32)
        for j, _c, row in self._cell_rows(layout, cells):
            key_levels(keys[:, j], row, found)
            np.minimum(levels, found, out=levels)
        return levels

    def cell_on_counts(self, layout, key_threshold, target):
        T, D = self.layout_shape(layout)
        inside, total = np.zeros(D, dtype=np.int64), np.zeros(D, dtype=np.int64)
        if key_threshold is None:
            return inside, total
        target = as_mask(target, T)
        per_cell = np.ndim(key_threshold) > 0
        for _j, c, row in self._cell_rows(layout, range(D)):
            on = row >= (key_threshold[c] if per_cell else key_threshold)
            total[c] = np.count_nonzero(on)
            inside[c] = np.count_nonzero(on[target])
        return inside, total

    def level_histograms(self, layout, cells, bounds, target) -> np.ndarray:
        """``(k, 2, J + 1)`` int64 (``LevelHistogram``) of the selected cells' levels against ``bounds``
        ``(k, J)`` (non-decreasing keys along each row), split by ``target``: a cell is on at the j-th
        bound iff its level is ``> j``, so at least m cells are on iff the m-th highest level is ``> j``,
        and one pass gives every (m, threshold) of ``gpu_matcher.hypotheses.at_least_grid``.

        The levels of the k cells are read from the cell-major keys (k rows, not D) when they fit
        ``LEVELS_BYTES``; otherwise the row-major keys are streamed in blocks of ``BLOCK_BYTES``."""
        T, D = self.layout_shape(layout)
        cells = np.asarray(cells, dtype=np.int64)
        bounds = np.asarray(bounds)
        k, J = bounds.shape
        inside = as_mask(target, T)
        hist = LevelHistogram(k, J)
        if k * T * level_dtype(J).itemsize <= LEVELS_BYTES:
            levels = np.empty((T, k), dtype=level_dtype(J))
            column = np.empty(T, dtype=levels.dtype)
            for i, _c, row in self._cell_rows(layout, cells):
                key_levels(bounds[i], row, column)
                levels[:, i] = column
            hist.add_blocks(levels, inside)
            return hist.array
        block = max(1, BLOCK_BYTES // max(1, D * layout.keys_rows.dtype.itemsize))
        for a in range(0, T, block):
            b = min(T, a + block)
            hist.add(cell_levels(layout.keys_rows.block(a, b)[:, cells], bounds), inside[a:b])
        return hist.array

    def span_patterns(self, layout, key_threshold, starts, ends, lo, hi):
        T, D = self.layout_shape(layout)
        P = int(np.size(starts))
        out = np.zeros((P, D), dtype=bool)
        if key_threshold is None or P == 0:
            return out
        length = ends + 1 - starts
        per_cell = np.ndim(key_threshold) > 0
        cs = np.zeros(T + 1, dtype=np.int32)
        for _j, c, row in self._cell_rows(layout, range(D)):
            np.cumsum(row >= (key_threshold[c] if per_cell else key_threshold), out=cs[1:])
            inside = cs[ends + 1] - cs[starts]
            margin = (cs[starts] - cs[lo]) + (cs[hi] - cs[ends + 1])
            out[:, c] = (inside == length) & (margin == 0)
        return out

    def on_columns(self, layout, cells, key_threshold):
        store = layout.keys_cells
        return bitmatrix.unpack_bits(self.bit_rows.rows(store, cells, key_threshold).array(), store.shape[1])

    def count_overview(self, layout, cells, key_threshold, start, stop, bins):
        """Per-bin ``(min, max)`` of n(t) over ``[start, stop)`` from the selected cells' cached bit rows
        (k cells, not D: a match of the same S and θ has usually made them), unpacked a chunk of
        ``overview.reduce_dense`` at a time; the bins are ``gpu_matcher.overview``'s."""
        from gpu_matcher import overview

        store = layout.keys_cells
        words = self.bit_rows.rows(store, np.asarray(cells, dtype=np.int64), key_threshold).array()

        def counts(c0: int, c1: int) -> np.ndarray:
            w0, w1 = c0 >> 6, (c1 + 63) >> 6
            on = bitmatrix.unpack_bits(words[:, w0:w1], (w1 - w0) * 64)
            return on.sum(axis=0, dtype=np.int32)[c0 - (w0 << 6):c1 - (w0 << 6)]

        return overview.reduce_dense(counts, start, stop, bins, chunk=overview.OVERVIEW_CHUNK)

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
