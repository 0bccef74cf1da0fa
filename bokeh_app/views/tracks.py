"""The meta-track picker (issue 15, "tracks by the dozen"): models only.

Four models whatever the number of tracks: a ``MultiChoice`` of the project's tracks (its value is the
shown tracks, in the order they are drawn; a track added joins the end), a ``Select`` of a shown track
and two buttons moving it up or down. The strips and heatmaps of a track are built only once it is
shown (``receivers.tracks``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bokeh.models import Button, Column, MultiChoice, Row, Select


@dataclass
class TrackPicker:
    choice: MultiChoice
    move: Select
    up: Button
    down: Button
    layout: Column


def build_track_picker(names: list[str], shown: list[str], width: int = 250) -> TrackPicker:
    choice = MultiChoice(name="tracks", options=list(names), value=list(shown), width=width,
                         placeholder="add a track", title="shown, top to bottom")
    move = Select(name="track_move", options=list(shown), value=shown[0] if shown else "", width=width - 100)
    up = Button(name="track_up", label="▲", width=40)
    down = Button(name="track_down", label="▼", width=40)
    return TrackPicker(choice=choice, move=move, up=up, down=down,
                       layout=Column(choice, Row(move, up, down, styles={"align-items": "end"})))
