"""``gpu_matcher.hypotheses`` against brute force: "at least m of k on" for every m and threshold (m = k is
``stats.detector_curve`` exactly), the unit profile's contexts, histogram and token rates, per-cell
scales included; and ``lstmvis stats --at-least/--curve`` and ``lstmvis unit``."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import Engine, hypotheses, open_project, stats
from gpu_matcher.backends import numpy as numpy_backend
from gpu_matcher.cli import main
from gpu_matcher.errors import ProjectError
from gpu_matcher.project import MetaTrack, Project
from gpu_matcher.source import Source, transform_values
from tests.conftest import GOLDEN
from tests.engine import oracle

_counter = itertools.count()
POOL = [-3.0, -1.0, -0.5, 0.0, 0.25, 0.3, 0.5, 1.0, 2.0]
THRESHOLDS = {"none": [-2.0, -0.5, 0.0, 0.25, 0.3, 0.5, math.tanh(0.5), 0.9, 1.0],
              "zscore": [-1.5, -0.5, 0.0, 0.3, 1.0, 2.0],
              "quantile": [0.0, 0.1, 0.5, 0.75, 1.0, 1.2]}
SOURCE = "f::states"


def word_project(raw: np.ndarray, labels: np.ndarray, words: np.ndarray, starts: list[int],
                 transform: str) -> Project:
    """An in-memory project: one source, a discrete track ``tag`` and a word timeline (ids 0..)."""
    f = h5py.File(f"hyp-{next(_counter)}.h5", "w", driver="core", backing_store=False)
    src = Source(name=SOURCE, dataset=f.create_dataset("states", data=raw), file_path=Path("/nonexistent"),
                 transform=transform)
    track = MetaTrack(name="tag", kind="discrete", dataset=f.create_dataset("tag", data=labels),
                      labels={v: "abc"[v] for v in range(3)})
    return Project(id="p", path=Path("."), name="p", description="p", T=raw.shape[0], sources={SOURCE: src},
                   word_ids_dataset=f.create_dataset("words", data=words),
                   dictionary={i: f"w{i}" for i in range(0, 6, 2)},          # odd ids: not in the dictionary
                   meta={"tag": track}, sequence_starts=np.asarray(starts, dtype=np.int64) if starts else None)


@st.composite
def scenarios(draw):
    T = draw(st.integers(2, 40))
    D = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(["float16", "float32", "float64"]))
    scale = draw(st.sampled_from(["none", "zscore", "quantile"]))
    pool = POOL + [float("nan")] + ([float("inf"), -float("inf")] if scale != "zscore" else [])
    raw = np.asarray(draw(st.lists(st.one_of(st.sampled_from(pool), st.floats(-4, 4, width=32)),
                                   min_size=T * D, max_size=T * D)), dtype=np.float64).reshape(T, D).astype(dtype)
    labels = np.asarray(draw(st.lists(st.integers(0, 2), min_size=T, max_size=T)), dtype=np.int32)
    words = np.asarray(draw(st.lists(st.integers(0, 5), min_size=T, max_size=T)), dtype=np.int32)
    starts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=3)))
    transform = draw(st.sampled_from(["tanh", "none"]))
    thresholds = draw(st.lists(st.sampled_from(THRESHOLDS[scale]), min_size=1, max_size=5))   # any order, repeats
    return raw, labels, words, starts, transform, scale, thresholds


def brute_on(raw, threshold, transform, scale) -> np.ndarray:
    if scale == "none":
        return oracle.on_matrix(raw, threshold, transform)
    return oracle.scaled_on_matrix(raw, threshold, transform, scale)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_at_least_m_of_k_equals_brute_force(scenario, data):
    raw, labels, words, starts, transform, scale, thresholds = scenario
    T, D = raw.shape
    engine = Engine(word_project(raw, labels, words, starts, transform), backend="numpy")
    cells = sorted(data.draw(st.sets(st.integers(0, D - 1), min_size=1)))
    label = data.draw(st.integers(0, 2))
    pos = labels == label
    with pytest.MonkeyPatch.context() as mp:          # a few rows per block: block edges are exercised too
        mp.setattr(numpy_backend, "BLOCK_BYTES", data.draw(st.sampled_from([1, 3 * D * raw.itemsize, 1 << 20])))
        mp.setattr(numpy_backend, "LEVELS_BYTES", data.draw(st.sampled_from([0, 1 << 20])))   # both paths
        grid = hypotheses.at_least_grid(engine, SOURCE, cells, thresholds, "tag", label, scale)
    k = len(cells)
    assert grid.k == k and grid.positives == int(pos.sum())
    for j, th in enumerate(thresholds):
        n = brute_on(raw, th, transform, scale)[:, cells].sum(axis=1)
        for m in range(1, k + 1):
            pred = n >= m
            tp = int((pred & pos).sum())
            got = grid.point(m, j)
            assert (got.m, got.k) == (m, k)
            assert got.detection == stats.scores(th, int(pred.sum()), int(pos.sum()), tp)
            want_f1 = 2 * tp / (pred.sum() + pos.sum()) if pred.sum() + pos.sum() else 0.0
            assert got.detection.f1 == pytest.approx(want_f1, abs=0)
        assert [p.detection for p in grid.over_m(j)] == [grid.point(m, j).detection for m in range(1, k + 1)]
    # m = k is today's "every cell of S on", exactly, curve and best
    assert grid.curve(k) == stats.detector_curve(engine, SOURCE, cells, thresholds, "tag", label, scale)
    # the grid's best: the highest F1, then the lowest threshold, then the largest m
    everything = [grid.point(m, j) for m in range(1, k + 1) for j in range(len(thresholds))]
    top = max((p.detection.f1 for p in everything), default=0.0)
    best = grid.best()
    if top == 0:
        assert best is None
    else:
        want = max((p for p in everything if p.detection.f1 == top),
                   key=lambda p: (-p.detection.threshold, p.m))
        assert best is not None and (best.m, best.detection) == (want.m, want.detection)
    one = hypotheses.at_least_detector(engine, SOURCE, cells, 1, thresholds[0], "tag", label, scale)
    assert one == grid.point(1, 0)


def test_at_least_rejects_bad_input():
    rng = np.random.default_rng(1)
    raw = rng.normal(0, 1, (30, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 30).astype(np.int32)
    engine = Engine(word_project(raw, labels, labels, [], "tanh"), backend="numpy")
    grid = hypotheses.at_least_grid(engine, SOURCE, [0, 2, 2], [0.1], "tag", 1)
    assert grid.cells == (0, 2)                                 # a cell set: repeats count once
    with pytest.raises(ProjectError, match=r"choose m in \[1, 2\]"):
        grid.point(3, 0)
    with pytest.raises(ProjectError, match="out of range"):
        hypotheses.at_least_grid(engine, SOURCE, [4], [0.1], "tag", 1)
    with pytest.raises(ProjectError, match="empty"):
        hypotheses.at_least_grid(engine, SOURCE, [], [0.1], "tag", 1)
    with pytest.raises(ProjectError, match="unknown scale"):
        hypotheses.at_least_grid(engine, SOURCE, [0], [0.1], "tag", 1, scale="minmax")


def brute_contexts(values, starts, T, top, window):
    ranked = sorted((t for t in range(T) if not math.isnan(values[t])), key=lambda t: (-float(values[t]), t))
    chosen = []
    for t in ranked:
        if len(chosen) == top:
            break
        if any(a <= t < b for _, a, b in chosen):
            continue
        lo, hi = oracle.sequence_of(t, starts, T)
        chosen.append((t, max(lo, t - window), min(hi, t + window + 1)))
    return chosen


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_unit_profile_equals_brute_force(scenario, data):
    raw, labels, words, starts, transform, scale, thresholds = scenario
    T, D = raw.shape
    engine = Engine(word_project(raw, labels, words, starts, transform), backend="numpy")
    cell = data.draw(st.integers(0, D - 1))
    top, window, bins = data.draw(st.integers(0, 6)), data.draw(st.integers(0, 3)), data.draw(st.integers(1, 7))
    th = thresholds[0]
    prof = hypotheses.unit_profile(engine, SOURCE, cell, th, scale, top=top, window=window, bins=bins,
                                   tokens=D)
    values = transform_values(raw[:, cell], transform)            # what a user sees
    names = engine.project.tokens(0, T)

    want = brute_contexts(values, starts, T, top, window)
    assert [(c["position"], c["start"], c["stop"]) for c in prof.contexts] == want
    for c in prof.contexts:
        assert c["words"] == names[c["start"]:c["stop"]] and c["at"] == c["position"] - c["start"]
        assert c["value"] == float(values[c["position"]])
        if scale != "none":
            assert c["scaled"] == engine.normalised_row(SOURCE, cell, scale)[c["position"]]

    h = prof.histogram
    v = values.astype(np.float64)
    assert h["nan"] == int(np.isnan(v).sum())
    assert (h["neg_inf"], h["pos_inf"]) == (int((v == -np.inf).sum()), int((v == np.inf).sum()))
    finite = [x for x in v.tolist() if math.isfinite(x)]
    if not finite:
        assert h["edges"] == [] and h["counts"] == []
    else:
        lo, hi = min(finite), max(finite)
        edges = np.linspace(lo, hi, bins + 1).tolist() if hi > lo else [lo, hi]
        assert h["edges"] == edges
        last = len(edges) - 2
        assert h["counts"] == [sum(1 for x in finite if edges[i] <= x and (x < edges[i + 1] or
                                                                          (i == last and x <= edges[i + 1])))
                               for i in range(last + 1)]
        assert sum(h["counts"]) == len(finite)

    on = brute_on(raw, th, transform, scale)[:, cell]
    assert prof.on_steps == int(on.sum()) and prof.steps == T
    fired = {}
    for w, o in zip(words.tolist(), on.tolist()):
        fired.setdefault(w, [0, 0])
        fired[w][0] += o
        fired[w][1] += 1
    want_tokens = sorted((w for w in fired if fired[w][0]), key=lambda w: (-fired[w][0], w))[:D]
    assert [(t["id"], t["on"], t["occurrences"]) for t in prof.tokens] == \
        [(w, fired[w][0], fired[w][1]) for w in want_tokens]
    assert all(t["rate"] == t["on"] / t["occurrences"] for t in prof.tokens)
    assert all(t["token"] == (f"w{t['id']}" if t["id"] % 2 == 0 else f"#{t['id']}") for t in prof.tokens)


def test_unit_profile_reads_one_cell_row(monkeypatch):
    """The profile never reads the (T, D) source: only one row of the cell-major layout."""
    rng = np.random.default_rng(3)
    raw = rng.normal(0, 1, (200, 9)).astype(np.float32)
    labels = rng.integers(0, 3, 200).astype(np.int32)
    engine = Engine(word_project(raw, labels, labels, [50], "tanh"), backend="numpy")
    src = engine.project.source(SOURCE)
    store = src.layout(progress=False).keys_cells
    taken = []
    real_take = store.take
    monkeypatch.setattr(store, "take", lambda rows: taken.append(np.asarray(rows).tolist()) or real_take(rows))
    monkeypatch.setattr(src, "raw", lambda *a: pytest.fail("the profile read rows of the source"))
    prof = hypotheses.unit_profile(engine, SOURCE, 4, 0.3, top=5)
    assert taken == [[4]] and len(prof.contexts) == 5
    with pytest.raises(ProjectError, match="out of range"):
        hypotheses.unit_profile(engine, SOURCE, 9)


# --- the command line, on the golden project ------------------------------------------------------
PROJECT = GOLDEN / "basic" / "project"
golden = pytest.mark.skipif(not PROJECT.is_dir(), reason="golden sets not present")


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _label(engine):
    return engine.project.meta["pos"].label(int(stats.track_values(engine, "pos")[5]))


@golden
@pytest.mark.parametrize("scale, threshold", [("none", "0.2"), ("zscore", "0.5")])
def test_stats_at_least_and_the_curve_over_m(capsys, scale, threshold):
    engine = Engine(open_project(PROJECT), backend="numpy")
    source = engine.project.default_source
    th = float(threshold)
    sel = engine.select(source, 5, 7, th, scale=scale)
    if len(sel.cells) < 2:
        pytest.skip("the scenario selects fewer than two cells")
    label, k = _label(engine), len(sel.cells)
    m = max(1, k // 2)
    base = ["stats", str(PROJECT), "--threshold", threshold, "--start", "5", "--end", "7", "--track", "pos",
            "--label", label, "--scale", scale, "--backend", "numpy"]
    code, out, _ = run(capsys, *base)
    plain = json.loads(out)
    assert code == 0 and not {"m_curve", "m_best", "at_least"} & set(plain)        # nothing new unasked
    code, out, _ = run(capsys, *base, "--curve", "--at-least", str(m))
    got = json.loads(out)
    assert code == 0 and {k_: got[k_] for k_ in plain if k_ != "curve"} == plain       # the old keys unchanged
    grid = hypotheses.at_least_grid(engine, source, sel.cells, None, "pos", label, scale)
    assert [p["m"] for p in got["m_curve"]] == list(range(1, k + 1))
    last = dict(got["m_curve"][-1])
    assert (last.pop("m"), last.pop("k")) == (k, k)
    assert last == {key: got["detector"][key] for key in last}                          # m = k: today's detector
    want = hypotheses.at_least_detector(engine, source, sel.cells, m, th, "pos", label, scale).as_dict()
    assert {key: got["at_least"][key] for key in want} == json.loads(json.dumps(want))
    best = grid.curve(m).best
    assert got["at_least"]["best"] == (json.loads(json.dumps(hypotheses.AtLeast(m, k, best).as_dict()))
                                       if best else None)
    assert len(got["at_least"]["curve"]) == 41 and len(got["m_best_by_m"]) == k
    assert got["m_best"] == json.loads(json.dumps(grid.best().as_dict())) if grid.best() else got["m_best"] is None


@golden
def test_unit_command_prints_the_profile(capsys):
    engine = Engine(open_project(PROJECT), backend="numpy")
    source = engine.project.default_source
    code, out, _ = run(capsys, "unit", str(PROJECT), "--cell", "3", "--threshold", "0.6", "--scale", "quantile",
                       "--top", "4", "--bins", "8", "--backend", "numpy")
    assert code == 0
    want = hypotheses.unit_profile(engine, source, 3, 0.6, "quantile", top=4, bins=8).as_dict()
    assert json.loads(out) == json.loads(json.dumps(want))
    assert len(json.loads(out)["contexts"]) == 4


@golden
def test_user_errors_are_one_line(capsys):
    code, _, err = run(capsys, "unit", str(PROJECT), "--cell", "100000")
    assert code == 2 and "out of range" in err and err.count("\n") == 1
    code, _, err = run(capsys, "stats", str(PROJECT), "--threshold", "0.2", "--start", "5", "--end", "7",
                       "--track", "pos", "--at-least", "2")
    assert code == 2 and err.strip() == "lstmvis: error: --at-least needs --label (the label the detector " \
                                        "should predict)"
    engine = Engine(open_project(PROJECT), backend="numpy")
    code, _, err = run(capsys, "stats", str(PROJECT), "--threshold", "0.2", "--start", "5", "--end", "7",
                       "--track", "pos", "--label", _label(engine), "--at-least", "0")
    assert code == 2 and "choose m in [1," in err and err.count("\n") == 1


def test_unit_command_takes_the_shared_choices():
    from gpu_matcher import cli
    from gpu_matcher.backends import BACKEND_NAMES
    from gpu_matcher.threshold import SCALES

    parser = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["unit"]
    choices = {a.dest: a.choices for a in parser._actions}
    assert tuple(choices["backend"]) == BACKEND_NAMES and tuple(choices["scale"]) == SCALES


@pytest.mark.parametrize("levels_bytes", [0, 1 << 20])
def test_at_least_with_many_thresholds(monkeypatch, levels_bytes):
    """More than 255 thresholds (levels no longer fit a byte), against a vectorised brute force."""
    monkeypatch.setattr(numpy_backend, "LEVELS_BYTES", levels_bytes)
    rng = np.random.default_rng(7)
    raw = rng.normal(0, 1, (500, 6)).astype(np.float32)
    labels = (raw[:, 0] > 0.2).astype(np.int32) + (raw[:, 1] > 1).astype(np.int32)
    engine = Engine(word_project(raw, labels, labels, [100, 250], "none"), backend="numpy")
    thresholds = np.linspace(-3, 3, 301).tolist()
    grid = hypotheses.at_least_grid(engine, SOURCE, [0, 1, 3, 5], thresholds, "tag", 1)
    pos = labels == 1
    for j, th in enumerate(thresholds):
        n = (raw[:, [0, 1, 3, 5]].astype(np.float64) >= th).sum(axis=1)
        for m in range(1, 5):
            assert (grid.predicted[m - 1, j], grid.true_positives[m - 1, j]) == ((n >= m).sum(),
                                                                                ((n >= m) & pos).sum())
