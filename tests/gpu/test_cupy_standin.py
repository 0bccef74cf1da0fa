"""The CuPy backend's code on the NumPy stand-in device (tests/gpu/standin.py): it overrides every array
primitive, runs on the kernels, and builds, caches and streams its packed masks. (Its answers, resident
and streamed, on the golden sets and random inputs: ``tests/engine/test_conformance.py``.)"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from gpu_matcher import Engine
from gpu_matcher.backends import cupy as cupy_backend
from gpu_matcher.backends.cupy import RESIDENT, STREAMED, CupyBackend
from gpu_matcher.backends.search import SearchBackend
from gpu_matcher.source import float_keys, key_threshold
from tests.engine.conformance import SOURCE, ar1_states, project_from_array, rows, streamed_device
from tests.gpu.standin import StandInDevice


def test_cupy_backend_overrides_every_array_primitive_of_the_search():
    """SearchBackend.match must reach the GPU only through these; a NumPy default would run on CuPy arrays."""
    for name in ("prepare", "on_columns", "active_counts", "to_host", "pack_steps", "step_counts",
                 "level_events", "level_runs", "inter_counts"):
        assert hasattr(SearchBackend, name), f"SearchBackend has no {name} any more: update CupyBackend"
        assert name in vars(CupyBackend), f"CupyBackend does not override {name}"


@pytest.mark.parametrize("mode", [RESIDENT, STREAMED])
def test_a_match_runs_on_the_kernels(mode):
    """Every kernel of the search is launched, in both modes; the answer is the NumPy backend's."""
    rng = np.random.default_rng(5)
    raw = ar1_states(rng, 3000, 40)
    project = project_from_array(raw, "tanh", [900, 2000])
    device = StandInDevice() if mode == RESIDENT else streamed_device(3000, 40, 2)
    with mock.patch.object(cupy_backend, "CHUNK_BYTES", 1000 * 40 * 2):        # several chunks
        engine = Engine(project, backend=CupyBackend(device))
        q = {"cells": [1, 4, 9, 16, 25], "threshold": 0.3, "left": 1, "right": 1, "top": 20, "min_length": 2,
             "phrase_length": 0, "distinct": True, "sequences": True}
        got = rows(engine, SOURCE, q)
    assert got and got == rows(Engine(project, backend="numpy"), SOURCE, q)
    assert engine.layout(SOURCE).mode == mode
    used = {k for k, v in device.calls.items() if v}
    assert {"gather_steps", "step_counts", "level_edges", "inter_counts",
            "active_counts"} <= used


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
