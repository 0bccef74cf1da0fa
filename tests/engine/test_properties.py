"""Property tests: the engine against the brute-force oracle on random small inputs.

Inputs draw values from a small pool so ties, equal runs at several levels and thresholds that hit
stored values exactly are common; sequences, margins at the first/last step, float16/float32 sources
and both transforms are covered.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import Engine
from gpu_matcher.project import Project
from gpu_matcher.source import Source
from tests.engine import oracle

_counter = itertools.count()
POOL = [-3.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0, 6.0]


def project_from_array(raw: np.ndarray, transform: str, starts: list[int]) -> Project:
    """A Project over an in-memory HDF5 file (nothing on disk)."""
    f = h5py.File(f"mem-{next(_counter)}.h5", "w", driver="core", backing_store=False)
    ds = f.create_dataset("states", data=raw)
    src = Source(name="f::states", dataset=ds, file_path=Path("/nonexistent"), transform=transform)
    T = raw.shape[0]
    return Project(id="p", path=Path("."), name="p", description="p", T=T, sources={src.name: src},
                   word_ids_dataset=None, dictionary={}, meta={},
                   sequence_starts=np.asarray(sorted(starts), dtype=np.int64) if starts else None)


@st.composite
def scenarios(draw):
    T = draw(st.integers(1, 40))
    D = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from(["float16", "float32"]))
    transform = draw(st.sampled_from(["tanh", "none"]))
    values = draw(st.lists(st.one_of(st.sampled_from(POOL), st.floats(-4, 4, width=32)),
                           min_size=T * D, max_size=T * D))
    raw = np.asarray(values, dtype=np.float64).reshape(T, D).astype(dtype)
    starts = sorted(draw(st.sets(st.integers(1, max(1, T - 1)), max_size=4))) if T > 1 else []
    stored = float(raw.flat[draw(st.integers(0, raw.size - 1))])
    exact = math.tanh(stored) if transform == "tanh" else stored       # a threshold at a stored value
    threshold = draw(st.one_of(st.just(exact), st.sampled_from([-1.0, -0.3, 0.0, 0.2, 0.5, 1.0]),
                               st.floats(-1.2, 1.2)))
    return raw, transform, starts, float(threshold)


def _as_dicts(matches):
    return [m.as_dict() for m in matches]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_select_and_match_equal_the_oracle(scenario, data):
    raw, transform, starts, threshold = scenario
    T, D = raw.shape
    use_sequences = data.draw(st.booleans())
    seq_starts = starts if use_sequences else []
    engine = Engine(project_from_array(raw, transform, starts), backend="numpy")
    on = oracle.on_matrix(raw, threshold, transform)

    s = data.draw(st.integers(0, T - 1))
    lo, hi = oracle.sequence_of(s, seq_starts, T)
    e = data.draw(st.integers(s, hi - 1))
    left, right = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
    sel = engine.select("f::states", s, e, threshold, left, right, sequences=use_sequences)
    assert sel.cells == oracle.select(on, s, e, left, right, seq_starts)

    cells = data.draw(st.lists(st.integers(0, D - 1), min_size=1, max_size=D, unique=True))
    top = data.draw(st.integers(1, 12))
    min_length = data.draw(st.integers(1, 3))
    phrase_length = data.draw(st.sampled_from([0, 0, 1, 2, 3]))
    distinct = data.draw(st.booleans())
    got = engine.match("f::states", cells, threshold, left, right, top=top, min_length=min_length,
                       phrase_length=phrase_length, distinct=distinct, sequences=use_sequences)
    want = oracle.match(on, cells, left, right, seq_starts, top=top, min_length=min_length,
                        phrase_length=phrase_length, distinct=distinct)
    assert _as_dicts(got) == want
    # Once the layout exists, select and context read from it: same answers.
    assert engine.select("f::states", s, e, threshold, left, right, sequences=use_sequences).cells == sel.cells
    ctx = engine.context("f::states", 0, T, cells, threshold)
    assert np.array_equal(ctx.counts, on[:, cells].sum(axis=1))
    expected_values = np.tanh(raw.astype(np.float32)) if transform == "tanh" else raw.astype(np.float32)
    np.testing.assert_array_equal(ctx.values, expected_values)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_key_comparison_equals_float64_comparison(scenario):
    """The stored-dtype key threshold gives the spec's float64 booleans, cell by cell."""
    from gpu_matcher.source import float_keys, key_threshold

    raw, transform, _, threshold = scenario
    k = key_threshold(threshold, transform, raw.dtype)
    fast = np.zeros(raw.shape, dtype=bool) if k is None else float_keys(raw) >= k
    assert np.array_equal(fast, oracle.on_matrix(raw, threshold, transform))


def test_special_values():
    """NaN is never on; -0.0 equals 0.0; +-inf follow the float64 rule; tanh edges are exact."""
    from gpu_matcher.source import float_keys, key_threshold

    for dtype in ("float16", "float32", "float64"):
        raw = np.array([np.nan, -0.0, 0.0, -np.inf, np.inf, 1e-8, -1e-8], dtype=dtype)
        for theta, transform in [(0.0, "none"), (0.0, "tanh"), (-1.0, "tanh"), (1.0, "tanh"),
                                 (0.999999, "tanh"), (-5.0, "none"), (np.float32(1e-8), "none")]:
            k = key_threshold(float(theta), transform, raw.dtype)
            fast = np.zeros(raw.shape, bool) if k is None else float_keys(raw) >= k
            want = oracle.on_matrix(raw.reshape(-1, 1), float(theta), transform).ravel()
            assert np.array_equal(fast, want), (dtype, theta, transform, fast, want)


@pytest.mark.parametrize("first", [1, 3])
def test_batched_verification_equals_the_oracle(monkeypatch, first):
    """Groups verified a few candidates at a time (longest first, walking those with the least
    possible union at once, stopping when the walk is full) give the oracle's answer."""
    from gpu_matcher.backends import search

    monkeypatch.setattr(search, "VERIFY_FIRST", first)
    rng = np.random.default_rng(first)
    for trial in range(6):
        T, D = 400, 14
        raw = np.cumsum(rng.normal(size=(T, D)), axis=0).astype(np.float32) / 4
        starts = sorted(rng.choice(np.arange(1, T), size=5, replace=False).tolist())
        engine = Engine(project_from_array(raw, "none", starts), backend="numpy")
        on = oracle.on_matrix(raw, 0.0, "none")
        cells = sorted(rng.choice(D, size=int(rng.integers(2, 7)), replace=False).tolist())
        for top, distinct, left, right in [(5, True, 1, 1), (40, True, 0, 2), (25, False, 1, 0)]:
            got = engine.match("f::states", cells, 0.0, left, right, top=top, distinct=distinct)
            want = oracle.match(on, cells, left, right, starts, top=top, min_length=2, phrase_length=0,
                                distinct=distinct)
            assert _as_dicts(got) == want, (trial, top, distinct)
