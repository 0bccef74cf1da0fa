"""Real-browser tests: the app in Debian's Chromium through Playwright (``../shared/BROWSER_TESTING.md``).

One in-process server (module scope) serves three projects: ``small`` (T=3000, D=48, meta tracks),
``d650`` (T=4000, D=650) for the update timing and wire size, and ``long`` (T=10^6, synthetic, NumPy
backend) for the full-match timing. Every answer shown is compared with the engine's. Screenshots and
the measured figures go to ``test-output/`` (``browser_figures.json``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import numpy as np
import pytest

from bokeh_app.catalogue import get_catalogue
from bokeh_app.config import load_defaults
from bokeh_app.server import free_port
from bokeh_app.views.select import PATTERN_BRUSH

from conftest import make_app_project, running_server

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LONG_T = int(os.environ.get("LSTMVIS_BROWSER_LONG_T", 1_000_000))
LONG_D = int(os.environ.get("LSTMVIS_BROWSER_LONG_D", 128))
S1, S2 = "states::states1", "states::states2"
DEFAULTS = load_defaults()

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)"),
]

#: Before any page script: time and size every websocket frame the page receives.
INIT_JS = """
window.__lv = {frames: [], paints: {}, changes: {}, ups: []};
const NativeWS = window.WebSocket;
class TimedWS extends NativeWS {
  constructor(...args) {
    super(...args);
    this.addEventListener('message', (ev) => {
      const d = ev.data;
      const text = typeof d === 'string';
      const size = text ? new TextEncoder().encode(d).length : (d.byteLength ?? d.size ?? 0);
      window.__lv.frames.push([performance.now(), size, text ? (d.length < 4000 ? d : d.slice(0, 4000)) : null]);
    });
  }
}
window.WebSocket = TimedWS;
window.addEventListener('pointerup', () => window.__lv.ups.push(performance.now()), true);
window.__col = (name, key) => {
  const data = Bokeh.documents[0].get_model_by_name(name).data;
  return Array.from((data instanceof Map ? data.get(key) : data[key]) ?? []);
};
"""

#: After load: note every paint of the named plots and every change of the named models.
HOOKS_JS = """
([plots, models]) => {
  const doc = Bokeh.documents[0];
  for (const name of plots) {
    const view = Bokeh.index.find_one(doc.get_model_by_name(name));
    if (view == null || view.__lv_hooked) continue;
    const paint = view._actual_paint;
    view._actual_paint = function (...args) {
      const out = paint.apply(this, args);
      const painted = performance.now();
      // On screen: the next frame starts once this paint has been rasterised and composited.
      requestAnimationFrame(() => (window.__lv.paints[name] ||= []).push([painted, performance.now()]));
      return out;
    };
    view.__lv_hooked = true;
  }
  for (const name of models) {
    const model = doc.get_model_by_name(name);
    model.change.connect(() => (window.__lv.changes[name] ||= []).push(performance.now()));
  }
}
"""

PIXELS_JS = """
(name) => {
  const view = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name(name));
  const canvas = view.export('png', false).canvas;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0, signature = 0, darkness = 0;
  for (let i = 0; i < data.length; i += 4) {
    const dark = 765 - data[i] - data[i + 1] - data[i + 2];
    darkness += dark;
    if (dark > 30) ink++;
    signature = (signature * 31 + data[i] + 7 * data[i + 1] + 13 * data[i + 2]) % 1000000007;
  }
  return [ink, signature, darkness];
}
"""

WAIT_IDLE_JS = """
() => {
  if (!(window.Bokeh && Bokeh.documents.length)) { return false; }
  const doc = Bokeh.documents[0];
  const roots = doc.roots();
  if (roots.some((r) => r.name === 'loading_status')) { return false; }
  // Views of an added root are built asynchronously: on a project page the plots the tests draw on too.
  const want = roots.some((r) => r.name === 'project_view') ? ['select_plot', 'match_plot'] : [];
  const models = [...roots.filter((r) => r.type !== 'ColumnDataSource'), ...want.map((n) => doc.get_model_by_name(n))];
  const views = models.map((m) => (m == null ? null : Bokeh.index.find_one(m)));
  return views.length > 0 && views.every((v) => v != null && v.has_finished());
}
"""

TO_SCREEN_JS = """
([name, x, y]) => {
  const view = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name(name));
  let rect = view.el.getBoundingClientRect();
  const sy = rect.top + view.frame.y_scale.compute(y);
  if (sy < 0 || sy > window.innerHeight) {          // bring the point into the viewport first
    window.scrollBy(0, sy - window.innerHeight / 2);
    rect = view.el.getBoundingClientRect();
  }
  return [rect.left + view.frame.x_scale.compute(x), rect.top + view.frame.y_scale.compute(y)];
}
"""


# --- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser_data(tmp_path_factory) -> Path:
    from benchmarks.synth import make_project
    root = tmp_path_factory.mktemp("browser-data")
    make_app_project(root / "small", 3000, 48, seed=1, name="small test project")
    make_app_project(root / "d650", 4000, 650, seed=4, tracks=False, second_source=False, name="d650")
    make_project(root / "long", LONG_T, LONG_D, seed=5)
    wide_project(root / "wide")
    catalogue = get_catalogue(root, "numpy")
    for pid in catalogue.ids:                       # layouts are built before anything is timed
        catalogue.engine(pid).layout(S1)
    return root


WIDE_LABELS = ["opening_parenthesis", "closing_parenthesis", "sentence_final_punctuation", "other"]


def wide_project(folder: Path) -> None:
    """D = 1,024, a ``transform: none`` source with one outlier unit (cell 7), and meta tracks with long
    names and labels (issue 14: cut labels)."""
    from gpu_matcher import open_project
    make_app_project(folder, 1500, 1024, seed=3, tracks=False, name="wide outlier project", outlier=(7, 40.0))
    project = open_project(folder)
    words = np.asarray(project.word_ids_dataset[()]) if project.word_ids_dataset is not None else np.arange(1500)
    project.add_meta("punctuation_class", (words % len(WIDE_LABELS)).astype(np.int32), kind="discrete",
                     labels=WIDE_LABELS)
    project.add_meta("prose_position_in_sentence", np.linspace(0, 1, 1500).astype(np.float32), kind="scalar")


@pytest.fixture(scope="module")
def server_url(browser_data):
    with running_server(browser_data) as srv:
        yield f"http://127.0.0.1:{srv.port}/"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
    yield chromium
    chromium.close()
    pw.stop()


@pytest.fixture(scope="module")
def figures(test_output):
    out: dict = {"machine": machine(), "backend": "numpy", "long": {"T": LONG_T, "D": LONG_D}}
    yield out
    (test_output / "browser_figures.json").write_text(json.dumps(out, indent=1))
    print("\nbrowser figures:", json.dumps(out, indent=1))


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores; chromium headless (canvas); numpy {np.__version__}"


# --- a page of the app ----------------------------------------------------------------------------------
class AppPage:
    def __init__(self, browser, base_url: str, test_output: Path, width: int = 1500, height: int = 1100):
        self.base_url, self.test_output = base_url, test_output
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("console", lambda msg: self.errors.append(f"console.{msg.type}: {msg.text}")
                     if msg.type == "error" else None)
        self.page.add_init_script(INIT_JS)

    def open(self, query: dict | str = "", path: str = "") -> "AppPage":
        q = query if isinstance(query, str) else urlencode(query)
        self.page.goto(self.base_url + path + (f"?{q}" if q else ""))
        self.wait_idle()
        return self

    def wait_idle(self, timeout: float = 30_000) -> None:
        # A project page is built after the first pull and replaces a small "Opening…" page; BokehJS's
        # ``document.is_idle`` follows only the roots of the first render, so each root's view is asked.
        self.page.wait_for_function(WAIT_IDLE_JS, timeout=timeout)

    def hook(self, plots: list[str], models: list[str]) -> None:
        self.page.evaluate(HOOKS_JS, [plots, models])

    def value(self, name: str, attr: str):
        return self.page.evaluate("([n, a]) => { const v = Bokeh.documents[0].get_model_by_name(n)[a];"
                                  " return (v instanceof Map) ? Object.fromEntries(v) : v; }", [name, attr])

    def column(self, source: str, column: str) -> list:
        return self.page.evaluate("([s, c]) => window.__col(s, c)", [source, column])

    def matches(self) -> list[tuple]:
        cols = [self.column("matches", c) for c in ("start", "end", "length", "inter", "union")]
        return [tuple(int(v) for v in row) for row in zip(*cols)]

    def status(self) -> str:
        return re.sub(r"<[^>]+>", " ", self.value("status", "text")).replace("&#x27;", "'")

    def wait_for(self, js: str, arg=None, timeout: float = 30_000) -> None:
        self.page.wait_for_function(js, arg=arg, timeout=timeout)

    def wait_for_matches(self, timeout: float = 30_000) -> None:
        self.wait_for("() => window.__col('matches', 'start').length > 0"
                      " && !Bokeh.documents[0].get_model_by_name('match_busy').visible", timeout=timeout)

    def pixels(self, name: str) -> tuple[int, int, int]:
        """(pixels with ink, a signature of the image, total darkness) of a plot's canvas."""
        ink, signature, darkness = self.page.evaluate(PIXELS_JS, name)
        return int(ink), int(signature), int(darkness)

    def to_screen(self, name: str, x: float, y: float) -> tuple[float, float]:
        sx, sy = self.page.evaluate(TO_SCREEN_JS, [name, x, y])
        return float(sx), float(sy)

    def drag(self, name: str, x0: float, x1: float, y: float) -> None:
        a, b = self.to_screen(name, x0, y), self.to_screen(name, x1, y)
        mouse = self.page.mouse
        mouse.move(*a)
        mouse.down()
        mouse.move(*b, steps=8)
        mouse.up()

    def query(self) -> dict:
        return {k: v[-1] for k, v in parse_qs(urlparse(self.page.url).query, keep_blank_values=True).items()}

    def lv(self) -> dict:
        return self.page.evaluate("() => window.__lv")

    def screenshot(self, name: str) -> Path:
        path = self.test_output / f"browser_{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


@pytest.fixture
def app_page(browser, server_url, test_output):
    pages = []

    def make(**kwargs) -> AppPage:
        page = AppPage(browser, server_url, test_output, **kwargs)
        pages.append(page)
        return page
    yield make
    for page in pages:
        page.close()                                # fails the test on any console or page error


def engine_of(browser_data, pid: str):
    return get_catalogue(browser_data, "numpy").engine(pid)


def engine_rows(engine, cells, threshold, left=0, right=0) -> list[tuple]:
    return [(m.start, m.end, m.length, m.inter, m.union)
            for m in engine.match(S1, cells, threshold, left, right, top=DEFAULTS.match.top,
                                  min_length=DEFAULTS.match.min_length)]


def messages(frames: list, since: float) -> list[dict]:
    """Bokeh protocol messages rebuilt from the page's frames: header, metadata, content, buffers."""
    out, i = [], 0
    frames = [f for f in frames if f[0] >= since]
    while i < len(frames):
        t, size, text = frames[i]
        try:
            header = json.loads(text) if text else None
        except ValueError:
            header = None
        if not header or "msgtype" not in header:
            i += 1
            continue
        count = 3 + 2 * int(header.get("num_buffers", 0))
        parts = frames[i:i + count]
        out.append({"type": header["msgtype"], "t": parts[-1][0], "bytes": sum(p[1] for p in parts),
                    "content": parts[2][2] if len(parts) > 2 else ""})
        i += count
    return out


def split_at_match_result(msgs: list[dict], busy_id: str) -> tuple[list[dict], list[dict]]:
    """The select-view burst and what follows it: the burst ends by showing ``match_busy``."""
    for k, m in enumerate(msgs):
        content = (m["content"] or "").replace(" ", "")
        if busy_id in content and '"attr":"visible","new":true' in content:
            return msgs[:k + 1], msgs[k + 1:]
    return msgs, []


def on_screen(lv: dict, plot: str, after: float) -> float:
    """When the first paint of ``plot`` after ``after`` was on screen (the next animation frame)."""
    return min(shown for painted, shown in lv["paints"].get(plot, []) if painted >= after)


def screen_delay(lv: dict, plot_changes: dict[str, str], frames_since: float) -> float:
    """ms from the arrival of the message that changed each plot's data to that change on screen.

    (A frame's arrival is when the page's handler saw it: time the page was busy before counts.)"""
    delays = []
    frames = [f[0] for f in lv["frames"] if f[0] >= frames_since]
    for plot, model in plot_changes.items():
        changed = [t for t in lv["changes"].get(model, []) if t >= frames_since]
        assert changed, f"{model} did not change"
        t_change = changed[-1]
        arrived = max(t for t in frames if t <= t_change)
        delays.append(on_screen(lv, plot, t_change) - arrived)
    return max(delays)


# --- tests ------------------------------------------------------------------------------------------------
def test_landing_lists_projects_and_opens_one(app_page, browser_data):
    page = app_page().open()
    html = page.value("project_list", "text")
    for pid in ("small", "d650", "long"):
        assert f"?project={pid}" in html
    assert "4,000 × 650" in html and f"{LONG_T:,} × {LONG_D}" in html
    page.screenshot("landing")
    page.page.get_by_role("link", name="small").click()
    page.page.wait_for_url(re.compile(r".*project=small.*"))
    page.wait_idle()
    assert page.pixels("select_plot")[0] > 5000
    assert "Brush a range of words" in page.status()
    # The page is built into its shell off the event loop; the address bar follows when the built page's
    # state reaches it, which may come a moment after the page went idle.
    page.wait_for("() => new URLSearchParams(location.search).get('source') !== null")
    assert page.query()["project"] == "small" and page.query()["source"] == S1


def test_address_bar_follows_a_page_built_before_the_first_pull(app_page, browser_data):
    """The page's models are built off the loop right after the HTTP request; on a quick build they are in
    the document before the browser's websocket pulls it, so the query arrives in the pull, not as a
    change (CI once saw the address bar never follow). The websocket is held back to make that the case."""
    get_catalogue(browser_data, "numpy").engine("small")
    page = app_page()

    def late(ws) -> None:
        time.sleep(2.0)                          # the build (project open: well under a second) finishes first
        ws.connect_to_server()
    page.page.route_web_socket(re.compile(r".*/ws.*"), late)
    page.open({"project": "small"})
    page.wait_for("() => new URLSearchParams(location.search).get('source') !== null", timeout=15_000)
    assert page.query()["project"] == "small" and page.query()["source"] == S1
    assert "Brush a range of words" in page.status()


def test_pages_of_forked_server_processes(browser, browser_data, test_output):
    """``lstmvis serve --num-procs 2``: whichever process a page's HTTP request and its WebSocket reach (a
    page request's session waits for its WebSocket before its page is built; the process that gets the
    WebSocket builds it), every page gets the engine's matches."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "gpu_matcher.cli", "serve", str(browser_data), "--port",
                             str(port), "--backend", "numpy", "--num-procs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        listening, deadline = 0, time.time() + 90
        while listening < 2 and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            listening += "open http" in line
        assert listening == 2
        engine = engine_of(browser_data, "small")
        want = engine_rows(engine, engine.select(S1, 120, 122, 0.4, 0, 0).cells, 0.4)
        assert want
        for _ in range(4):
            page = AppPage(browser, f"http://127.0.0.1:{port}/", test_output)
            page.open({"project": "small", "threshold": 0.4, "brush": "120,122", "left": 0, "right": 0})
            page.wait_for_matches()
            assert page.matches() == want
            page.close()
    finally:
        proc.terminate()
        proc.wait(20)


def test_scenario_url_restores_both_views(app_page, browser_data):
    engine = engine_of(browser_data, "small")
    page = app_page().open({"project": "small", "pos": 110, "threshold": 0.4, "brush": "120,122",
                            "left": 1, "right": 1, "tracks": "pos,topk"})
    page.wait_for_matches()
    cells = engine.select(S1, 120, 122, 0.4, 1, 1).cells
    assert cells and page.column("selection", "cell") == cells
    assert page.matches() == engine_rows(engine, cells, 0.4, 1, 1)
    assert page.value("threshold", "value") == 0.4
    assert page.value("track_topk", "visible") is True            # a hidden track has no strip at all
    assert page.page.evaluate("() => Bokeh.documents[0].get_model_by_name('track_score') === null")
    for plot, least in (("select_plot", 20_000), ("count_plot", 2_000), ("match_plot", 20_000),
                        ("track_pos", 2_000), ("match_heatmap_plot_n(t)", 2_000)):
        assert page.pixels(plot)[0] > least, plot
    page.screenshot("scenario")


def test_mouse_brush_changes_S_the_heatmap_and_the_matches(app_page, browser_data):
    engine = engine_of(browser_data, "small")
    page = app_page().open({"project": "small", "pos": 200, "threshold": 0.3})
    assert page.column("selection", "cell") == [] and page.matches() == []
    before = page.pixels("count_plot")
    page.drag("select_plot", 3.6, 6.4, 0.0)              # word centres 4, 5 and 6
    page.wait_for("() => window.__col('selection', 'cell').length > 0")
    page.wait_for_matches()
    assert page.query()["brush"] == "204,206"
    cells = engine.select(S1, 204, 206, 0.3).cells
    assert page.column("selection", "cell") == cells
    assert page.value("highlight_cells", "args")["cells"] == cells
    assert page.matches() == engine_rows(engine, cells, 0.3)
    counts = np.asarray(page.column("counts", "n"))
    np.testing.assert_array_equal(counts, engine.counts(S1, cells, 0.3, 200, 200 + counts.size))
    after = page.pixels("count_plot")
    assert after[1] != before[1] and after[2] > before[2] + 100_000
    page.screenshot("brushed")


def test_hypothesis_panel_draws_and_applies_the_best_threshold(app_page, browser_data):
    from gpu_matcher import stats

    engine = engine_of(browser_data, "small")
    page = app_page().open({"project": "small", "pos": 100, "threshold": 0.3, "brush": "110,112"})
    page.wait_for_matches()
    # The panel is built on demand (issue 16): its button brings it, its numbers and the URL's stats=1.
    assert page.page.evaluate("() => Bokeh.documents[0].get_model_by_name('stats_enrichment') === null")
    page.page.get_by_role("button", name="show the hypothesis statistics").click()
    page.wait_for("() => Bokeh.documents[0].get_model_by_name('stats_enrichment') !== null"
                  " && window.__col('stats_enrichment', 'label').length > 0")
    page.wait_for("() => new URLSearchParams(location.search).get('stats') === '1'")
    page.wait_idle()
    cells = engine.select(S1, 110, 112, 0.3).cells
    label = page.value("stats_label", "value")
    curve = stats.detector_curve(engine, S1, cells, None, "pos", label)
    assert curve.best is not None, "the scenario must have a detector"
    assert page.column("stats_best", "threshold") == [curve.best.threshold]
    for plot, least in (("stats_enrichment_plot", 2_000), ("stats_curve_plot", 2_000)):
        assert page.pixels(plot)[0] > least, plot
    page.page.get_by_role("button", name="apply the best-F1 threshold").click()
    page.wait_for("(t) => Bokeh.documents[0].get_model_by_name('threshold').value === t", curve.best.threshold)
    # The slider, the address bar and S arrive as separate messages: wait for the last of them.
    want = engine.select(S1, 110, 112, curve.best.threshold).cells
    page.wait_for("(t) => new URLSearchParams(location.search).get('threshold') === t",
                  format(curve.best.threshold, "g"))
    page.wait_for("(c) => JSON.stringify(window.__col('selection', 'cell')) === JSON.stringify(c)", want)
    page.wait_for_matches()
    assert page.column("selection", "cell") == want
    page.screenshot("hypothesis_panel")


def test_long_jobs_of_the_panel_answer_through_the_worker(app_page, browser_data):
    """Suggest, phrase map and compare run off the document lock on the server; their answers arrive."""
    from gpu_matcher import stats

    engine = engine_of(browser_data, "small")
    page = app_page().open({"project": "small", "pos": 100, "threshold": 0.3, "brush": "110,112", "stats": 1})
    page.wait_for_matches()
    page.page.get_by_role("button", name="compare", exact=True).click()
    page.wait_for("() => Bokeh.documents[0].get_model_by_name('stats_compare_info').text.includes('overlap')")
    cmp = stats.compare(engine, S1, engine, "states::states2", 110, 112, 0.3, top=DEFAULTS.match.top, track="pos")
    assert f"(Jaccard {cmp.jaccard:.3f})" in page.value("stats_compare_info", "text")
    page.page.get_by_role("button", name="suggest cells").click()
    want = [r.cell for r in stats.suggest_cells(engine, S1, 0.3, 110, 112)]
    page.wait_for("(c) => JSON.stringify(window.__col('stats_suggestions', 'cell')) === JSON.stringify(c)", want)
    page.page.get_by_role("button", name="phrase map").click()
    spans = stats.phrase_patterns(engine, S1, "pos", 0.3).starts.size
    # The points and the line under them are separate messages: wait for the later one.
    page.wait_for("(t) => Bokeh.documents[0].get_model_by_name('stats_phrase_info').text.startsWith(t)",
                  f"{spans:,} spans of")
    assert len(page.column("stats_phrases", "start")) == spans
    assert page.pixels("stats_phrase_plot")[0] > 1_000


def test_threshold_line_can_be_dragged(app_page, browser_data):
    engine = engine_of(browser_data, "small")
    page = app_page().open({"project": "small", "pos": 100, "threshold": 0.3, "brush": "110,112"})
    page.wait_for_matches()
    x = 2.0
    a = page.to_screen("select_plot", x, 0.3)
    b = page.to_screen("select_plot", x, 0.6)
    page.page.mouse.move(*a)
    page.page.mouse.down()
    page.page.mouse.move(*b, steps=8)
    page.page.mouse.up()
    page.wait_for("() => Math.abs(Bokeh.documents[0].get_model_by_name('threshold').value - 0.6) < 0.03")
    page.wait_for("() => new URLSearchParams(location.search).get('threshold') !== '0.3'")
    theta = float(page.query()["threshold"])
    page.wait_for("(t) => window.__col('match_words', 'word')[1].includes(`threshold ${t},`)",
                  arg=f"{theta:g}")
    assert abs(theta - 0.6) < 0.03
    assert page.column("selection", "cell") == engine.select(S1, 110, 112, theta).cells


def test_a_click_on_a_match_row_moves_the_select_view(app_page, browser_data):
    page = app_page().open({"project": "small", "pos": 100, "threshold": 0.3, "brush": "110,112"})
    page.wait_for_matches()
    rows = page.matches()
    start, end = rows[5][0], rows[5][1]
    page.page.mouse.click(*page.to_screen("match_plot", DEFAULTS.match.columns / 2, 5))
    page.wait_for("() => Bokeh.documents[0].get_model_by_name('focus_box').visible"
                  " && Bokeh.documents[0].get_model_by_name('status').text.includes('Match #6')")
    pos = int(page.query()["pos"])
    window = DEFAULTS.select.window_px // DEFAULTS.select.word_width
    assert pos <= start and end < pos + window
    assert page.value("position", "value") == pos
    page.screenshot("match_clicked")


def test_the_pattern_plot_sets_the_margins_by_mouse(app_page, browser_data):
    """A drag beside the brush in the pattern plot sets L where it ends; a click on the other side
    sets R. S and the matches follow (the same brush and threshold as the document test)."""
    engine = engine_of(browser_data, "small")
    page = app_page().open({"project": "small", "pos": 150, "threshold": 0.3, "brush": "200,201"})
    page.wait_for_matches()
    page.drag("pattern_plot", -4.0, -1.1, 0.0)                 # a drag that ends one step left of the brush
    page.wait_for("() => new URLSearchParams(location.search).get('left') === '1'")
    mouse = page.page.mouse                                     # a click, as a hand makes it
    mouse.move(*page.to_screen("pattern_plot", PATTERN_BRUSH + 0.9, 0.0))
    mouse.down()
    time.sleep(0.05)
    mouse.up()
    page.wait_for("() => new URLSearchParams(location.search).get('right') === '1'")
    page.wait_for("() => Bokeh.documents[0].get_model_by_name('status').text.includes('L=1, R=1')")
    page.wait_for_matches()
    page.wait_idle()
    cells = engine.select(S1, 200, 201, 0.3, 1, 1).cells
    assert cells and page.column("selection", "cell") == cells
    assert page.value("left", "value") == 1 and page.value("right", "value") == 1
    assert page.matches() == engine_rows(engine, cells, 0.3, 1, 1)
    assert page.errors == []


def test_bad_url_values_show_a_message_not_a_dead_page(app_page):
    page = app_page().open({"project": "small", "threshold": "abc", "brush": "9,x", "source": "no::such"})
    status = page.status()
    assert "threshold 'abc' is not a number" in status and "source 'no::such'" in status
    assert page.pixels("select_plot")[0] > 5000
    page = app_page().open({"project": "no-such-project"})
    assert "not among the projects served here" in page.status()
    assert "?project=small" in page.value("project_list", "text")


def test_markup_in_a_phrase_or_a_link_is_shown_as_text(app_page):
    """Phrase search and URL values echo what was typed: as text, never as markup that runs."""
    payload = '<img src=x onerror="window.__xss=1">'
    page = app_page().open({"project": "small", "source": payload, "tracks": payload})
    search = page.page.get_by_role("textbox").and_(page.page.locator("input[placeholder^='type words']"))
    search.fill(payload)
    search.press("Enter")
    page.wait_for("() => /occur|not in|dictionary|unknown/i.test("
                  "Bokeh.documents[0].get_model_by_name('status').text)")
    page.wait_idle()
    assert page.page.evaluate("() => window.__xss") is None
    assert page.page.locator("img[src='x']").count() == 0
    assert "<img" in page.status().replace("&lt;", "<").replace("&gt;", ">")      # shown, escaped
    page.screenshot("xss_as_text")


def test_650_cells_update_timing_and_wire_size(app_page, browser_data, figures):
    """Brush, threshold and navigation with D=650, three times each: bytes of the select view's
    answer, and ms from its arrival in the page to the repainted plots on screen (medians)."""
    engine = engine_of(browser_data, "d650")
    page = app_page().open({"project": "d650", "pos": 500, "threshold": 0.3, "ww": 10})
    page.hook(["select_plot", "count_plot", "match_plot"], ["counts", "highlight_cells", "traces", "matches"])
    busy_id = page.value("match_busy", "id")
    window = DEFAULTS.select.window_px // 10
    runs: dict[str, list[dict]] = {"brush": [], "threshold": [], "navigate": []}

    def measure(label: str, action, changed: dict[str, str], wait_js: str) -> None:
        t0 = page.page.evaluate("() => performance.now()")
        action()
        page.wait_for(wait_js)
        page.wait_for_matches()
        page.wait_idle()
        time.sleep(0.3)                                # let the last paints land
        lv = page.lv()
        select_msgs, _ = split_at_match_result(messages(lv["frames"], t0), busy_id)
        up = [t for t in lv["ups"] if t >= t0]
        shown = max(on_screen(lv, name, max(lv["changes"][model])) for name, model in changed.items())
        runs[label].append({
            "wire_bytes": sum(m["bytes"] for m in select_msgs if m["type"] == "PATCH-DOC"),
            "messages": len(select_msgs),
            "arrival_to_screen_ms": round(screen_delay(lv, changed, t0), 1),
            "action_to_screen_ms": round(shown - (up[0] if up else t0), 1)})

    in_view = {"select_plot": "highlight_cells", "count_plot": "counts"}
    for k, (x0, x1) in enumerate([(19.6, 22.4), (40.6, 42.4), (60.6, 63.4)]):
        measure("brush", lambda: page.drag("select_plot", x0, x1, 0.0), in_view,
                f"() => new URLSearchParams(location.search).get('brush') === '{500 + round(x0 + 0.4)},"
                f"{500 + round(x1 - 0.4)}'")
    s, e = 500 + 61, 500 + 63
    cells = engine.select(S1, s, e, 0.3).cells
    assert page.column("selection", "cell") == cells
    assert page.matches() == engine_rows(engine, cells, 0.3)
    for theta in (0.5, 0.2, 0.4):
        measure("threshold", lambda: page.page.evaluate(
                    f"() => Bokeh.documents[0].get_model_by_name('threshold')"
                    f".setv({{value: {theta}, value_throttled: {theta}}})"), in_view,
                f"() => new URLSearchParams(location.search).get('threshold') === '{theta:g}'")
    assert page.column("selection", "cell") == engine.select(S1, s, e, 0.4).cells
    for pos in (500 + window, 500 + 2 * window, 500 + window):
        button = "forward ▶" if pos > int(page.query()["pos"]) else "◀ back"
        measure("navigate", lambda: page.page.get_by_role("button", name=button).click(),
                {"select_plot": "traces", "count_plot": "counts"},
                f"() => new URLSearchParams(location.search).get('pos') === '{pos}'")
    page.screenshot("d650")
    summary = {}
    for label, rows in runs.items():
        summary[label] = {key: float(np.median([r[key] for r in rows])) for key in rows[0]}
        summary[label]["arrival_to_screen_ms_each"] = [r["arrival_to_screen_ms"] for r in rows]
    figures["d650_select_updates"] = {"D": 650, "window_steps": window, "median_of": 3, **summary}
    strict = os.environ.get("LSTMVIS_BROWSER_STRICT") == "1"
    for label, row in summary.items():
        assert 0 < row["wire_bytes"] < 600_000, (label, row)
        # The budget is 150 ms; a shared 2-core CI machine gets slack unless asked to be strict.
        assert row["arrival_to_screen_ms"] < (150 if strict else 1000), (label, row)


def test_full_match_on_a_million_steps_shows_quickly(app_page, browser_data, figures):
    engine = engine_of(browser_data, "long")
    page = app_page().open({"project": "long", "pos": 1000, "threshold": 0.3})
    page.hook(["match_plot", "count_plot"], ["matches", "match_words", "counts"])
    t0 = page.page.evaluate("() => performance.now()")
    page.drag("select_plot", 3.6, 5.4, 0.0)               # steps 1004-1005
    page.wait_for_matches()
    page.wait_idle()
    time.sleep(0.3)
    lv = page.lv()
    cells = engine.select(S1, 1004, 1005, 0.3).cells
    assert page.query()["brush"] == "1004,1005" and page.column("selection", "cell") == cells
    t_engine = time.perf_counter()
    expected = engine_rows(engine, cells, 0.3)
    engine_ms = (time.perf_counter() - t_engine) * 1000
    assert page.matches() == expected and len(expected) == DEFAULTS.match.top
    up = min(t for t in lv["ups"] if t >= t0)
    shown = on_screen(lv, "match_plot", max(lv["changes"]["match_words"]))
    server_ms = float(re.search(r"engine (\d+) ms", page.status()).group(1))
    with_matrix_ms = float(re.search(r"matches in (\d+) ms", page.status()).group(1))
    arrived = max(lv["changes"]["match_words"])
    row = {"T": LONG_T, "D": LONG_D, "cells": len(cells), "mouseup_to_match_view_ms": round(shown - up, 1),
           "engine_match_ms_in_server": server_ms, "engine_match_ms_rerun_here": round(engine_ms, 1),
           "match_and_word_matrix_ms_in_server": with_matrix_ms,
           "mouseup_to_select_view_ms": round(on_screen(lv, "count_plot", min(lv["changes"]["counts"])) - up, 1),
           "match_view_data_to_screen_ms": round(shown - arrived, 1),
           "app_overhead_ms": round(shown - up - server_ms, 1)}
    figures["million_step_match"] = row
    page.screenshot("million")
    strict = os.environ.get("LSTMVIS_BROWSER_STRICT") == "1"
    assert row["mouseup_to_match_view_ms"] < (500 if strict else 3000), row


def test_sessions_are_independent_and_a_long_match_does_not_stall_another(app_page, browser_data,
                                                                          monkeypatch, figures):
    long_engine = engine_of(browser_data, "long")
    small_engine = engine_of(browser_data, "small")
    real_match = long_engine.match

    def slow_match(*args, **kwargs):                 # a 2.5 s match in session A
        time.sleep(2.5)
        return real_match(*args, **kwargs)
    monkeypatch.setattr(long_engine, "match", slow_match)
    a = app_page().open({"project": "long", "pos": 1000, "threshold": 0.3})
    b = app_page().open({"project": "small", "pos": 100, "threshold": 0.3, "brush": "110,112"})
    b.wait_for_matches()
    a.drag("select_plot", 3.6, 5.4, 0.0)
    a.wait_for("() => Bokeh.documents[0].get_model_by_name('match_busy').visible")
    a.page.evaluate("() => { const s = Bokeh.documents[0].get_model_by_name('threshold');"
                    " s.setv({value: 0.35, value_throttled: 0.35}); }")     # replaces the running query
    t = time.perf_counter()
    b.page.evaluate("() => { const s = Bokeh.documents[0].get_model_by_name('threshold');"
                    " s.setv({value: 0.5, value_throttled: 0.5}); }")
    b.wait_for("() => window.__col('match_words', 'word')[1].includes('threshold 0.5,')")
    b_ms = (time.perf_counter() - t) * 1000
    assert a.value("match_busy", "visible") and "matching" in a.value("match_busy", "text"), \
        "A's match should still be running"
    cells_b = small_engine.select(S1, 110, 112, 0.5).cells
    assert b.column("selection", "cell") == cells_b
    assert b.matches() == engine_rows(small_engine, cells_b, 0.5)
    a.wait_for_matches(timeout=60_000)
    cells_a = long_engine.select(S1, 1004, 1005, 0.35).cells
    assert a.column("selection", "cell") == cells_a
    monkeypatch.setattr(long_engine, "match", real_match)
    assert a.matches() == engine_rows(long_engine, cells_a, 0.35)
    figures["other_session_during_long_match_ms"] = round(b_ms, 1)
    assert b_ms < 1500


def test_wide_outlier_project_long_names_are_not_cut(app_page, browser_data):
    """A transform:none source at D = 1,024 with an outlier unit and long track names: the robust y range,
    clipped markers, colour bars and the unit page in one screenshot (test-output/browser_wide.png), which
    a person looks at for cut labels."""
    engine = engine_of(browser_data, "wide")
    page = app_page(width=1700, height=1300).open({"project": "wide", "source": S2, "pos": 40, "brush": "50,51",
                                                   "threshold": 1.5, "unit": 7, "minlen": 1, "stats": 1})
    page.wait_for_matches(timeout=60_000)
    page.wait_for("() => window.__col('unit_contexts', 'position').length > 0")
    page.wait_for("() => window.__col('stats_enrichment', 'label').length > 0", timeout=60_000)
    assert page.column("clipped", "cell") and 7 in page.column("clipped", "cell")
    assert page.value("min_length", "value") == 1 and page.query()["minlen"] == "1"
    cells = engine.select(S2, 50, 51, 1.5).cells
    assert cells and page.column("selection", "cell") == cells
    for plot, least in (("select_plot", 20_000), ("unit_histogram_plot", 2_000), ("track_punctuation_class", 500),
                        ("match_heatmap_plot_n(t)", 500), ("stats_enrichment_plot", 2_000)):
        assert page.pixels(plot)[0] > least, plot
    page.page.get_by_role("button", name="phrase map: PCA of every label span's S (Fig. 9)").click()
    page.wait_for("() => window.__col('stats_phrases', 'x').length > 0", timeout=60_000)
    page.wait_idle()
    assert page.pixels("stats_phrase_plot")[0] > 2_000
    page.screenshot("wide")
