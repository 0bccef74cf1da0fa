"""The select view (paper section 5.2, Fig. 1 top): models only, returned as named handles.

Parallel coordinates of every cell over a window of steps (one NaN-separated ``line`` glyph, faded)
with the selected cells S drawn on top, the threshold line, the brush and its off-margins, the
``n(t)`` heatmap under the words, meta-track strips, and the side panel (threshold, pattern plot,
S with counts, tracks, navigation, phrase search). Behaviour lives in ``bokeh_app.receivers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from bokeh.models import (BasicTicker, BoxAnnotation, BoxSelectTool, Button, ColorBar, Column, ColumnDataSource,
                          LinearColorMapper,
                          CustomJS, CustomJSHover, CustomJSTransform, DataTable, Div, FixedTicker, HoverTool,
                          NumericInput, Range1d, Row, SaveTool, Select, Slider, Span, Spinner,
                          TableColumn, TextInput)
from bokeh.plotting import figure
from bokeh.transform import transform

from bokeh_app.columns import PATTERN_BRUSH, text_px
from bokeh_app.config import UIDefaults
from bokeh_app.state import MAX_MIN_LENGTH
from bokeh_app.views.common import (COUNT_PALETTE, FADED_COLOR, FOCUS_COLOR, MARGIN_COLOR, PAGE_CSS,
                                    SCALAR_PALETTE, SELECTED_COLOR, THRESHOLD_COLOR, lean, section)
from bokeh_app.views.tracks import TrackPicker, build_track_picker

LEFT_BORDER = 110          # px left of every strip's frame, so the strips line up under the plot

#: Debounced: a dragged threshold line moves the slider (and so the server) once the drag settles.
SPAN_TO_SLIDER_JS = """
const step = slider.step;
let v = Math.min(Math.max(cb_obj.location, slider.start), slider.end);
v = Math.round(v / step) * step;
if (Math.abs(v - slider.value) < step / 2) { return; }
clearTimeout(window.__lstmvis_span_timer);
window.__lstmvis_span_timer = setTimeout(() => slider.setv({value: v, value_throttled: v}), 150);
"""


#: y of the selected cells' traces: the traces' y where the vertex belongs to a cell of S, else NaN.
HIGHLIGHT_JS = """
const keep = new Set(cells);
const out = new Float32Array(xs.length);
for (let i = 0; i < xs.length; i++) {
  out[i] = keep.has(Math.floor(i / stride)) ? xs[i] : NaN;
}
return out;
"""

CELL_OF_VERTEX_JS = """
const i = Math.floor(value / highlight.args.stride);
const map = highlight.args.map;
return String(map ? map[i] : i);
"""


@dataclass
class TrackView:
    """One meta-track strip under the words."""

    name: str
    kind: str
    rows: int
    plot: object
    source: ColumnDataSource
    mapper: LinearColorMapper | None = None      # a scalar strip's colour bar's range


@dataclass
class SelectView:
    plot: object
    traces: ColumnDataSource
    highlight: CustomJSTransform
    boundaries: ColumnDataSource
    brush_boxes: ColumnDataSource
    focus_box: BoxAnnotation
    threshold_line: Span
    box_select: BoxSelectTool
    x_range: Range1d
    count_plot: object
    counts: ColumnDataSource
    tracks: dict[str, TrackView]
    threshold: Slider
    left: Spinner
    right: Spinner
    pattern_plot: object
    pattern: ColumnDataSource
    selection: ColumnDataSource
    selection_table: DataTable
    cell_input: TextInput
    add_button: Button
    remove_button: Button
    reset_button: Button
    source_select: Select
    word_width: Select
    back: Button
    forward: Button
    position: NumericInput
    search: TextInput
    search_hits: ColumnDataSource
    search_table: DataTable
    search_info: Div
    track_toggle: TrackPicker
    layout: object
    extra: dict = field(default_factory=dict)
    scale: Select | None = None
    min_length: Spinner | None = None
    clipped: ColumnDataSource | None = None


def add_envelope(plot) -> ColumnDataSource:
    """The band of all cells' values (min-max, quartiles) under S's traces, for a window too wide to send
    every cell's trace (``receivers.window.dense``); added to ``plot`` the first time one is shown."""
    envelope = ColumnDataSource(name="envelope", data={k: np.zeros(0, np.float32) for k in ("x", "lo", "hi", "q1", "q3")})
    plot.varea(x="x", y1="lo", y2="hi", source=envelope, fill_color=FADED_COLOR, fill_alpha=0.22, name="envelope_range",
               level="underlay")
    plot.varea(x="x", y1="q1", y2="q3", source=envelope, fill_color=FADED_COLOR, fill_alpha=0.45,
               name="envelope_quartiles", level="underlay")
    lean(plot)
    return envelope


def left_border(labels) -> int:
    """The left border of the plot and every strip: room for the longest strip label (track names such
    as "prose_position_in_sentence"), the same for all so their frames line up. (A border Bokeh has to
    grow for a label moves that frame right and cuts the strip's right end.)"""
    return max([LEFT_BORDER] + [text_px(str(label), 7.0) + 16 for label in labels])


def _strip(name: str, x_range: Range1d, width_px: int, height: int, label: str, border: int = LEFT_BORDER):
    p = figure(name=name, x_range=x_range, y_range=Range1d(-0.5, 0.5), frame_width=width_px,
               frame_height=height, toolbar_location=None, min_border_left=border,
               min_border_right=10, min_border_top=1, min_border_bottom=1, tools="", title=None)
    p.xaxis.visible = False
    p.yaxis.ticker = FixedTicker(ticks=[0])
    p.yaxis.major_label_overrides = {0: label}
    p.yaxis.major_tick_line_color = None
    p.yaxis.minor_tick_line_color = None
    p.yaxis.axis_line_color = None
    p.grid.visible = False
    p.outline_line_color = "#dddddd"
    return p


def build_track(name: str, kind: str, rows: int, x_range: Range1d, defaults: UIDefaults,
                border: int = LEFT_BORDER) -> TrackView:
    """A strip for one meta track: discrete (coloured cells with labels), scalar, or top-K rows."""
    rows = max(1, rows)
    row_px = defaults.select.track_row_px
    p = _strip(f"track_{name}", x_range, defaults.select.window_px, rows * row_px, name, border)
    p.y_range = Range1d(rows - 0.5, -0.5)
    if rows > 1:
        p.yaxis.ticker = FixedTicker(ticks=list(range(rows)))
        p.yaxis.major_label_overrides = {i: (f"{name} #{i + 1}" if i == 0 else f"#{i + 1}")
                                         for i in range(rows)}
    source = ColumnDataSource(name=f"track_{name}_data",
                              data={"x": [], "y": [], "color": [], "alpha": [], "text": [],
                                    "text_color": []})
    p.rect(x="x", y="y", width=0.96, height=0.92, fill_color="color", fill_alpha="alpha",
           line_color=None, source=source)
    p.text(x="x", y="y", text="text", text_align="center", text_baseline="middle",
           text_font_size="10px", text_color="text_color", source=source)
    p.add_tools(HoverTool(tooltips=[(name, "@text"), ("step", "@x")], mode="mouse"))
    mapper = None
    if kind == "scalar":               # its colours' legend; discrete and top-K strips are labelled in place
        mapper = LinearColorMapper(palette=SCALAR_PALETTE, low=0.0, high=1.0)
        p.add_layout(strip_legend(f"track_{name}_legend", mapper, rows * row_px), "right")
    return TrackView(name=name, kind=kind, rows=rows, plot=p, source=source, mapper=mapper)


def strip_legend(name: str, mapper: LinearColorMapper, height: int, ticker=None) -> ColorBar:
    """A strip's colour bar on its right: the strip's own height, its ends labelled."""
    return ColorBar(name=name, color_mapper=mapper, orientation="vertical", width=8, height=max(12, height - 2),
                    padding=1, margin=2, major_label_text_font_size="8px", major_tick_line_color=None,
                    ticker=ticker or BasicTicker(desired_num_ticks=2), bar_line_color="#dddddd")


def build_select_view(*, sources: list[tuple[str, str]], tracks: list[tuple[str, str, int]],
                      defaults: UIDefaults, unit_box=None, shown: list[str] | None = None) -> SelectView:
    """The select view's models. ``sources``: (name, label); ``tracks``: (name, kind, rows) of every meta
    track; ``shown``: the tracks whose strips are built now, in order (None: all; ``receivers.tracks``
    builds the others' when they are shown)."""
    sd = defaults.select
    x_range = Range1d(-0.5, 9.5, name="select_x_range")
    border = left_border([name if rows <= 1 else f"{name} #1" for name, _, rows in tracks])

    # --- parallel coordinates ----------------------------------------------------------------------
    traces = ColumnDataSource(name="traces", data={"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)})
    # S is drawn from the same traces, NaN-ing the other cells in the browser: a brush sends S only.
    highlight = CustomJSTransform(name="highlight_cells", args={"cells": [], "stride": 1},
                                  v_func=HIGHLIGHT_JS)
    brush_boxes = ColumnDataSource(name="brush_boxes", data={"left": [], "right": [], "kind": [],
                                                             "color": [], "alpha": [], "hatch": []})
    boundaries = ColumnDataSource(name="boundaries", data={"x": []})
    plot = figure(name="select_plot", x_range=x_range, y_range=Range1d(-1.05, 1.05),
                  frame_width=sd.window_px, frame_height=sd.height_px, min_border_left=border,
                  min_border_right=10, min_border_bottom=10, toolbar_location="right",
                  tools="", output_backend="canvas", title=" ")
    plot.title.text_font_style = "normal"
    plot.title.text_font_size = "12px"
    plot.grid.visible = False
    plot.yaxis.axis_label = "value"
    plot.xaxis.ticker = FixedTicker(ticks=[])
    plot.xaxis.major_label_text_font_size = "11px"
    plot.xaxis.major_tick_line_color = None
    plot.xaxis.minor_tick_line_color = None
    plot.background_fill_color = "#fcfcfd"
    base = plot.line(x="x", y="y", source=traces, line_color=FADED_COLOR, line_alpha=0.28,
                     line_width=1, name="traces_line")
    base.nonselection_glyph = None
    # The brush (blue) and its off-margins (grey, hatched): one glyph, one update per brush.
    # Everything that changes with a brush or a threshold is drawn on the overlay layer: the
    # browser then repaints S, the brush and the threshold without re-rasterising all D traces.
    plot.quad(left="left", right="right", bottom=-1e9, top=1e9, source=brush_boxes, fill_color="color",
              fill_alpha="alpha", hatch_pattern="hatch", hatch_color=MARGIN_COLOR, hatch_alpha=0.3,
              line_color="color", line_alpha=0.5, name="brush_quads", level="overlay")
    plot.vspan(x="x", source=boundaries, line_color="#444444", line_dash="dotted", line_width=1.5)
    sel_line = plot.line(x="x", y=transform("y", highlight), source=traces, line_color=SELECTED_COLOR,
                         line_alpha=1.0, line_width=1, name="highlight_line", level="overlay")
    # (1 px: wider strokes take ~5x longer to rasterise without a GPU; 185 traces at 1.8 px ~200 ms.)
    # Numeric left/right from the start: replacing the default (a Node model) would make Bokeh
    # recompute the whole document's model graph on the first change.
    focus_box = BoxAnnotation(name="focus_box", left=0.0, right=0.0, fill_color=FOCUS_COLOR,
                              fill_alpha=0.08, line_color=FOCUS_COLOR, line_dash="dashed", line_alpha=0.9,
                              visible=False, level="overlay")
    threshold_line = Span(name="threshold_line", location=0.0, dimension="width", level="overlay",
                          line_color=THRESHOLD_COLOR, line_dash="dashed", line_width=2, editable=True)
    for annotation in (focus_box, threshold_line):
        plot.add_layout(annotation)
    # Values beyond the robust y range: a marker at the edge, so an outlier unit stays visible.
    clipped = ColumnDataSource(name="clipped", data={"x": [], "y": [], "cell": [], "value": [], "marker": []})
    clip_marks = plot.scatter(x="x", y="y", marker="marker", size=7, source=clipped, fill_color="#d62728",
                              line_color="#7f1d1d", name="clipped_marks")
    plot.add_tools(HoverTool(renderers=[clip_marks], tooltips=[("cell", "@cell"), ("value", "@value{0.000}"),
                                                                ("", "beyond the y range")]))
    # No renderers: the brush only reports its range (SelectionGeometry); nothing is hit-tested.
    box_select = BoxSelectTool(dimensions="width", renderers=[], name="brush_tool",
                               description="brush a range of words")
    hover = HoverTool(renderers=[sel_line], tooltips=[("cell", "$index{cell}"), ("value", "$y{0.000}")],
                      formatters={"$index": CustomJSHover(args={"highlight": highlight}, code=CELL_OF_VERTEX_JS)},
                      mode="mouse", line_policy="nearest")
    plot.add_tools(box_select, hover, SaveTool())
    plot.toolbar.active_drag = box_select

    # --- n(t) under the words: one source (counts, colours, labels), so one message per update -------
    counts = ColumnDataSource(name="counts", data={"x": [], "n": [], "color": [], "text": [],
                                                   "text_color": []})
    count_plot = _strip("count_plot", x_range, sd.window_px, 24, "n(t) of S", border)
    count_plot.rect(x="x", y=0, width=1, height=1, fill_color="color", line_color=None, source=counts)
    count_plot.text(x="x", y=0, text="text", text_color="text_color", text_align="center",
                    text_baseline="middle", text_font_size="10px", source=counts)
    count_plot.add_tools(HoverTool(tooltips=[("cells of S on", "@n")], mode="mouse"))
    count_mapper = LinearColorMapper(palette=list(COUNT_PALETTE), low=0, high=1, name="count_mapper")
    # 0 and |S| (receivers.select keeps both in step with S).
    count_plot.add_layout(strip_legend("count_legend", count_mapper, 24, FixedTicker(ticks=[0, 1])), "right")

    shown = [name for name, _, _ in tracks] if shown is None else list(shown)
    kinds = {name: (kind, rows) for name, kind, rows in tracks}
    track_views = {name: build_track(name, *kinds[name], x_range, defaults, border) for name in shown}

    # --- side panel ----------------------------------------------------------------------------------
    threshold = Slider(name="threshold", title="threshold", start=-1, end=1, value=0.3, step=0.01,
                       width=250)
    threshold.js_link("value", threshold_line, "location")
    scale = Select(name="scale", title="threshold on", value="none", width=250,
                   options=[("none", "the value"), ("zscore", "z-score within each cell"),
                            ("quantile", "quantile within each cell")])
    threshold_line.js_on_change("location", CustomJS(args={"slider": threshold}, code=SPAN_TO_SLIDER_JS))
    left = Spinner(name="left", title="off before (L)", low=0, high=sd.max_margin, step=1, value=sd.left,
                   width=118)
    right = Spinner(name="right", title="off after (R)", low=0, high=sd.max_margin, step=1,
                    value=sd.right, width=118)
    min_length = Spinner(name="min_length", title="shortest match (steps)", low=1, high=MAX_MIN_LENGTH, step=1,
                         value=defaults.match.min_length, width=250)
    # The pattern as segments plus their labels, in one source; x in steps (the brush drawn
    # PATTERN_BRUSH wide whatever its length). A click or a drag's end left or right of the brush sets L
    # or R to the steps between it and the brush (receivers.select.on_pattern_point).
    M = sd.max_margin
    pattern = ColumnDataSource(name="pattern", data={"x0": [], "y0": [], "x1": [], "y1": [], "lx": [],
                                                     "ly": [], "text": []})
    pattern_plot = figure(name="pattern_plot", width=250, height=90, toolbar_location=None, tools="",
                          x_range=Range1d(*pattern_x_range(0, 0, M)), y_range=Range1d(-0.45, 1.45),
                          min_border_left=4, min_border_right=4, min_border_top=4, min_border_bottom=4,
                          title=None)
    pattern_plot.axis.visible = False
    pattern_plot.grid.visible = False
    guide = {"x0": [-M, PATTERN_BRUSH], "x1": [0.0, PATTERN_BRUSH + M]}
    pattern_plot.segment(x0="x0", y0=0.0, x1="x1", y1=0.0, source=ColumnDataSource(guide),
                         line_color="#bbbbbb", line_dash="dotted", line_width=1)
    ticks = list(range(5, M + 1, 5))
    pattern_plot.text(x=[-t for t in ticks] + [PATTERN_BRUSH + t for t in ticks], y=-0.32,
                      text=[str(t) for t in ticks] * 2, text_align="center", text_font_size="8px",
                      text_color="#999999")
    pattern_plot.segment(x0="x0", y0="y0", x1="x1", y1="y1", source=pattern, line_color=SELECTED_COLOR,
                         line_width=2.5)
    pattern_plot.add_layout(Span(location=0.5, dimension="width", line_color=THRESHOLD_COLOR,
                                 line_dash="dashed", line_width=1.5))
    pattern_plot.text(x="lx", y="ly", text="text", source=pattern, text_align="center",
                      text_font_size="10px", text_color="#444444")

    selection = ColumnDataSource(name="selection", data={"cell": [], "on": [], "hand": []})
    selection_table = DataTable(name="selection_table", source=selection, width=250, height=150,
                                index_position=None, selectable="checkbox", reorderable=False,
                                columns=[TableColumn(field="cell", title="cell", width=55),
                                         TableColumn(field="on", title="steps on (view)", width=115),
                                         TableColumn(field="hand", title="edit", width=50)])
    cell_input = TextInput(name="cell_input", placeholder="cells, e.g. 3, 17", width=120)
    add_button = Button(name="add_cells", label="add", width=58)
    remove_button = Button(name="remove_cells", label="remove", width=64)   # ticked rows or typed cells
    reset_button = Button(name="reset_cells", label="undo hand edits", width=250)

    source_select = Select(name="source", title="source (layer, state type)", options=sources,
                           value=sources[0][0] if sources else "", width=330)
    word_width = Select(name="word_width", title="word width (px)",
                        options=[str(w) for w in sd.word_widths], value=str(sd.word_width), width=110)
    back = Button(name="back", label="◀ back", width=80)
    forward = Button(name="forward", label="forward ▶", width=90)
    position = NumericInput(name="position", title="go to step", mode="int", low=0, value=0, width=110)
    search = TextInput(name="search", title="phrase search", placeholder="type words, Enter", width=220)
    search_hits = ColumnDataSource(name="search_hits", data={"pos": [], "context": []})
    search_table = DataTable(name="search_results", source=search_hits, width=250, height=110,
                             index_position=None, reorderable=False,
                             columns=[TableColumn(field="pos", title="step", width=60),
                                      TableColumn(field="context", title="context", width=190)])
    search_info = Div(name="search_info", text="", width=250, stylesheets=[PAGE_CSS])
    picker = build_track_picker([name for name, _, _ in tracks], shown)
    toolbar_row = Row(source_select, word_width, back, position, forward, search,
                      styles={"align-items": "end", "gap": "6px"})
    strips = Column(plot, count_plot, *[t.plot for t in track_views.values()])
    side = Column(
        section("threshold"), threshold, scale,
        section("pattern: off L · on · off R (click or drag beside it)"), pattern_plot, Row(left, right),
        min_length,
        section("selected cells S"), selection_table, Row(cell_input, add_button, remove_button),
        reset_button, *([unit_box] if unit_box is not None else []),
        section("meta tracks"), picker.layout if tracks else Div(text="(none in this project)"),
        section("search results"), search_info, search_table,
        width=270)
    lean(plot, count_plot, pattern_plot, *[t.plot for t in track_views.values()])
    layout = Column(toolbar_row, Row(strips, side), name="select_view")
    view = SelectView(
        plot=plot, traces=traces, highlight=highlight, boundaries=boundaries, brush_boxes=brush_boxes,
        focus_box=focus_box, threshold_line=threshold_line, box_select=box_select, x_range=x_range,
        count_plot=count_plot, counts=counts,
        tracks=track_views, threshold=threshold, left=left, right=right, pattern_plot=pattern_plot,
        pattern=pattern, selection=selection, selection_table=selection_table, cell_input=cell_input,
        add_button=add_button, remove_button=remove_button, reset_button=reset_button,
        source_select=source_select, word_width=word_width, back=back, forward=forward,
        position=position, search=search, search_hits=search_hits, search_table=search_table,
        search_info=search_info, track_toggle=picker, layout=layout, scale=scale,
        min_length=min_length, clipped=clipped)
    view.extra["base_line"] = base
    view.extra["count_mapper"] = count_mapper
    view.extra["strips"] = strips                # plot, n(t), then the shown tracks' strips in order
    view.extra["border"] = border
    return view


#: Off steps the pattern plot shows at least on each side of the brush.
PATTERN_ROOM = 8


def pattern_x_range(left: int, right: int, max_margin: int) -> tuple[float, float]:
    """The pattern plot's x range: room for a few more off steps than set on each side (at least
    ``PATTERN_ROOM``, at most ``max_margin``), so there is always somewhere to click or drag to."""
    room_l = min(max_margin, max(PATTERN_ROOM, left + PATTERN_ROOM // 2))
    room_r = min(max_margin, max(PATTERN_ROOM, right + PATTERN_ROOM // 2))
    return -(room_l + 0.6), PATTERN_BRUSH + room_r + 0.6


def pattern_margin(x: float, max_margin: int) -> tuple[str, int] | None:
    """Which margin a click (or a drag's end) at pattern-plot x sets, and to how many steps; None on
    the brush itself."""
    if x < 0:
        return "left", int(min(max_margin, round(-x)))
    if x > PATTERN_BRUSH:
        return "right", int(min(max_margin, round(x - PATTERN_BRUSH)))
    return None


def label_orientation(word_width: int) -> tuple[float, str]:
    """Word labels: horizontal when a word has room, steep when narrow, vertical (smaller) when very
    narrow; returns (angle, font size)."""
    if word_width >= 48:
        return 0.0, "11px"
    if word_width >= 24:
        return math.pi / 2.5, "11px"
    return math.pi / 2, f"{max(8, min(11, word_width - 1))}px"
