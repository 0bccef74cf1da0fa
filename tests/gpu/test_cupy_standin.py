"""The CuPy backend's code on the NumPy stand-in device (tests/gpu/standin.py): golden answers, and
the same answers as the NumPy backend on random inputs, with keys resident and streamed in chunks."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import Engine, open_project
from gpu_matcher.backends import cupy as cupy_backend
from gpu_matcher.backends.search import SearchBackend
from gpu_matcher.backends.cupy import RESIDENT, STREAMED, CupyBackend, layout_bytes
from gpu_matcher.source import float_keys, key_threshold
from tests.conftest import GOLDEN, golden_queries, golden_sets
from tests.gpu.common import (SOURCE, ar1_states, golden_match, match_both, project_from_array,
                              scenarios)
from tests.gpu.standin import StandInDevice

SETS = golden_sets()


def streamed_device(T: int, D: int, itemsize: int) -> StandInDevice:
    """A stand-in whose free memory holds a mask, a query's scratch and two 32-step staging chunks, but
    not the keys once T > 64: the keys are streamed in 32-step chunks."""
    size = layout_bytes(T, D, itemsize)
    return StandInDevice(free=math.ceil((size["mask"] + size["work"] + 2 * 32 * D * itemsize) / 0.9))


def test_cupy_backend_overrides_every_array_primitive_of_the_search():
    """SearchBackend.match must reach the GPU only through these; a NumPy default would run on CuPy arrays."""
    for name in ("prepare", "on_columns", "active_counts", "to_host", "pack_steps", "step_counts",
                 "level_events", "level_runs", "inter_counts"):
        assert hasattr(SearchBackend, name), f"SearchBackend has no {name} any more: update CupyBackend"
        assert name in vars(CupyBackend), f"CupyBackend does not override {name}"


@pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")
@pytest.mark.parametrize("mode", [RESIDENT, STREAMED])
@pytest.mark.parametrize("name", SETS)
def test_golden_answers_on_the_standin(name, mode):
    project = open_project(GOLDEN / name / "project")
    if mode == RESIDENT:
        device = StandInDevice()
    else:
        src = project.source(project.default_source)
        device = streamed_device(src.T, src.D, 4)
    backend = CupyBackend(device)
    engine = Engine(project, backend=backend)
    with mock.patch.object(cupy_backend, "CHUNK_BYTES", 1000 * 160 * 2):    # several chunks
        for q in golden_queries(name):
            assert golden_match(engine, q) == q["expected"], q
    assert {engine.layout(q["source"]).mode for q in golden_queries(name)} == {mode}
    used = {k for k, v in device.calls.items() if v}
    assert {"unpack_cells", "pack_steps", "step_counts", "level_edges", "inter_counts",
            "active_counts"} <= used


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from([RESIDENT, STREAMED]))
def test_standin_equals_numpy_backend_on_random_inputs(scenario, mode):
    raw, transform, starts, query = scenario
    T, D = raw.shape
    device = StandInDevice() if mode == RESIDENT else streamed_device(T, D, raw.dtype.itemsize)
    with mock.patch.object(cupy_backend, "CHUNK_BYTES", 32 * D * raw.dtype.itemsize):   # 32-step chunks
        project = project_from_array(raw, transform, starts)
        gpu = Engine(project, backend=CupyBackend(device))
        cpu = Engine(project, backend="numpy")
        got, want = match_both([gpu, cpu], query)
    assert got == want
    assert gpu.layout(SOURCE).mode == (mode if T > 64 else RESIDENT)


def test_standin_equals_numpy_backend_on_ar1_states():
    """Larger, LSTM-like data: long runs, many candidates, D not a multiple of 32."""
    rng = np.random.default_rng(7)
    raw = ar1_states(rng, 6000, 70)
    starts = np.sort(rng.choice(np.arange(1, 6000), 40, replace=False))
    project = project_from_array(raw, "tanh", starts)
    gpu, cpu = Engine(project, backend=CupyBackend(StandInDevice())), Engine(project, backend="numpy")
    for i in range(6):
        query = {"cells": sorted(rng.choice(70, int(rng.integers(1, 12)), replace=False).tolist()),
                 "threshold": float(rng.choice([0.0, 0.3, 0.5])), "left": int(rng.integers(0, 3)),
                 "right": int(rng.integers(0, 3)), "top": 50, "min_length": 2, "phrase_length": 0,
                 "distinct": bool(i % 2), "sequences": True}
        got, want = match_both([gpu, cpu], query)
        assert got == want and got


def test_a_new_threshold_builds_one_mask_and_a_repeated_one_reuses_it(standin):
    rng = np.random.default_rng(3)
    project = project_from_array(ar1_states(rng, 500, 40))
    engine = Engine(project, backend=CupyBackend(standin))
    for theta in (0.3, 0.3, 0.5, 0.3):
        engine.match(SOURCE, [1, 2, 3], theta)
    assert standin.calls["pack_cells_u16"] == 2
    assert len(engine.layout(SOURCE).masks) == 2


@pytest.mark.parametrize("mode", [RESIDENT, STREAMED])
def test_threshold_masks_are_the_packed_on_bits_with_nothing_on_past_T(mode):
    rng = np.random.default_rng(9)
    T, D = 1000, 37
    keys = float_keys(ar1_states(rng, T, D))
    device = StandInDevice() if mode == RESIDENT else streamed_device(T, D, 2)
    with mock.patch.object(cupy_backend, "CHUNK_BYTES", 96 * D * 2):
        backend = CupyBackend(device)
        layout = backend.prepare_keys(keys.T.copy())
        key = key_threshold(0.3, "tanh", np.float16)
        mask = backend.threshold_mask(layout, key)
    assert layout.mode == mode
    on = np.zeros((D, 1024), dtype=bool)
    on[:, :T] = keys.T >= key
    np.testing.assert_array_equal(mask, np.packbits(on, axis=1, bitorder="little").view("<u4"))
