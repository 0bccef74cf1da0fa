"""Overviews: the per-bin minimum and maximum of a per-step quantity over a long range, read in chunks.

A range of ``n`` steps in ``bins`` bins: bin ``i`` holds steps ``[start + i*n//bins, start + (i+1)*n//bins)``
(widths differ by at most one). When ``n < bins`` every bin is one step (step ``start + i*n//bins``), so a
strip wider than its range shows each step over a few pixels. Missing values (NaN) are skipped; a bin
with none has NaN for both.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from gpu_matcher.errors import ProjectError

#: Steps read per chunk by a dense reduction (a few MB of a one-value-per-step track).
OVERVIEW_CHUNK = 1 << 20
#: Most bins an overview may ask for.
MAX_BINS = 1 << 16


def check_bins(start: int, stop: int, bins: int) -> tuple[int, int, int]:
    start, stop, bins = int(start), int(stop), int(bins)
    if not 1 <= bins <= MAX_BINS:
        raise ProjectError(f"overview: bins={bins}; expected 1..{MAX_BINS}")
    if stop <= start:
        raise ProjectError(f"overview: the range [{start}, {stop}) is empty")
    return start, stop, bins


def bin_edges(start: int, stop: int, bins: int) -> np.ndarray:
    """``bins + 1`` step edges of the bins of ``[start, stop)`` (see the module docstring)."""
    n = int(stop) - int(start)
    return int(start) + (np.arange(bins + 1, dtype=np.int64) * n) // bins


def single_steps(start: int, stop: int, bins: int) -> np.ndarray | None:
    """The step of each bin when the range is shorter than the bins (else None)."""
    n = stop - start
    return start + (np.arange(bins, dtype=np.int64) * n) // bins if n < bins else None


def reduce_dense(read: Callable[[int, int], np.ndarray], start: int, stop: int, bins: int,
                 chunk: int = OVERVIEW_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` float64 arrays of ``bins``: per-bin min and max of ``read(a, b)`` (one value per step of
    ``[a, b)``), reading at most ``chunk`` steps at a time."""
    start, stop, bins = check_bins(start, stop, bins)
    steps = single_steps(start, stop, bins)
    if steps is not None:
        values = np.asarray(read(start, stop), dtype=np.float64)[steps - start]
        return values, values.copy()
    edges = bin_edges(start, stop, bins)
    lo = np.full(bins, np.nan)
    hi = np.full(bins, np.nan)
    chunk = max(1, int(chunk))
    for c0 in range(start, stop, chunk):
        c1 = min(stop, c0 + chunk)
        values = np.asarray(read(c0, c1), dtype=np.float64)
        b0 = int(np.searchsorted(edges, c0, side="right")) - 1
        b1 = int(np.searchsorted(edges, c1, side="left"))
        firsts = np.maximum(edges[b0:b1], c0) - c0
        lo[b0:b1] = np.fmin(lo[b0:b1], np.fmin.reduceat(values, firsts))
        hi[b0:b1] = np.fmax(hi[b0:b1], np.fmax.reduceat(values, firsts))
    return lo, hi


def reduce_steps(points: np.ndarray, values: np.ndarray, start: int, stop: int,
                 bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin min and max of a step function: ``values[j]`` holds on ``[points[j], points[j + 1])``
    (``points`` sorted, ``points[0] <= start``; the last value holds to ``stop``). Used for interval
    tracks, whose coverage changes only at interval ends, so no per-step array is ever built."""
    start, stop, bins = check_bins(start, stop, bins)
    steps = single_steps(start, stop, bins)
    values = np.asarray(values, dtype=np.float64)
    if steps is not None:
        picked = values[np.searchsorted(points, steps, side="right") - 1]
        return picked, picked.copy()
    edges = bin_edges(start, stop, bins)
    # Cut the pieces at the bin edges too, so each piece lies in exactly one bin.
    cuts = np.union1d(points[(points > start) & (points < stop)], edges[:-1])
    piece_values = values[np.searchsorted(points, cuts, side="right") - 1]
    firsts = np.searchsorted(cuts, edges[:-1], side="left")
    return np.fmin.reduceat(piece_values, firsts), np.fmax.reduceat(piece_values, firsts)
