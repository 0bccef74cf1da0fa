"""The bit-row primitives of ``gpu_matcher.bitmatrix`` against plain NumPy statements of the same thing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gpu_matcher import bitmatrix as bm
from gpu_matcher.source import KeyStore, float_keys


def brute_runs(on: np.ndarray, starts: list[int]):
    """Maximal runs of True, cut at sequence starts: the definition, one step at a time."""
    a, b, cut = [], [], set(starts)
    for t, x in enumerate(on.tolist()):
        if x and (t == 0 or not on[t - 1] or t in cut):
            a.append(t)
        if x and (t == len(on) - 1 or not on[t + 1] or (t + 1) in cut):
            b.append(t)
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)


def in_place(rows: np.ndarray) -> bm.RowSet:
    """The same rows as a RowSet of a larger matrix, stored shuffled among other rows."""
    k = rows.shape[0]
    where = np.random.default_rng(k).permutation(2 * k)[:k]
    matrix = np.full((2 * k, rows.shape[1]), np.uint64(0xDEADBEEF), dtype=np.uint64)
    matrix[where] = rows
    return bm.RowSet(matrix, where)


@pytest.mark.parametrize("T", [1, 63, 64, 65, 200, 1000])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 0.97, 1.0])
@pytest.mark.parametrize("peel", [0, 16, 64])               # unpacked / mixed / peeled bit by bit
def test_pack_unpack_and_positions(T, density, peel, monkeypatch):
    monkeypatch.setattr(bm, "PEEL_BITS", peel)
    on = np.random.default_rng(T).random((3, T)) < density
    words = bm.pack_bits(on)
    assert words.shape == (3, bm.n_words(T)) and words.dtype == np.uint64
    assert np.array_equal(bm.unpack_bits(words, T), on)
    for r in range(3):
        assert np.array_equal(bm.set_positions(words[r]), np.flatnonzero(on[r]))
        bits = [(int(words[r, t // 64]) >> (t % 64)) & 1 for t in range(T)]
        assert np.array_equal(np.array(bits, dtype=bool), on[r])
    # Padding bits past T stay clear.
    assert np.array_equal(bm.set_positions(bm.pack_bits(np.ones(T, dtype=bool))), np.arange(T))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 8, 27, 64, 163, 255, 256, 300])
def test_bit_sliced_counts_are_popcount_sums(k, monkeypatch):
    rng = np.random.default_rng(k)
    T = 777
    on = rng.random((k, T)) < rng.uniform(0.05, 0.95, size=(k, 1))
    monkeypatch.setattr(bm, "ADDER_BLOCK", 5)             # several blocks, the last one partial
    planes = bm.bit_sliced_counts(bm.pack_bits(on))
    assert np.array_equal(bm.bit_sliced_counts(in_place(bm.pack_bits(on))), planes)
    want = on.sum(axis=0)
    n = bm.counts_from_planes(planes, T, k)
    assert n.dtype == bm.count_dtype(k) and np.array_equal(n, want)
    assert np.array_equal(bm.word_max(planes), np.pad(want, (0, -T % 64)).reshape(-1, 64).max(axis=1))
    for m in sorted({1, 2, k // 2 + 1, k, k + 1, 2 * k + 5}):
        assert np.array_equal(bm.unpack_bits(bm.at_least(planes, m), T), want >= m), m


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_runs_from_counts_equal_brute_force(data):
    T = data.draw(st.integers(1, 300))
    k = data.draw(st.integers(1, 9))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    on = rng.random((k, T)) < data.draw(st.floats(0.0, 1.0))
    starts = sorted({0} | set(rng.integers(0, T, size=data.draw(st.integers(0, 6))).tolist()))
    bounds = np.array(starts + [T], dtype=np.int64)
    selected = bm.SelectedBits(bm.pack_bits(on), T)
    counts = bm.StepCounts(selected)
    levels = bm.level_bits(counts, bounds)
    n = np.asarray(counts)
    assert np.array_equal(n, on.sum(axis=0)) and counts.max() == n.max()
    assert np.array_equal(counts.word_max(), np.pad(n, (0, -T % 64)).reshape(-1, 64).max(axis=1))
    for m in range(1, k + 2):
        a, b = bm.level_runs_from_bits(levels, m)
        wa, wb = brute_runs(n >= m, starts)
        assert np.array_equal(a, wa) and np.array_equal(b, wb), m


def test_sparse_level_words_equal_the_dense_path(monkeypatch):
    rng = np.random.default_rng(5)
    T, k = 5000, 12
    on = rng.random((k, T)) < 0.45
    starts = sorted({0} | set(rng.integers(0, T, 20).tolist()))
    selected = bm.SelectedBits(bm.pack_bits(on), T)
    counts = bm.StepCounts(selected)
    levels = bm.level_bits(counts, np.array(starts + [T]))
    n = counts[:]
    for share in (0.0, 1.0):                 # only the words reaching the level / every word
        monkeypatch.setattr(bm, "SPARSE_SHARE", share)
        for m in range(1, k + 1):
            a, b = bm.level_runs_from_bits(levels, m)
            wa, wb = brute_runs(n >= m, starts)
            assert np.array_equal(a, wa) and np.array_equal(b, wb)


@pytest.mark.parametrize("long_few", [0, 16, 10**6])
def test_window_counts_equal_brute_force(long_few, monkeypatch):
    monkeypatch.setattr(bm, "LONG_FEW", long_few)
    monkeypatch.setattr(bm, "WINDOW_BUDGET", 64)          # several batches
    rng = np.random.default_rng(long_few)
    T, k = 700, 9
    on = rng.random((k, T)) < 0.7
    on[:, 120:381] = rng.random((k, 1)) < 0.6           # some cells on over a long stretch,
    on[:, 110:120] = on[:, 381:390] = False             # and off around it
    a = rng.integers(0, T, 300)
    length = np.where(rng.random(300) < 0.2, rng.integers(60, 300, 300), rng.integers(1, 5, 300))
    b = np.minimum(a + length - 1, T - 1)
    lo = np.maximum(a - rng.integers(0, 70, 300), 0)
    hi = np.minimum(b + 1 + rng.integers(0, 70, 300), T)
    a[:20], b[:20], lo[:20], hi[:20] = 120, 380, 119, 382     # long windows that some cells pass
    got = bm.window_counts(bm.pack_bits(on), a, b, lo, hi)
    want = [int((on[:, a[i]:b[i] + 1].all(axis=1) & ~on[:, lo[i]:a[i]].any(axis=1)
                 & ~on[:, b[i] + 1:hi[i]].any(axis=1)).sum()) for i in range(a.size)]
    assert got.tolist() == want and max(want) > 0
    assert bm.window_counts(in_place(bm.pack_bits(on)), a, b, lo, hi).tolist() == want


def _store(T=300, D=40, seed=0):
    raw = np.random.default_rng(seed).normal(size=(T, D)).astype(np.float16)
    keys = float_keys(raw)
    return KeyStore(np.ascontiguousarray(keys.T)), keys


def test_cache_rows_are_the_keys_compared_with_one_or_per_cell_keys():
    store, keys = _store()
    cache = bm.BitRowCache(budget=1 << 20)
    cells = np.array([3, 0, 39, 17, 17])
    key = float_keys(np.array([0.3], dtype=np.float16))[0]
    assert np.array_equal(bm.unpack_bits(cache.rows(store, cells, key).array(), 300), keys.T[cells] >= key)
    per = float_keys(np.random.default_rng(1).normal(size=40).astype(np.float16))
    assert np.array_equal(bm.unpack_bits(cache.rows(store, cells, per).array(), 300),
                          keys.T[cells] >= per[cells, None])


def test_cache_respects_its_byte_budget_and_keeps_recent_thresholds():
    store, keys = _store(T=640, D=30)
    row_bytes = bm.n_words(640) * 8
    cache = bm.BitRowCache(budget=25 * row_bytes)         # 25 rows
    cells = np.arange(10)
    thresholds = [float_keys(np.array([x], dtype=np.float16))[0] for x in (0.1, 0.2, 0.3, 0.4)]
    for key in thresholds:
        cache.rows(store, cells, key)
        assert cache.nbytes <= cache.budget
    assert cache.packed == 40 and cache.nbytes == 20 * row_bytes      # the two latest thresholds
    # The two most recent thresholds are kept: switching back packs nothing; the oldest is re-packed.
    cache.rows(store, cells, thresholds[2])
    assert cache.packed == 40
    got = cache.rows(store, cells, thresholds[0])
    assert cache.packed == 50 and np.array_equal(bm.unpack_bits(got.array(), 640), keys.T[cells] >= thresholds[0])
    assert cache.nbytes <= cache.budget
    # A second store with the same shape never reads the first one's rows.
    other, other_keys = _store(T=640, D=30, seed=9)
    got = cache.rows(other, cells, thresholds[0])
    assert np.array_equal(bm.unpack_bits(got.array(), 640), other_keys.T[cells] >= thresholds[0])
    assert cache.nbytes == sum(e.nbytes for e in cache._entries.values())
    del other                                             # a store that is gone takes its rows along
    assert cache.nbytes == 10 * row_bytes and len(cache._entries) == 1
    tiny = bm.BitRowCache(budget=row_bytes - 1)           # a row over the budget is not kept
    tiny.rows(store, cells, thresholds[0])
    assert tiny.nbytes == 0


@pytest.mark.parametrize("sparse_share, stack_bytes", [(0.0, 64 * 2**20), (0.5, 0), (1.0, 64 * 2**20)])
def test_match_over_many_words_equals_the_oracle(sparse_share, stack_bytes, monkeypatch):
    """The whole search over a timeline of several words (runs and margins crossing word edges), with
    levels visiting only the words that reach them or all words, the rows copied or read in place."""
    monkeypatch.setattr(bm, "STACK_BYTES", stack_bytes)
    from gpu_matcher import Engine
    from tests.engine import oracle
    from tests.engine.test_properties import project_from_array

    monkeypatch.setattr(bm, "SPARSE_SHARE", sparse_share)
    rng = np.random.default_rng(int(sparse_share * 10))
    T, D = 300, 12
    raw = np.cumsum(rng.normal(size=(T, D)), axis=0).astype(np.float32) * 0.3   # long on-runs
    starts = sorted(rng.choice(np.arange(1, T), size=4, replace=False).tolist())
    engine = Engine(project_from_array(raw, "none", starts), backend="numpy")
    on = oracle.on_matrix(raw, 0.2, "none")
    for q in range(6):
        cells = sorted(rng.choice(D, size=int(rng.integers(1, D + 1)), replace=False).tolist())
        left, right = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        distinct = bool(q % 2)
        got = engine.match("f::states", cells, 0.2, left, right, top=15, distinct=distinct)
        want = oracle.match(on, cells, left, right, starts, top=15, distinct=distinct)
        assert [m.as_dict() for m in got] == want
