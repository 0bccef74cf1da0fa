"""The application entry points: ``modify_doc(doc)`` style functions over a shared catalogue.

- ``make_modify_doc(data_dir, backend)`` returns ``modify_doc(doc)`` for ``FunctionHandler``,
  ``server_document`` embedding and Jupyter (``bokeh.io.show(make_modify_doc(DIR))``).
- ``modify_doc(doc)`` uses the catalogue set by ``configure(data_dir, backend)`` (or the bundled demo).
- ``build_document(doc, catalogue, arguments)`` does the work: the URL query picks a project (by id,
  among the discovered ones only) and restores a scenario, or shows the landing view.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from bokeh.application import Application
from bokeh.application.handlers import FunctionHandler
from bokeh.document import Document

from bokeh_app.catalogue import BUILDER, Catalogue, default_data_dir, get_catalogue
from bokeh_app.config import UIDefaults, load_defaults
from bokeh_app.session import ProjectSession
from bokeh_app.state import parse_query, resolve
from bokeh_app.views.common import follow_on_load, header_html, page_shell, status_html, url_holder
from bokeh_app.views.landing import build_landing, table_html
from bokeh_app.worker import BUILD_ON_CONNECT, page_request, run_off_loop, when_connected, yield_to_sessions
from gpu_matcher import ProjectError, settings

log = logging.getLogger("bokeh_app")

_DEFAULT: dict = {}


def configure(data_dir: str | os.PathLike | None = None, backend: str = "auto") -> Catalogue:
    """Set the process-wide catalogue that ``modify_doc`` serves (``None``: the bundled demo)."""
    catalogue = get_catalogue(data_dir if data_dir is not None else default_data_dir(), backend)
    _DEFAULT["catalogue"] = catalogue
    return catalogue


def modify_doc(doc: Document) -> None:
    """Build the app into ``doc`` from the configured catalogue (``LSTMVIS_DATA_DIR`` or the demo)."""
    catalogue = _DEFAULT.get("catalogue") or configure(settings.data_dir(), settings.backend())
    build_document(doc, catalogue)


def make_modify_doc(data_dir: str | os.PathLike | None = None, backend: str = "auto"
                    ) -> Callable[[Document], None]:
    """A ``modify_doc(doc)`` serving the projects under ``data_dir`` (a closure: FunctionHandler
    rejects ``functools.partial``)."""
    catalogue = get_catalogue(data_dir if data_dir is not None else default_data_dir(), backend)

    def modify(doc: Document) -> None:
        build_document(doc, catalogue)
    return modify


def make_application(data_dir: str | os.PathLike | None = None, backend: str = "auto") -> Application:
    return Application(FunctionHandler(make_modify_doc(data_dir, backend)))


def request_arguments(doc: Document) -> dict[str, Sequence]:
    context = doc.session_context
    if context is None or getattr(context, "request", None) is None:
        return {}
    try:
        return dict(context.request.arguments)
    except Exception:   # a notebook or a custom context without a request
        return {}


def build_document(doc: Document, catalogue: Catalogue, arguments: Mapping[str, Sequence] | None = None,
                   defaults: UIDefaults | None = None, synchronous: bool | None = None):
    """Fill ``doc`` with the project page (or the landing view); returns the session object or None.

    On a server (a session context) nothing slow runs on the event loop: a project not open yet is
    opened (and its page built) in the builder thread while a small page says so, and the landing
    view reads the projects it has not summarised yet in a worker and fills its table in afterwards.
    On a bare Document (tests) the page is built here and returned; ``synchronous=False`` there still
    sends the session's long jobs to worker threads."""
    defaults = defaults or load_defaults()
    arguments = request_arguments(doc) if arguments is None else dict(arguments)
    served = (doc.session_context is not None) if synchronous is None else not synchronous
    # Embedded (server_document, Jupyter): leave the host page's address bar alone.
    follow = "bokeh-autoload-element" not in arguments
    parsed = parse_query(arguments, defaults)
    notices = list(parsed.messages)
    pid = parsed.state.project
    if pid is not None and pid not in catalogue.folders:
        notices.insert(0, f"project {pid!r} is not among the projects served here")
        pid = None
    if pid is None and len(catalogue.ids) == 1:
        pid = catalogue.ids[0]
    if pid is None:
        return _landing(doc, catalogue, notices, follow, served)
    if doc.session_context is not None:              # a server's session: the page is built off the loop
        return _build_later(doc, catalogue, pid, parsed.state, notices, follow, defaults)
    return _project(doc, catalogue, pid, parsed.state, notices, follow, defaults, synchronous)


def _project(doc: Document, catalogue: Catalogue, pid: str, state, notices: list[str], follow: bool,
             defaults: UIDefaults, synchronous: bool | None):
    try:
        engine = catalogue.engine(pid)
        resolved = resolve(state.with_(project=pid), engine.project, defaults)
    except ProjectError as exc:
        return _landing(doc, catalogue, [f"project {pid!r} cannot be opened: {exc}"], follow,
                        doc.session_context is not None)
    session = ProjectSession(engine, resolved.state, defaults, notices + resolved.messages,
                             follow_address_bar=follow, synchronous=synchronous)
    session.connect(doc)
    if not session.synchronous and resolved.state.brush is None:
        catalogue.warm(pid, resolved.state.source)
    return session


def _build_later(doc: Document, catalogue: Catalogue, pid: str, state, notices: list[str], follow: bool,
                 defaults: UIDefaults):
    """On a server: the page's shell at once (header, status line, the page's place, URL holder: the
    browser's first pull is a few models); the project opened if need be and the page's models built in
    the ``BUILDER`` thread, then wired and put into the shell on the event loop. Building a page's models
    (~0.1-0.2 s) on the loop held every other session's messages back behind it (README: load)."""
    opening = not catalogue.is_open(pid)
    shell = page_shell(pid, f"Opening project {pid}…" if opening else "Building the page…",
                       defaults.select.window_px + 280, follow)
    shell.header.text = header_html(pid, "opening…" if opening else "", True)
    with doc.models.freeze():
        for root in shell.roots:
            doc.add_root(root)
    follow_on_load(doc, shell.url, follow, if_set=True)
    doc.title = f"LSTMVis · {pid}"

    def build():
        yield_to_sessions()
        engine = catalogue.engine(pid)
        resolved = resolve(state.with_(project=pid), engine.project, defaults)
        return ProjectSession(engine, resolved.state, defaults, notices + resolved.messages,
                              follow_address_bar=follow, synchronous=False, shell=shell)

    def show(session) -> None:
        if isinstance(session, ProjectSession):
            session.connect(doc)
            if session.state.brush is None:
                catalogue.warm(pid, session.state.source)
            return
        if not isinstance(session, ProjectError):
            log.error("opening project %s", pid, exc_info=session)
            session = f"internal error ({type(session).__name__})"
        doc.clear()
        _landing(doc, catalogue, [f"project {pid!r} cannot be opened: {session}"], follow, True)
    if BUILD_ON_CONNECT[0] and page_request(doc):
        when_connected(doc, lambda: run_off_loop(doc, build, show, BUILDER))
    else:
        run_off_loop(doc, build, show, BUILDER)
    return None


def _landing(doc: Document, catalogue: Catalogue, notices: list[str], follow: bool, served: bool = False):
    known, missing = catalogue.known_summaries()
    if not served and missing:                       # a bare Document (tests, notebooks): read them now
        known, missing = catalogue.summaries(), []
    view = build_landing(known, str(Path(catalogue.data_dir).name or catalogue.data_dir), len(missing))
    lines = [("warn", n) for n in notices]
    if len(catalogue.ids) > 1 or not notices:
        lines.append(("info", "Choose a project."))
    view.status.text = status_html(lines)
    holder = url_holder(follow)
    with doc.models.freeze():
        doc.add_root(view.layout)
        doc.add_root(holder)
    follow_on_load(doc, holder, follow)
    doc.title = "LSTMVis · projects"
    if missing:
        def fill(summaries) -> None:
            view.table.text = table_html(known if isinstance(summaries, Exception) else summaries)
        run_off_loop(doc, catalogue.summaries, fill)
    return view
