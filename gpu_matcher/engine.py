"""Select, match, context and phrase search over one project: orchestration only.

Semantics: ``../shared/MATCHING.md``. The array work is the backend's (``gpu_matcher.backends``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from gpu_matcher.backends import Backend, MatchQuery, get_backend
from gpu_matcher.backends.base import check_cells
from gpu_matcher.errors import ProjectError
from gpu_matcher.project import Project
from gpu_matcher.source import transform_values


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

    # --- helpers ----------------------------------------------------------------------------
    def layout(self, source: str):
        """The backend's layout of a source, built or loaded once (thread-safe)."""
        with self._lock:
            if source not in self._layouts:
                self._layouts[source] = self.backend.prepare(self.project.source(source))
            return self._layouts[source]

    def _check_range(self, start: int, end: int, sequences: bool) -> tuple[int, int]:
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
    def _check_margins(left: int, right: int) -> None:
        if left < 0 or right < 0:
            raise ProjectError(f"margins must be >= 0 (left={left}, right={right})")

    # --- select -----------------------------------------------------------------------------
    def select(self, source: str, start: int, end: int, threshold: float, left: int = 0,
               right: int = 0, sequences: bool = True) -> Selection:
        """S: cells on over ``[start, end]`` and off over the ``left``/``right`` margins."""
        src = self.project.source(source)
        self._check_margins(left, right)
        lo, hi = self._check_range(start, end, sequences)
        w0, w1 = max(lo, start - left), min(hi, end + 1 + right)
        on = src.on(w0, w1, threshold)
        inside = on[start - w0:end + 1 - w0].all(axis=0)
        outside = on[:start - w0].any(axis=0) | on[end + 1 - w0:].any(axis=0)
        cells = np.flatnonzero(inside & ~outside).tolist()
        return Selection(source=source, start=start, end=end, threshold=float(threshold),
                         left=left, right=right, cells=cells)

    # --- match ------------------------------------------------------------------------------
    def match(self, source: str, cells: Sequence[int], threshold: float, left: int = 0,
              right: int = 0, top: int = 50, min_length: int = 2, phrase_length: int = 0,
              distinct: bool = True, sequences: bool = True) -> list[Match]:
        """The exact ranked top ``top`` matches of cell set ``cells`` (MATCHING.md, "Match")."""
        key = self.project.source(source).key_threshold(threshold)
        query = self.match_query(source, cells, key, left, right, top, min_length, phrase_length,
                                 distinct, sequences)
        return self.run_match(self.backend, self.layout(source), query)

    def match_query(self, source: str, cells: Sequence[int], key_threshold, left: int, right: int,
                    top: int, min_length: int, phrase_length: int, distinct: bool,
                    sequences: bool) -> MatchQuery:
        """A checked ``MatchQuery`` (``key_threshold``: one stored-dtype key, or one per cell)."""
        src = self.project.source(source)
        self._check_margins(left, right)
        if top < 0 or min_length < 1 or phrase_length < 0:
            raise ProjectError(f"top={top}, min_length={min_length}, phrase_length={phrase_length}: "
                               "need top >= 0, min_length >= 1, phrase_length >= 0")
        chosen = check_cells(cells, src.D, f"source {source}")
        return MatchQuery(cells=tuple(int(c) for c in chosen), key_threshold=key_threshold,
                          bounds=self.project.sequence_bounds(sequences), left=int(left),
                          right=int(right), top=int(top), min_length=int(min_length),
                          phrase_length=int(phrase_length), distinct=bool(distinct))

    @staticmethod
    def run_match(backend: Backend, layout, query: MatchQuery) -> list[Match]:
        return [Match(r.start, r.end, r.length, r.inter, r.union) for r in backend.match(layout, query)]

    # --- context ----------------------------------------------------------------------------
    def counts(self, source: str, cells: Sequence[int], threshold: float, start: int,
               stop: int) -> np.ndarray:
        """n(t) for steps ``[start, stop)``: how many of ``cells`` are on (sequence-independent)."""
        src = self.project.source(source)
        return self._counts(src, src.raw(start, stop), cells, threshold)

    @staticmethod
    def _counts(src, raw: np.ndarray, cells: Sequence[int], threshold: float) -> np.ndarray:
        """n(t) over rows of ``raw`` (read from ``src``): selected cells on, per row."""
        if len(cells) == 0:
            return np.zeros(raw.shape[0], dtype=np.int32)
        chosen = check_cells(cells, src.D, f"source {src.name}")
        return src.is_on(raw[:, chosen], threshold).sum(axis=1).astype(np.int32)

    def context(self, source: str, start: int, stop: int, cells: Sequence[int] = (),
                threshold: float = 0.3, meta: Sequence[str] | None = None) -> Context:
        """Values, words, meta tracks and n(t) for the window ``[start, stop)``."""
        src = self.project.source(source)
        start, stop = max(0, int(start)), min(self.project.T, int(stop))
        stop = max(start, stop)
        raw = src.raw(start, stop)
        values = transform_values(raw, src.transform)
        counts = self._counts(src, raw, cells, threshold)
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
        """Start positions of every occurrence of the token sequence (not crossing a sequence edge)."""
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
