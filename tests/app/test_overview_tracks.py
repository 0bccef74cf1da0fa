"""Issue 15 in the app, on a bare Document: tracks by the dozen (picker, order, URL), auto-scaled axes,
word widths down to one pixel, the overview strip (its bands against the engine, click and brush), and
"go to" for ordinary projects (genome coordinates: tests/app/test_genome_app.py)."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import parse_qs

import numpy as np
import pytest
from bokeh.events import ButtonClick, SelectionGeometry, Tap

from bokeh_app.catalogue import Catalogue
from bokeh_app.columns import TRACE_VERTICES, position_ticks, track_columns
from bokeh_app.config import load_defaults
from bokeh_app.coords import Locator
from bokeh_app.overview import (BAND_HEIGHT, BANDS, Span, bin_edges, count_overview, counted_bins, match_density,
                                overview_columns, zoom_for)
from bokeh_app.state import DEFAULT_TRACKS, parse_query, resolve, to_query
from gpu_matcher import ProjectError
from gpu_matcher.io.tracks import add_meta_file

from conftest import make_app_project
from doc_helpers import model, open_doc, status, url_of

DEFAULTS = load_defaults()
S1 = "states::states1"
N_EXTRA = 20


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Catalogue:
    """``many``: T=4000, D=24, the three usual tracks plus 20 more (``t00``..``t19``: scalar, every fifth
    discrete), ``t03`` a CNN-like output on [0, 30]."""
    root = tmp_path_factory.mktemp("many-tracks")
    folder = make_app_project(root / "many", 4000, 24, seed=7, name="many")
    rng = np.random.default_rng(3)
    names = ["pos", "score", "topk"]
    for i in range(N_EXTRA):
        name = f"t{i:02d}"
        if i % 5 == 0:
            add_meta_file(folder, name, rng.integers(0, 3, 4000), T=4000, kind="discrete",
                          labels=["a", "b", "c"], existing=names)
        else:
            scale = 30.0 if i == 3 else 1.0
            add_meta_file(folder, name, (rng.random(4000) * scale).astype(np.float32), T=4000, kind="scalar",
                          existing=names)
        names.append(name)
    return Catalogue(root, "numpy")


def strip_order(session) -> list[str]:
    return [p.name.removeprefix("track_") for p in session.sv.extra["strips"].children[2:]]


# --- tracks by the dozen ----------------------------------------------------------------------------
def test_many_tracks_default_picker_order_and_url(catalogue):
    doc, session = open_doc(catalogue, project="many", pos=100)
    names = list(session.project.meta)
    assert len(names) == 3 + N_EXTRA
    # Without tracks= the first few are shown; the others have no strip and no heatmap yet.
    assert strip_order(session) == names[:DEFAULT_TRACKS]
    assert doc.get_model_by_name(f"track_{names[DEFAULT_TRACKS]}") is None
    assert doc.get_model_by_name(f"match_heatmap_plot_{names[DEFAULT_TRACKS]}") is None
    assert model(doc, "tracks").options == names
    # Pick three, in an order of our own: strips, heatmaps, picker and URL follow that order.
    model(doc, "tracks").value = ["t12", "pos", "t03"]
    assert strip_order(session) == ["t12", "pos", "t03"]
    assert url_of(doc)["tracks"] == "t12,pos,t03"
    heatmaps = [p.name for p in session.mv.heatmap_row.children[1:]]
    assert heatmaps == ["match_heatmap_plot_n(t)", "match_heatmap_plot_t12", "match_heatmap_plot_pos",
                        "match_heatmap_plot_t03"]
    data = model(doc, "track_t12_data").data
    assert data["x"] == list(range(session.window))
    # Move t03 up twice: it is first; once more says so and changes nothing.
    model(doc, "track_move").value = "t03"
    for _ in range(2):
        model(doc, "track_up")._trigger_event(ButtonClick(model(doc, "track_up")))
    assert strip_order(session) == ["t03", "t12", "pos"]
    assert url_of(doc)["tracks"] == "t03,t12,pos"
    model(doc, "track_up")._trigger_event(ButtonClick(model(doc, "track_up")))
    assert "already first" in status(doc)
    assert url_of(doc)["tracks"] == "t03,t12,pos"
    # A name the project lacks (a crafted client message) is refused and the picker shows the state.
    model(doc, "tracks").value = ["t03", "nope"]
    assert "'nope' is not a meta track" in status(doc)
    assert list(model(doc, "tracks").value) == ["t03", "t12", "pos"]
    # The URL's order comes back in a new session; an unknown name there is named and dropped.
    doc2, session2 = open_doc(catalogue, project="many", tracks="t05,zzz,t01")
    assert strip_order(session2) == ["t05", "t01"]
    assert "'zzz' is not a meta track" in status(doc2)


def test_tracks_state_round_trip_keeps_order():
    parsed = parse_query({"tracks": ["t3,t1,t3,t2"]}, DEFAULTS)
    assert parsed.state.tracks == ("t3", "t1", "t2")
    assert parse_qs(to_query(parsed.state, DEFAULTS))["tracks"] == ["t3,t1,t2"]
    project = SimpleNamespace(sources={"s": SimpleNamespace(value_range=lambda: (-1.0, 1.0), shape=(10, 4))},
                              default_source="s", source=lambda name: project.sources[name], id="p",
                              meta={"t1": None, "t2": None}, sequence_of=lambda s: (0, 10))
    resolved = resolve(parsed.state, project, DEFAULTS)
    assert resolved.state.tracks == ("t1", "t2")
    assert resolved.messages == ["tracks: 't3' is not a meta track of this project; ignored"]


# --- auto-scaled axes --------------------------------------------------------------------------------
def test_scalar_strip_and_overview_follow_the_tracks_range(catalogue):
    doc, session = open_doc(catalogue, project="many", tracks="t03,t01", brush="120,122", threshold=0.3)
    t03 = session.project.meta["t03"]
    lo, hi = t03.value_range
    assert hi > 20                                   # a CNN-like output, not a tanh
    mapper = session.sv.tracks["t03"].mapper
    assert (mapper.low, mapper.high) == (lo, hi)
    assert session.sv.tracks["t01"].mapper.high <= 1.0
    # The overview's track band is t03 (the first shown scalar track), scaled to t03's range.
    assert model(doc, "overview_track").value == "t03"
    data = model(doc, "overview").data
    bottom = dict(BANDS)["track"]
    band = np.asarray(data["band"]) == 1
    top = np.asarray(data["top"])[band]
    assert top.max() <= bottom + 0.9 + 1e-6 and top.max() > bottom + 0.8


def test_relu_source_gets_its_own_axis_and_slider(catalogue):
    doc, session = open_doc(catalogue, project="many", source="states::states2")
    y, slider = model(doc, "select_plot").y_range, model(doc, "threshold")
    sample = session.engine.project.source("states::states2").raw(0, 4000).astype(np.float64)
    span = y.end - y.start
    assert -0.1 * span < y.start <= 0.0 and 0.5 * sample.max() < y.end < sample.max() * 1.1   # not tanh's
    assert slider.start >= 0.0 and slider.end <= sample.max() + 1e-3


# --- one pixel per step -------------------------------------------------------------------------------
def test_word_width_one_pixel_draws_without_labels_and_reads_one_window(catalogue):
    assert 1 in DEFAULTS.select.word_widths
    doc, session = open_doc(catalogue, project="many", pos=0, ww=1, brush="10,12", threshold=0.3)
    W = session.window
    assert W == min(4000, DEFAULTS.select.window_px)
    plot = model(doc, "select_plot")
    ticks = plot.xaxis.ticker.ticks
    assert 0 < len(ticks) <= DEFAULTS.select.window_px // 100
    assert set(plot.xaxis.major_label_overrides) == set(ticks)
    assert plot.xaxis.major_label_overrides[ticks[1]] == f"{ticks[1]:,}"
    assert all(t == "" for t in model(doc, "track_pos_data").data["text"])
    assert len(model(doc, "counts").data["x"]) == W
    assert len(model(doc, "traces").data["y"]) == 24 * (W + 1)


def test_position_ticks_are_round_and_spaced():
    ticks = position_ticks(1234, 960, 1)
    assert [1234 + t for t in ticks][:2] == [1400, 1600] and ticks[-1] < 960
    assert position_ticks(0, 100, 50) == list(range(0, 100, 5))     # 150 px / 50 px = 3 -> every 5th


# --- the overview strip --------------------------------------------------------------------------------
def test_bin_edges_never_more_bins_than_steps():
    assert bin_edges(10, 15, 960).tolist() == [10, 11, 12, 13, 14, 15]
    edges = bin_edges(0, 4000, 960)
    assert len(edges) == 961 and edges[-1] == 4000 and set(np.diff(edges)) <= {4, 5}


def test_counted_bins_stay_within_the_budget():
    edges = bin_edges(0, 10**6, 1000)
    assert counted_bins(edges, 100, 5000, budget=10**8) == (0, 1000)             # 10^8 values: all of it
    i0, i1 = counted_bins(edges, 100, 500_000, budget=10**7)                     # 10^5 steps around 500,000
    assert i0 < 500 < i1 and (edges[i1] - edges[i0]) * 100 <= 10**7 and i1 - i0 >= 90
    assert counted_bins(edges, 100, 10, budget=10**7)[0] == 0
    assert counted_bins(edges, 100, 10**6 - 1, budget=10**7)[1] == 1000


def test_a_contig_over_the_budget_counts_near_the_view_and_follows_it(catalogue, monkeypatch):
    monkeypatch.setattr("bokeh_app.overview.OVERVIEW_VALUES", 1000)                # 1,000 steps (1 value a
    # step: the NumPy backend bins the selected cells' bit rows, Engine.overview_row_cost)
    doc, session = open_doc(catalogue, project="many", pos=100, brush="120,122", threshold=0.3)
    ov = session.overview
    counted = np.flatnonzero(np.isfinite(ov.counts[1]))
    assert ov.edges[counted[0]] <= 100 < ov.edges[counted[-1] + 1] and len(counted) < 300
    assert "n(t) over steps 0–" in model(doc, "overview_plot").title.text
    session.go(3000)                                    # far away: that part is counted now
    counted = np.flatnonzero(np.isfinite(ov.counts[1]))
    assert ov.edges[counted[0]] <= 3000 < ov.edges[counted[-1] + 1]


def test_match_density_and_zoom():
    edges = np.array([0, 10, 20, 30])
    ms = [SimpleNamespace(start=5, end=14), SimpleNamespace(start=28, end=40)]
    assert match_density(ms, edges).tolist() == [0.5, 0.5, 0.2]
    assert zoom_for(900, 960, (1, 2, 4, 10)) == 1 and zoom_for(96, 960, (1, 2, 4, 10, 16)) == 10
    assert zoom_for(10**6, 960, (1, 2)) == 1
    cols = overview_columns(edges, 0, None, 0, None, None, np.array([0.0, 1.0, 0.0]))
    assert cols["x"].tolist() == [14.5] and cols["band"].tolist() == [0]          # steps 10..19
    cols = overview_columns(edges, 0, None, 0, None, None, np.array([0.01, 0.04, 0.0]))
    assert cols["band"].tolist() == [0, 0]                       # a sparse cover drawn relative to its peak
    assert cols["top"][1] - cols["bottom"][1] > 4 * (cols["top"][0] - cols["bottom"][0]) - 1e-6
    assert cols["top"][1] - cols["bottom"][1] == pytest.approx(BAND_HEIGHT)


def test_overview_strip_shows_n_of_t_over_the_whole_timeline(catalogue):
    doc, session = open_doc(catalogue, project="many", pos=100, brush="120,122", threshold=0.3)
    engine, cells = session.engine, session.cells
    assert cells
    data = model(doc, "overview").data
    bands = np.asarray(data["band"])
    bins = len(session.overview.edges) - 1
    assert bins == DEFAULTS.select.window_px and session.overview.span == Span(0, 4000, "the timeline")
    # n(t) band: per-bin max of the engine's n(t) over the timeline, on 0..|S|.
    n = engine.counts(S1, cells, 0.3, 0, 4000)
    edges = session.overview.edges
    want_hi = np.array([n[edges[i]:edges[i + 1]].max() for i in range(bins)])
    bin_of = {float(c): i for i, c in enumerate((edges[:-1] + edges[1:] - 1) / 2)}
    got = {bin_of[float(x)]: float(t) for x, t, b in zip(data["x"], data["top"], bands) if b == 2}
    bottom = dict(BANDS)["n(t)"]
    for i in np.flatnonzero(want_hi > 0)[:50]:
        assert got[int(i)] == pytest.approx(bottom + 0.9 * want_hi[i] / len(cells), abs=0.05)
    assert not any(want_hi[i] == 0 for i in got)
    # The matches' band: the bins the top matches cover.
    covered = {bin_of[float(x)] for x, b in zip(data["x"], bands) if b == 0}
    for m in session.match.matches:
        assert int(np.searchsorted(edges, m.start, side="right") - 1) in covered
    # The detail window's box sits over steps pos..pos+W.
    box = model(doc, "overview_window")
    x_of = session.overview.x_of
    assert box.left == pytest.approx(x_of(100) - 0.5) and box.right == pytest.approx(x_of(100 + session.window) - 0.5)
    np.testing.assert_array_equal(count_overview(engine, S1, cells, 0.3, "none", edges, (0, bins))[1], want_hi)


def test_overview_click_and_brush_move_and_zoom_the_detail_view(catalogue):
    doc, session = open_doc(catalogue, project="many", pos=0, brush="20,22", threshold=0.3)
    plot, ov = model(doc, "overview_plot"), session.overview
    plot._trigger_event(Tap(plot, x=ov.x_of(3000), y=1.0))
    W = session.window
    assert session.state.pos == pytest.approx(3000 - W // 2, abs=ov.per + 1)
    assert int(url_of(doc)["pos"]) == session.state.pos
    # Brush 2,000 steps: the widest word width that holds them (1 px at 960 px) and the range shown.
    plot._trigger_event(SelectionGeometry(plot, geometry={"type": "rect", "x0": ov.x_of(1000), "x1": ov.x_of(2999),
                                                           "y0": 0, "y1": 3}, final=True))
    assert session.word_width == zoom_for(2000, DEFAULTS.select.window_px, DEFAULTS.select.word_widths)
    assert url_of(doc)["ww"] == str(session.word_width)
    assert abs(session.state.pos - 1000) <= ov.per + 1
    assert model(doc, "word_width").value == str(session.word_width)
    # Brush a few steps: word width unchanged (they fit), the range centred and marked.
    plot._trigger_event(SelectionGeometry(plot, geometry={"type": "rect", "x0": ov.x_of(500), "x1": ov.x_of(505),
                                                           "y0": 0, "y1": 3}, final=True))
    st = session.state
    assert st.pos < 500 < st.pos + session.window and model(doc, "focus_box").visible


def test_go_to_box_takes_numbers_and_ranges_and_explains_the_rest(catalogue):
    doc, session = open_doc(catalogue, project="many", pos=0)
    goto = model(doc, "goto")
    goto.value = "2,500"
    assert session.state.pos < 2500 < session.state.pos + session.window
    goto.value = "100-3000"
    assert session.word_width == 1 and session.state.pos == 100        # the range's first window at 1 px
    assert f"its first {session.window:,} steps" in status(doc)
    pos = session.state.pos
    for bad, says in (("chr1:5", "not a step number"), ("99999", "outside the timeline")):
        goto.value = bad
        assert says in status(doc) and session.state.pos == pos
    locator = Locator.of(session.project)
    assert locator.parse("1_000") == (1000, 1001)
    with pytest.raises(ProjectError, match="type a position"):
        locator.parse("  ")


def test_track_columns_drop_text_when_narrow():
    cols = track_columns("scalar", np.array([0.1, 0.5]), 2, 16, str, value_range=(0.0, 1.0), labels=False)
    assert cols["text"] == ["", ""] and len(cols["color"]) == 2


def test_wide_window_of_a_wide_source_sends_the_band_and_s_only(tmp_path):
    """One pixel a step over D=300 cells is past TRACE_VERTICES: the faded traces become the band of all
    cells (min-max, quartiles), S's traces alone are sent and highlighted, and the hover maps them back."""
    make_app_project(tmp_path / "w300", 3000, 300, seed=5, tracks=False, second_source=False, name="w300")
    doc, session = open_doc(Catalogue(tmp_path, "numpy"), project="w300", pos=500, ww=1, brush="600,603",
                            threshold=0.3)
    W, cells = session.window, session.cells
    assert W * 300 > TRACE_VERTICES and 0 < len(cells) < 300
    values = session.engine.context(S1, 500, 500 + W).values.astype(np.float32)
    traces = model(doc, "traces").data
    assert len(traces["y"]) == len(cells) * (W + 1)
    np.testing.assert_array_equal(np.asarray(traces["y"]).reshape(len(cells), W + 1)[:, :W], values[:, cells].T)
    args = model(doc, "highlight_cells").args
    assert args["cells"] == list(range(len(cells))) and args["map"] == cells
    band = model(doc, "envelope").data
    np.testing.assert_array_equal(band["lo"], values.min(axis=1))
    np.testing.assert_array_equal(band["hi"], values.max(axis=1))
    assert np.all(band["lo"] <= band["q1"]) and np.all(band["q1"] <= band["q3"]) and np.all(band["q3"] <= band["hi"])
    # Back to 16 px: every cell's trace again, no band.
    model(doc, "word_width").value = "16"
    assert len(model(doc, "traces").data["y"]) == 300 * (session.window + 1)
    assert len(model(doc, "envelope").data["x"]) == 0 and "map" not in model(doc, "highlight_cells").args
