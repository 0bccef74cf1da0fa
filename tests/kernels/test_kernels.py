"""Each kernel of kernels/*.cu, executed on the CPU (tests/kernels/executor), against a plain NumPy
statement of what its comment says it computes. Sizes are not multiples of 32, T starts at 1, and the
grids are small so that every grid-stride loop goes round; each launch runs forward, reversed and
shuffled, with poisoned outputs (the executor compares them)."""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from tests.kernels import executor

SIZES = [1, 2, 31, 33, 100, 257]
#: (grid, block): one warp; one block of two warps; three blocks of two warps. All under 256 threads.
#: ThreadSanitizer (one process per launch) takes only the last: races need several warps and blocks.
GRIDS = [((1,), (32,)), ((1,), (64,)), ((3,), (64,))]
if executor.sanitize_mode() == "thread":
    GRIDS = GRIDS[-1:]
KEY_TYPES = {"pack_cells_u16": np.uint16, "pack_cells_u32": np.uint32, "pack_cells_u64": np.uint64,
             "pack_cells_rows_u16": np.uint16, "pack_cells_rows_u32": np.uint32,
             "pack_cells_rows_u64": np.uint64}


@pytest.fixture(scope="module")
def k():
    return executor.load()


def _bits(words: np.ndarray, n: int) -> np.ndarray:
    """bit j of word w -> element 32w + j, for the first n elements of each row."""
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")[..., :n] \
        .astype(bool)


def _runs(rng, rows: int, T: int) -> np.ndarray:
    """(rows, T) bools in runs (each row flips with a probability of its own, 1-10 % per step), so a
    run's AND and its margins' OR are often neither all 0 nor all 1."""
    flip = rng.random((rows, T)) < rng.uniform(0.01, 0.1, (rows, 1))
    return (np.cumsum(flip, axis=1) + rng.integers(0, 2, (rows, 1))) % 2 == 1


def _candidates(rng, T: int, n: int, on: np.ndarray | None = None):
    """n candidates lo <= a <= b < hi <= T: random ones, and (given the bits ``on``, (rows, >= T)) half
    of them a maximal run of one row with margins of 0-3 steps, so some rows pass every check."""
    a = rng.integers(0, T, n)
    b = np.minimum(T - 1, a + rng.integers(0, 70, n))
    lo = np.maximum(0, a - rng.integers(0, 40, n))
    hi = np.minimum(T, b + 1 + rng.integers(0, 40, n))
    if on is not None:
        for i in range(0, n, 2):
            row = on[rng.integers(0, on.shape[0]), :T]
            t = int(rng.integers(0, T))
            if not row[t]:
                continue
            s = t - int(np.argmin(row[t::-1])) + 1 if not row[:t + 1].all() else 0
            e = t + int(np.argmin(row[t:])) - 1 if not row[t:].all() else T - 1
            a[i], b[i] = s, e
            lo[i], hi[i] = max(0, s - int(rng.integers(0, 4))), min(T, e + 1 + int(rng.integers(0, 4)))
    return [np.ascontiguousarray(x, dtype=np.int64) for x in (a, b, lo, hi)]


# --- threshold.cu --------------------------------------------------------------------------------------
def run_pack_cells(k, rng, name, T, rows, grid, block, offset=0):
    """Word w of row r at words[r, word_offset + w]: bit j is keys[r, 32w + j] >= threshold; the other
    words of each row are left as they were."""
    dtype = KEY_TYPES[name]
    n_words = -(-T // 32)
    key_stride = 32 * (n_words + int(rng.integers(0, 2)))
    per_row = "_rows_" in name                 # one threshold per row: rows differ by up to 3
    thresholds = (rng.integers(10, 14, rows) if per_row else np.full(rows, rng.integers(10, 1000))
                  ).astype(dtype)
    pool = np.concatenate([np.array([0, 1, np.iinfo(dtype).max], dtype=dtype), thresholds - dtype(1),
                           thresholds, thresholds + dtype(1)])
    keys = rng.choice(pool, (rows, key_stride)).astype(dtype)
    keys[:, T:] = 0                                                # padding: key 0, never on
    word_stride = offset + n_words + int(rng.integers(0, 3))
    before = rng.integers(0, 2**32, (rows, word_stride), dtype=np.uint64).astype(np.uint32)
    words = before.copy()
    threshold = thresholds if per_row else thresholds[0]
    k[name](grid, block, (keys, np.int64(key_stride), threshold, words, np.int64(word_stride),
                          np.int64(offset), np.int64(n_words), np.int32(rows)))
    want = before.copy()
    on = keys[:, :n_words * 32] >= thresholds[:, None]
    want[:, offset:offset + n_words] = np.ascontiguousarray(np.packbits(on, axis=1, bitorder="little")).view("<u4")
    np.testing.assert_array_equal(words, want)


@pytest.mark.parametrize("name", sorted(KEY_TYPES))
@pytest.mark.parametrize("T", SIZES)
@pytest.mark.parametrize("grid,block", GRIDS)
def test_pack_cells(k, name, T, grid, block):
    rng = np.random.default_rng(T)
    run_pack_cells(k, rng, name, T, rows=int(rng.integers(1, 6)), grid=grid, block=block,
                   offset=int(rng.integers(0, 3)))


def run_unpack_cells(k, rng, T, D, n_cells, grid, block):
    """out[i, t] = bit t of the packed row of cell cells[i]."""
    word_stride = -(-T // 32) + int(rng.integers(0, 2))
    words = rng.integers(0, 2**32, (D, word_stride), dtype=np.uint64).astype(np.uint32)
    cells = rng.integers(0, D, n_cells).astype(np.int64)
    out = np.empty((n_cells, T), dtype=bool)
    k["unpack_cells"](grid, block, (words, np.int64(word_stride), cells, np.int32(n_cells), np.int64(T), out))
    np.testing.assert_array_equal(out, _bits(words, T)[cells])


@pytest.mark.parametrize("T", SIZES)
@pytest.mark.parametrize("grid,block", [((1, 1), (32,)), ((2, 3), (32,)), ((3, 1), (64,))][3 - len(GRIDS):])
def test_unpack_cells(k, T, grid, block):
    rng = np.random.default_rng(T + 1)
    run_unpack_cells(k, rng, T, D=int(rng.integers(1, 40)), n_cells=int(rng.integers(1, 7)), grid=grid,
                     block=block)


# --- steps.cu --------------------------------------------------------------------------------------------
def run_gather_steps(k, rng, T, D, nk, grid, block):
    """words[t, w] bit j = bit t of the packed row of cell cells[32w + j]; bits past k are 0."""
    word_stride = -(-T // 32) + int(rng.integers(0, 2))
    on = _runs(rng, D, word_stride * 32)
    mask = np.packbits(on, axis=1, bitorder="little").view("<u4").copy()
    cells = rng.choice(D, nk, replace=nk > D).astype(np.int64)
    W = max(1, -(-nk // 32))
    words = np.empty((T, W), dtype=np.uint32)
    k["gather_steps"](grid, block, (mask, np.int64(word_stride), cells, np.int32(nk), np.int64(T), words,
                                    np.int32(W)))
    padded = np.zeros((W * 32, T), dtype=bool)
    padded[:nk] = on[cells, :T]
    np.testing.assert_array_equal(
        words, np.ascontiguousarray(np.packbits(padded.T, axis=1, bitorder="little")).view("<u4"))


@pytest.mark.parametrize("T", SIZES)
@pytest.mark.parametrize("nk", [1, 5, 32, 33, 70])
@pytest.mark.parametrize("grid,block", GRIDS[::2])
def test_gather_steps(k, T, nk, grid, block):
    run_gather_steps(k, np.random.default_rng(T * nk + 1), T, 80, nk, grid, block)



def run_pack_steps(k, rng, T, nk, grid, block):
    """words[t, w] bit j = on[32w + j, t]; bits past k are 0."""
    W = max(1, -(-nk // 32))
    on = rng.random((nk, T)) < 0.4
    words = np.empty((T, W), dtype=np.uint32)
    k["pack_steps"](grid, block, (on, np.int32(nk), np.int64(T), words, np.int32(W)))
    padded = np.zeros((W * 32, T), dtype=bool)
    padded[:nk] = on
    np.testing.assert_array_equal(words, np.ascontiguousarray(np.packbits(padded.T, axis=1, bitorder="little")).view("<u4"))


@pytest.mark.parametrize("T", SIZES)
@pytest.mark.parametrize("nk", [1, 5, 32, 33, 70])
@pytest.mark.parametrize("grid,block", GRIDS[::2])
def test_pack_steps(k, T, nk, grid, block):
    run_pack_steps(k, np.random.default_rng(T * nk), T, nk, grid, block)


def run_step_counts(k, rng, T, W, grid, block):
    """n[t] = popcount of the step's W words."""
    words = rng.integers(0, 2**32, (T, W), dtype=np.uint64).astype(np.uint32)
    n = np.empty(T, dtype=np.int32)
    k["step_counts"](grid, block, (words, np.int32(W), np.int64(T), n))
    np.testing.assert_array_equal(n, np.bitwise_count(words).sum(axis=1))


@pytest.mark.parametrize("T", SIZES)
@pytest.mark.parametrize("W", [1, 3])
@pytest.mark.parametrize("grid,block", GRIDS[::2])
def test_step_counts(k, T, W, grid, block):
    run_step_counts(k, np.random.default_rng(T + W), T, W, grid, block)


def run_level_edges(k, rng, T, level, has_seq, grid, block):
    """Bit 0 where a maximal run of n >= level starts, bit 1 where one ends; runs cut at sequence
    starts (seq_start read only when has_seq: then a 1-element dummy must do)."""
    n = rng.integers(0, 4, T).astype(np.int32)
    seq = (rng.random(T) < 0.1).astype(np.uint8) if has_seq else np.zeros(1, np.uint8)
    flags = np.empty(T, dtype=np.uint8)
    k["level_edges"](grid, block, (n, seq, np.int32(has_seq), np.int32(level), np.int64(T), flags))
    on = n >= level
    cut = seq.astype(bool) if has_seq else np.zeros(T, dtype=bool)
    first = on & np.concatenate([[True], ~on[:-1] | cut[1:]])
    last = on & np.concatenate([~on[1:] | cut[1:], [True]])
    np.testing.assert_array_equal(flags, first.astype(np.uint8) | (last.astype(np.uint8) << 1))


@pytest.mark.parametrize("T", SIZES)
@pytest.mark.parametrize("has_seq", [0, 1])
@pytest.mark.parametrize("grid,block", GRIDS[::2])
def test_level_edges(k, T, has_seq, grid, block):
    rng = np.random.default_rng(T + has_seq)
    for level in (1, 2, 3):
        run_level_edges(k, rng, T, level, has_seq, grid, block)


# --- verify.cu --------------------------------------------------------------------------------------------
def run_inter_counts(k, rng, T, W, n_cand, grid, block):
    """out[c] = popcount of (AND of words[a..b]) & ~(OR of words[lo..a) and words(b..hi))."""
    on = _runs(rng, 32 * W, T)
    words = np.ascontiguousarray(np.packbits(on.T, axis=1, bitorder="little")).view("<u4")
    a, b, lo, hi = _candidates(rng, T, n_cand, on)
    out = np.empty(n_cand, dtype=np.int32)
    k["inter_counts"](grid, block, (words, np.int32(W), a, b, lo, hi, np.int64(n_cand), out))
    want = []
    for s, e, l, h in zip(a, b, lo, hi):
        run = np.bitwise_and.reduce(words[s:e + 1], axis=0)
        margin = np.bitwise_or.reduce(np.concatenate([words[l:s], words[e + 1:h]]), axis=0) \
            if (s > l or h > e + 1) else np.zeros(W, np.uint32)
        want.append(int(np.bitwise_count(run & ~margin).sum()))
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("T", SIZES)
@pytest.mark.parametrize("W", [1, 2])
@pytest.mark.parametrize("grid,block", GRIDS)
def test_inter_counts(k, T, W, grid, block):
    rng = np.random.default_rng(T * 3 + W)
    run_inter_counts(k, rng, T, W, n_cand=int(rng.integers(5, 30)), grid=grid, block=block)


def run_active_counts(k, rng, T, D, n_cand, grid, block):
    """out[c] += number of cells whose bits are all on over [a, b] and all off over [lo, a) and (b, hi)."""
    word_stride = -(-T // 32) + int(rng.integers(0, 2))
    on = _runs(rng, D, word_stride * 32)
    words = np.packbits(on, axis=1, bitorder="little").view("<u4").copy()
    a, b, lo, hi = _candidates(rng, T, n_cand, on)
    before = rng.integers(0, 50, n_cand).astype(np.int32)
    out = before.copy()
    k["active_counts"](grid, block, (words, np.int64(word_stride), np.int32(D), a, b, lo, hi,
                                     np.int64(n_cand), out))
    want = [before[i] + int((on[:, s:e + 1].all(axis=1) & ~on[:, l:s].any(axis=1) & ~on[:, e + 1:h].any(axis=1)
                             ).sum()) for i, (s, e, l, h) in enumerate(zip(a, b, lo, hi))]
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("T", SIZES)
@pytest.mark.parametrize("D", [1, 33, 70])
@pytest.mark.parametrize("grid,block", GRIDS)
def test_active_counts(k, T, D, grid, block):
    rng = np.random.default_rng(T * 7 + D)
    run_active_counts(k, rng, T, D, n_cand=int(rng.integers(5, 30)), grid=grid, block=block)


# --- launch preconditions ---------------------------------------------------------------------------------
def test_the_launch_preconditions_are_asserted(k):
    words = np.zeros((1, 1), np.uint32)
    cand = [np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1, np.int64)]
    with pytest.raises(ValueError, match="is not 1-D"):
        k["active_counts"]((1, 2), (32,), (words, np.int64(1), np.int32(1), *cand, np.int64(1),
                                          np.zeros(1, np.int32)))
    with pytest.raises(ValueError, match="blockDim.x = 48 is not a multiple of 32"):
        k["inter_counts"]((1,), (48,), (words, np.int32(1), *cand, np.int64(1), np.zeros(1, np.int32)))


def test_the_warp_kernels_are_exactly_those_that_vote_or_shuffle():
    """kernels.WARP_KERNELS must name every kernel that reaches a warp intrinsic, and no other."""
    fresh = executor.load()
    rng = np.random.default_rng(5)
    for name in KEY_TYPES:
        run_pack_cells(fresh, rng, name, 40, 2, (1,), (32,))
    run_unpack_cells(fresh, rng, 40, 3, 2, (1, 1), (32,))
    run_gather_steps(fresh, rng, 40, 3, 2, (1,), (32,))
    run_pack_steps(fresh, rng, 40, 3, (1,), (32,))
    run_step_counts(fresh, rng, 40, 1, (1,), (32,))
    run_level_edges(fresh, rng, 40, 1, 1, (1,), (32,))
    run_inter_counts(fresh, rng, 40, 1, 3, (1,), (32,))
    run_active_counts(fresh, rng, 40, 3, 3, (1,), (32,))
    from tests.kernels.test_stats_kernels import run_cell_on_counts

    run_cell_on_counts(fresh, rng, 40, 3, (1,), (32,))
    assert set(fresh) == set(kernels.signatures())
    used = {name for name, kern in fresh.items() if kern.used_warp_intrinsics}
    assert used == set(kernels.WARP_KERNELS)
