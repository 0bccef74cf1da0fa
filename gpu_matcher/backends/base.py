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
from gpu_matcher.source import _ranges

#: Candidates of an inter group verified in the first batch (``Backend._walk_group``).
VERIFY_FIRST = 128


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
        cells = np.asarray(query.cells, dtype=np.int64)
        if query.key_threshold is None or cells.size == 0 or query.top <= 0:
            return []
        k = int(cells.size)
        bounds = np.asarray(query.bounds, dtype=np.int64)
        T = int(bounds[-1])
        words = self.selected_words(layout, cells, query.key_threshold)    # (T, W) uint: S bits
        n = self.step_counts(words)
        events = self.match_levels(words, n, bounds)

        walk = DistinctWalk(top=query.top, distinct=query.distinct)
        pool = _Pool()
        prev_a = prev_b = np.zeros(0, dtype=np.int64)
        next_group = k                     # the next inter group to rank and walk
        max_n = int(self.to_host(n.max())) if T else 0
        for level in range(k, 0, -1):
            if level > max_n:
                continue
            level_a, level_b = self.level_runs(events, level, query)
            # A run seen at a higher level is nested in a run of this level; equal intervals are one
            # candidate, and an equal run at any higher level is equal to one at level + 1.
            a, b = _drop_repeats(level_a, level_b, prev_a, prev_b)
            prev_a, prev_b = level_a, level_b
            if a.size:
                seq = np.searchsorted(bounds, a, side="right") - 1
                lo = np.maximum(a - query.left, bounds[seq])
                hi = np.minimum(b + 1 + query.right, bounds[seq + 1])
                inter = self.inter_counts(words, a, b, lo, hi)
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

    def level_events(self, n, bounds: np.ndarray):
        """Where n rises and falls, once per query: a run of ``n >= m`` starts at a rise from below m
        to at least m (a sequence start counts as a rise from 0) and ends at a fall likewise.

        Returns host arrays ``(rise, rise_from, rise_to, fall, fall_to, fall_from)``.
        """
        xp = self.xp
        T = int(bounds[-1])
        heads = xp.asarray(bounds[1:-1])                 # sequence starts after the first
        up = n[1:] > n[:-1]                              # up[t-1]: n rises from t-1 to t
        down = n[:-1] > n[1:]                            # down[t]: n falls from t to t+1
        if heads.size:
            up[heads - 1] = n[heads] > 0
            down[heads - 1] = n[heads - 1] > 0
        rise = xp.flatnonzero(up) + 1
        fall = xp.flatnonzero(down)
        if bool(n[0] > 0):
            rise = xp.concatenate([xp.zeros(1, dtype=rise.dtype), rise])
        if bool(n[T - 1] > 0):
            fall = xp.concatenate([fall, xp.full(1, T - 1, dtype=fall.dtype)])
        rise_from = n[rise - 1]
        fall_to = n[xp.minimum(fall + 1, T - 1)]
        starts = xp.asarray(bounds[:-1])
        ends = xp.asarray(bounds[1:] - 1)
        rise_from[_positions_of(xp, starts, rise)] = 0   # a sequence start rises from 0
        fall_to[_positions_of(xp, ends, fall)] = 0       # a sequence end falls to 0
        host = self.to_host
        return (host(rise).astype(np.int64), host(rise_from), host(n[rise]),
                host(fall).astype(np.int64), host(fall_to), host(n[fall]))

    def match_levels(self, words, n, bounds: np.ndarray):
        """What ``level_runs`` reads, once per query: ``level_events(n, bounds)``, unless a backend
        reads the runs from ``words`` directly (NumPy: from bit-sliced counts)."""
        return self.level_events(n, bounds)

    @staticmethod
    def level_runs(events, level: int, query: MatchQuery):
        """Maximal runs ``[a, b]`` of ``n >= level``, cut at sequence edges, filtered by length.

        Host arrays, sorted by ``a``.
        """
        rise, rise_from, rise_to, fall, fall_to, fall_from = events
        a = rise[(rise_from < level) & (rise_to >= level)]
        b = fall[(fall_to < level) & (fall_from >= level)]
        return keep_lengths(a, b, query)

    # --- array primitives with NumPy implementations (a GPU backend overrides them) ------------
    def selected_words(self, layout, cells: np.ndarray, key_threshold) -> Any:
        """``(T, W)`` packed bits of the selected cells: ``pack_steps(on_columns(...))`` (a backend may
        fuse the two)."""
        on = self.on_columns(layout, cells, key_threshold)
        return self.pack_steps(on)

    def pack_steps(self, on) -> Any:
        """``(k, T)`` bool -> ``(T, W)`` words (``word_dtype(k)``): bit j % 64 of word j // 64 of step t
        is set when selected cell j is on."""
        k, T = on.shape
        return pack_rows(iter(on), k, T)

    def step_counts(self, words) -> Any:
        """n(t): how many selected cells are on at each step."""
        counts = np.bitwise_count(words)
        return counts[:, 0] if counts.shape[1] == 1 else counts.sum(axis=1, dtype=np.int32)

    def inter_counts(self, words, a, b, lo, hi) -> np.ndarray:
        """``inter`` per candidate: selected cells on over ``[a, b]``, off over ``[lo, a)``, ``(b, hi)``."""
        active = segment_reduce(np.bitwise_and, words, a, b + 1)
        active &= ~segment_reduce(np.bitwise_or, words, lo, a)
        active &= ~segment_reduce(np.bitwise_or, words, b + 1, hi)
        return np.bitwise_count(active).sum(axis=1, dtype=np.int64)

    def _walk_group(self, layout, query: MatchQuery, pool: "_Pool", inter_value: int, k: int,
                    walk: DistinctWalk) -> None:
        """Verify one inter group over all D cells and walk it in rank order ``(union, -length, a)``.

        ``union = |A| + k - inter >= k`` since ``A`` holds the group's ``inter`` selected cells. So the
        candidates are verified in ``(-length, a)`` order, a batch at a time (``VERIFY_FIRST``, then four
        times more each time): a verified candidate with ``union == k`` ranks before every candidate not
        yet verified, so it is walked at once, and once the walk is full the rest of the group is never
        verified. The other candidates are walked, in rank order, once all are verified.
        """
        idx = pool.group(inter_value)
        if idx.size == 0:
            return
        a, b, lo, hi = pool.a[idx], pool.b[idx], pool.lo[idx], pool.hi[idx]
        length = b - a + 1
        inter = np.full(idx.size, inter_value)
        by_length = np.lexsort((a, -length))
        union = np.empty(idx.size, dtype=np.int64)
        done, batch = 0, VERIFY_FIRST
        while done < idx.size:
            part = by_length[done:done + batch]
            active = self.active_counts(layout, query.key_threshold, a[part], b[part], lo[part], hi[part])
            union[part] = np.asarray(active, dtype=np.int64) + (k - inter_value)
            least = part[union[part] == k]
            walk.feed(a[least], b[least], inter[least], union[least])
            if walk.full:
                return
            done += part.size
            batch *= 4
        rest = np.flatnonzero(union > k)
        order = rest[group_order(union[rest], length[rest], a[rest])]
        walk.feed(a[order], b[order], inter[order], union[order])


def keep_lengths(a: np.ndarray, b: np.ndarray, query: MatchQuery):
    """The runs ``[a, b]`` whose length the query asks for (``phrase_length``, else ``min_length``)."""
    length = b - a + 1
    keep = (length == query.phrase_length) if query.phrase_length > 0 else (length >= query.min_length)
    return a[keep], b[keep]


def _positions_of(xp, few, many):
    """Indices into the sorted array ``many`` of those of ``few`` that occur in it."""
    if many.size == 0:
        return xp.zeros(0, dtype=xp.int64)
    pos = xp.minimum(xp.searchsorted(many, few), many.size - 1)
    return pos[many[pos] == few]


def _drop_repeats(a: np.ndarray, b: np.ndarray, prev_a: np.ndarray, prev_b: np.ndarray):
    """Runs ``[a, b]`` that are not also runs of the previous level (both lists sorted, disjoint)."""
    if prev_a.size == 0 or a.size == 0:
        return a, b
    pos = np.minimum(np.searchsorted(prev_a, a), prev_a.size - 1)
    fresh = (prev_a[pos] != a) | (prev_b[pos] != b)
    return a[fresh], b[fresh]


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


def word_dtype(k: int) -> np.dtype:
    """The narrowest unsigned word holding min(k, 64) bits (narrow words make reductions cheaper)."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if k <= np.dtype(dt).itemsize * 8:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def pack_rows(rows, k: int, T: int) -> np.ndarray:
    """``k`` boolean rows of length ``T`` (any iterable, consumed once, in order) -> ``(T, W)`` words of
    ``word_dtype(k)``: bit j % 64 of word j // 64 is row j. Eight rows are combined into one byte
    column at a time, so each row is read once and no (k, T) array needs to exist."""
    dtype = word_dtype(k)
    W = -(-k // 64)
    out = np.zeros((T, dtype.itemsize * W), dtype=np.uint8)       # little-endian bytes of the words
    byte = np.empty(T, dtype=np.uint8)
    tmp = np.empty(T, dtype=np.uint8)
    j = -1
    for j, row in enumerate(rows):
        bit = j % 8
        if bit == 0:
            np.copyto(byte, np.asarray(row, dtype=bool).view(np.uint8))
        else:
            np.left_shift(np.asarray(row, dtype=bool).view(np.uint8), bit, out=tmp)
            np.bitwise_or(byte, tmp, out=byte)
        if bit == 7 or j == k - 1:
            out[:, j // 8] = byte
    if j != k - 1:
        raise ValueError(f"pack_rows: {j + 1} rows given, {k} expected")
    return out.view(dtype.newbyteorder("<")).astype(dtype, copy=False)


def pack_bits_rows(on: np.ndarray) -> np.ndarray:
    """``(R, C)`` bool -> ``(R, ceil(C / 64))`` uint64, bit ``c % 64`` of word ``c // 64`` = column c."""
    packed = np.packbits(on, axis=1, bitorder="little")
    width = -(-on.shape[1] // 64) * 8
    if packed.shape[1] != width:
        packed = np.concatenate(
            [packed, np.zeros((packed.shape[0], width - packed.shape[1]), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(packed).view(np.uint64)


def segment_reduce(op, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``op``-reduce ``rows[starts[i]:ends[i]]`` for every i (any order, overlaps allowed); an empty
    segment gives 0. ``ends`` may equal ``len(rows)``."""
    out = np.zeros((starts.size,) + rows.shape[1:], dtype=rows.dtype)
    length = ends - starts
    full = length > 0
    if not full.any():
        return out
    s, n = starts[full], length[full]
    longest = int(n.max())
    if longest <= 4:
        # Short segments (margins, short runs): a few gathers, no index arrays.
        acc = rows[s]
        for j in range(1, longest):
            more = np.flatnonzero(n > j)
            acc[more] = op(acc[more], rows[s[more] + j])
        out[full] = acc
        return out
    total = int(n.sum())
    if total <= rows.shape[0] // 8:
        # Few rows: gather them back to back, so the reduction touches only those rows.
        offsets = np.cumsum(n) - n
        out[full] = op.reduceat(rows[_ranges(s, n)], offsets, axis=0)
        return out
    # Most rows: reduce in place; reduceat also reduces the gaps between segments (discarded).
    idx = np.empty(2 * s.size, dtype=np.int64)
    idx[0::2], idx[1::2] = s, s + n
    if idx[-1] == rows.shape[0]:
        idx = idx[:-1]                         # the last segment runs to the end anyway
    if idx.size and idx.max() >= rows.shape[0]:
        rows = np.concatenate([rows, np.zeros((1,) + rows.shape[1:], dtype=rows.dtype)])
    out[full] = op.reduceat(rows, idx, axis=0)[0::2]
    return out


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
