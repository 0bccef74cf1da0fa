"""S in the select view: the brush, threshold (and its scale), off-margins, source and hand edits, and
everything S draws (n(t), the highlighted traces, the S table, the pattern, the brush boxes)."""

from __future__ import annotations

import math

import numpy as np
from bokeh.events import PanEnd, SelectionGeometry, Tap

from bokeh_app import columns
from bokeh_app.queries import slider_range
from bokeh_app.state import MAX_MIN_LENGTH, client_number, default_threshold, threshold_range
from bokeh_app.views.common import BRUSH_COLOR, COUNT_PALETTE, MARGIN_COLOR
from bokeh_app.views.select import pattern_margin, pattern_x_range
from bokeh_app.worker import failure
from gpu_matcher import ProjectError
from gpu_matcher.threshold import SCALE_DEFAULTS, SCALES, Threshold

SCALE_NAMES = {"none": "the value", "zscore": "the z-score within each cell",
               "quantile": "the quantile within each cell"}


class SelectReceiver:
    def __init__(self, session):
        self.s = session

    def connect(self) -> None:
        sv = self.s.sv
        sv.threshold.on_change("value_throttled", lambda attr, old, new: self.on_threshold(new))
        sv.scale.on_change("value", lambda attr, old, new: self.on_scale(new))
        sv.left.on_change("value", lambda attr, old, new: self.on_margins())
        sv.right.on_change("value", lambda attr, old, new: self.on_margins())
        sv.min_length.on_change("value", lambda attr, old, new: self.on_min_length(new))
        sv.plot.on_event(SelectionGeometry, self.on_selection_geometry)
        sv.pattern_plot.on_event(Tap, lambda event: self.on_pattern_point(event.x))
        sv.pattern_plot.on_event(PanEnd, lambda event: self.on_pattern_point(event.x))
        sv.source_select.on_change("value", lambda attr, old, new: self.on_source(new))
        sv.add_button.on_click(lambda: self.on_add_cells(sv.cell_input.value))
        sv.remove_button.on_click(lambda: self.on_remove_cells(sv.cell_input.value))
        sv.reset_button.on_click(self.on_reset_cells)

    # --- S and what it draws ---------------------------------------------------------------------
    def configure_source(self) -> None:
        """The value axis and the threshold slider for the state's source and scale."""
        s, sv, st = self.s, self.s.sv, self.s.state
        lo, hi = slider_range(s.engine, st.source, st.scale)
        lo, hi = min(lo, st.threshold), max(hi, st.threshold)        # a URL's θ beyond the robust range
        sv.threshold.update(start=lo, end=hi, step=float(f"{(hi - lo) / 200:.2g}"))
        self.show_threshold(st.threshold)
        sv.threshold_line.location = st.threshold
        # The plot draws the threshold's units (receivers.window: z-scores, quantiles), so θ is a line.
        sv.threshold_line.visible = True
        sv.scale.value = st.scale
        sv.source_select.value = st.source
        sv.plot.yaxis.axis_label = ("z-score within each cell" if st.scale == "zscore" else
                                    "quantile within each cell" if st.scale == "quantile" else
                                    "tanh(state)" if s.src.transform == "tanh" else "value")
        sv.position.high = s.project.T - 1

    def show_threshold(self, value: float) -> None:
        """The slider at ``value``, its ``value_throttled`` too: the browser sends a release only when it
        differs from the value it holds, so a release at the slider's first value would be lost."""
        slider = self.s.sv.threshold
        with self.s.batch():
            slider.value = value
            if slider.value_throttled != value:
                slider.set_from_json("value_throttled", value)     # read-only for Python, not for the wire

    def threshold_bounds(self) -> tuple[float, float]:
        """The threshold's range for the state's source and scale (never the slider's: a client may send
        any start and end)."""
        s = self.s
        if s.state.scale != "none":
            return threshold_range(s.src.value_range(), s.state.scale)
        (a, b), (c, d) = s.src.value_range(), slider_range(s.engine, s.state.source, "none")
        return min(a, c), max(b, d)

    def recompute_cells(self) -> None:
        """S = cells of the brush (MATCHING.md) plus hand additions minus hand removals."""
        s, st = self.s, self.s.state
        base: list[int] = []
        if st.brush is not None:
            try:
                base = s.engine.select(st.source, st.brush[0], st.brush[1], st.threshold, st.left, st.right,
                                       scale=st.scale).cells
            except ProjectError as exc:
                s.say(str(exc), "error")
        s.base_cells = base
        s.cells = sorted((set(base) | set(st.add)) - set(st.remove))

    def apply(self) -> None:
        """Everything that follows S: n(t), the highlighted traces, the pattern, the brush, the S table."""
        s, sv, st = self.s, self.s.sv, self.s.state
        W, cells = s.window, s.cells
        on = s.engine.on_mask(st.source, st.pos, st.pos + W, st.threshold, st.scale)    # MATCHING.md
        # Without S the strip stays blank rather than showing a row of zeros.
        n = on[:, cells].sum(axis=1).astype(np.float32) if cells else np.full(on.shape[0], np.nan, np.float32)
        sv.counts.data = columns.count_columns(columns.padded(n, W), len(cells), s.word_width >= 16, COUNT_PALETTE)
        mapper = sv.extra["count_mapper"]
        if mapper.high != max(1, len(cells)):          # the n(t) strip's colour bar: 0 .. |S|
            mapper.high = max(1, len(cells))
            sv.count_plot.right[0].ticker.ticks = [0, max(1, len(cells))]
        if s.navigate.dense:
            sv.highlight.args = {"cells": [int(c) for c in cells], "stride": W + 1}
        else:                  # the traces are S's only (receivers.window): trace i is cell cells[i]
            values = s.navigate.values[:, cells] if cells else np.zeros((W, 0), np.float32)
            y = columns.trace_y(columns.padded(values, W))
            if s.navigate.trace_layout == ("S", W, len(cells)):
                sv.traces.data.update(y=y)
            else:
                sv.traces.data = {"x": columns.trace_x(W, len(cells)), "y": y}
                s.navigate.trace_layout = ("S", W, len(cells))
            sv.highlight.args = {"cells": list(range(len(cells))), "stride": W + 1, "map": [int(c) for c in cells]}
        sv.brush_boxes.data = columns.brush_box_columns(st.brush, st.pos, st.left, st.right, BRUSH_COLOR,
                                                        MARGIN_COLOR)
        sv.pattern.data = columns.pattern_columns(st.left, (st.brush[1] - st.brush[0] + 1) if st.brush else 0,
                                                  st.right)
        lo, hi = pattern_x_range(st.left, st.right, s.defaults.select.max_margin)
        if (sv.pattern_plot.x_range.start, sv.pattern_plot.x_range.end) != (lo, hi):
            sv.pattern_plot.x_range.update(start=lo, end=hi)
        # The table last: it is the slowest part to update in the browser, the plots go first.
        sv.selection.selected.indices = []
        sv.selection.data = columns.selection_columns(cells, on[:, cells].sum(axis=0).tolist() if cells else [],
                                                      st.add, s.base_cells)

    def changed(self, message=None) -> None:
        """S changed (brush, threshold, margins, hand edits): update the view and ask for matches.

        ``message`` (a string, or a function of |S|) goes to the status line *first*: in the browser its
        re-layout then happens before the plots' data arrives instead of delaying their repaint.
        """
        self.ready(lambda: self._changed(message))

    def _changed(self, message=None) -> None:
        s = self.s
        with s.batch():
            self.recompute_cells()
            if message is not None:
                s.say(message(len(s.cells)) if callable(message) else message)
            s.sync_url()
            self.apply()
        s.match.request()
        s.unit.refresh()

    def ready(self, then, busy: bool = False) -> None:
        """Run ``then`` (on the lock) once the state's threshold can be applied. A per-cell scale needs the
        source's per-cell statistics and keys (and, for quantile, the table the window is drawn through,
        ``Engine.quantile_table``): a pass over every step (seconds at 10^6 steps), so that runs
        in the session's worker, never on the event loop; ``busy`` says so in the status line meanwhile."""
        s, st = self.s, self.s.state
        if not Threshold(st.threshold, st.scale).scaled:
            then()
            return
        if busy:
            s.say(f"Computing the per-cell {st.scale} of every cell of {s.src.label}…", "busy")
        engine, source, theta, scale = s.engine, st.source, st.threshold, st.scale

        def apply(answer) -> None:
            if isinstance(answer, Exception):
                s.say(failure("Threshold", answer), "error")
            else:
                then()
        def job():
            keys = engine.key_thresholds(source, theta, scale)
            if scale == "quantile":          # the table the window draws quantile units through
                engine.quantile_table(source)
            return keys
        s.worker.submit("threshold", job, apply)

    def cells_text(self, k: int | None = None) -> str:
        k = len(self.s.cells) if k is None else k
        if self.s.state.brush is None and not k:
            return "no brush yet."
        return f"{k} cells selected."

    # --- callbacks: brush, threshold, scale, margins, source -------------------------------------
    def on_selection_geometry(self, event) -> None:
        span = columns.box_span(event)
        if span is not None:
            self.brush(*span)

    def brush(self, x0: float, x1: float) -> None:
        """A brush from window x ``x0`` to ``x1``: the words whose centres it covers form the range."""
        s = self.s
        s.user_acted()
        if x1 < x0:
            x0, x1 = x1, x0
        W = min(s.window, s.project.T - s.state.pos)
        a, b = math.ceil(x0), math.floor(x1)
        if a > b:
            a = b = int(round((x0 + x1) / 2))
        a, b = min(max(a, 0), W - 1), min(max(b, 0), W - 1)
        start, end = s.state.pos + a, s.state.pos + b
        seq_hi = s.project.sequence_of(start)[1]
        note = ""
        if end >= seq_hi:
            end = seq_hi - 1
            note = f" (cut at the sequence boundary at {seq_hi})"
        s.state = s.state.with_(brush=(start, end), add=(), remove=())
        words = ("" if s.locator.genome is not None else " ").join(s.project.tokens(start, min(end + 1, start + 8)))
        where = f"steps {start}–{end}" if s.locator.genome is None else s.locator.span_text(start, end + 1)
        self.changed(lambda k: f"Brushed {where} “{words}{' …' if end - start >= 8 else ''}”"
                               f"{note}: {k} cells selected.")

    def on_threshold(self, value) -> None:
        s = self.s
        if s.quiet or value is None:
            return
        theta, problem = client_number(value, "threshold", *self.threshold_bounds())
        if theta is None:
            s.refuse(problem, lambda: self.show_threshold(s.state.threshold))
            return
        s.user_acted()
        s.state = s.state.with_(threshold=round(theta, 4))
        if problem:
            self.show_threshold(s.state.threshold)
        s.sv.threshold_line.location = s.state.threshold
        prefix = f"{problem}. " if problem else ""
        self.changed(lambda k: f"{prefix}Threshold {s.state.threshold:g}: {self.cells_text(k)}")

    def on_scale(self, value: str) -> None:
        """Threshold the value or a per-cell normalised value; the threshold resets to the new range."""
        s = self.s
        if s.quiet or value == s.state.scale:
            return
        if value not in SCALES:
            s.refuse(f"scale {value!r} is not one of {', '.join(SCALES)}; unchanged",
                     lambda: setattr(s.sv.scale, "value", s.state.scale))
            return
        s.user_acted()
        lo, hi = slider_range(s.engine, s.state.source, value)
        theta = SCALE_DEFAULTS.get(value) or default_threshold((lo, hi), s.defaults)
        s.state = s.state.with_(scale=value, threshold=theta)
        with s.batch():
            self.configure_source()
        self.ready(lambda: self._scale_changed(value, theta), busy=True)

    def _scale_changed(self, value: str, theta: float) -> None:
        """The values are drawn in the new scale's units (z-scores for zscore): the whole window again."""
        s = self.s
        with s.batch():
            self.recompute_cells()
            s.say(f"Threshold on {SCALE_NAMES[value]} (threshold {theta:g}): {self.cells_text()}")
            s.sync_url()
            s.show_window()
        s.match.request()
        s.unit.refresh()

    def on_margins(self) -> None:
        s = self.s
        if s.quiet:
            return
        top = s.defaults.select.max_margin
        margins, problems = {}, []
        for key, spinner in (("left", s.sv.left), ("right", s.sv.right)):
            value, problem = client_number(spinner.value if spinner.value is not None else 0,
                                           f"{key} (off steps)", 0, top, integer=True)
            margins[key] = getattr(s.state, key) if value is None else value
            if problem:
                problems.append(problem)
        if problems:
            with s.batch():
                s.sv.left.value, s.sv.right.value = margins["left"], margins["right"]
            if (margins["left"], margins["right"]) == (s.state.left, s.state.right):
                s.refuse("; ".join(problems))
                return
        s.user_acted()
        s.state = s.state.with_(**margins)
        prefix = f"{'; '.join(problems)}. " if problems else ""
        self.changed(lambda k: f"{prefix}Off-margins L={s.state.left}, R={s.state.right}: {self.cells_text(k)}")

    def on_min_length(self, value) -> None:
        """The shortest match the match view lists (1: single steps count); S is unchanged."""
        s = self.s
        if s.quiet or value is None:
            return
        n, problem = client_number(value, "shortest match", 1, MAX_MIN_LENGTH, integer=True)
        if n is None or (problem and n == s.min_length):
            s.refuse(problem, lambda: setattr(s.sv.min_length, "value", s.min_length))
            return
        s.user_acted()
        s.state = s.state.with_(min_length=None if n == s.defaults.match.min_length else n)
        with s.batch():
            if problem:
                s.sv.min_length.value = n
            s.say(f"{problem + '. ' if problem else ''}Matches of at least {n} step{'s' if n > 1 else ''}.")
            s.sync_url()
        s.match.request()

    def on_pattern_point(self, x: float | None) -> None:
        """A click, or the end of a drag, on the pattern plot at ``x``: left of the brush sets L, right
        of it R, to the off steps between there and the brush (the spinners follow, and S with them)."""
        hit = pattern_margin(float(x), self.s.defaults.select.max_margin) if x is not None else None
        if hit is None:
            return
        side, steps = hit
        spinner = self.s.sv.left if side == "left" else self.s.sv.right
        if int(spinner.value or 0) != steps:
            spinner.value = steps                  # fires on_margins, as a typed value would

    def on_source(self, name: str) -> None:
        s = self.s
        if s.quiet or name == s.state.source:
            return
        if name not in s.project.sources:
            s.refuse(f"source {str(name)[:60]!r} is not in this project; unchanged",
                     lambda: setattr(s.sv.source_select, "value", s.state.source))
            return
        s.user_acted()
        src = s.project.source(name)
        lo, hi = slider_range(s.engine, name, s.state.scale)
        theta = s.state.threshold
        if theta is None or not lo <= theta <= hi:
            theta = default_threshold((lo, hi), s.defaults)
        unit = s.state.unit if s.state.unit is None or s.state.unit < src.D else None
        s.state = s.state.with_(source=name, threshold=theta, add=(), remove=(), unit=unit)
        with s.batch():
            self.configure_source()
        self.ready(self._source_changed, busy=True)

    def _source_changed(self) -> None:
        s = self.s
        with s.batch():
            self.recompute_cells()
            s.say(f"Source {s.src.label}: {self.cells_text()}")
            s.show_window()
            s.sync_url()
        s.match.request()
        s.unit.refresh()

    # --- callbacks: cells edited by hand ---------------------------------------------------------
    def parse_cells(self, text: str) -> list[int] | None:
        D = self.s.src.D
        try:
            cells = [int(c) for c in str(text or "").replace(";", ",").replace(" ", ",").split(",") if c]
        except ValueError:
            self.s.say(f"{text!r}: type cell numbers separated by commas, e.g. 3, 17", "warn")
            return None
        bad = [c for c in cells if not 0 <= c < D]
        if bad:
            self.s.say(f"cell {bad[0]} is out of range [0, {D})", "warn")
            return None
        return cells

    def on_add_cells(self, text: str) -> None:
        s = self.s
        s.user_acted()
        cells = self.parse_cells(text)
        if not cells:
            if cells == []:
                s.say("Type the cells to add, e.g. 3, 17.", "warn")
            return
        add = set(s.state.add) | (set(cells) - set(s.base_cells))
        remove = set(s.state.remove) - set(cells)
        s.state = s.state.with_(add=tuple(sorted(add)), remove=tuple(sorted(remove)))
        s.sv.cell_input.value = ""
        self.changed(lambda k: f"Added cell(s) {', '.join(map(str, cells))}: {k} cells in S.")

    def on_remove_cells(self, text: str) -> None:
        s = self.s
        s.user_acted()
        ticked = [s.cells[i] for i in s.sv.selection.selected.indices if 0 <= i < len(s.cells)]
        typed = self.parse_cells(text) if str(text or "").strip() else []
        if typed is None:
            return
        cells = sorted(set(ticked) | set(typed))
        if not cells:
            s.say("Tick rows of the table (or type cells) to remove them from S.", "warn")
            return
        remove = set(s.state.remove) | (set(cells) & set(s.base_cells))
        add = set(s.state.add) - set(cells)
        s.state = s.state.with_(add=tuple(sorted(add)), remove=tuple(sorted(remove)))
        s.sv.cell_input.value = ""
        self.changed(lambda k: f"Removed cell(s) {', '.join(map(str, cells))}: {k} cells in S.")

    def on_reset_cells(self) -> None:
        self.s.user_acted()
        self.s.state = self.s.state.with_(add=(), remove=())
        self.changed(lambda k: f"Hand edits undone: {k} cells in S.")
