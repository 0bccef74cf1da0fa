"""The match view (paper section 5.3, Fig. 1 bottom): models only, returned as named handles.

A word matrix of the top matches (one row per match, aligned at its start, context around it; each
row labelled with rank, start, length, inter/union), heatmaps of ``n(t)`` and of the meta tracks
beside it with the same rows and columns, one row per heatmap under it summarising each column over
the top matches (the mean ``n(t)`` or track value at that offset; a discrete track's majority label,
its colour faded by the label's share), and a choice of heatmap whose colours fill the word
matrix's backgrounds (Fig. 1h). A click on a row moves the select view there (``receivers.match``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bokeh.core.properties import value as fixed_value
from bokeh.models import (BasicTicker, ColorBar, Column, ColumnDataSource, FixedTicker, HoverTool, Label,
                          LinearColorMapper, Range1d, Row, Select, TapTool)
from bokeh.plotting import figure

from bokeh_app.columns import (CATEGORY_COLORS, LABEL_SPAN, category_ticks, column_rows, empty_image,
                               matrix_columns, text_px)
from bokeh_app.config import UIDefaults
from bokeh_app.views.common import COUNT_PALETTE, SCALAR_PALETTE, lean, section

NO_COLOUR = "none"
COUNT_HEATMAP = "n(t)"


@dataclass
class Heatmap:
    name: str
    plot: object
    source: ColumnDataSource
    mapper: LinearColorMapper


@dataclass
class MatchView:
    plot: object
    matches: ColumnDataSource
    words: ColumnDataSource
    background: ColumnDataSource
    background_renderer: object
    heatmaps: dict[str, Heatmap]
    colour: Select
    busy: Label
    layout: object
    column_plot: object = None                # the heatmaps under the matrix, one row per heatmap
    columns: ColumnDataSource = None          # x y track offset value share text color alpha text_color
    column_labels: ColumnDataSource = None    # the row names (x y text), left of the cells
    heatmap_row: Row = None                   # the matrix, then the shown heatmaps in order


def heatmap_mapper(kind: str) -> LinearColorMapper:
    if kind == "discrete":
        return LinearColorMapper(palette=list(CATEGORY_COLORS), low=-0.5, high=len(CATEGORY_COLORS) - 0.5,
                                 nan_color="rgba(0,0,0,0)")
    if kind == "count":
        return LinearColorMapper(palette=COUNT_PALETTE, low=0, high=1, nan_color="rgba(0,0,0,0)")
    return LinearColorMapper(palette=SCALAR_PALETTE, low=0, high=1, nan_color="rgba(0,0,0,0)")


def heatmap_legend(name: str, kind: str, mapper: LinearColorMapper, width: int,
                   labels: dict[int, str] | None = None) -> tuple[ColorBar, str]:
    """A heatmap's colour bar and where it goes: a discrete track's colours with their label names on the
    right (names need room), a count's or a scalar's range under the heatmap."""
    common = dict(name=f"match_heatmap_legend_{name}", color_mapper=mapper, major_label_text_font_size="9px",
                  major_tick_line_color=None, bar_line_color="#dddddd", padding=4)
    if kind == "discrete":
        return ColorBar(**common, orientation="vertical", width=10, height=10 * 18,
                        ticker=FixedTicker(ticks=list(range(len(CATEGORY_COLORS)))),
                        major_label_overrides=category_ticks(labels)), "right"
    title = "cells of S on" if kind == "count" else "mean value"
    return ColorBar(**common, orientation="horizontal", width=width, height=8, title=title,
                    title_text_font_size="9px", title_text_font_style="normal",
                    ticker=BasicTicker(desired_num_ticks=3)), "below"


def build_heatmap(name: str, kind: str, y_range: Range1d, defaults: UIDefaults,
                  labels: dict[int, str] | None = None) -> Heatmap:
    """The heatmap of ``n(t)`` or of one meta track over the top matches, with its colour bar."""
    md = defaults.match
    rows, columns = md.top, md.columns
    height = (rows + 1) * md.row_px
    source = ColumnDataSource(name=f"match_heatmap_{name}", data=empty_image(rows, columns))
    mapper = heatmap_mapper(kind)
    hp = figure(name=f"match_heatmap_plot_{name}", x_range=Range1d(-0.5, columns - 0.5),
                y_range=y_range, frame_width=columns * md.heatmap_cell_px, frame_height=height,
                tools="", toolbar_location=None, x_axis_location="above", min_border_left=6,
                min_border_right=6, title=None)
    hp.image(image="image", x="x", y="y", dw="dw", dh="dh", source=source, color_mapper=mapper)
    hp.yaxis.visible = False
    hp.grid.visible = False
    hp.outline_line_color = "#dddddd"
    hp.xaxis.ticker = FixedTicker(ticks=[(columns - 1) / 2])
    hp.xaxis.major_label_overrides = {(columns - 1) / 2: name}
    hp.xaxis.major_tick_line_color = None
    hp.xaxis.axis_line_color = None
    # A name wider than the heatmap gets border room on both sides rather than being cut.
    over = max(0, text_px(name) - columns * md.heatmap_cell_px) // 2 + 6
    hp.min_border_left = hp.min_border_right = over
    legend, side = heatmap_legend(name, kind, mapper, columns * md.heatmap_cell_px, labels)
    hp.add_layout(legend, side)
    lean(hp)
    return Heatmap(name=name, plot=hp, source=source, mapper=mapper)


def build_match_view(*, tracks: list[tuple[str, str]], defaults: UIDefaults,
                     labels: dict[str, dict[int, str]] | None = None) -> MatchView:
    """``tracks``: (name, kind) of the shown meta tracks, each getting a heatmap with its colour bar (a
    track shown later gets its own then, ``receivers.tracks``);
    ``labels``: a discrete track's label names by id (its colour bar's ticks)."""
    md = defaults.match
    rows, columns = md.top, md.columns
    # Row -1 is the header; the row labels (rank, start, length, inter/union) are text in the plot,
    # left of the words: a new answer then only changes data (no axis or title, no re-layout).
    y_range = Range1d(rows - 0.5, -1.5, name="match_y_range")
    height = (rows + 1) * md.row_px

    matches = ColumnDataSource(name="matches", data={
        "start": [], "end": [], "length": [], "inter": [], "union": [], "row": [], "span_x": [],
        "span_w": [], "where": []})
    words = ColumnDataSource(name="match_words", data=matrix_columns())
    background = ColumnDataSource(name="match_background", data=empty_image(rows, columns))

    plot = figure(name="match_plot", x_range=Range1d(-LABEL_SPAN - 0.5, columns - 0.5), y_range=y_range,
                  frame_width=(columns + LABEL_SPAN) * md.word_px, frame_height=height, tools="",
                  toolbar_location=None, x_axis_location="above", min_border_left=6,
                  min_border_right=6, output_backend="canvas", title=None)
    plot.grid.visible = False
    plot.outline_line_color = "#dddddd"
    plot.yaxis.visible = False
    plot.xaxis.ticker = FixedTicker(ticks=list(range(columns)))
    plot.xaxis.major_label_overrides = {c: str(c - md.context_left) for c in range(columns)}
    plot.xaxis.axis_label = "offset from the match start"
    bg_renderer = plot.image(image="image", x="x", y="y", dw="dw", dh="dh", source=background,
                             color_mapper=heatmap_mapper("count"), global_alpha=0.75,
                             name="match_background_image")
    bg_renderer.visible = False
    # The match itself: a light box from the start column over its length.
    plot.rect(x="span_x", y="row", width="span_w", height=0.86, source=matches, fill_color="#ffe9a8",
              fill_alpha=0.55, line_color="#c9a227", line_alpha=0.8, name="match_spans")
    row_marks = plot.rect(x=(columns - LABEL_SPAN - 1) / 2, y="row", width=columns + LABEL_SPAN,
                          height=1.0, source=matches,
                          fill_alpha=0.0, line_alpha=0.0, hover_fill_color="#1f77b4",
                          hover_fill_alpha=0.10, selection_fill_alpha=0.0, nonselection_fill_alpha=0.0,
                          name="match_rows")
    plot.text(x="x", y="y", text="word", text_color="color", text_font_style="style", text_font="font",
              text_align="align", text_baseline="middle", text_font_size="11px", source=words,
              name="match_text")
    plot.add_tools(TapTool(renderers=[row_marks]),
                   HoverTool(renderers=[row_marks], tooltips=[
                       ("at", "@where"), ("start", "@start"), ("end", "@end"), ("length", "@length"),
                       ("inter", "@inter"), ("union", "@union"), ("", "click: show in the select view")]))

    heatmaps = {name: build_heatmap(name, kind, y_range, defaults, (labels or {}).get(name))
                for name, kind in [(COUNT_HEATMAP, "count")] + list(tracks)}

    # Under the matrix: one row per heatmap, its columns on the word matrix's x range.
    summary_rows = 1 + len(tracks)
    columns_source = ColumnDataSource(name="match_columns", data=column_rows({}, {}, {}, md.context_left,
                                                                              md.word_px)[0])
    column_labels = ColumnDataSource(name="match_column_labels", data={"x": [], "y": [], "text": []})
    cp = figure(name="match_column_heatmap", x_range=plot.x_range,
                y_range=Range1d(summary_rows - 0.5, -0.5, name="match_column_y_range"),
                frame_width=plot.frame_width, frame_height=summary_rows * md.row_px, tools="",
                toolbar_location=None, x_axis_location=None, y_axis_location=None, min_border_left=6,
                min_border_right=6, min_border_top=4, output_backend="canvas", title=None)
    cp.grid.visible = False
    cp.outline_line_color = "#dddddd"
    cells_renderer = cp.rect(x="x", y="y", width=0.96, height=0.9, source=columns_source, fill_color="color",
                             fill_alpha="alpha", line_color=None, name="match_column_cells")
    cp.text(x="x", y="y", text="text", text_color="text_color", text_align="center", text_baseline="middle",
            text_font_size="10px", source=columns_source, name="match_column_text")
    cp.text(x="x", y="y", text="text", text_color="#333333", text_align="left", text_baseline="middle",
            text_font_size="11px", text_font=fixed_value("monospace"), source=column_labels,
            name="match_column_names")
    cp.add_tools(HoverTool(renderers=[cells_renderer], tooltips=[
        ("", "@track over the top matches"), ("offset", "@offset"), ("value", "@text"),
        ("mean / share", "@value{0.00}")]))

    colour = Select(name="match_colour", title="colour the words by",
                    options=[NO_COLOUR] + list(heatmaps), value=NO_COLOUR, width=200)
    # Drawn on the canvas (not a Div): showing and hiding it costs the page no re-layout.
    busy = Label(name="match_busy", x=6, y=6, x_units="screen", y_units="screen", anchor="bottom_left",
                 text="⏳ matching…", text_font_size="14px", text_color="#1f5f9f", text_font_style="bold",
                 background_fill_color="#e8f1fb", background_fill_alpha=0.95, border_line_color="#90b4dc",
                 padding=6, visible=False, level="overlay")
    plot.add_layout(busy)
    lean(plot, cp)
    heatmap_row = Row(Column(plot, cp), *[h.plot for h in heatmaps.values()])
    layout = Column(section("match view: the top matches of S (exact)"), colour, heatmap_row, name="match_view")
    return MatchView(heatmap_row=heatmap_row, plot=plot, matches=matches, words=words, background=background,
                     background_renderer=bg_renderer, heatmaps=heatmaps, colour=colour, busy=busy,
                     layout=layout, column_plot=cp, columns=columns_source, column_labels=column_labels)
