"""The session's off-lock worker, driven the way the server drives it: a locked next-tick callback runs
inline, an unlocked one (``@without_document_lock``) as a task on the event loop."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import numpy as np
import pytest
from bokeh.document import Document

from bokeh_app.app import build_document
from bokeh_app.catalogue import Catalogue
from bokeh_app.worker import Worker, in_flight
from gpu_matcher import stats

from test_document import S1, S2, click, engine_matches, model, set_threshold, shown_matches


@pytest.fixture(scope="module")
def catalogue(app_data) -> Catalogue:
    return Catalogue(app_data, "numpy")


async def drain(doc: Document, timeout: float = 60) -> None:
    """Run ``doc``'s next-tick callbacks until none is left, no unlocked one is still running and no
    worker thread is busy (a thread hands its answer over before it counts down)."""
    tasks: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = in_flight()
        pending = list(doc.session_callbacks)
        for cb in pending:
            doc.remove_next_tick_callback(cb)
            result = cb.callback()
            if inspect.isawaitable(result):
                tasks.append(asyncio.ensure_future(result))
        tasks = [t for t in tasks if not t.done()]
        if not pending and not tasks and not busy:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("callbacks still pending")


def test_a_kind_keeps_only_its_newest_job_and_errors_reach_apply():
    doc = Document()
    worker = Worker(synchronous=False)
    worker.attach(doc)
    applied = []

    def slow(tag):
        def compute():
            time.sleep(0.3)
            return tag
        return compute

    async def scenario():
        worker.submit("match", slow("A"), applied.append)
        runner = asyncio.ensure_future(drain(doc))
        await asyncio.sleep(0.1)                       # A is running in a worker thread now
        worker.submit("match", lambda: "B", applied.append)
        worker.submit("match", lambda: "C", applied.append)
        worker.submit("suggest", lambda: "D", applied.append)
        worker.submit("compare", lambda: 1 / 0, applied.append)
        await runner

    asyncio.run(scenario())
    # (The order across kinds is the callbacks' order, which a bare Document does not keep.)
    assert sorted(a for a in applied if isinstance(a, str)) == ["C", "D"] and len(applied) == 3
    assert any(isinstance(a, ZeroDivisionError) for a in applied)
    assert worker.generation("match") == 3 and not worker.is_current("match", 1)


def test_a_page_build_waits_for_running_session_jobs_but_not_for_long():
    """``yield_to_sessions``: the builder lets the jobs of sessions already built go first (one process, one
    core), waits no longer than its bound, and not at all when at most ``busy`` sessions are working."""
    from bokeh_app.worker import session_jobs, yield_to_sessions

    workers = [Worker(synchronous=False) for _ in range(3)]
    docs = [Document() for _ in workers]
    release = threading.Event()
    for worker, doc in zip(workers, docs):
        worker.attach(doc)
    assert session_jobs() == 0 and yield_to_sessions(busy=1) < 0.05
    for worker in workers:
        worker.submit("match", lambda: release.wait(10), lambda answer: None)
    deadline = time.monotonic() + 5
    while session_jobs() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session_jobs() == 3
    assert 0.25 <= yield_to_sessions(busy=1, max_wait_s=0.3) < 1.0       # bounded
    threading.Timer(0.2, release.set).start()
    waited = yield_to_sessions(busy=1, max_wait_s=5.0)
    assert 0.1 <= waited < 3.0, waited                 # went on once the jobs ended

    async def finish():
        await asyncio.gather(*(drain(doc) for doc in docs))
    asyncio.run(finish())
    assert session_jobs() == 0


def test_compare_runs_off_the_document_lock(catalogue, monkeypatch):
    """Clicking compare returns at once; the comparison's two matches run in a worker thread while
    the event loop stays free and a threshold change meanwhile gets its own match."""
    real, seen = stats.compare, {}

    def slow_compare(*args, **kwargs):
        seen["thread"] = threading.current_thread().name
        time.sleep(1.0)
        return real(*args, **kwargs)
    monkeypatch.setattr(stats, "compare", slow_compare)
    engine = catalogue.engine("small")
    doc = Document()
    session = build_document(doc, catalogue, {"project": [b"small"], "source": [S1.encode()], "pos": [b"100"],
                                              "threshold": [b"0.3"], "brush": [b"110,112"], "stats": [b"1"]},
                              synchronous=False)
    asyncio.run(drain(doc))
    assert shown_matches(doc) == engine_matches(engine, S1, session.cells, 0.3)

    t0 = time.perf_counter()
    click(doc, "stats_compare")
    on_lock = time.perf_counter() - t0
    assert on_lock < 0.5, f"the click held the document for {on_lock:.2f} s"
    assert model(doc, "stats_compare_info").text == "Comparing…"

    async def scenario():
        ticks = []

        async def ticker():
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.02)
        tick = asyncio.ensure_future(ticker())
        runner = asyncio.ensure_future(drain(doc))
        await asyncio.sleep(0.2)                       # the compare is running in a worker thread
        set_threshold(doc, 0.35)                       # the page answers meanwhile
        await runner
        tick.cancel()
        return ticks

    ticks = asyncio.run(scenario())
    assert seen["thread"].startswith("lstmvis-work")
    assert len(ticks) > 20 and float(np.diff(ticks).max()) < 0.5, "the event loop was blocked"
    assert shown_matches(doc) == engine_matches(engine, S1, session.cells, 0.35)
    cmp = real(engine, S1, engine, S2, 110, 112, 0.3, top=session.defaults.match.top, track="pos")
    text = model(doc, "stats_compare_info").text
    assert f"{len(cmp.a['cells'])} cells, {len(cmp.a['matches'])} matches" in text
    assert f"overlap: {cmp.overlap_steps:,} steps (Jaccard {cmp.jaccard:.3f})" in text
