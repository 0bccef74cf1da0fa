"""Select, match, context and phrase search over one project: orchestration only.

Semantics: ``../shared/MATCHING.md``. The array work is the backend's (``gpu_matcher.backends``).
Every query takes a threshold and the scale it is read on (``Threshold``; ``scale="none"`` is θ on the
value after the transform, ``zscore`` / ``quantile`` a per-cell normalised value, ``gpu_matcher.scaling``).
The engine resolves it to exact keys (one for all cells, or one per cell), caches them, and runs the
query on its backend, or on the NumPy backend when its backend does not declare what the query needs.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Sequence, TypeVar

import numpy as np

from gpu_matcher import scaling
from gpu_matcher.backends import Backend, Capability, MatchQuery, get_backend
from gpu_matcher.backends.base import Key, check_cells
from gpu_matcher.errors import ProjectError
from gpu_matcher.project import Project
from gpu_matcher.query import DEFAULT_MIN_LENGTH, DEFAULT_TOP, clip_margins
from gpu_matcher.scaling import CellScale
from gpu_matcher.source import float_keys, transform_values
from gpu_matcher.threshold import Threshold

log = logging.getLogger("gpu_matcher")

#: Resolved thresholds (per-cell keys) an engine keeps: a view asks for the same few many times.
KEY_CACHE_SIZE = 16
#: Sources whose quantile tables (drawing in quantile units) an engine keeps.
QUANTILE_CACHE_SIZE = 2

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A thread-safe mapping that keeps the ``size`` most recently used entries; a value is made once
    (under the lock, so two threads asking for the same key compute it once)."""

    def __init__(self, size: int):
        self.size = int(size)
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = make()
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
            return value

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Selection:
    """S for a brushed range (MATCHING.md, "Select")."""

    source: str
    start: int
    end: int
    threshold: float
    left: int
    right: int
    cells: list[int]
    scale: str = "none"              # the scale the threshold was read on


@dataclass(frozen=True)
class Match:
    start: int
    end: int
    length: int
    inter: int
    union: int

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "length": self.length,
                "inter": self.inter, "union": self.union}


@dataclass
class Context:
    """The select view's data for steps ``[start, stop)`` (clipped to the timeline)."""

    start: int
    stop: int
    values: np.ndarray                     # (W, D) float32, after the transform
    words: list[str]
    counts: np.ndarray                     # (W,) int32: cells of S on at each step
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    meta_weights: dict[str, np.ndarray] = field(default_factory=dict)


class Engine:
    """The engine for one project and one backend. Thread-safe for concurrent queries."""

    def __init__(self, project: Project, backend: str | Backend = "auto"):
        self.project = project
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self._lock = threading.Lock()
        self._layouts: dict[str, object] = {}
        self._words: np.ndarray | None = None
        self._scales: BoundedCache[str, CellScale] = BoundedCache(max(1, len(project.sources)))
        self._keys: BoundedCache[tuple[str, Threshold], np.ndarray | None] = BoundedCache(KEY_CACHE_SIZE)
        # (D, 1025) keys and counts per source: ~20 bytes a cell and table point (80 MB at D = 4096).
        self._quantiles: BoundedCache[str, scaling.QuantileTable] = BoundedCache(QUANTILE_CACHE_SIZE)
        self._host: Backend | None = None          # the NumPy backend for what self.backend cannot do
        self._host_told: set[str] = set()

    # --- helpers ----------------------------------------------------------------------------
    def layout(self, source: str):
        """The backend's layout of a source, built or loaded once (thread-safe)."""
        with self._lock:
            if source not in self._layouts:
                self._layouts[source] = self.backend.prepare(self.project.source(source))
            return self._layouts[source]

    def check_range(self, start: int, end: int, sequences: bool) -> tuple[int, int]:
        """The sequence ``[lo, hi)`` holding the range ``[start, end]``; a ProjectError if the range is
        empty, outside the timeline or crosses a sequence edge."""
        T = self.project.T
        if not (0 <= start <= end < T):
            raise ProjectError(f"range [{start}, {end}] is outside the timeline [0, {T - 1}] "
                               "or empty (start must be <= end)")
        lo, hi = self.project.sequence_of(start, sequences)
        if end >= hi:
            raise ProjectError(f"range [{start}, {end}] crosses a sequence boundary at {hi}; "
                               "a selection lies inside one sequence")
        return lo, hi

    @staticmethod
    def check_margins(left: int, right: int) -> None:
        """A ProjectError unless both margins are >= 0."""
        if left < 0 or right < 0:
            raise ProjectError(f"margins must be >= 0 (left={left}, right={right})")

    # --- thresholds -------------------------------------------------------------------------
    def cell_scale(self, source: str, scale: str = "zscore") -> CellScale:
        """Per-cell normalisation parameters of a source, computed once per engine (one pass over the
        cells); the same for both scales."""
        scaling.check_scale(scale)
        src = self.project.source(source)
        return self._scales.get(source, lambda: scaling.cell_scale(src))

    def quantile_table(self, source: str) -> scaling.QuantileTable:
        """Each cell's keys at 1,025 evenly spaced ranks (``scaling.quantile_table``), computed once per
        engine and source (a pass over the cells: ask from a worker) and kept for the newest
        ``QUANTILE_CACHE_SIZE`` sources."""
        src = self.project.source(source)
        return self._quantiles.get(source, lambda: scaling.quantile_table(src))

    def quantile_units(self, source: str, start: int, stop: int) -> np.ndarray:
        """(W, D) float64: the values of steps ``[start, stop)`` in quantile units, for DRAWING only
        (``scaling.quantile_units``: interpolated between table ranks, off by less than 1/1024; every
        on/off decision stays exact on the per-cell keys)."""
        src = self.project.source(source)
        start, stop = max(0, int(start)), min(self.project.T, int(stop))
        return scaling.quantile_units(self.quantile_table(source), src.raw(start, max(start, stop)))

    def normalised_row(self, source: str, cell: int, scale: str) -> np.ndarray:
        """(T,) float64 ``z`` of one cell over the whole corpus (NaN where the value is NaN): the cell is
        on iff ``z >= θ``. ``scale``: ``zscore`` or ``quantile``."""
        src = self.project.source(source)
        chosen = check_cells([cell], src.D, f"source {source}")
        return scaling.normalised_row(src, self.cell_scale(source, scale), int(chosen[0]), scale)

    def key_thresholds(self, source: str, threshold: float | Threshold,
                       scale: str = "none") -> np.ndarray | None:
        """One exact key per cell, ``(D,)``: cell c is on at t iff ``key(raw[t, c]) >= keys[c]``
        (``gpu_matcher.source.float_keys``); None when nothing is on. Cached per engine."""
        spec = Threshold.of(threshold, scale)
        src = self.project.source(source)

        def make() -> np.ndarray | None:
            params = self.cell_scale(source, spec.scale) if spec.scaled else None
            return scaling.key_thresholds(src, params, spec)

        keys = self._keys.get((source, spec), make)
        return None if keys is None else keys.copy()

    def resolve(self, source: str, threshold: float | Threshold, scale: str = "none") -> Key:
        """The key(s) a query carries: one stored-dtype key for ``none`` (every backend takes it), a
        ``(D,)`` array for a per-cell scale, or None when nothing is on."""
        spec = Threshold.of(threshold, scale)
        if not spec.scaled:
            return self.project.source(source).key_threshold(spec.value)
        return self.key_thresholds(source, spec)

    def on_mask(self, source: str, start: int, stop: int, threshold: float | Threshold,
                scale: str = "none") -> np.ndarray:
        """Boolean (n, D) on-mask of rows ``[start, stop)`` (clipped to the timeline) under the scale."""
        src = self.project.source(source)
        return self._on(src.raw(start, stop), self.resolve(source, threshold, scale))

    def all_on_score(self, source: str, cells: Sequence[int],
                     scale: str = "none") -> tuple[np.ndarray, Callable[[float], object]]:
        """A (T,) per-step score and a bound per threshold: every cell of ``cells`` is on at t iff
        ``score[t] >= bound(θ)`` (a bound of None: nothing is on; NaN scores are never on).

        One key decides every cell for ``none``, so the score is the cells' least key and the bound the
        threshold's key; a per-cell scale decides on ``z >= θ``, so the score is the cells' least ``z``
        (``normalised_row``) and the bound θ. One pass over the cells' rows, for detector curves.
        """
        src = self.project.source(source)
        chosen = check_cells(cells, src.D, f"source {source}").tolist()
        if scaling.check_scale(scale) == "none":
            store = src.layout(progress=False).keys_cells
            low = store.take(np.array([chosen[0]]))[0]
            for c in chosen[1:]:
                np.minimum(low, store.take(np.array([c]))[0], out=low)
            return low, src.key_threshold
        low = self.normalised_row(source, chosen[0], scale)
        for c in chosen[1:]:
            np.minimum(low, self.normalised_row(source, c, scale), out=low)     # NaN (off) propagates
        return low, float

    @staticmethod
    def _on(raw: np.ndarray, key: Key) -> np.ndarray:
        """On-mask of raw rows against a resolved key (one, or one per column of ``raw``)."""
        if key is None:
            return np.zeros(raw.shape, dtype=bool)
        return float_keys(raw) >= key

    # --- select -----------------------------------------------------------------------------
    def select(self, source: str, start: int, end: int, threshold: float | Threshold, left: int = 0,
               right: int = 0, sequences: bool = True, scale: str = "none") -> Selection:
        """S: cells on over ``[start, end]`` and off over the ``left``/``right`` margins."""
        spec = Threshold.of(threshold, scale)
        self.project.source(source)
        self.check_margins(left, right)
        self.check_range(start, end, sequences)
        w0, w1 = (int(x[0]) for x in clip_margins(self.project.sequence_bounds(sequences), [start], [end],
                                                   left, right))
        on = self.on_mask(source, w0, w1, spec)
        inside = on[start - w0:end + 1 - w0].all(axis=0)
        outside = on[:start - w0].any(axis=0) | on[end + 1 - w0:].any(axis=0)
        cells = np.flatnonzero(inside & ~outside).tolist()
        return Selection(source=source, start=start, end=end, threshold=spec.value,
                         left=left, right=right, cells=cells, scale=spec.scale)

    # --- match ------------------------------------------------------------------------------
    def match(self, source: str, cells: Sequence[int], threshold: float | Threshold, left: int = 0,
              right: int = 0, top: int = DEFAULT_TOP, min_length: int = DEFAULT_MIN_LENGTH,
              phrase_length: int = 0, distinct: bool = True, sequences: bool = True,
              scale: str = "none") -> list[Match]:
        """The exact ranked top ``top`` matches of cell set ``cells`` (MATCHING.md, "Match")."""
        query = self.match_query(source, cells, threshold, left, right, top, min_length, phrase_length,
                                 distinct, sequences, scale)
        return self.run(source, query)

    def match_query(self, source: str, cells: Sequence[int], threshold: float | Threshold, left: int = 0,
                    right: int = 0, top: int = DEFAULT_TOP, min_length: int = DEFAULT_MIN_LENGTH,
                    phrase_length: int = 0, distinct: bool = True, sequences: bool = True,
                    scale: str = "none") -> MatchQuery:
        """A checked ``MatchQuery``: the threshold spec and its resolved key(s)."""
        spec = Threshold.of(threshold, scale)
        src = self.project.source(source)
        self.check_margins(left, right)
        if top < 0 or min_length < 1 or phrase_length < 0:
            raise ProjectError(f"top={top}, min_length={min_length}, phrase_length={phrase_length}: "
                               "need top >= 0, min_length >= 1, phrase_length >= 0")
        chosen = check_cells(cells, src.D, f"source {source}")
        return MatchQuery(cells=tuple(int(c) for c in chosen), key_threshold=self.resolve(source, spec),
                          bounds=self.project.sequence_bounds(sequences), left=int(left),
                          right=int(right), top=int(top), min_length=int(min_length),
                          phrase_length=int(phrase_length), distinct=bool(distinct), threshold=spec)

    def run(self, source: str, query: MatchQuery) -> list[Match]:
        """Run a query on this engine's backend, or on NumPy when the backend does not declare what the
        query needs (per-cell keys)."""
        backend, layout = self.backend, None
        if query.per_cell and not backend.supports(Capability.PER_CELL_KEYS):
            backend = self._host_backend()
            layout = backend.prepare(self.project.source(source))
        else:
            layout = self.layout(source)
        return [Match(r.start, r.end, r.length, r.inter, r.union) for r in backend.match(layout, query)]

    def scan_backend(self, source: str, per_cell: bool = False,
                     ability: Capability = Capability.CORPUS_SCANS) -> tuple[Backend, object]:
        """The backend and layout that run the statistics' whole-corpus scans of a source
        (``gpu_matcher.stats``; ``ability``: ``CORPUS_SCANS``, or ``LEVEL_HISTOGRAMS`` for
        ``gpu_matcher.hypotheses``): this engine's backend when it declares ``ability`` (and
        ``PER_CELL_KEYS`` for a per-cell key), else the NumPy backend over the host layout."""
        backend = self.backend
        if backend.supports(ability) and (not per_cell or backend.supports(Capability.PER_CELL_KEYS)):
            return backend, self.layout(source)
        host = self._host_backend(f"the statistics' {ability.value.replace('_', ' ')}",
                                  ability.value.replace("_", " "))
        return host, host.prepare(self.project.source(source))

    def _host_backend(self, what: str = "per-cell thresholds", ability: str = "per-cell keys") -> Backend:
        with self._lock:
            if self._host is None:
                from gpu_matcher.backends.numpy import NumpyBackend

                self._host = NumpyBackend()
            tell = what not in self._host_told
            self._host_told.add(what)           # one line per kind of work, not per call
        if tell:
            log.info("%s run on the NumPy backend (the %s backend does not declare %s)", what,
                     self.backend.name, ability)
        return self._host

    # --- context ----------------------------------------------------------------------------
    def counts(self, source: str, cells: Sequence[int], threshold: float | Threshold, start: int,
               stop: int, scale: str = "none") -> np.ndarray:
        """n(t) for steps ``[start, stop)``: how many of ``cells`` are on (sequence-independent)."""
        src = self.project.source(source)
        return self.counts_in(source, src.raw(start, stop), cells, Threshold.of(threshold, scale))

    def counts_in(self, source: str, raw: np.ndarray, cells: Sequence[int],
                    threshold: Threshold) -> np.ndarray:
        """n(t) over rows of ``raw`` (read from ``source``): selected cells on, per row. The one place
        n(t) is computed for views."""
        if len(cells) == 0:
            return np.zeros(raw.shape[0], dtype=np.int32)
        chosen = check_cells(cells, self.project.source(source).D, f"source {source}")
        key = self.resolve(source, threshold)
        if key is not None and np.ndim(key) > 0:
            key = key[chosen]
        return self._on(raw[:, chosen], key).sum(axis=1).astype(np.int32)

    def overview_row_cost(self, source: str, scale: str = "none") -> int:
        """What :meth:`overview` reads per step, in values: the source's D when it reads rows, 1 when the
        backend bins the selected cells' bit rows on its workers (``Capability.COUNT_OVERVIEW``): a
        caller budgeting a whole contig's overview (the app's strip) divides by it."""
        return 1 if self._bins_bit_rows(Threshold.of(0.0, scale)) else int(self.project.source(source).D)

    def _bins_bit_rows(self, spec: Threshold) -> bool:
        """Whether the backend answers :meth:`overview` under ``spec`` from its own layout's bit rows."""
        return self.backend.supports(Capability.COUNT_OVERVIEW) and (
            not spec.scaled or self.backend.supports(Capability.PER_CELL_KEYS))

    def overview(self, source: str, cells: Sequence[int], threshold: float | Threshold, start: int,
                 stop: int, bins: int, scale: str = "none") -> tuple[np.ndarray, np.ndarray]:
        """Per-bin ``(min, max)`` of n(t) over steps ``[start, stop)`` (``gpu_matcher.overview``: bin edges,
        one step per bin when the range is shorter), for the overview strip of a whole contig. A backend
        declaring ``Capability.COUNT_OVERVIEW`` (NumPy, the sharded ones) computes it from the selected cells'
        rows of its layout; otherwise the source is read in chunks of at most ``OVERVIEW_CHUNK`` steps
        (fewer for a wide source: ~64 MB a chunk), all D cells of each row."""
        from gpu_matcher.overview import OVERVIEW_CHUNK, check_bins, reduce_dense, single_steps

        src = self.project.source(source)
        spec = Threshold.of(threshold, scale)
        chosen = check_cells(cells, src.D, f"source {source}")
        row_bytes = max(1, src.D * src.dtype.itemsize)
        chunk = max(1 << 12, min(OVERVIEW_CHUNK, (64 << 20) // row_bytes))
        start, stop = max(0, int(start)), min(self.project.T, int(stop))
        if self._bins_bit_rows(spec) and single_steps(*check_bins(start, stop, bins)) is None:
            key = self.resolve(source, spec)
            if key is None:                                # nothing is on: n(t) = 0 everywhere
                return np.zeros(bins), np.zeros(bins)
            return self.backend.count_overview(self.layout(source), chosen, key, start, stop, bins)
        return reduce_dense(lambda a, b: self.counts_in(source, src.raw(a, b), cells, spec),
                            start, stop, bins, chunk=chunk)

    def context(self, source: str, start: int, stop: int, cells: Sequence[int] = (),
                threshold: float | Threshold = 0.3, meta: Sequence[str] | None = None,
                scale: str = "none") -> Context:
        """Values, words, meta tracks and n(t) for the window ``[start, stop)`` (n(t) under the scale;
        values stay the transform's)."""
        src = self.project.source(source)
        start, stop = max(0, int(start)), min(self.project.T, int(stop))
        stop = max(start, stop)
        raw = src.raw(start, stop)
        values = transform_values(raw, src.transform)
        counts = self.counts_in(source, raw, cells, Threshold.of(threshold, scale))
        names = list(self.project.meta) if meta is None else list(meta)
        tracks, weights = {}, {}
        for name in names:
            if name not in self.project.meta:
                raise ProjectError(f"unknown meta track {name!r}; known: {', '.join(self.project.meta)}")
            track = self.project.meta[name]
            tracks[name] = track.values(start, stop)
            w = track.weights_for(start, stop)
            if w is not None:
                weights[name] = w
        return Context(start=start, stop=stop, values=values, words=self.project.tokens(start, stop),
                       counts=counts, meta=tracks, meta_weights=weights)

    # --- phrase search ----------------------------------------------------------------------
    def word_ids(self) -> np.ndarray:
        """The whole word timeline (ids), read once: 10^7 steps are 40-80 MB."""
        with self._lock:
            if self._words is None:
                self._words = self.project.word_ids(0, self.project.T)
            return self._words

    def tokenize(self, phrase: str | Sequence[str]) -> list[str]:
        """Tokens of a phrase: split on white space, or into characters for a character-level dict."""
        if not isinstance(phrase, str):
            return [str(t) for t in phrase]
        tokens = phrase.split()
        if all(self.project.token_id(t) is not None for t in tokens):
            return tokens
        if self.project.dictionary and all(len(t) == 1 for t in self.project.dictionary.values()):
            return list(phrase)
        return tokens

    def search(self, phrase: str | Sequence[str], limit: int | None = None,
               sequences: bool = True) -> np.ndarray:
        """Start positions of every occurrence of the token sequence (not crossing a sequence edge).

        In a genome project a phrase is a motif: IUPAC-aware, on both strands, read in chunks
        (``gpu_matcher.genome.motif.find``, which also gives the strands); the starts are unique."""
        if self.project.genome is not None and isinstance(phrase, str):
            from gpu_matcher.genome.motif import find

            # A start holds at most two hits (one per strand): 2 * limit hits hold the first limit starts.
            hits = find(self.project, phrase, strands="both", limit=None if limit is None else 2 * limit)
            starts = np.unique(hits.starts)
            return starts[:limit] if limit is not None else starts
        tokens = self.tokenize(phrase)
        if not tokens:
            raise ProjectError("search: the phrase is empty")
        ids = []
        for tok in tokens:
            idx = self.project.token_id(tok)
            if idx is None:
                return np.zeros(0, dtype=np.int64)
            ids.append(idx)
        words = self.word_ids()
        n = len(ids)
        hits = np.flatnonzero(words[: max(0, words.size - n + 1)] == ids[0])
        for offset, idx in enumerate(ids[1:], 1):
            hits = hits[words[hits + offset] == idx]
        if n > 1 and sequences and self.project.sequence_starts is not None and hits.size:
            bounds = self.project.sequence_bounds(True)
            seq_first = np.searchsorted(bounds, hits, side="right")
            seq_last = np.searchsorted(bounds, hits + n - 1, side="right")
            hits = hits[seq_first == seq_last]
        return hits[:limit] if limit is not None else hits
