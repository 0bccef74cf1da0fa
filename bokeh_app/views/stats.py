"""The hypothesis panel under the match view: label enrichment of the matches, S as a detector of a
label ("at least m of the k cells of S on": P/R/F1, the curve over thresholds at m and the curve over m
at the threshold, best F1 marked on each), and suggested cells. Models only, returned
as named handles; the numbers come from ``gpu_matcher.stats`` (``receivers.stats``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bokeh.models import (Button, Column, ColumnDataSource, DataTable, Div, HoverTool, Legend, Range1d, Row,
                          Select, Spinner, TableColumn, TapTool)
from bokeh.plotting import figure

from bokeh_app.views.common import lean, section

ENRICHED = "#d95f02"
DEPLETED = "#7570b3"


@dataclass
class StatsView:
    track: Select
    label: Select
    enrichment: ColumnDataSource       # label ratio matched corpus p_value color
    enrichment_plot: object
    detector: Div
    curve: ColumnDataSource            # threshold precision recall f1
    best: ColumnDataSource             # threshold f1 (one row, or none)
    curve_plot: object
    atleast: Spinner                   # the detector's m, 1..k
    m_curve: ColumnDataSource          # m precision recall f1 (at the current threshold)
    best_m: ColumnDataSource           # m f1 (one row, or none)
    m_curve_plot: object
    apply_best: Button
    suggest: Button
    suggestions: ColumnDataSource      # cell score rate_in rate_out
    add_suggested: Button
    phrase_map: Button
    phrases: ColumnDataSource          # x y label color text start end
    phrase_plot: object
    phrase_info: Div
    compare_source: Select
    compare: Button
    compare_info: Div
    layout: object


PANEL_TITLE = "hypothesis statistics (exact, over the whole corpus)"


def build_stats_place() -> tuple[Column, Button]:
    """The panel's place under the match view while it is closed: its title and a button that opens it.
    The panel itself (~190 models) is built when opened (``build_stats_view``): most sessions
    never open it, and every model costs each session's first page (README: load)."""
    button = Button(name="stats_open", label="show the hypothesis statistics", width=260)
    return Column(section(PANEL_TITLE), button, name="stats_view"), button


def build_stats_view(*, tracks: dict[str, list[str]], sources: list[tuple[str, str]] = ()) -> StatsView:
    """``tracks``: discrete track name -> its label names (the first track is the default);
    ``sources``: (name, label) of the project's sources, for the comparison. The panel's layout goes
    into its place (``build_stats_place``) once its callbacks are wired (``ProjectSession.open_stats``)."""
    names = list(tracks)
    first = names[0] if names else ""
    track = Select(name="stats_track", title="label track", options=names, value=first, width=160)
    labels = tracks.get(first, [])
    label = Select(name="stats_label", title="label (detector, suggest)", options=labels,
                   value=labels[-1] if labels else "", width=160)

    enrichment = ColumnDataSource(name="stats_enrichment", data={
        "label": [], "ratio": [], "matched": [], "corpus": [], "p_value": [], "color": []})
    # Horizontal bars: a label reads level on the y axis however long it is (names like
    # "sentence_final_punctuation" overlapped under vertical bars).
    ep = figure(name="stats_enrichment_plot", y_range=[], height=220, width=340, tools="",
                toolbar_location=None, title="label enrichment: matched steps / corpus")
    ep.hbar(y="label", right="ratio", height=0.8, color="color", source=enrichment, name="stats_enrichment_bars")
    ep.add_tools(HoverTool(tooltips=[("label", "@label"), ("ratio", "@ratio{0.00}"),
                                     ("matched steps", "@matched"), ("corpus steps", "@corpus"),
                                     ("p (hypergeometric, >=)", "@p_value{0.0e}")]))
    ep.x_range.start = 0
    ep.xaxis.axis_label = "ratio"
    ep.yaxis.major_label_text_font_size = "10px"
    ep.title.text_font_size = "12px"

    detector = Div(name="stats_detector", text="", width=640)
    curve = ColumnDataSource(name="stats_curve", data={"threshold": [], "precision": [], "recall": [],
                                                        "f1": []})
    best = ColumnDataSource(name="stats_best", data={"threshold": [], "f1": []})
    # x: the threshold slider's range (receivers.stats), not the grid's, which one outlier unit stretches.
    cp = figure(name="stats_curve_plot", height=220, width=360, tools="", toolbar_location=None,
                title="S as a detector of the label, over thresholds", y_range=(0, 1.02),
                x_range=Range1d(-1, 1, name="stats_curve_x_range"))
    cp.title.text_font_size = "12px"
    items = []
    for column, color in (("precision", "#1b9e77"), ("recall", "#7570b3"), ("f1", "#d95f02")):
        r = cp.line(x="threshold", y=column, source=curve, color=color, line_width=2)
        items.append((column, [r]))
    cp.scatter(x="threshold", y="f1", source=best, size=11, color="#d95f02", line_color="black",
               name="stats_best_marker")
    cp.add_layout(Legend(items=items, location="top_right", label_text_font_size="9px"))
    cp.xaxis.axis_label = "threshold"
    cp.add_tools(HoverTool(tooltips=[("threshold", "@threshold{0.000}"), ("precision", "@precision{0.000}"),
                                     ("recall", "@recall{0.000}"), ("F1", "@f1{0.000}")], mode="vline"))
    # "At least m of the k cells on": high follows k (receivers.stats); m = k is "every cell on".
    atleast = Spinner(name="stats_atleast", title="detector: at least m of the k cells of S on", low=1, high=1,
                      step=1, value=1, width=260)
    m_curve = ColumnDataSource(name="stats_m_curve", data={"m": [], "precision": [], "recall": [], "f1": []})
    best_m = ColumnDataSource(name="stats_best_m", data={"m": [], "f1": []})
    mp = figure(name="stats_m_curve_plot", height=220, width=300, tools="", toolbar_location=None,
                title="at least m of k on, over m (at θ)", y_range=(0, 1.02),
                x_range=Range1d(0.5, 1.5, name="stats_m_curve_x_range"))
    mp.title.text_font_size = "12px"
    for column, color in (("precision", "#1b9e77"), ("recall", "#7570b3"), ("f1", "#d95f02")):
        mp.line(x="m", y=column, source=m_curve, color=color, line_width=2)
        mp.scatter(x="m", y=column, source=m_curve, color=color, size=4)
    mp.scatter(x="m", y="f1", source=best_m, size=11, color="#d95f02", line_color="black",
               name="stats_best_m_marker")
    mp.xaxis.axis_label = "m"
    mp.add_tools(HoverTool(tooltips=[("m", "@m"), ("precision", "@precision{0.000}"),
                                     ("recall", "@recall{0.000}"), ("F1", "@f1{0.000}")], mode="vline"))
    apply_best = Button(name="stats_apply_best", label="apply the best-F1 threshold", width=200,
                        disabled=True)

    suggest = Button(name="stats_suggest", label="suggest cells (brush, else label)", width=200)
    suggestions = ColumnDataSource(name="stats_suggestions", data={"cell": [], "score": [], "rate_in": [],
                                                                    "rate_out": []})
    table = DataTable(name="stats_suggestions_table", source=suggestions, width=300, height=200,
                      index_position=None, columns=[
                          TableColumn(field="cell", title="cell"), TableColumn(field="score", title="in - out"),
                          TableColumn(field="rate_in", title="on inside"),
                          TableColumn(field="rate_out", title="on outside")])
    add_suggested = Button(name="stats_add_suggested", label="add the top 5 to S", width=200, disabled=True)

    # Fig. 9: S of every span of one label value, projected with PCA, coloured by label.
    phrase_map = Button(name="stats_phrase_map", label="phrase map: PCA of every label span's S (Fig. 9)",
                        width=340)
    phrases = ColumnDataSource(name="stats_phrases", data={"x": [], "y": [], "label": [], "color": [],
                                                            "text": [], "start": [], "end": []})
    pp = figure(name="stats_phrase_plot", height=300, width=560, tools="pan,wheel_zoom,reset",
                toolbar_location="right", title="phrase map (PCA of the on/off patterns)",
                output_backend="canvas")
    dots = pp.scatter(x="x", y="y", color="color", source=phrases, size=5, alpha=0.5, legend_field="label",
                      name="stats_phrase_points")
    pp.legend.label_text_font_size = "9px"
    # Outside the frame, on the right: inside it covered the points.
    legend = pp.legend[0]
    pp.center = [r for r in pp.center if r is not legend]
    legend.location = "top_left"
    pp.add_layout(legend, "right")
    pp.add_tools(HoverTool(renderers=[dots], tooltips=[("label", "@label"), ("phrase", "@text"),
                                                        ("steps", "@start-@end"), ("", "click: show it above")]),
                 TapTool(renderers=[dots]))
    phrase_info = Div(name="stats_phrase_info", text="", width=420)

    # Compare: the same brush in another source (another layer, cell vs hidden state).
    compare_source = Select(name="stats_compare_source", title="compare the brush with source",
                            options=list(sources), value=sources[-1][0] if sources else "", width=240)
    compare = Button(name="stats_compare", label="compare", width=100)
    compare_info = Div(name="stats_compare_info", text="", width=420)

    lean(ep, cp, mp, pp)
    children = [section(PANEL_TITLE),
                Row(track, label),
                Row(Column(ep, suggest, table, add_suggested),
                    Column(Row(cp, mp), Row(atleast, apply_best, styles={"align-items": "end"}), detector)),
                Row(Column(phrase_map, phrase_info, Row(compare_source, compare, styles={"align-items": "end"}),
                           compare_info), pp)]
    layout = Column(*children, name="stats_panel")
    return StatsView(track=track, label=label, enrichment=enrichment, enrichment_plot=ep, detector=detector,
                     curve=curve, best=best, curve_plot=cp, atleast=atleast, m_curve=m_curve,
                     best_m=best_m, m_curve_plot=mp, apply_best=apply_best, suggest=suggest,
                     suggestions=suggestions, add_suggested=add_suggested, phrase_map=phrase_map,
                     phrases=phrases, phrase_plot=pp, phrase_info=phrase_info, compare_source=compare_source,
                     compare=compare, compare_info=compare_info, layout=layout)
