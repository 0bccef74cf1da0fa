"""The Backend interface and the exact match search, written against an array module ``xp``.

``../shared/MATCHING.md`` is the contract. The search processes levels ``m = k .. 1``; after each level
every candidate with ``inter >= m`` has been seen (the spec's lemma), so inter groups ``>= m`` can be
ranked, walked for ``distinct``, and the search stops once ``top`` results are kept. ``inter`` is
computed for every candidate from the ``k`` selected cells only (prefix sums); the verification over
all ``D`` cells (``union``) runs only for the inter groups that the walk reaches.

A backend supplies the array work: ``on_columns`` (the k selected cells over all T), ``active_counts``
(|A| for a batch of candidates, over all D) and the layout it keeps (host memory maps or device arrays).
Everything else here is shared, so NumPy and CuPy return the same answer by construction; the host sees
only candidate arrays and results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.ranking import DistinctWalk, group_order

#: Cells whose prefix sums are kept at once when computing ``inter``.
CELL_CHUNK = 64


@dataclass(frozen=True)
class MatchQuery:
    """One match request in engine terms (cells already resolved, threshold already a key)."""

    cells: tuple[int, ...]
    key_threshold: Any                 # stored-dtype key, or None when nothing is on
    bounds: np.ndarray                 # sequence starts with T appended (host, int64)
    left: int = 0
    right: int = 0
    top: int = 50
    min_length: int = 2
    phrase_length: int = 0
    distinct: bool = True


@dataclass(frozen=True)
class MatchRow:
    start: int
    end: int
    length: int
    inter: int
    union: int


class Backend:
    """Base class: the exact search over an array module. Subclasses provide the layout and kernels."""

    name = "base"
    xp: Any = np

    # --- what a backend implements ------------------------------------------------------------
    def prepare(self, source) -> Any:
        """The source's layout for this backend (cached on the backend or source)."""
        raise NotImplementedError

    def on_columns(self, layout, cells: np.ndarray, key_threshold) -> Any:
        """Boolean ``(k, T)``: is each selected cell on at each step."""
        raise NotImplementedError

    def active_counts(self, layout, key_threshold, start: np.ndarray, end: np.ndarray,
                      margin_lo: np.ndarray, margin_hi: np.ndarray) -> np.ndarray:
        """|A| per candidate over all D: on over ``[start, end]``, off over ``[margin_lo, start)`` and
        ``(end, margin_hi)`` (margins already clipped to the sequence). Host int64 array."""
        raise NotImplementedError

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    def describe(self) -> str:
        return self.name

    # --- the shared exact search ----------------------------------------------------------------
    def match(self, layout, query: MatchQuery) -> list[MatchRow]:
        xp = self.xp
        cells = np.asarray(query.cells, dtype=np.int64)
        if query.key_threshold is None or cells.size == 0 or query.top <= 0:
            return []
        k = int(cells.size)
        bounds = np.asarray(query.bounds, dtype=np.int64)
        T = int(bounds[-1])
        on = self.on_columns(layout, cells, query.key_threshold)          # (k, T) bool, on xp
        n = on.sum(axis=0, dtype=xp.int32)
        seq_start = xp.zeros(T, dtype=bool)
        seq_start[xp.asarray(bounds[:-1])] = True
        seq_end = xp.zeros(T, dtype=bool)
        seq_end[xp.asarray(bounds[1:] - 1)] = True
        inter_of = _InterCounter(xp, on, query.left, query.right)

        walk = DistinctWalk(top=query.top, distinct=query.distinct)
        pool = _Pool()
        seen_keys = np.zeros(0, dtype=np.int64)
        next_group = k                     # the next inter group to rank and walk
        max_n = int(self.to_host(n.max())) if T else 0
        for level in range(k, 0, -1):
            if level > max_n:
                continue
            a, b = self._level_runs(n, level, seq_start, seq_end, query)
            if a.size:
                keys = a * (T + 1) + b
                fresh = ~np.isin(keys, seen_keys, assume_unique=True)
                a, b = a[fresh], b[fresh]
                seen_keys = np.union1d(seen_keys, keys[fresh])
            if a.size:
                seq = np.searchsorted(bounds, a, side="right") - 1
                lo = np.maximum(a - query.left, bounds[seq])
                hi = np.minimum(b + 1 + query.right, bounds[seq + 1])
                inter = inter_of(a, b, lo, hi)
                pool.add(a, b, inter, lo, hi)
            # Every candidate with inter >= level is in the pool now: walk those groups.
            while next_group >= level and not walk.full:
                self._walk_group(layout, query, pool, next_group, k, walk)
                next_group -= 1
            if walk.full:
                break
        while next_group >= 0 and not walk.full:
            self._walk_group(layout, query, pool, next_group, k, walk)
            next_group -= 1
        return [MatchRow(*row) for row in walk.kept]

    def _level_runs(self, n, level: int, seq_start, seq_end, query: MatchQuery):
        """Maximal runs of ``n >= level``, cut at sequence edges, filtered by length (host arrays)."""
        xp = self.xp
        mask = n >= level
        first = mask.copy()
        first[1:] &= ~mask[:-1] | seq_start[1:]
        last = mask.copy()
        last[:-1] &= ~mask[1:] | seq_end[:-1]
        a = self.to_host(xp.flatnonzero(first)).astype(np.int64)
        b = self.to_host(xp.flatnonzero(last)).astype(np.int64)
        length = b - a + 1
        keep = (length == query.phrase_length) if query.phrase_length > 0 else \
            (length >= query.min_length)
        return a[keep], b[keep]

    def _walk_group(self, layout, query: MatchQuery, pool: "_Pool", inter_value: int, k: int,
                    walk: DistinctWalk) -> None:
        idx = pool.group(inter_value)
        if idx.size == 0:
            return
        a, b = pool.a[idx], pool.b[idx]
        active = self.active_counts(layout, query.key_threshold, a, b, pool.lo[idx], pool.hi[idx])
        union = active + (k - inter_value)
        order = group_order(union, b - a + 1, a)
        walk.feed(a[order], b[order], np.full(idx.size, inter_value), union[order])


class _Pool:
    """Candidates seen so far (host arrays), grouped by inter on demand."""

    def __init__(self):
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._cat: tuple[np.ndarray, ...] | None = None

    def add(self, a, b, inter, lo, hi) -> None:
        self._parts.append((a, b, inter, lo, hi))
        self._cat = None

    def _all(self):
        if self._cat is None:
            if not self._parts:
                z = np.zeros(0, dtype=np.int64)
                self._cat = (z, z, z, z, z)
            else:
                self._cat = tuple(np.concatenate(col) for col in zip(*self._parts))
                self._parts = [self._cat]
        return self._cat

    a = property(lambda self: self._all()[0])
    b = property(lambda self: self._all()[1])
    inter = property(lambda self: self._all()[2])
    lo = property(lambda self: self._all()[3])
    hi = property(lambda self: self._all()[4])

    def group(self, inter_value: int) -> np.ndarray:
        return np.flatnonzero(self.inter == inter_value)


class _InterCounter:
    """``inter`` per candidate from the selected cells' prefix sums (chunks of cells, kept if small)."""

    def __init__(self, xp, on, left: int, right: int):
        self.xp, self.on, self.left, self.right = xp, on, left, right
        self._cums: list | None = None
        k, T = on.shape
        if k <= CELL_CHUNK:
            self._cums = [self._cum(0, k)]

    def _cum(self, c0: int, c1: int):
        xp = self.xp
        part = self.on[c0:c1]
        cum = xp.zeros((part.shape[0], part.shape[1] + 1), dtype=xp.int32)
        xp.cumsum(part, axis=1, dtype=xp.int32, out=cum[:, 1:])
        return cum

    def __call__(self, a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        xp = self.xp
        k = self.on.shape[0]
        da, db1, dlo, dhi = (xp.asarray(v) for v in (a, b + 1, lo, hi))
        length = db1 - da
        total = xp.zeros(a.shape[0], dtype=xp.int64)
        chunks = self._cums if self._cums is not None else \
            (self._cum(c0, min(k, c0 + CELL_CHUNK)) for c0 in range(0, k, CELL_CHUNK))
        for cum in chunks:
            at_a, at_b1 = cum[:, da], cum[:, db1]
            ok = (at_b1 - at_a) == length[None, :]
            ok &= (at_a - cum[:, dlo]) == 0
            ok &= (cum[:, dhi] - at_b1) == 0
            total += ok.sum(axis=0)
        return np.asarray(self._host(total), dtype=np.int64)

    def _host(self, array):
        return array.get() if hasattr(array, "get") else array


def margin_rows(start: np.ndarray, end: np.ndarray, margin_lo: np.ndarray, margin_hi: np.ndarray):
    """Row indices of every candidate's run and of its margins, concatenated, with segment offsets.

    Returns ``(run_rows, run_offsets, margin_rows, margin_offsets, has_margin)``; a candidate without
    margin rows gets no segment (``has_margin`` false).
    """
    run_len = end - start + 1
    run_rows = _ranges(start, run_len)
    run_offsets = np.concatenate([[0], np.cumsum(run_len)[:-1]]).astype(np.int64)
    left_len = start - margin_lo
    right_len = margin_hi - (end + 1)
    m_len = left_len + right_len
    has_margin = m_len > 0
    left = _ranges(margin_lo, left_len)
    right = _ranges(end + 1, right_len)
    # Interleave per candidate: left rows then right rows.
    seg_left = np.repeat(np.arange(start.size), left_len)
    seg_right = np.repeat(np.arange(start.size), right_len)
    order = np.argsort(np.concatenate([seg_left, seg_right]), kind="stable")
    m_rows = np.concatenate([left, right])[order]
    m_offsets = np.concatenate([[0], np.cumsum(m_len)[:-1]]).astype(np.int64)[has_margin]
    return run_rows, run_offsets, m_rows, m_offsets, has_margin


def _ranges(first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(first[i], first[i] + length[i])`` for all i."""
    length = np.asarray(length, dtype=np.int64)
    total = int(length.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    seg_start = np.cumsum(length) - length
    return np.repeat(np.asarray(first, dtype=np.int64) - seg_start, length) + np.arange(total)


def batches(length: np.ndarray, row_budget: int) -> list[slice]:
    """Split candidates so that each batch gathers at most ~row_budget rows."""
    csum = np.cumsum(length)
    out, lo = [], 0
    while lo < length.size:
        base = csum[lo - 1] if lo else 0
        hi = int(np.searchsorted(csum, base + row_budget, side="right"))
        hi = max(hi, lo + 1)
        out.append(slice(lo, hi))
        lo = hi
    return out


def check_cells(cells: Sequence[int], D: int, where: str) -> np.ndarray:
    arr = np.asarray(list(cells), dtype=np.int64)
    if arr.size == 0:
        raise ProjectError(f"{where}: the cell set is empty; matching needs at least one cell")
    bad = arr[(arr < 0) | (arr >= D)]
    if bad.size:
        raise ProjectError(f"{where}: cell {int(bad[0])} is out of range [0, {D})")
    return np.unique(arr)
