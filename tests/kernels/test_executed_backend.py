"""What the conformance module (tests/engine/conformance.py: ``cupy-executed`` and
``cupy-executed-streamed``, the golden sets and the random scenarios) does not say about the CuPy
backend on EXECUTED kernels: which kernels a query really ran, and that per-cell scaled thresholds are
answered by the GPU path (pack_cells_rows_*), not handed to NumPy."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import Engine
from gpu_matcher.backends import cupy as cupy_backend
from gpu_matcher.backends.base import Capability
from gpu_matcher.backends.cupy import RESIDENT, STREAMED, layout_bytes
from tests.engine.conformance import SOURCE, ar1_states, project_from_array
from tests.gpu.common import match_both, scenarios
from tests.kernels.device import ExecutedDevice, executed_cupy_backend


def streamed_device(T: int, D: int, itemsize: int) -> ExecutedDevice:
    """Free memory for a mask, a query's scratch and two 32-step staging chunks, not the keys (T > 64)."""
    size = layout_bytes(T, D, itemsize)
    return ExecutedDevice(free=math.ceil((size["mask"] + size["work"] + 2 * 32 * D * itemsize) / 0.9))


def test_a_match_runs_the_gather_count_edge_and_verify_kernels():
    """LSTM-like data, D not a multiple of 32, up to 40 selected cells (two step words), a grid far
    smaller than T (MAX_GRID): every kernel of the search executed, answers equal to NumPy."""
    rng = np.random.default_rng(7)
    raw = ar1_states(rng, 3000, 70)
    starts = np.sort(rng.choice(np.arange(1, 3000), 30, replace=False))
    project = project_from_array(raw, "tanh", starts)
    backend = executed_cupy_backend()
    gpu, cpu = Engine(project, backend=backend), Engine(project, backend="numpy")
    for i in range(5):
        query = {"cells": sorted(rng.choice(70, int(rng.integers(1, 40)), replace=False).tolist()),
                 "threshold": float(rng.choice([0.0, 0.3, 0.5])), "left": int(rng.integers(0, 3)),
                 "right": int(rng.integers(0, 3)), "top": 50, "min_length": 2, "phrase_length": 0,
                 "distinct": bool(i % 2), "sequences": True}
        got, want = match_both([gpu, cpu], query)
        assert got == want and got
    used = {name for name, count in backend.device.calls.items() if count}
    assert {"pack_cells_u16", "gather_steps", "step_counts", "level_edges", "inter_counts",
            "active_counts"} <= used


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([RESIDENT, STREAMED]), st.sampled_from(["zscore", "quantile"]))
def test_per_cell_scales_run_on_the_executed_kernels(scenario, mode, scale):
    raw, transform, starts, query = scenario
    T, D = raw.shape
    device = ExecutedDevice() if mode == RESIDENT else streamed_device(T, D, raw.dtype.itemsize)
    threshold = query["threshold"] if scale == "zscore" else abs(query["threshold"]) % 1.0
    args = dict(top=query["top"], min_length=query["min_length"], phrase_length=query["phrase_length"],
                distinct=query["distinct"], sequences=query["sequences"], scale=scale)
    with mock.patch.object(cupy_backend, "CHUNK_BYTES", 32 * D * raw.dtype.itemsize):
        project = project_from_array(raw, transform, starts)
        backend = cupy_backend.CupyBackend(device)
        assert backend.supports(Capability.PER_CELL_KEYS)
        gpu, cpu = Engine(project, backend=backend), Engine(project, backend="numpy")
        got = gpu.match(SOURCE, query["cells"], threshold, query["left"], query["right"], **args)
        want = cpu.match(SOURCE, query["cells"], threshold, query["left"], query["right"], **args)
    assert got == want
    keys = cpu.key_thresholds(SOURCE, threshold, scale)
    if keys is not None:
        assert device.calls[f"pack_cells_rows_u{8 * raw.dtype.itemsize}"] >= 1      # one per chunk
