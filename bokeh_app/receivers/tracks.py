"""Meta tracks by the dozen (issue 15): which tracks are shown and in what order, from the picker
(``views.tracks``), kept in the URL's ``tracks=``. A track's strip (select view) and heatmap (match view)
are built the first time it is shown; hidden ones leave the page's layout."""

from __future__ import annotations

from bokeh_app.state import default_tracks
from bokeh_app.views.common import lean
from bokeh_app.views.match import COUNT_HEATMAP, build_heatmap
from bokeh_app.views.select import build_track


class TracksReceiver:
    def __init__(self, session):
        self.s = session

    def connect(self) -> None:
        picker = self.s.sv.track_toggle
        picker.choice.on_change("value", lambda attr, old, new: self.on_choice(new))
        picker.up.on_click(lambda: self.on_move(-1))
        picker.down.on_click(lambda: self.on_move(+1))

    # --- callbacks -------------------------------------------------------------------------------
    def on_choice(self, names) -> None:
        s = self.s
        if s.quiet:
            return
        names = list(dict.fromkeys(str(n) for n in (names or [])))
        unknown = [n for n in names if n not in s.project.meta]
        if unknown:
            s.refuse(f"track {unknown[0][:60]!r} is not a meta track of this project; unchanged",
                     lambda: setattr(s.sv.track_toggle.choice, "value", s.shown_tracks))
            return
        self.show(names, f"Meta tracks shown: {', '.join(names) or 'none'}.")

    def on_move(self, step: int) -> None:
        """The picked shown track one place up (``step`` -1) or down (+1)."""
        s = self.s
        shown, name = s.shown_tracks, s.sv.track_toggle.move.value
        if name not in shown:
            s.refuse("Pick a shown track to move it.")
            return
        i = shown.index(name)
        j = i + step
        if not 0 <= j < len(shown):
            s.refuse(f"{name} is already {'first' if step < 0 else 'last'}.")
            return
        shown[i], shown[j] = shown[j], shown[i]
        self.show(shown, f"Moved {name} {'up' if step < 0 else 'down'}: {', '.join(shown)}.")

    def show(self, names: list[str], message: str) -> None:
        s = self.s
        s.user_acted()
        s.state = s.state.with_(tracks=None if names == default_tracks(list(s.project.meta)) else tuple(names))
        with s.batch():
            s.say(message)
            s.show_tracks()
            s.show_window()
            s.sync_url()
        s.match.request()

    # --- the layout ------------------------------------------------------------------------------
    def arrange(self) -> None:
        """The shown tracks' strips and heatmaps (built now if new) in the state's order; the picker
        follows (on a state from the URL)."""
        s, sv, mv = self.s, self.s.sv, self.s.mv
        shown = s.shown_tracks
        for name in shown:
            kind, rows = s.track_specs[name]
            if name not in sv.tracks:
                sv.tracks[name] = build_track(name, kind, rows, sv.x_range, s.defaults, sv.extra["border"])
                lean(sv.tracks[name].plot)
            if name not in mv.heatmaps:
                mv.heatmaps[name] = build_heatmap(name, kind, mv.plot.y_range, s.defaults,
                                                  s.track_labels.get(name))
        strips = sv.extra["strips"]
        want = [sv.plot, sv.count_plot] + [sv.tracks[n].plot for n in shown]
        if list(strips.children) != want:
            strips.children = want
        row = mv.heatmap_row
        want = [row.children[0], mv.heatmaps[COUNT_HEATMAP].plot] + [mv.heatmaps[n].plot for n in shown]
        if list(row.children) != want:
            row.children = want
        picker = sv.track_toggle
        with s.batch():
            if list(picker.choice.value) != shown:
                picker.choice.value = shown
            picker.move.options = shown
            if picker.move.value not in shown:
                picker.move.value = shown[0] if shown else ""
