"""What a hostile or careless client can send, on a bare Document: text that reaches the page is escaped,
every widget value is checked on the server (a visible message, the state unchanged or clamped), the
slider never holds a stale ``value_throttled``, and answers for a closed session go nowhere."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from urllib.parse import parse_qs

import pytest
from bokeh.document import Document
from bokeh.models import Div

from bokeh_app.app import build_document
from bokeh_app.catalogue import Catalogue
from bokeh_app.worker import Worker, in_flight

from conftest import make_app_project
from test_document import DEFAULTS, S1, engine_matches, model, open_doc, set_threshold, shown_matches

XSS = '<img src=x onerror="window.__xss=1">'


@pytest.fixture(scope="module")
def catalogue(app_data) -> Catalogue:
    return Catalogue(app_data, "numpy")


@pytest.fixture(scope="module")
def hostile_catalogue(tmp_path_factory) -> Catalogue:
    """A project whose name, description and labels are HTML (a project file is data, not markup)."""
    root = tmp_path_factory.mktemp("hostile")
    folder = make_app_project(root / "evil", 1500, 24, seed=5, name="x")
    yml = (folder / "lstm.yml").read_text()
    yml = yml.replace("name: x\n", f"name: '{XSS}'\n").replace(
        "description: app test", "description: <script>window.__xss=2</script> app test")
    (folder / "lstm.yml").write_text(yml)
    (folder / "pos.dict").write_text("".join(f"<b>{lab}</b><img/src=x/onerror=alert({i}) {i}\n"
                                             for i, lab in enumerate(["NOUN", "VERB", "ADJ", "DET", "ADV"])))
    make_app_project(root / "plain", 800, 16, seed=6, tracks=False)
    return Catalogue(root, "numpy")


def markup(doc) -> list[str]:
    """Every HTML text the page renders as markup (Divs: the status line, panels, the landing table)."""
    return [m.text for m in doc.models if isinstance(m, Div)]


def assert_no_markup_from(doc) -> None:
    for text in markup(doc):
        assert "<img" not in text.lower() and "<script" not in text.lower() and "<b>noun" not in text.lower(), text


def status(doc) -> str:
    return model(doc, "status").text


def url(doc) -> dict:
    return parse_qs(model(doc, "url_state").data["query"][0])


# --- escaping ------------------------------------------------------------------------------------------
def test_phrase_search_echo_is_escaped(catalogue):
    doc, session = open_doc(catalogue, project="small")
    model(doc, "search").value = XSS
    info = model(doc, "search_info").text + status(doc)
    assert "&lt;img" in info or "does not occur" in info
    assert_no_markup_from(doc)
    # A phrase made of real tokens plus markup: the hit count line quotes it escaped.
    word = session.project.tokens(100, 101)[0]
    model(doc, "search").value = f"{word} {XSS}"
    assert_no_markup_from(doc)


def test_project_texts_and_labels_are_escaped(hostile_catalogue):
    doc, view = open_doc(hostile_catalogue)                       # the landing view lists both projects
    assert "&lt;img" in model(doc, "project_list").text
    assert_no_markup_from(doc)
    doc, session = open_doc(hostile_catalogue, project="evil", brush="100,102",
                            threshold="0.2", tracks=XSS, source=XSS, stats=1)
    assert "&lt;img" in status(doc) and "&lt;img" in doc.roots[0].text
    assert_no_markup_from(doc)
    labels = model(doc, "stats_label").options
    assert any("<img" in str(lab) for lab in labels)              # a Select shows text, never markup
    model(doc, "stats_label").value = labels[0]
    assert_no_markup_from(doc)


# --- widget values checked on the server ---------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_threshold_that_is_no_number_is_refused_with_a_message(catalogue, bad):
    doc, session = open_doc(catalogue, project="small", brush="110,112", threshold="0.25")
    before = (list(session.cells), shown_matches(doc))
    slider = model(doc, "threshold")
    set_threshold(doc, bad)
    assert session.state.threshold == 0.25 and (list(session.cells), shown_matches(doc)) == before
    assert "not a finite number" in status(doc) and "warn" in status(doc)
    assert slider.value == 0.25 and slider.value_throttled == 0.25
    assert url(doc)["threshold"] == ["0.25"]


def test_threshold_outside_the_range_is_clamped_with_a_message(catalogue):
    doc, session = open_doc(catalogue, project="small", brush="110,112", threshold="0.25")
    set_threshold(doc, 7.5)
    hi = model(doc, "threshold").end
    assert session.state.threshold == pytest.approx(hi, abs=1e-4) and "outside" in status(doc)
    assert model(doc, "threshold").value == session.state.threshold
    cells = session.engine.select(S1, 110, 112, session.state.threshold).cells
    assert session.cells == cells


@pytest.mark.parametrize("name", ["left", "right"])
def test_margins_are_checked(catalogue, name):
    doc, session = open_doc(catalogue, project="small", brush="110,112", threshold="0.25")
    spinner = model(doc, name)
    spinner.value = 1e9
    top = DEFAULTS.select.max_margin
    assert getattr(session.state, name) == top and spinner.value == top
    assert "outside" in status(doc) and url(doc)[name] == [str(top)]
    spinner.value = float("nan")
    assert getattr(session.state, name) == top and spinner.value == top and "not a finite" in status(doc)
    spinner.value = 2.5
    assert getattr(session.state, name) == top and "whole number" in status(doc)
    spinner.value = -3
    assert getattr(session.state, name) == 0 and spinner.value == 0


def test_word_width_that_is_not_offered_is_refused(catalogue):
    doc, session = open_doc(catalogue, project="small", ww="24")
    for bad in ("-5", "abc", "1000000", "7"):
        model(doc, "word_width").value = bad
        assert session.state.word_width == 24 and model(doc, "word_width").value == "24"
        assert "is not one of" in status(doc) and url(doc)["ww"] == ["24"]


def test_position_scale_source_and_track_are_checked(catalogue):
    doc, session = open_doc(catalogue, project="small", pos="500", stats=1)
    T = session.project.T
    model(doc, "position").value = float("nan")
    assert session.state.pos == 500 and model(doc, "position").value == 500 and "not a finite" in status(doc)
    model(doc, "position").value = 10 ** 12
    assert session.state.pos == session.clamp_pos(T - 1) and "outside" in status(doc)
    model(doc, "scale").value = "bogus"
    assert session.state.scale == "none" and model(doc, "scale").value == "none" and "scale" in status(doc)
    model(doc, "source").value = "../../etc/passwd::x"
    assert session.state.source == S1 and model(doc, "source").value == S1 and "not in this project" in status(doc)
    model(doc, "stats_track").value = "score"                       # a scalar track: no labels
    assert model(doc, "stats_track").value == "pos" and "not a discrete" in status(doc)
    model(doc, "stats_label").value = "NOT-A-LABEL"
    assert model(doc, "stats_label").value in model(doc, "stats_label").options
    model(doc, "search").value = "a " * 2000
    assert "at most" in status(doc)


# --- the stale view: the slider's first value_throttled ------------------------------------------------
def test_a_release_at_the_sliders_first_value_is_not_lost(catalogue):
    """Opened at θ = 0.35, the slider was built at 0.3: the browser sends a release only when it differs
    from the ``value_throttled`` it got, so that must be 0.35 (the server applies a patch the same way)."""
    doc, session = open_doc(catalogue, project="small", brush="110,112", threshold="0.35")
    slider = model(doc, "threshold")
    assert slider.value == slider.value_throttled == 0.35
    slider.set_from_json("value", 0.3)
    slider.set_from_json("value_throttled", 0.3)                   # what a release at 0.3 sends
    assert session.state.threshold == 0.3
    cells = session.engine.select(S1, 110, 112, 0.3).cells
    assert session.cells == cells and f"Threshold 0.3:" in status(doc)
    assert shown_matches(doc) == engine_matches(session.engine, S1, cells, 0.3)
    # ... and after a scale change (the slider re-ranged by the server) the same holds.
    model(doc, "scale").value = "zscore"
    assert slider.value == slider.value_throttled == session.state.threshold


# --- answers for a closed session ------------------------------------------------------------------------
def test_answers_for_a_destroyed_session_go_nowhere(catalogue, caplog):
    """A match finishing after its browser left: no callback on the destroyed Document, nothing logged."""
    class Context:                              # what a server session's Document has until it is destroyed
        destroyed = False

    doc = Document()
    context = Context()
    on_change = lambda event: None                  # noqa: E731 (the server session's own listener)
    doc.on_change(on_change)
    doc._session_context = lambda: context      # (Document keeps a weak reference)
    worker = Worker(synchronous=False)
    worker.attach(doc)
    applied: list = []

    started = threading.Event()

    def late():
        started.set()
        time.sleep(0.3)
        return "late"

    async def scenario():
        worker.submit("match", late, applied.append)
        assert started.wait(10)
        doc.destroy(on_change)                           # the browser went away mid-match
        deadline = time.monotonic() + 10
        while in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert applied == [] and not worker.alive and not in_flight()
    assert not [r for r in caplog.records if "_change_callbacks" in r.getMessage()]
    worker.submit("match", lambda: "after", applied.append)          # a late submit adds nothing either
    assert applied == []
