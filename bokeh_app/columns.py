"""Engine answers -> column arrays for the browser (the one place that shapes data for Bokeh).

Encodings follow ``../shared/BROWSER_TESTING.md``: the parallel coordinates are one ``line`` glyph of
NaN-separated float32 traces (x laid out once per window size, y resent on navigation only), the
selected cells the same traces filtered in the browser (only S travels), and heatmaps ``image`` arrays. No Bokeh import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Category colours for discrete meta tracks (Tableau 10); a label id picks ``id % 10``.
CATEGORY_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                   "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


def trace_x(width: int, cells: int) -> np.ndarray:
    """x of ``cells`` traces over ``width`` steps: ``0..width-1`` then NaN, repeated (float32)."""
    row = np.append(np.arange(width, dtype=np.float32), np.float32(np.nan))
    return np.tile(row, cells)


def trace_y(values: np.ndarray) -> np.ndarray:
    """y of every cell's trace, NaN-separated, for ``values`` (W, D) -> (D * (W + 1),) float32."""
    W, D = values.shape
    out = np.full((D, W + 1), np.nan, dtype=np.float32)
    out[:, :W] = values.T
    return out.ravel()


def fit_label(word: str, width_px: int, char_px: float = 6.5) -> str:
    """A word shortened to fit ``width_px`` (an ellipsis marks the cut)."""
    room = max(1, int(width_px / char_px))
    word = word.replace("\n", "⏎").replace("\t", "⇥")
    if word == " ":
        return "␣"
    return word if len(word) <= room else word[:max(1, room - 1)] + "…"


def padded(values: np.ndarray, width: int, fill=np.nan) -> np.ndarray:
    """``values`` (n, ...) padded at the end to ``width`` rows (a window clipped by the timeline)."""
    if values.shape[0] >= width:
        return values[:width]
    pad = np.full((width - values.shape[0],) + values.shape[1:], fill,
                  dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
    return np.concatenate([values.astype(pad.dtype, copy=False), pad])


#: The match view's row labels and their header, in the same fixed widths (monospace).
ROW_HEADER = f"{'rank':<5}{'start':>9}{'len':>5}{'inter':>6}/union"


def row_label(row: int, m) -> str:
    return f"{'#' + str(row + 1):<5}{m.start:>9}{m.length:>5}{m.inter:>6}/{m.union}"


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
class ColumnSummary:
    """One heatmap column-wise over the top matches (the row under the word matrix)."""

    kind: str              # "count", "discrete", "scalar" or "wordvec"
    value: np.ndarray      # (columns,) float64: the mean (count, scalar, wordvec) or the majority
                           # label's share (discrete); NaN where no match has a step at that offset
    label: np.ndarray      # (columns,) float64: the majority label id (discrete), else NaN
    text: list[str]        # (columns,) the cell's text: the majority label, or the mean


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


def match_matrix(engine, source: str, matches, cells: list[int], threshold: float,
                 context_left: int, columns: int, tracks: list[str], word_px: int,
                 scale: str = "none") -> MatchMatrix:
    """Words around every match (aligned at its start) and the heatmaps ``n(t)`` and ``tracks``."""
    from gpu_matcher import scaling

    project = engine.project
    T = project.T
    rows = len(matches)
    words = {"x": [], "y": [], "word": [], "color": [], "style": [], "pos": [], "font": [], "align": []}
    labels: dict[int, str] = {}
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
        seq_lo, seq_hi = project.sequence_of(m.start)
        tokens = project.tokens(a, b)
        for i, tok in enumerate(tokens):
            t = a + i
            inside = m.start <= t <= m.end
            same_seq = seq_lo <= t < seq_hi
            words["x"].append(t - lo)
            words["y"].append(row)
            words["word"].append(fit_label(tok, word_px))
            words["color"].append("#111111" if inside else ("#555555" if same_seq else "#b0b0b0"))
            words["style"].append("bold" if inside else "normal")
            words["pos"].append(t)
            words["font"].append("helvetica")
            words["align"].append("center")
        labels[row] = row_label(row, m)
        heat["n(t)"][row, a - lo:b - lo] = engine.counts(source, cells, threshold, a, b) if scale == "none" \
            else scaling.on_mask(engine, source, a, b, threshold, scale)[:, cells].sum(axis=1)
        for name in tracks:
            track = project.meta[name]
            if track.kind == "wordvec":
                weights = track.weights_for(a, b)
                vals = weights[:, 0] if weights is not None else np.zeros(b - a)
            else:
                vals = track.values(a, b)
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
    return MatchMatrix(words, labels, heat, lows, highs, summaries)


def track_bounds(track, values: np.ndarray) -> tuple[float, float]:
    """Colour-mapper bounds for a meta track: its declared range, else the data's."""
    if track.kind == "discrete":
        return -0.5, len(CATEGORY_COLORS) - 0.5       # ids are folded mod 10 by the caller
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
