"""Plain answers -> column dicts for the browser: the one place that shapes data for Bokeh.

Every function here is pure (plain numbers, lists and arrays in, a ``{column: values}`` dict out), so it
is tested without a Document; the receivers only assign the result to a source's ``data``. Encodings
follow ``../shared/BROWSER_TESTING.md``: the parallel coordinates are one ``line`` glyph of NaN-separated
float32 traces (x laid out once per window size, y resent on navigation only), the selected cells the
same traces filtered in the browser (only S travels), heatmaps ``image`` arrays. No Bokeh import here:
palettes come in as arguments.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

#: Category colours for discrete meta tracks (Tableau 10); a label id picks ``id % 10``.
CATEGORY_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                   "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
#: The match view's row labels and their header, in the same fixed widths (monospace).
ROW_HEADER = f"{'rank':<5}{'start':>9}{'len':>5}{'inter':>6}/union"
GENOME_ROW_HEADER = f"{'rank':<4}{'position':>18}{'len':>5}"
LABEL_SPAN = 4                 # word columns' worth of room for the match rows' labels
PATTERN_BRUSH = 4.0            # width of the brush in the pattern plot (its x unit is one off step)
LABEL_MIN_PX = 6               # narrower words get no text (words, track values): lines and colours only
#: Most trace vertices (window steps x cells) sent for the faded traces of every cell; a wider window of a
#: wider source draws S's traces over the band of all cells' values instead (``envelope_columns``).
TRACE_VERTICES = 200_000


# --- small shapes ---------------------------------------------------------------------------------------
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


def category_ticks(labels: dict[int, str] | None, room: int = 40) -> dict[int, str]:
    """A discrete colour bar's tick labels: colour ``i`` of ``CATEGORY_COLORS`` names the labels whose id
    is ``i`` modulo 10 (ids fold onto 10 colours), joined by "/" (a colour no label has: no text; more
    than ``room`` characters: cut, which only folded labels reach)."""
    n = len(CATEGORY_COLORS)
    names: dict[int, list[str]] = {i: [] for i in range(n)}
    for k, name in sorted((labels or {}).items()):
        names[int(k) % n].append(str(name))
    return {i: fit_label("/".join(v), int(room * 6.5)) if v else "" for i, v in names.items()}


def scalar_bounds(values: np.ndarray, value_range: tuple[float, float] | None) -> tuple[float, float]:
    """A scalar strip's colour range: the track's declared range, else the finite values' (else 0..1)."""
    if value_range is not None:
        return float(value_range[0]), float(value_range[1])
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def text_px(text: str, char_px: float = 6.5) -> int:
    """About how wide ``text`` is at 11 px (for borders that must hold a label)."""
    return int(len(text) * char_px) + 4


def palette_color(palette: Sequence[str], value: float, lo: float, hi: float) -> tuple[str, float]:
    """A palette's colour for ``value`` on ``[lo, hi]`` and the value's place there (0..1)."""
    frac = 0.0 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    return palette[min(len(palette) - 1, int(frac * (len(palette) - 1) + 0.5))], frac


def short_number(v: float) -> str:
    if not np.isfinite(v):
        return ""
    return f"{v:.1f}" if abs(v) < 10 else f"{v:.3g}"


def empty(columns: Iterable[str]) -> dict:
    return {k: [] for k in columns}


def _rows(keys: Sequence[str]) -> tuple[dict, Callable]:
    """An empty column dict and a function appending one row to it."""
    cols = {k: [] for k in keys}

    def add(*values):
        for key, value in zip(keys, values):
            cols[key].append(value)
    return cols, add


# --- the select view ----------------------------------------------------------------------------------
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


def box_span(event) -> tuple[float, float] | None:
    """The x extent ``(x0, x1)`` of a finished box selection (a ``SelectionGeometry`` event whose geometry
    is a rectangle), else None: the brush of the select view and the zoom of the overview strip."""
    geometry = event.geometry
    if not getattr(event, "final", True) or geometry.get("type") != "rect":
        return None
    return float(geometry["x0"]), float(geometry["x1"])


def robust_range(sample: np.ndarray, low: float = 0.5, high: float = 99.5, pad: float = 0.06
                 ) -> tuple[float, float]:
    """A y range that one outlier unit cannot stretch: the ``low``..``high`` percentiles of the finite
    values of ``sample``, padded by ``pad`` of the span on each side (values outside are drawn clipped)."""
    v = np.asarray(sample, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return -1.0, 1.0
    lo, hi = (float(x) for x in np.percentile(v, [low, high]))
    if hi <= lo:                        # a (nearly) constant sample: its full range, else a unit around it
        lo, hi = float(v.min()), float(v.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
    room = pad * (hi - lo)
    return lo - room, hi + room


def envelope_columns(values: np.ndarray) -> dict:
    """The band of every cell's values per step (``x lo hi q1 q3``: min, max and the quartiles, float32)
    for ``values`` (W, D); a step without finite values is NaN (a gap)."""
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2 or v.size == 0:
        return {k: np.zeros(0, np.float32) for k in ("x", "lo", "hi", "q1", "q3")}
    ranks = np.sort(v, axis=1)                      # NaN last: a step's finite values come first
    n = np.isfinite(ranks).sum(axis=1)
    rows = np.arange(v.shape[0])
    pick = lambda q: ranks[rows, np.clip(np.round(q * (n - 1)).astype(np.int64), 0, None)]  # noqa: E731
    lo, q1, q3, hi = (np.where(n > 0, pick(q), np.nan).astype(np.float32) for q in (0.0, 0.25, 0.75, 1.0))
    return {"x": np.arange(v.shape[0], dtype=np.float32), "lo": lo, "hi": hi, "q1": q1, "q3": q3}


def scaled_values(values: np.ndarray, center: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Per-cell z-scores of ``values`` (n, D) as ``gpu_matcher.scaling`` defines them: ``(v - center) /
    spread``, 0 for a constant cell (spread 0), NaN where the value is NaN."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (v - center) / spread
    return np.where(spread > 0, z, np.where(np.isnan(v), np.nan, 0.0))


def clipped_columns(values: np.ndarray, lo: float, hi: float, limit: int = 2000) -> dict:
    """Markers at the plot's edge for values outside ``[lo, hi]`` (``values`` (W, D) in window x):
    ``x y cell value marker``, at most ``limit`` of them, the farthest out first."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        above, below = v > hi, v < lo
    t, c = np.nonzero(above | below)
    out = v[t, c]
    if t.size > limit:
        keep = np.argsort(-np.maximum(out - hi, lo - out), kind="stable")[:limit]
        t, c, out = t[keep], c[keep], out[keep]
    inset = 0.015 * (hi - lo)           # inside the frame, so the whole marker shows
    up = out > hi
    return {"x": t.astype(float).tolist(), "y": np.where(up, hi - inset, lo + inset).tolist(),
            "cell": c.astype(int).tolist(), "value": out.tolist(),
            "marker": ["triangle" if u else "inverted_triangle" for u in up.tolist()]}


def nearest_trace(values: np.ndarray, x: float, y: float, cells: Sequence[int] | None, tolerance: float
                  ) -> int | None:
    """The cell whose trace passes nearest to a click at window ``(x, y)`` (``values`` (W, D) as drawn):
    its value at the nearest step, among ``cells`` (all when None or empty), within ``tolerance`` of
    ``y``; None when no trace is that close."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0 or not np.isfinite(x) or not np.isfinite(y):
        return None
    t = int(min(max(round(x), 0), v.shape[0] - 1))
    pool = np.asarray(sorted(set(int(c) for c in cells)) if cells else np.arange(v.shape[1]), dtype=np.int64)
    pool = pool[(pool >= 0) & (pool < v.shape[1])]
    if pool.size == 0:
        return None
    gap = np.abs(v[t, pool] - y)
    gap[np.isnan(gap)] = np.inf
    i = int(np.argmin(gap))
    return int(pool[i]) if gap[i] <= tolerance else None


def word_labels(words: Sequence[str], room: int) -> dict[int, str]:
    """The select view's x-axis labels: window position -> the word, fitted to ``room`` px."""
    return {i: fit_label(w, room) for i, w in enumerate(words)}


def position_ticks(start: int, width: int, word_px: int, spacing_px: int = 150) -> list[int]:
    """Window x of round positions at least ``spacing_px`` apart (1, 2, 5 x 10^k steps), for a window
    of ``width`` steps from ``start`` too narrow for word labels."""
    least = max(1, -(-spacing_px // max(1, word_px)))
    every = next(m * 10 ** k for k in range(20) for m in (1, 2, 5) if m * 10 ** k >= least)
    first = -start % every
    return list(range(first, width, every))


def boundary_columns(bounds: np.ndarray, start: int, stop: int) -> dict:
    """Sequence boundaries strictly inside ``[start, stop)`` as window x (between two words)."""
    bounds = np.asarray(bounds)
    inside = bounds[(bounds > start) & (bounds < stop)]
    return {"x": (inside - start - 0.5).astype(float).tolist()}


def track_columns(kind: str, values: np.ndarray, width: int, room: int, label_of: Callable,
                  weights: np.ndarray | None = None, value_range: tuple[float, float] | None = None,
                  palette: Sequence[str] = ("#000000",), labels: bool = True) -> dict:
    """A meta track's strip under the words (``x y color alpha text text_color``): a wordvec track's
    top-K words shaded by weight, a discrete track's labels in category colours, a scalar track's
    values on ``palette``; ``labels`` False: colours only (words too narrow for text)."""
    cols, add = _rows(("x", "y", "color", "alpha", "text", "text_color"))
    if kind == "wordvec":
        top = float(np.nanmax(weights)) if weights is not None and weights.size else 1.0
        for i in range(min(width, values.shape[0])):
            for k in range(values.shape[1]):
                w = float(weights[i, k]) if weights is not None else 1.0
                add(i, k, "#2a7ab9", 0.08 + 0.7 * (w / top if top > 0 else 0.0),
                    fit_label(label_of(values[i, k]), room), "#111111")
    elif kind == "discrete":
        for i, v in enumerate(values[:width]):
            add(i, 0, CATEGORY_COLORS[int(v) % len(CATEGORY_COLORS)], 0.85, fit_label(label_of(v), room),
                "#ffffff")
    else:
        lo, hi = scalar_bounds(values[:width], value_range)
        for i, v in enumerate(values[:width]):
            color, _ = palette_color(palette, float(v), lo, hi) if np.isfinite(v) else ("#ffffff", 0.0)
            frac = 0.0 if hi <= lo else (float(v) - lo) / (hi - lo)
            add(i, 0, color, 0.9, fit_label(short_number(float(v)), room),
                "#ffffff" if frac < 0.6 else "#111111")
    if not labels:
        cols["text"] = [""] * len(cols["text"])
    return cols


def count_columns(n: np.ndarray, cells: int, show_numbers: bool, palette: Sequence[str]) -> dict:
    """The n(t) strip (``x n color text text_color``); NaN in ``n`` (no S, or past the end) is blank."""
    k = max(1, cells)
    finite = [bool(np.isfinite(v)) for v in n]
    return {"x": list(range(len(n))), "n": [int(v) if ok else None for v, ok in zip(n, finite)],
            "color": [palette_color(palette, float(v), 0.0, k)[0] if ok else "#ffffff" for v, ok in zip(n, finite)],
            "text": [str(int(v)) if show_numbers and ok else "" for v, ok in zip(n, finite)],
            "text_color": ["#ffffff" if ok and v > 0.55 * k else "#333333" for v, ok in zip(n, finite)]}


def selection_columns(cells: Sequence[int], steps_on: Sequence[int], added: Iterable[int],
                      base_cells: Iterable[int]) -> dict:
    """The S table (``cell on hand``): a cell added by hand that the brush did not select says so."""
    hand = set(added) - set(base_cells)
    return {"cell": list(cells), "on": list(steps_on), "hand": ["added" if c in hand else "" for c in cells]}


def brush_box_columns(brush: tuple[int, int] | None, pos: int, left: int, right: int, brush_color: str,
                      margin_color: str) -> dict:
    """The brush and its off-margins in window coordinates (``left right kind color alpha hatch``)."""
    cols, add = _rows(("left", "right", "kind", "color", "alpha", "hatch"))
    if brush is not None:
        s, e = brush[0] - pos, brush[1] - pos
        add(s - 0.5, e + 0.5, "brush", brush_color, 0.12, " ")
        if left:
            add(s - 0.5 - left, s - 0.5, "off before", margin_color, 0.10, "/")
        if right:
            add(e + 0.5, e + 0.5 + right, "off after", margin_color, 0.10, "/")
    return cols


def pattern_columns(left: int, brush_len: int, right: int) -> dict:
    """The pattern plot's segments and labels: off for ``left`` steps (one x unit each) before the brush,
    on over the brush (``PATTERN_BRUSH`` wide), off for ``right`` steps after it."""
    a, b = 0.0, PATTERN_BRUSH
    cols, add = _rows(("x0", "y0", "x1", "y1", "lx", "ly", "text"))
    add(a - left, 0.0, a, 0.0, a - max(left, 3) / 2, 0.14, f"off {left}" if left else "")
    add(a, 0.0, a, 1.0, 0.0, 0.0, "")
    add(a, 1.0, b, 1.0, (a + b) / 2, 1.14, f"on {brush_len}" if brush_len else "on (brush)")
    add(b, 1.0, b, 0.0, 0.0, 0.0, "")
    add(b, 0.0, b + right, 0.0, b + max(right, 3) / 2, 0.14, f"off {right}" if right else "")
    return cols


def search_columns(hits: Sequence[int], contexts: Sequence[str]) -> dict:
    return {"pos": list(hits), "context": list(contexts)}


# --- the match view -----------------------------------------------------------------------------------
def row_label(row: int, m) -> str:
    return f"{'#' + str(row + 1):<5}{m.start:>9}{m.length:>5}{m.inter:>6}/{m.union}"


def genome_row_label(row: int, m, where: str) -> str:
    """A genome project's match row: rank, ``chr2:1,234,567``, length."""
    return f"{'#' + str(row + 1):<4}{where:>18}{m.length:>5}"


def match_rows(matches: Sequence, context_left: int, columns: int, where: Callable | None = None) -> dict:
    """The ``matches`` source in rank order, with each match's box in the word matrix (span_x, span_w)
    and its start as the user reads positions (``where``: ``chr2:1,234,567``; default the step)."""
    first = context_left
    last = [min(columns - 1, context_left + m.length - 1) for m in matches]
    return {"start": [m.start for m in matches], "end": [m.end for m in matches],
            "length": [m.length for m in matches], "inter": [m.inter for m in matches],
            "union": [m.union for m in matches], "row": list(range(len(matches))),
            "span_x": [(first + b) / 2 for b in last], "span_w": [b - first + 1 for b in last],
            "where": [where(m.start) if where is not None else f"{m.start:,}" for m in matches]}


def matrix_words(windows: Sequence, word_px: int) -> dict:
    """The word matrix's words: ``windows`` are ``(row, lo, a, tokens, start, end, seq_lo, seq_hi)``,
    the row's first column at step ``lo``, its tokens from step ``a``; inside the match bold."""
    cols, add = _rows(("x", "y", "word", "color", "style", "pos", "font", "align"))
    for row, lo, a, tokens, start, end, seq_lo, seq_hi in windows:
        for i, tok in enumerate(tokens):
            t = a + i
            inside = start <= t <= end
            color = "#111111" if inside else ("#555555" if seq_lo <= t < seq_hi else "#b0b0b0")
            add(t - lo, row, fit_label(tok, word_px), color, "bold" if inside else "normal", t, "helvetica",
                "center")
    return cols


def matrix_columns(words: dict | None = None, row_labels: Sequence[str] = (), summary: str = "",
                   header: str = ROW_HEADER) -> dict:
    """All text of the word matrix in one source (one message, one repaint): the header row (-1:
    column names and a summary), a label per match row, and the words."""
    left = -LABEL_SPAN - 0.45
    cols = {"x": [left, -0.45], "y": [-1, -1], "word": [header, summary],
            "color": ["#444444", "#1f3f66"], "style": ["bold", "normal"], "pos": [-1, -1],
            "font": ["monospace", "helvetica"], "align": ["left", "left"]}
    for i, text in enumerate(row_labels):
        for key, value in zip(cols, (left, i, text, "#333333", "normal", -1, "monospace", "left")):
            cols[key].append(value)
    for key in cols:
        cols[key].extend((words or {}).get(key, []))
    return cols


def image_columns(image: np.ndarray) -> dict:
    """A heatmap ``image`` source for ``image`` (rows, columns), cell centres on integer x and y."""
    rows, columns = image.shape
    return {"image": [image], "x": [-0.5], "y": [-0.5], "dw": [columns], "dh": [rows]}


def empty_image(rows: int, columns: int) -> dict:
    return image_columns(np.full((rows, columns), np.nan, dtype=np.float32))


def column_rows(summaries: dict, lows: dict, highs: dict, context_left: int, word_px: int,
                count_palette: Sequence[str] = ("#000000",), scalar_palette: Sequence[str] = ("#000000",)
                ) -> tuple[dict, dict]:
    """The heatmaps under the word matrix (``summaries``: name -> ``answers.ColumnSummary``, in row
    order): one rect per (row, offset) that any match reaches, and the row names."""
    cells, add = _rows(("x", "y", "track", "offset", "value", "share", "text", "color", "alpha", "text_color"))
    names, add_name = _rows(("x", "y", "text"))
    for y, (name, sm) in enumerate(summaries.items()):
        what = {"discrete": " (majority)", "wordvec": " (top-1 weight)"}.get(sm.kind, " (mean)")
        # Monospace 11 px in LABEL_SPAN word columns: a longer name is cut, the cells' hover names it.
        room = int(LABEL_SPAN * word_px / 6.7) - len(what)
        add_name(-LABEL_SPAN - 0.45, y, (name if len(name) <= room else name[:max(1, room - 1)] + "…") + what)
        for x, v in enumerate(sm.value):
            if not np.isfinite(v):
                continue
            if sm.kind == "discrete":
                color = CATEGORY_COLORS[int(sm.label[x]) % len(CATEGORY_COLORS)]
                alpha = 0.2 + 0.75 * float(v)
                text_color = "#ffffff" if alpha > 0.6 else "#111111"
                share = float(v)
            else:
                palette = count_palette if sm.kind == "count" else scalar_palette
                color, frac = palette_color(palette, float(v), lows.get(name, 0.0), highs.get(name, 1.0))
                alpha = 0.9
                dark = frac > 0.55 if sm.kind == "count" else frac < 0.6
                text_color = "#ffffff" if dark else "#111111"
                share = float("nan")
            add(x, y, name, x - context_left, float(v), share, fit_label(sm.text[x], word_px), color, alpha,
                text_color)
    return cells, names


# --- the hypothesis panel -----------------------------------------------------------------------------
def enrichment_columns(rows: Sequence, enriched: str, depleted: str) -> dict:
    """Label enrichment of the matched steps (``label ratio matched corpus p_value color``)."""
    return {"label": [r.label for r in rows], "ratio": [r.ratio for r in rows],
            "matched": [r.matched for r in rows], "corpus": [r.corpus for r in rows],
            "p_value": [r.p_value for r in rows], "color": [enriched if r.ratio >= 1 else depleted for r in rows]}


def curve_columns(points: Sequence) -> dict:
    """S as a detector over thresholds (``threshold precision recall f1``), in the order given."""
    return {"threshold": [p.threshold for p in points], "precision": [p.precision for p in points],
            "recall": [p.recall for p in points], "f1": [p.f1 for p in points]}


def best_columns(best) -> dict:
    """The best-F1 point (one row), or no row for ``None``."""
    return {"threshold": [best.threshold], "f1": [best.f1]} if best is not None else {"threshold": [], "f1": []}


def m_curve_columns(over_m: Sequence) -> dict:
    """"At least m of k on" over m at one threshold (``m precision recall f1``; ``hypotheses.AtLeast``)."""
    return {"m": [a.m for a in over_m], "precision": [a.detection.precision for a in over_m],
            "recall": [a.detection.recall for a in over_m], "f1": [a.detection.f1 for a in over_m]}


def best_m_columns(best) -> dict:
    """The best m over the curve over m (one row ``m f1``), or no row for ``None``."""
    return {"m": [best.m], "f1": [best.detection.f1]} if best is not None else {"m": [], "f1": []}


def suggestion_columns(ranked: Sequence) -> dict:
    """Suggested cells (``cell score rate_in rate_out``), rounded for the table."""
    return {"cell": [r.cell for r in ranked], "score": [round(r.score, 4) for r in ranked],
            "rate_in": [round(r.rate_in, 4) for r in ranked], "rate_out": [round(r.rate_out, 4) for r in ranked]}


def phrase_columns(coords: np.ndarray, values: Sequence[int], label_of: Callable, texts: Sequence[str],
                   starts: Sequence[int], ends: Sequence[int]) -> dict:
    """The phrase map (``x y label color text start end``): PCA coordinates (0 where PCA has fewer
    components), each span's label in its category colour, its words and its steps."""
    coords = np.asarray(coords)
    n = len(starts)
    values = list(values)
    return {"x": coords[:, 0] if coords.ndim == 2 and coords.shape[1] > 0 else np.zeros(n),
            "y": coords[:, 1] if coords.ndim == 2 and coords.shape[1] > 1 else np.zeros(n),
            "label": [label_of(v) for v in values],
            "color": [CATEGORY_COLORS[int(v) % len(CATEGORY_COLORS)] for v in values],
            "text": list(texts), "start": [int(s) for s in starts], "end": [int(e) for e in ends]}


# --- the unit page ----------------------------------------------------------------------------------------
def unit_context_columns(contexts: Sequence[dict]) -> dict:
    """A unit's top activating contexts (``rank position value scaled text``), best first; the word at
    the peak is marked «so»."""
    cols, add = _rows(("rank", "position", "value", "scaled", "text"))
    for i, c in enumerate(contexts):
        words = [w.replace("\n", "⏎") for w in c["words"]]
        words[c["at"]] = f"«{words[c['at']]}»"
        add(i + 1, int(c["position"]), float(c["value"]), float(c.get("scaled", float("nan"))), " ".join(words))
    return cols


def unit_histogram_columns(histogram: dict, threshold: float | None, on_color: str, off_color: str) -> dict:
    """A unit's activation histogram as bars (``left right count color``): bins at or above a value
    threshold in ``on_color`` (``threshold`` None, a scaled one: every bin ``off_color``)."""
    edges, counts = histogram.get("edges", []), histogram.get("counts", [])
    lefts, rights = edges[:-1], edges[1:]
    on = [threshold is not None and a >= threshold for a in lefts]
    return {"left": list(lefts), "right": list(rights), "count": list(counts),
            "color": [on_color if o else off_color for o in on]}


def unit_token_columns(tokens: Sequence[dict]) -> dict:
    """The tokens a unit is on at most (``token on occurrences rate``), most on-steps first."""
    return {"token": [t["token"].replace("\n", "⏎") for t in tokens], "on": [t["on"] for t in tokens],
            "occurrences": [t["occurrences"] for t in tokens], "rate": [round(t["rate"], 4) for t in tokens]}
