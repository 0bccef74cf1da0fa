"""A genome project in the app, on a bare Document (issue 15): coordinates in the URL, titles, go-to box,
match rows and motif search; the overview of one contig (tests/app/genome_data.py builds the project)."""

from __future__ import annotations

import numpy as np
import pytest

from bokeh_app.catalogue import Catalogue
from bokeh_app.config import load_defaults

from conftest import make_app_project
from doc_helpers import model, open_doc, status, url_of
from genome_data import CONTIG_LENGTHS, MOTIF, SITES, make_genome_project

DEFAULTS = load_defaults()
SOURCE = "states_cnn::cnn"


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Catalogue:
    root = tmp_path_factory.mktemp("genome-app")
    make_genome_project(root / "data")
    make_app_project(root / "data" / "plain", 600, 8, seed=2, tracks=False, second_source=False, name="plain")
    return Catalogue(root / "data", "numpy")


def start_of(name: str) -> int:
    names = list(CONTIG_LENGTHS)
    return sum(CONTIG_LENGTHS[n] for n in names[:names.index(name)])


def test_url_holds_coordinates_and_titles_show_them(catalogue):
    doc, session = open_doc(catalogue, project="genome", pos="chr2:1,001")
    assert session.state.pos == start_of("chr2") + 1000
    assert url_of(doc)["pos"] == "chr2:1,001"
    assert model(doc, "select_plot").title.text.startswith("chr2:1,001-")
    # The overview is chr2, the whole contig.
    assert session.overview.span.name == "chr2"
    assert (session.overview.span.start, session.overview.span.stop) == (start_of("chr2"),
                                                                          start_of("chr2") + CONTIG_LENGTHS["chr2"])
    assert "overview of chr2: 5,000 bases" in model(doc, "overview_plot").title.text
    # Plain numbers are still steps; a bad coordinate is named and the start shown.
    doc2, session2 = open_doc(catalogue, project="genome", pos="1234")
    assert session2.state.pos == 1234 and url_of(doc2)["pos"] == "chr1:1,235"
    doc3, session3 = open_doc(catalogue, project="genome", pos="chr9:5")
    assert session3.state.pos == 0 and "pos 'chr9:5'" in status(doc3) and "chr9" in status(doc3)
    doc4, session4 = open_doc(catalogue, project="plain", pos="chr1:5")
    assert session4.state.pos == 0 and "has no genome" in status(doc4)


def test_go_to_coordinates_contigs_and_ranges(catalogue):
    doc, session = open_doc(catalogue, project="genome", pos=0)
    goto = model(doc, "goto")
    goto.value = "chr3"                                      # a whole contig: zoomed out to 1 px a base
    assert session.state.pos == start_of("chr3") and session.word_width == 1
    assert session.overview.span.name == "chr3" and url_of(doc)["pos"] == "chr3:1"
    goto.value = "chr2:2,001-2,010"                          # a short range: centred and marked
    a = start_of("chr2") + 2000
    assert session.state.pos <= a < a + 10 <= session.state.pos + session.window
    assert model(doc, "focus_box").visible and "chr2:2,001-2,010" in status(doc)
    pos = session.state.pos
    goto.value = "chr2:999,999"
    assert session.state.pos == pos and "chr2" in status(doc)


def test_brush_over_the_motif_matches_list_coordinates_and_motif_search(catalogue):
    a = start_of("chr2") + SITES["chr2"][2]
    doc, session = open_doc(catalogue, project="genome", source=SOURCE, pos=a - 10, brush=f"{a},{a + 5}", threshold=4)
    assert session.cells == [0, 1, 2, 3]                     # the motif cells, on a ReLU axis
    y = model(doc, "select_plot").y_range
    assert -1.0 < y.start < 0 and y.end > 2.0                 # the ReLU values, not tanh's [-1, 1]
    data = model(doc, "matches").data
    assert data["where"] and all(w.startswith("chr") for w in data["where"])
    site_starts = {start_of(n) + s for n, starts in SITES.items() for s in starts}
    assert set(data["start"]) <= site_starts
    words = model(doc, "match_words").data
    row0 = [w for w, y_, p in zip(words["word"], words["y"], words["pos"]) if y_ == 0 and p == -1]
    assert row0 and data["where"][0] in row0[0]
    # Motif search (IUPAC, both strands): every planted site, listed as coordinates.
    model(doc, "search").value = "CACGYG"
    hits = model(doc, "search_hits").data
    assert len(session.search.hits) >= sum(len(v) for v in SITES.values())
    assert site_starts <= set(session.search.hits)
    assert all(p.startswith("chr") for p in hits["pos"])
    assert f"[{MOTIF}]" in hits["context"][session.search.hits.index(a)]
    # The overview strip's matches band covers the sites' bins of chr2.
    bands = np.asarray(model(doc, "overview").data["band"])
    assert (bands == 0).sum() >= 1 and (bands == 1).sum() >= 1


def test_a_bigwig_track_with_gaps_draws_in_the_strip_and_the_overview(catalogue):
    pytest.importorskip("pyBigWig")
    doc, session = open_doc(catalogue, project="genome", pos="chr2:1,981", tracks="signal,sites")
    assert [p.name for p in session.sv.extra["strips"].children[2:]] == ["track_signal", "track_sites"]
    data = model(doc, "track_signal_data").data
    colours = data["color"]
    assert session.window > 25 and set(colours[20:]) == {"#ffffff"}     # past chr2:2,000: no data, blank
    assert len(set(colours[:20])) > 5                                  # data: the palette
    mapper = session.sv.tracks["signal"].mapper
    assert 40 < mapper.high <= 50
    # The overview's track band: signal over chr2, bars only where the file has data.
    assert model(doc, "overview_track").value == "signal"
    cols = model(doc, "overview").data
    xs = np.asarray(cols["x"])[np.asarray(cols["band"]) == 1]
    assert xs.size and xs.max() <= 2000.5 and xs.min() < 100
