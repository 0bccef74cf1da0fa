"""Run the app with ``bokeh.server.server.Server`` (what ``lstmvis serve`` does).

The app directory (``main.py``, ``templates/``) is served through a ``DirectoryHandler`` at ``/``, so
``lstmvis serve`` and ``bokeh serve bokeh_app --args DATA_DIR`` run the same code. Binds 127.0.0.1
unless told otherwise; serves only projects discovered under the data folder.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from urllib.parse import urlsplit

from bokeh.application import Application
from bokeh.application.handlers import DirectoryHandler
from bokeh.server.server import Server
from tornado.routing import Matcher, Rule
from tornado.web import RequestHandler

from bokeh_app.catalogue import close_catalogues, get_catalogue
from bokeh_app.worker import BUILD_ON_CONNECT
from gpu_matcher import ProjectError

log = logging.getLogger("bokeh_app")
APP_DIR = Path(__file__).resolve().parent


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


class RefusedRequest(Matcher):
    """Matches a request whose ``Host`` (or ``Origin``, when sent) is not one this server answers for.

    Checked for every HTTP request, WebSocket upgrades included, before any Bokeh handler runs: a page
    served under a rebound DNS name (``Host: rebind.example:PORT``) or a foreign page asking for
    ``/autoload.js`` gets 403 and no session is built. Tornado's same-origin shortcut for WebSockets
    (Origin host == Host) is harmless once Host itself is checked."""

    def __init__(self, allowed: list[str]):
        self.allowed = {h.lower() for h in allowed}

    def match(self, request):
        scheme = request.protocol or "http"
        host = with_port(request.headers.get("Host", ""), scheme)
        origin = request.headers.get("Origin")
        if host not in self.allowed:
            return {}
        if origin is not None:
            parts = urlsplit(origin)
            if with_port(parts.netloc, parts.scheme or scheme) not in self.allowed:
                return {}
        return None


def with_port(netloc: str, scheme: str) -> str:
    """``host:port`` in lower case; a browser leaves out the scheme's default port (behind a proxy on
    port 80, ``Host: example.org`` is ``example.org:80``)."""
    netloc = netloc.strip().lower()
    if netloc and not netloc.rsplit("]", 1)[-1].count(":"):
        netloc += ":443" if scheme in ("https", "wss") else ":80"
    return netloc


class ForbiddenHandler(RequestHandler):
    def prepare(self):
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("403: this server does not answer for this host or origin "
                    "(start it with --allow-websocket-origin HOST:PORT to embed it elsewhere)\n")


#: The interpreter's thread switch interval while serving (Python's default: 0.005 s).
SWITCH_INTERVAL_S = 0.0005

#: Longest request target answered (bytes). Tornado's own header limit (64 KiB by default) drops a longer
#: request without any answer; it is raised to MAX_HEADER_BYTES so that such a URL gets a page saying why.
MAX_URL_BYTES = 64 * 1024
MAX_HEADER_BYTES = 1024 * 1024


class TooLongRequest(Matcher):
    """Matches a request whose URL is longer than ``MAX_URL_BYTES`` (no scenario needs that much)."""

    def match(self, request):
        return {} if len(request.uri or "") > MAX_URL_BYTES else None


class TooLongHandler(RequestHandler):
    def prepare(self):
        self.set_status(414)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(f"<!DOCTYPE html><title>LSTMVis: address too long</title><p>This address is "
                    f"{len(self.request.uri or ''):,} bytes long; LSTMVis answers addresses of at most "
                    f"{MAX_URL_BYTES:,} bytes. <a href=\"/\">Open the projects</a>.</p>\n")


def allowed_hosts(address: str, port: int, extra: list[str] | None = None) -> list[str]:
    """``host:port`` names a browser may use for this server: loopback names, the bound address, extras."""
    names = ["localhost", "127.0.0.1", address]
    return list(dict.fromkeys([*(f"{n}:{port}" for n in names), *(extra or [])]))


def make_server(data_dir: str | os.PathLike, port: int = 5006, address: str = "127.0.0.1",
                allow_websocket_origin: list[str] | None = None, backend: str = "auto",
                io_loop=None, dask: str | None = None, num_procs: int = 1) -> Server:
    """A Bokeh server for the projects under ``data_dir`` at ``http://ADDRESS:PORT/`` (not started).

    ``num_procs`` > 1 forks that many server processes sharing the listening socket (Bokeh's
    ``--num-procs``; 0: one per core). Each process has its own sessions, catalogue and engines; a
    session lives in the process its WebSocket reached (README: several processes)."""
    catalogue = get_catalogue(data_dir, backend, dask)
    if not catalogue.ids:
        raise ProjectError(f"{data_dir}: no lstm.yml found in this folder or below")
    if port == 0:
        port = free_port(address)
    origins = allowed_hosts(address, port, allow_websocket_origin)
    app = Application(DirectoryHandler(filename=str(APP_DIR),
                                       argv=[str(Path(data_dir).resolve()), "--backend", backend,
                                             *(["--dask", dask] if dask else [])]))
    skip_document_validation()
    kwargs = {"io_loop": io_loop} if io_loop is not None else {}
    if num_procs != 1:
        if io_loop is not None:
            raise ProjectError("num_procs other than 1 cannot share an explicit io_loop")
        kwargs["num_procs"] = num_procs
    parent = os.getpid()
    try:
        server = Server({"/": app}, port=port, address=address, allow_websocket_origin=origins,
                        check_unused_sessions_milliseconds=10_000,
                        unused_session_lifetime_milliseconds=30_000,
                        http_server_kwargs={"max_header_size": MAX_HEADER_BYTES}, **kwargs)
    except OSError as exc:
        raise ProjectError(f"cannot listen on {address}:{port} ({exc.strerror or exc})") from None
    if num_procs != 1:                               # here in each forked process (the parent never returns)
        follow_parent(parent)
        accept_one_at_a_time()
        BUILD_ON_CONNECT[0] = True                   # a page's WebSocket may reach another process
    # Bokeh exposes no hook that sees every request before its handlers; Tornado's router does. The first
    # rule of the application's router refuses foreign hosts and origins (tests/app/test_server_gate.py).
    server._tornado.default_router.rules.insert(0, Rule(RefusedRequest(origins), ForbiddenHandler))
    server._tornado.default_router.rules.insert(1, Rule(TooLongRequest(), TooLongHandler))
    server.lstmvis_catalogue = catalogue
    return server


def follow_parent(parent: int) -> None:
    """A forked server process (``--num-procs``) ends when the process that forked it ends. Tornado's parent
    only waits on its children; a SIGTERM (a supervisor's stop, ``kill``) ended it alone and left the
    children serving the port, orphaned (found by ``benchmarks/bench_load.py``). Linux: the kernel sends the
    child SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), and SIGTERM stops a child as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)                # PR_SET_PDEATHSIG
    except (OSError, AttributeError) as exc:           # not Linux: as before
        log.info("server processes will not follow their parent (%s)", exc)
        return
    if os.getppid() != parent:                       # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def accept_one_at_a_time() -> None:
    """Forked processes share one listening socket, and Tornado accepts up to 128 waiting connections each
    time it is woken: the first process awake took a whole crowd of new sessions while the others idled
    (``bench_load.py --num-procs 2``: 10.3 s and 0.2 s of CPU). One connection a wake-up: a process busy
    building pages leaves the next connections to an idle one. (Tornado reads this module global at each
    wake-up; the listening socket was bound before, with its own backlog.)"""
    import tornado.netutil

    tornado.netutil._DEFAULT_BACKLOG = 1


def _stop_on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt                          # serve's own ending: sessions and projects closed


def skip_document_validation() -> None:
    """Bokeh checks every new session's document (``check_integrity`` over every model: 0.08 s of the
    event loop a session here, README: load); the app's pages are checked once by the tests instead
    (``tests/app/test_document.py::test_a_first_page_is_small_and_valid``). ``BOKEH_VALIDATE_DOC`` set
    in the environment still decides."""
    if "BOKEH_VALIDATE_DOC" not in os.environ:
        from bokeh.settings import settings as bokeh_settings
        bokeh_settings.perform_document_validation.set_value(False)


#: The cyclic garbage collector's thresholds while serving (Python's default: 700, 10, 10).
GC_THRESHOLDS = (10_000, 20, 20)


class CoalescedCollect:
    """Stands in for the ``gc`` module inside ``bokeh.document.document``, whose ``Document.destroy`` runs a
    full ``gc.collect()`` for every dropped session, on the event loop (each walks every live object of
    every other session). Here a drop asks for a collection, and one runs ``delay`` seconds after the first
    ask: a crowd leaving costs one walk, and the cycles it left are still freed. Off the loop's thread (no
    current loop) it collects at once, as before."""

    def __init__(self, delay: float = 0.5):
        self.delay = delay
        self.pending = False

    def collect(self, generation: int = 2) -> int:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:                             # not on a running loop's thread
            return gc.collect(generation)
        if not self.pending:
            self.pending = True
            loop.call_later(self.delay, self.run)
        return 0

    def run(self) -> None:
        self.pending = False
        gc.collect()

    def __getattr__(self, name: str):
        return getattr(gc, name)


def coalesce_document_collections(delay: float = 0.5) -> CoalescedCollect:
    """Install :class:`CoalescedCollect` as ``bokeh.document.document.gc`` (idempotent)."""
    import bokeh.document.document as bokeh_document

    if not isinstance(bokeh_document.gc, CoalescedCollect):
        bokeh_document.gc = CoalescedCollect(delay)
    return bokeh_document.gc


def tune_gc() -> None:
    """Fewer collections while serving: every session builds a few hundred Bokeh models (tens of
    thousands of container objects), and with Python's default thresholds the collector ran ~25 young
    and 2 full collections a session, each full one walking every live object (12% of the server's CPU
    under 20 sessions, README: load). What the server imported is frozen out of the collector's walks
    (``gc.freeze``); the full collection Bokeh runs whenever it drops a session is coalesced
    (:class:`CoalescedCollect`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    coalesce_document_collections()


def raise_open_file_limit() -> None:
    """Lift the soft open-file limit to the hard one: each project holds a few files open, each browser a
    socket; at the soft limit (often 1,024) Tornado's accept loop spins on EMFILE."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError) as exc:     # not on this platform, or not allowed
        log.info("open-file limit unchanged (%s)", exc)


def serve(data_dir: str | os.PathLike, port: int = 5006, address: str = "127.0.0.1",
          allow_websocket_origin: list[str] | None = None, backend: str = "auto", show: bool = False,
          dask: str | None = None, num_procs: int = 1) -> int:
    """Serve until interrupted; prints the URL and the backend."""
    raise_open_file_limit()
    # The event loop shares the GIL with the page builder and the workers; each socket write releases it
    # and waits up to the switch interval (5 ms) to get it back, so under load the loop crawled behind
    # the builder. A shorter interval keeps the loop's writes and answers flowing (README: load).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    tune_gc()
    if num_procs != 1 and port == 0:
        port = free_port(address)                   # every process must listen on the same port
    server = make_server(data_dir, port, address, allow_websocket_origin, backend, dask=dask,
                         num_procs=num_procs)
    catalogue = server.lstmvis_catalogue
    server.start()
    url = f"http://{address}:{server.port}/"
    print(f"LSTMVis: {len(catalogue.ids)} project(s) from {data_dir} "
          f"({', '.join(catalogue.ids[:5])}{', ...' if len(catalogue.ids) > 5 else ''}); "
          f"backend {catalogue.backend.name}", flush=True)
    print(f"LSTMVis: open {url}" + (f" (process {os.getpid()})" if num_procs != 1 else ""), flush=True)
    log.info("backend %s", catalogue.backend.describe())
    if show:
        server.io_loop.add_callback(server.show, "/")
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        print("LSTMVis: stopped", file=sys.stderr)
    finally:
        server.stop()
        close_catalogues()
    return 0
