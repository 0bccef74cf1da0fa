"""The unit page (issue 14), in the manner of Neuronpedia's feature dashboards: one cell over the whole
corpus, from ``gpu_matcher.hypotheses.unit_profile`` (``lstmvis unit``): its top activating contexts, its
activation histogram and the tokens it is on at. Models only, returned as named handles; opened from the
select view (its unit box, or a single ticked row of S) by ``receivers.unit``."""

from __future__ import annotations

from dataclasses import dataclass

from bokeh.models import (Button, Column, ColumnDataSource, DataTable, Div, HoverTool, NumberFormatter,
                          NumericInput, Row, Spacer, TableColumn)
from bokeh.plotting import figure

from bokeh_app.views.common import PAGE_CSS, lean, section

UNIT_ON = "#d62728"
UNIT_OFF = "#9aa3ad"


@dataclass
class UnitPage:
    """The page's models, built the first time a unit is opened (most sessions never open one: its ~70
    models would cost every session's first page, README: load)."""

    close: Button
    info: Div
    contexts: ColumnDataSource         # rank position value scaled text
    contexts_table: DataTable
    histogram: ColumnDataSource        # left right count color
    histogram_plot: object
    tokens: ColumnDataSource           # token on occurrences rate
    tokens_table: DataTable


@dataclass
class UnitView:
    cell: NumericInput                 # the unit box in the select view's side panel
    open: Button
    layout: Column                     # the page's place (hidden until a unit is opened), filled by build_page
    box: object                        # the unit box and its button, for the side panel
    width_px: int
    page: UnitPage | None = None


def build_unit_view(width_px: int) -> UnitView:
    """The unit box and the page's (empty, hidden) place; ``build_unit_page`` fills it."""
    cell = NumericInput(name="unit_cell", title="unit page of cell", mode="int", low=0, width=120,
                        placeholder="cell")
    open_ = Button(name="unit_open", label="open", width=60)
    box = Row(cell, open_, styles={"align-items": "end", "gap": "6px"})
    # (One child, never shown: Bokeh's validation warns of an empty layout.)
    return UnitView(cell=cell, open=open_, layout=Column(Spacer(width=0, height=0), name="unit_view", visible=False),
                    box=box, width_px=width_px)


def build_unit_page(view: UnitView, on_close) -> UnitPage:
    """The page's models, put into ``view.layout`` (once) with ``on_close`` wired first (a callback wired
    after the models were sent may never reach BokehJS's event manager)."""
    if view.page is not None:
        return view.page
    width_px = view.width_px
    close = Button(name="unit_close", label="close the unit page", width=160)
    close.on_click(on_close)
    info = Div(name="unit_info", text="", width=width_px, stylesheets=[PAGE_CSS])
    contexts = ColumnDataSource(name="unit_contexts", data={"rank": [], "position": [], "value": [],
                                                            "scaled": [], "text": []})
    three = NumberFormatter(format="0.000")
    contexts_table = DataTable(
        name="unit_contexts_table", source=contexts, width=720, height=280, index_position=None,
        reorderable=False, columns=[
            TableColumn(field="rank", title="#", width=28), TableColumn(field="position", title="step", width=62),
            TableColumn(field="value", title="value", width=62, formatter=three),
            TableColumn(field="scaled", title="scaled", width=56, formatter=three),
            TableColumn(field="text", title="context (the peak «marked»)", width=510)])
    histogram = ColumnDataSource(name="unit_histogram", data={"left": [], "right": [], "count": [], "color": []})
    hp = figure(name="unit_histogram_plot", width=340, height=280, tools="", toolbar_location=None,
                title="activation histogram (red: on)", y_axis_type="linear")
    hp.quad(left="left", right="right", bottom=0, top="count", fill_color="color", line_color="white",
            source=histogram, name="unit_histogram_bars")
    hp.add_tools(HoverTool(tooltips=[("values", "@left{0.000} – @right{0.000}"), ("steps", "@count")]))
    hp.xaxis.axis_label = "value"
    hp.yaxis.axis_label = "steps"
    hp.y_range.start = 0
    hp.title.text_font_size = "12px"
    tokens = ColumnDataSource(name="unit_tokens", data={"token": [], "on": [], "occurrences": [], "rate": []})
    tokens_table = DataTable(
        name="unit_tokens_table", source=tokens, width=300, height=280, index_position=None, reorderable=False,
        columns=[TableColumn(field="token", title="token", width=110), TableColumn(field="on", title="on", width=55),
                 TableColumn(field="occurrences", title="seen", width=60),
                 TableColumn(field="rate", title="on-rate", width=60, formatter=three)])
    lean(hp)
    view.page = UnitPage(close=close, info=info, contexts=contexts, contexts_table=contexts_table,
                         histogram=histogram, histogram_plot=hp, tokens=tokens, tokens_table=tokens_table)
    view.layout.children = [Row(section("unit page (exact, over the whole corpus)"), close,
                                styles={"align-items": "center", "gap": "12px"}),
                            info,
                            Row(Column(section("top activating contexts"), contexts_table),
                                hp,
                                Column(section("tokens it is on at"), tokens_table))]
    return view.page
