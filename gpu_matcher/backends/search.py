"""The exact match search, written once against an array module ``xp`` and a few array primitives.

``../shared/MATCHING.md`` is the contract. The search processes levels ``m = k .. 1``; after each level
every candidate with ``inter >= m`` has been seen (the spec's lemma), so inter groups ``>= m`` can be
ranked, walked for ``distinct``, and the search stops once ``top`` results are kept. ``inter`` is
computed for every candidate from the ``k`` selected cells only (prefix sums); the verification over
all ``D`` cells (``union``) runs only for the inter groups that the walk reaches.

The level walk (``LevelWalk``) is the one place that turns n(t) into candidates; ``SearchBackend.match``
runs it over a whole timeline and each shard of ``gpu_matcher.sharded`` over its window, keeping its
interior runs. The statistics' whole-corpus scans (``cell_on_counts``, ``all_on_counts``,
``span_patterns``; ``Capability.CORPUS_SCANS``) are written here against the same primitives. A backend
supplies the array work: ``on_columns`` (the k selected cells over all T),
``active_counts`` (|A| for a batch of candidates, over all D) and its typed layout (host memory maps or
device arrays); NumPy and CuPy therefore return the same answer by construction, and the host sees only
candidate arrays and results.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from gpu_matcher.backends.base import Backend, Key, LayoutT, pack_rows, segment_reduce
from gpu_matcher.query import MatchQuery, MatchRow, clip_margins
from gpu_matcher.ranking import DistinctWalk, group_order
from gpu_matcher.targets import as_mask

#: Candidates of an inter group verified in the first batch (``SearchBackend.match``).
VERIFY_FIRST = 128
#: Cells x steps one block of a corpus scan (``SearchBackend.cell_on_counts``, ``span_patterns``) holds.
SCAN_BUDGET = 1 << 24

EventsT = TypeVar("EventsT")


@dataclass(frozen=True)
class LevelEvents:
    """Where n rises and falls (host arrays), from which every level's runs are cut
    (``SearchBackend.level_events``)."""

    rise: np.ndarray        # steps where n rises (a sequence start counts as a rise from 0)
    rise_from: np.ndarray   # n before each rise
    rise_to: np.ndarray     # n at each rise
    fall: np.ndarray        # steps after which n falls (a sequence end counts as a fall to 0)
    fall_to: np.ndarray     # n after each fall
    fall_from: np.ndarray   # n at each fall

    @property
    def nbytes(self) -> int:
        return sum(int(x.nbytes) for x in (self.rise, self.rise_from, self.rise_to, self.fall,
                                             self.fall_to, self.fall_from))


class SearchBackend(Backend[LayoutT], Generic[LayoutT, EventsT]):
    """A backend made of array primitives; the search over them is shared (``match``, ``LevelWalk``)."""

    xp: Any = np

    # --- what a backend implements ------------------------------------------------------------
    @abstractmethod
    def on_columns(self, layout: LayoutT, cells: np.ndarray, key_threshold: Key) -> Any:
        """Boolean ``(k, T)``: is each selected cell on at each step."""

    @abstractmethod
    def active_counts(self, layout: LayoutT, key_threshold: Key, start: np.ndarray, end: np.ndarray,
                      margin_lo: np.ndarray, margin_hi: np.ndarray) -> np.ndarray:
        """|A| per candidate over all D: on over ``[start, end]``, off over ``[margin_lo, start)`` and
        ``(end, margin_hi)`` (margins already clipped to the sequence). Host int64 array."""

    # --- array primitives with NumPy implementations (a GPU backend overrides them) ------------
    def selected_words(self, layout: LayoutT, cells: np.ndarray, key_threshold: Key) -> Any:
        """``(T, W)`` packed bits of the selected cells: ``pack_steps(on_columns(...))`` (a backend may
        fuse the two)."""
        return self.pack_steps(self.on_columns(layout, cells, key_threshold))

    def pack_steps(self, on) -> Any:
        """``(k, T)`` bool -> ``(T, W)`` words (``word_dtype(k)``): bit j % 64 of word j // 64 of step t
        is set when selected cell j is on."""
        k, T = on.shape
        return pack_rows(iter(on), k, T)

    def step_counts(self, words) -> Any:
        """n(t): how many selected cells are on at each step (the search's n, from the packed bits)."""
        counts = np.bitwise_count(words)
        return counts[:, 0] if counts.shape[1] == 1 else counts.sum(axis=1, dtype=np.int32)

    def level_events(self, n, bounds: np.ndarray) -> EventsT:
        """Where n rises and falls, once per query: a run of ``n >= m`` starts at a rise from below m
        to at least m (a sequence start counts as a rise from 0) and ends at a fall likewise."""
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
        return LevelEvents(host(rise).astype(np.int64), host(rise_from), host(n[rise]),  # type: ignore
                           host(fall).astype(np.int64), host(fall_to), host(n[fall]))

    def match_levels(self, words, n, bounds: np.ndarray) -> Any:
        """What ``level_runs`` reads, once per query: ``level_events(n, bounds)``, unless a backend reads
        the runs from ``words`` directly (NumPy: from bit-sliced counts, ``gpu_matcher.bitmatrix``)."""
        return self.level_events(n, bounds)

    def level_runs(self, events: EventsT, level: int, query: MatchQuery) -> tuple[np.ndarray, np.ndarray]:
        """Maximal runs ``[a, b]`` of ``n >= level``, cut at sequence edges, filtered by length.

        Host arrays, sorted by ``a``.
        """
        ev: LevelEvents = events                         # type: ignore[assignment]
        a = ev.rise[(ev.rise_from < level) & (ev.rise_to >= level)]
        b = ev.fall[(ev.fall_to < level) & (ev.fall_from >= level)]
        keep = query.keeps_length(b - a + 1)
        return a[keep], b[keep]

    def inter_counts(self, words, a, b, lo, hi) -> np.ndarray:
        """``inter`` per candidate: selected cells on over ``[a, b]``, off over ``[lo, a)``, ``(b, hi)``."""
        active = segment_reduce(np.bitwise_and, words, a, b + 1)
        active &= ~segment_reduce(np.bitwise_or, words, lo, a)
        active &= ~segment_reduce(np.bitwise_or, words, b + 1, hi)
        return np.bitwise_count(active).sum(axis=1, dtype=np.int64)

    # --- whole-corpus scans of the statistics (gpu_matcher.stats; Capability.CORPUS_SCANS) -----------
    def layout_shape(self, layout: LayoutT) -> tuple[int, int]:
        """``(T, D)`` of a layout."""
        raise NotImplementedError(f"{self.name}: layout_shape")

    def threshold_levels(self, layout: LayoutT, cells: np.ndarray, keys: np.ndarray) -> Any:
        """``M(t)`` (``xp`` int32, ``(T,)``): the least over the selected cells of how many thresholds
        the cell is on at, ``searchsorted(keys[:, j], key_j(t), side="right")``. ``keys`` ``(n, k)`` (the
        layout's key dtype) holds one key per threshold and selected cell, non-decreasing down each
        column, so every cell is on at threshold ``i`` iff ``i < M(t)``."""
        raise NotImplementedError(f"{self.name}: threshold_levels")

    def scan_blocks(self, D: int, T: int) -> list[np.ndarray]:
        """Cells in blocks of at most ``SCAN_BUDGET`` cell-steps (the scans' temporaries)."""
        step = max(1, SCAN_BUDGET // max(1, T))
        return [np.arange(c, min(D, c + step), dtype=np.int64) for c in range(0, D, step)]

    def cell_on_counts(self, layout: LayoutT, key_threshold: Key,
                       target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every cell: the steps where it is on inside ``target`` (host ``(T,)`` bool) and in the
        whole corpus. Host int64 ``(D,)`` each (suggested cells)."""
        xp = self.xp
        T, D = self.layout_shape(layout)
        inside, total = np.zeros(D, dtype=np.int64), np.zeros(D, dtype=np.int64)
        if key_threshold is None or T == 0:
            return inside, total
        tgt = xp.asarray(as_mask(target, T))
        for block in self.scan_blocks(D, T):
            on = self.on_columns(layout, block, key_threshold)
            total[block] = self.to_host(xp.count_nonzero(on, axis=1))
            inside[block] = self.to_host(xp.count_nonzero(on & tgt[None, :], axis=1))
        return inside, total

    def span_patterns(self, layout: LayoutT, key_threshold: Key, starts: np.ndarray, ends: np.ndarray,
                      lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Host bool ``(P, D)``: cell on over all of ``[starts[p], ends[p]]`` and off over ``[lo[p],
        starts[p])`` and ``(ends[p], hi[p])`` (the phrase map's S per span), from one cumulative sum per
        cell row."""
        xp = self.xp
        T, D = self.layout_shape(layout)
        P = int(np.size(starts))
        out = np.zeros((P, D), dtype=bool)
        if key_threshold is None or P == 0:
            return out
        s, e1, l, h = (xp.asarray(np.asarray(x, dtype=np.int64)) for x in (starts, np.asarray(ends) + 1, lo, hi))
        length = e1 - s
        for block in self.scan_blocks(D, T):
            on = self.on_columns(layout, block, key_threshold)
            cs = xp.zeros((block.size, T + 1), dtype=xp.int32)
            cs[:, 1:] = xp.cumsum(on, axis=1, dtype=xp.int32)
            inner = cs[:, e1] - cs[:, s]
            margin = (cs[:, s] - cs[:, l]) + (cs[:, h] - cs[:, e1])
            out[:, block] = self.to_host(((inner == length[None, :]) & (margin == 0)).T)
        return out

    def all_on_counts(self, layout: LayoutT, cells: np.ndarray, keys: np.ndarray,
                      target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per threshold ``i``: the steps where every selected cell is on (its key ``>= keys[i, j]``),
        and those inside ``target`` (host ``(T,)`` bool). ``keys`` ``(n, k)`` in the layout's key dtype
        (the dtype's largest value: nothing is on). Host int64 ``(n,)`` each (the detector curve).

        One ``threshold_levels`` pass for all thresholds when their keys are ordered alike in every
        column (a monotone scale); else one pass per threshold.
        """
        keys = np.asarray(keys)
        n = keys.shape[0]
        predicted, inside = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        T, _D = self.layout_shape(layout)
        if n == 0 or T == 0:
            return predicted, inside
        cells = np.asarray(cells, dtype=np.int64)
        tgt = self.xp.asarray(as_mask(target, T))
        order = np.lexsort(keys.T[::-1])
        ordered = keys[order]
        if np.all(ordered[1:] >= ordered[:-1]):
            p, i = self._level_counts(self.threshold_levels(layout, cells, ordered), n, tgt)
            predicted[order], inside[order] = p, i
            return predicted, inside
        for j in range(n):
            p, i = self._level_counts(self.threshold_levels(layout, cells, keys[j:j + 1]), 1, tgt)
            predicted[j], inside[j] = p[0], i[0]
        return predicted, inside

    def _level_counts(self, levels, n: int, target) -> tuple[np.ndarray, np.ndarray]:
        """Steps with ``M(t) > i`` for ``i < n``, overall and inside ``target``."""
        xp = self.xp
        hist = self.to_host(xp.bincount(levels, minlength=n + 1)).astype(np.int64)
        hist_in = self.to_host(xp.bincount(levels[target], minlength=n + 1)).astype(np.int64)
        return np.cumsum(hist[::-1])[::-1][1:], np.cumsum(hist_in[::-1])[::-1][1:]

    # --- the shared exact search ----------------------------------------------------------------
    def match(self, layout: LayoutT, query: MatchQuery) -> list[MatchRow]:
        if query.answers_nothing:
            return []
        levels = LevelWalk(self, layout, query)
        k = levels.k
        walk = DistinctWalk(top=query.top, distinct=query.distinct)
        next_group = k                     # the next inter group to rank and walk
        for level in range(min(k, levels.max_n), 0, -1):
            levels.advance(level)
            # Every candidate with inter >= level is in the pool now: walk those groups.
            while next_group >= level and not walk.full:
                self._walk_group(levels, next_group, walk)
                next_group -= 1
            if walk.full:
                break
        while next_group >= 0 and not walk.full:
            self._walk_group(levels, next_group, walk)
            next_group -= 1
        return [MatchRow(*row) for row in walk.kept]

    def _walk_group(self, levels: "LevelWalk", inter_value: int, walk: DistinctWalk) -> None:
        """Verify one inter group over all D cells and walk it in rank order ``(union, -length, a)``.

        ``union = |A| + k - inter >= k`` since ``A`` holds the group's ``inter`` selected cells. So the
        candidates are verified in ``(-length, a)`` order, a batch at a time (``VERIFY_FIRST``, then four
        times more each time): a verified candidate with ``union == k`` ranks before every candidate not
        yet verified, so it is walked at once, and once the walk is full the rest of the group is never
        verified. The other candidates are walked, in rank order, once all are verified.
        """
        pool, k = levels.pool, levels.k
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
            union[part] = levels.unions(inter_value, a[part], b[part], lo[part], hi[part])
            least = part[union[part] == k]
            walk.feed(a[least], b[least], inter[least], union[least])
            if walk.full:
                return
            done += part.size
            batch *= 4
        rest = np.flatnonzero(union > k)
        order = rest[group_order(union[rest], length[rest], a[rest])]
        walk.feed(a[order], b[order], inter[order], union[order])


class LevelWalk:
    """One query over one layout, level by level: n(t) from the selected cells' packed bits, then for
    ``m = k .. 1`` the maximal runs of ``n >= m`` (sequence edges cut them; the length filter applies),
    runs already seen at ``m + 1`` dropped, margins clipped to the sequence, ``inter`` counted; the
    candidates collect in ``pool``. ``unions`` verifies candidates over all D cells.

    ``interior``: keep only runs ``[a, b]`` with ``interior[0] <= a`` and ``b < interior[1]`` (a shard's
    own runs, ``gpu_matcher.sharded``); whether a run is kept depends on its interval only, so the
    spec's lemma holds for the kept runs. Coordinates are the layout's steps. Calls into the backend hold
    ``backend.lock``.
    """

    def __init__(self, backend: SearchBackend, layout: Any, query: MatchQuery,
                 interior: tuple[int, int] | None = None):
        self.backend, self.layout, self.query, self.interior = backend, layout, query, interior
        cells = np.asarray(query.cells, dtype=np.int64)
        self.k = int(cells.size)
        self.bounds = np.asarray(query.bounds, dtype=np.int64)
        with backend.lock:
            self.words = backend.selected_words(layout, cells, query.key_threshold)
            self.n = backend.step_counts(self.words)
            self.events = backend.match_levels(self.words, self.n, self.bounds)
            T = int(self.bounds[-1])
            self.max_n = int(backend.to_host(self.n.max())) if T else 0
        self.next_level = self.k            # the next level to process
        self._prev_a = self._prev_b = np.zeros(0, dtype=np.int64)
        self.pool = CandidatePool()

    @property
    def nbytes(self) -> int:
        """Bytes held: packed words, n(t), level events and candidates."""
        return (int(getattr(self.words, "nbytes", 0)) + int(getattr(self.n, "nbytes", 0))
                + int(getattr(self.events, "nbytes", 0)) + self.pool.nbytes)

    def advance(self, down_to: int) -> None:
        """Process levels down to ``max(down_to, 1)``: after it every candidate with ``inter >= down_to``
        is in the pool."""
        backend, query = self.backend, self.query
        while self.next_level >= max(down_to, 1):
            level = self.next_level
            self.next_level -= 1
            if level > self.max_n:
                continue
            with backend.lock:
                a, b = backend.level_runs(self.events, level, query)
            a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
            if self.interior is not None:
                inside = (a >= self.interior[0]) & (b < self.interior[1])
                a, b = a[inside], b[inside]
            # A run seen at a higher level is nested in a run of this level; equal intervals are one
            # candidate, and an equal run at any higher level is equal to one at level + 1.
            fresh_a, fresh_b = drop_repeats(a, b, self._prev_a, self._prev_b)
            self._prev_a, self._prev_b = a, b
            if fresh_a.size:
                lo, hi = clip_margins(self.bounds, fresh_a, fresh_b, query.left, query.right)
                with backend.lock:
                    inter = backend.inter_counts(self.words, fresh_a, fresh_b, lo, hi)
                self.pool.add(fresh_a, fresh_b, np.asarray(inter, dtype=np.int64), lo, hi)

    def unions(self, inter_value: int, a: np.ndarray, b: np.ndarray, lo: np.ndarray,
               hi: np.ndarray) -> np.ndarray:
        """``union = |A| + k - inter`` of candidates of one inter group, verified over all D cells."""
        with self.backend.lock:
            active = self.backend.active_counts(self.layout, self.query.key_threshold, a, b, lo, hi)
        return np.asarray(active, dtype=np.int64) + (self.k - inter_value)


def _positions_of(xp, few, many):
    """Indices into the sorted array ``many`` of those of ``few`` that occur in it."""
    if many.size == 0:
        return xp.zeros(0, dtype=xp.int64)
    pos = xp.minimum(xp.searchsorted(many, few), many.size - 1)
    return pos[many[pos] == few]


def drop_repeats(a: np.ndarray, b: np.ndarray, prev_a: np.ndarray,
                 prev_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs ``[a, b]`` that are not also runs of the previous level (both lists sorted, disjoint)."""
    if prev_a.size == 0 or a.size == 0:
        return a, b
    pos = np.minimum(np.searchsorted(prev_a, a), prev_a.size - 1)
    fresh = (prev_a[pos] != a) | (prev_b[pos] != b)
    return a[fresh], b[fresh]


class CandidatePool:
    """Candidates seen so far (host int64 arrays ``a, b, inter, lo, hi``), grouped by inter on demand."""

    def __init__(self):
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._cat: tuple[np.ndarray, ...] | None = None
        self.nbytes = 0

    def add(self, a, b, inter, lo, hi) -> None:
        self._parts.append((a, b, inter, lo, hi))
        self._cat = None
        self.nbytes += 5 * 8 * int(np.size(a))

    def _all(self) -> tuple[np.ndarray, ...]:
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
        """Indices of the candidates with ``inter == inter_value``."""
        return np.flatnonzero(self.inter == inter_value)
