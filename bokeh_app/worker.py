"""The session's one off-lock worker: every long job (match, suggest, phrase map, compare, search, a
scale's statistics) runs here.

On a server a job's ``compute`` runs in a thread of ``catalogue.WORKERS``, started at once from the
callback that asked for it; its answer comes back through ``doc.add_next_tick_callback`` (the one
Document method Bokeh documents as safe from another thread) to ``apply``, on the document lock. No hop
through the event loop before the work starts: under load the loop's queue holds other sessions'
document builds, and each hop would wait behind them (README: load). One job runs at a time per session
(a session never holds more than one worker thread) and each kind keeps only its newest pending job; a
generation counter per kind drops an answer that a newer query of its kind has overtaken, and a session
the server destroyed gets nothing. On a bare Document (``synchronous``: tests) a job runs inline, so its
answer is there when the callback returns.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from bokeh_app.catalogue import WORKERS
from gpu_matcher import ProjectError

log = logging.getLogger("bokeh_app")


def failure(what: str, exc: Exception) -> str:
    """The one-line message of a failed job; an error the user did not cause is logged as well."""
    if isinstance(exc, ProjectError):
        return f"{what} failed: {exc}"
    log.error("%s failed", what.lower(), exc_info=exc)
    return f"{what} failed: internal error ({type(exc).__name__}: {exc})"


@dataclass(frozen=True)
class Job:
    kind: str                          # "match", "suggest", "phrase_map", "compare"
    generation: int
    compute: Callable[[], Any]         # plain data in, plain data out: runs in a worker thread
    apply: Callable[[Any], None]       # gets the answer, or the exception ``compute`` raised
    not_before: float = 0.0            # time.monotonic() before which the answer is not applied


_IN_FLIGHT = [0]
_IN_FLIGHT_LOCK = threading.Lock()


def _count(delta: int) -> None:
    with _IN_FLIGHT_LOCK:
        _IN_FLIGHT[0] += delta


_SESSION_JOBS = [0]                    # sessions whose worker is running jobs (matches, statistics, ...)


def _session_jobs(delta: int) -> None:
    with _IN_FLIGHT_LOCK:
        _SESSION_JOBS[0] += delta


def session_jobs() -> int:
    return _SESSION_JOBS[0]


def yield_to_sessions(busy: int = 1, max_wait_s: float = 2.0, poll_s: float = 0.005) -> float:
    """In the builder thread, before building a page: wait while more than ``busy`` sessions' workers are
    running jobs, at most ``max_wait_s`` (a page is never held back longer). One process runs Python on one
    core (the GIL): a crowd's page builds took their share of it from the sessions already built, whose
    matches and threshold changes then waited (40 sessions, one process, three runs each: threshold change
    median 0.68 / 0.37 / 1.07 s without, 0.21 / 0.21 / 0.28 s with; first match 5.70 / 4.68 / 8.31 s
    without, 4.93 / 5.11 / 7.11 s with; README: load). Returns the wait."""
    t0 = time.monotonic()
    while _SESSION_JOBS[0] > busy and time.monotonic() - t0 < max_wait_s:
        time.sleep(poll_s)
    return time.monotonic() - t0


def in_flight() -> int:
    """Worker threads busy for sessions (an answer is handed to the loop before its thread counts down),
    over all sessions: tests wait for 0 and no next-tick callback left."""
    return _IN_FLIGHT[0]


def alive(doc, served: bool) -> bool:
    """False once the server destroyed a session's Document (it clears the session context first and
    runs ``on_session_destroyed`` hooks only afterwards)."""
    return not served or doc.session_context is not None


_TRIM_PENDING = [False]


def release_memory(after: float = 1.0) -> None:
    """Give the heap that closed sessions freed back to the system (glibc's ``malloc_trim``; elsewhere a
    no-op), once, ``after`` seconds after the last of a batch of sessions closed: without it the server's
    RSS stays at its peak after a crowd has left (README: load)."""
    if _TRIM_PENDING[0]:
        return
    _TRIM_PENDING[0] = True

    def trim() -> None:
        _TRIM_PENDING[0] = False
        try:
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
    try:
        from tornado.ioloop import IOLoop
        IOLoop.current().call_later(after, trim)
    except RuntimeError:                             # no event loop here: now
        trim()


#: Served sessions' workers by session id, until the session ends (``session_ended``).
_BY_SESSION: dict[str, "Worker"] = {}


def session_ended(session_id: str) -> bool:
    """The server dropped session ``session_id`` (``bokeh_app/app_hooks.py``): its worker stops handing
    answers over and drops what is queued. False for a session this process never served."""
    worker = _BY_SESSION.pop(session_id, None)
    if worker is None:
        return False
    worker._closed(None)
    return True


def hand_over(doc, callback) -> None:
    """``doc.add_next_tick_callback`` from a worker thread; a session destroyed in between (its
    callbacks deleted by Bokeh) takes nothing."""
    try:
        doc.add_next_tick_callback(callback)
    except AttributeError:
        pass


#: Set in each forked server process (``server.make_server`` with ``num_procs`` != 1): a page's WebSocket
#: may reach another process than its HTTP request did, and that process builds the session again from
#: its token, so a page request's session waits for its connection before its page is built.
BUILD_ON_CONNECT = [False]
CONNECT_POLL_S = 0.02
CONNECT_WAIT_S = 600.0                 # a bound, far past Bokeh's unused-session lifetime (30 s here)


def page_request(doc) -> bool:
    """The session was made by an HTTP page request (its WebSocket comes later, maybe to another process),
    not by a WebSocket that arrived with a token."""
    request = getattr(doc.session_context, "request", None)
    path = getattr(request, "path", None)
    return isinstance(path, str) and not path.endswith("/ws")


def when_connected(doc, start: Callable[[], None], poll_s: float | None = None) -> None:
    """``start()`` on the loop once the session has a WebSocket connection; never if the session ends
    first (Bokeh drops an unconnected session after its unused lifetime). Bokeh has no hook for a session's
    first connection, so the server's sessions are looked at every ``poll_s`` (public API: the server
    context's ``sessions``, a session's ``connection_count``). (``--num-procs``: 0.28 -> 0.21 s of CPU a
    session under 40 page loads, README: load.)"""
    from tornado.ioloop import IOLoop

    loop, context = IOLoop.current(), doc.session_context
    poll_s = CONNECT_POLL_S if poll_s is None else poll_s
    found: list = []
    give_up = time.monotonic() + CONNECT_WAIT_S

    def check() -> None:
        if doc.session_context is None or getattr(context, "destroyed", False) or time.monotonic() > give_up:
            return
        if not found:
            found.extend(s for s in context.server_context.sessions if s.id == context.id)
        if found and found[0].connection_count > 0:
            start()
        else:                                        # (a dropped session: ``context.destroyed`` above)
            loop.call_later(poll_s, check)
    check()


def run_off_loop(doc, compute: Callable[[], Any], apply: Callable[[Any], None], executor=None) -> None:
    """``compute()`` in a thread of ``executor`` (WORKERS), then ``apply(answer or exception)`` on the
    document lock; a one-off (building a page, the landing view's summaries). Inline on a bare Document."""
    served = doc.session_context is not None
    if not served:
        apply(Worker._run(Job("", 0, compute, apply)))
        return

    def work() -> None:
        try:
            answer = Worker._run(Job("", 0, compute, apply))
            if alive(doc, served):
                hand_over(doc, partial(apply, answer))
        finally:
            _count(-1)
    _count(1)
    (executor or WORKERS).submit(work)


class Worker:
    """Long jobs of one session, off the document lock, newest first."""

    def __init__(self, synchronous: bool | None = None):
        self.synchronous = synchronous
        self.doc = None
        self._generation: dict[str, int] = {}
        self._pending: dict[str, Job] = {}
        self._lock = threading.Lock()                # the pending jobs: the loop adds, a worker thread takes
        self._running = False
        self.closed = False                 # the browser session is gone: answers go nowhere
        self._served = False

    def attach(self, doc) -> None:
        self.doc = doc
        if self.synchronous is None:
            self.synchronous = doc.session_context is None
        self._served = doc.session_context is not None
        if self._served:
            # Told by the app's hook (bokeh_app/app_hooks.py), not doc.on_session_destroyed: Bokeh runs a
            # full gc.collect() after a document's own destroy callbacks, one per session, on the loop.
            session_id = getattr(doc.session_context, "id", None)
            if session_id is not None:
                _BY_SESSION[session_id] = self
            else:                                        # a context without an id (embedding): as Bokeh offers
                doc.on_session_destroyed(self._closed)

    @property
    def alive(self) -> bool:
        if not alive(self.doc, self._served):
            self.closed = True
        return not self.closed

    def _closed(self, session_context) -> None:
        self.closed = True
        with self._lock:
            self._pending.clear()
        release_memory()

    def generation(self, kind: str) -> int:
        return self._generation.get(kind, 0)

    def renew(self, kind: str) -> int:
        """A newer query of ``kind``: from now on older answers of that kind are dropped."""
        self._generation[kind] = self.generation(kind) + 1
        with self._lock:
            self._pending.pop(kind, None)
        return self._generation[kind]

    def is_current(self, kind: str, generation: int) -> bool:
        return generation == self.generation(kind)

    def submit(self, kind: str, compute: Callable[[], Any], apply: Callable[[Any], None], *,
               generation: int | None = None, delay: float = 0.0) -> int:
        """Run ``compute`` off the lock, then ``apply`` its answer (at least ``delay`` s after now) unless
        a newer job of ``kind`` was asked for meanwhile. Returns the job's generation."""
        if generation is None:
            generation = self.renew(kind)
        job = Job(kind, generation, compute, apply, time.monotonic() + delay)
        if self.synchronous:
            self._finish(job, self._run(job))
            return generation
        if not self.alive:
            return generation
        with self._lock:
            self._pending.pop(kind, None)
            self._pending[kind] = job
            start = not self._running
            self._running = True
        if start:
            _count(1)
            _session_jobs(1)
            WORKERS.submit(self._work)
        return generation

    def _work(self) -> None:
        """In a worker thread: run pending jobs one at a time until none is left; a stale answer is
        dropped, a fresh one handed to the loop."""
        try:
            while True:
                with self._lock:
                    if not self._pending or self.closed:
                        self._running = False
                        return
                    job = self._pending.pop(next(iter(self._pending)))
                answer = self._run(job)
                if not self.alive or not self.is_current(job.kind, job.generation):
                    continue
                # A quick answer waits a moment: arriving on the heels of the action's own update it
                # would hold that update's repaint back in the browser (one thread runs both).
                wait = job.not_before - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if self.alive:
                    hand_over(self.doc, partial(self._finish, job, answer))
        finally:
            _session_jobs(-1)
            _count(-1)

    @staticmethod
    def _run(job: Job):
        try:
            return job.compute()
        except Exception as exc:                     # shown by ``apply``, never a dead page
            return exc

    def _finish(self, job: Job, answer) -> None:
        if self.alive and self.is_current(job.kind, job.generation):
            job.apply(answer)
