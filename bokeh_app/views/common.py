"""Pieces every page shares: the status line, the hidden URL holder, the header, palettes and styles."""

from __future__ import annotations

import html
from dataclasses import dataclass

from bokeh.models import (Axis, BoxSelectTool, Column, ColumnDataSource, CustomJS, Div, GlyphRenderer, Grid,
                          LassoSelectTool, Spacer, TapTool)
from bokeh.palettes import Blues256, Viridis256

COUNT_PALETTE = tuple(reversed(Blues256))[24:]       # light (0 cells) to dark (all of S)
SCALAR_PALETTE = Viridis256
SELECTED_COLOR = "#1f77b4"
FADED_COLOR = "#9aa3ad"
THRESHOLD_COLOR = "#d62728"
BRUSH_COLOR = "#1f77b4"
MARGIN_COLOR = "#7f7f7f"
FOCUS_COLOR = "#ff7f0e"

#: A plain string (not an InlineStyleSheet model: a model may belong to one document only).
PAGE_CSS = """
:host { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 13px; }
.lv-title { font-size: 18px; font-weight: 600; }
.lv-sub { color: #666; }
.lv-status { padding: 4px 8px; border-radius: 3px; background: #f3f6f9; border: 1px solid #d8dee4;
             min-height: 18px; }
.lv-status.warn { background: #fff8e1; border-color: #f0c36d; }
.lv-status.error { background: #fdecea; border-color: #e57373; }
.lv-status.busy { background: #e8f1fb; border-color: #90b4dc; }
.lv-busy { color: #1f5f9f; font-weight: 600; }
table.lv-projects { border-collapse: collapse; }
table.lv-projects td, table.lv-projects th { border-bottom: 1px solid #e1e4e8; padding: 6px 10px;
                                             text-align: left; vertical-align: top; }
.lv-section { font-size: 14px; font-weight: 600; margin-top: 6px; }
"""

LEVELS = ("info", "warn", "error", "busy")


def status_div(width: int = 960) -> Div:
    """The ``status`` Div: the last message (plus sticky notices, such as URL fallbacks).

    Its height is fixed so a new message never moves the plots below it (which would make the
    browser re-lay out and repaint them all); long notices scroll.
    """
    return Div(name="status", text="", width=width, height=46, styles={"overflow-y": "auto"})


#: Status box colours (background, border) by level. Inline styles, no stylesheet: a Div with a
#: stylesheet re-parses it on every text change, and the status changes with every action.
STATUS_COLORS = {"info": ("#f3f6f9", "#d8dee4"), "busy": ("#e8f1fb", "#90b4dc"),
                 "warn": ("#fff8e1", "#f0c36d"), "error": ("#fdecea", "#e57373")}


def status_html(lines: list[tuple[str, str]]) -> str:
    """HTML for status lines ``[(level, text)]``: the worst level colours the box; text is escaped."""
    if not lines:
        return ""
    order = {"info": 0, "busy": 1, "warn": 2, "error": 3}
    level = max((lvl for lvl, _ in lines), key=lambda lvl: order.get(lvl, 0))
    body = "<br>".join(html.escape(text) for _, text in lines)
    background, border = STATUS_COLORS.get(level, STATUS_COLORS["info"])
    return (f'<div class="lv-status {level}" style="padding: 4px 8px; border-radius: 3px; '
            f'font-family: sans-serif; font-size: 13px; background: {background}; '
            f'border: 1px solid {border};">{body}</div>')


def url_holder(follow_address_bar: bool) -> ColumnDataSource:
    """The ``url_state`` model: column ``query`` holds the URL query; the browser's address bar follows
    its changes (unless the app is embedded).

    A ColumnDataSource rather than a Div (a Div's change re-lays out the page) or a custom DataModel
    (Bokeh then looks for a JS extension of the package, which fails on some editable installs).
    """
    holder = ColumnDataSource(name="url_state", data={"query": [""]})
    if follow_address_bar:
        holder.js_on_change("data", CustomJS(code=REPLACE_STATE_JS))
    return holder


def url_query(holder: ColumnDataSource) -> str:
    return holder.data["query"][0]


def set_url_query(holder: ColumnDataSource, query: str) -> None:
    if url_query(holder) != query:
        holder.data = {"query": [query]}


def follow_on_load(doc, holder: ColumnDataSource, follow_address_bar: bool, if_set: bool = False) -> None:
    """Write the (normalised) query into the address bar once the page is ready. ``if_set``: only a query
    already there (a page shell: its page may be built before or after the browser's first pull, so the
    query reaches the browser either in that pull, seen here, or as a change, seen by the holder's own
    callback; an empty holder means "not yet", not "no query")."""
    if follow_address_bar:
        code = REPLACE_STATE_JS.replace("cb_obj", "holder")
        if if_set:
            code = code.replace("const url", "if (!query) { return; }\nconst url", 1)
        doc.js_on_event("document_ready", CustomJS(args={"holder": holder}, code=code))


REPLACE_STATE_JS = """
const data = cb_obj.data;
const query = (data instanceof Map ? data.get('query') : data.query)[0];
const url = window.location.pathname + (query ? '?' + query : '');
if (url !== window.location.pathname + window.location.search) {
  window.history.replaceState(window.history.state, '', url);
}
"""


def lean(*plots) -> None:
    """Drop the models a ``figure`` makes that the page never shows: hidden grids and axes, and the muted
    and non-selection glyph copies (no legend mutes; on a plot without a tap or select tool nothing is
    ever selected, and BokehJS derives an ``auto`` glyph should it be). Every model costs each session's
    build and its first message (about 1.5 ms on the 2-core test machine, README: load)."""
    for plot in plots:
        plot.center = [r for r in plot.center if not (isinstance(r, Grid) and not r.visible)]
        for side in ("below", "above", "left", "right"):
            panels = getattr(plot, side)
            kept = [r for r in panels if not (isinstance(r, Axis) and not r.visible)]
            if len(kept) != len(panels):
                setattr(plot, side, kept)
        selectable = any(isinstance(t, (TapTool, BoxSelectTool, LassoSelectTool)) for t in plot.toolbar.tools)
        for r in plot.renderers:
            if isinstance(r, GlyphRenderer):
                r.muted_glyph = "auto"
                if not selectable:
                    r.nonselection_glyph = "auto"


def header_html(title: str, subtitle: str, with_home_link: bool) -> str:
    home = ' &nbsp; <a href="?">all projects</a>' if with_home_link else ""
    return (f'<span class="lv-title">LSTMVis · {html.escape(title)}</span> '
            f'<span class="lv-sub">{html.escape(subtitle)}</span>{home}')


def header(title: str, subtitle: str, with_home_link: bool) -> Div:
    return Div(text=header_html(title, subtitle, with_home_link), stylesheets=[PAGE_CSS], sizing_mode="stretch_width")


@dataclass
class PageShell:
    """A project page's roots, sent with the browser's first pull before the page itself is built: the
    header, the status line, the page's place (``project_view``, filled in on the event loop once the
    page's models are built in the builder thread) and the URL holder. BokehJS follows children added to
    a root it has rendered, not roots added after its first render (README: load)."""

    header: Div
    status: Div
    view: Column
    url: ColumnDataSource

    @property
    def roots(self) -> tuple:
        return self.header, self.status, self.view, self.url


def page_shell(title: str, message: str, width: int, follow_address_bar: bool) -> PageShell:
    """The shell of a project page: ``message`` (busy) in the status line until the page arrives. On a
    server the address bar takes the page's query from the holder: at page load if the pull brought it,
    else at its change (``follow_on_load(if_set=True)``)."""
    status = status_div(width)
    status.text = status_html([("busy", message)])
    # (One child until the page arrives: Bokeh's validation warns of an empty layout.)
    view = Column(Spacer(width=0, height=0), name="project_view")
    return PageShell(header(title, "", True), status, view, url_holder(follow_address_bar))


def section(text: str) -> Div:
    return Div(text=f'<div class="lv-section">{html.escape(text)}</div>', stylesheets=[PAGE_CSS])
