"""The executor itself: warp intrinsics as CUDA defines them, and each fault it must report (by file,
line, block and lane, or by argument and element), on the kernels of faulty.cu."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.kernels import executor
from tests.kernels.executor import LaunchError

FAULTY = Path(__file__).resolve().parent / "faulty.cu"
THREAD = executor.sanitize_mode() == "thread"


@pytest.fixture(scope="module")
def faulty():
    mod = executor.module(FAULTY)
    return {name: mod.get_function(name) for name in mod.signatures}


def _shfl(x, src):
    return x[src]


def test_every_intrinsic_gives_what_cuda_defines(faulty):
    rng = np.random.default_rng(1)
    blocks, block = 2, 64
    x = rng.integers(0, 100, blocks * block).astype(np.int32)
    out = np.empty((blocks * block, 8), dtype=np.int32)
    faulty["intrinsics"]((blocks,), (block,), (x, out))
    for w in range(blocks * block // 32):
        v = x[32 * w: 32 * w + 32].astype(np.int64)
        lanes = np.arange(32)
        ballot = int(sum(int(b) << j for j, b in enumerate(v & 1)))
        want = np.empty((32, 8), dtype=np.int64)
        want[:, 0] = np.int32(np.uint32(ballot).view(np.int32))
        want[:, 1] = int((v > 90).any())
        want[:, 2] = int((v >= 0).all())
        want[:, 3] = v[v & 31]
        want[:, 4] = np.where(lanes >= 3, v[np.maximum(lanes - 3, 0)], v)
        down = lanes + 5
        want[:, 5] = np.where(down < (lanes & ~15) + 16, v[np.minimum(down, 31)], v)
        want[:, 6] = v[lanes ^ 9] if False else np.where((lanes ^ 9) < (lanes & ~7) + 8, v[lanes ^ 9 & 31], v)
        even = int(sum(int(b) << j for j, b in enumerate((v >> 1) & 1) if j % 2 == 0))
        want[:, 7] = np.where(lanes % 2 == 0, np.uint32(even).view(np.int32), -1)
        np.testing.assert_array_equal(out[32 * w: 32 * w + 32], want, err_msg=f"warp {w}")


def test_a_named_lane_that_exited_fails_the_launch_with_file_line_block_and_lane(faulty):
    with pytest.raises(LaunchError, match=r"faulty\.cu:\d+: __ballot_sync in block \(\d,0,0\), warp 0, "
                                          r"lane \d+: mask 0xffffffff names lane 3, which has exited"):
        faulty["exited_lane"]((2,), (64,), (np.empty(128, np.int32),))


def test_lanes_waiting_at_different_call_sites_fail_the_launch(faulty):
    with pytest.raises(LaunchError, match=r"faulty\.cu:\d+: __shfl_xor_sync .* which waits at "
                                          r".*faulty\.cu:\d+"):
        faulty["other_site"]((1,), (32,), (np.empty(32, np.int32),))


def test_a_mask_naming_lanes_past_a_partial_warp_fails_the_launch(faulty):
    with pytest.raises(LaunchError, match=r"warp 1, lane \d+: mask 0xffffffff names lane 16, past the "
                                          r"end of a partial warp of 16 lanes"):
        faulty["full_mask"]((1,), (48,), (np.empty(48, np.int32),))


@pytest.mark.skipif(THREAD, reason="one schedule under ThreadSanitizer")
def test_an_order_dependent_output_fails_the_launch(faulty):
    with pytest.raises(LaunchError, match=r"last_writer_wins\(out\): schedule reversed differs"):
        faulty["last_writer_wins"]((2,), (64,), (np.empty(1, np.int32),))


@pytest.mark.skipif(THREAD, reason="one schedule under ThreadSanitizer")
def test_an_output_element_never_written_fails_the_launch(faulty):
    with pytest.raises(LaunchError, match=r"skips_some\(out\): element 0 of 100 is never written"):
        faulty["skips_some"]((1,), (32,), (np.int32(100), np.empty(100, np.int32)))


@pytest.mark.skipif(executor.sanitize_mode() != "", reason="guard bytes only without sanitizers")
def test_a_write_past_the_end_of_an_argument_fails_the_launch(faulty):
    with pytest.raises(LaunchError, match=r"one_past_the_end\(out\): written outside its 100 elements"):
        faulty["one_past_the_end"]((1,), (32,), (np.int32(100), np.empty(100, np.int32)))


def test_atomic_adds_count_every_warp(faulty):
    out = np.zeros(1, np.int32)
    faulty["atomic_add"]((2,), (96,), (out,))
    assert out[0] == 6


@pytest.mark.skipif(not THREAD, reason="only ThreadSanitizer sees a race between fibers")
def test_threadsanitizer_reports_a_plain_add_from_two_warps(faulty):
    with pytest.raises(LaunchError, match="data race"):
        faulty["racy_add"]((1,), (64,), (np.zeros(1, np.int32),))


def test_arguments_are_checked_like_the_signature(faulty):
    with pytest.raises(TypeError, match=r"skips_some\(n\): int, not numpy.int32"):
        faulty["skips_some"]((1,), (32,), (100, np.empty(100, np.int32)))
    with pytest.raises(TypeError, match=r"skips_some\(out\): want a C-contiguous int32 array"):
        faulty["skips_some"]((1,), (32,), (np.int32(100), np.empty(100, np.int64)))
