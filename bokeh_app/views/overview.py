"""The overview strip over the select view (issue 15, "overview and detail"): models only.

One plot of a whole contig (or the whole timeline), x in positions (1-based within a genome's contig,
steps otherwise), about a pixel a bin, three bands drawn by one bar glyph from one source (n(t) of S, one meta track, the top matches' cover: ``bokeh_app.overview``), the
detail window as a box; a click centres the detail view there, a brush zooms it to the brushed range
(``receivers.overview``). Beside it: "go to" (a coordinate, a range, a contig or a step) and the track
the middle band shows; a genome project also gets the motif search's "both strands" switch.
"""

from __future__ import annotations

from dataclasses import dataclass

from bokeh.models import (BoxAnnotation, BoxSelectTool, CheckboxGroup, Column, ColumnDataSource,
                          FixedTicker, NumeralTickFormatter, Range1d, Row, Select, TextInput)
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

from bokeh_app.overview import BAND_COLORS, BAND_HEIGHT, BANDS
from bokeh_app.views.common import FOCUS_COLOR, lean

NO_TRACK = "(no track)"


@dataclass
class OverviewView:
    plot: object
    source: ColumnDataSource
    window: BoxAnnotation
    box_select: BoxSelectTool
    bars: object
    track: Select
    goto: TextInput
    strands: CheckboxGroup | None
    layout: object


def build_overview_view(window_px: int, border: int, genome: bool) -> OverviewView:
    source = ColumnDataSource(name="overview", data={k: [] for k in ("x", "bottom", "top", "band")})
    plot = figure(name="overview_plot", x_range=Range1d(0, 1, name="overview_x_range"),
                  y_range=Range1d(0, BANDS[-1][1] + BAND_HEIGHT + 0.05), frame_width=window_px, frame_height=66,
                  min_border_left=border, min_border_right=10, min_border_top=2, min_border_bottom=2,
                  toolbar_location=None, tools="", title=" ", output_backend="canvas")
    plot.title.text_font_style = "normal"
    plot.title.text_font_size = "11px"
    plot.grid.visible = False
    plot.background_fill_color = "#fcfcfd"
    plot.yaxis.ticker = FixedTicker(ticks=[bottom + BAND_HEIGHT / 2 for _, bottom in BANDS])
    plot.yaxis.major_label_overrides = {bottom + BAND_HEIGHT / 2: name for name, bottom in BANDS}
    plot.yaxis.major_label_text_font_size = "9px"
    plot.yaxis.major_tick_line_color = None
    plot.yaxis.minor_tick_line_color = None
    plot.xaxis.formatter = NumeralTickFormatter(format="0,0")
    plot.xaxis.major_label_text_font_size = "9px"
    color = linear_cmap("band", list(BAND_COLORS), 0, len(BAND_COLORS) - 1)
    bars = plot.vbar(x="x", width=1.0, bottom="bottom", top="top", fill_color=color, line_color=color, line_width=0.5,
              source=source, name="overview_bars")
    window = BoxAnnotation(name="overview_window", left=0.0, right=0.0, fill_color=FOCUS_COLOR, fill_alpha=0.15,
                           line_color=FOCUS_COLOR, line_alpha=0.9, level="overlay")
    plot.add_layout(window)
    box_select = BoxSelectTool(dimensions="width", renderers=[], name="overview_brush",
                               description="brush a range to zoom the detail view to it")
    plot.add_tools(box_select)
    plot.toolbar.active_drag = box_select
    lean(plot)
    track = Select(name="overview_track", title="overview track", options=[NO_TRACK], value=NO_TRACK, width=160)
    goto = TextInput(name="goto", title="go to", width=200,
                     placeholder="chr2:1,234,567 · chr2 · 1234" if genome else "step, or START-END")
    strands = (CheckboxGroup(name="both_strands", labels=["motif search: both strands"], active=[0])
               if genome else None)
    controls = Row(goto, track, *([strands] if strands is not None else []), styles={"align-items": "end", "gap": "6px"})
    layout = Column(controls, plot, name="overview_view")
    return OverviewView(plot=plot, source=source, window=window, box_select=box_select, bars=bars, track=track,
                        goto=goto, strands=strands, layout=layout)
