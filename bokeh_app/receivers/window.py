"""The select view's window: values, words, sequence boundaries and meta tracks at ``state.pos``, and
moving it (back, forward, go to step, word width, shown tracks)."""

from __future__ import annotations

import numpy as np

from bokeh_app import columns, queries
from bokeh_app.state import client_number
from bokeh_app.views.common import SCALAR_PALETTE
from bokeh_app.views.select import add_envelope, label_orientation


class WindowReceiver:
    def __init__(self, session):
        self.s = session
        self.trace_layout: tuple | None = None    # ("all", W, D) or ("S", W, |S|): the sent trace x column
        self._y_key: tuple | None = None                      # (source, drawn scale) of the y range shown
        self._y: tuple[float, float] = (-1.0, 1.0)
        self.values = np.zeros((0, 0), np.float32)            # the window's values as drawn (W, D)
        self._shown_width: int | None = None                   # W of the x range and ticks shown

    @property
    def dense(self) -> bool:
        """Every cell's trace is sent (else S's only, over the band of all cells: ``TRACE_VERTICES``)."""
        return self.s.window * self.s.src.D <= columns.TRACE_VERTICES

    def connect(self) -> None:
        s, sv = self.s, self.s.sv
        sv.back.on_click(lambda: self.go(s.state.pos - s.window))
        sv.forward.on_click(lambda: self.go(s.state.pos + s.window))
        sv.position.on_change("value", lambda attr, old, new: self.go(new, user=True))
        sv.word_width.on_change("value", lambda attr, old, new: self.on_word_width(new))

    # --- showing the window ----------------------------------------------------------------------
    def apply(self) -> None:
        """Values, words, boundaries and tracks for the window at ``state.pos``."""
        s, sv, st = self.s, self.s.sv, self.s.state
        W = s.window
        start, stop = st.pos, st.pos + W
        ctx = s.engine.context(st.source, start, stop, cells=(), threshold=st.threshold, meta=s.shown_tracks,
                               scale=st.scale)
        D = ctx.values.shape[1]
        values = ctx.values
        if st.scale == "zscore":          # drawn in the threshold's units: the line is θ itself
            params = s.engine.cell_scale(st.source, st.scale)
            values = columns.scaled_values(values, params.center, params.spread).astype(np.float32)
        elif st.scale == "quantile":      # quantile units through the engine's table (receivers.select.ready
            # computed it in the worker); the drawn position is interpolated (< 1/1024), on/off stays exact
            values = s.engine.quantile_units(st.source, start, stop).astype(np.float32)
        lo, hi = self.y_range()
        self.values = values                           # as drawn: a click on a trace finds its cell
        sv.clipped.data = columns.clipped_columns(values, lo, hi)
        if not self.dense:           # too many vertices (a wide window of a wide source): S's traces only
            if "envelope" not in sv.extra:
                sv.extra["envelope"] = add_envelope(sv.plot)
            sv.extra["envelope"].data = columns.envelope_columns(columns.padded(values, W))
            if self.trace_layout is not None and self.trace_layout[0] != "S":
                self.trace_layout = None              # (receivers.select.apply sends S's traces)
        elif self.trace_layout != ("all", W, D):
            sv.traces.data = {"x": columns.trace_x(W, D), "y": columns.trace_y(columns.padded(values, W))}
            if "envelope" in sv.extra:
                sv.extra["envelope"].data = columns.envelope_columns(np.zeros((0, 0)))
        else:
            sv.traces.data.update(y=columns.trace_y(columns.padded(values, W)))
        if self._shown_width != W:
            self._shown_width = W
            sv.x_range.update(start=-0.5, end=W - 0.5)
            sv.plot.xaxis.ticker.ticks = list(range(W))
            angle, size = label_orientation(s.word_width)
            sv.plot.xaxis.major_label_orientation = angle
            sv.plot.xaxis.major_label_text_font_size = size
        if self.dense:
            self.trace_layout = ("all", W, D)
        if s.word_width < columns.LABEL_MIN_PX:       # no room for words: positions every so many steps
            ticks = columns.position_ticks(start, W, s.word_width)
            sv.plot.xaxis.ticker.ticks = ticks
            sv.plot.xaxis.major_label_orientation = 0.0
            sv.plot.xaxis.major_label_overrides = {i: s.locator.tick(start + i) for i in ticks}
        else:
            sv.plot.xaxis.major_label_overrides = columns.word_labels(ctx.words, s.word_width if s.word_width >= 48
                                                                      else 90)
        sv.boundaries.data = columns.boundary_columns(s.project.sequence_bounds(), start, stop)
        room = max(s.word_width, 16)
        for name in s.shown_tracks:
            track = s.project.meta[name]
            sv.tracks[name].source.data = columns.track_columns(
                track.kind, ctx.meta[name], W, room, track.label, weights=ctx.meta_weights.get(name),
                value_range=track.value_range, palette=SCALAR_PALETTE, labels=s.word_width >= columns.LABEL_MIN_PX)
            mapper = sv.tracks[name].mapper
            if mapper is not None:
                lo, hi = columns.scalar_bounds(ctx.meta[name][:W], track.value_range)
                if (mapper.low, mapper.high) != (lo, hi):
                    mapper.update(low=lo, high=hi)
        with s.batch():
            sv.position.value = st.pos
        self.update_title()

    def y_range(self) -> tuple[float, float]:
        """The value axis for the state's source and scale, set when it changes: ``tanh`` values keep their
        natural range, quantiles [0, 1]; unbounded values and z-scores a robust one (receivers.select.ready
        has computed a per-cell scale's statistics by now)."""
        s, st = self.s, self.s.state
        key = (st.source, st.scale)
        if self._y_key != key:
            if st.scale == "quantile":
                lo, hi = -0.04, 1.04
            elif s.src.transform == "tanh" and st.scale != "zscore":
                lo, hi = s.src.value_range()
                pad = 0.04 * (hi - lo)
                lo, hi = lo - pad, hi + pad
            else:
                lo, hi = queries.display_range(s.engine, st.source, st.scale)
            s.sv.plot.y_range.update(start=lo, end=hi)
            self._y_key, self._y = key, (lo, hi)
        return self._y

    def update_title(self) -> None:
        s, st = self.s, self.s.state
        stop = min(st.pos + s.window, s.project.T)
        seq_lo, seq_hi = s.project.sequence_of(st.pos)
        # The title follows the window only: a title change re-lays out the plot (a full repaint).
        if s.locator.genome is not None:
            s.sv.plot.title.text = (f"{s.locator.span_text(st.pos, stop)} ({stop - st.pos:,} bases) · "
                                    f"{s.src.label} · D = {s.src.D}")
            return
        s.sv.plot.title.text = (f"steps {st.pos:,}–{stop - 1:,} of {s.project.T:,} · sequence "
                                f"{seq_lo:,}–{seq_hi - 1:,} · {s.src.label} · D = {s.src.D}")

    # --- callbacks -------------------------------------------------------------------------------
    def go(self, pos, user: bool = False, focus: tuple[int, int] | None = None,
           message: str | None = None) -> None:
        """Move the window to start at ``pos`` (clamped); ``focus`` marks a range (a match, a hit)."""
        s = self.s
        if pos is None or (user and s.quiet):
            return
        if user:
            step, problem = client_number(pos, "step", 0, s.project.T - 1, integer=True)
            if step is None:
                s.refuse(problem, lambda: setattr(s.sv.position, "value", s.state.pos))
                return
            if problem:
                message = problem
            pos = step
        pos = s.clamp_pos(int(pos))
        if user and pos == s.state.pos:
            if s.sv.position.value != pos:
                s.refuse(message or f"Steps {pos:,}–{min(pos + s.window, s.project.T) - 1:,}.",
                         lambda: setattr(s.sv.position, "value", pos))
            return
        s.user_acted()
        with s.batch():
            span = s.locator.span_text(pos, min(pos + s.window, s.project.T))
            s.say(message or f"{span[0].upper()}{span[1:]}.")
            if pos != s.state.pos:
                s.state = s.state.with_(pos=pos)
                s.show_window()
                s.sync_url()
            if focus is not None:
                s.sv.focus_box.update(left=focus[0] - pos - 0.5, right=focus[1] - pos + 0.5, visible=True)
            else:
                s.sv.focus_box.visible = False

    def on_word_width(self, value) -> None:
        s = self.s
        if s.quiet:
            return
        offered = s.defaults.select.word_widths
        try:
            ww = int(value)
        except (TypeError, ValueError):
            ww = None
        if ww not in offered:
            s.refuse(f"word width {str(value)[:20]!r} is not one of {', '.join(map(str, offered))} px; unchanged",
                     lambda: setattr(s.sv.word_width, "value", str(s.word_width)))
            return
        s.user_acted()
        s.state = s.state.with_(word_width=ww)
        with s.batch():
            s.say(f"Word width {ww} px: {s.window} steps in view.")
            s.state = s.state.with_(pos=s.clamp_pos(s.state.pos))
            s.show_window()
            s.sync_url()
