"""The session's one off-lock worker: every long job (match, suggest, phrase map, compare) runs here.

On a server a job's ``compute`` runs in a thread of ``catalogue.WORKERS`` from an ``async`` callback
marked ``@without_document_lock`` (``../shared/BROWSER_TESTING.md``), so the page stays live; its answer
comes back in a locked next-tick callback to ``apply``. One job runs at a time per session (a session
never holds more than one worker thread) and each kind keeps only its newest pending job; a generation
counter per kind drops an answer that a newer query of its kind has overtaken. On a bare Document
(``synchronous``: tests) a job runs inline, so its answer is there when the callback returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

from bokeh.document import without_document_lock

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


class Worker:
    """Long jobs of one session, off the document lock, newest first."""

    def __init__(self, synchronous: bool | None = None):
        self.synchronous = synchronous
        self.doc = None
        self._generation: dict[str, int] = {}
        self._pending: dict[str, Job] = {}
        self._running = False
        self.closed = False                 # the browser session is gone: answers go nowhere
        self._served = False

    def attach(self, doc) -> None:
        self.doc = doc
        if self.synchronous is None:
            self.synchronous = doc.session_context is None
        self._served = doc.session_context is not None
        if self._served:
            doc.on_session_destroyed(self._closed)

    @property
    def alive(self) -> bool:
        """False once the server destroyed the session's Document (Bokeh clears its session context
        first and runs ``on_session_destroyed`` hooks only afterwards)."""
        if self._served and self.doc.session_context is None:
            self.closed = True
        return not self.closed

    def _closed(self, session_context) -> None:
        self.closed = True
        self._pending.clear()

    def _next_tick(self, callback) -> None:
        """``add_next_tick_callback`` unless the session closed: a destroyed Document has no callbacks
        left to add to (Bokeh deletes them), and its answer has no page to go to."""
        if not self.alive:
            return
        self.doc.add_next_tick_callback(callback)

    def generation(self, kind: str) -> int:
        return self._generation.get(kind, 0)

    def renew(self, kind: str) -> int:
        """A newer query of ``kind``: from now on older answers of that kind are dropped."""
        self._generation[kind] = self.generation(kind) + 1
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
        self._pending.pop(kind, None)
        self._pending[kind] = job
        # A locked callback first: it runs only once this callback's patches are on the wire, so the
        # quick answer of the action is not held up by the job's work in another thread.
        self._next_tick(self._start)
        return generation

    def _start(self) -> None:
        self._next_tick(self._loop)

    @without_document_lock
    async def _loop(self) -> None:
        """Run pending jobs one at a time until none is left; a stale answer is dropped."""
        if self._running:
            return                                   # the running loop picks up the newest jobs
        self._running = True
        try:
            while self._pending and self.alive:
                job = self._pending.pop(next(iter(self._pending)))
                answer = await asyncio.wrap_future(WORKERS.submit(self._run, job))
                if not self.alive or not self.is_current(job.kind, job.generation):
                    continue
                # A quick answer waits a moment: arriving on the heels of the action's own update it
                # would hold that update's repaint back in the browser (one thread runs both).
                wait = job.not_before - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._next_tick(partial(self._finish, job, answer))
        finally:
            self._running = False

    @staticmethod
    def _run(job: Job):
        try:
            return job.compute()
        except Exception as exc:                     # shown by ``apply``, never a dead page
            return exc

    def _finish(self, job: Job, answer) -> None:
        if self.alive and self.is_current(job.kind, job.generation):
            job.apply(answer)
