"""Faiss-style parity on a real GPU: each kernel beside its NumPy stand-in, and the CuPy backend beside
the NumPy one on LSTM-like states of a GPU's size. (The golden sets and random inputs on the GPU, keys
resident and streamed: the ``cupy-gpu`` entries of ``tests/engine/test_conformance.py``.) Skipped, with
the reason, where CuPy or a device is missing."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_matcher import Engine
from gpu_matcher.backends import cupy_unavailable_reason
from gpu_matcher.backends.cupy import CudaDevice, CupyBackend
from gpu_matcher.query import MatchQuery
from gpu_matcher.source import float_keys, key_threshold
from tests.engine.conformance import SOURCE, ar1_states, project_from_array, rows
from tests.gpu.standin import StandInDevice

REASON = cupy_unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"no GPU: {REASON}")]


@pytest.fixture(scope="module")
def gpu():
    return CupyBackend(CudaDevice())


# --- kernels beside their stand-ins ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("T,D", [(1, 1), (31, 3), (1000, 33), (4099, 70)])
def test_each_primitive_equals_its_standin(gpu, dtype, T, D):
    rng = np.random.default_rng(T * D)
    raw = ar1_states(rng, T, D, dtype=dtype)
    keys = float_keys(raw)
    ref = CupyBackend(StandInDevice())
    lay_g, lay_r = gpu.prepare_keys(keys.T.copy()), ref.prepare_keys(keys.T.copy())
    key = key_threshold(0.3, "tanh", np.dtype(dtype))
    host = gpu.to_host
    np.testing.assert_array_equal(host(gpu.threshold_mask(lay_g, key)), ref.threshold_mask(lay_r, key))
    cells = np.sort(rng.choice(D, min(D, 40), replace=False))
    on_g, on_r = gpu.on_columns(lay_g, cells, key), ref.on_columns(lay_r, cells, key)
    np.testing.assert_array_equal(host(on_g), on_r)
    words_g, words_r = gpu.pack_steps(on_g), ref.pack_steps(on_r)
    np.testing.assert_array_equal(host(words_g), words_r)
    n_g, n_r = gpu.step_counts(words_g), ref.step_counts(words_r)
    np.testing.assert_array_equal(host(n_g), n_r)
    bounds = np.unique(np.concatenate([[0], rng.integers(1, max(2, T), 5), [T]])) if T > 1 \
        else np.array([0, T])
    query = MatchQuery(cells=tuple(cells.tolist()), key_threshold=key, bounds=bounds, min_length=1)
    ev_g, ev_r = gpu.level_events(n_g, bounds), ref.level_events(n_r, bounds)
    for level in range(1, cells.size + 1):
        a_g, b_g = gpu.level_runs(ev_g, level, query)
        a_r, b_r = ref.level_runs(ev_r, level, query)
        np.testing.assert_array_equal(a_g, a_r)
        np.testing.assert_array_equal(b_g, b_r)
    a = rng.integers(0, T, 300)
    b = np.minimum(T - 1, a + rng.integers(0, 40, 300))
    lo = np.maximum(0, a - rng.integers(0, 3, 300))
    hi = np.minimum(T, b + 1 + rng.integers(0, 3, 300))
    np.testing.assert_array_equal(gpu.inter_counts(words_g, a, b, lo, hi),
                                  ref.inter_counts(words_r, a, b, lo, hi))
    np.testing.assert_array_equal(gpu.active_counts(lay_g, key, a, b, lo, hi),
                                  ref.active_counts(lay_r, key, a, b, lo, hi))


# --- the engine's answers at a GPU's size (golden sets and random inputs: test_conformance.py) -----------
def test_gpu_equals_numpy_backend_on_ar1_states(gpu):
    rng = np.random.default_rng(17)
    T, D = 100_000, 300                   # 60 MB of float16: the NumPy layout stays in memory
    raw = ar1_states(rng, T, D)
    starts = np.sort(rng.choice(np.arange(1, T), 500, replace=False))
    project = project_from_array(raw, "tanh", starts)
    engines = [Engine(project, backend=gpu), Engine(project, backend="numpy")]
    for i in range(8):
        query = {"cells": sorted(rng.choice(D, int(rng.integers(1, 40)), replace=False).tolist()),
                 "threshold": float(rng.choice([0.0, 0.3, 0.5])), "left": int(rng.integers(0, 3)),
                 "right": int(rng.integers(0, 3)), "top": int(rng.choice([10, 50, 500])),
                 "min_length": int(rng.integers(1, 4)), "phrase_length": 0,
                 "distinct": bool(i % 2), "sequences": bool(i % 3)}
        got, want = (rows(engine, SOURCE, query) for engine in engines)
        assert got == want and got
