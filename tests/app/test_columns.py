"""``bokeh_app.columns`` on plain data: every column dict the app sends, built without a Document."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from bokeh_app import columns
from bokeh_app.columns import CATEGORY_COLORS, LABEL_SPAN, PATTERN_BRUSH, ROW_HEADER

PALETTE = ("#000000", "#555555", "#aaaaaa", "#ffffff")


def same_length(cols: dict) -> int:
    lengths = {len(v) for v in cols.values()}
    assert len(lengths) == 1, {k: len(v) for k, v in cols.items()}
    return lengths.pop()


def test_neither_columns_nor_queries_import_bokeh():
    code = ("import sys, bokeh_app.columns, bokeh_app.queries; "
            "assert not any(m == 'bokeh' or m.startswith('bokeh.') for m in sys.modules), 'bokeh imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_traces_are_nan_separated_rows_of_one_line():
    values = np.arange(6, dtype=np.float32).reshape(3, 2)         # W=3 steps, D=2 cells
    x, y = columns.trace_x(3, 2), columns.trace_y(values)
    assert x.dtype == y.dtype == np.float32 and x.size == y.size == 2 * 4
    np.testing.assert_array_equal(x, [0, 1, 2, np.nan, 0, 1, 2, np.nan])
    np.testing.assert_array_equal(y, [0, 2, 4, np.nan, 1, 3, 5, np.nan])      # cell 0, then cell 1


def test_padding_labels_and_palette():
    np.testing.assert_array_equal(columns.padded(np.array([1.0, 2.0]), 4), [1, 2, np.nan, np.nan])
    np.testing.assert_array_equal(columns.padded(np.arange(5), 3), [0, 1, 2])
    assert columns.fit_label("abcdefghij", 26) == "abc…" and columns.fit_label(" ", 50) == "␣"
    assert columns.fit_label("a\nb", 100) == "a⏎b"
    assert columns.palette_color(PALETTE, 0.0, 0.0, 3.0) == ("#000000", 0.0)
    assert columns.palette_color(PALETTE, 9.0, 0.0, 3.0) == ("#ffffff", 1.0)       # clipped
    assert columns.word_labels(["the", "cat"], 90) == {0: "the", 1: "cat"}


def test_boundaries_inside_the_window_only():
    cols = columns.boundary_columns(np.array([0, 100, 105, 110, 200]), 100, 110)
    assert cols == {"x": [4.5]}                    # 105 sits between words 4 and 5 of the window


def test_track_strips_of_each_kind():
    label = {0: "NOUN", 1: "VERB"}.get
    discrete = columns.track_columns("discrete", np.array([0, 1, 1]), 2, 40, label)
    assert same_length(discrete) == 2 and discrete["text"] == ["NOUN", "VERB"]
    assert discrete["color"] == [CATEGORY_COLORS[0], CATEGORY_COLORS[1]]
    scalar = columns.track_columns("scalar", np.array([0.0, 1.0, np.nan]), 3, 40, str, value_range=(0.0, 1.0),
                                   palette=PALETTE)
    assert scalar["color"] == [PALETTE[0], PALETTE[-1], "#ffffff"] and scalar["text"][2] == ""
    words = np.array([[1, 2], [3, 4]])
    weights = np.array([[0.8, 0.2], [0.4, 0.0]])
    vec = columns.track_columns("wordvec", words, 2, 40, lambda w: f"w{w}", weights=weights)
    assert same_length(vec) == 4 and vec["text"] == ["w1", "w2", "w3", "w4"] and vec["y"] == [0, 1, 0, 1]
    assert vec["alpha"][0] == pytest.approx(0.78) and vec["alpha"][3] == pytest.approx(0.08)


def test_counts_selection_brush_and_pattern():
    n = np.array([0.0, 2.0, np.nan], dtype=np.float32)
    counts = columns.count_columns(n, 2, True, PALETTE)
    assert counts["n"] == [0, 2, None] and counts["text"] == ["0", "2", ""]
    assert counts["color"] == [PALETTE[0], PALETTE[-1], "#ffffff"]
    assert columns.count_columns(n, 2, False, PALETTE)["text"] == ["", "", ""]
    sel = columns.selection_columns([3, 5, 9], [1, 0, 4], added=[9, 5], base_cells=[3, 5])
    assert sel == {"cell": [3, 5, 9], "on": [1, 0, 4], "hand": ["", "", "added"]}
    assert same_length(columns.brush_box_columns(None, 0, 2, 2, "b", "m")) == 0
    boxes = columns.brush_box_columns((12, 14), 10, 2, 0, "b", "m")
    assert boxes["kind"] == ["brush", "off before"]
    assert (boxes["left"], boxes["right"]) == ([1.5, -0.5], [4.5, 1.5])
    pattern = columns.pattern_columns(3, 2, 0)
    assert same_length(pattern) == 5 and pattern["x0"][0] == -3 and pattern["x1"][-1] == PATTERN_BRUSH
    assert [t for t in pattern["text"] if t] == ["off 3", "on 2"]


def test_match_rows_and_the_word_matrix():
    ms = [SimpleNamespace(start=40, end=42, length=3, inter=2, union=4),
          SimpleNamespace(start=7, end=7, length=1, inter=1, union=1)]
    rows = columns.match_rows(ms, context_left=2, columns=4)
    assert rows["start"] == [40, 7] and rows["row"] == [0, 1]
    assert rows["span_w"] == [2, 1] and rows["span_x"] == [2.5, 2.0]     # clipped at the last column
    # Row 0 starts 2 steps before its match; step 38 lies in another sequence.
    words = columns.matrix_words([(0, 38, 38, ["a", "b", "c", "d"], 40, 42, 39, 100)], word_px=40)
    assert words["x"] == [0, 1, 2, 3] and words["pos"] == [38, 39, 40, 41]
    assert words["style"] == ["normal", "normal", "bold", "bold"]
    assert words["color"] == ["#b0b0b0", "#555555", "#111111", "#111111"]
    matrix = columns.matrix_columns(words, [columns.row_label(0, ms[0])], "summary")
    assert same_length(matrix) == 2 + 1 + 4
    assert matrix["word"][:3] == [ROW_HEADER, "summary", columns.row_label(0, ms[0])]
    assert matrix["x"][0] == -LABEL_SPAN - 0.45 and matrix["y"][:3] == [-1, -1, 0]
    image = columns.empty_image(3, 5)
    assert image["image"][0].shape == (3, 5) and np.isnan(image["image"][0]).all()
    assert (image["dw"], image["dh"]) == ([5], [3])


def test_column_rows_under_the_matrix():
    summaries = {"n(t)": SimpleNamespace(kind="count", value=np.array([1.0, np.nan]), label=np.full(2, np.nan),
                                         text=["1.0", ""]),
                 "pos": SimpleNamespace(kind="discrete", value=np.array([0.5, 1.0]), label=np.array([1.0, 12.0]),
                                        text=["VERB", "X"])}
    cells, names = columns.column_rows(summaries, {"n(t)": 0.0}, {"n(t)": 1.0}, context_left=1, word_px=40,
                                       count_palette=PALETTE)
    assert same_length(cells) == 3                       # the NaN column of n(t) draws nothing
    assert cells["track"] == ["n(t)", "pos", "pos"] and cells["offset"] == [-1, -1, 0]
    assert cells["color"] == [PALETTE[-1], CATEGORY_COLORS[1], CATEGORY_COLORS[2]]
    assert cells["alpha"][1] == pytest.approx(0.575) and cells["share"][2] == 1.0
    assert names["text"] == ["n(t) (mean)", "pos (majority)"]


def test_hypothesis_panel_columns():
    rows = [SimpleNamespace(label="NOUN", ratio=1.5, matched=3, corpus=10, p_value=0.01),
            SimpleNamespace(label="VERB", ratio=0.5, matched=1, corpus=20, p_value=0.9)]
    assert columns.enrichment_columns(rows, "up", "down")["color"] == ["up", "down"]
    points = [SimpleNamespace(threshold=t, precision=p, recall=r, f1=f)
              for t, p, r, f in ((0.1, 0.2, 0.9, 0.33), (0.5, 0.6, 0.3, 0.4))]
    assert columns.curve_columns(points)["f1"] == [0.33, 0.4]
    assert columns.best_columns(points[1]) == {"threshold": [0.5], "f1": [0.4]}
    assert columns.best_columns(None) == {"threshold": [], "f1": []}
    # "At least m of k on" over m: one row per m, the best (m, F1) as one row or none.
    over_m = [SimpleNamespace(m=m, detection=SimpleNamespace(precision=p, recall=r, f1=f))
              for m, p, r, f in ((1, 0.2, 0.9, 0.33), (2, 0.5, 0.5, 0.5), (3, 0.9, 0.1, 0.18))]
    curve = columns.m_curve_columns(over_m)
    assert same_length(curve) == 3 and curve["m"] == [1, 2, 3] and curve["recall"] == [0.9, 0.5, 0.1]
    assert columns.m_curve_columns([]) == {"m": [], "precision": [], "recall": [], "f1": []}
    assert columns.best_m_columns(over_m[1]) == {"m": [2], "f1": [0.5]}
    assert columns.best_m_columns(None) == {"m": [], "f1": []}
    ranked = [SimpleNamespace(cell=4, score=0.123456, rate_in=0.9, rate_out=0.776544)]
    assert columns.suggestion_columns(ranked) == {"cell": [4], "score": [0.1235], "rate_in": [0.9],
                                                  "rate_out": [0.7765]}
    phrases = columns.phrase_columns(np.array([[1.0, 2.0], [3.0, 4.0]]), [0, 11], lambda v: f"L{v}", ["a", "b c"],
                                     np.array([5, 9]), np.array([5, 10]))
    assert list(phrases["y"]) == [2.0, 4.0] and phrases["label"] == ["L0", "L11"]
    assert phrases["color"] == [CATEGORY_COLORS[0], CATEGORY_COLORS[1]] and phrases["end"] == [5, 10]
    flat = columns.phrase_columns(np.zeros((2, 1)), [0, 1], str, ["a", "b"], [1, 2], [1, 2])
    assert list(flat["y"]) == [0.0, 0.0]                 # one PCA component: y stays 0
    assert columns.search_columns([3], ["x [y] z"]) == {"pos": [3], "context": ["x [y] z"]}


# --- unbounded activations ------------------------------------------------------------------------------
def test_robust_range_ignores_one_outlier_unit_and_pads():
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(200, 1000))
    sample[:, 7] *= 50.0                                   # one outlier unit: 0.1% of the values
    lo, hi = columns.robust_range(sample)
    p_lo, p_hi = np.percentile(sample, [0.5, 99.5])
    room = 0.06 * (p_hi - p_lo)
    assert (lo, hi) == pytest.approx((p_lo - room, p_hi + room))
    assert hi < np.abs(sample[:, 7]).max() / 5             # the outlier does not stretch it
    assert columns.robust_range(np.full((3, 4), 2.0)) == pytest.approx((1.44, 2.56))   # a unit around it
    assert columns.robust_range(np.array([np.nan, np.inf])) == (-1.0, 1.0)
    with_nan = sample.copy()
    with_nan[0, :] = np.nan
    assert np.isfinite(columns.robust_range(with_nan)).all()


def test_scaled_values_are_per_cell_z_scores():
    values = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0]])
    center, spread = np.array([2.0, 5.0, 1.0]), np.array([0.5, 0.0, 2.0])
    z = columns.scaled_values(values, center, spread)
    np.testing.assert_array_equal(z, [[-2.0, 0.0, np.nan], [2.0, 0.0, 0.5]])


def test_clipped_markers_sit_at_the_edge_the_value_left_by():
    values = np.zeros((4, 3))
    values[1, 2], values[3, 0], values[2, 1] = 9.0, -4.0, 1.0          # 1.0 is on the edge: not clipped
    cols = columns.clipped_columns(values, -1.0, 1.0)
    assert same_length(cols) == 2
    rows = sorted(zip(cols["x"], cols["cell"], cols["value"], cols["marker"], cols["y"]))
    assert rows == [(1.0, 2, 9.0, "triangle", pytest.approx(1.0 - 0.03)),
                    (3.0, 0, -4.0, "inverted_triangle", pytest.approx(-1.0 + 0.03))]
    capped = columns.clipped_columns(values, -1.0, 1.0, limit=1)
    assert capped["value"] == [9.0]                                      # the farthest out first
    assert same_length(columns.clipped_columns(np.full((2, 2), np.nan), 0.0, 1.0)) == 0


def test_unit_page_columns():
    contexts = [{"position": 9, "value": 3.5, "start": 7, "stop": 11, "at": 2, "words": ["a", "b\n", "c", "d"]},
                {"position": 2, "value": 1.0, "scaled": 0.5, "start": 0, "stop": 3, "at": 0, "words": ["x", "y", "z"]}]
    cols = columns.unit_context_columns(contexts)
    assert same_length(cols) == 2
    assert cols["text"] == ["a b⏎ «c» d", "«x» y z"] and cols["rank"] == [1, 2] and cols["position"] == [9, 2]
    assert np.isnan(cols["scaled"][0]) and cols["scaled"][1] == 0.5
    hist = {"edges": [0.0, 1.0, 2.0, 3.0], "counts": [5, 2, 1]}
    bars = columns.unit_histogram_columns(hist, 1.0, "on", "off")
    assert bars == {"left": [0.0, 1.0, 2.0], "right": [1.0, 2.0, 3.0], "count": [5, 2, 1],
                    "color": ["off", "on", "on"]}
    assert columns.unit_histogram_columns(hist, None, "on", "off")["color"] == ["off"] * 3
    assert same_length(columns.unit_histogram_columns({"edges": [], "counts": []}, 0.0, "on", "off")) == 0
    toks = columns.unit_token_columns([{"token": "the", "on": 3, "occurrences": 4, "rate": 0.75}])
    assert toks == {"token": ["the"], "on": [3], "occurrences": [4], "rate": [0.75]}


def test_colour_bar_ticks_and_scalar_bounds():
    ticks = columns.category_ticks({0: "opening_parenthesis", 1: "other", 11: "folded_label"})
    assert ticks[0] == "opening_parenthesis" and ticks[1] == "other/folded_label"
    assert set(ticks) == set(range(len(CATEGORY_COLORS))) and ticks[5] == ""      # no label: no text
    assert columns.category_ticks(None) == {i: "" for i in range(len(CATEGORY_COLORS))}
    assert columns.scalar_bounds(np.array([3.0, np.nan, -1.0]), None) == (-1.0, 3.0)
    assert columns.scalar_bounds(np.array([2.0, 2.0]), None) == (2.0, 3.0)
    assert columns.scalar_bounds(np.array([np.nan]), None) == (0.0, 1.0)
    assert columns.scalar_bounds(np.array([5.0]), (0, 10)) == (0.0, 10.0)
    assert columns.text_px("x" * 10) > columns.text_px("x" * 5)


def test_nearest_trace_to_a_click():
    values = np.array([[0.0, 1.0, 2.0], [0.5, 1.5, np.nan]])
    assert columns.nearest_trace(values, 0.2, 0.9, None, 0.2) == 1
    assert columns.nearest_trace(values, 0.8, 1.9, None, 0.2) is None         # step 1 has no trace near 1.9
    assert columns.nearest_trace(values, 1.0, 1.4, [0, 2], 0.2) is None       # only S counts when given
    assert columns.nearest_trace(values, 1.0, 0.6, [0, 2], 0.2) == 0
    assert columns.nearest_trace(values, 9.0, 1.5, [], 0.2) == 1              # x clamped into the window
    assert columns.nearest_trace(np.zeros((0, 3)), 0.0, 0.0, None, 1.0) is None


def test_the_detectors_m_and_its_best_on_plain_answers():
    from bokeh_app.queries import StatsAnswer, chosen_m

    assert [chosen_m(None, 4), chosen_m(2, 4), chosen_m(9, 4), chosen_m(0, 4)] == [4, 2, 4, 1]
    at = lambda m, f1: SimpleNamespace(m=m, detection=SimpleNamespace(f1=f1))      # noqa: E731
    answer = StatsAnswer("pos", "NOUN", 0.3, 3, [], [], m=3, over_m=[at(1, 0.4), at(2, 0.6), at(3, 0.6)])
    assert answer.best_m.m == 3                          # ties: the larger m, the stricter detector
    answer.over_m = [at(1, 0.0), at(2, 0.0)]
    assert answer.best_m is None                         # F1 0 everywhere: nothing to mark


def test_slider_reaches_sparse_relu_peaks_but_not_one_outlier_cell():
    """A ReLU unit that fires only at rare sites (0.3 % of steps) must be reachable by the threshold slider;
    one cell of huge values must not stretch it (issue 15: CNN outputs are not tanh)."""
    from bokeh_app.queries import sparse_peak

    rng = np.random.default_rng(3)
    T, D = 5000, 40
    sample = np.maximum(rng.normal(0.0, 1.0, (T, D)), 0.0)
    sites = rng.choice(T, 15, replace=False)                          # 0.3 % of steps
    sample[sites[:, None], np.arange(D)[None, :]] += 8.0           # every cell peaks at the sites
    pooled_hi = columns.robust_range(sample)[1]
    assert pooled_hi < 4.0                                          # the pooled rule misses the peaks
    assert sparse_peak(sample) > 8.0                                # the per-cell rule reaches them
    sample[:, 0] = 1000.0                                           # one outlier cell
    assert sparse_peak(sample) < 20.0
