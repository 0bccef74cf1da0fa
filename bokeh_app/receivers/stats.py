"""The hypothesis panel (``gpu_matcher.stats``, ``gpu_matcher.hypotheses``): enrichment of the shown
matches, "at least m of the k cells of S on" as a detector of a label (over thresholds and over m; the
best-F1 threshold in one click), suggested cells, the phrase map and the comparison of two sources.
Every number is computed in the session's worker, off the lock (with the match when it can be)."""

from __future__ import annotations

import html

from bokeh_app import columns, queries
from bokeh_app.queries import MatchJob, PhraseMap, StatsAnswer
from bokeh_app.state import client_number
from bokeh_app.views.stats import DEPLETED, ENRICHED
from bokeh_app.worker import failure
from gpu_matcher import stats as hypothesis

class StatsReceiver:
    def __init__(self, session):
        self.s = session
        self.best_threshold: float | None = None
        self.suggested: list[int] = []
        self.phrase_rows: list[tuple[int, int]] = []
        self.track = session.stv.track.value            # the panel's track as the server accepted it

    def connect(self) -> None:
        s, stv = self.s, self.s.stv
        stv.track.on_change("value", lambda attr, old, new: self.on_track(new))
        stv.label.on_change("value", lambda attr, old, new: self.on_label(new, old))
        stv.apply_best.on_click(self.on_apply_best)
        stv.atleast.on_change("value", lambda attr, old, new: self.on_atleast(new))
        stv.suggest.on_click(self.on_suggest)
        stv.add_suggested.on_click(lambda: s.select.on_add_cells(",".join(str(c) for c in self.suggested[:5])))
        stv.phrase_map.on_click(self.on_phrase_map)
        stv.compare.on_click(self.on_compare)
        stv.phrases.selected.on_change("indices", lambda attr, old, new: self.on_phrase_pick(new))

    # --- enrichment and detector -----------------------------------------------------------------
    def update(self) -> None:
        """Enrichment of the shown matches and S as a detector of the chosen label (exact counts), in the
        session's worker: the m-of-k grid reads k cell rows of the whole corpus."""
        s, st = self.s, self.s.state
        engine, matches, cells, choice = s.engine, list(s.match.matches), list(s.cells), s.stats_choice()
        s.worker.submit("stats", lambda: queries.stats_answer(engine, st.source, matches, cells, st.threshold,
                                                              st.scale, *choice), self.show)

    def show(self, answer) -> None:
        if isinstance(answer, Exception):
            self.s.stv.detector.text = html.escape(failure("The detector", answer))
            return
        self.apply(answer)

    def after_match(self, job: MatchJob, answer: StatsAnswer | None) -> None:
        """A match arrived: its numbers were computed with it, unless the panel's choice changed since."""
        if answer is not None and answer.track and job.stats == self.s.stats_choice():
            self.s.worker.renew("stats")                # an older panel-only answer must not follow it
            self.apply(answer)
        else:
            self.update()

    def apply(self, answer: StatsAnswer) -> None:
        s, stv = self.s, self.s.stv
        with s.batch():                                 # k is S's size: the spinner's range follows it
            stv.atleast.update(high=max(1, answer.cells), value=max(1, answer.m), disabled=answer.cells < 2)
        over_m = answer.over_m if answer.now is not None else []
        stv.m_curve.data = columns.m_curve_columns(over_m)
        stv.best_m.data = columns.best_m_columns(answer.best_m if over_m else None)
        stv.m_curve_plot.x_range.update(start=0.5, end=max(1, answer.cells) + 0.5)
        # The first row on top (a categorical y axis lists its factors bottom up).
        stv.enrichment_plot.y_range.factors = [r.label for r in reversed(answer.enrichment)]
        stv.enrichment.data = columns.enrichment_columns(answer.enrichment, ENRICHED, DEPLETED)
        best = answer.best if answer.now is not None else None
        self.best_threshold = best.threshold if best is not None else None
        stv.apply_best.disabled = best is None
        stv.curve.data = columns.curve_columns(answer.points if answer.now is not None else [])
        slider = self.s.sv.threshold                            # the data's robust range
        if (stv.curve_plot.x_range.start, stv.curve_plot.x_range.end) != (slider.start, slider.end):
            stv.curve_plot.x_range.update(start=slider.start, end=slider.end)
        stv.best.data = columns.best_columns(best)
        if best is not None:
            stv.apply_best.label = f"apply the best-F1 threshold ({best.threshold:g}, F1 {best.f1:.3f})"
        stv.detector.text = self.detector_text(answer)

    @staticmethod
    def detector_text(answer: StatsAnswer) -> str:
        now = answer.now
        if now is None:
            return html.escape(answer.error) if answer.error else "S as a detector: select cells first."
        rule = (f"{answer.cells} cells all on" if answer.m == answer.cells
                else f"at least {answer.m} of {answer.cells} cells on")
        best = answer.best_m
        at_best = "" if best is None or best.m == answer.m else \
            f" · at this threshold the best m is {best.m} (F1 {best.detection.f1:.3f})"
        return (f"<b>{rule}</b> &rArr; {html.escape(answer.track)} = "
                f"{html.escape(answer.label)} at threshold {answer.threshold:g}: precision "
                f"<b>{now.precision:.3f}</b> ({now.true_positives:,}/{now.predicted:,}), recall "
                f"<b>{now.recall:.3f}</b> ({now.true_positives:,}/{now.positives:,}), F1 <b>{now.f1:.3f}</b>{at_best}")

    def on_track(self, name: str) -> None:
        s = self.s
        if s.quiet:
            return
        if name not in s.project.meta or s.project.meta[name].kind != "discrete":
            s.refuse(f"track {str(name)[:60]!r} is not a discrete meta track of this project; unchanged",
                     lambda: setattr(s.stv.track, "value", self.track))
            return
        self.track = name
        labels = queries.track_labels(s.engine, name)
        with s.batch():
            s.stv.label.options = labels
            s.stv.label.value = labels[-1] if labels else ""
        self.update()

    def on_label(self, label: str, old: str) -> None:
        s = self.s
        if s.quiet:
            return
        if label not in s.stv.label.options:
            s.refuse(f"label {str(label)[:60]!r} is not a label of {self.track}; unchanged",
                     lambda: setattr(s.stv.label, "value", old if old in s.stv.label.options else ""))
            return
        self.update()

    def on_atleast(self, value) -> None:
        """The detector's m: at least m of the k cells of S on (k: every cell); S and the matches stay."""
        s = self.s
        if s.quiet or value is None:
            return
        k = len(set(s.cells))
        current = queries.chosen_m(s.state.atleast, k) if k else 1
        m, problem = client_number(value, "at least m", 1, max(1, k), integer=True)
        if m is None or (problem and m == current):
            s.refuse(problem, lambda: setattr(s.stv.atleast, "value", current))
            return
        s.user_acted()
        s.state = s.state.with_(atleast=None if m >= k else m)   # k: follows S as it grows
        with s.batch():
            if problem:
                s.stv.atleast.value = m
            s.say(f"{problem + '. ' if problem else ''}Detector: at least {m} of the {k} cells of S on.")
            s.sync_url()
        self.update()

    def on_apply_best(self) -> None:
        if self.best_threshold is None:
            return
        value = self.best_threshold
        self.s.select.show_threshold(value)
        self.s.select.on_threshold(value)

    # --- long jobs: suggest, phrase map, compare ---------------------------------------------------
    def on_suggest(self) -> None:
        s, st, stv = self.s, self.s.state, self.s.stv
        engine = s.engine
        if st.brush is not None:
            target = f"the brush [{st.brush[0]:,}, {st.brush[1]:,}]"
            where = dict(start=st.brush[0], end=st.brush[1])
        else:
            target = f"{stv.track.value} = {stv.label.value}"
            where = dict(track=stv.track.value, label=stv.label.value)
        s.say(f"Ranking the cells that separate {target}…", "busy")
        s.worker.submit("suggest", lambda: hypothesis.suggest_cells(engine, st.source, st.threshold, **where,
                                                                    scale=st.scale),
                        lambda ranked: self.show_suggestions(target, ranked))

    def show_suggestions(self, target: str, ranked) -> None:
        s, stv = self.s, self.s.stv
        if isinstance(ranked, Exception):
            s.say(failure("Suggest", ranked), "error")
            return
        self.suggested = [r.cell for r in ranked]
        stv.suggestions.data = columns.suggestion_columns(ranked)
        stv.add_suggested.disabled = not ranked
        s.say(f"Cells that best separate {target} from the rest (on-rate inside minus outside): "
              f"{', '.join(str(c) for c in self.suggested[:5])}.")

    def on_phrase_map(self) -> None:
        """Fig. 9: S of every span of the chosen track's labels, PCA, a scatter coloured by label."""
        s, st = self.s, self.s.state
        engine, track = s.engine, s.stv.track.value
        s.stv.phrase_info.text = f"Computing the phrase map of <b>{html.escape(track)}</b>…"
        s.worker.submit("phrase_map", lambda: queries.phrase_map(engine, st.source, track, st.threshold, st.left,
                                                                 st.right, st.scale),
                        lambda pm: self.show_phrase_map(track, st.threshold, pm))

    def show_phrase_map(self, track: str, threshold: float, pm: PhraseMap) -> None:
        s, stv = self.s, self.s.stv
        if isinstance(pm, Exception):
            stv.phrase_info.text = html.escape(failure("Phrase map", pm))
            return
        with s.batch():
            stv.phrases.selected.indices = []
            stv.phrases.data = columns.phrase_columns(pm.coords, pm.values, s.project.meta[track].label, pm.texts,
                                                      pm.starts, pm.ends)
        self.phrase_rows = list(zip(stv.phrases.data["start"], stv.phrases.data["end"]))
        drawn = pm.shown.size
        explained = ", ".join(f"{100 * e:.1f}%" for e in pm.explained)
        stv.phrase_info.text = (f"{pm.spans:,} spans of <b>{html.escape(track)}</b> at threshold {threshold:g}"
                                f"{'' if pm.spans == drawn else f' ({drawn:,} drawn)'}; PCA explains "
                                f"{explained} of the variance; {pm.ms:.0f} ms.")

    def on_phrase_pick(self, indices: list[int]) -> None:
        if self.s.quiet or not indices or not 0 <= indices[0] < len(self.phrase_rows):
            return
        a, b = self.phrase_rows[indices[0]]
        self.s.go(a - self.s.window // 4, focus=(a, b), message=f"Span {a:,}–{b:,}, marked in orange above.")

    def on_compare(self) -> None:
        """The brush selected and matched in another source: both lists, their overlap, enrichments."""
        s, st, stv = self.s, self.s.state, self.s.stv
        other, track, engine, top = stv.compare_source.value, stv.track.value, s.engine, s.defaults.match.top
        if st.brush is None or other not in s.project.sources:
            stv.compare_info.text = "Brush a range first: the comparison selects it in both sources."
            return
        stv.compare_info.text = "Comparing…"
        s.worker.submit("compare", lambda: hypothesis.compare(engine, st.source, engine, other, st.brush[0],
                                                              st.brush[1], st.threshold, st.left, st.right, top,
                                                              track, scale=st.scale),
                        lambda cmp: self.show_comparison(st.source, other, track, cmp))

    def show_comparison(self, source: str, other: str, track: str, cmp) -> None:
        stv = self.s.stv
        if isinstance(cmp, Exception):
            stv.compare_info.text = html.escape(failure("Compare", cmp))
            return
        rows = "".join(f"<tr><td>{html.escape(r['label'])}</td><td>{r['ratio_a']:.2f}</td><td>{r['ratio_b']:.2f}"
                       f"</td><td>{r['difference']:+.2f}</td></tr>" for r in cmp.enrichment[:6])
        names = {name: src.label for name, src in self.s.project.sources.items()}
        stv.compare_info.text = (
            f"<b>A</b> {html.escape(names[source])}: {len(cmp.a['cells'])} cells, {len(cmp.a['matches'])} matches"
            f" · <b>B</b> {html.escape(names[other])}: {len(cmp.b['cells'])} cells, {len(cmp.b['matches'])} "
            f"matches<br>overlap: {cmp.overlap_steps:,} steps (Jaccard {cmp.jaccard:.3f}); {cmp.shared_matches} "
            f"matches of A overlap a match of B"
            + (f"<table><tr><th>{html.escape(track)}</th><th>ratio A</th><th>ratio B</th>"
               f"<th>A - B</th></tr>{rows}</table>" if rows else ""))
