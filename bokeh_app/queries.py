"""The app's questions to the engine, as plain functions returning plain answers (no Bokeh).

Like ``select_movies()`` in Bokeh's movies example: a receiver asks one of these (on the document lock
when it is quick, in the session's worker when it is long) and hands the answer to ``bokeh_app.columns``.
Nothing here touches a model or a session, so a worker thread may run any of them.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from bokeh_app.columns import CATEGORY_COLORS, matrix_words, robust_range, row_label, scaled_values
from gpu_matcher import Engine, ProjectError
from gpu_matcher import hypotheses
from gpu_matcher import stats as hypothesis
from gpu_matcher.threshold import SCALE_RANGES

PHRASE_POINTS = 20_000                 # most phrases drawn in the phrase map (PCA uses all of them)


# --- the match view -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatchJob:
    generation: int
    source: str
    cells: tuple[int, ...]
    threshold: float
    left: int
    right: int
    tracks: tuple[str, ...]
    note: str = ""                     # the status message of the action that asked for it
    asked: float = 0.0                 # time.monotonic() when it was asked for
    scale: str = "none"                # the threshold's scale: the value, or per-cell zscore / quantile
    stats: tuple = ("", "", None)      # (track, label, at least m or None: all) of the hypothesis panel;
                                       # track "" when it is absent
    min_length: int | None = None      # the shortest match; None: the match defaults'


@dataclass
class ColumnSummary:
    """One heatmap column-wise over the top matches (the row under the word matrix)."""

    kind: str              # "count", "discrete", "scalar" or "wordvec"
    value: np.ndarray      # (columns,) float64: the mean (count, scalar, wordvec) or the majority
                           # label's share (discrete); NaN where no match has a step at that offset
    label: np.ndarray      # (columns,) float64: the majority label id (discrete), else NaN
    text: list[str]        # (columns,) the cell's text: the majority label, or the mean


@dataclass
class MatchMatrix:
    """The match view's word matrix and its aligned heatmaps, one row per match."""

    words: dict[str, list]                  # x, y, word, color, style, pos, font, align
    row_labels: dict[int, str]              # y -> "rank start len inter/union"
    heatmaps: dict[str, np.ndarray]         # name -> (rows, columns) float32, NaN where no step
    lows: dict[str, float]                  # colour-mapper bounds per heatmap
    highs: dict[str, float]
    summaries: dict = field(default_factory=dict)   # name -> ColumnSummary (the heatmap under the matrix)


@dataclass
class MatchResult:
    matches: list
    matrix: MatchMatrix
    engine_ms: float
    total_ms: float
    stats: "StatsAnswer | None" = None         # the hypothesis panel's numbers, computed in the worker too


def summarise_columns(values: np.ndarray, kind: str, label_of=None) -> ColumnSummary:
    """``values`` (rows, columns), NaN where no step: the column means, or for a discrete track the
    majority label of each column and its share of the rows with a step there."""
    values = np.asarray(values, dtype=np.float64)
    columns = values.shape[1] if values.ndim == 2 else 0
    value = np.full(columns, np.nan)
    label = np.full(columns, np.nan)
    text = [""] * columns
    for c in range(columns):
        col = values[:, c]
        col = col[np.isfinite(col)]
        if col.size == 0:
            continue
        if kind == "discrete":
            ids, counts = np.unique(col, return_counts=True)
            best = int(np.argmax(counts))                    # ties: the smallest id
            value[c], label[c] = counts[best] / col.size, ids[best]
            text[c] = label_of(ids[best]) if label_of is not None else f"{ids[best]:g}"
        else:
            value[c] = col.mean()
            text[c] = f"{value[c]:.1f}" if abs(value[c]) < 10 else f"{value[c]:.3g}"
    return ColumnSummary(kind, value, label, text)


def track_bounds(track, values: np.ndarray) -> tuple[float, float]:
    """Colour-mapper bounds for a meta track: its declared range, else the data's."""
    if track.kind == "discrete":
        return -0.5, len(CATEGORY_COLORS) - 0.5       # ids are folded mod 10 (discrete_ids)
    if track.value_range is not None:
        return float(track.value_range[0]), float(track.value_range[1])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def discrete_ids(values: np.ndarray) -> np.ndarray:
    """Label ids folded onto the 10 category colours (NaN stays NaN)."""
    out = np.asarray(values, dtype=np.float32).copy()
    finite = np.isfinite(out)
    out[finite] = np.mod(out[finite], len(CATEGORY_COLORS))
    return out


def track_window(track, a: int, b: int) -> np.ndarray:
    """A meta track's values over ``[a, b)``: a wordvec track's top-1 weight, else its values."""
    if track.kind == "wordvec":
        weights = track.weights_for(a, b)
        return weights[:, 0] if weights is not None else np.zeros(b - a)
    return track.values(a, b)


def match_matrix(engine: Engine, source: str, matches, cells: list[int], threshold: float,
                 context_left: int, columns: int, tracks: list[str], word_px: int,
                 scale: str = "none") -> MatchMatrix:
    """Words around every match (aligned at its start) and the heatmaps ``n(t)`` and ``tracks``."""
    project = engine.project
    T = project.T
    rows = len(matches)
    windows, labels = [], {}
    heat = {"n(t)": np.full((rows, columns), np.nan, dtype=np.float32)}
    raw: dict[str, np.ndarray] = {}          # discrete tracks' label ids before folding onto 10 colours
    for name in tracks:
        heat[name] = np.full((rows, columns), np.nan, dtype=np.float32)
        if project.meta[name].kind == "discrete":
            raw[name] = np.full((rows, columns), np.nan, dtype=np.float64)
    for row, m in enumerate(matches):
        lo = m.start - context_left
        a, b = max(0, lo), min(T, lo + columns)
        if b <= a:
            continue
        windows.append((row, lo, a, project.tokens(a, b), m.start, m.end, *project.sequence_of(m.start)))
        labels[row] = row_label(row, m)
        heat["n(t)"][row, a - lo:b - lo] = engine.counts(source, cells, threshold, a, b, scale=scale)
        for name in tracks:
            track = project.meta[name]
            vals = track_window(track, a, b)
            if name in raw:
                raw[name][row, a - lo:b - lo] = np.asarray(vals, dtype=np.float64)
            vals = np.asarray(vals, dtype=np.float32)
            heat[name][row, a - lo:b - lo] = discrete_ids(vals) if track.kind == "discrete" else vals
    lows, highs = {"n(t)": 0.0}, {"n(t)": float(max(1, len(cells)))}
    summaries = {"n(t)": summarise_columns(heat["n(t)"], "count")}
    for name in tracks:
        track = project.meta[name]
        lows[name], highs[name] = track_bounds(track, heat[name])
        summaries[name] = summarise_columns(raw.get(name, heat[name]), track.kind, track.label)
    return MatchMatrix(matrix_words(windows, word_px), labels, heat, lows, highs, summaries)


def match_answer(engine: Engine, job: MatchJob, md) -> MatchResult:
    """The exact top-N of a job, the word matrix around each match and, when the panel is shown, its
    numbers (``md``: the match view's defaults)."""
    t0 = time.perf_counter()
    matches = engine.match(job.source, list(job.cells), job.threshold, job.left, job.right, top=md.top,
                           min_length=job.min_length or md.min_length, phrase_length=md.phrase_length, distinct=md.distinct,
                           sequences=True, scale=job.scale)
    t1 = time.perf_counter()
    matrix = match_matrix(engine, job.source, matches, list(job.cells), job.threshold, md.context_left,
                          md.columns, list(job.tracks), md.word_px, job.scale)
    answer = None
    if job.stats[0]:
        answer = stats_answer(engine, job.source, matches, list(job.cells), job.threshold, job.scale, *job.stats)
    return MatchResult(matches, matrix, (t1 - t0) * 1000, (time.perf_counter() - t0) * 1000, answer)


# --- the select view's value axis ----------------------------------------------------------------------
#: Values a sample for the y range holds at most (rows x D): quantiles of it cost milliseconds.
SAMPLE_VALUES = 200_000
_SAMPLES: dict[int, tuple[object, np.ndarray]] = {}


def value_sample(src) -> np.ndarray:
    """(n, D) float64 values after the transform at evenly spaced steps of the whole source, n about
    ``SAMPLE_VALUES / D`` (at least 64): what the robust y range and the threshold slider are taken from.
    Kept per source object (the engine keeps its sources for its lifetime)."""
    hit = _SAMPLES.get(id(src))
    if hit is not None and hit[0] is src:
        return hit[1]
    T, D = src.shape
    n = int(min(T, max(64, SAMPLE_VALUES // max(1, D))))
    # At most 64 reads of neighbouring rows (as Source.value_range): a read per row would cost a
    # chunk per row on disk.
    reads = max(1, min(64, n // 16))
    size = -(-n // reads)
    starts = np.unique(np.linspace(0, max(0, T - size), reads).astype(np.int64))
    blocks = [np.asarray(src.raw(int(a), int(a) + size)) for a in starts]
    raw = np.concatenate(blocks).astype(np.float64) if blocks else np.zeros((0, D))
    sample = np.tanh(raw) if src.transform == "tanh" else raw
    _SAMPLES[id(src)] = (src, sample)
    return sample


def display_range(engine: Engine, source: str, scale: str) -> tuple[float, float]:
    """The select view's y range: robust percentiles of the sample, in z-scores for ``zscore``
    (``Engine.cell_scale``: a pass over the source the first time, so ask from the worker)."""
    src = engine.project.source(source)
    sample = value_sample(src)
    if scale == "zscore":
        params = engine.cell_scale(source, scale)
        sample = scaled_values(sample, params.center, params.spread)
    return robust_range(sample)


def slider_range(engine: Engine, source: str, scale: str) -> tuple[float, float]:
    """The threshold slider's range: the scale's for a per-cell scale, [-1, 1] (or [0, 1]) for ``tanh``,
    else the robust range of the source's values (one outlier unit would push every useful θ to the
    slider's far left)."""
    src = engine.project.source(source)
    if scale in SCALE_RANGES:
        return SCALE_RANGES[scale]
    if src.transform == "tanh":
        return src.value_range()
    sample = value_sample(src)
    lo, hi = robust_range(sample)
    hi = max(hi, sparse_peak(sample))
    finite = sample[np.isfinite(sample)]
    if finite.size:                     # not below the least value (a ReLU's 0) nor above the largest
        lo, hi = max(lo, float(finite.min())), min(hi, float(finite.max()))
    return float(f"{lo:.3g}"), float(f"{hi:.3g}")


def sparse_peak(sample: np.ndarray, cell_q: float = 99.9, across_q: float = 90.0) -> float:
    """How high the slider must reach for cells whose high values are rare (a CNN/ReLU unit that fires
    only at a motif: its peaks are far above the pooled 99.5th percentile): the ``across_q`` percentile,
    over cells, of each cell's own ``cell_q`` percentile. A few outlier cells (fewer than
    ``100 - across_q`` % of them) still cannot stretch it."""
    v = np.asarray(sample, dtype=np.float64)
    if v.ndim != 2 or v.size == 0:
        return -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # an all-NaN cell
        per_cell = np.nanpercentile(v, cell_q, axis=0)
    per_cell = per_cell[np.isfinite(per_cell)]
    return float(np.percentile(per_cell, across_q)) if per_cell.size else -np.inf


# --- the hypothesis panel -----------------------------------------------------------------------------
@dataclass
class StatsAnswer:
    """The hypothesis panel's numbers for one S, threshold, label, m and match list (gpu_matcher.stats,
    gpu_matcher.hypotheses): the detector is "at least m of the k cells of S on"."""

    track: str
    label: str
    threshold: float
    cells: int                                  # k
    enrichment: list                            # LabelEnrichment rows
    points: list                                # Detection over the threshold grid at m, by threshold
    now: object = None                          # Detection at the current threshold and m
    error: str = ""
    m: int = 0                                  # the detector's m (k: every cell on); 0 without S
    over_m: list = field(default_factory=list)  # hypotheses.AtLeast for m = 1..k at the current threshold

    @property
    def best(self):
        """The best-F1 point of the curve when its F1 is above 0 (ties: the lower threshold)."""
        best = max(self.points, key=lambda p: (p.f1, -p.threshold)) if self.points else None
        return best if best is not None and best.f1 > 0 else None

    @property
    def best_m(self):
        """The m of the highest F1 at the current threshold when above 0 (ties: the larger m, the stricter
        detector, as ``AtLeastGrid.best``)."""
        best = max(self.over_m, key=lambda a: (a.detection.f1, a.m)) if self.over_m else None
        return best if best is not None and best.detection.f1 > 0 else None


def chosen_m(atleast: int | None, k: int) -> int:
    """The detector's m for S of k cells: ``atleast`` clamped to [1, k]; None (the default) is k."""
    return k if atleast is None else max(1, min(int(atleast), k))


def stats_answer(engine: Engine, source: str, matches: list, cells: list[int], threshold: float, scale: str,
                 track: str, label: str, atleast: int | None = None) -> StatsAnswer:
    """Enrichment of ``matches`` and "at least m of S on" (m = ``chosen_m(atleast, k)``) as a detector of
    ``track == label``, over thresholds at m and over m at ``threshold``; errors become ``error``."""
    k = len(set(cells))
    answer = StatsAnswer(track, label, float(threshold), k, [], [], m=chosen_m(atleast, k) if k else 0)
    try:
        if matches and track:
            answer.enrichment = hypothesis.enrichment(engine, source, matches, track).labels
        if cells and track and label != "":
            grid = hypothesis.default_thresholds(engine, source, scale=scale) + [float(threshold)]
            if answer.m == k:
                # Every cell on: the old one-pass curve (cheap under every scale), and the curve over m at
                # the current threshold alone (k cell rows).
                curve = hypothesis.detector_curve(engine, source, cells, grid, track, label, scale)
                points = curve.points
                answer.over_m = hypotheses.at_least_grid(engine, source, cells, grid[-1:], track, label,
                                                         scale).over_m(0)
            else:
                table = hypotheses.at_least_grid(engine, source, cells, grid, track, label, scale)
                points = table.curve(answer.m).points
                answer.over_m = table.over_m(len(grid) - 1)
            answer.now = points[-1]
            answer.points = sorted(points[:-1], key=lambda p: p.threshold)
    except ProjectError as exc:
        answer.error = str(exc)
    return answer


def track_labels(engine: Engine, name: str) -> list[str]:
    """A discrete track's label names (its dictionary's, else the values that occur: read in chunks, or
    from a genome track's intervals, never the whole timeline at once)."""
    track = engine.project.meta[name]
    if track.labels:
        return [track.label(v) for v in sorted(track.labels)]
    return [str(v) for v in track.distinct_values()]


@dataclass
class PhraseMap:
    spans: int                  # every span of the track's labels
    shown: np.ndarray           # the indices drawn (at most PHRASE_POINTS)
    coords: np.ndarray          # (shown, k) PCA coordinates
    values: list                # the drawn spans' label ids
    texts: list[str]
    starts: np.ndarray
    ends: np.ndarray
    explained: list[float]
    ms: float


def phrase_map(engine: Engine, source: str, track: str, threshold: float, left: int, right: int,
               scale: str) -> PhraseMap:
    """Fig. 9: S of every span of ``track``'s labels, projected by PCA (all spans; the drawn ones thinned)."""
    t0 = time.perf_counter()
    pp = hypothesis.phrase_patterns(engine, source, track, threshold, left=left, right=right, scale=scale)
    proj = hypothesis.pca(pp.patterns, 2)
    ms = (time.perf_counter() - t0) * 1000
    P = pp.starts.size
    shown = np.arange(P) if P <= PHRASE_POINTS else np.linspace(0, P - 1, PHRASE_POINTS).astype(np.int64)
    return PhraseMap(P, shown, proj.coords[shown], pp.values[shown].tolist(),
                     hypothesis.phrase_texts(engine, pp.starts[shown], pp.ends[shown]), pp.starts[shown],
                     pp.ends[shown], list(proj.explained), ms)
