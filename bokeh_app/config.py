"""UI defaults: ``configs/defaults.yaml`` over a built-in copy (so an installed package still runs).

No Bokeh here: the CLI imports this module's neighbours without importing Bokeh.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

log = logging.getLogger("bokeh_app")

#: The shipped defaults file (present in a source checkout); ``LSTMVIS_UI_DEFAULTS`` names another.
DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "configs" / "defaults.yaml"

BUILTIN = {
    "select": {"threshold": 0.3, "word_width": 32, "word_widths": [10, 16, 24, 32, 48, 64],
               "window_px": 960, "height_px": 300, "left": 0, "right": 0, "max_margin": 20,
               "track_row_px": 22},
    "match": {"top": 50, "min_length": 2, "phrase_length": 0, "distinct": True, "context_left": 3,
              "columns": 16, "word_px": 60, "row_px": 18, "heatmap_cell_px": 9},
    "search": {"max_results": 200},
}


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


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif key in out:
            out[key] = value
    return out


@lru_cache(maxsize=4)
def load_defaults(path: str | None = None) -> UIDefaults:
    """The UI defaults; a missing or unreadable file logs one line and uses the built-in copy."""
    path = path or os.environ.get("LSTMVIS_UI_DEFAULTS") or str(DEFAULTS_FILE)
    raw: dict = {}
    if Path(path).is_file():
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            log.warning("%s: unreadable (%s); using built-in UI defaults", path, exc)
    cfg = _merge(BUILTIN, raw if isinstance(raw, dict) else {})
    sel, mat = cfg["select"], cfg["match"]
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
