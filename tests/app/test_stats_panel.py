"""The hypothesis panel on a bare Document: enrichment of the shown matches, S as a detector with the
best-F1 threshold applied in one click, and suggested cells, all equal to ``gpu_matcher.stats``."""

from __future__ import annotations

import pytest

from bokeh_app.catalogue import Catalogue
from gpu_matcher import ProjectError, stats

from test_document import S1, click, model, set_threshold, shown_matches, status_of
from test_document import open_doc as open_plain


def open_doc(catalogue, **query):
    """A page with the hypothesis panel open (``stats=1``: it is built on demand)."""
    return open_plain(catalogue, stats=1, **query)


@pytest.fixture(scope="module")
def catalogue(app_data) -> Catalogue:
    return Catalogue(app_data, "numpy")


def test_enrichment_and_detector_follow_the_matches(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112")
    assert model(doc, "stats_track").value == "pos"
    cells = model(doc, "selection").data["cell"]
    assert cells and shown_matches(doc)
    want = stats.enrichment(engine, S1, session.match.matches, "pos")
    shown = model(doc, "stats_enrichment").data
    assert shown["label"] == [r.label for r in want.labels] == model(doc, "stats_enrichment_plot").y_range.factors[::-1]
    assert shown["matched"] == [r.matched for r in want.labels]
    assert shown["p_value"] == [r.p_value for r in want.labels]
    label = model(doc, "stats_label").value
    det = stats.detector(engine, S1, cells, 0.3, "pos", label)
    text = model(doc, "stats_detector").text
    assert f"F1 <b>{det.f1:.3f}</b>" in text and f"({det.true_positives:,}/{det.predicted:,})" in text
    curve = model(doc, "stats_curve").data
    grid = stats.detector_curve(engine, S1, cells, None, "pos", label)
    assert curve["f1"] == [p.f1 for p in sorted(grid.points, key=lambda p: p.threshold)]
    best = model(doc, "stats_best").data
    if grid.best is None:
        assert best["threshold"] == [] and model(doc, "stats_apply_best").disabled
        return
    assert best["threshold"] == [grid.best.threshold] and best["f1"] == [grid.best.f1]
    # One click applies the best threshold: S, the matches and the detector follow it.
    click(doc, "stats_apply_best")
    assert model(doc, "threshold").value == grid.best.threshold
    sel = engine.select(S1, 110, 112, grid.best.threshold)
    assert model(doc, "selection").data["cell"] == sel.cells
    if sel.cells:
        det = stats.detector(engine, S1, sel.cells, grid.best.threshold, "pos", label)
        assert f"F1 <b>{det.f1:.3f}</b>" in model(doc, "stats_detector").text


def test_changing_the_label_and_track_recomputes(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112")
    model(doc, "stats_label").value = "NOUN"
    cells = model(doc, "selection").data["cell"]
    det = stats.detector(engine, S1, cells, 0.3, "pos", "NOUN")
    assert "pos = NOUN" in model(doc, "stats_detector").text
    assert f"recall <b>{det.recall:.3f}</b>" in model(doc, "stats_detector").text
    set_threshold(doc, 0.5)
    cells = model(doc, "selection").data["cell"]
    if cells:
        det = stats.detector(engine, S1, cells, 0.5, "pos", "NOUN")
        assert f"F1 <b>{det.f1:.3f}</b>" in model(doc, "stats_detector").text


def test_suggest_cells_for_the_brush_and_add_them(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112")
    click(doc, "stats_suggest")
    want = stats.suggest_cells(engine, S1, 0.3, 110, 112)
    assert model(doc, "stats_suggestions").data["cell"] == [r.cell for r in want]
    assert "best separate the brush [110, 112]" in status_of(doc)
    click(doc, "stats_add_suggested")
    cells = set(model(doc, "selection").data["cell"])
    assert {r.cell for r in want[:5]} <= cells


def test_no_panel_without_a_discrete_track(catalogue):
    doc, session = open_doc(catalogue, project="nested/wide")
    assert doc.get_model_by_name("stats_view") is None and session.stv is None


def test_per_cell_scale_travels_in_the_url_and_drives_S_and_the_match(catalogue):
    from test_document import url_of

    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=1.0, scale="zscore",
                            brush="110,112")
    assert model(doc, "scale").value == "zscore"
    slider = model(doc, "threshold")
    assert (slider.start, slider.end, slider.value) == (-4.0, 4.0, 1.0)
    # The plot draws z-scores (test_wide_views), so the scaled threshold is a line on it.
    line = model(doc, "threshold_line")
    assert line.visible and line.location == 1.0
    sel = engine.select(S1, 110, 112, 1.0, scale="zscore")
    assert model(doc, "selection").data["cell"] == sel.cells and sel.cells
    want = engine.match(S1, sel.cells, 1.0, top=len(shown_matches(doc)) or 1, scale="zscore")
    assert shown_matches(doc)[:len(want)] == [(m.start, m.end, m.length, m.inter, m.union) for m in want]
    assert url_of(doc)["scale"] == "zscore"
    det = stats.detector(engine, S1, sel.cells, 1.0, "pos", model(doc, "stats_label").value, scale="zscore")
    assert f"F1 <b>{det.f1:.3f}</b>" in model(doc, "stats_detector").text
    # The widget switches to quantiles: the threshold resets to 0.9 within [0, 1].
    model(doc, "scale").value = "quantile"
    assert (slider.start, slider.end, slider.value) == (0.0, 1.0, 0.9)
    sel = engine.select(S1, 110, 112, 0.9, scale="quantile")
    assert model(doc, "selection").data["cell"] == sel.cells
    assert url_of(doc)["scale"] == "quantile" and url_of(doc)["threshold"] == "0.9"
    assert line.visible and line.location == 0.9               # quantiles are drawn (test_wide_views)
    model(doc, "scale").value = "none"
    assert "scale" not in url_of(doc) and model(doc, "threshold_line").visible


def test_an_unknown_scale_falls_back_with_a_message(catalogue):
    doc, session = open_doc(catalogue, project="small", scale="minmax")
    assert model(doc, "scale").value == "none"
    assert "scale 'minmax' is not one of none, zscore, quantile" in status_of(doc)


def test_phrase_map_projects_every_span_and_a_click_shows_it(catalogue):
    import numpy as np

    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112")
    click(doc, "stats_phrase_map")
    pp = stats.phrase_patterns(engine, S1, "pos", 0.3)
    proj = stats.pca(pp.patterns, 2)
    data = model(doc, "stats_phrases").data
    assert list(data["start"]) == pp.starts.tolist()
    np.testing.assert_allclose(data["x"], proj.coords[:, 0])
    assert data["label"][0] == engine.project.meta["pos"].label(int(pp.values[0]))
    assert data["text"][0] == " ".join(engine.project.tokens(int(pp.starts[0]), int(pp.ends[0]) + 1))
    assert f"{pp.starts.size:,} spans of <b>pos</b>" in model(doc, "stats_phrase_info").text
    model(doc, "stats_phrases").selected.indices = [3]
    a, b = int(pp.starts[3]), int(pp.ends[3])
    assert f"Span {a:,}–{b:,}" in status_of(doc)


def test_compare_the_brush_in_another_source(catalogue):
    from test_document import S2

    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112")
    assert model(doc, "stats_compare_source").value == S2
    click(doc, "stats_compare")
    cmp = stats.compare(engine, S1, engine, S2, 110, 112, 0.3, top=len(shown_matches(doc)), track="pos")
    text = model(doc, "stats_compare_info").text
    assert f"{len(cmp.a['cells'])} cells, {len(cmp.a['matches'])} matches" in text
    assert f"overlap: {cmp.overlap_steps:,} steps (Jaccard {cmp.jaccard:.3f})" in text
    assert f"<td>{cmp.enrichment[0]['difference']:+.2f}</td>" in text


def test_compare_reads_the_threshold_on_the_sessions_scale(catalogue):
    from test_document import S2

    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=1.0, scale="zscore",
                            brush="110,112")
    click(doc, "stats_compare")
    top = session.defaults.match.top
    scaled = stats.compare(engine, S1, engine, S2, 110, 112, 1.0, top=top, track="pos", scale="zscore")
    plain = stats.compare(engine, S1, engine, S2, 110, 112, 1.0, top=top, track="pos")
    assert scaled.a["cells"] != plain.a["cells"], "the scenario must tell the scales apart"
    text = model(doc, "stats_compare_info").text
    assert f"{len(scaled.a['cells'])} cells, {len(scaled.a['matches'])} matches" in text
    assert f"(Jaccard {scaled.jaccard:.3f})" in text


def test_a_failed_long_job_is_a_message(catalogue, monkeypatch):
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112")

    def broken(*args, **kwargs):
        raise ProjectError("track 'pos' is unreadable")
    monkeypatch.setattr(stats, "suggest_cells", broken)
    click(doc, "stats_suggest")
    assert "Suggest failed: track 'pos' is unreadable" in status_of(doc)
    monkeypatch.setattr(stats, "compare", lambda *a, **k: 1 / 0)
    click(doc, "stats_compare")
    assert "Compare failed: internal error (ZeroDivisionError" in model(doc, "stats_compare_info").text


# --- at least m of the k cells on (issue 14) ---------------------------------------------------------------
def detector_numbers(det) -> str:
    """The detector line's figures as the panel writes them."""
    return (f"precision <b>{det.precision:.3f}</b> ({det.true_positives:,}/{det.predicted:,}), recall "
            f"<b>{det.recall:.3f}</b> ({det.true_positives:,}/{det.positives:,}), F1 <b>{det.f1:.3f}</b>")


def assert_panel_at(doc, engine, cells, m, threshold, label, scale="none"):
    """The panel's detector line, curve over thresholds and curve over m equal hypotheses' exact grid."""
    from gpu_matcher import hypotheses

    k = len(cells)
    assert model(doc, "stats_atleast").value == m and model(doc, "stats_atleast").high == k
    det = hypotheses.at_least_detector(engine, S1, cells, m, threshold, "pos", label, scale=scale).detection
    text = model(doc, "stats_detector").text
    rule = f"{k} cells all on" if m == k else f"at least {m} of {k} cells on"
    assert f"<b>{rule}</b>" in text and detector_numbers(det) in text
    grid = hypotheses.at_least_grid(engine, S1, cells, None, "pos", label, scale=scale)
    want = sorted(grid.curve(m).points, key=lambda p: p.threshold)
    curve = model(doc, "stats_curve").data
    assert curve["threshold"] == [p.threshold for p in want]
    assert (curve["precision"], curve["recall"], curve["f1"]) == tuple(
        [getattr(p, c) for p in want] for c in ("precision", "recall", "f1"))
    over = hypotheses.at_least_grid(engine, S1, cells, [threshold], "pos", label, scale=scale).over_m(0)
    shown = model(doc, "stats_m_curve").data
    assert shown["m"] == list(range(1, k + 1))
    assert shown["f1"] == [a.detection.f1 for a in over] and shown["recall"] == [a.detection.recall for a in over]
    best = max(over, key=lambda a: (a.detection.f1, a.m))
    assert model(doc, "stats_best_m").data == ({"m": [best.m], "f1": [best.detection.f1]} if best.detection.f1 > 0
                                               else {"m": [], "f1": []})
    return det


def test_at_least_m_of_k_is_the_exact_grid_and_m_k_is_all_on(catalogue):
    from test_document import url_of

    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112")
    cells = model(doc, "selection").data["cell"]
    k, label = len(cells), model(doc, "stats_label").value
    assert k >= 3, "the scenario needs an m strictly between 1 and k"
    # The default is m = k: every cell on, the old figures.
    all_on = stats.detector(engine, S1, cells, 0.3, "pos", label)
    assert detector_numbers(all_on) in model(doc, "stats_detector").text
    assert_panel_at(doc, engine, cells, k, 0.3, label)
    assert model(doc, "stats_curve").data["f1"] == [
        p.f1 for p in sorted(stats.detector_curve(engine, S1, cells, None, "pos", label).points,
                             key=lambda p: p.threshold)]
    assert "atleast" not in url_of(doc)
    matches = shown_matches(doc)
    # m < k: the detector, both curves and the URL follow; S and the matches do not change.
    m = 1
    model(doc, "stats_atleast").value = m
    det = assert_panel_at(doc, engine, cells, m, 0.3, label)
    assert det.predicted > all_on.predicted, "the scenario must tell m < k from every cell on"
    assert url_of(doc)["atleast"] == str(m) and f"at least {m} of the {k} cells" in status_of(doc)
    assert model(doc, "selection").data["cell"] == cells and shown_matches(doc) == matches
    model(doc, "stats_atleast").value = k - 1
    assert_panel_at(doc, engine, cells, k - 1, 0.3, label)
    # The threshold moves: the curve over m is recomputed at it, m kept.
    set_threshold(doc, 0.35)
    cells35 = model(doc, "selection").data["cell"]
    if len(cells35) >= k - 1:
        assert_panel_at(doc, engine, cells35, k - 1, 0.35, label)
    # Back to m = k: the old "all on" figures again, and atleast= leaves the URL.
    set_threshold(doc, 0.3)
    model(doc, "stats_atleast").value = k
    assert detector_numbers(all_on) in model(doc, "stats_detector").text and "atleast" not in url_of(doc)


def test_atleast_travels_in_the_url_with_a_per_cell_scale(catalogue):
    engine = catalogue.engine("small")
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=1.0, scale="zscore",
                            brush="110,112", atleast=2)
    cells = model(doc, "selection").data["cell"]
    assert len(cells) > 2, "the scenario needs m < k under the z-score"
    label = model(doc, "stats_label").value
    assert_panel_at(doc, engine, cells, 2, 1.0, label, scale="zscore")
    scaled = stats.detector(engine, S1, cells, 1.0, "pos", label, scale="zscore")
    # An m above k is k (every cell on); a client's value outside [1, k] is clamped with a message.
    model(doc, "stats_atleast").value = len(cells) + 5
    assert "outside [1," in status_of(doc)
    assert_panel_at(doc, engine, cells, len(cells), 1.0, label, scale="zscore")
    assert detector_numbers(scaled) in model(doc, "stats_detector").text


def test_a_bad_atleast_falls_back_to_every_cell_with_a_message(catalogue):
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112",
                            atleast="zero")
    assert "atleast 'zero' is not a number of cells >= 1" in status_of(doc)
    assert session.state.atleast is None
    k = len(model(doc, "selection").data["cell"])
    assert model(doc, "stats_atleast").value == k and f"<b>{k} cells all on</b>" in model(doc, "stats_detector").text


def test_a_hostile_atleast_is_refused_or_clamped(catalogue):
    doc, session = open_doc(catalogue, project="small", source=S1, pos=100, threshold=0.3, brush="110,112",
                            atleast=2)
    spinner = model(doc, "stats_atleast")
    for bad, why in ((float("nan"), "not a finite"), (2.5, "whole number")):
        spinner.value = bad
        assert session.state.atleast == 2 and spinner.value == 2 and why in status_of(doc)
    spinner.value = -3
    assert session.state.atleast == 1 and spinner.value == 1 and "outside [1," in status_of(doc)
    assert "at least 1 of" in model(doc, "stats_detector").text


# --- built on demand (issue 16: a session's first page is cheap) -------------------------------------------
def test_the_panel_is_built_when_opened_and_then_equals_an_open_page(catalogue):
    from test_document import url_of

    query = dict(project="small", source=S1, pos=100, threshold=0.3, brush="110,112")
    doc, session = open_plain(catalogue, **query)
    assert session.stv is None and doc.get_model_by_name("stats_enrichment") is None
    assert [c.name for c in model(doc, "stats_view").children if c.name] == ["stats_open"]
    assert "stats" not in url_of(doc)
    before, button = len(doc.models), model(doc, "stats_open")
    click(doc, "stats_open")
    assert len(doc.models) > before + 100, "the panel's models arrive when it is opened"
    assert url_of(doc)["stats"] == "1" and doc.get_model_by_name("stats_open") is None
    opened, _ = open_doc(catalogue, **query)                  # the same scenario opened from its URL
    for name, attr in (("stats_enrichment", "data"), ("stats_curve", "data"), ("stats_best", "data"),
                       ("stats_detector", "text"), ("stats_track", "value"), ("stats_label", "value")):
        assert getattr(model(doc, name), attr) == getattr(model(opened, name), attr), name
    # Opened, it works like the panel always did: a new label recomputes the detector.
    model(doc, "stats_label").value = "NOUN"
    assert "pos = NOUN" in model(doc, "stats_detector").text
    after = len(doc.models)
    session.on_open_stats()                                   # a second click (a stale button) changes nothing
    assert len(doc.models) == after and session.stv is not None


def test_atleast_in_the_url_opens_the_panel_and_a_bad_stats_value_is_a_message(catalogue):
    doc, session = open_plain(catalogue, project="small", source=S1, brush="110,112", threshold=0.3, atleast=2)
    assert session.stv is not None and model(doc, "stats_atleast").value == 2
    doc, session = open_plain(catalogue, project="small", stats="yes")
    assert session.stv is None and "stats 'yes' is not 0 or 1" in status_of(doc)
    doc, session = open_plain(catalogue, project="nested/wide", stats=1)   # no discrete track: no panel
    assert session.state.stats is False and doc.get_model_by_name("stats_view") is None
