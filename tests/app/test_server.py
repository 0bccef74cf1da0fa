"""One in-process Bokeh server (the ``lstmvis serve`` server, in a thread) and the ``serve`` command line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from bokeh.client import pull_session

from bokeh_app.catalogue import get_catalogue
from bokeh_app.server import free_port
from conftest import running_server

S1 = "states::states1"


@pytest.fixture(scope="module")
def server(app_data):
    with running_server(app_data, start_timeout=30) as srv:
        yield srv, f"http://127.0.0.1:{srv.port}/"


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.status, response.read().decode()


def snapshot(url: str, session_id: str):
    """The server's document of a session as it is now: pulled by a second client of the same session.
    (The first client receives the server's patches only between its own requests, and a second
    ``pull()`` of it sends its old roots back to the server: Bokeh's Python client echoes the roots
    a pull replaces.)"""
    with pull_session(session_id=session_id, url=url) as probe:
        return probe.document


def built(url: str, session, name: str, timeout: float = 30, ready=lambda doc: True):
    """The page is built in the server's builder thread after the first pull and put into the page's
    shell: the session's document once it has ``name`` (and ``ready(doc)`` holds)."""
    deadline = time.time() + timeout
    doc = session.document
    while not (doc.get_model_by_name(name) is not None and ready(doc)) and time.time() < deadline:
        time.sleep(0.2)
        doc = snapshot(url, session.id)
    return doc


def test_server_page_and_a_restored_session(server, app_data):
    srv, url = server
    assert srv.address == "127.0.0.1"
    status, page = fetch(url)
    assert status == 200 and "<title>LSTMVis</title>" in page and "bokeh" in page
    status, page = fetch(url + "?project=small&threshold=abc")       # a bad value is not a dead page
    assert status == 200
    engine = get_catalogue(app_data, "numpy").engine("small")
    cells = engine.select(S1, 110, 112, 0.3).cells
    expected = [(m.start, m.end, m.length, m.inter, m.union) for m in engine.match(S1, cells, 0.3)]
    with pull_session(url=url, arguments={"project": "small", "pos": "100", "threshold": "0.3",
                                          "brush": "110,112"}) as session:
        doc = built(url, session, "selection")
        assert doc.get_model_by_name("selection").data["cell"] == cells
        assert doc.get_model_by_name("threshold").value == 0.3
        # The match runs off the document lock; its rows arrive a moment later.
        doc = built(url, session, "matches", ready=lambda d: len(d.get_model_by_name("matches").data["start"]) > 0)
        data = doc.get_model_by_name("matches").data
        assert list(zip(data["start"], data["end"], data["length"], data["inter"], data["union"])) == expected
        assert "matches in" in doc.get_model_by_name("status").text
    with pull_session(url=url, arguments={"project": "nested/wide"}) as session:
        doc = built(url, session, "select_plot")
        assert doc.get_model_by_name("select_plot") is not None and doc.title.endswith("wide test project")


def test_a_page_requests_session_is_built_when_its_websocket_connects(server):
    """As in each process of ``--num-procs``: the session a page request made waits for its WebSocket (a
    real Bokeh server's sessions and connection counts), then its page is built."""
    from bokeh.util.token import get_session_id

    from bokeh_app import worker

    srv, url = server
    worker.BUILD_ON_CONNECT[0] = True
    try:
        status, page = fetch(url + "?project=small&brush=110,112&threshold=0.3")
        assert status == 200
        session_id = get_session_id(re.search(r'"token":"([^"]+)"', page).group(1))
        time.sleep(0.5)
        waiting = [s.document for s in srv.get_sessions("/") if s.id == session_id]
        assert waiting and waiting[0].get_model_by_name("select_plot") is None, "built before a WebSocket came"
        with pull_session(session_id=session_id, url=url) as session:
            doc = built(url, session, "select_plot")
            assert doc.get_model_by_name("select_plot") is not None
    finally:
        worker.BUILD_ON_CONNECT[0] = False


def test_the_app_can_be_embedded_with_server_document(server):
    from bokeh.embed import server_document
    srv, url = server
    script = server_document(url, arguments={"project": "small", "pos": "40"})
    src = re.search(r"xhr.open\('GET', \"([^\"]+)\"", script).group(1)
    element = re.search(r'<script id="([^"]+)"', script).group(1)
    status, body = fetch(src)                       # the autoload script creates a session
    assert status == 200 and element in body and "Bokeh" in body


def test_serving_without_a_data_folder_needs_the_demo(monkeypatch):
    from bokeh_app.catalogue import default_data_dir
    from gpu_matcher import ProjectError
    monkeypatch.setitem(sys.modules, "gpu_matcher.demo", None)      # as if the demo were not installed
    with pytest.raises(ProjectError, match="bundled demo"):
        default_data_dir()


def test_lstmvis_serve_prints_the_url_and_serves_it(app_data):
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "gpu_matcher.cli", "serve", str(app_data),
                             "--port", str(port), "--backend", "numpy"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "open http" in line:
                break
        text = "".join(lines)
        assert f"open http://127.0.0.1:{port}/" in text, text
        assert "2 project(s)" in text and "backend numpy" in text
        status, page = fetch(f"http://127.0.0.1:{port}/")
        assert status == 200 and "<title>LSTMVis</title>" in page
        if sys.platform.startswith("linux") and "PYTHONMALLOC" not in os.environ:   # cli.with_system_malloc
            with open(f"/proc/{proc.pid}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
            assert b"PYTHONMALLOC=malloc" in environ
            assert f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', '2')}".encode() in environ
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_forked_server_processes_end_with_their_parent(app_data):
    """``--num-procs 2``: a SIGTERM to the process that was started (what a supervisor or the load benchmark
    sends) ends the forked server processes too; they used to stay, orphaned, serving the port."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "gpu_matcher.cli", "serve", str(app_data),
                             "--port", str(port), "--backend", "numpy", "--num-procs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    children: list[int] = []
    try:
        deadline = time.time() + 90
        while len(children) < 2 and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"open http://\S+ \(process (\d+)\)", line)
            if found:
                children.append(int(found.group(1)))
        assert len(children) == 2 and proc.pid not in children, children
        assert fetch(f"http://127.0.0.1:{port}/")[0] == 200
        proc.terminate()
        proc.wait(20)
        deadline = time.time() + 20
        while time.time() < deadline and any(alive(pid) for pid in children):
            time.sleep(0.1)
        assert not any(alive(pid) for pid in children), "forked server processes outlived their parent"
    finally:
        for pid in [proc.pid, *children]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(20)


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gpu_matcher.cli", "serve", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "missing" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "gpu_matcher.cli", "serve", str(empty), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no lstm.yml found" in result.stderr


def test_the_command_line_does_not_import_bokeh():
    code = ("import sys, gpu_matcher.cli as c; p = c.build_parser(); "
            "assert 'serve' in p._subparsers._group_actions[0].choices; "
            "assert not any(m == 'bokeh' or m.startswith('bokeh.') for m in sys.modules), 'bokeh imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_serving_collects_garbage_less_often_and_skips_what_was_imported():
    import gc

    import bokeh.document.document as bokeh_document

    from bokeh_app.server import GC_THRESHOLDS, CoalescedCollect, tune_gc
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0
        assert isinstance(bokeh_document.gc, CoalescedCollect)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        bokeh_document.gc = gc


def test_sessions_dropped_together_cost_one_full_collection(monkeypatch):
    """Bokeh's Document.destroy runs gc.collect() per dropped session; on the loop those calls become one
    collection ``delay`` seconds after the first, and off a loop each still collects at once."""
    import asyncio
    import gc

    from bokeh_app.server import CoalescedCollect
    calls = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation) or 0)
    shim = CoalescedCollect(delay=0.05)
    shim.collect()
    assert calls == [2]                                  # no event loop: at once

    async def crowd_leaves():
        for _ in range(20):
            shim.collect()
        assert calls == [2] and shim.pending
        await asyncio.sleep(0.2)
    asyncio.run(crowd_leaves())
    assert calls == [2, 2] and not shim.pending
    assert shim.get_threshold() == gc.get_threshold()    # the rest of the gc module shows through


def test_a_dropped_session_reaches_its_worker_through_the_app_hook():
    from types import SimpleNamespace

    from bokeh_app import app_hooks
    from bokeh_app.worker import Worker

    worker = Worker()
    doc = SimpleNamespace(session_context=SimpleNamespace(id="s-1"))
    worker.attach(doc)
    assert worker.alive and not worker.closed
    app_hooks.on_session_destroyed(SimpleNamespace(id="s-1"))
    assert worker.closed
    app_hooks.on_session_destroyed(SimpleNamespace(id="s-1"))   # twice, or an unknown session: nothing
