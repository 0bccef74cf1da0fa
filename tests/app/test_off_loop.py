"""The event loop never waits on work: opening a project, the landing view's summaries, a per-cell scale's
statistics and a phrase search run in worker threads while the page says it is working. Driven the way
the server drives a session (``test_worker.drain``), with the slow step made slow on purpose: it must run
on another thread than the event loop's, and the loop keeps ticking meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from bokeh.document import Document

from bokeh_app.app import build_document
from bokeh_app.catalogue import Catalogue

from test_document import S1, engine_matches, model, shown_matches
from test_worker import drain

SLOW = 0.4          # seconds the slow step takes


def slow(real, threads: list, once: bool = False):
    """``real`` made slow (its first call only, with ``once``: a cached answer is quick); records the
    thread each slow call ran on."""
    def call(*a, **k):
        if not (once and threads):
            threads.append(threading.get_ident())
            time.sleep(SLOW)
        return real(*a, **k)
    return call


class Context:
    destroyed = False
    request = None


def served_document() -> Document:
    """A Document as a server session has it (a session context), so jobs go to worker threads."""
    doc = Document()
    context = Context()
    doc._session_context = lambda: context
    return doc


def run_measured(doc: Document, action) -> int:
    """Run ``action()`` and every callback it schedules; returns the event loop's thread."""
    box = {}

    async def scenario():
        stop = False

        async def ticker():
            last = time.perf_counter()
            while not stop:
                await asyncio.sleep(0.005)
                last = time.perf_counter()
        box["loop"] = threading.get_ident()
        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.02)
        action()
        await drain(doc)
        stop = True
        await tick

    asyncio.run(scenario())
    return box["loop"]


def args(**query) -> dict:
    return {k: [str(v).encode()] for k, v in query.items()}


def test_opening_a_project_runs_in_a_worker(app_data, monkeypatch):
    catalogue = Catalogue(app_data, "numpy")
    threads: list = []
    real = catalogue.engine
    monkeypatch.setattr(catalogue, "engine", lambda pid: (slow(real, threads) if not catalogue.is_open(pid)
                                                          else real)(pid))
    doc = served_document()
    box = {}
    loop = run_measured(doc, lambda: box.update(view=build_document(doc, catalogue, args(project="small")),
                                                 status=model(doc, "status").text))
    assert box["view"] is None and "Opening project small" in box["status"]
    assert threads and loop not in threads
    assert doc.get_model_by_name("select_plot") is not None and catalogue.is_open("small")
    assert "Opening project" not in model(doc, "status").text


def test_a_project_that_cannot_be_opened_shows_the_landing_with_why(app_data, monkeypatch):
    from gpu_matcher import ProjectError
    catalogue = Catalogue(app_data, "numpy")

    def broken(pid):
        raise ProjectError(f"{pid}/lstm.yml: broken on purpose")
    monkeypatch.setattr(catalogue, "engine", broken)
    doc = served_document()
    run_measured(doc, lambda: build_document(doc, catalogue, args(project="small")))
    assert "broken on purpose" in model(doc, "status").text and doc.get_model_by_name("project_list")


def test_landing_summaries_are_read_in_a_worker(app_data, monkeypatch):
    catalogue = Catalogue(app_data, "numpy")
    threads: list = []
    monkeypatch.setattr(catalogue, "summary", slow(catalogue.summary, threads))
    doc = served_document()
    seen = {}

    def open_landing():
        build_document(doc, catalogue, {})
        seen["first"] = model(doc, "project_list").text
    loop = run_measured(doc, open_landing)
    assert "reading 2 more project" in seen["first"] and len(threads) == 2 and loop not in threads
    table = model(doc, "project_list").text
    assert "small test project" in table and "wide test project" in table and "reading" not in table


def test_a_scale_switch_computes_its_statistics_in_a_worker(app_data, monkeypatch):
    catalogue = Catalogue(app_data, "numpy")
    engine = catalogue.engine("small")
    doc = served_document()
    run_measured(doc, lambda: build_document(doc, catalogue, args(project="small", brush="110,112",
                                                                  threshold="0.25")))
    threads: list = []
    monkeypatch.setattr(engine, "key_thresholds", slow(engine.key_thresholds, threads, once=True))
    tables: list = []                  # the quantile table the window is drawn through: made in the worker
    monkeypatch.setattr(engine, "quantile_table", slow(engine.quantile_table, tables, once=True))
    seen = {}

    def switch():
        model(doc, "scale").value = "quantile"
        seen["status"] = model(doc, "status").text
    loop = run_measured(doc, switch)
    assert threads and loop not in threads
    assert tables and loop not in tables
    assert "Computing the per-cell quantile" in seen["status"]
    session_theta = model(doc, "threshold").value
    cells = engine.select(S1, 110, 112, session_theta, scale="quantile").cells
    assert list(model(doc, "selection").data["cell"]) == cells
    want = [(m.start, m.end, m.length, m.inter, m.union) for m in
            engine.match(S1, cells, session_theta, top=50, min_length=2, scale="quantile")]
    assert shown_matches(doc)[:5] == want[:5]


def test_a_phrase_search_runs_in_a_worker(app_data, monkeypatch):
    catalogue = Catalogue(app_data, "numpy")
    engine = catalogue.engine("small")
    doc = served_document()
    run_measured(doc, lambda: build_document(doc, catalogue, args(project="small")))
    threads: list = []
    real = engine.search
    monkeypatch.setattr(engine, "search", slow(real, threads))     # e.g. waiting for a layout build's lock
    word = engine.project.tokens(100, 101)[0]
    seen = {}

    def search():
        model(doc, "search").value = word
        seen["info"] = model(doc, "search_info").text
    loop = run_measured(doc, search)
    assert "Searching" in seen["info"] and threads and loop not in threads
    assert list(model(doc, "search_hits").data["pos"])[:5] == [int(h) for h in real(word)[:5]]
    assert "occurrence(s)" in model(doc, "search_info").text


def test_every_served_page_is_built_off_the_loop_into_its_shell(app_data, monkeypatch):
    """An open project too: the first pull gets a few models (header, status, the page's place, the URL
    holder), the page's models are built in the builder thread and go into the same roots (BokehJS
    follows the children of the roots it rendered, not roots added later)."""
    import bokeh_app.session as session_module

    catalogue = Catalogue(app_data, "numpy")
    engine = catalogue.engine("small")
    threads: list = []
    monkeypatch.setattr(session_module, "build_select_view", slow(session_module.build_select_view, threads))
    doc = served_document()
    first = {}

    def open_page():
        assert build_document(doc, catalogue, args(project="small", brush="110,112", threshold="0.3")) is None
        first.update(roots=list(doc.roots), models=len(doc.models), status=model(doc, "status").text)
    loop = run_measured(doc, open_page)
    assert threads and loop not in threads
    assert first["models"] < 15 and "Building the page" in first["status"]
    assert doc.roots == first["roots"] and [r.name for r in doc.roots][1:] == ["status", "project_view", "url_state"]
    sel = engine.select(S1, 110, 112, 0.3)
    assert model(doc, "selection").data["cell"] == sel.cells
    assert shown_matches(doc) == engine_matches(engine, S1, sel.cells, 0.3)
    assert "Building the page" not in model(doc, "status").text and "small test project" in doc.roots[0].text
    assert "project=small" in model(doc, "url_state").data["query"][0]


class FakeServerSession:
    def __init__(self, session_id: str):
        self.id, self.connection_count, self.destroyed = session_id, 0, False


class PageContext:
    """A session context as Bokeh makes it for a page request (``path``) in a server whose ``sessions`` the
    test controls; ``destroyed`` is its server session's, once there is one (as Bokeh's)."""

    def __init__(self, path: str, sessions: list):
        from types import SimpleNamespace
        self.id = "session-1"
        self.request = SimpleNamespace(path=path, arguments={})
        self.server_context = SimpleNamespace(sessions=sessions)

    @property
    def destroyed(self) -> bool:
        return any(s.destroyed for s in self.server_context.sessions if s.id == self.id)


def test_with_several_processes_a_page_is_built_when_its_websocket_arrives(app_data, monkeypatch):
    """``--num-procs``: the WebSocket of a page may reach another process, which builds the session again
    from its token; so a session a page request made builds its page only once a connection subscribed
    (never, if the session ends unconnected). A session a WebSocket made builds at once."""
    from bokeh_app import worker

    monkeypatch.setattr(worker, "CONNECT_POLL_S", 0.01)
    worker.BUILD_ON_CONNECT[0] = True
    catalogue = Catalogue(app_data, "numpy")
    catalogue.engine("small")

    def page(path: str, sessions: list) -> Document:
        doc = Document()
        context = PageContext(path, sessions)
        doc._session_context = lambda: context
        assert build_document(doc, catalogue, args(project="small", brush="110,112", threshold="0.3")) is None
        return doc

    def built(doc) -> bool:
        return doc.get_model_by_name("select_plot") is not None

    async def scenario():
        sessions: list = []
        waiting = page("/", sessions)
        await asyncio.sleep(0.2)
        assert not built(waiting), "built before Bokeh registered the session"
        sessions.append(FakeServerSession("session-1"))
        await asyncio.sleep(0.2)
        assert not built(waiting) and "Building the page" in model(waiting, "status").text
        sessions[0].connection_count = 1                      # its WebSocket subscribed
        await asyncio.sleep(0.1)
        await drain(waiting)
        assert built(waiting) and shown_matches(waiting)

        left: list = [FakeServerSession("session-1")]
        unconnected = page("/", left)
        left[0].destroyed = True                              # dropped by Bokeh, never connected
        await asyncio.sleep(0.1)
        left[0].connection_count = 1
        await asyncio.sleep(0.2)
        await drain(unconnected)
        assert not built(unconnected)

        socket_made = page("/ws", [])                         # made by a WebSocket: nothing to wait for
        await asyncio.sleep(0.05)
        await drain(socket_made)
        assert built(socket_made)

    try:
        asyncio.run(scenario())
    finally:
        worker.BUILD_ON_CONNECT[0] = False
