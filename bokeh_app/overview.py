"""The overview strip's questions and columns (issue 15, "overview and detail"): no Bokeh, any thread.

A whole contig (a genome project's chromosome; otherwise the whole timeline) in ``bins`` bins, about one
per pixel: the per-bin min and max of n(t) for S, of one meta track, and the share of each bin the
top matches cover. The engine answers, chunk by chunk at genome scale (``Engine.overview``,
``MetaTrack.overview``, docs/genomics.md); the app bins the match positions itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gpu_matcher import overview

#: Most values (steps x cells) one n(t) overview reads: about a second's reading (more: a part of the
#: contig around the detail view, ``counted_bins``).
OVERVIEW_VALUES = 500_000_000

#: The strip's three bands, bottom to top: (name, bottom y); each band is 0.9 high.
BANDS = (("matches", 0.05), ("track", 1.05), ("n(t)", 2.05))
BAND_HEIGHT = 0.9
BAND_COLORS = ("#d62728", "#59a14f", "#1f5f9f")      # per band, in BANDS' order


@dataclass(frozen=True)
class Span:
    """The stretch the overview shows: ``[start, stop)`` global steps, and its name."""

    start: int
    stop: int
    name: str


def bin_edges(start: int, stop: int, bins: int) -> np.ndarray:
    """The edges of the strip's bins over ``[start, stop)``: ``gpu_matcher.overview``'s, with never more
    bins than steps (one step a bin then)."""
    return overview.bin_edges(start, stop, max(1, min(int(bins), max(1, stop - start))))


def counted_bins(edges: np.ndarray, D: int, step: int, budget: int | None = None) -> tuple[int, int]:
    """The bins ``[i0, i1)`` whose n(t) is computed: all of them when the span's values (steps x ``D``)
    fit ``budget`` (``OVERVIEW_VALUES``), else those of the ``budget // D`` steps centred on ``step``
    (a long contig of a wide source: reading it all would hold the session's worker for minutes)."""
    budget = OVERVIEW_VALUES if budget is None else budget
    bins = len(edges) - 1
    steps = int(edges[-1] - edges[0])
    if steps * max(1, D) <= budget:
        return 0, bins
    room = max(1, budget // max(1, D))
    per = steps / bins
    half = max(1, int(room / per / 2))
    at = int(np.searchsorted(edges, step, side="right")) - 1
    i0 = max(0, min(at - half, bins - 2 * half))
    return i0, min(bins, i0 + 2 * half)


def count_overview(engine, source: str, cells: Sequence[int], threshold: float, scale: str, edges: np.ndarray,
                   bins: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin (min, max) of n(t) for ``cells`` over the strip's bins ``[i0, i1)`` (``Engine.overview``: read
    in chunks); NaN in the other bins."""
    i0, i1 = bins
    lo, hi = np.full(len(edges) - 1, np.nan), np.full(len(edges) - 1, np.nan)
    lo[i0:i1], hi[i0:i1] = engine.overview(source, list(cells), threshold, int(edges[i0]), int(edges[i1]), i1 - i0,
                                           scale=scale)
    return lo, hi


def track_overview(track, span: Span, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-bin (min, max) of a discrete or scalar track over ``span`` (its own ``overview``: the intervals,
    a bigWig's zoom levels, or chunks); None for a top-K word track."""
    if track.kind == "wordvec":
        return None
    return track.overview(span.start, span.stop, len(bin_edges(span.start, span.stop, bins)) - 1)


def match_density(matches: Sequence, edges: np.ndarray) -> np.ndarray:
    """The share (0..1) of each bin's steps that the matches ``[start, end]`` cover (overlaps counted
    once per match)."""
    edges = np.asarray(edges, dtype=np.int64)
    covered = np.zeros(len(edges) - 1, dtype=np.float64)
    for m in matches:
        a, b = max(int(m.start), int(edges[0])), min(int(m.end) + 1, int(edges[-1]))
        if a >= b:
            continue
        first = int(np.searchsorted(edges, a, side="right")) - 1
        last = int(np.searchsorted(edges, b - 1, side="right")) - 1
        for i in range(first, last + 1):
            covered[i] += min(b, edges[i + 1]) - max(a, edges[i])
    width = np.maximum(1, np.diff(edges))
    return np.minimum(1.0, covered / width)


def band_rows(band: int, lo: np.ndarray, hi: np.ndarray, low: float, high: float) -> tuple[np.ndarray, ...]:
    """Bars of one band (``BANDS[band]``): each bin with a value from its min to its max, scaled from
    ``[low, high]`` to the band's height (a bin whose min equals its max gets a sliver, so it shows; a
    count or cover band leaves out its empty bins). Returns (bin, bottom, top)."""
    name, bottom = BANDS[band]
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    keep = np.isfinite(lo) & np.isfinite(hi)
    if name != "track":
        keep &= hi > low
    idx = np.flatnonzero(keep)
    scale = BAND_HEIGHT / (high - low) if high > low else 0.0
    y0 = bottom + np.clip(lo[idx] - low, 0, None) * scale
    y1 = bottom + np.clip(hi[idx] - low, 0, None) * scale
    sliver = 0.05 * BAND_HEIGHT
    thin = y1 - y0 < sliver
    y1 = np.where(thin, np.minimum(bottom + BAND_HEIGHT, y0 + sliver), y1)
    y0 = np.where(thin, y1 - sliver, y0)
    return idx, y0, y1


def overview_columns(edges: np.ndarray, origin: int, counts: tuple[np.ndarray, np.ndarray] | None, cells: int,
                     track: tuple[np.ndarray, np.ndarray] | None, track_range: tuple[float, float] | None,
                     density: np.ndarray | None) -> dict:
    """The strip's one bar glyph (``x bottom top band``, binary arrays; x the bin's centre in steps
    from ``origin``): n(t) on 0..|S|, the track on its range (its declared one, else the span's
    min..max), the matches' cover relative to the bin they cover most."""
    parts = []
    if density is not None:
        # relative to the busiest bin: a few bases of match in a bin of thousands must still show
        peak = float(np.max(density)) if density.size else 0.0
        parts.append((0, band_rows(0, np.zeros_like(density), density, 0.0, peak if peak > 0 else 1.0)))
    if track is not None:
        lo, hi = track
        if track_range is None:
            finite = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)]])
            track_range = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        parts.append((1, band_rows(1, lo, hi, float(track_range[0]), float(track_range[1]))))
    if counts is not None and cells:
        parts.append((2, band_rows(2, counts[0], counts[1], 0.0, float(cells))))
    if not parts:
        return {"x": np.zeros(0, np.float32), "bottom": np.zeros(0, np.float32), "top": np.zeros(0, np.float32),
                "band": np.zeros(0, np.uint8)}
    bins = np.concatenate([p[0] for _, p in parts])
    centres = (edges[:-1] + edges[1:] - 1) / 2.0 - origin          # a step's x is its centre
    return {"x": centres[bins].astype(np.float32),
            "bottom": np.concatenate([p[1] for _, p in parts]).astype(np.float32),
            "top": np.concatenate([p[2] for _, p in parts]).astype(np.float32),
            "band": np.concatenate([np.full(len(p[0]), b, np.uint8) for b, p in parts])}


def zoom_for(steps: int, window_px: int, offered: Sequence[int]) -> int:
    """The word width that shows ``steps`` steps in the window: the widest offered with room for them
    all, else the narrowest offered."""
    fits = [w for w in sorted(offered) if window_px // w >= steps]
    return fits[-1] if fits else min(offered)
