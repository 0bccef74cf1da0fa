"""Property tests of the exact key machinery and of the NumPy search's batched verification, against
the brute-force oracle. (Select, match and context against the oracle on every implementation:
``test_conformance.py``; its scenarios are ``conformance.oracle_scenarios``.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from gpu_matcher import Engine
from tests.engine import oracle
from tests.engine.conformance import oracle_scenarios as scenarios, project_from_array

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
            assert [m.as_dict() for m in got] == want, (trial, top, distinct)
