"""Real-browser tests of issue 15's views (``../shared/BROWSER_TESTING.md``): a click and a brush on the
overview strip move and zoom the detail view, and moving a meta track with the picker's buttons puts the
new order in the address bar. A genome project (tests/app/genome_data.py) and a plain one; screenshots
go to ``test-output/``."""

from __future__ import annotations


import numpy as np
import pytest

from bokeh_app.config import load_defaults

from conftest import make_app_project, running_server
from genome_data import CONTIG_LENGTHS, SITES, make_genome_project
from test_browser import AppPage, browser, pytestmark  # noqa: F401 (its Chromium fixture and skip mark)

DEFAULTS = load_defaults()


OVERVIEW_READY_JS = """
() => { const m = Bokeh.documents[0].get_model_by_name('overview');
        if (m == null) { return false; }
        const d = m.data;
        return (d instanceof Map ? d.get('x') : d.x).length > 0; }
"""


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-genome")
    make_genome_project(root)
    make_app_project(root / "small", 3000, 48, seed=1, name="small test project")
    with running_server(root) as srv:
        yield f"http://127.0.0.1:{srv.port}/"


@pytest.fixture
def page(browser, server_url, test_output):
    app = AppPage(browser, server_url, test_output)
    yield app
    app.close()                                     # fails the test on any console or page error


def chr2(offset: int) -> int:
    return CONTIG_LENGTHS["chr1"] + offset


def test_overview_click_and_brush_zoom_the_detail_view(page):
    site = chr2(SITES["chr2"][4])
    page.open({"project": "genome", "source": "states_cnn::cnn", "pos": "chr2:1", "threshold": "4",
               "brush": f"{site},{site + 5}"})
    page.wait_for(OVERVIEW_READY_JS)
    page.wait_for_matches()
    assert page.query()["pos"] == "chr2:1"
    ink, _, _ = page.pixels("overview_plot")
    assert ink > 500                                 # the bands are drawn, not only the frame
    page.screenshot("genome_overview")
    # A click at chr2:3,000 (x is the position in the contig) centres the detail view there.
    x, y = page.to_screen("overview_plot", 3000, 2.5)
    page.page.mouse.click(x, y)
    page.wait_for("() => new URLSearchParams(location.search).get('pos') !== 'chr2:1'")
    W = DEFAULTS.select.window_px // int(page.value("word_width", "value"))
    pos = page.query()["pos"]
    assert pos.startswith("chr2:")
    first = int(pos.split(":")[1].replace(",", ""))
    assert abs(first + W // 2 - 3000) <= 10
    assert "centred on chr2:" in page.status()
    # A brush over chr2:1,000-2,999 zooms out to one pixel a base and shows the range's start.
    page.drag("overview_plot", 1000, 2999, 2.5)
    page.wait_for("() => new URLSearchParams(location.search).get('ww') === '1'")
    first = int(page.query()["pos"].split(":")[1].replace(",", ""))
    assert abs(first - 1000) <= 12                  # a pixel of the strip is about 5 bases here
    assert page.value("word_width", "value") == "1"
    page.screenshot("genome_zoomed_out")


def test_track_order_from_the_picker_goes_to_the_address_bar(page):
    page.open({"project": "small", "pos": "100"})
    assert "tracks" not in page.query()
    page.wait_for("() => Bokeh.documents[0].get_model_by_name('track_move') != null")
    page.page.evaluate("() => { const m = Bokeh.documents[0].get_model_by_name('track_move');"
                       " m.setv({value: 'topk'}); }")
    page.page.locator("button", has_text="▲").click()
    page.wait_for("() => new URLSearchParams(location.search).get('tracks') === 'pos,topk,score'")
    strips = page.page.evaluate("() => Bokeh.documents[0].get_model_by_name('select_view')"
                                ".children[1].children[0].children.map((p) => p.name)")
    assert strips[2:] == ["track_pos", "track_topk", "track_score"]
    # The new order survives a reload from the address bar.
    page.open(page.page.url.split("?", 1)[1])
    assert page.query()["tracks"] == "pos,topk,score"
    assert np.array_equal(page.value("tracks", "value"), ["pos", "topk", "score"])
