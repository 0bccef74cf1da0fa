"""The match view: ask for the top matches of S (in the session's worker, off the document lock), show
them (word matrix, heatmaps, the summaries under the matrix), colour the words, and go to a clicked row."""

from __future__ import annotations

import time

from bokeh_app import columns, queries
from bokeh_app.queries import MatchJob, MatchMatrix, MatchResult
from bokeh_app.views.common import COUNT_PALETTE, SCALAR_PALETTE
from bokeh_app.views.match import COUNT_HEATMAP, NO_COLOUR
from bokeh_app.worker import failure

#: The match view's update is sent at least this long after the select view's (seconds).
MATCH_AFTER_SELECT_S = 0.15


class MatchReceiver:
    def __init__(self, session):
        self.s = session
        self.matches: list = []                                # the shown matches, rank order

    def connect(self) -> None:
        mv = self.s.mv
        mv.matches.selected.on_change("indices", lambda attr, old, new: self.on_pick(new))
        mv.colour.on_change("value", lambda attr, old, new: self.apply_colour())

    # --- asking ----------------------------------------------------------------------------------
    def job(self, generation: int | None = None) -> MatchJob:
        """The match query of the current state (of the worker's current generation by default)."""
        s, st = self.s, self.s.state
        generation = s.worker.generation("match") if generation is None else generation
        return MatchJob(generation, st.source, tuple(s.cells), float(st.threshold), st.left, st.right,
                        tuple(s.shown_tracks), s.last_note, time.monotonic(), scale=st.scale,
                        stats=s.stats_choice(), min_length=s.min_length)

    def request(self) -> None:
        """Ask for the matches of the current S; a newer request supersedes this one."""
        s = self.s
        job = self.job(s.worker.renew("match"))
        if not job.cells:
            self.show(job, None)
        else:
            s.mv.busy.visible = True
            s.worker.submit("match", lambda: self.compute(job), lambda answer: self.show(job, answer),
                            generation=job.generation, delay=MATCH_AFTER_SELECT_S)
        s.overview.request()                         # the overview strip's n(t) follows S (after the match)

    def compute(self, job: MatchJob) -> MatchResult:
        """The engine's exact top-N and the word matrix around each match (runs in the worker)."""
        return queries.match_answer(self.s.engine, job, self.s.defaults.match)

    # --- showing ---------------------------------------------------------------------------------
    def show(self, job: MatchJob, result) -> None:
        """Apply a match result, an error, or ``None`` (no S: clear the view); stale results are dropped."""
        s = self.s
        if not s.worker.is_current("match", job.generation):
            return
        with s.batch():
            try:
                if isinstance(result, MatchResult):
                    self._show_result(job, result)
                else:
                    self._show_failure(result)
            finally:
                s.mv.busy.visible = False            # last: hidden in the same repaint as the rows
        s.overview.draw()                            # the matches' cover in the overview strip

    def _show_failure(self, error) -> None:
        self.clear()
        if error is None:
            self.s.mv.words.data = columns.matrix_columns(
                summary="No cells selected: brush a range of words in the select view.")
        else:
            self.s.say(failure("Match", error), "error")

    def _show_result(self, job: MatchJob, result: MatchResult) -> None:
        s, mv, md = self.s, self.s.mv, self.s.defaults.match
        ms = self.matches = result.matches
        found = (f"{len(ms)} matches in {result.total_ms:.0f} ms (engine {result.engine_ms:.0f} ms, "
                 f"{s.engine.backend.name}).")
        s.say(f"{job.note} · {found}" if job.note else f"{len(job.cells)} cells in S · {found}")
        # Heatmaps first, the word matrix (two sources of one plot) last: one repaint of the matrix.
        for name, hm in mv.heatmaps.items():
            if name in result.matrix.heatmaps:
                if name == COUNT_HEATMAP or s.project.meta[name].kind != "discrete":
                    hm.mapper.update(low=result.matrix.lows[name], high=result.matrix.highs[name])
                hm.source.data = columns.image_columns(columns.padded(result.matrix.heatmaps[name], md.top))
        self.show_summaries(result.matrix)
        self.apply_colour()
        mv.matches.selected.indices = []
        mv.matches.data = columns.match_rows(ms, md.context_left, md.columns, s.locator.where)
        summary = (f"{len(ms)} matches of {len(job.cells)} cells · threshold {job.threshold:g}, "
                   f"L={job.left}, R={job.right} · click a row to show it above")
        if s.locator.genome is None:
            labels, header = [result.matrix.row_labels[i] for i in range(len(ms))], columns.ROW_HEADER
        else:                                        # a genome's rows: their coordinates
            labels = [columns.genome_row_label(i, m, s.locator.where(m.start)) for i, m in enumerate(ms)]
            header = columns.GENOME_ROW_HEADER
        mv.words.data = columns.matrix_columns(result.matrix.words, labels, summary, header)
        if s.stats is not None:
            s.stats.after_match(job, result.stats)

    def clear(self) -> None:
        s, mv, md = self.s, self.s.mv, self.s.defaults.match
        self.matches = []
        mv.matches.data = columns.empty(mv.matches.data)
        mv.words.data = columns.matrix_columns()
        for hm in mv.heatmaps.values():
            hm.source.data = columns.empty_image(md.top, md.columns)
        self.show_summaries(None)
        self.apply_colour()
        if s.stats is not None:
            s.stats.update()

    def show_summaries(self, matrix: MatchMatrix | None) -> None:
        """The heatmaps under the word matrix: n(t) and each shown track, summarised per column."""
        s, mv, md = self.s, self.s.mv, self.s.defaults.match
        summaries = matrix.summaries if matrix is not None else {}
        cells, names = columns.column_rows(summaries, matrix.lows if matrix else {}, matrix.highs if matrix else {},
                                           md.context_left, md.word_px, COUNT_PALETTE, SCALAR_PALETTE)
        mv.columns.data = cells
        mv.column_labels.data = names
        rows = len(summaries) or 1 + len(s.shown_tracks)
        if mv.column_plot.y_range.start != rows - 0.5:        # tracks shown or hidden: resize
            mv.column_plot.y_range.start = rows - 0.5
            mv.column_plot.frame_height = rows * md.row_px

    def show_tracks(self) -> None:
        """The heatmaps and colour choices of the shown tracks (n(t) always)."""
        s, mv = self.s, self.s.mv
        shown = set(s.shown_tracks)
        for name, hm in mv.heatmaps.items():
            hm.plot.visible = name == COUNT_HEATMAP or name in shown
        options = [NO_COLOUR, COUNT_HEATMAP] + list(s.shown_tracks)
        mv.colour.options = options
        if mv.colour.value not in options:
            mv.colour.value = NO_COLOUR

    def apply_colour(self) -> None:
        """The word matrix's backgrounds take the chosen heatmap's colours (or none)."""
        mv = self.s.mv
        hm = mv.heatmaps.get(mv.colour.value)
        if hm is None or mv.colour.value == NO_COLOUR:
            mv.background_renderer.visible = False
            return
        mv.background.data = dict(hm.source.data)
        mv.background_renderer.glyph.color_mapper = hm.mapper
        mv.background_renderer.visible = True

    def on_pick(self, indices: list[int]) -> None:
        s = self.s
        if s.quiet or not indices or not 0 <= indices[0] < len(self.matches):
            return
        i = indices[0]
        m = self.matches[i]
        s.go(m.start - s.window // 4, focus=(m.start, m.end),
             message=f"Match #{i + 1}: {s.locator.span_text(m.start, m.end + 1)} (length {m.length}, inter {m.inter}, "
                     f"union {m.union}), marked in orange above.")
        with s.batch():
            s.mv.matches.selected.indices = []
