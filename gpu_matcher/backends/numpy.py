"""The NumPy backend: key layouts as host arrays or memory maps; verification by gathered rows."""

from __future__ import annotations

import numpy as np

from gpu_matcher.backends.base import Backend, batches, margin_rows

#: Rows x cells gathered at once during verification (bounds the temporary memory to ~this many bytes).
GATHER_BUDGET = 1 << 25


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def prepare(self, source):
        return source.layout()

    def on_columns(self, layout, cells, key_threshold):
        return layout.keys_cells[np.asarray(cells)] >= key_threshold

    def active_counts(self, layout, key_threshold, start, end, margin_lo, margin_hi):
        rows_keys = layout.keys_rows
        D = rows_keys.shape[1]
        out = np.zeros(start.size, dtype=np.int64)
        span = (margin_hi - margin_lo).astype(np.int64)
        for part in batches(span, max(1, GATHER_BUDGET // max(1, D))):
            s, e, lo, hi = start[part], end[part], margin_lo[part], margin_hi[part]
            run_rows, run_off, m_rows, m_off, has_margin = margin_rows(s, e, lo, hi)
            active = np.logical_and.reduceat(rows_keys[run_rows] >= key_threshold, run_off, axis=0)
            if m_rows.size:
                margin_on = np.logical_or.reduceat(rows_keys[m_rows] >= key_threshold, m_off, axis=0)
                active[has_margin] &= ~margin_on
            out[part] = active.sum(axis=1)
        return out
