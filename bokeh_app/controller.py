"""Per-session behaviour of a project page: the state, every callback, and the off-lock match worker.

``ProjectSession.connect(doc)`` wires all callbacks in one place; each callback is a short method that
asks the engine and writes columns (``bokeh_app.columns``) into the view's sources. The methods that
follow a computation are plain methods, so document tests drive them on a bare ``Document`` (where
``synchronous`` is true and matches run inline). On a server, matches run in a worker thread off the
document lock; a newer query replaces an older one (generation counter) and the page stays live.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
from bokeh.document import without_document_lock
from bokeh.events import PanEnd, SelectionGeometry, Tap
from bokeh.models import Column

from bokeh_app.catalogue import WORKERS
from bokeh_app.columns import (CATEGORY_COLORS, MatchMatrix, fit_label, match_matrix, padded, trace_x,
                               trace_y)
from bokeh_app.config import UIDefaults
from bokeh_app.state import ViewState, default_threshold, threshold_range, to_query
from bokeh_app.views.common import (BRUSH_COLOR, COUNT_PALETTE, MARGIN_COLOR, SCALAR_PALETTE, follow_on_load,
                                    header, set_url_query, status_div, status_html, url_holder)
from bokeh_app.views.match import (COUNT_HEATMAP, NO_COLOUR, build_match_view, column_rows, empty_image,
                                   matrix_columns)
from bokeh_app.views.select import (build_select_view, label_orientation, pattern_columns, pattern_margin,
                                   pattern_x_range)
from bokeh_app.views.stats import DEPLETED, ENRICHED, build_stats_view
from gpu_matcher import Engine, ProjectError
from gpu_matcher import scaling
from gpu_matcher import stats as hypothesis

log = logging.getLogger("bokeh_app")

#: The match view's update is sent at least this long after the select view's (seconds).
MATCH_AFTER_SELECT_S = 0.15
PHRASE_POINTS = 20_000                 # most phrases drawn in the phrase map (PCA uses all of them)


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
    scale: str = "none"                # per-cell scaling of the threshold (gpu_matcher.scaling)
    stats: tuple[str, str] = ("", "")  # (track, label) of the hypothesis panel, "" when it is absent


@dataclass
class MatchResult:
    matches: list
    matrix: MatchMatrix
    engine_ms: float
    total_ms: float
    stats: "StatsAnswer | None" = None         # the hypothesis panel's numbers, computed in the worker too


@dataclass
class StatsAnswer:
    """The hypothesis panel's numbers for one S, threshold, label and match list (gpu_matcher.stats)."""

    track: str
    label: str
    threshold: float
    cells: int
    enrichment: list                            # LabelEnrichment rows
    points: list                                # Detection over the threshold grid, by threshold
    now: object = None                          # Detection at the current threshold
    error: str = ""


def _palette_color(palette, value: float, lo: float, hi: float) -> str:
    if not np.isfinite(value):
        return "#ffffff"
    frac = 0.0 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    return palette[min(len(palette) - 1, int(frac * (len(palette) - 1) + 0.5))]


def _short_number(v: float) -> str:
    if not np.isfinite(v):
        return ""
    return f"{v:.1f}" if abs(v) < 10 else f"{v:.3g}"


class ProjectSession:
    """One browser session on one project."""

    def __init__(self, engine: Engine, state: ViewState, defaults: UIDefaults, notices: list[str] = (),
                 follow_address_bar: bool = True, synchronous: bool | None = None):
        self.engine = engine
        self.project = engine.project
        self.defaults = defaults
        self.state = state
        self.notices = list(notices)
        self.synchronous = synchronous
        self.doc = None
        meta = self.project.meta
        sources = [(name, src.label) for name, src in self.project.sources.items()]
        tracks = [(name, t.kind, (t.dataset.shape[1] if t.kind == "wordvec" and t.dataset.ndim == 2 else 1))
                  for name, t in meta.items()]
        self.sv = build_select_view(sources=sources, tracks=tracks, defaults=defaults)
        self.mv = build_match_view(tracks=[(name, t.kind) for name, t in meta.items()], defaults=defaults)
        self.status = status_div(defaults.select.window_px + 280)
        self.url = url_holder(follow_address_bar)
        self._follow = follow_address_bar
        self.header = header(self.project.name, f"{self.project.description} · project {self.project.id}",
                             True)
        discrete = {name: [t.label(v) for v in sorted(t.labels)] if t.labels else
                    [str(v) for v in np.unique(hypothesis.track_values(engine, name))]
                    for name, t in meta.items() if t.kind == "discrete"}
        self.stv = build_stats_view(tracks=discrete, sources=sources) if discrete else None
        self.layout = Column(self.sv.layout, self.mv.layout, *([self.stv.layout] if self.stv else []),
                             name="project_view")
        self._best_threshold: float | None = None
        self._suggested: list[int] = []
        self._last_message: tuple[str, str] = ("info", "")
        self._trace_layout: tuple[int, int] | None = None     # (W, D) of the sent trace x column
        self.base_cells: list[int] = []                        # S from the brush alone
        self.cells: list[int] = []                             # S after hand edits
        self._generation = 0
        self._pending: MatchJob | None = None
        self._running = False                                  # a match of this session is running
        self._matches: list = []
        self._search_hits: list[int] = []
        self._search_len = 1
        self._quiet = 0                                        # >0 while we set widgets ourselves

    # --- wiring ----------------------------------------------------------------------------------
    def connect(self, doc) -> None:
        self.doc = doc
        if self.synchronous is None:
            self.synchronous = doc.session_context is None
        sv, mv = self.sv, self.mv
        sv.threshold.on_change("value_throttled", lambda attr, old, new: self.on_threshold(new))
        sv.scale.on_change("value", lambda attr, old, new: self.on_scale(new))
        sv.left.on_change("value", lambda attr, old, new: self.on_margins())
        sv.right.on_change("value", lambda attr, old, new: self.on_margins())
        sv.plot.on_event(SelectionGeometry, self.on_selection_geometry)
        sv.pattern_plot.on_event(Tap, lambda event: self.on_pattern_point(event.x))
        sv.pattern_plot.on_event(PanEnd, lambda event: self.on_pattern_point(event.x))
        sv.source_select.on_change("value", lambda attr, old, new: self.on_source(new))
        sv.word_width.on_change("value", lambda attr, old, new: self.on_word_width(new))
        sv.back.on_click(lambda: self.go(self.state.pos - self.window))
        sv.forward.on_click(lambda: self.go(self.state.pos + self.window))
        sv.position.on_change("value", lambda attr, old, new: self.go(new, user=True))
        sv.search.on_change("value", lambda attr, old, new: self.on_search(new))
        sv.search_hits.selected.on_change("indices", lambda attr, old, new: self.on_search_pick(new))
        sv.track_toggle.on_change("active", lambda attr, old, new: self.on_tracks(new))
        sv.add_button.on_click(lambda: self.on_add_cells(sv.cell_input.value))
        sv.remove_button.on_click(lambda: self.on_remove_cells(sv.cell_input.value))
        sv.reset_button.on_click(self.on_reset_cells)
        mv.matches.selected.on_change("indices", lambda attr, old, new: self.on_match_pick(new))
        mv.colour.on_change("value", lambda attr, old, new: self.on_match_colour(new))
        if self.stv is not None:
            stv = self.stv
            stv.track.on_change("value", lambda attr, old, new: self.on_stats_track(new))
            stv.label.on_change("value", lambda attr, old, new: None if self._quiet else self.update_stats())
            stv.apply_best.on_click(self.on_apply_best)
            stv.suggest.on_click(self.on_suggest)
            stv.add_suggested.on_click(
                lambda: self.on_add_cells(",".join(str(c) for c in self._suggested[:5])))
            stv.phrase_map.on_click(self.on_phrase_map)
            stv.compare.on_click(self.on_compare)
            stv.phrases.selected.on_change("indices", lambda attr, old, new: self.on_phrase_pick(new))
        self.restore()
        # The status line is a root of its own: a change of its text then re-lays out only itself.
        for root in (self.header, self.status, self.layout, self.url):
            doc.add_root(root)
        follow_on_load(doc, self.url, self._follow)
        doc.title = f"LSTMVis · {self.project.name}"

    @contextmanager
    def _batch(self):
        """Changes we make ourselves: widget callbacks they fire (synchronously) do nothing.

        (No ``doc.hold()``: a held document defers Python callbacks too, past this guard; the server
        sends the burst of patches once the callback returns anyway.)
        """
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    # --- derived quantities ----------------------------------------------------------------------
    @property
    def src(self):
        return self.project.source(self.state.source)

    @property
    def word_width(self) -> int:
        return self.state.word_width or self.defaults.select.word_width

    @property
    def window(self) -> int:
        return max(1, min(self.project.T, self.defaults.select.window_px // self.word_width))

    @property
    def shown_tracks(self) -> list[str]:
        if self.state.tracks is None:
            return list(self.project.meta)
        return [t for t in self.project.meta if t in self.state.tracks]

    def clamp_pos(self, pos: int) -> int:
        return int(min(max(0, pos), max(0, self.project.T - self.window)))

    # --- messages --------------------------------------------------------------------------------
    def say(self, text: str, level: str = "info") -> None:
        self._last_message = (level, text)
        lines = [("warn", n) for n in self.notices]
        if text:
            lines.append(self._last_message)
        self.status.text = status_html(lines)

    def _user_acted(self) -> None:
        """The first action after loading retires the URL's fallback notices."""
        self.notices = []

    def sync_url(self) -> None:
        set_url_query(self.url, to_query(self.state, self.defaults))

    # --- loading a state -------------------------------------------------------------------------
    def restore(self) -> None:
        """Show ``self.state`` (already validated by ``state.resolve``) and run its match."""
        st = self.state
        with self._batch():
            self.state = st.with_(pos=self.clamp_pos(st.pos))
            self._configure_source()
            self.sv.left.value, self.sv.right.value = st.left, st.right
            self.sv.word_width.value = str(self.word_width)
            self.sv.track_toggle.active = [i for i, t in enumerate(self.project.meta)
                                           if t in self.shown_tracks]
            self._show_tracks()
            self._recompute_cells()
            self._apply_window()
            self._apply_selection()
            self.sync_url()
            self.say("Brush a range of words in the plot to select cells." if not st.brush and not self.cells
                     else "")
        self.request_match()

    def _configure_source(self) -> None:
        sv, src = self.sv, self.src
        lo, hi = src.value_range()
        pad = 0.04 * (hi - lo)
        sv.plot.y_range.update(start=lo - pad, end=hi + pad)
        lo, hi = threshold_range((lo, hi), self.state.scale)
        step = float(f"{(hi - lo) / 200:.2g}")
        theta = self.state.threshold
        sv.threshold.update(start=lo, end=hi, step=step, value=theta)
        sv.threshold_line.location = theta
        sv.threshold_line.visible = self.state.scale == "none"      # a scaled θ is no line in value units
        sv.scale.value = self.state.scale
        sv.source_select.value = self.state.source
        sv.plot.yaxis.axis_label = "tanh(state)" if src.transform == "tanh" else "value"
        sv.position.high = self.project.T - 1

    # --- the select view: window ------------------------------------------------------------------
    def _apply_window(self) -> None:
        """Values, words, boundaries, tracks, n(t) and highlights for the window at ``state.pos``."""
        sv, st = self.sv, self.state
        W = self.window
        start, stop = st.pos, st.pos + W
        ctx = self.engine.context(st.source, start, stop, cells=(), threshold=st.threshold,
                                  meta=self.shown_tracks)
        D = ctx.values.shape[1]
        y = trace_y(padded(ctx.values, W))
        if self._trace_layout != (W, D):
            sv.traces.data = {"x": trace_x(W, D), "y": y}
            self._trace_layout = (W, D)
            sv.x_range.update(start=-0.5, end=W - 0.5)
            sv.plot.xaxis.ticker.ticks = list(range(W))
            angle, size = label_orientation(self.word_width)
            sv.plot.xaxis.major_label_orientation = angle
            sv.plot.xaxis.major_label_text_font_size = size
        else:
            sv.traces.data.update(y=y)
        room = self.word_width if self.word_width >= 48 else 90
        sv.plot.xaxis.major_label_overrides = {i: fit_label(w, room) for i, w in enumerate(ctx.words)}
        bounds = self.project.sequence_bounds()
        inside = bounds[(bounds > start) & (bounds < stop)]
        sv.boundaries.data = {"x": (inside - start - 0.5).astype(float).tolist()}
        self._apply_tracks(ctx)
        self._quiet += 1
        try:
            sv.position.value = st.pos
        finally:
            self._quiet -= 1
        self._update_window_info()

    def _update_window_info(self) -> None:
        st = self.state
        stop = min(st.pos + self.window, self.project.T)
        seq_lo, seq_hi = self.project.sequence_of(st.pos)
        # The title follows the window only: a title change re-lays out the plot (a full repaint).
        self.sv.plot.title.text = (
            f"steps {st.pos:,}–{stop - 1:,} of {self.project.T:,} · sequence {seq_lo:,}–{seq_hi - 1:,}"
            f" · {self.src.label} · D = {self.src.D}")

    def _apply_tracks(self, ctx) -> None:
        W = self.window
        for name in self.shown_tracks:
            tv = self.sv.tracks[name]
            track = self.project.meta[name]
            values = ctx.meta[name]
            cols = {"x": [], "y": [], "color": [], "alpha": [], "text": [], "text_color": []}
            room = max(self.word_width, 16)
            if track.kind == "wordvec":
                weights = ctx.meta_weights.get(name)
                top = float(np.nanmax(weights)) if weights is not None and weights.size else 1.0
                for i in range(min(W, values.shape[0])):
                    for k in range(values.shape[1]):
                        w = float(weights[i, k]) if weights is not None else 1.0
                        cols["x"].append(i)
                        cols["y"].append(k)
                        cols["color"].append("#2a7ab9")
                        cols["alpha"].append(0.08 + 0.7 * (w / top if top > 0 else 0.0))
                        cols["text"].append(fit_label(track.label(values[i, k]), room))
                        cols["text_color"].append("#111111")
            elif track.kind == "discrete":
                for i, v in enumerate(values[:W]):
                    cols["x"].append(i)
                    cols["y"].append(0)
                    cols["color"].append(CATEGORY_COLORS[int(v) % len(CATEGORY_COLORS)])
                    cols["alpha"].append(0.85)
                    cols["text"].append(fit_label(track.label(v), room))
                    cols["text_color"].append("#ffffff")
            else:
                lo, hi = track.value_range or (float(np.nanmin(values)) if values.size else 0.0,
                                               float(np.nanmax(values)) if values.size else 1.0)
                for i, v in enumerate(values[:W]):
                    cols["x"].append(i)
                    cols["y"].append(0)
                    cols["color"].append(_palette_color(SCALAR_PALETTE, float(v), lo, hi))
                    cols["alpha"].append(0.9)
                    cols["text"].append(fit_label(_short_number(float(v)), room))
                    frac = 0.0 if hi <= lo else (float(v) - lo) / (hi - lo)
                    cols["text_color"].append("#ffffff" if frac < 0.6 else "#111111")
            tv.source.data = cols

    def _show_tracks(self) -> None:
        shown = set(self.shown_tracks)
        for name, tv in self.sv.tracks.items():
            tv.plot.visible = name in shown
        for name, hm in self.mv.heatmaps.items():
            hm.plot.visible = name == COUNT_HEATMAP or name in shown
        options = [NO_COLOUR, COUNT_HEATMAP] + [t for t in self.shown_tracks]
        self.mv.colour.options = options
        if self.mv.colour.value not in options:
            self.mv.colour.value = NO_COLOUR

    # --- the select view: S ----------------------------------------------------------------------
    def _recompute_cells(self) -> None:
        """S = cells of the brush (engine.select) plus hand additions minus hand removals."""
        st = self.state
        base: list[int] = []
        if st.brush is not None:
            try:
                base = scaling.select(self.engine, st.source, st.brush[0], st.brush[1], st.threshold, st.left,
                                      st.right, scale=st.scale).cells
            except ProjectError as exc:
                self.say(str(exc), "error")
        self.base_cells = base
        self.cells = sorted((set(base) | set(st.add)) - set(st.remove))

    def _apply_selection(self) -> None:
        """Everything that follows S: n(t), the highlighted traces, the S table, pattern and brush."""
        sv, st = self.sv, self.state
        W = self.window
        start = st.pos
        on = scaling.on_mask(self.engine, st.source, start, start + W, st.threshold, st.scale)  # MATCHING.md
        cells = self.cells
        # Without S the strip stays blank rather than showing a row of zeros.
        n = on[:, cells].sum(axis=1).astype(np.float32) if cells else np.full(on.shape[0], np.nan, np.float32)
        n = padded(n, W)
        k = max(1, len(cells))
        show_numbers = self.word_width >= 16
        sv.counts.data = {
            "x": list(range(W)), "n": [None if not np.isfinite(v) else int(v) for v in n],
            "color": [_palette_color(COUNT_PALETTE, float(v), 0.0, k) if np.isfinite(v) else "#ffffff"
                      for v in n],
            "text": [str(int(v)) if show_numbers and np.isfinite(v) else "" for v in n],
            "text_color": ["#ffffff" if np.isfinite(v) and v > 0.55 * k else "#333333" for v in n]}
        sv.highlight.args = {"cells": [int(c) for c in cells], "stride": W + 1}
        self._apply_brush_boxes()
        sv.pattern.data = pattern_columns(st.left, (st.brush[1] - st.brush[0] + 1) if st.brush else 0,
                                          st.right)
        lo, hi = pattern_x_range(st.left, st.right, self.defaults.select.max_margin)
        if (sv.pattern_plot.x_range.start, sv.pattern_plot.x_range.end) != (lo, hi):
            sv.pattern_plot.x_range.update(start=lo, end=hi)
        # The table last: it is the slowest part to update in the browser, the plots go first.
        per_cell = on[:, cells].sum(axis=0).tolist() if cells else []
        added = set(st.add)
        sv.selection.selected.indices = []
        sv.selection.data = {"cell": list(cells), "on": per_cell,
                             "hand": ["added" if c in added and c not in self.base_cells else ""
                                      for c in cells]}

    def _apply_brush_boxes(self) -> None:
        """The brush and its off-margins, in window coordinates (one glyph: one message)."""
        st = self.state
        cols = {"left": [], "right": [], "kind": [], "color": [], "alpha": [], "hatch": []}

        def box(left, right, kind, color, alpha, hatch):
            for key, value in zip(cols, (left, right, kind, color, alpha, hatch)):
                cols[key].append(value)
        if st.brush is not None:
            s, e = st.brush[0] - st.pos, st.brush[1] - st.pos
            box(s - 0.5, e + 0.5, "brush", BRUSH_COLOR, 0.12, " ")
            if st.left:
                box(s - 0.5 - st.left, s - 0.5, "off before", MARGIN_COLOR, 0.10, "/")
            if st.right:
                box(e + 0.5, e + 0.5 + st.right, "off after", MARGIN_COLOR, 0.10, "/")
        self.sv.brush_boxes.data = cols

    def _selection_changed(self, message=None) -> None:
        """S changed (brush, threshold, margins, hand edits): update the view and ask for matches.

        ``message`` (a string, or a function of |S|) goes to the status line *first*: in the browser its
        re-layout then happens before the plots' data arrives instead of delaying their repaint.
        """
        with self._batch():
            self._recompute_cells()
            if message is not None:
                self.say(message(len(self.cells)) if callable(message) else message)
            self.sync_url()
            self._apply_selection()
        self.request_match()

    # --- callbacks: the select view ---------------------------------------------------------------
    def on_selection_geometry(self, event) -> None:
        geometry = event.geometry
        if not getattr(event, "final", True) or geometry.get("type") != "rect":
            return
        self.brush(float(geometry["x0"]), float(geometry["x1"]))

    def brush(self, x0: float, x1: float) -> None:
        """A brush from window x ``x0`` to ``x1``: the words whose centres it covers form the range."""
        self._user_acted()
        if x1 < x0:
            x0, x1 = x1, x0
        W = min(self.window, self.project.T - self.state.pos)
        a, b = math.ceil(x0), math.floor(x1)
        if a > b:
            a = b = int(round((x0 + x1) / 2))
        a, b = min(max(a, 0), W - 1), min(max(b, 0), W - 1)
        s, e = self.state.pos + a, self.state.pos + b
        seq_lo, seq_hi = self.project.sequence_of(s)
        note = ""
        if e >= seq_hi:
            e = seq_hi - 1
            note = f" (cut at the sequence boundary at {seq_hi})"
        self.state = self.state.with_(brush=(s, e), add=(), remove=())
        words = " ".join(self.project.tokens(s, min(e + 1, s + 8)))
        self._selection_changed(lambda k: f"Brushed steps {s}–{e} “{words}{' …' if e - s >= 8 else ''}”"
                                          f"{note}: {k} cells selected.")

    def on_threshold(self, value) -> None:
        if value is None:
            return
        self._user_acted()
        self.state = self.state.with_(threshold=round(float(value), 4))
        self.sv.threshold_line.location = self.state.threshold
        self._selection_changed(lambda k: f"Threshold {self.state.threshold:g}: {self._cells_text(k)}")

    def on_scale(self, value: str) -> None:
        """Threshold the value or a per-cell normalised value; the threshold resets to the new range."""
        if self._quiet or value == self.state.scale or value not in scaling.SCALES:
            return
        self._user_acted()
        lo, hi = threshold_range(self.src.value_range(), value)
        theta = scaling.SCALE_DEFAULTS.get(value) or default_threshold((lo, hi), self.defaults)
        self.state = self.state.with_(scale=value, threshold=theta)
        with self._batch():
            self._configure_source()
        names = {"none": "the value", "zscore": "the z-score within each cell",
                 "quantile": "the quantile within each cell"}
        self._selection_changed(lambda k: f"Threshold on {names[value]} (threshold {theta:g}): "
                                          f"{self._cells_text(k)}")

    def on_margins(self) -> None:
        if self._quiet:
            return
        self._user_acted()
        left, right = int(self.sv.left.value or 0), int(self.sv.right.value or 0)
        self.state = self.state.with_(left=max(0, left), right=max(0, right))
        self._selection_changed(lambda k: f"Off-margins L={self.state.left}, R={self.state.right}: "
                                          f"{self._cells_text(k)}")

    def on_pattern_point(self, x: float | None) -> None:
        """A click, or the end of a drag, on the pattern plot at ``x``: left of the brush sets L, right
        of it R, to the off steps between there and the brush (the spinners follow, and S with them)."""
        hit = pattern_margin(float(x), self.defaults.select.max_margin) if x is not None else None
        if hit is None:
            return
        side, steps = hit
        spinner = self.sv.left if side == "left" else self.sv.right
        if int(spinner.value or 0) != steps:
            spinner.value = steps                  # fires on_margins, as a typed value would

    def _cells_text(self, k: int | None = None) -> str:
        k = len(self.cells) if k is None else k
        if self.state.brush is None and not k:
            return "no brush yet."
        return f"{k} cells selected."

    def on_source(self, name: str) -> None:
        if self._quiet or name == self.state.source or name not in self.project.sources:
            return
        self._user_acted()
        src = self.project.source(name)
        lo, hi = threshold_range(src.value_range(), self.state.scale)
        theta = self.state.threshold
        if theta is None or not lo <= theta <= hi:
            theta = default_threshold((lo, hi), self.defaults)
        self.state = self.state.with_(source=name, threshold=theta, add=(), remove=())
        with self._batch():
            self._recompute_cells()
            self.say(f"Source {src.label}: {self._cells_text()}")
            self._configure_source()
            self._apply_window()
            self._apply_selection()
            self.sync_url()
        self.request_match()

    def on_word_width(self, value) -> None:
        if self._quiet:
            return
        try:
            ww = int(value)
        except (TypeError, ValueError):
            return
        self._user_acted()
        self.state = self.state.with_(word_width=ww)
        with self._batch():
            self.say(f"Word width {ww} px: {self.window} steps in view.")
            self.state = self.state.with_(pos=self.clamp_pos(self.state.pos))
            self._apply_window()
            self._apply_selection()
            self.sync_url()

    def go(self, pos, user: bool = False, focus: tuple[int, int] | None = None,
           message: str | None = None) -> None:
        """Move the window to start at ``pos`` (clamped); ``focus`` marks a range (a match, a hit)."""
        if pos is None or (user and self._quiet):
            return
        pos = self.clamp_pos(int(pos))
        if user and pos == self.state.pos:
            return
        self._user_acted()
        with self._batch():
            self.say(message or f"Steps {pos:,}–{min(pos + self.window, self.project.T) - 1:,}.")
            if pos != self.state.pos:
                self.state = self.state.with_(pos=pos)
                self._apply_window()
                self._apply_selection()
                self.sync_url()
            if focus is not None:
                self.sv.focus_box.update(left=focus[0] - pos - 0.5, right=focus[1] - pos + 0.5,
                                         visible=True)
            else:
                self.sv.focus_box.visible = False

    def on_tracks(self, active: list[int]) -> None:
        if self._quiet:
            return
        self._user_acted()
        names = list(self.project.meta)
        shown = tuple(names[i] for i in sorted(active) if 0 <= i < len(names))
        self.state = self.state.with_(tracks=None if len(shown) == len(names) else shown)
        with self._batch():
            self.say(f"Meta tracks shown: {', '.join(shown) or 'none'}.")
            self._show_tracks()
            self._apply_window()
            self._apply_selection()
            self.sync_url()
        self.request_match()

    def _parse_cells(self, text: str) -> list[int] | None:
        D = self.src.D
        try:
            cells = [int(c) for c in str(text or "").replace(";", ",").replace(" ", ",").split(",") if c]
        except ValueError:
            self.say(f"{text!r}: type cell numbers separated by commas, e.g. 3, 17", "warn")
            return None
        bad = [c for c in cells if not 0 <= c < D]
        if bad:
            self.say(f"cell {bad[0]} is out of range [0, {D})", "warn")
            return None
        return cells

    def on_add_cells(self, text: str) -> None:
        self._user_acted()
        cells = self._parse_cells(text)
        if not cells:
            if cells == []:
                self.say("Type the cells to add, e.g. 3, 17.", "warn")
            return
        add = set(self.state.add) | (set(cells) - set(self.base_cells))
        remove = set(self.state.remove) - set(cells)
        self.state = self.state.with_(add=tuple(sorted(add)), remove=tuple(sorted(remove)))
        self.sv.cell_input.value = ""
        self._selection_changed(lambda k: f"Added cell(s) {', '.join(map(str, cells))}: {k} cells in S.")

    def on_remove_cells(self, text: str) -> None:
        self._user_acted()
        ticked = [self.cells[i] for i in self.sv.selection.selected.indices if 0 <= i < len(self.cells)]
        typed = self._parse_cells(text) if str(text or "").strip() else []
        if typed is None:
            return
        cells = sorted(set(ticked) | set(typed))
        if not cells:
            self.say("Tick rows of the table (or type cells) to remove them from S.", "warn")
            return
        remove = set(self.state.remove) | (set(cells) & set(self.base_cells))
        add = set(self.state.add) - set(cells)
        self.state = self.state.with_(add=tuple(sorted(add)), remove=tuple(sorted(remove)))
        self.sv.cell_input.value = ""
        self._selection_changed(lambda k: f"Removed cell(s) {', '.join(map(str, cells))}: {k} cells in S.")

    def on_reset_cells(self) -> None:
        self._user_acted()
        self.state = self.state.with_(add=(), remove=())
        self._selection_changed(lambda k: f"Hand edits undone: {k} cells in S.")

    def on_search(self, phrase: str) -> None:
        phrase = (phrase or "").strip()
        sv = self.sv
        if not phrase:
            sv.search_hits.data = {"pos": [], "context": []}
            sv.search_info.text = ""
            return
        self._user_acted()
        try:
            tokens = self.engine.tokenize(phrase)
            hits = self.engine.search(phrase)
        except ProjectError as exc:
            self.say(str(exc), "warn")
            return
        limit = self.defaults.search_max_results
        shown = [int(h) for h in hits[:limit]]
        n = max(1, len(tokens))
        contexts = []
        for h in shown:
            before = " ".join(self.project.tokens(h - 2, h))
            inside = " ".join(self.project.tokens(h, h + n))
            after = " ".join(self.project.tokens(h + n, h + n + 3))
            contexts.append(f"{before} [{inside}] {after}".strip())
        with self._batch():
            self._search_hits, self._search_len = shown, n
            sv.search_hits.selected.indices = []
            sv.search_hits.data = {"pos": shown, "context": contexts}
            more = f" (first {limit} listed)" if len(hits) > limit else ""
            sv.search_info.text = f"{len(hits):,} occurrence(s) of “{' '.join(tokens)}”{more}"
            if len(hits):
                self.say(f"{len(hits):,} occurrence(s) of “{' '.join(tokens)}”; click one to go there.")
            else:
                self.say(f"“{phrase}” does not occur in this project.", "warn")

    def on_search_pick(self, indices: list[int]) -> None:
        if self._quiet or not indices:
            return
        i = indices[0]
        if not 0 <= i < len(self._search_hits):
            return
        hit = self._search_hits[i]
        self.go(hit - self.window // 4, focus=(hit, hit + self._search_len - 1),
                message=f"Occurrence {i + 1} at step {hit:,}.")

    # --- the match view --------------------------------------------------------------------------
    def match_job(self) -> MatchJob:
        st = self.state
        level, text = self._last_message
        return MatchJob(self._generation, st.source, tuple(self.cells), float(st.threshold), st.left,
                        st.right, tuple(self.shown_tracks), text if level == "info" else "",
                        time.monotonic(), scale=st.scale, stats=self._stats_choice())

    def request_match(self) -> None:
        """Ask for the matches of the current S; a newer request supersedes this one."""
        self._generation += 1
        job = self.match_job()
        if not job.cells:
            self._pending = None
            self.show_matches(job, None)
            return
        self._pending = job
        self.mv.busy.visible = True
        if self.synchronous:
            try:
                result = self.compute_matches(job)
            except Exception as exc:                 # shown in the status line, as on a server
                result = exc
            self.show_matches(job, result)
        else:
            # A locked callback first: it runs only once this callback's patches are on the wire, so
            # the select view's answer is not held up by the match's work in another thread.
            self.doc.add_next_tick_callback(self._start_match)

    def _start_match(self) -> None:
        self.doc.add_next_tick_callback(self._match_off_lock)

    @without_document_lock
    async def _match_off_lock(self) -> None:
        """Run the pending match in a worker thread, then the next pending one, until none is left.

        One match at a time per session: a query asked while one runs waits (only the newest) and
        the running one's answer, stale by then, is dropped. So no session holds more than one
        worker, and a long match in one session does not keep another session's matches waiting.
        """
        if self._running:
            return                                   # the running loop picks up the newest job
        self._running = True
        try:
            while self._pending is not None:
                job, self._pending = self._pending, None
                try:
                    result = await asyncio.wrap_future(WORKERS.submit(self.compute_matches, job))
                except Exception as exc:             # shown in the status line, never a dead page
                    result = exc
                if job.generation != self._generation:
                    continue
                # A quick answer waits a moment: arriving on the heels of the select view's update it
                # would hold that update's repaint back in the browser (one thread runs both).
                wait = MATCH_AFTER_SELECT_S - (time.monotonic() - job.asked)
                if wait > 0:
                    await asyncio.sleep(wait)
                self.doc.add_next_tick_callback(partial(self.show_matches, job, result))
        finally:
            self._running = False

    def compute_matches(self, job: MatchJob) -> MatchResult:
        """The engine's exact top-N and the word matrix around each match (runs in a worker)."""
        md = self.defaults.match
        t0 = time.perf_counter()
        matches = scaling.match(self.engine, job.source, list(job.cells), job.threshold, job.left, job.right,
                                top=md.top, min_length=md.min_length, phrase_length=md.phrase_length,
                                distinct=md.distinct, sequences=True, scale=job.scale)
        t1 = time.perf_counter()
        matrix = match_matrix(self.engine, job.source, matches, list(job.cells), job.threshold,
                              md.context_left, md.columns, list(job.tracks), md.word_px, job.scale)
        answer = None
        if job.stats[0]:
            answer = self.compute_stats(job.source, matches, list(job.cells), job.threshold, job.scale,
                                        *job.stats)
        return MatchResult(matches, matrix, (t1 - t0) * 1000, (time.perf_counter() - t0) * 1000, answer)

    def show_matches(self, job: MatchJob, result) -> None:
        """Apply a match result (or clear the view); stale results are dropped."""
        if job.generation != self._generation:
            return
        with self._batch():
            try:
                self._show_result(job, result)
            finally:
                self.mv.busy.visible = False            # last: hidden in the same repaint as the rows

    def _show_result(self, job: MatchJob, result) -> None:
        mv, md = self.mv, self.defaults.match
        if isinstance(result, ProjectError):
            self._clear_matches()
            self.say(f"Match failed: {result}", "error")
            return
        if isinstance(result, Exception):
            log.error("match failed", exc_info=result)
            self._clear_matches()
            self.say(f"Match failed: internal error ({type(result).__name__}: {result})", "error")
            return
        if result is None:
            self._clear_matches()
            mv.words.data = matrix_columns(summary="No cells selected: brush a range of words in the select view.")
            return
        ms = result.matches
        self._matches = ms
        found = (f"{len(ms)} matches in {result.total_ms:.0f} ms (engine {result.engine_ms:.0f} ms, "
                 f"{self.engine.backend.name}).")
        self.say(f"{job.note} · {found}" if job.note else f"{len(job.cells)} cells in S · {found}")
        summary = (f"{len(ms)} matches of {len(job.cells)} cells · threshold {job.threshold:g}, "
                   f"L={job.left}, R={job.right} · click a row to show it above")
        # Heatmaps first, the word matrix (two sources of one plot) last: one repaint of the matrix.
        for name, hm in mv.heatmaps.items():
            if name in result.matrix.heatmaps:
                image = padded(result.matrix.heatmaps[name], md.top)
                if name == COUNT_HEATMAP or self.project.meta[name].kind != "discrete":
                    hm.mapper.update(low=result.matrix.lows[name], high=result.matrix.highs[name])
                hm.source.data = {"image": [image], "x": [-0.5], "y": [-0.5], "dw": [md.columns],
                                  "dh": [md.top]}
        self._show_column_summaries(result.matrix)
        self._apply_match_colour()
        span_x, span_w = [], []
        for m in ms:
            first = md.context_left
            last = min(md.columns - 1, md.context_left + m.length - 1)
            span_x.append((first + last) / 2)
            span_w.append(last - first + 1)
        mv.matches.selected.indices = []
        mv.matches.data = {
            "start": [m.start for m in ms], "end": [m.end for m in ms],
            "length": [m.length for m in ms], "inter": [m.inter for m in ms],
            "union": [m.union for m in ms], "row": list(range(len(ms))),
            "span_x": span_x, "span_w": span_w}
        mv.words.data = matrix_columns(result.matrix.words, [result.matrix.row_labels[i] for i in range(len(ms))],
                                       summary)
        if result.stats is not None and result.stats.track and job.stats == self._stats_choice():
            self._apply_stats(result.stats)
        else:
            self.update_stats()

    def _clear_matches(self) -> None:
        mv, md = self.mv, self.defaults.match
        self._matches = []
        mv.matches.data = {k: [] for k in mv.matches.data}
        mv.words.data = matrix_columns()
        for hm in mv.heatmaps.values():
            hm.source.data = empty_image(md.top, md.columns)
        self._show_column_summaries(None)
        self._apply_match_colour()
        self.update_stats()

    def _show_column_summaries(self, matrix: MatchMatrix | None) -> None:
        """The heatmaps under the word matrix: n(t) and each shown track, summarised per column."""
        mv, md = self.mv, self.defaults.match
        summaries = matrix.summaries if matrix is not None else {}
        cells, names = column_rows(summaries, matrix.lows if matrix else {}, matrix.highs if matrix else {},
                                   md.context_left, md.word_px)
        mv.columns.data = cells
        mv.column_labels.data = names
        rows = len(summaries) or 1 + len(self.shown_tracks)
        if mv.column_plot.y_range.start != rows - 0.5:        # tracks shown or hidden: resize
            mv.column_plot.y_range.start = rows - 0.5
            mv.column_plot.frame_height = rows * md.row_px

    def on_match_colour(self, value: str) -> None:
        self._apply_match_colour()

    def _apply_match_colour(self) -> None:
        mv = self.mv
        name = mv.colour.value
        hm = mv.heatmaps.get(name)
        if hm is None or name == NO_COLOUR:
            mv.background_renderer.visible = False
            return
        mv.background.data = dict(hm.source.data)
        mv.background_renderer.glyph.color_mapper = hm.mapper
        mv.background_renderer.visible = True

    def on_match_pick(self, indices: list[int]) -> None:
        if self._quiet or not indices:
            return
        i = indices[0]
        if not 0 <= i < len(self._matches):
            return
        m = self._matches[i]
        self.go(m.start - self.window // 4, focus=(m.start, m.end),
                message=f"Match #{i + 1}: steps {m.start:,}–{m.end:,} (length {m.length}, inter {m.inter}, "
                        f"union {m.union}), marked in orange above.")
        self._quiet += 1
        try:
            self.mv.matches.selected.indices = []
        finally:
            self._quiet -= 1


    # --- the hypothesis panel (gpu_matcher.stats) ------------------------------------------------
    def _stats_choice(self) -> tuple[str, str]:
        stv = self.stv
        return ("", "") if stv is None else (stv.track.value or "", stv.label.value or "")

    def compute_stats(self, source: str, matches: list, cells: list[int], threshold: float, scale: str,
                      track: str, label: str) -> StatsAnswer:
        """Enrichment of ``matches`` and S as a detector of ``track == label`` (runs in a worker too)."""
        answer = StatsAnswer(track, label, float(threshold), len(cells), [], [])
        try:
            if matches and track:
                answer.enrichment = hypothesis.enrichment(self.engine, source, matches, track).labels
            if cells and track and label != "":
                grid = hypothesis.default_thresholds(self.engine, source, scale=scale)
                curve = hypothesis.detector_curve(self.engine, source, cells, grid + [float(threshold)], track,
                                                  label, scale)
                answer.now = curve.points[-1]
                answer.points = sorted(curve.points[:-1], key=lambda p: p.threshold)
        except ProjectError as exc:
            answer.error = str(exc)
        return answer

    def update_stats(self) -> None:
        """Enrichment of the shown matches and S as a detector of the chosen label (exact counts)."""
        if self.stv is None:
            return
        st = self.state
        self._apply_stats(self.compute_stats(st.source, self._matches, self.cells, st.threshold, st.scale,
                                             *self._stats_choice()))

    def _apply_stats(self, answer: StatsAnswer) -> None:
        stv = self.stv
        track, label, rows = answer.track, answer.label, answer.enrichment
        stv.enrichment_plot.x_range.factors = [r.label for r in rows]
        stv.enrichment.data = {
            "label": [r.label for r in rows], "ratio": [r.ratio for r in rows],
            "matched": [r.matched for r in rows], "corpus": [r.corpus for r in rows],
            "p_value": [r.p_value for r in rows],
            "color": [ENRICHED if r.ratio >= 1 else DEPLETED for r in rows]}
        self._best_threshold = None
        stv.apply_best.disabled = True
        if answer.now is None:
            stv.curve.data = {k: [] for k in stv.curve.data}
            stv.best.data = {"threshold": [], "f1": []}
            stv.detector.text = html.escape(answer.error) if answer.error else \
                "S as a detector: select cells first."
            return
        th, now, points = answer.threshold, answer.now, answer.points
        stv.curve.data = {"threshold": [p.threshold for p in points], "precision": [p.precision for p in points],
                          "recall": [p.recall for p in points], "f1": [p.f1 for p in points]}
        best = max(points, key=lambda p: (p.f1, -p.threshold)) if points else None
        if best is not None and best.f1 > 0:
            self._best_threshold = best.threshold
            stv.best.data = {"threshold": [best.threshold], "f1": [best.f1]}
            stv.apply_best.disabled = False
            stv.apply_best.label = f"apply the best-F1 threshold ({best.threshold:g}, F1 {best.f1:.3f})"
        else:
            stv.best.data = {"threshold": [], "f1": []}
        stv.detector.text = (f"<b>{answer.cells} cells all on</b> &rArr; {html.escape(track)} = "
                             f"{html.escape(label)} at threshold "
                             f"{th:g}: precision <b>{now.precision:.3f}</b> ({now.true_positives:,}/"
                             f"{now.predicted:,}), recall <b>{now.recall:.3f}</b> ({now.true_positives:,}/"
                             f"{now.positives:,}), F1 <b>{now.f1:.3f}</b>")

    def on_stats_track(self, name: str) -> None:
        track = self.project.meta.get(name)
        if track is None or self.stv is None:
            return
        labels = ([track.label(v) for v in sorted(track.labels)] if track.labels else
                  [str(v) for v in np.unique(hypothesis.track_values(self.engine, name))])
        with self._batch():
            self.stv.label.options = labels
            self.stv.label.value = labels[-1] if labels else ""
        self.update_stats()

    def on_apply_best(self) -> None:
        if self._best_threshold is None:
            return
        value = self._best_threshold
        with self._batch():
            self.sv.threshold.value = value
        self.on_threshold(value)

    def on_suggest(self) -> None:
        stv = self.stv
        if stv is None:
            return
        st = self.state
        try:
            if st.brush is not None:
                target = f"the brush [{st.brush[0]:,}, {st.brush[1]:,}]"
                ranked = hypothesis.suggest_cells(self.engine, st.source, st.threshold, st.brush[0], st.brush[1],
                                                  scale=st.scale)
            else:
                target = f"{stv.track.value} = {stv.label.value}"
                ranked = hypothesis.suggest_cells(self.engine, st.source, st.threshold,
                                                  track=stv.track.value, label=stv.label.value, scale=st.scale)
        except ProjectError as exc:
            self.say(f"Suggest failed: {exc}", "error")
            return
        self._suggested = [r.cell for r in ranked]
        stv.suggestions.data = {"cell": [r.cell for r in ranked], "score": [round(r.score, 4) for r in ranked],
                                "rate_in": [round(r.rate_in, 4) for r in ranked],
                                "rate_out": [round(r.rate_out, 4) for r in ranked]}
        stv.add_suggested.disabled = not ranked
        self.say(f"Cells that best separate {target} from the rest (on-rate inside minus outside): "
                 f"{', '.join(str(c) for c in self._suggested[:5])}.")


    def on_phrase_map(self) -> None:
        """Fig. 9: S of every span of the chosen track's labels, PCA, a scatter coloured by label."""
        stv, st = self.stv, self.state
        track = stv.track.value
        t0 = time.perf_counter()
        pp = hypothesis.phrase_patterns(self.engine, st.source, track, st.threshold, left=st.left,
                                        right=st.right, scale=st.scale)
        proj = hypothesis.pca(pp.patterns, 2)
        ms = (time.perf_counter() - t0) * 1000
        P = pp.starts.size
        shown = np.arange(P) if P <= PHRASE_POINTS else np.linspace(0, P - 1, PHRASE_POINTS).astype(np.int64)
        meta = self.project.meta[track]
        values = pp.values[shown]
        with self._batch():
            stv.phrases.selected.indices = []
            stv.phrases.data = {
                "x": proj.coords[shown, 0] if proj.coords.shape[1] > 0 else np.zeros(shown.size),
                "y": proj.coords[shown, 1] if proj.coords.shape[1] > 1 else np.zeros(shown.size),
                "label": [meta.label(v) for v in values.tolist()],
                "color": [CATEGORY_COLORS[int(v) % len(CATEGORY_COLORS)] for v in values.tolist()],
                "text": hypothesis.phrase_texts(self.engine, pp.starts[shown], pp.ends[shown]),
                "start": pp.starts[shown].tolist(), "end": pp.ends[shown].tolist()}
        explained = ", ".join(f"{100 * e:.1f}%" for e in proj.explained)
        stv.phrase_info.text = (f"{P:,} spans of <b>{html.escape(track)}</b> at threshold {st.threshold:g}"
                                f"{'' if P == shown.size else f' ({shown.size:,} drawn)'}; PCA explains "
                                f"{explained} of the variance; {ms:.0f} ms.")
        self._phrase_rows = list(zip(stv.phrases.data["start"], stv.phrases.data["end"]))

    def on_compare(self) -> None:
        """The brush selected and matched in another source: both lists, their overlap, enrichments."""
        stv, st = self.stv, self.state
        other = stv.compare_source.value
        if st.brush is None or other not in self.project.sources:
            stv.compare_info.text = "Brush a range first: the comparison selects it in both sources."
            return
        md = self.defaults.match
        try:
            cmp = hypothesis.compare(self.engine, st.source, self.engine, other, st.brush[0], st.brush[1],
                                     st.threshold, st.left, st.right, md.top, stv.track.value)
        except ProjectError as exc:
            stv.compare_info.text = html.escape(f"Compare failed: {exc}")
            return
        rows = "".join(f"<tr><td>{html.escape(r['label'])}</td><td>{r['ratio_a']:.2f}</td><td>{r['ratio_b']:.2f}"
                       f"</td><td>{r['difference']:+.2f}</td></tr>" for r in cmp.enrichment[:6])
        names = {name: src.label for name, src in self.project.sources.items()}
        stv.compare_info.text = (
            f"<b>A</b> {html.escape(names[st.source])}: {len(cmp.a['cells'])} cells, {len(cmp.a['matches'])} matches"
            f" · <b>B</b> {html.escape(names[other])}: {len(cmp.b['cells'])} cells, {len(cmp.b['matches'])} "
            f"matches<br>overlap: {cmp.overlap_steps:,} steps (Jaccard {cmp.jaccard:.3f}); {cmp.shared_matches} "
            f"matches of A overlap a match of B"
            + (f"<table><tr><th>{html.escape(stv.track.value)}</th><th>ratio A</th><th>ratio B</th>"
               f"<th>A - B</th></tr>{rows}</table>" if rows else ""))

    def on_phrase_pick(self, indices: list[int]) -> None:
        rows = getattr(self, "_phrase_rows", [])
        if self._quiet or not indices or not 0 <= indices[0] < len(rows):
            return
        a, b = rows[indices[0]]
        self.go(a - self.window // 4, focus=(a, b), message=f"Span {a:,}–{b:,}, marked in orange above.")


__all__ = ["ProjectSession", "MatchJob", "MatchResult", "COUNT_PALETTE"]
