"""Packing the selected cells into per-step words: every bit where the contract puts it."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_matcher.backends.base import pack_rows, word_dtype
from gpu_matcher.backends.numpy import NumpyBackend
from gpu_matcher.bitmatrix import unpack_bits
from gpu_matcher.source import KeyStore, Layout, float_keys


@pytest.mark.parametrize("k", [1, 2, 7, 8, 9, 16, 17, 31, 33, 63, 64, 65, 130])
def test_bit_j_of_word_j_div_64_is_cell_j(k):
    rng = np.random.default_rng(k)
    T = 257
    on = rng.random((k, T)) < 0.4
    words = NumpyBackend().pack_steps(on)   # the shared SearchBackend.pack_steps
    assert words.dtype == word_dtype(k) and words.shape == (T, -(-k // 64))
    bits = np.array([[(int(words[t, j // 64]) >> (j % 64)) & 1 for j in range(k)] for t in range(T)])
    assert np.array_equal(bits.T.astype(bool), on)
    assert np.array_equal(pack_rows(iter(on), k, T), words)
    with pytest.raises(ValueError):
        pack_rows(iter(on[:-1]), k, T)


@pytest.mark.parametrize("per_cell", [False, True])
def test_numpy_backend_packs_straight_from_the_cell_rows(per_cell):
    """The selected cells' bit rows are the keys compared with the threshold key (one, or one per cell),
    and on_columns unpacks the same bits."""
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(500, 70)).astype(np.float16)
    keys = float_keys(raw)
    layout = Layout(keys_rows=KeyStore(keys), keys_cells=KeyStore(np.ascontiguousarray(keys.T)), location=None)
    backend = NumpyBackend()
    cells = np.array(sorted(rng.choice(70, size=67, replace=False)))
    key = float_keys(rng.normal(size=70).astype(np.float16))
    key = key if per_cell else key[5]
    want = keys.T[cells] >= (key[cells, None] if per_cell else key)
    got = backend.selected_words(layout, cells, key)
    assert np.array_equal(unpack_bits(np.asarray(got.rows), 500), want)
    assert np.array_equal(backend.on_columns(layout, cells, key), want)
