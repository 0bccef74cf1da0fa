"""One browser session on one project: its state, URL and status line, and ``connect(doc)``.

The session holds what every receiver shares (the ``ViewState``, S, the status line, the URL holder,
the off-lock worker) and wires the receivers (``bokeh_app.receivers``: window, select, search, match,
statistics), each a handful of short callbacks that ask the engine (``bokeh_app.queries``) and write
columns (``bokeh_app.columns``) into its view's sources. Methods that follow a computation are plain
methods, so document tests drive them on a bare ``Document``, where jobs run inline.
"""

from __future__ import annotations

from contextlib import contextmanager

from bokeh_app.config import UIDefaults
from bokeh_app.coords import Locator
from bokeh_app.queries import track_labels
from bokeh_app.receivers import (MatchReceiver, SearchReceiver, SelectReceiver, StatsReceiver, UnitReceiver,
                                 WindowReceiver)
from bokeh_app.receivers.overview import OverviewReceiver
from bokeh_app.receivers.tracks import TracksReceiver
from bokeh_app.state import ViewState, default_tracks, to_query
from bokeh_app.views.common import PageShell, follow_on_load, header_html, page_shell, set_url_query, status_html
from bokeh_app.views.match import build_match_view
from bokeh_app.views.overview import build_overview_view
from bokeh_app.views.select import build_select_view
from bokeh_app.views.stats import build_stats_place, build_stats_view
from bokeh_app.views.unit import build_unit_view
from bokeh_app.worker import Worker
from gpu_matcher import Engine


class ProjectSession:
    """One browser session on one project."""

    def __init__(self, engine: Engine, state: ViewState, defaults: UIDefaults, notices: list[str] = (),
                 follow_address_bar: bool = True, synchronous: bool | None = None, shell: PageShell | None = None):
        self.engine = engine
        self.project = engine.project
        self.defaults = defaults
        self.state = state
        self.notices = list(notices)
        self.doc = None
        self.cells: list[int] = []                             # S after hand edits
        self.base_cells: list[int] = []                        # S from the brush alone
        self.worker = Worker(synchronous)
        self._quiet = 0                                        # >0 while we set widgets ourselves
        self._last_message: tuple[str, str] = ("info", "")
        self._follow = follow_address_bar
        meta, sources = self.project.meta, [(name, src.label) for name, src in self.project.sources.items()]
        self.track_specs = {name: (t.kind, (t.dataset.shape[1] if t.kind == "wordvec" and t.dataset.ndim == 2
                                            else 1)) for name, t in meta.items()}
        self.track_labels = {name: dict(t.labels) for name, t in meta.items()
                             if t.kind == "discrete" and isinstance(t.labels, dict)}
        shown = self.shown_tracks                    # only these get strips and heatmaps now
        self.uv = build_unit_view(defaults.select.window_px + 280)
        self.sv = build_select_view(sources=sources, tracks=[(n, *spec) for n, spec in self.track_specs.items()],
                                    defaults=defaults, unit_box=self.uv.box, shown=shown)
        self.mv = build_match_view(tracks=[(n, self.track_specs[n][0]) for n in shown], defaults=defaults,
                                   labels=self.track_labels)
        self._sources = sources
        self._discrete = {name: track_labels(engine, name) for name, t in meta.items() if t.kind == "discrete"}
        # The hypothesis panel's place; the panel is built when opened (``open_stats``).
        self.stats_place, self.stats_button = build_stats_place() if self._discrete else (None, None)
        self.stv = None
        self.locator = Locator.of(self.project)
        self.ov = build_overview_view(defaults.select.window_px, self.sv.extra["border"], self.locator.genome is not None)
        if self.locator.genome is not None:          # "go to" takes coordinates; the search, motifs
            self.sv.position.visible = False
            self.sv.search.update(title="motif search (IUPAC)", placeholder="e.g. CACGTG, Enter")
            self.sv.search_table.columns[0].title = "position"
        self.parts = [self.ov.layout, self.sv.layout, self.uv.layout, self.mv.layout,
                      *([self.stats_place] if self.stats_place else [])]
        self.header_text = header_html(self.project.name, f"{self.project.description} · project {self.project.id}",
                                       True)
        # The page goes into its shell (``views.common.page_shell``) in ``connect``: one already in the
        # document (sent with the first pull), or one made here; the models here are not in any document
        # yet, so this can run in the builder thread.
        self.shell = shell or page_shell(self.project.name, "", defaults.select.window_px + 280, follow_address_bar)
        self.header, self.status, self.layout, self.url = (self.shell.header, self.shell.status, self.shell.view,
                                                           self.shell.url)
        self.navigate = WindowReceiver(self)
        self.select = SelectReceiver(self)
        self.search = SearchReceiver(self)
        self.match = MatchReceiver(self)
        self.stats: StatsReceiver | None = None                # the open hypothesis panel's
        self.unit = UnitReceiver(self)
        self.tracks = TracksReceiver(self)
        self.overview = OverviewReceiver(self)

    @property
    def synchronous(self) -> bool | None:
        return self.worker.synchronous

    @property
    def receivers(self) -> list:
        return [r for r in (self.navigate, self.select, self.search, self.match, self.stats, self.unit,
                                           self.tracks, self.overview) if r is not None]

    def connect(self, doc) -> None:
        """Wire every receiver's callbacks, show the state (running its match) and add the roots."""
        self.doc = doc
        self.worker.attach(doc)
        for receiver in self.receivers:
            receiver.connect()
        if self.stats_button is not None:
            self.stats_button.on_click(self.on_open_stats)
            if self.state.stats or self.state.atleast is not None:
                self.open_stats()
        self.restore()
        # The status line is a root of its own: a change of its text then re-lays out only itself.
        # One freeze: each add_root would otherwise walk every model of the page again (a third of a
        # session's build time).
        with doc.models.freeze():
            self.header.text = self.header_text
            self.layout.children = self.parts
            if self.layout.document is not doc:          # not a shell sent with the first pull: its roots go in
                for root in self.shell.roots:
                    doc.add_root(root)
                follow_on_load(doc, self.url, self._follow)
        doc.title = f"LSTMVis · {self.project.name}"

    def open_stats(self) -> None:
        """Build the hypothesis panel into its place and wire it (once); the state records it open."""
        if self.stv is not None or self.stats_place is None:
            return
        self.stv = build_stats_view(tracks=self._discrete, sources=self._sources)
        self.stats = StatsReceiver(self)
        self.stats.connect()
        # Wired before it is sent: a button's click subscription sent after the button itself did not reach
        # BokehJS's event manager (Chromium, Bokeh 3.9: the click never came back).
        self.stats_place.children = [self.stv.layout]
        self.state = self.state.with_(stats=True)

    def on_open_stats(self) -> None:
        """The panel's button: open it and compute its numbers for the shown matches."""
        if self.stv is not None:
            return
        self.open_stats()
        self.sync_url()
        self.stats.update()

    @contextmanager
    def batch(self):
        """Changes we make ourselves: widget callbacks they fire (synchronously) do nothing.

        (No ``doc.hold()``: a held document defers Python callbacks too, past this guard; the server
        sends the burst of patches once the callback returns anyway.)
        """
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    @property
    def quiet(self) -> bool:
        return self._quiet > 0

    # --- derived quantities ----------------------------------------------------------------------
    @property
    def src(self):
        return self.project.source(self.state.source)

    @property
    def word_width(self) -> int:
        return self.state.word_width or self.defaults.select.word_width

    @property
    def min_length(self) -> int:
        return self.state.min_length or self.defaults.match.min_length

    @property
    def window(self) -> int:
        return max(1, min(self.project.T, self.defaults.select.window_px // self.word_width))

    @property
    def shown_tracks(self) -> list[str]:
        """The shown meta tracks, top to bottom (the URL's order)."""
        if self.state.tracks is None:
            return default_tracks(list(self.project.meta))
        return [t for t in self.state.tracks if t in self.project.meta]

    def clamp_pos(self, pos: int) -> int:
        return int(min(max(0, pos), max(0, self.project.T - self.window)))

    def stats_choice(self) -> tuple[str, str, int | None]:
        """(track, label, at least m) of the hypothesis panel; ("", "", None) without one."""
        stv = self.stv
        return ("", "", None) if stv is None else (stv.track.value or "", stv.label.value or "", self.state.atleast)

    # --- status line and URL ----------------------------------------------------------------------
    def say(self, text: str, level: str = "info") -> None:
        self._last_message = (level, text)
        lines = [("warn", n) for n in self.notices]
        if text:
            lines.append(self._last_message)
        self.status.text = status_html(lines)

    @property
    def last_note(self) -> str:
        """The last informational message (a match's status line repeats it)."""
        level, text = self._last_message
        return text if level == "info" else ""

    def refuse(self, message: str, restore=None) -> None:
        """A value a client sent that the server does not accept: say why and show the state's value again
        (``restore`` sets the widget back, its callbacks quiet)."""
        self.say(message, "warn")
        if restore is not None:
            with self.batch():
                restore()

    def user_acted(self) -> None:
        """The first action after loading retires the URL's fallback notices."""
        self.notices = []

    def sync_url(self) -> None:
        set_url_query(self.url, to_query(self.state, self.defaults, self.locator.url_value))

    # --- showing a state -------------------------------------------------------------------------
    def restore(self) -> None:
        """Show ``self.state`` (already validated by ``state.resolve``) and run its match."""
        st = self.state
        with self.batch():
            self.state = st.with_(pos=self.clamp_pos(st.pos))
            self.select.configure_source()
            self.sv.left.value, self.sv.right.value = st.left, st.right
            self.sv.min_length.value = self.min_length
            self.sv.word_width.value = str(self.word_width)
            self.show_tracks()
        self.select.ready(self._restore_window, busy=True)

    def _restore_window(self) -> None:
        st = self.state
        with self.batch():
            self.select.recompute_cells()
            self.show_window()
            self.sync_url()
            self.say("Brush a range of words in the plot to select cells." if not st.brush and not self.cells
                     else "")
        self.match.request()
        self.unit.refresh()

    def show_window(self) -> None:
        """The window at ``state.pos`` and everything S draws on it."""
        self.navigate.apply()
        self.select.apply()
        self.overview.follow()

    def show_tracks(self) -> None:
        self.tracks.arrange()
        self.overview.show_tracks()
        self.match.show_tracks()

    def go(self, pos, user: bool = False, focus: tuple[int, int] | None = None, message: str | None = None) -> None:
        self.navigate.go(pos, user=user, focus=focus, message=message)
