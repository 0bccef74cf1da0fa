"""Host-side decisions of the GPU backend, on the CPU: chunk planning, out-of-memory fallbacks, and
the backend choice when no GPU is present."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from gpu_matcher import Engine
from gpu_matcher.backends import get_backend
from gpu_matcher.backends.cupy import (HOST, RESIDENT, STREAMED, USABLE, CupyBackend, layout_bytes,
                                       plan_layout)
from gpu_matcher.errors import ProjectError
from gpu_matcher.source import float_keys
from tests.gpu.common import SOURCE, ar1_states, match_both, project_from_array
from tests.gpu.standin import StandInDevice

GiB = 2**30
QUERY = {"cells": [0, 3, 5, 8, 13], "threshold": 0.3, "left": 1, "right": 1, "top": 20,
         "min_length": 2, "phrase_length": 0, "distinct": True, "sequences": True}


@pytest.fixture(scope="module")
def project():
    rng = np.random.default_rng(11)
    return project_from_array(ar1_states(rng, 3000, 50), "tanh", starts=[700, 1500, 2999])


# --- planning -------------------------------------------------------------------------------------------
def test_the_issue_sizes_are_resident_on_an_h100():
    free = 79 * GiB
    for T, D in ((10**7, 1024), (10**8, 256)):
        plan = plan_layout(T, D, 2, free)
        assert plan.mode == RESIDENT and plan.masks >= 1
        assert plan.steps == T and plan.words == T // 32 and plan.chunk_steps % 32 == 0


def test_a_source_larger_than_the_gpu_is_streamed_in_chunks_of_32_steps():
    T, D = 10**8, 1024                                      # 205 GB of float16 keys
    plan = plan_layout(T, D, 2, 79 * GiB)
    assert plan.mode == STREAMED
    assert plan.chunk_steps % 32 == 0 and 32 <= plan.chunk_steps <= T
    size = layout_bytes(T, D, 2)
    assert size["mask"] + size["work"] + 2 * plan.chunk_steps * D * 2 <= 79 * GiB * USABLE


def test_a_source_whose_mask_does_not_fit_is_left_to_numpy():
    assert plan_layout(10**9, 4096, 2, 16 * GiB).mode == HOST


def test_planning_pads_steps_to_words():
    plan = plan_layout(33, 5, 4, GiB)
    assert (plan.steps, plan.words, plan.mode) == (64, 2, RESIDENT)
    assert plan_layout(33, 5, 4, GiB, resident=False).mode == STREAMED


# --- fallbacks --------------------------------------------------------------------------------------------
def test_out_of_memory_once_frees_masks_and_retries(project, caplog):
    device = StandInDevice()
    gpu, cpu = Engine(project, backend=CupyBackend(device)), Engine(project, backend="numpy")
    device.fail_on("gather_steps", 1)
    with caplog.at_level(logging.WARNING, logger="gpu_matcher"):
        got, want = match_both([gpu, cpu], QUERY)
    assert got == want and got
    assert gpu.layout(SOURCE).mode == RESIDENT and device.releases >= 1
    assert any("cached masks freed, retrying" in r.getMessage() for r in caplog.records)


def test_out_of_memory_twice_moves_the_keys_off_the_gpu(project, caplog):
    device = StandInDevice()
    gpu, cpu = Engine(project, backend=CupyBackend(device)), Engine(project, backend="numpy")
    device.fail_on("gather_steps", 2)
    with caplog.at_level(logging.WARNING, logger="gpu_matcher"):
        got, want = match_both([gpu, cpu], QUERY)
    assert got == want and got
    layout = gpu.layout(SOURCE)
    assert layout.mode == STREAMED and layout.keys is None
    assert any("keys leave the GPU" in r.getMessage() for r in caplog.records)
    got, want = match_both([gpu, cpu], dict(QUERY, threshold=0.5))      # a new mask, by streaming
    assert got == want


def test_out_of_memory_three_times_answers_with_numpy(project, caplog):
    device = StandInDevice()
    gpu, cpu = Engine(project, backend=CupyBackend(device)), Engine(project, backend="numpy")
    device.fail_on("active_counts", 3)
    with caplog.at_level(logging.WARNING, logger="gpu_matcher"):
        got, want = match_both([gpu, cpu], QUERY)
    assert got == want and got
    messages = [r.getMessage() for r in caplog.records]
    assert any("this query runs on NumPy" in m for m in messages)
    assert all("\n" not in m for m in messages)
    device.calls.clear()
    got, want = match_both([gpu, cpu], QUERY)                           # the next query: GPU again
    assert got == want and device.calls["active_counts"] > 0


def test_out_of_memory_while_loading_plans_streaming(project, caplog):
    src = project.source(SOURCE)
    device = StandInDevice()
    device.fail_allocations(src.T * src.D * 2, 1)                       # the keys' allocation
    gpu, cpu = Engine(project, backend=CupyBackend(device)), Engine(project, backend="numpy")
    with caplog.at_level(logging.WARNING, logger="gpu_matcher"):
        got, want = match_both([gpu, cpu], QUERY)
    assert got == want and got
    assert gpu.layout(SOURCE).mode == STREAMED
    assert any("while loading its keys" in r.getMessage() for r in caplog.records)


def test_a_source_too_large_for_the_gpu_is_matched_with_numpy(project, caplog):
    device = StandInDevice(free=1000)
    with caplog.at_level(logging.WARNING, logger="gpu_matcher"):
        gpu = Engine(project, backend=CupyBackend(device))
        cpu = Engine(project, backend="numpy")
        got, want = match_both([gpu, cpu], QUERY)
    assert got == want and got
    assert gpu.layout(SOURCE).mode == HOST and not device.calls
    assert any("matched with NumPy" in r.getMessage() for r in caplog.records)


def test_device_keys_without_a_host_copy_fail_with_one_line():
    rng = np.random.default_rng(5)
    keys = np.zeros((20, 512), dtype=np.uint16)
    keys[:, :500] = float_keys(ar1_states(rng, 500, 20)).T
    device = StandInDevice()
    backend = CupyBackend(device)
    layout = backend.layout_from_device_keys(keys, T=500)
    from gpu_matcher.backends.base import MatchQuery
    from gpu_matcher.source import key_threshold

    query = MatchQuery(cells=(1, 2, 3), key_threshold=key_threshold(0.3, "tanh", np.float16),
                       bounds=np.array([0, 500]))
    assert backend.match(layout, query)
    device.fail_on("step_counts", 3)
    with pytest.raises(ProjectError, match="no host copy") as err:
        backend.match(layout, query)
    assert "\n" not in str(err.value)


def test_device_keys_must_be_padded_to_words():
    with pytest.raises(ProjectError, match="multiple of 32"):
        CupyBackend(StandInDevice()).layout_from_device_keys(np.zeros((4, 100), np.uint16))


# --- backend choice ------------------------------------------------------------------------------------------
def test_backend_choice_without_a_gpu(gpu_reason, caplog):
    if gpu_reason is None:
        pytest.skip("a GPU answers here: auto picks CuPy")
    with pytest.raises(ProjectError) as err:
        get_backend("cupy")
    message = str(err.value)
    assert message.startswith("--backend cupy: ") and "\n" not in message
    with caplog.at_level(logging.INFO, logger="gpu_matcher"):
        assert get_backend("auto").name == "numpy"
    assert any("backend: numpy" in r.getMessage() for r in caplog.records)


def test_describe_names_the_device():
    assert CupyBackend(StandInDevice()).describe() == "cupy (NumPy stand-in device)"
