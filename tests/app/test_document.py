"""Document-level tests of the app's logic: a bare ``Document``, models found by name, UI events fed in.

On a bare Document the session is synchronous (matches run inline), so every answer can be compared
with the engine's own ``select`` / ``match`` / ``counts`` / ``search``.
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import parse_qs

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.events import ButtonClick, PanEnd, SelectionGeometry, Tap
from bokeh.protocol import Protocol

from bokeh_app.app import build_document
from bokeh_app.catalogue import Catalogue
from bokeh_app.config import load_defaults
from bokeh_app.queries import value_sample
from bokeh_app.session import ProjectSession
from bokeh_app.state import ViewState, parse_query, to_query
from bokeh_app.views.landing import LandingView
from bokeh_app.views.select import PATTERN_BRUSH
from gpu_matcher import ProjectError

from conftest import make_app_project
from doc_helpers import model, open_doc

S1, S2 = "states::states1", "states::states2"
DEFAULTS = load_defaults()


@pytest.fixture(scope="module")
def catalogue(app_data) -> Catalogue:
    return Catalogue(app_data, "numpy")


def brush(doc, x0, x1):
    plot = model(doc, "select_plot")
    plot._trigger_event(SelectionGeometry(plot, geometry={"type": "rect", "x0": x0, "x1": x1,
                                                          "y0": -1.0, "y1": 1.0}, final=True))


def set_threshold(doc, value):
    slider = model(doc, "threshold")
    old = slider.value
    slider.value = value
    slider.trigger("value_throttled", old, value)      # what a released slider sends


def click(doc, name):
    button = model(doc, name)
    button._trigger_event(ButtonClick(button))


def shown_matches(doc) -> list[tuple]:
    data = model(doc, "matches").data
    return list(zip(data["start"], data["end"], data["length"], data["inter"], data["union"]))


def engine_matches(engine, source, cells, threshold, left=0, right=0) -> list[tuple]:
    md = DEFAULTS.match
    return [(m.start, m.end, m.length, m.inter, m.union) for m in
            engine.match(source, cells, threshold, left, right, top=md.top, min_length=md.min_length)]


def count_row(doc) -> np.ndarray:
    """n(t) under the words (NaN where the strip is blank)."""
    return np.array([np.nan if v is None else v for v in model(doc, "counts").data["n"]], dtype=float)


def status_of(doc) -> str:
    """The status line as the user reads it (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", model(doc, "status").text))


def url_of(doc) -> dict:
    return {k: v[-1] for k, v in parse_qs(model(doc, "url_state").data["query"][0], keep_blank_values=True).items()}


# --- landing and project choice -----------------------------------------------------------------------
def test_landing_lists_every_project_with_sources_and_sizes(catalogue):
    doc, view = open_doc(catalogue)
    assert isinstance(view, LandingView)
    html = model(doc, "project_list").text
    for pid in ("small", "nested/wide"):
        summary = catalogue.engine(pid).project.summary()
        assert f"?project={pid.replace('/', '%2F')}" in html
        assert summary["name"] in html and summary["description"] in html
        for name, src in summary["sources"].items():
            assert name in html
            assert f"{src['shape'][0]:,} × {src['shape'][1]}" in html
    assert "Choose a project" in status_of(doc)


def test_unknown_project_falls_back_to_the_landing_view_with_a_message(catalogue):
    doc, view = open_doc(catalogue, project="../../etc", threshold="0.5")
    assert isinstance(view, LandingView)
    assert "'../../etc' is not among the projects served here" in status_of(doc)


def test_single_project_opens_directly_and_reports_an_unknown_id(tmp_path):
    make_app_project(tmp_path / "only", 600, 12, seed=3, tracks=False, second_source=False)
    doc, view = open_doc(Catalogue(tmp_path, "numpy"), project="nope")
    assert isinstance(view, ProjectSession)
    assert view.project.id == "only"
    assert "'nope' is not among the projects served here" in status_of(doc)


# --- the select view ------------------------------------------------------------------------------------
def test_url_restores_the_select_view_and_runs_the_match(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=110, threshold=0.4,
                            brush="120,122", left=1, right=1)
    sel = engine.select(S1, 120, 122, 0.4, 1, 1)
    assert sel.cells, "the scenario must select something"
    assert model(doc, "selection").data["cell"] == sel.cells
    assert shown_matches(doc) == engine_matches(engine, S1, sel.cells, 0.4, 1, 1)
    # n(t) under the words is the engine's count over the window.
    W = session.window
    np.testing.assert_array_equal(count_row(doc), engine.counts(S1, sel.cells, 0.4, 110, 110 + W))
    # The view shows the window: traces of all D cells, the words as labels, the brush box.
    traces = model(doc, "traces").data
    assert traces["y"].dtype == np.float32 and traces["y"].size == 48 * (W + 1)
    ctx = engine.context(S1, 110, 110 + W)
    np.testing.assert_allclose(traces["y"].reshape(48, W + 1)[:, :W], ctx.values.T, rtol=1e-6)
    labels = model(doc, "select_plot").xaxis[0].major_label_overrides
    assert [labels[i] for i in range(W)] == ctx.words          # synth words are short: not cut
    boxes = model(doc, "brush_boxes").data           # the brush and its off-margins, window coordinates
    assert list(zip(boxes["kind"], boxes["left"], boxes["right"])) == [
        ("brush", 9.5, 12.5), ("off before", 8.5, 9.5), ("off after", 12.5, 13.5)]
    assert model(doc, "highlight_cells").args == {"cells": sel.cells, "stride": W + 1}
    assert url_of(doc) == {"project": "small", "source": S1, "pos": "110", "threshold": "0.4",
                           "brush": "120,122", "left": "1", "right": "1"}


def test_threshold_slider_and_y_axis_follow_the_source_value_range(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S2)
    lo, hi = engine.project.source(S2).value_range()
    assert (lo, hi) != (-1.0, 1.0)
    slider, y = model(doc, "threshold"), model(doc, "select_plot").y_range
    # Robust: the slider and the axis span the sample's 0.5..99.5 percentiles (inside the value range).
    sample = value_sample(engine.project.source(S2))
    p_lo, p_hi = np.percentile(sample, [0.5, 99.5])
    assert lo <= slider.start <= p_lo + 1e-3 and p_hi - 0.01 * p_hi <= slider.end <= hi
    assert y.start < p_lo and p_hi < y.end and y.end - y.start < 1.2 * (p_hi - p_lo)
    assert slider.start < slider.value < slider.end
    # Switching the source re-fits the axis and the slider to the tanh range.
    model(doc, "source").value = S1
    assert (slider.start, slider.end) == (-1.0, 1.0)
    assert -1.1 < model(doc, "select_plot").y_range.start < -1.0
    assert url_of(doc)["source"] == S1


def test_mouse_brush_selects_the_words_it_covers(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", pos=200, threshold=0.3)
    assert model(doc, "selection").data["cell"] == [] and shown_matches(doc) == []
    before = count_row(doc).copy()
    brush(doc, 3.7, 6.2)                     # centres 4, 5, 6 are covered
    assert session.state.brush == (204, 206)
    sel = engine.select(S1, 204, 206, 0.3)
    assert model(doc, "selection").data["cell"] == sel.cells and sel.cells
    assert shown_matches(doc) == engine_matches(engine, S1, sel.cells, 0.3)
    after = count_row(doc)
    np.testing.assert_array_equal(after, engine.counts(S1, sel.cells, 0.3, 200, 200 + session.window))
    assert np.isnan(before).all()                   # no S yet: a blank strip, not a row of zeros
    assert url_of(doc)["brush"] == "204,206"
    assert f"{len(sel.cells)} cells selected" in status_of(doc)
    # A click-sized brush inside one word selects that word.
    brush(doc, 7.9, 8.1)
    assert session.state.brush == (208, 208)


def test_brush_across_a_sequence_boundary_is_cut_with_a_message(catalogue):
    engine = catalogue.engine("small")
    bounds = engine.project.sequence_bounds()
    edge = int(bounds[2])
    doc, session = open_doc(catalogue, project="small", pos=edge - 5)
    brush(doc, 3, 7)
    assert session.state.brush == (edge - 2, edge - 1)
    assert f"cut at the sequence boundary at {edge}" in status_of(doc)
    assert model(doc, "boundaries").data["x"] == [4.5]


def test_threshold_and_margins_recompute_S_and_the_match(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", pos=100, threshold=0.3, brush="110,112")
    set_threshold(doc, 0.6)
    sel = engine.select(S1, 110, 112, 0.6)
    assert model(doc, "selection").data["cell"] == sel.cells
    assert model(doc, "threshold_line").location == 0.6
    assert shown_matches(doc) == engine_matches(engine, S1, sel.cells, 0.6)
    model(doc, "left").value = 2
    sel = engine.select(S1, 110, 112, 0.6, 2, 0)
    assert model(doc, "selection").data["cell"] == sel.cells
    assert shown_matches(doc) == engine_matches(engine, S1, sel.cells, 0.6, 2, 0)
    pattern = model(doc, "pattern").data                 # off for 2 steps, on for 3, then off
    assert [t for t in pattern["text"] if t] == ["off 2", "on 3"]
    off, on = pattern["x1"][0] - pattern["x0"][0], pattern["x1"][2] - pattern["x0"][2]
    assert off == 2 and on == PATTERN_BRUSH and pattern["y0"][2] == 1.0     # x: one unit per off step
    assert url_of(doc)["threshold"] == "0.6" and url_of(doc)["left"] == "2"


def test_the_pattern_plot_sets_the_margins(catalogue):
    """A click beside the brush in the pattern plot, or the end of a drag there, sets L or R to the
    off steps between that point and the brush; a click on the brush changes nothing."""
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", pos=150, threshold=0.3, brush="200,201")
    plot = model(doc, "pattern_plot")
    plot._trigger_event(Tap(plot, x=-1.2, y=0.0))
    assert model(doc, "left").value == 1 and url_of(doc)["left"] == "1"
    assert model(doc, "selection").data["cell"] == engine.select(S1, 200, 201, 0.3, 1, 0).cells
    plot._trigger_event(PanEnd(plot, x=PATTERN_BRUSH + 1.4, y=0.2))
    assert model(doc, "right").value == 1 and url_of(doc)["right"] == "1"
    cells = engine.select(S1, 200, 201, 0.3, 1, 1).cells
    assert cells and model(doc, "selection").data["cell"] == cells
    assert shown_matches(doc) == engine_matches(engine, S1, cells, 0.3, 1, 1)
    plot._trigger_event(Tap(plot, x=PATTERN_BRUSH / 2, y=1.0))               # on the brush: nothing
    plot._trigger_event(Tap(plot, x=-500.0, y=0.0))                          # far out: the maximum
    assert model(doc, "left").value == DEFAULTS.select.max_margin and model(doc, "right").value == 1
    assert [t for t in model(doc, "pattern").data["text"] if t] == [
        f"off {DEFAULTS.select.max_margin}", "on 2", "off 1"]


def test_cells_added_and_removed_by_hand(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", pos=100, threshold=0.3, brush="110,112")
    base = engine.select(S1, 110, 112, 0.3).cells
    extra = next(c for c in range(48) if c not in base)
    model(doc, "cell_input").value = f"{extra}"
    click(doc, "add_cells")
    assert model(doc, "selection").data["cell"] == sorted(base + [extra])
    table = model(doc, "selection").data
    assert table["hand"][table["cell"].index(extra)] == "added"
    # Tick the first two rows of the table and remove them.
    gone = model(doc, "selection").data["cell"][:2]
    model(doc, "selection").selected.indices = [0, 1]
    click(doc, "remove_cells")
    cells = sorted(set(base + [extra]) - set(gone))
    assert model(doc, "selection").data["cell"] == cells
    assert shown_matches(doc) == engine_matches(engine, S1, cells, 0.3)
    q = url_of(doc)
    assert q.get("add") == (None if extra in gone else str(extra))
    assert set(map(int, q["remove"].split(","))) == set(gone) & set(base)
    # The edits survive a reload from the URL, and "undo" restores the brush's S.
    doc2, _ = open_doc(catalogue, **q)
    assert model(doc2, "selection").data["cell"] == cells
    click(doc, "reset_cells")
    assert model(doc, "selection").data["cell"] == base
    model(doc, "cell_input").value = "999"
    click(doc, "add_cells")
    assert "out of range [0, 48)" in status_of(doc)


def test_navigation_back_forward_and_go_to(catalogue):
    doc, session = open_doc(catalogue, project="small", pos=300)
    W = session.window
    click(doc, "forward")
    assert session.state.pos == 300 + W and url_of(doc)["pos"] == str(300 + W)
    click(doc, "back")
    click(doc, "back")
    assert session.state.pos == 300 - W
    model(doc, "position").value = 10 ** 6           # past the end: clamped to the last window
    assert session.state.pos == 3000 - W
    words = session.project.tokens(3000 - W, 3000)
    labels = model(doc, "select_plot").xaxis[0].major_label_overrides
    assert [labels[i] for i in range(W)] == words
    model(doc, "word_width").value = "10"
    assert session.window == DEFAULTS.select.window_px // 10 and session.state.pos == 3000 - session.window
    assert model(doc, "traces").data["x"].size == 48 * (session.window + 1)
    assert url_of(doc)["ww"] == "10"


def test_phrase_search_lists_hits_and_jumps_there(catalogue):
    engine = catalogue.engine("small")
    words = engine.project.tokens(1500, 1502)
    phrase = " ".join(words)
    doc, session = open_doc(catalogue, project="small")
    model(doc, "search").value = phrase
    hits = engine.search(phrase)
    assert 1500 in hits.tolist()
    assert model(doc, "search_hits").data["pos"] == hits[:DEFAULTS.search_max_results].tolist()
    assert f"{len(hits):,} occurrence(s)" in model(doc, "search_info").text
    i = hits.tolist().index(1500)
    model(doc, "search_hits").selected.indices = [i]
    assert session.state.pos <= 1500 < session.state.pos + session.window
    focus = model(doc, "focus_box")
    assert focus.visible and focus.left == 1500 - session.state.pos - 0.5
    model(doc, "search").value = "no-such-word-anywhere"
    assert "does not occur" in status_of(doc)


def test_meta_tracks_of_every_kind_and_switching_them(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", pos=40, brush="45,46", threshold=0.3)
    W = session.window
    pos_track = engine.project.meta["pos"]
    data = model(doc, "track_pos_data").data
    assert data["text"] == [pos_track.label(v) for v in pos_track.values(40, 40 + W)]
    score = model(doc, "track_score_data").data
    assert len(score["color"]) == W and len(set(score["color"])) > 3
    topk = model(doc, "track_topk_data").data
    assert len(topk["text"]) == 3 * W
    assert topk["text"][:3] == [engine.project.dictionary[int(i)] for i in
                                engine.project.meta["topk"].values(40, 41)[0]]
    # The match view's heatmaps: n(t) and every shown track, aligned with the word matrix.
    ms = engine.match(S1, session.cells, 0.3, top=DEFAULTS.match.top)
    heat = np.asarray(model(doc, "match_heatmap_n(t)").data["image"][0])
    first = ms[0].start - DEFAULTS.match.context_left
    np.testing.assert_array_equal(heat[0], engine.counts(S1, session.cells, 0.3, first,
                                                         first + DEFAULTS.match.columns))
    pos_heat = np.asarray(model(doc, "match_heatmap_pos").data["image"][0])
    np.testing.assert_array_equal(pos_heat[0], pos_track.values(first, first + DEFAULTS.match.columns) % 10)
    # Switch "score" and "topk" off: strips and heatmaps hide, the URL says which are shown.
    model(doc, "tracks").value = ["pos"]
    assert model(doc, "track_pos").visible and doc.get_model_by_name("track_score") is None
    assert doc.get_model_by_name("match_heatmap_plot_topk") is None
    assert url_of(doc)["tracks"] == "pos"
    assert model(doc, "match_colour").options == ["none", "n(t)", "pos"]


def test_match_view_colours_and_row_click(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", pos=100, threshold=0.3, brush="110,112")
    ms = shown_matches(doc)
    assert len(ms) == DEFAULTS.match.top
    text = model(doc, "match_words").data      # header and summary (row -1), row labels, then the words
    row0 = [w for w, y, p in zip(text["word"], text["y"], text["pos"]) if y == 0 and p >= 0]
    first = ms[0][0] - DEFAULTS.match.context_left
    assert row0 == engine.project.tokens(first, first + len(row0))
    labels = [w for w, p in zip(text["word"], text["pos"]) if p < 0]
    assert len(labels) == 2 + len(ms) and "50 matches of" in labels[1]
    assert labels[2].split() == ["#1", str(ms[0][0]), str(ms[0][2]), f"{ms[0][3]}/{ms[0][4]}"]
    # Fig. 1h: a heatmap's colours under the word matrix.
    model(doc, "match_colour").value = "pos"
    bg = session.mv.background_renderer
    assert bg.visible and bg.glyph.color_mapper is session.mv.heatmaps["pos"].mapper
    np.testing.assert_array_equal(model(doc, "match_background").data["image"][0],
                                  model(doc, "match_heatmap_pos").data["image"][0])
    model(doc, "match_colour").value = "none"
    assert not bg.visible
    # A click on row 7 moves the select view there and marks the match.
    model(doc, "matches").selected.indices = [7]
    start, end = ms[7][0], ms[7][1]
    assert session.state.pos <= start and end < session.state.pos + session.window
    assert model(doc, "focus_box").visible
    assert f"Match #8: steps {start:,}–{end:,}" in status_of(doc)
    assert url_of(doc)["pos"] == str(session.state.pos)
    assert model(doc, "matches").selected.indices == []


def test_heatmaps_under_the_matrix_summarise_each_column_over_the_matches(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", pos=100, threshold=0.3, brush="110,112")
    md = DEFAULTS.match
    ms = engine.match(S1, session.cells, 0.3, top=md.top, min_length=md.min_length)
    assert [(m.start, m.end) for m in ms] == [r[:2] for r in shown_matches(doc)]
    plot, under = model(doc, "match_plot"), model(doc, "match_column_heatmap")
    assert under.x_range is plot.x_range and under.frame_width == plot.frame_width
    cols = model(doc, "match_columns").data
    assert set(cols["track"]) == {"n(t)", "pos", "score", "topk"}
    assert model(doc, "match_column_labels").data["y"] == [0, 1, 2, 3]

    def stack(track_values):
        """(matches, columns) of a per-step array around every match, NaN outside the timeline."""
        out = np.full((len(ms), md.columns), np.nan)
        for i, m in enumerate(ms):
            lo = m.start - md.context_left
            a, b = max(0, lo), min(engine.project.T, lo + md.columns)
            out[i, a - lo:b - lo] = track_values(a, b)
        return out

    def row(track):
        got = {x: (v, t) for x, v, t, name in zip(cols["x"], cols["value"], cols["text"], cols["track"])
               if name == track}
        return np.array([got[x][0] if x in got else np.nan for x in range(md.columns)]), got

    counts = stack(lambda a, b: engine.counts(S1, session.cells, 0.3, a, b))
    means, _ = row("n(t)")
    np.testing.assert_allclose(means, np.nanmean(counts, axis=0), rtol=1e-6)
    score = stack(lambda a, b: engine.project.meta["score"].values(a, b))
    np.testing.assert_allclose(row("score")[0], np.nanmean(score, axis=0), rtol=1e-5)
    pos_track = engine.project.meta["pos"]
    pos = stack(pos_track.values)
    shares, got = row("pos")
    for c in range(md.columns):
        ids, n = np.unique(pos[:, c][np.isfinite(pos[:, c])], return_counts=True)
        assert shares[c] == pytest.approx(n.max() / n.sum())
        assert got[c][1] == pos_track.label(ids[np.argmax(n)])
    # Only the shown tracks get a row; no cells selected empties it.
    model(doc, "tracks").value = ["pos"]
    assert set(model(doc, "match_columns").data["track"]) == {"n(t)", "pos"}
    assert model(doc, "match_column_y_range").start == 1.5
    set_threshold(doc, 5.0)
    assert session.cells == [] and model(doc, "match_columns").data["x"] == []


# --- bad input never kills the page --------------------------------------------------------------------
def test_malformed_url_values_fall_back_with_visible_messages(catalogue):
    doc, session = open_doc(catalogue, project="small", source="nope::x", pos="-4", threshold="abc",
                            brush="9,3", left="x", ww="13", add="1,a", tracks="pos,zzz")
    status = status_of(doc)
    for text in ("source 'nope::x' is not in project", "pos '-4' is not a step number",
                 "threshold 'abc' is not a number", "brush '9,3' is not", "left 'x' is not",
                 "word width 13 is not offered", "add '1,a' is not a list", "'zzz' is not a meta track"):
        assert text in status, text
    st = session.state
    assert (st.source, st.pos, st.brush, st.left, st.add, st.tracks) == (S1, 0, None, 0, (), ("pos",))
    assert st.word_width == 10 or st.word_width == 16
    assert model(doc, "threshold").value == DEFAULTS.select.threshold
    # Out-of-range values clamp, with a message; the first user action retires the notices.
    doc, session = open_doc(catalogue, project="small", threshold="7", brush="2990,3500", pos="99999")
    status = status_of(doc)
    assert "outside the source's range" in status and "past the end" in status
    assert "outside the timeline" in status
    assert model(doc, "threshold").value == 1.0
    click(doc, "forward")
    assert "outside the source's range" not in status_of(doc)


def test_engine_errors_become_messages(catalogue, monkeypatch):
    doc, session = open_doc(catalogue, project="small", pos=100, threshold=0.3, brush="110,112")
    assert shown_matches(doc)

    def broken(*args, **kwargs):
        raise ProjectError("the layout cache is unwritable")
    monkeypatch.setattr(session.engine, "match", broken)
    set_threshold(doc, 0.35)
    assert "Match failed: the layout cache is unwritable" in status_of(doc)
    assert shown_matches(doc) == []
    monkeypatch.setattr(session.engine, "match", lambda *a, **k: 1 / 0)
    set_threshold(doc, 0.4)
    assert "internal error (ZeroDivisionError" in status_of(doc)


def test_a_newer_match_replaces_an_older_one(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", pos=100, threshold=0.3, brush="110,112")
    old = session.match.job()
    session.state = session.state.with_(threshold=0.5)
    session.select.recompute_cells()
    session.worker.renew("match")                   # what MatchReceiver.request does for a newer query
    newer = session.match.job()
    session.match.show(newer, session.match.compute(newer))
    session.match.show(old, session.match.compute(old))      # the older answer arrives late
    assert shown_matches(doc) == engine_matches(engine, S1, list(newer.cells), 0.5)
    assert list(newer.cells) != list(old.cells)


# --- the state round trip and the wire size ---------------------------------------------------------------
def test_state_round_trips_through_the_url():
    state = ViewState(project="a/b", source=S1, pos=12, threshold=-0.25, brush=(14, 17), left=2, right=1,
                      add=(3, 9), remove=(4,), tracks=("pos",), word_width=16, atleast=2)
    query = parse_qs(to_query(state, DEFAULTS), keep_blank_values=True)
    parsed = parse_query({k: [v[-1].encode()] for k, v in query.items()}, DEFAULTS)
    assert parsed.messages == [] and parsed.state == state
    empty_tracks = parse_query({"tracks": [b""]}, DEFAULTS).state
    assert empty_tracks.tracks == ()


def patch_size(events) -> int:
    msg = Protocol().create("PATCH-DOC", events)
    return (len(msg.header_json) + len(msg.metadata_json) + len(msg.content_json)
            + sum(len(json.dumps(b.ref)) + len(b.to_bytes()) for b in msg.buffers))


def test_wire_size_of_select_view_updates_with_650_cells(tmp_path, test_output):
    """Each event is one PATCH-DOC on the server; their sum is what one update costs on the wire."""
    make_app_project(tmp_path / "d650", 2000, 650, seed=4, tracks=False, second_source=False)
    cat = Catalogue(tmp_path, "numpy")
    doc, session = open_doc(cat, project="d650", pos=100, threshold=0.3, ww=10)
    match_models = {m.id for m in session.mv.layout.references()}
    events = []
    doc.on_change(lambda event: events.append(event))

    def measure(action) -> int:
        events.clear()
        action()
        select_events = [e for e in events if getattr(getattr(e, "model", None), "id", None) not in match_models]
        return sum(patch_size([e]) for e in select_events)

    sizes = {
        "brush": measure(lambda: brush(doc, 20, 23)),
        "threshold": measure(lambda: set_threshold(doc, 0.2)),
        "navigate": measure(lambda: click(doc, "forward")),
        "word_width": measure(lambda: setattr(model(doc, "word_width"), "value", "16")),
    }
    assert session.window == DEFAULTS.select.window_px // 16
    print("select-view update wire sizes (D=650, bytes):", sizes)
    (test_output / "document_wire_sizes.json").write_text(json.dumps(
        {"D": 650, "window_steps_at_ww10": DEFAULTS.select.window_px // 10, "bytes": sizes}, indent=1))
    assert all(0 < size < 600_000 for size in sizes.values()), sizes
    assert sizes["brush"] < 100_000 and sizes["threshold"] < 100_000   # values are not resent


def test_an_embedded_app_leaves_the_host_address_bar_alone(catalogue):
    doc, session = open_doc(catalogue, project="small")
    assert model(doc, "url_state").js_property_callbacks            # a served page follows the URL
    doc = Document()
    session = build_document(doc, catalogue, {"project": [b"small"], "bokeh-autoload-element": [b"x1"]})
    assert isinstance(session, ProjectSession)
    assert not model(doc, "url_state").js_property_callbacks


# --- a cheap first page (issue 16) ----------------------------------------------------------------------
#: Models of the small project's first page as measured (issue 16: 685 while the unit page and the
#: hypothesis panel were built with every page, 423 without them, 459 with the overview strip and the track
#: picker), plus a margin: a regression guard, since each model costs every session about 0.5 ms of the
#: server's event loop (built, then serialised for the first pull).
FIRST_PAGE_MODELS = 459 + 25


def test_a_first_page_is_small_and_valid_and_so_are_its_panels(catalogue):
    from bokeh.core.validation.check import check_integrity

    def issues(doc):
        found = check_integrity(set().union(*(root.references() for root in doc.roots)))
        return found.error + found.warning

    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112")
    first = len(doc.models)
    assert first <= FIRST_PAGE_MODELS, f"the first page has {first} models"
    assert doc.get_model_by_name("unit_contexts") is None and doc.get_model_by_name("stats_curve") is None
    # Bokeh's per-session validation is off on the server (server.skip_document_validation): checked here.
    assert issues(doc) == []
    click(doc, "stats_open")
    model(doc, "unit_cell").value = 3
    click(doc, "unit_open")
    assert model(doc, "unit_view").visible and model(doc, "unit_contexts").data["position"]
    assert len(doc.models) > first + 200 and issues(doc) == []
