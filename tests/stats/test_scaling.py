"""Per-cell scaling (z-score, quantile): select and match on the normalised values equal the brute-force
oracle run on ``z >= θ`` computed elementwise in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import Engine, scaling
from gpu_matcher.errors import ProjectError
from tests.engine import oracle
from gpu_matcher import stats
from tests.engine.test_properties import project_from_array
from tests.stats.test_stats import tiny_project

POOL = [-3.0, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0, 6.0, float("nan"), float("inf"), -float("inf")]


def brute_on(engine, raw, transform, threshold, scale) -> np.ndarray:
    T, D = raw.shape
    x = raw.astype(np.float64)
    v = np.tanh(x) if transform == "tanh" else x
    on = np.zeros((T, D), dtype=bool)
    for c in range(D):
        col = v[:, c]
        good = col[~np.isnan(col)]
        for t in range(T):
            if math.isnan(col[t]):
                continue
            if scale == "zscore":
                mu = float(good.mean())
                sd = float(np.sqrt(np.mean((good - mu) ** 2)))
                params = scaling.cell_scale(engine, "f::states", "zscore")
                assert params.center[c] == mu and params.spread[c] == sd
                z = 0.0 if sd <= 0 else (col[t] - mu) / sd
            else:
                stored = x[:, c][~np.isnan(x[:, c])]
                z = np.count_nonzero(stored <= x[t, c]) / stored.size
            on[t, c] = z >= threshold
    return on


@st.composite
def scenarios(draw):
    T = draw(st.integers(2, 30))
    D = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(["float16", "float32"]))
    raw = np.asarray(draw(st.lists(st.one_of(st.sampled_from(POOL), st.floats(-4, 4, width=32)),
                                   min_size=T * D, max_size=T * D)), dtype=np.float64).reshape(T, D).astype(dtype)
    # No infinities in a z-score column (they make the mean infinite); quantiles take anything.
    scale = draw(st.sampled_from(["zscore", "quantile"]))
    if scale == "zscore":
        raw[np.isinf(raw)] = 1.5
    transform = draw(st.sampled_from(["tanh", "none"]))
    starts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=3)))
    if scale == "zscore":
        threshold = draw(st.sampled_from([-1.5, -0.5, 0.0, 0.3, 1.0, 2.0]) | st.floats(-3, 3))
    else:
        threshold = draw(st.sampled_from([0.0, 0.1, 0.5, 0.75, 1.0, 1.2]) | st.floats(-0.1, 1.1))
    return raw, transform, starts, scale, float(threshold)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_scaled_select_and_match_equal_the_oracle(scenario, data):
    raw, transform, starts, scale, threshold = scenario
    T, D = raw.shape
    engine = Engine(project_from_array(raw, transform, starts), backend="numpy")
    on = brute_on(engine, raw, transform, threshold, scale)
    assert np.array_equal(scaling.on_mask(engine, "f::states", 0, T, threshold, scale), on)
    s = data.draw(st.integers(0, T - 1))
    lo, hi = oracle.sequence_of(s, starts, T)
    e = data.draw(st.integers(s, hi - 1))
    left, right = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))
    sel = scaling.select(engine, "f::states", s, e, threshold, left, right, scale=scale)
    assert sel.cells == oracle.select(on, s, e, left, right, starts)
    cells = data.draw(st.lists(st.integers(0, D - 1), min_size=1, max_size=D, unique=True))
    got = scaling.match(engine, "f::states", cells, threshold, left, right, top=10, scale=scale)
    assert [m.as_dict() for m in got] == oracle.match(on, cells, left, right, starts, top=10)


def test_scale_none_is_the_plain_engine_and_unknown_scales_fail():
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 2, (80, 5)).astype(np.float32)
    engine = Engine(project_from_array(raw, "none", [40]), backend="numpy")
    assert scaling.select(engine, "f::states", 3, 5, 0.2, scale="none") == engine.select("f::states", 3, 5, 0.2)
    keys = scaling.key_thresholds(engine, "f::states", 0.2, "none")
    assert [m.as_dict() for m in scaling.match(engine, "f::states", [0, 1], 0.2, scale="none")] == \
        [m.as_dict() for m in engine.match("f::states", [0, 1], 0.2)]
    assert keys.shape == (5,)
    with pytest.raises(ProjectError, match="unknown scale 'minmax'"):
        scaling.key_thresholds(engine, "f::states", 0.2, "minmax")


def test_cli_match_carries_the_scale(capsys):
    import json

    from gpu_matcher import open_project
    from gpu_matcher.cli import main
    from tests.conftest import GOLDEN

    project_dir = GOLDEN / "basic" / "project"
    if not project_dir.is_dir():
        pytest.skip("golden sets not present")
    engine = Engine(open_project(project_dir), backend="numpy")
    source = engine.project.default_source
    for scale, threshold in (("zscore", "0.5"), ("quantile", "0.6")):
        assert main(["match", str(project_dir), "--threshold", threshold, "--start", "5", "--end", "6",
                     "--scale", scale, "--backend", "numpy", "--top", "5"]) == 0
        got = json.loads(capsys.readouterr().out)
        sel = scaling.select(engine, source, 5, 6, float(threshold), scale=scale)
        assert got["cells"] == sel.cells
        if sel.cells:
            want = scaling.match(engine, source, sel.cells, float(threshold), top=5, scale=scale)
            assert got["matches"] == [m.as_dict() for m in want]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_scaled_detector_and_suggest_equal_brute_force(scenario, data):
    raw, transform, starts, scale, threshold = scenario
    T, D = raw.shape
    labels = np.asarray(data.draw(st.lists(st.integers(0, 2), min_size=T, max_size=T)), dtype=np.int32)
    engine = Engine(tiny_project(raw, labels, starts, transform), backend="numpy")
    on = brute_on(engine, raw, transform, threshold, scale)
    cells = sorted(data.draw(st.sets(st.integers(0, D - 1), min_size=1)))
    label = int(labels[0])
    det = stats.detector(engine, "f::states", cells, threshold, "tag", label, scale=scale)
    pred, pos = on[:, cells].all(axis=1), labels == label
    assert (det.predicted, det.true_positives, det.positives) == (int(pred.sum()), int((pred & pos).sum()),
                                                                  int(pos.sum()))
    got = stats.suggest_cells(engine, "f::states", threshold, track="tag", label=label, top=D, scale=scale)
    assert {g.cell: g.inside_on for g in got} == {c: int(on[pos, c].sum()) for c in range(D)}
    assert {g.cell: g.outside_on for g in got} == {c: int(on[~pos, c].sum()) for c in range(D)}
    pp = stats.phrase_patterns(engine, "f::states", "tag", threshold, scale=scale)
    for s, e, pat in zip(pp.starts.tolist(), pp.ends.tolist(), pp.patterns):
        assert np.flatnonzero(pat).tolist() == scaling.select(engine, "f::states", s, e, threshold,
                                                               scale=scale).cells
