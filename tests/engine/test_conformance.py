"""Conformance (Faiss's ``I == I_ref``): every implementation of ``tests/engine/conformance.py``
answers exactly like the brute-force oracle (``oracle.py``) and the NumPy backend, on the golden sets
and on random scenarios: small ones against the oracle (plain and per-cell scaled thresholds), larger
ones, LSTM-like states and wide margins against NumPy.

An implementation that cannot run here (no GPU, no Dask) is skipped with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import Engine, open_project
from gpu_matcher.sharded import reset_worker_states
from tests.conftest import GOLDEN, golden_queries, golden_sets
from tests.engine import conformance, oracle
from tests.engine.conformance import IMPLEMENTATIONS, Implementation, rows

SETS = golden_sets()
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]


@pytest.fixture(scope="module", autouse=True)
def _release_workers():
    """Shard workers of this process and the shared local cluster go when the module is done."""
    yield
    conformance.close_dask()
    reset_worker_states()


@pytest.fixture(params=IMPLEMENTATIONS, ids=[impl.name for impl in IMPLEMENTATIONS])
def impl(request) -> Implementation:
    reason = request.param.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return request.param


def _check(impl: Implementation, engine: Engine, source: str) -> None:
    if impl.check is not None:
        impl.check(engine, source)


def _examples(impl: Implementation, share: float = 1.0):
    return settings(max_examples=max(1, int(impl.examples * share)), deadline=None, suppress_health_check=SLOW)


# --- the golden sets ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")
@pytest.mark.parametrize("name", SETS)
def test_golden_sets(impl, name):
    """Every stored query: the selection, and the match of the stored selection."""
    project = open_project(GOLDEN / name / "project")
    engine = Engine(project, backend=impl.make(project))
    for q in golden_queries(name):
        sel = engine.select(q["source"], q["start"], q["end"], q["threshold"], q["left"], q["right"],
                            sequences=q["sequences"])
        assert sel.cells == q["expected_cells"], q
        assert rows(engine, q["source"], conformance.golden_query_args(q)) == q["expected"], q
        _check(impl, engine, q["source"])


# --- against the oracle -------------------------------------------------------------------------------------
def test_select_match_and_context_equal_the_oracle(impl):
    """Small sources (ties, equal runs at several levels, thresholds at stored values, sequences, margins
    at the first and last step, float16 and float32, both transforms) against the brute force."""

    @_examples(impl)
    @given(conformance.oracle_scenarios(), st.data())
    def check(scenario, data):
        raw, transform, starts, threshold = scenario
        T, D = raw.shape
        use_sequences = data.draw(st.booleans())
        seq_starts = starts if use_sequences else []
        engine, source = impl.engine(raw, transform, starts)
        on = oracle.on_matrix(raw, threshold, transform)

        s = data.draw(st.integers(0, T - 1))
        lo, hi = oracle.sequence_of(s, seq_starts, T)
        e = data.draw(st.integers(s, hi - 1))
        left, right = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
        sel = engine.select(source, s, e, threshold, left, right, sequences=use_sequences)
        assert sel.cells == oracle.select(on, s, e, left, right, seq_starts)

        q = dict(cells=data.draw(st.lists(st.integers(0, D - 1), min_size=1, max_size=D, unique=True)),
                 threshold=threshold, left=left, right=right, top=data.draw(st.integers(1, 12)),
                 min_length=data.draw(st.integers(1, 3)),
                 phrase_length=data.draw(st.sampled_from([0, 0, 1, 2, 3])), distinct=data.draw(st.booleans()),
                 sequences=use_sequences)
        want = oracle.match(on, q["cells"], left, right, seq_starts, top=q["top"], min_length=q["min_length"],
                            phrase_length=q["phrase_length"], distinct=q["distinct"])
        assert rows(engine, source, q) == want
        _check(impl, engine, source)
        # Once the layout exists, select and context read from it: same answers.
        assert engine.select(source, s, e, threshold, left, right, sequences=use_sequences).cells == sel.cells
        ctx = engine.context(source, 0, T, q["cells"], threshold)
        assert np.array_equal(ctx.counts, on[:, q["cells"]].sum(axis=1))
        values = np.tanh(raw.astype(np.float32)) if transform == "tanh" else raw.astype(np.float32)
        np.testing.assert_array_equal(ctx.values, values)

    check()


def test_per_cell_scales_equal_the_oracle(impl):
    """Thresholds on a z-score or a quantile (one key per cell): on-mask, select, match and n(t) against
    the brute force on ``z >= θ``, whether the implementation runs per-cell keys or the engine hands the
    query to NumPy."""

    @_examples(impl, 0.5)
    @given(conformance.scaled_scenarios(), st.data())
    def check(scenario, data):
        raw, transform, starts, scale, threshold = scenario
        T, D = raw.shape
        engine, source = impl.engine(raw, transform, starts)
        on = oracle.scaled_on_matrix(raw, threshold, transform, scale)
        assert np.array_equal(engine.on_mask(source, 0, T, threshold, scale), on)
        s = data.draw(st.integers(0, T - 1))
        lo, hi = oracle.sequence_of(s, starts, T)
        e = data.draw(st.integers(s, hi - 1))
        left, right = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))
        sel = engine.select(source, s, e, threshold, left, right, scale=scale)
        assert sel.cells == oracle.select(on, s, e, left, right, starts) and sel.scale == scale
        cells = data.draw(st.lists(st.integers(0, D - 1), min_size=1, max_size=D, unique=True))
        q = dict(cells=cells, threshold=threshold, left=left, right=right, top=10, min_length=2,
                 phrase_length=0, distinct=True, sequences=True, scale=scale)
        assert rows(engine, source, q) == oracle.match(on, cells, left, right, starts, top=10)
        assert np.array_equal(engine.counts(source, cells, threshold, 0, T, scale=scale),
                              on[:, sorted(cells)].sum(axis=1))

    check()


# --- against the NumPy backend --------------------------------------------------------------------------------
COMPARED = [impl for impl in IMPLEMENTATIONS if not impl.reference]


@pytest.fixture(params=COMPARED, ids=[impl.name for impl in COMPARED])
def compared(request) -> Implementation:
    """An implementation other than the reference (NumPy), for the comparisons with it."""
    reason = request.param.unavailable()
    if reason is not None:
        pytest.skip(reason)
    return request.param


def _numpy_rows(raw, transform, starts, q) -> list[dict]:
    return rows(Engine(conformance.project_from_array(raw, transform, starts), backend="numpy"),
                conformance.SOURCE, q)


def test_larger_random_inputs_equal_numpy(compared):
    """Up to 300 x 80, float16/32/64, up to 40 selected cells (packed rows of two words)."""
    impl = compared

    @_examples(impl, 0.5)
    @given(conformance.parity_scenarios())
    def check(scenario):
        raw, transform, starts, q = scenario
        engine, source = impl.engine(raw, transform, starts)
        assert rows(engine, source, q) == _numpy_rows(raw, transform, starts, q)
        _check(impl, engine, source)

    check()


def test_repeated_rows_and_wide_margins_equal_numpy(compared):
    """Long runs from repeated rows, D = 66, margins of 40 steps (wider than a shard), phrase lengths."""
    impl = compared
    for seed in range(max(5, impl.examples // 4)):
        raw, transform, starts, q = conformance.random_case(np.random.default_rng(seed))
        engine, source = impl.engine(raw, transform, starts)
        assert rows(engine, source, q) == _numpy_rows(raw, transform, starts, q), seed


def test_lstm_like_states_equal_numpy(compared):
    """Larger, LSTM-like data: long runs, many candidates, D not a multiple of 32."""
    impl = compared
    rng = np.random.default_rng(7)
    raw = conformance.ar1_states(rng, 6000, 70)
    starts = np.sort(rng.choice(np.arange(1, 6000), 40, replace=False)).tolist()
    engine, source = impl.engine(raw, "tanh", starts)
    cpu = Engine(conformance.project_from_array(raw, "tanh", starts), backend="numpy")
    for i in range(6):
        q = {"cells": sorted(rng.choice(70, int(rng.integers(1, 12)), replace=False).tolist()),
             "threshold": float(rng.choice([0.0, 0.3, 0.5])), "left": int(rng.integers(0, 3)),
             "right": int(rng.integers(0, 3)), "top": 50, "min_length": 2, "phrase_length": 0,
             "distinct": bool(i % 2), "sequences": True}
        got = rows(engine, source, q)
        assert got == rows(cpu, conformance.SOURCE, q) and got
    _check(impl, engine, source)
