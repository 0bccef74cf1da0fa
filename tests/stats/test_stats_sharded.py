"""The hypothesis panel's statistics on the sharded backends (serial shards with NumPy or the CuPy stand-in
on each, windows wider than their shards, and Dask): every number equals the NumPy backend's, on the
golden projects and on random projects on disk (shards of a few steps, so label runs, phrase spans and
their margins cross shard edges and sequence starts). The label travels as a track locator (each shard
reads its own steps of it): a dense track and an interval track."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import Engine, hypotheses, open_project, stats
from gpu_matcher.backends.base import Capability
from gpu_matcher.sharded import ShardedBackend, reset_worker_states
from gpu_matcher.targets import RangeTarget, TrackTarget
from tests.conftest import GOLDEN
from tests.engine import conformance
from tests.engine.conformance import DISK_SOURCE, IMPLEMENTATIONS, POOL, Implementation, write_project

SHARDED = [impl for impl in IMPLEMENTATIONS if impl.name.startswith("shards-") or impl.name == "dask"]
_counter = itertools.count()
_ROOT: list[Path] = []          # the session's folder of random projects (removed at the module's end)


@pytest.fixture(scope="module", autouse=True)
def _release_workers():
    yield
    reset_worker_states()
    conformance.close_dask()
    if _ROOT:
        shutil.rmtree(_ROOT.pop(), ignore_errors=True)


@pytest.fixture(params=SHARDED, ids=lambda impl: impl.name)
def impl(request) -> Implementation:
    reason = request.param.unavailable()
    if reason:
        pytest.skip(reason)
    return request.param


def panel_numbers(engine: Engine, source: str, track: str, label, cells: list[int], threshold: float,
                  brush: tuple[int, int], left: int, right: int) -> list:
    """Every whole-corpus number of the hypothesis panel, the suggestions and the phrase map."""
    out = []
    for scale, th in (("none", threshold), ("zscore", 0.5)):
        grid = [-0.9, -0.3, 0.0, 0.25, 0.5, 0.76, th] if scale == "none" else [-1.0, 0.0, 0.5, 1.5]
        out.append(stats.detector_curve(engine, source, cells, grid, track, label, scale).as_dict())
        g = hypotheses.at_least_grid(engine, source, cells, grid, track, label, scale)
        out.append((g.positives, g.predicted.tolist(), g.true_positives.tolist()))
        for where in ({"start": brush[0], "end": brush[1]}, {"track": track, "label": label}):
            out.append([c.as_dict() for c in stats.suggest_cells(engine, source, th, top=50, scale=scale,
                                                                 **where)])
        pp = stats.phrase_patterns(engine, source, track, th, left=left, right=right, scale=scale)
        out.append((pp.starts.tolist(), pp.ends.tolist(), pp.values.tolist(), pp.patterns.tolist()))
    out.append(stats.detector_curve(engine, source, cells, [0.1, 0.5, 0.9], track, label, "quantile").as_dict())
    matches = engine.match(source, cells, threshold, top=10)
    out.append(stats.enrichment(engine, source, matches, track).as_dict())
    return out


def both(impl: Implementation, path) -> tuple[Engine, Engine]:
    project = open_project(path)
    return Engine(project, backend=impl.make(project)), Engine(open_project(path), backend="numpy")


@pytest.mark.skipif(not (GOLDEN / "basic" / "project").is_dir(), reason="golden sets not present")
@pytest.mark.parametrize("name", ["basic", "wide"])
def test_golden_panel_equals_numpy(impl, name):
    engine, reference = both(impl, GOLDEN / name / "project")
    assert engine.backend.supports(Capability.CORPUS_SCANS) and engine.scan_backend(
        engine.project.default_source)[0] is engine.backend
    source = engine.project.default_source
    label = engine.project.meta["pos"].label(int(stats.track_values(reference, "pos")[5]))
    T = engine.project.T
    for start, th in ((5, 0.2), (T // 2, 0.0), (T - 4, -0.1)):
        cells = reference.select(source, start, start + 2, th).cells or [0, 1]
        args = (source, "pos", label, cells, th, (start, start + 2), 1, 2)
        assert panel_numbers(engine, *args) == panel_numbers(reference, *args)


def disk_project_with_tracks(raw: np.ndarray, labels: np.ndarray, starts, intervals, transform: str):
    """``conformance.write_project`` plus a dense discrete track ``tag`` and an interval track ``peaks``."""
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="lstmvis-stats-sharded-")))
    folder = write_project(_ROOT[0] / f"p{next(_counter)}", raw, sorted(starts), transform)
    s = np.asarray(sorted(a for a, _ in intervals), dtype=np.int64)
    e = np.asarray([b for _, b in sorted(intervals)], dtype=np.int64)
    with h5py.File(folder / "tracks.h5", "w") as f:
        f.create_dataset("tag", data=labels.astype(np.uint8))
    with h5py.File(folder / "peaks.h5", "w") as f:
        f.create_dataset("start", data=s)
        f.create_dataset("end", data=e)
        f.create_dataset("max_end", data=np.maximum.accumulate(e) if e.size else e)
        f.create_dataset("score", data=np.zeros(s.size, dtype=np.float32))
    yml = (folder / "lstm.yml").read_text().replace("files: {", "files: {tracks: tracks.h5, peaks: peaks.h5, ")
    yml += ("meta:\n  tag: {file: tracks, path: tag, vis: {type: discrete}}\n"
            "  peaks: {type: intervals, file: peaks}\n")
    (folder / "lstm.yml").write_text(yml)
    return folder


@st.composite
def scenarios(draw):
    T = draw(st.integers(3, 48))
    D = draw(st.integers(1, 6))
    raw = np.asarray(draw(st.lists(st.sampled_from(POOL), min_size=T * D, max_size=T * D)),
                     dtype=draw(st.sampled_from(["float16", "float32"]))).reshape(T, D)
    runs = draw(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 9)), min_size=1, max_size=T))
    labels = np.concatenate([np.full(n, v) for v, n in runs] + [np.zeros(T, dtype=np.int64)])[:T]
    starts = sorted(draw(st.sets(st.integers(1, T - 1), max_size=3)))
    intervals = draw(st.lists(st.tuples(st.integers(0, T - 1), st.integers(1, 12)), max_size=6))
    intervals = [(a, min(T, a + n)) for a, n in intervals]
    cells = sorted(draw(st.sets(st.integers(0, D - 1), min_size=1)))
    threshold = draw(st.sampled_from([-0.5, 0.0, 0.25, 0.3, 0.5, 0.9]))
    a = draw(st.integers(0, T - 1))
    brush = (a, draw(st.integers(a, T - 1)))
    margins = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    return raw, labels, starts, intervals, draw(st.sampled_from(["tanh", "none"])), cells, threshold, brush, margins


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=scenarios())
def test_random_panels_equal_numpy(impl, case):
    raw, labels, starts, intervals, transform, cells, threshold, brush, (left, right) = case
    engine, reference = both(impl, disk_project_with_tracks(raw, labels, starts, intervals, transform))
    for track in ("tag", "peaks"):
        present = stats.track_values(reference, track)
        label = int(present[len(present) // 2])
        args = (DISK_SOURCE, track, label, cells, threshold, brush, left, right)
        assert panel_numbers(engine, *args) == panel_numbers(reference, *args)


def test_labels_travel_as_files_and_ranges_as_two_numbers(tmp_path):
    """What a shard call carries for a label: the track's file names and the value (a few hundred bytes,
    whatever T is); an in-memory track sends the shard's own mask."""
    import pickle

    raw = np.asarray(np.resize(POOL, (400, 3)), dtype=np.float32)
    labels = np.arange(400) % 3
    engine = Engine(open_project(disk_project_with_tracks(raw, labels, [100], [(5, 50), (7, 9)], "none")),
                    backend="numpy")
    for track in ("tag", "peaks"):
        target = stats.label_target(engine, track, 1)
        shipped = target.for_shard(0, 400)
        assert isinstance(shipped, TrackTarget) and shipped.track is None and len(pickle.dumps(shipped)) < 1000
        back = pickle.loads(pickle.dumps(shipped))
        want = stats.track_values(engine, track) == 1
        assert np.array_equal(back.mask(0, 400), want) and np.array_equal(back.mask(37, 205), want[37:205])
        assert stats.label_count(engine, track, 1) == int(want.sum())
    assert RangeTarget(3, 5).for_shard(100, 200) == RangeTarget(3, 5)
    memory = TrackTarget(1, None, engine.project.meta["tag"])
    piece = memory.for_shard(10, 20)
    assert np.array_equal(piece.mask(10, 20), labels[10:20] == 1)


def test_the_sharded_backends_declare_the_scans():
    from gpu_matcher.sharded import SerialExecutor

    for spec in ("numpy", conformance.standin_cupy):
        backend = ShardedBackend(SerialExecutor(spec), shard_steps=8, halo=0)
        assert backend.supports(Capability.CORPUS_SCANS) and backend.supports(Capability.LEVEL_HISTOGRAMS)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=scenarios(), data=st.data())
def test_sharded_overview_equals_numpy(impl, case, data):
    """n(t)'s per-bin min/max from the shards' rows of the k cells (bins cut by shard edges), under a
    threshold and a per-cell scale, as the one-process overview reads it from all D cells."""
    raw, labels, starts, intervals, transform, cells, threshold, _brush, _margins = case
    engine, reference = both(impl, disk_project_with_tracks(raw, labels, starts, intervals, transform))
    T = engine.project.T
    a = data.draw(st.integers(0, T - 1))
    b = data.draw(st.integers(a + 1, T))
    bins = data.draw(st.integers(1, 2 * (b - a)))
    for th, scale in ((threshold, "none"), (0.5, "zscore"), (2.0, "none")):
        got = engine.overview(DISK_SOURCE, cells, th, a, b, bins, scale)
        want = reference.overview(DISK_SOURCE, cells, th, a, b, bins, scale)
        assert [g.tolist() for g in got] == [w.tolist() for w in want]
    assert engine.backend.supports(Capability.COUNT_OVERVIEW)


def test_overview_row_cost_is_one_value_per_step_on_the_shards(tmp_path):
    """The app's overview strip budgets n(t) by ``Engine.overview_row_cost``: 1 value a step when the
    backend bins the selected cells' bit rows (the shards, NumPy; a whole 10^8 contig then fits), D when
    the engine reads rows (a backend without ``COUNT_OVERVIEW``)."""
    from gpu_matcher.sharded import SerialExecutor

    raw = np.random.default_rng(0).standard_normal((64, 12)).astype(np.float16)
    project = open_project(write_project(tmp_path / "p", raw))
    assert Engine(project, backend="numpy").overview_row_cost(DISK_SOURCE) == 1
    assert Engine(project, backend=conformance.standin_cupy()).overview_row_cost(DISK_SOURCE) == 12
    sharded = Engine(project, backend=ShardedBackend(SerialExecutor("numpy"), shard_steps=16, halo=0))
    assert sharded.overview_row_cost(DISK_SOURCE) == 1
    assert sharded.overview_row_cost(DISK_SOURCE, "zscore") == (
        1 if sharded.backend.supports(Capability.PER_CELL_KEYS) else 12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), bins=st.integers(1, 300), data=st.data())
def test_numpy_overview_from_bit_rows_equals_reading_rows(tmp_path, seed, bins, data):
    """NumPy's ``count_overview`` (the k cells' bit rows, unpacked a chunk at a time) against the row
    reading path (the CuPy stand-in declares no ``COUNT_OVERVIEW``), under θ and a per-cell scale."""
    import gpu_matcher.overview as overview_module

    rng = np.random.default_rng(seed)
    T, D = int(rng.integers(70, 700)), int(rng.integers(1, 20))
    raw = rng.standard_normal((T, D)).astype(np.float16)
    project = open_project(write_project(tmp_path / f"p{seed}-{bins}", raw))
    numpy_engine = Engine(project, backend="numpy")
    rows_engine = Engine(project, backend=conformance.standin_cupy())
    cells = sorted(data.draw(st.sets(st.integers(0, D - 1), min_size=1, max_size=D)))
    a = data.draw(st.integers(0, T - 2))
    b = data.draw(st.integers(a + 1, T))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(overview_module, "OVERVIEW_CHUNK", 128)          # several chunks, cut mid-word
        for th, scale in ((0.2, "none"), (1.0, "zscore")):
            got = numpy_engine.overview(DISK_SOURCE, cells, th, a, b, min(bins, b - a), scale)
            want = rows_engine.overview(DISK_SOURCE, cells, th, a, b, min(bins, b - a), scale)
            assert [g.tolist() for g in got] == [w.tolist() for w in want]
