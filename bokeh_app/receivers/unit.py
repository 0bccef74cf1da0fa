"""The unit page: one cell's profile over the whole corpus (``gpu_matcher.hypotheses.unit_profile``),
asked for from the select view (the unit box, a single ticked row of the S table, or a click on a trace) and computed in the
session's worker, never on the event loop; it follows the source, threshold and scale."""

from __future__ import annotations

import html

from bokeh.events import Tap

from bokeh_app import columns
from bokeh_app.state import client_number
from bokeh_app.views.unit import UNIT_OFF, UNIT_ON, UnitPage, build_unit_page
from bokeh_app.worker import failure
from gpu_matcher.hypotheses import unit_profile


class UnitReceiver:
    def __init__(self, session):
        self.s = session
        self._shown: tuple | None = None          # (cell, source, threshold, scale) of the page's answer

    def connect(self) -> None:
        s, uv = self.s, self.s.uv
        uv.open.on_click(lambda: self.on_open(uv.cell.value))
        s.sv.selection.selected.on_change("indices", lambda attr, old, new: self.on_ticked(new))
        s.sv.plot.on_event(Tap, lambda event: self.on_trace_click(event.x, event.y))

    # --- callbacks -------------------------------------------------------------------------------
    def on_open(self, value) -> None:
        s = self.s
        if s.quiet:
            return
        D = s.src.D
        cell, problem = client_number(value, "unit (cell)", 0, D - 1, integer=True)
        if cell is None or problem:
            s.refuse(problem or f"Type a cell in [0, {D}) to open its unit page.",
                     lambda: setattr(s.uv.cell, "value", s.state.unit))
            return
        self.show(int(cell))

    def on_ticked(self, indices) -> None:
        """One ticked row of S opens that cell's page (several ticked rows are for removing)."""
        s = self.s
        if s.quiet or len(indices or []) != 1:
            return
        i = indices[0]
        if 0 <= i < len(s.cells):
            self.show(int(s.cells[i]))

    def on_trace_click(self, x, y) -> None:
        """A click on a trace of the select view opens its cell's page: S's traces when there is an S
        (they are the ones drawn on top), within 3% of the y range of the click."""
        s = self.s
        if x is None or y is None:
            return
        lo, hi = s.navigate.y_range()
        cell = columns.nearest_trace(s.navigate.values, float(x), float(y), s.cells, 0.03 * (hi - lo))
        if cell is not None:
            self.show(cell)

    def on_close(self) -> None:
        s = self.s
        s.user_acted()
        s.state = s.state.with_(unit=None)
        self._shown = None
        s.uv.layout.visible = False
        s.sync_url()

    # --- the page --------------------------------------------------------------------------------
    def page(self) -> UnitPage:
        """The page's models, built and wired the first time a unit is shown."""
        uv = self.s.uv
        if uv.page is None:
            build_unit_page(uv, self.on_close)
        return uv.page

    def show(self, cell: int) -> None:
        s = self.s
        s.user_acted()
        s.state = s.state.with_(unit=cell)
        s.sync_url()
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Ask for the open unit's profile when the unit, source, threshold or scale changed."""
        s, st = self.s, self.s.state
        if st.unit is None:
            self._shown = None
            s.uv.layout.visible = False
            return
        key = (st.unit, st.source, float(st.threshold), st.scale)
        if key == self._shown and not force:
            return
        self._shown = key
        with s.batch():
            s.uv.cell.value = st.unit
        info = self.page().info
        s.uv.layout.visible = True
        info.text = f"<span class='lv-busy'>Computing the profile of cell {st.unit}…</span>"
        engine = s.engine

        def apply(answer) -> None:
            if isinstance(answer, Exception):
                info.text = html.escape(failure("Unit page", answer))
                return
            self.write(answer)
        s.worker.submit("unit", lambda: unit_profile(engine, key[1], key[0], key[2], key[3]), apply)

    def write(self, profile) -> None:
        """The page's columns and its summary line from one ``UnitProfile``."""
        uv = self.page()
        uv.contexts.data = columns.unit_context_columns(profile.contexts)
        uv.histogram.data = columns.unit_histogram_columns(
            profile.histogram, profile.threshold if profile.scale == "none" else None, UNIT_ON, UNIT_OFF)
        uv.tokens.data = columns.unit_token_columns(profile.tokens)
        h = profile.histogram
        rate = profile.on_steps / profile.steps if profile.steps else 0.0
        on = "the value" if profile.scale == "none" else f"its {profile.scale}"
        extra = ", ".join(f"{n} {k}" for k, n in (("NaN", h.get("nan", 0)), ("-inf", h.get("neg_inf", 0)),
                                                  ("+inf", h.get("pos_inf", 0))) if n)
        uv.info.text = html.escape(
            f"cell {profile.cell} of {profile.source} ({profile.transform}): on ({on} >= {profile.threshold:g}) "
            f"at {profile.on_steps:,} of {profile.steps:,} steps ({rate:.1%})"
            + (f"; values {h['edges'][0]:.3g} to {h['edges'][-1]:.3g}" if h.get("edges") else "")
            + (f"; {extra}" if extra else ""))
        uv.histogram_plot.xaxis.axis_label = f"value ({profile.transform})"
