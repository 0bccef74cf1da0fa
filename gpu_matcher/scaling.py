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
``quantile``). A query then carries one key per cell (``MatchQuery.key_threshold`` of shape ``(D,)``);
a backend that declares ``Capability.PER_CELL_KEYS`` runs it unchanged, the engine answers it with the
NumPy backend otherwise.

Pure numerics over a ``Source``: no engine, no backend. ``Engine.cell_scale`` / ``key_thresholds`` /
``normalised_row`` cache these per source and threshold.

Drawing in quantile units (the select view under ``scale=quantile``): exact ranks for every drawn value
would need each cell's sorted values, so ``quantile_table`` keeps, once per source, each cell's keys at
``QUANTILE_POINTS`` (1,025) evenly spaced ranks with their exact counts, and ``quantile_units`` maps
values through it: exact where a value equals a table key (or lies below the cell's minimum or above its
maximum), linearly interpolated between table ranks otherwise. Only the DRAWN position is interpolated
(error at most 1/1024 in quantile units); every on/off decision (S, n(t), matches, highlighting) stays
exact on the per-cell keys of ``key_thresholds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from gpu_matcher.source import KEY_DTYPES, Source, float_keys, keys_to_floats
from gpu_matcher.threshold import SCALE_DEFAULTS, SCALE_RANGES, SCALES, Threshold, check_scale

__all__ = ["CellScale", "SCALES", "SCALE_RANGES", "SCALE_DEFAULTS", "Threshold", "check_scale",
           "cell_scale", "zscores", "normalised_row", "key_thresholds", "QUANTILE_POINTS", "QuantileTable",
           "quantile_row", "quantile_table", "quantile_units"]

#: Table points per cell for drawing in quantile units: ranks j * (n - 1) // 1024, j = 0..1024.
QUANTILE_POINTS = 1025


@dataclass(frozen=True)
class CellScale:
    """Per-cell normalisation parameters of one source (the same for both scales)."""

    center: np.ndarray        # (D,) float64 mean (zscore)
    spread: np.ndarray        # (D,) float64 standard deviation (zscore)
    valid: np.ndarray         # (D,) int64 non-NaN steps per cell (quantile)


def _transformed(source: Source, keys: np.ndarray) -> np.ndarray:
    x = keys_to_floats(keys, source.dtype).astype(np.float64)
    return np.tanh(x) if source.transform == "tanh" else x


def _cell_keys(source: Source, cell: int) -> np.ndarray:
    return source.layout(progress=False).keys_cells.take(np.array([int(cell)]))[0]


def cell_scale(source: Source) -> CellScale:
    """Per-cell mean, standard deviation and non-NaN count over the whole corpus (one pass, a cell row
    at a time)."""
    D = source.D
    center, spread, valid = np.zeros(D), np.zeros(D), np.zeros(D, dtype=np.int64)
    for c in range(D):
        keys = _cell_keys(source, c)
        v = _transformed(source, keys[keys != 0])               # key 0 is NaN
        valid[c] = v.size
        if v.size:
            with np.errstate(invalid="ignore"):                # an infinity: no z-score (quantiles are fine)
                center[c] = float(v.mean())
                spread[c] = float(np.sqrt(np.mean((v - center[c]) ** 2)))
    return CellScale(center=center, spread=spread, valid=valid)


def zscores(source: Source, raw: np.ndarray, params: CellScale) -> np.ndarray:
    """The z-scores of raw values (T, D) as the spec defines them (for views and tests)."""
    x = raw.astype(np.float64)
    v = np.tanh(x) if source.transform == "tanh" else x
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (v - params.center) / params.spread
    return np.where(params.spread > 0, z, np.where(np.isnan(v), np.nan, 0.0))


def normalised_row(source: Source, params: CellScale, cell: int, scale: str) -> np.ndarray:
    """(T,) float64 ``z`` of one cell over the whole corpus (NaN where the value is NaN): on iff z >= θ.
    ``scale`` is ``zscore`` or ``quantile``."""
    if check_scale(scale) == "none":
        raise ValueError("normalised_row: the scale 'none' has no normalised value")
    keys = _cell_keys(source, cell)
    if scale == "zscore":
        v = _transformed(source, keys)
        if params.spread[cell] <= 0:
            return np.where(np.isnan(v), np.nan, 0.0)
        return (v - params.center[cell]) / params.spread[cell]
    valid = np.sort(keys[keys != 0])
    z = np.searchsorted(valid, keys, side="right") / max(1, valid.size)
    return np.where(keys == 0, np.nan, z)


def key_thresholds(source: Source, params: CellScale | None, threshold: Threshold) -> np.ndarray | None:
    """One key per cell: cell c is on at t iff ``key(raw[t, c]) >= keys[c]`` (MATCHING.md on ``z``);
    None when nothing is on anywhere. ``params`` may be None for the scale ``none``."""
    kdt = KEY_DTYPES[source.dtype.itemsize]
    if not threshold.scaled:
        key = source.key_threshold(threshold.value)
        return None if key is None else np.full(source.D, key, dtype=kdt)
    assert params is not None
    nothing = np.iinfo(kdt).max                # above every stored key (a NaN's key is 0)
    D = source.D
    theta = threshold.value
    if threshold.scale == "zscore":
        out = np.empty(D, dtype=kdt)
        constant = params.spread <= 0
        # Binary search over the keys of -inf..+inf: the smallest key whose value has z >= θ (the NaN
        # keys at both ends are never on, so the search stays inside the numbers, where z is monotone).
        bottom, top = (int(k) for k in float_keys(np.array([-np.inf, np.inf], dtype=source.dtype)))
        # Unsigned 64-bit search bounds: float64 keys reach 2**64 - 2**52 (int64 would overflow).
        lo = np.full(D, bottom, dtype=np.uint64)
        hi = np.full(D, top + 1, dtype=np.uint64)                # top + 1: nothing is on
        with np.errstate(divide="ignore", invalid="ignore"):
            while np.any(lo < hi):
                mid = lo + (hi - lo) // np.uint64(2)
                v = _transformed(source, mid.astype(kdt))
                ok = (v - params.center) / params.spread >= theta
                ok &= ~np.isnan(v)
                hi = np.where(ok, mid, hi)
                lo = np.where(ok, lo, mid + 1)
        out[:] = np.where(lo > top, int(nothing), lo).astype(kdt)
        out[constant] = 1 if 0.0 >= theta else nothing
        return out
    # quantile: the smallest stored v with #{v_t <= v} >= ceil(θ T_c), i.e. the k-th smallest value.
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
            keys = _cell_keys(source, c)
            keys = keys[keys != 0]
            out[c] = np.partition(keys, k - 1)[k - 1]
    return out


@dataclass(frozen=True)
class QuantileTable:
    """Each cell's stored keys at ``QUANTILE_POINTS`` evenly spaced ranks of its sorted non-NaN values
    (``quantile_table``), for drawing values in quantile units (``quantile_units``)."""

    keys: np.ndarray          # (D, P) the key at rank j * (n_c - 1) // (P - 1), non-decreasing per row
    upto: np.ndarray          # (D, P) int64 #{t : x_t <= key}  (exact)
    below: np.ndarray         # (D, P) int64 #{t : x_t <  key}  (exact)
    valid: np.ndarray         # (D,) int64 non-NaN steps per cell (n_c)


def quantile_row(keys: np.ndarray, points: int = QUANTILE_POINTS) -> tuple[np.ndarray, np.ndarray,
                                                                            np.ndarray, int]:
    """One cell's table row from its stored keys (any order; key 0, a NaN, excluded): ``(keys, upto,
    below, n)``. A cell without numbers gets zeros (``n = 0``: every value maps to NaN)."""
    keys = np.asarray(keys)
    good = np.sort(keys[keys != 0])
    n = int(good.size)
    if n == 0:
        return np.zeros(points, keys.dtype), np.zeros(points, np.int64), np.zeros(points, np.int64), 0
    ranks = (np.arange(points, dtype=np.int64) * (n - 1)) // (points - 1)
    at = good[ranks]
    return (at, np.searchsorted(good, at, side="right").astype(np.int64),
            np.searchsorted(good, at, side="left").astype(np.int64), n)


def quantile_table(source: Source, points: int = QUANTILE_POINTS) -> QuantileTable:
    """Every cell's ``quantile_row``: one pass over the cell rows of the source's layout, a cell at a
    time (seconds at 10^6 steps: compute it off the event loop; ``Engine.quantile_table`` caches it)."""
    D = source.D
    kdt = KEY_DTYPES[source.dtype.itemsize]
    keys = np.zeros((D, points), kdt)
    upto = np.zeros((D, points), np.int64)
    below = np.zeros((D, points), np.int64)
    valid = np.zeros(D, np.int64)
    for c in range(D):
        keys[c], upto[c], below[c], valid[c] = quantile_row(_cell_keys(source, c), points)
    return QuantileTable(keys=keys, upto=upto, below=below, valid=valid)


def quantile_units(table: QuantileTable, raw: np.ndarray) -> np.ndarray:
    """Stored values ``raw`` (W, D) in quantile units ``#{t : x_t <= x} / T_c`` (float64, NaN for a NaN
    value or a cell without numbers), through ``table``.

    Exact where the value's key equals a table key, is below the cell's smallest value (0) or above its
    largest (1). Between two table keys ``k_j < x < k_{j+1}`` the true count lies in
    ``[upto_j, below_{j+1}]``, an interval of at most ``(n - 1) / 1024`` ranks (the table ranks are that
    far apart); the drawn value is interpolated linearly in the stored value inside it, so it is off by
    less than 1/1024 and is non-decreasing in the value. For drawing only: on/off stays exact
    (``key_thresholds``)."""
    raw = np.asarray(raw)
    k = float_keys(raw)                                          # (W, D); NaN -> 0
    W, D = k.shape
    P = table.keys.shape[1]
    tk = table.keys
    cols = np.broadcast_to(np.arange(D), (W, D))
    # pos = #{table keys <= k} per value: a binary search over each cell's row, all values at once.
    lo = np.zeros((W, D), np.int64)
    hi = np.full((W, D), P, np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        ok = tk[cols, np.minimum(mid, P - 1)] <= k
        active = lo < hi
        lo = np.where(active & ok, mid + 1, lo)
        hi = np.where(active & ~ok, mid, hi)
    j = np.maximum(lo - 1, 0)
    nxt = np.minimum(lo, P - 1)
    kj, kn = tk[cols, j], tk[cols, nxt]
    count = table.upto[cols, j].astype(np.float64)               # exact at a table key
    gap = (lo > 0) & (lo < P) & (kj != k)                       # strictly between two table keys
    if np.any(gap):
        dt = raw.dtype
        x = raw.astype(np.float64)
        vj = keys_to_floats(kj, dt).astype(np.float64)
        vn = keys_to_floats(kn, dt).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            f = (x - vj) / (vn - vj)
        f = np.clip(np.where(np.isfinite(f), f, 0.0), 0.0, 1.0)
        a = table.upto[cols, j].astype(np.float64)
        b = table.below[cols, nxt].astype(np.float64)
        count = np.where(gap, a + f * (b - a), count)
    count = np.where(lo == 0, 0.0, count)                        # below the smallest value
    n = table.valid.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = count / n
    return np.where((k == 0) | (table.valid == 0), np.nan, z)
