"""Drawing values in quantile units (``scaling.quantile_table`` / ``quantile_units``) against brute force:
``np.searchsorted`` on each cell's sorted non-NaN column. Exact at table points (and below the minimum /
above the maximum), within 1/(P - 1) elsewhere, non-decreasing in the value."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_matcher import Engine
from gpu_matcher.scaling import QUANTILE_POINTS, QuantileTable, quantile_row, quantile_units
from gpu_matcher.source import float_keys
from tests.engine.conformance import project_from_array


def table_of(raw: np.ndarray, points: int = QUANTILE_POINTS) -> QuantileTable:
    rows = [quantile_row(float_keys(np.ascontiguousarray(raw[:, c])), points) for c in range(raw.shape[1])]
    return QuantileTable(keys=np.stack([r[0] for r in rows]), upto=np.stack([r[1] for r in rows]),
                         below=np.stack([r[2] for r in rows]), valid=np.array([r[3] for r in rows], np.int64))


def brute(raw: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    for c in range(raw.shape[1]):
        good = np.sort(raw[:, c][~np.isnan(raw[:, c])]).astype(np.float64)
        if good.size:
            z = np.searchsorted(good, x[:, c].astype(np.float64), side="right") / good.size
            out[:, c] = np.where(np.isnan(x[:, c]), np.nan, z)
    return out


def column_set(rng, T: int, dtype=np.float32) -> np.ndarray:
    """Cells: continuous, heavy ties, with NaNs, constant, all NaN, with infinities."""
    raw = np.empty((T, 6), dtype)
    raw[:, 0] = rng.normal(size=T)
    raw[:, 1] = rng.integers(-3, 4, size=T)
    raw[:, 2] = rng.normal(size=T)
    raw[rng.random(T) < 0.3, 2] = np.nan
    raw[:, 3] = 0.25
    raw[:, 4] = np.nan
    raw[:, 5] = rng.normal(size=T)
    raw[rng.random(T) < 0.05, 5] = np.inf
    raw[rng.random(T) < 0.05, 5] = -np.inf
    raw[0, 5] = -0.0
    return raw


def queries(rng, raw: np.ndarray, n: int) -> np.ndarray:
    """Values of the column itself, fresh values, values outside its range, NaN."""
    T, D = raw.shape
    q = np.concatenate([raw[rng.integers(0, T, n)], rng.normal(scale=2.0, size=(n, D)).astype(raw.dtype),
                        np.full((1, D), -1e30, raw.dtype), np.full((1, D), 1e30, raw.dtype),
                        np.full((1, D), np.nan, raw.dtype), np.zeros((1, D), raw.dtype)])
    return q


@pytest.mark.parametrize("T,points", [(40, QUANTILE_POINTS), (3000, QUANTILE_POINTS), (5000, 9), (257, 17)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantile_units_against_brute_force(T, points, seed):
    rng = np.random.default_rng(seed)
    raw = column_set(rng, T)
    table = table_of(raw, points)
    q = queries(rng, raw, 300)
    got, want = quantile_units(table, q), brute(raw, q)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.all(np.abs(got[ok] - want[ok]) <= 1.0 / (points - 1))
    # Exact where the value is a table key, below the minimum or above the maximum.
    qk = float_keys(q)
    for c in range(raw.shape[1]):
        if table.valid[c] == 0:
            continue
        good = raw[:, c][~np.isnan(raw[:, c])]
        exact = np.isin(qk[:, c], table.keys[c]) | (q[:, c] < good.min()) | (q[:, c] > good.max())
        exact &= ~np.isnan(q[:, c])
        assert np.array_equal(got[exact, c], want[exact, c])
    # The constant cell: 0 below, 1 at and above; the all-NaN cell: NaN.
    assert set(np.unique(got[~np.isnan(q[:, 3]), 3])) <= {0.0, 1.0}
    assert np.all(np.isnan(got[:, 4]))
    # Every stored value of a small column is a table point: exact.
    if T <= points:
        np.testing.assert_array_equal(quantile_units(table, raw), brute(raw, raw))


@pytest.mark.parametrize("points", [QUANTILE_POINTS, 5])
def test_quantile_units_are_monotone(points):
    rng = np.random.default_rng(7)
    raw = column_set(rng, 4000)
    table = table_of(raw, points)
    grid = np.sort(np.concatenate([np.linspace(-5, 5, 4001), raw[:, 0], [-np.inf, np.inf]])).astype(np.float32)
    q = np.repeat(grid[:, None], raw.shape[1], axis=1)
    got = quantile_units(table, q)
    for c in (0, 1, 2, 3, 5):
        assert np.all(np.diff(got[:, c]) >= 0)
        assert got[0, c] >= 0 and got[-1, c] == 1.0


def test_engine_quantile_table_is_computed_once_and_matches_the_cells():
    rng = np.random.default_rng(3)
    raw = column_set(rng, 2500)
    engine = Engine(project_from_array(raw, "none", ()), backend="numpy")
    source = engine.project.default_source
    table = engine.quantile_table(source)
    assert engine.quantile_table(source) is table
    expected = table_of(raw)
    for name in ("keys", "upto", "below", "valid"):
        np.testing.assert_array_equal(getattr(table, name), getattr(expected, name))
    got = engine.quantile_units(source, 100, 180)
    np.testing.assert_array_equal(got, quantile_units(expected, raw[100:180]))
    assert np.nanmax(np.abs(got - brute(raw, raw[100:180]))) <= 1.0 / 1024
