"""Session lifecycle hooks, found beside ``main.py`` by Bokeh's ``DirectoryHandler`` (``lstmvis serve`` and
``bokeh serve bokeh_app`` alike).

A session's end reaches its worker here, not through ``Document.on_session_destroyed``: Bokeh follows a
document's own destroy callbacks with a full ``gc.collect()``, one per session on the event loop, which
under a crowd leaving was a sixth of the server's CPU (README: load).
"""

from bokeh_app.worker import session_ended


def on_session_destroyed(session_context) -> None:
    session_ended(session_context.id)


def on_server_loaded(server_context) -> None:
    """The property speedups (``speedups.py``: the same bytes, a third of a page's CPU), in every server
    process of ``lstmvis serve`` and ``bokeh serve bokeh_app`` alike, before its first session; refused on
    a Bokeh whose code differs."""
    from bokeh_app import speedups

    speedups.install()
