"""Hypothesis statistics against brute force: enrichment, detector, suggested cells, phrase patterns, PCA,
compare. Small in-memory projects (random, with ties and sequences) and the golden projects."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import Engine
from gpu_matcher import stats, targets
from gpu_matcher.errors import ProjectError
from gpu_matcher.project import MetaTrack, Project, open_project
from gpu_matcher.source import Source
from tests.conftest import GOLDEN
from tests.engine import oracle

_counter = itertools.count()
POOL = [-3.0, -1.0, -0.5, 0.0, 0.25, 0.3, 0.5, 1.0, 2.0]


def tiny_project(raw: np.ndarray, labels: np.ndarray, starts: list[int], transform: str = "tanh") -> Project:
    """An in-memory project with one source and one discrete track ``tag`` (labels a, b, c, ...)."""
    f = h5py.File(f"stats-{next(_counter)}.h5", "w", driver="core", backing_store=False)
    src = Source(name="f::states", dataset=f.create_dataset("states", data=raw), file_path=Path("/nonexistent"),
                 transform=transform)
    names = {v: "abcdefgh"[v] for v in range(int(labels.max()) + 1)} if labels.size else {}
    track = MetaTrack(name="tag", kind="discrete", dataset=f.create_dataset("tag", data=labels), labels=names)
    return Project(id="p", path=Path("."), name="p", description="p", T=raw.shape[0], sources={src.name: src},
                   word_ids_dataset=None, dictionary={}, meta={"tag": track},
                   sequence_starts=np.asarray(sorted(starts), dtype=np.int64) if starts else None)


@st.composite
def scenarios(draw):
    T = draw(st.integers(2, 40))
    D = draw(st.integers(1, 7))
    raw = np.asarray(draw(st.lists(st.sampled_from(POOL), min_size=T * D, max_size=T * D)),
                     dtype=np.float32).reshape(T, D)
    labels = np.asarray(draw(st.lists(st.integers(0, 2), min_size=T, max_size=T)), dtype=np.int32)
    starts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=3)))
    transform = draw(st.sampled_from(["tanh", "none"]))
    threshold = draw(st.sampled_from([-0.5, 0.0, 0.25, 0.3, 0.5, math.tanh(0.5), 0.9]))
    return raw, labels, starts, transform, threshold


def hypergeom_sf_exact(k, N, K, n) -> float:
    total = sum(Fraction(math.comb(K, i) * math.comb(N - K, n - i)) for i in range(k, min(n, K) + 1))
    return float(total / math.comb(N, n))


@pytest.mark.parametrize("N", [1, 7, 30, 200])
def test_hypergeometric_tail_equals_exact_sum(N):
    rng = np.random.default_rng(N)
    for _ in range(60):
        K, n = int(rng.integers(0, N + 1)), int(rng.integers(0, N + 1))
        for k in sorted({0, 1, n // 2, (n * K) // max(1, N), min(n, K), min(n, K) + 1}):
            assert stats.hypergeom_sf(k, N, K, n) == pytest.approx(hypergeom_sf_exact(k, N, K, n),
                                                                   rel=1e-9, abs=1e-300)


def test_hypergeometric_tiny_p_values_stay_positive():
    p = stats.hypergeom_sf(400, 40000, 1000, 500)
    assert 0.0 < p < 1e-300 or p == pytest.approx(hypergeom_sf_exact(400, 40000, 1000, 500), rel=1e-6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_statistics_equal_brute_force(scenario, data):
    raw, labels, starts, transform, threshold = scenario
    T, D = raw.shape
    engine = Engine(tiny_project(raw, labels, starts, transform), backend="numpy")
    on = oracle.on_matrix(raw, threshold, transform)
    label = data.draw(st.integers(0, 2))
    pos = labels == label
    chunk = data.draw(st.sampled_from([1, 3, 1 << 22]))       # tracks read in chunks: chunk edges too
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stats, "TARGET_CHUNK", chunk)
        mp.setattr(targets, "TARGET_CHUNK", chunk)
        _statistics_equal_brute_force(engine, raw, labels, starts, transform, threshold, on, label, pos, data)


def _statistics_equal_brute_force(engine, raw, labels, starts, transform, threshold, on, label, pos, data):
    T, D = raw.shape

    # enrichment of random (possibly overlapping) spans
    spans = []
    for _ in range(data.draw(st.integers(0, 4))):
        a = data.draw(st.integers(0, T - 1))
        spans.append((a, data.draw(st.integers(a, T - 1))))
    mask = np.zeros(T, dtype=bool)
    for a, b in spans:
        mask[a:b + 1] = True
    enr = stats.enrichment(engine, "f::states", spans, "tag")
    assert enr.matched_steps == int(mask.sum()) and enr.total_steps == T
    for row in enr.labels:
        k, K, n = int((mask & (labels == row.value)).sum()), int((labels == row.value).sum()), int(mask.sum())
        assert (row.matched, row.corpus) == (k, K)
        assert row.ratio == (pytest.approx(k * T / (n * K)) if n and K else 0.0)
        assert row.p_value == pytest.approx(hypergeom_sf_exact(k, T, K, n), rel=1e-9, abs=1e-300)

    # detector and its curve
    cells = sorted(data.draw(st.sets(st.integers(0, D - 1), min_size=1)))
    thresholds = [-0.5, 0.0, 0.25, threshold, 0.9]
    curve = stats.detector_curve(engine, "f::states", cells, thresholds, "tag", label)
    for th, point in zip(thresholds, curve.points):
        pred = oracle.on_matrix(raw, th, transform)[:, cells].all(axis=1)
        tp = int((pred & pos).sum())
        assert (point.predicted, point.positives, point.true_positives) == (int(pred.sum()), int(pos.sum()), tp)
        want_f1 = 2 * tp / (pred.sum() + pos.sum()) if pred.sum() + pos.sum() else 0.0
        assert point.f1 == pytest.approx(want_f1)
    best = max((p.f1 for p in curve.points), default=0.0)
    assert (curve.best is None) == (best == 0) and (curve.best is None or curve.best.f1 == best)
    single = stats.detector(engine, "f::states", cells, threshold, "tag", stats.track_values(engine, "tag")[0])
    pred = on[:, cells].all(axis=1)
    assert single.true_positives == int((pred & (labels == labels[0])).sum())

    # suggested cells, for a range and for a label
    a = data.draw(st.integers(0, T - 1))
    b = data.draw(st.integers(a, T - 1))
    target = np.zeros(T, dtype=bool)
    target[a:b + 1] = True
    for kwargs, tgt in (({"start": a, "end": b}, target), ({"track": "tag", "label": label}, pos)):
        if not tgt.any():
            with pytest.raises(ProjectError):
                stats.suggest_cells(engine, "f::states", threshold, **kwargs)
            continue
        got = stats.suggest_cells(engine, "f::states", threshold, top=D, **kwargs)
        n_in, n_out = int(tgt.sum()), int((~tgt).sum())
        score = [Fraction(int(on[tgt, c].sum()), n_in) - (Fraction(int(on[~tgt, c].sum()), n_out) if n_out else 0)
                 for c in range(D)]
        assert [g.cell for g in got] == sorted(range(D), key=lambda c: (-score[c], c))
        assert all(g.inside_on == int(on[tgt, g.cell].sum()) for g in got)

    # phrase patterns: S of every label span equals the engine's select
    left, right = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))
    pp = stats.phrase_patterns(engine, "f::states", "tag", threshold, left=left, right=right)
    assert pp.starts.size > 0 and pp.ends[-1] == T - 1 and pp.starts[0] == 0
    assert np.array_equal(pp.starts[1:], pp.ends[:-1] + 1)             # every step in exactly one span
    cut = (pp.values[1:] != pp.values[:-1]) | np.isin(pp.starts[1:], starts)
    assert cut.all()                                                    # maximal: cut only where it must
    for s, e, v, pat in zip(pp.starts, pp.ends, pp.values, pp.patterns):
        assert (labels[s:e + 1] == v).all()
        want = engine.select("f::states", int(s), int(e), threshold, left, right).cells
        assert np.flatnonzero(pat).tolist() == want


def test_pca_equals_svd_of_centred_data():
    rng = np.random.default_rng(3)
    X = rng.random((500, 12)) < rng.random(12)
    proj = stats.pca(X, k=3)
    Xc = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    assert np.allclose(proj.explained, (s[:3] ** 2) / (s ** 2).sum())
    for i in range(3):
        assert np.allclose(np.abs(proj.components[i] @ vt[i]), 1.0)
        assert np.allclose(proj.coords[:, i], Xc @ proj.components[i])
        assert proj.components[i][np.argmax(np.abs(proj.components[i]))] > 0


def test_compare_two_sources_brute_force():
    rng = np.random.default_rng(7)
    raw = rng.choice(np.asarray(POOL, dtype=np.float32), size=(300, 6))
    labels = rng.integers(0, 3, 300).astype(np.int32)
    project = tiny_project(raw, labels, [100, 200])
    other = tiny_project(raw[:, ::-1].copy(), labels, [100, 200])
    ea, eb = Engine(project, backend="numpy"), Engine(other, backend="numpy")
    start, end = 10, 11
    cmp = stats.compare(ea, "f::states", eb, "f::states", start, end, 0.3, top=20, track="tag")
    masks = []
    for e in (ea, eb):
        cells = e.select("f::states", start, end, 0.3).cells
        found = e.match("f::states", cells, 0.3, top=20) if cells else []
        m = np.zeros(300, dtype=bool)
        for x in found:
            m[x.start:x.end + 1] = True
        masks.append((cells, found, m))
    assert cmp.a["cells"] == masks[0][0] and cmp.b["cells"] == masks[1][0]
    assert cmp.overlap_steps == int((masks[0][2] & masks[1][2]).sum())
    assert cmp.shared_matches == sum(1 for x in masks[0][1] if masks[1][2][x.start:x.end + 1].any())
    assert {r["value"] for r in cmp.enrichment} == {0, 1, 2}
    with pytest.raises(ProjectError, match="timelines differ"):
        stats.compare(ea, "f::states", Engine(tiny_project(raw[:50], labels[:50], [])), "f::states", 1, 2, 0.3)


@pytest.mark.skipif(not (GOLDEN / "basic" / "project").is_dir(), reason="golden sets not present")
@pytest.mark.parametrize("name", ["basic", "wide"])
def test_golden_enrichment_and_detector(name):
    project = open_project(GOLDEN / name / "project")
    engine = Engine(project, backend="numpy")
    source = project.default_source
    src = project.source(source)
    pos = np.asarray(project.meta["pos"].values(0, project.T)).astype(np.int64)
    matches = engine.match(source, [0, 1, 2], 0.3, top=30)
    enr = stats.enrichment(engine, source, matches, "pos")
    assert sum(r.matched for r in enr.labels) == enr.matched_steps
    assert sum(r.corpus for r in enr.labels) == project.T
    label = int(pos[0])
    det = stats.detector(engine, source, [0, 1, 2], 0.3, "pos", project.meta["pos"].label(label))
    pred = src.on(0, project.T, 0.3)[:, [0, 1, 2]].all(axis=1)
    assert det.true_positives == int((pred & (pos == label)).sum()) and det.predicted == int(pred.sum())
    with pytest.raises(ProjectError, match="no label"):
        stats.detector(engine, source, [0], 0.3, "pos", "no-such-label")
    with pytest.raises(ProjectError, match="unknown meta track"):
        stats.enrichment(engine, source, matches, "nope")
