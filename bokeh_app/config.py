"""UI defaults for the app, typed: read from ``configs/defaults.yaml`` through ``gpu_matcher.defaults``
(the same file the command line takes its ``--top`` / ``--min-length`` defaults from).

No Bokeh here: the CLI imports this module's neighbours without importing Bokeh.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import lru_cache

from gpu_matcher import defaults as shipped_defaults

log = logging.getLogger("bokeh_app")


@dataclass(frozen=True)
class SelectDefaults:
    threshold: float
    word_width: int
    word_widths: tuple[int, ...]
    window_px: int
    height_px: int
    left: int
    right: int
    max_margin: int
    track_row_px: int


@dataclass(frozen=True)
class MatchDefaults:
    top: int
    min_length: int
    phrase_length: int
    distinct: bool
    context_left: int
    columns: int
    word_px: int
    row_px: int
    heatmap_cell_px: int


@dataclass(frozen=True)
class UIDefaults:
    select: SelectDefaults
    match: MatchDefaults
    search_max_results: int


def _fields(cls: type, values: dict, where: str) -> dict:
    """The dataclass's keys from ``values``; a key the app does not know warns once."""
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            log.warning("%s: key %r is not used by the app", where, key)
    return {k: v for k, v in values.items() if k in names}


@lru_cache(maxsize=4)
def load_defaults(path: str | None = None) -> UIDefaults:
    """The UI defaults: the shipped file, overlaid by ``path`` or ``$LSTMVIS_UI_DEFAULTS``."""
    cfg = shipped_defaults.load(path)
    where = str(shipped_defaults.shipped_path())
    sel = _fields(SelectDefaults, cfg["select"], f"{where}: select")
    mat = _fields(MatchDefaults, cfg["match"], f"{where}: match")
    widths = tuple(sorted({int(w) for w in sel["word_widths"]} | {int(sel["word_width"])}))
    return UIDefaults(
        select=SelectDefaults(threshold=float(sel["threshold"]), word_width=int(sel["word_width"]),
                              word_widths=widths, window_px=int(sel["window_px"]),
                              height_px=int(sel["height_px"]), left=int(sel["left"]),
                              right=int(sel["right"]), max_margin=int(sel["max_margin"]),
                              track_row_px=int(sel["track_row_px"])),
        match=MatchDefaults(top=int(mat["top"]), min_length=int(mat["min_length"]),
                            phrase_length=int(mat["phrase_length"]), distinct=bool(mat["distinct"]),
                            context_left=int(mat["context_left"]), columns=int(mat["columns"]),
                            word_px=int(mat["word_px"]), row_px=int(mat["row_px"]),
                            heatmap_cell_px=int(mat["heatmap_cell_px"])),
        search_max_results=int(cfg["search"]["max_results"]),
    )
