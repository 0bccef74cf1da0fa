"""The whole CuPy backend on EXECUTED kernels (tests/kernels/device.py) equals the NumPy backend: the
golden sets, the hypothesis scenarios of tests/gpu/common.py, LSTM-like states and per-cell scaled
thresholds, with the keys resident and streamed from the host in chunks."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from gpu_matcher import Engine, open_project, scaling
from gpu_matcher.backends import cupy as cupy_backend
from gpu_matcher.backends.cupy import RESIDENT, STREAMED, layout_bytes
from tests.conftest import GOLDEN, golden_queries, golden_sets
from tests.gpu.common import SOURCE, ar1_states, golden_match, match_both, project_from_array, scenarios
from tests.kernels.device import ExecutedDevice, executed_cupy_backend

SETS = golden_sets()


def streamed_device(T: int, D: int, itemsize: int, chunk: int = 32) -> ExecutedDevice:
    """Free memory for a mask, a query's scratch and two staging chunks of ``chunk`` steps, not the keys
    (once T > 2 * chunk)."""
    size = layout_bytes(T, D, itemsize)
    return ExecutedDevice(free=math.ceil((size["mask"] + size["work"] + 2 * chunk * D * itemsize) / 0.9))


@pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")
@pytest.mark.parametrize("mode", [RESIDENT, STREAMED])
@pytest.mark.parametrize("name", SETS)
def test_golden_answers_on_executed_kernels(name, mode):
    project = open_project(GOLDEN / name / "project")
    src = project.source(project.default_source)
    device = ExecutedDevice() if mode == RESIDENT else streamed_device(src.T, src.D, 4, chunk=256)
    engine = Engine(project, backend=cupy_backend.CupyBackend(device))
    with mock.patch.object(cupy_backend, "CHUNK_BYTES", 256 * 160 * 4):    # several chunks
        for q in golden_queries(name):
            assert golden_match(engine, q) == q["expected"], q
    assert {engine.layout(q["source"]).mode for q in golden_queries(name)} == {mode}
    used = {k for k, v in device.calls.items() if v}
    assert {"gather_steps", "step_counts", "level_edges", "inter_counts",
            "active_counts"} <= used


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([RESIDENT, STREAMED]))
def test_executed_kernels_equal_numpy_backend_on_random_inputs(scenario, mode):
    raw, transform, starts, query = scenario
    T, D = raw.shape
    device = ExecutedDevice() if mode == RESIDENT else streamed_device(T, D, raw.dtype.itemsize)
    with mock.patch.object(cupy_backend, "CHUNK_BYTES", 32 * D * raw.dtype.itemsize):   # 32-step chunks
        project = project_from_array(raw, transform, starts)
        gpu = Engine(project, backend=cupy_backend.CupyBackend(device))
        cpu = Engine(project, backend="numpy")
        got, want = match_both([gpu, cpu], query)
    assert got == want
    assert gpu.layout(SOURCE).mode == (mode if T > 64 else RESIDENT)


def test_executed_kernels_equal_numpy_backend_on_ar1_states():
    """LSTM-like data: long runs, many candidates, D not a multiple of 32, a grid far smaller than T."""
    rng = np.random.default_rng(7)
    raw = ar1_states(rng, 3000, 70)
    starts = np.sort(rng.choice(np.arange(1, 3000), 30, replace=False))
    project = project_from_array(raw, "tanh", starts)
    gpu, cpu = Engine(project, backend=executed_cupy_backend()), Engine(project, backend="numpy")
    for i in range(5):
        query = {"cells": sorted(rng.choice(70, int(rng.integers(1, 40)), replace=False).tolist()),
                 "threshold": float(rng.choice([0.0, 0.3, 0.5])), "left": int(rng.integers(0, 3)),
                 "right": int(rng.integers(0, 3)), "top": 50, "min_length": 2, "phrase_length": 0,
                 "distinct": bool(i % 2), "sequences": True}
        got, want = match_both([gpu, cpu], query)
        assert got == want and got


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([RESIDENT, STREAMED]), st.sampled_from(["zscore", "quantile"]))
def test_per_cell_keys_on_executed_kernels_equal_numpy(scenario, mode, scale):
    """Per-cell scaled thresholds (one key per cell, gpu_matcher.scaling) packed by pack_cells_rows_*:
    the CuPy backend declares the ability and answers as NumPy does."""
    raw, transform, starts, query = scenario
    # scaling._key_thresholds overflows int64 on float64 keys for zscore (a bug of scaling.py, reported)
    assume(not (scale == "zscore" and raw.dtype == np.float64))
    T, D = raw.shape
    device = ExecutedDevice() if mode == RESIDENT else streamed_device(T, D, raw.dtype.itemsize)
    threshold = query["threshold"] if scale == "zscore" else abs(query["threshold"]) % 1.0
    with mock.patch.object(cupy_backend, "CHUNK_BYTES", 32 * D * raw.dtype.itemsize):
        project = project_from_array(raw, transform, starts)
        backend = cupy_backend.CupyBackend(device)
        assert backend.per_cell_keys
        gpu, cpu = Engine(project, backend=backend), Engine(project, backend="numpy")
        keys = scaling.key_thresholds(cpu, SOURCE, threshold, scale)
        q = cpu.match_query(SOURCE, query["cells"], keys, query["left"], query["right"], query["top"],
                            query["min_length"], query["phrase_length"], query["distinct"],
                            query["sequences"])
        got = Engine.run_match(backend, gpu.layout(SOURCE), q)
        want = Engine.run_match(cpu.backend, cpu.layout(SOURCE), q)
    assert got == want
    if keys is not None and len(set(np.asarray(keys).tolist())) > 1 and query["top"] > 0:
        assert device.calls[f"pack_cells_rows_u{8 * raw.dtype.itemsize}"] >= 1
