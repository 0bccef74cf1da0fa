"""kernels/stats.cu executed on the CPU (tests/kernels/executor) against a plain NumPy statement of what
its comment says it computes; sizes and grids as in test_kernels.py."""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels import executor
from tests.kernels.test_kernels import GRIDS, SIZES, _runs


@pytest.fixture(scope="module")
def k():
    return executor.load()


def run_cell_on_counts(k, rng, T, D, grid, block):
    """inside[c] = popcount(row c & target), total[c] = popcount(row c), over the first n_words words of
    each row; words past n_words (the stride's slack) are random and must not count."""
    n_words = -(-T // 32)
    word_stride = n_words + int(rng.integers(0, 3))
    on = _runs(rng, D, word_stride * 32)
    words = np.ascontiguousarray(np.packbits(on, axis=1, bitorder="little")).view("<u4").astype(np.uint32)
    target = _runs(rng, 1, n_words * 32)[0]
    packed = np.packbits(target, bitorder="little").view("<u4").astype(np.uint32)
    inside, total = np.empty(D, np.int64), np.empty(D, np.int64)
    k["cell_on_counts"](grid, block, (words, np.int64(word_stride), np.int64(n_words), np.int32(D), packed,
                                      inside, total))
    row_on = on[:, :n_words * 32]
    np.testing.assert_array_equal(total, row_on.sum(axis=1))
    np.testing.assert_array_equal(inside, (row_on & target).sum(axis=1))


@pytest.mark.parametrize("T", SIZES)
@pytest.mark.parametrize("D", [1, 5, 70])
@pytest.mark.parametrize("grid,block", GRIDS)
def test_cell_on_counts(k, T, D, grid, block):
    run_cell_on_counts(k, np.random.default_rng(T * D + 3), T, D, grid, block)
