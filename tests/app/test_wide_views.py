"""The select view on unbounded activations at D >= 1,000 (issue 14): a ``transform: none`` source with
one outlier unit; the robust y range with clipped markers, z-scores drawn in scaled units, the threshold
slider's range from the data, the shortest match in the app and the URL, and the unit page."""

from __future__ import annotations

from urllib.parse import parse_qs

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.events import ButtonClick

from bokeh_app.app import build_document
from bokeh_app.catalogue import Catalogue
from bokeh_app.config import load_defaults
from bokeh_app.queries import value_sample
from bokeh_app.state import ViewState, parse_query, to_query
from gpu_matcher.scaling import quantile_units, zscores

from conftest import make_app_project

S2 = "states::states2"
OUTLIER, FACTOR = 7, 40.0
DEFAULTS = load_defaults()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Catalogue:
    root = tmp_path_factory.mktemp("wide-data")
    make_app_project(root / "outlier", 1500, 1024, seed=3, name="outlier project", outlier=(OUTLIER, FACTOR))
    return Catalogue(root, "numpy")


def open_doc(catalogue, **query):
    doc = Document()
    build_document(doc, catalogue, {k: [str(v).encode()] for k, v in query.items()})
    return doc


def model(doc, name):
    found = doc.get_model_by_name(name)
    assert found is not None, f"no model named {name!r}"
    return found


def window_values(engine, doc) -> tuple[int, np.ndarray]:
    pos = int(model(doc, "position").value)
    W = len(model(doc, "select_plot").xaxis[0].ticker.ticks)
    return pos, engine.context(S2, pos, pos + W).values.astype(np.float64)


def test_the_outlier_unit_does_not_stretch_the_axis_and_stays_visible(catalogue):
    engine = catalogue.engine("outlier")
    doc = open_doc(catalogue, project="outlier", source=S2, pos=40)
    y = model(doc, "select_plot").y_range
    sample = value_sample(engine.project.source(S2))
    assert sample.shape[1] == 1024
    p_lo, p_hi = np.percentile(sample, [0.5, 99.5])
    assert y.start < p_lo < p_hi < y.end
    top = float(np.nanmax(sample[:, OUTLIER]))
    assert y.end < top / 5                              # without the robust range the axis reaches `top`
    # Every value beyond the axis in view has a marker at the edge, the outlier unit's among them.
    pos, values = window_values(engine, doc)
    clipped = model(doc, "clipped").data
    t, c = np.nonzero((values > y.end) | (values < y.start))
    assert sorted(zip(clipped["x"], clipped["cell"])) == sorted(zip(t.astype(float).tolist(), c.tolist()))
    assert OUTLIER in clipped["cell"]
    assert all(v == pytest.approx(values[int(x), cell]) for x, cell, v in
               zip(clipped["x"], clipped["cell"], clipped["value"]))
    # The slider spans the data, not [-1, 1], and not up to the outlier either (it may reach a little past
    # the pooled percentile: each cell's own high values, queries.sparse_peak).
    slider = model(doc, "threshold")
    assert slider.start >= 0.0 and slider.end <= p_hi * 1.25 and slider.end > 1.0
    assert slider.end < top / 5
    assert slider.start < slider.value < slider.end


def test_zscore_draws_scaled_values_and_the_scaled_threshold_line(catalogue):
    engine = catalogue.engine("outlier")
    doc = open_doc(catalogue, project="outlier", source=S2, pos=40, scale="zscore", threshold=1.5)
    pos, _ = window_values(engine, doc)
    W = len(model(doc, "select_plot").xaxis[0].ticker.ticks)
    src = engine.project.source(S2)
    expected = zscores(src, src.raw(pos, pos + W), engine.cell_scale(S2, "zscore"))
    drawn = np.asarray(model(doc, "traces").data["y"]).reshape(1024, W + 1)[:, :W].T
    np.testing.assert_allclose(drawn, expected, rtol=1e-5, atol=1e-5)
    line = model(doc, "threshold_line")
    assert line.visible and line.location == 1.5
    y = model(doc, "select_plot").y_range
    assert y.start < 0.0 < 1.5 < y.end < 20                  # z units, robust
    assert model(doc, "select_plot").yaxis[0].axis_label == "z-score within each cell"
    # Back to the value: raw values again, the slider in value units.
    model(doc, "scale").value = "none"
    drawn = np.asarray(model(doc, "traces").data["y"]).reshape(1024, W + 1)[:, :W].T
    np.testing.assert_allclose(drawn, engine.context(S2, pos, pos + W).values, rtol=1e-6)
    assert model(doc, "threshold").end < 20


def test_quantile_draws_quantile_units_and_the_threshold_line(catalogue):
    """Under scale=quantile the traces are the values in quantile units through the engine's per-cell
    table (exact at table keys, within 1/1024 of the empirical CDF elsewhere) and the line is θ."""
    engine = catalogue.engine("outlier")
    doc = open_doc(catalogue, project="outlier", source=S2, pos=40, scale="quantile", threshold=0.9)
    pos, _ = window_values(engine, doc)
    W = len(model(doc, "select_plot").xaxis[0].ticker.ticks)
    src = engine.project.source(S2)
    window = src.raw(pos, pos + W)
    expected = quantile_units(engine.quantile_table(S2), window)
    drawn = np.asarray(model(doc, "traces").data["y"]).reshape(src.D, W + 1)[:, :W].T
    np.testing.assert_array_equal(drawn, expected.astype(np.float32))
    # Against the empirical CDF of each cell's whole column.
    column = src.raw(0, engine.project.T).astype(np.float64)
    for c in range(0, src.D, 97):
        good = np.sort(column[:, c][~np.isnan(column[:, c])])
        cdf = np.searchsorted(good, window[:, c].astype(np.float64), side="right") / good.size
        assert np.all(np.abs(drawn[:, c] - cdf) <= 1.0 / 1024 + 1e-6)
    line = model(doc, "threshold_line")
    assert line.visible and line.location == 0.9
    y = model(doc, "select_plot").y_range
    assert y.start < 0.0 and 1.0 < y.end < 1.1
    assert model(doc, "select_plot").yaxis[0].axis_label == "quantile within each cell"
    # Through the widget: none -> quantile -> none.
    model(doc, "scale").value = "none"
    drawn = np.asarray(model(doc, "traces").data["y"]).reshape(src.D, W + 1)[:, :W].T
    np.testing.assert_allclose(drawn, engine.context(S2, pos, pos + W).values, rtol=1e-6)
    model(doc, "scale").value = "quantile"
    drawn = np.asarray(model(doc, "traces").data["y"]).reshape(src.D, W + 1)[:, :W].T
    np.testing.assert_array_equal(drawn, expected.astype(np.float32))
    assert model(doc, "threshold_line").visible


def test_minimum_match_length_one_in_the_app_and_the_url(catalogue):
    engine = catalogue.engine("outlier")
    doc = open_doc(catalogue, project="outlier", source=S2, brush="100,100", threshold=1.0)
    cells = list(model(doc, "selection").data["cell"])
    assert cells
    spinner = model(doc, "min_length")
    assert spinner.value == DEFAULTS.match.min_length
    spinner.value = 1
    expected = [(m.start, m.end) for m in engine.match(S2, cells, 1.0, top=DEFAULTS.match.top, min_length=1,
                                                         phrase_length=DEFAULTS.match.phrase_length,
                                                         distinct=DEFAULTS.match.distinct, sequences=True)]
    data = model(doc, "matches").data
    assert list(zip(data["start"], data["end"])) == expected
    assert any(s == e for s, e in expected)                  # single steps are listed now
    query = parse_qs(model(doc, "url_state").data["query"][0])
    assert query["minlen"] == ["1"]
    # Reopening the URL restores it.
    doc2 = open_doc(catalogue, **{k: v[-1] for k, v in query.items()})
    assert model(doc2, "min_length").value == 1
    data2 = model(doc2, "matches").data
    assert list(zip(data2["start"], data2["end"])) == expected


def test_minlen_round_trips_through_the_url_and_bad_values_fall_back():
    for n in (1, 3, 50):
        state = ViewState(project="p", min_length=n)
        query = parse_qs(to_query(state, DEFAULTS))
        parsed = parse_query({k: [v[-1].encode()] for k, v in query.items()}, DEFAULTS)
        assert parsed.state == state and not parsed.messages
    assert "minlen" not in to_query(ViewState(project="p", min_length=DEFAULTS.match.min_length), DEFAULTS)
    for bad in ("0", "-2", "x", "51"):
        parsed = parse_query({"minlen": [bad.encode()]}, DEFAULTS)
        assert parsed.state.min_length is None and "minlen" in parsed.messages[0]


def test_the_unit_page_shows_the_engines_exact_profile(catalogue):
    from gpu_matcher.hypotheses import unit_profile

    from bokeh_app import columns

    engine = catalogue.engine("outlier")
    doc = open_doc(catalogue, project="outlier", source=S2, brush="100,101", threshold=1.0)
    page = model(doc, "unit_view")
    assert not page.visible
    # From the select view: the unit box.
    model(doc, "unit_cell").value = OUTLIER
    button = model(doc, "unit_open")
    button._trigger_event(ButtonClick(button))
    assert page.visible

    def same(cols: dict) -> dict:             # NaN (no scaled value) compares equal to itself
        return {k: [None if isinstance(v, float) and np.isnan(v) else v for v in vs] for k, vs in cols.items()}

    def shown(doc) -> tuple[dict, dict, dict]:
        return tuple(same(dict(model(doc, name).data)) for name in ("unit_contexts", "unit_histogram",
                                                                    "unit_tokens"))

    def expected(cell, threshold, scale="none"):
        p = unit_profile(engine, S2, cell, threshold, scale)
        return (same(columns.unit_context_columns(p.contexts)),
                same(columns.unit_histogram_columns(p.histogram, threshold if scale == "none" else None,
                                                    "#d62728", "#9aa3ad")),
                same(columns.unit_token_columns(p.tokens))), p

    want, profile = expected(OUTLIER, 1.0)
    contexts, hist, tokens = shown(doc)
    assert contexts["position"] == [c["position"] for c in profile.contexts] and len(contexts["position"]) == 10
    assert contexts["value"] == [c["value"] for c in profile.contexts]
    assert hist["count"] == profile.histogram["counts"] and sum(hist["count"]) == profile.steps
    assert tokens["token"] == [t["token"] for t in profile.tokens] and tokens["on"] == [t["on"] for t in profile.tokens]
    assert (contexts, hist, tokens) == want
    assert f"at {profile.on_steps:,} of 1,500 steps" in model(doc, "unit_info").text
    assert parse_qs(model(doc, "url_state").data["query"][0])["unit"] == [str(OUTLIER)]
    # It follows the threshold and the scale.
    slider = model(doc, "threshold")
    slider.value = 2.0
    slider.trigger("value_throttled", 1.0, 2.0)
    assert shown(doc) == expected(OUTLIER, 2.0)[0]
    model(doc, "scale").value = "zscore"
    assert shown(doc) == expected(OUTLIER, model(doc, "threshold").value, "zscore")[0]
    # A single ticked row of S opens that cell; the URL reopens it.
    cells = list(model(doc, "selection").data["cell"])
    assert cells
    model(doc, "selection").selected.indices = [0]
    assert parse_qs(model(doc, "url_state").data["query"][0])["unit"] == [str(cells[0])]
    query = {k: v[-1] for k, v in parse_qs(model(doc, "url_state").data["query"][0]).items()}
    doc2 = open_doc(catalogue, **query)
    assert model(doc2, "unit_view").visible
    assert shown(doc2) == expected(cells[0], float(query["threshold"]), "zscore")[0]
    # A click on one of S's traces opens that cell (values as drawn: raw at scale none).
    from bokeh.events import Tap
    doc3 = open_doc(catalogue, project="outlier", source=S2, pos=40, brush="50,51", threshold=1.0)
    cells = list(model(doc3, "selection").data["cell"])
    value = engine.context(S2, 50, 51).values[0, cells[-1]]
    plot = model(doc3, "select_plot")
    plot._trigger_event(Tap(plot, x=10.1, y=float(value)))
    assert model(doc3, "unit_view").visible and model(doc3, "unit_cell").value in cells
    got = model(doc3, "unit_cell").value
    assert abs(engine.context(S2, 50, 51).values[0, got] - value) <= 0.03 * (plot.y_range.end - plot.y_range.start)
    button = model(doc2, "unit_close")
    button._trigger_event(ButtonClick(button))
    assert not model(doc2, "unit_view").visible and "unit" not in model(doc2, "url_state").data["query"][0]


def test_every_heatmap_has_a_colour_bar_and_strips_line_up(tmp_path):
    """Colour bars on the n(t) strip, scalar strips and every match heatmap (a discrete one names its
    labels); the strips share one left border wide enough for the longest track name."""
    from bokeh.models import ColorBar

    from gpu_matcher import open_project

    folder = make_app_project(tmp_path / "named", 600, 32, seed=5, name="named")
    project = open_project(folder)
    project.add_meta("sentence_final_punctuation_class", np.arange(600) % 3, kind="discrete",
                     labels=["opening_parenthesis", "closing_parenthesis", "other"])
    doc = open_doc(Catalogue(tmp_path, "numpy"), project="named", brush="100,101", threshold=0.2)
    assert model(doc, "count_legend").color_mapper.high == len(model(doc, "selection").data["cell"])
    assert model(doc, "count_legend").ticker.ticks == [0, len(model(doc, "selection").data["cell"])]
    assert isinstance(model(doc, "track_score_legend"), ColorBar)
    session_tracks = ["pos", "score", "topk", "sentence_final_punctuation_class"]
    for name in ["n(t)"] + session_tracks:
        plot = model(doc, f"match_heatmap_plot_{name}")
        bars = [r for r in plot.below + plot.right if isinstance(r, ColorBar)]
        assert len(bars) == 1 and bars[0].name == f"match_heatmap_legend_{name}", name
        assert bars[0].color_mapper is plot.renderers[0].glyph.color_mapper
    legend = model(doc, "match_heatmap_legend_sentence_final_punctuation_class")
    assert [legend.major_label_overrides.get(i) for i in range(3)] == ["opening_parenthesis",
                                                                       "closing_parenthesis", "other"]
    borders = {model(doc, n).min_border_left for n in ["select_plot", "count_plot"] +
               [f"track_{t}" for t in session_tracks]}
    assert len(borders) == 1 and borders.pop() >= 7 * len("sentence_final_punctuation_class")
