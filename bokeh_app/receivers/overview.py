"""The overview strip (issue 15): its bands computed in the session's worker whenever S, the contig or
the overview track changes, the matches' cover redrawn when a match answer arrives, the detail window
followed; a click centres the detail view, a brush zooms it (word width and position), "go to" takes a
coordinate, range, contig or step."""

from __future__ import annotations

import numpy as np
from bokeh.events import SelectionGeometry, Tap

from bokeh_app.columns import box_span
from bokeh_app.overview import (Span, bin_edges, count_overview, counted_bins, match_density, overview_columns,
                                track_overview, zoom_for)
from bokeh_app.views.overview import NO_TRACK
from bokeh_app.worker import failure
from gpu_matcher import ProjectError

KEEP = "keep"           # a band the job did not recompute


class OverviewReceiver:
    def __init__(self, session):
        self.s = session
        self.span: Span | None = None
        self.edges = np.zeros(0, np.int64)
        self.counts = None                       # (lo, hi) per bin of n(t), or None
        self.track = None                        # (lo, hi) per bin of the overview track, or None
        self._count_key = None
        self._track_key = None
        self._chosen = False                     # the user picked the overview track (maybe none)

    def connect(self) -> None:
        ov = self.s.ov
        ov.plot.on_event(Tap, lambda event: self.on_tap(event.x))
        ov.plot.on_event(SelectionGeometry, self.on_selection_geometry)
        ov.track.on_change("value", lambda attr, old, new: self.on_track(new))
        ov.goto.on_change("value", lambda attr, old, new: self.on_goto(new))

    # --- computing -------------------------------------------------------------------------------
    def track_name(self) -> str | None:
        name = self.s.ov.track.value
        return name if name in self.s.project.meta else None

    def request(self) -> None:
        """Recompute the bands that are stale (n(t) of S, the track) for the contig of ``state.pos``, in
        the worker; the matches' cover is drawn from the shown matches."""
        s, st = self.s, self.s.state
        start, stop, name = s.locator.contig(st.pos)
        span = Span(start, stop, name)
        bins = s.defaults.select.window_px
        edges = bin_edges(start, stop, bins)
        cells = tuple(s.cells)
        counted = counted_bins(edges, s.engine.overview_row_cost(st.source, st.scale), st.pos)
        ckey = (st.source, cells, st.threshold, st.scale, span, counted)
        track = self.track_name()
        tkey = (track, span)
        need_counts, need_track = ckey != self._count_key, tkey != self._track_key
        if not need_counts and not need_track:
            self.draw()
            return
        engine, source, theta, scale = s.engine, st.source, st.threshold, st.scale
        meta = s.project.meta.get(track) if track else None

        def job():
            counts = KEEP
            if need_counts:
                counts = count_overview(engine, source, cells, theta, scale, edges, counted) if cells else None
            values = KEEP
            if need_track:
                values = track_overview(meta, span, bins) if meta is not None else None
            return counts, values
        s.worker.submit("overview", job, lambda answer: self.computed(span, ckey, tkey, answer))

    def computed(self, span: Span, ckey, tkey, answer) -> None:
        s = self.s
        if isinstance(answer, Exception):
            s.say(failure("Overview", answer), "error")
            return
        counts, values = answer
        if span != self.span:
            self.span, self.edges = span, bin_edges(span.start, span.stop, s.defaults.select.window_px)
        if counts is not KEEP:
            self.counts, self._count_key = counts, ckey
        if values is not KEEP:
            self.track, self._track_key = values, tkey
        self.draw()

    # --- drawing ---------------------------------------------------------------------------------
    def draw(self) -> None:
        """The bands (the matches' cover from the match view's current list) and the detail window."""
        s, ov, span = self.s, self.s.ov, self.span
        if span is None:
            return
        name = self.track_name()
        meta = s.project.meta.get(name) if name else None
        ov.source.data = overview_columns(self.edges, self.origin, self.counts, len(s.cells), self.track,
                                          meta.value_range if meta is not None else None,
                                          match_density(s.match.matches, self.edges))
        lo, hi = self.x_of(span.start) - 0.5, self.x_of(span.stop) - 0.5
        if (ov.plot.x_range.start, ov.plot.x_range.end) != (lo, hi):
            ov.plot.x_range.update(start=lo, end=hi)
            ov.bars.glyph.width = self.per
        if ov.plot.title.text != self.title():
            ov.plot.title.text = self.title()
        self.follow()

    def title(self) -> str:
        s, span = self.s, self.span
        text = (f"overview of {span.name}: {span.stop - span.start:,} "
                f"{'bases' if s.locator.genome is not None else 'steps'} · click to go there, brush to zoom")
        if self._count_key is not None and self.counts is not None:
            i0, i1 = self._count_key[-1]
            if (i0, i1) != (0, len(self.edges) - 1):
                text += f" · n(t) over {s.locator.span_text(int(self.edges[i0]), int(self.edges[i1]))} only"
        return text

    @property
    def per(self) -> float:
        """Steps per bin."""
        return (self.span.stop - self.span.start) / max(1, len(self.edges) - 1) if self.span else 1.0

    @property
    def origin(self) -> int:
        """x = step - origin: positions from 1 within a genome's contig, global steps otherwise."""
        return self.span.start - (1 if self.s.locator.genome is not None else 0)

    def x_of(self, step: float) -> float:
        return float(step) - self.origin

    def step_of(self, x: float) -> int:
        return int(min(max(round(float(x) + self.origin), self.span.start), self.span.stop - 1))

    def follow(self) -> None:
        """The detail window's box (at least a bin wide, so it shows); a move into another contig
        recomputes the strip."""
        s, st = self.s, self.s.state
        if self.span is None:
            return
        if not self.span.start <= st.pos < self.span.stop or self.counted_elsewhere():
            self.request()
            return
        a, b = self.x_of(st.pos) - 0.5, self.x_of(min(st.pos + s.window, s.project.T)) - 0.5
        middle, half = (a + b) / 2, max(self.per / 2, (b - a) / 2)
        s.ov.window.update(left=middle - half, right=middle + half)

    def counted_elsewhere(self) -> bool:
        """n(t) was computed for a part of the contig (``counted_bins``) that the detail view has left."""
        if self._count_key is None or self.counts is None:
            return False
        i0, i1 = self._count_key[-1]
        return not self.edges[i0] <= self.s.state.pos < self.edges[i1]

    def show_tracks(self) -> None:
        """The overview track's choices: the shown discrete and scalar tracks."""
        s, ov = self.s, self.s.ov
        options = [NO_TRACK] + [n for n in s.shown_tracks if s.project.meta[n].kind != "wordvec"]
        with s.batch():
            ov.track.options = options
            if ov.track.value not in options or (ov.track.value == NO_TRACK and not self._chosen):
                ov.track.value = options[1] if len(options) > 1 else NO_TRACK

    # --- callbacks -------------------------------------------------------------------------------
    def on_track(self, name) -> None:
        s = self.s
        if s.quiet:
            return
        if name != NO_TRACK and name not in s.project.meta:
            s.refuse(f"overview track {str(name)[:60]!r} is not a meta track of this project; unchanged",
                     lambda: setattr(s.ov.track, "value", NO_TRACK))
            return
        s.user_acted()
        self._chosen = True
        self.request()

    def on_tap(self, x) -> None:
        s = self.s
        if x is None or not np.isfinite(x):
            return
        if self.span is None:
            return
        step = self.step_of(x)
        s.go(step - s.window // 2, message=f"Overview: centred on {s.locator.where(step)}.")

    def on_selection_geometry(self, event) -> None:
        span = box_span(event)
        if span is not None:
            self.zoom_to(*span)

    def zoom_to(self, x0: float, x1: float) -> None:
        """Show steps ``x0``..``x1`` in the detail view: the widest word width that holds them all."""
        s = self.s
        if x1 < x0:
            x0, x1 = x1, x0
        if self.span is None:
            return
        a = self.step_of(x0)
        b = max(a, self.step_of(x1))
        self.show_range(a, b + 1, f"Overview: zoomed to {s.locator.span_text(a, b + 1)}")

    def on_goto(self, text) -> None:
        s = self.s
        if s.quiet or not str(text or "").strip():
            return
        try:
            start, stop = s.locator.parse(text)
        except ProjectError as exc:
            s.refuse(str(exc))
            return
        self.show_range(start, stop, f"Go to {s.locator.span_text(start, stop)}")

    def show_range(self, start: int, stop: int, message: str) -> None:
        """The detail view over ``[start, stop)``: zoomed out as far as it needs (to one pixel per step),
        the range centred, a short one marked."""
        s = self.s
        s.user_acted()
        offered = s.defaults.select.word_widths
        ww = s.word_width if stop - start <= s.window else zoom_for(stop - start, s.defaults.select.window_px,
                                                                      offered)
        s.state = s.state.with_(word_width=ww)
        W = s.window
        pos = s.clamp_pos(start - max(0, (W - (stop - start)) // 2) if stop - start < W else start)
        more = "" if stop - start <= W else f" (its first {W:,} steps)"
        with s.batch():
            s.say(f"{message}{more}; word width {ww} px.")
            s.state = s.state.with_(pos=pos)
            s.sv.word_width.value = str(ww)
            s.show_window()
            s.sync_url()
            s.sv.focus_box.update(left=start - pos - 0.5, right=min(stop, pos + W) - pos - 0.5,
                                  visible=stop - start < W)          # a range filling the window: no mark
