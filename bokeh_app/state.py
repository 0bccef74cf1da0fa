"""The shareable state of one session: URL query <-> :class:`ViewState`, with validation and fallbacks.

Every scenario is a URL: ``?project=ID&source=FILE::PATH&pos=P&threshold=θ&brush=S,E&left=L&right=R``
plus ``add=`` / ``remove=`` (cells edited by hand), ``tracks=`` (shown meta tracks), ``ww=`` (word
width, px), ``scale=zscore|quantile`` (threshold a per-cell normalised value, ``gpu_matcher.threshold``),
``minlen=`` (the shortest match shown, 1 allowed), ``unit=`` (the cell whose unit page is open) and
``atleast=`` (the hypothesis panel's detector: at least m of the k cells of S on; absent: all k) and
``stats=1`` (the hypothesis panel is open; ``atleast=`` opens it too).
Parsing never raises: a malformed or unknown value falls back to the default and adds a one-line message
for the status bar. A project id is only ever looked up among discovered projects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Sequence
from urllib.parse import urlencode

from bokeh_app.config import UIDefaults
from gpu_matcher import ProjectError
from gpu_matcher.threshold import SCALE_DEFAULTS, SCALE_RANGES, SCALES

#: Query keys, in the order they are written.
KEYS = ("project", "source", "pos", "threshold", "scale", "brush", "left", "right", "add", "remove", "tracks",
        "ww", "minlen", "unit", "atleast", "stats")

#: Meta tracks shown when the URL names none (``tracks=`` absent): the first few, in the project's order;
#: a project with dozens of tracks then builds strips for these only.
DEFAULT_TRACKS = 8

#: The longest minimum match length the app offers (the engine takes any; beyond this the view is empty).
MAX_MIN_LENGTH = 50


@dataclass(frozen=True)
class ViewState:
    """What the user sees: enough to rebuild the select view and re-run the match."""

    project: str | None = None
    source: str | None = None
    pos: int = 0                              # first step of the select view's window
    threshold: float | None = None            # None: the source's default
    brush: tuple[int, int] | None = None      # inclusive [s, e], absolute steps
    left: int = 0                             # off-margins of the pattern
    right: int = 0
    add: tuple[int, ...] = ()                 # cells added to S by hand
    remove: tuple[int, ...] = ()              # cells removed from S by hand
    tracks: tuple[str, ...] | None = None     # shown meta tracks, top to bottom; None: default_tracks
    word_width: int | None = None             # px per step; None: the default
    scale: str = "none"                       # threshold on: the value, or a per-cell zscore / quantile
    min_length: int | None = None             # matches shorter than this are dropped; None: the default
    unit: int | None = None                   # the cell whose unit page is open; None: none
    atleast: int | None = None                # the detector's m (clamped to k, S's size); None: every cell
    stats: bool = False                       # the hypothesis panel is open (built on demand)
    locus: str | None = None                  # pos= as a genome coordinate (chr2:1,234,567), until resolved

    def with_(self, **changes) -> "ViewState":
        return replace(self, **changes)


@dataclass
class Parsed:
    state: ViewState
    messages: list[str] = field(default_factory=list)


def _last(arguments: Mapping[str, Sequence], key: str) -> str | None:
    values = arguments.get(key)
    if values is None:
        return None
    if isinstance(values, (str, bytes)):
        values = [values]
    if not values:
        return None
    value = values[-1]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).strip()


def _shown(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _int_list(text: str) -> list[int] | None:
    parts = [p for p in text.replace(" ", "").split(",") if p != ""]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        return None
    return values if all(v >= 0 for v in values) else None


def parse_query(arguments: Mapping[str, Sequence], defaults: UIDefaults) -> Parsed:
    """Syntax only: turn query arguments (tornado's ``{key: [bytes]}`` or ``{key: str}``) into a state."""
    msgs: list[str] = []
    out: dict = {}
    get = lambda key: _last(arguments, key)  # noqa: E731

    for key in ("project", "source"):
        value = get(key)
        if value:
            out[key] = value
    value = get("pos")
    if value is not None:
        pos = _whole(value, 0)
        if pos is None and any(c.isalpha() for c in value):
            out["locus"] = value[:200]              # a genome coordinate: resolve() reads it
        elif pos is None:
            msgs.append(f"pos {_shown(value)} is not a step number; showing the start")
        else:
            out["pos"] = pos
    value = get("threshold")
    if value is not None:
        try:
            theta = float(value)
            if not math.isfinite(theta):
                raise ValueError
            out["threshold"] = theta
        except ValueError:
            msgs.append(f"threshold {_shown(value)} is not a number; using the default")
    value = get("scale")
    if value:
        if value in SCALES:
            out["scale"] = value
        else:
            msgs.append(f"scale {_shown(value)} is not one of {', '.join(SCALES)}; using none")
    value = get("brush")
    if value:
        ends = _int_list(value)
        if ends is None or len(ends) != 2 or ends[0] > ends[1]:
            msgs.append(f"brush {_shown(value)} is not 'START,END' with START <= END; no brush")
        else:
            out["brush"] = (ends[0], ends[1])
    for key in ("left", "right"):
        value = get(key)
        if value is None:
            continue
        margin = _whole(value, 0)
        if margin is None:
            msgs.append(f"{key} {_shown(value)} is not a number of steps >= 0; using 0")
            continue
        if margin > defaults.select.max_margin:
            msgs.append(f"{key} {margin} is above {defaults.select.max_margin}; using "
                        f"{defaults.select.max_margin}")
            margin = defaults.select.max_margin
        out[key] = margin
    for key in ("add", "remove"):
        value = get(key)
        if value:
            cells = _int_list(value)
            if cells is None:
                msgs.append(f"{key} {_shown(value)} is not a list of cell numbers; ignored")
            else:
                out[key] = tuple(sorted(set(cells)))
    value = get("tracks")
    if value is not None:
        out["tracks"] = tuple(dict.fromkeys(t for t in value.split(",") if t))
    value = get("ww")
    if value is not None:
        widths = defaults.select.word_widths
        ww = _whole(value, 1)
        if ww is None:
            msgs.append(f"ww {_shown(value)} is not a width in px; using {defaults.select.word_width}")
        else:
            if ww not in widths:
                nearest = min(widths, key=lambda w: abs(w - ww))
                msgs.append(f"word width {ww} is not offered; using {nearest}")
                ww = nearest
            out["word_width"] = ww
    value = get("minlen")
    if value is not None:
        minlen = _whole(value, 1, MAX_MIN_LENGTH)
        if minlen is not None:
            out["min_length"] = minlen
        else:
            msgs.append(f"minlen {_shown(value)} is not a length in [1, {MAX_MIN_LENGTH}]; using "
                        f"{defaults.match.min_length}")
    value = get("unit")
    if value:
        unit = _whole(value, 0)
        if unit is None:
            msgs.append(f"unit {_shown(value)} is not a cell number; no unit page")
        else:
            out["unit"] = unit
    value = get("atleast")
    if value:
        m = _whole(value, 1)
        if m is None:
            msgs.append(f"atleast {_shown(value)} is not a number of cells >= 1; every cell of S on")
        else:
            out["atleast"] = m
    value = get("stats")
    if value:
        if value in ("0", "1"):
            out["stats"] = value == "1"
        else:
            msgs.append(f"stats {_shown(value)} is not 0 or 1; the hypothesis panel stays closed")
    return Parsed(ViewState(**out), msgs)


def _whole(value: str, lo: int, hi: int | None = None) -> int | None:
    """A URL value as a whole number in ``[lo, hi]`` (no upper bound when ``hi`` is None), else None."""
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= lo and (hi is None or number <= hi) else None


def client_number(value, what: str, lo: float, hi: float, integer: bool = False
                  ) -> tuple[float | int | None, str | None]:
    """A number a browser sent for a widget, checked on the server: ``(value, None)`` when good,
    ``(clamped, message)`` when outside ``[lo, hi]``, ``(None, message)`` when no finite number (the
    widget then goes back to the state's value). A client can send anything a widget's type allows."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None, f"{what} {_shown(str(value))} is not a number; unchanged"
    if not math.isfinite(number):
        return None, f"{what} {_shown(str(value))} is not a finite number; unchanged"
    if integer and number != int(number):
        return None, f"{what} {number:g} is not a whole number; unchanged"
    if not lo <= number <= hi:
        clamped = min(max(number, lo), hi)
        clamped = int(clamped) if integer else round(clamped, 4)
        return clamped, f"{what} {number:g} is outside [{lo:g}, {hi:g}]; using {clamped:g}"
    return (int(number) if integer else number), None


def default_threshold(value_range: tuple[float, float], defaults: UIDefaults) -> float:
    lo, hi = value_range
    theta = defaults.select.threshold
    if lo < theta < hi:
        return theta
    return round(lo + (hi - lo) * 2 / 3, 4)


def threshold_range(value_range: tuple[float, float], scale: str) -> tuple[float, float]:
    """The threshold slider's range: the source's value range, or the scale's."""
    return SCALE_RANGES.get(scale, value_range)


def resolve(state: ViewState, project, defaults: UIDefaults) -> Parsed:
    """Check a parsed state against an opened project; out-of-range values fall back with a message."""
    msgs: list[str] = []
    changes: dict = {}
    source = state.source
    if source is None or source not in project.sources:
        if source is not None:
            msgs.append(f"source {_shown(source)} is not in project {project.id!r}; showing "
                        f"{project.default_source}")
        source = project.default_source
        changes["source"] = source
    src = project.source(source)
    lo, hi = threshold_range(src.value_range(), state.scale)
    if state.threshold is None:
        changes["threshold"] = SCALE_DEFAULTS.get(state.scale) or default_threshold((lo, hi), defaults)
    elif not lo <= state.threshold <= hi:
        clamped = round(min(max(state.threshold, lo), hi), 4)
        msgs.append(f"threshold {state.threshold:g} is outside the source's range [{lo:g}, {hi:g}]; "
                    f"using {clamped:g}")
        changes["threshold"] = clamped
    T, D = src.shape
    if state.locus is not None:
        changes["locus"] = None
        genome = getattr(project, "genome", None)
        try:
            if genome is None:
                raise ProjectError(f"project {project.id!r} has no genome")
            changes["pos"] = int(genome.parse(state.locus)[0])
        except ProjectError as exc:
            msgs.append(f"pos {_shown(state.locus)}: {exc}; showing the start")
            changes["pos"] = 0
    elif state.pos >= T:
        msgs.append(f"pos {state.pos} is past the end of the timeline ({T} steps); showing the start")
        changes["pos"] = 0
    if state.brush is not None:
        s, e = state.brush
        if e >= T:
            msgs.append(f"brush {s},{e} is outside the timeline [0, {T - 1}]; no brush")
            changes["brush"] = None
        else:
            seq_lo, seq_hi = project.sequence_of(s)
            if e >= seq_hi:
                msgs.append(f"brush {s},{e} crosses a sequence boundary at {seq_hi}; using {s},{seq_hi - 1}")
                changes["brush"] = (s, seq_hi - 1)
    for key in ("add", "remove"):
        cells = getattr(state, key)
        bad = [c for c in cells if c >= D]
        if bad:
            msgs.append(f"{key}: cell {bad[0]} is out of range [0, {D}); ignored")
            changes[key] = tuple(c for c in cells if c < D)
    if state.unit is not None and state.unit >= D:
        msgs.append(f"unit {state.unit} is out of range [0, {D}); no unit page")
        changes["unit"] = None
    if state.stats and not any(t.kind == "discrete" for t in project.meta.values()):
        changes["stats"] = False                   # no hypothesis panel in a project without labels
    if state.tracks is not None:
        unknown = [t for t in state.tracks if t not in project.meta]
        if unknown:
            msgs.append(f"tracks: {_shown(unknown[0])} is not a meta track of this project; ignored")
            changes["tracks"] = tuple(t for t in state.tracks if t in project.meta)
    return Parsed(state.with_(**changes), msgs)


def default_tracks(names: Sequence[str]) -> list[str]:
    """The tracks shown without ``tracks=`` in the URL."""
    return list(names)[:DEFAULT_TRACKS]


def _fmt_float(value: float) -> str:
    return format(round(float(value), 4), "g")


def _join(values: Iterable) -> str:
    return ",".join(str(v) for v in values)


def to_query(state: ViewState, defaults: UIDefaults, locate: Callable[[int], str] | None = None) -> str:
    """The URL query of a state (without '?'); default-valued optional keys are left out; ``locate``
    writes ``pos`` (a genome project's ``chr2:1,234,567``)."""
    items: list[tuple[str, str]] = []
    if state.project is not None:
        items.append(("project", state.project))
    if state.source is not None:
        items.append(("source", state.source))
    items.append(("pos", locate(state.pos) if locate is not None else str(state.pos)))
    if state.threshold is not None:
        items.append(("threshold", _fmt_float(state.threshold)))
    if state.scale != "none":
        items.append(("scale", state.scale))
    if state.brush is not None:
        items.append(("brush", _join(state.brush)))
    if state.left:
        items.append(("left", str(state.left)))
    if state.right:
        items.append(("right", str(state.right)))
    if state.add:
        items.append(("add", _join(state.add)))
    if state.remove:
        items.append(("remove", _join(state.remove)))
    if state.tracks is not None:
        items.append(("tracks", _join(state.tracks)))
    if state.word_width is not None and state.word_width != defaults.select.word_width:
        items.append(("ww", str(state.word_width)))
    if state.min_length is not None and state.min_length != defaults.match.min_length:
        items.append(("minlen", str(state.min_length)))
    if state.unit is not None:
        items.append(("unit", str(state.unit)))
    if state.atleast is not None:
        items.append(("atleast", str(state.atleast)))
    if state.stats:
        items.append(("stats", "1"))
    return urlencode(items, safe=":,/")
