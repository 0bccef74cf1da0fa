"""Per-cell scaling (z-score, quantile): the per-cell parameters and keys, the scale through the CLI, the
statistics and ``compare``, and the engine's NumPy fallback for backends that declare no per-cell keys.
(Select and match on ``z >= θ`` against the oracle, on every implementation: ``test_conformance.py``.)"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import Engine, Threshold, stats
from gpu_matcher.errors import ProjectError
from gpu_matcher.source import float_keys
from tests.engine import oracle
from tests.engine.conformance import project_from_array, scaled_scenarios
from tests.stats.test_stats import tiny_project

def brute_on(engine, raw, transform, threshold, scale) -> np.ndarray:
    """``oracle.scaled_on_matrix``, after checking the engine's per-cell parameters against the spec's."""
    if scale == "zscore":
        params = engine.cell_scale(engine.project.default_source, "zscore")
        v = raw.astype(np.float64)
        v = np.tanh(v) if transform == "tanh" else v
        for c in range(raw.shape[1]):
            good = v[:, c][~np.isnan(v[:, c])]
            if good.size:
                mu = float(good.mean())
                assert params.center[c] == mu and params.spread[c] == float(np.sqrt(np.mean((good - mu) ** 2)))
    return oracle.scaled_on_matrix(raw, threshold, transform, scale)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scaled_scenarios())
def test_cell_scale_is_the_population_mean_and_std(scenario):
    """Per-cell parameters as the spec defines them (NaNs ignored), and the key thresholds that follow
    give the oracle's on-mask (select and match on every implementation: ``test_conformance.py``)."""
    raw, transform, starts, scale, threshold = scenario
    engine = Engine(project_from_array(raw, transform, starts), backend="numpy")
    on = brute_on(engine, raw, transform, threshold, scale)
    assert np.array_equal(engine.on_mask("f::states", 0, raw.shape[0], threshold, scale), on)
    keys = engine.key_thresholds("f::states", threshold, scale)
    assert keys.shape == (raw.shape[1],)
    assert np.array_equal(float_keys(raw) >= keys, on)


def test_scale_none_is_the_plain_engine_and_unknown_scales_fail():
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 2, (80, 5)).astype(np.float32)
    engine = Engine(project_from_array(raw, "none", [40]), backend="numpy")
    assert engine.select("f::states", 3, 5, 0.2, scale="none") == engine.select("f::states", 3, 5, 0.2)
    assert engine.select("f::states", 3, 5, Threshold(0.2)) == engine.select("f::states", 3, 5, 0.2)
    keys = engine.key_thresholds("f::states", 0.2, "none")
    assert [m.as_dict() for m in engine.match("f::states", [0, 1], Threshold(0.2))] == \
        [m.as_dict() for m in engine.match("f::states", [0, 1], 0.2)]
    assert keys.shape == (5,) and (keys == engine.project.source("f::states").key_threshold(0.2)).all()
    with pytest.raises(ProjectError, match="unknown scale 'minmax'"):
        engine.key_thresholds("f::states", 0.2, "minmax")
    with pytest.raises(ProjectError, match="unknown scale 'minmax'"):
        engine.select("f::states", 3, 5, 0.2, scale="minmax")
    with pytest.raises(ProjectError, match="is on scale 'zscore'"):
        engine.match("f::states", [0], Threshold(0.2, "zscore"), scale="quantile")


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
        sel = engine.select(source, 5, 6, float(threshold), scale=scale)
        assert got["cells"] == sel.cells
        if sel.cells:
            want = engine.match(source, sel.cells, float(threshold), top=5, scale=scale)
            assert got["matches"] == [m.as_dict() for m in want]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scaled_scenarios(), st.data())
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
        assert np.flatnonzero(pat).tolist() == engine.select("f::states", s, e, threshold, scale=scale).cells


@pytest.mark.parametrize("scale, threshold", [("zscore", 0.8), ("quantile", 0.7)])
def test_compare_reads_the_threshold_on_the_scale(scale, threshold):
    """``stats.compare`` selects and matches on the scaled value in both sources (it once ignored it)."""
    rng = np.random.default_rng(11)
    T, D = 240, 6
    # Cells with very different offsets and spreads: "on" on the raw value and on z pick other cells.
    raw = (rng.normal(0, 1, (T, D)) * np.array([0.2, 1, 3, 0.5, 2, 1]) + np.array([2, -1, 0, 1, -2, 0.5]))
    raw = raw.astype(np.float32)
    labels = rng.integers(0, 3, T).astype(np.int32)
    ea = Engine(tiny_project(raw, labels, [120], "none"), backend="numpy")
    eb = Engine(tiny_project(raw[:, ::-1].copy(), labels, [120], "none"), backend="numpy")
    start, end = 30, 31
    got = stats.compare(ea, "f::states", eb, "f::states", start, end, threshold, top=20, scale=scale)
    plain = stats.compare(ea, "f::states", eb, "f::states", start, end, threshold, top=20)
    for side, engine, data in ((got.a, ea, raw), (got.b, eb, raw[:, ::-1])):
        on = brute_on(engine, data, "none", threshold, scale)
        cells = oracle.select(on, start, end, 0, 0, [120])
        assert side["cells"] == cells
        assert side["matches"] == (oracle.match(on, cells, 0, 0, [120], top=20) if cells else [])
    assert (got.a["cells"], got.b["cells"]) != (plain.a["cells"], plain.b["cells"])


def test_a_backend_without_per_cell_keys_gets_numpy_by_its_declaration(caplog):
    """The engine reads ``capabilities``, never the name: a backend called "numpy" that declares no
    per-cell keys is never handed one, and the answer is the NumPy backend's."""
    from gpu_matcher.backends.numpy import NumpyBackend

    class OneKeyOnly(NumpyBackend):
        capabilities = frozenset()

        def match(self, layout, query):
            assert not query.per_cell, "a per-cell query reached a backend that does not declare it"
            return super().match(layout, query)

    rng = np.random.default_rng(3)
    raw = rng.normal(0, 2, (120, 5)).astype(np.float32)
    plain = Engine(project_from_array(raw, "none", [60]), backend="numpy")
    engine = Engine(project_from_array(raw, "none", [60]), backend=OneKeyOnly())
    with caplog.at_level("INFO", logger="gpu_matcher"):
        for _ in range(2):
            got = engine.match("f::states", [0, 2, 3], 0.5, top=10, scale="zscore")
    assert [m.as_dict() for m in got] == \
        [m.as_dict() for m in plain.match("f::states", [0, 2, 3], 0.5, top=10, scale="zscore")]
    assert sum("per-cell thresholds run on the NumPy backend" in r.message for r in caplog.records) == 1
    assert engine.match("f::states", [0, 2], 0.5) == plain.match("f::states", [0, 2], 0.5)   # one key: its own


def test_cell_scales_and_keys_are_computed_once_per_engine_from_many_threads(monkeypatch):
    """The engine owns its caches: many threads asking for the same scaled keys get equal answers, the
    per-cell parameters are computed once, and only the last few thresholds are kept."""
    from concurrent.futures import ThreadPoolExecutor

    from gpu_matcher import engine as engine_module, scaling

    calls = []
    real = scaling.cell_scale
    monkeypatch.setattr(scaling, "cell_scale", lambda src: calls.append(src.name) or real(src))
    rng = np.random.default_rng(5)
    engine = Engine(project_from_array(rng.normal(0, 2, (300, 7)).astype(np.float32), "none", [100]),
                    backend="numpy")
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: engine.key_thresholds("f::states", 0.5, "zscore"), range(32)))
    assert calls == ["f::states"]
    assert all(np.array_equal(g, got[0]) for g in got)
    got[0][:] = 0                                            # a caller's copy, not the cache
    assert not np.array_equal(engine.key_thresholds("f::states", 0.5, "zscore"), got[0])
    cache = engine_module.BoundedCache(3)
    for i in range(5):
        assert cache.get(i, lambda: i * i) == i * i
    assert len(cache) == 3 and cache.get(4, lambda: -1) == 16 and cache.get(0, lambda: -1) == -1
