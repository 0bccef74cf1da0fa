"""Per-cell scaling: threshold a normalised value instead of the raw one (for activations without a
natural range: ReLU, transformer residuals).

MATCHING.md applies unchanged to the normalised value ``z``; only "on" changes:

- ``zscore``: ``z = (v - mean_c) / std_c`` in float64, where ``v`` is the value after the source's
  transform and ``mean_c``, ``std_c`` are the cell's mean and (population) standard deviation over the
  whole corpus (NaNs ignored), computed once per source (``CellScale``). A constant cell has ``z = 0``.
- ``quantile``: ``z = #{t : x_t <= x} / T_c`` (a float64 division), the cell's empirical CDF over its
  stored values ``x`` (``T_c`` its non-NaN steps); the transform is monotone, so it changes nothing here.

Both are non-decreasing in the stored value, so "``z >= θ``" is "stored value ``>=`` some per-cell bound",
and the bound is found exactly in the key space (a binary search for ``zscore``, an order statistic for
``quantile``). A query then carries one key per cell (``MatchQuery.key_threshold`` of shape ``(D,)``)
and the NumPy backend runs it unchanged. Other backends fall back to NumPy for scaled queries.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from gpu_matcher.errors import ProjectError
from gpu_matcher.source import KEY_DTYPES, float_keys, keys_to_floats

log = logging.getLogger(__name__)
_LOCK = threading.RLock()
SCALES = ("none", "zscore", "quantile")
#: The threshold range a user is offered per scale (the value range of the source for "none").
SCALE_RANGES = {"zscore": (-4.0, 4.0), "quantile": (0.0, 1.0)}
SCALE_DEFAULTS = {"zscore": 1.0, "quantile": 0.9}


@dataclass
class CellScale:
    kind: str
    center: np.ndarray        # (D,) float64 mean (zscore)
    spread: np.ndarray        # (D,) float64 standard deviation (zscore)
    valid: np.ndarray         # (D,) int64 non-NaN steps per cell


def _transformed(source, keys: np.ndarray) -> np.ndarray:
    x = keys_to_floats(keys, source.dtype).astype(np.float64)
    return np.tanh(x) if source.transform == "tanh" else x


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ProjectError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    return scale


def cell_scale(engine, source: str, scale: str) -> CellScale:
    """Per-cell normalisation parameters, computed once per engine and source (one pass over the cells)."""
    check_scale(scale)
    with _LOCK:
        return _cell_scale(engine, source, scale)


def _cell_scale(engine, source: str, scale: str) -> CellScale:
    cache = engine.__dict__.setdefault("_cell_scales", {})
    if source not in cache:
        src = engine.project.source(source)
        store = src.layout(progress=False).keys_cells
        D = src.D
        center, spread, valid = np.zeros(D), np.zeros(D), np.zeros(D, dtype=np.int64)
        for c in range(D):
            keys = store.take(np.array([c]))[0]
            v = _transformed(src, keys[keys != 0])               # key 0 is NaN
            valid[c] = v.size
            if v.size:
                center[c] = float(v.mean())
                spread[c] = float(np.sqrt(np.mean((v - center[c]) ** 2)))
        cache[source] = CellScale(kind="zscore", center=center, spread=spread, valid=valid)
    params = cache[source]
    return CellScale(kind=scale, center=params.center, spread=params.spread, valid=params.valid)


def zscores(source, raw: np.ndarray, params: CellScale) -> np.ndarray:
    """The z-scores of raw values (T, D) as the spec defines them (for views and tests)."""
    x = raw.astype(np.float64)
    v = np.tanh(x) if source.transform == "tanh" else x
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (v - params.center) / params.spread
    return np.where(params.spread > 0, z, np.where(np.isnan(v), np.nan, 0.0))


def normalised_row(engine, source: str, cell: int, scale: str) -> np.ndarray:
    """(T,) float64 ``z`` of one cell over the whole corpus (NaN where the value is NaN): on iff z >= θ."""
    src = engine.project.source(source)
    params = cell_scale(engine, source, scale)
    keys = src.layout(progress=False).keys_cells.take(np.array([int(cell)]))[0]
    if scale == "zscore":
        v = _transformed(src, keys)
        if params.spread[cell] <= 0:
            return np.where(np.isnan(v), np.nan, 0.0)
        return (v - params.center[cell]) / params.spread[cell]
    valid = np.sort(keys[keys != 0])
    z = np.searchsorted(valid, keys, side="right") / max(1, valid.size)
    return np.where(keys == 0, np.nan, z)


def key_thresholds(engine, source: str, threshold: float, scale: str) -> np.ndarray | None:
    """One key per cell: cell c is on at t iff ``key(raw[t, c]) >= keys[c]`` (MATCHING.md on ``z``).

    The last few answers are kept per engine: a view asks for the same threshold many times.
    """
    ask = (source, check_scale(scale), float(threshold))
    with _LOCK:                                  # the app asks from its document and worker threads
        cache = engine.__dict__.setdefault("_scaled_keys", {})
        if ask not in cache:
            if len(cache) >= 16:
                cache.pop(next(iter(cache)))
            cache[ask] = _key_thresholds(engine, source, float(threshold), scale)
        return cache[ask]


def _key_thresholds(engine, source: str, threshold: float, scale: str) -> np.ndarray | None:
    src = engine.project.source(source)
    if check_scale(scale) == "none":
        key = src.key_threshold(threshold)
        return None if key is None else np.full(src.D, key, dtype=KEY_DTYPES[src.dtype.itemsize])
    kdt = KEY_DTYPES[src.dtype.itemsize]
    nothing = np.iinfo(kdt).max                # above every stored key (a NaN's key is 0)
    params = cell_scale(engine, source, scale)
    D = src.D
    theta = float(threshold)
    if scale == "zscore":
        out = np.empty(D, dtype=kdt)
        constant = params.spread <= 0
        # Binary search over the keys of -inf..+inf: the smallest key whose value has z >= θ (the NaN
        # keys at both ends are never on, so the search stays inside the numbers, where z is monotone).
        bottom, top = (int(k) for k in float_keys(np.array([-np.inf, np.inf], dtype=src.dtype)))
        lo = np.full(D, bottom, dtype=np.int64)
        hi = np.full(D, top + 1, dtype=np.int64)                 # top + 1: nothing is on
        with np.errstate(divide="ignore", invalid="ignore"):
            while np.any(lo < hi):
                mid = (lo + hi) // 2
                v = _transformed(src, mid.astype(kdt))
                ok = (v - params.center) / params.spread >= theta
                ok &= ~np.isnan(v)
                hi = np.where(ok, mid, hi)
                lo = np.where(ok, lo, mid + 1)
        out[:] = np.where(lo > top, int(nothing), lo).astype(kdt)
        out[constant] = 1 if 0.0 >= theta else nothing
        return out
    # quantile: the smallest stored v with #{v_t <= v} >= ceil(θ T_c), i.e. the k-th smallest value.
    store = src.layout(progress=False).keys_cells
    out = np.full(D, nothing, dtype=kdt)
    if math.isnan(theta):
        return out
    for c in range(D):
        n = int(params.valid[c])
        if n == 0:
            continue
        # The smallest k with k / n >= θ in float64 (the rounded division may reach θ one k early).
        k = min(n + 1, max(0, math.ceil(Fraction(theta) * n))) if math.isfinite(theta) else \
            (n + 1 if theta > 0 else 0)
        while 0 < k and (k - 1) / n >= theta:
            k -= 1
        if k <= 0:
            out[c] = 1
        elif k <= n:
            keys = store.take(np.array([c]))[0]
            keys = keys[keys != 0]
            out[c] = np.partition(keys, k - 1)[k - 1]
    return out


def on_mask(engine, source: str, start: int, stop: int, threshold: float, scale: str) -> np.ndarray:
    """Boolean (n, D) on-mask of rows ``[start, stop)`` under the scale."""
    src = engine.project.source(source)
    if scale == "none":
        return src.on(start, stop, threshold)
    keys = key_thresholds(engine, source, threshold, scale)
    return float_keys(src.raw(start, stop)) >= keys


def select(engine, source: str, start: int, end: int, threshold: float, left: int = 0, right: int = 0,
           scale: str = "zscore", sequences: bool = True):
    """``Engine.select`` with on decided on the scaled value."""
    from gpu_matcher.engine import Selection

    if scale == "none":
        return engine.select(source, start, end, threshold, left, right, sequences)
    engine._check_margins(left, right)
    lo, hi = engine._check_range(start, end, sequences)
    w0, w1 = max(lo, start - left), min(hi, end + 1 + right)
    on = on_mask(engine, source, w0, w1, threshold, scale)
    inside = on[start - w0:end + 1 - w0].all(axis=0)
    outside = on[:start - w0].any(axis=0) | on[end + 1 - w0:].any(axis=0)
    return Selection(source=source, start=start, end=end, threshold=float(threshold), left=left, right=right,
                     cells=np.flatnonzero(inside & ~outside).tolist())


def match(engine, source: str, cells: Sequence[int], threshold: float, left: int = 0, right: int = 0,
          top: int = 50, min_length: int = 2, phrase_length: int = 0, distinct: bool = True,
          sequences: bool = True, scale: str = "zscore") -> list:
    """``Engine.match`` with per-cell key thresholds (NumPy backend; others fall back to it)."""
    from gpu_matcher.backends.numpy import NumpyBackend

    if scale == "none":
        return engine.match(source, cells, threshold, left, right, top, min_length, phrase_length, distinct,
                            sequences)
    src = engine.project.source(source)
    query = engine.match_query(source, cells, key_thresholds(engine, source, threshold, scale), left, right,
                               top, min_length, phrase_length, distinct, sequences)
    if engine.backend.name == "numpy":
        return engine.run_match(engine.backend, engine.layout(source), query)
    log.info("per-cell scaling runs on the NumPy backend (the %s backend takes one threshold)",
             engine.backend.name)
    return engine.run_match(NumpyBackend(), src.layout(progress=False), query)
