"""Hypothesis statistics over one project: enrichment, the selection as a detector, suggested cells,
phrase patterns with PCA (the paper's Fig. 9), and a comparison of two sources.

Pure computation, plain data out; no Bokeh. "On" is MATCHING.md's exact comparison (order-preserving keys
against ``Source.key_threshold``); every count is an exact integer over the whole corpus. The
whole-corpus scans (suggest, the detector curve, the phrase map) run on the engine's backend
(``Engine.scan_backend``: ``SearchBackend.cell_on_counts``, ``all_on_counts``, ``span_patterns``), so
they run on the GPU with the CuPy backend and shard by shard on the workers with the sharded and Dask
backends; a backend that does not declare ``Capability.CORPUS_SCANS`` has them answered by NumPy, one
cell row of the host keys at a time. A label is passed to them as a ``gpu_matcher.targets.Target``
(``label_target``: the track's files and the value), so no whole-timeline label array is built: a
one-process backend reads the mask (1 byte a step), a shard worker reads its own steps of the track.
Corpus label counts, label spans and enrichment read tracks in chunks of ``TARGET_CHUNK`` steps.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from gpu_matcher import scaling
from gpu_matcher.backends.base import check_cells
from gpu_matcher.errors import ProjectError
from gpu_matcher.query import DEFAULT_TOP, clip_margins
from gpu_matcher.source import KEY_DTYPES
from gpu_matcher.targets import TARGET_CHUNK, RangeTarget, Target, TrackLocator, TrackTarget, as_mask
from gpu_matcher.threshold import SCALE_RANGES, Threshold, check_scale


# --- helpers -----------------------------------------------------------------------------------
def discrete_track(engine, track: str):
    """A discrete meta track by name, or a ProjectError naming the choices."""
    meta = engine.project.meta
    if track not in meta:
        raise ProjectError(f"unknown meta track {track!r}; known: {', '.join(meta) or '(none)'}")
    if meta[track].kind != "discrete":
        raise ProjectError(f"meta track {track!r} is {meta[track].kind}; statistics need a discrete track")
    return meta[track]


@dataclass
class _TrackCache:
    """What the statistics keep per engine: whole track timelines and their corpus label counts."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    corpus: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# Per engine, for as long as the engine lives (a discrete track is T small ints: read once, not per query).
_CACHES: "weakref.WeakKeyDictionary[Any, _TrackCache]" = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache(engine) -> _TrackCache:
    with _CACHES_LOCK:
        found = _CACHES.get(engine)
        if found is None:
            found = _CACHES[engine] = _TrackCache()
        return found


def track_values(engine, track: str) -> np.ndarray:
    """The whole (T,) value timeline of a discrete track as int64 (read once per engine: 8 bytes a step;
    for small projects and tests: the statistics read tracks in chunks or per shard, ``label_target``)."""
    cache = _cache(engine)
    with cache.lock:
        if track not in cache.values:
            values = discrete_track(engine, track).values(0, engine.project.T)
            cache.values[track] = np.asarray(values).astype(np.int64)
        return cache.values[track]


def _corpus_counts(engine, track: str) -> tuple[np.ndarray, np.ndarray]:
    """The labels present in a track and their step counts, read in chunks of ``TARGET_CHUNK`` steps
    (never the whole timeline at once), once per engine."""
    cache = _cache(engine)
    with cache.lock:
        if track not in cache.corpus:
            meta, T = discrete_track(engine, track), engine.project.T
            counts: dict[int, int] = {}
            for a in range(0, T, TARGET_CHUNK):
                v, c = np.unique(np.asarray(meta.values(a, min(T, a + TARGET_CHUNK))).astype(np.int64),
                                 return_counts=True)
                for value, n in zip(v.tolist(), c.tolist()):
                    counts[value] = counts.get(value, 0) + n
            present = np.array(sorted(counts), dtype=np.int64)
            cache.corpus[track] = (present, np.array([counts[v] for v in present.tolist()], dtype=np.int64))
        return cache.corpus[track]


def label_target(engine, track: str, label: Any) -> TrackTarget:
    """The steps where ``track == label``, as a ``Target`` (read where the steps are scanned: by each
    shard worker for its own steps under a sharded backend)."""
    meta = discrete_track(engine, track)
    return TrackTarget(label_value(engine, track, label), TrackLocator.of(meta, engine.project.T), meta)


def label_count(engine, track: str, label: Any) -> int:
    """Steps where ``track == label`` (from the chunked corpus counts)."""
    present, counts = _corpus_counts(engine, track)
    value = label_value(engine, track, label)
    i = int(np.searchsorted(present, value))
    return int(counts[i]) if i < present.size and present[i] == value else 0


def label_value(engine, track: str, label: Any) -> int:
    """A label given as its value or its name -> the stored value."""
    meta = discrete_track(engine, track)
    if isinstance(label, (int, np.integer)):
        return int(label)
    text = str(label)
    for value, name in (meta.labels or {}).items():
        if name == text:
            return int(value)
    try:
        return int(text)
    except ValueError:
        known = ", ".join((meta.labels or {}).values())
        raise ProjectError(f"meta track {track!r} has no label {text!r}; known: {known}") from None


def merged_spans(T: int, spans: Sequence) -> list[tuple[int, int]]:
    """The union of inclusive ranges ``[start, end]`` (Match objects or pairs) as sorted disjoint
    inclusive ranges."""
    pairs = []
    for s in spans:
        a, b = (s.start, s.end) if hasattr(s, "start") else (int(s[0]), int(s[1]))
        if not (0 <= a <= b < T):
            raise ProjectError(f"range [{a}, {b}] is outside the timeline [0, {T - 1}]")
        pairs.append((int(a), int(b)))
    out: list[tuple[int, int]] = []
    for a, b in sorted(pairs):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def step_mask(T: int, spans: Sequence) -> np.ndarray:
    """(T,) bool: the union of inclusive ranges ``[start, end]`` (Match objects or pairs)."""
    mask = np.zeros(T + 1, dtype=np.int64)
    for s in spans:
        a, b = (s.start, s.end) if hasattr(s, "start") else (int(s[0]), int(s[1]))
        if not (0 <= a <= b < T):
            raise ProjectError(f"range [{a}, {b}] is outside the timeline [0, {T - 1}]")
        mask[a] += 1
        mask[b + 1] -= 1
    return np.cumsum(mask[:T]) > 0


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeom_sf(k: int, N: int, K: int, n: int) -> float:
    """P(X >= k) for X ~ Hypergeometric(population N, K successes, n draws), from log-gamma terms.

    The pmf is unimodal, so each tail is summed from its end nearest the mode outwards, stopping once the
    terms cannot change the sum in float64; the tail that does not hold the mode is computed directly.
    """
    lo, hi = max(0, n - (N - K)), min(n, K)
    if k <= lo:
        return 1.0
    if k > hi:
        return 0.0
    log_total = _log_comb(N, n)

    def log_pmf(i: int) -> float:
        return _log_comb(K, i) + _log_comb(N - K, n - i) - log_total

    mode = int(math.floor((n + 1) * (K + 1) / (N + 2)))

    def tail(first: int, step: int, last: int) -> float:
        peak = log_pmf(first)
        total, i = 0.0, first
        while (i <= last) if step > 0 else (i >= last):
            lp = log_pmf(i)
            term = math.exp(lp - peak)
            total += term
            if term < 1e-18 * total and (i - mode) * step > 0:
                break
            i += step
        return math.exp(peak) * total

    if k > mode:
        return min(1.0, tail(k, 1, hi))
    return max(0.0, min(1.0, 1.0 - tail(k - 1, -1, lo)))


# --- enrichment --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelEnrichment:
    value: int
    label: str
    matched: int          # matched steps with this label
    corpus: int           # corpus steps with this label
    ratio: float          # (matched / matched steps) / (corpus / T); 0 when the label is absent
    p_value: float        # hypergeometric P(X >= matched): over-representation by chance

    def as_dict(self) -> dict:
        return {"value": self.value, "label": self.label, "matched": self.matched, "corpus": self.corpus,
                "ratio": self.ratio, "p_value": self.p_value}


@dataclass(frozen=True)
class Enrichment:
    track: str
    matched_steps: int
    total_steps: int
    labels: list[LabelEnrichment] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"track": self.track, "matched_steps": self.matched_steps, "total_steps": self.total_steps,
                "labels": [row.as_dict() for row in self.labels]}


def enrichment(engine, source: str, matches: Sequence, track: str) -> Enrichment:
    """Labels of ``track`` over the steps covered by ``matches`` (their union) against the corpus.

    ``source`` names the source the matches came from (checked; the counts depend only on the steps).
    """
    engine.project.source(source)
    meta = discrete_track(engine, track)
    T = engine.project.T
    matched_of: dict[int, int] = {}
    n = 0
    for a, b in merged_spans(T, matches):         # only the matched steps are read
        n += b + 1 - a
        inside, matched = np.unique(np.asarray(meta.values(a, b + 1)).astype(np.int64), return_counts=True)
        for v, c in zip(inside.tolist(), matched.tolist()):
            matched_of[v] = matched_of.get(v, 0) + c
    present, corpus = _corpus_counts(engine, track)
    corpus_of = dict(zip(present.tolist(), corpus.tolist()))
    known = sorted(set(corpus_of) | set((meta.labels or {}).keys()))
    rows = []
    for v in known:
        K, k = int(corpus_of.get(v, 0)), int(matched_of.get(v, 0))
        ratio = (k * T) / (n * K) if n and K else 0.0
        rows.append(LabelEnrichment(value=int(v), label=meta.label(v), matched=k, corpus=K, ratio=ratio,
                                    p_value=hypergeom_sf(k, T, K, n)))
    return Enrichment(track=track, matched_steps=n, total_steps=T, labels=rows)


# --- the selection as a detector ---------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    threshold: float
    predicted: int        # steps where every cell of S is on
    positives: int        # steps with the label
    true_positives: int
    precision: float
    recall: float
    f1: float

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("threshold", "predicted", "positives", "true_positives",
                                              "precision", "recall", "f1")}


def _scores(threshold: float, predicted: int, positives: int, tp: int) -> Detection:
    precision = tp / predicted if predicted else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * tp / (predicted + positives) if predicted + positives else 0.0
    return Detection(float(threshold), int(predicted), int(positives), int(tp), precision, recall, f1)


def detector(engine, source: str, cells: Sequence[int], threshold: float, track: str,
             label: Any, scale: str = "none") -> Detection:
    """Precision, recall and F1 of "all cells of S on at t" as a prediction of ``track == label``."""
    return detector_curve(engine, source, cells, [threshold], track, label, scale).points[0]


@dataclass(frozen=True)
class DetectorCurve:
    points: list[Detection]
    best: Detection | None      # the highest F1 (the lowest threshold on ties); None if every F1 is 0

    def as_dict(self) -> dict:
        return {"points": [p.as_dict() for p in self.points],
                "best": self.best.as_dict() if self.best else None}


def default_thresholds(engine, source: str, count: int = 41, scale: str = "none") -> list[float]:
    """An even grid over the source's value range (or the scale's), ends excluded (nothing or everything
    on is no detector)."""
    lo, hi = SCALE_RANGES.get(check_scale(scale)) or engine.project.source(source).value_range()
    return [round(float(x), 4) for x in np.linspace(lo, hi, count + 2)[1:-1]]     # the app's precision


def detector_curve(engine, source: str, cells: Sequence[int], thresholds: Sequence[float] | None,
                   track: str, label: Any, scale: str = "none") -> DetectorCurve:
    """Exact detector scores at every threshold, from one pass over the cells of S.

    ``none`` and ``zscore``: one key per threshold and cell of S (cheap to find), and the backend counts
    the steps where all of S is on at each threshold in one pass (``SearchBackend.all_on_counts``: on
    the GPU with the CuPy backend). ``quantile``: its keys need a pass over every cell per threshold, so
    the curve reads S's least ``z`` per step on the host (``Engine.all_on_score``) and each threshold
    costs two binary searches in the sorted scores.
    """
    if thresholds is None:
        thresholds = default_thresholds(engine, source, scale=scale)
    pos = label_target(engine, track, label)
    positives = label_count(engine, track, label)
    if check_scale(scale) == "quantile":
        return _detector_curve_scores(engine, source, cells, thresholds, as_mask(pos, engine.project.T), scale)
    src = engine.project.source(source)
    chosen = check_cells(cells, src.D, f"source {source}")
    kdt = np.dtype(KEY_DTYPES[src.dtype.itemsize])
    nothing = np.iinfo(kdt).max                      # above every stored key: nothing is on
    params = engine.cell_scale(source, scale) if scale != "none" else None
    keys = np.empty((len(thresholds), chosen.size), dtype=kdt)
    for i, th in enumerate(thresholds):
        if params is None:
            key = src.key_threshold(float(th))
        else:
            # Not engine.key_thresholds: a curve's dozens of thresholds would flush its cache.
            found = scaling.key_thresholds(src, params, Threshold.of(float(th), scale))
            key = None if found is None else found[chosen]
        keys[i] = nothing if key is None else key
    backend, layout = engine.scan_backend(source)
    with backend.lock:
        predicted, tp = backend.all_on_counts(layout, chosen, keys, pos)
    points = [_scores(th, int(p), positives, int(t)) for th, p, t in zip(thresholds, predicted, tp)]
    return DetectorCurve(points=points, best=best_f1(points))


def _detector_curve_scores(engine, source: str, cells: Sequence[int], thresholds: Sequence[float],
                           pos: np.ndarray, scale: str) -> DetectorCurve:
    """The curve from S's least per-step score on the host (``Engine.all_on_score``)."""
    score, bound = engine.all_on_score(source, cells, scale)
    valid = ~np.isnan(score) if score.dtype.kind == "f" else np.ones(score.size, dtype=bool)
    all_sorted = np.sort(score[valid])
    pos_sorted = np.sort(score[valid & pos])
    positives = int(pos.sum())
    points = []
    for th in thresholds:
        b = bound(float(th))
        if b is None or (isinstance(b, float) and math.isnan(b)):
            predicted = tp = 0
        else:
            predicted = int(all_sorted.size - np.searchsorted(all_sorted, b, side="left"))
            tp = int(pos_sorted.size - np.searchsorted(pos_sorted, b, side="left"))
        points.append(_scores(th, predicted, positives, tp))
    return DetectorCurve(points=points, best=best_f1(points))


def best_f1(points: Sequence[Detection]) -> Detection | None:
    """The point with the highest F1 (the lowest threshold on ties); None when every F1 is 0."""
    best = None
    for p in sorted(points, key=lambda p: p.threshold):
        if p.f1 > 0 and (best is None or p.f1 > best.f1):
            best = p
    return best


# Public name for detectors built on these scores elsewhere (gpu_matcher.hypotheses: "m of k on").
scores = _scores


# --- suggested cells ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CellScore:
    cell: int
    inside_on: int        # steps of the target where the cell is on
    outside_on: int       # steps of the rest of the corpus where it is on
    rate_in: float
    rate_out: float
    score: float          # rate_in - rate_out

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("cell", "inside_on", "outside_on", "rate_in", "rate_out",
                                              "score")}


def suggest_cells(engine, source: str, threshold: float, start: int | None = None, end: int | None = None,
                  track: str | None = None, label: Any = None, top: int = 20,
                  scale: str = "none") -> list[CellScore]:
    """Cells ranked by how well they separate a target from the rest of the corpus.

    The target is the brushed range ``[start, end]`` or the steps where ``track == label``. The score is
    the on-rate inside minus the on-rate outside; the ranking compares the exact integer numerators
    ``inside_on * n_out - outside_on * n_in`` (ties: lower cell first).
    """
    src = engine.project.source(source)
    T, D = src.shape
    target: Target
    if track is not None:
        target, n_in = label_target(engine, track, label), label_count(engine, track, label)
    else:
        if start is None or end is None or not (0 <= start <= end < T):
            raise ProjectError(f"suggest: give a range inside [0, {T - 1}] (got {start}, {end}) or a label")
        target, n_in = RangeTarget(int(start), int(end)), int(end) + 1 - int(start)
    n_out = T - n_in
    if n_in == 0:
        raise ProjectError(f"suggest: the label {label!r} of track {track!r} never occurs")
    key = engine.resolve(source, threshold, scale)        # one key, one per cell, or None (nothing on)
    if key is None:
        inside = total = np.zeros(D, dtype=np.int64)
    else:
        backend, layout = engine.scan_backend(source, per_cell=np.ndim(key) > 0)
        with backend.lock:
            inside, total = backend.cell_on_counts(layout, key, target)
    outside = total - inside
    numer = inside * n_out - outside * n_in if n_out else inside     # no rest: rank by the inside rate
    order = np.lexsort((np.arange(D), -numer))[:max(0, int(top))]
    return [CellScore(cell=int(c), inside_on=int(inside[c]), outside_on=int(outside[c]),
                      rate_in=inside[c] / n_in, rate_out=outside[c] / n_out if n_out else 0.0,
                      score=inside[c] / n_in - (outside[c] / n_out if n_out else 0.0)) for c in order]


# --- phrase patterns and PCA (Fig. 9) ----------------------------------------------------------
@dataclass
class PhrasePatterns:
    starts: np.ndarray         # (P,) int64, inclusive
    ends: np.ndarray           # (P,) int64, inclusive
    values: np.ndarray         # (P,) the label value of each phrase
    patterns: np.ndarray       # (P, D) bool: S of the phrase (MATCHING.md "Select" over [start, end])


def label_spans(engine, track: str, labels: Sequence | None = None,
                sequences: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of one label value (cut at sequence boundaries): starts, ends (inclusive), values."""
    meta, T = discrete_track(engine, track), engine.project.T
    if T == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    inner = np.asarray(engine.project.sequence_bounds(sequences), dtype=np.int64)
    inner = inner[(inner > 0) & (inner < T)]
    found_starts, found_vals, prev = [], [], None
    for a in range(0, T, TARGET_CHUNK):                 # in chunks: runs are cut where the value changes
        values = np.asarray(meta.values(a, min(T, a + TARGET_CHUNK))).astype(np.int64)
        cut = np.empty(values.size, dtype=bool)
        cut[0] = prev is None or values[0] != prev
        cut[1:] = values[1:] != values[:-1]
        cut[inner[(inner >= a) & (inner < a + values.size)] - a] = True
        idx = np.flatnonzero(cut)
        found_starts.append(idx + a)
        found_vals.append(values[idx])
        prev = values[-1]
    starts = np.concatenate(found_starts)
    vals = np.concatenate(found_vals)
    ends = np.append(starts[1:] - 1, T - 1)
    if labels is not None:
        wanted = [label_value(engine, track, lab) for lab in labels]
        keep = np.isin(vals, wanted)
        starts, ends, vals = starts[keep], ends[keep], vals[keep]
    return starts.astype(np.int64), ends.astype(np.int64), vals


def phrase_patterns(engine, source: str, track: str, threshold: float, labels: Sequence | None = None,
                    left: int = 0, right: int = 0, sequences: bool = True,
                    scale: str = "none") -> PhrasePatterns:
    """S (the on/off pattern) of every label span, from one cumulative sum per cell row (on the engine's
    backend: ``SearchBackend.span_patterns``)."""
    src = engine.project.source(source)
    T, D = src.shape
    starts, ends, vals = label_spans(engine, track, labels, sequences)
    P = starts.size
    lo, hi = clip_margins(engine.project.sequence_bounds(sequences), starts, ends, left, right)
    key = engine.resolve(source, threshold, scale)        # one key, one per cell, or None (nothing on)
    if key is None or P == 0:
        patterns = np.zeros((P, D), dtype=bool)
    else:
        backend, layout = engine.scan_backend(source, per_cell=np.ndim(key) > 0)
        with backend.lock:
            patterns = backend.span_patterns(layout, key, starts, ends, np.asarray(lo, dtype=np.int64),
                                             np.asarray(hi, dtype=np.int64))
    return PhrasePatterns(starts=starts, ends=ends, values=vals, patterns=patterns)


PCA_BLOCK = 1 << 14          # rows of patterns converted to float64 at a time


@dataclass
class Projection:
    coords: np.ndarray          # (P, k) float64
    components: np.ndarray      # (k, D)
    explained: np.ndarray       # (k,) fraction of the variance


def pca(patterns: np.ndarray, k: int = 2) -> Projection:
    """PCA of the rows of ``patterns`` via the SVD of the (D, D) covariance (P may be 10^6).

    Signs are fixed (the largest loading of each component is positive) so results are reproducible.
    """
    X = np.asarray(patterns)
    P, D = X.shape
    k = max(0, min(int(k), D))
    if P == 0 or D == 0:
        return Projection(np.zeros((P, k)), np.zeros((k, D)), np.zeros(k))
    # Blocks of rows in float64: 10^5 x 650 patterns never become one 0.5 GB float64 matrix.
    gram, total_rows = np.zeros((D, D)), np.zeros(D)
    for a in range(0, P, PCA_BLOCK):
        block = X[a:a + PCA_BLOCK].astype(np.float64)
        gram += block.T @ block
        total_rows += block.sum(axis=0)
    mean = total_rows / P
    cov = gram / P - np.outer(mean, mean)
    u, s, _ = np.linalg.svd(cov, hermitian=True)
    comps = u[:, :k].T.copy()
    flip = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps *= np.where(flip == 0, 1.0, flip)[:, None]
    total = float(np.trace(cov))
    explained = s[:k] / total if total > 0 else np.zeros(k)
    coords = np.empty((P, k))
    for a in range(0, P, PCA_BLOCK):
        coords[a:a + PCA_BLOCK] = (X[a:a + PCA_BLOCK].astype(np.float64) - mean) @ comps.T
    return Projection(coords=coords, components=comps, explained=explained)


def phrase_texts(engine, starts: np.ndarray, ends: np.ndarray, limit: int = 12) -> list[str]:
    """The words of each phrase for hover text (at most ``limit`` tokens, then an ellipsis)."""
    project = engine.project
    if project.word_ids_dataset is None:
        return [f"{int(s)}-{int(e)}" for s, e in zip(starts, ends)]
    words = engine.word_ids()
    lookup = project.dictionary
    sep = "" if lookup and all(len(w) == 1 for w in lookup.values()) else " "
    out = []
    for s, e in zip(np.asarray(starts).tolist(), np.asarray(ends).tolist()):
        ids = words[s:min(e + 1, s + limit)].tolist()
        out.append(sep.join(lookup.get(i, f"#{i}") for i in ids) + ("..." if e + 1 - s > limit else ""))
    return out


# --- compare two sources -----------------------------------------------------------------------
@dataclass
class Comparison:
    a: dict
    b: dict
    overlap_steps: int          # steps matched in both
    jaccard: float              # overlap / steps matched in either
    shared_matches: int         # matches of A that overlap some match of B
    enrichment: list[dict]      # per label: ratio in A, ratio in B, difference

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "overlap_steps": self.overlap_steps, "jaccard": self.jaccard,
                "shared_matches": self.shared_matches, "enrichment": self.enrichment}


def compare(engine_a, source_a: str, engine_b, source_b: str, start: int, end: int, threshold: float,
            left: int = 0, right: int = 0, top: int = DEFAULT_TOP, track: str | None = None,
            sequences: bool = True, scale: str = "none") -> Comparison:
    """The same brushed range selected and matched in two sources over the same token timeline (the
    threshold read on ``scale`` in both)."""
    if engine_a.project.T != engine_b.project.T:
        raise ProjectError(f"compare: the timelines differ (T={engine_a.project.T} vs {engine_b.project.T}); "
                           "two sources must share one token timeline")
    T = engine_a.project.T
    sides, masks, lists = [], [], []
    for engine, source in ((engine_a, source_a), (engine_b, source_b)):
        sel = engine.select(source, start, end, threshold, left, right, sequences, scale=scale)
        found = engine.match(source, sel.cells, threshold, left, right, top, sequences=sequences,
                             scale=scale) if sel.cells else []
        lists.append(found)
        masks.append(step_mask(T, found))
        sides.append({"source": source, "cells": sel.cells, "matches": [m.as_dict() for m in found]})
    both = masks[0] & masks[1]
    either = int((masks[0] | masks[1]).sum())
    shared = sum(1 for m in lists[0] if masks[1][m.start:m.end + 1].any())
    rows = []
    if track is not None:
        ea = enrichment(engine_a, source_a, lists[0], track)
        eb = enrichment(engine_b, source_b, lists[1], track)
        by_b = {r.value: r for r in eb.labels}
        for r in ea.labels:
            o = by_b.get(r.value)
            rb = o.ratio if o else 0.0
            rows.append({"value": r.value, "label": r.label, "ratio_a": r.ratio, "ratio_b": rb,
                         "difference": r.ratio - rb, "p_value_a": r.p_value,
                         "p_value_b": o.p_value if o else 1.0})
        rows.sort(key=lambda r: (-abs(r["difference"]), r["value"]))
    return Comparison(a=sides[0], b=sides[1], overlap_steps=int(both.sum()),
                      jaccard=int(both.sum()) / either if either else 0.0, shared_matches=shared,
                      enrichment=rows)
