"""The shard protocol (gpu_matcher.sharded) run in-process: the same answer as one process, for every
shard size, halo and batch size, on the golden sets and on random inputs. No cluster needed. (Serial
shards with NumPy and with CuPy-on-the-stand-in workers run every conformance scenario:
``tests/engine/test_conformance.py``.)"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpu_matcher import open_project
from gpu_matcher.backends.cupy import CupyBackend
from gpu_matcher.backends.numpy import NumpyBackend
from gpu_matcher.sharded import MatchStats, halo_for, plan_shards, reset_worker_states
from tests.conftest import GOLDEN, golden_queries, golden_sets
from tests.dask.common import engine_rows, golden_query_args, random_case, serial_rows, write_project
from tests.gpu.standin import StandInDevice

SETS = golden_sets()


@pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")
@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("shard_steps", [37, 500])
def test_golden_sets_for_any_shard_size(name, shard_steps):
    """Shards of 37 steps (runs, margins and sequence starts straddle edges) and 500 steps give the
    stored answers (7 steps, where most runs and margins cross edges: the conformance tests)."""
    project = open_project(GOLDEN / name / "project")
    for q in golden_queries(name):
        got = serial_rows(project, golden_query_args(q), shard_steps, source=q["source"])
        assert got == q["expected"], (name, shard_steps, q)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), shard_steps=st.sampled_from([1, 2, 3, 5, 8, 13, 40, 1000]),
       halo=st.sampled_from([0, 1, 4, 1024]), first_rows=st.sampled_from([None, 1, 2]))
def test_random_inputs_equal_one_process(tmp_path_factory, seed, shard_steps, halo, first_rows):
    """Random sources (float16/32, tanh/none, D up to 66 so packed rows span two words), sequence
    starts, margins wider than a shard, phrase lengths, distinct or not, and batches of one row (so
    the client must ask shards for more rows mid-merge)."""
    rng = np.random.default_rng(seed)
    project, q = random_case(rng, tmp_path_factory.mktemp("case"))
    assert serial_rows(project, q, shard_steps, halo, first_rows=first_rows) == engine_rows(project, q)


def _one_cell_project(folder, on_steps, T, starts=()):
    raw = np.full((T, 2), -1.0, dtype=np.float32)
    raw[list(on_steps), 0] = 1.0
    raw[::3, 1] = 1.0
    return open_project(write_project(folder, raw, starts, transform="none"))


def test_run_across_many_shards(tmp_path):
    """One run over 90 steps spans 30 shards of 3: found once, scored from every shard's part."""
    project = _one_cell_project(tmp_path, range(5, 95), 100)
    q = dict(cells=[0], threshold=0.5, left=2, right=2, top=5, min_length=2, phrase_length=0,
             distinct=True, sequences=True)
    stats = MatchStats()
    got = serial_rows(project, q, 3, stats=stats)
    assert got == engine_rows(project, q) == [{"start": 5, "end": 94, "length": 90, "inter": 1, "union": 1}]
    assert stats.crossing == 1


def test_sequence_start_on_a_shard_edge(tmp_path):
    """A sequence start exactly on a shard edge cuts the run there, as in one process."""
    project = _one_cell_project(tmp_path, range(10, 30), 40, starts=[20])
    q = dict(cells=[0], threshold=0.5, left=1, right=1, top=5, min_length=2, phrase_length=0,
             distinct=True, sequences=True)
    got = serial_rows(project, q, 10)
    assert got == engine_rows(project, q)
    assert [(r["start"], r["end"]) for r in got] == [(10, 19), (20, 29)]


def test_margins_wider_than_the_halo_widen_the_window():
    assert halo_for(0, 0, 1024) == 1024
    assert halo_for(3000, 2, 1024) == 4096
    assert halo_for(0, 0, 0) == 1
    assert halo_for(5, 0, 0) == 8


def test_plan_shards_aligns_to_chunks():
    assert plan_shards(10, 4).tolist() == [0, 4, 8, 10]
    assert plan_shards(10, 3, align=4).tolist() == [0, 4, 8, 10]
    assert plan_shards(1, 100).tolist() == [0, 1]


class CountingNumpy(NumpyBackend):
    prepared = 0

    def prepare(self, source):
        CountingNumpy.prepared += 1
        return super().prepare(source)


def counting_backend():
    return CountingNumpy()


class StandInCupy(CupyBackend):
    """A CuPy backend on the stand-in device, as a class (a class declares its capabilities); every
    instance counts its kernel calls in ``StandInCupy.calls``."""

    calls: Counter = Counter()

    def __init__(self):
        device = StandInDevice()
        device.calls = StandInCupy.calls
        super().__init__(device)


def test_workers_keep_layouts_between_queries(tmp_path):
    """Windows (and their layouts) are built once per worker; later queries reuse them."""
    reset_worker_states()
    CountingNumpy.prepared = 0
    rng = np.random.default_rng(7)
    raw = np.repeat(rng.choice([-1.0, 1.0], size=(40, 4)), 3, axis=0).astype(np.float32)
    project = open_project(write_project(tmp_path, raw, transform="none"))
    base = dict(threshold=0.5, left=1, right=1, top=10, min_length=2, phrase_length=0, distinct=True,
                sequences=True)
    for cells in ([0], [0, 1], [1, 2, 3]):
        q = dict(base, cells=cells)
        assert serial_rows(project, q, 16, halo=4, backend_spec=counting_backend) == engine_rows(project, q)
    assert CountingNumpy.prepared == len(plan_shards(120, 16)) - 1


def test_more_than_64_selected_cells(tmp_path):
    """k = 70: the selected cells' bits span two words on every shard and in the crossing partials."""
    from tests.dask.common import random_raw

    rng = np.random.default_rng(3)
    raw = random_raw(rng, 150, 80, "float32", 0.8)
    project = open_project(write_project(tmp_path, raw, starts=[60, 61, 100]))
    cells = sorted(rng.choice(80, size=70, replace=False).tolist())
    for threshold, distinct in ((-0.3, True), (0.2, False)):
        q = dict(cells=cells, threshold=threshold, left=1, right=2, top=20, min_length=1, phrase_length=0,
                 distinct=distinct, sequences=True)
        want = engine_rows(project, q)
        assert want and max(r["inter"] for r in want) >= 30
        assert serial_rows(project, q, 9) == want


@pytest.mark.skipif(not SETS, reason=f"no golden sets at {GOLDEN}")
def test_workers_with_cells_only_layouts_on_disk(tmp_path, monkeypatch):
    """Workers' shard layouts on disk hold only the cell-major keys (half the disk); row keys come
    from the source's chunks, through blocks and a cache far smaller than a shard. Same answers."""
    from gpu_matcher import sharded as sharded_module
    from gpu_matcher import source as source_module

    monkeypatch.setattr(source_module, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(source_module.SourceRows, "BLOCK_BYTES", 64)
    monkeypatch.setattr(source_module.SourceRows, "CACHE_BYTES", 0)
    monkeypatch.setattr(sharded_module, "WORKER_ROW_KEYS", "source")
    monkeypatch.setenv("LSTMVIS_CACHE_DIR", str(tmp_path / "cache"))
    reset_worker_states()
    name = SETS[0]
    project = open_project(GOLDEN / name / "project")
    for q in golden_queries(name):
        got = serial_rows(project, golden_query_args(q), 37, halo=4, source=q["source"])
        assert got == q["expected"], q
    reset_worker_states()
    assert any((tmp_path / "cache").rglob("keys_cells.npy"))
    assert not any((tmp_path / "cache").rglob("keys_rows.npy"))


def test_the_sharded_backend_declares_what_its_shard_backends_declare(tmp_path):
    """Per-cell keys travel to the shards only when the per-shard backends declare them (read from their
    classes, nothing built); otherwise the engine answers the scaled query with NumPy. Same answer."""
    from gpu_matcher import Engine
    from gpu_matcher.backends import Capability
    from gpu_matcher.sharded import SerialExecutor, ShardedBackend
    from tests.dask.common import SOURCE, standin_cupy
    from tests.engine.conformance import rows

    numpy_shards = ShardedBackend(SerialExecutor("numpy"), shard_steps=9)
    assert numpy_shards.supports(Capability.PER_CELL_KEYS) and numpy_shards.supports(Capability.STREAMING)
    assert ShardedBackend(SerialExecutor(CountingNumpy), shard_steps=9).supports(Capability.PER_CELL_KEYS)
    for spec in ("auto", "cupy"):                   # both backends declare per-cell keys
        assert ShardedBackend(SerialExecutor(spec)).supports(Capability.PER_CELL_KEYS), spec
    assert not ShardedBackend(SerialExecutor(standin_cupy)).supports(Capability.PER_CELL_KEYS)
    rng = np.random.default_rng(8)
    project = open_project(write_project(tmp_path, rng.normal(0, 1, (120, 6)).astype(np.float32),
                                         starts=[50], transform="none"))
    CountingNumpy.prepared = 0
    reset_worker_states()
    q = dict(cells=[0, 2, 5], threshold=0.6, left=1, right=1, top=10, min_length=2, phrase_length=0,
             distinct=True, sequences=True, scale="quantile")
    want = engine_rows(project, q)
    assert want
    plain = Engine(project, backend=ShardedBackend(SerialExecutor(counting_backend), shard_steps=9))
    assert rows(plain, SOURCE, q) == want
    assert CountingNumpy.prepared == 0              # a factory function declares nothing: NumPy answered
    sharded = Engine(project, backend=ShardedBackend(SerialExecutor(CountingNumpy), shard_steps=9))
    assert rows(sharded, SOURCE, q) == want
    assert CountingNumpy.prepared > 0               # the class declares per-cell keys: the shards answered
    StandInCupy.calls.clear()
    gpu_shards = Engine(project, backend=ShardedBackend(SerialExecutor(StandInCupy), shard_steps=9))
    assert rows(gpu_shards, SOURCE, q) == want
    assert StandInCupy.calls["pack_cells_rows_u32"] > 0     # CuPy shards packed the per-cell keys
