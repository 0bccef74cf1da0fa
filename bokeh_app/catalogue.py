"""The process-wide catalogue: projects discovered under one data folder, one Engine per project.

Sessions share it, so a project is opened (and a source's layout built) once per process. A project
is only ever found by its id among the discovered ones; no path from a request is opened. No Bokeh here.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gpu_matcher import Engine, ProjectError, discover_projects, open_project, settings
from gpu_matcher.backends import Backend, get_backend

log = logging.getLogger("bokeh_app")

#: Worker threads for long work (matches, layouts) that runs off the document lock; shared by sessions.
#: Each session runs at most one match at a time, so this bounds how many sessions match at once.
WORKERS = ThreadPoolExecutor(max_workers=settings.workers(),
                             thread_name_prefix="lstmvis-work")

#: One thread that builds sessions' pages (Bokeh models, a project's opening) in arrival order, off the
#: event loop; kept apart from WORKERS so that the quick matches of pages already built never queue
#: behind the builds of pages that arrived after them.
BUILDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lstmvis-build")


class Catalogue:
    """Projects under ``data_dir`` (discovered once) and their engines (opened on first use).

    At most ``max_open`` engines are kept open (least recently used first out): a data folder of a
    thousand projects must not hold a thousand sets of open files. An engine dropped from the catalogue
    closes its files when the last session using it lets go of it (garbage collection), never under a
    session's feet. The landing view's summaries are computed once per project, the project closed
    again unless a session keeps it."""

    def __init__(self, data_dir: str | os.PathLike, backend: str | Backend = "auto", max_open: int = 32):
        self.data_dir = Path(data_dir)
        self.folders: dict[str, Path] = discover_projects(self.data_dir)
        self.backend: Backend = get_backend(backend) if isinstance(backend, str) else backend
        self.max_open = max(1, int(max_open))
        self._engines: "OrderedDict[str, Engine]" = OrderedDict()
        self._summaries: dict[str, dict] = {}
        self._lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        return list(self.folders)

    def engine(self, project_id: str) -> Engine:
        """The engine of a discovered project (opened once); ``ProjectError`` for an unknown id."""
        folder = self.folders.get(project_id)
        if folder is None:
            raise ProjectError(f"unknown project {project_id!r}; known: {', '.join(self.ids) or 'none'}")
        with self._lock:
            engine = self._engines.get(project_id)
            if engine is None:
                engine = Engine(open_project(folder, project_id=project_id), backend=self.backend)
                self._engines[project_id] = engine
                while len(self._engines) > self.max_open:
                    self._engines.popitem(last=False)
            self._engines.move_to_end(project_id)
            return engine

    def is_open(self, project_id: str) -> bool:
        with self._lock:
            return project_id in self._engines

    def known_summaries(self) -> tuple[list[dict], list[str]]:
        """(the summaries computed so far, in project order; the ids still to read): the landing view
        shows the first at once and reads the rest in a worker."""
        with self._lock:
            known = [self._summaries[pid] for pid in self.ids if pid in self._summaries]
            missing = [pid for pid in self.ids if pid not in self._summaries]
        return known, missing

    @property
    def open_count(self) -> int:
        return len(self._engines)

    def summary(self, project_id: str) -> dict:
        """The landing view's entry for one project (computed once); a broken project: an ``error`` entry."""
        with self._lock:
            known = self._summaries.get(project_id)
            engine = self._engines.get(project_id)
        if known is not None:
            return known
        try:
            if engine is not None:
                summary = engine.project.summary()
            else:                                    # open, read the shapes, close again
                project = open_project(self.folders[project_id], project_id=project_id)
                try:
                    summary = project.summary()
                finally:
                    project.close()
        except ProjectError as exc:
            summary = {"id": project_id, "error": str(exc)}
        with self._lock:
            self._summaries[project_id] = summary
        return summary

    def summaries(self) -> list[dict]:
        """One entry per project for the landing view; a broken project gets an ``error`` entry."""
        return [self.summary(pid) for pid in self.ids]

    def warm(self, project_id: str, source: str) -> None:
        """Build or load a source's layout in a worker thread, so the first match does not wait for it."""
        def build():
            try:
                self.engine(project_id).layout(source)
            except ProjectError as exc:
                log.warning("layout of %s %s: %s", project_id, source, exc)
        WORKERS.submit(build)


_CATALOGUES: dict[tuple[str, str], Catalogue] = {}
_CATALOGUES_LOCK = threading.Lock()


def get_catalogue(data_dir: str | os.PathLike, backend: str = "auto", dask: str | None = None) -> Catalogue:
    """The shared catalogue for ``(data_dir, backend, dask)``, created (and its backend logged) once.

    With ``dask`` (a scheduler address or ``local[:N]``) matches run on that cluster, ``backend`` being
    the workers' array backend; sessions share the one cluster. Without it nothing of Dask is imported.
    """
    key = (str(Path(data_dir).resolve()), backend, dask)
    with _CATALOGUES_LOCK:
        catalogue = _CATALOGUES.get(key)
        if catalogue is None:
            chosen: str | Backend = backend
            if dask:
                from gpu_matcher.backends.dask import make_dask_backend
                chosen = make_dask_backend(dask, worker_backend=backend)
            catalogue = Catalogue(data_dir, chosen)
            log.info("serving %d project(s) from %s with the %s backend", len(catalogue.ids),
                     data_dir, catalogue.backend.name)
            _CATALOGUES[key] = catalogue
        return catalogue


def close_catalogues() -> None:
    """Close what the catalogues hold open (a Dask cluster): at server stop."""
    with _CATALOGUES_LOCK:
        for catalogue in _CATALOGUES.values():
            close = getattr(catalogue.backend, "close", None)
            if close is not None:
                close()
        _CATALOGUES.clear()


def default_data_dir() -> Path:
    """The bundled demo's data folder (generated on first call); ``ProjectError`` when not installed."""
    try:
        from gpu_matcher.demo import ensure_demo
    except ImportError:
        raise ProjectError("no DATA_DIR given and the bundled demo (gpu_matcher.demo.ensure_demo) is "
                           "not available; pass a folder holding lstm.yml projects") from None
    return Path(ensure_demo())
