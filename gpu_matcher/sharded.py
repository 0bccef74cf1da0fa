"""The exact match over shards along T: what each shard answers, and how the client merges the answers.

``../shared/MATCHING.md`` is the contract; the answer is identical, row for row, to ``SearchBackend.match``
in one process. ``ShardedBackend`` is a backend composed of per-shard backends (Faiss's ``IndexShards``).
Nothing here imports a cluster library: ``gpu_matcher.backends.dask`` runs the shard calls on Dask
workers, ``SerialExecutor`` runs them in this process.

The protocol
------------
The timeline ``[0, T)`` is cut into shards ``[t_i, t_i+1)``. Shard ``i`` is answered from its *window*
``[t_i - h, t_i+1 + h)`` (clipped to the timeline), with a halo ``h >= max(L, R, 1)``; a worker opens the
source itself (a path, never states), and keeps the window's layout (the NumPy or CuPy backend's own,
``backend.prepare``) between queries.

1. **Summary** (one call per shard). The worker computes ``n(t)`` over its window with the backend's
   primitives and returns, for its shard only: ``n`` at the first and last step, and for every level
   ``m = 1..k`` the first and the last step with ``n < m`` (``k`` ints each), and ``max n``.
2. **Interior runs** are maximal runs ``[a, b]`` with ``t_i <= a <= b < t_i+1``. The window holds one step
   on each side of the shard, so the worker finds exactly these, at every level, with the global
   sequence starts that fall inside its window; and since ``h >= L, R`` their margins lie in the window
   too, so ``inter`` (the selected cells' packed bits) and the verification over all ``D`` cells
   (``active_counts``) are computed there, by the backend, just as in one process: it is the
   one-process level walk (``LevelWalk``) over the window, keeping the interior runs.
3. **Crossing runs** are all other maximal runs: those holding a shard edge ``e`` and ``e - 1``. A run
   of level ``m`` crosses ``e`` iff ``m <= min(n(e-1), n(e))`` and ``e`` is no sequence start; it starts
   one step after the last ``n < m`` before ``e`` (or at the sequence start) and ends one step before the
   first ``n < m`` at or after ``e`` (or at the sequence end): the client finds them all from the
   summaries (at most ``k`` per edge), filters them by length and drops repeats. Their scores need
   steps of several shards: each shard returns, per crossing candidate, its part of three reductions
   over all ``D`` cells as packed bits (AND of "on" over the run, OR over each margin); the client
   combines them (AND of the ANDs, OR of the ORs), so ``A``, ``inter`` and ``union`` are exact.
   Every maximal run is interior to one shard or crosses an edge, never both: the candidate set is the
   one-process set, each candidate once.
4. **Ranking** runs by inter group ``g = k..0`` as in one process. The lemma of MATCHING.md holds per
   shard (a candidate with ``inter = g`` is a run found at some level ``>= g``, and whether a run is
   interior depends only on its interval), so a shard that has processed levels ``k..g`` holds all its
   candidates of group ``g``. The client asks every shard that can hold any (``max n >= g``) for its
   group ``g`` in rank order ``(union, -length, start)``, at most ``limit`` rows after a cursor, and
   merges them with the crossing candidates of that group by the same total order. With ``distinct``
   a shard first drops rows that overlap a result already kept: they would be dropped anyway, since kept
   results only accumulate. When a shard's rows run out before the walk is full and it has more, the
   client asks for the next rows after its cursor before taking any further row (a lazy k-way merge),
   so no row is ever taken out of the global order. The walk (``DistinctWalk``) is the one-process
   walk; it stops at ``top``. So the answer is the one-process answer: same candidates, same scores,
   same total order, same walk.

The protocol reads the threshold only through "on", a fixed boolean per step and cell, so a query with
one key per cell (per-cell scales) is answered by the same steps.

Every call is a pure function of (source, shard, query): a worker that dies mid-query loses only its
caches, and the call, retried elsewhere, returns the same rows. For the same reason a worker keys the
shard states it keeps (n(t), levels, candidates, verified groups) by a digest of the query's fields, so
a repeated query, or the same query from another session, reuses them while they are kept.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, Union

import numpy as np

from gpu_matcher.backends.base import Backend, Capability, Key, pack_bits_rows
from gpu_matcher.backends.search import LevelWalk, SearchBackend
from gpu_matcher import settings
from gpu_matcher.errors import ProjectError
from gpu_matcher.query import MatchQuery, MatchRow, clip_margins
from gpu_matcher.ranking import DistinctWalk, group_order
from gpu_matcher.source import Source
from gpu_matcher.targets import Target, array_ref, shard_target

log = logging.getLogger("gpu_matcher")

#: Steps read at once when a shard reduces a crossing candidate's steps (bounds memory per call).
PARTIAL_CHUNK_STEPS = 1 << 16
#: Per-query shard states a worker keeps (words, n(t), level events, candidate pool), in bytes.
STATE_BUDGET: int | None = None           # None here and below: from gpu_matcher.settings at use
#: Matches whose shard states a worker keeps (more than one for concurrent matches).
MAX_QUERIES: int | None = None
#: Shard windows (opened sources and their layouts) a worker keeps.
MAX_WINDOWS: int | None = None
#: Row-major keys of a worker's shard layout, used to verify candidates over all D cells: "auto" (the
#: default) reads them from the source when it reads single rows cheaply (an uncompressed Zarr array:
#: half the disk) and stores a copy otherwise; "copy" always stores them; "source" never does (rows come
#: from decoded chunks through a small cache: least disk, slow when candidates are scattered).
WORKER_ROW_KEYS: str | None = None
#: Default shard size: about this many bytes of the source per shard.
SHARD_BYTES = 512 * 2**20
#: Default halo (steps read beyond each side of a shard; raised for queries with wider margins).
HALO = 1024
#: The shard calls of the statistics' corpus scans (``WorkerState.scan_*``).
SCAN_OPS = frozenset({"scan_cells", "scan_all_on", "scan_spans", "scan_levels", "scan_overview"})

#: What a worker answers shard calls with: ``auto`` / ``numpy`` / ``cupy``, or a factory of a backend
#: (a class, or any picklable callable).
BackendSpec = Union[str, Callable[[], SearchBackend]]


# --- what travels: locators, shards, per-shard queries (small, picklable) ---------------------------------
@dataclass(frozen=True)
class SourceLocator:
    """Where a worker opens a source: a file (HDF5) or store (Zarr) path and the array inside it."""

    kind: str                  # "hdf5" or "zarr"
    file: str                  # absolute path
    dataset: str               # dataset / array path inside the file ("" for a root Zarr array)
    T: int
    D: int
    dtype: str
    version: tuple = ()        # size and mtime: a rewritten file is opened anew

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


def locate(source: Source) -> SourceLocator:
    """The locator of a project source; ``ProjectError`` when workers could not open it."""
    ds = source.dataset
    ref = array_ref(ds)
    if ref is None:
        filename = getattr(getattr(ds, "file", None), "filename", None)
        raise ProjectError(f"source {source.name} is not in a file that workers can open "
                           f"({filename or 'in memory'}); write the project to disk first")
    if ref.kind == "zarr":
        fp = ds.fingerprint()
        version = (fp["size"], fp["mtime_ns"])
    else:
        st = os.stat(ref.file)
        version = (st.st_size, st.st_mtime_ns)
    return SourceLocator(ref.kind, ref.file, ref.dataset, source.T, source.D, str(source.dtype), version)


@dataclass(frozen=True)
class Shard:
    """Shard ``[t0, t1)`` of a source, answered from window ``[w0, w1)``."""

    locator: SourceLocator
    index: int
    t0: int
    t1: int
    w0: int
    w1: int


@dataclass(frozen=True)
class ShardQuery:
    """A match query as one shard needs it: sequence starts inside its window only."""

    cells: tuple[int, ...]
    key_threshold: Key               # one key, or one per cell (``Capability.PER_CELL_KEYS``)
    starts: tuple[int, ...]          # global sequence starts s with w0 < s < w1
    left: int
    right: int
    min_length: int
    phrase_length: int
    qkey: str                        # identifies one match (all its shards): key of shard states


def plan_shards(T: int, shard_steps: int, align: int = 1) -> np.ndarray:
    """Shard edges ``[0, t1, ..., T]``: ``shard_steps`` rounded up to a multiple of ``align``."""
    if T <= 0:
        return np.zeros(1, dtype=np.int64)
    align = max(1, int(align))
    step = max(align, -(-max(1, int(shard_steps)) // align) * align)
    return np.unique(np.concatenate([np.arange(0, T, step, dtype=np.int64), [T]]))


def halo_for(left: int, right: int, halo: int) -> int:
    """The window halo for a query: at least ``max(L, R, 1)``, rounded up to a power of two at least
    ``halo`` so that queries with small margins share windows."""
    need = max(int(left), int(right), 1)
    h = max(1, int(halo))
    while h < need:
        h *= 2
    return h


# --- the worker side -------------------------------------------------------------------------------------
class WindowDataset:
    """Rows ``[w0, w1)`` of an array, seen as an array of its own (for ``Source`` and the backends)."""

    def __init__(self, array, w0: int, w1: int):
        self._array, self.w0, self.w1 = array, int(w0), int(w1)
        self.shape = (self.w1 - self.w0,) + tuple(array.shape[1:])
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.name = f"{array.name}[{self.w0}:{self.w1}]"
        self.chunks = getattr(array, "chunks", None)        # the array's storage chunks start at row -w0
        if getattr(array, "read_rows", None) is not None:    # rows straight from raw chunk files
            self.read_rows = lambda rows: array.read_rows(np.asarray(rows, dtype=np.int64) + self.w0)
        own = getattr(array, "fingerprint", None)
        if own is not None:
            self.fingerprint = own

    def __getitem__(self, key) -> np.ndarray:
        if key == () or key is Ellipsis:
            key = slice(None)
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"a window reads contiguous rows only (got {key!r})")
        start, stop, _ = key.indices(self.shape[0])
        stop = max(start, stop)
        return np.asarray(self._array[self.w0 + start:self.w0 + stop])


@dataclass(eq=False)
class ShardWindow:
    """A worker's view of one shard window: the window as a source, and its backend's layout of it."""

    source: Source
    layout: object                                  # the worker backend's layout type
    lock: threading.RLock = field(default_factory=threading.RLock)
    whole: dict = field(default_factory=dict)      # (key, op, t0, t1) -> packed bits of a whole shard


class ShardState:
    """One query on one shard: the level walk over the window (``LevelWalk``, kept to the shard's
    interior runs), its summary, and the inter groups verified so far."""

    def __init__(self, backend: SearchBackend, window: ShardWindow, shard: Shard, query: ShardQuery):
        self.backend, self.window, self.shard, self.query = backend, window, shard, query
        self.lock = threading.RLock()
        w0, w1 = shard.w0, shard.w1
        starts = np.asarray(query.starts, dtype=np.int64)
        bounds = np.concatenate([[w0], starts, [w1]]).astype(np.int64)             # global steps
        local = MatchQuery(cells=query.cells, key_threshold=query.key_threshold, bounds=bounds - w0,
                           left=query.left, right=query.right, min_length=query.min_length,
                           phrase_length=query.phrase_length)
        self.levels = LevelWalk(backend, window.layout, local, interior=(shard.t0 - w0, shard.t1 - w0))
        self.k = self.levels.k
        with backend.lock:
            n_shard = np.asarray(backend.to_host(self.levels.n[shard.t0 - w0:shard.t1 - w0]), dtype=np.int64)
        self.summary = _summarize(n_shard, self.k, shard.t0)
        self.max_n = self.summary["max_n"]
        self.groups: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def nbytes(self) -> int:
        return self.levels.nbytes + sum(3 * 8 * int(g[0].size) for g in self.groups.values())

    def group(self, g: int):
        """Group ``g`` of this shard's interior candidates in rank order: ``(start, end, union)``, global
        steps."""
        found = self.groups.get(g)
        if found is None:
            levels, w0 = self.levels, self.shard.w0
            levels.advance(g)
            pool = levels.pool
            idx = pool.group(g)
            a, b, lo, hi = pool.a[idx], pool.b[idx], pool.lo[idx], pool.hi[idx]
            union = levels.unions(g, a, b, lo, hi) if idx.size else np.zeros(0, dtype=np.int64)
            order = group_order(union, b - a + 1, a)
            found = self.groups[g] = (a[order] + w0, b[order] + w0, union[order])
        return found

    def rows(self, g: int, after: tuple[int, int, int] | None, kept_starts: np.ndarray,
             kept_ends: np.ndarray, limit: int):
        """At most ``limit`` rows of group ``g`` after the cursor ``(union, -length, start)``, without
        those overlapping a kept interval; and whether more rows follow."""
        a, b, union = self.group(g)
        if after is not None and a.size:
            cu, cnl, ca = after
            nl = -(b - a + 1)
            later = (union > cu) | ((union == cu) & ((nl > cnl) | ((nl == cnl) & (a > ca))))
            first = int(np.argmax(later)) if later.any() else a.size
            a, b, union = a[first:], b[first:], union[first:]
        if kept_starts.size and a.size:
            i = np.searchsorted(kept_starts, b, side="right") - 1
            hit = (i >= 0) & (kept_ends[np.maximum(i, 0)] >= a)
            a, b, union = a[~hit], b[~hit], union[~hit]
        more = a.size > limit
        return a[:limit], b[:limit], union[:limit], more


def _summarize(n: np.ndarray, k: int, t0: int) -> dict:
    """First/last step with ``n < m`` for ``m = 1..k`` (``-1`` when none), as global steps."""
    levels = np.arange(1, k + 1, dtype=np.int64)
    if n.size == 0:
        none = np.full(k, -1, dtype=np.int64)
        return {"first": 0, "last": 0, "first_break": none, "last_break": none, "max_n": 0}
    prefix_min = np.minimum.accumulate(n)                # non-increasing
    first = np.searchsorted(-prefix_min, -(levels - 1), side="left")
    suffix_min = np.minimum.accumulate(n[::-1])          # min of the last j+1 steps, non-increasing
    back = np.searchsorted(-suffix_min, -(levels - 1), side="left")
    first_break = np.where(first < n.size, t0 + first, -1)
    last_break = np.where(back < n.size, t0 + n.size - 1 - back, -1)
    return {"first": int(n[0]), "last": int(n[-1]), "first_break": first_break.astype(np.int64),
            "last_break": last_break.astype(np.int64), "max_n": int(n.max())}


class WorkerState:
    """What one worker process keeps between calls: its backend, opened sources, shard windows (with
    their layouts) and the shard states of recent queries. Thread-safe."""

    def __init__(self, backend: SearchBackend):
        self.backend = backend
        self._lock = threading.Lock()
        self._arrays: dict[SourceLocator, Any] = {}
        self._windows: "OrderedDict[tuple, ShardWindow]" = OrderedDict()
        self._window_locks: dict[tuple, threading.Lock] = {}
        self._states: "OrderedDict[str, dict[tuple, ShardState]]" = OrderedDict()   # per query key
        self._state_bytes: dict[str, int] = {}
        self._state_locks: dict[tuple, threading.Lock] = {}
        self.calls = 0
        self.busy: dict[str, float] = {}       # seconds spent per kind of call (benchmarks)

    # --- sources and windows ---------------------------------------------------------------------
    def _array(self, loc: SourceLocator):
        with self._lock:
            array = self._arrays.get(loc)
            if array is None:
                array = self._arrays[loc] = _open_array(loc)
            return array

    def window(self, shard: Shard) -> ShardWindow:
        key = (shard.locator, shard.w0, shard.w1)
        with self._lock:
            win = self._windows.get(key)
            if win is not None:
                self._windows.move_to_end(key)
                return win
            lock = self._window_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                win = self._windows.get(key)
            if win is None:
                loc = shard.locator
                view = WindowDataset(self._array(loc), shard.w0, shard.w1)
                row_keys = settings.worker_row_keys() if WORKER_ROW_KEYS is None else WORKER_ROW_KEYS
                store_rows = row_keys == "copy" or (row_keys == "auto"
                                                    and getattr(view, "read_rows", None) is None)
                source = Source(name=f"{loc.file}::{loc.dataset}[{shard.w0}:{shard.w1}]", dataset=view,
                                file_path=Path(loc.file), transform="none", store_rows=store_rows)
                with self.backend.lock:
                    layout = self.backend.prepare(source)
                win = ShardWindow(source=source, layout=layout)
                with self._lock:
                    self._windows[key] = win
                    while len(self._windows) > (settings.shard_windows() if MAX_WINDOWS is None else MAX_WINDOWS):
                        old, _ = self._windows.popitem(last=False)
                        self._window_locks.pop(old, None)
        return win

    # --- shard states ----------------------------------------------------------------------------
    def state(self, shard: Shard, query: ShardQuery) -> ShardState:
        """The state of ``query`` on ``shard``, built on its first call and used by the later rounds of
        the same match. States are kept for the last ``MAX_QUERIES`` matches within ``STATE_BUDGET``
        bytes; one dropped early is rebuilt (same rows), and a match never drops its own."""
        key = (shard.locator, shard.w0, shard.w1, shard.t0, shard.t1)
        with self._lock:
            states = self._states.get(query.qkey)
            if states is not None:
                self._states.move_to_end(query.qkey)
                st = states.get(key)
                if st is not None:
                    return st
            lock = self._state_locks.setdefault((query.qkey, key), threading.Lock())
        with lock:
            with self._lock:
                st = self._states.get(query.qkey, {}).get(key)
            if st is None:
                st = ShardState(self.backend, self.window(shard), shard, query)
                with self._lock:
                    self._states.setdefault(query.qkey, {})[key] = st
                    self._states.move_to_end(query.qkey)
                    self._state_bytes[query.qkey] = self._state_bytes.get(query.qkey, 0) + st.nbytes
                    self._state_locks.pop((query.qkey, key), None)
                    self._evict_states(keep=query.qkey)
        return st

    def _evict_states(self, keep: str) -> None:
        max_queries = settings.shard_queries() if MAX_QUERIES is None else MAX_QUERIES
        budget = settings.shard_state_bytes() if STATE_BUDGET is None else STATE_BUDGET
        while len(self._states) > 1 and (len(self._states) > max_queries
                                         or sum(self._state_bytes.values()) > budget):
            old = next(iter(self._states))
            if old == keep:
                break
            del self._states[old]
            self._state_bytes.pop(old, None)

    # --- the calls -------------------------------------------------------------------------------
    def call(self, shard: Shard, op: str, query: ShardQuery | None, args: tuple):
        t0 = time.perf_counter()
        try:
            return self._call(shard, op, query, args)
        finally:
            with self._lock:
                self.calls += 1
                self.busy[op] = self.busy.get(op, 0.0) + time.perf_counter() - t0

    def _call(self, shard: Shard, op: str, query: ShardQuery | None, args: tuple):
        if op == "prepare":
            win = self.window(shard)
            return {"steps": shard.w1 - shard.w0, "layout": type(win.layout).__name__}
        if op == "summary":
            return self.state(shard, query).summary
        if op == "rows":
            st = self.state(shard, query)
            with st.lock:
                return st.rows(*args)
        if op == "partials":
            key_threshold, pieces = args
            return self.partials(shard, key_threshold, pieces)
        if op in SCAN_OPS:
            return getattr(self, op)(shard, self.window(shard), *args)
        raise ValueError(f"unknown shard call {op!r}")

    # --- the statistics' corpus scans over one shard (``ShardedBackend.cell_on_counts`` ...) ------------
    # The backend scans the shard's window (the layout the matches use); the window's target is the
    # shard's mask and off in the halo, and what the halo rows added to the whole-window counts is
    # taken off again from their row keys (at most 2 h rows), so each shard counts its own steps once.
    def _halo_keys(self, win: ShardWindow, shard: Shard) -> list[np.ndarray]:
        out = []
        for a, b in ((shard.w0, shard.t0), (shard.t1, shard.w1)):
            if b > a:
                with self.backend.lock:
                    keys = self.backend.row_keys(win.layout, win.source, a - shard.w0, b - shard.w0)
                out.append(np.asarray(self.backend.to_host(keys)))
        return out

    @staticmethod
    def _window_target(shard: Shard, target: Target) -> np.ndarray:
        inside = np.zeros(shard.w1 - shard.w0, dtype=bool)
        inside[shard.t0 - shard.w0:shard.t1 - shard.w0] = target.mask(shard.t0, shard.t1)
        return inside

    def scan_cells(self, shard: Shard, win: ShardWindow, key_threshold: Key, target: Target):
        """Per cell: steps of the shard where it is on inside ``target``, and in the whole shard."""
        with self.backend.lock:
            inside, total = self.backend.cell_on_counts(win.layout, key_threshold,
                                                        self._window_target(shard, target))
        for keys in self._halo_keys(win, shard):
            total = total - np.count_nonzero(keys >= key_threshold, axis=0)
        return inside, total

    def scan_all_on(self, shard: Shard, win: ShardWindow, cells: np.ndarray, keys: np.ndarray,
                    target: Target):
        """Per threshold row of ``keys``: steps of the shard where every cell is on, and those inside."""
        with self.backend.lock:
            predicted, inside = self.backend.all_on_counts(win.layout, cells, keys,
                                                           self._window_target(shard, target))
        for rows in self._halo_keys(win, shard):
            selected = rows[:, np.asarray(cells, dtype=np.int64)]
            predicted = predicted - np.array([np.count_nonzero((selected >= row).all(axis=1)) for row in keys],
                                             dtype=np.int64)
        return predicted, inside

    def scan_spans(self, shard: Shard, win: ShardWindow, key_threshold: Key, starts: np.ndarray,
                   stops: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """``span_patterns`` of span pieces clipped to the shard (global steps; ``stops`` exclusive and
        ``starts <= stops``: a piece may hold margins only)."""
        w0 = shard.w0
        with self.backend.lock:
            return self.backend.span_patterns(win.layout, key_threshold, starts - w0, stops - 1 - w0, lo - w0,
                                              hi - w0)

    def scan_overview(self, shard: Shard, win: ShardWindow, cells: np.ndarray, key_threshold: Key, c0: int,
                      c1: int, edges: np.ndarray):
        """n(t) of the selected cells over steps ``[c0, c1)`` of the shard (their on-rows of the window's
        layout: k cells, not D), reduced to per-bin min/max of the bins of ``edges`` it meets."""
        from gpu_matcher.overview import reduce_chunk

        with self.backend.lock:
            on = self.backend.on_columns(win.layout, np.asarray(cells, dtype=np.int64), key_threshold)
            n = np.asarray(self.backend.to_host(on[:, c0 - shard.w0:c1 - shard.w0].sum(axis=0)))
        _b0, _b1, lo, hi = reduce_chunk(n, c0, c1, edges)
        return lo, hi

    def scan_levels(self, shard: Shard, win: ShardWindow, cells: np.ndarray, bounds: np.ndarray,
                    target: Target) -> np.ndarray:
        """``level_histograms`` of the shard's steps (the backend's over the window when it declares
        it, less the halo rows; else from the shard's row keys in blocks)."""
        from gpu_matcher.backends.numpy import BLOCK_BYTES, LevelHistogram, cell_levels

        cells = np.asarray(cells, dtype=np.int64)
        k, J = bounds.shape
        if self.backend.supports(Capability.LEVEL_HISTOGRAMS):
            with self.backend.lock:
                found = self.backend.level_histograms(win.layout, cells, bounds,
                                                      self._window_target(shard, target))
            halo = LevelHistogram(k, J)
            for rows in self._halo_keys(win, shard):
                halo.add(cell_levels(rows[:, cells], bounds), np.zeros(rows.shape[0], dtype=bool))
            return found - halo.array
        hist = LevelHistogram(k, J)
        block = max(1, BLOCK_BYTES // max(1, shard.locator.D * shard.locator.itemsize))
        for a in range(shard.t0, shard.t1, block):
            b = min(shard.t1, a + block)
            with self.backend.lock:
                rows = np.asarray(self.backend.to_host(
                    self.backend.row_keys(win.layout, win.source, a - shard.w0, b - shard.w0)))
            hist.add(cell_levels(rows[:, cells], bounds), target.mask(a, b))
        return hist.array

    def partials(self, shard: Shard, key_threshold: Key, pieces: np.ndarray) -> np.ndarray:
        """Per piece ``(x, y, op)`` inside the shard: over all D cells, AND (op 0) or OR (op 1) of
        "on" over steps ``[x, y)``, as packed bits ``(pieces, ceil(D / 64))`` uint64."""
        win = self.window(shard)
        key_id = _key_id(key_threshold)
        D = shard.locator.D
        W = -(-D // 64)
        pieces = np.asarray(pieces, dtype=np.int64).reshape(-1, 3)
        out = np.where(pieces[:, 2:3] == 0, ~np.uint64(0), np.uint64(0)).astype(np.uint64)
        out = np.repeat(out, W, axis=1)
        todo = np.ones(len(pieces), dtype=bool)
        whole = (pieces[:, 0] == shard.t0) & (pieces[:, 1] == shard.t1)
        with win.lock:
            for i in np.flatnonzero(whole):             # whole-shard reductions: cached per threshold
                cached = win.whole.get((key_id, int(pieces[i, 2]), shard.t0, shard.t1))
                if cached is not None:
                    out[i], todo[i] = cached, False
        live = np.flatnonzero(todo & (pieces[:, 1] > pieces[:, 0]))
        if live.size:
            # Each piece's own rows (pieces sit at the shard's two edges: reading the span between
            # them would read the whole shard), at most PARTIAL_CHUNK_STEPS rows at a time.
            for i in live.tolist():
                x, y, op = int(pieces[i, 0]), int(pieces[i, 1]), int(pieces[i, 2])
                for c0 in range(x, y, PARTIAL_CHUNK_STEPS):
                    c1 = min(y, c0 + PARTIAL_CHUNK_STEPS)
                    with self.backend.lock:
                        keys = self.backend.row_keys(win.layout, win.source, c0 - shard.w0, c1 - shard.w0)
                    bits = pack_bits_rows(keys >= key_threshold)
                    if op == 0:
                        out[i] &= np.bitwise_and.reduce(bits, axis=0)
                    else:
                        out[i] |= np.bitwise_or.reduce(bits, axis=0)
            with win.lock:
                for i in np.flatnonzero(whole & todo).tolist():
                    win.whole[(key_id, int(pieces[i, 2]), shard.t0, shard.t1)] = out[i].copy()
        return out


def _key_id(key: Key) -> object:
    """A hashable identity of a resolved threshold (one key, or the bytes of one key per cell)."""
    if key is not None and np.ndim(key) > 0:
        arr = np.ascontiguousarray(key)
        return (str(arr.dtype), arr.tobytes())
    return None if key is None else int(key)


def _open_array(loc: SourceLocator):
    from gpu_matcher import storage

    if loc.kind not in ("zarr", "hdf5"):
        raise ProjectError(f"unknown source kind {loc.kind!r}")
    array = storage.open_dataset(loc.file, loc.dataset, "shard, on this worker")
    if tuple(array.shape) != (loc.T, loc.D) or str(np.dtype(array.dtype)) != loc.dtype:
        raise ProjectError(f"{loc.file}: {loc.dataset!r} has shape {tuple(array.shape)} {array.dtype} on "
                           f"this worker, the client saw ({loc.T}, {loc.D}) {loc.dtype}")
    return array


_WORKER_STATES: dict[Any, WorkerState] = {}
_WORKER_LOCK = threading.Lock()


def worker_state(backend_spec: BackendSpec = "numpy") -> WorkerState:
    """This process's state for a backend spec (``auto``/``numpy``/``cupy`` or a backend factory)."""
    with _WORKER_LOCK:
        state = _WORKER_STATES.get(backend_spec)
        if state is None:
            if callable(backend_spec):
                backend = backend_spec()
            else:
                from gpu_matcher.backends import get_backend

                backend = get_backend(backend_spec)
            state = _WORKER_STATES[backend_spec] = WorkerState(backend)
        return state


def shard_call(backend_spec, shard: Shard, op: str, query: ShardQuery | None, args: tuple):
    """The one entry point a worker runs (picklable by reference)."""
    return worker_state(backend_spec).call(shard, op, query, args)


def shard_calls(backend_spec, calls: Sequence["Call"]) -> list:
    """Several shard calls in one task (one round's calls for the shards placed on one worker)."""
    state = worker_state(backend_spec)
    return [state.call(*call) for call in calls]


def peak_rss_bytes() -> int:
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` would include the parent's peak
    for a process started by fork + exec, as spawned Dask workers are)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker_report() -> dict:
    """Busy seconds per call kind, calls, and peak RSS of this worker process (benchmarks)."""
    busy: dict[str, float] = {}
    calls = 0
    with _WORKER_LOCK:
        for state in _WORKER_STATES.values():
            calls += state.calls
            for op, sec in state.busy.items():
                busy[op] = busy.get(op, 0.0) + sec
    return {"busy": busy, "calls": calls,
            "peak_rss": peak_rss_bytes()}


def reset_worker_states() -> None:
    """Forget every worker state of this process (tests)."""
    with _WORKER_LOCK:
        _WORKER_STATES.clear()


# --- the client side -------------------------------------------------------------------------------------
Call = tuple[Shard, str, "ShardQuery | None", tuple]


class Executor(Protocol):
    """Runs a round of shard calls (on this process, or on a cluster) and returns their results in order."""

    backend_spec: BackendSpec

    def refresh(self, shards: Sequence[Shard]) -> None:
        """Make every shard answerable (a cluster places shards on live workers)."""

    def __call__(self, calls: Sequence[Call]) -> list:
        """The results of ``calls``, in order."""


class SerialExecutor:
    """Runs shard calls in this process, one after another (tests; a reference for the Dask executor)."""

    def __init__(self, backend_spec: BackendSpec = "numpy"):
        self.backend_spec = backend_spec

    def refresh(self, shards: Sequence[Shard]) -> None:
        return None

    def __call__(self, calls: Sequence[Call]) -> list:
        return [shard_call(self.backend_spec, *c) for c in calls]


@dataclass
class ShardedSource:
    """A source cut into shards: the layout of ``ShardedBackend`` (the shards' own layouts live with the
    per-shard backends)."""

    name: str
    locator: SourceLocator
    edges: np.ndarray          # shard edges [0, ..., T]

    @property
    def shards(self) -> int:
        return len(self.edges) - 1

    def shard_list(self, halo: int) -> list[Shard]:
        T, e = self.locator.T, self.edges
        return [Shard(self.locator, i, int(e[i]), int(e[i + 1]), max(0, int(e[i]) - halo),
                      min(T, int(e[i + 1]) + halo)) for i in range(self.shards)]


@dataclass
class MatchStats:
    """What one sharded match did (for logs and benchmarks)."""

    rounds: int = 0
    calls: int = 0
    crossing: int = 0
    groups: int = 0
    refills: int = 0


def worker_capabilities(spec: BackendSpec) -> frozenset[Capability]:
    """What the per-shard backends of a spec declare, read from their classes (nothing is built, no
    device is touched): ``auto`` may be either backend, so only what both declare."""
    if isinstance(spec, str):
        from gpu_matcher.backends.cupy import CupyBackend          # imports no CuPy
        from gpu_matcher.backends.numpy import NumpyBackend

        known = {"numpy": NumpyBackend.capabilities, "cupy": CupyBackend.capabilities}
        return known.get(spec, NumpyBackend.capabilities & CupyBackend.capabilities)
    return frozenset(getattr(spec, "capabilities", frozenset()))


class ShardedBackend(Backend[ShardedSource]):
    """A backend composed of per-shard backends (Faiss's ``IndexShards``): ``prepare`` cuts a source into
    shards along T, ``match`` runs the shard protocol of this module's doc through an ``Executor`` whose
    per-shard backends (NumPy or CuPy, in this process or on workers) hold the shards' layouts. It
    returns exactly the one-process answer.

    Declares streaming (a shard window is all a per-shard backend holds), the statistics' corpus scans
    (each shard scans its own steps; the client adds) and per-cell keys when its per-shard backends
    declare them.
    """

    name = "sharded"

    def __init__(self, executor: Executor | None = None, shard_steps: int | None = None, halo: int = HALO,
                 warm: bool = False, first_rows: int | None = None):
        self.executor: Executor = executor if executor is not None else SerialExecutor("numpy")
        self.shard_steps = shard_steps
        self.halo = int(halo)
        self.warm = warm
        self.first_rows = first_rows          # rows asked of a shard per group at first (see sharded_match)
        shard_caps = worker_capabilities(self.executor.backend_spec)
        # The scans' shard calls use only what every per-shard SearchBackend has (WorkerState.scan_*).
        self.capabilities = (frozenset({Capability.STREAMING, Capability.CORPUS_SCANS,
                                        Capability.LEVEL_HISTOGRAMS, Capability.COUNT_OVERVIEW})
                             | (shard_caps & {Capability.PER_CELL_KEYS}))
        self.last_stats: MatchStats | None = None

    def prepare(self, source: Source) -> ShardedSource:
        """Shards of ``shard_steps`` (default about ``SHARD_BYTES`` of the source, whole storage chunks);
        with ``warm`` every per-shard backend builds its shard's layout now."""
        loc = locate(source)
        chunks = getattr(source.dataset, "chunks", None)
        align = int(chunks[0]) if chunks else 1
        steps = self.shard_steps or max(1, SHARD_BYTES // max(1, loc.D * loc.itemsize))
        sharded = ShardedSource(name=source.name, locator=loc, edges=plan_shards(loc.T, steps, align))
        if self.warm and sharded.shards:
            shards = sharded.shard_list(self.halo)
            self.executor.refresh(shards)
            self.executor([(sh, "prepare", None, ()) for sh in shards])
        log.info("source %s: %d shards of <= %d steps", source.name, sharded.shards,
                 int(np.diff(sharded.edges).max(initial=0)))
        return sharded

    # --- the statistics' corpus scans (Capability.CORPUS_SCANS, LEVEL_HISTOGRAMS): shard by shard ------
    # Each shard counts its own steps (``WorkerState.scan_*``) and the client adds the counts; a span
    # crossing shard edges is scored from its pieces (on over every piece of the span, off over every
    # piece of its margins: an AND of the shards' answers). ``target``: a ``gpu_matcher.targets.Target``
    # (each worker reads its own steps of a label track) or a (T,) bool array (sliced per shard).
    def layout_shape(self, layout: ShardedSource) -> tuple[int, int]:
        return layout.locator.T, layout.locator.D

    def _scan(self, layout: ShardedSource, op: str, args_of: Callable[[Shard], tuple | None]) -> list:
        """``(shard, result)`` of ``op`` for every shard that ``args_of`` gives arguments."""
        shards = layout.shard_list(self.halo)
        self.executor.refresh(shards)
        calls = [(sh, op, None, args) for sh in shards if (args := args_of(sh)) is not None]
        return list(zip([c[0] for c in calls], self.executor(calls) if calls else []))

    def cell_on_counts(self, layout: ShardedSource, key_threshold: Key, target) -> tuple[np.ndarray, np.ndarray]:
        T, D = self.layout_shape(layout)
        inside, total = np.zeros(D, dtype=np.int64), np.zeros(D, dtype=np.int64)
        if key_threshold is None or T == 0:
            return inside, total
        for _sh, (i, t) in self._scan(layout, "scan_cells",
                                      lambda sh: (key_threshold, shard_target(target, sh.t0, sh.t1))):
            inside += i
            total += t
        return inside, total

    def all_on_counts(self, layout: ShardedSource, cells, keys, target) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys)
        n = keys.shape[0]
        predicted, inside = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        if n == 0 or layout.locator.T == 0:
            return predicted, inside
        cells = np.asarray(cells, dtype=np.int64)
        for _sh, (p, i) in self._scan(layout, "scan_all_on",
                                      lambda sh: (cells, keys, shard_target(target, sh.t0, sh.t1))):
            predicted += p
            inside += i
        return predicted, inside

    def span_patterns(self, layout: ShardedSource, key_threshold: Key, starts, ends, lo, hi) -> np.ndarray:
        T, D = self.layout_shape(layout)
        s, e1, lo, hi = (np.asarray(x, dtype=np.int64) for x in (starts, np.asarray(ends) + 1, lo, hi))
        out = np.zeros((s.size, D), dtype=bool)
        if key_threshold is None or s.size == 0:
            return out
        out[:] = True
        picked: dict[int, np.ndarray] = {}

        def args_of(sh: Shard):
            idx = np.flatnonzero((lo < sh.t1) & (hi > sh.t0))      # spans whose [lo, hi) meets the shard
            if idx.size == 0:
                return None
            picked[sh.index] = idx
            return (key_threshold,) + tuple(np.clip(x[idx], sh.t0, sh.t1) for x in (s, e1, lo, hi))

        for sh, found in self._scan(layout, "scan_spans", args_of):
            out[picked[sh.index]] &= np.asarray(found, dtype=bool)
        return out

    def level_histograms(self, layout: ShardedSource, cells, bounds, target) -> np.ndarray:
        bounds = np.asarray(bounds)
        cells = np.asarray(cells, dtype=np.int64)
        hist = np.zeros((bounds.shape[0], 2, bounds.shape[1] + 1), dtype=np.int64)
        for _sh, part in self._scan(layout, "scan_levels",
                                    lambda sh: (cells, bounds, shard_target(target, sh.t0, sh.t1))):
            hist += part
        return hist

    def count_overview(self, layout: ShardedSource, cells, key_threshold: Key, start: int, stop: int,
                       bins: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin ``(min, max)`` of n(t) over ``[start, stop)`` (``gpu_matcher.overview``'s bins, at least
        one step each): each shard reduces its own steps from its layout's rows of the k cells; the
        client combines a bin's parts by ``fmin`` / ``fmax``."""
        from gpu_matcher.overview import bin_edges

        edges = bin_edges(start, stop, bins)
        lo, hi = np.full(bins, np.nan), np.full(bins, np.nan)
        cells = np.asarray(cells, dtype=np.int64)
        parts: dict[int, int] = {}

        def args_of(sh: Shard):
            c0, c1 = max(int(start), sh.t0), min(int(stop), sh.t1)
            if c0 >= c1:
                return None
            b0 = int(np.searchsorted(edges, c0, side="right")) - 1
            b1 = int(np.searchsorted(edges, c1, side="left"))
            parts[sh.index] = b0
            return cells, key_threshold, c0, c1, edges[b0:b1 + 1]

        for sh, (part_lo, part_hi) in self._scan(layout, "scan_overview", args_of):
            b0 = parts[sh.index]
            b1 = b0 + part_lo.size
            lo[b0:b1] = np.fmin(lo[b0:b1], part_lo)
            hi[b0:b1] = np.fmax(hi[b0:b1], part_hi)
        return lo, hi

    def match(self, layout: ShardedSource, query: MatchQuery) -> list[MatchRow]:
        stats = MatchStats()
        self.executor.refresh(layout.shard_list(self.halo))
        rows = sharded_match(layout, query, self.executor, halo=self.halo, stats=stats,
                             first_rows=self.first_rows)
        self.last_stats = stats
        return rows


def sharded_match(sharded: ShardedSource, query: MatchQuery, executor: Callable[[Sequence[Call]], list],
                  halo: int = 1024, stats: MatchStats | None = None,
                  first_rows: int | None = None) -> list[MatchRow]:
    """The exact top ``query.top`` rows of MATCHING.md, computed shard by shard (see the module doc).

    ``first_rows``: rows asked of each shard per group at first (default: what the walk still needs,
    twice that and at least 32 with ``distinct``); later asks double it. Any value gives the same answer.
    """
    stats = stats if stats is not None else MatchStats()
    cells = np.asarray(query.cells, dtype=np.int64)
    T = sharded.locator.T
    if query.answers_nothing or T == 0:
        return []
    k = int(cells.size)
    bounds = np.asarray(query.bounds, dtype=np.int64)
    shards = sharded.shard_list(halo_for(query.left, query.right, halo))
    qkey = _query_key(sharded, query, cells, bounds)   # identical queries share their shard states
    specs = []
    for sh in shards:
        inner = bounds[(bounds > sh.w0) & (bounds < sh.w1)]
        specs.append(ShardQuery(cells=tuple(int(c) for c in cells), key_threshold=query.key_threshold,
                                starts=tuple(int(s) for s in inner), left=int(query.left),
                                right=int(query.right), min_length=int(query.min_length),
                                phrase_length=int(query.phrase_length), qkey=qkey))

    def run(calls: list[Call]) -> list:
        stats.rounds += 1
        stats.calls += len(calls)
        return executor(calls) if calls else []

    # 1. Summaries (this also builds each shard's state: n(t), events).
    summaries = run([(sh, "summary", sp, ()) for sh, sp in zip(shards, specs)])
    max_n = np.array([s["max_n"] for s in summaries], dtype=np.int64)

    # 2-3. Crossing runs and their scores from per-shard partial reductions.
    cross = _crossing_runs(sharded.edges, summaries, bounds, k, query)
    stats.crossing = int(cross[0].size)
    cross_rows = _score_crossing(cross, shards, query, k, run)

    # 4. Groups k..0, merged with the crossing candidates, walked as in one process.
    walk = DistinctWalk(top=query.top, distinct=query.distinct)
    top_group = int(max(max_n.max(initial=0), cross_rows[2].max(initial=0)))
    for g in range(min(k, top_group), -1, -1):
        if walk.full:
            break
        in_group = cross_rows[2] == g
        holders = [i for i in range(len(shards)) if max_n[i] >= max(g, 1)]
        if not holders and not in_group.any():
            continue
        stats.groups += 1
        _walk_group(g, holders, shards, specs, cross_rows, in_group, walk, query, run, stats, first_rows)
    return [MatchRow(*row) for row in walk.kept]


def _query_key(sharded: ShardedSource, query: MatchQuery, cells: np.ndarray, bounds: np.ndarray) -> str:
    """The key of a match's shard states. The states are a pure function of these fields (not of
    ``top`` or ``distinct``), so a repeated query, or the same query from another session, reuses them
    while the workers keep them."""
    h = hashlib.sha1(repr((sharded.locator, tuple(int(c) for c in cells), int(query.left), int(query.right),
                           int(query.min_length), int(query.phrase_length))).encode())
    if query.key_threshold is not None:
        kt = np.asarray(query.key_threshold)
        h.update(str(kt.dtype).encode() + kt.tobytes())
    h.update(np.ascontiguousarray(bounds, dtype=np.int64).tobytes())
    return h.hexdigest()


def _crossing_runs(edges: np.ndarray, summaries: list[dict], bounds: np.ndarray, k: int,
                   query: MatchQuery) -> tuple[np.ndarray, np.ndarray]:
    """Every maximal run holding a shard edge and the step before it, each once, length-filtered."""
    P = len(summaries)
    T = int(edges[-1])
    if P < 2:
        z = np.zeros(0, dtype=np.int64)
        return z, z
    first = np.array([s["first_break"] for s in summaries], dtype=np.int64).reshape(P, k)
    last = np.array([s["last_break"] for s in summaries], dtype=np.int64).reshape(P, k)
    first = np.where(first < 0, T, first)
    # last break at or before the end of shard j; first break at or after the start of shard j
    last_upto = np.maximum.accumulate(last, axis=0)
    first_from = np.minimum.accumulate(first[::-1], axis=0)[::-1]
    starts_all, ends_all = [], []
    for j in range(1, P):
        e = int(edges[j])
        seq = int(np.searchsorted(bounds, e, side="right")) - 1
        if bounds[seq] == e:
            continue                                    # a sequence start cuts every run here
        top_level = min(summaries[j - 1]["last"], summaries[j]["first"])
        if top_level < 1:
            continue
        m = np.arange(top_level)                        # level m + 1
        a = np.maximum(last_upto[j - 1, m] + 1, bounds[seq])
        b = np.minimum(first_from[j, m], bounds[seq + 1]) - 1
        starts_all.append(a)
        ends_all.append(b)
    if not starts_all:
        z = np.zeros(0, dtype=np.int64)
        return z, z
    a, b = np.concatenate(starts_all), np.concatenate(ends_all)
    keep = query.keeps_length(b - a + 1)
    pairs = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def _score_crossing(cross, shards: list[Shard], query: MatchQuery, k: int, run):
    """``(start, end, inter, union)`` of the crossing candidates, from per-shard AND/OR partials."""
    a, b = cross
    z = np.zeros(0, dtype=np.int64)
    if a.size == 0:
        return z, z, z, z
    lo, hi = clip_margins(query.bounds, a, b, query.left, query.right)
    D = shards[0].locator.D
    W = -(-D // 64)
    # Three reductions per candidate: AND over [a, b], OR over [lo, a), OR over (b, hi).
    ranges = [(a, b + 1, 0), (lo, a, 1), (b + 1, hi, 1)]
    per_shard: dict[int, list[tuple[int, int, int, int, int]]] = {}
    t0s = np.array([sh.t0 for sh in shards], dtype=np.int64)
    for part, (x, y, op) in enumerate(ranges):
        for c in range(a.size):
            xs, ys = int(x[c]), int(y[c])
            if ys <= xs:
                continue
            first = int(np.searchsorted(t0s, xs, side="right")) - 1
            last = int(np.searchsorted(t0s, ys - 1, side="right")) - 1
            for i in range(first, last + 1):
                sh = shards[i]
                per_shard.setdefault(i, []).append((c, part, max(xs, sh.t0), min(ys, sh.t1), op))
    order = sorted(per_shard)
    calls = [(shards[i], "partials", None,
              (query.key_threshold, np.array([[p[2], p[3], p[4]] for p in per_shard[i]], dtype=np.int64)))
             for i in order]
    results = run(calls)
    acc = np.zeros((3, a.size, W), dtype=np.uint64)
    acc[0] = ~np.uint64(0)
    for i, bits in zip(order, results):
        for row, (c, part, _x, _y, op) in zip(np.asarray(bits), per_shard[i]):
            if op == 0:
                acc[part, c] &= row
            else:
                acc[part, c] |= row
    active = acc[0] & ~acc[1] & ~acc[2]
    dmask = np.zeros(W, dtype=np.uint64)
    smask = np.zeros(W, dtype=np.uint64)
    for c in range(D):
        dmask[c // 64] |= np.uint64(1) << np.uint64(c % 64)
    for c in np.asarray(query.cells, dtype=np.int64).tolist():
        smask[c // 64] |= np.uint64(1) << np.uint64(c % 64)
    active &= dmask
    inter = np.bitwise_count(active & smask).sum(axis=1, dtype=np.int64)
    size = np.bitwise_count(active).sum(axis=1, dtype=np.int64)
    return a, b, inter, size + (k - inter)


def _walk_group(g, holders, shards, specs, cross_rows, in_group, walk: DistinctWalk, query, run, stats,
                first_rows: int | None):
    """Merge group ``g`` of every holder shard and of the crossing candidates in rank order; walk it."""
    ca, cb, _ci, cu = cross_rows
    sel = np.flatnonzero(in_group)
    order = group_order(cu[sel], cb[sel] - ca[sel] + 1, ca[sel])
    cross = [(int(cu[i]), -int(cb[i] - ca[i] + 1), int(ca[i]), int(cb[i])) for i in sel[order]]

    room = query.top - len(walk.kept)
    base_limit = room if not query.distinct else max(32, 2 * room)
    if first_rows is not None:
        base_limit = max(1, int(first_rows))
    buffers: dict[int, list[tuple[int, int, int, int]]] = {}
    pos: dict[int, int] = {}
    more: dict[int, bool] = {}
    limit: dict[int, int] = {}
    cursor: dict[int, tuple[int, int, int] | None] = {}

    def fetch(streams: list[int]) -> None:
        kept_s, kept_e = walk.kept_intervals()
        calls = [(shards[i], "rows", specs[i], (g, cursor[i], kept_s, kept_e, limit[i])) for i in streams]
        for i, (a, b, u, m) in zip(streams, run(calls)):
            rows = [(int(uu), -int(bb - aa + 1), int(aa), int(bb)) for aa, bb, uu in zip(a, b, u)]
            buffers[i], pos[i], more[i] = rows, 0, bool(m)
            if rows:
                cursor[i] = rows[-1][:3]

    for i in holders:
        limit[i], cursor[i] = base_limit, None
    fetch(list(holders))
    heap: list[tuple[tuple[int, int, int], int]] = []
    for i in holders:
        if buffers[i]:
            heap.append((buffers[i][0][:3], i))
    if cross:
        heap.append((cross[0][:3], -1))
    heapq.heapify(heap)
    cross_pos = 0
    pending: list[int] = []
    while not walk.full:
        if pending:                          # a shard ran out of rows but has more: fetch before going on
            stats.refills += len(pending)
            for i in pending:
                limit[i] *= 2
            fetch(pending)
            for i in pending:
                if buffers[i]:
                    heapq.heappush(heap, (buffers[i][0][:3], i))
            pending = []
            continue
        if not heap:
            break
        _key, i = heapq.heappop(heap)
        if i < 0:
            row = cross[cross_pos]
            cross_pos += 1
            if cross_pos < len(cross):
                heapq.heappush(heap, (cross[cross_pos][:3], -1))
        else:
            row = buffers[i][pos[i]]
            pos[i] += 1
            if pos[i] < len(buffers[i]):
                heapq.heappush(heap, (buffers[i][pos[i]][:3], i))
            elif more[i]:
                pending.append(i)
        union, _neg_len, a, b = row
        walk.feed(np.array([a]), np.array([b]), np.array([g]), np.array([union]))
